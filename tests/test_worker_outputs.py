"""The worker side of several outputs per task (issue 13): plain decisions, sidecars, crash repair."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
import pytest

from rtc_mpu.mixer.output.muxers import FRAGMENTED_MP4
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.spec.outputs import HlsOutput, OutputSpec, RecordOutput, RtmpOutput, SnapshotOutput
from rtc_mpu.spec.storage import hls_dir, task_folder
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers.events import OutboxEvent, WebhookEndpoint, event_body
from rtc_mpu.workers.model import StoreUnavailableError, TaskParams, TaskRecord
from rtc_mpu.workers.outputs import (
    Recording,
    TaskOutputs,
    main_changed,
    main_output,
    output_changes,
    probe_duration,
    repair_sidecars,
    sidecar_path,
    snapshot_ttl,
    unique_path,
    write_sidecar,
)
from rtc_mpu.workers.store import TaskStore
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

A = RtmpOutput("o1", "rtmp://example.com/live/a")
B = RtmpOutput("o2", "rtmp://example.com/live/b")
REC = RecordOutput("o3", max_duration_seconds=60.0)
HLS = HlsOutput("o4")
SNAP = SnapshotOutput("o5", 5.0)


def test_the_first_rtmp_output_is_the_main_one() -> None:
    assert main_output([REC, B, A]) == B
    assert main_output([REC, SNAP]) is None
    assert not main_changed(A, [A, REC])
    assert main_changed(A, [B, REC])  # o1 removed: o2 becomes the main output
    assert main_changed(None, [REC, A])


def test_outputs_added_and_removed_are_diffed_by_id() -> None:
    running: dict[str, OutputSpec] = {"o2": B, "o3": REC}
    added, removed = output_changes(running, [A, B, HLS, SNAP], "o1")
    assert added == [HLS, SNAP] and removed == ["o3"]
    changed = RecordOutput("o3", format="mkv")
    assert output_changes(running, [A, B, changed], "o1") == ([changed], ["o3"])
    assert output_changes(running, [A, B, REC], "o1") == ([], [])


def test_snapshots_outlive_three_intervals_and_at_least_a_minute() -> None:
    assert snapshot_ttl(5.0) == 60.0
    assert snapshot_ttl(100.0) == 300.0


def test_the_hls_directory_defaults_to_the_stacks(tmp_path: Path) -> None:
    assert hls_dir({}) == Path("run/hls").absolute()
    assert hls_dir({"MPU_RUN_DIR": str(tmp_path)}) == tmp_path / "hls"
    assert hls_dir({"MPU_HLS_DIR": str(tmp_path / "x")}) == tmp_path / "x"
    assert task_folder(tmp_path, "app", "task") == tmp_path / "app" / "task"


def test_rolled_files_are_named_with_their_own_start_time(tmp_path: Path) -> None:
    times = iter([datetime(2026, 12, 1, 10, 15, 0, tzinfo=UTC), datetime(2026, 12, 1, 10, 16, 0, tzinfo=UTC)])
    recording = Recording(RecordOutput("o3"), "app", "task", tmp_path, now=lambda: next(times))
    first = recording.target().sink.url
    assert first == str(tmp_path / "20261201T101500Z_o3.mp4")
    assert recording.path_for(first, 0) == first
    assert recording.path_for(first, 1) == str(tmp_path / "20261201T101600Z_o3.mp4")


def test_a_name_taken_gets_a_number(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert unique_path(tmp_path / "a.mp4") == tmp_path / "a-0001.mp4"
    assert unique_path(tmp_path / "b.mp4") == tmp_path / "b.mp4"


def write_fragmented_mp4(path: Path, seconds: int) -> None:
    """``seconds`` of 10 fps H.264, fragmented at each 1 s keyframe."""
    with av.open(str(path), "w", format="mp4", container_options=FRAGMENTED_MP4) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 10
        stream.codec_context.time_base = Fraction(1, 10)
        for index in range(seconds * 10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index % 255, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_a_recording_cut_by_a_crash_gets_a_sidecar(tmp_path: Path) -> None:
    folder = tmp_path / "app" / "task"
    folder.mkdir(parents=True)
    whole, cut, done = folder / "a.mp4", folder / "b.mp4", folder / "c.mp4"
    write_fragmented_mp4(whole, 4)
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # the worker died mid-fragment
    write_fragmented_mp4(done, 1)
    write_sidecar(done, {"name": "c.mp4"})
    (folder / "junk.mp4").write_bytes(b"not a video")

    repaired = repair_sidecars(folder)

    assert repaired == [whole, cut]
    assert json.loads(sidecar_path(done).read_text()) == {"name": "c.mp4"}  # kept as written
    whole_meta = json.loads(sidecar_path(whole).read_text())
    cut_meta = json.loads(sidecar_path(cut).read_text())
    assert whole_meta["name"] == "a.mp4" and whole_meta["size_bytes"] == len(data)
    assert 3.8 <= whole_meta["duration_seconds"] <= 4.2
    assert 0.5 <= cut_meta["duration_seconds"] < whole_meta["duration_seconds"]
    assert cut_meta["start_time"].endswith("Z")
    assert probe_duration(folder / "junk.mp4") is None
    assert not sidecar_path(folder / "junk.mp4").exists()
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.timeout(60)
def test_each_finished_recording_file_is_announced_with_the_claims_token(
    tmp_path: Path, clips: list[Path], task_store: TaskStore
) -> None:
    """An offline 5-second mix through the worker's TaskOutputs (as MixRunner makes them) with a
    recording rolled every 2 s: each file, the rolled ones and the last one closed with the output,
    gets its sidecar and one recording.ready event carrying the sidecar's data and its API url."""
    url = "rtmp://example.com/live/secretkey"
    task_store.set_webhooks("app1", [WebhookEndpoint("https://hooks.example.com/mpu", "0123456789abcdef")])
    task_store.start_task(TaskRecord("app1", "t1", TaskParams("ch1", url), stream_url_key(url)))
    token = task_store.claim("app1", "t1", "w1")
    assert token is not None
    outputs = TaskOutputs(
        [RecordOutput("o2", max_duration_seconds=2.0)],
        "app1",
        "t1",
        task_store,
        tmp_path / "recordings",
        tmp_path / "hls",
        token=token,
    )
    pipeline = Pipeline(
        build_task_spec(layout_ids=[1], media_encode_id=1),
        FileSource([str(clips[0])]),
        outputs.main_target,
        realtime=False,
        duration=5.0,
        muxer_factory=outputs.main_muxer_factory,
    )

    async def scenario() -> None:
        await outputs.start(pipeline)
        await pipeline.run()
        await outputs.close()

    asyncio.run(scenario())
    folder = task_folder(tmp_path / "recordings", "app1", "t1")
    sidecars = {}
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        sidecars[data["name"]] = data
    assert len(sidecars) >= 2, "rolled at least once"
    events = []
    while (head := task_store.outbox_head("app1/t1")) is not None:
        event = OutboxEvent.from_json(head)
        assert task_store.outbox_ack("app1/t1", event.id)
        events.append(event)
    ready = [e for e in events if e.type == "recording.ready"]
    assert len(ready) == len(sidecars)
    for event in ready:
        assert event.data is not None
        name = event.data["name"]
        assert event.data == {
            "output_id": "o2",
            **sidecars[name],
            "url": f"/v1/apps/app1/tasks/t1/recordings/{name}",
        }
        assert event.data["size_bytes"] == (folder / name).stat().st_size > 0
        assert "secretkey" not in event_body(event).decode()
    names = [e.data["name"] for e in ready if e.data is not None]
    assert len(set(names)) == len(names)


def test_a_fenced_out_worker_announces_nothing(tmp_path: Path) -> None:
    """A recording finished after the store refused the token (or failed) is logged, not announced;
    the announcement never runs on the output's thread."""
    calls: list[tuple[int, str]] = []

    class Store:
        def emit_recording_ready(
            self, app_id: str, task_id: str, token: int, recording: Mapping[str, object]
        ) -> bool:
            calls.append((token, threading.current_thread().name))
            if recording["name"] == "boom.mp4":
                raise StoreUnavailableError("down")
            return False

    outputs = TaskOutputs([], "app1", "t1", cast(TaskStoreProtocol, Store()), tmp_path, tmp_path, token=7)

    async def scenario() -> None:
        outputs._announcer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mpu-announce")
        outputs._queue_ready({"name": "a.mp4"})
        outputs._queue_ready({"name": "boom.mp4"})
        await outputs.close()
        outputs._queue_ready({"name": "late.mp4"})  # after close: logged, not sent

    asyncio.run(scenario())
    assert [token for token, _ in calls] == [7, 7]
    assert all(thread.startswith("mpu-announce") for _, thread in calls)
