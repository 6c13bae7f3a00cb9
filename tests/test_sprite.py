"""Sprites: RGBA pictures prepared as premultiplied BT.601 YUV420p and blended into frame planes.

Expected colours are ITU-R BT.601 limited range (Y 16..235, Cb/Cr 16..240); pixel checks convert the
frame back to RGB with PyAV (libswscale, by the frame's BT.601 limited-range tags).

Run ``python -m tests.test_sprite`` for the blending micro-benchmark (not part of the tests).
"""

from __future__ import annotations

import timeit

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.video.reformatter import ColorRange, Colorspace

from rtc_mpu.mixer.overlays.sprite import Sprite, blend, sprite_from_rgba
from rtc_mpu.mixer.video.color import rgb_to_yuv601
from rtc_mpu.mixer.video.compositor import plane_view
from tests.media import rgb

W, H = 64, 48
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YUV_RED = (81, 90, 240)

Planes = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def make_frame(color: tuple[int, int, int], width: int = W, height: int = H) -> av.VideoFrame:
    """A yuv420p frame of one colour, tagged BT.601 limited range like the compositor's."""
    frame = av.VideoFrame(width, height, "yuv420p")
    frame.colorspace = Colorspace.ITU601
    frame.color_range = ColorRange.MPEG
    for plane, value in zip(planes(frame), rgb_to_yuv601(*color), strict=True):
        plane.fill(value)
    return frame


def solid_rgba(width: int, height: int, rgb: tuple[int, int, int], alpha: int = 255) -> npt.NDArray[np.uint8]:
    """A ``(height, width, 4)`` uint8 straight-alpha RGBA picture of one 8-bit colour and alpha."""
    picture = np.empty((height, width, 4), dtype=np.uint8)
    picture[...] = (*rgb, alpha)
    return picture


def planes(frame: av.VideoFrame) -> Planes:
    return plane_view(frame, 0), plane_view(frame, 1), plane_view(frame, 2)


def sprite(rgba: npt.NDArray[np.uint8], x: int, y: int, width: int, height: int, **kwargs: float) -> Sprite:
    made = sprite_from_rgba(rgba, x, y, width, height, W, H, **kwargs)
    assert made is not None
    return made


def near(picture: npt.NDArray[np.uint8], color: tuple[int, int, int], tolerance: int) -> bool:
    return bool(np.abs(picture.astype(int) - np.array(color)).max() <= tolerance)


# --- pixels -----------------------------------------------------------------------------------------


def test_opaque_red_over_blue() -> None:
    frame = make_frame(BLUE)
    red = sprite(solid_rgba(8, 8, RED), 10, 8, 20, 12)
    assert (red.x, red.y, red.width, red.height) == (10, 8, 20, 12)
    assert red.opaque_planes is not None
    blend(planes(frame), red)

    luma, cb, cr = planes(frame)
    assert (luma[8:20, 10:30] == YUV_RED[0]).all()
    assert (cb[4:10, 5:15] == YUV_RED[1]).all() and (cr[4:10, 5:15] == YUV_RED[2]).all()
    picture = rgb(frame)
    assert near(picture[10:18, 12:28], RED, 6)  # inside, 2 px from the edges
    outside = np.ones((H, W), dtype=bool)
    outside[6:22, 8:32] = False  # the rectangle grown by 2 px
    assert near(picture[outside], BLUE, 6)


def test_half_alpha_white_over_black_is_mid_grey() -> None:
    frame = make_frame(BLACK)
    before = [plane.copy() for plane in planes(frame)]
    white = sprite(solid_rgba(20, 12, WHITE, alpha=128), 20, 10, 20, 12)
    assert white.opaque_planes is None
    blend(planes(frame), white)

    picture = rgb(frame)
    assert near(picture[12:20, 22:38], (128, 128, 128), 6)
    assert near(picture[:8], BLACK, 2) and near(picture[24:], BLACK, 2)
    # Nothing outside the sprite's rectangle changed, in any plane.
    luma, cb, cr = planes(frame)
    luma[10:22, 20:40] = before[0][10:22, 20:40]
    cb[5:11, 10:20] = before[1][5:11, 10:20]
    cr[5:11, 10:20] = before[2][5:11, 10:20]
    for after, original in zip(planes(frame), before, strict=True):
        assert np.array_equal(after, original)


