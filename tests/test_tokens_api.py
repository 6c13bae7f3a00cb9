"""``POST /v1/apps/{app_id}/tokens`` on the real Redis store and a real Janus in signed-token mode
(``janus_tokens``, how the stack runs it): the answer, what Janus then accepts and refuses (checked at
Janus, with its own error codes: 403 for a session token it refuses, 433 for a join it refuses, 429
for a join without the room's PIN), the rooms' ``allowed`` lists (expired tokens taken off), and every
error answer.

Rooms live as long as the session's Janus: each test uses channels of its own (:func:`channel`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.api.janus_rooms import ROOM_BITRATE, ROOM_PUBLISHERS
from rtc_mpu.api.tokens import KEEP_EXPIRED_SECONDS, TokenIssuer
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusSession
from rtc_mpu.spec import tokens
from rtc_mpu.spec.tokens import Role, mint_token, verify_token
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.publisher import Publisher, synthetic_tracks
from rtc_mpu.workers.store import TaskStore
from tests.conftest import TOKEN_SECRET
from tests.signing import basic_auth
from tests.test_token_mode import allowed_list

KEYS = "k1:s1,bound:s2:onlyapp"
AUTH = basic_auth("k1", "s1")
APP = "tokapp"
_T = TypeVar("_T")


def run(scenario: Awaitable[_T]) -> _T:
    async def wrapped() -> _T:
        return await scenario

    return asyncio.run(wrapped())


def channel() -> str:
    """A channel of this test alone (the session's Janus keeps every room)."""
    return f"ch-{uuid.uuid4().hex[:12]}"


def make_app(store: Any, janus_url: str, **config: Any) -> APIFlask:
    settings: dict[str, Any] = {
        "MPU_ACCESS_KEYS": KEYS,
        "STORE": store,
        "ENQUEUE": lambda a, t: None,
        "MPU_RATE_LIMIT": 0,
        "MPU_TOKEN_SECRET": TOKEN_SECRET,
        "MPU_JANUS_URL": janus_url,
    }
    settings.update(config)
    return create_app(settings)


@pytest.fixture
def client(task_store: TaskStore, janus_tokens: Janus) -> FlaskClient:
    return make_app(task_store, janus_tokens.url).test_client()


def issue(
    client: FlaskClient, channel_id: str, user_id: str = "alice", role: str = "publish", ttl: int = 300
) -> tuple[int, dict[str, Any]]:
    body = {"channel_id": channel_id, "user_id": user_id, "ttl_seconds": ttl, "role": role}
    response = client.post(f"/v1/apps/{APP}/tokens", json=body, headers=AUTH)
    assert response.json is not None, response.data[:300]
    return response.status_code, response.json


def issued(
    client: FlaskClient, channel_id: str, user_id: str = "alice", role: str = "publish", ttl: int = 300
) -> dict[str, Any]:
    status, body = issue(client, channel_id, user_id, role, ttl)
    assert status == 201, body
    return body


async def join_publisher(
    janus: Janus, room: str, user: str, session_token: str | None, join_token: str | None, pin: str | None
) -> int:
    """Join ``room`` as a publisher (no media); 0 when Janus accepts, else Janus' error code."""
    session = JanusSession(janus.url, token=session_token)
    try:
        await session.connect()
    except JanusError as exc:
        return exc.code
    try:
        handle = await session.attach()
        body: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": room, "id": user}
        if join_token is not None:
            body["token"] = join_token
        if pin is not None:
            body["pin"] = pin
        try:
            event = await handle.message(body)
        except JanusError as exc:
            return exc.code
        assert event.data.get("videoroom") == "joined", event.data
        return 0
    finally:
        await session.close()


def allowed(janus: Janus, channel_id: str) -> list[str]:
    return run(allowed_list(janus, APP, channel_id))


def room_exists(janus: Janus, channel_id: str) -> bool:
    async def ask() -> bool:
        session = JanusSession(janus.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
        await session.connect()
        try:
            handle = await session.attach()
            reply = await handle.request({"request": "exists", "room": tokens.room_name(APP, channel_id)})
            return bool(reply["exists"])
        finally:
            await session.close()

    return run(ask())


def recorded(store: TaskStore, channel_id: str) -> dict[str, float]:
    """The API's record of the room's publish tokens (token -> expiry)."""
    key = TokenIssuer.key(store.prefix, tokens.room_name(APP, channel_id))
    pairs: list[tuple[bytes, float]] = store.client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    return {token.decode(): score for token, score in pairs}


# -- the answer ------------------------------------------------------------------------------------


def test_a_publish_token_answers_what_a_client_needs(
    client: FlaskClient, janus_tokens: Janus, task_store: TaskStore
) -> None:
    ch = channel()
    before = int(time.time())
    status, body = issue(client, ch, "alice", "publish", 600)
    assert status == 201, body
    assert set(body) == {"token", "expires_at", "room", "room_pin"}
    claims = verify_token(TOKEN_SECRET, body["token"], time.time())
    assert (claims.app_id, claims.channel_id, claims.user_id, claims.role) == (APP, ch, "alice", Role.PUBLISH)
    assert before + 600 <= claims.expires_at <= int(time.time()) + 600
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires.timestamp() == claims.expires_at
    room = f"{APP}:{ch}"
    assert body["room"] == room == claims.room
    assert body["room_pin"] == tokens.room_pin(TOKEN_SECRET, room) == claims.room_pin
    # the room exists as the stack makes rooms, and lists the token
    assert allowed(janus_tokens, ch) == [body["token"]]
    assert recorded(task_store, ch) == {body["token"]: claims.expires_at}
    ttl = task_store.client.ttl(TokenIssuer.key(task_store.prefix, room))
    assert 600 + KEEP_EXPIRED_SECONDS - 5 <= ttl <= 600 + KEEP_EXPIRED_SECONDS


def test_the_room_is_made_as_the_stack_makes_rooms(client: FlaskClient, janus_tokens: Janus) -> None:
    ch = channel()
    issued(client, ch)

    async def room_info() -> dict[str, Any]:
        session = JanusSession(janus_tokens.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
        await session.connect()
        try:
            handle = await session.attach()
            reply = await handle.request({"request": "list", "admin_key": tokens.admin_key(TOKEN_SECRET)})
            return next(r for r in reply["list"] if r["room"] == f"{APP}:{ch}")
        finally:
            await session.close()

    info = run(room_info())
    assert info["max_publishers"] == ROOM_PUBLISHERS == 16
    assert info["bitrate"] == ROOM_BITRATE
    assert info["pin_required"] is True
    assert info["videocodec"] == "vp8,h264" and info["audiocodec"] == "opus"
    assert info["notify_joining"] is True


def test_a_subscribe_token_is_only_minted(task_store: TaskStore) -> None:
    """No Janus call: it answers with Janus down, and no allowed list is touched."""
    client = make_app(task_store, f"http://127.0.0.1:{free_port()}/janus").test_client()
    ch = channel()
    status, body = issue(client, ch, "viewer", "subscribe", 60)
    assert status == 201, body
    claims = verify_token(TOKEN_SECRET, body["token"], time.time())
    assert claims.role is Role.SUBSCRIBE and body["room_pin"] == claims.room_pin
    assert recorded(task_store, ch) == {}


# -- at Janus --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_token_joins_its_room_as_a_publisher(client: FlaskClient, janus_tokens: Janus) -> None:
    ch = channel()
    alice, bob = issued(client, ch, "alice"), issued(client, ch, "bob")
    assert sorted(allowed(janus_tokens, ch)) == sorted([alice["token"], bob["token"]])

    async def scenario() -> None:
        token, room, pin = alice["token"], alice["room"], alice["room_pin"]
        assert await join_publisher(janus_tokens, room, "alice", token, token, pin) == 0
        assert await join_publisher(janus_tokens, room, "bob", bob["token"], bob["token"], pin) == 0
        assert await join_publisher(janus_tokens, room, "alice", token, token, None) == 429, "no PIN"
        assert await join_publisher(janus_tokens, room, "alice", token, token, "0" * 24) == 433, "wrong PIN"

    run(scenario())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "ch", ["中" * 64, "é\U0001f600", "a/b\\c%2F", "'\"<x>{}", "*", "room.mix", "a;b=c&d?e#f", "\u200d\ue000"]
)
def test_any_channel_and_user_id_the_api_accepts_works_at_janus(
    client: FlaskClient, janus_tokens: Janus, ch: str
) -> None:
    ch = f"{ch[:52]}{uuid.uuid4().hex[:12]}"
    user = "ü/" + ch[:20]
    body = issued(client, ch, user)
    assert body["room"] == f"{APP}:{ch}" and allowed(janus_tokens, ch) == [body["token"]]
    token = body["token"]
    assert run(join_publisher(janus_tokens, body["room"], user, token, token, body["room_pin"])) == 0


@pytest.mark.timeout(60)
def test_janus_refuses_tokens_of_another_channel_expired_forged_or_none(
    client: FlaskClient, janus_tokens: Janus
) -> None:
    here, there = channel(), channel()
    mine = issued(client, here, "alice")
    theirs = issued(client, there, "eve")
    room, pin = mine["room"], mine["room_pin"]
    now = int(time.time())
    expired = mint_token(TOKEN_SECRET, APP, here, "eve", Role.PUBLISH, now - 5)
    forged = mint_token("another-secret-0123456789", APP, here, "eve", Role.PUBLISH, now + 300)

    async def scenario() -> None:
        # another channel's token: a valid session, but not on this room's list (its PIN given too)
        assert await join_publisher(janus_tokens, room, "eve", theirs["token"], theirs["token"], pin) == 433
        # expired, forged, none: Janus refuses the session itself
        assert await join_publisher(janus_tokens, room, "eve", expired, expired, pin) == 403
        assert await join_publisher(janus_tokens, room, "eve", forged, forged, pin) == 403
        assert await join_publisher(janus_tokens, room, "eve", None, None, pin) == 403
        # a valid session but no token in the join: refused too (the list is checked all the same)
        assert await join_publisher(janus_tokens, room, "eve", mine["token"], None, pin) == 433

    run(scenario())


@pytest.mark.timeout(60)
def test_a_subscribe_token_cannot_publish(client: FlaskClient, janus_tokens: Janus) -> None:
    ch = channel()
    issued(client, ch, "alice")  # the room exists
    viewer = issued(client, ch, "viewer", "subscribe")
    token, room, pin = viewer["token"], viewer["room"], viewer["room_pin"]

    async def scenario() -> None:
        assert await join_publisher(janus_tokens, room, "viewer", token, token, pin) == 433
        assert await join_publisher(janus_tokens, room, "viewer", token, None, pin) == 433

    run(scenario())


@pytest.mark.timeout(90)
def test_a_published_user_is_watched_with_a_subscribe_token_and_the_pin(
    client: FlaskClient, janus_tokens: Janus
) -> None:
    """A real WebRTC publisher with the API's publish token; a viewer with the API's subscribe token
    gets the feed's offer only with the room's PIN (Janus does not check subscribers against the list)."""
    ch = channel()
    alice = issued(client, ch, "alice")
    viewer = issued(client, ch, "viewer", "subscribe")

    async def subscribe(pin: str | None) -> int:
        session = JanusSession(janus_tokens.url, token=viewer["token"])
        await session.connect()
        try:
            handle = await session.attach()
            body: dict[str, Any] = {
                "request": "join",
                "ptype": "subscriber",
                "room": viewer["room"],
                "streams": [{"feed": "alice"}],
            }
            if pin is not None:
                body["pin"] = pin
            try:
                event = await handle.message(body)
            except JanusError as exc:
                return exc.code
            assert event.data.get("videoroom") == "attached" and event.jsep is not None, event.data
            return 0
        finally:
            await session.close()

    async def scenario() -> None:
        publisher = Publisher(
            janus_tokens.url, alice["room"], "alice", synthetic_tracks(0, "alice"), token=alice["token"]
        )
        await publisher.start()
        try:
            assert await subscribe(None) == 429  # Janus: a missing element
            assert await subscribe("0" * 24) == 433
            deadline = time.monotonic() + 15
            while (code := await subscribe(viewer["room_pin"])) == 428:  # until Janus has the feed
                assert time.monotonic() < deadline, "alice's feed never appeared"
                await asyncio.sleep(0.2)
            assert code == 0
        finally:
            await publisher.stop()

    run(scenario())


# -- the allowed lists -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_expired_tokens_leave_the_list_at_the_next_issuance_for_the_room(
    task_store: TaskStore, janus_tokens: Janus
) -> None:
    ch, other = channel(), channel()
    past = make_app(task_store, janus_tokens.url, TOKEN_CLOCK=lambda: time.time() - 120).test_client()
    client = make_app(task_store, janus_tokens.url).test_client()
    old = issued(past, ch, "alice", ttl=60)  # expired 60 s ago
    elsewhere = issued(past, other, "alice", ttl=60)  # another room's: left alone
    assert allowed(janus_tokens, ch) == [old["token"]]
    viewer = issued(client, ch, "viewer", "subscribe")  # a valid session token: touches no list
    room, pin = old["room"], old["room_pin"]

    async def old_token_joins() -> int:
        # the danger of an expired token left on the list: anyone's valid session token (a viewer's)
        # with the expired publish token in the join
        return await join_publisher(janus_tokens, room, "alice", viewer["token"], old["token"], pin)

    assert run(old_token_joins()) == 0
    current = issued(client, ch, "bob")
    assert allowed(janus_tokens, ch) == [current["token"]]
    assert set(recorded(task_store, ch)) == {current["token"]}
    assert run(old_token_joins()) == 433
    assert allowed(janus_tokens, other) == [elsewhere["token"]]
    assert set(recorded(task_store, other)) == {elsewhere["token"]}


@pytest.mark.timeout(60)
def test_the_sweep_takes_expired_tokens_off_every_room_without_an_issuance(
    task_store: TaskStore, janus_tokens: Janus
) -> None:
    """Without any later issuance for their rooms, the periodic sweep (``mpu api`` runs it every
    minute) takes expired publish tokens off the lists, so they can no longer join."""
    ch, other = channel(), channel()
    past_app = make_app(task_store, janus_tokens.url, TOKEN_CLOCK=lambda: time.time() - 120)
    past = past_app.test_client()
    app = make_app(task_store, janus_tokens.url)
    client = app.test_client()
    old = issued(past, ch, "alice", ttl=60)  # expired 60 s ago
    valid = issued(client, other, "bob")
    old_other = issued(past, other, "eve", ttl=60)  # after bob's: no issuance removed it
    viewer = issued(client, ch, "viewer", "subscribe")

    async def old_token_joins() -> int:
        return await join_publisher(
            janus_tokens, old["room"], "alice", viewer["token"], old["token"], old["room_pin"]
        )

    assert run(old_token_joins()) == 0, "before the sweep the expired token still joins"
    issuer = app.extensions["mpu_tokens"]
    assert issuer.sweep() == 2
    assert allowed(janus_tokens, ch) == []
    assert allowed(janus_tokens, other) == [valid["token"]]
    assert old["token"] not in recorded(task_store, ch)
    assert old_other["token"] not in recorded(task_store, other)
    assert run(old_token_joins()) == 433
    assert issuer.sweep() == 0, "nothing left to sweep"


@pytest.mark.timeout(60)
def test_a_room_made_again_gets_its_valid_tokens_back(
    task_store: TaskStore, client: FlaskClient, janus_tokens: Janus
) -> None:
    """Janus restarted (the room is gone with its list): the next issuance makes the room again with
    the tokens that are still valid, not the expired ones."""
    ch = channel()
    past = make_app(task_store, janus_tokens.url, TOKEN_CLOCK=lambda: time.time() - 120).test_client()
    alice = issued(client, ch, "alice")
    old = issued(past, ch, "old", ttl=60)  # expired 60 s ago (issued "before" it expired: still listed)
    assert sorted(allowed(janus_tokens, ch)) == sorted([alice["token"], old["token"]])
    room = alice["room"]

    async def destroy() -> None:
        session = JanusSession(janus_tokens.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
        await session.connect()
        try:
            handle = await session.attach()
            await handle.request(
                {"request": "destroy", "room": room, "secret": tokens.room_secret(TOKEN_SECRET, room)}
            )
        finally:
            await session.close()

    run(destroy())
    bob = issued(client, ch, "bob")
    assert sorted(allowed(janus_tokens, ch)) == sorted([alice["token"], bob["token"]])
    assert old["token"] not in recorded(task_store, ch)
    assert (
        run(join_publisher(janus_tokens, room, "alice", alice["token"], alice["token"], alice["room_pin"]))
        == 0
    )


# -- errors ----------------------------------------------------------------------------------------


#: An app that never reaches Redis (no store; no rate limit, no login throttle).
NO_REDIS: dict[str, Any] = {"STORE": object(), "MPU_RATE_LIMIT": 0, "MPU_AUTH_FAILURE_LIMIT": 0}
GOOD_BODY = {"channel_id": "room1", "user_id": "alice", "ttl_seconds": 60, "role": "publish"}


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"channel_id": None}, "InvalidParameter", "channel_id"),
        ({"ttl_seconds": 59}, "InvalidParameter", "ttl_seconds"),
        ({"ttl_seconds": 86401}, "InvalidParameter", "ttl_seconds"),
        ({"ttl_seconds": True}, "InvalidParameter", "ttl_seconds"),
        ({"ttl_seconds": 60.5}, "InvalidParameter", "ttl_seconds"),
        ({"ttl_seconds": 60.0}, "InvalidParameter", "ttl_seconds"),
        ({"ttl_seconds": "60"}, "InvalidParameter", "ttl_seconds"),
        ({"role": "service"}, "InvalidParameter", "role"),
        ({"role": "admin"}, "InvalidParameter", "role"),
        ({"role": "PUBLISH"}, "InvalidParameter", "role"),
        ({"user_id": "t1.mix"}, "InvalidParameter", "user_id"),
        ({"user_id": ".mix"}, "InvalidParameter", "user_id"),
        ({"user_id": ""}, "InvalidParameter", "user_id"),
        ({"user_id": "a" * 65}, "InvalidParameter", "user_id"),
        ({"user_id": "a b"}, "InvalidParameter", "user_id"),
        ({"user_id": 5}, "InvalidParameter", "user_id"),
        ({"channel_id": "a,b"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "a:b"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "a\tb"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "a\x00b"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "\u202eevil"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "a\u2066b"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "a\ud800"}, "InvalidParameter", "channel_id"),
        ({"channel_id": "a\u3000b"}, "InvalidParameter", "channel_id"),
        ({"extra": 1}, "InvalidParameter", "extra"),
    ],
)
def test_bad_input_is_400_with_a_code_and_field(
    task_store: TaskStore, changes: dict[str, Any], code: str, field: str
) -> None:
    """Refused before any Janus call: the app points at no Janus."""
    client = make_app(task_store, f"http://127.0.0.1:{free_port()}/janus").test_client()
    body = json.dumps({**GOOD_BODY, **changes})  # (the test client's json= mangles lone surrogates)
    response = client.post(f"/v1/apps/{APP}/tokens", data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 400, response.json
    assert response.json is not None
    assert (response.json["code"], response.json["field"]) == (code, field), response.json
    assert response.json["message"].startswith(f"{field}: ") or response.json["message"].startswith(field)
    assert "token" not in response.json and set(response.json) == {"code", "message", "field", "request_id"}
    assert recorded(task_store, "room1") == {}


@pytest.mark.parametrize("missing", ["channel_id", "user_id", "ttl_seconds", "role"])
def test_every_field_is_required(task_store: TaskStore, missing: str) -> None:
    client = make_app(task_store, f"http://127.0.0.1:{free_port()}/janus").test_client()
    body = {k: v for k, v in GOOD_BODY.items() if k != missing}
    response = client.post(f"/v1/apps/{APP}/tokens", json=body, headers=AUTH)
    assert response.status_code == 400 and response.json is not None
    assert (response.json["code"], response.json["field"]) == ("MissingParameter", missing)


def test_authentication_is_that_of_the_other_endpoints(task_store: TaskStore) -> None:
    client = make_app(task_store, f"http://127.0.0.1:{free_port()}/janus").test_client()
    path = f"/v1/apps/{APP}/tokens"
    cases = [
        ({}, 403, "Forbidden"),
        (basic_auth("k1", "wrong"), 403, "SignatureDoesNotMatch"),
        (basic_auth("nobody", "s1"), 403, "InvalidAccessKeyId.NotFound"),
        (basic_auth("bound", "s2"), 403, "Forbidden"),  # a key for another AppId
    ]
    for headers, status, code in cases:
        response = client.post(path, json=GOOD_BODY, headers=headers)
        assert response.status_code == status and response.json is not None
        assert response.json["code"] == code
    response = client.post("/v1/apps/bad:app/tokens", json=GOOD_BODY, headers=AUTH)
    assert response.status_code == 400 and response.json is not None
    assert (response.json["code"], response.json["field"]) == ("InvalidParameter", "app_id")
    response = client.post(
        "/v1/apps/onlyapp/tokens", json={**GOOD_BODY, "role": "subscribe"}, headers=basic_auth("bound", "s2")
    )
    assert response.status_code == 201, response.json
    response = client.post(path, data="[]", content_type="application/json", headers=AUTH)
    assert response.status_code == 400 and response.json is not None
    assert response.json["code"] == "InvalidParameter"


@pytest.mark.timeout(60)
def test_janus_down_is_503_and_no_token(task_store: TaskStore) -> None:
    client = make_app(task_store, f"http://127.0.0.1:{free_port()}/janus").test_client()
    started = time.monotonic()
    status, body = issue(client, channel())
    assert status == 503 and body["code"] == "Janus.Unavailable", body
    assert "token" not in body and "no token was issued" in body["message"]
    assert time.monotonic() - started < 11


@pytest.mark.timeout(60)
def test_janus_that_does_not_answer_in_time_is_503(task_store: TaskStore) -> None:
    """A server that accepts the connection and never answers: the call's timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        port = listener.getsockname()[1]
        client = make_app(task_store, f"http://127.0.0.1:{port}/janus").test_client()
        started = time.monotonic()
        status, body = issue(client, channel())
        assert status == 503 and body["code"] == "Janus.Unavailable", body
        assert 4 <= time.monotonic() - started < 11
    finally:
        listener.close()


@pytest.mark.timeout(60)
def test_janus_of_another_secret_is_503_refused(task_store: TaskStore, janus_tokens: Janus) -> None:
    client = make_app(
        task_store, janus_tokens.url, MPU_TOKEN_SECRET="not-janus-secret-0123456789"
    ).test_client()
    ch = channel()
    status, body = issue(client, ch)
    assert status == 503 and body["code"] == "Janus.Refused", body
    assert "token" not in body and "MPU_TOKEN_SECRET" in body["message"]
    assert not room_exists(janus_tokens, ch), "nothing is made in Janus"


async def foreign_room(janus: Janus, room: str, create: bool) -> list[str]:
    """Make (``create``) or read a room whose secret the API does not know; its allowed list."""
    session = JanusSession(janus.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
    await session.connect()
    try:
        handle = await session.attach()
        edit = {"room": room, "secret": "someone-elses-secret"}
        if create:
            await handle.request(
                {"request": "create", "admin_key": tokens.admin_key(TOKEN_SECRET), "allowed": [], **edit}
            )
        reply = await handle.request({"request": "allowed", "action": "add", "allowed": [], **edit})
        return [str(t) for t in reply["allowed"]]
    finally:
        await session.close()


@pytest.mark.timeout(60)
def test_a_refused_addition_returns_no_token_and_lists_nothing(
    client: FlaskClient, janus_tokens: Janus
) -> None:
    """The room exists with a room secret the API does not know: the allowed-add is refused."""
    ch = channel()
    room = f"{APP}:{ch}"
    assert run(foreign_room(janus_tokens, room, create=True)) == []
    status, body = issue(client, ch)
    assert status == 503 and body["code"] == "Janus.Refused", body
    assert "token" not in body and "433" in body["message"]
    assert run(foreign_room(janus_tokens, room, create=False)) == []


def test_redis_down_is_503_and_no_token(task_store: TaskStore, janus_tokens: Janus) -> None:
    down = TaskStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=task_store.prefix)
    client = make_app(down, janus_tokens.url).test_client()
    ch = channel()
    status, body = issue(client, ch)
    assert status == 503 and body["code"] == "ServiceUnavailable", body
    assert "token" not in body
    assert not room_exists(janus_tokens, ch), "Redis is asked first: nothing is made in Janus"
    down.close()


def test_without_a_secret_the_endpoint_is_501_not_configured() -> None:
    app = create_app(
        {"MPU_ACCESS_KEYS": KEYS, **NO_REDIS, "ENQUEUE": lambda a, t: None, "MPU_TOKEN_SECRET": ""}
    )
    for role in ("publish", "subscribe"):
        response = app.test_client().post(
            f"/v1/apps/{APP}/tokens", json={**GOOD_BODY, "role": role}, headers=AUTH
        )
        assert response.status_code == 501 and response.json is not None
        assert (
            response.json["code"] == "Tokens.NotConfigured" and "MPU_TOKEN_SECRET" in response.json["message"]
        )


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"MPU_TOKEN_SECRET": "short"}, "MPU_TOKEN_SECRET"),
        ({"MPU_TOKEN_SECRET": "has spaces in it 0123456789"}, "MPU_TOKEN_SECRET"),
        ({"MPU_TOKEN_SECRET": TOKEN_SECRET, "MPU_JANUS_TOKEN_SIGNATURE": "md5"}, "MPU_JANUS_TOKEN_SIGNATURE"),
    ],
)
def test_malformed_token_settings_stop_the_app(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        create_app({"MPU_ACCESS_KEYS": KEYS, **NO_REDIS, **config})


def test_the_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPU_TOKEN_SECRET", TOKEN_SECRET)
    monkeypatch.setenv("MPU_JANUS_URL", "http://janus.example:8088/janus")
    monkeypatch.setenv("MPU_JANUS_TOKEN_SIGNATURE", "sha256url")
    monkeypatch.setenv("MPU_JANUS_API_SECRET", "api-secret")
    app = create_app({"MPU_ACCESS_KEYS": KEYS, **NO_REDIS})
    settings = app.extensions["mpu_tokens"].settings
    assert (settings.secret, settings.janus_url, settings.signature, settings.janus_api_secret) == (
        TOKEN_SECRET,
        "http://janus.example:8088/janus",
        "sha256url",
        "api-secret",
    )
    client = app.test_client()
    response = client.post(f"/v1/apps/{APP}/tokens", json={**GOOD_BODY, "role": "subscribe"}, headers=AUTH)
    assert response.status_code == 201 and response.json is not None
    verify_token(TOKEN_SECRET, response.json["token"], time.time(), "sha256url")
    monkeypatch.delenv("MPU_JANUS_URL")
    monkeypatch.delenv("MPU_JANUS_TOKEN_SIGNATURE")
    settings = create_app({"MPU_ACCESS_KEYS": KEYS, **NO_REDIS}).extensions["mpu_tokens"].settings
    assert (settings.janus_url, settings.signature) == ("http://127.0.0.1:8088/janus", "sha1")


def test_the_openapi_document_describes_the_endpoint() -> None:
    app = create_app({"MPU_ACCESS_KEYS": KEYS, **NO_REDIS})
    document = app.test_client().get("/openapi.json").json
    assert document is not None
    operation = document["paths"]["/v1/apps/{app_id}/tokens"]["post"]
    assert {"201", "400", "403", "501", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"BasicAuth": []}]
    schemas = document["components"]["schemas"]
    token_in = schemas["TokenIn"]
    assert set(token_in["required"]) == {"channel_id", "user_id", "ttl_seconds", "role"}
    assert token_in["properties"]["ttl_seconds"]["minimum"] == 60
    assert token_in["properties"]["ttl_seconds"]["maximum"] == 86400
    assert token_in["properties"]["role"]["enum"] == ["publish", "subscribe"]
    assert set(schemas["TokenOut"]["properties"]) == {"token", "expires_at", "room", "room_pin"}
