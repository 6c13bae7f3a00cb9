"""Webhook events as data: endpoints, outbox events, delivery records, the signature and the backoff.

No I/O here (the API imports it to validate and show endpoints; :mod:`rtc_mpu.workers.webhooks`
delivers). An event is written to a task's outbox by the same Redis script that changes the task
(:mod:`rtc_mpu.workers.store`, "Events"), so no change goes unannounced and no event announces a
change that did not happen; :func:`event_body` turns the stored event into the JSON an endpoint
receives::

    {"id": "evt_...", "type": "task.status_changed", "created_at": "2026-12-01T08:00:00.123456Z",
     "sequence": 3, "task": {... the task as GET /v1/apps/{app_id}/tasks/{task_id} shows it ...},
     "data": {"previous_state": "starting", "previous_status": 0}}

Signature: header ``X-MPU-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``,
with a second ``v1=`` entry (the previous secret's) while a secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from rtc_mpu.spec.text_rules import char_problem
from rtc_mpu.spec.urls import allow_private_urls, is_public_address
from rtc_mpu.workers.model import TaskRecord
from rtc_mpu.workers.task_view import task_view

#: The event types (``ping`` only on demand, ``POST .../webhooks/ping``).
EVENT_TYPES = (
    "task.started",
    "task.status_changed",
    "task.layout_changed",
    "task.outputs_changed",
    "task.ended",
    "channel.user_joined",
    "channel.user_left",
    "output.failed",
    "output.recovered",
    "recording.ready",
    "ping",
)
#: Signature header.
SIGNATURE_HEADER = "X-MPU-Signature"
#: At most this many endpoints per app.
MAX_ENDPOINTS = 5
#: Longest endpoint URL.
MAX_URL_LENGTH = 2048
#: Shortest and longest secret, in characters.
MIN_SECRET, MAX_SECRET = 16, 256
#: First retry delay and the longest one, in seconds (1 s doubling to 60 s).
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
#: Default of ``MPU_WEBHOOK_GIVE_UP_SECONDS``: an endpoint that failed this long gets no more tries.
DEFAULT_GIVE_UP_SECONDS = 3600.0
#: How long the previous secret of a rotated endpoint still signs (both signatures are sent).
ROTATION_SECONDS = 86400.0
#: What a secret looks like in answers.
MASK = "********"


class WebhookError(ValueError):
    """An endpoint list the API refuses: ``field`` is its JSON path (``endpoints.0.url``)."""

    def __init__(self, message: str, field: str, code: str = "InvalidParameter") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclass(frozen=True)
class WebhookEndpoint:
    """An app's endpoint: its URL, its secret and, during a rotation, the previous secret and until
    when (unix seconds) it still signs."""

    url: str
    secret: str
    previous_secret: str | None = None
    previous_until: float = 0.0

    def secrets(self, now: float) -> list[str]:
        """The secrets that sign at ``now`` (the current one first)."""
        rotating = self.previous_secret is not None and now < self.previous_until
        return [self.secret, self.previous_secret] if rotating and self.previous_secret else [self.secret]

    def masked(self, now: float) -> dict[str, Any]:
        """The endpoint as the API shows it: no secret in clear."""
        return {"url": self.url, "secret": MASK, "rotating": len(self.secrets(now)) > 1}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebhookEndpoint:
        return cls(
            url=str(data["url"]),
            secret=str(data["secret"]),
            previous_secret=None if data.get("previous_secret") is None else str(data["previous_secret"]),
            previous_until=float(data.get("previous_until") or 0.0),
        )


def rotate(
    old: Sequence[WebhookEndpoint], new: Sequence[WebhookEndpoint], now: float
) -> list[WebhookEndpoint]:
    """``new`` with each endpoint whose URL had another secret in ``old`` keeping that secret as its
    previous one for :data:`ROTATION_SECONDS` (an unchanged secret keeps a rotation under way)."""
    before = {e.url: e for e in old}
    out = []
    for endpoint in new:
        prior = before.get(endpoint.url)
        if prior is None:
            out.append(endpoint)
        elif prior.secret != endpoint.secret:
            out.append(replace(endpoint, previous_secret=prior.secret, previous_until=now + ROTATION_SECONDS))
        else:
            out.append(
                replace(endpoint, previous_secret=prior.previous_secret, previous_until=prior.previous_until)
            )
    return out


def check_url_address(url: str, allow_private: bool | None = None) -> None:
    """Refuse a URL whose host is an IP address literal that is not public (unless private URLs are
    allowed, ``MPU_ALLOW_PRIVATE_URLS=1``). Names are checked when they are resolved, at delivery.

    Raises:
        ValueError: a private, loopback or link-local address.
    """
    allowed = allow_private_urls() if allow_private is None else allow_private
    host = urlsplit(url).hostname or ""
    if not allowed and _is_ip(host) and not is_public_address(host):
        raise ValueError(f"{host} is not a public address (MPU_ALLOW_PRIVATE_URLS=1 allows it)")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def parse_endpoints(body: object, allow_private: bool | None = None) -> list[WebhookEndpoint]:
    """The endpoints of a ``PUT .../webhooks`` body ``{"endpoints": [{"url", "secret"}]}``.

    Rules: at most :data:`MAX_ENDPOINTS`, each URL once; ``http``/``https`` with a host, no user
    name or password, no fragment, at most :data:`MAX_URL_LENGTH` characters; a host that is an IP
    address must be public unless private URLs are allowed; a secret of :data:`MIN_SECRET` to
    :data:`MAX_SECRET` characters; no control, bidi control or lone surrogate characters anywhere.

    Raises:
        WebhookError: the first problem, with its field.
    """
    if not isinstance(body, dict):
        raise WebhookError("the body must be a JSON object", "")
    unknown = sorted(set(body) - {"endpoints"})
    if unknown:
        raise WebhookError(f"unknown field {unknown[0]!r}", str(unknown[0]))
    if "endpoints" not in body:
        raise WebhookError("endpoints is required", "endpoints", "MissingParameter")
    items = body["endpoints"]
    if not isinstance(items, list):
        raise WebhookError("endpoints must be a list", "endpoints")
    if len(items) > MAX_ENDPOINTS:
        raise WebhookError(f"at most {MAX_ENDPOINTS} endpoints", "endpoints")
    out: list[WebhookEndpoint] = []
    for i, item in enumerate(items):
        where = f"endpoints.{i}"
        if not isinstance(item, dict):
            raise WebhookError("an endpoint must be an object with url and secret", where)
        extra = sorted(set(item) - {"url", "secret"})
        if extra:
            raise WebhookError(f"unknown field {extra[0]!r}", f"{where}.{extra[0]}")
        for name in ("url", "secret"):
            if name not in item:
                raise WebhookError(f"{name} is required", f"{where}.{name}", "MissingParameter")
            if not isinstance(item[name], str):
                raise WebhookError(f"{name} must be a string", f"{where}.{name}")
            bad = char_problem(item[name])
            if bad is not None:
                raise WebhookError(f"{name} {bad}", f"{where}.{name}")
        url, secret = item["url"], item["secret"]
        _check_url(url, f"{where}.url", allow_private)
        if any(e.url == url for e in out):
            raise WebhookError("the same URL twice", f"{where}.url")
        if not MIN_SECRET <= len(secret) <= MAX_SECRET:
            raise WebhookError(f"secret must have {MIN_SECRET} to {MAX_SECRET} characters", f"{where}.secret")
        out.append(WebhookEndpoint(url, secret))
    return out


def _check_url(url: str, field: str, allow_private: bool | None) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise WebhookError(f"url is longer than {MAX_URL_LENGTH} characters", field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookError("url is not a valid URL", field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("url must be an http:// or https:// URL with a host", field)
    if parts.username is not None or parts.password is not None:
        raise WebhookError("url must not hold a user name or password", field)
    if parts.fragment or url.endswith("#"):
        raise WebhookError("url must not have a fragment", field)
    if port == 0 or any(c.isspace() for c in url):
        raise WebhookError("url is not a valid URL", field)
    try:
        check_url_address(url, allow_private)
    except ValueError as exc:
        raise WebhookError(f"url: {exc}", field) from None


@dataclass(frozen=True)
class OutboxEvent:
    """An event as the store keeps it in a task's outbox: id, type, per-task sequence, server time
    (unix seconds), the type's data and the task record as it was right after the change (None for
    an app's ``ping``)."""

    id: str
    type: str
    sequence: int
    at: float
    data: dict[str, Any] | None
    record: dict[str, Any] | None
    app_id: str = ""

    @classmethod
    def from_json(cls, text: str | bytes) -> OutboxEvent:
        data = json.loads(text)
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            sequence=int(data["sequence"]),
            at=float(data["at"]),
            data=data.get("data") if isinstance(data.get("data"), dict) else None,
            record=data.get("record")
            if isinstance(data.get("record"), dict) and data.get("record")
            else None,
            app_id=str(data.get("app_id", "")),
        )


