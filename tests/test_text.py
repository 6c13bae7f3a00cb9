"""Text and clock bitmaps: the six FontTypes' real CJK and Latin glyphs, colours, border, box, alpha,
clipping, the bitmap cache, the start-up font check and the clock's time zones."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import ImageFont

import rtc_mpu.mixer.overlays.text
from rtc_mpu.mixer.overlays.sprite import blend, sprite_from_rgba
from rtc_mpu.mixer.overlays.text import (
    FONT_FILES,
    FONT_PACKAGES,
    FontError,
    TextCache,
    check_fonts,
    clock_text,
    render_text,
)
from rtc_mpu.mixer.video.color import rgb_to_yuv601
from rtc_mpu.mixer.video.compositor import plane_view
from rtc_mpu.spec.overlays import FONT_TYPES, TextStyle
from tests.media import rgb
from tests.test_sprite import make_frame, planes

# The vendor's colour ints: R + G * 256 + B * 65536.
RED = 0x0000FF
GREEN = 0x00FF00
BLUE = 0xFF0000
HELLO = "Hello 你好"
#: A private-use code point no font here has: drawn as the font's .notdef glyph (tofu).
UNASSIGNED = "\U0010fffd"


def opaque(picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The RGB of the fully opaque pixels, ``(N, 3)``."""
    pixels: npt.NDArray[np.uint8] = picture[picture[..., 3] == 255][:, :3]
    return pixels


def count(picture: npt.NDArray[np.uint8], color: tuple[int, int, int], tolerance: int = 8) -> int:
    """How many opaque pixels have ``color``."""
    return int((np.abs(opaque(picture).astype(int) - color).max(axis=1) <= tolerance).sum())


# --- fonts ------------------------------------------------------------------------------------------


def test_font_table() -> None:
    assert tuple(sorted(FONT_FILES)) == FONT_TYPES == (0, 1, 2, 3, 4, 5)
    assert set(FONT_PACKAGES) == {
        "fonts-wqy-microhei",
        "fonts-wqy-zenhei",
        "fonts-arphic-ukai",
        "fonts-arphic-uming",
    }
    names = {t: ImageFont.truetype(str(p), 12, index=i).getname()[0] for t, (p, i) in FONT_FILES.items()}
    assert names == {
        0: "WenQuanYi Micro Hei",
        1: "AR PL UMing CN",
        2: "AR PL UKai CN",
        3: "WenQuanYi Zen Hei",
        4: "WenQuanYi Micro Hei Mono",
        5: "WenQuanYi Zen Hei Sharp",
    }


@pytest.mark.parametrize("font_type", range(6))
def test_font_has_cjk_and_latin_glyphs(font_type: int) -> None:
    """Not tofu: "你", "好" and "H" are drawn with their own glyphs, not the font's .notdef box."""
    path, index = FONT_FILES[font_type]
    font = ImageFont.truetype(str(path), 32, index=index)
    tofu = np.asarray(font.getmask(UNASSIGNED))
    assert tofu.size > 0  # these fonts draw a visible .notdef box: a fair comparison
    for char in "你好H":
        mask = font.getmask(char)
        assert mask.getbbox() is not None
        glyph = np.asarray(mask)
        assert glyph.shape != tofu.shape or not np.array_equal(glyph, tofu), char


@pytest.mark.parametrize("font_type", range(6))
def test_render_each_font(font_type: int) -> None:
    picture = render_text(HELLO, TextStyle(font_type=font_type, font_size=32, font_color=RED))
    height, width, channels = picture.shape
    assert picture.dtype == np.uint8 and channels == 4
    assert height % 2 == 0 and width % 2 == 0
    assert 32 <= height <= 64 and 100 <= width <= 320
    shown = picture[..., 3] > 0
    assert (picture[..., 3] == 255).sum() > 100
    # Straight alpha: every visible pixel, even antialiased, has the font colour.
    assert np.abs(picture[shown][:, :3].astype(int) - (255, 0, 0)).max() <= 1
    assert (picture[~shown][:, :3] == 0).all()
    # The CJK half has ink, and differs from tofu drawn in its place.
    cjk = render_text("你好", TextStyle(font_type=font_type, font_size=32))
    tofu = render_text(UNASSIGNED * 2, TextStyle(font_type=font_type, font_size=32))
    assert cjk.shape[1] > 40 and (cjk.shape != tofu.shape or not np.array_equal(cjk, tofu))


