"""Issue 7, the RTMP sink: a live push survives write errors and server restarts by reconnecting.

The pipeline keeps its media clock, its source and its compositor running while the sink is down,
drops (and counts) what it cannot deliver, reopens the sink with exponential backoff and jitter off
the event loop, and gives up after ``give_up_after`` seconds with the last error. The integration
tests push to a real nginx-rtmp (a private one where it is stopped and started again); the unit
tests use a stand-in encoder to time the backoff and to prove the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import av
import numpy as np
import pytest
import redis

import rtc_mpu.stack.nginx_rtmp as nginx_rtmp_module
from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, AudioMixer
from rtc_mpu.mixer.output.encoder import EncodedPacket, EncoderSettings, PacketEncoder, StreamTemplates
from rtc_mpu.mixer.output.muxers import ContainerMuxer, OutputTarget, legacy_output
from rtc_mpu.mixer.output.push import reconnect_wait
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget, sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.base import FrameReceiver
from rtc_mpu.mixer.sources.janus import ChannelStatus
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port
from rtc_mpu.workers import mix_runner
from rtc_mpu.workers.model import TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.settings import WorkerSettings
from rtc_mpu.workers.stats import TaskStats
from rtc_mpu.workers.store import TaskStore
from tests.conftest import StoreFactory
from tests.media import COLORS, TONES, rgb
from tests.scripted_source import ScriptedSource, ScriptedUser

FPS = 15  # MediaEncode 1: 640x360 at 15 fps


class CountingSource(ScriptedSource):
    """A scripted live channel that counts how often it was started and closed."""

    def __init__(self, users: list[ScriptedUser]) -> None:
        super().__init__(users)
        self.starts = 0
        self.closes = 0

    async def start(self, receiver: FrameReceiver) -> None:
        self.starts += 1
        await super().start(receiver)

    async def close(self) -> None:
        self.closes += 1
        await super().close()


def one_user() -> CountingSource:
    return CountingSource([ScriptedUser("alice", COLORS[0], TONES[0])])


def stream_video_live(server: NginxRtmp, stream: str) -> bool:
    """Whether nginx-rtmp lists ``stream`` with a publisher whose video headers arrived (False while
    the server is down)."""
    try:
        with urllib.request.urlopen(f"http://{server.host}:{server.http_port}/stat", timeout=1) as response:
            root = ElementTree.fromstring(response.read())
    except OSError:
        return False
    return any(
        s.findtext("name") == stream
        and s.find("client/publishing") is not None
        and s.find("meta/video") is not None
        for s in root.iter("stream")
    )


async def wait_for(condition: str, check: object, timeout: float) -> float:
    """Poll the blocking ``check()`` in a thread every 20 ms until true; the monotonic time it was."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        await asyncio.sleep(0.02)
    return time.monotonic()


@dataclass
class Watched:
    """What a viewer saw: video packets as (pts seconds, keyframe) and decoded pictures' mean colours."""

    packets: list[tuple[float, bool]] = field(default_factory=list)
    colours: list[list[float]] = field(default_factory=list)
    error: str | None = None


def watch(url: str, frames: int, into: Watched) -> None:
    """A player: open the RTMP stream, keep ``frames`` decoded video frames, then leave.

    nginx-rtmp starts a new player's video at the next keyframe (up to a GOP, 2 s, away): probe
    longer than that (``analyzeduration``, microseconds) or the video stream is not found.
    """
    try:
        with av.open(url, options={"analyzeduration": "3000000"}, timeout=(10.0, 5.0)) as container:
            video = container.streams.video[0]
            for packet in container.demux(video):
                if packet.pts is None:
                    continue
                into.packets.append((float(packet.pts * packet.time_base), packet.is_keyframe))
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    picture = rgb(frame)
                    into.colours.append([float(v) for v in picture.reshape(-1, 3).mean(axis=0)])
                if len(into.colours) >= frames:
                    return
    except av.error.FFmpegError as exc:
        into.error = str(exc)


