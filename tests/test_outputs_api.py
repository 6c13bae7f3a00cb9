"""Several outputs per task over REST (issue 13): outputs on start, add/remove on a running task with
their StreamURL leases, the recordings API (list, Range, traversal, retention, other apps) and the
snapshot. Real Redis; no worker (claims and heartbeats are simulated as tests/test_api.py does)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc_mpu.api.app import create_app
from rtc_mpu.workers.model import TaskState, TaskStatus
from rtc_mpu.workers.stats import OutputStats, TaskStats
from rtc_mpu.workers.store import TaskStore
from tests.conftest import FakeDNS, StoreFactory
from tests.signing import basic_auth

KEY, SECRET = "AK1", "s3cret-1"
OTHER_KEY, OTHER_SECRET = "AK2", "s3cret-2"  # bound to app "other" only
APP = "app1"
A = "rtmp://a.example.com/live/keyA?auth=secretA"
B = "rtmp://b.example.com/live/keyB"
C = "rtmp://c.example.com/live/keyC"


def auth(key: str = KEY, secret: str = SECRET) -> dict[str, str]:
    return basic_auth(key, secret)


def make_client(store: TaskStore, recordings: Path, retention: float = 30.0) -> FlaskClient:
    app: APIFlask = create_app(
        {
            "MPU_ACCESS_KEYS": f"{KEY}:{SECRET},{OTHER_KEY}:{OTHER_SECRET}:other",
            "STORE": store,
            "ENQUEUE": lambda app_id, task_id: None,
            "MPU_RATE_LIMIT": 0,
            "MPU_RECORDINGS_DIR": str(recordings),
            "MPU_RECORDINGS_RETENTION_DAYS": retention,
        }
    )
    return app.test_client()


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store(cooldown_seconds=10.0)


@pytest.fixture
def client(store: TaskStore, tmp_path: Path) -> Iterator[FlaskClient]:
    with make_client(store, tmp_path / "rec") as test_client:
        yield test_client


def start(client: FlaskClient, **body: Any) -> Any:
    data = {"task_id": "t1", "channel_id": "room", **body}
    return client.post(f"/v1/apps/{APP}/tasks", json=data, headers=auth())


def error(response: Any, status: int, code: str, field: str | None = None) -> None:
    data = response.get_json()
    assert (response.status_code, data["code"], data["field"]) == (status, code, field), data


def running(store: TaskStore, task_id: str = "t1", **beat: Any) -> int:
    token = store.claim(APP, task_id, "host/1")
    assert token is not None
    fields: dict[str, Any] = {"status": TaskStatus.RUNNING, "state": TaskState.RUNNING, "reason": "pushing"}
    assert store.heartbeat(APP, task_id, token, **(fields | beat)) is not None
    return token


def leased(store: TaskStore, url_key: str) -> bool:
    return bool(store.client.exists(store.lease_key(url_key)))


# -- outputs on start -------------------------------------------------------------------------------


def test_start_with_outputs_lists_them_redacted_and_connecting(client: FlaskClient, store: TaskStore) -> None:
    response = start(
        client,
        stream_url=A,
        outputs=[
            {"kind": "rtmp", "url": B},
            {"kind": "record", "format": "mkv", "template": "{app_id}/{task_id}/{start_time}"},
            {"kind": "snapshot", "interval_seconds": 2},
            {"kind": "hls", "playlist": "event"},
        ],
    )
    assert response.status_code == 201, response.get_json()
    task = response.get_json()
    assert "secretA" not in response.get_data(as_text=True) and "keyA" not in response.get_data(as_text=True)
    assert [(o["output_id"], o["kind"], o["state"]) for o in task["outputs"]] == [
        ("o1", "rtmp", "connecting"),
        ("o2", "rtmp", "connecting"),
        ("o3", "record", "connecting"),
        ("o4", "snapshot", "connecting"),
        ("o5", "hls", "connecting"),
    ]
    assert task["outputs"][0]["url"] == "rtmp://a.example.com/live/key***"
    assert task["outputs"][2]["template"] == "{start_time}" and task["outputs"][2]["format"] == "mkv"
    record = store.get_task(APP, "t1")
    assert record.params.stream_url == A and record.params.outputs[1]["url"] == B
    assert record.output_leases.keys() == {"o1", "o2"} and record.last_output == 5
    assert leased(store, "rtmp://a.example.com:1935/live/keyA") and leased(
        store, "rtmp://b.example.com:1935/live/keyB"
    )
    # The worker's report is merged per output.
    running(
        store,
        stats=TaskStats(
            outputs=(
                OutputStats("o1", "rtmp", "connected", bytes_written=1000, bitrate_bps=2_000_000),
                OutputStats("o2", "rtmp", "reconnecting", reconnects=2, error="connection refused"),
            )
        ),
    )
    outputs = client.get(f"/v1/apps/{APP}/tasks/t1", headers=auth()).get_json()["outputs"]
    assert outputs[0]["state"] == "connected" and outputs[0]["stats"]["bytes_written"] == 1000
    assert outputs[1]["state"] == "reconnecting" and outputs[1]["error"] == "connection refused"
    assert outputs[1]["stats"]["reconnects"] == 2 and outputs[2]["state"] == "connecting"


def test_stream_url_is_optional_with_an_rtmp_output(client: FlaskClient, store: TaskStore) -> None:
    response = start(client, outputs=[{"kind": "record"}, {"kind": "rtmp", "url": B}])
    assert response.status_code == 201, response.get_json()
    assert [o["output_id"] for o in response.get_json()["outputs"]] == ["o1", "o2"]
    assert store.get_task(APP, "t1").params.stream_url == B
    assert response.get_json()["stream_url"].startswith("rtmp://b.example.com/")


def test_a_task_needs_an_rtmp_output(client: FlaskClient) -> None:
    error(start(client, outputs=[{"kind": "record"}]), 400, "MissingParameter", "stream_url")
    error(start(client), 400, "MissingParameter", "stream_url")


@pytest.mark.parametrize(
    ("outputs", "code", "field"),
    [
        ([{"kind": "webrtc"}], "InvalidOutput.Kind", "outputs.0.kind"),
        ([{"kind": "rtc"}, {"kind": "rtc"}], "InvalidOutput.Duplicate", "outputs.1"),
        ([{"kind": "record"}] * 10, "InvalidOutput.LimitExceeded", "outputs.9"),
        ([{"kind": "record", "template": "../{start_time}"}], "InvalidOutput.Template", "outputs.0.template"),
        (
            [{"kind": "record", "template": "a/../{start_time}"}],
            "InvalidOutput.Template",
            "outputs.0.template",
        ),
        (
            [{"kind": "record", "template": "/etc/{start_time}"}],
            "InvalidOutput.Template",
            "outputs.0.template",
        ),
        ([{"kind": "record", "template": "{nope}"}], "InvalidOutput.Template", "outputs.0.template"),
        ([{"kind": "record", "format": "avi"}], "InvalidParameter", "outputs.0.format"),
        (
            [{"kind": "rtmp", "url": "http://b.example.com/live/x"}],
            "InvalidStreamURL.Malformed",
            "outputs.0.url",
        ),
        ([{"kind": "rtmp", "url": "file:/etc/passwd"}], "InvalidStreamURL.Malformed", "outputs.0.url"),
        ([{"kind": "rtmp"}], "InvalidStreamURL.Malformed", "outputs.0.url"),
        (
            [{"kind": "rtmp", "url": "rtmp://nowhere.invalid/l/k"}],
            "InvalidStreamURL.Unresolvable",
            "outputs.0.url",
        ),
        (
            [{"kind": "rtmp", "url": B}, {"kind": "rtmp", "url": B}],
            "InvalidOutput.Duplicate",
            "outputs.1.url",
        ),
        # the same destination spelled differently: case, default port, query, slashes
        (
            [{"kind": "rtmp", "url": "RTMP://A.Example.COM:1935//live/keyA?other=1"}],
            "InvalidOutput.Duplicate",
            "outputs.0.url",
        ),
        ([{"kind": "snapshot"}, {"kind": "snapshot"}], "InvalidOutput.Duplicate", "outputs.1"),
        ([{"kind": "snapshot", "interval_seconds": 0}], "InvalidParameter", "outputs.0.interval_seconds"),
        ([{"kind": "hls", "segment_seconds": 60}], "InvalidParameter", "outputs.0.segment_seconds"),
        ([{"kind": "hls", "playlist": "x"}], "InvalidParameter", "outputs.0.playlist"),
        ([{"kind": "snapshot", "url": B}], "InvalidParameter", "outputs.0.url"),
    ],
)
def test_bad_outputs_are_400_with_code_and_field(
    client: FlaskClient, store: TaskStore, outputs: list[Any], code: str, field: str
) -> None:
    error(start(client, stream_url=A, outputs=outputs), 400, code, field)
    assert store.list_tasks(APP) == []
    assert not leased(store, "rtmp://a.example.com:1935/live/keyA")


def test_same_host_by_name_and_address_is_a_duplicate(client: FlaskClient, fake_dns: FakeDNS) -> None:
    fake_dns.names["b.example.com"] = ["10.1.2.3"]
    response = start(client, stream_url=B, outputs=[{"kind": "rtmp", "url": "rtmp://10.1.2.3/live/keyB"}])
    error(response, 400, "InvalidOutput.Duplicate", "outputs.0.url")


def test_leases_are_all_or_none(client: FlaskClient, store: TaskStore) -> None:
    assert start(client, task_id="holder", stream_url=C).status_code == 201
    response = start(client, stream_url=A, outputs=[{"kind": "rtmp", "url": B}, {"kind": "rtmp", "url": C}])
    error(response, 409, "StreamURL.InUse", "outputs.1.url")
    assert not leased(store, "rtmp://a.example.com:1935/live/keyA")
    assert not leased(store, "rtmp://b.example.com:1935/live/keyB")
    # A and B are still free.
    assert start(client, stream_url=A, outputs=[{"kind": "rtmp", "url": B}]).status_code == 201


D = "rtmp://d.example.com/live/keyD?auth=secretD"
#: Secrets of A-D and the holder's TaskId: never in an answer to another task's request.
HIDDEN = ("keyA", "keyB", "keyC", "keyD", "secretA", "secretD", "holder")


def lease_state(store: TaskStore) -> dict[str, str]:
    """Every lease in the store: key -> holder."""

    def text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {
        text(key): text(store.client.get(key))
        for key in store.client.scan_iter(match=f"{store.prefix}:lease:*")
    }


def refused(response: Any, status: int, code: str, field: str) -> str:
    """The message of a refusal, after checking the error and that it shows no stream key or holder."""
    error(response, status, code, field)
    message: str = response.get_json()["message"]
    assert not any(hidden in message for hidden in HIDDEN), message
    return message


@pytest.mark.parametrize("with_stream_url", [True, False])
def test_a_refused_start_names_the_output_and_takes_no_lease(
    client: FlaskClient, store: TaskStore, with_stream_url: bool
) -> None:
    assert start(client, task_id="holder", stream_url=C).status_code == 201
    before = lease_state(store)
    outputs: list[dict[str, Any]] = [
        {"kind": "record"},
        {"kind": "rtmp", "url": B},
        {"kind": "snapshot"},
        {"kind": "rtmp", "url": C + "?auth=another"},  # outputs.3: o5 after stream_url, o4 without
        {"kind": "rtmp", "url": D},
    ]
    body: dict[str, Any] = {"stream_url": A} if with_stream_url else {}
    message = refused(start(client, outputs=outputs, **body), 409, "StreamURL.InUse", "outputs.3.url")
    output_id = "o5" if with_stream_url else "o4"
    assert message == (
        f"outputs.3.url: output {output_id} (rtmp://c.example.com/live/key***) is in use by another active"
        " task; nothing was started"
    )
    assert lease_state(store) == before  # none of A, B, D (nor their addresses) was leased
    assert [r.task_id for r in store.list_tasks(APP)] == ["holder"]
    # Once C is left out, the same outputs start.
    del outputs[3]
    assert start(client, outputs=outputs, **body).status_code == 201


def test_a_refused_start_names_every_refused_output(client: FlaskClient, store: TaskStore) -> None:
    key_a = "rtmp://a.example.com:1935/live/keyA"
    assert start(client, task_id="holder", stream_url=C).status_code == 201
    store.client.set(store.cooldown_key(key_a), f"{APP}/old", px=3000)
    before = lease_state(store)
    outputs = [{"kind": "rtmp", "url": url} for url in (B, A, D, C)]
    # In use leads (and gives the field) even after a URL cooling down.
    message = refused(start(client, outputs=outputs), 409, "StreamURL.InUse", "outputs.3.url")
    assert message == (
        "outputs.3.url: output o4 (rtmp://c.example.com/live/key***) is in use by another active task;"
        " also output o2 (rtmp://a.example.com/live/key***) was used by a task that ended less than 10 s"
        " ago (free in 3 s); nothing was started"
    )
    assert lease_state(store) == before
    # Both cooling down: the first in the request's order leads, the longest rest is the wait.
    assert client.delete(f"/v1/apps/{APP}/tasks/holder", headers=auth()).status_code == 200
    for key in store.client.scan_iter(match=store.cooldown_key("*/live/keyC")):  # its address's too
        store.client.pexpire(key, 8000)
    message = refused(start(client, outputs=outputs), 409, "StreamURL.CoolingDown", "outputs.1.url")
    assert message == (
        "outputs.1.url: output o2 (rtmp://a.example.com/live/key***) was used by a task that ended less"
        " than 10 s ago (free in 3 s); also output o4 (rtmp://c.example.com/live/key***) was used by a task"
        " that ended less than 10 s ago (free in 8 s); try again in 8 s; nothing was started"
    )
    assert lease_state(store) == {}
    # One: no list.
    message = refused(start(client, stream_url=A), 409, "StreamURL.CoolingDown", "stream_url")
    assert message == (
        "stream_url: output o1 (rtmp://a.example.com/live/key***) was used by a task that ended less than"
        " 10 s ago; try again in 3 s; nothing was started"
    )


def test_a_refusal_by_another_address_of_the_host_names_it(
    client: FlaskClient, store: TaskStore, fake_dns: FakeDNS
) -> None:
    fake_dns.names["b.example.com"] = ["10.1.2.3"]
    assert start(client, task_id="holder", stream_url="rtmp://10.1.2.3/live/keyB").status_code == 201
    message = refused(
        start(client, stream_url=A, outputs=[{"kind": "rtmp", "url": B}]),
        409,
        "StreamURL.InUse",
        "outputs.0.url",
    )
    assert message.startswith(
        "outputs.0.url: output o2 (rtmp://b.example.com/live/key***) (the same destination:"
        " rtmp://10.1.2.3:1935/live/key***) is in use by another active task"
    ), message


def test_the_rpc_dialect_names_the_stream_url(client: FlaskClient, store: TaskStore, tmp_path: Path) -> None:
    """The vendor's StartMPUTask has one output, its StreamURL (o1): the Message names it."""
    rpc = create_app({"MPU_AUTH_DISABLED": True, "STORE": store, "ENQUEUE": lambda a, t: None}).test_client()
    call = {"Action": "StartMPUTask", "AppId": APP, "ChannelId": "room", "TaskId": "r1", "StreamURL": D}
    assert start(client, task_id="holder", stream_url=D).status_code == 201
    in_use = rpc.post("/", data=call)
    assert in_use.status_code == 409 and in_use.json is not None
    assert in_use.json["Code"] == "StreamURL.InUse"
    assert in_use.json["Message"] == (
        "StreamURL: output o1 (rtmp://d.example.com/live/key***) is in use by another active task;"
        " nothing was started"
    )
    assert client.delete(f"/v1/apps/{APP}/tasks/holder", headers=auth()).status_code == 200
    cooling = rpc.post("/", data=call)
    assert cooling.status_code == 409 and cooling.json is not None
    assert cooling.json["Code"] == "StreamURL.CoolingDown"
    assert cooling.json["Message"] == (
        "StreamURL: output o1 (rtmp://d.example.com/live/key***) was used by a task that ended less than"
        " 10 s ago; try again in 10 s; nothing was started"
    )
    xml = rpc.post("/", data={**call, "Format": "XML"})
    assert xml.status_code == 409 and b"output o1 (rtmp://d.example.com/live/key***)" in xml.data
    for answer in (in_use, cooling, xml):
        text = answer.get_data(as_text=True)
        assert not any(hidden in text for hidden in HIDDEN), text
    assert lease_state(store) == {}


