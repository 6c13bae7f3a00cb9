"""Text and clock bitmaps drawn with Pillow (FreeType), for :mod:`rtc_mpu.mixer.overlays.sprite` to blend.

The vendor's API (the vendor's MPU API, 2018-01-11) names six font types
(:data:`rtc_mpu.spec.overlays.FONT_TYPES`) but does not say which typefaces they are; :data:`FONT_FILES`
is our mapping to free fonts that cover both CJK and Latin, packaged by Debian (:data:`FONT_PACKAGES`).
:func:`check_fonts` is meant for start-up so a missing package fails early and says how to install it,
not on the first frame with a text.

The style (:class:`rtc_mpu.spec.overlays.TextStyle`) mirrors FFmpeg's drawtext filter, which the
vendor's options match one for one: font colour and opacity, an outline (border) and an optional
filled box with padding behind it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from rtc_mpu.spec.colors import rgb_from_color_int
from rtc_mpu.spec.overlays import TextStyle

#: The Debian packages of the font files below (``apt-get install -y ...``).
FONT_PACKAGES: tuple[str, ...] = (
    "fonts-wqy-microhei",
    "fonts-wqy-zenhei",
    "fonts-arphic-ukai",
    "fonts-arphic-uming",
)

_WQY = Path("/usr/share/fonts/truetype/wqy")
_ARPHIC = Path("/usr/share/fonts/truetype/arphic")

#: FontType (each of :data:`rtc_mpu.spec.overlays.FONT_TYPES`) -> (font file, face index in the
#: TrueType collection). Ours: the vendor publishes none. Paths and face indices as installed by
#: :data:`FONT_PACKAGES` (``dpkg -L``, ``fc-list``).
FONT_FILES: Mapping[int, tuple[Path, int]] = MappingProxyType(
    {
        0: (_WQY / "wqy-microhei.ttc", 0),  # WenQuanYi Micro Hei: sans serif (hei)
        1: (_ARPHIC / "uming.ttc", 0),  # AR PL UMing CN: serif (song / ming)
        2: (_ARPHIC / "ukai.ttc", 0),  # AR PL UKai CN: brush script (kai)
        3: (_WQY / "wqy-zenhei.ttc", 0),  # WenQuanYi Zen Hei: sans serif, heavier
        4: (_WQY / "wqy-microhei.ttc", 1),  # WenQuanYi Micro Hei Mono: monospaced
        5: (_WQY / "wqy-zenhei.ttc", 2),  # WenQuanYi Zen Hei Sharp: with embedded bitmaps
    }
)

RGBA = npt.NDArray[np.uint8]


class FontError(RuntimeError):
    """A font file of :data:`FONT_FILES` is missing or unreadable; the message says how to install it."""


def _install_hint() -> str:
    return (
        f"install them with: apt-get install -y {' '.join(FONT_PACKAGES)} (as root; or run "
        "scripts/install-system-deps.sh)"
    )


def check_fonts() -> None:
    """Check that every font of :data:`FONT_FILES` exists and opens (a worker's start-up check).

    Raises:
        FontError: naming the missing or unreadable files and the ``apt-get install`` command.
    """
    problems: list[str] = []
    for font_type, (path, index) in sorted(FONT_FILES.items()):
        if not path.is_file():
            problems.append(f"{path} (FontType {font_type}) is missing")
            continue
        try:
            _load_font(str(path), index, 12)
        except OSError as exc:
            problems.append(f"{path} face {index} (FontType {font_type}) does not open: {exc}")
    if problems:
        raise FontError(f"text overlays need fonts: {'; '.join(problems)}; {_install_hint()}")


@lru_cache(maxsize=128)
def _load_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


def _font(font_type: int, size: int) -> ImageFont.FreeTypeFont:
    path, index = FONT_FILES[font_type]
    if not path.is_file():
        raise FontError(f"font file {path} (FontType {font_type}) is missing; {_install_hint()}")
    try:
        return _load_font(str(path), index, size)
    except OSError as exc:
        raise FontError(f"font file {path} (FontType {font_type}) does not open: {exc}") from exc


def _empty() -> RGBA:
    return np.zeros((0, 0, 4), dtype=np.uint8)


def _limit(size: int, limit: int | None, name: str) -> int:
    """``size`` clipped to ``limit``, rounded down to even."""
    if limit is not None:
        if limit < 0:
            raise ValueError(f"{name} {limit} must not be negative")
        size = min(size, limit)
    return size - size % 2


def render_text(
    text: str, style: TextStyle, max_width: int | None = None, max_height: int | None = None
) -> RGBA:
    """Draw ``text`` as a bitmap with alpha.

    The bitmap is sized to the text: each line's advance and ink (whichever is wider) horizontally,
    the font's ascent + descent per line vertically (so every text of a style has the same height
    and its baseline does not move when the text changes), plus the border and the box padding;
    then rounded up to even (the extra column/row is transparent, or box), and clipped to
    ``max_width`` x ``max_height`` from the top-left (a text too long for its place is cut, never
    wrapped or shrunk). Width and height are always even, so the bitmap maps 1:1 onto a
    :func:`rtc_mpu.mixer.overlays.sprite.sprite_from_rgba` of its own size.

    Args:
        text: the text; ``"\\n"`` starts a new line.
        style: font, colours, border and box.
        max_width, max_height: the most pixels available, >= 0; None: unlimited.

    Returns:
        ``(H, W, 4)`` uint8 straight (not premultiplied) RGBA; ``(0, 0, 4)`` for an empty text or
        when nothing of it fits.

    Raises:
        FontError: the font file is missing or unreadable.
        ValueError: a negative ``max_width`` or ``max_height``.
    """
    font = _font(style.font_type, style.font_size)
    if not text:
        _limit(0, max_width, "max_width")
        _limit(0, max_height, "max_height")
        return _empty()
    stroke = style.border_width
    ascent, descent = font.getmetrics()
    pitch = ascent + descent
    lines = text.split("\n")
    # The extent of the text around the first line's origin (left edge, ascender line).
    left, top = -stroke, -stroke
    right, bottom = stroke, len(lines) * pitch + stroke
    for number, line in enumerate(lines):
        if not line:
            continue
        x0, y0, x1, y1 = font.getbbox(line, stroke_width=stroke, anchor="la")
        advance = int(np.ceil(font.getlength(line)))
        offset = number * pitch
        left, top = min(left, int(x0)), min(top, offset + int(y0))
        right, bottom = max(right, advance + stroke, int(x1)), max(bottom, offset + int(y1))
    pad = style.box_border_width if style.box else 0
    full_width = right - left + 2 * pad
    full_height = bottom - top + 2 * pad
    full_width += full_width % 2
    full_height += full_height % 2
    width = _limit(full_width, max_width, "max_width")
    height = _limit(full_height, max_height, "max_height")
    if width == 0 or height == 0:
        return _empty()

    origin_x, origin_y = pad - left, pad - top
    outline = Image.new("L", (width, height), 0)  # glyphs and their border
    glyphs = Image.new("L", (width, height), 0)  # glyphs only
    for number, line in enumerate(lines):
        if not line:
            continue
        position = (origin_x, origin_y + number * pitch)
        if stroke:
            ImageDraw.Draw(outline).text(
                position, line, fill=255, font=font, anchor="la", stroke_width=stroke, stroke_fill=255
            )
        ImageDraw.Draw(glyphs).text(position, line, fill=255, font=font, anchor="la")

    # Composite box, border and glyphs ("over", premultiplied float), then back to straight alpha.
    color = np.zeros((height, width, 3), dtype=np.float32)
    alpha = np.zeros((height, width), dtype=np.float32)
    if style.box:
        color[...] = rgb_from_color_int(style.box_color)
        alpha[...] = 1.0
    layers = [(glyphs, style.font_color)]
    if stroke:
        layers.insert(0, (outline, style.border_color))
    for mask, layer_color in layers:
        coverage = np.asarray(mask, dtype=np.float32) * np.float32(style.alpha / 255)
        keep = 1 - coverage
        color *= keep[..., None]
        color += coverage[..., None] * np.array(rgb_from_color_int(layer_color), dtype=np.float32)
        alpha *= keep
        alpha += coverage
    shown = alpha > 0
    np.divide(color, alpha[..., None], out=color, where=shown[..., None])
    picture = np.empty((height, width, 4), dtype=np.uint8)
    picture[..., :3] = np.rint(np.clip(color, 0, 255))
    picture[..., 3] = np.rint(alpha * 255)
    return picture


class TextCache:
    """A least-recently-used cache of :func:`render_text` bitmaps, so a text is drawn only when it
    changes (a clock: once a second). Thread-safe.

    Args:
        size: most bitmaps kept (>= 1).
    """

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"cache size {size} must be >= 1")
        self._size = size
        self._items: OrderedDict[tuple[str, TextStyle, int | None, int | None], RGBA] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, text: str, style: TextStyle, max_width: int | None = None, max_height: int | None = None
    ) -> RGBA:
        """:func:`render_text` of the arguments, the same (read-only) array object while cached.

        Raises:
            FontError, ValueError: as :func:`render_text` (nothing is cached then).
        """
        key = (text, style, max_width, max_height)
        with self._lock:
            picture = self._items.get(key)
            if picture is not None:
                self._items.move_to_end(key)
                return picture
        picture = render_text(text, style, max_width, max_height)
        picture.flags.writeable = False
        with self._lock:
            picture = self._items.setdefault(key, picture)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return picture

    def __len__(self) -> int:
        """Number of bitmaps cached."""
        return len(self._items)


def clock_text(now: datetime, time_zone: str | None) -> str:
    """The wall-clock time of ``now`` as ``"HH:MM:SS"`` (24 hours).

    Args:
        now: the instant; a naive datetime is taken as the machine's local time (as
            :meth:`datetime.astimezone` does).
        time_zone: IANA time zone name, e.g. ``"Asia/Shanghai"``; None: the machine's local time zone.

    Raises:
        ValueError: an unknown or malformed time zone name.
    """
    if time_zone is None:
        return now.astimezone().strftime("%H:%M:%S")
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {time_zone!r}") from None
    return now.astimezone(zone).strftime("%H:%M:%S")