@pytest.fixture
def private_nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    """An nginx-rtmp of this test alone: stopping it touches no other test."""
    server = NginxRtmp(tmp_path / "nginx", rtmp_port=free_port(), http_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(45)
def test_nginx_restart_mid_stream_reconnects_without_restarting_the_source(private_nginx: NginxRtmp) -> None:
    server = private_nginx
    source = one_user()
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(
        spec,
        source,
        sink_target(server.rtmp_url("restart") + "?auth=secretkey"),
        realtime=True,
        retry_initial=0.5,
        retry_max=5.0,
        give_up_after=None,
    )
    watched = Watched()

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        mix = asyncio.create_task(pipeline.run())
        await wait_for("the first push", lambda: stream_video_live(server, "restart"), 10)
        await asyncio.sleep(1.5)
        assert pipeline.push_status.connected and pipeline.stats.dropped_video_frames == 0

        await asyncio.to_thread(server.stop)
        await asyncio.sleep(2.0)  # the server is down ~2 s
        down = pipeline.push_status
        assert not mix.done(), "the pipeline goes on without its server"
        assert not down.connected and down.failing_since is not None
        assert down.push_url_problem is False, "a server that went away is a network problem (status 5)"
        assert down.last_error is not None and "secretkey" not in down.last_error
        dropped_during = pipeline.stats.dropped_video_frames
        assert dropped_during > 0 and pipeline.stats.dropped_audio_blocks > 0

        await asyncio.to_thread(server.start)  # returns once the ports accept connections again
        accepting = time.monotonic()
        video_again = await wait_for(
            "the push to come back", lambda: stream_video_live(server, "restart"), 15
        )
        await asyncio.to_thread(watch, server.rtmp_url("restart"), 10, watched)
        pipeline.stop()
        await mix
        return video_again - accepting, loop.time() - began

    resume, elapsed = asyncio.run(scenario())
    stats = pipeline.stats
    print(
        f"nginx-rtmp accepting again -> first new video at the server: {resume:.2f} s "
        f"(dropped {stats.dropped_video_frames} video frames, {stats.dropped_audio_blocks} audio blocks, "
        f"{pipeline.push_status.attempts} failed attempts)"
    )
    assert resume < 15
    assert pipeline.push_status.connected and pipeline.push_status.reconnects == 1
    assert source.starts == 1 and source.closes == 1, "the channel subscription stayed up the whole time"
    # The clock never waited for the sink: one tick per frame interval, delivered or not (``elapsed``
    # also counts opening the sink before the clock starts and closing it after: up to ~0.6 s).
    assert (elapsed - 0.6) * FPS <= stats.video_ticks <= elapsed * FPS + 1, (stats.video_ticks, elapsed)
    assert stats.video_frames + stats.dropped_video_frames == stats.video_ticks
    # A viewer sees the stream again, from a keyframe, alice's colour, with pts from the clock.
    assert watched.colours, f"the viewer got nothing after the restart: {watched.error}"
    assert watched.packets[0][1], "a viewer joining after the reconnect starts at a keyframe"
    assert watched.packets[0][0] > 2.0, "pts follow the media clock, they do not restart at 0"
    assert np.abs(np.array(watched.colours[-1]) - np.array(COLORS[0])).max() <= 12


@pytest.fixture
def controllable_nginx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NginxRtmp]:
    """A private nginx-rtmp with its control module at ``/control`` (can drop a publisher)."""
    template = tmp_path / "nginx-rtmp-control.conf.template"
    text = nginx_rtmp_module.TEMPLATE.read_text()
    stat = "        location /stat {"
    assert stat in text
    template.write_text(
        text.replace(stat, "        location /control {\n            rtmp_control all;\n        }\n" + stat)
    )
    monkeypatch.setattr(nginx_rtmp_module, "TEMPLATE", template)
    server = NginxRtmp(tmp_path / "nginx", rtmp_port=free_port(), http_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(45)
def test_a_viewer_sees_the_clock_go_on_across_a_dropped_publisher(controllable_nginx: NginxRtmp) -> None:
    """nginx-rtmp drops our publisher (as a CDN may); a player connected throughout sees the picture
    stop and go on from an IDR keyframe whose timestamp is the media clock's: no rewind, no reset."""
    server = controllable_nginx
    pipeline = Pipeline(
        build_task_spec(layout_ids=[1], media_encode_id=1),
        one_user(),
        sink_target(server.rtmp_url("dropped")),
        realtime=True,
        give_up_after=None,
    )
    watched = Watched()

    async def scenario() -> None:
        mix = asyncio.create_task(pipeline.run())
        await wait_for("the first push", lambda: stream_video_live(server, "dropped"), 10)
        viewer = asyncio.create_task(asyncio.to_thread(watch, server.rtmp_url("dropped"), 10**6, watched))
        while len(watched.packets) < 15:  # the viewer is watching
            assert not viewer.done(), watched.error
            await asyncio.sleep(0.05)
        url = f"http://{server.host}:{server.http_port}/control/drop/publisher?app=live&name=dropped"
        with urllib.request.urlopen(url, timeout=2) as response:  # (a short blocking call)
            assert response.read() == b"1"
        while pipeline.push_status.reconnects == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.0)  # past the next GOP boundary
        pipeline.stop()
        await mix
        await asyncio.wait_for(viewer, 15)  # nginx-rtmp keeps the player: it ends by read timeout

    asyncio.run(scenario())
    times = [pts for pts, _ in watched.packets]
    assert all(b > a for a, b in itertools.pairwise(times)), "timestamps never go back"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    gap = max(gaps)
    resumed = gaps.index(gap) + 1
    dropped = pipeline.stats.dropped_video_frames
    print(
        f"viewer: last frame before the drop at {times[resumed - 1]:.3f} s, first after at "
        f"{times[resumed]:.3f} s (keyframe: {watched.packets[resumed][1]}); {dropped} frames dropped"
    )
    # The gap covers the ticks dropped while reconnecting, plus the frames lost in the dead connection.
    assert dropped > 0 and dropped + 1 <= round(gap * FPS) and gap < 3.0, (gap, dropped)
    assert watched.packets[resumed][1], "the first frame after the reconnect is a keyframe"
    assert len(times) - resumed > 2 * FPS, "and the picture goes on after it"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("refused", [True, False], ids=["unknown-app", "closed-port"])
