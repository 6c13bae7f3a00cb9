"""Layout data: system layouts, the MediaEncode and TaskProfile tables, and their schema."""

from rtc_mpu.layouts.errors import FieldPath, SpecError
from rtc_mpu.layouts.schema import Layout, Pane, layout_from_dict
from rtc_mpu.layouts.system import system_layout, system_layouts
from rtc_mpu.layouts.tables import (
    MediaEncode,
    TaskProfile,
    media_encode,
    media_encodes,
    smallest_profile,
    task_profile,
    task_profiles,
)

__all__ = [
    "FieldPath",
    "Layout",
    "MediaEncode",
    "Pane",
    "SpecError",
    "TaskProfile",
    "layout_from_dict",
    "media_encode",
    "media_encodes",
    "smallest_profile",
    "system_layout",
    "system_layouts",
    "task_profile",
    "task_profiles",
]
