"""``/v1/apps/{app_id}/ingests``: stream ingests (issue 19), a media URL played into a channel.

``POST`` (201 with the ingest; 409 ``InvalidIngest.Exists`` for an active ingest of that id, 409
``InvalidIngest.UserInUse`` when the UserId publishes in the channel), ``GET`` (list), ``GET /{id}``,
``PATCH /{id}`` (``state`` playing|paused, ``position_seconds``, ``volume``: the worker applies it
within about 50 ms), ``DELETE /{id}`` (stops it; 200 with the ingest). Bodies are checked by
:mod:`rtc_mpu.spec.ingest`; the records live in :mod:`rtc_mpu.workers.ingest_store`; a worker runs
the ingest (:mod:`rtc_mpu.workers.ingest_runner`).

With channel tokens configured (``MPU_TOKEN_SECRET``) the API makes sure the channel's room exists
and that the UserId is not already publishing in it before it queues the ingest (Janus answers in
the request); without, the worker finds out and the ingest fails with that reason.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Float, Integer, List, Nested, String
from flask import current_app, request

from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.errors import api_error
from rtc_mpu.api.janus_rooms import JanusRefusedError, JanusRooms, JanusUnavailableError
from rtc_mpu.api.schemas import InputSchema
from rtc_mpu.api.tasks import LIMIT_ERRORS
from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.ingest import IngestSpec, check_ingest_id, parse_control, parse_ingest
from rtc_mpu.spec.tokens import room_name
from rtc_mpu.workers.ingest_store import IngestError, IngestRecord, IngestStore

log = logging.getLogger(__name__)

bp = APIBlueprint("ingests", __name__, url_prefix="/v1", tag="Stream ingest")


def guard_ingest_id() -> None:
    """``before_request``, after :func:`rtc_mpu.api.auth.guard_app_request`: an ingest id in the path
    has the ingest id's form (the TaskId rule).

    Raises:
        HTTPError: 400 InvalidParameter, field ``ingest_id``.
    """
    ingest_id = (request.view_args or {}).get("ingest_id")
    if ingest_id is not None:
        try:
            check_ingest_id(ingest_id)
        except SpecError as exc:
            raise api_error(400, "InvalidParameter", exc.message, "ingest_id") from None


bp.before_request(guard_app_request)
bp.before_request(guard_ingest_id)

#: Errors every ingest route may answer (documented in the OpenAPI document).
COMMON_ERRORS = {
    400: "Malformed AppId or ingest id (InvalidParameter, field app_id or ingest_id); an invalid body "
    "(InvalidParameter, MissingParameter, InvalidIngest.Url, InvalidIngest.Id, with the field)",
    **LIMIT_ERRORS,
    503: "ServiceUnavailable (Redis or the task queue), Janus.Unavailable or Janus.Refused (POST with "
    "channel tokens on: the room and the UserId are checked in Janus)",
}
CREATE_ERRORS = {
    **COMMON_ERRORS,
    409: "InvalidIngest.Exists (an active ingest has this ingest_id) or InvalidIngest.UserInUse (the "
    "UserId publishes in the channel)",
    413: "Request body larger than 64 KiB (RequestTooLarge)",
}
ONE_ERRORS = {**COMMON_ERRORS, 404: "InvalidIngest.NotFound"}
CONTROL_ERRORS = {
    **ONE_ERRORS,
    409: "InvalidIngest.Ended: the ingest has ended",
    413: "Request body larger than 64 KiB",
}


class StrictBoolean(Boolean):
    """A JSON ``true`` or ``false`` only (marshmallow's Boolean also takes 0, 1, "yes"...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class IngestIn(InputSchema):
    """``POST /v1/apps/{app_id}/ingests`` (the rules: :func:`rtc_mpu.spec.ingest.parse_ingest`)."""

    ingest_id = String(
        required=True, metadata={"description": "1-55 characters of A-Z a-z 0-9 _ -", "example": "film"}
    )
    channel_id = String(
        required=True, metadata={"description": "the channel (ChannelId)", "example": "room1"}
    )
    user_id = String(
        required=True,
        metadata={"description": "the UserId it publishes as (not ending in .mix)", "example": "movie"},
    )
    url = String(
        required=True,
        metadata={
            "description": "http(s)://, rtmp(s):// (MP4, MKV/WebM, HLS, FLV) or media:NAME (a file of "
            "MPU_MEDIA_DIR on the workers); hosts must be public unless MPU_ALLOW_PRIVATE_URLS=1",
            "example": "https://cdn.example.com/film.mp4",
        },
    )
    loop = StrictBoolean(load_default=False, metadata={"description": "start again at the end"})
    start_at = Float(load_default=0.0, metadata={"description": "where to start, seconds (0-86400)"})
    volume = Integer(load_default=100, strict=True, metadata={"description": "audio gain, percent (0-200)"})


class ControlIn(InputSchema):
    """``PATCH .../ingests/{id}`` (the rules: :func:`rtc_mpu.spec.ingest.parse_control`)."""

    state = String(metadata={"description": "playing or paused"})
    position_seconds = Float(
        metadata={"description": "seek to the keyframe at or before this media time, seconds"}
    )
    volume = Integer(strict=True, metadata={"description": "audio gain, percent (0-200)"})


class IngestOut(Schema):
    """An ingest."""

    ingest_id = String()
    channel_id = String()
    user_id = String()
    url = String(metadata={"description": "the URL without credentials or query string"})
    loop = Boolean()
    state = String(metadata={"description": "starting, playing, paused, ended or failed"})
    reason = String(metadata={"description": "why it ended or failed, or what it waits for"})
    position_ms = Integer(metadata={"description": "the media time playing now, ms"})
    duration_ms = Integer(
        allow_none=True, metadata={"description": "the media's duration, ms (null: unknown or live)"}
    )
    volume = Integer(metadata={"description": "percent"})
    restarts = Integer(metadata={"description": "how many times another worker took it over"})


class IngestListOut(Schema):
    """The app's ingests."""

    ingests = List(Nested(IngestOut))


def _store() -> IngestStore:
    services = current_app.extensions["mpu"]
    store = services.service.store
    return IngestStore(store.client, store.prefix, store.lease_seconds)


def _rooms() -> JanusRooms | None:
    settings = current_app.extensions["mpu_tokens"].settings
    if settings.secret is None:
        return None
    return JanusRooms(settings.janus_url, settings.secret, settings.signature, settings.janus_api_secret)


def _spec_error(exc: SpecError) -> Exception:
    field = ".".join(str(part) for part in exc.field) if exc.field else None
    return api_error(400, exc.code, exc.message, field)


def _ingest_error(exc: IngestError) -> Exception:
    return api_error(exc.status, exc.code, exc.message, "ingest_id" if exc.status == 409 else None)


def _check_channel(app_id: str, spec: IngestSpec) -> None:
    """The room exists (made if not) and the UserId does not publish in it.

    Raises:
        HTTPError: 409 ``InvalidIngest.UserInUse``; 503 ``Janus.Unavailable``/``Janus.Refused``.
    """
    rooms = _rooms()
    if rooms is None:
        return
    room = room_name(app_id, spec.channel_id)
    try:
        with rooms.session() as handle:
            handle.ensure_room(room)
            answer = handle.request({"request": "listparticipants", "room": room})
    except JanusUnavailableError as exc:
        raise api_error(503, "Janus.Unavailable", f"Janus did not answer: {exc}") from None
    except JanusRefusedError as exc:
        raise api_error(503, "Janus.Refused", f"Janus refused the API's request: {exc}") from None
    ids = {str(p.get("id")) for p in answer.get("participants", []) if isinstance(p, dict)}
    if spec.user_id in ids:
        raise api_error(
            409,
            "InvalidIngest.UserInUse",
            f"{spec.user_id!r} already publishes in channel {spec.channel_id!r}",
            "user_id",
        )


def _enqueue(app_id: str, ingest_id: str) -> None:
    enqueue = current_app.config.get("ENQUEUE_INGEST")
    if enqueue is None:
        from rtc_mpu.workers.celery_app import enqueue_ingest  # Celery only when an ingest is queued

        enqueue = enqueue_ingest
    enqueue(app_id, ingest_id)


@bp.post("/apps/<app_id>/ingests")
@bp.input(IngestIn, arg_name="body")
@bp.output(IngestOut, status_code=201)
@bp.doc(
    summary="Pull a media URL into a channel as a participant",
    description="A worker plays it into the channel as the UserId (video, audio, and a data channel "
    "with its progress every second), paced by its timestamps.",
    security="BasicAuth",
    responses=CREATE_ERRORS,
)
def create_ingest(app_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    try:
        spec = parse_ingest(body)
    except SpecError as exc:
        raise _spec_error(exc) from None
    store = _store()
    try:
        existing = store.get(app_id, spec.ingest_id)
    except IngestError:
        existing = None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None
    if existing is not None and existing.active:
        raise api_error(
            409, "InvalidIngest.Exists", f"ingest {spec.ingest_id!r} exists and is active", "ingest_id"
        )
    _check_channel(app_id, spec)
    try:
        record = store.create(app_id, spec)
    except IngestError as exc:
        raise _ingest_error(exc) from None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None
    try:
        _enqueue(app_id, spec.ingest_id)
    except Exception as exc:  # the broker is down: nothing half-started is left
        log.warning("ingest %s/%s not queued: %s", app_id, spec.ingest_id, exc)
        with contextlib.suppress(IngestError, redis.RedisError):
            store.stop(app_id, spec.ingest_id)
        raise api_error(503, "ServiceUnavailable", "the task queue is unavailable") from None
    log.info(
        "ingest %s/%s queued: %s into %s", app_id, spec.ingest_id, record.to_json()["url"], spec.channel_id
    )
    return record.to_json(), 201


@bp.get("/apps/<app_id>/ingests")
@bp.output(IngestListOut)
@bp.doc(
    summary="List the app's ingests (active, and ended within a day)",
    security="BasicAuth",
    responses=COMMON_ERRORS,
)
def list_ingests(app_id: str) -> dict[str, Any]:
    try:
        records = _store().list_app(app_id)
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None
    return {"ingests": [r.to_json() for r in records]}


def _one(app_id: str, ingest_id: str) -> IngestRecord:
    try:
        return _store().get(app_id, ingest_id)
    except IngestError as exc:
        raise _ingest_error(exc) from None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None


@bp.get("/apps/<app_id>/ingests/<ingest_id>")
@bp.output(IngestOut)
@bp.doc(summary="An ingest: its state, position and volume", security="BasicAuth", responses=ONE_ERRORS)
def get_ingest(app_id: str, ingest_id: str) -> dict[str, Any]:
    return _one(app_id, ingest_id).to_json()


@bp.patch("/apps/<app_id>/ingests/<ingest_id>")
@bp.input(ControlIn, arg_name="body")
@bp.output(IngestOut)
@bp.doc(
    summary="Play, pause, seek or set the volume",
    description="Any of state (playing or paused), position_seconds and volume; the worker applies "
    "it within about 50 ms.",
    security="BasicAuth",
    responses=CONTROL_ERRORS,
)
def control_ingest(app_id: str, ingest_id: str, body: dict[str, Any]) -> dict[str, Any]:
    _one(app_id, ingest_id)
    try:
        change = parse_control(body)
    except SpecError as exc:
        raise _spec_error(exc) from None
    try:
        return _store().control(app_id, ingest_id, change).to_json()
    except IngestError as exc:
        raise _ingest_error(exc) from None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None


@bp.delete("/apps/<app_id>/ingests/<ingest_id>")
@bp.output(IngestOut)
@bp.doc(
    summary="Stop an ingest (its publisher leaves the channel)", security="BasicAuth", responses=ONE_ERRORS
)
def stop_ingest(app_id: str, ingest_id: str) -> dict[str, Any]:
    _one(app_id, ingest_id)
    try:
        return _store().stop(app_id, ingest_id).to_json()
    except IngestError as exc:
        raise _ingest_error(exc) from None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None


__all__ = ["bp"]
