"""Outputs: the destinations of one task's encode (issue 13, "one encode, many destinations").

The pipeline encodes once (:class:`~rtc_mpu.mixer.output.encoder.PacketEncoder`) and hands every
:class:`~rtc_mpu.mixer.output.encoder.EncodedPacket` to each :class:`Output` (:meth:`Output.submit`, on
the event loop, never blocking). Each output muxes them into its own container
(:mod:`rtc_mpu.mixer.output.muxers`: RTMP/RTMPS, a recording, HLS) on its own
:class:`~rtc_mpu.mixer.output.push.JobThread`, with its own reconnects (the backoff, deadlines and
give-up rules of :class:`~rtc_mpu.mixer.output.push.Connection`), its own :class:`OutputStatus` and a
bounded queue: a packet it cannot take (disconnected, or more than ``max_backlog`` seconds of video
waiting) is dropped and counted, so one dead or slow output never stalls the encode or another output.

Keyframe join: an output that (re)connects, or dropped a video packet, takes no video until the next
keyframe (and no audio before it, so every file and stream starts decodable), and asks the encoder for
an IDR at the next frame (``on_keyframe_wanted``): a new viewer sees the picture within about one frame
interval, not a GOP.
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtc_mpu.mixer.output.encoder import EncodedPacket, EncoderSettings, StreamTemplates
from rtc_mpu.mixer.output.muxers import (
    FileListener,
    FinishedFile,
    Muxer,
    MuxerFactory,
    OutputTarget,
    open_muxer,
)
from rtc_mpu.mixer.output.push import Connection, SinkStatus
from rtc_mpu.mixer.output.sinks import DEFAULT_OPEN_TIMEOUT, DEFAULT_WRITE_TIMEOUT, SinkError

log = logging.getLogger(__name__)

#: Seconds over which :attr:`OutputStatus.bitrate` is measured.
BITRATE_WINDOW = 3.0


class OutputState(enum.StrEnum):
    """Where an output is: ``connecting`` (first open), ``connected``, ``reconnecting`` (after a
    failure, with backoff), ``failed`` (gave up, or a failure it does not reconnect from), ``ended``
    (closed normally or removed)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    ENDED = "ended"


@dataclass
class OutputStatus(SinkStatus):
    """An output's state and statistics (updated on the event loop); the :class:`SinkStatus` fields
    mean what they mean for a push (``dropped_*``: packets not written because it was disconnected,
    behind, or waiting for a keyframe).

    Attributes:
        state: see :class:`OutputState`.
        bytes_written: payload bytes of the packets written so far.
        bitrate: bit/s written over the last :data:`BITRATE_WINDOW` seconds.
        files: finished recording files (rolled over or closed), in order.
    """

    state: OutputState = OutputState.CONNECTING
    bytes_written: int = 0
    bitrate: float = 0.0
    files: list[FinishedFile] = field(default_factory=list)