def test_font_size_scales_the_height() -> None:
    small = render_text(HELLO, TextStyle(font_size=20))
    big = render_text(HELLO, TextStyle(font_size=40))
    assert 1.8 <= big.shape[0] / small.shape[0] <= 2.2
    assert 1.8 <= big.shape[1] / small.shape[1] <= 2.2


def test_height_is_the_same_for_every_text_of_a_style() -> None:
    """A clock's bitmap does not change size (its baseline does not jump) as digits change."""
    style = TextStyle(font_size=30)
    assert render_text("11:11:11", style).shape == render_text("08:59:59", style).shape
    assert render_text("ace", style).shape[0] == render_text("Ág你y", style).shape[0]


def test_multiline() -> None:
    style = TextStyle(font_size=24)
    one = render_text("Hello", style)
    two = render_text("Hello\n你好 world", style)
    assert abs(two.shape[0] - 2 * one.shape[0]) <= 2
    assert two.shape[1] > one.shape[1]


# --- style ------------------------------------------------------------------------------------------


def test_border() -> None:
    plain = render_text(HELLO, TextStyle(font_size=32, font_color=RED))
    bordered = render_text(HELLO, TextStyle(font_size=32, font_color=RED, border_color=BLUE, border_width=3))
    assert bordered.shape[0] >= plain.shape[0] + 4 and bordered.shape[1] >= plain.shape[1] + 4
    assert count(plain, (0, 0, 255)) == 0
    assert count(bordered, (0, 0, 255)) > 200  # the outline
    assert count(bordered, (255, 0, 0)) > 100  # the glyphs, inside it
    assert (bordered[..., 3] > 0).sum() > (plain[..., 3] > 0).sum() * 1.5


def test_box() -> None:
    plain = render_text(HELLO, TextStyle(font_size=32, font_color=RED))
    boxed = render_text(
        HELLO, TextStyle(font_size=32, font_color=RED, box=True, box_color=GREEN, box_border_width=6)
    )
    assert boxed.shape[0] - plain.shape[0] in (12, 14) and boxed.shape[1] - plain.shape[1] in (12, 14)
    assert (boxed[..., 3] == 255).all()
    assert (boxed[:6, :, :3] == (0, 255, 0)).all() and (boxed[:, :6, :3] == (0, 255, 0)).all()
    assert count(boxed, (255, 0, 0)) > 100
    # Without box_border_width the box is exactly behind the text.
    tight = render_text(HELLO, TextStyle(font_size=32, box=True))
    assert tight.shape == plain.shape and (tight[..., 3] == 255).all()


def test_alpha() -> None:
    half = render_text(HELLO, TextStyle(font_size=32, font_color=RED, alpha=0.5))
    assert half[..., 3].max() in (127, 128)
    shown = half[..., 3] > 0
    assert np.abs(half[shown][:, :3].astype(int) - (255, 0, 0)).max() <= 1
    # Over a box (not itself affected): opaque everywhere, glyphs half red, half box green.
    boxed = render_text(HELLO, TextStyle(font_size=32, font_color=RED, alpha=0.5, box=True, box_color=GREEN))
    assert (boxed[..., 3] == 255).all()
    assert count(boxed, (128, 127, 0), tolerance=2) > 100
    assert render_text(HELLO, TextStyle(font_size=32, alpha=0.0))[..., 3].max() == 0


def test_clipped_to_max_size() -> None:
    style = TextStyle(font_size=32, font_color=RED)
    full = render_text(HELLO * 3, style)
    clipped = render_text(HELLO * 3, style, max_width=40)
    assert clipped.shape == (full.shape[0], 40, 4)
    assert np.array_equal(clipped, full[:, :40])  # cut, not shrunk or wrapped
    assert render_text(HELLO, style, max_width=41).shape[1] == 40  # even
    short = render_text(HELLO, style, max_height=10)
    assert short.shape[0] == 10 and np.array_equal(short, render_text(HELLO, style)[:10])
    assert render_text(HELLO, style, max_width=1000, max_height=1000).shape == render_text(HELLO, style).shape
    assert render_text(HELLO, style, max_width=0).shape == (0, 0, 4)
    with pytest.raises(ValueError):
        render_text(HELLO, style, max_width=-2)


