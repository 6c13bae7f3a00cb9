"""Several outputs per task (issue 13) end to end: real Redis, Janus and nginx-rtmp, the API and a Celery
worker as processes, a publisher over WebRTC; viewers decode every RTMP output, the recording and the
HLS the worker writes are read back, snapshots are read from the store.

Outputs are added to a running task through the task store (:meth:`TaskStore.add_output`, what the
REST endpoint calls), so this does not depend on the endpoint's shape.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from PIL import Image

from rtc_mpu.spec.outputs import RtmpOutput
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.store import TaskStore
from tests.service import Service, running_service, service_env
from tests.test_service_e2e import APP, Viewer, publish, wait_until


@dataclass
class OutputsStack:
    service: Service
    store: TaskStore
    recordings: Path


@pytest.fixture
def outputs_stack(
    redis_server: Redis, janus: Janus, nginx_rtmp: NginxRtmp, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OutputsStack]:
    db = {
        "test_outputs_recording_snapshots_hls_and_an_added_output": 8,
        "test_a_killed_worker_leaves_a_playable_recording": 9,
    }[request.node.name]
    url = f"{redis_server.url.rsplit('/', 1)[0]}/{db}"
    recordings = tmp_path / "recordings"
    env = service_env(
        url,
        janus.url,
        MPU_COOLDOWN="3",
        MPU_LEASE_SECONDS="3",
        MPU_RECORDINGS_DIR=str(recordings),
        MPU_HLS_DIR=str(nginx_rtmp.task_hls_dir),
    )
    store = TaskStore.from_url(url)
    try:
        with running_service(env, tmp_path) as service:
            yield OutputsStack(service, store, recordings)
    finally:
        store.close()


def decoded_video_frames(path: Path) -> int:
    """Video frames of a recording that decode (a file cut short: up to where it is readable)."""
    frames = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                frames += 1
        except av.error.FFmpegError:
            pass
    return frames


def start(service: Service, task_id: str, channel: str, outputs: list[dict[str, object]]) -> None:
    status, task = service.call(
        "POST",
        f"/v1/apps/{APP}/tasks",
        {"task_id": task_id, "channel_id": channel, "layout_ids": [1], "media_encode": 1, "outputs": outputs},
    )
    assert status == 201, task


def stop(service: Service, task_id: str) -> None:
    status, body = service.call("DELETE", f"/v1/apps/{APP}/tasks/{task_id}")
    assert status == 200, body
    service.wait_task(APP, task_id, lambda t: t["state"] == "ended", 20)


@pytest.mark.timeout(150)
def test_outputs_recording_snapshots_hls_and_an_added_output(
    outputs_stack: OutputsStack, janus: Janus, nginx_rtmp: NginxRtmp
) -> None:
    service, store = outputs_stack.service, outputs_stack.store
    publishers = publish(janus, "outs", 1, 90)
    try:
        time.sleep(1.0)
        start(
            service,
            "multi",
            "outs",
            [
                {"kind": "rtmp", "url": nginx_rtmp.rtmp_url("out-a")},
                {"kind": "rtmp", "url": nginx_rtmp.rtmp_url("out-b")},
                {"kind": "record", "format": "mp4"},
                {"kind": "hls", "segment_seconds": 2},
                {"kind": "snapshot", "interval_seconds": 1},
            ],
        )
        service.wait_task(APP, "multi", lambda t: t["status"] == 1, 30)
        viewers = [Viewer(nginx_rtmp, "out-a"), Viewer(nginx_rtmp, "out-b")]
        for viewer in viewers:
            viewer.start()
        wait_until(lambda: all(len(v.pictures) >= 10 for v in viewers), 30, "both RTMP outputs to play")

        wait_until(lambda: store.get_snapshot(APP, "multi") is not None, 20, "a snapshot in the store")
        snapshot = store.get_snapshot(APP, "multi")
        assert snapshot is not None
        image = Image.open(io.BytesIO(snapshot[0]))
        assert image.format == "JPEG" and image.size[0] > 0

        playlist_url = nginx_rtmp.task_hls_url(APP, "multi")

        def playlist_has_a_segment() -> bool:
            try:
                with urllib.request.urlopen(playlist_url, timeout=2) as response:
                    return b".ts" in response.read()
            except OSError:
                return False

        wait_until(playlist_has_a_segment, 20, "the HLS playlist served by nginx")
        with urllib.request.urlopen(playlist_url, timeout=2) as response:
            assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert "no-cache" in response.headers["Cache-Control"]
            segment = next(line for line in response.read().decode().splitlines() if line.endswith(".ts"))
        with urllib.request.urlopen(playlist_url.rsplit("/", 1)[0] + "/" + segment, timeout=2) as response:
            assert response.headers["Content-Type"] == "video/mp2t" and len(response.read()) > 1000

        # An output added to the running task plays within a generous bound (the target is 2 s).
        added_at = time.monotonic()
        record = store.add_output(APP, "multi", RtmpOutput("o0", nginx_rtmp.rtmp_url("out-c")))
        assert record.params.outputs[-1]["output_id"] == "o6"
        late = Viewer(nginx_rtmp, "out-c")
        late.start()
        wait_until(lambda: len(late.pictures) >= 1, 15, "the added output to play")
        print(f"added output: first picture {late.pictures[0][0] - added_at:.2f} s after the call")

        task = service.wait_task(
            APP,
            "multi",
            lambda t: len(t["stats"]["outputs"]) == 6 and t["stats"]["outputs"][-1]["state"] == "connected",
            10,
        )
        states = {o["output_id"]: (o["kind"], o["state"]) for o in task["stats"]["outputs"]}
        print(f"outputs: {states}")
        assert all(state == "connected" for _, state in states.values()), states
        assert all(o["bytes_written"] > 0 for o in task["stats"]["outputs"] if o["kind"] != "snapshot")

        stop(service, "multi")
        folder = outputs_stack.recordings / APP / "multi"
        files = sorted(folder.glob("*.mp4"))
        assert len(files) == 1, list(folder.iterdir())
        meta = json.loads((folder / (files[0].name + ".json")).read_text())
        assert meta["name"] == files[0].name and meta["size_bytes"] == files[0].stat().st_size
        assert meta["duration_seconds"] > 3 and meta["start_time"].endswith("Z")
        assert decoded_video_frames(files[0]) > 30
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)


@pytest.mark.timeout(150)
def test_a_killed_worker_leaves_a_playable_recording(
    outputs_stack: OutputsStack, janus: Janus, nginx_rtmp: NginxRtmp
) -> None:
    service = outputs_stack.service
    folder = outputs_stack.recordings / APP / "crash"
    publishers = publish(janus, "crash", 1, 90)
    try:
        time.sleep(1.0)
        start(
            service,
            "crash",
            "crash",
            [{"kind": "rtmp", "url": nginx_rtmp.rtmp_url("crash")}, {"kind": "record", "format": "mp4"}],
        )
        service.wait_task(APP, "crash", lambda t: t["status"] == 1, 30)
        time.sleep(5.0)  # a few 2 s fragments
        service.kill("worker")  # SIGKILL mid-recording: no trailer, no sidecar
        (cut,) = folder.glob("*.mp4")
        assert not (folder / (cut.name + ".json")).exists()
        frames = decoded_video_frames(cut)
        print(f"killed mid-recording: {frames} frames decode from {cut.stat().st_size} bytes")
        assert frames >= 30

        service.start_worker("worker2")
        service.wait_task(APP, "crash", lambda t: t["restarts"] >= 1 and t["status"] == 1, 40)
        time.sleep(3.0)
        stop(service, "crash")
        files = sorted(folder.glob("*.mp4"))
        assert len(files) == 2 and cut in files, files  # the resumed task started a new file
        for path in files:
            meta = json.loads((folder / (path.name + ".json")).read_text())
            assert meta["name"] == path.name and meta["duration_seconds"] > 0.5, meta
            assert decoded_video_frames(path) > 0
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)
