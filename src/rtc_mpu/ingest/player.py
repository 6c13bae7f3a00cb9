"""Playing an opened media into a sink in real time, with a host's controls (issue 19).

One thread per ingest demuxes ahead (at most :data:`LOOKAHEAD_SECONDS`, so a file whose audio and
video are interleaved in chunks still sends both on time), and hands each packet over when its media
time is due on the wall clock: video is decoded, scaled to at most 1280x720 and encoded by libx264
(zerolatency, an IDR every 2 s, at once after a seek, a resume or a viewer's PLI), audio decoded,
mixed to 48 kHz stereo, scaled by the volume and encoded to 20 ms Opus frames. The sink gets H.264
access units (Annex B) and Opus frames with RTP timestamps of one *session clock* (seconds since the
player started, on the wall clock), so pauses, seeks and loops never make a stream's timestamps jump
back, and audio and video keep the media's relation.

Controls (:meth:`Player.play`, :meth:`Player.pause`, :meth:`Player.seek`, :meth:`Player.set_volume`)
are taken between two packets: within one frame interval. A seek lands on the keyframe at or before
the position (the media's own, found by FFmpeg) and sends an IDR at once. While paused nothing is
sent: viewers keep the last picture and hear silence.

Progress (:class:`Progress`) goes to ``on_progress`` and, as a JSON text message, to the sink's data
channel every :data:`PROGRESS_INTERVAL_SECONDS` and at every change of state, position or volume.
"""

from __future__ import annotations

import collections
import contextlib
import fractions
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import av.container
import numpy as np

from rtc_mpu.ingest.media import MediaError, MediaInfo
from rtc_mpu.mixer.output.rtc import AUDIO_RATE, OPUS_FRAME_SAMPLES, opus_encoder, opus_framer
from rtc_mpu.spec.ingest import IngestState

log = logging.getLogger(__name__)

#: Media seconds demuxed ahead of the clock.
LOOKAHEAD_SECONDS = 1.0
#: Most packets queued per stream (a stream that stops for a while must not hold the other back).
MAX_QUEUED_PACKETS = 600
#: Seconds between two progress messages while nothing changes.
PROGRESS_INTERVAL_SECONDS = 1.0
#: Largest picture sent (pixels): larger media is scaled down, keeping its aspect ratio.
MAX_WIDTH, MAX_HEIGHT = 1280, 720
#: Seconds between IDRs of the ingest's encode.
GOP_SECONDS = 2.0
#: Opus at 48 kHz stereo, 20 ms frames (the rtc output's encoder: mixer.output.rtc.opus_encoder).
OPUS_RATE = AUDIO_RATE
#: The RTP clock of video, Hz.
VIDEO_CLOCK = 90000


def video_bitrate(width: int, height: int) -> int:
    """The H.264 bitrate of a picture size, bit/s (about 0.09 bit per pixel at 30 fps: 2.5 Mbit/s
    at 1280x720, 640 kbit/s at 640x360)."""
    return max(300_000, min(4_000_000, int(width * height * 30 * 0.09)))


def output_size(width: int, height: int) -> tuple[int, int]:
    """The size sent for a ``width`` x ``height`` picture: at most :data:`MAX_WIDTH` x
    :data:`MAX_HEIGHT`, aspect ratio kept, both even (x264 needs even sizes in 4:2:0)."""
    scale = min(1.0, MAX_WIDTH / max(width, 1), MAX_HEIGHT / max(height, 1))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class PlayerSink(Protocol):
    """Where a player's media goes (:class:`rtc_mpu.ingest.publisher.IngestPublisher`)."""

    def send_video(self, access_unit: bytes, timestamp: int) -> None:
        """An H.264 access unit (Annex B), RTP ``timestamp`` in 1/90000 s."""

    def send_audio(self, opus: bytes, timestamp: int) -> None:
        """A 20 ms Opus frame, RTP ``timestamp`` in 1/48000 s."""

    def send_data(self, text: str) -> None:
        """A text message for the data channel."""


@dataclass(frozen=True)
class Progress:
    """Where a player is.

    Attributes:
        state: playing, paused, ended or failed (starting until the first packet).
        position_ms: the media time being played, milliseconds (a paused player's stays).
        duration_ms: the media's duration in milliseconds, or None (live).
        volume_percent: the volume, percent.
        sent_at: ``time.time()`` seconds when ``position_ms`` was current.
        reason: why it ended or failed ("" otherwise).
    """

    state: IngestState
    position_ms: int
    duration_ms: int | None
    volume_percent: int
    sent_at: float
    reason: str = ""

    def message(self, ingest_id: str, url: str) -> str:
        """The data channel message: JSON ``{"type": "ingest.progress", "ingest_id", "url", "state",
        "position_ms", "duration_ms", "volume", "sent_at"}`` (``sent_at`` in milliseconds since the
        epoch)."""
        return json.dumps(
            {
                "type": "ingest.progress",
                "ingest_id": ingest_id,
                "url": url,
                "state": str(self.state),
                "position_ms": self.position_ms,
                "duration_ms": self.duration_ms,
                "volume": self.volume_percent,
                "sent_at": int(self.sent_at * 1000),
            },
            separators=(",", ":"),
        )


