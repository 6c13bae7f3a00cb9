"""Janus in signed-token mode (how the stack runs it): publishers need a publish token of their
channel, the mixer joins with its own service credentials, and nothing joins without a token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusSession
from rtc_mpu.spec import tokens
from rtc_mpu.spec.tokens import Role, mint_token
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.publisher import Publisher, synthetic_tracks
from tests.conftest import TOKEN_SECRET
from tests.media import COLORS
from tests.test_janus_source import Recorder, centre_color, has_media, wait_for


async def create_room(
    janus: Janus,
    app_id: str,
    channel_id: str,
    allowed: list[str],
    publishers: int = 6,
    videocodec: str = "vp8,h264",
) -> None:
    """Create the channel's room as the API's token endpoint does (admin key, secret, PIN, allowed list)."""
    room = tokens.room_name(app_id, channel_id)
    session = JanusSession(janus.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
    await session.connect()
    try:
        handle = await session.attach()
        await handle.request(
            {
                "request": "create",
                "room": room,
                "admin_key": tokens.admin_key(TOKEN_SECRET),
                "secret": tokens.room_secret(TOKEN_SECRET, room),
                "pin": tokens.room_pin(TOKEN_SECRET, room),
                "allowed": allowed,
                "publishers": publishers,
                "bitrate": 1_500_000,
                "videocodec": videocodec,
                "audiocodec": "opus",
            }
        )
    finally:
        await session.close()


def publish_token(app_id: str, channel_id: str, user_id: str, ttl_seconds: int = 300) -> str:
    return mint_token(TOKEN_SECRET, app_id, channel_id, user_id, Role.PUBLISH, int(time.time()) + ttl_seconds)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_a_token_publisher_is_mixed_by_a_source_with_service_credentials(janus_tokens: Janus) -> None:
    alice = publish_token("app1", "tok-room", "alice")

    async def scenario() -> None:
        await create_room(janus_tokens, "app1", "tok-room", [alice])
        recorder = Recorder()
        source = JanusSource(ChannelConfig(janus_tokens.url, "app1", "tok-room", token_secret=TOKEN_SECRET))
        publisher = Publisher(
            janus_tokens.url, "app1:tok-room", "alice", synthetic_tracks(0, "alice"), token=alice
        )
        await source.start(recorder)
        try:
            await publisher.start()
            took = await wait_for(lambda: has_media(recorder, "alice"), 20)
            print(f"alice mixed after {took:.2f} s")
            colour = centre_color(recorder.pictures["alice"])
            assert abs(colour - COLORS[0]).max() < 40, colour
            # the mixer's join token was on the allowed list only while it joined
            assert await allowed_list(janus_tokens, "app1", "tok-room") == [alice]
        finally:
            await publisher.stop()
            await source.close()

    run(scenario)


async def allowed_list(janus: Janus, app_id: str, channel_id: str) -> list[str]:
    """The room's current ``allowed`` list (an empty ``add`` answers with it)."""
    room = tokens.room_name(app_id, channel_id)
    session = JanusSession(janus.url, token=tokens.mint_service_token(TOKEN_SECRET, time.time()))
    await session.connect()
    try:
        handle = await session.attach()
        reply = await handle.request(
            {
                "request": "allowed",
                "action": "add",
                "room": room,
                "secret": tokens.room_secret(TOKEN_SECRET, room),
                "allowed": [],
            }
        )
        return [str(t) for t in reply.get("allowed", [])]
    finally:
        await session.close()


@pytest.mark.timeout(60)
def test_janus_refuses_publishers_without_a_valid_token_of_the_channel(janus_tokens: Janus) -> None:
    bob = publish_token("app1", "locked", "bob")
    other_channel = publish_token("app1", "elsewhere", "eve")
    expired = mint_token(TOKEN_SECRET, "app1", "locked", "eve", Role.PUBLISH, int(time.time()) - 5)
    forged = mint_token(
        "another-secret-0123456789", "app1", "locked", "eve", Role.PUBLISH, int(time.time()) + 60
    )

    async def attempt(token: str | None, pin: str | None = None) -> int:
        publisher = Publisher(
            janus_tokens.url, "app1:locked", "eve", synthetic_tracks(1, "eve"), token=token, pin=pin
        )
        try:
            await publisher.start()
        except JanusError as exc:
            return exc.code
        finally:
            await publisher.stop()
        return 0

    async def scenario() -> None:
        await create_room(janus_tokens, "app1", "locked", [bob])
        await create_room(janus_tokens, "app1", "elsewhere", [other_channel])
        pin = tokens.room_pin(TOKEN_SECRET, "app1:locked")
        assert await attempt(None, pin) == 403, "no token: refused by Janus' token check"
        assert await attempt(expired) == 403, "expired: refused"
        assert await attempt(forged) == 403, "signed with another secret: refused"
        assert await attempt(other_channel, pin) == 433, "another channel's token: not on this room's list"

    run(scenario)


@pytest.mark.timeout(60)
def test_nobody_creates_rooms_without_the_admin_key(janus_tokens: Janus) -> None:
    async def scenario() -> None:
        session = JanusSession(janus_tokens.url, token=publish_token("app1", "x", "mallory"))
        await session.connect()
        try:
            handle = await session.attach()
            with pytest.raises(JanusError):
                await handle.request({"request": "create", "room": "app1:made-up"})
        finally:
            await session.close()

    run(scenario)
