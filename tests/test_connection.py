"""rtc_mpu.mixer.output.push.Connection through rtc_mpu.mixer.output.outputs.Output on its own: one
output's muxer, job thread, reconnects and counters, driven with encoded packets, without a server or a
pipeline.

A stand-in muxer factory (the fakes live here only) scripts what each connection does: fail its open,
fail a write, or block. ``tests/test_outputs.py`` covers the fan-out rules between outputs, and
``tests/test_sink_reconnect.py`` the same machinery through the pipeline against a real nginx-rtmp.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, AudioMixer
from rtc_mpu.mixer.output.encoder import EncodedPacket, EncoderSettings, PacketEncoder, StreamTemplates
from rtc_mpu.mixer.output.muxers import OutputTarget, file_output, rtmp_output
from rtc_mpu.mixer.output.outputs import Output, OutputState
from rtc_mpu.mixer.output.sinks import SinkError

FPS = 15
SETTINGS = EncoderSettings(320, 180, FPS, 400_000, 64_000)
TARGET = rtmp_output("rtmp://push.invalid/live/key")
PICTURE = av.VideoFrame.from_ndarray(np.full((180, 320, 3), 90, np.uint8), format="rgb24").reformat(
    format="yuv420p"
)


def video(index: int, keyframe: bool = False) -> EncodedPacket:
    """The packet of clock frame ``index``."""
    return EncodedPacket(True, b"v" * 100, index, index, 1, Fraction(1, FPS), keyframe)


def audio(block: int) -> EncodedPacket:
    """The packet of audio block ``block`` (pts: the clock's sample index)."""
    return EncodedPacket(
        False, b"a" * 10, block * BLOCK_SAMPLES, None, BLOCK_SAMPLES, Fraction(1, 48000), True
    )


def audio_block(index: int) -> av.AudioFrame:
    return AudioMixer.make_frame(np.zeros((2, BLOCK_SAMPLES), np.float32), index * BLOCK_SAMPLES)


@dataclass
class FakeMuxer:
    """Records its calls in order (``("video", pts)``, ``("audio", pts)``, ``("close", None)``) and the
    threads they ran on. ``fail_at``: the write of that video pts fails, and every write after it
    (a dead connection); ``stall``: every video write blocks until it is set."""

    fail_at: int | None = None
    stall: threading.Event | None = None
    calls: list[tuple[str, int | None]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    aborted: bool = False
    interrupted: bool = False
    broken: bool = False

    def write(self, packet: EncodedPacket) -> int:
        if packet.video and self.stall is not None:
            self.stall.wait()
        self.threads.add(threading.get_ident())
        self.broken = self.broken or (packet.video and packet.pts == self.fail_at)
        if self.broken:
            raise SinkError("write failed: Broken pipe", TARGET.display, push_url_problem=False)
        self.calls.append(("video" if packet.video else "audio", packet.pts))
        return len(packet.data)

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.aborted = True

    def interrupt(self) -> None:
        self.interrupted = True


class Opener:
    """A muxer factory: each open takes the next item, a muxer to return or an error to raise (the
    last item is reused)."""

    def __init__(self, *script: FakeMuxer | SinkError) -> None:
        self.script = list(script)
        self.opens = 0
        self.threads: set[int] = set()

    def __call__(self, target: OutputTarget, templates: StreamTemplates) -> FakeMuxer:
        self.threads.add(threading.get_ident())
        item = self.script[min(self.opens, len(self.script) - 1)]
        self.opens += 1
        if isinstance(item, SinkError):
            raise item
        return item


def refused() -> SinkError:
    return SinkError("connection refused: Connection refused", TARGET.display, push_url_problem=False)


def output(opener: Opener, wanted: list[int] | None = None, **kw: object) -> Output:
    """An output to TARGET opened by ``opener``; ``wanted`` counts the keyframes it asks for."""
    out = Output(
        "o",
        SETTINGS,
        TARGET,
        on_keyframe_wanted=(lambda: wanted.append(1)) if wanted is not None else (lambda: None),
        muxer_factory=opener,
        **kw,  # type: ignore[arg-type]
    )
    out.templates = StreamTemplates.__new__(StreamTemplates)
    return out


def live(
    opener: Opener,
    wanted: list[int] | None = None,
    *,
    give_up_after: float | None = None,
    write_timeout: float = 5.0,
    max_backlog: float | None = None,
) -> Output:
    """A reconnecting live push with short reconnect waits (10 to 40 ms)."""
    return output(
        opener,
        wanted,
        realtime=True,
        retry_initial=0.02,
        retry_max=0.04,
        give_up_after=give_up_after,
        write_timeout=write_timeout,
        max_backlog=max_backlog,
    )


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.timeout(10)
def test_a_write_error_drops_and_counts_packets_until_it_reconnects() -> None:
    broken, fresh = FakeMuxer(fail_at=2), FakeMuxer()
    opener = Opener(broken, fresh)
    wanted: list[int] = []
    push = live(opener, wanted)

    async def scenario() -> int:
        await push.open()
        assert push.status.connected and push.status.last_error is None
        for index in range(4):
            assert push.submit(video(index, keyframe=index == 0))
        await push.collect(0)  # frame 2's write fails: the connection is aborted, reconnecting starts
        status = push.status
        assert not status.connected and status.failing_since is not None
        assert status.state is OutputState.RECONNECTING
        assert status.last_error is not None and "write failed" in status.last_error
        assert status.push_url_problem is False and status.reconnects == 0
        # Disconnected: packets are dropped (and counted), not queued.
        assert not push.submit(video(4)) and not push.submit(audio(0))
        assert (status.dropped_video_frames, status.dropped_audio_blocks) == (1, 1)
        await until(lambda: push.status.connected)
        assert status.reconnects == 1 and status.failing_since is None
        assert status.state is OutputState.CONNECTED
        assert push.submit(video(5, keyframe=True)) and push.submit(audio(1))
        await push.drain()
        await push.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert opener.opens == 2 and loop_thread not in opener.threads
    assert broken.calls == [("video", 0), ("video", 1)] and broken.aborted
    assert fresh.calls == [("video", 5), ("audio", BLOCK_SAMPLES), ("close", None)] and not fresh.aborted
    assert loop_thread not in broken.threads | fresh.threads, "nothing ran on the loop"
    assert push.status.dropped_video_frames == 1 and push.status.dropped_audio_blocks == 1
    assert len(wanted) == 2, "each connection asks for a keyframe"


@pytest.mark.timeout(10)
def test_a_failed_first_open_reconnects_in_the_background_and_counts_what_it_dropped() -> None:
    muxer = FakeMuxer()
    opener = Opener(refused(), refused(), muxer)
    push = live(opener)

    async def scenario() -> None:
        await push.open()  # does not raise: it reconnects
        assert not push.status.connected and push.status.failing_since is not None
        dropped = 0
        while not push.status.connected:
            dropped += not push.submit(video(dropped, keyframe=True))
            await asyncio.sleep(0.005)
        assert push.status.dropped_video_frames == dropped > 0
        assert push.status.reconnects == 1 and push.status.attempts == 1  # one reconnect attempt failed
        assert push.submit(video(dropped, keyframe=True))
        await push.drain()
        await push.close()

    asyncio.run(scenario())
    assert opener.opens == 3
    assert muxer.calls[0][0] == "video" and muxer.calls[-1] == ("close", None)


@pytest.mark.timeout(10)
def test_drain_writes_everything_submitted_then_close_flushes_the_muxer_on_its_thread() -> None:
    muxer = FakeMuxer()
    push = live(Opener(muxer))

    async def scenario() -> int:
        await push.open()
        for index in range(3):
            assert push.submit(video(index, keyframe=index == 0))
            assert push.submit(audio(index))
        await push.drain()
        assert len(muxer.calls) == 6, "drain waited for every job"
        await push.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert muxer.calls[-1] == ("close", None) and muxer.calls.count(("close", None)) == 1
    assert [c for c in muxer.calls if c[0] == "video"] == [("video", 0), ("video", 1), ("video", 2)]
    assert not muxer.aborted and loop_thread not in muxer.threads
    assert push.status.state is OutputState.ENDED


@pytest.mark.timeout(30)
def test_drain_and_close_leave_a_complete_file(tmp_path: Path) -> None:
    """With the real encoder and muxer: every submitted frame reaches the file, the trailer is written."""
    out = tmp_path / "out.flv"
    encoder = PacketEncoder(SETTINGS)
    push = Output("rec", SETTINGS, file_output(str(out)), realtime=False)
    push.templates = encoder.templates
    frames = 20

    async def scenario() -> None:
        await push.open()
        for index in range(frames):
            packets = encoder.encode_video(PICTURE, index)
            for block in range(index * 3, index * 3 + 3):  # 3 blocks of 1024 samples per 1/15 s
                packets += encoder.encode_audio(audio_block(block))
            for packet in packets:
                assert push.submit(packet)
            await push.collect(8)
        for packet in encoder.flush():
            assert push.submit(packet)
        await push.drain()
        await push.close()

    asyncio.run(scenario())
    with av.open(str(out)) as container:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.pts is not None]
    assert len(pts) == frames
    assert not push.reconnecting and push.status.dropped_video_frames == 0
    assert [f.path for f in push.status.files] == [str(out)]


@pytest.mark.timeout(10)
def test_without_reconnecting_a_write_error_is_raised() -> None:
    muxer = FakeMuxer(fail_at=0)
    push = output(Opener(muxer), realtime=True, give_up_after=0)
    assert not push.reconnecting

    async def scenario() -> None:
        await push.open()
        assert push.submit(video(0, keyframe=True))
        with pytest.raises(SinkError, match="write failed"):
            await push.collect(0)
        await push.close()  # nothing left to close: does not raise again

    asyncio.run(scenario())
    assert muxer.aborted and ("close", None) not in muxer.calls
    assert push.status.last_error is not None and not push.status.connected
    assert push.status.state is OutputState.FAILED


@pytest.mark.timeout(10)
def test_video_is_dropped_when_more_than_max_backlog_seconds_wait() -> None:
    """Output's rule: lag drops video only; audio is queued while video lags, but once a video packet
    was dropped the output waits for the next keyframe (asked for), audio included."""
    stall = threading.Event()
    muxer = FakeMuxer(stall=stall)
    wanted: list[int] = []
    push = live(Opener(muxer), wanted, max_backlog=0.3)  # 0.3 s at 15 fps: 4.5 frames

    async def scenario() -> list[bool]:
        await push.open()
        taken = [push.submit(video(index, keyframe=index == 0)) for index in range(5)]
        assert push.submit(audio(0)), "audio is never dropped for lag"
        taken += [push.submit(video(index)) for index in range(5, 8)]
        assert not push.submit(audio(1)), "after a dropped frame, audio waits for the keyframe too"
        stall.set()
        await push.collect(0)
        assert not push.submit(video(8)), "video waits for the next keyframe"
        assert push.submit(video(9, keyframe=True)) and push.submit(audio(2))
        await push.drain()
        await push.close()
        return taken

    try:
        taken = asyncio.run(scenario())
    finally:
        stall.set()
    assert taken == [True] * 5 + [False] * 3
    assert push.status.dropped_video_frames == 4 and push.status.dropped_audio_blocks == 1
    assert push.status.connected
    assert len(wanted) == 2, "one keyframe asked for on connecting, one after the lag"
    assert [i for kind, i in muxer.calls if kind == "video"] == [0, 1, 2, 3, 4, 9]
    assert [i for kind, i in muxer.calls if kind == "audio"] == [0, 2 * BLOCK_SAMPLES]


@pytest.mark.timeout(10)
def test_check_catches_a_blocked_write_and_gives_up_after_give_up_after() -> None:
    stall = threading.Event()
    opener = Opener(FakeMuxer(stall=stall), refused())
    push = live(opener, write_timeout=0.1, give_up_after=0.3)

    async def scenario() -> float:
        await push.open()
        assert push.submit(video(0, keyframe=True))
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
    assert push.status.state is OutputState.FAILED


def test_retry_and_timeout_times_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Output("o", SETTINGS, TARGET, retry_initial=0.0)
    with pytest.raises(ValueError, match="must be positive"):
        Output("o", SETTINGS, TARGET, write_timeout=-1.0)
    with pytest.raises(ValueError, match="must be positive"):
        Output("o", SETTINGS, TARGET, give_up_after=-1.0)
