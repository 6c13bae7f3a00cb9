"""Synthetic test media: solid-colour video with a pure tone per user, written with PyAV.

Like aiortc's ``tests/codecs.py``: everything a test needs is generated here, nothing is downloaded.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

#: Distinct saturated colours (8-bit RGB), one per test user.
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
#: Distinct tone frequencies in Hz, one per test user; none is a harmonic of another below 4 kHz.
TONES: list[float] = [440.0, 620.0, 830.0, 1070.0, 1330.0, 1510.0, 1790.0, 2110.0, 2390.0]


def write_test_clip(
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
) -> Path:
    """Write an MP4 (H.264 yuv420p + AAC) of a solid ``color`` picture and a sine ``tone_hz``.

    Args:
        color: 8-bit (R, G, B).
        tone_hz: tone frequency in Hz, or None for a video-only file.
        seconds: duration in seconds.
        width, height: picture size in pixels (even).
        fps: frames per second.
        amplitude: tone peak, fraction of full scale.
        sample_rate: audio sample rate in Hz.
    """
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=sample_rate, layout="mono") if tone_hz else None
        picture = np.empty((height, width, 3), np.uint8)
        picture[:] = color
        frames = round(seconds * fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None and tone_hz is not None:
            chunk = 1024
            total = round(seconds * sample_rate)
            for start in range(0, total, chunk):
                n = min(chunk, total - start)
                t = (np.arange(start, start + n) / sample_rate).astype(np.float64)
                samples = (amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None, :]
                block = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                block.sample_rate = sample_rate
                block.pts = start
                block.time_base = Fraction(1, sample_rate)
                container.mux(audio.encode(block))
            container.mux(audio.encode(None))
    return path


def decode_video(path: Path | str) -> list[av.VideoFrame]:
    """Every decoded video frame of a file, in order."""
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def rgb(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The frame as an ``(H, W, 3)`` uint8 RGB picture (BT.601 by the frame's tags)."""
    picture = frame.to_ndarray(format="rgb24")
    assert picture.dtype == np.uint8
    return picture.astype(np.uint8, copy=False)


def decode_audio(path: Path | str) -> tuple[npt.NDArray[np.float32], int]:
    """The file's audio as ``(channels, samples)`` float32 and its sample rate in Hz."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=stream.rate)
        chunks = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
        return np.concatenate(chunks, axis=1).astype(np.float32), stream.rate


def tone_level_db(samples: npt.NDArray[np.float32], sample_rate: int, freq: float) -> float:
    """Level in dB (relative to full scale sine) of the spectrum peak within 10 Hz of ``freq``.

    ``samples`` is ``(channels, n)``; the first channel is analysed with a Hann window.
    """
    x = samples[0].astype(np.float64)
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window)) / (window.sum() / 2)
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    band = (freqs > freq - 10) & (freqs < freq + 10)
    return float(20 * np.log10(spectrum[band].max() + 1e-12))