# Each RTMP output of a start request: free, held by an active task, cooling down for some seconds,
# or held by a task that ended (free).
LEASE_STATES = st.sampled_from(["free", "in_use", "cooling", "ended_holder"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    states=st.lists(st.tuples(LEASE_STATES, st.integers(1, 9), st.booleans()), min_size=1, max_size=5),
    with_stream_url=st.booleans(),
)
def test_a_start_takes_every_lease_or_none_and_names_the_first_refusal(
    client: FlaskClient,
    store: TaskStore,
    states: list[tuple[str, int, bool]],
    with_stream_url: bool,
) -> None:
    for key in store.client.scan_iter(match=f"{store.prefix}:*"):
        store.client.delete(key)
    outputs: list[dict[str, Any]] = []
    expected: list[tuple[int, str, int]] = []  # (output number - 1, state, seconds) of the refused ones
    for n, (state, seconds, record_before) in enumerate(states):
        if record_before and outputs:  # stream_url, when given, is the first RTMP output
            outputs.append({"kind": "record", "template": f"r{n}/{{start_time}}"})
        url = f"rtmp://h{n}.example.com/live/stream{n}?auth=tok{n}"
        key = f"rtmp://h{n}.example.com:1935/live/stream{n}"
        if state == "in_use":
            assert start(client, task_id=f"holder{n}", stream_url=url).status_code == 201
        elif state == "cooling":
            store.client.set(store.cooldown_key(key), f"{APP}/old", px=seconds * 1000)
        elif state == "ended_holder":
            store.client.set(store.lease_key(key), f"{APP}/gone")
        if state in ("in_use", "cooling"):
            expected.append((len(outputs), state, seconds))
        outputs.append({"kind": "rtmp", "url": url})
    body: dict[str, Any] = {"outputs": outputs}
    if with_stream_url:
        body = {"stream_url": outputs[0]["url"], "outputs": outputs[1:]}
    before = lease_state(store)
    response = start(client, task_id="t", **body)
    if not expected:
        assert response.status_code == 201, response.get_json()
        task = store.get_task(APP, "t")
        leases = lease_state(store)
        assert all(leases[store.lease_key(k)] == f"{APP}/t" for k in task.lease_keys)
        return
    in_use = [e for e in expected if e[1] == "in_use"]
    index = (in_use or expected)[0][0]
    field = "stream_url" if with_stream_url and index == 0 else f"outputs.{index - with_stream_url}.url"
    code = "StreamURL.InUse" if in_use else "StreamURL.CoolingDown"
    message = refused(response, 409, code, field)
    assert message.startswith(f"{field}: output o{index + 1} (rtmp://h"), message
    assert lease_state(store) == before  # not one lease more
    assert store.client.exists(store.task_key(APP, "t")) == 0
    for other, _, _ in expected:
        assert f"output o{other + 1} (rtmp://h" in message, message
    assert not any(f"tok{n}" in message or f"stream{n}" in message for n in range(len(states)))
    if not in_use:
        assert message.endswith(f"try again in {max(e[2] for e in expected)} s; nothing was started")


def test_every_output_is_released_with_a_cooldown_when_the_task_ends(
    client: FlaskClient, store: TaskStore
) -> None:
    assert start(client, stream_url=A, outputs=[{"kind": "rtmp", "url": B}]).status_code == 201
    assert client.delete(f"/v1/apps/{APP}/tasks/t1", headers=auth()).status_code == 200
    assert not leased(store, "rtmp://b.example.com:1935/live/keyB")
    error(start(client, task_id="t2", stream_url=B), 409, "StreamURL.CoolingDown", "stream_url")
    error(
        start(client, task_id="t2", stream_url=C, outputs=[{"kind": "rtmp", "url": A}]),
        409,
        "StreamURL.CoolingDown",
        "outputs.0.url",
    )


def test_the_rpc_dialect_has_one_output(client: FlaskClient, store: TaskStore) -> None:
    assert start(client, stream_url=A).status_code == 201
    record = store.get_task(APP, "t1")
    assert record.params.outputs == ({"output_id": "o1", "kind": "rtmp", "url": A},)
    assert record.leases_of("o1") == record.lease_keys


# -- add and remove on a running task ---------------------------------------------------------------


def test_add_and_remove_outputs_of_a_running_task(client: FlaskClient, store: TaskStore) -> None:
    assert start(client, stream_url=A).status_code == 201
    running(store)
    version = store.get_task(APP, "t1").spec_version
    response = client.post(
        f"/v1/apps/{APP}/tasks/t1/outputs", json={"kind": "rtmp", "url": B}, headers=auth()
    )
    assert response.status_code == 201, response.get_json()
    added = response.get_json()
    assert (added["output_id"], added["kind"], added["state"]) == ("o2", "rtmp", "connecting")
    record = store.get_task(APP, "t1")
    assert record.spec_version == version + 1  # the worker applies it at its next heartbeat
    key_b = "rtmp://b.example.com:1935/live/keyB"
    assert leased(store, key_b) and store.client.pttl(store.lease_key(key_b)) > 0  # renewed by heartbeats
    response = client.post(f"/v1/apps/{APP}/tasks/t1/outputs", json={"kind": "snapshot"}, headers=auth())
    assert response.get_json()["output_id"] == "o3"
    # Removing an RTMP output releases its lease with its own cooldown; A keeps pushing.
    assert client.delete(f"/v1/apps/{APP}/tasks/t1/outputs/o2", headers=auth()).status_code == 204
    assert not leased(store, key_b) and store.client.exists(store.cooldown_key(key_b))
    assert leased(store, "rtmp://a.example.com:1935/live/keyA")
    error(start(client, task_id="t2", stream_url=B), 409, "StreamURL.CoolingDown", "stream_url")
    response = client.post(
        f"/v1/apps/{APP}/tasks/t1/outputs", json={"kind": "rtmp", "url": B}, headers=auth()
    )
    assert refused(response, 409, "StreamURL.CoolingDown", "url") == (
        "url: rtmp://b.example.com/live/key*** was used by a task that ended less than 10 s ago; try again"
        " in 10 s; the output was not added (the task's other outputs are unchanged)"
    )
    # Ids are never reused.
    response = client.post(
        f"/v1/apps/{APP}/tasks/t1/outputs", json={"kind": "rtmp", "url": C}, headers=auth()
    )
    assert response.get_json()["output_id"] == "o4"
    assert client.delete(f"/v1/apps/{APP}/tasks/t1/outputs/o1", headers=auth()).status_code == 204
    record = store.get_task(APP, "t1")
    assert record.params.stream_url == C and [o["output_id"] for o in record.params.outputs] == ["o3", "o4"]
    error(client.delete(f"/v1/apps/{APP}/tasks/t1/outputs/o4", headers=auth()), 409, "InvalidOutput.Required")
    error(client.delete(f"/v1/apps/{APP}/tasks/t1/outputs/o9", headers=auth()), 404, "InvalidOutput.NotFound")
    # A PATCH after the changes keeps them.
    assert (
        client.patch(f"/v1/apps/{APP}/tasks/t1", json={"layout_ids": [2]}, headers=auth()).status_code == 200
    )
    assert [o["output_id"] for o in store.get_task(APP, "t1").params.outputs] == ["o3", "o4"]
    # The task's end releases the added output too.
    store.finish(
        APP,
        "t1",
        None if not store.get_task(APP, "t1").fence else store.get_task(APP, "t1").fence,
        TaskStatus.STOPPED_BY_USER,
        "done",
    )
    assert not leased(store, "rtmp://c.example.com:1935/live/keyC")
    assert store.client.exists(store.cooldown_key("rtmp://c.example.com:1935/live/keyC"))


def test_add_output_refusals(client: FlaskClient, store: TaskStore) -> None:
    assert (
        start(client, stream_url=A, outputs=[{"kind": "record", "template": "{output_id}"}] * 8).status_code
        == 201
    )
    assert start(client, task_id="other", stream_url=C).status_code == 201
    url = f"/v1/apps/{APP}/tasks/t1/outputs"
    before, outputs = lease_state(store), store.get_task(APP, "t1").params.outputs
    response = client.post(url, json={"kind": "rtmp", "url": C + "?auth=x"}, headers=auth())
    assert refused(response, 409, "StreamURL.InUse", "url") == (
        "url: rtmp://c.example.com/live/key*** is in use by another active task; the output was not added"
        " (the task's other outputs are unchanged)"
    )
    assert lease_state(store) == before and store.get_task(APP, "t1").params.outputs == outputs
    error(
        client.post(url, json={"kind": "rtmp", "url": "rtmp://A.example.com/live/keyA"}, headers=auth()),
        400,
        "InvalidOutput.Duplicate",
        "url",
    )
    error(client.post(url, json={"kind": "nope"}, headers=auth()), 400, "InvalidOutput.Kind", "kind")
    error(
        client.post(url, json={"kind": "record", "template": "../x{start_time}"}, headers=auth()),
        400,
        "InvalidOutput.Template",
        "template",
    )
    assert client.post(url, json={"kind": "snapshot"}, headers=auth()).status_code == 201  # the 10th
    error(client.post(url, json={"kind": "hls"}, headers=auth()), 400, "InvalidOutput.LimitExceeded")
    error(
        client.post(f"/v1/apps/{APP}/tasks/nope/outputs", json={"kind": "hls"}, headers=auth()),
        404,
        "InvalidTask.NotFound",
    )
    running(store)
    assert client.delete(f"/v1/apps/{APP}/tasks/t1", headers=auth()).status_code == 200  # stopping
    error(client.post(url, json={"kind": "rtmp", "url": B}, headers=auth()), 409, "InvalidTask.Stopping")
    error(client.delete(f"{url}/o2", headers=auth()), 409, "InvalidTask.Stopping")
    assert not leased(store, "rtmp://b.example.com:1935/live/keyB")


def test_another_apps_key_is_403(client: FlaskClient) -> None:
    assert start(client, stream_url=A).status_code == 201
    url = f"/v1/apps/{APP}/tasks/t1"
    other = auth(OTHER_KEY, OTHER_SECRET)
    assert client.post(f"{url}/outputs", json={"kind": "hls"}, headers=other).status_code == 403
    assert client.delete(f"{url}/outputs/o1", headers=other).status_code == 403
    assert client.get(f"{url}/recordings", headers=other).status_code == 403
    assert client.get(f"{url}/recordings/a.mp4", headers=other).status_code == 403
    assert client.get(f"{url}/snapshot.jpg", headers=other).status_code == 403


# -- recordings -------------------------------------------------------------------------------------


def write_recording(folder: Path, name: str, size: int, sidecar: dict[str, Any] | None = None) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(i % 251 for i in range(size)))
    if sidecar is not None:
        Path(str(path) + ".json").write_text(json.dumps(sidecar))
    return path


