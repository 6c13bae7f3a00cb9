"""The task spec: one immutable, validated description of a mix that the API builds and the pipeline runs.

Field names follow the field's terms; the StartMPUTask parameter each comes from is named in the
docstrings so the API layer can map errors back to the wire.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from layouts import (
    Layout,
    MediaEncode,
    SpecError,
    TaskProfile,
    media_encode,
    smallest_profile,
    system_layout,
    task_profile,
)

#: Most LayoutIds a task may list (LayoutIds.N, N = 1..16).
MAX_LAYOUT_IDS = 16
#: Most UserPanes a task may list (UserPanes.N, N = 1..16).
MAX_USER_PANES = 16
#: Longest UserId accepted, in characters.
MAX_USER_ID_LENGTH = 64
#: LayoutIds used when a task names none: one system layout per user count from 1 to 9, so the
#: mix grows from a single pane to a 3x3 gallery as users join.
DEFAULT_LAYOUT_IDS = (1, 2, 5, 6, 7, 8, 9, 10, 11)
#: BackgroundColor is R + G*256 + B*65536; its largest value is white.
MAX_BACKGROUND_COLOR = 0xFFFFFF


class CropMode(enum.IntEnum):
    """How a user's picture fits a pane of another aspect ratio (StartMPUTask ``CropMode``)."""

    #: Scale to fill the pane and crop what overflows.
    CROP = 1
    #: Scale to fit inside the pane; the uncovered bars show the background.
    PAD = 2


class SourceType(enum.StrEnum):
    """Which of a user's video streams a pane shows (``SourceType``); see :mod:`mixer.source`."""

    CAMERA = "camera"
    SHARE_SCREEN = "shareScreen"


@dataclass(frozen=True)
class UserPane:
    """A pane pinned to a user (``UserPanes.N``).

    Attributes:
        pane_id: the pane (``PaneId``), 0..15.
        user_id: the pinned user (``UserId``).
        source_type: which of the user's streams is shown (``SourceType``).
    """

    pane_id: int
    user_id: str
    source_type: SourceType = SourceType.CAMERA


@dataclass(frozen=True)
class TaskSpec:
    """A validated mix: what to draw, how to encode. Build it with :func:`build_task_spec`.

    Attributes:
        layouts: the task's layouts (``LayoutIds``), in the order given, pane counts distinct.
        media_encode: output encoding (``MediaEncode``); canvas size, fps and bitrate come from it.
        task_profile: capacity class (``TaskProfile``).
        user_panes: pinned panes (``UserPanes``).
        background_color: ``R + G*256 + B*65536`` (``BackgroundColor``).
        crop_mode: crop or pad (``CropMode``).
    """

    layouts: tuple[Layout, ...]
    media_encode: MediaEncode
    task_profile: TaskProfile
    user_panes: tuple[UserPane, ...] = field(default=())
    background_color: int = 0
    crop_mode: CropMode = CropMode.PAD

    @property
    def width(self) -> int:
        """Canvas width in pixels (0 for audio only)."""
        return self.media_encode.width

    @property
    def height(self) -> int:
        """Canvas height in pixels (0 for audio only)."""
        return self.media_encode.height

    @property
    def fps(self) -> int:
        """Output frame rate in frames per second (0 for audio only)."""
        return self.media_encode.fps

    @property
    def video_bitrate(self) -> int:
        """H.264 bitrate in bit/s."""
        return self.media_encode.video_bitrate

    @property
    def audio_bitrate(self) -> int:
        """AAC bitrate in bit/s."""
        return self.media_encode.audio_bitrate

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        """The background colour as 8-bit (R, G, B)."""
        return rgb_from_color_int(self.background_color)


def rgb_from_color_int(color: int) -> tuple[int, int, int]:
    """Split the vendor's colour integer ``R + G*256 + B*65536`` into 8-bit (R, G, B)."""
    return color & 0xFF, (color >> 8) & 0xFF, (color >> 16) & 0xFF


def _layouts(layout_ids: Sequence[int], custom_layouts: Mapping[int, Layout]) -> tuple[Layout, ...]:
    if len(layout_ids) > MAX_LAYOUT_IDS:
        raise SpecError("InvalidLayoutID.Malformed", f"at most {MAX_LAYOUT_IDS} LayoutIds", "LayoutIds")
    result = []
    for layout_id in layout_ids:
        if isinstance(layout_id, bool) or not isinstance(layout_id, int):
            raise SpecError(
                "InvalidLayoutID.Malformed", f"LayoutId {layout_id!r} is not an integer", "LayoutIds"
            )
        result.append(custom_layouts[layout_id] if layout_id in custom_layouts else system_layout(layout_id))
    if len({layout.id for layout in result}) != len(result):
        raise SpecError("InvalidLayoutID.Malformed", "LayoutIds lists a layout twice", "LayoutIds")
    counts = [layout.pane_count for layout in result]
    for layout in result:
        if counts.count(layout.pane_count) > 1:
            same = [lay.id for lay in result if lay.pane_count == layout.pane_count]
            raise SpecError(
                "InvalidLayoutID.Malformed",
                f"LayoutIds {same} have the same pane count ({layout.pane_count}); "
                "the task could not choose between them",
                "LayoutIds",
            )
    return tuple(result)


