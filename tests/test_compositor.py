"""The compositor: YUV420p plane values of backgrounds, panes, z-order, crop/pad and scaling reuse.

Expected colours are ITU-R BT.601 limited range (Y 16..235, Cb/Cr 16..240), written literally.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

import rtc_mpu.mixer.video.compositor
from rtc_mpu.mixer.video.color import rgb_to_yuv601
from rtc_mpu.mixer.video.compositor import Compositor, PaneDraw, plane_view
from rtc_mpu.mixer.video.geometry import Rect
from rtc_mpu.spec.task import CropMode

W, H = 64, 48
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
#: BT.601 limited-range (Y, Cb, Cr) of the colours above.
YUV_BLACK = (16, 128, 128)
YUV_WHITE = (235, 128, 128)
YUV_RED = (81, 90, 240)
YUV_GREEN = (145, 54, 34)
YUV_BLUE = (41, 240, 110)

Planes = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def solid_rgb(width: int, height: int, rgb: tuple[int, int, int]) -> av.VideoFrame:
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[...] = rgb
    return av.VideoFrame.from_ndarray(array, format="rgb24")


def solid_yuv420p(width: int, height: int, yuv: tuple[int, int, int], fmt: str = "yuv420p") -> av.VideoFrame:
    array = np.empty((height * 3 // 2, width), dtype=np.uint8)
    array[:height] = yuv[0]
    chroma = array[height:].reshape(2, height // 2, width // 2)  # U plane then V plane, each w/2 x h/2
    chroma[0] = yuv[1]
    chroma[1] = yuv[2]
    return av.VideoFrame.from_ndarray(array, format=fmt)


def planes(frame: av.VideoFrame) -> Planes:
    return plane_view(frame, 0), plane_view(frame, 1), plane_view(frame, 2)


def region(frame: av.VideoFrame, rect: Rect) -> Planes:
    """The three planes cropped to ``rect`` (chroma at half resolution)."""
    y, u, v = planes(frame)
    cx, cy, cw, ch = rect.x // 2, rect.y // 2, rect.width // 2, rect.height // 2
    return (
        y[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width],
        u[cy : cy + ch, cx : cx + cw],
        v[cy : cy + ch, cx : cx + cw],
    )


def assert_solid(frame: av.VideoFrame, rect: Rect, yuv: tuple[int, int, int], tolerance: int = 1) -> None:
    for name, plane, want in zip("YUV", region(frame, rect), yuv, strict=True):
        assert plane.size > 0
        low, high = int(plane.min()), int(plane.max())
        assert want - tolerance <= low and high <= want + tolerance, (
            f"{name} in {rect}: {low}..{high} != {want}"
        )


def outside_mask(rect: Rect) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Luma and chroma masks of the pixels outside ``rect``."""
    luma = np.ones((H, W), dtype=bool)
    luma[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width] = False
    chroma = np.ones((H // 2, W // 2), dtype=bool)
    chroma[rect.y // 2 : (rect.y + rect.height) // 2, rect.x // 2 : (rect.x + rect.width) // 2] = False
    return luma, chroma


def assert_outside(frame: av.VideoFrame, rect: Rect, yuv: tuple[int, int, int]) -> None:
    luma, chroma = outside_mask(rect)
    y, u, v = planes(frame)
    assert set(np.unique(y[luma]).tolist()) == {yuv[0]}
    assert set(np.unique(u[chroma]).tolist()) == {yuv[1]}
    assert set(np.unique(v[chroma]).tolist()) == {yuv[2]}


FULL = Rect(0, 0, W, H)


# --- rgb_to_yuv601 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [(BLACK, YUV_BLACK), (WHITE, YUV_WHITE), (RED, YUV_RED), (GREEN, YUV_GREEN), (BLUE, YUV_BLUE)],
)
def test_rgb_to_yuv601(rgb: tuple[int, int, int], yuv: tuple[int, int, int]) -> None:
    got = rgb_to_yuv601(*rgb)
    assert all(abs(g - w) <= 1 for g, w in zip(got, yuv, strict=True)), (got, yuv)


def test_rgb_to_yuv601_grey_has_neutral_chroma() -> None:
    y, u, v = rgb_to_yuv601(128, 128, 128)
    assert abs(y - 126) <= 1  # 16 + 219 * 128 / 255 = 125.9
    assert (u, v) == (128, 128)


# --- background -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [(BLACK, YUV_BLACK), (WHITE, YUV_WHITE), (RED, YUV_RED), (GREEN, YUV_GREEN), (BLUE, YUV_BLUE)],
)
def test_background_fills_the_canvas(rgb: tuple[int, int, int], yuv: tuple[int, int, int]) -> None:
    out = Compositor(W, H, rgb, CropMode.PAD).compose([])
    assert (out.width, out.height, out.format.name) == (W, H, "yuv420p")
    assert [(p.width, p.height) for p in out.planes] == [(W, H), (W // 2, H // 2), (W // 2, H // 2)]
    assert_solid(out, FULL, yuv)
    for plane in planes(out):
        assert len(np.unique(plane)) == 1


def test_output_is_tagged_bt601_limited_range() -> None:
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([])
    assert out.colorspace == Colorspace.ITU601
    assert out.color_range == ColorRange.MPEG


def test_black_background_is_exactly_16_128_128() -> None:
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([])
    y, u, v = planes(out)
    assert int(y.min()) == int(y.max()) == 16
    assert int(u.min()) == int(u.max()) == 128
    assert int(v.min()) == int(v.max()) == 128


def test_each_compose_returns_a_new_frame() -> None:
    compositor = Compositor(W, H, BLACK, CropMode.PAD)
    first = compositor.compose([])
    compositor.set_style(WHITE, CropMode.PAD)
    second = compositor.compose([])
    assert first is not second
    assert_solid(first, FULL, YUV_BLACK, 0)
    assert_solid(second, FULL, YUV_WHITE, 0)


@pytest.mark.parametrize(("width", "height"), [(63, 48), (64, 47), (0, 48), (64, 0), (-2, 48)])
def test_canvas_must_be_positive_and_even(width: int, height: int) -> None:
    with pytest.raises(ValueError):
        Compositor(width, height, BLACK, CropMode.PAD)


# --- panes ----------------------------------------------------------------------------------------


def test_pane_shows_its_colour_inside_and_background_outside() -> None:
    rect = Rect(16, 8, 32, 24)
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([PaneDraw("p", rect, 0, solid_rgb(32, 24, RED))])
    assert_solid(out, rect, YUV_RED)
    assert_outside(out, rect, YUV_BLACK)


@pytest.mark.parametrize("mode", list(CropMode))
def test_source_of_another_size_is_scaled_into_the_pane(mode: CropMode) -> None:
    rect = Rect(8, 4, 24, 18)  # 4:3, the source 160x120 too
    out = Compositor(W, H, WHITE, mode).compose([PaneDraw("p", rect, 0, solid_rgb(160, 120, BLUE))])
    assert_solid(out, rect, YUV_BLUE)
    assert_outside(out, rect, YUV_WHITE)


def test_two_panes_side_by_side() -> None:
    left, right = Rect(0, 0, 32, 48), Rect(32, 0, 32, 48)
    out = Compositor(W, H, BLACK, CropMode.CROP).compose(
        [
            PaneDraw("l", left, 0, solid_rgb(32, 48, RED)),
            PaneDraw("r", right, 0, solid_rgb(32, 48, GREEN)),
        ]
    )
    assert_solid(out, left, YUV_RED)
    assert_solid(out, right, YUV_GREEN)


def test_yuv420p_input_is_copied_without_range_change() -> None:
    rect = Rect(16, 8, 32, 24)
    frame = solid_yuv420p(32, 24, (100, 50, 200))
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([PaneDraw("p", rect, 0, frame)])
    assert_solid(out, rect, (100, 50, 200))
    assert_outside(out, rect, YUV_BLACK)


def test_full_range_yuvj420p_input_is_converted_to_limited_range() -> None:
    frame = solid_yuv420p(64, 48, (255, 128, 128), fmt="yuvj420p")
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([PaneDraw("p", FULL, 0, frame)])
    assert_solid(out, FULL, YUV_WHITE)


@pytest.mark.parametrize(("level", "yuv"), [(255, YUV_WHITE), (0, YUV_BLACK)])
def test_gray_input_is_converted_to_limited_range(level: int, yuv: tuple[int, int, int]) -> None:
    frame = av.VideoFrame.from_ndarray(np.full((24, 32), level, dtype=np.uint8), format="gray")
    rect = Rect(16, 8, 32, 24)
    out = Compositor(W, H, BLUE, CropMode.PAD).compose([PaneDraw("p", rect, 0, frame)])
    assert_solid(out, rect, yuv)
    assert_outside(out, rect, YUV_BLUE)


def test_none_frame_shows_background() -> None:
    rect = Rect(16, 8, 32, 24)
    out = Compositor(W, H, RED, CropMode.PAD).compose([PaneDraw("p", rect, 0, None)])
    assert_solid(out, FULL, YUV_RED, 0)


def test_none_frame_on_top_covers_a_lower_pane_with_background() -> None:
    rect = Rect(16, 8, 32, 24)
    out = Compositor(W, H, BLACK, CropMode.PAD).compose(
        [PaneDraw("top", rect, 1, None), PaneDraw("bottom", FULL, 0, solid_rgb(W, H, GREEN))]
    )
    assert_solid(out, rect, YUV_BLACK, 0)
    assert_outside(out, rect, YUV_GREEN)


# --- z-order --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_higher_zorder_is_drawn_on_top_regardless_of_order(reverse: bool) -> None:
    small = Rect(40, 28, 20, 16)
    draws = [
        PaneDraw("big", FULL, 0, solid_rgb(W, H, RED)),
        PaneDraw("small", small, 1, solid_rgb(20, 16, BLUE)),
    ]
    if reverse:
        draws.reverse()
    out = Compositor(W, H, BLACK, CropMode.PAD).compose(draws)
    assert_solid(out, small, YUV_BLUE)
    assert_outside(out, small, YUV_RED)


def test_lower_zorder_listed_last_is_hidden_under_a_full_pane() -> None:
    small = Rect(40, 28, 20, 16)
    out = Compositor(W, H, BLACK, CropMode.PAD).compose(
        [PaneDraw("small", small, 0, solid_rgb(20, 16, BLUE)), PaneDraw("big", FULL, 5, solid_rgb(W, H, RED))]
    )
    assert_solid(out, FULL, YUV_RED)


# --- crop and pad ---------------------------------------------------------------------------------


def test_pad_bars_show_background() -> None:
    # 2:1 source into the 4:3 canvas: scaled to 64x32, centred at y = 8.
    out = Compositor(W, H, WHITE, CropMode.PAD).compose([PaneDraw("p", FULL, 0, solid_rgb(128, 64, GREEN))])
    picture = Rect(0, 8, 64, 32)
    assert_solid(out, picture, YUV_GREEN)
    assert_outside(out, picture, YUV_WHITE)


def test_pad_bars_hide_a_lower_pane() -> None:
    out = Compositor(W, H, WHITE, CropMode.PAD).compose(
        [
            PaneDraw("bottom", FULL, 0, solid_rgb(W, H, RED)),
            PaneDraw("top", FULL, 1, solid_rgb(128, 64, GREEN)),
        ]
    )
    picture = Rect(0, 8, 64, 32)
    assert_solid(out, picture, YUV_GREEN)
    assert_outside(out, picture, YUV_WHITE)


def test_pad_tall_source_gets_side_bars() -> None:
    # 1:2 source into a 32x32 pane: 16x32 centred at x = 8 + 8.
    rect = Rect(8, 8, 32, 32)
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([PaneDraw("p", rect, 0, solid_rgb(50, 100, BLUE))])
    picture = Rect(16, 8, 16, 32)
    assert_solid(out, picture, YUV_BLUE)
    assert_outside(out, picture, YUV_BLACK)


def test_crop_fills_the_pane() -> None:
    out = Compositor(W, H, WHITE, CropMode.CROP).compose([PaneDraw("p", FULL, 0, solid_rgb(128, 64, GREEN))])
    assert_solid(out, FULL, YUV_GREEN)


def red_green_red() -> av.VideoFrame:
    """A 96x48 (2:1) picture: red in its outer sixths (16 columns each side), green in between."""
    array = np.zeros((48, 96, 3), dtype=np.uint8)
    array[...] = RED
    array[:, 16:80] = GREEN
    return av.VideoFrame.from_ndarray(array, format="rgb24")


def test_crop_keeps_the_centre() -> None:
    # Into the 4:3 canvas the 2:1 picture keeps its size (96x48) and 16 columns are cropped on each
    # side: exactly the red sixths, so only green remains.
    out = Compositor(W, H, BLACK, CropMode.CROP).compose([PaneDraw("p", FULL, 0, red_green_red())])
    assert_solid(out, FULL, YUV_GREEN)


def test_pad_shows_the_whole_picture() -> None:
    # Scaled to 64x32 at y = 8: red in x 0..10.7 and 53.3..64, green in between.
    out = Compositor(W, H, BLACK, CropMode.PAD).compose([PaneDraw("p", FULL, 0, red_green_red())])
    assert_solid(out, Rect(0, 8, 8, 32), YUV_RED, 2)
    assert_solid(out, Rect(14, 8, 36, 32), YUV_GREEN, 2)
    assert_solid(out, Rect(56, 8, 8, 32), YUV_RED, 2)
    assert_outside(out, Rect(0, 8, 64, 32), YUV_BLACK)


def test_set_style_changes_crop_mode_and_background() -> None:
    compositor = Compositor(W, H, WHITE, CropMode.CROP)
    draws = [PaneDraw("p", FULL, 0, solid_rgb(128, 64, GREEN))]
    assert_solid(compositor.compose(draws), FULL, YUV_GREEN)
    compositor.set_style(RED, CropMode.PAD)
    out = compositor.compose(draws)
    assert_solid(out, Rect(0, 8, 64, 32), YUV_GREEN)
    assert_outside(out, Rect(0, 8, 64, 32), YUV_RED)


def test_tiny_pane_draws_nothing() -> None:
    out = Compositor(W, H, BLACK, CropMode.PAD).compose(
        [PaneDraw("p", Rect(10, 10, 0, 0), 0, solid_rgb(32, 24, RED))]
    )
    assert_solid(out, FULL, YUV_BLACK, 0)


# --- scaling reuse --------------------------------------------------------------------------------


class CountingReformatter:
    """Stands in for PyAV's (final) VideoReformatter and counts its conversions."""

    calls = 0

    def __init__(self) -> None:
        self._inner = VideoReformatter()

    def reformat(self, frame: av.VideoFrame, *args: Any, **kwargs: Any) -> av.VideoFrame:
        CountingReformatter.calls += 1
        return self._inner.reformat(frame, *args, **kwargs)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingReformatter]:
    monkeypatch.setattr(CountingReformatter, "calls", 0)
    monkeypatch.setattr(rtc_mpu.mixer.video.compositor, "VideoReformatter", CountingReformatter)
    return CountingReformatter


def test_same_frame_is_scaled_once(counting: type[CountingReformatter]) -> None:
    compositor = Compositor(W, H, BLACK, CropMode.PAD)
    rect = Rect(16, 8, 32, 24)
    frame = solid_rgb(160, 120, RED)
    first = compositor.compose([PaneDraw("p", rect, 0, frame)])
    assert counting.calls == 1
    second = compositor.compose([PaneDraw("p", rect, 0, frame)])
    third = compositor.compose([PaneDraw("p", rect, 0, frame)])
    assert counting.calls == 1
    for out in (second, third):
        for a, b in zip(planes(first), planes(out), strict=True):
            assert np.array_equal(a, b)
    assert_solid(third, rect, YUV_RED)


def test_new_frame_is_rescaled(counting: type[CountingReformatter]) -> None:
    compositor = Compositor(W, H, BLACK, CropMode.PAD)
    rect = Rect(16, 8, 32, 24)
    assert_solid(compositor.compose([PaneDraw("p", rect, 0, solid_rgb(160, 120, RED))]), rect, YUV_RED)
    out = compositor.compose([PaneDraw("p", rect, 0, solid_rgb(160, 120, BLUE))])
    assert counting.calls == 2
    assert_solid(out, rect, YUV_BLUE)


def test_same_frame_in_a_moved_pane_is_rescaled(counting: type[CountingReformatter]) -> None:
    compositor = Compositor(W, H, BLACK, CropMode.PAD)
    frame = solid_rgb(160, 120, GREEN)
    compositor.compose([PaneDraw("p", Rect(16, 8, 32, 24), 0, frame)])
    moved = Rect(0, 0, 48, 36)
    out = compositor.compose([PaneDraw("p", moved, 0, frame)])
    assert counting.calls == 2
    assert_solid(out, moved, YUV_GREEN)
    assert_outside(out, moved, YUV_BLACK)


def test_each_pane_key_has_its_own_cache(counting: type[CountingReformatter]) -> None:
    compositor = Compositor(W, H, BLACK, CropMode.PAD)
    red, blue = solid_rgb(32, 48, RED), solid_rgb(32, 48, BLUE)
    left, right = Rect(0, 0, 32, 48), Rect(32, 0, 32, 48)
    for _ in range(3):
        out = compositor.compose([PaneDraw("l", left, 0, red), PaneDraw("r", right, 0, blue)])
        assert_solid(out, left, YUV_RED)
        assert_solid(out, right, YUV_BLUE)
    assert counting.calls == 2


def test_pane_dropped_from_a_frame_is_rescaled_when_it_returns(counting: type[CountingReformatter]) -> None:
    compositor = Compositor(W, H, BLACK, CropMode.PAD)
    frame = solid_rgb(32, 24, RED)
    rect = Rect(16, 8, 32, 24)
    compositor.compose([PaneDraw("p", rect, 0, frame)])
    assert_solid(compositor.compose([]), FULL, YUV_BLACK, 0)
    out = compositor.compose([PaneDraw("p", rect, 0, frame)])
    assert counting.calls == 2
    assert_solid(out, rect, YUV_RED)
