"""An ingest's media path with a real Janus: an MP4 served over HTTP (with byte ranges) is played into
a channel as a remote publisher; an aiortc subscriber decodes its picture (frame numbers burned in)
and its tone and reads its progress on the data channel; pause, seek and resume act on what the
subscriber gets. Also the media rules (addresses, schemes, codecs) without Janus."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from rtc_mpu.ingest.media import MediaError, describe, media_path, open_media
from rtc_mpu.ingest.player import Player, Progress, output_size
from rtc_mpu.ingest.publisher import IngestPublisher, UserInUseError
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.mixer.sources.janus_http import JanusSession
from rtc_mpu.spec.ingest import IngestState
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.publisher import ensure_room
from rtc_mpu.stack.viewer import Viewer
from tests.ingest_media import read_frame_number, serve_folder, write_numbered_clip
from tests.test_rtc_output import dominant_hz

FPS = 30
#: The ffmpeg CLI (Debian's, installed by `make test`): a third-party HLS packager and RTMP publisher.
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A media directory: a 2 s clip and a text file."""
    folder = tmp_path_factory.mktemp("media")
    write_numbered_clip(folder / "short.mp4", seconds=2, fps=FPS, width=320, height=180, tone_hz=620)
    (folder / "notes.txt").write_text("not media")
    return folder


@pytest.fixture(scope="module")
def long_clip(clip_folder: Path) -> Path:
    """A 40 s 640x360 clip (frame numbers burned in, 440 Hz) in the media directory."""
    write_numbered_clip(clip_folder / "clip.mp4", seconds=40, fps=FPS)
    return clip_folder


class Watch:
    """What a subscriber got: (arrival, frame number) per picture, mono audio, messages."""

    def __init__(self) -> None:
        self.pictures: list[tuple[float, int]] = []
        self.audio: list[np.ndarray] = []
        self.messages: list[tuple[float, dict[str, object]]] = []
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=48000)

    def frame(self, frame: av.VideoFrame | av.AudioFrame, arrived: float) -> None:
        if isinstance(frame, av.VideoFrame):
            self.pictures.append((time.monotonic(), read_frame_number(frame.to_ndarray(format="rgb24"))))
        else:
            self.audio += [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]

    def message(self, text: str | bytes, arrived: float) -> None:
        self.messages.append((time.monotonic(), json.loads(text)))

    def frames_after(self, moment: float) -> list[int]:
        return [n for t, n in self.pictures if t > moment]


async def make_room(janus: Janus, channel: ChannelConfig) -> None:
    session = JanusSession(janus.url)
    await session.connect()
    try:
        await ensure_room(await session.attach(), channel.room)
    finally:
        await session.close()


