"""Issue 18, simulcast (unit tier, no server): which substream a pane calls for, with its margin and
hysteresis; the channel source's ``configure`` for it (a fake Janus handle), streams that are not
simulcast left alone; and the pipeline telling its source each shown stream's pane size."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rtc_mpu.mixer.sources import janus as janus_module
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource, _Subscription
from rtc_mpu.mixer.sources.janus_http import JanusError, PluginEvent
from rtc_mpu.mixer.sources.simulcast import (
    SETTLE_SECONDS,
    SWITCH_HOLD_SECONDS,
    LayerSelector,
    choose_substream,
    estimated_sizes,
)
from rtc_mpu.mixer.video.geometry import pane_rect
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.spec.task import build_task_spec
from tests.test_source_wants import FOUR_PANES, MEDIA_ENCODE, SIX_PANES, USERS, WantsSource, render

FULL = {2: (1280, 720)}


def test_layer_sizes_halve_from_what_was_seen() -> None:
    assert estimated_sizes({}) == {}
    assert estimated_sizes(FULL) == {0: (320, 180), 1: (640, 360), 2: (1280, 720)}
    # Seen sizes win over estimates; unseen ones come from the nearest seen (a browser that rounds).
    assert estimated_sizes({0: (320, 180), 2: (1276, 718)}) == {0: (320, 180), 1: (638, 359), 2: (1276, 718)}
    assert estimated_sizes({0: (160, 90)}) == {0: (160, 90), 1: (320, 180), 2: (640, 360)}


@pytest.mark.parametrize(
    ("pane", "substream"),
    [
        ((320, 180), 0),  # a 9-pane layout's pane on 960x540, or a 4x4 grid's on 1280x720
        ((160, 90), 0),
        ((340, 190), 0),  # within the 10 % margin of the small layer: a slight upscale
        ((360, 200), 1),  # beyond it
        ((426, 240), 1),  # a 9-pane layout's pane on 1280x720
        ((640, 360), 1),
        ((700, 394), 1),
        ((720, 405), 2),
        ((1280, 720), 2),
        ((1920, 1080), 2),  # larger than anything sent: the largest
        ((320, 450), 2),  # a tall pane (cropped to fill it): its height decides
    ],
)
def test_the_smallest_substream_that_fills_the_pane(pane: tuple[int, int], substream: int) -> None:
    assert choose_substream(pane, FULL) == substream


def test_sizes_follow_what_the_browser_really_sends() -> None:
    # A publisher that scaled its camera down (CPU or bandwidth adaptation): 960x540 at the top.
    assert choose_substream((320, 180), {2: (960, 540)}) == 1
    assert choose_substream((240, 135), {2: (960, 540)}) == 0
    # Nothing seen yet: no choice (Janus' default, the largest, stays).
    assert choose_substream((320, 180), {}) is None
    # No margin: 320 is not enough for 340.
    assert choose_substream((340, 190), FULL, margin=0.0) == 1


def test_the_selector_learns_sizes_after_janus_says_which_substream() -> None:
    layers = LayerSelector()
    layers.set_pane((320, 180))
    assert layers.on_frame(1280, 720, 0.0) is False, "no substream said yet"
    assert layers.decide(0.0) is None
    layers.on_substream(2, 1.0)
    assert layers.on_frame(1280, 720, 1.0 + SETTLE_SECONDS / 2) is False, "maybe the old substream's"
    assert layers.on_frame(1280, 720, 1.0 + SETTLE_SECONDS) is True
    assert layers.on_frame(1280, 720, 1.0 + SETTLE_SECONDS + 0.1) is False, "nothing new"
    assert layers.observed == FULL
    assert layers.decide(2.0) == 0
    layers.asked(0, 2.0)
    assert layers.decide(2.1) is None, "asked already"
    layers.on_substream(0, 2.3)
    assert layers.on_frame(320, 180, 3.0) is True
    assert layers.observed == {0: (320, 180), 2: (1280, 720)}


def test_hysteresis_holds_a_second_switch_and_a_pane_not_shown_changes_nothing() -> None:
    layers = LayerSelector()
    layers.observed.update(FULL)
    layers.set_pane(None)
    assert layers.decide(0.0) is None, "not shown: keeps its substream"
    layers.set_pane((1280, 720))
    assert layers.decide(0.0) is None, "Janus' default already is the largest"
    assert not layers.pending()
    layers.set_pane((320, 180))
    assert layers.decide(10.0) == 0
    layers.asked(0, 10.0)
    layers.set_pane((1280, 720))
    assert layers.decide(10.5) is None
    assert layers.pending()
    assert layers.hold_until() == 10.0 + SWITCH_HOLD_SECONDS
    assert layers.decide(10.0 + SWITCH_HOLD_SECONDS) == 2
    layers.asked(2, 10.0 + SWITCH_HOLD_SECONDS)
    # A layout flipping back and forth within the hold: no request until it is over, then the last one.
    layers.set_pane((320, 180))
    layers.set_pane((1280, 720))
    assert layers.decide(10.0 + SWITCH_HOLD_SECONDS + 1) is None, "already the largest"


class FakeHandle:
    """A subscriber handle answering ``configure`` (or refusing it while ``refuse``), keeping each body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.refuse = False
        self.events: asyncio.Queue[PluginEvent] = asyncio.Queue()

    async def message(self, body: dict[str, Any], jsep: object = None, timeout: float = 0) -> PluginEvent:
        self.bodies.append(body)
        if self.refuse:
            raise JanusError(428, "refused")
        return PluginEvent("event", {"videoroom": "event", "configured": "ok"}, None)

    async def detach(self) -> None:
        return None


