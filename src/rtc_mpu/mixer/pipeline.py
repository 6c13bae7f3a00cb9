"""The pipeline controller: source → (compositor + audio mixer) → encoder → sink, on one media clock.

The event loop receives media (RTP for a live channel) and runs the clock. At every video tick it
takes each pane's latest frame and hands a compose-and-encode job to the output's worker thread; at
every audio block it mixes the users' jitter buffers (cheap numpy) and hands the block to the same
thread. Compositing, scaling, x264/AAC encoding and network writes therefore never run on the event
loop. Jobs run in clock order, so pts are strictly increasing.

If the worker thread falls behind a live clock by more than :data:`MAX_PENDING_SECONDS`, video ticks
are dropped (counted in the stats) rather than delaying audio or the RTP receiver; pts keep following
the clock, so a player sees a frame held, never a time shift.

One encode, many destinations (issue 13): the encode thread composes and encodes each tick once
(:class:`rtc_mpu.mixer.output.encoder.PacketEncoder`); the event loop hands the packets to every
:class:`rtc_mpu.mixer.output.outputs.Output` (the main one, the ``target``, and any added with
:meth:`Pipeline.add_output`), each muxing on its own thread with its own reconnects, queue and status.
While no output is connected, ticks are not encoded at all: they are dropped and counted
(``stats.dropped_video_frames``, ``stats.dropped_audio_blocks``), as a single push always did.
:attr:`Pipeline.push_status` shows the main output's state (for task status 5/6); when it gives up, the
source is closed and ``run()`` raises the last :class:`SinkError`. An added output that fails or gives
up only fails itself (:attr:`Pipeline.outputs`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import av

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, SAMPLE_RATE, AudioMixer
from rtc_mpu.mixer.audio.vad import VoiceActivityDetector
from rtc_mpu.mixer.clock import MediaClock
from rtc_mpu.mixer.output.encoder import EncodedPacket, EncoderSettings, PacketEncoder
from rtc_mpu.mixer.output.muxers import FileListener, MuxerFactory, OutputTarget, legacy_output
from rtc_mpu.mixer.output.outputs import Output, OutputState
from rtc_mpu.mixer.output.push import JobThread, SinkStatus
from rtc_mpu.mixer.output.sei import with_fields
from rtc_mpu.mixer.output.sinks import DEFAULT_OPEN_TIMEOUT, DEFAULT_WRITE_TIMEOUT, SinkError, SinkTarget
from rtc_mpu.mixer.overlays.images import FetchLimits, ImageCache, ImageError
from rtc_mpu.mixer.overlays.render import OverlayRenderer
from rtc_mpu.mixer.overlays.text import check_fonts
from rtc_mpu.mixer.sources.base import Source
from rtc_mpu.mixer.video.compositor import Compositor, OverlayDraw, PaneDraw
from rtc_mpu.mixer.video.geometry import pane_rect
from rtc_mpu.mixer.video.selection import LayoutChoice, PaneAssignment, choose_layout
from rtc_mpu.spec.overlays import Subscriptions
from rtc_mpu.spec.streams import SourceType, StreamKey
from rtc_mpu.spec.task import MixMode, TaskSpec, UserPane

log = logging.getLogger(__name__)

#: Name of the output ``target`` of :class:`Pipeline`.
MAIN_OUTPUT = "main"
#: How far (seconds of output) encoding may lag a live clock before video ticks are dropped.
MAX_PENDING_SECONDS = 0.5
#: How many jobs an offline render queues ahead of the encoder thread.
OFFLINE_QUEUE_DEPTH = 8
#: A live clock more than this late (seconds) skips video ticks to catch up instead of bursting.
MAX_VIDEO_LATENESS = 0.5
#: Audio prebuffer of live sources, in samples at 48 kHz (2 blocks, about 43 ms).
LIVE_AUDIO_PREFILL = 2 * BLOCK_SAMPLES
#: Most audio buffered per user before the oldest is dropped, in samples (200 ms).
LIVE_AUDIO_MAX = 9600
#: Seconds of recent frames kept per video stream of a live mix (plus the one before), and at most how
#: many (memory: decoded frames), see ``Pipeline._frame_at``.
RECENT_SECONDS = 0.15
RECENT_FRAMES = 8
#: Audio blocks between updates of ``PipelineStats.av_offsets_ms`` (47 blocks: about 1 s).
AV_OFFSET_EVERY_BLOCKS = 47
#: A consumer of composited frames: ``(frame, pts, time_base)``, pts the frame index in ``1/fps``.
#: See ``frame_listeners`` of :class:`Pipeline`.
FrameListener = Callable[[av.VideoFrame, int, Fraction], None]


@dataclass
class PipelineStats:
    """What the pipeline did, for status output and tests.

    Attributes:
        video_ticks: video ticks of the clock so far (frames due).
        video_frames: frames handed to the encoder.
        dropped_video_frames: ticks skipped because encoding lagged, the clock was late, or the main
            output was disconnected (reconnecting), plus frames encoded but not delivered by the main
            output (it waits for a keyframe after a reconnect, or is behind).
        audio_blocks: audio blocks encoded (BLOCK_SAMPLES samples each).
        dropped_audio_blocks: audio blocks mixed but not delivered by the main output (disconnected,
            or waiting for a keyframe).
        layout_id: the layout in use (None before the first frame or for audio only).
        layout_changes: how many times the layout or pane assignment changed.
        users: users in the channel in join order.
        mixed_audio_users: users whose audio is in the mix.
        overlay_problems: overlays that cannot be drawn, by wire name (``Watermarks.1``), with why.
        vad: the latest voice-activity report (``ReportVad``): ``{"ts", "speaker", "speaking",
            "levels"}`` as :meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json` describes, or None.
        sei_messages: voice-activity SEI messages put into the video (``PayloadType`` 1).
        av_offsets_ms: per user whose audio and camera carry sender times (a live channel), how much
            later their audio is placed on the output timeline than their picture, in ms (positive =
            audio late; :meth:`rtc_mpu.mixer.audio.mixer.AudioMixer.av_offsets_ms`), as of the latest
            second.
    """

    video_ticks: int = 0
    video_frames: int = 0
    dropped_video_frames: int = 0
    audio_blocks: int = 0
    dropped_audio_blocks: int = 0
    layout_id: int | None = None
    layout_changes: int = 0
    users: list[str] = field(default_factory=list)
    mixed_audio_users: list[str] = field(default_factory=list)
    overlay_problems: dict[str, str] = field(default_factory=dict)
    vad: dict[str, Any] | None = None
    sei_messages: int = 0
    av_offsets_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Runs one mix from a :class:`Source` to a sink until the duration elapses or :meth:`stop` is called.

    Args:
        spec: the validated task.
        source: the channel (or files) to mix.
        target: the validated sink (see :func:`rtc_mpu.mixer.output.sinks.sink_target`).
        realtime: pace output by the wall clock (live push); False renders as fast as possible.
            Only a paced source (``source.live`` False) can render offline.
        duration: seconds of output to produce, or None to run until :meth:`stop` or until the
            source is finished.
        preset: x264 preset.
        image_limits: how overlay images are fetched (size, time, private addresses). A live mix
            starts at once and draws each image when it arrives; an offline render waits for them.
        retry_initial, retry_max: the reconnect backoff's first and largest wait ceilings, in
            seconds (see :class:`rtc_mpu.mixer.output.push.Connection`).
        open_timeout, write_timeout: seconds a connection attempt, or one encode-and-write job, may
            take before the push counts as failed; network targets only.
        muxer_factory: makes and opens the main output's muxer (blocking, on its thread);
            :func:`rtc_mpu.mixer.output.muxers.open_muxer` unless a test says otherwise.
        frame_listeners: called with each composited frame (and its pts and time_base) on the job
            thread, right after it is composed and before it goes to the encoder, e.g.
            :meth:`rtc_mpu.mixer.output.snapshot.SnapshotTaker.offer`. The frame is the pipeline's:
            a listener must only read it, return quickly and copy what it keeps. A listener that
            raises is logged; the frame is encoded anyway. Frames dropped before composing (late, or
            the push disconnected) are not offered.
        give_up_after: seconds of continuous sink failure after which ``run()`` raises the last
            :class:`SinkError`; None never gives up; 0 (the default, as ``mpu render`` and ``mpu mix``
            want) raises at the first failure without reconnecting. Only a real-time push to a
            network target reconnects: a file is never reopened (that would truncate it).
        video_profile: the x264 profile, ``high``, or ``main`` for a task whose mix is published
            back into the channel over WebRTC (:data:`rtc_mpu.mixer.output.rtc.RTC_PROFILE`).
        encoder_threads: libx264's threads (0: x264's choice; see
            :class:`~rtc_mpu.mixer.output.encoder.EncoderSettings`).

    Raises:
        ValueError: offline rendering asked of a live source, or retry, open or write times that are
            not positive (or a negative ``give_up_after``).
        FontError: the task draws texts or clocks and a font is not installed.
    """

    def __init__(
        self,
        spec: TaskSpec,
        source: Source,
        target: SinkTarget,
        *,
        realtime: bool = True,
        duration: float | None = None,
        preset: str = "veryfast",
        image_limits: FetchLimits | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        give_up_after: float | None = 0.0,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        muxer_factory: MuxerFactory | None = None,
        frame_listeners: Sequence[FrameListener] = (),
        video_profile: str = "high",
        encoder_threads: int = 0,
    ) -> None:
        if not realtime and source.live:
            raise ValueError("a live source can only be mixed in real time")
        self.spec = spec
        self.source = source
        self.target = target
        self.duration = duration
        self.stats = PipelineStats()
        self.settings = EncoderSettings(
            width=spec.width if spec.has_video else 0,
            height=spec.height if spec.has_video else 0,
            fps=spec.fps if spec.has_video else 0,
            video_bitrate=spec.video_bitrate,
            audio_bitrate=spec.audio_bitrate,
            preset=preset,
            audio=spec.has_audio,
            profile=video_profile,
            threads=encoder_threads,
        )
        self._realtime = realtime
        #: The main output (``target``): its muxer, job thread and reconnects. Its failure ends the mix.
        self._push = Output(
            MAIN_OUTPUT,
            self.settings,
            legacy_output(target),
            on_keyframe_wanted=self._want_keyframe,
            realtime=realtime,
            retry_initial=retry_initial,
            retry_max=retry_max,
            give_up_after=give_up_after,
            open_timeout=open_timeout,
            write_timeout=write_timeout,
            max_backlog=MAX_PENDING_SECONDS if realtime else None,
            muxer_factory=muxer_factory,
        )
        #: Outputs fed packets, by name (the main one first); a failed added output leaves.
        self._outputs: dict[str, Output] = {MAIN_OUTPUT: self._push}
        #: Every output ever added, failed and removed ones too (for their status).
        self._all_outputs: dict[str, Output] = dict(self._outputs)
        self._encoder: PacketEncoder | None = None
        self._encode_thread: JobThread | None = None
        #: Submitted encode jobs in order, each with whether it is a video frame.
        self._encoding: collections.deque[tuple[bool, concurrent.futures.Future[list[EncodedPacket]]]] = (
            collections.deque()
        )
        self._clock = MediaClock(realtime)
        self._stop = asyncio.Event()
        self._users: list[str] = []
        self._streams: dict[StreamKey, av.VideoFrame | None] = {}
        #: Live: each stream's recent frames with their arrival (event loop's clock), so a tick that runs
        #: late still shows what had arrived when it was due (see :meth:`_frame_at`).
        self._recent: dict[StreamKey, collections.deque[tuple[float, av.VideoFrame | None]]] = {}
        self._choice: LayoutChoice | None = None
        self._choice_dirty = True
        #: What the source was last told it must deliver (video streams, audio users), see ``_update_wants``.
        self._wants: tuple[frozenset[StreamKey], frozenset[str]] | None = None
        #: The pane size (width, height in canvas pixels) the source was last told each shown stream is
        #: drawn at (:meth:`Source.draw_sizes`), see ``_update_wants``.
        self._draw_sizes: dict[StreamKey, tuple[int, int]] | None = None
        prefill, maximum = (LIVE_AUDIO_PREFILL, LIVE_AUDIO_MAX) if source.live else (0, 1 << 30)
        self._audio = AudioMixer(prefill_samples=prefill, max_samples=maximum)
        self._compositor = (
            Compositor(spec.width, spec.height, spec.background_rgb, spec.crop_mode)
            if self.settings.has_video
            else None
        )
        if spec.overlays is not None and (spec.overlays.clocks or any(p.texts for p in spec.overlays.panes)):
            check_fonts()
        self._overlay = OverlayRenderer(spec.width, spec.height) if self.settings.has_video else None
        if self._overlay is not None:
            self._overlay.set_overlays(spec.overlays)
        self._images = ImageCache(image_limits or FetchLimits())
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._vad = VoiceActivityDetector(spec.vad_interval)
        self._sei: bytes | None = None
        #: More keys for the SEI's JSON envelope, set by whoever runs the pipeline (the worker puts the
        #: channel's ingests' progress under ``"ingest"``); read at each SEI.
        self.sei_fields: dict[str, Any] = {}
        #: Held while composing: the compositor and overlay renderer are used by one thread at a time.
        self._compose_lock = threading.Lock()
        self._frame_listeners = tuple(frame_listeners)

    # -- FrameReceiver -------------------------------------------------------------------------
    def on_user(self, user_id: str, present: bool) -> None:
        """A user joined or left; leaving removes their streams and audio."""
        if present and user_id not in self._users:
            self._users.append(user_id)
            log.info("user %s joined", user_id)
        elif not present and user_id in self._users:
            self._users.remove(user_id)
            for key in [k for k in self._streams if k.user_id == user_id]:
                del self._streams[key]
                self._recent.pop(key, None)
            self._audio.remove_user(user_id)
            log.info("user %s left", user_id)
        self._choice_dirty = True

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        """A video stream was published or unpublished."""
        if active:
            self._streams.setdefault(stream, None)
        else:
            self._streams.pop(stream, None)
            self._recent.pop(stream, None)
        self._choice_dirty = True

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        """Keep the stream's newest picture (None: show background). A camera frame with a sender time
        (``frame.opaque``, seconds on the event loop's clock) tells the audio mixer the user's video
        latency, which their audio follows (lip sync)."""
        if stream not in self._streams:
            self._choice_dirty = True
        self._streams[stream] = frame
        if not self._realtime:
            return
        now = asyncio.get_running_loop().time()
        recent = self._recent.get(stream)
        if recent is None:
            recent = self._recent[stream] = collections.deque(maxlen=RECENT_FRAMES)
        recent.append((now, frame))
        while len(recent) > 1 and recent[1][0] <= now - RECENT_SECONDS:
            recent.popleft()
        if frame is not None and isinstance(frame.opaque, float) and stream.source_type is SourceType.CAMERA:
            self._audio.note_video_latency(stream.user_id, now - frame.opaque, now)

    def _frame_at(self, stream: StreamKey, due: float | None) -> av.VideoFrame | None:
        """The stream's frame as it was at loop time ``due`` (the newest that had arrived by then; the
        oldest kept if all came later), or its latest without ``due`` or history. A tick the event loop
        runs late thus shows the picture of its own instant, in step with the audio, which is placed by
        time (issue 17)."""
        recent = self._recent.get(stream)
        if due is None or not recent:
            return self._streams.get(stream)
        for arrival, frame in reversed(recent):
            if arrival <= due:
                return frame
        return recent[0][1]

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        """Queue a user's decoded audio in their jitter buffer (placed by its sender time,
        ``frame.opaque``, when it has one and the clock is real time)."""
        sent = frame.opaque
        if isinstance(sent, float) and self._realtime:
            self._audio.push(user_id, frame, sender_time=sent, arrival_time=asyncio.get_running_loop().time())
        else:
            self._audio.push(user_id, frame)

    # -- control -------------------------------------------------------------------------------
    def update_spec(self, spec: TaskSpec) -> None:
        """Apply a new layout list, pins, background or crop mode from the next frame on.

        Raises:
            ValueError: if the new spec changes the output encoding (a running stream cannot).
        """
        if spec.media_encode != self.spec.media_encode:
            raise ValueError("MediaEncode cannot change while a task runs")
        if (spec.has_video, spec.has_audio) != (self.spec.has_video, self.spec.has_audio):
            raise ValueError("a running task cannot add or remove its audio or video stream")
        self.spec = spec
        self._choice_dirty = True  # the next choice also tells the source its new wants (_update_wants)
        if self._overlay is not None:
            self._overlay.set_overlays(spec.overlays)
        if self._vad.interval_seconds != spec.vad_interval:
            self._vad = VoiceActivityDetector(spec.vad_interval)
        self._start_fetches()

    def stop(self) -> None:
        """Ask the pipeline to finish: it flushes the encoder and closes the sink."""
        self._stop.set()

    @property
    def layout(self) -> LayoutChoice | None:
        """The layout and pane assignment of the latest frame."""
        return self._choice

    @property
    def push_status(self) -> SinkStatus:
        """The main output's connection state and counters (connected, failing since, reconnects,
        dropped frames), updated on the event loop as the mix runs (an
        :class:`~rtc_mpu.mixer.output.outputs.OutputStatus`)."""
        return self._push.status

    @property
    def outputs(self) -> dict[str, Output]:
        """Every output by name, the main one, added ones, failed and removed ones (see their
        ``status.state``)."""
        return dict(self._all_outputs)

    async def add_output(
        self,
        name: str,
        target: OutputTarget,
        *,
        listener: FileListener | None = None,
        give_up_after: float | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        muxer_factory: MuxerFactory | None = None,
    ) -> Output:
        """Add a destination, before or while the pipeline runs, without a gap on the others: it starts
        at the next keyframe, which is asked for at once. A network output that cannot connect keeps
        reconnecting (``give_up_after`` None: forever); a failure only fails this output.

        Args:
            name: unique among this pipeline's outputs.
            target: see :mod:`rtc_mpu.mixer.output.muxers` (``rtmp_output``, ``file_output``, ``hls_output``).
            listener: told of each finished recording file (on the output's thread).
            (the rest: see :class:`~rtc_mpu.mixer.output.outputs.Output`.)

        Raises:
            ValueError: the name is taken.
            SinkError: a file or HLS output cannot be created (it is then ``failed``).
        """
        if name in self._all_outputs:
            raise ValueError(f"output {name!r} exists")
        output = Output(
            name,
            self.settings,
            target,
            on_keyframe_wanted=self._want_keyframe,
            listener=listener,
            realtime=self._realtime,
            retry_initial=retry_initial,
            retry_max=retry_max,
            give_up_after=give_up_after,
            open_timeout=open_timeout,
            write_timeout=write_timeout,
            max_backlog=MAX_PENDING_SECONDS if self._realtime else None,
            muxer_factory=muxer_factory,
        )
        self._all_outputs[name] = output
        if self._encoder is not None:
            output.templates = self._encoder.templates
            await output.open()
        self._outputs[name] = output
        return output

    async def remove_output(self, name: str) -> None:
        """Stop feeding output ``name`` and close it (what it queued is written, then its trailer);
        the others go on without a gap. Unknown or already removed names are ignored.

        Raises:
            ValueError: ``name`` is the main output.
        """
        if name == MAIN_OUTPUT:
            raise ValueError("the main output cannot be removed")
        output = self._outputs.pop(name, None)
        if output is None:
            return
        try:
            await output.drain()
            await output.close()
        except SinkError as exc:
            log.warning("output %s failed while closing: %s", name, exc)

    def _want_keyframe(self) -> None:
        """An output (re)connected or skipped video: the next encoded frame is an IDR."""
        if self._encoder is not None:
            self._encoder.force_keyframe()

    def request_keyframe(self) -> None:
        """Make the next encoded video frame an IDR (a WebRTC viewer lost pictures or joined). Call on
        the event loop."""
        self._want_keyframe()

    def _accepting(self) -> bool:
        """Some output is connected (else ticks are not even encoded)."""
        return any(o.status.connected for o in self._outputs.values())

    # -- running -------------------------------------------------------------------------------
    async def run(self) -> PipelineStats:
        """Open the sink, start the source and produce output until done; always closes both.

        A push that reconnects (see the module docstring) starts the source and the clock even when
        the first open fails, and ends only by :meth:`stop`, the duration, or giving up.

        Raises:
            SinkError: the sink could not be opened or failed while pushing (without reconnecting), or
                it kept failing for ``give_up_after`` seconds (the source is closed first).
            SourceError: the source could not start.
        """
        try:
            self._start_fetches()
            if not self._clock.realtime and self._fetches:
                await asyncio.gather(*self._fetches.values())
            await self._open_encoder()
            await self._push.open()
            for output in list(self._outputs.values()):
                if output is not self._push:  # an added output that cannot open fails alone
                    await self._guard(output, output.open())
            await self.source.start(self)
            try:
                await self._run_clock()
            finally:
                await self.source.close()
            await self._deliver(0)
            if self._encode_thread is not None and self._encoder is not None:
                encoder = self._encoder
                self._encoding.append((False, self._encode_thread.submit(encoder.flush)))
                await self._deliver(0)
            for output in list(self._outputs.values()):
                await self._guard(output, output.drain())
        finally:
            for task in self._fetches.values():
                task.cancel()
            await asyncio.gather(*self._fetches.values(), return_exceptions=True)
            await self._images.close()
            try:
                for output in list(self._outputs.values()):
                    if output is not self._push:
                        await self._guard(output, output.close())
            finally:
                await self._push.close()
                if self._encode_thread is not None:
                    self._encode_thread.shutdown()
        return self.stats

    async def _open_encoder(self) -> None:
        """Open the one encoder on the encode thread (local, quick) and give its streams to the outputs."""
        thread = JobThread("mpu-encode")
        self._encode_thread = thread
        self._encoder = await asyncio.wrap_future(thread.submit(lambda: PacketEncoder(self.settings)))
        for output in self._all_outputs.values():
            output.templates = self._encoder.templates

    async def _deliver(self, keep: int | None) -> None:
        """Hand the packets of finished encode jobs, in order, to every output; wait until at most
        ``keep`` jobs are pending (None: no waiting).

        Raises:
            Exception: what an encode job raised (a bug: bad pts, bad block).
        """
        pending = self._encoding
        while pending and (pending[0][1].done() or (keep is not None and len(pending) > keep)):
            _, future = pending.popleft()
            packets = future.result() if future.done() else await asyncio.wrap_future(future)
            outputs = list(self._outputs.values())
            for packet in packets:
                for output in outputs:
                    if not output.submit(packet) and output is self._push:
                        # Encoded but not delivered by the main output (it waits for a keyframe after
                        # a reconnect, or is behind): the task's drop counts say so, as before.
                        if packet.video:
                            self.stats.dropped_video_frames += 1
                        else:
                            self.stats.dropped_audio_blocks += 1

    async def _guard(self, output: Output, step: Any) -> None:
        """Run ``step`` (a coroutine of ``output``); an added output's SinkError fails it alone.

        Raises:
            SinkError: from the main output.
        """
        try:
            await step
        except SinkError as exc:
            self._output_failed(output, exc)

    def _output_failed(self, output: Output, exc: SinkError) -> None:
        """``output`` failed for good: the main one ends the mix (raises ``exc``); another leaves."""
        if output is self._push:
            raise exc
        output.status.state = OutputState.FAILED
        if self._outputs.pop(output.name, None) is not None:
            log.warning("output %s failed: %s", output.name, exc)

    async def _step_outputs(self, keep: int | None) -> None:
        """After each clock step: deliver encoded packets, collect each output's finished writes (with
        backpressure offline) and check it (blocked writes, giving up).

        Raises:
            SinkError: the main output failed for good.
        """
        await self._deliver(keep)
        for output in list(self._outputs.values()):
            await self._guard(output, output.collect(keep))
            try:
                output.check()
            except SinkError as exc:
                self._output_failed(output, exc)

    # -- overlays ------------------------------------------------------------------------------
    def _start_fetches(self) -> None:
        """Fetch the images of the current overlays that are not fetched or being fetched."""
        if self._overlay is None or self.spec.overlays is None:
            return
        for image in self.spec.overlays.images():
            if image.url not in self._fetches:
                self._fetches[image.url] = asyncio.get_running_loop().create_task(self._fetch(image.url))

    async def _fetch(self, url: str) -> None:
        try:
            rgba = await self._images.get(url)
        except ImageError as exc:
            overlays = self.spec.overlays
            names = [i.where for i in overlays.images() if i.url == url] if overlays else []
            for name in names or [url]:
                self.stats.overlay_problems[name] = exc.reason
            log.warning("overlay image %s skipped: %s", ", ".join(names), exc.reason)
            return
        if self._overlay is not None:
            self._overlay.set_image(url, rgba)

    def _frame_budget(self) -> tuple[int | None, int | None]:
        if self.duration is None:
            return None, None
        frames = round(self.duration * self.settings.fps) if self.settings.has_video else 0
        blocks = math.ceil(self.duration * SAMPLE_RATE / BLOCK_SAMPLES)
        return frames, blocks

    async def _run_clock(self) -> None:
        clock = self._clock
        clock.start()
        fps = self.settings.fps
        max_frames, max_blocks = self._frame_budget()
        frame_index = 0
        block_index = 0
        block_seconds = BLOCK_SAMPLES / SAMPLE_RATE
        while not self._stop.is_set():
            video_done = not self.settings.has_video or (max_frames is not None and frame_index >= max_frames)
            audio_done = max_blocks is not None and block_index >= max_blocks
            if (video_done and audio_done) or (self.duration is None and self.source.finished):
                break
            video_due = math.inf if video_done else frame_index / fps
            audio_due = math.inf if audio_done else (block_index + 1) * block_seconds
            if video_due <= audio_due:
                lateness = await clock.wait_until(video_due)
                await self.source.advance_to(video_due)
                self._video_tick(frame_index, late=lateness > MAX_VIDEO_LATENESS)
                frame_index += 1
            else:
                await clock.wait_until(audio_due)
                await self.source.advance_to(audio_due)
                self._audio_tick(block_index)
                block_index += 1
            await self._step_outputs(OFFLINE_QUEUE_DEPTH if not clock.realtime else None)

    def _subscriptions(self) -> Subscriptions:
        return self.spec.subscriptions or Subscriptions()

    def _ordered_streams(self) -> list[StreamKey]:
        """Active video streams the task subscribes to, by their users' join order."""
        wanted = self._subscriptions()
        order = {user: index for index, user in enumerate(self._users)}
        streams = [s for s in self._streams if wanted.wants_video(s)]
        return sorted(streams, key=lambda s: (order.get(s.user_id, len(order)), s))

    def _reserved_pins(self, streams: list[StreamKey]) -> list[UserPane]:
        """Pins whose user is in the channel without the pinned video, on a pane with a placeholder
        image: the pane stays theirs and shows the placeholder (a camera that is off)."""
        overlays = self.spec.overlays
        if overlays is None:
            return []
        present = set(streams)
        wanted = self._subscriptions()
        result = []
        for pin in self.spec.user_panes:
            content = overlays.for_pane(pin.pane_id)
            if content is None or not content.has_placeholder:
                continue
            key = StreamKey(pin.user_id, pin.source_type)
            if pin.user_id in self._users and wanted.wants_user(pin.user_id) and key not in present:
                result.append(pin)
        return result

    def _relay_user(self) -> str | None:
        """The user a relay forwards: the first in join order with the relayed kind of stream (or,
        for an audio relay, the first subscribed user)."""
        wanted = self._subscriptions()
        if self.spec.has_video:
            for stream in self._ordered_streams():
                if stream.source_type is self.spec.relay_source:
                    return stream.user_id
            return None
        return next((u for u in self._users if wanted.wants_audio(u)), None)

    def _current_choice(self) -> LayoutChoice:
        if self._choice is None or self._choice_dirty:
            streams = self._ordered_streams()
            if self.spec.mix_mode is MixMode.RELAY:
                layout = self.spec.layouts[0]
                user = self._relay_user()
                stream = StreamKey(user, self.spec.relay_source) if user is not None else None
                choice = LayoutChoice(layout, (PaneAssignment(layout.panes[0], stream),))
            else:
                choice = choose_layout(
                    self.spec.layouts, streams, self.spec.user_panes, self._reserved_pins(streams)
                )
            if choice != self._choice:
                self.stats.layout_changes += 1
                log.info(
                    "layout %s: %s",
                    choice.layout.id,
                    ", ".join(
                        f"pane {a.pane.id}={a.stream.user_id if a.stream else '-'}"
                        for a in choice.assignments
                    ),
                )
            self._choice = choice
            self._choice_dirty = False
            self.stats.layout_id = choice.layout.id
            self._update_wants()
        return self._choice

    def _update_wants(self) -> None:
        """Tell the source what it must deliver (:meth:`Source.want`): the streams on the panes of the
        current choice (none for an audio-only task) and the users whose audio may be mixed (none for
        a video-only task); called only when either set changed."""
        if self.settings.has_video:
            if self._choice is None:
                return
            video = frozenset(a.stream for a in self._choice.assignments if a.stream is not None)
        else:
            video = frozenset()
        audio = frozenset(self._audio_users()) if self.spec.has_audio else frozenset[str]()
        if (video, audio) != self._wants:
            self._wants = (video, audio)
            self.source.want(video, audio)
        if self.settings.has_video and self._choice is not None:
            sizes: dict[StreamKey, tuple[int, int]] = {}
            for a in self._choice.assignments:
                if a.stream is not None:
                    rect = pane_rect(a.pane, self.spec.width, self.spec.height)
                    before = sizes.get(a.stream, (0, 0))
                    sizes[a.stream] = (max(before[0], rect.width), max(before[1], rect.height))
            if sizes != self._draw_sizes:
                self._draw_sizes = sizes
                self.source.draw_sizes(dict(sizes))

    def _video_tick(self, index: int, late: bool) -> None:
        self.stats.video_ticks += 1
        sei = self._sei
        if late or not self._accepting() or self._encode_backlogged():
            self.stats.dropped_video_frames += 1  # late, no output connected, or encoding lags
            return
        self._submit_video(index, self._picture_job(index), sei)
        self._sei = None
        if sei is not None:
            self.stats.sei_messages += 1
        self.stats.video_frames += 1

    def _picture_job(self, index: int) -> Callable[[], av.VideoFrame]:
        """What composes picture ``index`` from each pane's latest frame (and offers it to the frame
        listeners), run on the output's thread."""
        choice = self._current_choice()
        spec = self.spec
        due = self._clock.loop_time(index / self.settings.fps)
        frames = {
            a.pane.id: self._frame_at(a.stream, due) if a.stream is not None else None
            for a in choice.assignments
        }
        draws = [
            PaneDraw(
                key=(choice.layout.id, a.pane.id),
                rect=pane_rect(a.pane, spec.width, spec.height),
                zorder=a.pane.zorder,
                frame=frames[a.pane.id],
            )
            for a in choice.assignments
        ]
        renderer = self._overlay
        panes = {a.pane.id: (a.pane, frames[a.pane.id] is not None) for a in choice.assignments}
        now = datetime.now(UTC)
        compositor = self._compositor
        assert compositor is not None
        background, crop_mode = spec.background_rgb, spec.crop_mode
        lock = self._compose_lock
        listeners, time_base = self._frame_listeners, Fraction(1, self.settings.fps)

        def compose() -> av.VideoFrame:
            # Overlay sprites are made here, off the event loop: scaling a large image takes tens of ms.
            # The lock: a job of an aborted connection may still be composing on its old thread.
            with lock:
                overlays: list[OverlayDraw] = renderer.draws(panes, now) if renderer is not None else []
                compositor.set_style(background, crop_mode)
                frame = compositor.compose(draws, overlays)
            for listener in listeners:
                try:
                    listener(frame, index, time_base)
                except Exception:
                    log.exception("frame listener %r failed", listener)
            return frame

        return compose

    def _audio_users(self) -> list[str]:
        """Whose audio may be mixed, in join order (a relay: the relayed user only)."""
        if self.spec.mix_mode is MixMode.RELAY:
            user = self._relay_user()
            return [user] if user is not None and self._subscriptions().wants_audio(user) else []
        wanted = self._subscriptions()
        return [user for user in self._users if wanted.wants_audio(user)]

    def _audio_tick(self, index: int) -> None:
        if self.settings.has_video:
            mix_count = self._current_choice().layout.audio_mix_count
        else:
            mix_count = max(1, len(self._users))
            self._update_wants()  # a video task's are kept by _current_choice
        audio_users = self._audio_users()
        presented = self._clock.loop_time(index * BLOCK_SAMPLES / SAMPLE_RATE)
        block = self._audio.mix_block(mix_count, audio_users, presentation_time=presented)
        if presented is not None and index % AV_OFFSET_EVERY_BLOCKS == 0:
            self.stats.av_offsets_ms = self._audio.av_offsets_ms()
        if self.spec.report_vad or self.spec.sei:
            levels = self._audio.levels()
            report = self._vad.update(
                index * BLOCK_SAMPLES / SAMPLE_RATE, {u: levels[u] for u in audio_users if u in levels}
            )
            if report is not None:
                self.stats.vad = json.loads(report.to_json())
                if self.spec.sei and self.settings.has_video:
                    self._sei = with_fields(report.to_json(), self.sei_fields)
        self.stats.users = list(self._users)
        self.stats.mixed_audio_users = self._audio.mixed_users()
        frame = AudioMixer.make_frame(block, index * BLOCK_SAMPLES)
        if not self._accepting():  # reconnecting: mixed (buffers drained, VAD goes on), not sent
            self.stats.dropped_audio_blocks += 1
            return
        encoder, thread = self._encoder, self._encode_thread
        assert encoder is not None and thread is not None
        self._encoding.append((False, thread.submit(lambda: encoder.encode_audio(frame))))
        self.stats.audio_blocks += 1

    def _encode_backlogged(self) -> bool:
        """More than :data:`MAX_PENDING_SECONDS` of video waits for the encode thread (live only)."""
        if not self._realtime:
            return False
        waiting = sum(1 for is_video, _ in self._encoding if is_video)
        return waiting > MAX_PENDING_SECONDS * self.settings.fps

    def _submit_video(self, index: int, picture: Callable[[], av.VideoFrame], sei: bytes | None) -> None:
        """Queue composing (``picture``: the frame listeners see it there) and encoding frame ``index``
        on the encode thread; its packets go to the outputs from :meth:`_deliver`."""
        encoder, thread = self._encoder, self._encode_thread
        assert encoder is not None and thread is not None

        def job() -> list[EncodedPacket]:
            return encoder.encode_video(picture(), index, sei=sei)

        self._encoding.append((True, thread.submit(job)))
