"""A scripted live :class:`Source` for tests: users join and leave at set times, frames arrive by themselves.

Each user sends a solid-colour picture at ``fps`` and 20 ms blocks of a sine tone from its own
asyncio task, like a channel subscriber would, independent of the pipeline's clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from rtc_mpu.mixer.sources.base import FrameReceiver, Source
from rtc_mpu.spec.streams import SourceType, StreamKey


@dataclass(frozen=True)
class ScriptedUser:
    """A user present from ``join`` to ``leave`` seconds (None: to the end); their camera is
    unpublished (the user stays) during ``video_off`` = (from, to) seconds; ``amplitude`` is the
    tone's peak (full scale 1); ``screen_color`` adds a screen-share stream of that colour."""

    user_id: str
    color: tuple[int, int, int]
    tone_hz: float
    join: float = 0.0
    leave: float | None = None
    width: int = 160
    height: int = 90
    fps: int = 15
    video_off: tuple[float, float] | None = None
    amplitude: float = 0.3
    screen_color: tuple[int, int, int] | None = None


def _solid(user: ScriptedUser, color: tuple[int, int, int]) -> av.VideoFrame:
    picture = np.empty((user.height, user.width, 3), np.uint8)
    picture[:] = color
    return av.VideoFrame.from_ndarray(picture, format="rgb24")


class ScriptedSource(Source):
    """Live source playing a script of users."""

    live = True

    def __init__(self, users: list[ScriptedUser]) -> None:
        self.users = users
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, receiver: FrameReceiver) -> None:
        self._tasks = [asyncio.create_task(self._play(user, receiver)) for user in self.users]

    async def _play(self, user: ScriptedUser, receiver: FrameReceiver) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time()
        await asyncio.sleep(user.join)
        receiver.on_user(user.user_id, True)
        key = StreamKey(user.user_id)
        screen = StreamKey(user.user_id, SourceType.SHARE_SCREEN)
        receiver.on_video_stream(key, True)
        if user.screen_color is not None:
            receiver.on_video_stream(screen, True)
        frame = _solid(user, user.color)
        screen_frame = _solid(user, user.screen_color) if user.screen_color is not None else None
        camera_on = True
        sent_samples = 0
        next_video = loop.time()
        while user.leave is None or loop.time() - origin < user.leave:
            now = loop.time()
            off = user.video_off is not None and user.video_off[0] <= now - origin < user.video_off[1]
            if off == camera_on:
                camera_on = not off
                receiver.on_video_stream(key, camera_on)
            if now >= next_video:
                if camera_on:
                    receiver.on_video_frame(key, frame)
                if screen_frame is not None:
                    receiver.on_video_frame(screen, screen_frame)
                next_video += 1 / user.fps
            due = round((now - origin - user.join) * 48000)
            while sent_samples + 960 <= due:
                t = np.arange(sent_samples, sent_samples + 960) / 48000
                tone = (user.amplitude * np.sin(2 * np.pi * user.tone_hz * t)).astype(np.float32)[None, :]
                block = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                block.sample_rate = 48000
                block.pts, block.time_base = sent_samples, Fraction(1, 48000)
                receiver.on_audio_frame(user.user_id, block)
                sent_samples += 960
            await asyncio.sleep(0.01)
        receiver.on_video_stream(key, False)
        if screen_frame is not None:
            receiver.on_video_stream(screen, False)
        receiver.on_user(user.user_id, False)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
