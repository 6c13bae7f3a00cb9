"""The mix published back into its channel (output kind ``rtc``), as a VideoRoom remote publisher.

The task's one H.264 encode is reused as it is, and nothing here speaks WebRTC: the output asks
Janus' VideoRoom for a *remote publisher* (``add_remote_publisher``, Janus >= 1.1: a publisher fed by
plain RTP on a UDP port Janus opens) named ``<task_id>.mix``
(:data:`rtc_mpu.spec.tokens.MIX_SUFFIX`), and sends it RTP from the output's job thread: each
:class:`~rtc_mpu.mixer.output.encoder.EncodedPacket` of video is cut into RTP payloads
(:mod:`rtc_mpu.mixer.output.rtp`, SPS and PPS put in front of every keyframe, since they live in the
encoder's extradata for the containers), and the mixed audio blocks the AAC packets carry
(:attr:`~rtc_mpu.mixer.output.encoder.EncodedPacket.pcm`) are encoded to Opus (20 ms frames).
Janus does ICE, DTLS and SRTP with every viewer in C; subscribers see the publisher as any other.
This replaced an aiortc peer connection whose Python RTP/SRTP path cost 13-16 % of a task (issue 14;
``python -m bench.rtc_delay`` measures both the delay and the CPU the output adds).

Janus sends a PLI to the address that last sent to its RTCP port (we latch with an empty receiver
report, repeated every :data:`LATCH_INTERVAL_SECONDS`); a PLI asks the task's encoder for an IDR
(``request_keyframe``, called on the event loop).

Browsers decode WebRTC H.264 in constrained baseline and main profile (Debian's Chromium offers
``42e01f``, ``42001f`` and ``4d001f``), so a task with an ``rtc`` output encodes main profile
(:data:`RTC_PROFILE`). Janus 1.1.2 cannot be told a remote publisher's H.264 profile (its request
validation declares ``h264_profile`` a boolean, then reads a string), so viewers are offered H.264
without a ``profile-level-id``; Chromium and aiortc decode the main-profile stream all the same.

The RTP between the worker and Janus is plain (Janus 1.1.2 does not decrypt SRTP for remote
publishers) and Janus does not check where it comes from: on one host the port is bound to loopback;
across hosts keep the workers' and Janus' network private (README, "The mix over WebRTC").

A remote publisher belongs to the room, not to a Janus session: :meth:`RtcMuxer.close` removes it,
a worker that takes a task over replaces the one its predecessor left (same id), and the workers'
reconciler removes those of tasks that ended without their worker
(:func:`remove_mix_publisher`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fractions
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

import av

from rtc_mpu.mixer.output.encoder import EncodedPacket, StreamTemplates
from rtc_mpu.mixer.output.muxers import OutputTarget
from rtc_mpu.mixer.output.rtp import RtpStream, h264_payloads, keyframe_requested, receiver_report
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusHandle, JanusSession, JsonDict
from rtc_mpu.spec import tokens

log = logging.getLogger(__name__)

#: x264 profile of a task with an ``rtc`` output (browsers decode main, not high, over WebRTC).
RTC_PROFILE = "main"
#: H.264 main profile, level 3.1 (RFC 6184 ``profile-level-id``: profile_idc 0x4d, constraints 0x00,
#: level_idc 0x1f), as Chromium offers it.
MAIN_PROFILE_LEVEL_ID = "4d001f"
#: Seconds joining the room may take, and leaving it.
CONNECT_TIMEOUT_SECONDS = 10.0
#: The RTP clock of Opus and of our audio (RFC 7587), Hz.
AUDIO_RATE = 48000
#: Samples per Opus frame (20 ms at 48 kHz) and its bitrate in bit/s (aiortc's encoder's values).
OPUS_FRAME_SAMPLES = 960
OPUS_BITRATE = 96000
#: libopus' complexity (0-10) for the mix: 5 halves the encoder's CPU against 10 (0.0036 vs 0.0072
#: CPU-s per second of 96 kbit/s stereo here); libwebrtc's own Opus encoder uses 5 on mobile and 9
#: on desktop (audio_encoder_opus.cc). The mix is music and voices: ``application`` audio.
OPUS_COMPLEXITY = 5
#: The payload types and SSRCs Janus expects from a remote publisher (janus_videoroom.c and rtp.c
#: of Janus 1.1.2: ``H264_PT`` 107, ``OPUS_PT`` 111; the SSRC of the stream at m-line index i is
#: ``REMOTE_PUBLISHER_BASE_SSRC + i * REMOTE_PUBLISHER_SSRC_STEP`` = 1000 + 10 i).
H264_PAYLOAD_TYPE = 107
OPUS_PAYLOAD_TYPE = 111
REMOTE_SSRC_BASE = 1000
REMOTE_SSRC_STEP = 10
#: VideoRoom error codes (janus_videoroom.c): the id exists; no such feed.
ERROR_ID_EXISTS = 436
ERROR_NO_SUCH_FEED = 428
#: Seconds between the receiver reports that latch Janus' RTCP feedback to our socket.
LATCH_INTERVAL_SECONDS = 2.0
#: Socket send buffer, bytes: a keyframe of a 1080p mix (a few hundred kB) leaves at once.
SEND_BUFFER_BYTES = 1 << 20


def opus_framer() -> av.AudioResampler:
    """A resampler that turns any audio into the 20 ms s16 stereo 48 kHz frames :func:`opus_encoder`
    takes (it keeps the rest of a block for the next)."""
    return av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=OPUS_FRAME_SAMPLES)


def opus_encoder(complexity: int | None = None) -> av.AudioCodecContext:
    """libopus for WebRTC: stereo 48 kHz s16 in, :data:`OPUS_BITRATE` bit/s, ``application`` audio,
    pts in 1/48000 s; ``complexity`` 0-10 (None: libopus' default, 10)."""
    opus = av.CodecContext.create("libopus", "w")
    assert isinstance(opus, av.AudioCodecContext)
    opus.bit_rate = OPUS_BITRATE
    opus.format = "s16"
    opus.layout = "stereo"
    opus.sample_rate = AUDIO_RATE
    opus.time_base = fractions.Fraction(1, AUDIO_RATE)
    options = {"application": "audio"}
    if complexity is not None:
        options["compression_level"] = str(complexity)
    opus.options = options
    return opus


def remote_publisher_request(
    publisher_id: str,
    room: str,
    secret: str | None,
    video: bool,
    audio: bool,
    iface: str | None,
    data: bool = False,
) -> JsonDict:
    """The VideoRoom ``add_remote_publisher`` body: H.264 video at m-line 0 (if any), stereo Opus
    after it, then a data channel (if ``data``). The stream at index i is fed RTP with SSRC
    ``REMOTE_SSRC_BASE + i * REMOTE_SSRC_STEP``."""
    streams: list[JsonDict] = []
    if video:
        streams.append({"type": "video", "mindex": len(streams), "mid": str(len(streams)), "codec": "h264"})
    if audio:
        streams.append(
            {
                "type": "audio",
                "mindex": len(streams),
                "mid": str(len(streams)),
                "codec": "opus",
                "stereo": True,
            }
        )
    if data:
        streams.append({"type": "data", "mindex": len(streams), "mid": str(len(streams))})
    body: JsonDict = {
        "request": "add_remote_publisher",
        "room": room,
        "id": publisher_id,
        "display": publisher_id,
        "streams": streams,
    }
    if secret:
        body["secret"] = secret
    if iface:
        body["iface"] = iface
    return body


def room_secret(channel: ChannelConfig) -> str | None:
    """The room's ``secret`` (editing it, adding remote publishers), derived from the token secret."""
    return tokens.room_secret(channel.token_secret, channel.room) if channel.token_secret else None


async def remove_mix_publisher(channel: ChannelConfig, publisher_id: str) -> bool:
    """Remove the remote publisher ``publisher_id`` (a task's ``.mix``) from the channel's room.

    Returns:
        True if one was removed, False if there was none (or no such room).

    Raises:
        JanusError, JanusUnreachableError: Janus refused or did not answer.
    """
    session = JanusSession(channel.janus_url, api_secret=channel.api_secret, token=channel.session_token)
    await session.connect()
    try:
        handle = await session.attach()
        return await remove_remote_publisher(
            handle_request=handle.request, channel=channel, publisher_id=publisher_id
        )
    finally:
        await session.close()


async def remove_remote_publisher(
    *,
    handle_request: Callable[[JsonDict], Coroutine[Any, Any, JsonDict]],
    channel: ChannelConfig,
    publisher_id: str,
) -> bool:
    """Remove the remote publisher ``publisher_id`` from the channel's room with ``handle_request``
    (a VideoRoom handle's :meth:`~rtc_mpu.mixer.sources.janus_http.JanusHandle.request`).

    Returns:
        True if removed, False if there was none (or no such room).

    Raises:
        JanusError, JanusUnreachableError: Janus refused otherwise or did not answer.
    """
    body: JsonDict = {"request": "remove_remote_publisher", "room": channel.room, "id": publisher_id}
    if secret := room_secret(channel):
        body["secret"] = secret
    try:
        await handle_request(body)
    except JanusError as exc:
        if exc.code in (ERROR_NO_SUCH_FEED, 426):  # gone already, or the room is
            return False
        raise
    return True


class RtcMuxer:
    """The mix as a remote publisher in the channel's room (a :class:`~rtc_mpu.mixer.output.muxers.Muxer`).

    The constructor adds the publisher (on ``loop``, waited for here on the output's job thread) and
    opens the sockets; :meth:`write` sends RTP from the calling thread.

    Args:
        target: the output (:func:`rtc_output`).
        templates: the encoder's streams (SPS/PPS and the AAC configuration).
        channel: the channel's room and credentials.
        publisher_id: the publisher id (``<task_id>.mix``).
        loop: the event loop the Janus client and the RTCP socket live on.
        request_keyframe: asks the task's encoder for an IDR (called on the loop), or None.
        timeout_seconds: how long adding and removing the publisher may take.

    Raises:
        SinkError: adding the publisher failed or timed out (status 5), or Janus refused (6).
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
        self._handle: JanusHandle | None = None
        self._failed: str | None = None
        self._closed = False
        self._added = False
        self._rtp: socket.socket | None = None
        self._rtcp: socket.socket | None = None
        self._latched_at = 0.0
        video = templates.video
        self._sps_pps = bytes(video.codec_context.extradata or b"") if video is not None else b""
        mindex = 0
        self._video: RtpStream | None = None
        self._audio: RtpStream | None = None
        if video is not None:
            self._video = RtpStream(H264_PAYLOAD_TYPE, REMOTE_SSRC_BASE + mindex * REMOTE_SSRC_STEP, 90000)
            mindex += 1
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._opus: av.AudioCodecContext | None = None
        if templates.audio is not None:
            self._audio = RtpStream(
                OPUS_PAYLOAD_TYPE, REMOTE_SSRC_BASE + mindex * REMOTE_SSRC_STEP, AUDIO_RATE
            )
            decoder = av.CodecContext.create("aac", "r")
            assert isinstance(decoder, av.AudioCodecContext)
            source = templates.audio.codec_context
            assert isinstance(source, av.AudioCodecContext)
            decoder.extradata = source.extradata
            decoder.sample_rate = source.sample_rate
            decoder.layout = source.layout
            self._decoder = decoder
            self._resampler = opus_framer()
            self._opus = opus_encoder(OPUS_COMPLEXITY)
        try:
            self._wait(self._start(), "adding the mix to the room")
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
        """Send ``packet`` as RTP (video as it is, audio encoded to Opus first).

        Returns:
            The encoded bytes taken (``len(packet.data)``), 0 for a stream the output does not carry.

        Raises:
            SinkError: the publisher is gone (Janus lost the session or refused the packets).
        """
        if self._failed is not None:
            raise SinkError(self._failed, self.target.display, push_url_problem=False)
        sock = self._rtp
        if sock is None:
            raise SinkError("the output is closed", self.target.display, push_url_problem=False)
        now = time.monotonic()
        if now - self._latched_at >= LATCH_INTERVAL_SECONDS:
            self._latch(now)
        try:
            if packet.video:
                return self._write_video(sock, packet)
            return self._write_audio(sock, packet)
        except OSError as exc:  # e.g. ICMP port unreachable: Janus removed the publisher
            self._fail(f"sending RTP to Janus failed: {exc}")
            raise SinkError(self._failed or str(exc), self.target.display, push_url_problem=False) from None

    def _write_video(self, sock: socket.socket, packet: EncodedPacket) -> int:
        stream = self._video
        if stream is None:
            return 0
        data = self._sps_pps + packet.data if packet.keyframe else packet.data
        time_base = packet.time_base
        timestamp = stream.timestamp(packet.pts, time_base.numerator, time_base.denominator)
        payloads = h264_payloads(data)
        last = len(payloads) - 1
        send = sock.send
        for index, payload in enumerate(payloads):
            send(stream.packet(payload, timestamp, index == last))
        return len(packet.data)

    def _write_audio(self, sock: socket.socket, packet: EncodedPacket) -> int:
        stream = self._audio
        if stream is None or self._resampler is None or self._opus is None:
            return 0
        try:
            if packet.pcm:  # the mixed blocks themselves: no AAC to decode
                frames = [r for f in packet.pcm for r in self._resampler.resample(f)]
            elif self._decoder is not None:  # an encoder that does not hand them over
                encoded = av.Packet(packet.data)
                encoded.pts, encoded.time_base = packet.pts, packet.time_base
                frames = [r for f in self._decoder.decode(encoded) for r in self._resampler.resample(f)]
            else:
                return 0
            opus = [p for frame in frames for p in self._opus.encode(frame)]
        except av.error.FFmpegError as exc:
            log.warning("rtc output: audio packet not transcoded: %s", exc)
            return 0
        for out in opus:
            if out.pts is None:
                continue
            sock.send(stream.packet(bytes(out), int(out.pts)))
        return len(packet.data)

    def _latch(self, now: float) -> None:
        """Tell Janus' RTCP port where to send its feedback (an empty receiver report)."""
        self._latched_at = now
        rtcp = self._rtcp
        stream = self._video or self._audio
        if rtcp is None or stream is None:
            return
        with contextlib.suppress(OSError):
            rtcp.send(receiver_report(stream.ssrc + 1))

    def close(self) -> None:
        """Remove the publisher from the room and close the sockets. Idempotent.

        Raises:
            SinkError: Janus did not answer within the timeout (the sockets are closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        self._wait(self._stop(), "removing the mix from the room")

    def abort(self) -> None:
        """Close without caring for errors. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SinkError):
            self._wait(self._stop(), "removing the mix from the room")

    def interrupt(self) -> None:
        """Nothing blocks here: UDP sends do not wait for the network."""

    # -- the event loop's side -----------------------------------------------------------------
    async def _start(self) -> None:
        channel = self._channel
        host = urllib.parse.urlsplit(channel.janus_url).hostname or "127.0.0.1"
        infos = await self._loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve Janus' host {host!r}")
        family, _, _, _, address = infos[0]
        janus_ip = str(address[0])
        # On one host the RTP port is bound to loopback: no other machine can feed the mix.
        iface = janus_ip if ipaddress.ip_address(janus_ip).is_loopback else None
        session = self._session = JanusSession(
            channel.janus_url,
            api_secret=channel.api_secret,
            token=channel.session_token,
            on_lost=lambda exc: self._fail(f"Janus session lost: {exc}"),
        )
        await session.connect()
        handle = self._handle = await session.attach()
        body = remote_publisher_request(
            self._publisher_id,
            channel.room,
            room_secret(channel),
            video=self._video is not None,
            audio=self._audio is not None,
            iface=iface,
        )
        try:
            answer = await handle.request(body)
        except JanusError as exc:
            if exc.code != ERROR_ID_EXISTS:
                raise
            # A predecessor's (a worker that died, or the one this task was taken over from).
            log.info("replacing the %s publisher left in %s", self._publisher_id, channel.room)
            await remove_remote_publisher(
                handle_request=handle.request, channel=channel, publisher_id=self._publisher_id
            )
            answer = await handle.request(body)
        self._added = True
        port, rtcp_port = int(answer["port"]), int(answer["rtcp_port"])
        rtp = self._rtp = socket.socket(family, socket.SOCK_DGRAM)
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        rtp.connect((janus_ip, port))
        rtcp = self._rtcp = socket.socket(family, socket.SOCK_DGRAM)
        rtcp.setblocking(False)
        rtcp.connect((janus_ip, rtcp_port))
        self._loop.add_reader(rtcp.fileno(), self._on_rtcp)
        self._latch(time.monotonic())
        if self._request_keyframe is not None:
            self._request_keyframe()
        log.info(
            "publishing the mix into %s as %s (RTP to %s:%d)",
            channel.room,
            self._publisher_id,
            janus_ip,
            port,
        )

    def _on_rtcp(self) -> None:
        rtcp = self._rtcp
        if rtcp is None:
            return
        while True:
            try:
                data = rtcp.recv(1500)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable for a latch packet: Janus' port closed
                return
            if keyframe_requested(data) and self._request_keyframe is not None:
                self._request_keyframe()

    def _fail(self, reason: str) -> None:
        if self._failed is None:
            self._failed = reason
            log.warning("rtc output %s: %s", self._publisher_id, reason)

    async def _stop(self) -> None:
        rtcp, self._rtcp = self._rtcp, None
        rtp, self._rtp = self._rtp, None
        if rtcp is not None:
            self._loop.remove_reader(rtcp.fileno())
            rtcp.close()
        if rtp is not None:
            rtp.close()
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if self._added and self._handle is not None:
                await remove_remote_publisher(
                    handle_request=self._handle.request,
                    channel=self._channel,
                    publisher_id=self._publisher_id,
                )
        finally:
            await session.close()


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
    "RtcMuxer",
    "opus_encoder",
    "opus_framer",
    "remote_publisher_request",
    "remove_mix_publisher",
    "remove_remote_publisher",
    "room_secret",
    "rtc_muxer_factory",
    "rtc_output",
]
