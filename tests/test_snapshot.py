"""Snapshots: JPEGs of the composite on the media clock, colours right, off the compositing thread.

Expected colours: a pane of 8-bit RGB c is composited as BT.601 limited-range YUV, and the JPEG must
decode (Pillow) to about c again. JPEG and chroma subsampling blur edges, so colours are measured as
the mean of a pane's interior.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

import rtc_mpu.mixer.output.snapshot
from rtc_mpu.cli.main import main
from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.output.snapshot import (
    LatestJpegFile,
    Snapshot,
    SnapshotTaker,
    copy_frame,
    frame_to_jpeg,
    scaled_size,
)
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.mixer.video.color import rgb_to_yuv601
from rtc_mpu.mixer.video.compositor import Compositor, PaneDraw, plane_view
from rtc_mpu.mixer.video.geometry import Rect, pane_rect
from rtc_mpu.spec.task import CropMode, build_task_spec
from tests.media import COLORS

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
#: Largest per-channel difference (8-bit) between a JPEG region's mean colour and the expected one.
TOLERANCE = 6
FPS30 = Fraction(1, 30)


def solid_yuv(width: int, height: int, rgb: tuple[int, int, int], *, tagged: bool = True) -> av.VideoFrame:
    """A yuv420p frame of ``rgb`` as BT.601 limited-range YUV (tagged so unless ``tagged`` is False)."""
    frame = av.VideoFrame(width, height, "yuv420p")
    for index, value in enumerate(rgb_to_yuv601(*rgb)):
        plane_view(frame, index).fill(value)
    if tagged:
        frame.colorspace = Colorspace.ITU601
        frame.color_range = ColorRange.MPEG
    return frame


def solid_rgb(width: int, height: int, rgb: tuple[int, int, int]) -> av.VideoFrame:
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = rgb
    return av.VideoFrame.from_ndarray(picture, format="rgb24")


def decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    """The JPEG as an ``(H, W, 3)`` uint8 RGB array, decoded by Pillow."""
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        picture: npt.NDArray[np.uint8] = np.asarray(image.convert("RGB"))
    return picture


def mean(picture: npt.NDArray[np.uint8], rect: Rect, inset: int = 6) -> npt.NDArray[np.float64]:
    region = picture[
        rect.y + inset : rect.y + rect.height - inset, rect.x + inset : rect.x + rect.width - inset
    ]
    value: npt.NDArray[np.float64] = region.reshape(-1, 3).mean(axis=0)
    return value


def assert_color(actual: npt.NDArray[np.float64], expected: tuple[int, int, int], what: str) -> None:
    difference = float(np.abs(actual - np.array(expected)).max())
    assert difference <= TOLERANCE, f"{what}: {actual.round(1)} is not {expected}"


def scaled(rect: Rect, factor: float) -> Rect:
    return Rect(
        round(rect.x * factor),
        round(rect.y * factor),
        round(rect.width * factor),
        round(rect.height * factor),
    )


class Collector:
    """An ``on_snapshot`` that keeps every snapshot."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    @property
    def times(self) -> list[float]:
        return [s.pts_seconds for s in self.snapshots]


def test_snapshots_follow_the_media_clock_at_0_5_and_10_seconds() -> None:
    got = Collector()
    frame = solid_yuv(64, 36, RED)
    with SnapshotTaker(got, interval_seconds=5) as taker:
        for index in range(12 * 30):  # 12 s of media time at 30 fps, offered as fast as possible
            taker.offer(frame, index, FPS30)
            assert taker.flush()
    assert got.times == [0.0, 5.0, 10.0]
    assert taker.stats.offered == 360
    assert (taker.stats.taken, taker.stats.skipped_busy, taker.stats.failed) == (3, 0, 0)


def test_the_schedule_counts_from_the_first_frame_offered_and_tolerates_dropped_ticks() -> None:
    got = Collector()
    frame = solid_yuv(64, 36, RED)
    with SnapshotTaker(got, interval_seconds=0.1) as taker:
        # Starts at frame 7; frames 10-12 never come (dropped ticks): 0.1 s is exactly 3 frames.
        for index in [7, 8, 9, 13, 14, 15, 16, 17, 18, 19]:
            taker.offer(frame, index, FPS30)
            assert taker.flush()
    assert [round(t * 30) for t in got.times] == [7, 13, 16, 19]


