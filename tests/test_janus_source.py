"""The channel source against a real Janus VideoRoom with real aiortc publishers (WebRTC over the host)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.mixer.sources.janus import ChannelConfig, ChannelStatus, JanusSource
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.stack.demo_media import COLORS, TONES
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.publisher import Publisher, synthetic_tracks
from tests.media import rgb, tone_level_db

#: Seconds within which a newly published user must be reported with media (issue #3).
DELIVERY_DEADLINE = 2.0


class Recorder:
    """A FrameReceiver that keeps what a pipeline would see."""

    def __init__(self) -> None:
        self.joins: list[str] = []
        self.leaves: list[str] = []
        self.streams: dict[StreamKey, bool] = {}
        self.pictures: dict[str, npt.NDArray[np.uint8]] = {}
        self.blanked: dict[str, bool] = {}
        self.audio: dict[str, list[npt.NDArray[np.float32]]] = {}
        self._resamplers: dict[str, av.AudioResampler] = {}

    def on_user(self, user_id: str, present: bool) -> None:
        (self.joins if present else self.leaves).append(user_id)

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        self.streams[stream] = active

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        self.blanked[stream.user_id] = frame is None
        if frame is not None:
            self.pictures[stream.user_id] = rgb(frame)

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        resampler = self._resamplers.setdefault(
            user_id, av.AudioResampler(format="fltp", layout="mono", rate=48000)
        )
        self.audio.setdefault(user_id, []).extend(
            f.to_ndarray().astype(np.float32) for f in resampler.resample(frame)
        )


def has_media(recorder: Recorder, user: str) -> bool:
    """Whether ``user`` was reported with a decoded picture and decoded audio."""
    return user in recorder.pictures and bool(recorder.audio.get(user))


async def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Poll ``condition`` every 20 ms; return the seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def centre_color(picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Mean colour of a patch away from the label, the moving bar's band and the time stamp."""
    h, w = picture.shape[:2]
    patch = picture[h // 4 - 12 : h // 4 - 2, w // 3 : 2 * w // 3]
    result: npt.NDArray[np.float64] = patch.reshape(-1, 3).mean(axis=0)
    return result


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


@pytest.mark.timeout(90)
def test_users_media_join_order_leave_and_rejoin(janus: Janus) -> None:
    config = ChannelConfig(janus.url, "app1", "room-order")

    async def scenario() -> None:
        recorder = Recorder()
        source = JanusSource(config)
        publishers: list[Publisher] = []

        async def publish(index: int) -> Publisher:
            user = f"user{index + 1}"
            publisher = Publisher(janus.url, config.room, user, synthetic_tracks(index, user))
            await publisher.start()
            publishers.append(publisher)
            return publisher

        try:
            await source.start(recorder)
            await wait_for(lambda: source.status is ChannelStatus.WAITING, 5)  # no room yet: it waits
            for index in range(3):
                user = f"user{index + 1}"
                await publish(index)
                # Functional bound from the issue; the delay itself is measured in bench/channel_delay.py.
                await wait_for(partial(has_media, recorder, user), DELIVERY_DEADLINE)
            assert source.status is ChannelStatus.JOINED
            assert recorder.joins == ["user1", "user2", "user3"]
            assert source.users == ["user1", "user2", "user3"]
            await asyncio.sleep(0.5)
            for index in range(3):
                user = f"user{index + 1}"
                colour = centre_color(recorder.pictures[user])
                assert np.abs(colour - COLORS[index]).max() <= 20, (user, colour)
                samples = np.concatenate(recorder.audio[user][-25:], axis=1)
                levels = {f: tone_level_db(samples, 48000, f) for f in TONES[:3]}
                assert levels[TONES[index]] > -20, (user, levels)
                assert all(v < levels[TONES[index]] - 30 for f, v in levels.items() if f != TONES[index])

            await publishers[1].stop()
            await wait_for(lambda: recorder.leaves == ["user2"], 5)
            assert source.users == ["user1", "user3"]
            assert recorder.streams[StreamKey("user2")] is False

            await publish(3)
            await wait_for(partial(has_media, recorder, "user4"), DELIVERY_DEADLINE)
            await asyncio.sleep(0.3)
            assert source.users == ["user1", "user3", "user4"]
            assert np.abs(centre_color(recorder.pictures["user4"]) - COLORS[3]).max() <= 20
        finally:
            for publisher in publishers:
                await publisher.stop()
            await source.close()

    run(scenario)


@pytest.mark.integration  # retries paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_unreachable_janus_is_retried_with_backoff() -> None:
    from rtc_mpu.stack.ports import free_port

    config = ChannelConfig(f"http://127.0.0.1:{free_port()}/janus", "app1", "nobody")

    async def scenario() -> None:
        source = JanusSource(config, retry_initial=0.1, retry_max=0.4)
        await source.start(Recorder())
        await asyncio.sleep(1.5)
        assert source.status is ChannelStatus.RECONNECTING
        assert source.last_error is not None and "127.0.0.1" in source.last_error
        await source.close()
        assert source.status.value == "closed"

    run(scenario)


@pytest.mark.integration  # starts a Janus of its own
@pytest.mark.timeout(90)
def test_rejoin_and_janus_restart_are_picked_up(tmp_path: Path) -> None:
    from rtc_mpu.stack.ports import free_port

    server = Janus(tmp_path / "janus", http_port=free_port())
    server.start()
    config = ChannelConfig(server.url, "app1", "restart")

    async def scenario() -> None:
        recorder = Recorder()
        source = JanusSource(config, retry_initial=0.2, retry_max=1.0)
        publisher = Publisher(server.url, config.room, "carol", synthetic_tracks(2, "carol"))
        try:
            await publisher.start()
            await source.start(recorder)
            await wait_for(partial(has_media, recorder, "carol"), DELIVERY_DEADLINE)
            # A user who leaves and comes back is picked up again.
            await publisher.stop()
            await wait_for(lambda: recorder.leaves == ["carol"], 5)
            recorder.pictures.clear()
            publisher = Publisher(server.url, config.room, "carol", synthetic_tracks(2, "carol"))
            await publisher.start()
            await wait_for(partial(has_media, recorder, "carol"), DELIVERY_DEADLINE)
            assert recorder.joins == ["carol", "carol"]
            # Janus restarts: the pane is blanked, the source reconnects and re-subscribes when the
            # publisher is back, without the user leaving the mix.
            await asyncio.to_thread(server.stop)
            await wait_for(lambda: recorder.blanked.get("carol", False), 10)
            await publisher.stop()
            await asyncio.to_thread(server.start)
            recorder.pictures.clear()
            publisher = Publisher(server.url, config.room, "carol", synthetic_tracks(2, "carol"))
            await publisher.start()
            await wait_for(partial(has_media, recorder, "carol"), 10)
            assert source.status is ChannelStatus.JOINED
            assert source.users == ["carol"]
            assert np.abs(centre_color(recorder.pictures["carol"]) - COLORS[2]).max() <= 20
        finally:
            await publisher.stop()
            await source.close()

    try:
        run(scenario)
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_offer_aiortc_cannot_answer_spoils_only_its_own_publisher(
    janus: Janus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: aiortc refuses the first publisher's offer (OperationError, as it did for
    H.264 offered without fmtp); that user stays a pane without media, and the next publisher is
    subscribed as usual: the channel's source goes on."""
    from aiortc import RTCPeerConnection
    from aiortc.exceptions import OperationError

    config = ChannelConfig(janus.url, "app1", "room-odd-offer")
    original = RTCPeerConnection.setRemoteDescription
    refused: list[int] = []

    async def refuse_first(self: RTCPeerConnection, description: Any) -> None:
        if description.type == "offer" and not refused:  # the source's first subscription
            refused.append(1)
            raise OperationError("Failed to set remote video description send parameters")
        await original(self, description)

    monkeypatch.setattr(RTCPeerConnection, "setRemoteDescription", refuse_first)

    async def scenario() -> None:
        recorder = Recorder()
        source = JanusSource(config)
        first = Publisher(janus.url, config.room, "odd", synthetic_tracks(0, "odd"))
        second = Publisher(janus.url, config.room, "fine", synthetic_tracks(1, "fine"))
        try:
            await first.start()
            await source.start(recorder)
            await wait_for(lambda: "odd" in recorder.joins and source.last_error is not None, 10)
            assert "OperationError" in str(source.last_error)
            await second.start()
            await wait_for(partial(has_media, recorder, "fine"), DELIVERY_DEADLINE)
            assert source.status is ChannelStatus.JOINED
            assert recorder.joins == ["odd", "fine"]
        finally:
            await first.stop()
            await second.stop()
            await source.close()

    run(scenario)