def _user_panes(user_panes: Sequence[UserPane]) -> tuple[UserPane, ...]:
    if len(user_panes) > MAX_USER_PANES:
        raise SpecError("InvalidParameter", f"at most {MAX_USER_PANES} UserPanes", "UserPanes")
    seen_panes: set[int] = set()
    seen_streams: set[tuple[str, SourceType]] = set()
    for pane in user_panes:
        if isinstance(pane.pane_id, bool) or not isinstance(pane.pane_id, int) or not 0 <= pane.pane_id < 16:
            raise SpecError(
                "InvalidParameter", f"UserPanes PaneId {pane.pane_id!r} is outside 0..15", "UserPanes.PaneId"
            )
        if not isinstance(pane.user_id, str) or not pane.user_id or len(pane.user_id) > MAX_USER_ID_LENGTH:
            raise SpecError(
                "InvalidParameter",
                f"UserPanes UserId {pane.user_id!r} must be 1..64 characters",
                "UserPanes.UserId",
            )
        try:
            source = SourceType(pane.source_type)
        except ValueError:
            raise SpecError(
                "InvalidParameter",
                f"UserPanes SourceType {pane.source_type!r} must be camera or shareScreen",
                "UserPanes.SourceType",
            ) from None
        if pane.pane_id in seen_panes:
            raise SpecError("InvalidParameter", f"PaneId {pane.pane_id} is pinned twice", "UserPanes.PaneId")
        if (pane.user_id, source) in seen_streams:
            raise SpecError(
                "InvalidParameter",
                f"user {pane.user_id!r} {source} is pinned to two panes",
                "UserPanes.UserId",
            )
        seen_panes.add(pane.pane_id)
        seen_streams.add((pane.user_id, source))
    return tuple(UserPane(p.pane_id, p.user_id, SourceType(p.source_type)) for p in user_panes)


def build_task_spec(
    *,
    layout_ids: Sequence[int] | None = None,
    media_encode_id: int = 27,
    profile: str | None = None,
    user_panes: Sequence[UserPane] = (),
    background_color: int = 0,
    crop_mode: int = CropMode.PAD,
    custom_layouts: Mapping[int, Layout] | None = None,
) -> TaskSpec:
    """Validate StartMPUTask-like parameters into a :class:`TaskSpec`.

    Args:
        layout_ids: ``LayoutIds``; None or empty means :data:`DEFAULT_LAYOUT_IDS` (ignored for audio only).
        media_encode_id: ``MediaEncode`` id; default 27 (1280x720, 30 fps, 2048 kbit/s).
        profile: ``TaskProfile``; None picks the smallest profile that fits the encoding and the
            largest layout.
        user_panes: ``UserPanes``.
        background_color: ``BackgroundColor``, ``R + G*256 + B*65536`` in 0..0xFFFFFF.
        crop_mode: ``CropMode``, 1 (crop) or 2 (pad).
        custom_layouts: custom layouts by id (from the store); they shadow no system layout.

    Raises:
        SpecError: with code ``InvalidLayoutID.Malformed`` (unknown id, duplicate pane counts, more
            panes than the profile allows), ``InvalidMediaEncode.Malformed`` (unknown id, above the
            TaskProfile, video with Mixed_Audio), ``InvalidTaskProfile.Malformed``,
            ``InvalidBackgroundColor.Malformed`` (not an integer in 0..0xFFFFFF) or
            ``InvalidParameter`` (CropMode, UserPanes), before anything starts.
    """
    encode = media_encode(media_encode_id)
    if encode.audio_only:
        chosen: tuple[Layout, ...] = ()
    else:
        chosen = _layouts(list(layout_ids) if layout_ids else list(DEFAULT_LAYOUT_IDS), custom_layouts or {})
    largest = max((layout.pane_count for layout in chosen), default=0)
    resolved: TaskProfile = (
        task_profile(profile) if profile is not None else smallest_profile(encode, largest)
    )
    if not resolved.allows(encode):
        raise SpecError(
            "InvalidMediaEncode.Malformed",
            f"MediaEncode {encode.id} ({encode.width}x{encode.height}) exceeds TaskProfile {resolved.name}",
            "MediaEncode",
        )
    if largest > resolved.max_video_inputs and not encode.audio_only:
        raise SpecError(
            "InvalidLayoutID.Malformed",
            f"a layout has {largest} panes; TaskProfile {resolved.name} allows {resolved.max_video_inputs}",
            "LayoutIds",
        )
    if (
        isinstance(background_color, bool)
        or not isinstance(background_color, int)
        or not 0 <= background_color <= MAX_BACKGROUND_COLOR
    ):
        raise SpecError(
            "InvalidBackgroundColor.Malformed",
            f"BackgroundColor {background_color!r} must be an integer R + G*256 + B*65536 in 0..16777215",
            "BackgroundColor",
        )
    try:
        mode = CropMode(crop_mode)
    except ValueError:
        raise SpecError(
            "InvalidParameter", f"CropMode {crop_mode!r} must be 1 (crop) or 2 (pad)", "CropMode"
        ) from None
    return TaskSpec(
        layouts=chosen,
        media_encode=encode,
        task_profile=resolved,
        user_panes=_user_panes(user_panes),
        background_color=background_color,
        crop_mode=mode,
    )
