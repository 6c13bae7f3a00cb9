"""The REST API in process (Flask test client), on the real task store on the session's Redis: the
main paths, then (the second half, with access keys of its own) every answer the API gives. A store
whose Redis is unreachable, or whose method raises, is made by failure injection on a real store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.stack.ports import free_port
from rtc_mpu.workers.model import (
    TaskRecord,
    TaskState,
    TaskStatus,
)
from rtc_mpu.workers.stats import TaskStats
from rtc_mpu.workers.store import TaskStore
from tests.conftest import StoreFactory
from tests.signing import basic_auth

KEYS = "k1:s1,bound:s2:onlyapp"
#: What the schema fills in for a pane given with only its id, user and source.
PANE_DEFAULTS = {"segment_type": 0, "images": [], "texts": []}
GOOD = basic_auth("k1", "s1")


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
def store(make_store: StoreFactory) -> TaskStore:
    return make_store(cooldown_seconds=5.0)


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
        (task(stream_url="file:/etc/passwd"), "InvalidStreamURL.Malformed", "stream_url"),
        (task(stream_url="http://h/live/s"), "InvalidStreamURL.Malformed", "stream_url"),
        (task(layout_ids=[3, 4]), "InvalidLayoutID.Malformed", "layout_ids"),
        (task(layout_ids=[1, 12]), "InvalidLayoutID.Malformed", "layout_ids.1"),
        (task(media_encode=999), "InvalidMediaEncode.Malformed", "media_encode"),
        (task(background_color=-1), "InvalidBackgroundColor.Malformed", "background_color"),
        (task(crop_mode=5), "InvalidParameter", "crop_mode"),
        (task(layout_ids="six"), "InvalidLayoutID.Malformed", "layout_ids"),
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
        (basic_auth("nobody", "s1"), "InvalidAccessKeyId.NotFound"),
        (basic_auth("k1", "wrong"), "SignatureDoesNotMatch"),
        (basic_auth("bound", "s2"), "Forbidden"),
    ],
)
def test_bad_credentials_are_403(client: FlaskClient, headers: dict[str, str], code: str) -> None:
    response = client.post("/v1/apps/a1/tasks", json=task(), headers=headers)
    assert response.status_code == 403 and response.json is not None and response.json["code"] == code
    assert client.get("/v1/apps/onlyapp/tasks", headers=basic_auth("bound", "s2")).status_code == 200


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
    ended = store.get_task("a1", "t1")
    assert ended.state.value == "ended" and "nothing was started" in ended.reason
    # It never pushed: the StreamURL has no cooldown, and a retry once the queue is back starts at once.
    retry = make_client(store, Queue()).post("/v1/apps/a1/tasks", json=task(), headers=GOOD)
    assert retry.status_code == 201, retry.json


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


# -- The same API on an in-memory store: every error path, fast ----------------------------------

KEY, SECRET = "AK1", "s3cret-1"
BOUND_KEY, BOUND_SECRET = "AK2", "s3cret-2"  # bound to app "other" only
APP = "app1"
STREAM_KEY = "mysecretstreamkey"
URL = f"rtmp://live.example.com/live/{STREAM_KEY}?auth=topsecret"


@contextmanager
def redis_down(store: TaskStore) -> Iterator[None]:
    """Failure injection: within the block the store's Redis is unreachable (its connections go to a
    closed port), so every call raises StoreUnavailableError as with Redis down; afterwards it is
    reachable again."""
    pool = store.client.connection_pool
    port = pool.connection_kwargs["port"]
    pool.disconnect()
    pool.connection_kwargs["port"] = free_port()
    pool.reset()  # forget the connections made to the real port
    try:
        yield
    finally:
        pool.disconnect()
        pool.connection_kwargs["port"] = port
        pool.reset()


def running(store: TaskStore, task_id: str = "t1", **beat: Any) -> int:
    """Claim a started task as worker ``host/1`` and heartbeat it RUNNING ("pushing", or as ``beat``
    says); the fencing token."""
    token = store.claim(APP, task_id, "host/1")
    assert token is not None
    fields: dict[str, Any] = {"status": TaskStatus.RUNNING, "state": TaskState.RUNNING, "reason": "pushing"}
    assert store.heartbeat(APP, task_id, token, **(fields | beat)) is not None
    return token


class Enqueue:
    """Records (app_id, task_id) calls; raises when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = False

    def __call__(self, app_id: str, task_id: str) -> None:
        self.calls.append((app_id, task_id))
        if self.fail:
            raise ConnectionError("broker redis://:brokerpassword@10.0.0.1:6379 unreachable")


@pytest.fixture
def api_store(make_store: StoreFactory) -> TaskStore:
    return make_store()


@pytest.fixture
def enqueue() -> Enqueue:
    return Enqueue()


@pytest.fixture
def api_app(api_store: TaskStore, enqueue: Enqueue) -> APIFlask:
    return make_app(api_store, enqueue)


