"""Several outputs per task (issue 13) end to end: real Redis, Janus and nginx-rtmp, the API and a Celery
worker as processes, a publisher over WebRTC; viewers decode every RTMP output, the recording and the
HLS the worker writes are read back, snapshots are read from the store.

Outputs are added to and removed from a running task over HTTP (``POST``/``DELETE
/v1/apps/{app_id}/tasks/{task_id}/outputs``), as an app backend does.
"""

from __future__ import annotations

import io
import itertools
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from PIL import Image

from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.store import TaskStore
from tests.service import Service, running_service, service_env
from tests.test_service_e2e import APP, Viewer, publish, stream_stats, wait_until


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
        "test_an_output_added_over_rest_plays_is_listed_and_is_removed": 10,
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
        status, added = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks/multi/outputs",
            {"kind": "rtmp", "url": nginx_rtmp.rtmp_url("out-c")},
        )
        assert status == 201 and added["output_id"] == "o6", added
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


def largest_gap(viewer: Viewer, start: float, end: float) -> float:
    """The longest time between two pictures ``viewer`` decoded from ``start`` to ``end`` (monotonic)."""
    times = [t for t, _ in viewer.pictures if start <= t <= end]
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


@pytest.mark.timeout(120)
def test_an_output_added_over_rest_plays_is_listed_and_is_removed(
    outputs_stack: OutputsStack, janus: Janus, nginx_rtmp: NginxRtmp
) -> None:
    """POST an RTMP output to a running task: 201 with the output, a viewer decodes it (target 2 s),
    GET lists it with its state and stats; DELETE: 204, nobody publishes it any more, its lease is
    released with a cooldown (a new task is refused, naming the output, then accepted)."""
    service, store = outputs_stack.service, outputs_stack.store
    cooldown = 3.0  # MPU_COOLDOWN of the fixture
    url = nginx_rtmp.rtmp_url("rest-added")
    key = stream_url_key(url)
    publishers = publish(janus, "rest", 1, 60)
    try:
        time.sleep(1.0)
        start(service, "rest", "rest", [{"kind": "rtmp", "url": nginx_rtmp.rtmp_url("rest-main")}])
        service.wait_task(APP, "rest", lambda t: t["status"] == 1, 30)
        main = Viewer(nginx_rtmp, "rest-main")
        main.start()
        wait_until(lambda: len(main.pictures) >= 10, 30, "the task's first output to play")

        # Add: 201 with the output, its URL redacted.
        late = Viewer(nginx_rtmp, "rest-added")
        late.start()
        added_at = time.monotonic()
        status, added = service.call(
            "POST", f"/v1/apps/{APP}/tasks/rest/outputs", {"kind": "rtmp", "url": f"{url}?auth=tok-secret"}
        )
        answered = time.monotonic() - added_at
        assert status == 201, added
        assert added["output_id"] == "o2" and added["kind"] == "rtmp", added
        assert added["url"] == url.replace("rest-added", "res***"), added
        assert "tok-secret" not in str(added) and "rest-added" not in str(added)
        assert added["state"] == "connecting"
        assert store.client.get(store.lease_key(key)) == f"{APP}/rest".encode()

        wait_until(lambda: stream_stats(nginx_rtmp, "rest-added")[1], 20, "the added output's video at nginx")
        at_server = time.monotonic() - added_at
        wait_until(lambda: len(late.pictures) >= 1, 20, "the added output to play")
        first_picture = late.pictures[0][0] - added_at
        print(
            f"added over REST: answered in {answered:.3f} s; video at nginx {at_server:.2f} s, first"
            f" picture decoded {first_picture:.2f} s after the call"
        )
        assert first_picture < 8.0, (
            f"the added output played {first_picture:.2f} s after the call (target 2 s)"
        )
        wait_until(lambda: len(late.pictures) >= 10, 20, "the added output to keep playing")

        # GET lists it with its state and counters.
        task = service.wait_task(
            APP,
            "rest",
            lambda t: (
                [o["output_id"] for o in t["outputs"]] == ["o1", "o2"]
                and t["outputs"][1]["state"] == "connected"
                and t["outputs"][1]["stats"].get("bytes_written", 0) > 0
            ),
            10,
        )
        listed = task["outputs"][1]
        print(f"listed: {listed}")
        assert listed["kind"] == "rtmp" and listed["url"] == added["url"] and listed["error"] is None
        assert listed["stats"]["bitrate_bps"] > 0 and task["outputs"][0]["state"] == "connected"

        # Remove: 204, the stream stops being published, the first output keeps playing.
        removed_at = time.monotonic()
        status, body = service.call("DELETE", f"/v1/apps/{APP}/tasks/rest/outputs/o2")
        assert status == 204, body
        assert store.client.exists(store.lease_key(key)) == 0  # released at once, with its cooldown
        assert 0 < store.client.pttl(store.cooldown_key(key)) <= cooldown * 1000

        # The cooldown refusal names the output (o1 of the new task) and shows its URL redacted.
        status, refused = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": "next",
                "channel_id": "rest",
                "outputs": [{"kind": "record"}, {"kind": "rtmp", "url": url}],
            },
        )
        assert status == 409 and refused["code"] == "StreamURL.CoolingDown", refused
        assert refused["field"] == "outputs.1.url", refused
        assert refused["message"].startswith(
            f"outputs.1.url: output o2 ({added['url']}) was used by a task"
        ), refused
        status, again = service.call(
            "POST", f"/v1/apps/{APP}/tasks/rest/outputs", {"kind": "rtmp", "url": url}
        )
        assert status == 409 and again["code"] == "StreamURL.CoolingDown" and again["field"] == "url", again

        wait_until(lambda: stream_stats(nginx_rtmp, "rest-added")[0] == 0, 10, "the removed output to stop")
        unpublished = time.monotonic() - removed_at
        service.wait_task(  # listed, and reported by the worker, without it
            APP,
            "rest",
            lambda t: (
                [o["output_id"] for o in t["outputs"]] == ["o1"]
                and [o["output_id"] for o in t["stats"]["outputs"]] == ["o1"]
            ),
            10,
        )
        assert stream_stats(nginx_rtmp, "rest-main")[0] == 1
        wait_until(
            lambda: main.pictures[-1][0] > time.monotonic() - 0.5, 5, "the first output to keep playing"
        )
        gap = largest_gap(main, added_at - 1.0, time.monotonic())
        print(f"removed: unpublished after {unpublished:.2f} s; largest gap on o1 since the add {gap:.3f} s")

        # After the cooldown, a new task may use the URL (queued: the one worker slot is taken).
        time.sleep(max(0.0, cooldown + 0.2 - (time.monotonic() - removed_at)))
        status, accepted = service.call(
            "POST", f"/v1/apps/{APP}/tasks", {"task_id": "next", "channel_id": "rest", "stream_url": url}
        )
        assert status == 201, accepted
        assert store.client.get(store.lease_key(key)) == f"{APP}/next".encode()
        status, body = service.call("DELETE", f"/v1/apps/{APP}/tasks/next")
        assert status == 200, body
        stop(service, "rest")
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)
