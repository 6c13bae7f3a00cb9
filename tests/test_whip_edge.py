"""The WHIP edge without Janus: SDP checks, settings, the HTTP answers that need no Janus (and the one
for a Janus that does not answer), and the API's proxy (a fake edge on loopback; the edge down).
The real thing, with FFmpeg and Janus: tests/test_whip_ingest.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rtc_mpu.api.app import create_app
from rtc_mpu.cli.main import main
from rtc_mpu.edge.app import PUBLISHERS
from rtc_mpu.edge.app import create_app as create_edge
from rtc_mpu.edge.sdp import SdpError, check_answer, check_offer, parse_trickle
from rtc_mpu.edge.settings import EdgeSettings, ice_server_links
from rtc_mpu.spec.tokens import Role, mint_token
from rtc_mpu.stack.ports import free_port
from tests.conftest import TOKEN_SECRET
from tests.whip_client import OFFER

SDP = {"Content-Type": "application/sdp"}


def token(channel: str = "ch1", user: str = "alice", role: Role = Role.PUBLISH, ttl: int = 300) -> str:
    return mint_token(TOKEN_SECRET, "app1", channel, user, role, int(time.time()) + ttl)


# -- SDP ----------------------------------------------------------------------------------------


def test_ffmpegs_offer_passes_with_audio_and_video() -> None:
    offer = check_offer(OFFER)
    assert offer.kinds == {"audio", "video"}
    assert [(s.kind, s.mid, s.codecs, s.direction) for s in offer.sections] == [
        ("audio", "0", ["opus"], "sendonly"),
        ("video", "1", ["h264", "rtx"], "sendonly"),
    ]
    assert (offer.ice_ufrag, offer.ice_pwd) == ("4e9ecf42", "cc801f18c1dd16e0394627fce0f33644")


def _without_section(kind: str) -> str:
    head, audio_and_video = OFFER.split("m=audio", 1)
    audio, video = audio_and_video.split("m=video", 1)
    return head + ("m=video" + video if kind == "audio" else "m=audio" + audio)


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_an_offer_with_only_audio_or_only_video_passes(kind: str) -> None:
    offer = check_offer(_without_section(kind))
    assert offer.kinds == {"audio", "video"} - {kind}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "InvalidSdp.Malformed"),
        ("hello", "InvalidSdp.Malformed"),
        ("v=1\r\n", "InvalidSdp.Malformed"),
        (OFFER.replace("a=mid:0", "mid 0"), "InvalidSdp.Malformed"),
        (OFFER.replace("a=mid:0", "a=mid:0\x01"), "InvalidSdp.Malformed"),
        (OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio nine"), "InvalidSdp.Malformed"),
        (OFFER.replace("a=fingerprint", "a=xfingerprint"), "InvalidSdp.Malformed"),
        (OFFER.replace("a=ice-pwd", "a=xice-pwd"), "InvalidSdp.Malformed"),
        (OFFER + "a=x:" + "y" * 5000 + "\r\n", "InvalidSdp.Malformed"),
        (OFFER + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" * 7, "InvalidSdp.Malformed"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "InvalidSdp.NoMedia"),
        (OFFER.replace("a=sendonly", "a=recvonly"), "InvalidSdp.NoMedia"),
        (OFFER.replace("a=sendonly", "a=inactive"), "InvalidSdp.NoMedia"),
        (OFFER.replace("m=audio 9", "m=audio 0").replace("m=video 9", "m=video 0"), "InvalidSdp.NoMedia"),
        (OFFER.replace("opus/48000/2", "PCMU/8000"), "InvalidSdp.Codec"),
        (OFFER.replace("H264/90000", "VP9/90000"), "InvalidSdp.Codec"),
        (
            OFFER.replace("SAVPF 111", "SAVPF 0").replace("a=rtpmap:111 opus/48000/2\r\n", ""),
            "InvalidSdp.Codec",
        ),
    ],
)
def test_bad_offers_are_refused_with_a_code(text: str, code: str) -> None:
    with pytest.raises(SdpError) as caught:
        check_offer(text)
    assert caught.value.code == code, caught.value.message


def test_a_refused_codec_is_named() -> None:
    with pytest.raises(SdpError, match=r"video section offers vp9, rtx; the channel takes h264, vp8"):
        check_offer(OFFER.replace("H264/90000", "VP9/90000"))


def test_a_session_level_direction_applies_to_sections_without_one() -> None:
    text = OFFER.replace("a=sendonly\r\n", "").replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n")
    with pytest.raises(SdpError) as caught:
        check_offer(text)
    assert caught.value.code == "InvalidSdp.NoMedia"


def test_an_answer_refusing_a_section_the_client_sends_is_a_codec_error() -> None:
    offer = check_offer(OFFER)
    answer = OFFER.replace("a=sendonly", "a=recvonly")
    check_answer(offer, answer)
    with pytest.raises(SdpError) as caught:
        check_answer(offer, answer.replace("m=video 9", "m=video 0"))
    assert caught.value.code == "InvalidSdp.Codec" and "video" in caught.value.message
    with pytest.raises(SdpError) as caught:
        check_answer(offer, _without_section("video"))
    assert caught.value.code == "InvalidSdp.Malformed"


def test_a_trickle_fragment_is_parsed() -> None:
    fragment = parse_trickle(
        "a=ice-ufrag:abcd\r\na=ice-pwd:secretpwd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\n"
        "a=candidate:2 1 udp 2130706431 192.0.2.1 50001 typ host\r\na=end-of-candidates\r\n"
    )
    assert (fragment.ice_ufrag, fragment.ice_pwd, fragment.end_of_candidates) == ("abcd", "secretpwd", True)
    assert fragment.candidates == [
        ("0", "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host"),
        ("1", "candidate:2 1 udp 2130706431 192.0.2.1 50001 typ host"),
    ]
    with pytest.raises(SdpError):
        parse_trickle("a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n" * 65)


# -- settings -----------------------------------------------------------------------------------


def test_settings_come_from_the_environment() -> None:
    settings = EdgeSettings.from_env(
        {
            "MPU_TOKEN_SECRET": TOKEN_SECRET,
            "MPU_EDGE_PORT": "9000",
            "MPU_EDGE_HOST": "0.0.0.0",
            "MPU_JANUS_URL": "http://janus:8088/janus",
            "MPU_EDGE_MEDIA_TIMEOUT": "12.5",
            "MPU_EDGE_MAX_SESSIONS": "3",
        }
    )
    assert (settings.host, settings.port, settings.janus_url) == ("0.0.0.0", 9000, "http://janus:8088/janus")
    assert (settings.media_timeout, settings.max_resources, settings.token_signature) == (12.5, 3, "sha1")
    assert EdgeSettings.from_env({"MPU_TOKEN_SECRET": TOKEN_SECRET}, {"port": 1234}).port == 1234


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "MPU_TOKEN_SECRET"),
        ({"MPU_TOKEN_SECRET": "short"}, "MPU_TOKEN_SECRET"),
        ({"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_EDGE_PORT": "70000"}, "MPU_EDGE_PORT"),
        ({"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_EDGE_PORT": "x"}, "MPU_EDGE_PORT"),
        ({"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_EDGE_JANUS_TIMEOUT": "0"}, "MPU_EDGE_JANUS_TIMEOUT"),
        ({"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_JANUS_TOKEN_SIGNATURE": "md5"}, "MPU_JANUS_TOKEN_SIGNATURE"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        EdgeSettings.from_env(env)


# -- the edge's HTTP side, Janus unreachable ------------------------------------------------------


def with_edge(scenario: Callable[[TestClient[Any, Any]], Awaitable[None]], **settings: Any) -> None:
    """Run ``scenario`` against the edge on loopback, its Janus an unused port (nothing answers)."""

    async def main() -> None:
        janus_url = f"http://127.0.0.1:{free_port()}/janus"
        app = create_edge(EdgeSettings(token_secret=TOKEN_SECRET, janus_url=janus_url, **settings))
        async with TestClient(TestServer(app)) as client:
            await scenario(client)
            assert not app[PUBLISHERS].resources

    asyncio.run(main())


ENDPOINT = "/v1/apps/app1/channels/ch1/whip"


def test_options_answers_accept_post_and_cors() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        reply = await client.options(ENDPOINT, headers={"Origin": "https://example.com"})
        assert reply.status == 204
        assert reply.headers["Accept-Post"] == "application/sdp"
        assert "POST" in reply.headers["Allow"]
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in reply.headers["Access-Control-Expose-Headers"]
        reply = await client.options(ENDPOINT + "/some-id")
        assert reply.status == 204
        assert reply.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"

    with_edge(scenario)


def test_refusals_before_janus_have_the_apis_error_shape() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        cases = [
            ({**SDP}, OFFER, 401, "InvalidToken"),
            ({**SDP, "Authorization": "Bearer x"}, OFFER, 401, "InvalidToken"),
            ({**SDP, "Authorization": f"Bearer {token(ttl=-1)}"}, OFFER, 403, "TokenExpired"),
            ({**SDP, "Authorization": f"Bearer {token('other')}"}, OFFER, 403, "InvalidToken.Channel"),
            (
                {**SDP, "Authorization": f"Bearer {token(role=Role.SUBSCRIBE)}"},
                OFFER,
                403,
                "InvalidToken.Role",
            ),
            (
                {**SDP, "Authorization": f"Bearer {token(user='t1.mix')}"},
                OFFER,
                403,
                "InvalidUserId.Reserved",
            ),
            (
                {"Authorization": f"Bearer {token()}", "Content-Type": "text/plain"},
                OFFER,
                415,
                "InvalidContentType",
            ),
            ({**SDP, "Authorization": f"Bearer {token()}"}, "v=0\r\n", 400, "InvalidSdp.NoMedia"),
        ]
        for headers, body, status, code in cases:
            reply = await client.post(ENDPOINT, data=body, headers=headers)
            answer = await reply.json()
            assert (reply.status, answer["code"]) == (status, code), answer
            assert set(answer) == {"code", "message", "field", "request_id"}
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
            if status == 401:
                assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="rtc-mpu"')

    with_edge(scenario)


def test_unknown_routes_methods_resources_and_big_bodies() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        reply = await client.get(ENDPOINT)
        assert (reply.status, (await reply.json())["code"]) == (405, "MethodNotAllowed")
        assert "POST" in reply.headers["Allow"]
        reply = await client.get("/nowhere")
        assert (reply.status, (await reply.json())["code"]) == (404, "NotFound")
        for method in ("DELETE", "PATCH"):
            reply = await client.request(method, ENDPOINT + "/unknown", headers={"Content-Type": "x"})
            assert (reply.status, (await reply.json())["code"]) == (404, "InvalidResource.NotFound")
        reply = await client.post(
            ENDPOINT,
            data="v=0\r\n" + "a=x\r\n" * 20_000,
            headers={**SDP, "Authorization": f"Bearer {token()}"},
        )
        assert (reply.status, (await reply.json())["code"]) == (413, "RequestTooLarge")
        reply = await client.get("/healthz")
        assert await reply.json() == {"status": "ok", "publishers": 0}

    with_edge(scenario)


def test_janus_not_answering_is_503_and_leaves_no_resource() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        reply = await client.post(ENDPOINT, data=OFFER, headers={**SDP, "Authorization": f"Bearer {token()}"})
        answer = await reply.json()
        assert (reply.status, answer["code"]) == (503, "Janus.Unavailable"), answer
        assert reply.headers["Retry-After"]

    with_edge(scenario, janus_timeout=2.0)


# -- the API's proxy --------------------------------------------------------------------------------


class FakeEdge(BaseHTTPRequestHandler):
    """Records each request and answers like the edge's 201 (plus a header that must not be passed on)."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        FakeEdge.seen.append((self.command, self.path, dict(self.headers), body))
        if self.command == "DELETE":
            self.send_response(404)
            payload = b'{"code": "InvalidResource.NotFound"}'
            self.send_header("Content-Type", "application/json")
        else:
            self.send_response(201)
            payload = b"v=0\r\nanswer\r\n"
            self.send_header("Content-Type", "application/sdp")
            self.send_header("Location", "/v1/apps/app1/channels/ch1/whip/res1")
            self.send_header("ETag", '"e1"')
            self.send_header("X-Internal", "not for clients")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_OPTIONS(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_edge() -> Iterator[str]:
    FakeEdge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeEdge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(5)


def test_the_api_forwards_whip_verbatim(fake_edge: str) -> None:
    api = create_app({"MPU_AUTH_DISABLED": True, "MPU_EDGE_URL": fake_edge}).test_client()
    reply = api.post(ENDPOINT, data=OFFER, headers={**SDP, "Authorization": "Bearer tok", "Cookie": "c=1"})
    assert reply.status_code == 201
    assert reply.data == b"v=0\r\nanswer\r\n"
    assert reply.headers["Content-Type"] == "application/sdp"
    assert reply.headers["Location"] == "/v1/apps/app1/channels/ch1/whip/res1"
    assert reply.headers["ETag"] == '"e1"'
    assert "X-Internal" not in reply.headers
    method, path, headers, body = FakeEdge.seen[-1]
    assert (method, path, body) == ("POST", ENDPOINT, OFFER.encode())
    assert headers["Authorization"] == "Bearer tok" and headers["Content-Type"] == "application/sdp"
    assert "Cookie" not in headers

    reply = api.delete(ENDPOINT + "/res1")
    assert (reply.status_code, reply.json) == (404, {"code": "InvalidResource.NotFound"})
    reply = api.patch(ENDPOINT + "/res1", data="a=end-of-candidates\r\n", headers={"If-Match": '"e1"'})
    assert reply.status_code == 201 and FakeEdge.seen[-1][2]["If-Match"] == '"e1"'
    reply = api.options(ENDPOINT, headers={"Access-Control-Request-Method": "POST"})
    assert FakeEdge.seen[-1][0] == "OPTIONS"  # the edge's answer, not Flask's automatic OPTIONS
    assert FakeEdge.seen[-1][2]["Access-Control-Request-Method"] == "POST"
    assert [m for m, *_ in FakeEdge.seen] == ["POST", "DELETE", "PATCH", "OPTIONS"]


def test_the_api_answers_503_when_the_edge_is_down() -> None:
    api = create_app(
        {"MPU_AUTH_DISABLED": True, "MPU_EDGE_URL": f"http://127.0.0.1:{free_port()}"}
    ).test_client()
    for method in ("POST", "DELETE"):
        path = ENDPOINT if method == "POST" else ENDPOINT + "/res1"
        reply = api.open(path, method=method, data=OFFER, headers=SDP)
        assert reply.status_code == 503
        assert reply.json is not None and reply.json["code"] == "Edge.Unavailable"
        assert reply.headers["Retry-After"]
    reply = api.get(ENDPOINT)
    assert reply.status_code == 405 and json.loads(reply.data)["code"] == "MethodNotAllowed"


# -- mpu edge -------------------------------------------------------------------------------------


def test_mpu_edge_refuses_to_start_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MPU_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("MPU_RUN_DIR", str(tmp_path))  # no stack secret there either
    assert main(["edge"]) == 2
    assert "MPU_TOKEN_SECRET is not set" in capsys.readouterr().err


@pytest.mark.integration  # runs the edge as a process of its own
@pytest.mark.timeout(60)
def test_mpu_edge_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MPU_TOKEN_SECRET": TOKEN_SECRET,
        "MPU_EDGE_PORT": str(port),
        "MPU_RUN_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "rtc_mpu", "edge"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    assert json.loads(reply.read()) == {"status": "ok", "publishers": 0}
                    break
            except OSError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "mpu edge did not answer"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert f"WHIP on http://127.0.0.1:{port}/v1/apps/" in err.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_ice_servers_become_link_headers_and_bad_ones_stop_the_edge() -> None:
    assert ice_server_links("", None, None) == ()
    assert ice_server_links(" stun:a.example.net , ", None, None) == (
        '<stun:a.example.net>; rel="ice-server"',
    )
    assert ice_server_links("turn:t.example.net:3478?transport=udp", "user", "pa:ss") == (
        '<turn:t.example.net:3478?transport=udp>; rel="ice-server"; username="user"; '
        'credential="pa:ss"; credential-type="password"',
    )
    for urls, user, credential in (
        ("http://a.example.net", None, None),  # not an ICE scheme
        ("stun:", None, None),
        ("stun:a.example.net>; rel=x", None, None),  # would end the URI reference
        ("stun:a.example.net\r\nX-Evil: 1", None, None),
        ("turn:t.example.net", None, None),  # TURN without credentials
        ("turn:t.example.net", "user", 'pass"; rel="x'),
        ("turn:t.example.net", "us\u202eer", "pass"),
    ):
        with pytest.raises(ValueError, match="MPU_WHIP"):
            ice_server_links(urls, user, credential)
    settings = EdgeSettings.from_env(
        {"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_WHIP_ICE_SERVERS": "stun:a.example.net"}
    )
    assert settings.ice_links == ('<stun:a.example.net>; rel="ice-server"',)
    with pytest.raises(ValueError, match="MPU_WHIP_ICE_SERVERS"):
        EdgeSettings.from_env(
            {"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_WHIP_ICE_SERVERS": "turn:x.example.net"}
        )
