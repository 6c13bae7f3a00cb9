"""The pipeline on a live clock: users join and leave, the layout follows at the next frame, timing holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.video.geometry import Rect, fit, pane_rect
from rtc_mpu.spec.task import CropMode, build_task_spec
from tests.media import COLORS, TONES, decode_audio, decode_video, rgb, tone_level_db
from tests.scripted_source import ScriptedSource, ScriptedUser

FPS, WIDTH, HEIGHT = 15, 640, 360


def mean(picture: object, rect: Rect) -> list[float]:
    import numpy as np

    assert isinstance(picture, np.ndarray)
    region = picture[rect.y + 4 : rect.y + rect.height - 4, rect.x + 4 : rect.x + rect.width - 4]
    return [float(v) for v in region.reshape(-1, 3).mean(axis=0)]


def close_to(actual: list[float], expected: tuple[int, int, int]) -> bool:
    return max(abs(a - e) for a, e in zip(actual, expected, strict=True)) <= 12


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_layout_switches_as_users_join_and_leave(tmp_path: Path) -> None:
    out = tmp_path / "live.flv"
    spec = build_task_spec(layout_ids=[1, 2], media_encode_id=1)
    source = ScriptedSource(
        [
            ScriptedUser("alice", COLORS[0], TONES[0], join=0.0, leave=2.0),
            ScriptedUser("bob", COLORS[1], TONES[1], join=1.0),
        ]
    )
    pipeline = Pipeline(spec, source, sink_target(str(out)), realtime=True, duration=3.0)
    stats = asyncio.run(pipeline.run())
    assert stats.dropped_video_frames == 0
    assert stats.layout_changes >= 3  # single(alice) -> side-by-side -> single(bob)

    frames = decode_video(out)
    assert abs(len(frames) - 3 * FPS) <= 1, "the output keeps its frame rate whatever the users do"
    full = fit(160, 90, Rect(0, 0, WIDTH, HEIGHT), CropMode.PAD).target
    left, right = (
        fit(160, 90, pane_rect(p, WIDTH, HEIGHT), CropMode.PAD).target for p in system_layout(2).panes
    )
    # A join or leave takes effect at the next frame; allow a few frames for the publisher's own cadence.
    assert close_to(mean(rgb(frames[int(0.6 * FPS)]), full), COLORS[0]), "alice alone in layout 1"
    both = rgb(frames[int(1.6 * FPS)])
    assert close_to(mean(both, left), COLORS[0]) and close_to(mean(both, right), COLORS[1]), "layout 2"
    assert close_to(mean(rgb(frames[int(2.6 * FPS)]), full), COLORS[1]), "bob alone after alice left"

    samples, rate = decode_audio(out)
    first, last = samples[:, int(0.2 * rate) : int(0.9 * rate)], samples[:, int(2.3 * rate) : int(2.9 * rate)]
    assert tone_level_db(first, rate, TONES[0]) > -20 and tone_level_db(first, rate, TONES[1]) < -50
    assert tone_level_db(last, rate, TONES[1]) > -20 and tone_level_db(last, rate, TONES[0]) < -50


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_stop_flushes_and_closes_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "stopped.mp4"
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(
        spec, ScriptedSource([ScriptedUser("carol", COLORS[2], TONES[2])]), sink_target(str(out))
    )

    async def run_then_stop() -> None:
        task = asyncio.create_task(pipeline.run())
        await asyncio.sleep(1.5)
        pipeline.stop()
        await task

    asyncio.run(run_then_stop())
    frames = decode_video(out)  # an MP4 only decodes if the trailer was written on close
    assert abs(len(frames) - 1.5 * FPS) <= 2
