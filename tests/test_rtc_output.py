"""The ``rtc`` output with a real Janus: the task's own H.264 (main profile) and its audio (as Opus)
published back into the channel as ``<task_id>.mix``, watched by an aiortc viewer; the channel
source never mixes it; in token mode it joins with the workers' credentials."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
import pytest

from rtc_mpu.layouts import SpecError
from rtc_mpu.mixer.output.outputs import OutputState
from rtc_mpu.mixer.output.rtc import (
    RTC_PROFILE,
    remote_publisher_request,
    rtc_muxer_factory,
    rtc_output,
)
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig, ChannelStatus, JanusSource
from rtc_mpu.mixer.sources.janus_http import JanusSession
from rtc_mpu.spec import tokens
from rtc_mpu.spec.outputs import (
    RtcOutput,
    RtmpOutput,
    check_outputs,
    output_from_dict,
    output_to_dict,
    parse_output,
)
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.publisher import ensure_room
from rtc_mpu.stack.viewer import Viewer
from rtc_mpu.workers.outputs import NULL_SINK, needs_rebuild, null_muxer, video_profile
from tests.conftest import TOKEN_SECRET
from tests.media import COLORS, TONES
from tests.scripted_source import ScriptedSource, ScriptedUser
from tests.test_janus_source import Recorder
from tests.test_token_mode import create_room


class Watched:
    """What a viewer received: pictures (RGB), their arrival times, and mono audio at 48 kHz."""

    def __init__(self) -> None:
        self.pictures: list[np.ndarray] = []
        self.arrivals: list[float] = []
        self.audio: list[np.ndarray] = []
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=48000)

    def __call__(self, frame: av.VideoFrame | av.AudioFrame, arrived: float) -> None:
        if isinstance(frame, av.VideoFrame):
            self.pictures.append(frame.to_ndarray(format="rgb24"))
            self.arrivals.append(arrived)
        else:
            for f in self._resampler.resample(frame):
                self.audio.append(f.to_ndarray().reshape(-1))


def dominant_hz(samples: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


async def participants(channel: ChannelConfig) -> list[str]:
    """The publishers Janus lists in the channel's room."""
    session = JanusSession(channel.janus_url, token=channel.session_token)
    await session.connect()
    try:
        handle = await session.attach()
        answer = await handle.request({"request": "listparticipants", "room": channel.room})
        return [str(p["id"]) for p in answer.get("participants", [])]
    finally:
        await session.close()


async def add_ghost(channel: ChannelConfig, publisher_id: str) -> None:
    """A remote publisher ``publisher_id`` with no media in the channel's room (made if missing), as
    a worker that died leaves it."""
    session = JanusSession(channel.janus_url)
    await session.connect()
    try:
        handle = await session.attach()
        await ensure_room(handle, channel.room)
        await handle.request(remote_publisher_request(publisher_id, channel.room, None, True, True, None))
    finally:
        await session.close()


def run_rtc_mix(
    janus: Janus, channel: ChannelConfig, viewer_token: str | None
) -> tuple[Watched, str, list[str]]:
    """Mix one scripted user (red, tone 0) with an ``rtc`` output into ``channel`` for a few seconds;
    a viewer watches ``t1.mix``, a channel source lists who it would mix."""
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    source = ScriptedSource([ScriptedUser("alice", COLORS[0], TONES[0], width=320, height=180)])
    pipeline = Pipeline(
        spec, source, NULL_SINK, realtime=True, muxer_factory=null_muxer, video_profile=RTC_PROFILE
    )
    watched = Watched()
    recorder = Recorder()

    async def scenario() -> tuple[str, list[str]]:
        mix = asyncio.create_task(pipeline.run())
        loop = asyncio.get_running_loop()
        requests: list[float] = []
        added = time.monotonic()

        def request_keyframe() -> None:
            requests.append(time.monotonic())
            pipeline.request_keyframe()

        output = await pipeline.add_output(
            "rtc",
            rtc_output(channel, "t1.mix"),
            muxer_factory=rtc_muxer_factory(channel, "t1.mix", loop, request_keyframe),
        )
        while output.status.state is not OutputState.CONNECTED:  # a predecessor's publisher replaced
            assert time.monotonic() - added < 15, output.status
            await asyncio.sleep(0.05)
        listener = JanusSource(channel)
        await listener.start(recorder)
        viewer = Viewer(
            janus.url,
            channel.room,
            "t1.mix",
            watched,
            token=viewer_token,
            pin=channel.pin,
        )
        started = time.monotonic()
        for _ in range(100):
            try:
                await viewer.start()
                break
            except Exception:  # the mix publisher is not up yet
                await viewer.stop()
                viewer = Viewer(
                    janus.url, channel.room, "t1.mix", watched, token=viewer_token, pin=channel.pin
                )
                await asyncio.sleep(0.1)
        while (len(watched.pictures) < 30 or len(watched.audio) < 50) and time.monotonic() - started < 20:
            await asyncio.sleep(0.1)
        sdp = viewer.remote_sdp
        assert listener.status is ChannelStatus.JOINED
        assert any(t >= started for t in requests), "a viewer's PLI asked the encoder for an IDR"
        assert "t1.mix" in await participants(channel)
        await viewer.stop()
        await listener.close()
        pipeline.stop()
        await asyncio.wait_for(mix, 20)
        assert "t1.mix" not in await participants(channel), "the mix left the room with the task"
        return sdp, list(recorder.joins)

    sdp, joins = asyncio.run(scenario())
    return watched, sdp, joins


