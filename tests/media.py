"""Synthetic test media: solid-colour video with a pure tone per user, written with PyAV.

Like aiortc's ``tests/codecs.py``: everything a test needs is generated here, nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from rtc_mpu.stack.demo_media import COLORS, TONES, write_clip

__all__ = ["COLORS", "TONES", "decode_audio", "decode_video", "rgb", "tone_level_db", "write_test_clip"]


def write_test_clip(path: Path, **kwargs: Any) -> Path:
    """A solid-colour clip with a tone (see :func:`rtc_mpu.stack.demo_media.write_clip`); never a
    moving box."""
    return write_clip(path, moving_box=False, **kwargs)


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