class Output(Connection[Muxer]):
    """One destination fed the task's encoded packets; see the module docstring.

    Driven like :class:`~rtc_mpu.mixer.output.push.Connection` (``open``, ``collect``, ``check``,
    ``drain``, ``close``, on the event loop), with :meth:`submit` per packet. :attr:`templates` must
    be set (the encoder's streams) before :meth:`open`.

    Args:
        name: the output's name (logs, the pipeline's registry).
        settings: what the encoder makes (``fps`` sizes the backlog).
        target: where it goes (:func:`~rtc_mpu.mixer.output.muxers.rtmp_output`, ``file_output``,
            ``hls_output``).
        on_keyframe_wanted: asks the encoder for an IDR at the next frame (thread-safe, cheap).
        listener: told of each finished recording file (on the output's thread).
        muxer_factory: opens the muxer (blocking, on the output's thread); :func:`open_muxer` by default.
        (the rest: see :class:`~rtc_mpu.mixer.output.push.Connection`; a file or HLS output never
        reconnects, its first failure fails it.)

    Raises:
        ValueError: a retry, open or write time is not positive, or ``give_up_after`` is negative.
    """

    status: OutputStatus

    def __init__(
        self,
        name: str,
        settings: EncoderSettings,
        target: OutputTarget,
        *,
        on_keyframe_wanted: Callable[[], None] = lambda: None,
        listener: FileListener | None = None,
        realtime: bool = True,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        give_up_after: float | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_backlog: float | None = None,
        muxer_factory: MuxerFactory | None = None,
    ) -> None:
        super().__init__(
            settings,
            target.sink,
            realtime=realtime,
            retry_initial=retry_initial,
            retry_max=retry_max,
            give_up_after=give_up_after,
            open_timeout=open_timeout,
            write_timeout=write_timeout,
            max_backlog=max_backlog,
            thread_name=f"mpu-out-{name}"[:15],
        )
        self.name = name
        self.output = target
        self.status = OutputStatus()
        #: The encoder's streams; set by the pipeline before :meth:`open`.
        self.templates: StreamTemplates | None = None
        self._keyframe_wanted = on_keyframe_wanted
        self._listener = listener
        self._muxer_factory: MuxerFactory = muxer_factory or functools.partial(
            open_muxer, listener=self._file_done
        )
        self._need_keyframe = True
        self._has_video = settings.has_video
        self._pending_video = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        #: Bytes in ``_recent`` (kept as it changes: no sum over the window per packet).
        self._recent_bytes = 0

    # -- packets -------------------------------------------------------------------------------
    def submit(self, packet: EncodedPacket) -> bool:
        """Queue ``packet`` for writing, or drop and count it (never blocks).

        Dropped: while disconnected; video while waiting for a keyframe (and audio, when there is
        video); video when more than ``max_backlog`` seconds of video wait (then video waits for the
        next keyframe, which is asked for).

        Returns:
            True if queued.
        """
        muxer, thread = self._encoder, self._thread
        if muxer is None or thread is None:
            return self._drop(packet)
        if packet.video:
            if self._backlogged():
                if not self._need_keyframe:
                    self._need_keyframe = True
                    self._keyframe_wanted()
                return self._drop(packet)
            if self._need_keyframe:
                if not packet.keyframe:
                    return self._drop(packet)
                self._need_keyframe = False
        elif self._need_keyframe and self._has_video:
            return self._drop(packet)
        self._pending.append((packet.video, thread.submit(lambda: muxer.write(packet))))
        return True

    def _drop(self, packet: EncodedPacket) -> bool:
        if packet.video:
            self.status.dropped_video_frames += 1
        else:
            self.status.dropped_audio_blocks += 1
        return False

    def _job_done(self, result: Any) -> None:
        if isinstance(result, int) and result:
            now = time.monotonic()
            self.status.bytes_written += result
            self._recent.append((now, result))
            self._recent_bytes += result
        self._update_bitrate()

    def _update_bitrate(self) -> None:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - BITRATE_WINDOW:
            self._recent_bytes -= self._recent.popleft()[1]
        self.status.bitrate = self._recent_bytes * 8 / BITRATE_WINDOW

    def _file_done(self, finished: FinishedFile) -> None:
        """A recording file is finished (on the output's thread)."""
        self.status.files.append(finished)  # list.append is atomic; read on the loop
        log.info("recording %s finished: %d bytes, %.1f s", finished.path, finished.size, finished.duration)
        if self._listener is not None:
            self._listener(finished)

    # -- the connection ------------------------------------------------------------------------
    def _make_writer(self) -> Muxer:
        if self.templates is None:
            raise RuntimeError("the output's stream templates are not set")
        return self._muxer_factory(self.output, self.templates)

    def _connected(self, encoder: Muxer, thread: Any) -> None:
        super()._connected(encoder, thread)
        self.status.state = OutputState.CONNECTED
        self._need_keyframe = True
        self._keyframe_wanted()

    def _failed(self, exc: SinkError) -> None:
        try:
            super()._failed(exc)
        except SinkError:
            self.status.state = OutputState.FAILED
            raise
        self.status.state = OutputState.RECONNECTING if not self._finishing else OutputState.FAILED

    def check(self) -> None:
        """See :meth:`Connection.check`; also refreshes the bitrate.

        Raises:
            SinkError: it gave up (state ``failed``).
        """
        self._update_bitrate()
        try:
            super().check()
        except SinkError:
            self.status.state = OutputState.FAILED
            raise

    async def close(self) -> None:
        """See :meth:`Connection.close` (writes the trailer; a recording reports its last file).

        Raises:
            SinkError: the final writes failed and this output does not reconnect.
        """
        try:
            await super().close()
        except SinkError:
            self.status.state = OutputState.FAILED
            raise
        if self.status.state is not OutputState.FAILED:
            self.status.state = OutputState.ENDED  # ``connected`` keeps its last value, as a push's did
