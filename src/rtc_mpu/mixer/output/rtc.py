"""The mix published back into its channel over WebRTC (output kind ``rtc``).

The task's one H.264 encode is reused as it is: each :class:`~rtc_mpu.mixer.output.encoder.EncodedPacket`
becomes an ``av.Packet`` that aiortc packetizes without encoding again (an ``av.Packet`` coming out
of a track is *packed*, a frame would be encoded). Only the audio is encoded again, because WebRTC
carries Opus and the task encodes AAC: on the output's job thread the AAC packets are decoded and
encoded to Opus (20 ms frames, as aiortc's own encoder would), and aiortc only packs those too, so
the event loop does no media work (nor aiortc's per-frame audio level).

The publisher joins the channel's VideoRoom room as ``<task_id>.mix``
(:data:`rtc_mpu.spec.tokens.MIX_SUFFIX`); the channel sources never mix such a publisher. With
Janus' signed tokens (the stack's default) it joins with the workers' own credentials, its join
token on the room's ``allowed`` list only for the moment of the join.

Browsers decode WebRTC H.264 in constrained baseline and main profile (Debian's Chromium offers
``42e01f``, ``42001f`` and ``4d001f``), so a task with an ``rtc`` output encodes main profile
(:data:`RTC_PROFILE`) and offers ``profile-level-id`` :data:`MAIN_PROFILE_LEVEL_ID`, which aiortc
does not list by itself (:func:`offer_main_profile`). SPS and PPS live in the encoder's extradata
(global header, for the containers), so they are put in front of every keyframe here.

A viewer's PLI or FIR (Janus forwards them when a subscriber joins or loses pictures) asks the
task's encoder for an IDR (``request_keyframe``). Everything blocking here runs on the output's job
thread and waits on the event loop, where aiortc lives, with a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fractions
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import CODECS
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rtc_mpu.mixer.output.encoder import EncodedPacket, StreamTemplates
from rtc_mpu.mixer.output.muxers import OutputTarget
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget
from rtc_mpu.mixer.sources.janus import ChannelConfig, join_as_publisher, rtc_configuration
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusSession, JsonDict

log = logging.getLogger(__name__)

#: x264 profile of a task with an ``rtc`` output (browsers decode main, not high, over WebRTC).
RTC_PROFILE = "main"
#: H.264 main profile, level 3.1 (RFC 6184 ``profile-level-id``: profile_idc 0x4d, constraints 0x00,
#: level_idc 0x1f), as Chromium offers it.
MAIN_PROFILE_LEVEL_ID = "4d001f"
#: Seconds joining the room and negotiating may take, and closing.
CONNECT_TIMEOUT_SECONDS = 10.0
#: Video packets (about 2 s at 30 fps) and audio frames that may wait for aiortc before the oldest
#: are dropped (the peer connection stalled).
MAX_QUEUED_VIDEO = 60
MAX_QUEUED_AUDIO = 100
#: The RTP clock of Opus and of our audio (RFC 7587), Hz.
AUDIO_RATE = 48000
#: Samples per Opus frame (20 ms at 48 kHz) and its bitrate in bit/s (aiortc's own encoder's values).
OPUS_FRAME_SAMPLES = 960
OPUS_BITRATE = 96000


def offer_main_profile() -> None:
    """Make aiortc offer H.264 main profile (``4d001f``) besides its baseline ones. Idempotent; it
    changes aiortc's module-level codec list, so every peer connection of the process offers it."""
    video = CODECS["video"]
    if any(c.parameters.get("profile-level-id") == MAIN_PROFILE_LEVEL_ID for c in video):
        return
    used = {c.payloadType for c in video if c.payloadType is not None}
    payload_type = next(pt for pt in range(96, 128, 2) if pt not in used and pt + 1 not in used)
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=payload_type,
            parameters={
                "level-asymmetry-allowed": "1",
                "packetization-mode": "1",
                "profile-level-id": MAIN_PROFILE_LEVEL_ID,
            },
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


