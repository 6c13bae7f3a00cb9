"""Issue #11, D11: failed authentication is throttled, per source address and per access key, in both
dialects, on a real Redis (api/ratelimit.py "Failed authentication" has the rule). Source addresses are
set with the test client's ``environ_base`` ``REMOTE_ADDR``."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rtc_mpu.api.app import create_app
from rtc_mpu.api.ratelimit import AuthFailureLimit, parse_address, source_address
from rtc_mpu.stack.ports import free_port
from rtc_mpu.workers.store import TaskStore
from tests.signing import acs3_authorization, acs3_headers, api_client, basic_auth, rpc_v1_params

KEYS = {"k1": "s1", "k2": "s2", "bound": "s3"}
ACCESS_KEYS = "k1:s1,k2:s2,bound:s3:other"
LIMIT = 10
ClientFactory = Callable[..., FlaskClient]


@pytest.fixture
def make_client(task_store: TaskStore) -> ClientFactory:
    """A test client of an API on the real store, with the given throttle settings (rate limit off)."""

    def make(store: Any = None, **settings: Any) -> FlaskClient:
        return api_client(task_store if store is None else store, ACCESS_KEYS, MPU_RATE_LIMIT=0, **settings)

    return make


def rest(
    client: FlaskClient, addr: str, key: str = "k1", secret: str | None = None, forwarded: str | None = None
) -> TestResponse:
    """GET the task list of app1 from ``addr`` with ``key`` and ``secret`` (default: the right one)."""
    headers = basic_auth(key, KEYS.get(key, "x") if secret is None else secret)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return client.get("/v1/apps/app1/tasks", headers=headers, environ_base={"REMOTE_ADDR": addr})


def signed_params(key: str = "k1", secret: str | None = None, **extra: str) -> dict[str, str]:
    """A GetMPUTaskStatus of task t1, RPC v1, signed by ``key`` (default secret: the right one)."""
    return rpc_v1_params(key, KEYS[key] if secret is None else secret, **extra)


def rpc(
    client: FlaskClient, addr: str, key: str = "k1", secret: str | None = None, **extra: str
) -> TestResponse:
    """A GetMPUTaskStatus of task t1 (which does not exist: 404 once authenticated), RPC v1."""
    return client.get(
        "/?" + urlencode(signed_params(key, secret, **extra)), environ_base={"REMOTE_ADDR": addr}
    )


def acs3(client: FlaskClient, addr: str, key: str = "k1", secret: str | None = None) -> TestResponse:
    """The same call signed with ACS3 (every header signed, as the newer SDK does)."""
    query = {"AppId": "app1", "TaskId": "t1"}
    headers = acs3_headers()
    headers["Authorization"] = acs3_authorization(
        query, headers, b"", key, KEYS[key] if secret is None else secret
    )
    return client.post("/", query_string=query, headers=headers, environ_base={"REMOTE_ADDR": addr})


def assert_rest_throttled(answer: TestResponse, window_seconds: float = 60) -> None:
    assert answer.status_code == 429, answer.get_data(as_text=True)
    body = answer.json
    assert body is not None and set(body) == {"code", "message", "field", "request_id"}
    assert body["code"] == "Throttling.Authentication" and "failed authentication" in body["message"]
    assert 1 <= int(answer.headers["Retry-After"]) <= window_seconds


def assert_rpc_throttled(answer: TestResponse) -> None:
    assert answer.status_code == 429, answer.get_data(as_text=True)
    body = answer.json
    assert body is not None and set(body) == {"RequestId", "HostId", "Code", "Message"}
    assert body["Code"] == "Throttling.Authentication" and "failed authentication" in body["Message"]
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert 0 < int(answer.headers["x-acs-retry-after"]) <= 60_000


# -- per source address --------------------------------------------------------------------------------


def test_rest_more_than_the_limit_of_failures_from_an_address_is_429(make_client: ClientFactory) -> None:
    client = make_client()
    failures = [
        client.get("/v1/apps/app1/tasks", environ_base={"REMOTE_ADDR": "10.0.0.1"}),  # no credentials
        rest(client, "10.0.0.1", key="nobody"),  # unknown key
        *[rest(client, "10.0.0.1", secret="wrong") for _ in range(LIMIT - 2)],  # wrong secret
    ]
    assert [a.status_code for a in failures] == [403] * LIMIT
    assert_rest_throttled(rest(client, "10.0.0.1", secret="wrong"))
    # The whole address, for the rest of the window: right credentials too (not even checked), any key.
    assert_rest_throttled(rest(client, "10.0.0.1"))
    assert_rest_throttled(rest(client, "10.0.0.1", key="k2"))
    # The valid key from another address is still served; that address has its own count.
    assert rest(client, "10.0.0.2").status_code == 200
    assert rest(client, "10.0.0.2", secret="wrong").status_code == 403
    assert client.get("/v1/health", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 200


def test_rpc_more_than_the_limit_of_bad_signatures_is_429_in_the_vendor_shape(
    make_client: ClientFactory,
) -> None:
    client = make_client()
    answers = [rpc(client, "10.0.0.1", secret="wrong") for _ in range(LIMIT // 2)]
    answers += [acs3(client, "10.0.0.1", secret="wrong") for _ in range(LIMIT // 2)]
    assert [a.status_code for a in answers] == [400] * LIMIT
    assert {a.json["Code"] for a in answers if a.json} == {"SignatureDoesNotMatch"}
    assert_rpc_throttled(rpc(client, "10.0.0.1", secret="wrong"))
    assert_rpc_throttled(rpc(client, "10.0.0.1"))  # a correct signature is not even checked
    assert_rpc_throttled(acs3(client, "10.0.0.1"))
    xml = rpc(client, "10.0.0.1", Format="XML")
    assert xml.status_code == 429 and xml.mimetype == "application/xml"
    assert ElementTree.fromstring(xml.data).findtext("Code") == "Throttling.Authentication"
    # A correctly signed call of the key from another address is served (then: no task t1).
    for answer in (rpc(client, "10.0.0.2"), acs3(client, "10.0.0.2")):
        assert answer.status_code == 404 and answer.json is not None
        assert answer.json["Code"] == "InvalidTask.NotFound"
    # Unsigned calls count too.
    unsigned = {"Action": "GetMPUTaskStatus", "AppId": "app1", "TaskId": "t1"}
    for _ in range(LIMIT):
        client.get("/?" + urlencode(unsigned), environ_base={"REMOTE_ADDR": "10.0.0.3"})
    assert_rpc_throttled(rpc(client, "10.0.0.3"))


def test_rest_and_rpc_failures_add_up(make_client: ClientFactory) -> None:
    client = make_client()
    for _ in range(LIMIT // 2):
        assert rest(client, "10.0.0.1", secret="wrong").status_code == 403
        assert rpc(client, "10.0.0.1", secret="wrong").status_code == 400
    assert_rest_throttled(rest(client, "10.0.0.1"))
    assert_rpc_throttled(rpc(client, "10.0.0.1"))


def test_metrics_is_throttled_too(make_client: ClientFactory) -> None:
    client = make_client()

    def scrape(secret: str) -> TestResponse:
        return client.get(
            "/metrics", headers=basic_auth("k1", secret), environ_base={"REMOTE_ADDR": "10.0.0.1"}
        )

    assert [scrape("wrong").status_code for _ in range(LIMIT)] == [403] * LIMIT
    assert_rest_throttled(scrape("s1"))


# -- per access key: no lock-out of a valid key by a stranger ---------------------------------------------


def test_failures_for_a_key_spread_over_addresses_block_those_addresses_not_the_owner(
    make_client: ClientFactory,
) -> None:
    client = make_client()
    strangers = [f"198.51.100.{i}" for i in range(1, LIMIT + 1)]
    for i, addr in enumerate(strangers):  # one failure each, both dialects: no address over its limit
        answer = rest(client, addr, secret="wrong") if i % 2 else rpc(client, addr, secret="wrong")
        assert answer.status_code in (400, 403)
    # k1 has had LIMIT failures: the addresses that failed for it are refused for k1, even right secrets...
    assert_rest_throttled(rest(client, strangers[0]))
    assert_rpc_throttled(rpc(client, strangers[1]))
    # ...but not for another key (each address has one failure of its own)...
    assert rest(client, strangers[0], key="k2").status_code == 200
    # ...and the owner, at an address that has not failed for k1, is served in both dialects.
    assert rest(client, "203.0.113.7").status_code == 200
    assert rpc(client, "203.0.113.7").status_code == 404  # authenticated; no task t1
    assert acs3(client, "203.0.113.7").status_code == 404
    # A new stranger gets a single try for k1, then is refused for it.
    assert rest(client, "198.51.100.200", secret="wrong").status_code == 403
    assert_rest_throttled(rest(client, "198.51.100.200"))
    assert rest(client, "203.0.113.7").status_code == 200  # the owner still


def test_what_does_not_count_per_key_or_at_all(make_client: ClientFactory) -> None:
    client = make_client()
    # A valid key's 403 for an AppId it may not touch is not a failed login.
    for _ in range(LIMIT + 5):
        answer = rest(client, "10.0.0.1", key="bound")
        assert answer.status_code == 403 and answer.json is not None and answer.json["code"] == "Forbidden"
    assert rest(client, "10.0.0.1").status_code == 200
    # Unknown key ids count for their address only: no key to block.
    for i in range(LIMIT + 5):
        assert rest(client, f"10.0.1.{i}", key=f"nobody{i % 2}").status_code == 403
    assert all(rest(client, f"10.0.1.{i}").status_code == 200 for i in range(LIMIT + 5))


# -- the window -------------------------------------------------------------------------------------------


def test_the_block_lasts_for_the_rest_of_the_window_only(make_client: ClientFactory) -> None:
    client = make_client(MPU_AUTH_FAILURE_LIMIT=2, MPU_AUTH_FAILURE_WINDOW_SECONDS=1)
    assert [rest(client, "10.0.0.1", secret="wrong").status_code for _ in range(2)] == [403, 403]
    assert_rest_throttled(rest(client, "10.0.0.1"), window_seconds=1)
    # A correctly signed call refused meanwhile was not verified: its nonce is still unused afterwards.
    params = signed_params()
    answer = client.get("/?" + urlencode(params), environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert_rpc_throttled(answer)
    assert answer.headers["Retry-After"] == "1"
    time.sleep(1.1)
    assert rest(client, "10.0.0.1").status_code == 200
    answer = client.get("/?" + urlencode(params), environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert (
        answer.status_code == 404
        and answer.json is not None
        and answer.json["Code"] == "InvalidTask.NotFound"
    )


def test_switched_off(make_client: ClientFactory) -> None:
    client = make_client(MPU_AUTH_FAILURE_LIMIT=0)
    assert client.application.extensions["mpu"].auth_throttle is None
    assert all(rest(client, "10.0.0.1", secret="wrong").status_code == 403 for _ in range(LIMIT + 5))


def test_fails_open_when_redis_is_down(make_client: ClientFactory) -> None:
    dead = TaskStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    client = make_client(store=dead)
    assert [rest(client, "10.0.0.1", secret="wrong").status_code for _ in range(LIMIT + 2)] == [403] * (
        LIMIT + 2
    )
    answer = rest(client, "10.0.0.1")  # authenticated, then the store's own failure
    assert (
        answer.status_code == 503 and answer.json is not None and answer.json["code"] == "ServiceUnavailable"
    )


# -- the source address --------------------------------------------------------------------------------


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(make_client: ClientFactory) -> None:
    # No trusted proxy: a client rotating X-Forwarded-For is still one address.
    client = make_client()
    for i in range(LIMIT):
        assert rest(client, "10.0.0.1", secret="wrong", forwarded=f"203.0.113.{i}").status_code == 403
    assert_rest_throttled(rest(client, "10.0.0.1", forwarded="203.0.113.99"))
    # Behind trusted proxies (an address and a network): the right-most untrusted X-Forwarded-For entry.
    # (Key k2 here: k1 has had its failures above, the same store.)
    client = make_client(MPU_TRUSTED_PROXIES="10.9.9.9, 192.168.0.0/16")

    def k2(peer: str, forwarded: str, secret: str | None = None) -> TestResponse:
        return rest(client, peer, key="k2", secret=secret, forwarded=forwarded)

    for i in range(LIMIT):
        forwarded = f"198.51.100.{i}, 203.0.113.5" if i % 2 else "203.0.113.5, 192.168.1.1"
        assert k2("10.9.9.9", forwarded, secret="wrong").status_code == 403
    assert_rest_throttled(k2("10.9.9.9", "203.0.113.5"))
    assert_rest_throttled(k2("192.168.3.4", "203.0.113.5"))  # through any trusted proxy
    assert_rest_throttled(k2("10.9.9.9", "203.0.113.6, 203.0.113.5"))
    assert k2("10.9.9.9", "203.0.113.6").status_code == 200  # another client behind the proxy
    # An untrusted peer's header is ignored: it is not 203.0.113.5 (nor can it get that one blocked).
    assert k2("10.0.0.2", "203.0.113.5").status_code == 200


def test_source_address_rules() -> None:
    trusted = (ipaddress.ip_network("10.0.0.1/32"), ipaddress.ip_network("fd00::/8"))
    assert source_address("10.0.0.2", "1.2.3.4", trusted) == "10.0.0.2"  # peer not trusted
    assert source_address("10.0.0.2", None, ()) == "10.0.0.2"
    assert source_address("10.0.0.1", None, trusted) == "10.0.0.1"  # no header
    assert source_address("10.0.0.1", "6.6.6.6, 1.2.3.4", trusted) == "1.2.3.4"
    assert source_address("10.0.0.1", "1.2.3.4, fd00::1", trusted) == "1.2.3.4"
    assert source_address("10.0.0.1", "1.2.3.4:5678", trusted) == "1.2.3.4"
    assert source_address("10.0.0.1", "[2001:db8::1]:443", trusted) == "2001:db8::1"
    assert source_address("10.0.0.1", "10.0.0.1", trusted) == "10.0.0.1"  # every hop trusted
    assert source_address("10.0.0.1", "1.2.3.4, garbage", trusted) == "10.0.0.1"  # the hop that sent it
    assert source_address("::ffff:10.0.0.1", "1.2.3.4", trusted) == "1.2.3.4"  # mapped IPv4
    assert source_address(None, "1.2.3.4", trusted) == "unknown"
    assert parse_address("2001:DB8::1") == ipaddress.ip_address("2001:db8::1")
    assert parse_address("not an address") is None


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MPU_AUTH_FAILURE_LIMIT", "MPU_AUTH_FAILURE_WINDOW_SECONDS", "MPU_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    assert AuthFailureLimit.from_settings({}, {}) == AuthFailureLimit(10, 60.0, ())
    limit = AuthFailureLimit.from_settings(
        {"MPU_AUTH_FAILURE_LIMIT": 3},
        {
            "MPU_AUTH_FAILURE_LIMIT": "7",
            "MPU_AUTH_FAILURE_WINDOW_SECONDS": "30",
            "MPU_TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12,",
        },
    )
    assert limit == AuthFailureLimit(
        3, 30.0, (ipaddress.ip_network("10.0.0.1/32"), ipaddress.ip_network("172.16.0.0/12"))
    )
    for bad in ({"MPU_AUTH_FAILURE_LIMIT": "-1"}, {"MPU_AUTH_FAILURE_LIMIT": "ten"}):
        with pytest.raises(ValueError, match="MPU_AUTH_FAILURE_LIMIT"):
            AuthFailureLimit.from_settings({}, bad)
    for bad in ({"MPU_AUTH_FAILURE_WINDOW_SECONDS": "0"}, {"MPU_AUTH_FAILURE_WINDOW_SECONDS": "inf"}):
        with pytest.raises(ValueError, match="MPU_AUTH_FAILURE_WINDOW_SECONDS"):
            AuthFailureLimit.from_settings({}, bad)
    with pytest.raises(ValueError, match="MPU_TRUSTED_PROXIES"):
        AuthFailureLimit.from_settings({}, {"MPU_TRUSTED_PROXIES": "10.0.0.1,proxy.example.com"})
    monkeypatch.setenv("MPU_TRUSTED_PROXIES", "nonsense")
    with pytest.raises(ValueError, match="MPU_TRUSTED_PROXIES"):
        create_app({"MPU_ACCESS_KEYS": ACCESS_KEYS, "STORE": object()})


# -- WHIP tokens (the API's proxy to the edge) ------------------------------------------------------


class TokenEdge(BaseHTTPRequestHandler):
    """An edge that refuses ``Bearer bad`` (401 InvalidToken), ``Bearer old`` (403 TokenExpired) and
    takes any other token (201); counts the POSTs that reach it."""

    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        TokenEdge.posts += 1
        token = self.headers.get("Authorization", "")
        if token == "Bearer bad":
            status, body = 401, b'{"code": "InvalidToken", "message": "forged"}'
        elif token == "Bearer old":
            status, body = 403, b'{"code": "TokenExpired", "message": "expired"}'
        elif token == "Bearer full":
            status, body = 503, b'{"code": "InvalidChannel.Full", "message": "full"}'
        else:
            status, body = 201, b"v=0\r\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_failed_whip_tokens_are_throttled_per_address_before_reaching_the_edge(
    make_client: ClientFactory,
) -> None:
    TokenEdge.posts = 0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), TokenEdge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = make_client(MPU_EDGE_URL=f"http://127.0.0.1:{server.server_address[1]}")
        endpoint = "/v1/apps/app1/channels/ch1/whip"

        def post(addr: str, token: str) -> TestResponse:
            return client.post(
                endpoint,
                data="v=0\r\n",
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
                environ_base={"REMOTE_ADDR": addr},
            )

        for _ in range(3):
            assert post("203.0.113.9", "full").status_code == 503, "not a token failure: not counted"
        for index in range(LIMIT):
            assert post("203.0.113.9", "bad" if index % 2 else "old").status_code in (401, 403)
        reached = TokenEdge.posts
        refused = post("203.0.113.9", "good")
        assert refused.status_code == 429
        assert refused.json is not None and refused.json["code"] == "Throttling.Authentication"
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["Access-Control-Allow-Origin"] == "*"
        assert TokenEdge.posts == reached, "a throttled POST never reaches the edge"
        assert post("198.51.100.7", "good").status_code == 201, "another address is served"
        delete = client.delete(endpoint + "/res1", environ_base={"REMOTE_ADDR": "203.0.113.9"})
        assert delete.status_code != 429, "hanging up is never throttled"
    finally:
        server.shutdown()
