"""The channel as a pipeline :class:`Source`: a Janus VideoRoom room, subscribed to with aiortc.

Naming: the room of channel ``ChannelId`` of app ``AppId`` is the string ``"<AppId>:<ChannelId>"``
(Janus' VideoRoom runs with ``string_ids = true``); a publisher's id is its UserId, and a publisher
``<UserId>.screen`` is that user's screen share (:data:`rtc_mpu.spec.streams.SCREEN_SHARE_SUFFIX`).

How it works: the source joins the room as a participant that never publishes (a *listener*), which
gives it the current publishers and then ``publishers`` / ``unpublished`` / ``leaving`` events in
the order they happen: that order is the join order. For every publisher it attaches a subscriber
handle with its own aiortc ``RTCPeerConnection`` (one per publisher: no renegotiation when people
come and go), and reads each track on its own task, handing decoded frames to the receiver.

Timing (issue 17, lip sync): each decoded frame leaves with ``frame.opaque`` set to its *sender time*:
when its first sample (audio) or the frame (video) left the publisher, as seen from here, in seconds
on the event loop's clock (``loop.time()``), or None when unknown. It comes from the frame's RTP
timestamp mapped by :class:`TrackTiming`: the earliest arrival of each track's packets against their
timestamps over the last seconds (what arrives first has met the least queueing). Why not RTCP: Janus
terminates RTCP and its sender reports to a subscriber put Janus' own wall clock at the time it
forwarded each stream's latest packet (checked on Janus 1.1: one SR a second per stream, NTP minus
RTP/rate within 1 ms of the first arrival of the packets here, 4-9 ms jitter per report), and Janus
rebases each stream's RTP timestamps to start near 0 at its first forwarded packet, so neither carries
the publisher's capture relation between audio and video: equalising what arrives together is the
best the subscription tells, and packet arrivals tell it with less jitter than the reports. An audio
packet is sent after its last sample is captured, so an audio frame's sender time is its packet's
earliest arrival less its own length (and less the Opus encoder's lookahead, :data:`OPUS_LOOKAHEAD_SAMPLES`).

aiortc's audio receiver holds 4 packets (80 ms of Opus) before decoding the first one: here each
audio packet is decoded as it arrives (:class:`PassThroughAudioBuffer`); ordering and gaps are the
audio mixer's business (it places samples by sender time). Both changes reach into aiortc's
``RTCRtpReceiver`` (private attributes of aiortc 1.16, :data:`RECEIVER_JITTER_BUFFER` and
:data:`RECEIVER_TIMESTAMP_MAPPER`); when they are missing, frames simply carry no sender time.

Faults: Janus unreachable → retries with exponential backoff (``status`` says so); a room that
does not exist yet → waits and retries every second (``WAITING``); the session lost (Janus restarted)
→ panes go blank (background) while it reconnects, then the new publisher list is reconciled with
the old one: users still there keep their place in the join order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from rtc_mpu.mixer.sources.base import FrameReceiver, Source
from rtc_mpu.mixer.sources.codecs import (
    accept_unlabelled_h264,
    direct_frame_handoff,
    single_threaded_decoders,
)
from rtc_mpu.mixer.sources.janus_http import (
    JanusError,
    JanusHandle,
    JanusSession,
    JanusUnreachableError,
    JsonDict,
    PluginEvent,
)
from rtc_mpu.mixer.sources.simulcast import LayerSelector
from rtc_mpu.spec import tokens
from rtc_mpu.spec.streams import StreamKey, stream_key_for_publisher
from rtc_mpu.spec.tokens import room_name

log = logging.getLogger(__name__)

#: VideoRoom error code: no such room (Janus videoroom plugin, JANUS_VIDEOROOM_ERROR_NO_SUCH_ROOM).
ERROR_NO_SUCH_ROOM = 426
#: VideoRoom error code: the room already exists (JANUS_VIDEOROOM_ERROR_ROOM_EXISTS).
ERROR_ROOM_EXISTS = 427
#: Seconds between checks for a room that does not exist yet.
ROOM_POLL_INTERVAL = 0.5
#: Seconds allowed for one subscription's offer/answer exchange.
SUBSCRIBE_TIMEOUT = 10.0


#: RTP clock rates in Hz: Opus (RFC 7587) and every video codec (RFC 3551).
AUDIO_CLOCK_RATE = 48000
VIDEO_CLOCK_RATE = 90000
#: aiortc 1.16's ``RTCRtpReceiver`` private attributes used here (see the module docstring).
RECEIVER_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
RECEIVER_TIMESTAMP_MAPPER = "_RTCRtpReceiver__timestamp_mapper"
#: aiortc 1.16's ``RTCRtpReceiver`` private bitrate estimator of a video receiver (see
#: :func:`instrument_receiver`).
RECEIVER_BITRATE_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"
#: libopus' encoder lookahead at 48 kHz, samples (``OPUS_GET_LOOKAHEAD`` for the VOIP and AUDIO
#: applications: 2.5 ms of look-ahead + 4 ms of delay compensation; what browsers and aiortc send). RTP
#: carries no pre-skip, so a decoded Opus frame's sound was captured this much before its timestamp says.
OPUS_LOOKAHEAD_SAMPLES = 312
#: Seconds of packet arrivals whose earliest one maps a track's timestamps (:class:`TrackTiming`).
TIMING_WINDOW_SECONDS = 10.0
#: A frame whose offset differs from the earliest by more than this (seconds) restarts the mapping
#: (the timestamps jumped: Janus switched the stream's source).
TIMING_RESET_SECONDS = 1.0
#: RTP timestamps whose first arrival is remembered, per track.
ARRIVALS_KEPT = 512
#: aiortc 1.16's ``RTCRtpReceiver`` private map of payload types to codecs (keyframe detection, issue 18).
RECEIVER_CODECS = "_RTCRtpReceiver__codecs"
#: Seconds allowed for a subscriber ``configure`` (pausing or resuming streams, issue 18), and between
#: retries of one that failed.
CONFIGURE_TIMEOUT = 5.0
CONFIGURE_RETRY_SECONDS = 2.0
#: H.264 NAL unit types (RFC 6184 / ITU-T H.264 table 7-1): an IDR slice, a sequence parameter set,
#: and the aggregation (STAP-A) and fragmentation (FU-A) payloads.
H264_IDR, H264_SPS, H264_STAP_A, H264_FU_A = 5, 7, 24, 28


class TrackTiming:
    """Sender times of one received track's frames, from their RTP timestamps.

    :meth:`on_packet` notes when each timestamp's first packet arrived (event loop's clock, seconds);
    :meth:`sender_time` maps a decoded frame's timestamp to ``timestamp / rate + offset``, ``offset``
    being the least ``arrival - (timestamp + duration) / rate`` over the last
    :data:`TIMING_WINDOW_SECONDS` (1 s buckets): the packets that met the least delay define the
    mapping, so jitter does not move it and a slow change of the path or of the sender's clock
    (ppm) is followed within the window.

    Args:
        clock_rate: the track's RTP clock rate in Hz.
    """

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._arrivals: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._last: tuple[int, int] | None = None  # (raw timestamp, unwrapped) of the latest frame
        self._minima: collections.deque[tuple[int, float]] = collections.deque()  # (bucket, least offset)

    def on_packet(self, timestamp: int, arrival: float) -> None:
        """An RTP packet with ``timestamp`` (32-bit) arrived at ``arrival`` (seconds); only the first
        arrival of a timestamp counts."""
        if timestamp not in self._arrivals:
            self._arrivals[timestamp] = arrival
            if len(self._arrivals) > ARRIVALS_KEPT:
                self._arrivals.popitem(last=False)

    def _unwrap(self, timestamp: int) -> int:
        if self._last is None:
            unwrapped = timestamp
        else:
            raw, previous = self._last
            unwrapped = previous + ((timestamp - raw + (1 << 31)) % (1 << 32)) - (1 << 31)
        self._last = (timestamp, unwrapped)
        return unwrapped

    def sender_time(self, timestamp: int, duration: int = 0) -> float | None:
        """Sender time in seconds (event loop's clock) of the frame with RTP ``timestamp`` (32-bit),
        ``duration`` long in RTP units (an audio frame's samples; 0 for video), or None when none of
        its packets was seen."""
        arrival = self._arrivals.get(timestamp)
        if arrival is None:
            return None
        unwrapped = self._unwrap(timestamp)
        offset = arrival - (unwrapped + duration) / self.clock_rate
        bucket = int(arrival)
        minima = self._minima
        if minima and abs(offset - min(m for _, m in minima)) > TIMING_RESET_SECONDS:
            minima.clear()
        while minima and minima[0][0] <= bucket - TIMING_WINDOW_SECONDS:
            minima.popleft()
        if minima and minima[-1][0] == bucket:
            if offset < minima[-1][1]:
                minima[-1] = (bucket, offset)
        else:
            minima.append((bucket, offset))
        return unwrapped / self.clock_rate + min(m for _, m in minima)


class PassThroughAudioBuffer(JitterBuffer):
    """An aiortc jitter buffer for audio that hands every packet to the decoder as it arrives (one
    Opus packet is one frame), dropping duplicates and packets older than one already handed over.
    aiortc's own holds 4 packets first (80 ms of 20 ms Opus frames)."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last_sequence: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """The packet as a frame, unless it is a duplicate or late; never asks for a keyframe."""
        sequence = packet.sequence_number
        if self._last_sequence is not None:
            ahead = (sequence - self._last_sequence) & 0xFFFF
            if ahead == 0 or ahead >= 0x8000:
                return False, None
        self._last_sequence = sequence
        data: bytes = getattr(packet, "_data", b"")
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


RtpHandler = Callable[[RtpPacket, int], Awaitable[None]]


def instrument_receiver(
    receiver: Any, kind: str, on_packet: Callable[[RtpPacket], None] | None = None
) -> TrackTiming:
    """Note every RTP packet's arrival for ``receiver`` (an aiortc ``RTCRtpReceiver`` of ``kind``
    ``audio`` or ``video``) in the returned :class:`TrackTiming`, show it to ``on_packet`` (called on
    the event loop before aiortc handles the packet; one wrapper for both: it runs for every packet),
    and give an audio receiver a :class:`PassThroughAudioBuffer`. Call from the event loop before
    media flows (the ``track`` event)."""
    audio = kind == "audio"
    timing = TrackTiming(AUDIO_CLOCK_RATE if audio else VIDEO_CLOCK_RATE)
    loop = asyncio.get_running_loop()
    original: RtpHandler = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        timing.on_packet(packet.timestamp, loop.time())
        if on_packet is not None:
            on_packet(packet)
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle
    if not audio and hasattr(receiver, RECEIVER_BITRATE_ESTIMATOR):
        # aiortc estimates every video packet's delay (abs-send-time) to send REMB feedback, which
        # Janus' VideoRoom ignores from subscribers (it caps publishers by the room's bitrate): the
        # estimate costs CPU on the event loop for nothing.
        setattr(receiver, RECEIVER_BITRATE_ESTIMATOR, None)
    if audio:
        if isinstance(getattr(receiver, RECEIVER_JITTER_BUFFER, None), JitterBuffer):
            setattr(receiver, RECEIVER_JITTER_BUFFER, PassThroughAudioBuffer())
        else:
            log.warning("aiortc's receiver has no %s: audio keeps its 80 ms hold", RECEIVER_JITTER_BUFFER)
    return timing


def frame_sender_time(
    receiver: Any, timing: TrackTiming, frame: av.VideoFrame | av.AudioFrame
) -> float | None:
    """Sender time in seconds (event loop's clock) of a frame decoded by ``receiver``, or None.

    aiortc hands frames over with ``pts`` = RTP timestamp minus that of the track's first frame (its
    timestamp mapper's ``_origin``, unwrapped): the RTP timestamp is ``pts + origin`` modulo 2**32. An
    audio frame's sound is moved :data:`OPUS_LOOKAHEAD_SAMPLES` earlier (the encoder's delay).
    """
    origin = getattr(getattr(receiver, RECEIVER_TIMESTAMP_MAPPER, None), "_origin", None)
    if frame.pts is None or not isinstance(origin, int):
        return None
    if isinstance(frame, av.AudioFrame):
        sent = timing.sender_time((frame.pts + origin) & 0xFFFFFFFF, frame.samples)
        return None if sent is None else sent - OPUS_LOOKAHEAD_SAMPLES / AUDIO_CLOCK_RATE
    return timing.sender_time((frame.pts + origin) & 0xFFFFFFFF)


def _vp8_keyframe(payload: bytes) -> bool:
    """RFC 7741: the packet starts partition 0 of a frame (``S`` set, ``PID`` 0) whose payload header
    has ``P`` (inverse keyframe flag) clear."""
    if not payload or payload[0] & 0x17 != 0x10:
        return False
    offset = 1
    if payload[0] & 0x80:  # X: extension octet
        if len(payload) < 2:
            return False
        extension = payload[1]
        offset = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            offset += 2 if len(payload) > offset and payload[offset] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            offset += 1
        if extension & 0x30:  # T or K: TID/KEYIDX
            offset += 1
    return len(payload) > offset and payload[offset] & 0x01 == 0


def _h264_keyframe(payload: bytes) -> bool:
    """RFC 6184: the packet carries (the start of) an IDR slice or an SPS, alone, in a STAP-A or as the
    first fragment of an FU-A."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == H264_STAP_A:
        offset = 1
        while offset + 2 < len(payload):
            size = int.from_bytes(payload[offset : offset + 2], "big")
            if payload[offset + 2] & 0x1F in (H264_IDR, H264_SPS):
                return True
            offset += 2 + size
        return False
    if nal_type == H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F in (H264_IDR, H264_SPS)
    return nal_type in (H264_IDR, H264_SPS)


def rtp_keyframe(codec_name: str, payload: bytes) -> bool | None:
    """Whether an RTP ``payload`` of ``codec_name`` (``VP8``, ``H264``, case-insensitive) starts a
    keyframe, or None for a codec this cannot tell."""
    name = codec_name.upper()
    if name == "VP8":
        return _vp8_keyframe(payload)
    if name == "H264":
        return _h264_keyframe(payload)
    if name == "RTX":
        return False  # a retransmission: its original was seen (or is lost) as itself
    return None


def rtc_configuration(ice_servers: Sequence[str]) -> RTCConfiguration:
    """aiortc's configuration: the given STUN/TURN URLs, or none at all (no public STUN lookups)."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])


@dataclass(frozen=True)
class ChannelConfig:
    """Where a channel lives.

    Attributes:
        janus_url: Janus' HTTP API, e.g. ``http://127.0.0.1:8088/janus``.
        app_id, channel_id: the channel (named as in StartMPUTask).
        api_secret: Janus' ``api_secret``, if set.
        token: a Janus auth token, if token authentication is on (ignored with ``token_secret``).
        room_pin: the room's PIN, if it has one (ignored with ``token_secret``).
        ice_servers: STUN/TURN URLs for aiortc; empty means host candidates only.
        token_secret: the shared channel-token secret (``MPU_TOKEN_SECRET``), when Janus runs in
            signed-token mode: the source then signs its own service token for every request,
            derives the room's PIN, and puts its join token on the room's ``allowed`` list only for
            the moment it joins (:mod:`rtc_mpu.spec.tokens`).
        token_signature: Janus' signed-token scheme (:data:`rtc_mpu.spec.tokens.SIGNATURES`).
    """

    janus_url: str
    app_id: str
    channel_id: str
    api_secret: str | None = None
    token: str | None = None
    room_pin: str | None = None
    ice_servers: tuple[str, ...] = ()
    token_secret: str | None = None
    token_signature: str = "sha1"

    @property
    def room(self) -> str:
        """The room id."""
        return room_name(self.app_id, self.channel_id)

    @property
    def pin(self) -> str | None:
        """The room's PIN to join with (derived from ``token_secret`` when set)."""
        if self.token_secret:
            return tokens.room_pin(self.token_secret, self.room)
        return self.room_pin

    def session_token(self) -> str | None:
        """The auth token for the next Janus request: a fresh service token with ``token_secret``."""
        if self.token_secret:
            return tokens.mint_service_token(self.token_secret, time.time(), self.token_signature)
        return self.token


async def join_as_publisher(handle: JanusHandle, body: JsonDict, config: ChannelConfig) -> PluginEvent:
    """Send a publisher's ``join`` (``body``) for one of our own participants (the mixer's listener,
    a task's ``.mix`` publisher). In signed-token mode Janus checks a publisher's join against the
    room's ``allowed`` list: a fresh service token is put there for the moment of the join, then
    taken off again.

    Raises:
        JanusError: the room does not exist (``ERROR_NO_SUCH_ROOM``) or Janus refused.
    """
    secret = config.token_secret
    if not secret:
        return await handle.message(body)
    join_token = tokens.mint_service_token(secret, time.time(), config.token_signature)
    edit: JsonDict = {
        "request": "allowed",
        "secret": tokens.room_secret(secret, config.room),
        "room": config.room,
        "allowed": [join_token],
    }
    await handle.request({**edit, "action": "add"})
    try:
        return await handle.message({**body, "token": join_token})
    finally:
        with contextlib.suppress(JanusError):
            await handle.request({**edit, "action": "remove"})


class ChannelStatus(enum.StrEnum):
    """What the source is doing."""

    CONNECTING = "connecting to Janus"
    WAITING = "waiting for channel"
    JOINED = "joined"
    RECONNECTING = "reconnecting to Janus"
    CLOSED = "closed"


@dataclass
class _Subscription:
    """One publisher's subscriber handle, peer connection and track readers.

    Pausing (issue 18): ``wanted`` says per kind (``audio``, ``video``) whether the pipeline needs the
    media (frames of an unwanted kind are dropped here at once); ``sending`` what Janus was last told
    to relay for the stream of that kind (its ``mid`` in ``mids``; None: unknown, a request failed;
    ``configuring`` while a request is under way); after Janus paused a video stream its frames are
    dropped, once it is wanted again, until the first keyframe's (``keyframe_timestamp``, an RTP
    timestamp).

    Simulcast (issue 18): for a publisher whose video is simulcast, ``layers`` chooses the substream
    from the pane's size; ``substream_sent`` is the substream Janus was last told to relay (None: not
    told, or unknown after a failed request); ``reselect`` a pending timer for a switch held back by
    the selector's hysteresis.
    """

    publisher_id: str
    key: StreamKey
    has_video: bool
    handle: JanusHandle | None = None
    pc: RTCPeerConnection | None = None
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    mids: dict[str, str] = field(default_factory=dict)
    wanted: dict[str, bool] = field(default_factory=lambda: {"audio": True, "video": True})
    sending: dict[str, bool | None] = field(default_factory=lambda: {"audio": True, "video": True})
    ready: bool = False
    configuring: bool = False
    awaiting_keyframe: bool = False
    keyframe_timestamp: int | None = None
    layers: LayerSelector | None = None
    substream_sent: int | None = None
    reselect: asyncio.TimerHandle | None = None

    async def close(self) -> None:
        if self.reselect is not None:
            self.reselect.cancel()
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        if self.handle is not None:
            await self.handle.detach()


class JanusSource(Source):
    """A VideoRoom room as the pipeline's source (see the module docstring).

    Args:
        config: where the channel is.
        retry_initial, retry_max: backoff bounds in seconds for reconnecting to Janus.
    """

    live = True

    def __init__(self, config: ChannelConfig, *, retry_initial: float = 0.5, retry_max: float = 10.0) -> None:
        self.config = config
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.status = ChannelStatus.CONNECTING
        self.last_error: str | None = None
        self.listener_id = f"mpu-listener-{secrets.token_hex(4)}"
        self._receiver: FrameReceiver | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, _Subscription] = {}
        self._users: dict[str, set[str]] = {}
        self._closed = False
        #: What the receiver needs (:meth:`want`): None is everything.
        self._want_video: frozenset[StreamKey] | None = None
        self._want_audio: frozenset[str] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_again = False
        #: Each shown stream's pane size in pixels (:meth:`draw_sizes`); None: never told.
        self._draw_sizes: dict[StreamKey, tuple[int, int]] | None = None

    @property
    def users(self) -> list[str]:
        """Users in the channel, in join order."""
        return list(self._users)

    async def start(self, receiver: FrameReceiver) -> None:
        """Start connecting in the background; returns at once (the channel may not exist yet)."""
        accept_unlabelled_h264()  # remote publishers (an ingest, a task's .mix): H.264 without fmtp
        single_threaded_decoders()  # and frames handed to the event loop without a Task each (issue 18)
        direct_frame_handoff()
        self._receiver = receiver
        self._task = asyncio.create_task(self._run(), name=f"janus-source {self.config.room}")

    async def close(self) -> None:
        """Leave the room and release everything. Safe to call twice."""
        self._closed = True
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.status = ChannelStatus.CLOSED

    # -- pausing (issue 18) -------------------------------------------------------------------
    def want(self, video: frozenset[StreamKey] | None, audio: frozenset[str] | None) -> None:
        """Have Janus relay only the video streams in ``video`` and the audio of the users in
        ``audio`` (None: everything; see :meth:`Source.want`), by a subscriber ``configure`` with
        ``streams: [{"mid", "send"}]`` per subscription (Janus 1.1's VideoRoom; on resuming a stream
        Janus resets its RTP sequence numbers and asks the publisher for a keyframe).

        Frames of what is no longer wanted are dropped from now on and a paused video stream is
        blanked at once; a resumed one shows its first picture decoded from a keyframe. The requests
        run on their own task: this returns at once; a failed one is logged (``last_error``).
        """
        self._want_video, self._want_audio = video, audio
        receiver = self._receiver
        for subscription in self._subscriptions.values():
            before = dict(subscription.wanted)
            self._judge(subscription)
            if before["video"] and not subscription.wanted["video"]:
                subscription.awaiting_keyframe = False
                if receiver is not None and subscription.has_video:
                    receiver.on_video_frame(subscription.key, None)
        self._kick_sync()

    def _judge(self, subscription: _Subscription) -> None:
        """Set ``subscription.wanted`` from the receiver's wants; a video stream wanted again waits for
        a keyframe if Janus stopped relaying it (or is being asked to): its decoder missed pictures.
        One whose pause never reached Janus decoded every picture and needs no keyframe."""
        video = self._want_video is None or subscription.key in self._want_video
        audio = self._want_audio is None or subscription.key.user_id in self._want_audio
        interrupted = subscription.configuring or subscription.sending["video"] is not True
        if video and not subscription.wanted["video"] and interrupted:
            subscription.awaiting_keyframe = True
            subscription.keyframe_timestamp = None
        subscription.wanted = {"audio": audio, "video": video}

    # -- simulcast (issue 18) ------------------------------------------------------------------
    def draw_sizes(self, sizes: Mapping[StreamKey, tuple[int, int]]) -> None:
        """Receive each simulcast video stream as the smallest substream that fills its pane (``sizes``:
        (width, height) in canvas pixels; see :meth:`Source.draw_sizes` and
        :mod:`rtc_mpu.mixer.sources.simulcast`), by a subscriber ``configure`` with
        ``streams: [{"mid", "substream"}]`` (Janus 1.1's VideoRoom: it keeps relaying the old substream
        until the new one's keyframe, which it asks the publisher for). Streams that are not simulcast
        are left alone; a stream not named keeps its substream. Returns at once; requests run on the
        pausing task (:meth:`_sync`), failed ones are logged (``last_error``) and retried.
        """
        self._draw_sizes = dict(sizes)
        for subscription in self._subscriptions.values():
            if subscription.layers is not None:
                subscription.layers.set_pane(self._draw_sizes.get(subscription.key))
                self._reselect(subscription)

    def _reselect(self, subscription: _Subscription) -> None:
        """Ask Janus for the substream ``subscription``'s pane calls for, now or (hysteresis) when the
        selector allows it."""
        layers = subscription.layers
        if layers is None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        now = loop.time()
        choice = layers.decide(now)
        if choice is not None:
            log.info(
                "%s: substream %s for a %sx%s pane (sizes seen %s)",
                subscription.publisher_id,
                choice,
                *(layers.pane or (0, 0)),
                layers.observed,
            )
            layers.asked(choice, now)
            self._kick_sync()
        elif layers.pending() and subscription.reselect is None:

            def again() -> None:
                subscription.reselect = None
                if self._subscriptions.get(subscription.publisher_id) is subscription:
                    self._reselect(subscription)

            subscription.reselect = loop.call_later(max(0.0, layers.hold_until() - now), again)

    async def _watch_substreams(self, subscription: _Subscription, handle: JanusHandle) -> None:
        """Read the subscriber handle's events: Janus' ``"substream"`` ones say which substream of the
        video stream it relays (sent at the first keyframe it relays and at every switch)."""
        loop = asyncio.get_running_loop()
        while True:
            event = await handle.events.get()
            substream = event.data.get("substream")
            layers = subscription.layers
            if (
                layers is not None
                and isinstance(substream, int)
                and event.data.get("mid") in (None, subscription.mids.get("video"))
            ):
                log.debug("%s: Janus relays substream %d", subscription.publisher_id, substream)
                layers.on_substream(substream, loop.time())

    def _kick_sync(self) -> None:
        """Bring Janus in line with the subscriptions' ``wanted`` on a task of its own."""
        self._sync_again = True
        if self._sync_task is None or self._sync_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not started: the subscriptions apply it when they are made
            self._sync_task = loop.create_task(self._sync(), name=f"janus-source {self.config.room} pausing")

    async def _sync(self) -> None:
        while self._sync_again and not self._closed:
            self._sync_again = False
            failed = False
            for subscription in list(self._subscriptions.values()):
                failed = not await self._configure(subscription) or failed
            if failed:
                await asyncio.sleep(CONFIGURE_RETRY_SECONDS)
                self._sync_again = True

    async def _configure(self, subscription: _Subscription) -> bool:
        """Send ``subscription``'s handle a ``configure`` for each stream whose relaying differs from
        what is wanted (or is unknown); False when that failed (logged, ``last_error``; the state is
        then unknown and :meth:`_sync` retries)."""
        handle = subscription.handle
        if handle is None or not subscription.ready:
            return True  # being set up: _subscribe applies it when ready
        changes = {
            kind: subscription.wanted[kind]
            for kind in subscription.mids
            if subscription.sending.get(kind, True) != subscription.wanted[kind]
        }
        layers = subscription.layers
        substream = None
        if layers is not None and layers.target is not None and "video" in subscription.mids:
            substream = layers.target if layers.target != subscription.substream_sent else None
        if not changes and substream is None:
            return True
        streams: dict[str, JsonDict] = {
            kind: {"mid": subscription.mids[kind], "send": send} for kind, send in changes.items()
        }
        if substream is not None:
            streams.setdefault("video", {"mid": subscription.mids["video"]})["substream"] = substream
        body: JsonDict = {"request": "configure", "streams": list(streams.values())}
        subscription.configuring = True
        try:
            await handle.message(body, timeout=CONFIGURE_TIMEOUT)
        except Exception as exc:  # JanusError, or the session going away under it
            log.warning("cannot configure %s (%s): %s", subscription.publisher_id, body["streams"], exc)
            self.last_error = f"configure {subscription.publisher_id}: {exc}"
            subscription.sending.update(dict.fromkeys(changes))  # it may or may not have been applied
            if substream is not None:
                subscription.substream_sent = None
            return False
        finally:
            subscription.configuring = False
        subscription.sending.update(changes)
        if substream is not None:
            subscription.substream_sent = substream
        log.debug("%s: configured %s", subscription.publisher_id, list(streams.values()))
        return True

    @staticmethod
    def _keyframe_watcher(rtp_receiver: Any, subscription: _Subscription) -> Callable[[RtpPacket], None]:
        """What notes in ``subscription.keyframe_timestamp`` the RTP timestamp of the first keyframe
        that arrives while a resumed video stream waits for one (packets are seen before they are
        decoded; a later one must not move it: the decoder lags the packets), for
        :func:`instrument_receiver`'s ``on_packet``. A codec whose keyframes this cannot tell ends the
        wait at its first packet."""
        codecs = getattr(rtp_receiver, RECEIVER_CODECS, None)

        def watch(packet: RtpPacket) -> None:
            if subscription.awaiting_keyframe and subscription.keyframe_timestamp is None:
                codec = codecs.get(packet.payload_type) if isinstance(codecs, dict) else None
                keyframe = rtp_keyframe(codec.name, packet.payload) if codec is not None else None
                if keyframe is None or keyframe:
                    subscription.keyframe_timestamp = packet.timestamp

        return watch

    @staticmethod
    def _keyframe_reached(subscription: _Subscription, rtp_receiver: Any, frame: av.VideoFrame) -> bool:
        """Whether a decoded video ``frame`` of a resumed stream is its keyframe or later (and ends the
        wait)."""
        keyframe = subscription.keyframe_timestamp
        if keyframe is None and rtp_receiver is not None:
            return False
        origin = getattr(getattr(rtp_receiver, RECEIVER_TIMESTAMP_MAPPER, None), "_origin", None)
        if keyframe is not None and frame.pts is not None and isinstance(origin, int):
            timestamp = (frame.pts + origin) & 0xFFFFFFFF
            if (timestamp - keyframe) & 0xFFFFFFFF >= 0x80000000:
                return False  # decoded from before the keyframe
        subscription.awaiting_keyframe = False
        return True

    # -- connection loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = self.retry_initial
        while not self._closed:
            lost = asyncio.Event()

            def mark_lost(_exc: Exception, event: asyncio.Event = lost) -> None:
                event.set()

            session = JanusSession(
                self.config.janus_url,
                api_secret=self.config.api_secret,
                token=self.config.session_token,
                on_lost=mark_lost,
            )
            try:
                await session.connect()
                listener = await session.attach()
                joined = await self._join_listener(listener, lost)
                if joined is None:
                    continue
                backoff = self.retry_initial
                self.status = ChannelStatus.JOINED
                self.last_error = None
                await self._reconcile(session, joined.get("publishers") or [])
                await self._listen(session, listener, lost)
            except JanusUnreachableError as exc:
                self.last_error = str(exc)
                log.warning("Janus unreachable (%s); retrying in %.1f s", exc, backoff)
            except JanusError as exc:
                self.last_error = str(exc)
                log.warning("Janus error (%s); retrying in %.1f s", exc, backoff)
            finally:
                await self._blank_all()
                with contextlib.suppress(Exception):
                    await session.close()
            if self._closed:
                break
            self.status = ChannelStatus.RECONNECTING
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.retry_max)

    async def _join_listener(self, listener: JanusHandle, lost: asyncio.Event) -> JsonDict | None:
        """Join as a non-publishing participant; wait while the room does not exist."""
        body: JsonDict = {
            "request": "join",
            "ptype": "publisher",
            "room": self.config.room,
            "id": self.listener_id,
            "display": "rtc-mpu mixer",
        }
        if self.config.pin:
            body["pin"] = self.config.pin
        while not self._closed and not lost.is_set():
            try:
                event = await join_as_publisher(listener, body, self.config)
            except JanusError as exc:
                if exc.code != ERROR_NO_SUCH_ROOM:
                    raise
                if self.status is not ChannelStatus.WAITING:
                    log.info("room %s does not exist yet; waiting", self.config.room)
                self.status = ChannelStatus.WAITING
                await asyncio.sleep(ROOM_POLL_INTERVAL)
                continue
            return event.data
        return None

    async def _listen(self, session: JanusSession, listener: JanusHandle, lost: asyncio.Event) -> None:
        lost_wait = asyncio.create_task(lost.wait())
        try:
            while not self._closed:
                next_event = asyncio.create_task(listener.events.get())
                done, _ = await asyncio.wait({next_event, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
                if next_event not in done:
                    next_event.cancel()
                    raise JanusUnreachableError("session lost")
                await self._on_room_event(session, next_event.result().data)
        finally:
            lost_wait.cancel()

    async def _on_room_event(self, session: JanusSession, data: JsonDict) -> None:
        if data.get("videoroom") == "destroyed":
            log.info("room %s was destroyed", self.config.room)
            for publisher_id in list(self._subscriptions):
                await self._remove_publisher(publisher_id)
            raise JanusError(ERROR_NO_SUCH_ROOM, "room destroyed")
        for publisher in data.get("publishers") or []:
            await self._add_publisher(session, publisher)
        for key in ("unpublished", "leaving", "kicked"):
            gone = data.get(key)
            if isinstance(gone, str) and gone != "ok":
                await self._remove_publisher(gone)

    # -- publishers ---------------------------------------------------------------------------
    async def _reconcile(self, session: JanusSession, publishers: list[JsonDict]) -> None:
        """Make our view match Janus' publisher list after a (re)join."""
        present = {str(p.get("id")) for p in publishers}
        for user_id, publisher_ids in list(self._users.items()):
            for publisher_id in list(publisher_ids):
                if publisher_id not in present:
                    await self._remove_publisher(publisher_id, user_id)
        for publisher in publishers:
            await self._add_publisher(session, publisher)

    async def _add_publisher(self, session: JanusSession, publisher: JsonDict) -> None:
        publisher_id = str(publisher.get("id"))
        if publisher_id == self.listener_id or publisher_id in self._subscriptions:
            return
        if publisher_id.endswith(tokens.MIX_SUFFIX):
            return  # a task's mix published back into the channel: never mixed again
        streams = publisher.get("streams") or []
        has_video = any(s.get("type") == "video" and not s.get("disabled") for s in streams)
        simulcast = any(s.get("type") == "video" and s.get("simulcast") is True for s in streams)
        key = stream_key_for_publisher(publisher_id)
        receiver = self._receiver
        assert receiver is not None
        publishers_of_user = self._users.get(key.user_id)
        if publishers_of_user is None:
            self._users[key.user_id] = publishers_of_user = set()
            receiver.on_user(key.user_id, True)
        publishers_of_user.add(publisher_id)
        if has_video:
            receiver.on_video_stream(key, True)
        subscription = _Subscription(publisher_id, key, has_video)
        if simulcast:
            self._track_layers(subscription)
        self._judge(subscription)
        self._subscriptions[publisher_id] = subscription
        try:
            await self._subscribe(session, subscription)
            log.info("subscribed to %s in %s", publisher_id, self.config.room)
        except (JanusError, ValueError, OSError) as exc:
            log.warning("cannot subscribe to %s: %s", publisher_id, exc)
            self.last_error = f"subscribe {publisher_id}: {exc}"
        except Exception as exc:  # aiortc's own (OperationError: an offer it cannot answer...)
            # One publisher's odd offer must not end the channel's source: the others go on, this one
            # stays a pane without media, and its handle and connection are released.
            log.warning("cannot subscribe to %s: %s: %s", publisher_id, exc.__class__.__name__, exc)
            self.last_error = f"subscribe {publisher_id}: {exc.__class__.__name__}: {exc}"
            if subscription.pc is not None:
                with contextlib.suppress(Exception):
                    await subscription.pc.close()
            if subscription.handle is not None:
                await subscription.handle.detach()

    def _track_layers(self, subscription: _Subscription) -> None:
        """``subscription``'s video is simulcast: choose its substream from its pane's size."""
        if subscription.layers is None:
            subscription.layers = LayerSelector()
            if self._draw_sizes is not None:
                subscription.layers.set_pane(self._draw_sizes.get(subscription.key))

    async def _subscribe(self, session: JanusSession, subscription: _Subscription) -> None:
        handle = subscription.handle = await session.attach()
        body: JsonDict = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.config.room,
            "streams": [{"feed": subscription.publisher_id}],
        }
        if self.config.pin:
            body["pin"] = self.config.pin
        event = await handle.message(body, timeout=SUBSCRIBE_TIMEOUT)
        if not event.jsep:
            raise JanusError(0, f"no offer for {subscription.publisher_id}")
        for stream in event.data.get("streams") or []:
            kind, mid = stream.get("type"), stream.get("mid")
            if kind in ("audio", "video") and isinstance(mid, str):
                subscription.mids.setdefault(kind, mid)
            if kind == "video" and stream.get("simulcast") is True:
                self._track_layers(subscription)
        subscription.readers.append(asyncio.create_task(self._watch_substreams(subscription, handle)))
        pc = subscription.pc = RTCPeerConnection(rtc_configuration(self.config.ice_servers))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            receiver = next((r for r in pc.getReceivers() if r.track is track), None)
            watch = (
                self._keyframe_watcher(receiver, subscription)
                if receiver is not None and track.kind == "video"
                else None
            )
            timing = None if receiver is None else instrument_receiver(receiver, track.kind, watch)
            subscription.readers.append(
                asyncio.create_task(self._read(track, subscription, receiver, timing))
            )

        await pc.setRemoteDescription(RTCSessionDescription(sdp=event.jsep["sdp"], type=event.jsep["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        local = pc.localDescription
        await handle.message({"request": "start"}, jsep={"type": local.type, "sdp": local.sdp})
        subscription.ready = True
        if not all(subscription.wanted.values()):
            self._kick_sync()  # not wanted: paused from the start

    async def _read(
        self,
        track: MediaStreamTrack,
        subscription: _Subscription,
        rtp_receiver: Any = None,
        timing: TrackTiming | None = None,
    ) -> None:
        receiver = self._receiver
        assert receiver is not None
        key = subscription.key
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                break
            if timing is not None and isinstance(frame, av.VideoFrame | av.AudioFrame):
                frame.opaque = frame_sender_time(rtp_receiver, timing, frame)
            if isinstance(frame, av.VideoFrame):
                if not subscription.wanted["video"]:
                    continue  # paused (issue 18): the pane stays blank
                if subscription.awaiting_keyframe and not self._keyframe_reached(
                    subscription, rtp_receiver, frame
                ):
                    continue  # resumed: decoded against the picture from before the pause
                layers = subscription.layers
                if layers is not None and layers.on_frame(frame.width, frame.height, loop.time()):
                    self._reselect(subscription)  # a substream's size learned
                receiver.on_video_frame(key, frame)
            elif isinstance(frame, av.AudioFrame) and subscription.wanted["audio"]:
                receiver.on_audio_frame(key.user_id, frame)
        if track.kind == "video" and subscription.has_video:
            receiver.on_video_frame(key, None)

    async def _remove_publisher(self, publisher_id: str, user_id: str | None = None) -> None:
        receiver = self._receiver
        assert receiver is not None
        subscription = self._subscriptions.pop(publisher_id, None)
        if subscription is not None:
            await subscription.close()
        key = stream_key_for_publisher(publisher_id)
        user = user_id or key.user_id
        publishers_of_user = self._users.get(user)
        if publishers_of_user is None or publisher_id not in publishers_of_user:
            return
        publishers_of_user.discard(publisher_id)
        receiver.on_video_stream(key, False)
        if not publishers_of_user:
            del self._users[user]
            receiver.on_user(user, False)
        log.info("%s left %s", publisher_id, self.config.room)

    async def _blank_all(self) -> None:
        """The session ended: drop subscriptions, keep users (their panes show background)."""
        receiver = self._receiver
        for subscription in list(self._subscriptions.values()):
            await subscription.close()
            if receiver is not None and subscription.has_video:
                receiver.on_video_frame(subscription.key, None)
        self._subscriptions.clear()