def iso_utc(unix_seconds: float) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(event: OutboxEvent) -> bytes:
    """The JSON an endpoint receives (the same bytes at every attempt)."""
    task: dict[str, Any] | None = None
    if event.record is not None:
        task = task_view(TaskRecord.from_json(json.dumps(event.record)))
    body: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "created_at": iso_utc(event.at),
        "sequence": event.sequence,
        "task": task,
    }
    if event.app_id:
        body["app_id"] = event.app_id
    elif task is not None:
        body["app_id"] = task["app_id"]
    if event.data is not None:
        body["data"] = event.data
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secrets: Sequence[str], body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` with one ``v1`` per secret."""
    signed = str(timestamp).encode() + b"." + body
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets]
    return ",".join(parts)


def verify(header: str, body: bytes, secret: str, now: float, tolerance: float = 300.0) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now`` (what a
    receiver does; the README shows the same in a few lines)."""
    items = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in items if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = sign([secret], body, int(stamps[0])).split(",v1=", 1)[1]
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in items)


def backoff(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed ones: 1, 2, 4, ... up to 60."""
    if failures < 1:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * math.pow(2, min(failures - 1, 30)))


@dataclass
class Delivery:
    """The delivery of one event to one endpoint (``GET .../webhooks/deliveries``)."""

    event_id: str
    type: str
    url: str
    task_id: str | None = None
    sequence: int = 0
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    next_attempt_at: float = 0.0
    delivered_at: float | None = None
    given_up_at: float | None = None

    @property
    def done(self) -> bool:
        """Delivered or given up."""
        return self.delivered_at is not None or self.given_up_at is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def out(self) -> dict[str, Any]:
        """As the API shows it (times in ISO 8601 UTC)."""

        def when(value: float | None) -> str | None:
            return None if value is None else iso_utc(value)

        return {
            "event_id": self.event_id,
            "type": self.type,
            "url": self.url,
            "task_id": self.task_id,
            "sequence": self.sequence,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "delivered_at": when(self.delivered_at),
            "given_up_at": when(self.given_up_at),
            "next_attempt_at": None if self.done or not self.attempts else when(self.next_attempt_at),
        }
