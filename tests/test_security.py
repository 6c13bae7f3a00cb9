"""Security pass (issue #7): stream keys never leave in clear (API answers of both dialects, errors,
logs), AppId isolation in both dialects, and no secrets in the repository."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.workers.store import TaskStore
from tests.signing import basic_auth

#: The secret parts of every StreamURL used here: a stream key and an auth token.
STREAM_KEY, TOKEN = "sk-7f3a9b2c41d0", "tok-5e8d1c0ab9f7"
URL = f"rtmp://cdn.example.com/live/{STREAM_KEY}?auth_key={TOKEN}"
KEYS = "k1:s1,bound:s2:app1"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(task_store: TaskStore) -> FlaskClient:
    return create_app(
        {"MPU_ACCESS_KEYS": KEYS, "STORE": task_store, "ENQUEUE": lambda a, t: None}
    ).test_client()


def assert_clean(text: str, what: str) -> None:
    for secret in (STREAM_KEY, TOKEN):
        assert secret not in text, f"{what} shows {secret!r}: {text[:300]}"


def test_stream_keys_never_leave_through_the_rest_api_or_its_logs(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = basic_auth("k1", "s1")
    body = {"task_id": "t1", "channel_id": "c", "stream_url": URL}
    answers: list[Any] = [
        client.post("/v1/apps/app1/tasks", json=body, headers=auth),
        client.post("/v1/apps/app1/tasks", json={**body, "task_id": "t2"}, headers=auth),  # URL in use
        client.post("/v1/apps/app1/tasks", json={**body, "task_id": "t3", "media_encode": 999}, headers=auth),
        client.get("/v1/apps/app1/tasks/t1", headers=auth),
        client.get("/v1/apps/app1/tasks", headers=auth),
        client.patch("/v1/apps/app1/tasks/t1/layout", json={"layout_ids": [1, 2]}, headers=auth),
        client.delete("/v1/apps/app1/tasks/t1", headers=auth),
        client.post("/v1/apps/app1/tasks", json={**body, "task_id": "t4"}, headers=auth),  # cooling down
    ]
    assert [a.status_code for a in answers] == [201, 409, 400, 200, 200, 200, 200, 409]
    for answer in answers:
        assert_clean(answer.get_data(as_text=True), f"{answer.request.method} {answer.request.path}")
    assert_clean(caplog.text, "the API's log")


def test_stream_keys_never_leave_through_the_rpc_dialect(open_rpc: FlaskClient) -> None:
    start = {"Action": "StartMPUTask", "AppId": "app1", "ChannelId": "c", "TaskId": "r1", "StreamURL": URL}
    answers = [
        open_rpc.post("/", data=start),
        open_rpc.post("/", data={**start, "TaskId": "r2"}),  # in use
        open_rpc.post("/", data={**start, "TaskId": "r3", "StreamURL": URL.replace("rtmp", "file")}),
        open_rpc.get("/?" + urlencode({"Action": "GetMPUTaskStatus", "AppId": "app1", "TaskId": "r1"})),
        open_rpc.get(
            "/?" + urlencode({"Action": "GetMPUTaskStatus", "AppId": "app1", "TaskId": "r1", "Format": "XML"})
        ),
    ]
    assert [a.status_code for a in answers] == [200, 409, 400, 200, 200]
    for answer in answers:
        assert_clean(answer.get_data(as_text=True), "an RPC answer")


@pytest.fixture
def open_rpc(task_store: TaskStore) -> FlaskClient:
    return create_app(
        {"MPU_AUTH_DISABLED": True, "STORE": task_store, "ENQUEUE": lambda a, t: None}
    ).test_client()


def test_app_isolation_in_both_dialects(client: FlaskClient) -> None:
    owner, bound = basic_auth("k1", "s1"), basic_auth("bound", "s2")
    body = {"task_id": "t1", "channel_id": "c", "stream_url": "rtmp://h/live/a"}
    assert client.post("/v1/apps/app2/tasks", json=body, headers=owner).status_code == 201
    # A key bound to app1 cannot read, change or stop app2's task, nor create there.
    for method, path, payload in [
        ("GET", "/v1/apps/app2/tasks/t1", None),
        ("GET", "/v1/apps/app2/tasks", None),
        ("PATCH", "/v1/apps/app2/tasks/t1/layout", {"layout_ids": [1]}),
        ("PATCH", "/v1/apps/app2/tasks/t1", {"sub_spec_users": ["x"]}),
        ("DELETE", "/v1/apps/app2/tasks/t1", None),
        ("POST", "/v1/apps/app2/tasks", {**body, "task_id": "t9", "stream_url": "rtmp://h/live/b"}),
        (
            "POST",
            "/v1/apps/app2/layouts",
            {"name": "x", "panes": [{"pane_id": 0, "x": 0, "y": 0, "width": 1, "height": 1}]},
        ),
        ("GET", "/v1/apps/app2/layouts", None),
    ]:
        answer = client.open(path, method=method, json=payload, headers=bound)
        assert answer.status_code == 403 and answer.json is not None, (method, path)
        assert answer.json["code"] == "Forbidden", (method, path)
    # Tasks are per AppId: the same TaskId under app1 is another task (not found there).
    answer = client.get("/v1/apps/app1/tasks/t1", headers=owner)
    assert (
        answer.status_code == 404
        and answer.json is not None
        and answer.json["code"] == "InvalidTask.NotFound"
    )
    assert client.get("/v1/apps/app2/tasks/t1", headers=owner).status_code == 200


def test_no_secrets_in_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, timeout=30
    ).stdout.split(b"\0")
    patterns = {
        "a private key": re.compile(rb"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
        "an Alibaba Cloud AccessKeyId": re.compile(rb"\bLTAI[0-9A-Za-z]{12,30}\b"),
        "an AWS access key": re.compile(rb"\bAKIA[0-9A-Z]{16}\b"),
        "a GitHub token": re.compile(rb"\bgh[pousr]_[0-9A-Za-z]{30,}\b"),
    }
    found = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.name == "test_security.py" or not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{name.decode()}: {what}" for what, pattern in patterns.items() if pattern.search(data)]
        if path.name in (".env", "id_rsa", "id_ed25519") or path.suffix in (".pem", ".key", ".p12"):
            found.append(f"{name.decode()}: a key or environment file")
    assert not found, found
