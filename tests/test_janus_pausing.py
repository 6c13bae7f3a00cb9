"""Issue 18 against a real Janus with real aiortc publishers: streams the pipeline does not want are
no longer relayed by Janus (nor decoded), and come back, from a keyframe, when wanted again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.stack.demo_media import COLORS
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.publisher import Publisher, read_capture_time, synthetic_tracks, wall_ms
from tests.media import rgb
from tests.test_janus_source import centre_color, wait_for

USERS = ["user1", "user2", "user3"]
#: Seconds within which a paused stream's frames must stop (the issue's bound), and a resumed one's
#: come back (generous: Janus' PLI, the publisher's keyframe, a loaded 2-core machine).
PAUSE_DEADLINE = 1.5
RESUME_DEADLINE = 5.0


class Counter:
    """A FrameReceiver counting frames per user, keeping pictures as they arrive and blanks."""

    def __init__(self) -> None:
        self.video: dict[str, int] = dict.fromkeys(USERS, 0)
        self.audio: dict[str, int] = dict.fromkeys(USERS, 0)
        self.blanks: dict[str, int] = dict.fromkeys(USERS, 0)
        self.pictures: dict[str, list[tuple[int, npt.NDArray[np.uint8]]]] = {u: [] for u in USERS}
        self.keep: set[str] = set()

    def on_user(self, user_id: str, present: bool) -> None:
        return None

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        return None

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        user = stream.user_id
        if frame is None:
            self.blanks[user] += 1
            return
        self.video[user] += 1
        if user in self.keep:
            self.pictures[user].append((wall_ms(), rgb(frame)))

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        self.audio[user_id] += 1


async def inbound_packets(source: JanusSource, user: str) -> dict[str, int]:
    """RTP packets received so far on ``user``'s subscription, by kind (aiortc's inbound-rtp stats):
    what Janus relays, whether or not it is decoded (white box: the source's peer connection)."""
    pc = source._subscriptions[user].pc
    assert pc is not None
    report: Any = await pc.getStats()
    counts: dict[str, int] = {}
    for stats in report.values():
        if stats.type == "inbound-rtp":
            counts[stats.kind] = counts.get(stats.kind, 0) + stats.packetsReceived
    return counts


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_unwanted_streams_stop_and_come_back_from_a_keyframe(janus: Janus) -> None:
    config = ChannelConfig(janus.url, "app1", "room-pausing")

    async def scenario() -> None:
        counter = Counter()
        source = JanusSource(config)
        publishers = [
            Publisher(janus.url, config.room, user, synthetic_tracks(i, user, stamp_time=True))
            for i, user in enumerate(USERS)
        ]
        try:
            await source.start(counter)
            for publisher in publishers:
                await publisher.start()
            await wait_for(lambda: all(counter.video[u] > 10 and counter.audio[u] > 10 for u in USERS), 10)

            # Only user1 and user2's video, user1 and user3's audio.
            source.want(frozenset({StreamKey("user1"), StreamKey("user2")}), frozenset({"user1", "user3"}))
            assert counter.blanks["user3"] == 1, "a paused stream is blanked at once"
            await asyncio.sleep(PAUSE_DEADLINE)
            video, audio = dict(counter.video), dict(counter.audio)
            packets = {u: await inbound_packets(source, u) for u in USERS}
            await asyncio.sleep(2.0)
            assert counter.video["user3"] == video["user3"], "user3's video stopped"
            assert counter.audio["user2"] == audio["user2"], "user2's audio stopped"
            for user in ("user1", "user2"):
                assert counter.video[user] - video[user] >= 10, f"{user}'s video goes on"
            for user in ("user1", "user3"):
                assert counter.audio[user] - audio[user] >= 50, f"{user}'s audio goes on"
            after = {u: await inbound_packets(source, u) for u in USERS}
            # Janus relays nothing more of them (not merely dropped here); a packet in flight at most.
            assert after["user3"]["video"] - packets["user3"]["video"] <= 2, (packets, after)
            assert after["user2"]["audio"] - packets["user2"]["audio"] <= 2, (packets, after)
            assert after["user1"]["video"] - packets["user1"]["video"] >= 20, (packets, after)
            assert source.last_error is None

            # Everything again: user3's pictures come back, the first from a keyframe captured after
            # the resume (not the picture from before the pause, nor one decoded against it).
            counter.keep.add("user3")
            resumed_ms = wall_ms()
            started = time.monotonic()
            source.want(None, None)
            await wait_for(lambda: len(counter.pictures["user3"]) >= 3, RESUME_DEADLINE)
            print(f"user3's first picture {time.monotonic() - started:.3f} s after resuming")
            await wait_for(lambda: counter.audio["user2"] > audio["user2"] + 10, RESUME_DEADLINE)
            _, first = counter.pictures["user3"][0]
            captured = read_capture_time(first)
            assert 0 <= (captured - resumed_ms + 200) & 0xFFFFFFFF < 200 + 1000 * RESUME_DEADLINE, (
                "the first picture after resuming was captured after the resume",
                captured,
                resumed_ms,
            )
            assert np.abs(centre_color(first) - COLORS[2]).max() <= 20, centre_color(first)
            assert source.last_error is None
        finally:
            for publisher in publishers:
                await publisher.stop()
            await source.close()

    asyncio.run(scenario())


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_publisher_that_is_not_wanted_is_paused_from_the_start(janus: Janus) -> None:
    config = ChannelConfig(janus.url, "app1", "room-pausing-new")

    async def scenario() -> None:
        counter = Counter()
        source = JanusSource(config)
        publishers = [
            Publisher(janus.url, config.room, user, synthetic_tracks(i, user)) for i, user in enumerate(USERS)
        ]
        try:
            await source.start(counter)
            source.want(frozenset({StreamKey("user1")}), frozenset({"user1"}))
            for publisher in publishers:
                await publisher.start()
            await wait_for(lambda: counter.video["user1"] > 10 and counter.audio["user1"] > 50, 10)
            await asyncio.sleep(1.0)
            assert counter.video["user2"] == counter.video["user3"] == 0
            assert counter.audio["user2"] == counter.audio["user3"] == 0
            first = {u: await inbound_packets(source, u) for u in USERS}
            await asyncio.sleep(1.5)
            last = {u: await inbound_packets(source, u) for u in USERS}
            for user in ("user2", "user3"):
                assert sum(last[user].values()) - sum(first[user].values()) <= 2, (user, first, last)
            assert last["user1"]["video"] - first["user1"]["video"] >= 15
            source.want(frozenset({StreamKey("user1"), StreamKey("user3")}), frozenset({"user1"}))
            await wait_for(lambda: counter.video["user3"] > 0, RESUME_DEADLINE)
            assert source.last_error is None
        finally:
            for publisher in publishers:
                await publisher.stop()
            await source.close()

    asyncio.run(scenario())


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_refused_configure_is_reported_and_retried(janus: Janus) -> None:
    config = ChannelConfig(janus.url, "app1", "room-pausing-refused")

    async def scenario() -> None:
        counter = Counter()
        source = JanusSource(config)
        publishers = [
            Publisher(janus.url, config.room, user, synthetic_tracks(i, user))
            for i, user in enumerate(USERS[:2])
        ]
        try:
            await source.start(counter)
            for publisher in publishers:
                await publisher.start()
            await wait_for(lambda: counter.video["user1"] > 5 and counter.video["user2"] > 5, 10)
            # White box: a mid Janus does not know makes it refuse the configure (No such mid).
            subscription = source._subscriptions["user2"]
            real_mid = subscription.mids["video"]
            subscription.mids["video"] = "no-such-mid"
            source.want(frozenset({StreamKey("user1")}), None)
            await wait_for(lambda: source.last_error is not None, 5)
            assert "configure user2" in str(source.last_error)
            frames = counter.video["user1"]
            await asyncio.sleep(0.5)
            assert counter.video["user1"] > frames, "the source goes on"
            subscription.mids["video"] = real_mid  # the retry (every 2 s) now goes through
            await asyncio.sleep(3.0)
            before = await inbound_packets(source, "user2")
            await asyncio.sleep(1.0)
            after = await inbound_packets(source, "user2")
            assert after["video"] - before["video"] <= 2, (before, after)
            assert after["audio"] - before["audio"] >= 20, "only the video was paused"
        finally:
            for publisher in publishers:
                await publisher.stop()
            await source.close()

    asyncio.run(scenario())
