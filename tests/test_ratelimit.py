"""API limits (issue #7): the per-access-key rate limit on a real Redis (bursts, refill, keys apart, shared
by API processes, both dialects' error shapes, failing open when Redis fails), and the request size
limits: query string length, RPC parameter count, JSON body size and depth."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rtc_mpu.api import ratelimit
from rtc_mpu.api.app import MAX_QUERY_LENGTH, create_app
from rtc_mpu.api.auth import MAX_JSON_DEPTH, MAX_JSON_VALUES, json_size_problem
from rtc_mpu.api.ratelimit import RateLimit, RateLimiter
from rtc_mpu.api.rpc_params import MAX_PARAMS
from rtc_mpu.stack.ports import free_port
from rtc_mpu.workers.store import TaskStore
from tests.signing import api_client, basic_auth, rpc_v1_params

KEYS = {"k1": "s1", "k2": "s2"}
ACCESS_KEYS = ",".join(f"{k}:{s}" for k, s in KEYS.items())
URL = "rtmp://example.com/live/s1"
AppFactory = Callable[..., FlaskClient]


@pytest.fixture
def make_client(task_store: TaskStore) -> AppFactory:
    """A test client of an API on the real store, with the given rate limit settings."""

    def make(rate: Any = 1, burst: Any = 3, store: Any = None) -> FlaskClient:
        store = task_store if store is None else store
        return api_client(store, ACCESS_KEYS, MPU_RATE_LIMIT=rate, MPU_RATE_BURST=burst)

    return make


def basic(key: str = "k1") -> dict[str, str]:
    """Basic auth with ``key`` and its secret."""
    return basic_auth(key, KEYS[key])


def rest(client: FlaskClient, key: str = "k1") -> TestResponse:
    return client.get("/v1/apps/app1/tasks", headers=basic(key))


def signed(
    action: str = "GetMPUTaskStatus", key: str = "k1", method: str = "GET", **extra: str
) -> dict[str, str]:
    """An RPC v1 call of ``action`` on task t1, signed by ``key`` for ``method``."""
    return rpc_v1_params(key, KEYS[key], action, method, **extra)


def rpc(client: FlaskClient, key: str = "k1", **extra: str) -> TestResponse:
    return client.get("/?" + urlencode(signed(key=key, **extra)))


def assert_rest_throttled(answer: TestResponse) -> int:
    assert answer.status_code == 429, answer.get_data(as_text=True)
    body = answer.json
    assert body is not None and set(body) == {"code", "message", "field", "request_id"}
    assert body["code"] == "Throttling.User" and body["field"] is None and body["request_id"]
    assert "requests per second" in body["message"]
    retry_after = int(answer.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


# -- the limit ---------------------------------------------------------------------------------------


def test_burst_then_429_with_retry_after_then_refill(make_client: AppFactory) -> None:
    client = make_client(rate=2, burst=3)
    assert [rest(client).status_code for _ in range(3)] == [200, 200, 200]
    assert assert_rest_throttled(rest(client)) == 1  # 0.5 s to the next token, rounded up
    time.sleep(0.6)  # one token back (2 per second)
    assert rest(client).status_code == 200
    assert rest(client).status_code == 429  # refused requests cost nothing, but there is no token left
    time.sleep(1.1)  # two tokens back
    assert [rest(client).status_code for _ in range(3)] == [200, 200, 429]


def test_retry_after_is_rounded_up_to_seconds(make_client: AppFactory) -> None:
    client = make_client(rate=0.4, burst=1)  # one request every 2.5 s
    assert rest(client).status_code == 200
    assert assert_rest_throttled(rest(client)) == 3


def test_keys_are_limited_apart_and_processes_share_a_key(
    make_client: AppFactory, task_store: TaskStore
) -> None:
    client, other_process = make_client(rate=1, burst=2), make_client(rate=1, burst=2)
    assert [rest(client, "k1").status_code for _ in range(2)] == [200, 200]
    assert rest(client, "k1").status_code == 429
    assert rest(other_process, "k1").status_code == 429  # one limit for all API processes
    assert [rest(other_process, "k2").status_code for _ in range(2)] == [200, 200]  # k2 unaffected
    assert rest(client, "k2").status_code == 429
    bucket = f"{task_store.prefix}:rate:k1"
    assert task_store.client.exists(bucket) and 0 < task_store.client.pttl(bucket) <= 2000
    # Failed authentication and the health check count for nobody.
    assert client.get("/v1/apps/app1/tasks", headers={"Authorization": "Basic eDp5"}).status_code == 403
    assert client.get("/v1/health").status_code == 200


def test_a_throttled_request_is_not_parsed(make_client: AppFactory) -> None:
    client = make_client(rate=1, burst=1)
    assert rest(client).status_code == 200
    answer = client.post(
        "/v1/apps/app1/tasks", data="{not json", content_type="application/json", headers=basic()
    )
    assert_rest_throttled(answer)
    answer = client.post(
        "/v1/apps/app1/tasks", data="{not json", content_type="application/json", headers=basic("k2")
    )
    assert answer.status_code == 400  # the other key's request gets that far


def test_rpc_dialect(make_client: AppFactory) -> None:
    client = make_client(rate=1, burst=2)
    assert [rpc(client).status_code for _ in range(2)] == [404, 404]  # no task t1: but authenticated
    answer = rpc(client)
    assert answer.status_code == 429
    body = answer.json
    assert body is not None and set(body) == {"RequestId", "HostId", "Code", "Message"}
    assert body["Code"] == "Throttling.User" and "requests per second" in body["Message"]
    assert answer.headers["Retry-After"] == "1"
    assert 0 < int(answer.headers["x-acs-retry-after"]) <= 1000  # milliseconds, for the newer SDK
    xml = rpc(client, Format="XML")
    assert xml.status_code == 429 and xml.mimetype == "application/xml"
    root = ElementTree.fromstring(xml.data)
    assert root.tag == "Error" and root.findtext("Code") == "Throttling.User"
    assert rpc(client, key="k2").status_code == 404
    # REST and RPC calls of one key share its limit.
    assert rest(client, "k1").status_code == 429
    # A call whose signature fails is refused for that, not counted.
    bad = signed(key="k2")
    bad["Signature"] = "AAAA"
    assert client.get("/?" + urlencode(bad)).json["Code"] == "SignatureDoesNotMatch"  # type: ignore[index]
    assert rpc(client, key="k2").status_code == 404  # k2's second request of its burst of 2
    assert rpc(client, key="k2").status_code == 429


def test_switched_off_and_settings(make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    for off in ({"rate": 0}, {"burst": 0}, {"rate": "0", "burst": "40"}):
        client = make_client(**off)
        assert client.application.extensions["mpu"].limiter is None
        assert all(rest(client).status_code == 200 for _ in range(50))
    monkeypatch.delenv("MPU_RATE_LIMIT", raising=False)
    monkeypatch.delenv("MPU_RATE_BURST", raising=False)
    assert RateLimit.from_settings({}, {}) == RateLimit(20.0, 40)
    assert RateLimit.from_settings({}, {"MPU_RATE_LIMIT": "2.5", "MPU_RATE_BURST": "5"}) == RateLimit(2.5, 5)
    assert RateLimit.from_settings({"MPU_RATE_LIMIT": 7}, {"MPU_RATE_LIMIT": "2"}).rate == 7
    for bad in ({"MPU_RATE_LIMIT": "fast"}, {"MPU_RATE_LIMIT": "-1"}, {"MPU_RATE_LIMIT": "nan"}):
        with pytest.raises(ValueError, match="MPU_RATE_LIMIT"):
            RateLimit.from_settings({}, bad)
    for bad in ({"MPU_RATE_BURST": "1.5"}, {"MPU_RATE_BURST": "-2"}):
        with pytest.raises(ValueError, match="MPU_RATE_BURST"):
            RateLimit.from_settings({}, bad)
    monkeypatch.setenv("MPU_RATE_LIMIT", "0")
    app = create_app({"MPU_ACCESS_KEYS": ACCESS_KEYS, "STORE": object()})
    assert app.extensions["mpu"].limiter is None


def test_the_limiter_fails_open_when_redis_fails(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(rate=1, burst=1)
    limiter = client.application.extensions["mpu"].limiter
    assert isinstance(limiter, RateLimiter)
    calls: list[str] = []

    def broken(client: Any, lua: str) -> Any:
        def script(**_: Any) -> Any:
            calls.append("called")
            raise redis.exceptions.ConnectionError("Redis went away")

        return script

    monkeypatch.setattr(limiter._redis, "script", broken)
    with caplog.at_level(logging.WARNING, logger="rtc_mpu.api.ratelimit"):
        assert [rest(client).status_code for _ in range(5)] == [200] * 5
    assert len(calls) == 1  # then not tried again for a while
    assert "not rate-limited" in caplog.text and "ConnectionError" in caplog.text
    monkeypatch.setattr(ratelimit, "FAIL_OPEN_SECONDS", 0.0)
    monkeypatch.setattr(limiter._redis, "off_until", 0.0)
    assert rest(client).status_code == 200 and len(calls) == 2


def test_with_redis_down_a_request_fails_like_every_store_call(make_client: AppFactory) -> None:
    dead = TaskStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    client = make_client(rate=1, burst=1, store=dead)
    for _ in range(3):
        answer = rest(client)
        assert answer.status_code == 503 and answer.json is not None
        assert answer.json["code"] == "ServiceUnavailable"
    answer = rpc(client)  # the signature's nonce register needs Redis too
    assert (
        answer.status_code == 503 and answer.json is not None and answer.json["Code"] == "ServiceUnavailable"
    )


# -- request sizes -----------------------------------------------------------------------------------


def test_query_string_length(make_client: AppFactory) -> None:
    client = make_client(rate=0)
    long_value = "x" * (MAX_QUERY_LENGTH + 1)
    answer = client.get(f"/v1/apps/app1/layouts?name={long_value}", headers=basic())
    assert answer.status_code == 414 and answer.json is not None
    assert answer.json["code"] == "RequestURITooLong" and str(MAX_QUERY_LENGTH) in answer.json["message"]
    assert set(answer.json) == {"code", "message", "field", "request_id"}
    answer = client.get("/?" + urlencode(signed(ChannelId=long_value)))
    assert answer.status_code == 414 and answer.json is not None
    assert set(answer.json) == {"RequestId", "HostId", "Code", "Message"}
    assert answer.json["Code"] == "RequestURITooLong"
    # Just below the limit is fine (as far as the length goes).
    fits = "x" * (MAX_QUERY_LENGTH - len("name="))
    assert client.get(f"/v1/apps/app1/layouts?name={fits}", headers=basic()).status_code != 414


def test_rpc_parameter_count(make_client: AppFactory) -> None:
    client = make_client(rate=0)
    common = signed()  # 10 pairs with the signature
    extra = {f"Filler{i}": "1" for i in range(MAX_PARAMS + 1 - len(common))}
    params = signed(method="POST", **extra)
    assert len(params) == MAX_PARAMS + 1
    answer = client.post("/", data=params)
    assert answer.status_code == 400 and answer.json is not None
    assert (
        answer.json["Code"] == "InvalidParameter"
        and f"more than {MAX_PARAMS} parameters" in answer.json["Message"]
    )
    del extra["Filler0"]
    answer = client.post("/", data=signed(method="POST", **extra))  # exactly MAX_PARAMS: served
    assert answer.status_code == 404 and answer.json is not None
    assert answer.json["Code"] == "InvalidTask.NotFound"


def nested(depth: int) -> Any:
    """``depth`` levels of arrays and objects around a number."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


