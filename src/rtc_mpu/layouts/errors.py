"""The validation error shared by every layer that checks a task spec.

It lives in ``layouts`` (the bottom of the import order ``api → workers → mixer → layouts``) so
that layout loading, spec validation in ``mixer`` and the API all raise and catch the same type.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A task spec, layout or parameter is invalid.

    Attributes:
        code: the vendor-compatible error code, e.g. ``InvalidLayoutID.Malformed``
            (the vendor's MPU API, 2018-01-11, "Errors"); rtc-mpu's own codes are listed in README.
        message: a human-readable explanation naming the offending value.
        field: the request parameter at fault (``LayoutIds``, ``MediaEncode``, ...), or None.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
