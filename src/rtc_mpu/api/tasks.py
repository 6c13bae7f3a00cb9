"""The tasks resource over JSON REST: StartMPUTask, GetMPUTaskStatus, UpdateMPULayout, UpdateMPUTask,
StopMPUTask (the same service as the RPC dialect, :mod:`rtc_mpu.api.service`)."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import current_app, request

from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.errors import api_error
from rtc_mpu.api.schemas import (
    TASK_ID,
    HealthOut,
    LayoutIn,
    TaskIn,
    TaskListOut,
    TaskOut,
    TaskUpdateIn,
    is_task_id,
)
from rtc_mpu.api.service import MixService
from rtc_mpu.workers.model import TaskRecord
from rtc_mpu.workers.task_view import output_view, task_view

bp = APIBlueprint("tasks", __name__, url_prefix="/v1", tag="Tasks")

#: Error answers each kind of operation may give besides 403/404 (documented in the OpenAPI document).
UNAVAILABLE = {503: "Redis is unavailable (ServiceUnavailable)"}
#: Answers of the request limits (rtc_mpu.api.ratelimit, rtc_mpu.api.app), possible for every authenticated
#: call.
LIMIT_ERRORS = {
    414: "Query string longer than 32 KiB (RequestURITooLong)",
    429: "Too many requests for this access key (Throttling.User); Retry-After gives the seconds to wait",
}
READ_ERRORS = {
    400: "Malformed AppId or TaskId (InvalidParameter, field app_id or task_id)",
    **UNAVAILABLE,
    **LIMIT_ERRORS,
}
WRITE_ERRORS = {
    **READ_ERRORS,
    400: "Missing or invalid parameter (the code says what is wrong; field is its JSON path), or a JSON "
    "body of more than 2000 values or nested deeper than 8 (InvalidParameter)",
    413: "Request body larger than 64 KiB (RequestTooLarge)",
}
START_ERRORS = {
    **WRITE_ERRORS,
    409: "TaskExisted, StreamURL.InUse or StreamURL.CoolingDown: the field is the first refused output's"
    " URL (stream_url or outputs.N.url), the message names every refused output (its output_id and URL,"
    " redacted) and the seconds left; no lease is taken",
}
UPDATE_ERRORS = {**WRITE_ERRORS, 409: "The task is stopping (InvalidTask.Stopping)"}


def guard_task_id() -> None:
    """``before_request``, after :func:`rtc_mpu.api.auth.guard_app_request`: a TaskId in the path has the
    TaskId's form (the same rule as ``task_id`` in a body; no control characters, no trailing newline).

    Raises:
        HTTPError: 400 InvalidParameter, field ``task_id``.
    """
    task_id = (request.view_args or {}).get("task_id")
    if task_id is not None and not is_task_id(task_id):
        raise api_error(400, "InvalidParameter", f"task_id {TASK_ID.error}", "task_id")


bp.before_request(guard_app_request)
bp.before_request(guard_task_id)


def service() -> MixService:
    """The service layer of this app."""
    mix_service: MixService = current_app.extensions["mpu"].service
    return mix_service


def output_out(record: TaskRecord) -> list[dict[str, Any]]:
    """The task's outputs as the API shows them (:func:`rtc_mpu.workers.task_view.output_view`)."""
    return output_view(record)


def task_out(record: TaskRecord) -> dict[str, Any]:
    """A record as the API shows it (:func:`rtc_mpu.workers.task_view.task_view`: URLs redacted)."""
    return task_view(record)


@bp.post("/apps/<app_id>/tasks")
@bp.input(TaskIn, arg_name="body")
@bp.output(TaskOut, status_code=201)
@bp.doc(summary="Start a mix task (StartMPUTask)", security="BasicAuth", responses=START_ERRORS)
def start_task(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return task_out(service().start_task(app_id, body))


@bp.get("/apps/<app_id>/tasks")
@bp.output(TaskListOut)
@bp.doc(summary="List the app's tasks", security="BasicAuth", responses=READ_ERRORS)
def list_tasks(app_id: str) -> dict[str, Any]:
    return {"tasks": [task_out(r) for r in service().list_tasks(app_id)]}


@bp.get("/apps/<app_id>/tasks/<task_id>")
@bp.output(TaskOut)
@bp.doc(summary="A task's status (GetMPUTaskStatus)", security="BasicAuth", responses=READ_ERRORS)
def get_task(app_id: str, task_id: str) -> dict[str, Any]:
    return task_out(service().get_task(app_id, task_id))


@bp.patch("/apps/<app_id>/tasks/<task_id>/layout")
@bp.input(LayoutIn, arg_name="body")
@bp.output(TaskOut)
@bp.doc(
    summary="Change the layout of a running task (UpdateMPULayout)",
    security="BasicAuth",
    responses=UPDATE_ERRORS,
)
def update_layout(app_id: str, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return task_out(service().update_task(app_id, task_id, body))


@bp.patch("/apps/<app_id>/tasks/<task_id>")
@bp.input(TaskUpdateIn, arg_name="body")
@bp.output(TaskOut)
@bp.doc(
    summary="Change a running task's layouts, panes, overlays or subscriptions (UpdateMPUTask)",
    security="BasicAuth",
    responses=UPDATE_ERRORS,
)
def update_task(app_id: str, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return task_out(service().update_task(app_id, task_id, body))


@bp.delete("/apps/<app_id>/tasks/<task_id>")
@bp.output(TaskOut)
@bp.doc(summary="Stop a task (StopMPUTask)", security="BasicAuth", responses=READ_ERRORS)
def stop_task(app_id: str, task_id: str) -> dict[str, Any]:
    return task_out(service().stop_task(app_id, task_id))


@bp.get("/health")
@bp.output(HealthOut)
@bp.doc(summary="Whether the API reaches Redis (no authentication)", responses=UNAVAILABLE)
def health() -> dict[str, Any]:
    service().ping()
    return {"redis": "ok"}
