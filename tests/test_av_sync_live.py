"""Lip sync end to end (issue 17): participants whose pictures flash and microphones beep on one capture
clock, published through a real Janus, mixed into a real nginx-rtmp and played back as a viewer; the
A/V offset is read from the decoded media (``bench/av_sync.py`` holds the publisher and the analysis;
the bench prints the numbers beside a baseline, this test holds generous bounds only)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from bench.av_sync import WARM_UP_SECONDS, analyse, participant_tracks
from rtc_mpu.mixer.output.muxers import rtmp_output
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.mixer.video.geometry import Rect, pane_rect
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.publisher import Publisher

REPOSITORY = Path(__file__).resolve().parent.parent
#: Offsets (beep minus flash, ms) the two senders put between their camera and microphone.
SENDER_OFFSETS_MS = {"p1": 0.0, "p2": 40.0}
TONES_HZ = {"p1": 600.0, "p2": 1000.0}
#: What a loaded 2-core machine holds (the bench's target is 20 ms; before issue 17: 85-87 ms).
TOLERANCE_MS = 40.0
MEASURED_SECONDS = 10.0


@pytest.mark.timeout(120)
def test_each_participants_voice_stays_with_their_picture(
    janus: Janus, nginx_rtmp: NginxRtmp, tmp_path: Path
) -> None:
    config = ChannelConfig(janus.url, "app1", "lipsync")
    url = nginx_rtmp.rtmp_url("lipsync")
    spec = build_task_spec(layout_ids=[2], media_encode_id=52)
    flv, arrivals_path = tmp_path / "viewer.flv", tmp_path / "arrivals.json"
    recording = tmp_path / "mix.flv"
    total = WARM_UP_SECONDS + MEASURED_SECONDS

    async def scenario() -> tuple[dict[str, Rect], dict[str, float]]:
        publishers = [
            Publisher(janus.url, config.room, user, participant_tracks(i, offset))
            for i, (user, offset) in enumerate(SENDER_OFFSETS_MS.items())
        ]
        for publisher in publishers:
            await publisher.start()
        pipeline = Pipeline(
            spec, JanusSource(config), sink_target(str(recording)), realtime=True, duration=total + 2
        )
        rtmp = await pipeline.add_output("rtmp", rtmp_output(url))
        run = asyncio.create_task(pipeline.run())
        try:
            while not rtmp.status.connected:
                await asyncio.sleep(0.05)
            viewer = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.av_sync",
                    "--view",
                    url,
                    str(total),
                    str(flv),
                    str(arrivals_path),
                ],
                cwd=REPOSITORY,
            )
            await run
            assert await asyncio.to_thread(viewer.wait, 30) == 0
        finally:
            pipeline.stop()
            await asyncio.gather(run, return_exceptions=True)
            for publisher in publishers:
                await publisher.stop()
        choice = pipeline.layout
        assert choice is not None
        panes = {
            a.stream.user_id: pane_rect(a.pane, spec.width, spec.height)
            for a in choice.assignments
            if a.stream is not None
        }
        return panes, dict(pipeline.stats.av_offsets_ms)

    panes, mixer_offsets = asyncio.run(scenario())
    assert sorted(panes) == ["p1", "p2"]
    arrivals = [(bool(v), float(p), float(w)) for v, p, w in json.loads(arrivals_path.read_text())]
    result = analyse(
        flv,
        arrivals,
        {user: (r.x, r.y, r.width, r.height) for user, r in panes.items()},
        SENDER_OFFSETS_MS,
        TONES_HZ,
        measured_from=WARM_UP_SECONDS - 2,
    )
    for participant in result["participants"]:
        assert participant["flashes"] >= 6, participant
        assert abs(participant["offset_ms_median"]) <= TOLERANCE_MS, participant
    # The mixer's own view (the task's stats) agrees within the same bounds.
    assert set(mixer_offsets) == {"p1", "p2"}
    assert all(abs(offset) <= TOLERANCE_MS for offset in mixer_offsets.values()), mixer_offsets
    # The mix's first second has pictures and sound from pts 0 (no silent or sped-up start).
    with av.open(str(recording)) as container:
        first: dict[str, list[float]] = {"video": [], "audio": []}
        for packet in container.demux():
            if packet.pts is not None and packet.time_base is not None and packet.pts * packet.time_base < 1:
                first[str(packet.stream.type)].append(float(packet.pts * packet.time_base))
    assert len(first["video"]) >= 29 and len(first["audio"]) >= 46, {k: len(v) for k, v in first.items()}
    # (the AAC encoder's priming packet has pts -1024/48000 s; FLV shifts both streams by it)
    assert min(first["video"]) <= 0.03 and min(first["audio"]) <= 0.03
