"""What aiortc accepts from Janus (H.264 offered without ``fmtp``), and how it decodes (one thread per
decoder).

Janus 1.1.2 offers a *remote publisher's* H.264 (a task's ``.mix``, an ingest: both are fed plain RTP,
:mod:`rtc_mpu.mixer.output.rtc`) with no ``profile-level-id`` and no ``packetization-mode``: its
request check declares a remote publisher's ``h264_profile`` a boolean, so none can be given.
Per RFC 6184 that means packetization-mode 0, which aiortc does not list, so its answer would refuse
the video. :func:`accept_unlabelled_h264` adds the entry; aiortc's depacketizer takes single NAL
units and FU-A either way, and its decoder any profile.

Decoding: aiortc decodes each received track on its own thread through FFmpeg (``h264``, and
``libvpx`` for VP8), whose codec contexts default to as many slice threads as the machine has cores.
A mix decodes 4 to 16 small pictures at once on a node that runs a mix per core or more: the extra
threads only add wake-ups and synchronisation, and multi-slice H.264 (x264's ``zerolatency``, hardware
encoders) spreads each 640x360 frame over them. :func:`single_threaded_decoders` gives every decoder
one thread (measured in the note of issue 18 with ``python -m bench.capacity --threads``).

Handing frames over: aiortc's decoder thread hands each decoded frame to the event loop with
``asyncio.run_coroutine_threadsafe(queue.put(frame))``: a coroutine, a future and an asyncio Task per
frame (120 video and 200 audio frames a second for 4 users). :func:`direct_frame_handoff` replaces the
thread's function with :func:`decode_frames`, which hands each frame with one
``loop.call_soon_threadsafe(queue.put_nowait, frame)`` (the queue is unbounded: the same order, nothing
dropped).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import av
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

log = logging.getLogger(__name__)

#: aiortc's own decoder factory (``aiortc.rtcrtpreceiver.get_decoder``), wrapped by
#: :func:`single_threaded_decoders`.
_AIORTC_GET_DECODER = aiortc.codecs.get_decoder


def accept_unlabelled_h264() -> None:
    """Make aiortc accept H.264 offered without ``fmtp`` (packetization-mode 0, no
    ``profile-level-id``), as Janus 1.1.2 offers a remote publisher's H.264 such as a task's mix
    (:mod:`rtc_mpu.mixer.output.rtc`). aiortc only lists packetization-mode 1; its depacketizer
    takes single NAL units and FU-A either way, and its decoder any profile. Idempotent; it changes
    aiortc's module-level codec list, so every peer connection of the process accepts it."""
    video = CODECS["video"]
    if any(
        c.mimeType.lower() == "video/h264" and c.parameters.get("packetization-mode", "0") == "0"
        for c in video
    ):
        return
    used = {c.payloadType for c in video if c.payloadType is not None}
    payload_type = next(pt for pt in range(96, 128, 2) if pt not in used and pt + 1 not in used)
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=payload_type,
            parameters={"packetization-mode": "0", "profile-level-id": "42e01f"},
        )
    )
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/rtx",
            clockRate=90000,
            payloadType=payload_type + 1,
            parameters={"apt": payload_type},
        )
    )


def _single_threaded_decoder(codec: RTCRtpCodecParameters) -> Any:
    """aiortc's decoder for ``codec``, its FFmpeg codec context (not opened yet) set to one thread."""
    decoder = _AIORTC_GET_DECODER(codec)
    context = getattr(decoder, "codec", None)
    if context is not None and hasattr(context, "thread_count") and not context.is_open:
        context.thread_count = 1
    return decoder


def single_threaded_decoders() -> None:
    """Make every decoder aiortc creates from now on decode on its track's thread alone (FFmpeg
    ``thread_count = 1``; see the module docstring). Idempotent; process-wide, like
    :func:`accept_unlabelled_h264`."""
    # aiortc's receiver module imported the factory by name: that is the one its decoder threads call.
    setattr(aiortc.rtcrtpreceiver, "get_decoder", _single_threaded_decoder)  # noqa: B010


def decode_frames(
    loop: asyncio.AbstractEventLoop,
    input_queue: queue.Queue[Any],
    output_queue: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    """A receiver's decoder thread (aiortc 1.16's ``decoder_worker`` contract): decode each
    ``(codec parameters, JitterFrame)`` taken from ``input_queue`` and put every frame on
    ``output_queue`` (the track's) through ``loop``; ``None`` in ends it, and ``None`` is put out
    (the track then ends). A frame FFmpeg cannot decode sets ``decode_error`` (aiortc's receiver
    then asks for a keyframe) and is skipped, keeping the decoder's state. The decoder is made by
    ``aiortc.rtcrtpreceiver.get_decoder`` (:func:`single_threaded_decoders` when installed) and
    remade when the payload's codec changes. A closed loop ends the thread.
    """
    make_decoder = getattr(aiortc.rtcrtpreceiver, "get_decoder")  # noqa: B009 - not exported
    decoder: Any = None
    codec_name: str | None = None

    def hand_over(item: Any) -> bool:
        try:
            loop.call_soon_threadsafe(output_queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            return False
        return True

    while (task := input_queue.get()) is not None:
        codec, encoded_frame = task
        if codec.name != codec_name:
            decoder, codec_name = make_decoder(codec), codec.name
        try:
            frames = decoder.decode(encoded_frame)
        except av.FFmpegError as exc:
            log.warning("cannot decode a %s frame: %s", codec.name, exc)
            decode_error.set()
            continue
        for frame in frames:
            if not hand_over(frame):
                return
    hand_over(None)


def direct_frame_handoff() -> None:
    """Make every receiver aiortc starts from now on decode with :func:`decode_frames` (see the
    module docstring). Idempotent; process-wide."""
    setattr(aiortc.rtcrtpreceiver, "decoder_worker", decode_frames)  # noqa: B010 - not exported


__all__ = ["accept_unlabelled_h264", "decode_frames", "direct_frame_handoff", "single_threaded_decoders"]