def make_app(store: TaskStore, enqueue: Enqueue) -> APIFlask:
    return create_app(
        {
            "MPU_ACCESS_KEYS": f"{KEY}:{SECRET},{BOUND_KEY}:{BOUND_SECRET}:other|third",
            "STORE": store,
            "ENQUEUE": enqueue,
        }
    )


@pytest.fixture
def api_client(api_app: APIFlask) -> Iterator[FlaskClient]:
    with api_app.test_client() as client:
        yield client


def basic(key: str = KEY, secret: str = SECRET) -> dict[str, str]:
    """Basic auth, by default with ``KEY`` and ``SECRET``."""
    return basic_auth(key, secret)


def start_body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": "t1",
        "channel_id": "room1",
        "stream_url": URL,
        "layout_ids": [1, 2],
        "media_encode": 27,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def post_task(client: FlaskClient, data: Any, app_id: str = APP, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    headers = kwargs.pop("headers", basic())
    response = client.post(f"/v1/apps/{app_id}/tasks", json=data, headers=headers, **kwargs)
    return response.status_code, response.get_json()


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The one error shape, with this status, code and field."""
    data = response.get_json()
    assert response.status_code == status, data
    assert set(data) == {"code", "message", "field", "request_id"}, data
    assert data["code"] == code, data
    assert data["field"] == field, data
    assert data["message"]
    assert len(data["request_id"]) == 36
    assert STREAM_KEY not in response.get_data(as_text=True)
    assert "topsecret" not in response.get_data(as_text=True)
    return data  # type: ignore[no-any-return]


def no_secrets(response: Any) -> None:
    text = response.get_data(as_text=True)
    for secret in (STREAM_KEY, "topsecret", "auth=", SECRET, BOUND_SECRET, "brokerpassword"):
        assert secret not in text, text


# -- start, read, list -------------------------------------------------------------------------


def test_create_returns_the_task_redacted_and_enqueues_once(
    api_client: FlaskClient, api_store: TaskStore, enqueue: Enqueue
) -> None:
    response = api_client.post(f"/v1/apps/{APP}/tasks", json=start_body(), headers=basic())
    assert response.status_code == 201, response.get_json()
    no_secrets(response)
    task = response.get_json()
    assert task["app_id"] == APP and task["task_id"] == "t1" and task["channel_id"] == "room1"
    assert task["stream_url"] == "rtmp://live.example.com/live/mys***"
    assert task["status"] == 0 and task["status_text"] == "waiting for the channel"
    assert task["state"] == "queued" and task["layout_ids"] == [1, 2]
    assert enqueue.calls == [(APP, "t1")]
    stored = api_store.get_task(APP, "t1")
    assert stored.params.stream_url == URL  # the worker gets the real URL
    assert stored.stream_key == "rtmp://live.example.com:1935/live/mysecretstreamkey"
    assert stored.params.layout_ids == (1, 2) and stored.params.media_encode == 27


def test_get_and_list(api_client: FlaskClient, api_store: TaskStore) -> None:
    assert post_task(api_client, start_body())[0] == 201
    assert (
        post_task(api_client, start_body(task_id="t2", stream_url="rtmps://cdn.example.com/app/other-key"))[0]
        == 201
    )
    running(api_store, layout_id=2, users=["u1", "u2"], stats=TaskStats(video_frames=300, sink_reconnects=1))
    response = api_client.get(f"/v1/apps/{APP}/tasks/t1", headers=basic())
    assert response.status_code == 200
    no_secrets(response)
    task = response.get_json()
    assert task["status"] == 1 and task["status_text"] == "running" and task["state"] == "running"
    assert task["layout_id"] == 2 and task["users"] == ["u1", "u2"]
    assert task["stats"] == {  # the wire keys of TaskOut.stats
        "video_frames": 300,
        "dropped_video_frames": 0,
        "audio_blocks": 0,
        "dropped_audio_blocks": 0,
        "sink_reconnects": 1,
        "layout_changes": 0,
        "mixed_audio_users": [],
        "overlay_problems": {},
        "vad": None,
        "sei_messages": 0,
        "outputs": [],
        "av_offsets_ms": {},
    }
    assert task["worker"] == "host/1"
    response = api_client.get(f"/v1/apps/{APP}/tasks", headers=basic())
    assert response.status_code == 200
    no_secrets(response)
    tasks = response.get_json()["tasks"]
    assert [t["task_id"] for t in tasks] == ["t1", "t2"]
    assert tasks[1]["stats"] == {}, "no worker reported yet"
    assert tasks[1]["stream_url"] == "rtmps://cdn.example.com/app/oth***"
    assert api_client.get("/v1/apps/empty/tasks", headers=basic()).get_json() == {"tasks": []}


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (TaskStatus.STOPPED, "stopped"),
        (TaskStatus.STOPPED_BY_USER, "stopped by the user"),
        (TaskStatus.CHANNEL_ENDED, "stopped: the channel ended"),
        (TaskStatus.NETWORK_PROBLEM, "CDN/network problem"),
        (TaskStatus.PUSH_URL_PROBLEM, "push URL problem"),
    ],
)
def test_status_texts(api_client: FlaskClient, api_store: TaskStore, status: TaskStatus, text: str) -> None:
    assert post_task(api_client, start_body())[0] == 201
    token = running(api_store)
    if status in (TaskStatus.NETWORK_PROBLEM, TaskStatus.PUSH_URL_PROBLEM):
        api_store.heartbeat(APP, "t1", token, status=status, state=TaskState.RETRYING)
    else:
        api_store.finish(APP, "t1", token, status, "ended")
    task = api_client.get(f"/v1/apps/{APP}/tasks/t1", headers=basic()).get_json()
    assert (task["status"], task["status_text"]) == (int(status), text)


def test_optional_fields_are_stored(api_client: FlaskClient, api_store: TaskStore) -> None:
    status, task = post_task(
        api_client,
        start_body(
            layout_ids=[6],
            user_panes=[
                {"pane_id": 0, "user_id": "alice"},
                {"pane_id": 1, "user_id": "bob", "source_type": "shareScreen"},
            ],
            background_color=0x00FF00,
            crop_mode=1,
            task_profile="4IN_1080P",
            media_encode=20,
        ),
    )
    assert status == 201, task
    params = api_store.get_task(APP, "t1").params
    assert params.layout_ids == (6,) and params.background_color == 0x00FF00 and params.crop_mode == 1
    assert params.task_profile == "4IN_1080P" and params.media_encode == 20
    assert params.user_panes == (
        {**PANE_DEFAULTS, "pane_id": 0, "user_id": "alice", "source_type": "camera"},
        {**PANE_DEFAULTS, "pane_id": 1, "user_id": "bob", "source_type": "shareScreen"},
    )


def test_unsupported_parameters_are_accepted_and_reported_as_not_applied(api_client: FlaskClient) -> None:
    body = start_body(
        sub_spec_users=["alice"],
        task_mode=1,
        user_panes=[{"pane_id": 0, "user_id": "alice", "segment_type": 1}],
        enhanced_param={"enable_virtual_conference": True, "enable_voice_changer": False},
    )
    status, task = post_task(api_client, body)
    assert status == 201, task
    assert task["ignored"] == [
        "user_panes.segment_type",
        "task_mode",
        "enhanced_param.enable_virtual_conference",
    ]
    status, plain = post_task(api_client, start_body(task_id="t2", stream_url="rtmp://h/live/other"))
    assert status == 201 and plain["ignored"] == []


def test_unknown_task_is_404(api_client: FlaskClient) -> None:
    for method in ("get", "delete"):
        response = getattr(api_client, method)(f"/v1/apps/{APP}/tasks/nope", headers=basic())
        assert_error(response, 404, "InvalidTask.NotFound")
    response = api_client.patch(
        f"/v1/apps/{APP}/tasks/nope/layout", json={"layout_ids": [1]}, headers=basic()
    )
    assert_error(response, 404, "InvalidTask.NotFound")


def test_unknown_path_and_method_use_the_error_shape(api_client: FlaskClient) -> None:
    assert_error(api_client.get("/v2/nothing", headers=basic()), 404, "NotFound")
    response = api_client.put(f"/v1/apps/{APP}/tasks/t1", json={}, headers=basic())
    assert_error(response, 405, "MethodNotAllowed")


# -- api_store conflicts ---------------------------------------------------------------------------


def test_task_existed_is_409(api_client: FlaskClient, enqueue: Enqueue) -> None:
    assert post_task(api_client, start_body())[0] == 201
    response = api_client.post(
        f"/v1/apps/{APP}/tasks", json=start_body(stream_url="rtmp://h/live/another"), headers=basic()
    )
    assert_error(response, 409, "TaskExisted")
    assert len(enqueue.calls) == 1


def test_stream_url_in_use_is_409_and_names_no_other_task(api_client: FlaskClient, enqueue: Enqueue) -> None:
    assert post_task(api_client, start_body(task_id="first"))[0] == 201
    # Another query string is the same stream.
    response = api_client.post(
        f"/v1/apps/{APP}/tasks",
        json=start_body(task_id="second", stream_url=URL.replace("topsecret", "other")),
        headers=basic(),
    )
    data = assert_error(response, 409, "StreamURL.InUse", "stream_url")  # its output o1
    assert "first" not in data["message"] and "output o1" in data["message"]
    assert enqueue.calls == [(APP, "first")]


def test_stream_url_cooling_down_is_409_with_the_seconds(make_store: StoreFactory, enqueue: Enqueue) -> None:
    with make_app(make_store(cooldown_seconds=7.0), enqueue).test_client() as api_client:
        assert post_task(api_client, start_body(task_id="before"))[0] == 201
        assert api_client.delete(f"/v1/apps/{APP}/tasks/before", headers=basic()).status_code == 200
        response = api_client.post(f"/v1/apps/{APP}/tasks", json=start_body(), headers=basic())
    data = assert_error(response, 409, "StreamURL.CoolingDown", "stream_url")
    assert "7 s" in data["message"]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (start_body(task_id=...), "MissingParameter", "task_id"),
        (start_body(channel_id=...), "MissingParameter", "channel_id"),
        (start_body(stream_url=...), "MissingParameter", "stream_url"),
        (start_body(task_id="bad/id"), "InvalidParameter", "task_id"),
        (start_body(task_id="a b"), "InvalidParameter", "task_id"),
        (start_body(task_id="x" * 56), "InvalidParameter", "task_id"),
        (start_body(channel_id=""), "InvalidParameter", "channel_id"),
        (start_body(stream_url="file:/etc/passwd"), "InvalidStreamURL.Malformed", "stream_url"),
        (start_body(stream_url="http://example.com/live/x"), "InvalidStreamURL.Malformed", "stream_url"),
        (start_body(stream_url="rtmp://host-only"), "InvalidStreamURL.Malformed", "stream_url"),
        (start_body(layout_ids=[3, 4]), "InvalidLayoutID.Malformed", "layout_ids"),
        (start_body(layout_ids=[12]), "InvalidLayoutID.Malformed", "layout_ids.0"),
        (start_body(layout_ids=list(range(1, 18))), "InvalidLayoutID.Malformed", "layout_ids"),
        (start_body(media_encode=999), "InvalidMediaEncode.Malformed", "media_encode"),
        (start_body(task_profile="NOPE"), "InvalidTaskProfile.Malformed", "task_profile"),
        (start_body(background_color=-1), "InvalidBackgroundColor.Malformed", "background_color"),
        (start_body(background_color=0x1000000), "InvalidBackgroundColor.Malformed", "background_color"),
        (start_body(crop_mode=5), "InvalidParameter", "crop_mode"),
        (start_body(user_panes=[{"pane_id": 0}]), "MissingParameter", "user_panes.0.user_id"),
        (
            start_body(user_panes=[{"pane_id": 0, "user_id": "u", "source_type": "x"}]),
            "InvalidParameter",
            "user_panes.0.source_type",
        ),
        (
            start_body(user_panes=[{"pane_id": 16, "user_id": "u"}]),
            "InvalidParameter",
            "user_panes.0.pane_id",
        ),
        (
            start_body(user_panes=[{"pane_id": 0, "user_id": "u"}, {"pane_id": 0, "user_id": "v"}]),
            "InvalidParameter",
            "user_panes.1.pane_id",
        ),
        # wrong JSON types
        (start_body(task_id=5), "InvalidParameter", "task_id"),
        (start_body(media_encode="27"), "InvalidMediaEncode.Malformed", "media_encode"),
        (start_body(media_encode=27.5), "InvalidMediaEncode.Malformed", "media_encode"),
        (start_body(media_encode=True), "InvalidMediaEncode.Malformed", "media_encode"),
        (start_body(layout_ids="1"), "InvalidLayoutID.Malformed", "layout_ids"),
        (start_body(layout_ids=["1"]), "InvalidLayoutID.Malformed", "layout_ids.0"),
        (start_body(user_panes={"pane_id": 0}), "InvalidParameter", "user_panes"),
        (start_body(background_color=None), "InvalidBackgroundColor.Malformed", "background_color"),
        (start_body(sub_spec_users="alice"), "InvalidParameter", "sub_spec_users"),
        (start_body(unknown_field=1), "InvalidParameter", "unknown_field"),
        ([1, 2], "InvalidParameter", None),
        ("just a string", "InvalidParameter", None),
    ],
)
def test_bad_input_is_400_with_code_and_field(
    api_client: FlaskClient, api_store: TaskStore, enqueue: Enqueue, data: Any, code: str, field: str | None
) -> None:
    response = api_client.post(f"/v1/apps/{APP}/tasks", json=data, headers=basic())
    assert_error(response, 400, code, field)
    assert api_store.list_tasks(APP) == [] and enqueue.calls == []


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b"task_id=t1&channel_id=c", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (json.dumps(start_body()).encode(), "text/plain"),
    ],
)
def test_non_json_body_is_400(
    api_client: FlaskClient, enqueue: Enqueue, payload: bytes, content_type: str
) -> None:
    response = api_client.post(
        f"/v1/apps/{APP}/tasks", data=payload, headers={**basic(), "Content-Type": content_type}
    )
    data = assert_error(response, 400, "InvalidParameter")
    assert "JSON" in data["message"]
    assert enqueue.calls == []


def test_invalid_app_id_is_400(api_client: FlaskClient) -> None:
    response = api_client.get("/v1/apps/bad:app/tasks", headers=basic())
    assert_error(response, 400, "InvalidParameter", "app_id")


def test_too_large_body_is_413(api_client: FlaskClient, enqueue: Enqueue) -> None:
    response = api_client.post(
        f"/v1/apps/{APP}/tasks", json=start_body(channel_id="x" * 70_000), headers=basic()
    )
    assert_error(response, 413, "RequestTooLarge")
    assert enqueue.calls == []


# -- authentication ----------------------------------------------------------------------------


def test_no_credentials_is_403_with_a_challenge(api_client: FlaskClient, api_store: TaskStore) -> None:
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic !!!"}):
        response = api_client.post(f"/v1/apps/{APP}/tasks", json=start_body(), headers=headers)
        assert_error(response, 403, "Forbidden")
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert api_store.list_tasks(APP) == []


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [
        ("NOPE", SECRET, "InvalidAccessKeyId.NotFound"),
        (KEY, "wrong", "SignatureDoesNotMatch"),
        (KEY, "", "SignatureDoesNotMatch"),
        (KEY, SECRET + "x", "SignatureDoesNotMatch"),
        (KEY, "sécret", "SignatureDoesNotMatch"),
        (BOUND_KEY, BOUND_SECRET, "Forbidden"),  # bound to "other" and "third", not app1
    ],
)
def test_bad_credentials_are_403_on_every_endpoint(
    api_client: FlaskClient, api_store: TaskStore, enqueue: Enqueue, key: str, secret: str, code: str
) -> None:
    headers = basic(key, secret)
    requests = [
        api_client.post(f"/v1/apps/{APP}/tasks", json=start_body(), headers=headers),
        api_client.post(f"/v1/apps/{APP}/tasks", json={"bad": "body"}, headers=headers),  # auth first
        api_client.get(f"/v1/apps/{APP}/tasks", headers=headers),
        api_client.get(f"/v1/apps/{APP}/tasks/t1", headers=headers),
        api_client.patch(f"/v1/apps/{APP}/tasks/t1/layout", json={"layout_ids": [1]}, headers=headers),
        api_client.delete(f"/v1/apps/{APP}/tasks/t1", headers=headers),
    ]
    for response in requests:
        assert_error(response, 403, code)
        no_secrets(response)
    assert api_store.list_tasks(APP) == [] and enqueue.calls == []


def test_bound_key_works_on_its_apps(api_client: FlaskClient) -> None:
    status, task = post_task(api_client, start_body(), app_id="other", headers=basic(BOUND_KEY, BOUND_SECRET))
    assert status == 201, task
    response = api_client.get("/v1/apps/other/tasks/t1", headers=basic(BOUND_KEY, BOUND_SECRET))
    assert response.status_code == 200
    # the unbound key may act on any api_app
    assert api_client.get("/v1/apps/other/tasks/t1", headers=basic()).status_code == 200


def test_the_app_refuses_to_start_without_keys(api_store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPU_ACCESS_KEYS", raising=False)
    with pytest.raises(ValueError, match="MPU_ACCESS_KEYS"):
        create_app({"STORE": api_store})
    with pytest.raises(ValueError, match="MPU_ACCESS_KEYS"):
        create_app({"STORE": api_store, "MPU_ACCESS_KEYS": " , "})
    with pytest.raises(ValueError, match="entry #1") as error:
        create_app({"STORE": api_store, "MPU_ACCESS_KEYS": "onlyakey-nosecret"})
    with pytest.raises(ValueError) as error:
        create_app({"STORE": api_store, "MPU_ACCESS_KEYS": "AK:topsecret:app:extra"})
    assert "topsecret" not in str(error.value)
    monkeypatch.setenv("MPU_ACCESS_KEYS", f"{KEY}:{SECRET}")
    assert create_app({"STORE": api_store}) is not None


def test_auth_can_be_disabled_for_tests_only_explicitly(api_store: TaskStore, enqueue: Enqueue) -> None:
    app = create_app(
        {"MPU_ACCESS_KEYS": "", "MPU_AUTH_DISABLED": True, "STORE": api_store, "ENQUEUE": enqueue}
    )
    with app.test_client() as client:
        assert client.post(f"/v1/apps/{APP}/tasks", json=start_body()).status_code == 201


# -- layout updates and stop -------------------------------------------------------------------


def test_patch_layout_changes_the_stored_params(api_client: FlaskClient, api_store: TaskStore) -> None:
    assert post_task(api_client, start_body())[0] == 201
    response = api_client.patch(
        f"/v1/apps/{APP}/tasks/t1/layout",
        json={"layout_ids": [6], "background_color": 255, "user_panes": [{"pane_id": 2, "user_id": "bob"}]},
        headers=basic(),
    )
    assert response.status_code == 200, response.get_json()
    no_secrets(response)
    assert response.get_json()["layout_ids"] == [6]
    record = api_store.get_task(APP, "t1")
    assert record.spec_version == 2
    assert record.params.layout_ids == (6,) and record.params.background_color == 255
    assert record.params.user_panes == (
        {**PANE_DEFAULTS, "pane_id": 2, "user_id": "bob", "source_type": "camera"},
    )
    assert record.params.stream_url == URL and record.params.media_encode == 27  # the rest is kept
    response = api_client.patch(f"/v1/apps/{APP}/tasks/t1/layout", json={"crop_mode": 1}, headers=basic())
    assert response.status_code == 200
    record = api_store.get_task(APP, "t1")
    assert record.spec_version == 3 and record.params.crop_mode == 1 and record.params.layout_ids == (6,)


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({"layout_ids": [3, 4]}, "InvalidLayoutID.Malformed", "layout_ids"),
        ({"layout_ids": [99]}, "InvalidLayoutID.Malformed", "layout_ids.0"),
        ({"layout_ids": []}, "InvalidLayoutID.Malformed", "layout_ids"),
        ({"background_color": -1}, "InvalidBackgroundColor.Malformed", "background_color"),
        ({"crop_mode": 0}, "InvalidParameter", "crop_mode"),
        ({"layout_ids": "6"}, "InvalidLayoutID.Malformed", "layout_ids"),
        ({"media_encode": 1}, "InvalidMediaEncode.Malformed", "media_encode"),  # not a layout field
        ({}, "MissingParameter", "layout_ids"),
    ],
)
def test_patch_layout_validates(
    api_client: FlaskClient, api_store: TaskStore, data: dict[str, Any], code: str, field: str | None
) -> None:
    assert post_task(api_client, start_body())[0] == 201
    response = api_client.patch(f"/v1/apps/{APP}/tasks/t1/layout", json=data, headers=basic())
    assert_error(response, 400, code, field)
    assert api_store.get_task(APP, "t1").spec_version == 1


def test_patch_layout_of_an_ended_task_is_404(api_client: FlaskClient, api_store: TaskStore) -> None:
    assert post_task(api_client, start_body())[0] == 201
    assert api_client.delete(f"/v1/apps/{APP}/tasks/t1", headers=basic()).status_code == 200
    response = api_client.patch(f"/v1/apps/{APP}/tasks/t1/layout", json={"layout_ids": [1]}, headers=basic())
    assert_error(response, 404, "InvalidTask.NotFound")


def test_delete_requests_a_stop(api_client: FlaskClient, api_store: TaskStore) -> None:
    assert post_task(api_client, start_body())[0] == 201
    running(api_store)
    response = api_client.delete(f"/v1/apps/{APP}/tasks/t1", headers=basic())
    assert response.status_code == 200
    no_secrets(response)
    task = response.get_json()
    assert task["state"] == "stopping" and task["status"] == 1
    assert api_store.get_task(APP, "t1").stop_requested


def test_delete_of_a_queued_task_ends_it(api_client: FlaskClient) -> None:
    assert post_task(api_client, start_body())[0] == 201
    task = api_client.delete(f"/v1/apps/{APP}/tasks/t1", headers=basic()).get_json()
    assert task["state"] == "ended" and task["status"] == 3 and task["ended_at"] > 0
    # idempotent
    assert api_client.delete(f"/v1/apps/{APP}/tasks/t1", headers=basic()).get_json()["state"] == "ended"


# -- Redis down, queue down --------------------------------------------------------------------


def test_redis_down_is_503_everywhere_and_nothing_is_enqueued(
    api_client: FlaskClient, api_store: TaskStore, enqueue: Enqueue
) -> None:
    assert post_task(api_client, start_body(task_id="before"))[0] == 201
    enqueue.calls.clear()
    with redis_down(api_store):
        responses = [
            api_client.post(
                f"/v1/apps/{APP}/tasks",
                json=start_body(task_id="t9", stream_url="rtmp://h/l/s"),
                headers=basic(),
            ),
            api_client.get(f"/v1/apps/{APP}/tasks", headers=basic()),
            api_client.get(f"/v1/apps/{APP}/tasks/before", headers=basic()),
            api_client.patch(
                f"/v1/apps/{APP}/tasks/before/layout", json={"layout_ids": [1]}, headers=basic()
            ),
            api_client.delete(f"/v1/apps/{APP}/tasks/before", headers=basic()),
            api_client.get("/v1/health"),
        ]
    for response in responses:
        assert_error(response, 503, "ServiceUnavailable")
    assert enqueue.calls == []
    (before,) = api_store.list_tasks(APP)  # no t9, and nothing changed
    assert (before.task_id, before.state, before.spec_version) == ("before", TaskState.QUEUED, 1)


def test_enqueue_failure_is_503_and_ends_the_task(
    api_client: FlaskClient, api_store: TaskStore, enqueue: Enqueue, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue.fail = True
    response = api_client.post(f"/v1/apps/{APP}/tasks", json=start_body(), headers=basic())
    assert_error(response, 503, "ServiceUnavailable")
    no_secrets(response)
    assert enqueue.calls == [(APP, "t1")]
    record = api_store.get_task(APP, "t1")
    assert not record.active, "no half-started task is left behind"
    assert "nothing was started" in record.reason
    assert "brokerpassword" not in caplog.text and STREAM_KEY not in caplog.text
    enqueue.fail = False  # it never pushed: no cooldown, a retry starts at once
    assert post_task(api_client, start_body())[0] == 201


def test_unexpected_error_is_500_internal_error(
    api_app: APIFlask, api_client: FlaskClient, api_store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(app_id: str) -> list[TaskRecord]:
        raise RuntimeError(f"kaboom with {URL}")

    api_store.list_tasks = boom  # type: ignore[method-assign]
    response = api_client.get(f"/v1/apps/{APP}/tasks", headers=basic())
    data = assert_error(response, 500, "InternalError")
    assert data["request_id"] in caplog.text
    assert STREAM_KEY not in caplog.text


# -- health, OpenAPI, docs ---------------------------------------------------------------------


def test_health(api_client: FlaskClient, api_store: TaskStore) -> None:
    response = api_client.get("/v1/health")
    assert response.status_code == 200 and response.get_json() == {"redis": "ok"}
    with redis_down(api_store):
        assert_error(api_client.get("/v1/health"), 503, "ServiceUnavailable")
    assert api_client.get("/v1/health").status_code == 200


def test_openapi_document(api_client: FlaskClient) -> None:
    response = api_client.get("/openapi.json")
    assert response.status_code == 200
    spec = json.loads(response.get_data(as_text=True))
    assert spec["info"]["title"] == "rtc-mpu"
    paths = spec["paths"]
    assert set(paths["/v1/apps/{app_id}/tasks"]) >= {"get", "post"}
    assert set(paths["/v1/apps/{app_id}/tasks/{task_id}"]) >= {"get", "delete"}
    assert "patch" in paths["/v1/apps/{app_id}/tasks/{task_id}/layout"]
    assert "get" in paths["/v1/health"]
    assert spec["components"]["securitySchemes"]["BasicAuth"]["scheme"] == "basic"
    post_op = paths["/v1/apps/{app_id}/tasks"]["post"]
    assert post_op["security"] == [{"BasicAuth": []}]
    assert {"201", "400", "403", "409", "503"} <= set(post_op["responses"])
    assert "security" not in paths["/v1/health"]["get"]
    request_schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert "TaskIn" in json.dumps(request_schema)
    # stream_url may be left out when outputs has an rtmp output (issue 13)
    assert set(spec["components"]["schemas"]["TaskIn"]["required"]) == {"task_id", "channel_id"}
    assert "HTTP Basic" in spec["info"]["description"]


def test_docs_page(api_client: FlaskClient) -> None:
    assert api_client.get("/docs").status_code == 200


# -- issue 11 on the real store: malformed URLs (D4), destinations (D8), stopping (D9) ---------------


@pytest.mark.parametrize(
    "url",
    [
        "rtmp://[::1/live/x",  # the reproduction: was a 500
        "rtmp://[::1/live/x?auth=zz",
        "rtmp://h:99999/live/x",
        "rtmp://h:abc/live/x",
        "rtmp://h:/live/x",
        "rtmp://:1935/live/x",
        "rtmp://[fe80::1%25eth0]/live/x",
        "rtmp://256.1.1.1/live/x",
        "rtmp://h\u00a0/live/x",
        "rtmp://h/live/x\u202e",
        "rtmp://h/live/\u2028x",
    ],
)
def test_a_malformed_stream_url_is_400_never_500(client: FlaskClient, queue: Queue, url: str) -> None:
    response = client.post("/v1/apps/a1/tasks", json=task(stream_url=url), headers=GOOD)
    assert response.status_code == 400, response.json
    assert response.json is not None and response.json["code"] == "InvalidStreamURL.Malformed"
    assert response.json["field"] == "stream_url" and response.json["message"].startswith("stream_url: ")
    assert queue.calls == []


ALIASES = [
    "rtmp://localhost:1935/live/x",  # the reproduction
    "rtmp://LocalHost.:1935/live/x/",
    "rtmp://2130706433/live/x",
    "rtmp://0x7f000001:1935/live/x",
    "rtmp://0177.0.0.1/live/x?auth=other",
    "rtmp://127.1/live/x",
    "rtmp://[::ffff:127.0.0.1]:1935/live/x",
]


def test_one_active_task_per_destination_however_spelled(client: FlaskClient, store: TaskStore) -> None:
    assert (
        client.post("/v1/apps/a1/tasks", json=task("t0", stream_url=ALIASES[0]), headers=GOOD).status_code
        == 201
    )
    assert client.delete("/v1/apps/a1/tasks/t0", headers=GOOD).status_code == 200
    time.sleep(5.1)  # the fixture's cooldown (5 s) of localhost's destinations
    first = client.post(
        "/v1/apps/a1/tasks", json=task("t1", stream_url="rtmp://127.0.0.1:1935/live/x"), headers=GOOD
    )
    assert first.status_code == 201, first.json
    for index, alias in enumerate(ALIASES, start=2):
        answer = client.post("/v1/apps/a1/tasks", json=task(f"t{index}", stream_url=alias), headers=GOOD)
        assert answer.status_code == 409 and answer.json is not None, (alias, answer.json)
        assert answer.json["code"] == "StreamURL.InUse", alias
    token = store.claim("a1", "t1", "w1")  # pushing
    assert token is not None
    for alias in ALIASES:
        answer = client.post("/v1/apps/a1/tasks", json=task("t9", stream_url=alias), headers=GOOD)
        assert (
            answer.status_code == 409 and answer.json is not None and answer.json["code"] == "StreamURL.InUse"
        )
    store.finish("a1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    for alias in ALIASES:  # and during its cooldown
        answer = client.post("/v1/apps/a1/tasks", json=task("t9", stream_url=alias), headers=GOOD)
        assert answer.status_code == 409 and answer.json is not None
        assert answer.json["code"] == "StreamURL.CoolingDown", alias
    # Another stream, port or scheme is another destination.
    for other in ("rtmp://localhost/live/y", "rtmp://127.0.0.1:1936/live/x", "rtmps://127.0.0.1:1935/live/x"):
        assert (
            client.post(
                "/v1/apps/a1/tasks", json=task(f"o{len(other)}", stream_url=other), headers=GOOD
            ).status_code
            == 201
        )


def test_a_host_that_does_not_resolve_is_400_unresolvable(
    app_with_resolver: tuple[FlaskClient, list[str]], queue: Queue
) -> None:
    client, asked = app_with_resolver
    response = client.post(
        "/v1/apps/a1/tasks", json=task(stream_url="rtmp://push.invalid/live/k?auth=zz"), headers=GOOD
    )
    assert response.status_code == 400 and response.json is not None
    assert (response.json["code"], response.json["field"]) == ("InvalidStreamURL.Unresolvable", "stream_url")
    assert "push.invalid" in response.json["message"] and "zz" not in response.get_data(as_text=True)
    assert asked == ["push.invalid"] and queue.calls == []
    ok = client.post(
        "/v1/apps/a1/tasks", json=task(stream_url="rtmp://push.example.com/live/k"), headers=GOOD
    )
    assert ok.status_code == 201, ok.json


@pytest.fixture
def app_with_resolver(store: TaskStore, queue: Queue) -> tuple[FlaskClient, list[str]]:
    """The API with a resolver of its own (MixService's ``resolve``): push.example.com is 10.9.9.9."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host == "push.example.com":
            return ["10.9.9.9"]
        raise OSError("Name or service not known")

    app = create_app({"MPU_ACCESS_KEYS": KEYS, "STORE": store, "ENQUEUE": queue})
    app.extensions["mpu"].service.resolve = resolve
    return app.test_client(), asked


def test_stop_answers_stopping_until_the_push_ended(client: FlaskClient, store: TaskStore) -> None:
    assert client.post("/v1/apps/a1/tasks", json=task(layout_ids=[1, 2]), headers=GOOD).status_code == 201
    token = store.claim("a1", "t1", "w1")
    assert token is not None
    store.heartbeat("a1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="pushing")
    stopped = client.delete("/v1/apps/a1/tasks/t1", headers=GOOD)
    assert stopped.status_code == 200 and stopped.json is not None
    assert (stopped.json["state"], stopped.json["status"]) == ("stopping", 1)
    assert stopped.json["reason"].startswith("stopping")
    got = client.get("/v1/apps/a1/tasks/t1", headers=GOOD).json
    assert got is not None and got["state"] == "stopping"
    store.heartbeat("a1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="pushing")
    for path, body in (
        ("/v1/apps/a1/tasks/t1/layout", {"layout_ids": [6]}),
        ("/v1/apps/a1/tasks/t1", {"crop_mode": 1}),
    ):
        refused = client.patch(path, json=body, headers=GOOD)
        assert refused.status_code == 409 and refused.json is not None
        assert (refused.json["code"], refused.json["field"]) == ("InvalidTask.Stopping", None)
    before = client.get("/v1/apps/a1/tasks/t1", headers=GOOD).json
    again = client.delete("/v1/apps/a1/tasks/t1", headers=GOOD)
    assert again.status_code == 200 and again.json is not None
    assert again.json["state"] == "stopping" and again.json == before  # the task as it is
    assert store.get_task("a1", "t1").params.layout_ids == (1, 2)
    store.finish("a1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    ended = client.get("/v1/apps/a1/tasks/t1", headers=GOOD).json
    assert ended is not None and (ended["state"], ended["status"]) == ("ended", 3)
