"""A running mix shows an ingest like any user (issue 19): an MP4 played into the channel as a remote
publisher is subscribed to by the mix's channel source (aiortc, the H.264 Janus offers without fmtp),
its pictures (frame numbers burned in) fill the pane and its tone is in the mixed audio."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtc_mpu.ingest.media import describe, open_media
from rtc_mpu.ingest.player import Player
from rtc_mpu.ingest.publisher import IngestPublisher
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.mixer.sources.janus_http import JanusSession
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.publisher import ensure_room
from tests.ingest_media import read_frame_number, write_numbered_clip
from tests.media import decode_audio, decode_video, rgb, tone_level_db

FPS = 15


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_mix_shows_and_plays_an_ingest_in_its_pane(janus: Janus, tmp_path: Path) -> None:
    write_numbered_clip(tmp_path / "film.mp4", seconds=20, fps=30, width=640, height=360, tone_hz=830)
    channel = ChannelConfig(janus.url, "app1", "ingest-mix")
    out = tmp_path / "mix.flv"
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)  # 640x360 15 fps: the pane is the clip, 1:1

    async def scenario() -> None:
        session = JanusSession(janus.url)
        await session.connect()
        try:
            await ensure_room(await session.attach(), channel.room)
        finally:
            await session.close()
        container = open_media(
            "media:film.mp4",
            media_dir=tmp_path,
            allow_private=False,
            open_timeout_seconds=5,
            read_timeout_seconds=5,
        )
        publisher = IngestPublisher(channel, "film", video=True, audio=True)
        await publisher.add()
        player = Player(container, describe(container), publisher, ingest_id="film", url="media:film.mp4")
        player.start()
        try:
            pipeline = Pipeline(
                spec, JanusSource(channel), sink_target(str(out)), realtime=True, duration=7.0
            )
            await pipeline.run()
        finally:
            player.stop()
            await publisher.remove()

    asyncio.run(scenario())
    frames = decode_video(out)
    numbers = [read_frame_number(rgb(frame)) for frame in frames[-30:]]
    assert all(0 < n < 600 for n in numbers), numbers
    assert numbers[-1] - numbers[0] >= 40, f"the ingest's pictures move in the pane: {numbers}"
    samples, rate = decode_audio(out)

    assert tone_level_db(samples[:, -rate * 2 :], rate, 830.0) > -30, "the ingest's tone is mixed"