@dataclass
class _Queued:
    """A demuxed packet waiting for its time: media seconds, and the packet."""

    media_seconds: float
    packet: av.Packet[Any]


class Player:
    """Plays ``container`` into ``sink`` on its own thread (see the module docstring).

    Args:
        container: the opened media (:func:`rtc_mpu.ingest.media.open_media`); the player closes it.
        info: what it holds (:func:`rtc_mpu.ingest.media.describe`).
        sink: where the media goes.
        ingest_id, url: named in the progress messages.
        loop: start again at the end (else the player ends there).
        start_at_seconds: where to start, media seconds.
        volume_percent: the initial volume (0-200).
        paused: start paused (a resumed ingest that was paused).
        on_progress: told of every progress (on the player's thread; must not block).
        max_seconds: longest it plays in all (wall seconds), None for no limit.
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        info: MediaInfo,
        sink: PlayerSink,
        *,
        ingest_id: str,
        url: str,
        loop: bool = False,
        start_at_seconds: float = 0.0,
        volume_percent: int = 100,
        paused: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self._container = container
        self.info = info
        self._sink = sink
        self._ingest_id = ingest_id
        self._url = url
        self._loop = loop
        self._start_at = start_at_seconds
        self._volume = volume_percent
        self._paused = paused
        self._on_progress = on_progress
        self._max_seconds = max_seconds
        self._commands: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._keyframe = True
        self._thread = threading.Thread(target=self._run, name=f"ingest-{ingest_id}"[:15], daemon=True)
        self._video_stream = container.streams.video[0] if info.has_video else None
        self._audio_stream = container.streams.audio[0] if info.has_audio else None
        self._video: collections.deque[_Queued] = collections.deque()
        self._audio: collections.deque[_Queued] = collections.deque()
        self._demux: Any = None
        self._eof = False
        self._encoder: av.VideoCodecContext | None = None
        self._out_size = (0, 0)
        self._resampler: av.AudioResampler | None = None
        self._opus: av.AudioCodecContext | None = None
        self._audio_ts: int | None = None
        self._started = time.monotonic()
        self._anchor_media = start_at_seconds
        self._anchor_wall = self._started
        self._position = start_at_seconds
        self._last_progress = 0.0
        self._state = IngestState.STARTING
        self._reason = ""
        #: Set when the player has ended or failed (see :meth:`progress`).
        self.finished = threading.Event()

    # -- the host's side (any thread) ------------------------------------------------------------
    def start(self) -> None:
        """Start playing (on the player's thread)."""
        self._thread.start()

    def play(self) -> None:
        """Resume (nothing if playing)."""
        self._command("play")

    def pause(self) -> None:
        """Pause: nothing is sent until :meth:`play` (nothing if paused)."""
        self._command("pause")

    def seek(self, seconds: float) -> None:
        """Go to the keyframe at or before ``seconds`` of media time (past the end: the end)."""
        self._command("seek", seconds)

    def set_volume(self, percent: int) -> None:
        """Set the volume, percent (0-200)."""
        self._command("volume", float(percent))

    def request_keyframe(self) -> None:
        """Send an IDR with the next picture (a viewer's PLI)."""
        self._keyframe = True

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop and wait for the thread (at most ``timeout_seconds``)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_seconds)

    def progress(self) -> Progress:
        """Where the player is now."""
        return Progress(
            self._state,
            round(self._current_position() * 1000),
            self.info.duration_ms,
            self._volume,
            time.time(),
            self._reason,
        )

    def _command(self, name: str, value: float = 0.0) -> None:
        self._commands.put((name, value))
        self._wake.set()

    # -- the player's thread ---------------------------------------------------------------------
    def _current_position(self) -> float:
        if self._state is IngestState.PLAYING:
            return max(self._anchor_media, self._anchor_media + time.monotonic() - self._anchor_wall)
        return self._position

    def _session_seconds(self, media_seconds: float) -> float:
        return self._anchor_wall - self._started + (media_seconds - self._anchor_media)

    def _run(self) -> None:
        try:
            self._open_codecs()
            if self._start_at > 0:
                self._seek(self._start_at)
            else:
                self._restart_demux()
            self._anchor(self._first_time(self._start_at))
            self._set_state(IngestState.PAUSED if self._paused else IngestState.PLAYING)
            self._play()
        except MediaError as exc:
            self._finish(IngestState.FAILED, exc.message)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._finish(IngestState.FAILED, f"reading the media failed: {exc}")
        except Exception as exc:  # a bug: the ingest fails with a reason rather than hangs
            log.exception("ingest %s: player failed", self._ingest_id)
            self._finish(IngestState.FAILED, f"internal error: {exc.__class__.__name__}")
        finally:
            with contextlib.suppress(Exception):  # already closed, or FFmpeg complains: nothing to do
                self._container.close()
            self.finished.set()

    def _play(self) -> None:
        while not self._stopping:
            self._take_commands()
            if self._stopping:
                return
            if self._max_seconds is not None and time.monotonic() - self._started > self._max_seconds:
                self._finish(
                    IngestState.ENDED, f"played for the longest time allowed ({self._max_seconds:g} s)"
                )
                return
            if self._state is IngestState.PAUSED:
                self._maybe_progress()
                self._wake.wait(PROGRESS_INTERVAL_SECONDS)
                self._wake.clear()
                continue
            self._fill()
            item = self._next()
            if item is None:  # the end of the media
                if self._loop:
                    self._seek(0.0)
                    self._anchor(self._first_time(0.0))
                    self._progress_now()
                    continue
                self._position = self._anchor_media + time.monotonic() - self._anchor_wall
                self._finish(IngestState.ENDED, "end of the media")
                return
            kind, queued = item
            wait = self._anchor_wall + (queued.media_seconds - self._anchor_media) - time.monotonic()
            if wait > 0:
                if self._wake.wait(min(wait, PROGRESS_INTERVAL_SECONDS)):
                    self._wake.clear()
                self._maybe_progress()
                continue  # commands first; the item is still at the head
            (self._video if kind == "video" else self._audio).popleft()
            if kind == "video":
                self._send_video(queued)
            else:
                self._send_audio(queued)
            self._maybe_progress()

    def _take_commands(self) -> None:
        changed = False
        while True:
            try:
                name, value = self._commands.get_nowait()
            except queue.Empty:
                break
            changed = True
            position = self._current_position()
            if name == "pause" and self._state is IngestState.PLAYING:
                self._position = position
                self._state = IngestState.PAUSED
            elif name == "play" and self._state is IngestState.PAUSED:
                self._anchor(self._position)
                self._state = IngestState.PLAYING
                self._keyframe = True
            elif name == "seek":
                self._seek(value)
                target = self._first_time(value)
                if self._state is IngestState.PLAYING:
                    self._anchor(target)
                else:
                    self._position = target
                    self._anchor_media = target
            elif name == "volume":
                self._volume = int(value)
        if changed:
            self._progress_now()

    def _anchor(self, media_seconds: float) -> None:
        """The media time ``media_seconds`` is now: the clock goes on from there."""
        self._anchor_media = media_seconds
        self._anchor_wall = time.monotonic()
        self._position = media_seconds
        self._audio_ts = None

    # -- demuxing ----------------------------------------------------------------------------------
    def _restart_demux(self) -> None:
        streams = [s for s in (self._video_stream, self._audio_stream) if s is not None]
        self._demux = self._container.demux(*streams)
        self._eof = False
        self._video.clear()
        self._audio.clear()

    def _seek(self, seconds: float) -> None:
        duration = self.info.duration_ms
        if duration is not None:
            seconds = min(seconds, max(0.0, duration / 1000 - 0.5))
        self._container.seek(int(seconds * av.time_base), backward=True)
        for stream in (self._video_stream, self._audio_stream):
            if stream is not None:
                stream.codec_context.flush_buffers()
        self._restart_demux()
        self._keyframe = True

    def _first_time(self, fallback: float) -> float:
        """The media time of the first packet queued after a (re)start: where playing resumes."""
        self._fill()
        heads = [q[0].media_seconds for q in (self._video, self._audio) if q]
        return min(heads) if heads else fallback

    def _fill(self) -> None:
        """Demux until both queues reach :data:`LOOKAHEAD_SECONDS` past the clock (or the end)."""
        horizon = self._anchor_media + max(0.0, time.monotonic() - self._anchor_wall) + LOOKAHEAD_SECONDS
        while not self._eof:
            needed = [
                q
                for q, stream in ((self._video, self._video_stream), (self._audio, self._audio_stream))
                if stream is not None and (not q or q[-1].media_seconds < horizon)
            ]
            if not needed or any(len(q) >= MAX_QUEUED_PACKETS for q in (self._video, self._audio)):
                return
            try:
                packet = next(self._demux)
            except StopIteration:
                self._eof = True
                return
            if packet.size == 0 or packet.stream is None or packet.time_base is None:
                continue
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is None:
                continue
            seconds = float(stamp * packet.time_base)
            target = self._video if packet.stream is self._video_stream else self._audio
            target.append(_Queued(seconds, packet))

    def _next(self) -> tuple[str, _Queued] | None:
        heads = [
            (q[0].media_seconds, kind) for kind, q in (("video", self._video), ("audio", self._audio)) if q
        ]
        if not heads:
            return None
        _, kind = min(heads)
        return kind, (self._video if kind == "video" else self._audio)[0]

    # -- video ---------------------------------------------------------------------------------------
    def _open_codecs(self) -> None:
        if self._video_stream is not None:
            context = self._video_stream.codec_context
            context.thread_type = "SLICE"  # frame threads would hold frames back: video late
            width, height = output_size(self.info.width or 640, self.info.height or 360)
            self._out_size = (width, height)
            encoder = av.CodecContext.create("libx264", "w")
            assert isinstance(encoder, av.VideoCodecContext)
            rate = self._video_stream.average_rate or fractions.Fraction(30)
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            encoder.framerate = rate
            encoder.bit_rate = video_bitrate(width, height)
            encoder.gop_size = max(1, round(float(rate) * GOP_SECONDS))
            encoder.max_b_frames = 0
            encoder.options = {
                "preset": "veryfast",
                "tune": "zerolatency",
                "profile": "main",
                "repeat-headers": "1",
            }
            self._encoder = encoder
        if self._audio_stream is not None:
            self._resampler = opus_framer()
            self._opus = opus_encoder()

    def _send_video(self, queued: _Queued) -> None:
        stream, encoder = self._video_stream, self._encoder
        if stream is None or encoder is None:
            return
        try:
            frames = stream.codec_context.decode(queued.packet)
        except av.error.InvalidDataError:
            return  # a damaged packet: the next keyframe repairs the picture
        width, height = self._out_size
        for frame in frames:
            media = float(frame.time) if frame.time is not None else queued.media_seconds
            picture = frame.reformat(width=width, height=height, format="yuv420p")
            picture.pts = round(self._session_seconds(media) * VIDEO_CLOCK)
            picture.time_base = encoder.time_base
            if self._keyframe:
                picture.pict_type = av.video.frame.PictureType.I
                self._keyframe = False
            for packet in encoder.encode(picture):
                if packet.pts is not None:
                    self._sink.send_video(bytes(packet), int(packet.pts))

    # -- audio ---------------------------------------------------------------------------------------
    def _send_audio(self, queued: _Queued) -> None:
        stream, resampler, opus = self._audio_stream, self._resampler, self._opus
        if stream is None or resampler is None or opus is None:
            return
        try:
            frames = stream.codec_context.decode(queued.packet)
        except av.error.InvalidDataError:
            return
        if self._audio_ts is None:
            self._audio_ts = round(self._session_seconds(queued.media_seconds) * OPUS_RATE)
        for frame in frames:
            for block in resampler.resample(frame):
                samples = block.to_ndarray()
                if self._volume != 100:
                    scaled = samples.astype(np.int32) * self._volume // 100
                    samples = np.clip(scaled, -32768, 32767).astype(np.int16)
                out = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
                out.sample_rate = OPUS_RATE
                out.pts = self._audio_ts
                out.time_base = opus.time_base
                for packet in opus.encode(out):
                    self._sink.send_audio(bytes(packet), self._audio_ts)
                    self._audio_ts += OPUS_FRAME_SAMPLES

    # -- progress --------------------------------------------------------------------------------
    def _set_state(self, state: IngestState) -> None:
        self._state = state
        self._progress_now()

    def _maybe_progress(self) -> None:
        if time.monotonic() - self._last_progress >= PROGRESS_INTERVAL_SECONDS:
            self._progress_now()

    def _progress_now(self) -> None:
        self._last_progress = time.monotonic()
        progress = self.progress()
        try:
            self._sink.send_data(progress.message(self._ingest_id, self._url))
        except OSError as exc:
            log.debug("ingest %s: progress message not sent: %s", self._ingest_id, exc)
        if self._on_progress is not None:
            self._on_progress(progress)

    def _finish(self, state: IngestState, reason: str) -> None:
        self._reason = reason
        self._set_state(state)
        log.info("ingest %s %s: %s", self._ingest_id, state, reason)


__all__ = ["Player", "PlayerSink", "Progress", "output_size", "video_bitrate"]
