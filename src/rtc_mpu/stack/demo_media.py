"""Synthetic participant media for demos and tests: a solid colour, an optional moving box, a pure tone.

Each user gets its own colour and tone so a person (or a test) can tell them apart in the mix.
Written with PyAV (H.264 yuv420p + AAC in MP4); nothing is downloaded.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Distinct saturated colours (8-bit RGB), one per user.
COLORS: list[tuple[int, int, int]] = [
    (220, 40, 40),
    (40, 200, 60),
    (40, 80, 220),
    (230, 210, 40),
    (200, 60, 200),
    (40, 200, 210),
    (240, 140, 30),
    (120, 60, 20),
    (160, 160, 160),
]
#: Distinct tone frequencies in Hz, one per user; none is a harmonic of another below 4 kHz.
TONES: list[float] = [440.0, 620.0, 830.0, 1070.0, 1330.0, 1510.0, 1790.0, 2110.0, 2390.0]


def write_clip(
    path: Path,
    *,
    color: tuple[int, int, int],
    tone_hz: float | None,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 180,
    fps: int = 15,
    amplitude: float = 0.3,
    sample_rate: int = 48000,
    moving_box: bool = False,
) -> Path:
    """Write an MP4 (H.264 yuv420p + AAC mono) of a ``color`` picture and a sine ``tone_hz``.

    Args:
        color: 8-bit (R, G, B) of the picture.
        tone_hz: tone frequency in Hz, or None for a video-only file.
        seconds: duration in seconds.
        width, height: picture size in pixels (even).
        fps: frames per second.
        amplitude: tone peak, fraction of full scale.
        sample_rate: audio sample rate in Hz.
        moving_box: draw a white box crossing the picture once per 2 seconds (shows motion and
            freezes in a demo); off for solid pictures that tests measure.

    Raises:
        av.error.FFmpegError, OSError: the file cannot be written.
    """
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate, layout="mono") if tone_hz else None
        base = np.empty((height, width, 3), np.uint8)
        base[:] = color
        box = max(height // 6, 2)
        for i in range(round(seconds * fps)):
            picture = base
            if moving_box:
                picture = base.copy()
                x = int((i % (2 * fps)) / (2 * fps) * (width - box))
                picture[height // 2 - box // 2 : height // 2 + box // 2, x : x + box] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None and tone_hz is not None:
            total = round(seconds * sample_rate)
            for start in range(0, total, 1024):
                n = min(1024, total - start)
                t = np.arange(start, start + n, dtype=np.float64) / sample_rate
                samples = (amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None, :]
                block = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                block.sample_rate = sample_rate
                block.pts, block.time_base = start, Fraction(1, sample_rate)
                container.mux(audio.encode(block))
            container.mux(audio.encode(None))
    return path