def test_the_default_interval_is_5_seconds_and_a_wall_clock_time_is_attached() -> None:
    got = Collector()
    taker = SnapshotTaker(got)
    assert taker.interval_seconds == 5
    taker.offer(solid_yuv(64, 36, RED), 0, FPS30)
    assert taker.close()
    (snapshot,) = got.snapshots
    assert snapshot.pts_seconds == 0.0
    assert abs(snapshot.taken_at_unix_seconds - time.time()) < 5


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_an_interval_that_is_not_positive_and_finite_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval_seconds"):
        SnapshotTaker(Collector(), interval_seconds=interval)


@pytest.mark.parametrize(("option", "value"), [("quality", 0), ("quality", 96), ("max_width", 0)])
def test_bad_quality_or_max_width_is_refused(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option):
        SnapshotTaker(Collector(), **{option: value})


@pytest.mark.parametrize(
    ("rgb", "tagged"), [(RED, True), (GREEN, True), (BLUE, True), ((90, 20, 120), True), (RED, False)]
)
def test_a_bt601_limited_range_colour_decodes_as_the_same_rgb(
    rgb: tuple[int, int, int], tagged: bool
) -> None:
    jpeg, width, height = frame_to_jpeg(solid_yuv(320, 180, rgb, tagged=tagged))
    picture = decode(jpeg)
    assert picture.shape == (height, width, 3) == (180, 320, 3)
    assert_color(mean(picture, Rect(0, 0, 320, 180)), rgb, f"{rgb} tagged={tagged}")


def test_a_full_range_frame_is_converted_by_its_range_tag() -> None:
    # Full-range BT.601 red: Y = 0.299 * 255, Cb = 128 - 0.1687 * 255, Cr = 255 (clipped).
    frame = av.VideoFrame(64, 36, "yuv420p")
    for index, value in enumerate((76, 85, 255)):
        plane_view(frame, index).fill(value)
    frame.colorspace, frame.color_range = Colorspace.ITU601, ColorRange.JPEG
    assert_color(mean(decode(frame_to_jpeg(frame)[0]), Rect(0, 0, 64, 36)), RED, "full-range red")


def test_a_composited_two_pane_frame_has_each_panes_colour_at_its_place() -> None:
    width, height, background = 1280, 720, (90, 20, 120)
    layout = system_layout(2)
    rects = [pane_rect(pane, width, height) for pane in layout.panes]
    compositor = Compositor(width, height, background, CropMode.CROP)
    frame = compositor.compose(
        [
            PaneDraw(key=1, rect=rects[0], zorder=0, frame=solid_rgb(320, 180, RED)),
            PaneDraw(key=2, rect=rects[1], zorder=0, frame=solid_rgb(320, 180, GREEN)),
        ]
    )
    got = Collector()
    with SnapshotTaker(got) as taker:  # default max_width 640: half size
        taker.offer(frame, 0, FPS30)
    (snapshot,) = got.snapshots
    assert (snapshot.width, snapshot.height) == (640, 360)
    picture = decode(snapshot.jpeg)
    assert picture.shape == (360, 640, 3)
    assert_color(mean(picture, scaled(rects[0], 0.5)), RED, "left pane")
    assert_color(mean(picture, scaled(rects[1], 0.5)), GREEN, "right pane")
    assert_color(mean(picture, Rect(0, 0, 640, 80)), background, "background above the panes")


@pytest.mark.parametrize(
    ("size", "max_width", "expected"),
    [
        ((1280, 720), 640, (640, 360)),
        ((1280, 720), 320, (320, 180)),
        ((1280, 720), None, (1280, 720)),
        ((480, 360), 640, (480, 360)),
        ((1920, 1080), 500, (500, 281)),
        ((640, 2), 64, (64, 1)),
    ],
)
def test_wide_composites_are_scaled_down_keeping_the_aspect_ratio(
    size: tuple[int, int], max_width: int | None, expected: tuple[int, int]
) -> None:
    assert scaled_size(*size, max_width) == expected


