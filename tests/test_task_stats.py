"""Task statistics (issue 12): the typed object a worker writes, its JSON, and what REST, RPC and the
stored record make of it (the wire keys of ``stats`` must not change)."""

from __future__ import annotations

import json

import pytest

from rtc_mpu.api.app import create_app
from rtc_mpu.mixer.audio.vad import VadReport
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers.model import TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.stats import TaskStats, VadSnapshot
from rtc_mpu.workers.store import TaskStore

URL = "rtmp://example.com/live/stats-key"
#: The keys of the REST API's ``stats`` object (TaskOut.stats), as before the typed object.
WIRE_KEYS = [
    "video_frames",
    "dropped_video_frames",
    "audio_blocks",
    "dropped_audio_blocks",
    "sink_reconnects",
    "layout_changes",
    "mixed_audio_users",
    "overlay_problems",
    "vad",
    "sei_messages",
    "outputs",
    "av_offsets_ms",
]
FULL = TaskStats(
    video_frames=300,
    dropped_video_frames=2,
    audio_blocks=450,
    dropped_audio_blocks=1,
    sink_reconnects=3,
    layout_changes=4,
    mixed_audio_users=("alice", "bob"),
    overlay_problems={"Watermarks.1": "not an image"},
    vad=VadSnapshot(
        ts_ms=1000, speaker="alice", speaking=("alice",), levels_dbfs={"alice": -21.4, "bob": -100.0}
    ),
    sei_messages=5,
)


def test_the_json_object_keeps_the_wire_keys() -> None:
    data = FULL.to_dict()
    assert list(data) == WIRE_KEYS
    assert data["mixed_audio_users"] == ["alice", "bob"]
    assert data["vad"] == {
        "ts": 1000,
        "speaker": "alice",
        "speaking": ["alice"],
        "levels": {"alice": -21.4, "bob": -100.0},
    }
    assert list(TaskStats().to_dict()) == WIRE_KEYS and TaskStats().to_dict()["vad"] is None


@pytest.mark.parametrize("stats", [TaskStats(), FULL, TaskStats(vad=VadSnapshot(ts_ms=0))])
def test_json_round_trip(stats: TaskStats) -> None:
    assert TaskStats.from_json(stats.to_json()) == stats
    assert TaskStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_the_voice_activity_payload_of_the_sei_reads_as_a_snapshot() -> None:
    report = VadReport(t=1.5, levels={"alice": -21.44, "bob": -60.0}, speaking=("alice",), speaker="alice")
    snapshot = VadSnapshot.from_dict(json.loads(report.to_json()))
    assert snapshot == VadSnapshot(1500, "alice", ("alice",), {"alice": -21.4, "bob": -60.0})


def test_older_and_newer_objects_are_read() -> None:
    assert TaskStats.from_dict({"video_frames": 10}) == TaskStats(video_frames=10)  # older: defaults
    assert TaskStats.from_dict({"video_frames": 10, "bytes_sent": 5}) == TaskStats(video_frames=10)


@pytest.mark.parametrize(
    "data",
    [
        {"video_frames": -1},
        {"video_frames": 1.5},
        {"video_frames": True},
        {"sink_reconnects": "3"},
        {"mixed_audio_users": "alice"},
        {"mixed_audio_users": [1]},
        {"overlay_problems": ["x"]},
        {"overlay_problems": {"a": 1}},
        {"vad": []},
        {"vad": {"speaker": "a"}},
        {"vad": {"ts": 1, "levels": {"a": "loud"}}},
        {"vad": {"ts": 1, "speaker": 5}},
    ],
)
def test_malformed_objects_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="stats"):
        TaskStats.from_dict(data)


def test_a_record_without_stats_stores_an_empty_object() -> None:
    record = TaskRecord("app1", "t1", TaskParams("ch1", URL), stream_url_key(URL))
    assert record.stats is None and json.loads(record.to_json())["stats"] == {}
    assert TaskRecord.from_json(record.to_json()).stats is None
    record.stats = FULL
    assert json.loads(record.to_json())["stats"] == FULL.to_dict()
    assert TaskRecord.from_json(record.to_json()) == record
    data = json.loads(record.to_json())
    data["stats"] = ["not", "an", "object"]
    with pytest.raises(ValueError, match="stats"):
        TaskRecord.from_json(json.dumps(data))


def test_rest_rpc_and_the_store_show_what_the_worker_reported(task_store: TaskStore) -> None:
    client = create_app(
        {"MPU_AUTH_DISABLED": True, "STORE": task_store, "ENQUEUE": lambda a, t: None}
    ).test_client()
    body = {"task_id": "t1", "channel_id": "ch1", "stream_url": URL}
    assert client.post("/v1/apps/app1/tasks", json=body).status_code == 201
    token = task_store.claim("app1", "t1", "host:1")
    assert token is not None
    beat = task_store.heartbeat(
        "app1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, stats=FULL
    )
    assert beat is not None and beat.stats == FULL
    rest = client.get("/v1/apps/app1/tasks/t1").json
    assert rest is not None and rest["stats"] == FULL.to_dict()
    rpc = client.post(
        "/", data={"Action": "GetMPUTaskStatus", "AppId": "app1", "TaskId": "t1", "Format": "JSON"}
    )
    assert rpc.status_code == 200 and rpc.json is not None
    assert rpc.json["OverlayProblems"] == [{"Name": "Watermarks.1", "Reason": "not an image"}]
    assert rpc.json["Vad"] == {
        "Ts": 1000,
        "Speaker": "alice",
        "Speaking": ["alice"],
        "Levels": [{"UserId": "alice", "Level": -21.4}, {"UserId": "bob", "Level": -100.0}],
    }
    quiet = task_store.heartbeat("app1", "t1", token, stats=TaskStats())
    assert quiet is not None
    rpc = client.post(
        "/", data={"Action": "GetMPUTaskStatus", "AppId": "app1", "TaskId": "t1", "Format": "JSON"}
    )
    assert rpc.json is not None and rpc.json["OverlayProblems"] == [] and rpc.json["Vad"] is None
