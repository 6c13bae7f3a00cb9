"""The MediaEncode and TaskProfile tables (Alibaba Cloud RTC MPU, the vendor's MPU API, 2018-01-11)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from rtc_mpu.layouts.errors import SpecError

#: AAC bitrate of every mixed output with video, in bit/s (the vendor does not document one).
DEFAULT_AUDIO_BITRATE = 128_000


@dataclass(frozen=True)
class MediaEncode:
    """An output encoding.

    Attributes:
        id: the MediaEncode id of the vendor's table.
        width, height: canvas size in pixels (0 x 0 for audio only).
        video_bitrate: H.264 bitrate in bit/s (0 for audio only).
        fps: output frame rate in frames per second (0 for audio only).
        audio_bitrate: AAC bitrate in bit/s.
    """

    id: int
    width: int
    height: int
    video_bitrate: int
    fps: int
    audio_bitrate: int = DEFAULT_AUDIO_BITRATE

    @property
    def audio_only(self) -> bool:
        """True for MediaEncode 0 (no video stream)."""
        return self.width == 0


@dataclass(frozen=True)
class TaskProfile:
    """A TaskProfile: the capacity class of a task.

    Attributes:
        name: the wire value, e.g. ``4IN_720P`` or ``Mixed_Audio``.
        max_video_inputs: most video users a layout of this task may show (0 for Mixed_Audio).
        max_long_side, max_short_side: the largest output resolution in pixels, compared with the
            MediaEncode's long and short sides so portrait encodings fit too (0 for Mixed_Audio).
    """

    name: str
    max_video_inputs: int
    max_long_side: int
    max_short_side: int

    @property
    def audio_only(self) -> bool:
        """True for ``Mixed_Audio``."""
        return self.max_video_inputs == 0

    def allows(self, encode: MediaEncode) -> bool:
        """Whether ``encode``'s resolution fits inside this profile's."""
        if encode.audio_only:
            return True
        if self.audio_only:
            return False
        long_side, short_side = max(encode.width, encode.height), min(encode.width, encode.height)
        return long_side <= self.max_long_side and short_side <= self.max_short_side


def _load(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@cache
def media_encodes() -> dict[int, MediaEncode]:
    """The whole MediaEncode table by id, from ``layouts/media_encodes.json``."""
    data = _load("media_encodes.json")
    table = {
        row[0]: MediaEncode(id=row[0], width=row[1], height=row[2], video_bitrate=row[3] * 1000, fps=row[4])
        for row in data["video"]
    }
    audio = data["audio_only"]
    table[audio["id"]] = MediaEncode(
        id=audio["id"], width=0, height=0, video_bitrate=0, fps=0, audio_bitrate=audio["audio_kbps"] * 1000
    )
    return table


def media_encode(encode_id: int) -> MediaEncode:
    """Look up a MediaEncode id.

    Raises:
        SpecError: ``InvalidMediaEncode.Malformed`` when the id is not in the table.
    """
    table = media_encodes()
    if isinstance(encode_id, bool) or not isinstance(encode_id, int) or encode_id not in table:
        raise SpecError(
            "InvalidMediaEncode.Malformed",
            f"MediaEncode {encode_id!r} is not one of {sorted(table)}",
            ("media_encode",),
        )
    return table[encode_id]


@cache
def task_profiles() -> dict[str, TaskProfile]:
    """Every TaskProfile by wire name, from ``layouts/task_profiles.json``."""
    data = _load("task_profiles.json")
    profiles = {
        f"{n}IN_{res}": TaskProfile(f"{n}IN_{res}", n, sides[0], sides[1])
        for n in data["inputs"]
        for res, sides in data["resolutions"].items()
    }
    profiles[data["audio_only"]] = TaskProfile(data["audio_only"], 0, 0, 0)
    return profiles


#: ASCII digits only (``\d`` would take any script's digits), matched with ``fullmatch``.
_PROFILE_RE = re.compile(r"([0-9]+)IN_([0-9]+)P", re.IGNORECASE)


def task_profile(name: str) -> TaskProfile:
    """Look up a TaskProfile by its wire name (case-insensitive, e.g. ``4IN_720P``).

    Raises:
        SpecError: ``InvalidTaskProfile.Malformed`` when the name is not a known profile.
    """
    profiles = task_profiles()
    if isinstance(name, str):
        key = name.strip()
        if key.lower() == "mixed_audio":
            return profiles["Mixed_Audio"]
        match = _PROFILE_RE.fullmatch(key)
        if match:
            canonical = f"{int(match.group(1))}IN_{match.group(2)}P"
            if canonical in profiles:
                return profiles[canonical]
    raise SpecError(
        "InvalidTaskProfile.Malformed",
        f"TaskProfile {name!r} is not one of {sorted(profiles)}",
        ("task_profile",),
    )


def smallest_profile(encode: MediaEncode, video_inputs: int) -> TaskProfile:
    """The cheapest TaskProfile that fits ``encode`` and ``video_inputs`` panes (the default profile).

    Raises:
        SpecError: ``InvalidTaskProfile.Malformed`` when no profile is large enough.
    """
    if encode.audio_only:
        return task_profiles()["Mixed_Audio"]
    candidates = [
        p
        for p in task_profiles().values()
        if not p.audio_only and p.allows(encode) and p.max_video_inputs >= video_inputs
    ]
    if not candidates:
        raise SpecError(
            "InvalidTaskProfile.Malformed",
            f"no TaskProfile allows {video_inputs} video inputs at {encode.width}x{encode.height}",
            ("task_profile",),
        )
    return min(candidates, key=lambda p: (p.max_long_side * p.max_short_side, p.max_video_inputs))
