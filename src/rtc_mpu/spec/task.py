"""The task spec: one immutable, validated description of a mix that the API builds and the pipeline runs.

Field names follow the field's terms; the StartMPUTask parameter each comes from is named in the
docstrings. Errors name the request field at fault by its path in the request schemas' snake_case
names (``("user_panes", 1, "pane_id")``, :data:`rtc_mpu.layouts.FieldPath`), which each API dialect
renders in its own names.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rtc_mpu.layouts import (
    Layout,
    MediaEncode,
    SpecError,
    TaskProfile,
    media_encode,
    smallest_profile,
    system_layout,
    task_profile,
)
from rtc_mpu.spec.colors import MAX_COLOR, rgb_from_color_int
from rtc_mpu.spec.overlays import Overlays, Subscriptions
from rtc_mpu.spec.streams import SourceType
from rtc_mpu.spec.text_rules import char_problem

#: Most LayoutIds a task may list (LayoutIds.N, N = 1..16).
MAX_LAYOUT_IDS = 16
#: Most UserPanes a task may list (UserPanes.N, N = 1..16).
MAX_USER_PANES = 16
#: Longest UserId accepted, in characters.
MAX_USER_ID_LENGTH = 64
#: LayoutIds used when a task names none: one system layout per user count from 1 to 9, so the
#: mix grows from a single pane to a 3x3 gallery as users join.
DEFAULT_LAYOUT_IDS = (1, 2, 5, 6, 7, 8, 9, 10, 11)
#: VadInterval bounds in milliseconds (the vendor documents no unit; we read milliseconds).
MIN_VAD_INTERVAL_MS, MAX_VAD_INTERVAL_MS = 100, 60000


class MixMode(enum.IntEnum):
    """``MixMode``: relay one user's stream, or mix the channel."""

    RELAY = 0
    MIX = 1


class StreamType(enum.IntEnum):
    """``StreamType`` of a relay: which media of the relayed user go out."""

    AUDIO_AND_VIDEO = 0
    AUDIO = 1
    VIDEO = 2


