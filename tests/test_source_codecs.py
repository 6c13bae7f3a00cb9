"""What the channel source changes in aiortc (mixer/sources/codecs.py): H.264 without fmtp accepted,
every decoder on one thread, and the decoders still decode."""

from __future__ import annotations

import fractions
from typing import Any

import aiortc.rtcrtpreceiver
import av
import numpy as np
from aiortc.codecs import CODECS
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rtc_mpu.mixer.sources.codecs import accept_unlabelled_h264, single_threaded_decoders


def _codec(mime: str) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96)


def test_decoders_made_by_aiortcs_receiver_run_on_one_thread_and_decode() -> None:
    single_threaded_decoders()
    single_threaded_decoders()  # idempotent
    make: Any = getattr(aiortc.rtcrtpreceiver, "get_decoder")  # noqa: B009 - not exported
    h264, vp8 = make(_codec("video/H264")), make(_codec("video/VP8"))
    assert h264.codec.thread_count == 1 and vp8.codec.thread_count == 1
    opus = make(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111))
    assert opus.codec.thread_count == 1
    # A 64x64 grey H.264 picture encoded here decodes to the same grey through the wrapped decoder.
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width = encoder.height = 64
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"tune": "zerolatency"}
    frame = av.VideoFrame.from_ndarray(np.full((96, 64), 128, dtype=np.uint8), format="yuv420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
    pictures: list[Any] = h264.decode(JitterFrame(data=data, timestamp=0))
    assert len(pictures) == 1
    luma = pictures[0].to_ndarray()[:64]
    assert abs(float(luma.mean()) - 128.0) < 2.0


def test_unlabelled_h264_is_listed_once() -> None:
    accept_unlabelled_h264()
    accept_unlabelled_h264()
    unlabelled = [
        c
        for c in CODECS["video"]
        if c.mimeType.lower() == "video/h264" and c.parameters.get("packetization-mode") == "0"
    ]
    assert len(unlabelled) == 1
