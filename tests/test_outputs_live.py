"""Issue 13 with real servers: one encode pushed to two nginx-rtmp servers, recorded to a fragmented MP4
and written as HLS; one server stops and comes back without a gap on the other; an output added
mid-run plays at once; a recording of a killed process decodes up to its last fragment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from rtc_mpu.mixer.output.muxers import file_output, hls_output, rtmp_output
from rtc_mpu.mixer.output.outputs import OutputState
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port
from tests.media import COLORS
from tests.test_sink_reconnect import Watched, one_user, stream_video_live, wait_for, watch


def arrivals(url: str, seconds: float, into: list[float]) -> None:
    """A viewer noting the wall-clock time each video frame is decoded, for ``seconds``."""
    end = time.monotonic() + seconds
    with av.open(url, options={"analyzeduration": "3000000"}, timeout=(10.0, 5.0)) as container:
        for packet in container.demux(video=0):
            for _ in packet.decode():
                into.append(time.monotonic())
            if time.monotonic() > end:
                return


@pytest.mark.timeout(60)
def test_two_pushes_a_recording_and_hls_from_one_encode(nginx_rtmp: NginxRtmp, tmp_path: Path) -> None:
    a = nginx_rtmp
    b = NginxRtmp(tmp_path / "nginx-b", rtmp_port=free_port(), http_port=free_port())
    b.start()
    pipeline = Pipeline(
        build_task_spec(layout_ids=[1], media_encode_id=1),
        one_user(),
        sink_target(a.rtmp_url("multi-a")),
        realtime=True,
        give_up_after=None,
    )
    record, playlist = tmp_path / "rec.mp4", tmp_path / "hls" / "live.m3u8"
    playlist.parent.mkdir()
    seen_a, seen_b = Watched(), Watched()
    frame_times: list[float] = []

    async def scenario() -> dict[str, float]:
        numbers: dict[str, float] = {}
        mix = asyncio.create_task(pipeline.run())
        await pipeline.add_output("b", rtmp_output(b.rtmp_url("multi-b")), retry_initial=0.2, retry_max=0.5)
        await pipeline.add_output("rec", file_output(str(record)))
        await pipeline.add_output("hls", hls_output(str(playlist), segment_seconds=1, list_size=4))
        await wait_for(
            "both pushes", lambda: stream_video_live(a, "multi-a") and stream_video_live(b, "multi-b"), 10
        )
        await asyncio.gather(
            asyncio.to_thread(watch, a.rtmp_url("multi-a"), 5, seen_a),
            asyncio.to_thread(watch, b.rtmp_url("multi-b"), 5, seen_b),
        )
        viewer = asyncio.create_task(asyncio.to_thread(arrivals, a.rtmp_url("multi-a"), 5.0, frame_times))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(b.stop)
        await asyncio.sleep(1.5)
        status_b = pipeline.outputs["b"].status
        numbers["b_state_down"] = status_b.state is OutputState.RECONNECTING
        await asyncio.to_thread(b.start)
        started = time.monotonic()
        await wait_for("b to come back", lambda: stream_video_live(b, "multi-b"), 10)
        numbers["b_back"] = time.monotonic() - started
        added = time.monotonic()
        await pipeline.add_output("c", rtmp_output(a.rtmp_url("multi-c")))
        await wait_for("the added output", lambda: stream_video_live(a, "multi-c"), 5)
        numbers["c_live"] = time.monotonic() - added
        await viewer
        pipeline.stop()
        await mix
        return numbers

    try:
        numbers = asyncio.run(scenario())
    finally:
        b.stop()
    for seen in (seen_a, seen_b):
        assert seen.colours, seen.error
        assert np.abs(np.array(seen.colours[-1]) - np.array(COLORS[0])).max() <= 12
    assert numbers["b_state_down"], "the stopped server's output shows reconnecting"
    assert pipeline.outputs["b"].status.reconnects >= 1
    gaps = np.diff(frame_times)
    print(f"largest gap on output a while b went down and back: {gaps.max():.3f} s; numbers {numbers}")
    assert len(frame_times) > 3 * 15 and gaps.max() < 0.5, "output a kept playing"
    assert numbers["c_live"] < 2.0
    statuses = {name: out.status for name, out in pipeline.outputs.items()}
    assert all(s.state is OutputState.ENDED for s in statuses.values()), statuses
    assert statuses["rec"].files and statuses["rec"].files[0].size > 0
    with av.open(str(record)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 5 * 15
    segments = [line for line in playlist.read_text().splitlines() if line.endswith(".ts")]
    assert segments
    with av.open(str(playlist.parent / segments[-1])) as segment:
        assert sum(1 for _ in segment.decode(video=0)) > 0


RECORDER = """
import asyncio, sys
from rtc_mpu.mixer.output.muxers import file_output
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.spec.task import build_task_spec

