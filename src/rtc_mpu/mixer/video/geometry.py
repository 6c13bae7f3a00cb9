"""Pane geometry in pixels: normalized layout rectangles rounded to even pixels, and crop/pad fits.

Every coordinate and size here is even, so the YUV420p chroma planes (half resolution) line up with
the luma plane exactly. Edges (not sizes) are rounded, the same way for every pane: two panes that
touch in the layout (``x1 + w1 == x2``) share the same pixel edge, with neither overlap nor seam.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtc_mpu.layouts import Pane
from rtc_mpu.spec.task import CropMode


def even(value: float) -> int:
    """Round ``value`` (pixels) to the nearest even integer."""
    return 2 * round(value / 2)


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixels; every field even.

    Attributes:
        x, y: top-left corner.
        width, height: size, may be 0 for a pane too small to show.
    """

    x: int
    y: int
    width: int
    height: int


def pane_rect(pane: Pane, canvas_width: int, canvas_height: int) -> Rect:
    """The pixel rectangle of ``pane`` on a canvas of ``canvas_width`` x ``canvas_height`` pixels (even)."""
    x0 = min(max(even(pane.x * canvas_width), 0), canvas_width)
    y0 = min(max(even(pane.y * canvas_height), 0), canvas_height)
    x1 = min(max(even((pane.x + pane.width) * canvas_width), 0), canvas_width)
    y1 = min(max(even((pane.y + pane.height) * canvas_height), 0), canvas_height)
    return Rect(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class Placement:
    """Where a scaled picture lands in a pane.

    The source picture is scaled to ``scaled_width`` x ``scaled_height``; the part of it starting
    at (``crop_x``, ``crop_y``) of the size of ``target`` is copied to ``target`` on the canvas.
    All values in pixels, even.
    """

    scaled_width: int
    scaled_height: int
    crop_x: int
    crop_y: int
    target: Rect


def fit(source_width: int, source_height: int, pane: Rect, mode: CropMode) -> Placement:
    """Fit a ``source_width`` x ``source_height`` picture into ``pane``.

    ``CropMode.CROP`` scales to cover the pane and crops the centre; ``CropMode.PAD`` scales to fit
    inside and centres it, leaving background bars. Aspect ratio is kept within a pixel's rounding.

    Raises:
        ValueError: if the source size is not positive.
    """
    if source_width <= 0 or source_height <= 0:
        raise ValueError(f"source size {source_width}x{source_height} must be positive")
    if pane.width < 2 or pane.height < 2:
        return Placement(2, 2, 0, 0, Rect(pane.x, pane.y, 0, 0))
    scale_x = pane.width / source_width
    scale_y = pane.height / source_height
    if mode is CropMode.CROP:
        scale = max(scale_x, scale_y)
        width = max(even(source_width * scale), pane.width)
        height = max(even(source_height * scale), pane.height)
        crop_x = even((width - pane.width) / 2)
        crop_y = even((height - pane.height) / 2)
        return Placement(width, height, crop_x, crop_y, pane)
    scale = min(scale_x, scale_y)
    width = min(max(even(source_width * scale), 2), pane.width)
    height = min(max(even(source_height * scale), 2), pane.height)
    x = pane.x + even((pane.width - width) / 2)
    y = pane.y + even((pane.height - height) / 2)
    return Placement(width, height, 0, 0, Rect(x, y, width, height))
