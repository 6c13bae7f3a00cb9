"""The tasks resource: StartMPUTask, GetMPUTaskStatus, UpdateMPULayout, StopMPUTask over JSON REST."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from apiflask import APIBlueprint
from flask import current_app, request

from api.auth import authenticate
from api.errors import api_error
from api.schemas import HealthOut, LayoutIn, TaskIn, TaskListOut, TaskOut
from layouts import SpecError
from mixer.urls import redact_url, stream_url_key
from workers.model import StoreError, StreamURLInUseError, TaskParams, TaskRecord, TaskStatus

bp = APIBlueprint("tasks", __name__, url_prefix="/v1", tag="Tasks")

STATUS_TEXT = {
    TaskStatus.WAITING: "waiting for the channel",
    TaskStatus.RUNNING: "running",
    TaskStatus.STOPPED: "stopped",
    TaskStatus.STOPPED_BY_USER: "stopped by the user",
    TaskStatus.CHANNEL_ENDED: "stopped: the channel ended",
    TaskStatus.NETWORK_PROBLEM: "CDN/network problem",
    TaskStatus.PUSH_URL_PROBLEM: "push URL problem",
}
#: AppIds: no ``:`` (a channel's Janus room is ``"<AppId>:<ChannelId>"``, which must name one app).
APP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Error answers each kind of operation may give besides 403/404 (documented in the OpenAPI document).
READ_ERRORS = {503: "Redis is unavailable (ServiceUnavailable)"}
WRITE_ERRORS = {
    400: "Missing or invalid parameter (the code names it; field is the parameter)",
    413: "Request body larger than 64 KiB (RequestTooLarge)",
    **READ_ERRORS,
}
START_ERRORS = {
    **WRITE_ERRORS,
    409: "TaskExisted, StreamURL.InUse or StreamURL.CoolingDown (the message gives the seconds left)",
}


@bp.before_request
def _guard() -> None:
    """Before the body is even parsed: the credentials, then the AppId, then a JSON object body."""
    services = current_app.extensions["mpu"]
    app_id = (request.view_args or {}).get("app_id")
    if app_id is None:  # /v1/health: no authentication
        return
    if not services.auth_disabled:
        authenticate(services.access_keys, app_id)
    if not APP_ID.fullmatch(app_id):
        raise api_error(400, "InvalidParameter", "AppId must be 1-64 characters of A-Z a-z 0-9 _ -", "app_id")
    if request.method in ("POST", "PATCH") and not isinstance(request.get_json(silent=True), dict):
        raise api_error(
            400, "InvalidParameter", "the body must be a JSON object (Content-Type: application/json)"
        )


def _store() -> Any:
    return current_app.extensions["mpu"].store()


def _call(method: str, *args: Any) -> Any:
    """Call the store, turning its errors into API errors (404, 409, 503...)."""
    try:
        return getattr(_store(), method)(*args)
    except StreamURLInUseError as exc:  # the store names the holder: maybe another AppId's task
        raise api_error(exc.http_status, exc.code, "the StreamURL is in use by another active task") from None
    except StoreError as exc:
        raise api_error(exc.http_status, exc.code, exc.message) from None


def _validate(params: TaskParams) -> None:
    try:
        params.to_spec()
    except SpecError as exc:
        raise api_error(400, exc.code, exc.message, exc.field) from None


def task_out(record: TaskRecord) -> dict[str, Any]:
    """A record as the API shows it (a dead worker's task says so)."""
    record = record.as_seen(getattr(_store(), "lease_seconds", 15.0))
    return {
        "app_id": record.app_id,
        "task_id": record.task_id,
        "channel_id": record.params.channel_id,
        "stream_url": redact_url(record.params.stream_url),
        "status": int(record.status),
        "status_text": STATUS_TEXT[record.status],
        "state": str(record.state),
        "reason": record.reason,
        "worker": record.worker,
        "restarts": record.restarts,
        "layout_id": record.layout_id,
        "layout_ids": list(record.params.layout_ids),
        "users": record.users,
        "stats": record.stats,
        "ignored": record.params.ignored(),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "ended_at": record.ended_at,
    }


@bp.post("/apps/<app_id>/tasks")
@bp.input(TaskIn, arg_name="body")
@bp.output(TaskOut, status_code=201)
@bp.doc(summary="Start a mix task (StartMPUTask)", security="BasicAuth", responses=START_ERRORS)
def start_task(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
    params = TaskParams(
        channel_id=body["channel_id"],
        stream_url=body["stream_url"],
        media_encode=body["media_encode"],
        task_profile=body["task_profile"],
        layout_ids=tuple(body["layout_ids"]),
        user_panes=tuple(body["user_panes"]),
        background_color=body["background_color"],
        crop_mode=body["crop_mode"],
        sub_spec_users=tuple(body["sub_spec_users"]),
        sub_spec_audio_users=tuple(body["sub_spec_audio_users"]),
    )
    _validate(params)
    record = TaskRecord(app_id, body["task_id"], params, stream_url_key(params.stream_url))
    stored = _call("start_task", record)
    try:
        current_app.extensions["mpu"].enqueue(app_id, stored.task_id)
    except Exception as exc:
        current_app.logger.error("cannot enqueue %s/%s: %s", app_id, stored.task_id, exc.__class__.__name__)
        _call("request_stop", app_id, stored.task_id)  # never a half-started task
        raise api_error(
            503, "ServiceUnavailable", "the task queue is unavailable; nothing was started"
        ) from None
    return task_out(stored)


@bp.get("/apps/<app_id>/tasks")
@bp.output(TaskListOut)
@bp.doc(summary="List the app's tasks", security="BasicAuth", responses=READ_ERRORS)
def list_tasks(app_id: str) -> dict[str, Any]:
    return {"tasks": [task_out(r) for r in _call("list_tasks", app_id)]}


@bp.get("/apps/<app_id>/tasks/<task_id>")
@bp.output(TaskOut)
@bp.doc(summary="A task's status (GetMPUTaskStatus)", security="BasicAuth", responses=READ_ERRORS)
def get_task(app_id: str, task_id: str) -> dict[str, Any]:
    return task_out(_call("get_task", app_id, task_id))


@bp.patch("/apps/<app_id>/tasks/<task_id>/layout")
@bp.input(LayoutIn, arg_name="body")
@bp.output(TaskOut)
@bp.doc(
    summary="Change the layout of a running task (UpdateMPULayout)",
    security="BasicAuth",
    responses=WRITE_ERRORS,
)
def update_layout(app_id: str, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    if not body:
        raise api_error(
            400,
            "MissingParameter",
            "give at least one of layout_ids, user_panes, background_color, crop_mode",
            "layout_ids",
        )
    record: TaskRecord = _call("get_task", app_id, task_id)
    changes: dict[str, Any] = {}
    if "layout_ids" in body:
        changes["layout_ids"] = tuple(body["layout_ids"])
    if "user_panes" in body:
        changes["user_panes"] = tuple(body["user_panes"])
    for name in ("background_color", "crop_mode"):
        if name in body:
            changes[name] = body[name]
    params = replace(record.params, **changes)
    _validate(params)
    return task_out(_call("update_params", app_id, task_id, params))


@bp.delete("/apps/<app_id>/tasks/<task_id>")
@bp.output(TaskOut)
@bp.doc(summary="Stop a task (StopMPUTask)", security="BasicAuth", responses=READ_ERRORS)
def stop_task(app_id: str, task_id: str) -> dict[str, Any]:
    return task_out(_call("request_stop", app_id, task_id))


@bp.get("/health")
@bp.output(HealthOut)
@bp.doc(summary="Whether the API reaches Redis (no authentication)", responses=READ_ERRORS)
def health() -> dict[str, Any]:
    _call("ping")
    return {"redis": "ok"}