def test_a_failing_push_gives_up_after_give_up_after_with_the_source_closed(
    nginx_rtmp: NginxRtmp, refused: bool
) -> None:
    if refused:  # nginx-rtmp answers, but has no such application: the push URL is wrong (status 6)
        url = f"rtmp://{nginx_rtmp.host}:{nginx_rtmp.rtmp_port}/nosuchapp/privatename?auth=secretkey"
    else:  # nobody listens: a network problem (status 5)
        url = f"rtmp://127.0.0.1:{free_port()}/live/privatename?auth=secretkey"
    source = one_user()
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(
        spec, source, sink_target(url), realtime=True, retry_initial=0.2, retry_max=0.5, give_up_after=2.0
    )

    async def scenario() -> SinkError:
        mix = asyncio.create_task(pipeline.run())
        await asyncio.sleep(1.0)
        assert not mix.done() and not pipeline.push_status.connected
        assert pipeline.push_status.push_url_problem is refused
        assert source.starts == 1 and source.closes == 0, "the channel is mixed while the push fails"
        with pytest.raises(SinkError) as raised:
            await mix
        return raised.value

    began = time.monotonic()
    error = asyncio.run(scenario())
    took = time.monotonic() - began
    print(f"gave up after {took:.2f} s: {error}")
    assert 2.0 <= took < 6.0
    assert error.push_url_problem is refused
    assert "secretkey" not in str(error) and "privatename" not in str(error), "the stream key is redacted"
    assert source.closes == 1, "the source is closed before run() raises"
    assert pipeline.push_status.attempts >= 2, "it kept trying until it gave up"
    assert pipeline.stats.video_frames == 0 and pipeline.stats.dropped_video_frames > 20


