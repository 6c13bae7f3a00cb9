"""The REST API in process (Flask test client) on a real Redis task store."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from stack.ports import free_port
from stack.redis import Redis
from workers.store import TaskStore

KEYS = "k1:s1,bound:s2:onlyapp"
GOOD = {"Authorization": "Basic " + base64.b64encode(b"k1:s1").decode()}


def auth(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


class Queue:
    """A recording enqueue function (the Celery side is tested end to end)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def __call__(self, app_id: str, task_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.calls.append((app_id, task_id))


def make_client(store: TaskStore, queue: Queue) -> FlaskClient:
    return create_app({"MPU_ACCESS_KEYS": KEYS, "STORE": store, "ENQUEUE": queue}).test_client()


@pytest.fixture
def store(redis_server: Redis) -> TaskStore:
    return TaskStore.from_url(redis_server.url, prefix=f"api{uuid.uuid4().hex[:8]}", cooldown_seconds=5.0)


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def client(store: TaskStore, queue: Queue) -> Iterator[FlaskClient]:
    yield make_client(store, queue)


def task(task_id: str = "t1", **changes: Any) -> dict[str, Any]:
    body = {
        "task_id": task_id,
        "channel_id": "room",
        "stream_url": "rtmp://cdn.example.com/live/secretkey?auth=zz",
    }
    body.update(changes)
    return body


def test_start_get_list_update_stop(client: FlaskClient, queue: Queue) -> None:
    created = client.post("/v1/apps/a1/tasks", json=task(layout_ids=[1, 2]), headers=GOOD)
    assert created.status_code == 201, created.json
    body = created.json
    assert body is not None and body["status"] == 0 and body["state"] == "queued"
    assert queue.calls == [("a1", "t1")]
    assert "secretkey" not in created.get_data(as_text=True) and "zz" not in created.get_data(as_text=True)
    got = client.get("/v1/apps/a1/tasks/t1", headers=GOOD).json
    assert (
        got is not None
        and got["layout_ids"] == [1, 2]
        and got["stream_url"] == "rtmp://cdn.example.com/live/sec***"
    )
    listed = client.get("/v1/apps/a1/tasks", headers=GOOD).json
    assert listed is not None and [t["task_id"] for t in listed["tasks"]] == ["t1"]
    patched = client.patch(
        "/v1/apps/a1/tasks/t1/layout", json={"layout_ids": [6], "crop_mode": 1}, headers=GOOD
    )
    assert patched.status_code == 200 and patched.json is not None and patched.json["layout_ids"] == [6]
    stopped = client.delete("/v1/apps/a1/tasks/t1", headers=GOOD).json
    assert stopped is not None and stopped["state"] == "ended" and stopped["status"] == 3


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"channel_id": "room", "stream_url": "rtmp://h/live/s"}, "MissingParameter", "task_id"),
        (task("bad id!"), "InvalidParameter", "task_id"),
        (task(stream_url="file:/etc/passwd"), "InvalidStreamURL.Malformed", "StreamURL"),
        (task(stream_url="http://h/live/s"), "InvalidStreamURL.Malformed", "StreamURL"),
        (task(layout_ids=[3, 4]), "InvalidLayoutID.Malformed", "LayoutIds"),
        (task(layout_ids=[12]), "InvalidLayoutID.Malformed", "LayoutIds"),
        (task(media_encode=999), "InvalidMediaEncode.Malformed", "MediaEncode"),
        (task(background_color=-1), "InvalidBackgroundColor.Malformed", "BackgroundColor"),
        (task(crop_mode=5), "InvalidParameter", "CropMode"),
        (task(layout_ids="six"), "InvalidParameter", "layout_ids"),
    ],
)
def test_bad_input_is_a_400_with_code_and_field(
    client: FlaskClient, queue: Queue, body: dict[str, Any], code: str, field: str
) -> None:
    response = client.post("/v1/apps/a1/tasks", json=body, headers=GOOD)
    assert response.status_code == 400
    assert response.json is not None and response.json["code"] == code and response.json["field"] == field
    assert response.json["request_id"] and queue.calls == []


def test_conflicts_and_unknown_tasks(client: FlaskClient) -> None:
    assert client.post("/v1/apps/a1/tasks", json=task(), headers=GOOD).status_code == 201
    again = client.post("/v1/apps/a1/tasks", json=task(), headers=GOOD)
    assert again.status_code == 409 and again.json is not None and again.json["code"] == "TaskExisted"
    same_url = client.post(
        "/v1/apps/a1/tasks",
        json=task("t2", stream_url="rtmp://CDN.example.com:1935/live/secretkey"),
        headers=GOOD,
    )
    assert (
        same_url.status_code == 409
        and same_url.json is not None
        and same_url.json["code"] == "StreamURL.InUse"
    )
    client.delete("/v1/apps/a1/tasks/t1", headers=GOOD)
    cooling = client.post("/v1/apps/a1/tasks", json=task("t2"), headers=GOOD)
    assert cooling.status_code == 409 and cooling.json is not None
    assert cooling.json["code"] == "StreamURL.CoolingDown" and "5 s" in cooling.json["message"]
    missing = client.get("/v1/apps/a1/tasks/nope", headers=GOOD)
    assert (
        missing.status_code == 404
        and missing.json is not None
        and missing.json["code"] == "InvalidTask.NotFound"
    )


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "Forbidden"),
        (auth("nobody", "s1"), "InvalidAccessKeyId.NotFound"),
        (auth("k1", "wrong"), "SignatureDoesNotMatch"),
        (auth("bound", "s2"), "Forbidden"),
    ],
)
def test_bad_credentials_are_403(client: FlaskClient, headers: dict[str, str], code: str) -> None:
    response = client.post("/v1/apps/a1/tasks", json=task(), headers=headers)
    assert response.status_code == 403 and response.json is not None and response.json["code"] == code
    assert client.get("/v1/apps/onlyapp/tasks", headers=auth("bound", "s2")).status_code == 200


def test_redis_down_is_503_and_nothing_is_enqueued(queue: Queue) -> None:
    down = make_client(TaskStore.from_url(f"redis://127.0.0.1:{free_port()}/0"), queue)
    for response in (
        down.post("/v1/apps/a1/tasks", json=task(), headers=GOOD),
        down.get("/v1/apps/a1/tasks/t1", headers=GOOD),
        down.get("/v1/health"),
    ):
        assert response.status_code == 503 and response.json is not None
        assert response.json["code"] == "ServiceUnavailable"
    assert queue.calls == []


def test_a_queue_failure_leaves_no_half_started_task(store: TaskStore) -> None:
    client = make_client(store, Queue(fail=True))
    response = client.post("/v1/apps/a1/tasks", json=task(), headers=GOOD)
    assert response.status_code == 503
    assert store.get_task("a1", "t1").state.value == "ended"


def test_openapi_docs_and_health(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec is not None and "/v1/apps/{app_id}/tasks/{task_id}/layout" in spec["paths"]
    assert spec["components"]["securitySchemes"]["BasicAuth"]["scheme"] == "basic"
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/health").json == {"redis": "ok"}
    too_big = client.post(
        "/v1/apps/a1/tasks", data=b"x" * 70000, headers={**GOOD, "Content-Type": "application/json"}
    )
    assert (
        too_big.status_code == 413 and too_big.json is not None and too_big.json["code"] == "RequestTooLarge"
    )
