"""The operator dashboard (``/dashboard/``, :mod:`rtc_mpu.api.dashboard`) on the real store: HTTP Basic with
a 401 challenge, operator keys see every app and the nodes, app keys only their apps, the stop and layout
POSTs refuse requests without the CSRF token or from another site, snapshots and HLS served to the keys
that may see them."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.api.auth import AccessKey
from rtc_mpu.api.dashboard import CSRF_CODE, CSRF_HEADER, csrf_token
from rtc_mpu.spec import tokens
from rtc_mpu.workers.model import TaskStatus
from rtc_mpu.workers.store import TaskStore
from tests.conftest import StoreFactory

KEYS = "op:s0,k1:s1:a1,k2:s2:a2|a3"
OPERATOR, APP1, APP2 = AccessKey("op", "s0"), AccessKey("k1", "s1"), AccessKey("k2", "s2")


def basic(key: AccessKey, secret: str | None = None) -> dict[str, str]:
    text = f"{key.key_id}:{key.secret if secret is None else secret}"
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


def posting(key: AccessKey, **extra: str) -> dict[str, str]:
    """Headers of a dashboard POST as the page sends it."""
    return {**basic(key), CSRF_HEADER: csrf_token(key), "Sec-Fetch-Site": "same-origin", **extra}


def client_on(store: TaskStore) -> FlaskClient:
    return create_app(
        {"MPU_ACCESS_KEYS": KEYS, "STORE": store, "ENQUEUE": lambda a, t: None, "MPU_RATE_LIMIT": "0"}
    ).test_client()


def start(client: FlaskClient, key: AccessKey, app_id: str, task_id: str, outputs: list[Any]) -> None:
    body = {
        "task_id": task_id,
        "channel_id": f"ch-{task_id}",
        "stream_url": f"rtmp://h/live/{app_id}-{task_id}",
        "layout_ids": [1, 2],
        "outputs": outputs,
    }
    answer = client.post(f"/v1/apps/{app_id}/tasks", json=body, headers=basic(key))
    assert answer.status_code == 201, answer.get_json()


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store(lease_seconds=30)


@pytest.fixture
def client(store: TaskStore) -> FlaskClient:
    client = client_on(store)
    start(client, OPERATOR, "a1", "t1", [{"kind": "snapshot", "interval_seconds": 1}, {"kind": "hls"}])
    start(client, OPERATOR, "a2", "t2", [])
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/",
        "/dashboard/dashboard.js",
        "/dashboard/api/tasks",
        "/dashboard/snapshot/a1/t1.jpg",
        "/dashboard/hls/a1/t1/index.m3u8",
        "/dashboard/vendor/hls.min.js",
    ],
)
def test_the_dashboard_without_credentials_is_401_with_a_basic_challenge(
    client: FlaskClient, path: str
) -> None:
    for headers in ({}, basic(OPERATOR, "wrong"), basic(AccessKey("nobody", "x"))):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, (path, headers, answer.get_data(as_text=True))
        assert answer.headers["WWW-Authenticate"].startswith("Basic ")
        assert answer.get_json()["code"] == "Unauthorized"
    assert client.post("/dashboard/api/apps/a1/tasks/t1/stop").status_code == 401


def test_the_page_and_its_script_are_served_with_a_strict_policy(client: FlaskClient) -> None:
    page = client.get("/dashboard/", headers=basic(APP1))
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/dashboard/vendor/hls.min.js" in html and "/dashboard/dashboard.js" in html
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    script = client.get("/dashboard/dashboard.js", headers=basic(APP1))
    assert script.status_code == 200 and "X-MPU-CSRF" in script.get_data(as_text=True)
    assert "innerHTML" not in script.get_data(as_text=True)  # server values only ever set as text
    assert client.get("/dashboard", headers=basic(APP1)).status_code in (301, 308)


def test_an_operator_key_sees_every_app_the_nodes_and_the_queue(
    client: FlaskClient, store: TaskStore
) -> None:
    token = store.claim_on("a1", "t1", "mix@n1:1", node="mix@n1", cost=0.5, capacity=2).token
    assert token is not None
    store.heartbeat("a1", "t1", token, status=TaskStatus.RUNNING, users=["alice"])
    data = client.get("/dashboard/api/tasks", headers=basic(OPERATOR)).get_json()
    assert data["operator"] is True and data["apps"] is None
    assert [(t["app_id"], t["task_id"]) for t in data["tasks"]] == [("a1", "t1"), ("a2", "t2")]
    first, second = data["tasks"]
    assert first["status"] == 1 and first["users"] == ["alice"] and first["worker"] == "mix@n1:1"
    assert first["snapshot_url"] == "/dashboard/snapshot/a1/t1.jpg"
    assert first["hls_url"] == "/dashboard/hls/a1/t1/index.m3u8"
    assert first["nginx_hls_url"].endswith(":8081/hls/a1/t1/index.m3u8")
    assert second["snapshot_url"] is None and second["hls_url"] is None and second["watch_url"] is None
    assert data["nodes"] == [{"node": "mix@n1", "load": 0.5, "capacity": 2.0, "tasks": ["a1/t1"]}]
    assert isinstance(data["queue_length"], int)
    assert data["csrf_token"] == csrf_token(OPERATOR)
    # The capacity a heartbeat reports replaces the claim's; 0 is an unlimited node.
    store.heartbeat("a1", "t1", token, capacity=0.0)
    nodes = client.get("/dashboard/api/tasks", headers=basic(OPERATOR)).get_json()["nodes"]
    assert nodes == [{"node": "mix@n1", "load": 0.5, "capacity": 0.0, "tasks": ["a1/t1"]}]


def test_an_app_key_sees_no_other_apps_task(client: FlaskClient, store: TaskStore) -> None:
    data = client.get("/dashboard/api/tasks", headers=basic(APP1)).get_json()
    assert data["operator"] is False and data["apps"] == ["a1"]
    assert [(t["app_id"], t["task_id"]) for t in data["tasks"]] == [("a1", "t1")]
    assert data["nodes"] is None and data["queue_length"] is None
    data = client.get("/dashboard/api/tasks", headers=basic(APP2)).get_json()
    assert [(t["app_id"], t["task_id"]) for t in data["tasks"]] == [("a2", "t2")]
    assert data["apps"] == ["a2", "a3"]
    store.put_snapshot("a1", "t1", b"\xff\xd8jpeg", 1.0, 60)
    assert client.get("/dashboard/snapshot/a1/t1.jpg", headers=basic(APP2)).status_code == 403
    assert client.get("/dashboard/hls/a1/t1/index.m3u8", headers=basic(APP2)).status_code == 403
    refused = client.post("/dashboard/api/apps/a1/tasks/t1/stop", headers=posting(APP2))
    assert refused.status_code == 403 and refused.get_json()["code"] == "Forbidden"
    assert store.get_task("a1", "t1").active and not store.get_task("a1", "t1").stop_requested


def test_the_snapshot_of_a_visible_task(client: FlaskClient, store: TaskStore) -> None:
    assert client.get("/dashboard/snapshot/a1/t1.jpg", headers=basic(APP1)).status_code == 404
    store.put_snapshot("a1", "t1", b"\xff\xd8jpeg", 1234.5, 60)
    answer = client.get("/dashboard/snapshot/a1/t1.jpg", headers=basic(APP1))
    assert answer.status_code == 200 and answer.mimetype == "image/jpeg"
    assert answer.data == b"\xff\xd8jpeg" and answer.headers["Cache-Control"] == "no-store"
    assert client.get("/dashboard/snapshot/a1/bad%0A.jpg", headers=basic(APP1)).status_code == 400


def test_hls_files_of_a_visible_task(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPU_HLS_DIR", str(tmp_path))
    folder = tmp_path / "a1" / "t1"
    folder.mkdir(parents=True)
    (folder / "index.m3u8").write_text("#EXTM3U\n")
    (folder / "seg1.ts").write_bytes(b"G" * 188)
    (tmp_path / "a1" / "secret.ts").write_bytes(b"no")
    playlist = client.get("/dashboard/hls/a1/t1/index.m3u8", headers=basic(APP1))
    assert playlist.status_code == 200 and playlist.mimetype == "application/vnd.apple.mpegurl"
    assert "no-store" in playlist.headers["Cache-Control"]
    segment = client.get("/dashboard/hls/a1/t1/seg1.ts", headers=basic(APP1))
    assert segment.status_code == 200 and segment.mimetype == "video/mp2t"
    for name in ("seg2.ts", "..%2Fsecret.ts", "index.html", "a.m3u8.bak"):
        assert client.get(f"/dashboard/hls/a1/t1/{name}", headers=basic(APP1)).status_code == 404, name


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no token
        {CSRF_HEADER: "0" * 64},  # a wrong token
        {CSRF_HEADER: csrf_token(OPERATOR)},  # another key's token
        {CSRF_HEADER: csrf_token(APP1), "Sec-Fetch-Site": "cross-site"},  # the right token from another site
        {CSRF_HEADER: csrf_token(APP1), "Sec-Fetch-Site": "same-site"},
    ],
)
def test_stop_and_layout_refuse_cross_site_requests(
    client: FlaskClient, store: TaskStore, headers: dict[str, str]
) -> None:
    for action, body in (("stop", {}), ("layout", {"layout_ids": [1]})):
        answer = client.post(
            f"/dashboard/api/apps/a1/tasks/t1/{action}", json=body, headers={**basic(APP1), **headers}
        )
        assert answer.status_code == 403, answer.get_json()
        assert answer.get_json()["code"] == CSRF_CODE
    record = store.get_task("a1", "t1")
    assert record.active and not record.stop_requested and list(record.params.layout_ids) == [1, 2]


def test_stop_and_layout_with_the_token(client: FlaskClient, store: TaskStore) -> None:
    answer = client.post(
        "/dashboard/api/apps/a1/tasks/t1/layout", json={"layout_ids": [2]}, headers=posting(APP1)
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["layout_ids"] == [2] and list(store.get_task("a1", "t1").params.layout_ids) == [
        2
    ]
    bodies: list[dict[str, Any]] = [{}, {"layout_ids": []}, {"layout_ids": ["1"]}, {"layout_ids": [True]}]
    for body in bodies:
        bad = client.post("/dashboard/api/apps/a1/tasks/t1/layout", json=body, headers=posting(APP1))
        assert bad.status_code == 400 and bad.get_json()["field"] == "layout_ids", body
    # Without Sec-Fetch-Site (an older browser, a script) the token alone is enough.
    headers = posting(APP1)
    del headers["Sec-Fetch-Site"]
    stopped = client.post("/dashboard/api/apps/a1/tasks/t1/stop", headers=headers)
    assert stopped.status_code == 200 and stopped.get_json()["state"] in ("stopping", "ended")
    assert store.get_task("a1", "t1").stop_requested or not store.get_task("a1", "t1").active
    missing = client.post("/dashboard/api/apps/a1/tasks/nope/stop", headers=posting(APP1))
    assert missing.status_code == 404


def test_failed_logins_are_throttled_but_a_browsers_first_request_is_not_counted(store: TaskStore) -> None:
    client = create_app(
        {
            "MPU_ACCESS_KEYS": KEYS,
            "STORE": store,
            "ENQUEUE": lambda a, t: None,
            "MPU_AUTH_FAILURE_LIMIT": "3",
        }
    ).test_client()
    for _ in range(6):  # no credentials: challenged, never throttled
        assert client.get("/dashboard/").status_code == 401
    assert client.get("/dashboard/", headers=basic(APP1)).status_code == 200
    for _ in range(3):
        assert client.get("/dashboard/api/tasks", headers=basic(APP1, "wrong")).status_code == 401
    throttled = client.get("/dashboard/api/tasks", headers=basic(APP1, "wrong"))
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers


def test_hls_files_are_not_counted_against_the_keys_rate_limit(
    store: TaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPU_HLS_DIR", str(tmp_path))
    (tmp_path / "a1" / "t1").mkdir(parents=True)
    (tmp_path / "a1" / "t1" / "index.m3u8").write_text("#EXTM3U\n")
    client = create_app(
        {
            "MPU_ACCESS_KEYS": KEYS,
            "STORE": store,
            "ENQUEUE": lambda a, t: None,
            "MPU_RATE_LIMIT": "1",
            "MPU_RATE_BURST": "2",
        }
    ).test_client()
    for _ in range(10):
        assert client.get("/dashboard/hls/a1/t1/index.m3u8", headers=basic(APP1)).status_code == 200
    answers = [client.get("/dashboard/api/tasks", headers=basic(APP1)).status_code for _ in range(5)]
    assert 429 in answers


def test_the_watch_link_redirects_to_the_watch_page(store: TaskStore, client: FlaskClient) -> None:
    answer = client.get("/dashboard/watch/a1/t1", headers=basic(APP1))
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert (location.scheme, location.port, location.path) == ("http", 8081, "/watch/")
    assert parse_qs(location.query) == {"task": ["t1"], "app": ["a1"], "channel": ["ch-t1"]}
    assert client.get("/dashboard/watch/a2/t2", headers=basic(APP1)).status_code == 403
    assert client.get("/dashboard/watch/a1/nope", headers=basic(APP1)).status_code == 404


def test_the_watch_link_carries_a_subscribe_token_in_token_mode(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "dashboard-token-secret-0123456789"
    monkeypatch.setenv("MPU_DASHBOARD_WEB_URL", "https://watch.example")
    monkeypatch.setenv("MPU_DASHBOARD_JANUS_URL", "https://janus.example/janus")
    client = create_app(
        {"MPU_ACCESS_KEYS": KEYS, "STORE": store, "ENQUEUE": lambda a, t: None, "MPU_TOKEN_SECRET": secret}
    ).test_client()
    start(client, OPERATOR, "a1", "t1", [])
    answer = client.get("/dashboard/watch/a1/t1", headers=basic(APP1))
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("https://watch.example/watch/?")
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["janus"] == ["https://janus.example/janus"] and query["task"] == ["t1"]
    claims = tokens.verify_token(secret, query["token"][0], time.time())
    assert (claims.app_id, claims.channel_id, claims.user_id) == ("a1", "ch-t1", "dashboard-k1")
    assert claims.role is tokens.Role.SUBSCRIBE