def test_recordings_are_listed_and_served_with_range(client: FlaskClient, tmp_path: Path) -> None:
    folder = tmp_path / "rec" / APP / "t1"
    write_recording(
        folder,
        "20261201T101500Z_o2.mp4",
        1000,
        {
            "name": "20261201T101500Z_o2.mp4",
            "size_bytes": 1000,
            "duration_seconds": 60.0,
            "start_time": "2026-12-01T10:15:00Z",
        },
    )
    write_recording(folder, "sub/20261201T101600Z_o2.mkv", 500)  # in progress: no sidecar
    (folder / "notes.txt").write_text("not a recording")
    response = client.get(f"/v1/apps/{APP}/tasks/t1/recordings", headers=auth())  # no task record needed
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["recordings"] == [
        {
            "name": "20261201T101500Z_o2.mp4",
            "size_bytes": 1000,
            "duration_seconds": 60.0,
            "start_time": "2026-12-01T10:15:00Z",
            "url": f"/v1/apps/{APP}/tasks/t1/recordings/20261201T101500Z_o2.mp4",
        },
        {
            "name": "sub/20261201T101600Z_o2.mkv",
            "size_bytes": 500,
            "duration_seconds": None,
            "start_time": "2026-12-01T10:16:00Z",
            "url": f"/v1/apps/{APP}/tasks/t1/recordings/sub/20261201T101600Z_o2.mkv",
        },
    ]
    whole = client.get(f"/v1/apps/{APP}/tasks/t1/recordings/20261201T101500Z_o2.mp4", headers=auth())
    assert whole.status_code == 200 and whole.mimetype == "video/mp4" and len(whole.data) == 1000
    part = client.get(
        f"/v1/apps/{APP}/tasks/t1/recordings/20261201T101500Z_o2.mp4",
        headers={**auth(), "Range": "bytes=0-99"},
    )
    assert part.status_code == 206 and part.data == whole.data[:100]
    assert part.headers["Content-Range"] == "bytes 0-99/1000"
    tail = client.get(
        f"/v1/apps/{APP}/tasks/t1/recordings/sub/20261201T101600Z_o2.mkv",
        headers={**auth(), "Range": "bytes=400-"},
    )
    assert tail.status_code == 206 and len(tail.data) == 100
    # Delete: file and sidecar.
    assert (
        client.delete(
            f"/v1/apps/{APP}/tasks/t1/recordings/20261201T101500Z_o2.mp4", headers=auth()
        ).status_code
        == 204
    )
    assert (
        not (folder / "20261201T101500Z_o2.mp4").exists()
        and not (folder / "20261201T101500Z_o2.mp4.json").exists()
    )
    error(
        client.delete(f"/v1/apps/{APP}/tasks/t1/recordings/20261201T101500Z_o2.mp4", headers=auth()),
        404,
        "InvalidRecording.NotFound",
    )
    assert client.get(f"/v1/apps/{APP}/tasks/none/recordings", headers=auth()).get_json() == {
        "recordings": []
    }


