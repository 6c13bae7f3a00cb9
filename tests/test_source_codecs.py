"""What the channel source changes in aiortc (mixer/sources/codecs.py): H.264 without fmtp accepted,
every decoder on one thread, and the decoders still decode."""

from __future__ import annotations

import asyncio
import fractions
import queue
import threading
from typing import Any

import aiortc.rtcrtpreceiver
import av
import numpy as np
from aiortc.codecs import CODECS
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rtc_mpu.mixer.sources.codecs import (
    accept_unlabelled_h264,
    decode_frames,
    direct_frame_handoff,
    single_threaded_decoders,
)


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


def _grey_h264(frames: int) -> list[bytes]:
    """``frames`` 64x64 mid-grey pictures as H.264 access units (Annex B), one per frame."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width = encoder.height = 64
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"tune": "zerolatency"}
    out = []
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((96, 64), 128, dtype=np.uint8), format="yuv420p")
        frame.pts = index
        out += [bytes(p) for p in encoder.encode(frame)]
    return out


def test_decode_frames_hands_every_frame_over_in_order_then_the_end() -> None:
    direct_frame_handoff()
    assert getattr(aiortc.rtcrtpreceiver, "decoder_worker") is decode_frames  # noqa: B009
    units = _grey_h264(5)

    async def run() -> tuple[list[Any], bool]:
        loop = asyncio.get_running_loop()
        inbox: queue.Queue[Any] = queue.Queue()
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        error = threading.Event()
        thread = threading.Thread(target=decode_frames, args=(loop, inbox, outbox, error))
        thread.start()
        codec = _codec("video/H264")
        inbox.put((codec, JitterFrame(data=b"\x00\x00\x00\x01\x65garbage", timestamp=0)))
        for index, unit in enumerate(units):
            inbox.put((codec, JitterFrame(data=unit, timestamp=3000 * (index + 1))))
        inbox.put(None)
        received = []
        while (item := await asyncio.wait_for(outbox.get(), 10)) is not None:
            received.append(item)
        await asyncio.to_thread(thread.join, 10)
        return received, error.is_set()

    received, errored = asyncio.run(run())
    assert errored  # the garbage frame: aiortc's receiver asks for a keyframe
    assert [f.pts for f in received] == [3000 * (i + 1) for i in range(5)]
    assert all(abs(float(f.to_ndarray()[:64].mean()) - 128.0) < 2.0 for f in received)


def test_decode_frames_ends_when_the_loop_is_closed() -> None:
    loop = asyncio.new_event_loop()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.close()
    inbox: queue.Queue[Any] = queue.Queue()
    inbox.put((_codec("video/H264"), JitterFrame(data=_grey_h264(1)[0], timestamp=0)))
    thread = threading.Thread(target=decode_frames, args=(loop, inbox, outbox, threading.Event()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()  # returned without waiting for the end marker