def test_json_body_size_and_depth(make_client: AppFactory) -> None:
    client = make_client(rate=0)

    def post(body: Any) -> TestResponse:
        return client.post(
            "/v1/apps/app1/tasks", data=json.dumps(body), content_type="application/json", headers=basic()
        )

    too_many = {"task_id": "t1", "user_panes": [{"pane_id": i} for i in range(MAX_JSON_VALUES // 2)]}
    answer = post(too_many)
    assert answer.status_code == 400 and answer.json is not None
    assert (
        answer.json["code"] == "InvalidParameter"
        and f"more than {MAX_JSON_VALUES} values" in answer.json["message"]
    )
    answer = post({"task_id": "t1", "x": [[[[[[[[1]]]]]]]]})  # 9 levels with the body
    assert answer.status_code == 400 and answer.json is not None
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in answer.json["message"]
    # Deeper than the JSON parser itself goes (it would raise RecursionError): still a 400.
    answer = client.post(
        "/v1/apps/app1/tasks",
        data="[" * 30000 + "]" * 30000,
        content_type="application/json",
        headers=basic(),
    )
    assert answer.status_code == 400 and answer.json is not None
    assert answer.json["code"] == "InvalidParameter" and "nested deeper" in answer.json["message"]
    # The deepest real body (pane texts: 5 levels) and a large one within the limits go through.
    panes = [
        {"pane_id": i, "user_id": f"u{i}", "texts": [{"text": "hi", "x": 0.1, "y": 0.1, "font_size": 12}] * 4}
        for i in range(4)
    ]
    body = {"task_id": "t1", "channel_id": "c1", "stream_url": URL, "layout_ids": [6], "user_panes": panes}
    assert json_size_problem(body) is None
    answer = post(body)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    # The bounds themselves.
    assert json_size_problem(list(range(MAX_JSON_VALUES - 1))) is None
    assert json_size_problem(list(range(MAX_JSON_VALUES))) is not None
    assert json_size_problem(nested(MAX_JSON_DEPTH)) is None
    assert json_size_problem(nested(MAX_JSON_DEPTH + 1)) is not None


def test_retry_after_rounding() -> None:
    assert ratelimit.Decision(False, retry_after=0.05).retry_after_seconds == 1
    assert ratelimit.Decision(False, retry_after=2.0).retry_after_seconds == 2
    assert ratelimit.Decision(False, retry_after=2.001).retry_after_seconds == math.ceil(2.001)
