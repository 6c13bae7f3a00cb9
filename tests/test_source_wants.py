"""Issue 18: the pipeline tells its source which video streams and whose audio it needs (unit tier: an
offline render with a paced fake source, no server), and the RTP keyframe test the channel source uses
to show a resumed stream only from its first keyframe (real aiortc encoders)."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.base import FrameReceiver, Source
from rtc_mpu.mixer.sources.janus import rtp_keyframe
from rtc_mpu.spec.overlays import Subscriptions
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.spec.task import MixMode, StreamType, TaskSpec, build_task_spec

USERS = [f"u{n}" for n in range(1, 7)]
#: MediaEncode 1: 640x360 at 15 fps (small and quick to encode offline).
MEDIA_ENCODE = 1
#: System layout 6 has 4 panes, layout 8 has 6.
FOUR_PANES, SIX_PANES = 6, 8

Wants = tuple[frozenset[StreamKey] | None, frozenset[str] | None]


class WantsSource(Source):
    """A paced source: six users with cameras from the start, a small grey picture and 1024 samples of
    silence per user at each step; ``script`` runs ``(media time, action(pipeline))`` once each; every
    ``want()`` is recorded with the media time it came at."""

    live = False

    def __init__(self, users: list[str], script: list[tuple[float, Callable[[Pipeline], None]]]) -> None:
        self.users = users
        self.script = sorted(script, key=lambda step: step[0])
        self.calls: list[tuple[float, Wants]] = []
        self._receiver: FrameReceiver | None = None
        self._now = 0.0

    async def start(self, receiver: FrameReceiver) -> None:
        self._receiver = receiver
        for user in self.users:
            receiver.on_user(user, True)
            receiver.on_video_stream(StreamKey(user), True)

    async def advance_to(self, media_time: float) -> None:
        receiver = self._receiver
        assert isinstance(receiver, Pipeline)
        self._now = media_time
        while self.script and self.script[0][0] <= media_time:
            _, action = self.script.pop(0)
            action(receiver)
        picture = av.VideoFrame.from_ndarray(np.full((36, 64, 3), 128, np.uint8), format="rgb24")
        for user in self.users:
            receiver.on_video_frame(StreamKey(user), picture)

    def want(self, video: frozenset[StreamKey] | None, audio: frozenset[str] | None) -> None:
        self.calls.append((self._now, (video, audio)))

    async def close(self) -> None:
        return None


def cameras(*users: str) -> frozenset[StreamKey]:
    return frozenset(StreamKey(user) for user in users)


def render(tmp_path: Path, spec: TaskSpec, source: WantsSource, seconds: float = 1.0) -> None:
    target = sink_target(str(tmp_path / "out.mp4"))
    pipeline = Pipeline(spec, source, target, realtime=False, duration=seconds)
    asyncio.run(pipeline.run())


def test_wants_follow_panes_subscriptions_and_layout_changes(tmp_path: Path) -> None:
    first = build_task_spec(layout_ids=[FOUR_PANES], media_encode_id=MEDIA_ENCODE)
    without_u2 = Subscriptions(unsub_camera_users=frozenset({"u2"}), unsub_audio_users=frozenset({"u2"}))
    no_u2 = build_task_spec(layout_ids=[FOUR_PANES], media_encode_id=MEDIA_ENCODE, subscriptions=without_u2)
    six = build_task_spec(layout_ids=[SIX_PANES], media_encode_id=MEDIA_ENCODE, subscriptions=without_u2)
    source = WantsSource(
        USERS,
        [
            (0.3, lambda p: p.update_spec(no_u2)),
            (0.5, lambda p: p.update_spec(no_u2)),  # the same again: nothing changes, no call
            (0.6, lambda p: p.update_spec(six)),
        ],
    )
    render(tmp_path, first, source)
    wants = [w for _, w in source.calls]
    assert wants == [
        (cameras("u1", "u2", "u3", "u4"), frozenset(USERS)),  # 6 users, 4 panes: u5 and u6 not shown
        (cameras("u1", "u3", "u4", "u5"), frozenset(USERS) - {"u2"}),  # u2 unsubscribed: u5 moves up
        (cameras("u1", "u3", "u4", "u5", "u6"), frozenset(USERS) - {"u2"}),  # six panes, u2 still out
    ], source.calls
    times = [t for t, _ in source.calls]
    assert times[0] < 0.1 and 0.3 <= times[1] < 0.4 and 0.6 <= times[2] < 0.7, times


def test_a_user_leaving_moves_the_wants(tmp_path: Path) -> None:
    spec = build_task_spec(layout_ids=[FOUR_PANES], media_encode_id=MEDIA_ENCODE)
    source = WantsSource(USERS, [(0.4, lambda p: p.on_user("u3", False))])
    render(tmp_path, spec, source)
    assert [w for _, w in source.calls] == [
        (cameras("u1", "u2", "u3", "u4"), frozenset(USERS)),
        (cameras("u1", "u2", "u4", "u5"), frozenset(USERS) - {"u3"}),
    ]


def test_a_relay_wants_the_relayed_user_only(tmp_path: Path) -> None:
    spec = build_task_spec(layout_ids=[1], media_encode_id=MEDIA_ENCODE, mix_mode=MixMode.RELAY)
    source = WantsSource(USERS[:3], [])
    render(tmp_path, spec, source, seconds=0.5)
    assert [w for _, w in source.calls] == [(cameras("u1"), frozenset({"u1"}))]


def test_an_audio_only_relay_wants_no_video(tmp_path: Path) -> None:
    spec = build_task_spec(
        layout_ids=[1], media_encode_id=MEDIA_ENCODE, mix_mode=MixMode.RELAY, stream_type=StreamType.AUDIO
    )
    assert not spec.has_video
    source = WantsSource(USERS[:3], [])
    render(tmp_path, spec, source, seconds=0.5)
    assert [w for _, w in source.calls] == [(frozenset(), frozenset({"u1"}))]


def encoded_packets(codec_name: str, frames: int) -> list[list[bytes]]:
    """RTP payloads of ``frames`` frames from aiortc's own encoder of ``codec_name`` (VP8 or H264), the
    first a keyframe (as an encoder starts), the rest not."""
    mime = f"video/{codec_name}"
    parameters: dict[str, int | str | None] = (
        {"packetization-mode": "1", "profile-level-id": "42e01f"} if codec_name == "H264" else {}
    )
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, parameters=parameters))
    result = []
    for index in range(frames):
        picture = np.zeros((180, 320, 3), np.uint8)
        picture[:, (index * 8) % 320 :] = (200, 30, 30)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=index == 0)
        result.append(payloads)
    return result


@pytest.mark.parametrize("codec_name", ["VP8", "H264"])
def test_rtp_keyframe_tells_keyframes_from_other_frames(codec_name: str) -> None:
    frames = encoded_packets(codec_name, 6)
    assert rtp_keyframe(codec_name, frames[0][0]) is True
    for payloads in frames[1:]:
        assert not any(rtp_keyframe(codec_name, p) for p in payloads)
    assert rtp_keyframe("opus", b"\x01\x02") is None
    assert rtp_keyframe("rtx", frames[0][0]) is False
