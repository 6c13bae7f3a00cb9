"""The validation error shared by every layer that checks a task spec.

It lives in ``layouts`` (the bottom of the import order ``api → workers → mixer → layouts``) so
that layout loading, spec validation in ``mixer`` and the API all raise and catch the same type.
"""

from __future__ import annotations

#: The request field at fault, in one vocabulary for every layer: the snake_case names of the request
#: schemas (rtc_mpu.api.schemas) and 0-based list positions, e.g. ``("user_panes", 0, "user_id")``.
#: It is the REST body's JSON path (REST ``field`` ``user_panes.0.user_id``); the RPC dialect names it
#: with the vendor's names (``UserPanes.1.UserId``: rtc_mpu.api.rpc_params.wire_name). Adding a
#: parameter therefore never adds a name mapping here: raise with the schema's field name.
FieldPath = tuple[str | int, ...]


class SpecError(ValueError):
    """A task spec, layout or parameter is invalid.

    Attributes:
        code: the vendor-compatible error code, e.g. ``InvalidLayoutID.Malformed``
            (the vendor's MPU API, 2018-01-11, "Errors"); rtc-mpu's own codes are listed in README.
        message: a human-readable explanation naming the offending value.
        field: the request field at fault (a :data:`FieldPath`: ``("layout_ids",)``,
            ``("user_panes", 0, "user_id")``), or None.
    """

    def __init__(self, code: str, message: str, field: FieldPath | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
