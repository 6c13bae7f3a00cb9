"""Webhooks: the signature and its verification, the backoff, endpoint validation, HTTP delivery with
address rules (a local HTTP server), the delivery loop on the real store (a scripted sender: order,
retries with backoff, give-up, records) and the REST resource (validation, masking, app isolation)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers.events import (
    MASK,
    WebhookEndpoint,
    WebhookError,
    backoff,
    check_url_address,
    parse_endpoints,
    rotate,
    sign,
    verify,
)
from rtc_mpu.workers.model import TaskParams, TaskRecord, TaskStatus
from rtc_mpu.workers.store import TaskStore
from rtc_mpu.workers.webhooks import DeliverySettings, deliver_head, post
from tests.conftest import StoreFactory
from tests.signing import basic_auth

SECRET = "0123456789abcdef"

# -- signature, backoff ------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"evt_1"}'
    header = sign([SECRET], body, 1700000000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(header, body, SECRET, 1700000010)
    assert not verify(header, body + b" ", SECRET, 1700000010)
    assert not verify(header, body, "another-secret-000", 1700000010)
    assert not verify(header, body, SECRET, 1700000000 + 301)  # too old: a replay


def test_rotation_sends_both_signatures() -> None:
    old = [WebhookEndpoint("https://h.example.com/", SECRET)]
    new = rotate(old, [WebhookEndpoint("https://h.example.com/", "fedcba9876543210")], now=1000.0)
    secrets = new[0].secrets(1000.0)
    assert secrets == ["fedcba9876543210", SECRET]
    header = sign(secrets, b"x", 1000)
    assert header.count("v1=") == 2
    assert verify(header, b"x", SECRET, 1000) and verify(header, b"x", "fedcba9876543210", 1000)
    assert new[0].secrets(1000.0 + 86400) == ["fedcba9876543210"]  # the rotation ends
    assert new[0].masked(1000.0) == {"url": "https://h.example.com/", "secret": MASK, "rotating": True}
    same = rotate(new, [WebhookEndpoint("https://h.example.com/", "fedcba9876543210")], now=2000.0)
    assert same[0].secrets(2000.0) == secrets  # an unchanged secret keeps the rotation


def test_backoff_doubles_from_1_to_60_seconds() -> None:
    assert [backoff(n) for n in range(0, 10)] == [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff(10_000) == 60


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ([], "", "InvalidParameter"),
        ({}, "endpoints", "MissingParameter"),
        ({"endpoints": "x"}, "endpoints", "InvalidParameter"),
        ({"endpoints": [{"url": "https://a.example.com"}]}, "endpoints.0.secret", "MissingParameter"),
        (
            {"endpoints": [{"url": "ftp://a.example.com", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        ({"endpoints": [{"url": "https://", "secret": SECRET}]}, "endpoints.0.url", "InvalidParameter"),
        (
            {"endpoints": [{"url": "https://u:p@a.example.com", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://a.example.com/#x", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://127.0.0.1/", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "http://[::1]:80/", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "http://10.1.2.3/", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://a.example.com/\u202e", "secret": SECRET}]},
            "endpoints.0.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://a.example.com", "secret": "short"}]},
            "endpoints.0.secret",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://a.example.com", "secret": 5}]},
            "endpoints.0.secret",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://a.example.com", "secret": SECRET, "x": 1}]},
            "endpoints.0.x",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": "https://a.example.com", "secret": SECRET}] * 2},
            "endpoints.1.url",
            "InvalidParameter",
        ),
        (
            {"endpoints": [{"url": f"https://a{i}.example.com", "secret": SECRET} for i in range(6)]},
            "endpoints",
            "InvalidParameter",
        ),
    ],
)
def test_bad_endpoints_are_refused_with_their_field(body: Any, field: str, code: str) -> None:
    with pytest.raises(WebhookError) as caught:
        parse_endpoints(body, allow_private=False)
    assert (caught.value.field, caught.value.code) == (field, code)


def test_good_endpoints_and_the_private_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"endpoints": [{"url": "https://hooks.example.com/mpu?x=1", "secret": SECRET}]}
    assert parse_endpoints(body, allow_private=False) == [
        WebhookEndpoint("https://hooks.example.com/mpu?x=1", SECRET)
    ]
    local = {"endpoints": [{"url": "http://127.0.0.1:9/", "secret": SECRET}]}
    assert parse_endpoints(local, allow_private=True)[0].url == "http://127.0.0.1:9/"
    monkeypatch.delenv("MPU_ALLOW_PRIVATE_URLS", raising=False)
    monkeypatch.delenv("MPU_IMAGE_ALLOW_PRIVATE", raising=False)
    with pytest.raises(ValueError):
        check_url_address("http://192.168.1.1/")
    monkeypatch.setenv("MPU_IMAGE_ALLOW_PRIVATE", "1")  # the old switch keeps working
    check_url_address("http://192.168.1.1/")
    monkeypatch.delenv("MPU_IMAGE_ALLOW_PRIVATE")
    monkeypatch.setenv("MPU_ALLOW_PRIVATE_URLS", "1")
    check_url_address("http://192.168.1.1/")


def test_worker_image_setting_follows_the_one_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtc_mpu.workers.settings import WorkerSettings

    monkeypatch.delenv("MPU_IMAGE_ALLOW_PRIVATE", raising=False)
    monkeypatch.setenv("MPU_ALLOW_PRIVATE_URLS", "1")
    assert WorkerSettings.from_env().image_allow_private
    monkeypatch.delenv("MPU_ALLOW_PRIVATE_URLS")
    assert not WorkerSettings.from_env().image_allow_private


# -- HTTP --------------------------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    got: ClassVar[list[tuple[str, bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.append((self.path, body, self.headers.get("X-MPU-Signature", "")))
        status = self.answers.pop(0) if self.answers else 204
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.answers, _Receiver.got = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?a=1"
    finally:
        server.shutdown()
        server.server_close()


def test_post_signs_and_refuses_private_addresses(receiver: str) -> None:
    header = sign([SECRET], b"{}", 1)
    assert post(receiver, b"{}", header, DeliverySettings(allow_private=False)) == (
        None,
        "127.0.0.1 resolves to no public address (MPU_ALLOW_PRIVATE_URLS=1 allows private ones)",
    )
    assert _Receiver.got == []
    assert post(receiver, b"{}", header, DeliverySettings(allow_private=True)) == (204, None)
    assert _Receiver.got == [("/hook?a=1", b"{}", header)]
    _Receiver.answers = [302, 500]
    assert post(receiver, b"{}", header, DeliverySettings(allow_private=True)) == (
        302,
        "redirects are not followed",
    )
    assert post(receiver, b"{}", header, DeliverySettings(allow_private=True)) == (500, "answered 500")
    assert len(_Receiver.got) == 3  # the redirect was not followed


def test_post_to_an_endpoint_that_never_answers_times_out() -> None:
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does) but never answers
    try:
        began = time.monotonic()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        status, error = post(url, b"{}", "t=1", DeliverySettings(timeout=0.5, allow_private=True))
        assert status is None and error is not None and "timed out" in error
        assert time.monotonic() - began < 3
    finally:
        silent.close()


def test_post_to_nothing_listening_is_an_error() -> None:
    from rtc_mpu.stack.ports import free_port

    status, error = post(
        f"http://127.0.0.1:{free_port()}/", b"{}", "t=1", DeliverySettings(timeout=2, allow_private=True)
    )
    assert status is None and error is not None and "Connection" in error


# -- the delivery loop on the real store -------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Sender:
    def __init__(self) -> None:
        self.ok = True
        self.calls: list[tuple[str, dict[str, Any], str]] = []

    def __call__(
        self, url: str, body: bytes, signature: str, _: DeliverySettings
    ) -> tuple[int | None, str | None]:
        self.calls.append((url, json.loads(body), signature))
        return (200, None) if self.ok else (503, "answered 503")


def start(store: TaskStore, task_id: str = "t1") -> None:
    url = f"rtmp://example.com/live/{task_id}"
    store.start_task(TaskRecord("app1", task_id, TaskParams("ch1", url), stream_url_key(url)))


def test_delivery_in_order_with_backoff_and_give_up(make_store: StoreFactory) -> None:
    store = make_store()
    hook = WebhookEndpoint("https://hooks.example.com/a", SECRET)
    store.set_webhooks("app1", [hook])
    start(store)
    store.request_stop("app1", "t1")
    clock, sender = Clock(), Sender()
    settings = DeliverySettings(give_up_seconds=200)
    assert deliver_head(store, "app1/t1", settings, send=sender, now=clock) is None
    assert [c[1]["type"] for c in sender.calls] == ["task.started", "task.ended"]
    assert [c[1]["sequence"] for c in sender.calls] == [1, 2]
    body = json.dumps(sender.calls[0][1], separators=(",", ":")).encode()
    assert verify(sender.calls[0][2], body, SECRET, clock.now)
    delivered = store.deliveries("app1")
    assert [(d.type, d.attempts, d.last_status) for d in delivered] == [
        ("task.ended", 1, 200),
        ("task.started", 1, 200),
    ]
    assert all(d.delivered_at == clock.now for d in delivered)

    # A failing endpoint: 1, 2, 4, ... s apart; later events wait behind the first.
    start(store, "t2")
    store.request_stop("app1", "t2")
    sender.ok, sender.calls = False, []
    waits = []
    for _ in range(9):
        wait = deliver_head(store, "app1/t2", settings, send=sender, now=clock)
        assert wait is not None
        assert deliver_head(store, "app1/t2", settings, send=sender, now=clock) == wait  # not due: no attempt
        waits.append(wait)
        clock.now += wait
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert {c[1]["type"] for c in sender.calls} == {"task.started"}
    # 243 s after the first attempt (> 200): that attempt is the last; then the next event goes.
    sender.ok = False
    wait = deliver_head(store, "app1/t2", settings, send=sender, now=clock)
    assert wait == 1  # the first attempt of task.ended failed
    record = store.deliveries("app1")
    started = next(d for d in record if d.type == "task.started" and d.task_id == "t2")
    assert started.attempts == 10 and started.given_up_at is not None and started.last_status == 503
    sender.ok = True
    clock.now += 1
    assert deliver_head(store, "app1/t2", settings, send=sender, now=clock) is None
    assert store.outbox_names() == []


def test_old_events_are_given_up_at_their_first_failure(make_store: StoreFactory) -> None:
    store = make_store()
    store.set_webhooks("app1", [WebhookEndpoint("https://hooks.example.com/a", SECRET)])
    start(store)
    store.request_stop("app1", "t1")
    sender = Sender()
    sender.ok = False
    later = store.server_time() + 3600  # an hour after the events were made (an endpoint down since)
    assert deliver_head(store, "app1/t1", DeliverySettings(), send=sender, now=lambda: later) is None
    assert len(sender.calls) == 2 and store.outbox_names() == []
    assert all(d.given_up_at == later and d.attempts == 1 for d in store.deliveries("app1"))


def test_events_of_an_app_without_endpoints_are_dropped(make_store: StoreFactory) -> None:
    store = make_store()
    store.set_webhooks("app1", [WebhookEndpoint("https://hooks.example.com/a", SECRET)])
    start(store)
    store.set_webhooks("app1", [])
    sender = Sender()
    assert deliver_head(store, "app1/t1", DeliverySettings(), send=sender) is None
    assert sender.calls == [] and store.outbox_names() == []


def test_two_endpoints_each_get_each_event_once(make_store: StoreFactory) -> None:
    store = make_store()
    a, b = (
        WebhookEndpoint("https://a.example.com/", SECRET),
        WebhookEndpoint("https://b.example.com/", SECRET),
    )
    store.set_webhooks("app1", [a, b])
    start(store)
    calls: list[str] = []

    def flaky(url: str, body: bytes, signature: str, _: DeliverySettings) -> tuple[int | None, str | None]:
        calls.append(url)
        return (200, None) if url == a.url or len(calls) > 2 else (None, "refused")

    clock = Clock()
    assert deliver_head(store, "app1/t1", DeliverySettings(), send=flaky, now=clock) == 1
    clock.now += 1
    assert deliver_head(store, "app1/t1", DeliverySettings(), send=flaky, now=clock) is None
    assert calls == [a.url, b.url, b.url]  # a got it once


def test_a_task_finished_by_its_worker_is_announced(make_store: StoreFactory) -> None:
    store = make_store()
    store.set_webhooks("app1", [WebhookEndpoint("https://a.example.com/", SECRET)])
    start(store)
    token = store.claim("app1", "t1", "w")
    assert token is not None
    store.finish("app1", "t1", token, TaskStatus.CHANNEL_ENDED, "the channel ended")
    sender = Sender()
    deliver_head(store, "app1/t1", DeliverySettings(), send=sender)
    ended = sender.calls[-1][1]
    assert ended["type"] == "task.ended" and ended["task"]["status"] == 4
    assert ended["task"]["reason"] == "the channel ended"


# -- REST ----------------------------------------------------------------------------------------

KEYS = "k1:s1,bound:s2:onlyapp"
GOOD = basic_auth("k1", "s1")


@pytest.fixture
def client(make_store: StoreFactory) -> FlaskClient:
    store = make_store()
    return create_app({"MPU_ACCESS_KEYS": KEYS, "STORE": store, "ENQUEUE": lambda a, t: None}).test_client()


def test_put_get_masks_secrets(client: FlaskClient) -> None:
    body = {"endpoints": [{"url": "https://hooks.example.com/mpu", "secret": SECRET}]}
    answer = client.put("/v1/apps/app1/webhooks", json=body, headers=GOOD)
    assert answer.status_code == 200, answer.json
    shown = {"endpoints": [{"url": "https://hooks.example.com/mpu", "secret": MASK, "rotating": False}]}
    assert answer.json == shown
    assert SECRET not in answer.get_data(as_text=True)
    assert client.get("/v1/apps/app1/webhooks", headers=GOOD).json == shown
    body["endpoints"][0]["secret"] = "fedcba9876543210"
    rotated = client.put("/v1/apps/app1/webhooks", json=body, headers=GOOD).json
    assert rotated is not None and rotated["endpoints"][0]["rotating"] is True
    assert client.get("/v1/apps/app2/webhooks", headers=GOOD).json == {"endpoints": []}
    assert client.put("/v1/apps/app1/webhooks", json={"endpoints": []}, headers=GOOD).json == {
        "endpoints": []
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"endpoints": [{"url": "http://127.0.0.1/", "secret": SECRET}]}, "endpoints.0.url"),
        ({"endpoints": [{"url": "https://a.example.com/", "secret": "short"}]}, "endpoints.0.secret"),
        ({"endpoints": [{"url": "https://a.example.com/"}]}, "endpoints.0.secret"),
        ({"endpoints": [{"url": "https://a.example.com/\n", "secret": SECRET}]}, "endpoints.0.url"),
        ({}, "endpoints"),
    ],
)
def test_put_refuses_bad_input(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    answer = client.put("/v1/apps/app1/webhooks", json=body, headers=GOOD)
    assert answer.status_code == 400 and answer.json is not None
    assert answer.json["field"] == field and answer.json["code"]


def test_an_app_key_sees_only_its_own(client: FlaskClient) -> None:
    bound = basic_auth("bound", "s2")
    body = {"endpoints": [{"url": "https://hooks.example.com/mpu", "secret": SECRET}]}
    assert client.put("/v1/apps/app1/webhooks", json=body, headers=bound).status_code == 403
    assert client.get("/v1/apps/app1/webhooks", headers=bound).status_code == 403
    assert client.get("/v1/apps/app1/webhooks/deliveries", headers=bound).status_code == 403
    assert client.post("/v1/apps/app1/webhooks/ping", json={}, headers=bound).status_code == 403
    assert client.put("/v1/apps/onlyapp/webhooks", json=body, headers=bound).status_code == 200
    assert client.get("/v1/apps/app1/webhooks").status_code in (401, 403)  # as every /v1 call


def test_ping_and_deliveries(client: FlaskClient) -> None:
    refused = client.post("/v1/apps/app1/webhooks/ping", json={}, headers=GOOD)
    assert refused.status_code == 409, refused.json
    body = {"endpoints": [{"url": "https://hooks.example.com/mpu", "secret": SECRET}]}
    client.put("/v1/apps/app1/webhooks", json=body, headers=GOOD)
    answer = client.post("/v1/apps/app1/webhooks/ping", json={}, headers=GOOD)
    assert (
        answer.status_code == 202 and answer.json is not None and answer.json["event_id"].startswith("evt_")
    )
    assert client.get("/v1/apps/app1/webhooks/deliveries", headers=GOOD).json == {"deliveries": []}