class CropMode(enum.IntEnum):
    """How a user's picture fits a pane of another aspect ratio (StartMPUTask ``CropMode``)."""

    #: Scale to fill the pane and crop what overflows.
    CROP = 1
    #: Scale to fit inside the pane; the uncovered bars show the background.
    PAD = 2


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
        overlays: images, texts and clocks (:mod:`rtc_mpu.spec.overlays`); None: none.
        subscriptions: whose streams are mixed (SubSpec*/UnsubSpec*); None: everyone's.
        mix_mode: mix the channel, or relay one user (``MixMode``).
        stream_type: what a relay sends (``StreamType``).
        relay_source: which stream of the relayed user (task-level ``SourceType``).
        report_vad: report voice activity in the status (``ReportVad``).
        vad_interval: seconds between voice-activity reports (``VadInterval``, given in ms).
        sei: carry voice activity in H.264 SEI (``PayloadType`` 1).
    """

    layouts: tuple[Layout, ...]
    media_encode: MediaEncode
    task_profile: TaskProfile
    user_panes: tuple[UserPane, ...] = field(default=())
    background_color: int = 0
    crop_mode: CropMode = CropMode.PAD
    overlays: Overlays | None = None
    subscriptions: Subscriptions | None = None
    mix_mode: MixMode = MixMode.MIX
    stream_type: StreamType = StreamType.AUDIO_AND_VIDEO
    relay_source: SourceType = SourceType.CAMERA
    report_vad: bool = False
    vad_interval: float = 1.0
    sei: bool = False

    @property
    def has_video(self) -> bool:
        """Whether the output has a video stream (not audio-only encodings, not audio relays)."""
        relay_audio = self.mix_mode is MixMode.RELAY and self.stream_type is StreamType.AUDIO
        return not self.media_encode.audio_only and not relay_audio

    @property
    def has_audio(self) -> bool:
        """Whether the output has an audio stream (not video-only relays)."""
        return not (self.mix_mode is MixMode.RELAY and self.stream_type is StreamType.VIDEO)

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
        """The background colour as 8-bit (R, G, B) (:func:`rtc_mpu.spec.colors.rgb_from_color_int`)."""
        return rgb_from_color_int(self.background_color)


def _layouts(layout_ids: Sequence[int], custom_layouts: Mapping[int, Layout]) -> tuple[Layout, ...]:
    if len(layout_ids) > MAX_LAYOUT_IDS:
        raise SpecError("InvalidLayoutID.Malformed", f"at most {MAX_LAYOUT_IDS} LayoutIds", ("layout_ids",))
    result = []
    for index, layout_id in enumerate(layout_ids):
        if isinstance(layout_id, bool) or not isinstance(layout_id, int):
            raise SpecError(
                "InvalidLayoutID.Malformed",
                f"LayoutId {layout_id!r} is not an integer",
                ("layout_ids", index),
            )
        try:
            found = custom_layouts[layout_id] if layout_id in custom_layouts else system_layout(layout_id)
        except SpecError as exc:
            raise SpecError(exc.code, exc.message, ("layout_ids", index)) from None
        result.append(found)
    if len({layout.id for layout in result}) != len(result):
        raise SpecError("InvalidLayoutID.Malformed", "LayoutIds lists a layout twice", ("layout_ids",))
    counts = [layout.pane_count for layout in result]
    for layout in result:
        if counts.count(layout.pane_count) > 1:
            same = [lay.id for lay in result if lay.pane_count == layout.pane_count]
            raise SpecError(
                "InvalidLayoutID.Malformed",
                f"LayoutIds {same} have the same pane count ({layout.pane_count}); "
                "the task could not choose between them",
                ("layout_ids",),
            )
    return tuple(result)


def _user_panes(user_panes: Sequence[UserPane]) -> tuple[UserPane, ...]:
    """Validate the pinned panes; errors name the pane's field by its position in ``user_panes``
    (the request's order)."""
    if len(user_panes) > MAX_USER_PANES:
        raise SpecError("InvalidParameter", f"at most {MAX_USER_PANES} UserPanes", ("user_panes",))
    seen_panes: set[int] = set()
    seen_streams: set[tuple[str, SourceType]] = set()
    for index, pane in enumerate(user_panes):
        if isinstance(pane.pane_id, bool) or not isinstance(pane.pane_id, int) or not 0 <= pane.pane_id < 16:
            raise SpecError(
                "InvalidParameter",
                f"PaneId {pane.pane_id!r} is outside 0..15",
                ("user_panes", index, "pane_id"),
            )
        if not isinstance(pane.user_id, str) or not pane.user_id or len(pane.user_id) > MAX_USER_ID_LENGTH:
            raise SpecError(
                "InvalidParameter",
                f"UserId {pane.user_id!r} must be 1..64 characters",
                ("user_panes", index, "user_id"),
            )
        problem = char_problem(pane.user_id)
        if problem is not None:
            raise SpecError("InvalidParameter", f"UserId {problem}", ("user_panes", index, "user_id"))
        try:
            source = SourceType(pane.source_type)
        except ValueError:
            raise SpecError(
                "InvalidParameter",
                f"SourceType {pane.source_type!r} must be camera or shareScreen",
                ("user_panes", index, "source_type"),
            ) from None
        if pane.pane_id in seen_panes:
            raise SpecError(
                "InvalidParameter", f"PaneId {pane.pane_id} is pinned twice", ("user_panes", index, "pane_id")
            )
        if (pane.user_id, source) in seen_streams:
            raise SpecError(
                "InvalidParameter",
                f"user {pane.user_id!r} {source} is pinned to two panes",
                ("user_panes", index, "user_id"),
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
    overlays: Overlays | None = None,
    subscriptions: Subscriptions | None = None,
    mix_mode: int = MixMode.MIX,
    stream_type: int = StreamType.AUDIO_AND_VIDEO,
    relay_source: str = SourceType.CAMERA,
    report_vad: bool = False,
    vad_interval_ms: int | None = None,
    payload_type: int = 0,
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
        overlays, subscriptions: validated by :mod:`rtc_mpu.spec.overlays`.
        mix_mode: ``MixMode`` 0 (relay) or 1 (mix); a relay draws one stream over the whole canvas.
        stream_type: ``StreamType`` of a relay: 0 audio and video, 1 audio, 2 video.
        relay_source: ``SourceType`` of the relayed stream (camera or shareScreen).
        report_vad: ``ReportVad``.
        vad_interval_ms: ``VadInterval`` in milliseconds (100..60000; None: 1000).
        payload_type: ``PayloadType``: 1 carries voice activity in H.264 SEI (needs video).

    Raises:
        SpecError: with code ``InvalidLayoutID.Malformed`` (unknown id, duplicate pane counts, more
            panes than the profile allows), ``InvalidMediaEncode.Malformed`` (unknown id, above the
            TaskProfile, video with Mixed_Audio), ``InvalidTaskProfile.Malformed``,
            ``InvalidBackgroundColor.Malformed`` (not an integer in 0..0xFFFFFF) or
            ``InvalidParameter`` (CropMode, UserPanes: also a UserId with a character that
            :mod:`rtc_mpu.spec.text_rules` refuses), before anything starts.
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
            ("media_encode",),
        )
    if largest > resolved.max_video_inputs and not encode.audio_only:
        raise SpecError(
            "InvalidLayoutID.Malformed",
            f"a layout has {largest} panes; TaskProfile {resolved.name} allows {resolved.max_video_inputs}",
            ("layout_ids",),
        )
    if (
        isinstance(background_color, bool)
        or not isinstance(background_color, int)
        or not 0 <= background_color <= MAX_COLOR
    ):
        raise SpecError(
            "InvalidBackgroundColor.Malformed",
            f"BackgroundColor {background_color!r} must be an integer R + G*256 + B*65536 in 0..16777215",
            ("background_color",),
        )
    try:
        mode = CropMode(crop_mode)
    except ValueError:
        raise SpecError(
            "InvalidParameter", f"CropMode {crop_mode!r} must be 1 (crop) or 2 (pad)", ("crop_mode",)
        ) from None
    mode_, stream_type_, relay_source_, vad_interval, sei = _mix_options(
        mix_mode, stream_type, relay_source, vad_interval_ms, payload_type
    )
    if mode_ is MixMode.RELAY and not encode.audio_only:
        chosen = (system_layout(1),)  # one stream over the whole canvas
    return TaskSpec(
        layouts=chosen,
        media_encode=encode,
        task_profile=resolved,
        user_panes=_user_panes(user_panes),
        background_color=background_color,
        crop_mode=mode,
        overlays=overlays,
        subscriptions=subscriptions,
        report_vad=bool(report_vad),
        mix_mode=mode_,
        stream_type=stream_type_,
        relay_source=relay_source_,
        vad_interval=vad_interval,
        sei=sei,
    )


def _mix_options(
    mix_mode: int, stream_type: int, relay_source: str, vad_interval_ms: int | None, payload_type: int
) -> tuple[MixMode, StreamType, SourceType, float, bool]:
    """Validate MixMode, StreamType, SourceType, VadInterval (ms) and PayloadType into the mode, the
    stream type, the relayed source, the VAD interval in seconds and whether SEI is carried.

    Raises:
        SpecError: InvalidParameter naming the parameter.
    """
    try:
        mode = MixMode(mix_mode)
    except ValueError:
        raise SpecError(
            "InvalidParameter", f"MixMode {mix_mode!r} must be 0 (relay) or 1 (mix)", ("mix_mode",)
        ) from None
    try:
        kind = StreamType(stream_type)
    except ValueError:
        raise SpecError(
            "InvalidParameter", f"StreamType {stream_type!r} must be 0, 1 or 2", ("stream_type",)
        ) from None
    try:
        source = SourceType(relay_source)
    except ValueError:
        raise SpecError(
            "InvalidParameter", f"SourceType {relay_source!r} must be camera or shareScreen", ("source_type",)
        ) from None
    interval = 1000 if vad_interval_ms is None else vad_interval_ms
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int)
        or not MIN_VAD_INTERVAL_MS <= interval <= MAX_VAD_INTERVAL_MS
    ):
        raise SpecError(
            "InvalidParameter",
            f"VadInterval must be {MIN_VAD_INTERVAL_MS}..{MAX_VAD_INTERVAL_MS} milliseconds",
            ("vad_interval",),
        )
    if payload_type not in (0, 1):
        raise SpecError("InvalidParameter", "PayloadType must be 0 or 1", ("payload_type",))
    return mode, kind, source, interval / 1000, payload_type == 1
