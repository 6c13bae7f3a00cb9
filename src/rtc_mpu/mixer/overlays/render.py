"""Overlay pictures of each frame: a task's :class:`~rtc_mpu.spec.overlays.Overlays` turned into placed
:class:`~rtc_mpu.mixer.overlays.sprite.Sprite` s.

Every picture is prepared once and reused: an image is scaled and converted to YUV + alpha once per
rectangle it is drawn in, a text once per distinct text and style
(:class:`~rtc_mpu.mixer.overlays.text.TextCache`), a
clock once a second. Per frame, only the sprites' own rectangles are blended (by the compositor).
Images arrive when fetched (:meth:`OverlayRenderer.set_image`); until then they are not drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import numpy as np
import numpy.typing as npt

from rtc_mpu.layouts import Pane
from rtc_mpu.mixer.overlays.sprite import Sprite, sprite_from_rgba
from rtc_mpu.mixer.overlays.text import TextCache, clock_text
from rtc_mpu.mixer.video.compositor import OverlayDraw
from rtc_mpu.mixer.video.geometry import Rect, pane_rect
from rtc_mpu.spec.overlays import Display, ImageOverlay, Overlays, TextOverlay

#: Most sprites kept; the cache is cleared when it grows past this (layouts changing many times).
MAX_SPRITES = 512


class OverlayRenderer:
    """Makes the overlay sprites of each frame.

    Args:
        width, height: canvas size in pixels.
        text_cache: text bitmaps (shared by tasks in one process is fine).
    """

    def __init__(self, width: int, height: int, text_cache: TextCache | None = None) -> None:
        self.width = width
        self.height = height
        self.overlays = Overlays()
        self.text_cache = text_cache or TextCache()
        self._images: dict[str, npt.NDArray[np.uint8]] = {}
        self._sprites: dict[tuple[object, ...], tuple[object, Sprite | None]] = {}

    def set_overlays(self, overlays: Overlays | None) -> None:
        """Use these overlays from the next frame on (sprites of unchanged items are kept)."""
        self.overlays = overlays or Overlays()

    def set_image(self, url: str, rgba: npt.NDArray[np.uint8]) -> None:
        """A fetched image: ``(H, W, 4)`` uint8 straight-alpha RGBA."""
        self._images[url] = rgba

    def _cached(
        self, key: tuple[object, ...], content: object, make: Callable[[], Sprite | None]
    ) -> Sprite | None:
        """The sprite stored under ``key`` if it was made for ``content``, else a new one."""
        found = self._sprites.get(key)
        if found is not None and found[0] == content:
            return found[1]
        if len(self._sprites) >= MAX_SPRITES:
            self._sprites.clear()
        sprite = make()
        self._sprites[key] = (content, sprite)
        return sprite

    def _image(self, image: ImageOverlay, area: Rect) -> OverlayDraw | None:
        rgba = self._images.get(image.url)
        if rgba is None:
            return None
        box = image.box
        x = area.x + box.x * area.width
        y = area.y + box.y * area.height
        w = box.width * area.width
        h = box.height * area.height

        def make() -> Sprite | None:
            return sprite_from_rgba(
                rgba, round(x), round(y), round(w), round(h), self.width, self.height, image.alpha
            )

        sprite = self._cached(("image", image, area), id(rgba), make)
        return None if sprite is None else OverlayDraw(image.zorder, image.layer, sprite)

    def _text(self, text: TextOverlay, content: str, area: Rect) -> OverlayDraw | None:
        x = round(area.x + text.x * area.width)
        y = round(area.y + text.y * area.height)
        max_width = area.x + area.width - x
        max_height = area.y + area.height - y
        if max_width <= 0 or max_height <= 0 or not content:
            return None

        def make() -> Sprite | None:
            bitmap = self.text_cache.get(content, text.style, max_width, max_height)
            if bitmap.shape[0] == 0 or bitmap.shape[1] == 0:
                return None
            height, width = bitmap.shape[:2]
            return sprite_from_rgba(bitmap, x, y, width, height, self.width, self.height)

        sprite = self._cached(("text", text, area), content, make)
        return None if sprite is None else OverlayDraw(text.zorder, text.layer, sprite)

    def draws(self, panes: Mapping[int, tuple[Pane, bool]], now: datetime) -> list[OverlayDraw]:
        """The overlay sprites of one frame.

        Args:
            panes: the chosen layout's panes by pane id, each with whether it shows video now
                (a placeholder image shows only while its pane does not).
            now: the wall-clock time for clocks (timezone-aware).

        Returns:
            The sprites, in any order (the compositor sorts by zorder and layer).
        """
        canvas = Rect(0, 0, self.width, self.height)
        result: list[OverlayDraw | None] = []
        for image in (*self.overlays.backgrounds, *self.overlays.watermarks):
            result.append(self._image(image, canvas))
        for clock in self.overlays.clocks:
            result.append(self._text(clock, clock_text(now, clock.time_zone), canvas))
        for content in self.overlays.panes:
            if content.pane_id not in panes:
                continue
            pane, has_video = panes[content.pane_id]
            area = pane_rect(pane, self.width, self.height)
            for image in content.images:
                if image.display is Display.PLACEHOLDER and has_video:
                    continue
                result.append(self._image(image, area))
            for text in content.texts:
                result.append(self._text(text, text.text, area))
        return [draw for draw in result if draw is not None]