async def wait_until(condition: object, seconds: float) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_served_mp4_plays_into_the_channel_with_controls_and_progress(
    janus: Janus, long_clip: Path
) -> None:
    channel = ChannelConfig(janus.url, "app1", "cowatch")

    async def scenario() -> None:
        await make_room(janus, channel)
        with serve_folder(long_clip) as base:
            container = open_media(
                f"{base}/clip.mp4",
                media_dir=None,
                allow_private=True,
                open_timeout_seconds=5,
                read_timeout_seconds=5,
            )
            info = describe(container)
            assert (info.has_video, info.has_audio, info.duration_ms) == (True, True, 40000)
            progress: list[Progress] = []
            players: list[Player] = []

            def keyframe() -> None:
                for one in players:
                    one.request_keyframe()

            publisher = IngestPublisher(channel, "film", video=True, audio=True, on_keyframe_request=keyframe)
            await publisher.add()
            with pytest.raises(UserInUseError):
                await IngestPublisher(channel, "film", video=True, audio=True).add()
            player = Player(
                container, info, publisher, ingest_id="i1", url="media-url", on_progress=progress.append
            )
            players.append(player)
            player.start()
            watch = Watch()
            viewer = Viewer(janus.url, channel.room, "film", watch.frame, on_message=watch.message)
            await viewer.start()
            try:
                await wait_until(lambda: len(watch.pictures) > 60 and len(watch.messages) >= 3, 15)
                numbers = [n for _, n in watch.pictures]
                assert numbers[-1] > numbers[0] and all(b >= a for a, b in itertools.pairwise(numbers))
                audio = np.concatenate(watch.audio[-40:])
                assert abs(dominant_hz(audio) - 440) < 15
                # Progress: every second, and its position is the media time being played.
                stamps = [t for t, m in watch.messages]
                assert all(0.7 < b - a < 1.4 for a, b in itertools.pairwise(stamps[1:])), stamps
                errors = []
                for arrived, message in watch.messages[1:]:
                    assert message["type"] == "ingest.progress" and message["state"] == "playing"
                    shown = [n for t, n in watch.pictures if t <= arrived]
                    # The picture on screen when the message arrived vs the position it states; a
                    # frame interval (33 ms) of it is the picture's own quantum.
                    errors.append(float(message["position_ms"]) - shown[-1] * 1000 / FPS)  # type: ignore[arg-type]
                print(f"ingest progress: position - picture on screen {[round(e) for e in errors]} ms")
                assert all(abs(e) < 200 for e in errors), errors
                # Pause: the picture freezes and the audio stops.
                player.pause()
                paused_at = time.monotonic()
                await asyncio.sleep(1.0)
                assert watch.frames_after(paused_at + 0.3) == [], "nothing after a pause"
                assert player.progress().state is IngestState.PAUSED
                # Seek to 30 s while paused, then resume: the picture is the frame of 30 s within 1 s.
                player.seek(30.0)
                player.play()
                resumed = time.monotonic()
                await wait_until(lambda: any(n >= 880 for n in watch.frames_after(resumed)), 3)
                first = next(t for t, n in watch.pictures if t > resumed and n >= 880)
                assert first - resumed < 1.0
                after = watch.frames_after(first)
                assert all(870 <= n <= 1000 for n in after), after[:5]
                await asyncio.sleep(1.0)
                assert max(watch.frames_after(resumed)) > 900, "it plays on"
                # Volume 0: silence.
                player.set_volume(0)
                await asyncio.sleep(1.0)
                quiet = np.concatenate(watch.audio[-20:])
                assert float(np.abs(quiet).max()) < 0.01
                assert watch.messages[-1][1]["volume"] == 0
            finally:
                await viewer.stop()
                player.stop()
                await publisher.remove()
            assert progress and progress[0].state is IngestState.PLAYING

    asyncio.run(scenario())


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_short_media_ends_and_a_looping_one_starts_again(janus: Janus, clip_folder: Path) -> None:
    channel = ChannelConfig(janus.url, "app1", "cowatch-end")

    async def scenario() -> None:
        await make_room(janus, channel)
        for loop in (False, True):
            container = open_media(
                "media:short.mp4",
                media_dir=clip_folder,
                allow_private=False,
                open_timeout_seconds=5,
                read_timeout_seconds=5,
            )
            publisher = IngestPublisher(channel, f"short-{loop}", video=True, audio=True)
            await publisher.add()
            player = Player(
                container, describe(container), publisher, ingest_id="i2", url="media:short.mp4", loop=loop
            )
            player.start()
            try:
                if loop:
                    await asyncio.sleep(3.0)
                    assert not player.finished.is_set() and player.progress().state is IngestState.PLAYING
                    assert player.progress().position_ms < 1500, "it started again"
                else:
                    await wait_until(player.finished.is_set, 6)
                    final = player.progress()
                    assert (final.state, final.reason) == (IngestState.ENDED, "end of the media")
            finally:
                player.stop()
                await publisher.remove()

    asyncio.run(scenario())


