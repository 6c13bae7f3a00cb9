"""The vendor's colour integers (``BackgroundColor``, ``FontColor``, ``BorderColor``, ``BoxColor``).

A colour is one integer ``R + G * 256 + B * 65536`` with 8-bit components (the vendor's MPU API, 2018-01-11),
so 0 is black and :data:`MAX_COLOR` (0xFFFFFF) white.
"""

from __future__ import annotations

#: The largest colour integer: white, R = G = B = 255.
MAX_COLOR = 0xFFFFFF


def rgb_from_color_int(color: int) -> tuple[int, int, int]:
    """Split the vendor's colour integer ``R + G * 256 + B * 65536`` into 8-bit (R, G, B)."""
    return color & 0xFF, (color >> 8) & 0xFF, (color >> 16) & 0xFF
