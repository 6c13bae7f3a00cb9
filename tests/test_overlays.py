"""Overlays end to end (issue #6): a task's parameters as the API stores them -> the mixer -> a file,
decoded with PyAV: position, colour, alpha, z-order of images, texts and clocks; placeholders;
screen share; subscriptions; relay; voice activity in the status and in H.264 SEI."""

from __future__ import annotations

import asyncio
import http.server
import io
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.output.sei import find_sei_payloads
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.overlays.images import FetchLimits
from rtc_mpu.mixer.pipeline import Pipeline, PipelineStats
from rtc_mpu.mixer.sources.base import Source
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.mixer.video.geometry import Rect, pane_rect
from rtc_mpu.workers.model import TaskParams
from tests.media import COLORS, TONES, decode_audio, decode_video, rgb, tone_level_db
from tests.scripted_source import ScriptedSource, ScriptedUser

WIDTH, HEIGHT, FPS = 640, 360, 15  # MediaEncode 1
LIMITS = FetchLimits(allow_private=True, timeout=3.0)
RED, GREEN, WHITE = (230, 20, 20), (20, 200, 40), (255, 255, 255)


def png(width: int, height: int, rgba: tuple[int, int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), rgba).save(buffer, "PNG")
    return buffer.getvalue()


IMAGES = {
    "/red.png": png(64, 64, (*RED, 255)),
    "/green-half.png": png(64, 64, (*GREEN, 128)),
    "/white.png": png(32, 32, (*WHITE, 255)),
    "/notimage.png": b"<html>nope</html>",
}


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A local HTTP server of test images (the mixer may fetch from loopback: LIMITS allows it)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = IMAGES.get(self.path.split("?")[0])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run(params: TaskParams, source: Source, out: Path, realtime: bool, duration: float) -> PipelineStats:
    pipeline = Pipeline(
        params.to_spec("UTC"),
        source,
        sink_target(str(out)),
        realtime=realtime,
        duration=duration,
        image_limits=LIMITS,
    )
    return asyncio.run(pipeline.run())


def params(**changes: Any) -> TaskParams:
    return TaskParams(channel_id="c", stream_url="rtmp://h/live/s", media_encode=1, **changes)


def mean(picture: npt.NDArray[np.uint8], rect: Rect, inset: int = 3) -> npt.NDArray[np.float64]:
    region = picture[
        rect.y + inset : rect.y + rect.height - inset, rect.x + inset : rect.x + rect.width - inset
    ]
    value: npt.NDArray[np.float64] = region.reshape(-1, 3).mean(axis=0)
    return value


def near(
    actual: npt.NDArray[np.float64], expected: tuple[float, float, float], tolerance: float = 14
) -> bool:
    return bool(np.abs(actual - np.array(expected)).max() <= tolerance)


def edges(picture: npt.NDArray[np.uint8], row: int, color: tuple[int, int, int]) -> tuple[int, int]:
    """First and last column of ``row`` whose pixel is within 40 of ``color``."""
    hits = np.where(np.abs(picture[row].astype(int) - np.array(color)).max(axis=1) <= 40)[0]
    assert hits.size, f"no {color} pixel in row {row}"
    return int(hits[0]), int(hits[-1])


