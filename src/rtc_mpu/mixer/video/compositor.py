"""The video compositor: draws each pane's picture straight into a YUV420p output frame's planes.

No RGB round trip: inputs are converted by libswscale (through a cached PyAV ``VideoReformatter``
per pane) directly to YUV420p at their placed size, and copied plane by plane with numpy. A pane
whose input picture has not changed since the previous frame (an input at 15 fps in a 30 fps mix)
reuses its scaled picture, so every input picture is scaled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from rtc_mpu.mixer.overlays.sprite import Sprite, blend
from rtc_mpu.mixer.video.color import rgb_to_yuv601
from rtc_mpu.mixer.video.geometry import Placement, Rect, fit
from rtc_mpu.spec.overlays import Layer
from rtc_mpu.spec.task import CropMode

Plane = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class PaneDraw:
    """One pane to draw in a frame.

    Attributes:
        key: identifies the pane's scaling cache across frames (e.g. ``(layout id, pane id)``).
        rect: the pane in canvas pixels.
        zorder: drawing order, higher on top.
        frame: the picture to show (any size or pixel format), or None for background.
    """

    key: object
    rect: Rect
    zorder: int
    frame: av.VideoFrame | None


@dataclass(frozen=True)
class OverlayDraw:
    """One overlay picture to draw in a frame.

    Attributes:
        zorder: drawing order on the same scale as panes' (see :mod:`rtc_mpu.spec.overlays`).
        layer: its kind, which orders it among panes and overlays of equal zorder.
        sprite: the picture with alpha, already placed on the canvas.
    """

    zorder: int
    layer: Layer
    sprite: Sprite


def plane_view(frame: av.VideoFrame, index: int) -> Plane:
    """A writable ``(rows, visible width)`` uint8 view of plane ``index`` of a planar 8-bit frame."""
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    view: Plane = rows[:, : plane.width]
    return view


class _PaneScaler:
    """Scales one pane's input once per distinct picture, with one cached swscale context."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()
        self._source: av.VideoFrame | None = None
        self._placement: Placement | None = None
        self._planes: tuple[Plane, Plane, Plane] | None = None

    def scaled(self, frame: av.VideoFrame, placement: Placement) -> tuple[Plane, Plane, Plane]:
        if frame is self._source and placement == self._placement and self._planes is not None:
            return self._planes
        converted = self._reformatter.reformat(
            frame,
            width=placement.scaled_width,
            height=placement.scaled_height,
            format="yuv420p",
            dst_colorspace=Colorspace.ITU601,
            dst_color_range=ColorRange.MPEG,
            interpolation=Interpolation.BILINEAR,
            threads=1,
        )
        self._source, self._placement = frame, placement
        self._planes = (plane_view(converted, 0), plane_view(converted, 1), plane_view(converted, 2))
        return self._planes


class Compositor:
    """Composites panes onto a canvas.

    Args:
        width, height: canvas size in pixels; both even.
        background_rgb: 8-bit (R, G, B) of the background, drawn as BT.601 limited-range YUV.
        crop_mode: how pictures of another aspect ratio fit their pane.

    Raises:
        ValueError: if the canvas size is not positive and even.
    """

    def __init__(self, width: int, height: int, background_rgb: tuple[int, int, int], crop_mode: CropMode):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"canvas {width}x{height} must be positive and even")
        self.width = width
        self.height = height
        self.crop_mode = crop_mode
        self.background_yuv = rgb_to_yuv601(*background_rgb)
        self._scalers: dict[object, _PaneScaler] = {}

    def set_style(self, background_rgb: tuple[int, int, int], crop_mode: CropMode) -> None:
        """Change the background colour and crop mode from the next frame on."""
        self.background_yuv = rgb_to_yuv601(*background_rgb)
        self.crop_mode = crop_mode

    def compose(self, panes: Sequence[PaneDraw], overlays: Sequence[OverlayDraw] = ()) -> av.VideoFrame:
        """Draw one output frame.

        Args:
            panes: the panes of the frame, in any order; drawn by ascending zorder (stable).
            overlays: overlay pictures, blended in the same order: by zorder, then by layer
                (backgrounds below panes, pane overlays, watermarks and clocks above them).

        Returns:
            A new ``width`` x ``height`` yuv420p frame tagged BT.601 limited range, pts unset.
        """
        out = av.VideoFrame(self.width, self.height, "yuv420p")
        out.colorspace = Colorspace.ITU601
        out.color_range = ColorRange.MPEG
        planes = (plane_view(out, 0), plane_view(out, 1), plane_view(out, 2))
        for plane, value in zip(planes, self.background_yuv, strict=True):
            plane.fill(value)
        live_keys = set()
        items: list[tuple[int, int, int, PaneDraw | OverlayDraw]] = [
            (pane.zorder, Layer.PANE, index, pane) for index, pane in enumerate(panes)
        ]
        items += [(o.zorder, o.layer, index, o) for index, o in enumerate(overlays)]
        items.sort(key=lambda item: item[:3])
        for *_, pane in items:
            if isinstance(pane, OverlayDraw):
                blend(planes, pane.sprite)
                continue
            live_keys.add(pane.key)
            if pane.frame is None:
                self._fill(planes, pane.rect)
                continue
            placement = fit(pane.frame.width, pane.frame.height, pane.rect, self.crop_mode)
            if placement.target != pane.rect:
                self._fill(planes, pane.rect)
            target = placement.target
            if target.width == 0 or target.height == 0:
                continue
            scaler = self._scalers.get(pane.key)
            if scaler is None:
                scaler = self._scalers[pane.key] = _PaneScaler()
            source = scaler.scaled(pane.frame, placement)
            for index, (dst, src) in enumerate(zip(planes, source, strict=True)):
                shift = 1 if index else 0
                x, y = target.x >> shift, target.y >> shift
                w, h = target.width >> shift, target.height >> shift
                cx, cy = placement.crop_x >> shift, placement.crop_y >> shift
                dst[y : y + h, x : x + w] = src[cy : cy + h, cx : cx + w]
        for key in [k for k in self._scalers if k not in live_keys]:
            del self._scalers[key]
        return out

    def _fill(self, planes: tuple[Plane, Plane, Plane], rect: Rect) -> None:
        """Paint ``rect`` with the background (a pane with nothing to show, or pad bars over a lower pane)."""
        for index, (plane, value) in enumerate(zip(planes, self.background_yuv, strict=True)):
            shift = 1 if index else 0
            plane[
                rect.y >> shift : (rect.y + rect.height) >> shift,
                rect.x >> shift : (rect.x + rect.width) >> shift,
            ] = value