def test_max_width_scales_the_jpeg() -> None:
    got = Collector()
    with SnapshotTaker(got, max_width=320) as taker:
        taker.offer(solid_yuv(1280, 720, BLUE), 0, FPS30)
    (snapshot,) = got.snapshots
    assert (snapshot.width, snapshot.height) == (320, 180)
    assert decode(snapshot.jpeg).shape == (180, 320, 3)
    assert_color(mean(decode(snapshot.jpeg), Rect(0, 0, 320, 180)), BLUE, "scaled blue")


def test_the_frame_is_copied_so_the_pipeline_may_reuse_it_at_once() -> None:
    release = threading.Event()
    got = Collector()

    def slow(snapshot: Snapshot) -> None:
        release.wait(5)
        got(snapshot)

    frame = solid_yuv(64, 36, RED)
    with SnapshotTaker(slow) as taker:
        taker.offer(frame, 0, FPS30)
        for index, value in enumerate(rgb_to_yuv601(*GREEN)):  # the pipeline reuses its frame
            plane_view(frame, index).fill(value)
        release.set()
    assert_color(mean(decode(got.snapshots[0].jpeg), Rect(0, 0, 64, 36)), RED, "the offered picture")


def test_copy_frame_copies_pixels_and_colour_tags() -> None:
    frame = solid_yuv(66, 38, BLUE)
    copy = copy_frame(frame)
    assert (copy.width, copy.height, copy.format.name) == (66, 38, "yuv420p")
    assert (copy.colorspace, copy.color_range) == (frame.colorspace, frame.color_range)
    for index in range(3):
        assert np.array_equal(plane_view(copy, index), plane_view(frame, index))


def test_a_snapshot_due_while_the_previous_is_being_made_is_skipped_and_counted() -> None:
    release = threading.Event()
    entered = threading.Event()
    got = Collector()

    def slow(snapshot: Snapshot) -> None:
        entered.set()
        release.wait(5)
        got(snapshot)

    frame = solid_yuv(64, 36, RED)
    with SnapshotTaker(slow, interval_seconds=5) as taker:
        taker.offer(frame, 0, FPS30)
        assert entered.wait(5)
        taker.offer(frame, 150, FPS30)  # 5 s: due, but the worker is busy
        taker.offer(frame, 151, FPS30)  # not due: the skipped one counts as the last
        assert taker.stats.skipped_busy == 1
        release.set()
        assert taker.flush()
        taker.offer(frame, 300, FPS30)  # 10 s
    assert got.times == [0.0, 10.0]
    assert (taker.stats.taken, taker.stats.skipped_busy) == (2, 1)


def test_a_callback_that_raises_is_logged_and_counted_never_propagated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []

    def broken(snapshot: Snapshot) -> None:
        calls.append(snapshot.pts_seconds)
        raise OSError("disk full")

    frame = solid_yuv(64, 36, RED)
    with caplog.at_level(logging.ERROR), SnapshotTaker(broken, interval_seconds=1) as taker:
        for index in range(0, 90, 15):  # 0 .. 2.5 s at 30 fps, every half second
            taker.offer(frame, index, FPS30)
            assert taker.flush()
    assert calls == [0.0, 1.0, 2.0]
    assert (taker.stats.taken, taker.stats.callback_errors) == (3, 3)
    assert "snapshot callback failed" in caplog.text
    assert "disk full" in caplog.text


def test_a_snapshot_that_cannot_be_made_is_logged_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(frame: av.VideoFrame, **options: object) -> tuple[bytes, int, int]:
        raise ValueError("cannot convert")

    monkeypatch.setattr(rtc_mpu.mixer.output.snapshot, "frame_to_jpeg", refuse)
    got = Collector()
    with caplog.at_level(logging.ERROR), SnapshotTaker(got) as taker:
        taker.offer(solid_yuv(64, 36, RED), 0, FPS30)
    assert got.snapshots == []
    assert (taker.stats.taken, taker.stats.failed) == (0, 1)
    assert "snapshot at 0.000 s failed" in caplog.text


def test_close_waits_briefly_then_ignores_offers() -> None:
    release = threading.Event()

    def slow(snapshot: Snapshot) -> None:
        release.wait(5)

    taker = SnapshotTaker(slow, interval_seconds=1)
    taker.offer(solid_yuv(64, 36, RED), 0, FPS30)
    assert taker.close(timeout=0.05) is False  # still being made
    release.set()
    taker.offer(solid_yuv(64, 36, RED), 60, FPS30)
    assert taker.stats.offered == 1
    assert taker.close() is True


