"""WHIP ingest against a real Janus in signed-token mode: FFmpeg's WHIP muxer (a client nobody here
wrote, in its own process) publishes through the API's address into a channel and a channel source
sees the user's picture and tone; DELETE, a vanished client and every refused request leave nothing
in Janus (sessions counted through Janus' admin API)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from multidict import CIMultiDict
from werkzeug.serving import BaseWSGIServer, make_server

from rtc_mpu.api.app import create_app
from rtc_mpu.edge.app import PUBLISHERS
from rtc_mpu.edge.app import create_app as create_edge
from rtc_mpu.edge.publishers import Publishers
from rtc_mpu.edge.settings import EdgeSettings, ice_server_links
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.mixer.sources.janus_http import JanusSession
from rtc_mpu.spec import tokens
from rtc_mpu.spec.tokens import Role, mint_token
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.publisher import Publisher, synthetic_tracks
from tests import whip_client
from tests.conftest import TOKEN_SECRET
from tests.media import tone_level_db
from tests.test_janus_source import Recorder, centre_color, has_media, wait_for
from tests.test_token_mode import create_room

pytestmark = pytest.mark.integration  # starts its own Janus (token mode with the admin API)

ADMIN_SECRET = "whip-test-admin"
OFFER = whip_client.OFFER


@pytest.fixture(scope="module")
def janus_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Janus]:
    """Janus in signed-token mode (:data:`TOKEN_SECRET`) with its admin API on (sessions counted)."""
    server = Janus(
        tmp_path_factory.mktemp("janus-whip"),
        http_port=free_port(),
        rtp_port_range="45000-46999",
        token_secret=TOKEN_SECRET,
        admin_port=free_port(),
        admin_secret=ADMIN_SECRET,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A P-256 certificate and key for FFmpeg's WHIP muxer."""
    return whip_client.write_p256_certificate(tmp_path_factory.mktemp("whip-cert"))


def janus_admin_request(janus: Janus, body: dict[str, Any], session_id: int | None = None) -> dict[str, Any]:
    """An admin API request (to a session if ``session_id``); Janus' successful answer."""
    assert janus.admin_url is not None
    url = janus.admin_url + (f"/{session_id}" if session_id is not None else "")
    payload = json.dumps({**body, "transaction": "test", "admin_secret": ADMIN_SECRET}).encode()
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
    assert answer.get("janus") == "success", answer
    return answer


def janus_sessions(janus: Janus) -> list[int]:
    """The ids of every session Janus holds (admin API ``list_sessions``)."""
    return [int(s) for s in janus_admin_request(janus, {"janus": "list_sessions"})["sessions"]]


def publish_token(
    app_id: str, channel_id: str, user_id: str, ttl: int = 300, role: Role = Role.PUBLISH
) -> str:
    return mint_token(TOKEN_SECRET, app_id, channel_id, user_id, role, int(time.time()) + ttl)


@asynccontextmanager
async def running_edge(janus_url: str, **settings: Any) -> AsyncIterator[tuple[str, Publishers]]:
    """The edge on a free loopback port of this event loop: (its base URL, its publishers)."""
    app = create_edge(EdgeSettings(token_secret=TOKEN_SECRET, janus_url=janus_url, **settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app[PUBLISHERS]
    finally:
        await runner.cleanup()


class ApiServer:
    """The Flask API (authentication off, no store use) on a free loopback port in a thread."""

    def __init__(self, edge_url: str) -> None:
        app = create_app({"MPU_AUTH_DISABLED": True, "MPU_EDGE_URL": edge_url})
        self.port = free_port()
        self.server: BaseWSGIServer = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(5)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


async def request(
    method: str, url: str, body: str | bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, url, data=body, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=20)
        ) as reply,
    ):
        return reply.status, CIMultiDict(reply.headers), await reply.read()


