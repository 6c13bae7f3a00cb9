"""Request and response schemas of the REST API (marshmallow, through APIFlask; they make the
OpenAPI document). Field names are StartMPUTask's in snake_case. The RPC dialect validates its
parameters with the same request schemas (:mod:`rtc_mpu.api.rpc`).

Every request schema derives from :class:`InputSchema`, which checks the characters of every string
it is given before any other validation (:mod:`rtc_mpu.spec.text_rules`): a field's rule is
``metadata[CHAR_RULE]`` (:attr:`~rtc_mpu.spec.text_rules.CharRule.NAME` when absent, so a new field is
checked too; only overlay texts are :attr:`~rtc_mpu.spec.text_rules.CharRule.TEXT`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from apiflask import Schema
from apiflask.fields import Boolean, Dict, Field, Float, Integer, List, Nested, String
from apiflask.validators import URL, Length, OneOf, Range, Regexp
from marshmallow import ValidationError, pre_load

from rtc_mpu.api.service import MAX_PAGE_NUM, MAX_PAGE_SIZE
from rtc_mpu.spec.text_rules import CharRule, char_problem, escape_for_log

#: Field metadata naming the field's :class:`~rtc_mpu.spec.text_rules.CharRule` (NAME when absent).
CHAR_RULE = "char_rule"


class FullMatch(Regexp):
    """A :class:`Regexp` that must match the whole value: marshmallow's uses ``re.match``, and a
    pattern's ``$`` also matches before a trailing newline (``"t1\\n"``). The pattern keeps its
    ``^...$`` so that the OpenAPI document shows it."""

    def __init__(self, regex: str, *, error: str) -> None:
        super().__init__(regex, error=error)
        self.pattern: re.Pattern[str] = re.compile(regex)

    def __call__(self, value: Any) -> Any:
        """``value`` if the whole of it matches.

        Raises:
            ValidationError: it does not (or is not a string).
        """
        if not isinstance(value, str) or self.pattern.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


#: TaskId: ``[A-Za-z0-9_-]``, at most 55 bytes (the vendor's MPU API, 2018-01-11).
TASK_ID = FullMatch(r"^[A-Za-z0-9_-]{1,55}$", error="must be 1-55 characters of A-Z a-z 0-9 _ -")


def is_task_id(value: object) -> bool:
    """Whether ``value`` is a TaskId (:data:`TASK_ID`, the whole string)."""
    try:
        TASK_ID(value)
    except ValidationError:
        return False
    return True


def _rule_of(field: Field[Any] | None) -> CharRule:
    rule = field.metadata.get(CHAR_RULE) if field is not None else None
    return CharRule(rule) if rule is not None else CharRule.NAME


def character_errors(value: Any, field: Field[Any] | None) -> Any:
    """marshmallow error messages for the refused characters in ``value`` (a field's raw input),
    shaped like the value (``["msg"]``, ``{0: ["msg"]}``, ``{"key": ...}``), or None when it has none.

    Strings follow ``field``'s rule (a list's items its inner field's); nested schemas are left to
    their own check; any other structure (an unknown field's) is walked with the NAME rule, mapping
    keys included.
    """
    if isinstance(value, str):
        problem = char_problem(value, _rule_of(field))
        return [problem] if problem is not None else None
    if isinstance(field, Nested) or (isinstance(field, List) and isinstance(field.inner, Nested)):
        return None  # the nested schema (an InputSchema) checks its own strings
    if isinstance(value, list):
        inner = field.inner if isinstance(field, List) else None
        found = {i: e for i, item in enumerate(value) if (e := character_errors(item, inner)) is not None}
        return found or None
    if isinstance(value, Mapping):
        return _mapping_errors(value, {})
    return None


def _mapping_errors(data: Mapping[Any, Any], fields: Mapping[str, Field[Any]]) -> dict[str, Any] | None:
    errors: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key)
        problem = char_problem(name)
        if problem is not None:
            errors[escape_for_log(name)] = [f"the parameter name {problem}"]
        elif (found := character_errors(value, fields.get(name))) is not None:
            errors[name] = found
    return errors or None


def _subclasses(cls: type[Schema]) -> list[type[Schema]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))]


def text_fields() -> frozenset[str]:
    """Names of the fields of the request schemas whose rule is TEXT (free text: ``text``)."""
    return frozenset(
        name
        for schema in _subclasses(InputSchema)
        for name, field in schema._declared_fields.items()
        if _rule_of(field) is CharRule.TEXT
    )


def first_character_problem(data: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The first string (or mapping key) with a refused character in ``data`` (the RPC dialect's
    parameters: dicts with snake_case keys, lists, strings, numbers), as (its path of keys and 0-based
    list positions, what is wrong), or None. A string follows the rule of its field name (the
    nearest key above it): TEXT for :func:`text_fields`, NAME for every other."""
    return _first_problem(data, (), text_fields())


def _first_problem(
    data: Any, path: tuple[str | int, ...], texts: frozenset[str]
) -> tuple[tuple[str | int, ...], str] | None:
    if isinstance(data, str):
        keys = [key for key in path if isinstance(key, str)]
        problem = char_problem(data, CharRule.TEXT if keys and keys[-1] in texts else CharRule.NAME)
        return (path, problem) if problem is not None else None
    items: list[tuple[str | int, Any]]
    if isinstance(data, Mapping):
        items = []
        for key, value in data.items():
            problem = char_problem(str(key))
            if problem is not None:
                return (*path, escape_for_log(str(key))), f"the parameter name {problem}"
            items.append((str(key), value))
    elif isinstance(data, list | tuple):
        items = list(enumerate(data))
    else:
        return None
    for key, value in items:
        found = _first_problem(value, (*path, key), texts)
        if found is not None:
            return found
    return None


class InputSchema(Schema):
    """Base of every request schema: before anything else, the characters of each string of the
    input (and of each key) are checked (module docstring), so no field can hold a control
    character, a lone surrogate, ... whatever validators it has."""

    @pre_load
    def refuse_characters(self, data: Any, **_: Any) -> Any:
        """``data`` unchanged.

        Raises:
            ValidationError: at the path of each string with a refused character.
        """
        if isinstance(data, Mapping):
            errors = _mapping_errors(data, self.fields)
            if errors:
                raise ValidationError(errors)
        return data


#: Normalized coordinate (fraction of the canvas or pane), 0..1.
UNIT = Range(0.0, 1.0)
#: Normalized size, (0, 1].
SIZE = Range(0.0, 1.0, min_inclusive=False)
#: What the OpenAPI document says of a SIZE field: apispec writes ``minimum: 0`` and drops the exclusion.
SIZE_DOC = {"exclusiveMinimum": 0.0}
#: Colour integer ``R + G*256 + B*65536``.
COLOR = Range(0, 0xFFFFFF)
#: ZOrder range (the vendor documents none; 0..100 is what we accept).
ZORDER = Range(0, 100)
#: Image URL: http(s) only, at most 2048 characters.
IMAGE_URL = [Length(1, 2048), URL(schemes={"http", "https"}, require_tld=False)]
#: A UserId or ChannelId: 1-64 characters.
NAME = Length(1, 64)


class RectIn(InputSchema):
    """A normalized rectangle: X, Y (top-left corner), Width, Height, and a ZOrder."""

    x = Float(load_default=0.0, validate=UNIT)
    y = Float(load_default=0.0, validate=UNIT)
    width = Float(load_default=1.0, validate=SIZE, metadata=SIZE_DOC)
    height = Float(load_default=1.0, validate=SIZE, metadata=SIZE_DOC)
    z_order = Integer(load_default=0, strict=True, validate=ZORDER)


class ImageIn(RectIn):
    """UserPanes.N.Images.M: an image in a pane (coordinates normalized to the pane)."""

    url = String(required=True, validate=IMAGE_URL)
    display = Integer(
        load_default=1,
        strict=True,
        validate=OneOf([0, 1, 2]),
        metadata={"description": "0 hidden, 1 always, 2 only while the user has no video"},
    )


class TextStyleIn(InputSchema):
    """Font and box style shared by texts and clock widgets."""

    x = Float(load_default=0.0, validate=UNIT)
    y = Float(load_default=0.0, validate=UNIT)
    z_order = Integer(load_default=0, strict=True, validate=ZORDER)
    font_type = Integer(load_default=0, strict=True, validate=Range(0, 5))
    font_size = Integer(
        load_default=24, strict=True, validate=Range(1, 72), metadata={"description": "pixels"}
    )
    font_color = Integer(load_default=0xFFFFFF, strict=True, validate=COLOR)
    alpha = Float(load_default=1.0, validate=UNIT, metadata={"description": "0 transparent .. 1 opaque"})
    border_color = Integer(load_default=0, strict=True, validate=COLOR)
    border_width = Integer(load_default=0, strict=True, validate=Range(0, 16))
    box = Integer(load_default=0, strict=True, validate=OneOf([0, 1]))
    box_color = Integer(load_default=0, strict=True, validate=COLOR)
    box_border_width = Integer(load_default=0, strict=True, validate=Range(0, 16))


class TextIn(TextStyleIn):
    """UserPanes.N.Texts.M: a text in a pane (coordinates normalized to the pane)."""

    text = String(
        required=True,
        validate=Length(1, 256),
        metadata={
            CHAR_RULE: CharRule.TEXT,
            "description": "free text; \\n starts a new line (no other control characters)",
        },
    )


class ClockWidgetIn(TextStyleIn):
    """ClockWidgets.M: a wall clock (HH:MM:SS) on the canvas."""

    time_zone = String(
        validate=Length(1, 64),
        metadata={
            "description": "IANA time zone, e.g. Asia/Shanghai (rtc-mpu's extension; default: the worker's)"
        },
    )


class BackgroundIn(RectIn):
    """Backgrounds.M: an image on the canvas (coordinates normalized to the canvas)."""

    url = String(required=True, validate=IMAGE_URL)
    display = Integer(load_default=1, strict=True, validate=OneOf([0, 1]))


class WatermarkIn(BackgroundIn):
    """Watermarks.M: an image over everything, with alpha."""

    alpha = Float(load_default=1.0, validate=UNIT, metadata={"description": "0 transparent .. 1 opaque"})


class EnhancedParamIn(InputSchema):
    """EnhancedParam: the vendor's AI effects (accepted, reported as ignored)."""

    enable_portrait_segmentation = Boolean()
    enable_virtual_conference = Boolean()
    enable_cartoon_portrait = Boolean()
    enable_voice_changer = Boolean()
    enable_user_pane_background = Boolean()
    background_path = String(validate=Length(max=2048))


class UserPaneIn(InputSchema):
    """UserPanes.N: pin a user's stream to a pane, with the pane's images and texts."""

    pane_id = Integer(required=True, strict=True, validate=Range(0, 15))
    user_id = String(required=True, validate=NAME)
    source_type = String(load_default="camera", validate=OneOf(["camera", "shareScreen"]))
    segment_type = Integer(load_default=0, strict=True, validate=OneOf([0, 1]))
    images = List(Nested(ImageIn), load_default=list, validate=Length(max=16))
    texts = List(Nested(TextIn), load_default=list, validate=Length(max=16))


class LayoutFieldsIn(InputSchema):
    """What a layout update may change (UpdateMPULayout), besides LayoutIds."""

    user_panes = List(Nested(UserPaneIn), validate=Length(max=16))
    background_color = Integer(strict=True)
    crop_mode = Integer(strict=True)
    backgrounds = List(Nested(BackgroundIn), validate=Length(max=16))
    watermarks = List(Nested(WatermarkIn), validate=Length(max=16))
    clock_widgets = List(Nested(ClockWidgetIn), validate=Length(max=16))


class MixFieldsIn(LayoutFieldsIn):
    """What StartMPUTask and UpdateMPUTask share (no load defaults: an update changes only what it names)."""

    media_encode = Integer(strict=True)
    layout_ids = List(Integer(strict=True), validate=Length(max=16))
    sub_spec_users = List(String(validate=NAME), validate=Length(max=64))
    sub_spec_audio_users = List(String(validate=NAME), validate=Length(max=64))
    sub_spec_camera_users = List(String(validate=NAME), validate=Length(max=64))
    sub_spec_share_screen_users = List(String(validate=NAME), validate=Length(max=64))
    unsub_spec_audio_users = List(String(validate=NAME), validate=Length(max=64))
    unsub_spec_camera_users = List(String(validate=NAME), validate=Length(max=64))
    unsub_spec_share_screen_users = List(String(validate=NAME), validate=Length(max=64))
    mix_mode = Integer(strict=True, validate=OneOf([0, 1]), metadata={"description": "0 relay, 1 mix"})
    stream_type = Integer(strict=True, validate=OneOf([0, 1, 2]))
    source_type = String(validate=OneOf(["camera", "shareScreen"]))


class OutputIn(InputSchema):
    """One output of a task (``kind`` says which fields apply; :mod:`rtc_mpu.spec.outputs`)."""

    kind = String(
        required=True,
        validate=Length(1, 16),
        metadata={"description": "rtmp, record, hls or snapshot (rtc is reserved)", "example": "rtmp"},
    )
    url = String(
        validate=Length(1, 2048),
        metadata={"description": "rtmp: rtmp://host[:port]/app/stream[?query], or rtmps://"},
    )
    format = String(validate=Length(1, 8), metadata={"description": "record: mp4 (default), flv or mkv"})
    template = String(
        validate=Length(1, 256),
        metadata={
            "description": "record: file path inside the task's recordings folder, with {app_id}, "
            "{task_id}, {output_id}, {start_time} (YYYYmmddTHHMMSSZ); default {start_time}_{output_id}"
        },
    )
    max_duration_seconds = Float(
        allow_none=True, metadata={"description": "record: roll over to a new file after this (>= 10 s)"}
    )
    segment_seconds = Float(metadata={"description": "hls: segment length, 1..10 s (default 2)"})
    playlist = String(validate=Length(1, 16), metadata={"description": "hls: sliding (default) or event"})
    interval_seconds = Float(metadata={"description": "snapshot: seconds between JPEGs, 1..3600 (default 5)"})


class AddOutputIn(OutputIn):
    """POST .../outputs: one output to add to a running task (the schema of :class:`OutputIn`, named
    apart so that the OpenAPI document registers each once)."""


class StartFieldsIn(MixFieldsIn):
    """StartMPUTask as the vendor's RPC dialect takes it (absent fields take the vendor's defaults)."""

    task_id = String(required=True, validate=TASK_ID)
    channel_id = String(required=True, validate=NAME)
    stream_url = String(
        required=True,
        validate=Length(1, 2048),
        metadata={
            "description": "rtmp://host[:port]/app/stream[?query], or rtmps://",
            "example": "rtmp://127.0.0.1/live/stream",
        },
    )
    task_profile = String(load_default=None, allow_none=True, validate=Length(1, 32))
    payload_type = Integer(
        strict=True, validate=OneOf([0, 1]), metadata={"description": "1: data in H.264 SEI"}
    )
    report_vad = Integer(strict=True, validate=OneOf([0, 1]))
    vad_interval = Integer(strict=True, validate=Range(100, 60000), metadata={"description": "milliseconds"})
    rtp_ext_info = Integer(strict=True, validate=OneOf([0, 1]))
    time_stamp_ref = Integer(strict=True)
    task_type = Integer(strict=True, validate=Range(0, 100))
    task_mode = Integer(
        strict=True, validate=OneOf([0, 1]), metadata={"description": "1: virtual background"}
    )
    enhanced_param = Nested(EnhancedParamIn)


class TaskIn(StartFieldsIn):
    """StartMPUTask over REST: the RPC's fields and ``outputs`` (``stream_url`` is output ``o1`` and
    may be left out when ``outputs`` has an rtmp output)."""

    stream_url = String(
        validate=Length(1, 2048),
        metadata={
            "description": "rtmp://host[:port]/app/stream[?query], or rtmps://; output o1. Optional when "
            "outputs has an rtmp output (the first one is then the StreamURL)",
            "example": "rtmp://127.0.0.1/live/stream",
        },
    )
    outputs = List(
        Nested(OutputIn),
        metadata={
            "description": "more outputs of the one encode (ids o2, o3... in order after stream_url); "
            "at most 10 outputs in all"
        },
    )


class TaskUpdateIn(MixFieldsIn):
    """UpdateMPUTask: any of these; the others keep their values. MediaEncode may only repeat the
    running value (a running stream cannot change its encoding)."""


class LayoutIn(LayoutFieldsIn):
    """UpdateMPULayout: any of these; the others keep their values."""

    layout_ids = List(Integer(strict=True), validate=Length(1, 16))


class PaneIn(InputSchema):
    """Panes.N of a custom layout (coordinates normalized to the canvas)."""

    pane_id = Integer(required=True, strict=True, validate=Range(0, 15))
    major_pane = Integer(load_default=0, strict=True, validate=OneOf([0, 1]))
    x = Float(required=True, validate=UNIT)
    y = Float(required=True, validate=UNIT)
    width = Float(required=True, validate=SIZE, metadata=SIZE_DOC)
    height = Float(required=True, validate=SIZE, metadata=SIZE_DOC)
    z_order = Integer(load_default=0, strict=True, validate=ZORDER)


class CustomLayoutIn(InputSchema):
    """CreateMPULayout."""

    name = String(required=True, validate=NAME)
    audio_mix_count = Integer(strict=True, validate=Range(1, 16))
    panes = List(Nested(PaneIn), required=True, validate=Length(1, 16))


class CustomLayoutPatchIn(InputSchema):
    """ModifyMPULayout: any of these; panes replace all panes."""

    name = String(validate=NAME)
    audio_mix_count = Integer(strict=True, validate=Range(1, 16))
    panes = List(Nested(PaneIn), validate=Length(1, 16))


class LayoutQuery(InputSchema):
    """Filters and page of a layout listing (DescribeMPULayoutInfoList)."""

    layout_id = Integer(validate=Range(1, 2**31))
    name = String(validate=Length(1, 64))
    page_num = Integer(load_default=1, validate=Range(1, MAX_PAGE_NUM))
    page_size = Integer(load_default=10, validate=Range(1, MAX_PAGE_SIZE))


class PaneOut(Schema):
    """A pane of a layout."""

    pane_id = Integer()
    major_pane = Integer()
    x = Float()
    y = Float()
    width = Float()
    height = Float()
    z_order = Integer()


class CustomLayoutOut(Schema):
    """A layout (system layouts have ids 1-13, custom ones 100 and up)."""

    layout_id = Integer()
    name = String()
    audio_mix_count = Integer()
    panes = List(Nested(PaneOut))


class LayoutListOut(Schema):
    """A page of layouts."""

    total_num = Integer()
    total_page = Integer()
    layouts = List(Nested(CustomLayoutOut))


class OutputOut(Schema):
    """An output of a task: its spec (URL redacted) and its state as the worker last reported it."""

    output_id = String(metadata={"example": "o1"})
    kind = String()
    url = String(metadata={"description": "rtmp: redacted (no stream key, no query)"})
    format = String()
    template = String()
    max_duration_seconds = Float(allow_none=True)
    segment_seconds = Float()
    playlist = String()
    interval_seconds = Float()
    state = String(
        metadata={
            "description": "connecting (before the worker's first report), connected, "
            "reconnecting, failed, ended"
        }
    )
    error = String(allow_none=True, metadata={"description": "the output's last error, or null"})
    stats = Dict(
        metadata={
            "description": "bytes_written, bitrate_bps, reconnects, dropped_video_frames, "
            "dropped_audio_blocks, files ({} before the worker's first report)"
        }
    )


class AddedOutputOut(OutputOut):
    """The output just added (as in the task's ``outputs``)."""


class RecordingOut(Schema):
    """A recording file of a task."""

    name = String(metadata={"description": "path inside the task's recordings folder"})
    size_bytes = Integer()
    duration_seconds = Float(
        allow_none=True, metadata={"description": "null while written (or never finished)"}
    )
    start_time = String(allow_none=True, metadata={"description": "ISO 8601 UTC, or null if unknown"})
    url = String(metadata={"description": "where to download it (Range requests work)"})


class RecordingListOut(Schema):
    """A task's recordings."""

    recordings = List(Nested(RecordingOut))


class TaskOut(Schema):
    """A task as GetMPUTaskStatus shows it (the StreamURL redacted)."""

    app_id = String()
    task_id = String()
    channel_id = String()
    stream_url = String(metadata={"description": "redacted: the stream key and query are never shown"})
    status = Integer(
        metadata={
            "description": "0 waiting, 1 running, 2 stopped, 3 stopped by the user, "
            "4 the channel ended, 5 CDN/network problem, 6 push URL problem"
        }
    )
    status_text = String()
    state = String(metadata={"description": "queued, starting, running, retrying, stopping, ended"})
    reason = String()
    worker = String(allow_none=True)
    restarts = Integer()
    layout_id = Integer(allow_none=True)
    layout_ids = List(Integer())
    users = List(String())
    stats = Dict()
    outputs = List(Nested(OutputOut), metadata={"description": "every output, o1 being stream_url"})
    ignored = List(String(), metadata={"description": "parameters accepted but not applied yet"})
    created_at = Float()
    updated_at = Float()
    ended_at = Float()


class TaskListOut(Schema):
    """The app's active and recently ended tasks."""

    tasks = List(Nested(TaskOut))


class ErrorOut(Schema):
    """Every error: a code, a message, the request field at fault (or null) and the request's id."""

    code = String(metadata={"description": "e.g. MissingParameter, InvalidLayoutID.Malformed, TaskExisted"})
    message = String()
    field = String(
        allow_none=True,
        metadata={
            "description": "the JSON path of the request field at fault (user_panes.0.user_id), or null"
        },
    )
    request_id = String()


class HealthOut(Schema):
    """Whether the API reaches Redis."""

    redis = String()