def test_blend_formula_with_varying_alpha() -> None:
    """Every pixel: ``(Y * a + dst * (255 - a) + 127) // 255``; a = 0 keeps dst, 255 takes Y."""
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    picture[0, :, 3] = 0
    picture[1, :, 3] = 255
    frame = make_frame(BLACK)
    luma = planes(frame)[0]
    luma[...] = rng.integers(16, 236, (H, W), dtype=np.uint8)
    before = luma.astype(np.int64)
    made = sprite(picture, 0, 0, W, H)
    arrays = (made.y_premul, made.u_premul, made.v_premul, made.inv_alpha_y, made.inv_alpha_uv)
    assert all(a.dtype == np.uint16 and not a.flags.writeable for a in arrays)
    assert made.u_premul.shape == made.inv_alpha_uv.shape == (H // 2, W // 2)
    blend(planes(frame), made)

    alpha = 255 - made.inv_alpha_y.astype(np.int64)
    assert np.array_equal(alpha, picture[..., 3])
    expected = (made.y_premul + before * made.inv_alpha_y + 127) // 255
    assert np.array_equal(luma, expected)
    assert np.array_equal(luma[0], before[0])
    assert np.array_equal(luma[1], made.y_premul[1] // 255)


def test_yuv_matches_rgb_to_yuv601() -> None:
    rng = np.random.default_rng(2)
    picture = rng.integers(0, 256, (2, 32, 4), dtype=np.uint8)
    picture[..., 3] = 255
    picture[1] = picture[0]  # each 2x2 block: two colours side by side, chroma is their mean
    made = sprite(picture, 0, 0, 32, 2)
    yuv = np.array([rgb_to_yuv601(*(int(c) for c in picture[0, column, :3])) for column in range(32)])
    assert np.array_equal(made.y_premul[0], yuv[:, 0] * 255)
    means = yuv.reshape(16, 2, 3).mean(axis=1)
    assert np.abs(made.u_premul[0] / 255 - means[:, 1]).max() <= 1
    assert np.abs(made.v_premul[0] / 255 - means[:, 2]).max() <= 1


def test_opacity() -> None:
    frame = make_frame(BLACK)
    blend(planes(frame), sprite(solid_rgba(20, 12, WHITE), 20, 10, 20, 12, opacity=0.5))
    assert near(rgb(frame)[12:20, 22:38], (128, 128, 128), 6)

    frame = make_frame(BLACK)
    quarter = sprite(solid_rgba(20, 12, WHITE, alpha=128), 20, 10, 20, 12, opacity=0.5)
    assert int(255 - quarter.inv_alpha_y.max()) == 64  # 128 * 0.5
    blend(planes(frame), quarter)
    assert near(rgb(frame)[12:20, 22:38], (64, 64, 64), 6)

    assert sprite_from_rgba(solid_rgba(20, 12, WHITE), 20, 10, 20, 12, W, H, opacity=0.0) is None
    assert sprite_from_rgba(solid_rgba(20, 12, WHITE), 20, 10, 20, 12, W, H, opacity=0.001) is None


# --- placement --------------------------------------------------------------------------------------


def test_clipped_at_canvas_edges() -> None:
    top_left = sprite(solid_rgba(20, 12, RED), -10, -6, 20, 12)
    assert (top_left.x, top_left.y, top_left.width, top_left.height) == (0, 0, 10, 6)
    assert top_left.y_premul.shape == (6, 10) and top_left.u_premul.shape == (3, 5)
    bottom_right = sprite(solid_rgba(20, 12, RED), 50, 40, 20, 12)
    assert (bottom_right.x, bottom_right.y, bottom_right.width, bottom_right.height) == (50, 40, 14, 8)

    frame = make_frame(BLUE)
    blend(planes(frame), bottom_right)
    picture = rgb(frame)
    assert near(picture[42:, 52:], RED, 6)
    assert near(picture[:38], BLUE, 6) and near(picture[:, :48], BLUE, 6)


def test_clipping_a_scaled_picture_keeps_its_visible_part() -> None:
    """Clipping scales only the visible part, as if the whole picture had been scaled then cut."""
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)
    whole = sprite(picture, 0, 0, 60, 44)
    cut = sprite_from_rgba(picture, -20, -10, 60, 44, 30, 24)
    assert cut is not None
    assert (cut.width, cut.height) == (30, 24)
    assert np.array_equal(cut.y_premul, whole.y_premul[10:34, 20:50])
    assert np.array_equal(cut.inv_alpha_y, whole.inv_alpha_y[10:34, 20:50])
    assert np.array_equal(cut.u_premul, whole.u_premul[5:17, 10:25])
    assert np.array_equal(cut.inv_alpha_uv, whole.inv_alpha_uv[5:17, 10:25])


@pytest.mark.parametrize(
    ("x", "y", "width", "height"),
    [(64, 0, 10, 10), (0, 48, 10, 10), (-10, 0, 10, 10), (0, -12, 10, 10), (100, 100, 10, 10)],
)
def test_fully_outside_is_none(x: int, y: int, width: int, height: int) -> None:
    assert sprite_from_rgba(solid_rgba(10, 10, RED), x, y, width, height, W, H) is None


def test_nothing_visible_is_none() -> None:
    assert sprite_from_rgba(solid_rgba(10, 10, RED), 0, 0, 0, 10, W, H) is None
    assert sprite_from_rgba(solid_rgba(10, 10, RED), 0, 0, 1, 1, W, H) is None  # rounds to 0
    assert sprite_from_rgba(solid_rgba(0, 0, RED), 0, 0, 10, 10, W, H) is None
    assert sprite_from_rgba(solid_rgba(10, 10, RED, alpha=0), 0, 0, 10, 10, W, H) is None
    assert sprite_from_rgba(solid_rgba(10, 10, RED, alpha=0), 0, 0, 20, 20, W, H) is None


def test_odd_coordinates_round_to_even() -> None:
    made = sprite(solid_rgba(11, 7, RED), 3, 7, 11, 7)
    assert (made.x, made.y, made.width, made.height) == (4, 8, 12, 8)  # rtc_mpu.mixer.video.geometry.even
    assert made.y_premul.shape == (8, 12) and made.inv_alpha_uv.shape == (4, 6)
    frame = make_frame(BLUE)
    blend(planes(frame), made)
    assert (planes(frame)[0][8:16, 4:16] == YUV_RED[0]).all()


def test_same_size_picture_is_not_resampled() -> None:
    rng = np.random.default_rng(4)
    picture = rng.integers(0, 256, (12, 20, 4), dtype=np.uint8)
    picture[..., 3] = 255
    made = sprite(picture, 2, 2, 20, 12)
    for row in range(12):
        for column in range(20):
            y = rgb_to_yuv601(*(int(c) for c in picture[row, column, :3]))[0]
            assert made.y_premul[row, column] == y * 255


# --- alpha-weighted chroma --------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [GREEN, BLUE, WHITE])
def test_transparent_pixels_do_not_tint(hidden: tuple[int, int, int]) -> None:
    """Each 2x2 block: a red opaque column and a transparent column of another colour."""
    picture = solid_rgba(20, 12, RED)
    picture[:, 1::2] = (*hidden, 0)
    made = sprite(picture, 10, 8, 20, 12)
    assert (made.inv_alpha_uv == 127).all()  # mean alpha 127.5, rounded to even
    assert (made.u_premul == YUV_RED[1] * 128).all() and (made.v_premul == YUV_RED[2] * 128).all()


def test_scaled_edge_keeps_its_colour() -> None:
    """Scaling a red picture whose right half is transparent green: its soft edge stays red."""
    picture = solid_rgba(16, 16, RED)
    picture[:, 8:] = (*GREEN, 0)
    made = sprite(picture, 0, 0, 40, 40)
    alpha_uv = 255 - made.inv_alpha_uv.astype(float)
    visible = alpha_uv >= 8
    assert visible.sum() > 0 and (alpha_uv[:, 10:] < 255).any()  # there is a soft edge
    u = made.u_premul[visible] / alpha_uv[visible]
    v = made.v_premul[visible] / alpha_uv[visible]
    assert np.abs(u - YUV_RED[1]).max() <= 3 and np.abs(v - YUV_RED[2]).max() <= 3
    alpha_y = 255 - made.inv_alpha_y.astype(float)
    luma = made.y_premul[alpha_y >= 8] / alpha_y[alpha_y >= 8]
    assert np.abs(luma - YUV_RED[0]).max() <= 3


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "picture",
    [
        np.zeros((4, 4, 3), dtype=np.uint8),
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 4), dtype=np.float32),
        np.zeros((4, 4, 4, 1), dtype=np.uint8),
        [[[0, 0, 0, 0]]],
    ],
)
def test_malformed_picture(picture: npt.NDArray[np.uint8]) -> None:
    with pytest.raises(ValueError, match="RGBA"):
        sprite_from_rgba(picture, 0, 0, 4, 4, W, H)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="canvas"):
        sprite_from_rgba(solid_rgba(4, 4, RED), 0, 0, 4, 4, 63, 48)
    with pytest.raises(ValueError, match="opacity"):
        sprite_from_rgba(solid_rgba(4, 4, RED), 0, 0, 4, 4, W, H, opacity=1.5)
    with pytest.raises(ValueError, match="fit"):
        blend(planes(make_frame(BLACK, 32, 24)), sprite(solid_rgba(4, 4, RED), 40, 30, 4, 4))


