"""The layout schema: one type for system layouts (shipped data) and custom layouts (API, Redis).

Coordinates are fractions of the canvas, as in Alibaba Cloud RTC's MPU API: ``x``, ``y`` in [0, 1],
``width``, ``height`` in (0, 1], and a pane must lie inside the canvas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtc_mpu.layouts.errors import FieldPath, SpecError

#: Maximum panes in a layout: the largest TaskProfile input count (16IN_*).
MAX_PANES = 16
#: Maximum audio sources mixed; same bound as the number of video inputs.
MAX_AUDIO_MIX_COUNT = 16
#: Slack allowed when checking that ``x + width <= 1``: the vendor's own tables are rounded to 4 places.
_EDGE_EPSILON = 1e-6

_CODE = "InvalidLayoutID.Malformed"


@dataclass(frozen=True)
class Pane:
    """One rectangle of a layout.

    Attributes:
        id: pane id, 0-based, unique in its layout (``PaneId`` in UserPanes).
        x, y: top-left corner as fractions of the canvas width / height, in [0, 1].
        width, height: size as fractions of the canvas width / height, in (0, 1].
        zorder: drawing order; higher is drawn on top, equal values draw in pane-id order.
    """

    id: int
    x: float
    y: float
    width: float
    height: float
    zorder: int = 0


@dataclass(frozen=True)
class Layout:
    """A layout: panes on a normalized canvas.

    Attributes:
        id: layout id (system layouts 1-11 and 13; custom layouts are numbered by the store).
        name: human-readable name.
        panes: panes ordered by pane id.
        audio_mix_count: maximum number of audio sources mixed while this layout is used.
        major_pane: the id of the main (largest) pane, or None when all panes are equal.
    """

    id: int
    name: str
    panes: tuple[Pane, ...]
    audio_mix_count: int
    major_pane: int | None = None

    @property
    def pane_count(self) -> int:
        """Number of panes (the number of video users this layout is made for)."""
        return len(self.panes)

    def to_dict(self) -> dict[str, Any]:
        """The layout in the JSON schema that :func:`layout_from_dict` reads."""
        return {
            "id": self.id,
            "name": self.name,
            "audio_mix_count": self.audio_mix_count,
            "major_pane": self.major_pane,
            "panes": [
                {"id": p.id, "x": p.x, "y": p.y, "width": p.width, "height": p.height, "zorder": p.zorder}
                for p in self.panes
            ],
        }


def _number(value: Any, what: str, field: FieldPath) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(_CODE, f"{what} must be a number, got {value!r}", field)
    result = float(value)
    if not math.isfinite(result):
        raise SpecError(_CODE, f"{what} must be finite, got {value!r}", field)
    return result


def _integer(value: Any, what: str, field: FieldPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(_CODE, f"{what} must be an integer, got {value!r}", field)
    return value


def make_pane(data: Mapping[str, Any], where: str, path: FieldPath = ("panes",)) -> Pane:
    """Validate one pane mapping (keys id, x, y, width, height, optional zorder) into a :class:`Pane`;
    errors name ``where`` in their message and have the field ``path`` (the pane's, e.g. ``("panes", 0)``).

    Raises:
        SpecError: ``InvalidLayoutID.Malformed`` when a value is missing, not a number, or the pane
            does not lie inside the canvas.
    """
    try:
        pane_id = _integer(data["id"], f"{where} id", path)
        x = _number(data["x"], f"{where} x", path)
        y = _number(data["y"], f"{where} y", path)
        width = _number(data["width"], f"{where} width", path)
        height = _number(data["height"], f"{where} height", path)
    except KeyError as exc:
        raise SpecError(_CODE, f"{where} lacks {exc.args[0]!r}", path) from None
    zorder = _integer(data.get("zorder", 0), f"{where} zorder", path)
    if not 0 <= pane_id < MAX_PANES:
        raise SpecError(_CODE, f"{where} id {pane_id} is outside 0..{MAX_PANES - 1}", path)
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise SpecError(_CODE, f"{where} corner ({x}, {y}) is outside the canvas [0, 1]", path)
    if not (0.0 < width <= 1.0 and 0.0 < height <= 1.0):
        raise SpecError(_CODE, f"{where} size {width} x {height} must be in (0, 1]", path)
    if x + width > 1.0 + _EDGE_EPSILON or y + height > 1.0 + _EDGE_EPSILON:
        raise SpecError(_CODE, f"{where} ({x}, {y}, {width} x {height}) reaches outside the canvas", path)
    return Pane(id=pane_id, x=x, y=y, width=width, height=height, zorder=zorder)


def layout_from_dict(data: Mapping[str, Any], *, where: str | None = None) -> Layout:
    """Validate a layout mapping in the shipped JSON schema into a :class:`Layout`.

    Schema: ``{"id": int, "name": str, "audio_mix_count": int, "major_pane": int | null,
    "panes": [{"id", "x", "y", "width", "height", "zorder"}, ...]}``. Error messages name the layout
    as ``where`` (default ``layout <id>``; a layout not stored yet has no id of its own).

    Raises:
        SpecError: ``InvalidLayoutID.Malformed`` for any schema violation: no panes, more than
            16 panes, duplicate pane ids, a pane outside the canvas, a major pane that does not
            exist, an AudioMixCount outside 1..16.
    """
    layout_id = _integer(data.get("id"), "layout id", ("layout_id",))
    where = f"layout {layout_id}" if where is None else where
    name = data.get("name", "")
    if not isinstance(name, str):
        raise SpecError(_CODE, f"{where} name must be a string", ("name",))
    raw_panes = data.get("panes")
    if not isinstance(raw_panes, list) or not raw_panes:
        raise SpecError(_CODE, f"{where} must have at least one pane", ("panes",))
    if len(raw_panes) > MAX_PANES:
        raise SpecError(_CODE, f"{where} has {len(raw_panes)} panes; at most {MAX_PANES}", ("panes",))
    panes = []
    for index, raw in enumerate(raw_panes):
        if not isinstance(raw, Mapping):
            raise SpecError(_CODE, f"{where} pane #{index} must be an object", ("panes", index))
        panes.append(make_pane(raw, f"{where} pane #{index}", ("panes", index)))
    ids = [p.id for p in panes]
    if len(set(ids)) != len(ids):
        raise SpecError(_CODE, f"{where} has duplicate pane ids {sorted(ids)}", ("panes",))
    audio_mix_count = _integer(
        data.get("audio_mix_count", MAX_AUDIO_MIX_COUNT), "AudioMixCount", ("audio_mix_count",)
    )
    if not 1 <= audio_mix_count <= MAX_AUDIO_MIX_COUNT:
        raise SpecError(
            _CODE,
            f"{where} AudioMixCount {audio_mix_count} is outside 1..{MAX_AUDIO_MIX_COUNT}",
            ("audio_mix_count",),
        )
    major = data.get("major_pane")
    if major is not None:
        major = _integer(major, "major pane", ("panes",))
        if major not in ids:
            raise SpecError(_CODE, f"{where} major pane {major} is not one of its panes", ("panes",))
    return Layout(
        id=layout_id,
        name=name,
        panes=tuple(sorted(panes, key=lambda p: p.id)),
        audio_mix_count=audio_mix_count,
        major_pane=major,
    )
