"""Issue 13, one encode and many destinations: the fan-out rules with stand-in muxers (no server).

A stalled output never blocks another; an output joins at a keyframe and asks for one; what an output
cannot take is dropped and counted; outputs are added and removed while the pipeline runs; a recording
rolls over at keyframes without losing a packet; a write error fails only its own output.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, AudioMixer
from rtc_mpu.mixer.output.encoder import EncodedPacket, EncoderSettings, PacketEncoder, StreamTemplates
from rtc_mpu.mixer.output.muxers import (
    ContainerMuxer,
    FinishedFile,
    Muxer,
    OutputTarget,
    RollingFileMuxer,
    file_output,
    hls_output,
    rtmp_output,
)
from rtc_mpu.mixer.output.outputs import Output, OutputState
from rtc_mpu.mixer.output.sinks import SinkError
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.spec.task import build_task_spec

FPS = 15
SETTINGS = EncoderSettings(160, 90, FPS, 200_000, 64_000)
RTMP = rtmp_output("rtmp://push.invalid/live/key")


def video(pts: int, keyframe: bool = False) -> EncodedPacket:
    return EncodedPacket(True, b"v" * 100, pts, pts, 1, Fraction(1, FPS), keyframe)


def audio(block: int) -> EncodedPacket:
    return EncodedPacket(
        False, b"a" * 10, block * BLOCK_SAMPLES, None, BLOCK_SAMPLES, Fraction(1, 48000), True
    )


class FakeMuxer:
    """Records the packets written; ``stall``: every write blocks until set; ``fail``: every write
    raises (an OSError of the disk, as a SinkError)."""

    def __init__(self, stall: threading.Event | None = None, fail: bool = False) -> None:
        self.packets: list[EncodedPacket] = []
        self.stall = stall
        self.fail = fail
        self.closed = self.aborted = False
        self.interrupted = False

    def write(self, packet: EncodedPacket) -> int:
        if self.stall is not None:
            self.stall.wait()
        if self.fail:
            raise SinkError("write failed: No space left on device", "rec.mp4", push_url_problem=False)
        self.packets.append(packet)
        return len(packet.data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def interrupt(self) -> None:
        self.interrupted = True


def factory(muxer: FakeMuxer) -> Callable[[OutputTarget, StreamTemplates], Muxer]:
    return lambda target, templates: muxer


def output(
    muxer: FakeMuxer, wanted: list[int] | None = None, target: OutputTarget = RTMP, **kw: object
) -> Output:
    out = Output(
        "o",
        SETTINGS,
        target,
        on_keyframe_wanted=(lambda: wanted.append(1)) if wanted is not None else (lambda: None),
        muxer_factory=factory(muxer),
        **kw,  # type: ignore[arg-type]
    )
    out.templates = StreamTemplates.__new__(StreamTemplates)
    return out


@pytest.mark.timeout(10)
def test_a_stalled_output_does_not_block_another_and_counts_its_drops() -> None:
    stall = threading.Event()
    stuck, healthy = FakeMuxer(stall=stall), FakeMuxer()

    async def scenario() -> tuple[Output, Output]:
        a = output(stuck, max_backlog=0.5, write_timeout=30)
        b = output(healthy, max_backlog=0.5, write_timeout=30)
        await a.open()
        await b.open()
        for i in range(60):
            for out in (a, b):
                out.submit(video(i, keyframe=i % 30 == 0))
                out.submit(audio(3 * i))
            await asyncio.sleep(0.002)
            for out in (a, b):
                await out.collect(None)
        await b.drain()
        stall.set()
        await a.close()
        await b.close()
        return a, b

    try:
        a, b = asyncio.run(scenario())
    finally:
        stall.set()
    assert [p.pts for p in healthy.packets if p.video] == list(range(60))
    assert b.status.dropped_video_frames == 0 and b.status.bytes_written == 60 * 100 + 60 * 10
    # The stalled one took 0.5 s of video (7.5 frames at 15 fps) and then dropped until a keyframe.
    assert a.status.dropped_video_frames >= 60 - 9
    assert a.status.state is OutputState.ENDED and b.status.state is OutputState.ENDED


def test_an_output_joins_at_a_keyframe_and_asks_for_one() -> None:
    muxer, wanted = FakeMuxer(), list[int]()

    async def scenario() -> Output:
        out = output(muxer, wanted)
        await out.open()
        assert wanted == [1], "connecting asks the encoder for an IDR"
        assert out.status.state is OutputState.CONNECTED
        assert not out.submit(video(5)) and not out.submit(audio(15))
        assert out.submit(video(6, keyframe=True)) and out.submit(audio(18)) and out.submit(video(7))
        await out.drain()
        await out.close()
        return out

    out = asyncio.run(scenario())
    assert [(p.video, p.pts) for p in muxer.packets] == [(True, 6), (False, 18 * BLOCK_SAMPLES), (True, 7)]
    assert (out.status.dropped_video_frames, out.status.dropped_audio_blocks) == (1, 1)


def test_a_disconnected_output_drops_and_counts() -> None:
    def refuse(target: OutputTarget, templates: StreamTemplates) -> Muxer:
        raise SinkError("connection refused: Connection refused", target.display, push_url_problem=False)

    async def scenario() -> Output:
        out = Output("o", SETTINGS, RTMP, give_up_after=None, retry_initial=5, muxer_factory=refuse)
        out.templates = StreamTemplates.__new__(StreamTemplates)
        await out.open()
        assert out.status.state is OutputState.RECONNECTING
        for i in range(10):
            out.submit(video(i, keyframe=i == 0))
            out.submit(audio(i))
        await out.close()
        return out

    out = asyncio.run(scenario())
    assert (out.status.dropped_video_frames, out.status.dropped_audio_blocks) == (10, 10)
    assert out.status.last_error is not None and "refused" in out.status.last_error


def test_a_write_error_fails_a_recording_with_its_reason() -> None:
    async def scenario() -> Output:
        out = output(FakeMuxer(fail=True), target=file_output("/tmp/never.mp4"))
        await out.open()
        out.submit(video(0, keyframe=True))
        with pytest.raises(SinkError, match="No space left"):
            await out.collect(0)
        return out

    out = asyncio.run(scenario())
    assert out.status.state is OutputState.FAILED
    assert out.status.last_error is not None and "No space left on device" in out.status.last_error


def encode(settings: EncoderSettings, seconds: float) -> tuple[PacketEncoder, list[EncodedPacket]]:
    """``seconds`` of grey video and silence through a real encoder, packets in clock order."""
    encoder = PacketEncoder(settings)
    packets: list[EncodedPacket] = []
    picture = av.VideoFrame.from_ndarray(
        np.full((settings.height, settings.width, 3), 100, np.uint8), "rgb24"
    )
    blocks = 0
    for index in range(round(seconds * settings.fps)):
        packets += encoder.encode_video(picture.reformat(format="yuv420p"), index)
        while (blocks + 1) * BLOCK_SAMPLES <= (index + 1) * 48000 / settings.fps:
            silence = np.zeros((2, BLOCK_SAMPLES), np.float32)
            packets += encoder.encode_audio(AudioMixer.make_frame(silence, blocks * BLOCK_SAMPLES))
            blocks += 1
    return encoder, packets + encoder.flush()


def test_rollover_cuts_at_keyframes_and_never_loses_a_packet(tmp_path: Path) -> None:
    encoder, packets = encode(SETTINGS, 7.0)  # GOP 2 s: keyframes at 0, 2, 4, 6 s
    finished: list[FinishedFile] = []
    target = file_output(str(tmp_path / "rec.mp4"), max_file_seconds=3.0)
    muxer = RollingFileMuxer(target, encoder.templates, finished.append)
    for packet in packets:
        muxer.write(packet)
    muxer.close()
    # Files cut at the first keyframe >= 3 s after their start: [0, 4), [4, 7).
    assert [round(f.start_seconds, 2) for f in finished][:2] == [0.0, 4.0]
    assert sum(f.packets for f in finished) == len(packets)
    decoded = 0
    for f in finished:
        assert Path(f.path).stat().st_size == f.size > 0
        with av.open(f.path) as container:
            first = next(container.demux(video=0))
            assert first.is_keyframe, f"{f.path} starts with a keyframe"
        with av.open(f.path) as container:
            decoded += sum(1 for _ in container.decode(video=0))
    assert decoded == 7 * FPS, "every frame is in exactly one file"
    assert abs(sum(f.duration for f in finished) - 7.0) < 0.2


@pytest.mark.parametrize("name", ["rec.flv", "rec.mkv", "rec.mp4", "live.m3u8"])
def test_each_container_takes_the_shared_packets(tmp_path: Path, name: str) -> None:
    encoder, packets = encode(SETTINGS, 4.5)
    path = str(tmp_path / name)
    target = hls_output(path, segment_seconds=2) if name.endswith(".m3u8") else file_output(path)
    muxer = ContainerMuxer(target, encoder.templates)
    written = sum(muxer.write(p) for p in packets)
    muxer.close()
    assert written == sum(len(p.data) for p in packets)
    with av.open(path) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == round(4.5 * FPS) if not name.endswith(".m3u8") else frames > 0


def test_a_recording_that_cannot_be_created_is_a_sink_error(tmp_path: Path) -> None:
    """(root ignores read-only directories: a path under a regular file cannot be created by anyone)"""
    encoder, _ = encode(SETTINGS, 0.5)
    (tmp_path / "file").write_text("")
    with pytest.raises(SinkError, match="cannot open output"):
        RollingFileMuxer(file_output(str(tmp_path / "file" / "rec.mp4")), encoder.templates)


@pytest.mark.timeout(60)
def test_outputs_are_added_and_removed_while_an_offline_render_runs(
    tmp_path: Path, clips: list[Path]
) -> None:
    main, extra, broken = FakeMuxer(), FakeMuxer(), FakeMuxer(fail=True)
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(
        spec,
        FileSource([str(clips[0])]),
        file_output(str(tmp_path / "main.flv")).sink,
        realtime=False,
        duration=4.0,
        muxer_factory=factory(main),
    )

    async def scenario() -> None:
        mix = asyncio.create_task(pipeline.run())
        while pipeline.stats.video_frames < 10:
            await asyncio.sleep(0)
        await pipeline.add_output("extra", RTMP, muxer_factory=factory(extra))
        await pipeline.add_output(
            "broken", file_output(str(tmp_path / "b.mp4")), muxer_factory=factory(broken)
        )
        while pipeline.stats.video_frames < 40:
            await asyncio.sleep(0)
        await pipeline.remove_output("extra")
        await mix

    asyncio.run(scenario())
    frames = [p.pts for p in main.packets if p.video]
    assert frames == list(range(60)), "the main output lost nothing while others came and went"
    extra_frames = [p for p in extra.packets if p.video]
    assert extra_frames and extra_frames[0].keyframe, "an added output starts at a keyframe"
    assert extra_frames[0].pts < 10 + 8 + 2, "the keyframe was forced at once, not a GOP later"
    assert [p.pts for p in extra_frames] == list(range(extra_frames[0].pts, extra_frames[-1].pts + 1))
    assert extra.closed and pipeline.outputs["extra"].status.state is OutputState.ENDED
    assert pipeline.outputs["broken"].status.state is OutputState.FAILED
    assert pipeline.outputs["main"].status.state is OutputState.ENDED
    # Forced keyframes: frame 0, the GOP (30), and the joins; the main output got them all.
    assert sum(1 for p in main.packets if p.video and p.keyframe) >= 3