class RecordingStore(TaskStore):
    """The real task store, recording what the runner reports: each heartbeat's (status, state,
    reason), and how it finished the task."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        super().__init__(client, prefix=prefix)
        self.beats: list[tuple[TaskStatus | None, TaskState | None, str | None]] = []
        self.finished: tuple[TaskStatus, str] | None = None

    def heartbeat(
        self,
        app_id: str,
        task_id: str,
        token: int,
        *,
        status: TaskStatus | None = None,
        state: TaskState | None = None,
        reason: str | None = None,
        layout_id: int | None = None,
        users: list[str] | None = None,
        stats: TaskStats | None = None,
        capacity: float | None = None,
    ) -> TaskRecord | None:
        self.beats.append((status, state, reason))
        return super().heartbeat(
            app_id,
            task_id,
            token,
            status=status,
            state=state,
            reason=reason,
            layout_id=layout_id,
            users=users,
            stats=stats,
            capacity=capacity,
        )

    def finish(
        self,
        app_id: str,
        task_id: str,
        token: int | None,
        status: TaskStatus,
        reason: str,
        *,
        cooldown: bool = True,
    ) -> TaskRecord | None:
        self.finished = (status, reason)
        return super().finish(app_id, task_id, token, status, reason, cooldown=cooldown)

    def latest(self) -> tuple[TaskStatus | None, TaskState | None, str | None]:
        return self.beats[-1] if self.beats else (None, None, None)


def wait_beat(store: RecordingStore, status: TaskStatus, timeout: float) -> str:
    """Wait for a heartbeat with ``status``; its reason."""
    deadline = time.monotonic() + timeout
    while store.latest()[0] is not status:
        assert time.monotonic() < deadline, f"no heartbeat with {status.name}: {store.latest()}"
        time.sleep(0.05)
    return store.latest()[2] or ""


@pytest.mark.timeout(45)
def test_the_runner_reports_5_while_the_server_is_down_1_once_back_and_gives_up_after_a_while(
    private_nginx: NginxRtmp, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = private_nginx
    channels: list[CountingSource] = []

    def channel(config: object) -> CountingSource:  # stands in for JanusSource(ChannelConfig)
        source = one_user()
        source.status = ChannelStatus.JOINED  # type: ignore[attr-defined]
        source.last_error = None  # type: ignore[attr-defined]
        channels.append(source)
        return source

    monkeypatch.setattr(mix_runner, "JanusSource", channel)
    url = server.rtmp_url("runner") + "?auth=secretkey"
    params = TaskParams(channel_id="c1", stream_url=url, media_encode=1, layout_ids=(1,))
    base = make_store()  # the fixture's prefix, emptied afterwards
    store = RecordingStore(base.client, prefix=base.prefix)
    store.start_task(TaskRecord("app", "t1", params, stream_url_key(url)))
    settings = dataclasses.replace(
        WorkerSettings(), heartbeat_interval=0.2, retry_initial=0.2, retry_max=0.5, give_up_after=3.0
    )
    runner = mix_runner.MixRunner(store, "app", "t1", "w1", settings)
    outcome: list[mix_runner.Outcome | None] = []
    worker = threading.Thread(target=lambda: outcome.append(runner.run()), daemon=True)
    worker.start()

    wait_beat(store, TaskStatus.RUNNING, 10)
    server.stop()
    reason = wait_beat(store, TaskStatus.NETWORK_PROBLEM, 5)
    assert store.latest()[1] is TaskState.RETRYING
    assert reason.startswith("push failing since") and "reconnecting (attempt" in reason, reason
    assert "secretkey" not in reason and "runner" not in reason
    server.start()
    wait_beat(store, TaskStatus.RUNNING, 10)
    assert store.latest()[1] is TaskState.RUNNING and store.finished is None

    # Down again, for good. The reconnection lasted less than STABLE_CONNECTION_SECONDS, so it did not
    # end the outage: the give-up timer (3 s) still counts from the first stop.
    server.stop()
    failing = time.monotonic()
    worker.join(15)
    assert not worker.is_alive()
    gave_up = time.monotonic() - failing
    print(f"gave up {gave_up:.1f} s after the server stopped again: {store.finished}")
    assert gave_up < 3.0
    assert store.finished is not None and store.finished[0] is TaskStatus.STOPPED
    assert store.finished[1].startswith("gave up after 3 s:"), store.finished
    assert outcome and outcome[0] is not None and outcome[0].status is TaskStatus.STOPPED
    assert len(channels) == 1 and channels[0].starts == 1, "one channel subscription for the whole task"
    assert channels[0].closes == 1


# -- unit level: a stand-in encoder ---------------------------------------------------------------


def test_backoff_grows_exponentially_within_equal_jitter_bounds() -> None:
    ceilings = [min(5.0, 0.5 * 2**attempt) for attempt in range(12)]
    assert ceilings[:5] == [0.5, 1.0, 2.0, 4.0, 5.0]
    for attempt, ceiling in enumerate(ceilings):
        lowest = reconnect_wait(attempt, 0.5, 5.0, uniform=lambda a, b: a)
        highest = reconnect_wait(attempt, 0.5, 5.0, uniform=lambda a, b: b)
        assert (lowest, highest) == (ceiling / 2, ceiling)
        waits = [reconnect_wait(attempt, 0.5, 5.0) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4, "jittered, not a fixed delay"
    assert reconnect_wait(10_000, 0.5, 5.0, uniform=lambda a, b: b) == 5.0


FAKE_TARGET = SinkTarget("rtmp://push.invalid/live/key", "flv", "rtmp://push.invalid/live/***", True)


class FakeEncoder:
    """A stand-in muxer: records the pts of the packets it is given (video: the clock's frame index;
    audio: samples) and on which thread; ``stall`` makes every video write block until set."""

    def __init__(self, stall: threading.Event | None = None) -> None:
        self.video: list[int] = []
        self.audio: list[int] = []
        self.threads: set[int] = set()
        self.stall = stall
        self.aborted = False
        self.interrupted = False
        self.closed = False

    def write(self, packet: EncodedPacket) -> int:
        self.threads.add(threading.get_ident())
        if packet.video:
            if self.stall is not None:
                self.stall.wait()
            self.video.append(packet.pts)
        else:
            self.audio.append(packet.pts)
        return len(packet.data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def interrupt(self) -> None:
        self.interrupted = True


class FlakyOpener:
    """A muxer factory whose first ``failures`` opens block ``block`` seconds, then fail."""

    def __init__(self, failures: int, block: float, stall: threading.Event | None = None) -> None:
        self.failures = failures
        self.block = block
        self.stall = stall
        self.calls: list[tuple[float, float]] = []  # (start, end), monotonic seconds
        self.threads: set[int] = set()
        self.encoders: list[FakeEncoder] = []

    def __call__(self, output: OutputTarget, templates: StreamTemplates) -> FakeEncoder:
        target = output.sink
        started = time.monotonic()
        self.threads.add(threading.get_ident())
        try:
            if len(self.calls) < self.failures:
                time.sleep(self.block)
                raise SinkError(
                    "connection refused: Connection refused", target.display, push_url_problem=False
                )
            encoder = FakeEncoder(self.stall if not self.encoders else None)
            self.encoders.append(encoder)
            return encoder
        finally:
            self.calls.append((started, time.monotonic()))


async def loop_lateness(stop: asyncio.Event, lateness: list[float]) -> None:
    """Sleep 10 ms at a time and record how late the event loop woke up (seconds)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        lateness.append(loop.time() - due)


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(30)
def test_blocking_opens_run_off_the_loop_with_backoff_and_the_push_resumes_at_the_clock() -> None:
    opener = FlakyOpener(failures=3, block=1.0)
    source = one_user()
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(
        spec,
        source,
        FAKE_TARGET,
        realtime=True,
        retry_initial=0.2,
        retry_max=0.4,
        give_up_after=None,
        muxer_factory=opener,
    )
    lateness: list[float] = []
    states = []

    async def scenario() -> int:
        loop_thread = threading.get_ident()
        stop = asyncio.Event()
        ticker = asyncio.create_task(loop_lateness(stop, lateness))
        mix = asyncio.create_task(pipeline.run())
        await asyncio.sleep(1.5)
        states.append((pipeline.push_status.connected, pipeline.push_status.failing_since is not None))
        while not pipeline.push_status.connected:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        pipeline.stop()
        await mix
        stop.set()
        await ticker
        return loop_thread

    loop_thread = asyncio.run(scenario())
    assert states == [(False, True)], "failing while the first opens block"
    assert len(opener.calls) == 4 and pipeline.push_status.reconnects == 1
    # Each open blocked 1 s, in a thread: the loop's 10 ms sleeps stayed on time meanwhile.
    assert loop_thread not in opener.threads
    assert max(lateness) < 0.15, max(lateness)
    # Backoff between attempts, equal jitter: [c/2, c] with c = 0.2, 0.4, 0.4 (retry_max).
    gaps = [opener.calls[i + 1][0] - opener.calls[i][1] for i in range(3)]
    for gap, ceiling in zip(gaps, [0.2, 0.4, 0.4], strict=True):
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 0.1, (gaps, ceiling)
    # The push resumed at the clock's current tick: nothing before was queued, nothing went backwards.
    encoder = opener.encoders[0]
    assert encoder.video and encoder.audio and loop_thread not in encoder.threads
    first = encoder.video[0]
    connected_after = opener.calls[-1][1] - opener.calls[0][1]  # the clock starts when the first open fails
    assert abs(first - connected_after * FPS) <= 3, (first, connected_after)
    assert encoder.video == list(range(first, first + len(encoder.video)))
    assert encoder.audio[0] > 0 and encoder.audio[0] % BLOCK_SAMPLES == 0
    assert all(b - a == BLOCK_SAMPLES for a, b in itertools.pairwise(encoder.audio))
    stats = pipeline.stats
    assert (
        stats.dropped_video_frames >= first
        and stats.dropped_audio_blocks >= encoder.audio[0] // BLOCK_SAMPLES
    )
    assert encoder.closed and source.starts == 1 and source.closes == 1


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(30)
def test_a_write_that_blocks_counts_as_a_failure_and_is_abandoned() -> None:
    stall = threading.Event()
    opener = FlakyOpener(failures=0, block=0.0, stall=stall)
    pipeline = Pipeline(
        build_task_spec(layout_ids=[1], media_encode_id=1),
        one_user(),
        FAKE_TARGET,
        realtime=True,
        retry_initial=0.1,
        retry_max=0.2,
        give_up_after=None,
        write_timeout=0.5,
        muxer_factory=opener,
    )
    lateness: list[float] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        ticker = asyncio.create_task(loop_lateness(stop, lateness))
        mix = asyncio.create_task(pipeline.run())
        while pipeline.push_status.reconnects == 0:
            assert not mix.done()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        pipeline.stop()
        await asyncio.wait_for(mix, 5)  # never waits for the blocked thread
        stop.set()
        await ticker

    try:
        asyncio.run(scenario())
    finally:
        stall.set()  # let the abandoned thread finish
    stuck, fresh = opener.encoders
    assert stuck.aborted or not stuck.video, "the blocked encoder is aborted once its write returns"
    assert fresh.video and fresh.closed
    assert (
        pipeline.push_status.last_error is not None
        and "write timed out after 0.5 s" in pipeline.push_status.last_error
    )
    assert max(lateness) < 0.15, max(lateness)


