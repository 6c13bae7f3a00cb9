"""Request and response schemas of the REST API (marshmallow, through APIFlask; they make the
OpenAPI document). Field names are StartMPUTask's in snake_case."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Dict, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range, Regexp

#: TaskId: ``[A-Za-z0-9_-]``, at most 55 bytes (shared/reference/mpu-api.md).
TASK_ID = Regexp(r"^[A-Za-z0-9_-]{1,55}$", error="must be 1-55 characters of A-Z a-z 0-9 _ -")


class UserPaneIn(Schema):
    """UserPanes.N: pin a user's stream to a pane."""

    pane_id = Integer(required=True, strict=True, validate=Range(0, 15))
    user_id = String(required=True, validate=Length(1, 64))
    source_type = String(load_default="camera", validate=OneOf(["camera", "shareScreen"]))


class TaskIn(Schema):
    """StartMPUTask."""

    task_id = String(required=True, validate=TASK_ID)
    channel_id = String(required=True, validate=Length(1, 64))
    stream_url = String(required=True, validate=Length(1, 2048))
    task_profile = String(load_default=None, allow_none=True, validate=Length(1, 32))
    media_encode = Integer(load_default=27, strict=True)
    layout_ids = List(Integer(strict=True), load_default=list, validate=Length(max=16))
    user_panes = List(Nested(UserPaneIn), load_default=list, validate=Length(max=16))
    background_color = Integer(load_default=0, strict=True)
    crop_mode = Integer(load_default=2, strict=True)
    sub_spec_users = List(String(validate=Length(1, 64)), load_default=list, validate=Length(max=64))
    sub_spec_audio_users = List(String(validate=Length(1, 64)), load_default=list, validate=Length(max=64))


class LayoutIn(Schema):
    """UpdateMPULayout: any of these; the others keep their values."""

    layout_ids = List(Integer(strict=True), validate=Length(1, 16))
    user_panes = List(Nested(UserPaneIn), validate=Length(max=16))
    background_color = Integer(strict=True)
    crop_mode = Integer(strict=True)


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