def sdp_headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def started_publishers(janus: Janus, room: str) -> list[str]:
    """The room's participants whose PeerConnection is up (VideoRoom ``listparticipants``)."""
    session = JanusSession(janus.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
    await session.connect()
    try:
        handle = await session.attach()
        reply = await handle.request({"request": "listparticipants", "room": room})
        return sorted(str(p["id"]) for p in reply.get("participants", []) if p.get("publisher"))
    finally:
        await session.close()


async def wait_for_async(probe: Callable[[], Awaitable[Any]], wanted: Any, timeout: float) -> None:
    """Poll ``probe()`` every 0.1 s until it returns ``wanted``, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (got := await probe()) != wanted:
        assert time.monotonic() < deadline, f"{got!r} is not {wanted!r} after {timeout} s"
        await asyncio.sleep(0.1)


def stop_client(client: subprocess.Popen[bytes]) -> str:
    """SIGTERM the WHIP client (it closes the muxer, which DELETEs), wait, and return its log."""
    if client.poll() is None:
        client.send_signal(signal.SIGTERM)
    try:
        out, _ = client.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        client.kill()
        out, _ = client.communicate()
    return out.decode(errors="replace")


@pytest.mark.timeout(60)
def test_ffmpeg_publishes_through_the_api_and_leaves_on_delete(
    janus_admin: Janus, certificate: tuple[Path, Path]
) -> None:
    token = publish_token("app1", "whip-live", "obs-alice")

    async def scenario() -> None:
        await create_room(janus_admin, "app1", "whip-live", [token])
        recorder = Recorder()
        source = JanusSource(ChannelConfig(janus_admin.url, "app1", "whip-live", token_secret=TOKEN_SECRET))
        await source.start(recorder)
        client: subprocess.Popen[bytes] | None = None
        async with running_edge(janus_admin.url) as (edge_url, publishers):
            with ApiServer(edge_url) as api_url:
                try:
                    await wait_for(lambda: source.status.value == "joined", 10)
                    baseline = janus_sessions(janus_admin)
                    endpoint = f"{api_url}/v1/apps/app1/channels/whip-live/whip"
                    started = time.monotonic()
                    client = whip_client.start(endpoint, token, *certificate, seconds=40)
                    await wait_for(lambda: has_media(recorder, "obs-alice"), 15)
                    print(f"WHIP time to first picture and audio: {time.monotonic() - started:.2f} s")
                    await asyncio.sleep(0.5)
                    colour = centre_color(recorder.pictures["obs-alice"])
                    assert np.abs(colour - whip_client.COLOR).max() <= 30, colour
                    samples = np.concatenate(recorder.audio["obs-alice"][-25:], axis=1)
                    level = tone_level_db(samples, 48000, whip_client.TONE_HZ)
                    assert level > -25, level
                    assert tone_level_db(samples, 48000, 1000.0) < level - 30
                    assert len(janus_sessions(janus_admin)) == len(baseline) + 1

                    [resource] = publishers.resources.values()
                    assert (resource.user_id, resource.connected) == ("obs-alice", True)
                    url = f"{api_url}/v1/apps/app1/channels/whip-live/whip/{resource.id}"
                    # Trickle ICE through the API: a candidate → 204; another ufrag (ICE restart) → 422;
                    # a stale If-Match → 412.
                    fragment = (
                        f"a=ice-ufrag:{resource.offer.ice_ufrag}\r\na=ice-pwd:{resource.offer.ice_pwd}\r\n"
                        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                        "a=candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host\r\na=end-of-candidates\r\n"
                    )
                    trickle = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": resource.etag}
                    status, _, _ = await request("PATCH", url, fragment, trickle)
                    assert status == 204
                    restart = fragment.replace(resource.offer.ice_ufrag, "other1")
                    status, _, body = await request("PATCH", url, restart, trickle)
                    assert (status, json.loads(body)["code"]) == (422, "IceRestart.Unsupported")
                    status, _, _ = await request("PATCH", url, fragment, {**trickle, "If-Match": '"stale"'})
                    assert status == 412
                    await asyncio.sleep(1.0)
                    assert has_media(recorder, "obs-alice") and "obs-alice" not in recorder.leaves

                    # The client ends: FFmpeg's muxer DELETEs its Location (through the API).
                    log = await asyncio.to_thread(stop_client, client)
                    assert "whip_client: closed" in log, log
                    await wait_for(lambda: "obs-alice" in recorder.leaves, 10)
                    await wait_for(lambda: not publishers.resources, 5)
                    await wait_for(lambda: sorted(janus_sessions(janus_admin)) == sorted(baseline), 5)
                    status, _, body = await request("DELETE", url)
                    assert (status, json.loads(body)["code"]) == (404, "InvalidResource.NotFound")
                finally:
                    if client is not None:
                        await asyncio.to_thread(stop_client, client)
                    await source.close()

    run(scenario)


@pytest.mark.timeout(60)
def test_a_publisher_ends_on_vanishing_delete_no_connection_session_loss_and_shutdown(
    janus_admin: Janus, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rtc_mpu.edge")
    token = publish_token("app1", "whip-gone", "ffmpeg-bob")

    async def scenario() -> None:
        await create_room(janus_admin, "app1", "whip-gone", [token])
        baseline = janus_sessions(janus_admin)
        async with running_edge(janus_admin.url, media_timeout=2.0) as (edge_url, publishers):
            endpoint = f"{edge_url}/v1/apps/app1/channels/whip-gone/whip"
            client = whip_client.start(endpoint, token, *certificate, seconds=40)
            try:
                await wait_for(lambda: any(r.connected for r in publishers.resources.values()), 15)
                assert len(janus_sessions(janus_admin)) == len(baseline) + 1
                os.kill(client.pid, signal.SIGKILL)  # no DELETE, no DTLS alert: it just vanishes
                took = await wait_for(lambda: not publishers.resources, 15)
                print(f"vanished WHIP client removed after {took:.1f} s (media timeout 2 s)")
                await wait_for(lambda: sorted(janus_sessions(janus_admin)) == sorted(baseline), 5)
                assert "ends: no media for 2 s" in caplog.text
            finally:
                await asyncio.to_thread(stop_client, client)

        links = ice_server_links(
            "stun:stun.example.net:3478, turns:turn.example.net?transport=tcp", "u1", "p1"
        )
        async with running_edge(janus_admin.url, connect_timeout=1.5, ice_links=links) as (
            edge_url,
            publishers,
        ):
            endpoint = f"{edge_url}/v1/apps/app1/channels/whip-gone/whip"

            async def post() -> str:
                status, headers, answer = await request("POST", endpoint, OFFER, sdp_headers(token))
                assert status == 201, answer
                assert headers.getall("Link") == [
                    '<stun:stun.example.net:3478>; rel="ice-server"',
                    '<turns:turn.example.net?transport=tcp>; rel="ice-server"; username="u1"; '
                    'credential="p1"; credential-type="password"',
                ], "RFC 9725 4.6: the ICE servers a client should use"
                assert headers["Content-Type"].startswith("application/sdp") and headers["ETag"]
                assert answer.startswith(b"v=0") and b"a=setup:active" in answer
                assert headers["Location"].startswith("/v1/apps/app1/channels/whip-gone/whip/")
                assert len(janus_sessions(janus_admin)) == len(baseline) + 1
                return str(headers["Location"])

            # A DELETE by the resource URL alone (no token needed) ends a publisher at once.
            location = await post()
            status, _, _ = await request("DELETE", edge_url + location)
            assert status == 200 and not publishers.resources
            assert sorted(janus_sessions(janus_admin)) == sorted(baseline)
            # A client that never completes ICE/DTLS is removed after the connect timeout.
            await post()
            await wait_for(lambda: not publishers.resources, 5)
            await wait_for(lambda: sorted(janus_sessions(janus_admin)) == sorted(baseline), 5)
            assert "ends: ICE/DTLS not completed within 1.5 s" in caplog.text
            # The Janus session lost (destroyed behind the edge's back): the next request to it finds
            # out (the long poll takes up to 30 s to) and the resource goes.
            location = await post()
            [session_id] = set(janus_sessions(janus_admin)) - set(baseline)
            janus_admin_request(janus_admin, {"janus": "destroy_session"}, session_id)
            trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
            status, _, answer = await request(
                "PATCH", edge_url + location, "a=end-of-candidates\r\n", trickle
            )
            assert (status, json.loads(answer)["code"]) == (404, "InvalidResource.NotFound"), answer
            assert not publishers.resources
            # The edge shutting down removes what it holds.
            await post()
        assert sorted(janus_sessions(janus_admin)) == sorted(baseline)

    run(scenario)


@pytest.mark.timeout(60)
def test_bad_input_is_refused_and_leaves_nothing_in_janus(janus_admin: Janus) -> None:
    alice = publish_token("app1", "whip-bad", "alice")
    alice_again = publish_token("app1", "whip-bad", "alice", ttl=600)
    bob = publish_token("app1", "whip-bad", "bob")
    carol_unlisted = publish_token("app1", "whip-bad", "carol")  # valid, never put on the room's list
    vp8_only = publish_token("app1", "whip-vp8", "dave")
    no_room = publish_token("app1", "whip-no-room", "erin")
    pcmu_offer = OFFER.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 PCMU/8000")
    data_only = OFFER.replace(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel"
    )
    data_only = data_only.replace("m=video 9 UDP/TLS/RTP/SAVPF 106 105", "m=application 9 UDP/DTLS/SCTP x")
    no_audio_video = OFFER.replace("a=sendonly", "a=recvonly")

    cases: list[tuple[str, str | bytes, dict[str, str], int, str]] = [
        # what, body, headers, status, code
        ("no token", OFFER, sdp_headers(None), 401, "InvalidToken"),
        ("not Bearer", OFFER, {**sdp_headers(None), "Authorization": "Basic YTpi"}, 401, "InvalidToken"),
        (
            "forged",
            OFFER,
            sdp_headers(
                mint_token(
                    "another-secret-0123456789", "app1", "whip-bad", "mallory", Role.PUBLISH, 2_000_000_000
                )
            ),
            401,
            "InvalidToken",
        ),
        ("garbage token", OFFER, sdp_headers("not-a-token"), 401, "InvalidToken"),
        (
            "expired",
            OFFER,
            sdp_headers(publish_token("app1", "whip-bad", "alice", ttl=-5)),
            403,
            "TokenExpired",
        ),
        (
            "another channel's",
            OFFER,
            sdp_headers(publish_token("app1", "elsewhere", "alice")),
            403,
            "InvalidToken.Channel",
        ),
        (
            "subscribe token",
            OFFER,
            sdp_headers(publish_token("app1", "whip-bad", "alice", role=Role.SUBSCRIBE)),
            403,
            "InvalidToken.Role",
        ),
        (
            "a task's mix id",
            OFFER,
            sdp_headers(publish_token("app1", "whip-bad", "task1.mix")),
            403,
            "InvalidUserId.Reserved",
        ),
        (
            "JSON body",
            OFFER,
            {**sdp_headers(alice), "Content-Type": "application/json"},
            415,
            "InvalidContentType",
        ),
        ("no Content-Type", OFFER.encode(), {"Authorization": f"Bearer {alice}"}, 415, "InvalidContentType"),
        ("not SDP", "hello", sdp_headers(alice), 400, "InvalidSdp.Malformed"),
        ("not UTF-8", b"v=0\r\n\xff\xfe", sdp_headers(alice), 400, "InvalidSdp.Malformed"),
        ("no ICE", OFFER.replace("a=ice-", "a=xice-"), sdp_headers(alice), 400, "InvalidSdp.Malformed"),
        ("data channel only", data_only, sdp_headers(alice), 400, "InvalidSdp.NoMedia"),
        ("receive only", no_audio_video, sdp_headers(alice), 400, "InvalidSdp.NoMedia"),
        ("PCMU audio", pcmu_offer, sdp_headers(alice), 400, "InvalidSdp.Codec"),
        ("over 64 KiB", OFFER + "a=x:" + "y" * 70_000 + "\r\n", sdp_headers(alice), 413, "RequestTooLarge"),
        # These reach Janus:
        ("token not on the room's list", OFFER, sdp_headers(carol_unlisted), 403, "InvalidToken.NotAllowed"),
        ("no room", OFFER, sdp_headers(no_room), 404, "InvalidChannel.NotFound"),
        ("H.264 into a VP8 room", OFFER, sdp_headers(vp8_only), 400, "InvalidSdp.Codec"),
    ]

    async def scenario() -> None:
        await create_room(janus_admin, "app1", "whip-bad", [alice, alice_again, bob], publishers=1)
        await create_room(janus_admin, "app1", "whip-vp8", [vp8_only], videocodec="vp8")
        baseline = sorted(janus_sessions(janus_admin))
        async with running_edge(janus_admin.url) as (edge_url, publishers):
            with ApiServer(edge_url) as api_url:
                for base in (edge_url, api_url):  # the edge itself, and through the API's address
                    for what, body, headers, status, code in cases:
                        target = "whip-bad"
                        if "VP8 room" in what:
                            target = "whip-vp8"
                        elif what == "no room":
                            target = "whip-no-room"
                        url = f"{base}/v1/apps/app1/channels/{target}/whip"
                        got, got_headers, answer = await request("POST", url, body, headers)
                        assert (got, json.loads(answer)["code"]) == (status, code), (base, what, answer)
                        assert set(json.loads(answer)) == {"code", "message", "field", "request_id"}
                        if status == 401:
                            assert got_headers["WWW-Authenticate"].startswith("Bearer"), what
                        if status == 415:
                            assert got_headers["Accept-Post"] == "application/sdp"
                        assert not publishers.resources, what
                        assert sorted(janus_sessions(janus_admin)) == baseline, (base, what)

                    # A second publisher with the same UserId → 409 (a resource that never connected
                    # holds its place too); DELETE frees it.
                    endpoint = f"{base}/v1/apps/app1/channels/whip-bad/whip"
                    status, created, answer = await request("POST", endpoint, OFFER, sdp_headers(alice))
                    assert status == 201, answer
                    for token in (alice, alice_again):
                        status, _, answer = await request("POST", endpoint, OFFER, sdp_headers(token))
                        assert (status, json.loads(answer)["code"]) == (409, "InvalidUserId.InUse"), answer
                    assert len(publishers.resources) == 1
                    assert len(janus_sessions(janus_admin)) == len(baseline) + 1
                    status, _, _ = await request("DELETE", base + created["Location"])
                    assert status == 200
                    assert sorted(janus_sessions(janus_admin)) == baseline

                # The room takes 1 publisher: with bob connected (Janus counts started PeerConnections),
                # alice is refused with 503 and nothing is left behind.
                bob_publisher = Publisher(
                    janus_admin.url, "app1:whip-bad", "bob", synthetic_tracks(1, "bob"), token=bob
                )
                await bob_publisher.start()
                try:
                    await wait_for_async(
                        lambda: started_publishers(janus_admin, "app1:whip-bad"), ["bob"], 10
                    )
                    with_bob = sorted(janus_sessions(janus_admin))
                    for base in (edge_url, api_url):
                        endpoint = f"{base}/v1/apps/app1/channels/whip-bad/whip"
                        status, refused, answer = await request("POST", endpoint, OFFER, sdp_headers(alice))
                        assert (status, json.loads(answer)["code"]) == (503, "InvalidChannel.Full"), answer
                        assert refused["Retry-After"]
                        assert not publishers.resources
                        assert sorted(janus_sessions(janus_admin)) == with_bob
                finally:
                    await bob_publisher.stop()

    run(scenario)
