"""Overlay pictures with alpha (images, texts, clocks), prepared once and blended per frame.

A :class:`Sprite` is an RGBA picture already scaled, placed and clipped on the canvas and converted
to BT.601 limited-range YUV420p (the compositor's output format, see
:mod:`rtc_mpu.mixer.video.compositor`), held as premultiplied uint16 planes. :func:`blend` then draws it with
a handful of numpy operations over its own rectangle only: no RGB round trip and no full-frame temporaries.

Colour: :data:`rtc_mpu.mixer.video.color.BT601_MATRIX` (ITU-R BT.601-7, 8-bit limited range: Y 16..235,
Cb/Cr 16..240), the numbers of :func:`rtc_mpu.mixer.video.color.rgb_to_yuv601`, vectorised.

Alpha: 0 (transparent) .. 255 (opaque). Chroma is subsampled 2x2 weighted by alpha, so the colour
of transparent pixels does not bleed into the visible ones at the picture's edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from rtc_mpu.mixer.video.color import BT601_MATRIX, BT601_OFFSET, C_RANGE, Y_RANGE
from rtc_mpu.mixer.video.geometry import even

Plane = npt.NDArray[np.uint8]
Plane16 = npt.NDArray[np.uint16]
_Float = npt.NDArray[np.float32]

#: :data:`~rtc_mpu.mixer.video.color.BT601_MATRIX` per 8-bit R, G, B, divided by 255, as float32.
_MATRIX = np.array(BT601_MATRIX, dtype=np.float32) / np.float32(255)
_OFFSET = np.array(BT601_OFFSET, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Sprite:
    """A picture with alpha placed on a canvas, ready to blend into yuv420p planes.

    Build one with :func:`sprite_from_rgba`; it is immutable (its arrays are read-only) and can be
    blended into any number of frames, from any thread: :func:`blend` only reads it.

    Attributes:
        x, y: top-left corner in canvas pixels, even, inside the canvas.
        width, height: size in pixels, even and > 0, already clipped to the canvas.
        y_premul: ``(height, width)`` uint16, luma code times alpha: ``Y * alpha`` (0..255 * 255).
        u_premul, v_premul: ``(height / 2, width / 2)`` uint16, Cb and Cr times the chroma alpha
            (the alpha-weighted 2x2 mean colour times the 2x2 mean alpha).
        inv_alpha_y: ``(height, width)`` uint16, ``255 - alpha`` per pixel.
        inv_alpha_uv: ``(height / 2, width / 2)`` uint16, ``255 - `` the 2x2 mean alpha.
        opaque_planes: when every pixel is opaque (alpha 255), the uint8 Y, U, V planes (shapes as
            above) that :func:`blend` simply copies; None otherwise.
    """

    x: int
    y: int
    width: int
    height: int
    y_premul: Plane16
    u_premul: Plane16
    v_premul: Plane16
    inv_alpha_y: Plane16
    inv_alpha_uv: Plane16
    opaque_planes: tuple[Plane, Plane, Plane] | None = None


def _premultiplied(rgba: npt.NDArray[np.uint8]) -> _Float:
    """``(4, H, W)`` float32 planes R*a/255, G*a/255, B*a/255, a (0..255) of ``(H, W, 4)`` RGBA."""
    planes = np.empty((4, *rgba.shape[:2]), dtype=np.float32)
    planes[3] = rgba[..., 3]
    scale = planes[3] * np.float32(1 / 255)
    for index in range(3):
        np.multiply(rgba[..., index], scale, out=planes[index])
    return planes


def _resample(channels: _Float, width: int, height: int, box: tuple[float, float, float, float]) -> _Float:
    """Lanczos-resample each ``(H, W)`` float32 channel of ``(C, H, W)``: the source ``box`` to
    ``width`` x ``height``."""
    out = np.empty((channels.shape[0], height, width), dtype=np.float32)
    for index, channel in enumerate(channels):
        image = Image.fromarray(channel)  # mode "F"
        out[index] = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS, box=box))
    return out


def sprite_from_rgba(
    rgba: npt.NDArray[np.uint8],
    x: int,
    y: int,
    width: int,
    height: int,
    canvas_width: int,
    canvas_height: int,
    opacity: float = 1.0,
) -> Sprite | None:
    """Prepare an RGBA picture for blending at (``x``, ``y``) with size ``width`` x ``height``.

    ``x``, ``y``, ``width`` and ``height`` are rounded to even numbers
    (:func:`rtc_mpu.mixer.video.geometry.even`);
    the picture is scaled to that size (Pillow Lanczos on premultiplied float data, so transparent
    pixels do not fringe the edges; not resampled at all when it already has that size), its alpha
    multiplied by ``opacity``, clipped to the canvas (only the visible part is scaled), converted to
    BT.601 limited-range YUV and chroma-subsampled 2x2 weighted by alpha.

    Args:
        rgba: ``(H, W, 4)`` uint8 straight (not premultiplied) RGBA; may be empty.
        x, y: top-left corner in canvas pixels; may be negative or beyond the canvas.
        width, height: size on the canvas in pixels.
        canvas_width, canvas_height: canvas size in pixels, positive and even.
        opacity: 0 (transparent) .. 1 (as is), multiplied with the picture's alpha.

    Returns:
        The sprite, or None when nothing of it is visible: an empty picture, a size that rounds to
        0, a rectangle outside the canvas, or every pixel transparent.

    Raises:
        ValueError: ``rgba`` is not an ``(H, W, 4)`` uint8 array, the canvas size is not positive
            and even, or ``opacity`` is outside 0..1.
    """
    if not isinstance(rgba, np.ndarray) or rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        shape = getattr(rgba, "shape", None)
        raise ValueError(f"picture must be an (H, W, 4) uint8 RGBA array, not {type(rgba).__name__} {shape}")
    if canvas_width <= 0 or canvas_height <= 0 or canvas_width % 2 or canvas_height % 2:
        raise ValueError(f"canvas {canvas_width}x{canvas_height} must be positive and even")
    if not (math.isfinite(opacity) and 0.0 <= opacity <= 1.0):
        raise ValueError(f"opacity {opacity} must be in 0..1")
    src_height, src_width = rgba.shape[:2]
    x, y, width, height = even(x), even(y), even(width), even(height)
    if src_width == 0 or src_height == 0 or width <= 0 or height <= 0 or opacity == 0:
        return None
    # The visible part, in canvas pixels (all even) and in the scaled picture's pixels.
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, canvas_width), min(y + height, canvas_height)
    if x1 <= x0 or y1 <= y0:
        return None
    left, top, right, bottom = x0 - x, y0 - y, x1 - x, y1 - y

    if (src_width, src_height) == (width, height):
        alpha = rgba[top:bottom, left:right, 3]
        if not alpha.any():
            return None
        picture = _premultiplied(rgba[top:bottom, left:right])
    else:
        if not rgba[..., 3].any():
            return None
        source = _premultiplied(rgba)
        sx, sy = src_width / width, src_height / height
        box = (left * sx, top * sy, right * sx, bottom * sy)
        picture = _resample(source, right - left, bottom - top, box)
    return _sprite(picture, x0, y0, opacity)


def _sprite(picture: _Float, x: int, y: int, opacity: float) -> Sprite | None:
    """The sprite of a ``(4, h, w)`` float32 premultiplied RGBa picture (h, w even) placed at x, y."""
    _, height, width = picture.shape
    coverage = np.clip(picture[3], 0.0, 255.0)
    # Premultiplied colour never exceeds alpha, nor goes below 0, but Lanczos ringing may make it.
    premul = np.clip(picture[:3], 0.0, coverage)
    alpha_int = np.rint(coverage * np.float32(opacity)).astype(np.uint16)
    if not alpha_int.any():
        return None

    # (YUV - offset) * a = M . RGB * a = M . (premultiplied RGB * 255): linear in premultiplied data.
    yuv_premul = np.einsum("ij,jhw->ihw", _MATRIX, premul * np.float32(255))
    shown = coverage > 0
    luma = np.zeros((height, width), dtype=np.float32)  # alpha 0: any legal code will do
    np.divide(yuv_premul[0], coverage, out=luma, where=shown)
    luma += _OFFSET[0]
    luma_code = np.rint(np.clip(luma, *Y_RANGE)).astype(np.uint16)  # Lanczos ringing may overshoot
    y_premul = luma_code * alpha_int
    inv_alpha_y = 255 - alpha_int

    # Chroma: the alpha-weighted mean colour of each 2x2 block, times the block's mean alpha.
    def block_sum(plane: _Float) -> _Float:
        summed: _Float = plane[0::2, 0::2] + plane[0::2, 1::2]
        summed += plane[1::2, 0::2]
        summed += plane[1::2, 1::2]
        return summed

    block_coverage = block_sum(coverage)
    block_shown = block_coverage > 0
    chroma_alpha = np.rint(block_sum(coverage * np.float32(opacity)) * np.float32(0.25)).astype(np.uint16)
    chroma_premul: list[Plane16] = []
    for row in (1, 2):
        mean = np.zeros(block_coverage.shape, dtype=np.float32)
        np.divide(block_sum(yuv_premul[row]), block_coverage, out=mean, where=block_shown)
        mean += _OFFSET[row]
        code = np.rint(np.clip(mean, *C_RANGE)).astype(np.uint16)
        chroma_premul.append(code * chroma_alpha)
    inv_alpha_uv = 255 - chroma_alpha

    opaque_planes = None
    if (alpha_int == 255).all():  # then every block's mean alpha is 255 too
        opaque_planes = (
            luma_code.astype(np.uint8),
            (chroma_premul[0] // 255).astype(np.uint8),
            (chroma_premul[1] // 255).astype(np.uint8),
        )
    for array in (y_premul, *chroma_premul, inv_alpha_y, inv_alpha_uv, *(opaque_planes or ())):
        array.flags.writeable = False
    return Sprite(
        x=x,
        y=y,
        width=width,
        height=height,
        y_premul=y_premul,
        u_premul=chroma_premul[0],
        v_premul=chroma_premul[1],
        inv_alpha_y=inv_alpha_y,
        inv_alpha_uv=inv_alpha_uv,
        opaque_planes=opaque_planes,
    )


def blend(planes: tuple[Plane, Plane, Plane], sprite: Sprite) -> None:
    """Draw ``sprite`` over yuv420p ``planes`` in place (Porter-Duff "over", premultiplied).

    Per plane, over the sprite's rectangle only (Y at full, U/V at half resolution):
    ``dst = (src_premul + dst * inv_alpha + 127) // 255``, i.e. ``dst * (1 - a) + src * a`` rounded
    to the nearest code, in uint16 arithmetic on views of the planes (temporaries are the size of the
    sprite, never of the frame). A fully opaque sprite is copied.

    Args:
        planes: writable uint8 (Y, U, V) planes of a frame, e.g. from
            :func:`rtc_mpu.mixer.video.compositor.plane_view`; Y ``(H, W)``, U and V
            ``(H / 2, W / 2)``, with the sprite's rectangle inside (as :func:`sprite_from_rgba` made it for
            that canvas).

    Raises:
        ValueError: the sprite does not fit in the planes.
    """
    luma, cb, cr = planes
    x, y, width, height = sprite.x, sprite.y, sprite.width, sprite.height
    if x + width > luma.shape[1] or y + height > luma.shape[0]:
        raise ValueError(
            f"sprite {width}x{height} at ({x}, {y}) does not fit a {luma.shape[1]}x{luma.shape[0]} frame"
        )
    cx, cy, cw, ch = x >> 1, y >> 1, width >> 1, height >> 1
    targets = (
        luma[y : y + height, x : x + width],
        cb[cy : cy + ch, cx : cx + cw],
        cr[cy : cy + ch, cx : cx + cw],
    )
    if sprite.opaque_planes is not None:
        for dst, src in zip(targets, sprite.opaque_planes, strict=True):
            dst[...] = src
        return
    sources = (
        (sprite.y_premul, sprite.inv_alpha_y),
        (sprite.u_premul, sprite.inv_alpha_uv),
        (sprite.v_premul, sprite.inv_alpha_uv),
    )
    for dst, (premul, inv_alpha) in zip(targets, sources, strict=True):
        mixed = dst * inv_alpha  # uint8 * uint16 -> uint16, at most 255 * 255
        mixed += premul
        mixed += 127
        mixed //= 255
        dst[...] = mixed