@pytest.mark.parametrize(
    "name",
    [
        "../t2/x.mp4",
        "%2e%2e/t2/x.mp4",
        "..%2Ft2%2Fx.mp4",
        "sub/../../t2/x.mp4",
        "/etc/passwd.mp4",
        "%2Fetc%2Fpasswd.mp4",
        ".hidden.mp4",
        "x.mp4.json",
        "notes.txt",
        "link.mp4",
        "linkdir/x.mp4",
        "x%00.mp4",
    ],
)
def test_recording_names_cannot_leave_the_task_folder(client: FlaskClient, tmp_path: Path, name: str) -> None:
    root = tmp_path / "rec"
    write_recording(root / APP / "t2", "x.mp4", 10)
    write_recording(
        root / APP / "t1",
        "x.mp4",
        10,
        {"name": "x.mp4", "size_bytes": 10, "duration_seconds": 1, "start_time": None},
    )
    (root / APP / "t1" / ".hidden.mp4").write_bytes(b"h")
    (root / APP / "t1" / "notes.txt").write_bytes(b"n")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"secret")
    os.symlink(outside, root / APP / "t1" / "link.mp4")
    os.symlink(root / APP / "t2", root / APP / "t1" / "linkdir")
    response = client.get(f"/v1/apps/{APP}/tasks/t1/recordings/{name}", headers=auth())
    if response.status_code == 308:  # "recordings//etc": Werkzeug merges the slashes (still inside)
        assert response.headers["Location"].endswith("/tasks/t1/recordings/etc/passwd.mp4")
    else:
        assert response.status_code in (400, 404), (name, response.status_code)
        assert response.get_json()["code"] in ("InvalidRecording.NotFound", "InvalidParameter", "NotFound")
    assert client.delete(f"/v1/apps/{APP}/tasks/t1/recordings/{name}", headers=auth()).status_code in (
        308,
        400,
        404,
    )
    assert outside.exists() and (root / APP / "t2" / "x.mp4").exists()
    listed = client.get(f"/v1/apps/{APP}/tasks/t1/recordings", headers=auth()).get_json()["recordings"]
    assert [r["name"] for r in listed] == ["x.mp4"]  # no symlinks, no sidecars, no other files


