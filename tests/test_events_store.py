"""The webhooks outbox against a real Redis: each task script that changes a task writes its event in
the same script (none for a change refused or a no-op), with a per-task sequence and the task's
record as it was; outbox order, acks, locks, pings, endpoints with rotation, delivery records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers.events import SIGNATURE_HEADER, Delivery, OutboxEvent, WebhookEndpoint, event_body
from rtc_mpu.workers.model import TaskExistsError, TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.stats import OutputStats, TaskStats
from rtc_mpu.workers.store import TaskStore
from tests.conftest import StoreFactory

SECRET = "S3cr3tAuth"
URL = f"rtmp://example.com/live/stream?auth={SECRET}"
HOOK = WebhookEndpoint("https://hooks.example.com/mpu", "0123456789abcdef")


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store()


def new_task(task_id: str = "t1", app_id: str = "app1") -> TaskRecord:
    return TaskRecord(app_id, task_id, TaskParams("ch1", URL), stream_url_key(URL))


def drain(store: TaskStore, name: str = "app1/t1") -> list[OutboxEvent]:
    events = []
    while (head := store.outbox_head(name)) is not None:
        event = OutboxEvent.from_json(head)
        assert store.outbox_ack(name, event.id)
        events.append(event)
    return events


def test_no_webhooks_no_outbox(store: TaskStore) -> None:
    store.start_task(new_task())
    assert store.outbox_head("app1/t1") is None and store.outbox_names() == []


def test_a_task_life_writes_its_events_in_order(store: TaskStore) -> None:
    store.set_webhooks("app1", [HOOK])
    store.start_task(new_task())
    with pytest.raises(TaskExistsError):
        store.start_task(new_task())  # refused: no event
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    store.heartbeat("app1", "t1", token, users=["u1"], layout_id=1)  # no state change
    store.heartbeat("app1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="running")
    store.heartbeat("app1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING)  # same: none
    store.heartbeat("app1", "t1", token, users=["u2"], layout_id=2)
    stats = TaskStats(outputs=(OutputStats("o1", "rtmp", state="reconnecting", error="refused"),))
    store.heartbeat("app1", "t1", token, stats=stats)
    store.heartbeat(
        "app1", "t1", token, stats=TaskStats(outputs=(OutputStats("o1", "rtmp", state="connected"),))
    )
    store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(1, 6)))
    store.request_stop("app1", "t1")
    assert store.heartbeat("app1", "t1", token + 100) is None  # fenced out: no event
    store.finish("app1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    assert store.outbox_names() == ["app1/t1"]
    events = drain(store)
    assert [e.type for e in events] == [
        "task.started",
        "task.status_changed",  # queued -> starting
        "task.layout_changed",  # None -> 1
        "channel.user_joined",
        "task.status_changed",  # -> running
        "task.layout_changed",  # 1 -> 2
        "channel.user_joined",
        "channel.user_left",
        "output.failed",
        "output.recovered",
        "task.layout_changed",  # the update
        "task.status_changed",  # -> stopping
        "task.ended",
    ]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)
    assert store.outbox_names() == []
    started, starting, *_ = events
    assert started.record is not None and started.record["state"] == "queued"
    body: dict[str, Any] = json.loads(event_body(starting))
    assert body["type"] == "task.status_changed" and body["sequence"] == 2
    assert body["task"]["state"] == "starting" and body["task"]["status"] == 0
    assert body["data"] == {"previous_state": "queued", "previous_status": 0}
    assert body["created_at"].endswith("Z") and body["app_id"] == "app1"
    assert SECRET not in event_body(starting).decode()  # the StreamURL is redacted
    running = json.loads(event_body(events[4]))
    assert running["task"]["state"] == "running" and running["task"]["reason"] == "running"
    joined = [json.loads(event_body(e))["data"]["user_id"] for e in events if e.type == "channel.user_joined"]
    assert joined == ["u1", "u2"]
    assert json.loads(event_body(events[8]))["data"] == {
        "output_id": "o1",
        "state": "reconnecting",
        "error": "refused",
    }
    ended = json.loads(event_body(events[-1]))
    assert ended["task"]["state"] == "ended" and ended["task"]["status"] == 3
    assert SIGNATURE_HEADER == "X-MPU-Signature"


FILE = {
    "output_id": "o2",
    "name": "rec/20261201T081500Z_o2.mp4",
    "size_bytes": 12345,
    "duration_seconds": 10.04,
    "start_time": "2026-12-01T08:15:00Z",
}


def test_a_finished_recording_is_announced_while_the_token_holds_the_task(store: TaskStore) -> None:
    store.start_task(new_task())
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    assert store.emit_recording_ready("app1", "t1", token, FILE) is True  # no webhooks: no event
    assert store.outbox_head("app1/t1") is None
    store.set_webhooks("app1", [HOOK])
    before = store.get_task("app1", "t1")
    assert store.emit_recording_ready("app1", "t1", token, FILE) is True
    assert store.emit_recording_ready("app1", "t1", token + 1, FILE) is False  # fenced out: nothing
    assert store.emit_recording_ready("app1", "t1", 0, FILE) is False
    assert store.emit_recording_ready("app1", "nope", token, FILE) is False
    assert store.get_task("app1", "t1") == before, "the record is not changed"
    store.finish("app1", "t1", token, TaskStatus.CHANNEL_ENDED, "empty")
    assert store.emit_recording_ready("app1", "t1", token, FILE) is False  # ended: nothing
    events = drain(store)
    assert [e.type for e in events] == ["recording.ready", "task.ended"]
    body: dict[str, Any] = json.loads(event_body(events[0]))
    assert body["type"] == "recording.ready" and body["sequence"] == 1
    assert body["data"] == {
        **FILE,
        "url": "/v1/apps/app1/tasks/t1/recordings/rec/20261201T081500Z_o2.mp4",
    }
    assert body["task"]["task_id"] == "t1" and body["task"]["state"] == "starting"
    assert SECRET not in event_body(events[0]).decode()  # the task view is the redacted one


def test_stop_of_a_queued_task_ends_it_with_one_event(store: TaskStore) -> None:
    store.set_webhooks("app1", [HOOK])
    store.start_task(new_task())
    store.request_stop("app1", "t1")
    store.request_stop("app1", "t1")  # already ended: nothing
    assert [e.type for e in drain(store)] == ["task.started", "task.ended"]


def test_ack_only_pops_the_head(store: TaskStore) -> None:
    store.set_webhooks("app1", [HOOK])
    store.start_task(new_task())
    store.request_stop("app1", "t1")
    first = OutboxEvent.from_json(store.outbox_head("app1/t1") or "")
    second_id = json.loads(store.client.lindex(store._outbox_key("app1/t1"), 1) or b"{}")["id"]
    assert not store.outbox_ack("app1/t1", second_id)
    assert store.outbox_ack("app1/t1", first.id)
    assert not store.outbox_ack("app1/t1", first.id)  # a second ack of the same event: nothing
    assert store.outbox_names() == ["app1/t1"]
    assert store.outbox_ack("app1/t1", second_id) and store.outbox_names() == []


def test_ping_locks_and_notifications(store: TaskStore) -> None:
    event_id = store.emit_ping("app1")
    assert store.wait_outbox(0.1) == "app1/"
    event = OutboxEvent.from_json(store.outbox_head("app1/") or "")
    assert event.id == event_id and event.type == "ping" and event.record is None
    body = json.loads(event_body(event))
    assert body["task"] is None and body["app_id"] == "app1" and body["sequence"] == 1
    assert store.lock_outbox("app1/", "a", 5) and store.lock_outbox("app1/", "a", 5)
    assert not store.lock_outbox("app1/", "b", 5)
    store.unlock_outbox("app1/", "b")  # not b's: kept
    assert not store.lock_outbox("app1/", "b", 5)
    store.unlock_outbox("app1/", "a")
    assert store.lock_outbox("app1/", "b", 5)
    assert store.note_retry("app1/", 5) and not store.note_retry("app1/", 5)


def test_endpoints_rotation_and_removal(store: TaskStore) -> None:
    assert store.webhooks("app1") == []
    store.set_webhooks("app1", [HOOK])
    rotated = store.set_webhooks("app1", [WebhookEndpoint(HOOK.url, "fedcba9876543210")])
    now = store.server_time()
    assert rotated[0].secrets(now) == ["fedcba9876543210", HOOK.secret]
    assert store.webhooks("app1") == rotated
    assert store.webhooks("app2") == []
    store.set_webhooks("app1", [])
    assert store.webhooks("app1") == []
    store.start_task(new_task())
    assert store.outbox_head("app1/t1") is None


def test_delivery_records_newest_first(store: TaskStore) -> None:
    for i in range(3):
        store.record_delivery("app1", Delivery(f"evt_{i}", "task.started", HOOK.url, attempts=1))
    store.record_delivery("app1", Delivery("evt_0", "task.started", HOOK.url, attempts=2, last_status=200))
    listed = store.deliveries("app1")
    assert [d.event_id for d in listed] == ["evt_2", "evt_1", "evt_0"]
    assert listed[2].attempts == 2 and store.delivery("app1", "evt_0", HOOK.url) == listed[2]
    assert store.deliveries("app2") == []
