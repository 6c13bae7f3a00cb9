"""Request and response schemas of the REST API (marshmallow, through APIFlask; they make the
OpenAPI document). Field names are StartMPUTask's in snake_case."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Dict, Float, Integer, List, Nested, String
from apiflask.validators import URL, Length, OneOf, Range, Regexp

#: TaskId: ``[A-Za-z0-9_-]``, at most 55 bytes (shared/reference/mpu-api.md).
TASK_ID = Regexp(r"^[A-Za-z0-9_-]{1,55}$", error="must be 1-55 characters of A-Z a-z 0-9 _ -")


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


class RectIn(Schema):
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


class TextStyleIn(Schema):
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

    text = String(required=True, validate=Length(1, 256))


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


class EnhancedParamIn(Schema):
    """EnhancedParam: the vendor's AI effects (accepted, reported as ignored)."""

    enable_portrait_segmentation = Boolean()
    enable_virtual_conference = Boolean()
    enable_cartoon_portrait = Boolean()
    enable_voice_changer = Boolean()
    enable_user_pane_background = Boolean()
    background_path = String(validate=Length(max=2048))


class UserPaneIn(Schema):
    """UserPanes.N: pin a user's stream to a pane, with the pane's images and texts."""

    pane_id = Integer(required=True, strict=True, validate=Range(0, 15))
    user_id = String(required=True, validate=NAME)
    source_type = String(load_default="camera", validate=OneOf(["camera", "shareScreen"]))
    segment_type = Integer(load_default=0, strict=True, validate=OneOf([0, 1]))
    images = List(Nested(ImageIn), load_default=list, validate=Length(max=16))
    texts = List(Nested(TextIn), load_default=list, validate=Length(max=16))


class LayoutFieldsIn(Schema):
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


class TaskIn(MixFieldsIn):
    """StartMPUTask (absent fields take the vendor's defaults)."""

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


class TaskUpdateIn(MixFieldsIn):
    """UpdateMPUTask: any of these; the others keep their values. MediaEncode may only repeat the
    running value (a running stream cannot change its encoding)."""


class LayoutIn(LayoutFieldsIn):
    """UpdateMPULayout: any of these; the others keep their values."""

    layout_ids = List(Integer(strict=True), validate=Length(1, 16))


class PaneIn(Schema):
    """Panes.N of a custom layout (coordinates normalized to the canvas)."""

    pane_id = Integer(required=True, strict=True, validate=Range(0, 15))
    major_pane = Integer(load_default=0, strict=True, validate=OneOf([0, 1]))
    x = Float(required=True, validate=UNIT)
    y = Float(required=True, validate=UNIT)
    width = Float(required=True, validate=SIZE, metadata=SIZE_DOC)
    height = Float(required=True, validate=SIZE, metadata=SIZE_DOC)
    z_order = Integer(load_default=0, strict=True, validate=ZORDER)


class CustomLayoutIn(Schema):
    """CreateMPULayout."""

    name = String(required=True, validate=NAME)
    audio_mix_count = Integer(strict=True, validate=Range(1, 16))
    panes = List(Nested(PaneIn), required=True, validate=Length(1, 16))


class CustomLayoutPatchIn(Schema):
    """ModifyMPULayout: any of these; panes replace all panes."""

    name = String(validate=NAME)
    audio_mix_count = Integer(strict=True, validate=Range(1, 16))
    panes = List(Nested(PaneIn), validate=Length(1, 16))


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
    field = String(allow_none=True)
    request_id = String()


class HealthOut(Schema):
    """Whether the API reaches Redis."""

    redis = String()
