"""The pipeline controller: source → (compositor + audio mixer) → encoder → sink, on one media clock.

The event loop receives media (RTP for a live channel) and runs the clock. At every video tick it
takes each pane's latest frame and hands a compose-and-encode job to one worker thread; at every
audio block it mixes the users' jitter buffers (cheap numpy) and hands the block to the same thread.
Compositing, scaling, x264/AAC encoding and network writes therefore never run on the event loop.
Jobs run in clock order, so pts are strictly increasing.

If the worker thread falls behind a live clock by more than :data:`MAX_PENDING_SECONDS`, video ticks
are dropped (counted in the stats) rather than delaying audio or the RTP receiver; pts keep following
the clock, so a player sees a frame held, never a time shift.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import av

from mixer.audio_mixer import BLOCK_SAMPLES, SAMPLE_RATE, AudioMixer
from mixer.clock import MediaClock
from mixer.compositor import Compositor, PaneDraw
from mixer.encoder import EncoderSettings, MediaEncoder
from mixer.geometry import pane_rect
from mixer.selection import LayoutChoice, choose_layout
from mixer.sinks import SinkTarget
from mixer.source import Source, StreamKey
from mixer.spec import TaskSpec

log = logging.getLogger(__name__)

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


@dataclass
class PipelineStats:
    """What the pipeline did, for status output and tests.

    Attributes:
        video_ticks: video ticks of the clock so far (frames due).
        video_frames: frames handed to the encoder.
        dropped_video_frames: ticks skipped because encoding lagged or the clock was late.
        audio_blocks: audio blocks encoded (BLOCK_SAMPLES samples each).
        layout_id: the layout in use (None before the first frame or for audio only).
        layout_changes: how many times the layout or pane assignment changed.
        users: users in the channel in join order.
        mixed_audio_users: users whose audio is in the mix.
    """

    video_ticks: int = 0
    video_frames: int = 0
    dropped_video_frames: int = 0
    audio_blocks: int = 0
    layout_id: int | None = None
    layout_changes: int = 0
    users: list[str] = field(default_factory=list)
    mixed_audio_users: list[str] = field(default_factory=list)


class Pipeline:
    """Runs one mix from a :class:`Source` to a sink until the duration elapses or :meth:`stop` is called.

    Args:
        spec: the validated task.
        source: the channel (or files) to mix.
        target: the validated sink (see :func:`mixer.sinks.sink_target`).
        realtime: pace output by the wall clock (live push); False renders as fast as possible.
            Only a paced source (``source.live`` False) can render offline.
        duration: seconds of output to produce, or None to run until :meth:`stop` or until the
            source is finished.
        preset: x264 preset.

    Raises:
        ValueError: offline rendering asked of a live source.
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
    ) -> None:
        if not realtime and source.live:
            raise ValueError("a live source can only be mixed in real time")
        self.spec = spec
        self.source = source
        self.target = target
        self.duration = duration
        self.stats = PipelineStats()
        self.settings = EncoderSettings(
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            video_bitrate=spec.video_bitrate,
            audio_bitrate=spec.audio_bitrate,
            preset=preset,
        )
        self._clock = MediaClock(realtime)
        self._stop = asyncio.Event()
        self._users: list[str] = []
        self._streams: dict[StreamKey, av.VideoFrame | None] = {}
        self._choice: LayoutChoice | None = None
        self._choice_dirty = True
        prefill, maximum = (LIVE_AUDIO_PREFILL, LIVE_AUDIO_MAX) if source.live else (0, 1 << 30)
        self._audio = AudioMixer(prefill_samples=prefill, max_samples=maximum)
        self._compositor = (
            Compositor(spec.width, spec.height, spec.background_rgb, spec.crop_mode)
            if self.settings.has_video
            else None
        )
        self._encoder: MediaEncoder | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: collections.deque[tuple[bool, concurrent.futures.Future[None]]] = collections.deque()

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
            self._audio.remove_user(user_id)
            log.info("user %s left", user_id)
        self._choice_dirty = True

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        """A video stream was published or unpublished."""
        if active:
            self._streams.setdefault(stream, None)
        else:
            self._streams.pop(stream, None)
        self._choice_dirty = True

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        """Keep the stream's newest picture (None: show background)."""
        if stream not in self._streams:
            self._choice_dirty = True
        self._streams[stream] = frame

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        """Queue a user's decoded audio in their jitter buffer."""
        self._audio.push(user_id, frame)

    # -- control -------------------------------------------------------------------------------
    def update_spec(self, spec: TaskSpec) -> None:
        """Apply a new layout list, pins, background or crop mode from the next frame on.

        Raises:
            ValueError: if the new spec changes the output encoding (a running stream cannot).
        """
        if spec.media_encode != self.spec.media_encode:
            raise ValueError("MediaEncode cannot change while a task runs")
        self.spec = spec
        self._choice_dirty = True

    def stop(self) -> None:
        """Ask the pipeline to finish: it flushes the encoder and closes the sink."""
        self._stop.set()

    @property
    def layout(self) -> LayoutChoice | None:
        """The layout and pane assignment of the latest frame."""
        return self._choice

    # -- running -------------------------------------------------------------------------------
    async def run(self) -> PipelineStats:
        """Open the sink, start the source and produce output until done; always closes both.

        Raises:
            SinkError: the sink could not be opened or failed while pushing.
            SourceError: the source could not start.
        """
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mpu-encode")
        try:
            self._encoder = await asyncio.to_thread(MediaEncoder, self.settings, self.target)
            log.info("pushing to %s", self.target.display)
            await self.source.start(self)
            try:
                await self._run_clock()
            finally:
                await self.source.close()
            await self._drain(0)
        finally:
            await self._close_encoder()
        return self.stats

    async def _close_encoder(self) -> None:
        executor, encoder = self._executor, self._encoder
        try:
            if executor is not None:
                for _, future in self._pending:
                    future.cancel()
                await asyncio.gather(
                    *(asyncio.wrap_future(f) for _, f in self._pending), return_exceptions=True
                )
                self._pending.clear()
                if encoder is not None:
                    await asyncio.wrap_future(executor.submit(encoder.close))
        finally:
            if executor is not None:
                executor.shutdown(wait=True)

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
            await self._drain(OFFLINE_QUEUE_DEPTH if not clock.realtime else None)

    def _current_choice(self) -> LayoutChoice:
        if self._choice is None or self._choice_dirty:
            streams = sorted(
                self._streams,
                key=lambda s: (
                    self._users.index(s.user_id) if s.user_id in self._users else len(self._users),
                    s,
                ),
            )
            choice = choose_layout(self.spec.layouts, streams, self.spec.user_panes)
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
        return self._choice

    def _video_tick(self, index: int, late: bool) -> None:
        self.stats.video_ticks += 1
        pending_video = sum(1 for is_video, _ in self._pending if is_video)
        if late or (self._clock.realtime and pending_video > MAX_PENDING_SECONDS * self.settings.fps):
            self.stats.dropped_video_frames += 1
            return
        choice = self._current_choice()
        spec = self.spec
        draws = [
            PaneDraw(
                key=(choice.layout.id, a.pane.id),
                rect=pane_rect(a.pane, spec.width, spec.height),
                zorder=a.pane.zorder,
                frame=self._streams.get(a.stream) if a.stream is not None else None,
            )
            for a in choice.assignments
        ]
        compositor, encoder = self._compositor, self._encoder
        assert compositor is not None and encoder is not None
        background, crop_mode = spec.background_rgb, spec.crop_mode

        def job() -> None:
            compositor.set_style(background, crop_mode)
            encoder.encode_video(compositor.compose(draws), index)

        self._submit(True, job)
        self.stats.video_frames += 1

    def _audio_tick(self, index: int) -> None:
        if self.settings.has_video:
            mix_count = self._current_choice().layout.audio_mix_count
        else:
            mix_count = max(1, len(self._users))
        block = self._audio.mix_block(mix_count, list(self._users))
        frame = AudioMixer.make_frame(block, index * BLOCK_SAMPLES)
        encoder = self._encoder
        assert encoder is not None
        self._submit(False, lambda: encoder.encode_audio(frame))
        self.stats.audio_blocks += 1
        self.stats.users = list(self._users)
        self.stats.mixed_audio_users = self._audio.mixed_users()

    def _submit(self, is_video: bool, job: Callable[[], None]) -> None:
        assert self._executor is not None
        self._pending.append((is_video, self._executor.submit(job)))

    async def _drain(self, keep: int | None) -> None:
        """Collect finished jobs (raising their errors); wait until at most ``keep`` are pending."""
        pending = self._pending
        while pending and (pending[0][1].done() or (keep is not None and len(pending) > keep)):
            _, future = pending.popleft()
            if future.done():
                future.result()  # no asyncio future (nor a loop iteration) for a job already done
            else:
                await asyncio.wrap_future(future)