def test_media_rules(clip_folder: Path) -> None:
    assert media_path("media:short.mp4", clip_folder) == (clip_folder / "short.mp4").resolve()
    for url in ("media:missing.mp4", "media:../etc"):
        with pytest.raises(MediaError) as caught:
            media_path(url, clip_folder)
        assert caught.value.code == "InvalidIngest.Url"
    with pytest.raises(MediaError, match="MPU_MEDIA_DIR"):
        media_path("media:short.mp4", None)
    with pytest.raises(MediaError) as caught:  # not public, and private URLs are not allowed
        open_media(
            "http://127.0.0.1:9/x.mp4",
            media_dir=None,
            allow_private=False,
            open_timeout_seconds=1,
            read_timeout_seconds=1,
        )
    assert caught.value.code == "InvalidIngest.Url"
    with pytest.raises(MediaError) as caught:  # allowed, but nothing answers
        open_media(
            "http://127.0.0.1:9/x.mp4",
            media_dir=None,
            allow_private=True,
            open_timeout_seconds=1,
            read_timeout_seconds=1,
        )
    assert caught.value.code == "InvalidIngest.Unreachable"
    with pytest.raises(MediaError) as caught:  # a text file is no media
        open_media(
            "media:notes.txt",
            media_dir=clip_folder,
            allow_private=False,
            open_timeout_seconds=1,
            read_timeout_seconds=1,
        )
    assert caught.value.code == "InvalidIngest.Unreachable"
    with pytest.raises(MediaError) as caught:
        open_media(
            "file:///etc/passwd",
            media_dir=None,
            allow_private=True,
            open_timeout_seconds=1,
            read_timeout_seconds=1,
        )
    assert caught.value.code == "InvalidIngest.Url"
    assert output_size(1920, 1080) == (1280, 720)
    assert output_size(640, 360) == (640, 360)
    assert output_size(1081, 1921) == (404, 720)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_hls_and_rtmp_sources_open_and_a_playlist_cannot_reach_local_files(
    clip_folder: Path, nginx_rtmp: NginxRtmp
) -> None:
    hls = clip_folder / "hls"
    hls.mkdir(exist_ok=True)
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-y", "-i", str(clip_folder / "short.mp4"), "-c", "copy", "-f", "hls",
         "-hls_time", "1", "-hls_list_size", "0", str(hls / "index.m3u8")],
        check=True,
    )  # fmt: skip
    (hls / "evil.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"
    )
    with serve_folder(clip_folder) as base:
        container = open_media(f"{base}/hls/index.m3u8", media_dir=None, allow_private=True,
                               open_timeout_seconds=5, read_timeout_seconds=5)  # fmt: skip
        info = describe(container)
        assert (info.has_video, info.has_audio, info.duration_ms) == (True, True, 2000)
        assert sum(1 for p in container.demux() if p.size) > 50
        container.close()
        with pytest.raises(MediaError):  # the segment's file: protocol is not whitelisted
            evil = open_media(f"{base}/hls/evil.m3u8", media_dir=None, allow_private=True,
                              open_timeout_seconds=5, read_timeout_seconds=5)  # fmt: skip
            describe(evil)
    # RTMP pull: a live stream on nginx-rtmp (the ffmpeg CLI publishes the clip in a loop).
    url = f"rtmp://127.0.0.1:{nginx_rtmp.rtmp_port}/live/ingest-src"
    publisher = subprocess.Popen(
        [FFMPEG, "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip_folder / "short.mp4"),
         "-c:v", "copy", "-c:a", "aac", "-f", "flv", url],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                live = open_media(
                    url, media_dir=None, allow_private=True, open_timeout_seconds=3, read_timeout_seconds=3
                )
                break
            except MediaError:
                assert time.monotonic() < deadline, "the RTMP stream never opened"
                time.sleep(0.3)
        info = describe(live)
        assert info.has_video and info.has_audio and info.duration_ms is None, info
        live.close()
    finally:
        publisher.terminate()
        publisher.wait(10)


class RecordingSink:
    """Counts the access units sent (frame n of the clip is the n-th: no seek, no B-frames) and keeps
    each progress message with the number sent by then."""

    def __init__(self) -> None:
        self.frames = 0
        self.audio = 0
        self.messages: list[tuple[dict[str, Any], int]] = []

    def send_video(self, access_unit: bytes, timestamp: int) -> None:
        self.frames += 1

    def send_audio(self, opus: bytes, timestamp: int) -> None:
        self.audio += 1

    def send_data(self, text: str) -> None:
        self.messages.append((json.loads(text), self.frames))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_progress_states_the_media_time_being_sent(long_clip: Path) -> None:
    """The progress's position against the media's own timestamps (the frame being sent when the
    message is made): within a frame interval and scheduling. (With the decoder's frame threads the
    pictures left 70-100 ms behind the clock, and behind the audio.)"""
    container = open_media(
        "media:clip.mp4",
        media_dir=long_clip,
        allow_private=False,
        open_timeout_seconds=5,
        read_timeout_seconds=5,
    )
    sink = RecordingSink()
    player = Player(
        container, describe(container), sink, ingest_id="i3", url="media:clip.mp4", start_at_seconds=0.0
    )
    player.start()
    time.sleep(5.5)
    player.stop()
    errors = [
        float(message["position_ms"]) - (sent - 1) * 1000 / FPS
        for message, sent in sink.messages
        if message["state"] == "playing" and sent > 0
    ]
    print(f"ingest progress: position - media time of the frame being sent {[round(e) for e in errors]} ms")
    assert len(errors) >= 4
    assert all(-40 <= e <= 70 for e in errors), errors
    assert sink.audio > 5 * 45, "audio flows: 50 Opus frames a second"
