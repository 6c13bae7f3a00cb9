"""A live channel mixed end to end: aiortc publishers → Janus → JanusSource → pipeline → decoded output."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.mixer.video.geometry import Rect, fit, pane_rect
from rtc_mpu.spec.task import CropMode, build_task_spec
from rtc_mpu.stack.demo_media import COLORS, TONES
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.publisher import Publisher, synthetic_tracks
from tests.media import decode_audio, decode_video, rgb, tone_level_db

FPS, WIDTH, HEIGHT = 15, 640, 360


def patch_mean(picture: npt.NDArray[np.uint8], rect: Rect) -> npt.NDArray[np.float64]:
    """Mean colour of the upper part of a pane's picture (away from the label, bar and stamp)."""
    top = rect.y + rect.height // 4 - rect.height // 12
    region = picture[top : top + rect.height // 16, rect.x + rect.width // 3 : rect.x + 2 * rect.width // 3]
    mean: npt.NDArray[np.float64] = region.reshape(-1, 3).mean(axis=0)
    return mean


@pytest.mark.timeout(90)
def test_second_user_joining_switches_layout_and_both_are_seen_and_heard(
    janus: Janus, tmp_path: Path
) -> None:
    config = ChannelConfig(janus.url, "app1", "mix-e2e")
    out = tmp_path / "channel.flv"
    spec = build_task_spec(layout_ids=[1, 2], media_encode_id=1)

    async def scenario() -> None:
        first = Publisher(janus.url, config.room, "alice", synthetic_tracks(0, "alice"))
        second = Publisher(janus.url, config.room, "bob", synthetic_tracks(1, "bob"))
        await first.start()
        pipeline = Pipeline(spec, JanusSource(config), sink_target(str(out)), realtime=True, duration=6.0)
        task = asyncio.create_task(pipeline.run())
        try:
            await asyncio.sleep(2.5)
            await second.start()
            await task
        finally:
            await first.stop()
            await second.stop()

    asyncio.run(scenario())
    frames = decode_video(out)
    assert abs(len(frames) - 6 * FPS) <= 1
    single = fit(320, 180, Rect(0, 0, WIDTH, HEIGHT), CropMode.PAD).target
    early = rgb(frames[int(1.8 * FPS)])
    assert np.abs(patch_mean(early, single) - COLORS[0]).max() <= 20, "alice alone, layout 1"
    late = rgb(frames[-3])
    for pane, colour in zip(system_layout(2).panes, COLORS[:2], strict=True):
        rect = fit(320, 180, pane_rect(pane, WIDTH, HEIGHT), CropMode.PAD).target
        assert np.abs(patch_mean(late, rect) - colour).max() <= 20, f"pane {pane.id} in layout 2"
    samples, rate = decode_audio(out)
    tail = samples[:, -2 * rate :]
    assert tone_level_db(tail, rate, TONES[0]) > -20 and tone_level_db(tail, rate, TONES[1]) > -20
    head = samples[:, int(0.8 * rate) : int(2.2 * rate)]
    assert tone_level_db(head, rate, TONES[1]) < -50, "bob is not heard before he joins"