class QueuedTrack(MediaStreamTrack):
    """A track whose ``recv()`` returns the encoded packets :meth:`push` queued (on the event loop):
    H.264 access units (video) or Opus frames (audio), which aiortc packs as they are. Beyond
    ``limit`` queued items the oldest is dropped and counted."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue()
        self._limit = limit
        #: Items dropped because aiortc did not take them in time.
        self.dropped = 0

    def push(self, item: av.Packet[Any] | None) -> None:
        """Queue ``item`` (None ends the track). Call on the event loop."""
        while self._queue.qsize() >= self._limit:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def recv(self) -> av.Packet[Any]:
        """The next queued item.

        Raises:
            MediaStreamError: the track ended.
        """
        item = await self._queue.get()
        if item is None or self.readyState != "live":
            raise MediaStreamError
        return item


class RtcMuxer:
    """One WebRTC publisher of the mix in the channel's room (a :class:`~rtc_mpu.mixer.output.muxers.Muxer`).

    The constructor joins and negotiates (on ``loop``, waited for here on the output's job thread).

    Args:
        target: the output (:func:`rtc_output`).
        templates: the encoder's streams (SPS/PPS and the AAC configuration).
        channel: the channel's room and credentials.
        publisher_id: the publisher id (``<task_id>.mix``).
        loop: the event loop aiortc runs on.
        request_keyframe: asks the task's encoder for an IDR (called on the loop), or None.

    Raises:
        SinkError: joining or negotiating failed or timed out (status 5), or Janus refused (6).
    """

    def __init__(
        self,
        target: OutputTarget,
        templates: StreamTemplates,
        *,
        channel: ChannelConfig,
        publisher_id: str,
        loop: asyncio.AbstractEventLoop,
        request_keyframe: Callable[[], None] | None = None,
        timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.target = target
        self._channel = channel
        self._publisher_id = publisher_id
        self._loop = loop
        self._request_keyframe = request_keyframe
        self._timeout_seconds = timeout_seconds
        self._session: JanusSession | None = None
        self._pc: RTCPeerConnection | None = None
        self._failed: str | None = None
        self._closed = False
        video = templates.video
        self._sps_pps = bytes(video.codec_context.extradata or b"") if video is not None else b""
        self._video = QueuedTrack("video", MAX_QUEUED_VIDEO) if video is not None else None
        self._audio = QueuedTrack("audio", MAX_QUEUED_AUDIO) if templates.audio is not None else None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._opus: av.AudioCodecContext | None = None
        if templates.audio is not None:
            decoder = av.CodecContext.create("aac", "r")
            assert isinstance(decoder, av.AudioCodecContext)
            source = templates.audio.codec_context
            assert isinstance(source, av.AudioCodecContext)
            decoder.extradata = source.extradata
            decoder.sample_rate = source.sample_rate
            decoder.layout = source.layout
            self._decoder = decoder
            self._resampler = av.AudioResampler(
                format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=OPUS_FRAME_SAMPLES
            )
            opus = av.CodecContext.create("libopus", "w")
            assert isinstance(opus, av.AudioCodecContext)
            opus.bit_rate = OPUS_BITRATE
            opus.format = "s16"
            opus.layout = "stereo"
            opus.sample_rate = AUDIO_RATE
            opus.time_base = fractions.Fraction(1, AUDIO_RATE)
            opus.options = {"application": "voip"}
            self._opus = opus
        try:
            self._wait(self._start(), "joining the room")
        except SinkError:
            self.abort()
            raise

    # -- the job thread's side -----------------------------------------------------------------
    def _wait(self, coroutine: Coroutine[Any, Any, None], what: str) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(self._timeout_seconds)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise SinkError(f"{what} timed out", self.target.display, push_url_problem=False) from None
        except JanusError as exc:
            raise SinkError(
                f"{what}: Janus refused: {exc}", self.target.display, push_url_problem=True
            ) from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise SinkError(f"{what} failed: {exc}", self.target.display, push_url_problem=False) from None

    def write(self, packet: EncodedPacket) -> int:
        """Hand ``packet`` to the peer connection (video as it is, audio decoded for Opus).

        Raises:
            SinkError: the peer connection failed or closed.
        """
        if self._failed is not None:
            raise SinkError(self._failed, self.target.display, push_url_problem=False)
        if packet.video:
            if self._video is None:
                return 0
            data = self._sps_pps + packet.data if packet.keyframe else packet.data
            out = av.Packet(data)
            out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
            self._loop.call_soon_threadsafe(self._video.push, out)
            return len(packet.data)
        if self._audio is None or self._decoder is None or self._resampler is None or self._opus is None:
            return 0
        encoded = av.Packet(packet.data)
        encoded.pts, encoded.time_base = packet.pts, packet.time_base
        try:
            frames = [r for f in self._decoder.decode(encoded) for r in self._resampler.resample(f)]
            opus = [p for frame in frames for p in self._opus.encode(frame)]
        except av.error.FFmpegError as exc:
            log.warning("rtc output: audio packet not transcoded: %s", exc)
            return 0
        for out in opus:
            self._loop.call_soon_threadsafe(self._audio.push, out)
        return len(packet.data)

    def close(self) -> None:
        """Leave the room and close the peer connection. Idempotent.

        Raises:
            SinkError: it did not close within the timeout (everything is dropped anyway).
        """
        if self._closed:
            return
        self._closed = True
        self._wait(self._stop(), "leaving the room")

    def abort(self) -> None:
        """Close without caring for errors. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SinkError):
            self._wait(self._stop(), "leaving the room")

    def interrupt(self) -> None:
        """Writes only queue: nothing blocks on the network here."""

    # -- the event loop's side -----------------------------------------------------------------
    async def _start(self) -> None:
        offer_main_profile()
        channel = self._channel
        session = self._session = JanusSession(
            channel.janus_url,
            api_secret=channel.api_secret,
            token=channel.session_token,
            on_lost=lambda exc: self._fail(f"Janus session lost: {exc}"),
        )
        await session.connect()
        handle = await session.attach()
        join: JsonDict = {
            "request": "join",
            "ptype": "publisher",
            "room": channel.room,
            "id": self._publisher_id,
            "display": self._publisher_id,
        }
        if channel.pin:
            join["pin"] = channel.pin
        await join_as_publisher(handle, join, channel)
        pc = self._pc = RTCPeerConnection(rtc_configuration(channel.ice_servers))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not self._closed:
                self._fail(f"WebRTC connection {pc.connectionState}")

        kinds: list[str] = []
        for track in (self._video, self._audio):
            if track is None:
                continue
            sender = pc.addTrack(track)
            kinds.append(track.kind)
            if track.kind == "video":
                self._prefer_main_profile(pc, sender)
                if self._request_keyframe is not None:
                    # aiortc calls ``_send_keyframe`` on a PLI/FIR: a packed track cannot make an
                    # IDR, the task's encoder can.
                    sender._send_keyframe = self._request_keyframe  # type: ignore[method-assign]
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription
        event = await handle.message(
            {"request": "publish", "audio": "audio" in kinds, "video": "video" in kinds},
            jsep={"type": offer.type, "sdp": offer.sdp},
        )
        if not event.jsep:
            raise JanusError(0, "Janus sent no answer to the publish offer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=event.jsep["sdp"], type=event.jsep["type"]))
        if self._request_keyframe is not None:
            self._request_keyframe()
        log.info("publishing the mix into %s as %s", channel.room, self._publisher_id)

    @staticmethod
    def _prefer_main_profile(pc: RTCPeerConnection, sender: RTCRtpSender) -> None:
        """Offer H.264 main profile first (then the others aiortc knows, for a room that refuses it)."""
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        codecs = RTCRtpSender.getCapabilities("video").codecs
        main = [c for c in codecs if c.parameters.get("profile-level-id") == MAIN_PROFILE_LEVEL_ID]
        h264 = [c for c in codecs if c.mimeType.lower() == "video/h264" and c not in main]
        rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx"]
        transceiver.setCodecPreferences([*main, *h264, *rtx])

    def _fail(self, reason: str) -> None:
        if self._failed is None:
            self._failed = reason
            log.warning("rtc output %s: %s", self._publisher_id, reason)

    async def _stop(self) -> None:
        for track in (self._video, self._audio):
            if track is not None:
                track.push(None)
                track.stop()
        if self._pc is not None:
            await self._pc.close()
        if self._session is not None:
            await self._session.close()


def rtc_output(channel: ChannelConfig, publisher_id: str) -> OutputTarget:
    """The :class:`~rtc_mpu.mixer.output.muxers.OutputTarget` of the mix published into ``channel``
    as ``publisher_id`` (open it with :class:`RtcMuxer` as the muxer factory)."""
    display = f"webrtc://{channel.room}/{publisher_id}"
    return OutputTarget(SinkTarget(display, "rtc", display, True), kind="rtc")


def rtc_muxer_factory(
    channel: ChannelConfig,
    publisher_id: str,
    loop: asyncio.AbstractEventLoop,
    request_keyframe: Callable[[], None] | None,
) -> Callable[[OutputTarget, StreamTemplates], RtcMuxer]:
    """A muxer factory (:data:`~rtc_mpu.mixer.output.muxers.MuxerFactory`) of :class:`RtcMuxer`."""

    def make(target: OutputTarget, templates: StreamTemplates) -> RtcMuxer:
        return RtcMuxer(
            target,
            templates,
            channel=channel,
            publisher_id=publisher_id,
            loop=loop,
            request_keyframe=request_keyframe,
        )

    return make


__all__ = [
    "MAIN_PROFILE_LEVEL_ID",
    "RTC_PROFILE",
    "QueuedTrack",
    "RtcMuxer",
    "offer_main_profile",
    "rtc_muxer_factory",
    "rtc_output",
]
