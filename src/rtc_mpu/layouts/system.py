"""The system layouts (ids 1-11 and 13) loaded from ``layouts/system_layouts.json``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from rtc_mpu.layouts.errors import SpecError
from rtc_mpu.layouts.schema import Layout, layout_from_dict


@cache
def system_layouts() -> dict[int, Layout]:
    """Every system layout by id, validated with the same schema as custom layouts.

    Raises:
        SpecError: if the shipped data file is malformed (a packaging bug).
    """
    data = json.loads(resources.files(__package__).joinpath("system_layouts.json").read_text("utf-8"))
    loaded = [layout_from_dict(item) for item in data["layouts"]]
    return {layout.id: layout for layout in loaded}


def system_layout(layout_id: int) -> Layout:
    """One system layout.

    Raises:
        SpecError: ``InvalidLayoutID.Malformed`` when ``layout_id`` is not a system layout.
    """
    layouts = system_layouts()
    if layout_id not in layouts:
        raise SpecError(
            "InvalidLayoutID.Malformed",
            f"LayoutId {layout_id!r} is not a system layout ({sorted(layouts)}) nor a custom one",
            ("layout_ids",),
        )
    return layouts[layout_id]