def test_an_encoder_started_mid_clock_begins_with_an_idr_at_its_clock_pts(tmp_path: Path) -> None:
    """What a reconnected push sends: FLV accepts a first pts that is not 0 and keeps it as is."""
    out = tmp_path / "resumed.flv"
    settings = EncoderSettings(640, 360, FPS, 800_000, 64_000)
    encoder = PacketEncoder(settings)
    muxer = ContainerMuxer(legacy_output(sink_target(str(out))), encoder.templates)
    first = 47  # not a GOP multiple (30)
    encoded: list[EncodedPacket] = []
    for index in range(first, first + 40):
        frame = av.VideoFrame.from_ndarray(np.full((360, 640, 3), 128, np.uint8), format="rgb24")
        encoded += encoder.encode_video(frame.reformat(format="yuv420p"), index)
    for block in range(first * 3, first * 3 + 100):
        samples = np.zeros((2, BLOCK_SAMPLES), np.float32)
        encoded += encoder.encode_audio(AudioMixer.make_frame(samples, block * BLOCK_SAMPLES))
    for written in encoded + encoder.flush():
        muxer.write(written)
    muxer.close()
    # (pts seconds, keyframe flag, payload) of each packet, read while the container is open.
    video: list[tuple[float, bool, bytes]] = []
    audio: list[float] = []
    with av.open(str(out)) as container:
        for packet in container.demux():
            if packet.pts is None:
                continue
            seconds = float(packet.pts * packet.time_base)
            if packet.stream.type == "video":
                video.append((seconds, packet.is_keyframe, bytes(packet)))
            else:
                audio.append(seconds)
    assert abs(video[0][0] - first / FPS) < 0.002
    keyframes = [round(seconds * FPS) for seconds, keyframe, _ in video if keyframe]
    assert keyframes == [first, 60], "the first frame, then every GOP multiple of the clock"
    # An IDR (NAL type 5) in the first access unit (AVCC: 4-byte lengths), not just an I slice.
    data, nal_types, offset = video[0][2], [], 0
    while offset + 4 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        nal_types.append(data[offset + 4] & 0x1F)
        offset += 4 + size
    assert 5 in nal_types, nal_types
    # AAC starts at its block's clock time too (less the encoder's 1024-sample priming).
    audio_start = audio[0]
    assert abs(audio_start - (first * 3 * BLOCK_SAMPLES - 1024) / 48000) < 0.002, audio_start