async def main():
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(spec, FileSource([sys.argv[1]], loop=True),
                        sink_target(sys.argv[2]), realtime=True, duration=60)
    await pipeline.add_output("rec", file_output(sys.argv[3]))
    await pipeline.run()

asyncio.run(main())
"""


@pytest.mark.integration  # a recording paced in real time (tiers: tests/conftest.py)
@pytest.mark.timeout(40)
def test_a_fragmented_mp4_of_a_killed_process_decodes_to_its_last_fragment(
    tmp_path: Path, clips: list[Path]
) -> None:
    record = tmp_path / "killed.mp4"
    process = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(clips[0]), str(tmp_path / "main.flv"), str(record)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not record.exists() or record.stat().st_size < 50_000):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.1)
    time.sleep(2.5)  # a few more keyframe fragments (GOP 2 s)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    with av.open(str(record)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 2 * 15, frames


@pytest.mark.timeout(60)
def test_an_output_whose_server_never_answers_stalls_nothing(nginx_rtmp: NginxRtmp) -> None:
    """An RTMP server that accepts TCP and never answers used to freeze the whole mix (PyAV held the
    GIL in the handshake, with no timeout): now that output times out and retries on its own while
    the other output plays on, and adding a working output does not stall it either."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    pipeline = Pipeline(
        build_task_spec(layout_ids=[1], media_encode_id=1),
        one_user(),
        sink_target(nginx_rtmp.rtmp_url("calm-a")),
        realtime=True,
        give_up_after=None,
    )
    frame_times: list[float] = []

    async def scenario() -> dict[str, object]:
        mix = asyncio.create_task(pipeline.run())
        await wait_for("the push", lambda: stream_video_live(nginx_rtmp, "calm-a"), 10)
        viewer = asyncio.create_task(
            asyncio.to_thread(arrivals, nginx_rtmp.rtmp_url("calm-a"), 6.0, frame_times)
        )
        await asyncio.sleep(1.0)
        await pipeline.add_output(
            "dead",
            rtmp_output(f"rtmp://127.0.0.1:{silent.getsockname()[1]}/live/key"),
            open_timeout=1.0,
            retry_initial=0.2,
            retry_max=0.5,
        )
        await asyncio.sleep(2.5)
        dead = pipeline.outputs["dead"].status
        seen: dict[str, object] = {"state": dead.state, "error": dead.last_error, "attempts": dead.attempts}
        await pipeline.add_output("b", rtmp_output(nginx_rtmp.rtmp_url("calm-b")))
        await wait_for("the added output", lambda: stream_video_live(nginx_rtmp, "calm-b"), 5)
        await viewer
        pipeline.stop()
        await asyncio.wait_for(mix, 20)
        return seen

    try:
        seen = asyncio.run(scenario())
    finally:
        silent.close()
    assert seen["state"] is OutputState.RECONNECTING, seen
    assert "timed out" in str(seen["error"]), seen
    gaps = np.diff(frame_times)
    print(f"largest gap on the working output (one never answers, one added): {gaps.max():.3f} s")
    assert len(frame_times) > 4 * 15 and gaps.max() < 0.5, "the working output kept playing"