def check_mix(watched: Watched, sdp: str, joins: list[str]) -> None:
    assert len(watched.pictures) >= 30, "the viewer decoded the mix"
    picture = watched.pictures[-1]
    h, w = picture.shape[:2]
    centre = picture[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - np.array(COLORS[0])).max() < 30, centre
    audio = np.concatenate(watched.audio[-50:])
    assert abs(dominant_hz(audio) - TONES[0]) < 15
    assert "H264/90000" in sdp, "the viewer was offered the task's H.264"
    assert joins == [], "the channel source never mixes a task's .mix publisher"


@pytest.mark.timeout(90)
def test_the_mix_is_published_back_into_the_channel(janus: Janus) -> None:
    channel = ChannelConfig(janus.url, "app1", "rtc-back")

    async def room() -> None:
        session = JanusSession(janus.url)
        await session.connect()
        try:
            await ensure_room(await session.attach(), channel.room)
        finally:
            await session.close()

    asyncio.run(room())
    check_mix(*run_rtc_mix(janus, channel, None))


@pytest.mark.timeout(90)
def test_a_mix_publisher_left_behind_by_a_dead_worker_is_replaced(janus: Janus) -> None:
    """A remote publisher belongs to the room, not to a session: one a dead worker left (here
    added by hand, no media) must not keep the task's next worker out."""
    channel = ChannelConfig(janus.url, "app1", "rtc-ghost")

    asyncio.run(add_ghost(channel, "t1.mix"))
    assert "t1.mix" in asyncio.run(participants(channel))
    check_mix(*run_rtc_mix(janus, channel, None))


@pytest.mark.timeout(90)
def test_in_token_mode_the_mix_joins_with_service_credentials(janus_tokens: Janus) -> None:
    channel = ChannelConfig(janus_tokens.url, "app1", "rtc-tokens", token_secret=TOKEN_SECRET)
    asyncio.run(create_room(janus_tokens, "app1", "rtc-tokens", []))
    viewer_token = tokens.mint_token(
        TOKEN_SECRET, "app1", "rtc-tokens", "viewer", tokens.Role.SUBSCRIBE, int(time.time()) + 300
    )
    check_mix(*run_rtc_mix(janus_tokens, channel, viewer_token))


def test_an_rtc_output_is_one_per_task_without_fields() -> None:
    assert parse_output({"kind": "rtc"}, "o2", 1) == RtcOutput("o2")
    assert output_from_dict(output_to_dict(RtcOutput("o3"))) == RtcOutput("o3")
    with pytest.raises(SpecError) as caught:
        parse_output({"kind": "rtc", "url": "rtmp://a.example.com/live/k"}, "o1", 0)
    assert caught.value.field == ("outputs", 0, "url")
    with pytest.raises(SpecError) as caught:
        check_outputs([RtcOutput("o1"), RtcOutput("o2")])
    assert caught.value.code == "InvalidOutput.Duplicate"


def test_a_task_with_an_rtc_output_encodes_main_profile_and_adding_one_rebuilds() -> None:
    rtmp = RtmpOutput("o1", "rtmp://a.example.com/live/k")
    assert video_profile([rtmp]) == "high"
    assert video_profile([rtmp, RtcOutput("o2")]) == RTC_PROFILE == "main"
    assert needs_rebuild(rtmp, [rtmp, RtcOutput("o2")], "high")
    assert not needs_rebuild(rtmp, [rtmp, RtcOutput("o2")], "main")
    assert not needs_rebuild(rtmp, [rtmp], "main"), "removing it keeps main profile: no gap"


@pytest.mark.timeout(60)
def test_the_reconciler_removes_the_mix_publisher_a_dead_worker_left(
    janus: Janus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task with an rtc output that ends without its worker (the reconciler ends it) must not
    leave its ``.mix`` in the room: the room's other participants would see a publisher with no media."""
    import dataclasses

    from rtc_mpu.spec.urls import stream_url_key
    from rtc_mpu.workers import celery_app
    from rtc_mpu.workers.model import TaskParams, TaskRecord

    channel = ChannelConfig(janus.url, "app1", "rtc-reconcile")

    asyncio.run(add_ghost(channel, "t9.mix"))
    monkeypatch.setattr(celery_app, "settings", dataclasses.replace(celery_app.settings, janus_url=janus.url))
    url = "rtmp://127.0.0.1/live/t9"
    rtmp_only = output_to_dict(RtmpOutput("o1", url))
    plain = TaskRecord(
        "app1", "t9", TaskParams("rtc-reconcile", url, outputs=(rtmp_only,)), stream_url_key(url)
    )
    assert not celery_app.remove_left_mix_publisher(plain), "no rtc output: Janus is not asked"
    assert "t9.mix" in asyncio.run(participants(channel))
    with_rtc = dataclasses.replace(
        plain, params=TaskParams("rtc-reconcile", url, outputs=(rtmp_only, output_to_dict(RtcOutput("o2"))))
    )
    assert celery_app.remove_left_mix_publisher(with_rtc)
    assert "t9.mix" not in asyncio.run(participants(channel))
    assert not celery_app.remove_left_mix_publisher(with_rtc), "gone already: nothing to remove"
    down = dataclasses.replace(celery_app.settings, janus_url="http://127.0.0.1:9/janus")
    monkeypatch.setattr(celery_app, "settings", down)
    assert not celery_app.remove_left_mix_publisher(with_rtc, timeout_seconds=2), (
        "Janus down: logged, not raised"
    )
