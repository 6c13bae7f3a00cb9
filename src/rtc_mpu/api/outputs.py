"""A task's outputs, recordings and snapshot over JSON REST (issue 13): add and remove outputs of a
running task, list / download (Range) / delete its recording files, its latest JPEG snapshot.

Same guards as the tasks resource (:func:`rtc_mpu.api.auth.guard_app_request`: any key allowed for the
AppId; :func:`rtc_mpu.api.tasks.guard_task_id`). Recordings are read from the recordings directory
(:mod:`rtc_mpu.api.recordings`), so they are listed and served after the task's record expired.
"""

from __future__ import annotations

import email.utils
from typing import Any

from apiflask import APIBlueprint
from apiflask.schemas import FileSchema
from flask import Response, current_app, send_file

from rtc_mpu.api import recordings
from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.errors import api_error
from rtc_mpu.api.schemas import AddedOutputOut, AddOutputIn, RecordingListOut
from rtc_mpu.api.service import MixService, ServiceError
from rtc_mpu.api.tasks import READ_ERRORS, WRITE_ERRORS, guard_task_id, output_out, service
from rtc_mpu.spec.text_rules import char_problem

bp = APIBlueprint("outputs", __name__, url_prefix="/v1", tag="Outputs and recordings")
bp.before_request(guard_app_request)
bp.before_request(guard_task_id)

ADD_ERRORS = {
    **WRITE_ERRORS,
    409: "InvalidTask.Stopping, StreamURL.InUse or StreamURL.CoolingDown (field url, the message shows it"
    " redacted; only this output is refused, the task's other outputs are unchanged)",
}
REMOVE_ERRORS = {
    **READ_ERRORS,
    409: "InvalidTask.Stopping, or InvalidOutput.Required (the task's last rtmp output)",
}


def _check_path_text(name: str, value: str) -> None:
    """A path parameter holds no refused character (:mod:`rtc_mpu.spec.text_rules`).

    Raises:
        HTTPError: 400 InvalidParameter with the parameter as field.
    """
    problem = char_problem(value)
    if problem is not None:
        raise api_error(400, "InvalidParameter", f"{name} {problem}", name)


def _recordings_settings() -> tuple[str, float]:
    services = current_app.extensions["mpu"]
    return services.recordings_dir, services.recordings_retention_days


@bp.post("/apps/<app_id>/tasks/<task_id>/outputs")
@bp.input(AddOutputIn, arg_name="body")
@bp.output(AddedOutputOut, status_code=201)
@bp.doc(
    summary="Add an output to a running task (effective at the worker's next heartbeat)",
    security="BasicAuth",
    responses=ADD_ERRORS,
)
def add_output(app_id: str, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
    record, output_id = service().add_output(app_id, task_id, body)
    return next(o for o in output_out(record) if o["output_id"] == output_id)


@bp.delete("/apps/<app_id>/tasks/<task_id>/outputs/<output_id>")
@bp.output({}, status_code=204)
@bp.doc(
    summary="Remove an output of a running task (its URL cools down 10 s)",
    security="BasicAuth",
    responses=REMOVE_ERRORS,
)
def remove_output(app_id: str, task_id: str, output_id: str) -> tuple[str, int]:
    _check_path_text("output_id", output_id)
    service().remove_output(app_id, task_id, output_id)
    return "", 204


@bp.get("/apps/<app_id>/tasks/<task_id>/recordings")
@bp.output(RecordingListOut)
@bp.doc(
    summary="List a task's recording files (also after the task ended)",
    security="BasicAuth",
    responses=READ_ERRORS,
)
def list_recordings(app_id: str, task_id: str) -> dict[str, Any]:
    root, retention = _recordings_settings()
    try:
        found = recordings.list_recordings(root, app_id, task_id, retention)
    except OSError:
        raise ServiceError(503, "ServiceUnavailable", "the recordings directory cannot be read") from None
    return {"recordings": [r.to_dict(app_id, task_id) for r in found]}


@bp.get("/apps/<app_id>/tasks/<task_id>/recordings/<path:name>")
@bp.output(FileSchema(), content_type="application/octet-stream", description="the file (Range supported)")
@bp.doc(
    summary="Download a recording (Range requests give 206)",
    security="BasicAuth",
    responses={**READ_ERRORS, 404: "No such recording (InvalidRecording.NotFound)"},
)
def get_recording(app_id: str, task_id: str, name: str) -> Response:
    _check_path_text("name", name)
    root, retention = _recordings_settings()
    path = recordings.resolve(root, app_id, task_id, name)
    if recordings.is_expired(path, retention):
        recordings.delete_file(path)
        raise ServiceError(404, "InvalidRecording.NotFound", f"no recording {name!r} for this task")
    mimetype = recordings.MIME_TYPES.get(path.suffix, "application/octet-stream")
    return send_file(path, mimetype=mimetype, conditional=True, download_name=path.name)


@bp.delete("/apps/<app_id>/tasks/<task_id>/recordings/<path:name>")
@bp.output({}, status_code=204)
@bp.doc(
    summary="Delete a recording (and its sidecar)",
    security="BasicAuth",
    responses={**READ_ERRORS, 404: "No such recording (InvalidRecording.NotFound)"},
)
def delete_recording(app_id: str, task_id: str, name: str) -> tuple[str, int]:
    _check_path_text("name", name)
    root, _ = _recordings_settings()
    recordings.delete_file(recordings.resolve(root, app_id, task_id, name))
    return "", 204


@bp.get("/apps/<app_id>/tasks/<task_id>/snapshot.jpg")
@bp.output(FileSchema(), content_type="image/jpeg", description="the latest snapshot")
@bp.doc(
    summary="The latest JPEG snapshot of a task with a snapshot output",
    security="BasicAuth",
    responses={**READ_ERRORS, 404: "No snapshot yet, or no snapshot output (InvalidSnapshot.NotReady)"},
)
def snapshot(app_id: str, task_id: str) -> Response:
    mix: MixService = service()
    jpeg, taken_at = mix.snapshot(app_id, task_id)
    response = Response(jpeg, mimetype="image/jpeg")
    response.headers["Last-Modified"] = email.utils.formatdate(taken_at, usegmt=True)
    response.headers["X-Snapshot-Taken-At"] = f"{taken_at:.3f}"
    response.headers["Cache-Control"] = "no-cache"
    return response
