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
from apiflask import APIBlueprint
from flask import current_app, request

from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.errors import api_error
from rtc_mpu.api.janus_rooms import JanusRefusedError, JanusRooms, JanusUnavailableError
from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.ingest import IngestSpec, check_ingest_id, parse_control, parse_ingest
from rtc_mpu.spec.tokens import room_name
from rtc_mpu.workers.ingest_store import IngestError, IngestRecord, IngestStore

log = logging.getLogger(__name__)

bp = APIBlueprint("ingests", __name__, url_prefix="/v1", tag="Stream ingest")
bp.before_request(guard_app_request)

#: How the answers look (for the OpenAPI document).
INGEST_DOC = (
    "An ingest: `{ingest_id, channel_id, user_id, url (redacted), loop, state: "
    "starting|playing|paused|ended|failed, reason, position_ms, duration_ms, volume, restarts}`"
)


def _store() -> IngestStore:
    services = current_app.extensions["mpu"]
    store = services.service.store
    return IngestStore(store.client, store.prefix, store.lease_seconds)


def _rooms() -> JanusRooms | None:
    settings = current_app.extensions["mpu_tokens"].settings
    if settings.secret is None:
        return None
    return JanusRooms(settings.janus_url, settings.secret, settings.signature, settings.janus_api_secret)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise api_error(400, "InvalidParameter", "the body must be a JSON object")
    return body


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
@bp.doc(
    summary="Pull a media URL into a channel as a participant",
    description="Body: `{ingest_id, channel_id, user_id, url, loop?, start_at?, volume?}`; url is "
    "http(s)://, rtmp(s):// (MP4, MKV/WebM, HLS, FLV) or media:NAME (a file of MPU_MEDIA_DIR). " + INGEST_DOC,
    security="BasicAuth",
)
def create_ingest(app_id: str) -> tuple[dict[str, Any], int]:
    try:
        spec = parse_ingest(_body())
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
@bp.doc(
    summary="List the app's ingests (active, and ended within a day)",
    description=INGEST_DOC,
    security="BasicAuth",
)
def list_ingests(app_id: str) -> dict[str, Any]:
    try:
        records = _store().list_app(app_id)
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None
    return {"ingests": [r.to_json() for r in records]}


def _one(app_id: str, ingest_id: str) -> IngestRecord:
    try:
        check_ingest_id(ingest_id)
    except SpecError:
        raise api_error(404, "InvalidIngest.NotFound", f"no ingest {ingest_id!r}") from None
    try:
        return _store().get(app_id, ingest_id)
    except IngestError as exc:
        raise _ingest_error(exc) from None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None


@bp.get("/apps/<app_id>/ingests/<ingest_id>")
@bp.doc(summary="An ingest: its state, position and volume", description=INGEST_DOC, security="BasicAuth")
def get_ingest(app_id: str, ingest_id: str) -> dict[str, Any]:
    return _one(app_id, ingest_id).to_json()


@bp.patch("/apps/<app_id>/ingests/<ingest_id>")
@bp.doc(
    summary="Play, pause, seek or set the volume",
    description="Body: any of `{state: playing|paused, position_seconds, volume}`. " + INGEST_DOC,
    security="BasicAuth",
)
def control_ingest(app_id: str, ingest_id: str) -> dict[str, Any]:
    _one(app_id, ingest_id)
    try:
        change = parse_control(_body())
    except SpecError as exc:
        raise _spec_error(exc) from None
    try:
        return _store().control(app_id, ingest_id, change).to_json()
    except IngestError as exc:
        raise _ingest_error(exc) from None
    except redis.RedisError as exc:
        raise api_error(503, "ServiceUnavailable", f"the task store is unavailable: {exc}") from None


@bp.delete("/apps/<app_id>/ingests/<ingest_id>")
@bp.doc(
    summary="Stop an ingest (its publisher leaves the channel)", description=INGEST_DOC, security="BasicAuth"
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
