"""Colour conversion: 8-bit RGB to BT.601 limited-range ("TV") 8-bit YUV, the compositor's output.

Source: Recommendation ITU-R BT.601-7 (03/2011), Part A, items 2.5.1-2.5.3: luma
``E'Y = 0.299 E'R + 0.587 E'G + 0.114 E'B`` (Kr = 0.299, Kb = 0.114), colour differences
``E'CB = (E'B - E'Y) / 1.772`` and ``E'CR = (E'R - E'Y) / 1.402``, quantised to 8 bits as
``Y = 219 E'Y + 16`` and ``C = 224 E'C + 128``; so Y spans 16..235 and Cb, Cr span 16..240.
With 8-bit inputs (``E' = RGB / 255``), each row of :data:`BT601_MATRIX` is those factors times 219
or 224, e.g. 219 * 0.299 = 65.481 and 224 * 0.886 / 1.772 = 112.0.

This module holds the numbers once: :func:`rgb_to_yuv601` converts one colour (solid fills), and
:mod:`rtc_mpu.mixer.overlays.sprite` applies the same matrix to whole pictures with numpy.
"""

from __future__ import annotations

#: Rows Y, Cb, Cr of the BT.601 limited-range matrix, per 8-bit R, G, B (divide by 255, then add
#: :data:`BT601_OFFSET`).
BT601_MATRIX: tuple[tuple[float, float, float], ...] = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
#: Codes added to Y, Cb, Cr: black's luma and the zero of the colour differences.
BT601_OFFSET: tuple[float, float, float] = (16.0, 128.0, 128.0)
#: Legal 8-bit code range of Y (limited range: black 16, white 235).
Y_RANGE: tuple[float, float] = (16.0, 235.0)
#: Legal 8-bit code range of Cb and Cr (limited range: 16..240 around 128).
C_RANGE: tuple[float, float] = (16.0, 240.0)


def rgb_to_yuv601(red: int, green: int, blue: int) -> tuple[int, int, int]:
    """Convert 8-bit (R, G, B) to 8-bit limited-range BT.601 (Y, Cb, Cr), rounded to the nearest code."""
    y, cb, cr = (
        offset + (row[0] * red + row[1] * green + row[2] * blue) / 255
        for row, offset in zip(BT601_MATRIX, BT601_OFFSET, strict=True)
    )
    return round(y), round(cb), round(cr)