# --- micro-benchmark (python -m tests.test_sprite) ---------------------------------------------------


def benchmark(frames: int = 500) -> dict[str, float]:
    """Milliseconds per 1280x720 frame to blend 2 image sprites of 256x144 (alpha varies), 4 text
    sprites of about 300x40 and a clock sprite (from :func:`rtc_mpu.mixer.overlays.text.render_text`)."""
    from rtc_mpu.mixer.overlays.text import render_text
    from rtc_mpu.spec.overlays import TextStyle

    width, height = 1280, 720
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (144, 256, 4), dtype=np.uint8)
    style = TextStyle(font_size=28, border_width=2, border_color=0x000000)
    boxed = TextStyle(font_size=28, box=True, box_color=0x202020, box_border_width=4, alpha=0.8)
    texts = [render_text(f"User {i} 用户名字 Speaker {i}", boxed if i % 2 else style) for i in range(4)]
    clock = render_text("12:34:56", style)
    sprites: list[Sprite] = []
    for index, picture in enumerate([image, image]):
        made = sprite_from_rgba(picture, 40 + 400 * index, 40, 256, 144, width, height)
        assert made is not None
        sprites.append(made)
    for index, picture in enumerate([*texts, clock]):
        h, w = picture.shape[:2]
        made = sprite_from_rgba(picture, 40 + 300 * (index % 4), 300 + 60 * index, w, h, width, height)
        assert made is not None
        sprites.append(made)
    frame = make_frame(BLUE, width, height)
    target = planes(frame)

    def one(selection: list[Sprite]) -> float:
        def run() -> None:
            for made in selection:
                blend(target, made)

        return min(timeit.repeat(run, number=frames, repeat=3)) / frames * 1e3

    return {
        "sprites": float(len(sprites)),
        "total_ms": one(sprites),
        "images_ms": one(sprites[:2]),
        "texts_and_clock_ms": one(sprites[2:]),
        "text_pixels": float(sum(s.width * s.height for s in sprites[2:])),
    }


if __name__ == "__main__":
    print(benchmark())