def test_retention_deletes_old_recordings_when_listing(store: TaskStore, tmp_path: Path) -> None:
    folder = tmp_path / "rec" / APP / "t1"
    old = write_recording(
        folder,
        "old_o1.flv",
        10,
        {"name": "old_o1.flv", "size_bytes": 10, "duration_seconds": 1, "start_time": None},
    )
    write_recording(folder, "new_o1.flv", 10)
    stamp = time.time() - 3 * 86400
    os.utime(old, (stamp, stamp))
    with make_client(store, tmp_path / "rec", retention=0) as forever:
        assert (
            len(forever.get(f"/v1/apps/{APP}/tasks/t1/recordings", headers=auth()).get_json()["recordings"])
            == 2
        )
    with make_client(store, tmp_path / "rec", retention=2) as keep_two_days:
        listed = keep_two_days.get(f"/v1/apps/{APP}/tasks/t1/recordings", headers=auth()).get_json()[
            "recordings"
        ]
    assert [r["name"] for r in listed] == ["new_o1.flv"]
    assert not old.exists() and not Path(str(old) + ".json").exists()


# -- snapshots ----------------------------------------------------------------------------------------


def test_snapshot_is_404_until_the_worker_puts_one(client: FlaskClient, store: TaskStore) -> None:
    assert (
        start(client, stream_url=A, outputs=[{"kind": "snapshot", "interval_seconds": 1}]).status_code == 201
    )
    url = f"/v1/apps/{APP}/tasks/t1/snapshot.jpg"
    error(client.get(url, headers=auth()), 404, "InvalidSnapshot.NotReady")
    jpeg = b"\xff\xd8\xff\xe0fakejpeg\xff\xd9"
    store.put_snapshot(APP, "t1", jpeg, 1_800_000_000.25, 60)
    response = client.get(url, headers=auth())
    assert response.status_code == 200 and response.mimetype == "image/jpeg" and response.data == jpeg
    assert response.headers["X-Snapshot-Taken-At"] == "1800000000.250"
    assert response.headers["Last-Modified"].endswith("GMT")


