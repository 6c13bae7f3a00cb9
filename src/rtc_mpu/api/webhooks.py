"""The webhooks resource over JSON REST: an app's endpoints (secrets never shown), its recent deliveries,
and a ping on demand. The events themselves are written by the task store's scripts and delivered by
the events worker (:mod:`rtc_mpu.workers.webhooks`); nothing here sends HTTP."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Integer, List, Nested, String

from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.errors import api_error
from rtc_mpu.api.schemas import InputSchema
from rtc_mpu.api.tasks import READ_ERRORS, WRITE_ERRORS, service
from rtc_mpu.workers.events import MAX_ENDPOINTS, WebhookEndpoint, WebhookError, parse_endpoints

bp = APIBlueprint("webhooks", __name__, url_prefix="/v1", tag="Webhooks")
bp.before_request(guard_app_request)


class EndpointIn(InputSchema):
    """An endpoint: where events are POSTed and the secret that signs them."""

    url = String(required=True, metadata={"description": "http:// or https://; a public address"})
    secret = String(required=True, metadata={"description": "16 to 256 characters; never shown again"})


class WebhooksIn(InputSchema):
    """The app's endpoints (replacing the ones it had; [] removes them)."""

    endpoints = List(Nested(EndpointIn), required=True, metadata={"maxItems": MAX_ENDPOINTS})


class EndpointOut(Schema):
    """An endpoint as shown: the secret masked."""

    url = String()
    secret = String(metadata={"description": "always ********"})
    rotating = Boolean(metadata={"description": "the previous secret still signs too (two v1 entries)"})


class WebhooksOut(Schema):
    """The app's endpoints."""

    endpoints = List(Nested(EndpointOut))


class DeliveryOut(Schema):
    """The delivery of one event to one endpoint."""

    event_id = String()
    type = String()
    url = String()
    task_id = String(allow_none=True)
    sequence = Integer()
    attempts = Integer()
    last_status = Integer(allow_none=True, metadata={"description": "HTTP status of the last attempt"})
    last_error = String(allow_none=True)
    delivered_at = String(allow_none=True, metadata={"description": "ISO 8601 UTC"})
    given_up_at = String(allow_none=True, metadata={"description": "ISO 8601 UTC"})
    next_attempt_at = String(allow_none=True, metadata={"description": "ISO 8601 UTC"})


class DeliveriesOut(Schema):
    """The app's most recent deliveries, newest first."""

    deliveries = List(Nested(DeliveryOut))


class PingOut(Schema):
    """The ping event queued."""

    event_id = String()


def _shown(endpoints: list[WebhookEndpoint]) -> dict[str, Any]:
    store = service().store
    now = service().call_store(store.server_time)
    return {"endpoints": [e.masked(now) for e in endpoints]}


@bp.put("/apps/<app_id>/webhooks")
@bp.input(WebhooksIn, arg_name="body")
@bp.output(WebhooksOut)
@bp.doc(
    summary="Set the app's webhook endpoints (a changed secret keeps signing beside the new one for a day)",
    security="BasicAuth",
    responses=WRITE_ERRORS,
)
def put_webhooks(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        endpoints = parse_endpoints(body)
    except WebhookError as exc:
        raise api_error(400, exc.code, str(exc), exc.field or None) from None
    store = service().store
    return _shown(service().call_store(store.set_webhooks, app_id, endpoints))


@bp.get("/apps/<app_id>/webhooks")
@bp.output(WebhooksOut)
@bp.doc(summary="The app's webhook endpoints (secrets masked)", security="BasicAuth", responses=READ_ERRORS)
def get_webhooks(app_id: str) -> dict[str, Any]:
    store = service().store
    return _shown(service().call_store(store.webhooks, app_id))


@bp.get("/apps/<app_id>/webhooks/deliveries")
@bp.output(DeliveriesOut)
@bp.doc(
    summary="The app's most recent webhook deliveries (each event to each endpoint), newest first",
    security="BasicAuth",
    responses=READ_ERRORS,
)
def get_deliveries(app_id: str) -> dict[str, Any]:
    store = service().store
    return {"deliveries": [d.out() for d in service().call_store(store.deliveries, app_id)]}


@bp.post("/apps/<app_id>/webhooks/ping")
@bp.output(PingOut, status_code=202)
@bp.doc(
    summary="Send a ping event to the app's endpoints",
    security="BasicAuth",
    responses={**READ_ERRORS, 409: "The app has no webhook endpoints (Webhooks.NotConfigured)"},
)
def ping(app_id: str) -> dict[str, Any]:
    store = service().store
    if not service().call_store(store.webhooks, app_id):
        raise api_error(409, "Webhooks.NotConfigured", "the app has no webhook endpoints")
    return {"event_id": service().call_store(store.emit_ping, app_id)}