def subscription_for(source: JanusSource, user: str, *, simulcast: bool) -> tuple[_Subscription, FakeHandle]:
    handle = FakeHandle()
    subscription = _Subscription(user, StreamKey(user), has_video=True)
    subscription.handle = handle  # type: ignore[assignment]  # the fake has what _configure uses
    subscription.mids = {"audio": "0", "video": "1"}
    subscription.ready = True
    if simulcast:
        source._track_layers(subscription)
        assert subscription.layers is not None
        subscription.layers.on_substream(2, -10.0)
        subscription.layers.on_frame(1280, 720, 0.0)
    source._subscriptions[user] = subscription
    return subscription, handle


def test_the_source_asks_janus_for_the_substream_and_leaves_other_streams_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(janus_module, "CONFIGURE_RETRY_SECONDS", 0.05)

    async def scenario() -> None:
        source = JanusSource(ChannelConfig("http://127.0.0.1:9/janus", "app1", "unit"))
        simulcast, simulcast_handle = subscription_for(source, "u1", simulcast=True)
        plain, plain_handle = subscription_for(source, "u2", simulcast=False)
        source.draw_sizes({StreamKey("u1"): (320, 180), StreamKey("u2"): (320, 180)})
        assert source._sync_task is not None
        await source._sync_task
        assert simulcast_handle.bodies == [
            {"request": "configure", "streams": [{"mid": "1", "substream": 0}]}
        ]
        assert plain_handle.bodies == [] and plain.layers is None, "not simulcast: untouched"
        assert simulcast.substream_sent == 0
        # Paused and switched in one request.
        assert simulcast.layers is not None
        simulcast.layers.target_at = -100.0  # the hold is over
        source.want(frozenset({StreamKey("u2")}), None)
        source.draw_sizes({StreamKey("u1"): (1280, 720), StreamKey("u2"): (320, 180)})
        await source._sync_task
        assert simulcast_handle.bodies[-1] == {
            "request": "configure",
            "streams": [{"mid": "1", "send": False, "substream": 2}],
        }
        # A refused request is reported and retried.
        simulcast.layers.target_at = -100.0
        simulcast_handle.refuse = True
        source.draw_sizes({StreamKey("u1"): (640, 360)})
        await asyncio.sleep(0.2)
        assert source.last_error is not None and "configure u1" in source.last_error
        assert simulcast.substream_sent is None
        refused = len(simulcast_handle.bodies)
        assert refused >= 2, "retried"
        simulcast_handle.refuse = False
        await asyncio.sleep(0.2)
        assert simulcast_handle.bodies[-1]["streams"] == [{"mid": "1", "substream": 1}]
        assert simulcast.substream_sent == 1
        assert plain_handle.bodies == [], "u2: not simulcast, always wanted: never configured"
        source._closed = True
        await asyncio.gather(source._sync_task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_switch_held_back_is_made_when_the_hold_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(janus_module, "LayerSelector", lambda: LayerSelector(hold_seconds=0.2))

    async def scenario() -> None:
        source = JanusSource(ChannelConfig("http://127.0.0.1:9/janus", "app1", "unit"))
        subscription, handle = subscription_for(source, "u1", simulcast=True)
        source.draw_sizes({StreamKey("u1"): (320, 180)})
        source.draw_sizes({StreamKey("u1"): (1280, 720)})  # within the hold
        await asyncio.sleep(0.05)
        assert [b["streams"] for b in handle.bodies] == [[{"mid": "1", "substream": 0}]]
        await asyncio.sleep(0.4)
        assert [b["streams"] for b in handle.bodies] == [
            [{"mid": "1", "substream": 0}],
            [{"mid": "1", "substream": 2}],
        ]
        await subscription.close()
        source._closed = True

    asyncio.run(scenario())


class SizesSource(WantsSource):
    """:class:`WantsSource` that also records every ``draw_sizes()``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sizes: list[dict[StreamKey, tuple[int, int]]] = []

    def draw_sizes(self, sizes: Mapping[StreamKey, tuple[int, int]]) -> None:
        self.sizes.append(dict(sizes))


def test_the_pipeline_tells_the_source_each_shown_streams_pane_size(tmp_path: Path) -> None:
    four = build_task_spec(layout_ids=[FOUR_PANES], media_encode_id=MEDIA_ENCODE)
    six = build_task_spec(layout_ids=[SIX_PANES], media_encode_id=MEDIA_ENCODE)
    source = SizesSource(
        USERS,
        [
            (0.3, lambda p: p.update_spec(four)),  # the same: no call
            (0.6, lambda p: p.update_spec(six)),
        ],
    )
    render(tmp_path, four, source)

    def expected(spec_layout: int, shown: list[str]) -> dict[StreamKey, tuple[int, int]]:
        spec = four if spec_layout == FOUR_PANES else six
        panes = spec.layouts[0].panes
        rects = [pane_rect(p, spec.width, spec.height) for p in panes]
        return {StreamKey(u): (r.width, r.height) for u, r in zip(shown, rects, strict=False)}

    assert source.sizes == [expected(FOUR_PANES, USERS[:4]), expected(SIX_PANES, USERS)], source.sizes
    assert all(w < four.width and h < four.height for sizes in source.sizes for w, h in sizes.values())


def test_a_large_pane_keeps_janus_default_and_schedules_nothing() -> None:
    async def scenario() -> None:
        source = JanusSource(ChannelConfig("http://127.0.0.1:9/janus", "app1", "unit"))
        subscription, handle = subscription_for(source, "u1", simulcast=True)
        source.draw_sizes({StreamKey("u1"): (1280, 720)})
        await asyncio.sleep(0.05)
        assert handle.bodies == [] and subscription.reselect is None
        assert subscription.layers is not None and subscription.layers.target is None

    asyncio.run(scenario())
