"""The AAC encoder of :class:`PacketEncoder`: FFmpeg's ``fast`` coder at the usual bitrates, ``twoloop``
below :data:`AAC_FAST_CODER_MIN_BITRATE`; both must carry what was mixed (decoded and looked at)."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, SAMPLE_RATE, AudioMixer
from rtc_mpu.mixer.output.encoder import AAC_FAST_CODER_MIN_BITRATE, EncoderSettings, PacketEncoder


def _decode(encoder: PacketEncoder, blocks: int, frequency_hz: float) -> np.ndarray:
    """Encode ``blocks`` mixed blocks of a stereo sine at ``frequency_hz`` (0.3 full scale) and decode
    them back: a (2, n) float array."""
    packets = []
    for index in range(blocks):
        t = (np.arange(BLOCK_SAMPLES) + index * BLOCK_SAMPLES) / SAMPLE_RATE
        tone = 0.3 * np.sin(2 * math.pi * frequency_hz * t)
        packets += encoder.encode_audio(AudioMixer.make_frame(np.stack([tone, tone]), index * BLOCK_SAMPLES))
    packets += encoder.flush()
    template = encoder.templates.audio
    assert template is not None
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = template.codec_context.extradata
    out = []
    for packet in packets:
        for frame in decoder.decode(av.Packet(packet.data)):
            out.append(frame.to_ndarray())
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("bitrate", [64_000, 128_000])
def test_aac_carries_the_mixed_tone(bitrate: int) -> None:
    settings = EncoderSettings(width=0, height=0, fps=0, video_bitrate=0, audio_bitrate=bitrate)
    encoder = PacketEncoder(settings)
    assert (bitrate >= AAC_FAST_CODER_MIN_BITRATE) == (bitrate == 128_000)  # one of each coder
    decoded = _decode(encoder, 94, 1000.0)  # 2 s
    steady = decoded[:, SAMPLE_RATE // 2 : SAMPLE_RATE * 3 // 2]  # 1 s after the encoder's priming
    spectrum = np.abs(np.fft.rfft(steady[0] * np.hanning(steady.shape[1])))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / steady.shape[1]
    assert abs(peak_hz - 1000.0) < 2.0
    rms = float(np.sqrt(np.mean(steady**2)))
    assert rms == pytest.approx(0.3 / math.sqrt(2), rel=0.1)
    # Everything but the tone (its bins +-5 Hz) is at least 30 dB below it.
    tone = spectrum[int(995 * steady.shape[1] / SAMPLE_RATE) : int(1005 * steady.shape[1] / SAMPLE_RATE)]
    rest = np.sum(spectrum**2) - np.sum(tone**2)
    assert 10 * math.log10(np.sum(tone**2) / rest) > 30.0