def test_snapshots_arrive_during_a_render_through_the_pipeline(tmp_path: Path, clips: list[Path]) -> None:
    spec = build_task_spec(layout_ids=[2], media_encode_id=1, background_color=90 + 20 * 256 + 120 * 65536)
    got = Collector()
    taker = SnapshotTaker(got, interval_seconds=1)
    out = tmp_path / "out.flv"
    pipeline = Pipeline(
        spec,
        FileSource([str(c) for c in clips[:2]]),
        sink_target(str(out)),
        realtime=False,
        duration=2.5,
        frame_listeners=[taker.offer],
    )
    stats = asyncio.run(pipeline.run())
    assert taker.close()
    assert stats.video_frames == 38  # 2.5 s at 15 fps, all encoded
    assert taker.stats.offered == 38
    # Due at 0, 1 and 2 s of media time; one can be skipped only if the encoder outran a JPEG.
    assert taker.stats.taken + taker.stats.skipped_busy == 3
    assert got.times[0] == 0.0 and set(got.times) <= {0.0, 1.0, 2.0}
    first = got.snapshots[0]
    assert (first.width, first.height) == (640, 360)
    picture = decode(first.jpeg)
    for pane, color in zip(system_layout(2).panes, COLORS[:2], strict=True):
        assert_color(mean(picture, pane_rect(pane, 640, 360)), color, f"pane {pane.id}")


def test_a_frame_listener_that_raises_does_not_stop_the_render(
    tmp_path: Path, clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(frame: av.VideoFrame, pts: int, time_base: Fraction) -> None:
        raise RuntimeError("listener bug")

    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    pipeline = Pipeline(
        spec,
        FileSource([str(clips[0])]),
        sink_target(str(tmp_path / "out.flv")),
        realtime=False,
        duration=0.4,
        frame_listeners=[broken],
    )
    with caplog.at_level(logging.ERROR):
        stats = asyncio.run(pipeline.run())
    assert stats.video_frames == 6
    assert "listener bug" in caplog.text


def test_mpu_render_keeps_the_latest_snapshot_in_the_snapshot_dir(
    tmp_path: Path, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    snapshots = tmp_path / "thumbs" / "task1"
    args = ["--media-encode", "1", "--layout-ids", "2", "--duration", "2.2", "--snapshot-interval", "1"]
    out = tmp_path / "out.flv"
    code = main(
        ["render", "--output", str(out), *args, "--snapshot-dir", str(snapshots), *map(str, clips[:2])]
    )
    assert code == 0
    assert sorted(p.name for p in snapshots.iterdir()) == ["latest.jpg"]  # no temporary file left
    picture = decode((snapshots / "latest.jpg").read_bytes())
    assert picture.shape == (360, 640, 3)
    assert_color(mean(picture, pane_rect(system_layout(2).panes[0], 640, 360)), COLORS[0], "pane 1")
    assert "snapshots (0 skipped, 0 failed)" in capsys.readouterr().err


def test_latest_jpeg_file_replaces_the_file(tmp_path: Path) -> None:
    writer = LatestJpegFile(tmp_path)
    writer(Snapshot(b"first", 1, 1, 0.0, 0.0))
    writer(Snapshot(b"second", 1, 1, 5.0, 5.0))
    assert writer.path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.jpg"]


@pytest.mark.parametrize("interval", ["0", "-2", "nan", "soon"])
def test_mpu_render_refuses_a_bad_snapshot_interval(
    tmp_path: Path, clips: list[Path], interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            [
                *("render", "--output", str(tmp_path / "o.flv"), "--snapshot-dir", str(tmp_path)),
                *("--snapshot-interval", interval, str(clips[0])),
            ]
        )
    assert exited.value.code == 2
    assert "seconds > 0" in capsys.readouterr().err


def test_mpu_render_refuses_snapshots_of_an_audio_only_task(
    tmp_path: Path, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.flv"
    snapshots = ["--snapshot-dir", str(tmp_path / "s")]
    code = main(["render", "--media-encode", "0", "--output", str(out), *snapshots, str(clips[0])])
    assert code == 2
    assert "--snapshot-dir needs a video output" in capsys.readouterr().err
    assert not out.exists()