def test_empty_text() -> None:
    picture = render_text("", TextStyle(box=True, box_border_width=4))
    assert picture.shape == (0, 0, 4) and picture.dtype == np.uint8


@pytest.mark.parametrize(
    "fields",
    [
        {"font_type": 6},
        {"font_type": -1},
        {"font_size": 0},
        {"font_size": 73},
        {"font_color": 0x1000000},
        {"box_color": -1},
        {"alpha": 1.5},
        {"border_width": -1},
        {"box_border_width": -1},
    ],
)
def test_style_validation(fields: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        TextStyle(**fields)  # type: ignore[arg-type]


def test_text_blends_into_a_frame() -> None:
    """End to end: a bitmap becomes a sprite 1:1 (no resampling) and shows its colours in the frame."""
    picture = render_text(HELLO, TextStyle(font_size=32, font_color=RED, box=True, box_color=GREEN))
    height, width = picture.shape[:2]
    frame = make_frame((0, 0, 255), 320, 96)
    made = sprite_from_rgba(picture, 10, 20, width, height, 320, 96)
    assert made is not None and (made.width, made.height) == (width, height)
    assert made.opaque_planes is not None
    blend(planes(frame), made)
    luma = plane_view(frame, 0)
    assert (luma[20, 10 : 10 + width] == rgb_to_yuv601(0, 255, 0)[0]).all()  # the box's top row
    assert (luma[20 : 20 + height, 10 : 10 + width] == rgb_to_yuv601(255, 0, 0)[0]).sum() > 100
    picture_rgb = rgb(frame)
    assert np.abs(picture_rgb[0, :].astype(int) - (0, 0, 255)).max() <= 6


# --- cache ------------------------------------------------------------------------------------------


def test_cache_returns_the_same_bitmap() -> None:
    cache = TextCache(size=2)
    style = TextStyle(font_size=20)
    first = cache.get("a", style)
    assert cache.get("a", style) is first
    assert not first.flags.writeable
    assert np.array_equal(first, render_text("a", style))
    assert cache.get("a", style, max_width=4) is not first
    assert cache.get("a", TextStyle(font_size=21)) is not first
    assert len(cache) == 2  # least recently used first out
    assert cache.get("a", style) is not first


def test_cache_keeps_recently_used() -> None:
    cache = TextCache(size=2)
    style = TextStyle()
    first = cache.get("a", style)
    cache.get("b", style)
    assert cache.get("a", style) is first
    cache.get("c", style)  # evicts "b"
    assert cache.get("a", style) is first


# --- start-up check ---------------------------------------------------------------------------------


def test_check_fonts_passes() -> None:
    check_fonts()


def test_missing_font(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing.ttc"
    monkeypatch.setattr(rtc_mpu.mixer.overlays.text, "FONT_FILES", {**FONT_FILES, 2: (missing, 0)})
    with pytest.raises(FontError, match="apt-get install -y fonts-wqy-microhei") as error:
        check_fonts()
    assert str(missing) in str(error.value) and "FontType 2" in str(error.value)
    with pytest.raises(FontError, match="apt-get install"):
        render_text("x", TextStyle(font_type=2))
    render_text("x", TextStyle(font_type=0))  # the others still draw


def test_unreadable_font(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "broken.ttc"
    broken.write_bytes(b"not a font")
    monkeypatch.setattr(rtc_mpu.mixer.overlays.text, "FONT_FILES", {**FONT_FILES, 0: (broken, 0)})
    with pytest.raises(FontError, match="does not open"):
        check_fonts()
    with pytest.raises(FontError):
        render_text("x", TextStyle(font_type=0))


# --- clock ------------------------------------------------------------------------------------------


def test_clock_text() -> None:
    now = datetime(2024, 7, 1, 23, 4, 5, 600000, tzinfo=UTC)
    assert clock_text(now, "UTC") == "23:04:05"
    assert clock_text(now, "Asia/Shanghai") == "07:04:05"
    assert clock_text(now, "America/New_York") == "19:04:05"  # summer time
    assert clock_text(now.replace(month=1), "America/New_York") == "18:04:05"
    assert clock_text(now, None) == now.astimezone().strftime("%H:%M:%S")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Asia"])
def test_clock_unknown_zone(zone: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        clock_text(datetime(2024, 1, 1, tzinfo=UTC), zone)
