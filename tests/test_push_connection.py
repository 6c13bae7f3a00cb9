"""rtc_mpu.mixer.output.push.PushConnection on its own: one output's encoder, job thread, reconnects
and counters, driven without a server or a pipeline.

A stand-in encoder factory (the fakes live here only) scripts what each connection does: fail its
open, fail a write, or block. ``tests/test_sink_reconnect.py`` covers the same machinery through the
pipeline against a real nginx-rtmp.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, AudioMixer
from rtc_mpu.mixer.output.encoder import EncoderSettings
from rtc_mpu.mixer.output.push import PushConnection
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget, sink_target

FPS = 15
SETTINGS = EncoderSettings(320, 180, FPS, 400_000, 64_000)
TARGET = SinkTarget("rtmp://push.invalid/live/key", "flv", "rtmp://push.invalid/live/***", True)
PICTURE = av.VideoFrame.from_ndarray(np.full((180, 320, 3), 90, np.uint8), format="rgb24").reformat(
    format="yuv420p"
)


def audio_block(index: int) -> av.AudioFrame:
    return AudioMixer.make_frame(np.zeros((2, BLOCK_SAMPLES), np.float32), index * BLOCK_SAMPLES)


@dataclass
class FakeEncoder:
    """Records its calls in order (``("video", index)``, ``("audio", pts)``, ``("close", None)``) and the
    threads they ran on. ``fail_at``: the write of that video index fails, and every write after it
    (a dead connection); ``stall``: every video write blocks until it is set."""

    fail_at: int | None = None
    stall: threading.Event | None = None
    calls: list[tuple[str, int | None]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    aborted: bool = False
    broken: bool = False

    def _write(self) -> None:
        self.threads.add(threading.get_ident())
        if self.broken:
            raise SinkError("write failed: Broken pipe", TARGET.display, push_url_problem=False)

    def encode_video(self, frame: av.VideoFrame, index: int, sei: bytes | None = None) -> None:
        if self.stall is not None:
            self.stall.wait()
        self.broken = self.broken or index == self.fail_at
        self._write()
        self.calls.append(("video", index))

    def encode_audio(self, frame: av.AudioFrame) -> None:
        self._write()
        self.calls.append(("audio", frame.pts))

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.aborted = True


class Opener:
    """An encoder factory: each open takes the next item, an encoder to return or an error to raise
    (the last item is reused)."""

    def __init__(self, *script: FakeEncoder | SinkError) -> None:
        self.script = list(script)
        self.opens = 0
        self.threads: set[int] = set()

    def __call__(self, settings: EncoderSettings, target: SinkTarget) -> FakeEncoder:
        self.threads.add(threading.get_ident())
        item = self.script[min(self.opens, len(self.script) - 1)]
        self.opens += 1
        if isinstance(item, SinkError):
            raise item
        return item


def refused() -> SinkError:
    return SinkError("connection refused: Connection refused", TARGET.display, push_url_problem=False)


def live(
    opener: Opener,
    *,
    give_up_after: float | None = None,
    write_timeout: float = 5.0,
    max_backlog: float | None = None,
) -> PushConnection:
    """A reconnecting live push with short reconnect waits (10 to 40 ms)."""
    return PushConnection(
        SETTINGS,
        TARGET,
        realtime=True,
        retry_initial=0.02,
        retry_max=0.04,
        give_up_after=give_up_after,
        write_timeout=write_timeout,
        max_backlog=max_backlog,
        encoder_factory=opener,
    )


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.timeout(10)
def test_a_write_error_drops_and_counts_frames_until_it_reconnects() -> None:
    broken, fresh = FakeEncoder(fail_at=2), FakeEncoder()
    opener = Opener(broken, fresh)
    push = live(opener)
    composed_on: set[int] = set()

    def picture() -> av.VideoFrame:
        composed_on.add(threading.get_ident())
        return PICTURE

    async def scenario() -> int:
        await push.open()
        assert push.status.connected and push.status.last_error is None
        for index in range(4):
            assert push.submit_video(index, picture)
        await push.collect(0)  # frame 2's write fails: the connection is aborted, reconnecting starts
        status = push.status
        assert not status.connected and status.failing_since is not None
        assert status.last_error is not None and "write failed" in status.last_error
        assert status.push_url_problem is False and status.reconnects == 0
        # Disconnected: frames are dropped (and counted), not queued.
        assert not push.submit_video(4, picture) and not push.submit_audio(audio_block(0))
        assert (status.dropped_video_frames, status.dropped_audio_blocks) == (1, 1)
        await until(lambda: push.status.connected)
        assert status.reconnects == 1 and status.failing_since is None
        assert push.submit_video(5, picture) and push.submit_audio(audio_block(1))
        await push.drain()
        await push.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert opener.opens == 2 and loop_thread not in opener.threads
    assert broken.calls == [("video", 0), ("video", 1)] and broken.aborted
    assert fresh.calls == [("video", 5), ("audio", BLOCK_SAMPLES), ("close", None)] and not fresh.aborted
    assert loop_thread not in composed_on | broken.threads | fresh.threads, "nothing ran on the loop"
    assert push.status.dropped_video_frames == 1 and push.status.dropped_audio_blocks == 1


@pytest.mark.timeout(10)
def test_a_failed_first_open_reconnects_in_the_background_and_counts_what_it_dropped() -> None:
    encoder = FakeEncoder()
    opener = Opener(refused(), refused(), encoder)
    push = live(opener)

    async def scenario() -> None:
        await push.open()  # does not raise: it reconnects
        assert not push.status.connected and push.status.failing_since is not None
        dropped = 0
        while not push.status.connected:
            dropped += not push.submit_video(dropped, lambda: PICTURE)
            await asyncio.sleep(0.005)
        assert push.status.dropped_video_frames == dropped > 0
        assert push.status.reconnects == 1 and push.status.attempts == 1  # one reconnect attempt failed
        assert push.submit_video(dropped, lambda: PICTURE)
        await push.drain()
        await push.close()

    asyncio.run(scenario())
    assert opener.opens == 3
    assert encoder.calls[0][0] == "video" and encoder.calls[-1] == ("close", None)


@pytest.mark.timeout(10)
def test_drain_writes_everything_submitted_then_close_flushes_the_encoder_on_its_thread() -> None:
    encoder = FakeEncoder()
    push = live(Opener(encoder))

    async def scenario() -> int:
        await push.open()
        for index in range(3):
            assert push.submit_video(index, lambda: PICTURE)
            assert push.submit_audio(audio_block(index))
        await push.drain()
        assert len(encoder.calls) == 6, "drain waited for every job"
        await push.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert encoder.calls[-1] == ("close", None) and encoder.calls.count(("close", None)) == 1
    assert [c for c in encoder.calls if c[0] == "video"] == [("video", 0), ("video", 1), ("video", 2)]
    assert not encoder.aborted and loop_thread not in encoder.threads


@pytest.mark.timeout(30)
def test_drain_and_close_leave_a_complete_file(tmp_path: Path) -> None:
    """With the real encoder: every submitted frame reaches the file, the trailer is written."""
    out = tmp_path / "out.flv"
    push = PushConnection(SETTINGS, sink_target(str(out)), realtime=False)
    frames = 20

    async def scenario() -> None:
        await push.open()
        for index in range(frames):
            assert push.submit_video(index, lambda: PICTURE)
            for block in range(index * 3, index * 3 + 3):  # 3 blocks of 1024 samples per 1/15 s
                assert push.submit_audio(audio_block(block))
            await push.collect(8)
        await push.drain()
        await push.close()

    asyncio.run(scenario())
    with av.open(str(out)) as container:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.pts is not None]
    assert len(pts) == frames
    assert not push.reconnecting and push.status.dropped_video_frames == 0


@pytest.mark.timeout(10)
def test_without_reconnecting_a_write_error_is_raised() -> None:
    encoder = FakeEncoder(fail_at=0)
    push = PushConnection(SETTINGS, TARGET, realtime=True, give_up_after=0, encoder_factory=Opener(encoder))
    assert not push.reconnecting

    async def scenario() -> None:
        await push.open()
        assert push.submit_video(0, lambda: PICTURE)
        with pytest.raises(SinkError, match="write failed"):
            await push.collect(0)
        await push.close()  # nothing left to close: does not raise again

    asyncio.run(scenario())
    assert encoder.aborted and ("close", None) not in encoder.calls
    assert push.status.last_error is not None and not push.status.connected


@pytest.mark.timeout(10)
def test_video_is_dropped_when_more_than_max_backlog_seconds_wait() -> None:
    stall = threading.Event()
    encoder = FakeEncoder(stall=stall)
    push = live(Opener(encoder), max_backlog=0.3)  # 0.3 s at 15 fps: 4.5 frames

    async def scenario() -> list[bool]:
        await push.open()
        taken = [push.submit_video(index, lambda: PICTURE) for index in range(8)]
        assert push.submit_audio(audio_block(0)), "audio is never dropped for lag"
        stall.set()
        await push.drain()
        await push.close()
        return taken

    try:
        taken = asyncio.run(scenario())
    finally:
        stall.set()
    assert taken == [True] * 5 + [False] * 3
    assert push.status.dropped_video_frames == 3 and push.status.connected
    assert [i for kind, i in encoder.calls if kind == "video"] == [0, 1, 2, 3, 4]


@pytest.mark.timeout(10)
def test_check_catches_a_blocked_write_and_gives_up_after_give_up_after() -> None:
    stall = threading.Event()
    opener = Opener(FakeEncoder(stall=stall), refused())
    push = live(opener, write_timeout=0.1, give_up_after=0.3)

    async def scenario() -> float:
        await push.open()
        assert push.submit_video(0, lambda: PICTURE)
        await asyncio.sleep(0.15)
        push.check()  # the write blocked past write_timeout: a failure, reconnecting starts
        assert not push.status.connected
        assert push.status.last_error is not None and "write timed out after 0.1 s" in push.status.last_error
        failed = time.monotonic()
        with pytest.raises(SinkError, match="connection refused"):
            while True:
                push.check()
                await asyncio.sleep(0.01)
        gave_up = time.monotonic() - failed
        await push.close()  # never waits for the blocked thread
        return gave_up

    try:
        gave_up = asyncio.run(scenario())
    finally:
        stall.set()
    assert 0.25 <= gave_up < 1.0, gave_up
    assert push.status.attempts >= 2 and push.status.reconnects == 0


def test_retry_and_timeout_times_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        PushConnection(SETTINGS, TARGET, retry_initial=0.0)
    with pytest.raises(ValueError, match="must be positive"):
        PushConnection(SETTINGS, TARGET, write_timeout=-1.0)
    with pytest.raises(ValueError, match="must be positive"):
        PushConnection(SETTINGS, TARGET, give_up_after=-1.0)
