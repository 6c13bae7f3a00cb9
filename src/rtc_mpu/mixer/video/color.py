"""Colour conversion for solid fills: 8-bit RGB to BT.601 limited-range ("TV", 16-235) YUV.

Coefficients from ITU-R BT.601-7 (Kr = 0.299, Kb = 0.114), scaled to 8-bit limited range:
Y in 16..235, Cb and Cr in 16..240.
"""

from __future__ import annotations


def rgb_to_yuv601(red: int, green: int, blue: int) -> tuple[int, int, int]:
    """Convert 8-bit (R, G, B) to 8-bit limited-range BT.601 (Y, Cb, Cr), rounded to the nearest code."""
    y = 16 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255
    cb = 128 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255
    cr = 128 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255
    return round(y), round(cb), round(cr)