def test_no_snapshot_output_no_snapshot(client: FlaskClient, store: TaskStore) -> None:
    assert start(client, stream_url=A).status_code == 201
    store.put_snapshot(APP, "t1", b"\xff\xd8stale\xff\xd9", time.time(), 60)
    error(
        client.get(f"/v1/apps/{APP}/tasks/t1/snapshot.jpg", headers=auth()), 404, "InvalidSnapshot.NotReady"
    )


# -- property: arbitrary outputs never give a 5xx -------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
OUTPUT = st.fixed_dictionaries(
    {"kind": st.sampled_from(["rtmp", "record", "hls", "snapshot", "rtc", "x"]) | st.text(max_size=5)},
    optional={
        "url": st.sampled_from([A, B, "rtmp://x.invalid/l/k", "http://a/b/c", ""]) | st.text(max_size=30),
        "format": st.sampled_from(["mp4", "flv", "mkv", "avi"]) | JSON,
        "template": st.sampled_from(["{start_time}", "../x", "/abs/{output_id}", "a/{task_id}/{output_id}"])
        | st.text(max_size=30),
        "max_duration_seconds": st.floats() | JSON,
        "segment_seconds": st.floats() | JSON,
        "playlist": st.sampled_from(["sliding", "event"]) | JSON,
        "interval_seconds": st.floats() | JSON,
        "extra": JSON,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outputs=st.lists(OUTPUT, max_size=12) | JSON)
def test_arbitrary_outputs_never_give_a_5xx(client: FlaskClient, store: TaskStore, outputs: Any) -> None:
    response = start(client, task_id="fuzz", stream_url=C, outputs=outputs)
    assert response.status_code < 500, response.get_json()
    if response.status_code == 201:
        client.delete(f"/v1/apps/{APP}/tasks/fuzz", headers=auth())
        store.client.delete(*store.client.keys(f"{store.prefix}:cooldown:*") or ["none"])
    added = client.post(f"/v1/apps/{APP}/tasks/fuzz/outputs", json=outputs, headers=auth())
    assert added.status_code < 500, added.get_json()


def test_records_of_older_versions_have_one_output() -> None:
    from rtc_mpu.workers.model import TaskParams

    params = TaskParams.from_dict({"channel_id": "room", "stream_url": A})
    assert params.outputs == ({"output_id": "o1", "kind": "rtmp", "url": A},)
    assert [o.output_id for o in params.output_specs()] == ["o1"]