@pytest.mark.timeout(60)
def test_watermark_background_and_pane_image_positions_alpha_and_zorder(
    tmp_path: Path, clips: list[Path], image_server: str
) -> None:
    out = tmp_path / "overlays.flv"
    task = params(
        layout_ids=(3,),  # picture in picture: pane 0 full canvas z0, pane 1 small top-left z1
        user_panes=(
            {
                "pane_id": 0,
                "user_id": "u0",
                "images": [
                    {
                        "url": f"{image_server}/white.png",
                        "x": 0.5,
                        "y": 0.5,
                        "width": 0.25,
                        "height": 0.25,
                        "z_order": 0,
                        "display": 1,
                    }
                ],
            },
        ),
        watermarks=(
            {
                "url": f"{image_server}/green-half.png",
                "x": 0.75,
                "y": 0.1,
                "width": 0.2,
                "height": 0.2,
                "alpha": 1.0,
                "z_order": 0,
                "display": 1,
            },
            # under pane 1 (z 1): hidden where the small pane is
            {
                "url": f"{image_server}/red.png",
                "x": 0.0,
                "y": 0.0,
                "width": 0.1,
                "height": 0.1,
                "alpha": 1.0,
                "z_order": 0,
                "display": 1,
            },
        ),
        backgrounds=({"url": f"{image_server}/notimage.png"},),
    )
    stats = run(task, FileSource([str(clips[0]), str(clips[1])], ["u0", "u1"]), out, False, 1.0)
    assert stats.overlay_problems == {"Backgrounds.1": "not an image"}
    picture = rgb(decode_video(out)[-1])
    # Watermark 1 at (0.75, 0.1) 0.2x0.2 of 640x360: x 480..608, y 36..108; 50 % green over user 0.
    mixed = (
        0.5 * GREEN[0] + 0.5 * COLORS[0][0],
        0.5 * GREEN[1] + 0.5 * COLORS[0][1],
        0.5 * GREEN[2] + 0.5 * COLORS[0][2],
    )
    x0, x1 = edges(picture, 72, (int(mixed[0]), int(mixed[1]), int(mixed[2])))
    assert abs(x0 - 480) <= 2 and abs(x1 - 607) <= 2, (x0, x1)
    blended = mean(picture, Rect(480, 36, 128, 72))
    assert near(blended, mixed), (blended, mixed)
    # The pane image: pane 0 is the whole canvas, the image at (0.5, 0.5) 0.25x0.25 of it.
    assert near(mean(picture, Rect(320, 180, 160, 90)), WHITE)
    assert near(mean(picture, Rect(320 - 40, 180, 30, 30)), COLORS[0]), "left of the image: user 0"
    # Watermark 2 (z 0) is covered by pane 1 (z 1) where they overlap; pane 1 shows user 1.
    small = pane_rect(system_layout(3).panes[1], WIDTH, HEIGHT)
    assert near(mean(picture, Rect(small.x + 4, small.y + 4, 40, 20)), COLORS[1])


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_texts_and_clock(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "texts.flv"
    task = params(
        layout_ids=(1,),
        user_panes=(
            {
                "pane_id": 0,
                "user_id": "u0",
                "texts": [
                    {
                        "text": "Alice 爱丽丝",
                        "x": 0.1,
                        "y": 0.1,
                        "font_size": 40,
                        "font_color": 0xFFFFFF,
                        "box": 1,
                        "box_color": 0x000000,
                        "font_type": 0,
                    },
                    {"text": "x" * 200, "x": 0.9, "y": 0.9, "font_size": 20, "font_color": 0xFFFFFF},
                ],
            },
        ),
        clock_widgets=({"x": 0.7, "y": 0.02, "font_size": 30, "font_color": 0x00FFFF},),
    )
    stats = run(task, FileSource([str(clips[0])], ["u0"]), out, True, 2.6)
    assert stats.overlay_problems == {}
    frames = [rgb(f) for f in decode_video(out)]
    box = frames[-1][36:100, 64:300]
    black = (np.abs(box.astype(int)).max(axis=2) < 30).mean()
    white = (box.min(axis=2) > 220).mean()
    assert black > 0.3 and white > 0.03, (black, white)  # white glyphs on a black box
    # The long text is clipped at the pane's (the canvas') edge: nothing wraps to the left side.
    assert near(mean(frames[-1], Rect(8, 330, 100, 24)), COLORS[0])
    # The clock (yellow digits) changes once a second: 2-3 distinct pictures in 2.6 s.
    region = [f[7:60, 448:640] for f in frames]
    yellow = [((r[..., 0] > 200) & (r[..., 1] > 200) & (r[..., 2] < 80)).sum() for r in region]
    assert min(yellow) > 50
    changes = sum(
        1 for a, b in itertools.pairwise(region) if np.abs(a.astype(int) - b.astype(int)).max() > 80
    )
    assert 1 <= changes <= 3, changes


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_placeholder_shows_while_the_camera_is_off(tmp_path: Path, image_server: str) -> None:
    out = tmp_path / "placeholder.flv"
    task = params(
        layout_ids=(1, 2),
        user_panes=(
            {
                "pane_id": 0,
                "user_id": "alice",
                "images": [
                    {
                        "url": f"{image_server}/red.png",
                        "x": 0.0,
                        "y": 0.0,
                        "width": 1.0,
                        "height": 1.0,
                        "display": 2,
                    }
                ],
            },
        ),
    )
    source = ScriptedSource(
        [
            ScriptedUser("alice", COLORS[0], TONES[0], video_off=(1.0, 2.0)),
            ScriptedUser("bob", COLORS[1], TONES[1]),
        ]
    )
    run(task, source, out, True, 3.0)
    frames = [rgb(f) for f in decode_video(out)]
    left = pane_rect(system_layout(2).panes[0], WIDTH, HEIGHT)
    right = pane_rect(system_layout(2).panes[1], WIDTH, HEIGHT)
    inner = Rect(left.x + 20, left.y + 40, left.width - 40, left.height - 80)
    assert near(mean(frames[int(0.7 * FPS)], inner), COLORS[0]), "alice's camera"
    assert near(mean(frames[int(1.6 * FPS)], inner), RED), "the placeholder while her camera is off"
    assert near(mean(frames[int(1.6 * FPS)], Rect(right.x + 20, right.y + 40, 100, 60)), COLORS[1])
    assert near(mean(frames[int(2.7 * FPS)], inner), COLORS[0]), "her camera again"


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_screen_share_pane_subscriptions_and_vad_sei(tmp_path: Path) -> None:
    out = tmp_path / "share.flv"
    screen = (250, 250, 0)
    task = params(
        layout_ids=(1, 2),
        user_panes=({"pane_id": 0, "user_id": "alice", "source_type": "shareScreen"},),
        sub_spec_camera_users=("bob",),  # alice's camera is not drawn; her screen share is
        unsub_spec_audio_users=("carol",),
        report_vad=1,
        vad_interval=500,
        payload_type=1,
    )
    source = ScriptedSource(
        [
            ScriptedUser("alice", COLORS[0], TONES[0], amplitude=0.02, screen_color=screen),
            ScriptedUser("bob", COLORS[1], TONES[1], amplitude=0.5),
            ScriptedUser("carol", COLORS[2], TONES[2], amplitude=0.5),
        ]
    )
    stats = run(task, source, out, True, 3.0)
    picture = rgb(decode_video(out)[-1])
    left, right = (pane_rect(p, WIDTH, HEIGHT) for p in system_layout(2).panes)
    assert near(mean(picture, Rect(left.x + 10, left.y + 40, 100, 60)), screen), "alice's screen in pane 0"
    assert near(mean(picture, Rect(right.x + 10, right.y + 40, 100, 60)), COLORS[1]), "bob's camera"
    samples, rate = decode_audio(out)
    tail = samples[:, -rate:]
    assert tone_level_db(tail, rate, TONES[1]) > -20 and tone_level_db(tail, rate, TONES[2]) < -50
    assert stats.vad is not None and stats.vad["speaker"] == "bob"
    assert "carol" not in stats.vad["levels"]
    # The SEI of the video says who speaks, at the VadInterval.
    payloads = []
    with av.open(str(out)) as container:
        for packet in container.demux(video=0):
            payloads += find_sei_payloads(bytes(packet))
    assert 4 <= len(payloads) <= 7, len(payloads)
    last = json.loads(payloads[-1])
    assert last["speaker"] == "bob" and last["levels"]["bob"] > last["levels"]["alice"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("stream_type", "video", "audio"), [(0, True, True), (1, False, True), (2, True, False)]
)
@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
def test_relay_one_user(tmp_path: Path, stream_type: int, video: bool, audio: bool) -> None:
    out = tmp_path / "relay.flv"
    task = params(mix_mode=0, stream_type=stream_type, sub_spec_users=("bob",))
    source = ScriptedSource(
        [ScriptedUser("alice", COLORS[0], TONES[0]), ScriptedUser("bob", COLORS[1], TONES[1], join=0.2)]
    )
    run(task, source, out, True, 2.0)
    with av.open(str(out)) as container:
        assert (len(container.streams.video) > 0, len(container.streams.audio) > 0) == (video, audio)
    if video:
        picture = rgb(decode_video(out)[-1])
        assert near(mean(picture, Rect(100, 60, 400, 200)), COLORS[1]), "bob over the whole canvas"
    if audio:
        samples, rate = decode_audio(out)
        tail = samples[:, -rate:]
        assert tone_level_db(tail, rate, TONES[1]) > -20 and tone_level_db(tail, rate, TONES[0]) < -50


@pytest.mark.timeout(60)
def test_background_image_under_the_panes_and_private_addresses_refused(
    tmp_path: Path, clips: list[Path], image_server: str
) -> None:
    out = tmp_path / "background.flv"
    task = params(
        layout_ids=(2,),  # side by side: the panes leave the top and bottom quarters to the background
        backgrounds=({"url": f"{image_server}/red.png", "x": 0, "y": 0, "width": 1, "height": 1},),
    )
    run(task, FileSource([str(clips[0]), str(clips[1])], ["u0", "u1"]), out, False, 0.5)
    picture = rgb(decode_video(out)[-1])
    assert near(mean(picture, Rect(0, 0, WIDTH, 80)), RED), "the background image above the panes"
    left = pane_rect(system_layout(2).panes[0], WIDTH, HEIGHT)
    assert near(mean(picture, Rect(left.x + 20, left.y + 40, 100, 60)), COLORS[0]), "the pane covers it"
    # By default a worker refuses image URLs on loopback or private addresses; the mix still runs.
    pipeline = Pipeline(
        task.to_spec(), FileSource([str(clips[0])], ["u0"]), sink_target(str(tmp_path / "b.flv")),
        realtime=False, duration=0.3,
    )  # fmt: skip
    stats = asyncio.run(pipeline.run())
    assert stats.video_frames > 0
    assert stats.overlay_problems == {"Backgrounds.1": "address 127.0.0.1 is private or loopback"}


@pytest.mark.integration  # a mix paced in real time: seconds of wall clock (tiers: tests/conftest.py)
@pytest.mark.timeout(60)
def test_subscriptions_change_on_a_running_mix(tmp_path: Path) -> None:
    """UpdateMPUTask's path: a new spec with other subscription lists takes effect at the next frame."""
    out = tmp_path / "update.flv"
    first = params(layout_ids=(1,), sub_spec_camera_users=("bob",), sub_spec_audio_users=("bob",))
    second = params(layout_ids=(1,), sub_spec_camera_users=("alice",), sub_spec_audio_users=("alice",))
    source = ScriptedSource(
        [ScriptedUser("alice", COLORS[0], TONES[0]), ScriptedUser("bob", COLORS[1], TONES[1])]
    )
    pipeline = Pipeline(first.to_spec(), source, sink_target(str(out)), realtime=True, duration=3.0)

    async def run_and_update() -> None:
        task = asyncio.create_task(pipeline.run())
        await asyncio.sleep(1.5)
        pipeline.update_spec(second.to_spec())
        await task

    asyncio.run(run_and_update())
    frames = [rgb(f) for f in decode_video(out)]
    inner = Rect(160, 90, 320, 180)
    assert near(mean(frames[int(1.0 * FPS)], inner), COLORS[1]), "bob only, at first"
    assert near(mean(frames[int(2.7 * FPS)], inner), COLORS[0]), "alice only, after the update"
    samples, rate = decode_audio(out)
    early, late = samples[:, int(0.4 * rate) : int(1.3 * rate)], samples[:, int(2.0 * rate) : int(2.9 * rate)]
    assert tone_level_db(early, rate, TONES[1]) > -20 and tone_level_db(early, rate, TONES[0]) < -50
    assert tone_level_db(late, rate, TONES[0]) > -20 and tone_level_db(late, rate, TONES[1]) < -50
