"""The API's app factory: ``create_app(config)``.

Configuration (keys of ``config``, else environment variables):
- ``MPU_ACCESS_KEYS``: access keys (see :mod:`rtc_mpu.api.auth`); the app refuses to start without any.
- ``MPU_REDIS_URL``: the task store (default ``redis://127.0.0.1:6379/0``).
- ``STORE``: a task store (a :class:`rtc_mpu.workers.store_protocol.TaskStoreProtocol`; tests give one
  on their own Redis); default: :class:`rtc_mpu.workers.store.TaskStore` on the URL.
- ``LAYOUT_STORE``: a custom layout store (a :class:`rtc_mpu.workers.store_protocol.LayoutStoreProtocol`;
  tests); default: one on the task store's Redis.
- ``ENQUEUE``: ``(app_id, task_id) -> None`` that queues a mix; default: the Celery task.
- ``MPU_AUTH_DISABLED``: True switches authentication off (tests only; never from the environment).
- ``MPU_RATE_LIMIT``, ``MPU_RATE_BURST``: requests per second per access key (20) and the burst (40);
  0 switches the limit off (:mod:`rtc_mpu.api.ratelimit`).
- ``MPU_AUTH_FAILURE_LIMIT``, ``MPU_AUTH_FAILURE_WINDOW_SECONDS``: failed authentication attempts answered
  per source address and per access key (10) in a window of that many seconds (60); later attempts get
  429 ``Throttling.Authentication``; 0 switches the throttle off (:mod:`rtc_mpu.api.ratelimit`).
- ``MPU_RECORDINGS_DIR``, ``MPU_RECORDINGS_RETENTION_DAYS``: where the workers write recordings (the API
  lists, serves and deletes them there; default ``recordings`` under the working directory) and how
  many days they are kept (30; 0 = forever), as :mod:`rtc_mpu.workers.settings` reads them.
- ``MPU_EDGE_URL``: the WHIP edge the WHIP routes are forwarded to (:mod:`rtc_mpu.api.whip`; default
  ``http://127.0.0.1:8090``).
- ``MPU_TRUSTED_PROXIES``: comma-separated IP addresses / CIDR networks of reverse proxies whose
  ``X-Forwarded-For`` gives the source address (default none: the peer address).
- ``MPU_TOKEN_SECRET``, ``MPU_JANUS_URL``, ``MPU_JANUS_TOKEN_SIGNATURE``, ``MPU_JANUS_API_SECRET``: channel
  tokens (``POST /v1/apps/{app_id}/tokens``, :class:`rtc_mpu.api.tokens.TokenSettings`): the secret shared
  with Janus (unset: 501 ``Tokens.NotConfigured``), Janus' HTTP API as the API reaches it (default
  ``http://127.0.0.1:8088/janus``), its signed-token scheme (``sha1``, or ``sha256url`` for Janus after
  1.1) and its api_secret. ``TOKEN_CLOCK``: ``() -> float``, the Unix time tokens are minted at (tests).

Request size limits: bodies up to :data:`MAX_CONTENT_LENGTH` (413 ``RequestTooLarge``), query strings
up to :data:`MAX_QUERY_LENGTH` (414 ``RequestURITooLong``), in both dialects; RPC calls up to
:data:`rtc_mpu.api.rpc_params.MAX_PARAMS` parameters, REST JSON bodies up to
:data:`rtc_mpu.api.auth.MAX_JSON_VALUES`
values nested at most :data:`rtc_mpu.api.auth.MAX_JSON_DEPTH` deep (400 ``InvalidParameter``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

import redis
from apiflask import APIFlask
from flask import request
from werkzeug.exceptions import RequestURITooLarge

from rtc_mpu.api import errors
from rtc_mpu.api.auth import AccessKey, parse_access_keys
from rtc_mpu.api.dashboard import bp as dashboard_bp
from rtc_mpu.api.ingests import bp as ingests_bp
from rtc_mpu.api.layouts import bp as layouts_bp
from rtc_mpu.api.metrics import bp as metrics_bp
from rtc_mpu.api.outputs import bp as outputs_bp
from rtc_mpu.api.ratelimit import AuthFailureLimit, AuthFailureThrottle, RateLimit, RateLimiter
from rtc_mpu.api.rpc import bp as rpc_bp
from rtc_mpu.api.rpc_format import JSONProvider
from rtc_mpu.api.schemas import ErrorOut
from rtc_mpu.api.service import APP_ID, MixService
from rtc_mpu.api.tasks import bp as tasks_bp
from rtc_mpu.api.tokens import TokenIssuer, TokenSettings
from rtc_mpu.api.tokens import bp as tokens_bp
from rtc_mpu.api.webhooks import bp as webhooks_bp
from rtc_mpu.api.whip import bp as whip_bp
from rtc_mpu.workers.settings import (
    DEFAULT_RECORDINGS_DIR,
    DEFAULT_RECORDINGS_RETENTION_DAYS,
    recordings_dir,
    recordings_retention_days,
)
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

#: Largest request body accepted, in bytes.
MAX_CONTENT_LENGTH = 64 * 1024
#: Longest query string accepted (as sent, percent-encoded), in bytes.
MAX_QUERY_LENGTH = 32 * 1024
#: The OpenAPI document's description.
DESCRIPTION = """Mix tasks of RTC channels pushed to RTMP, compatible with Alibaba Cloud RTC's MPU API
(StartMPUTask, GetMPUTaskStatus, UpdateMPULayout, UpdateMPUTask, StopMPUTask, CreateMPULayout,
ModifyMPULayout, DeleteMPULayout, DescribeMPULayoutInfoList) with its fields in snake_case.

The vendor's own RPC dialect (signed `Action=...` requests, as the official SDKs send them) is served
at `/` by the same service; see the README ("MPU RPC compatibility").

**Authentication**: HTTP Basic, the AccessKeyId as user name and its secret as password
(`curl -u AK:SECRET`). Keys come from `MPU_ACCESS_KEYS="AK:SECRET,AK2:SECRET2"`; a key written
`AK:SECRET:app1|app2` may only act on those AppIds. Failures are 403 with code `Forbidden` (no
credentials, or an AppId the key may not touch), `InvalidAccessKeyId.NotFound` or
`SignatureDoesNotMatch`.

**Rate limits**: each access key may send `MPU_RATE_LIMIT` requests per second (20) with bursts of
`MPU_RATE_BURST` (40), shared by all API processes; over that the answer is 429 `Throttling.User`
with a `Retry-After` header (seconds). After `MPU_AUTH_FAILURE_LIMIT` (10) failed authentication
attempts in `MPU_AUTH_FAILURE_WINDOW_SECONDS` (60) from one address, or for one access key from the
addresses that failed for it, further attempts are answered 429 `Throttling.Authentication` with
`Retry-After` for the rest of the window.

**Limits**: request bodies up to 64 KiB (413 `RequestTooLarge`), query strings up to 32 KiB (414
`RequestURITooLong`), JSON bodies of at most 2000 values nested at most 8 deep (400 `InvalidParameter`).

**Errors** all have one shape: `{"code", "message", "field", "request_id"}` (field: the JSON path
of the request field at fault, such as `user_panes.0.user_id`, or null; the message starts with it)."""


class Services:
    """What the views use: access keys, the service layer, the nonce register of signed calls, the
    rate limiter (None: no limit) and the throttle of failed authentication (None: no throttle)."""

    def __init__(
        self,
        access_keys: dict[str, AccessKey],
        service: MixService,
        auth_disabled: bool = False,
        limiter: RateLimiter | None = None,
        auth_throttle: AuthFailureThrottle | None = None,
        recordings_dir: str = DEFAULT_RECORDINGS_DIR,
        recordings_retention_days: float = DEFAULT_RECORDINGS_RETENTION_DAYS,
    ) -> None:
        self.access_keys = access_keys
        self.recordings_dir = recordings_dir
        self.recordings_retention_days = recordings_retention_days
        self.auth_disabled = auth_disabled
        self.service = service
        self.limiter = limiter
        self.auth_throttle = auth_throttle

    def use_nonce(self, key_id: str, nonce: str, ttl_seconds: float) -> bool:
        """Register a signed request's nonce; False if this key used it within ``ttl_seconds``.

        Raises:
            ServiceError: Redis is unavailable (503).
        """
        return self.service.call_store(self.service.store.use_nonce, key_id, nonce, ttl_seconds)


def _task_store_factory(redis_url: str) -> Callable[[], TaskStoreProtocol]:
    def make() -> TaskStoreProtocol:
        from rtc_mpu.workers.settings import WorkerSettings
        from rtc_mpu.workers.store import TaskStore

        settings = WorkerSettings.from_env()
        return TaskStore.from_url(
            redis_url, cooldown_seconds=settings.cooldown_seconds, lease_seconds=settings.lease_seconds
        )

    return make


def _redis_of(service: MixService) -> Callable[[], tuple[redis.Redis, str]]:
    """The task store's Redis client and key prefix, for the rate limiter and the authentication
    throttle (made on first use, as the store)."""

    def target() -> tuple[redis.Redis, str]:
        return service.store.client, service.store.prefix

    return target


def _limit_query_length() -> None:
    """``before_request`` of the whole app: refuse a query string longer than MAX_QUERY_LENGTH.

    Raises:
        RequestURITooLarge: 414, rendered in the dialect of the path (:mod:`rtc_mpu.api.errors`).
    """
    length = len(request.query_string)
    if length > MAX_QUERY_LENGTH:
        raise RequestURITooLarge(
            f"the query string has {length} bytes, more than {MAX_QUERY_LENGTH}: send the parameters in "
            "the body"
        )


def _celery_enqueue(app_id: str, task_id: str) -> None:
    from rtc_mpu.workers.celery_app import enqueue_mix

    enqueue_mix(app_id, task_id)


def document_guard(spec: dict[Any, Any] | str) -> dict[Any, Any] | str:
    """The OpenAPI document says what :func:`rtc_mpu.api.auth.guard_app_request` enforces (the URL rules and
    APIFlask do not): an ``app_id`` path parameter has the AppId's form, and a request body (a JSON
    object) is required. (``spec`` is a str only with ``SPEC_FORMAT = "yaml"``, which this app does not
    use.)"""
    if isinstance(spec, str):
        return spec
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "app_id":
                    parameter["schema"] = {"type": "string", "pattern": f"^{APP_ID.pattern}$"}
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
    return spec


def _version() -> str:
    try:
        return metadata.version("rtc-mpu")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def create_app(config: Mapping[str, Any] | None = None) -> APIFlask:
    """Build the API.

    Raises:
        ValueError: no access keys configured (and ``MPU_AUTH_DISABLED`` not set), malformed keys, or
            a malformed ``MPU_RATE_LIMIT`` / ``MPU_RATE_BURST`` / ``MPU_AUTH_FAILURE_LIMIT`` /
            ``MPU_AUTH_FAILURE_WINDOW_SECONDS`` / ``MPU_TRUSTED_PROXIES`` / ``MPU_TOKEN_SECRET`` /
            ``MPU_JANUS_TOKEN_SIGNATURE``.
    """
    settings = dict(config or {})
    keys_text = settings.get("MPU_ACCESS_KEYS", os.environ.get("MPU_ACCESS_KEYS", ""))
    keys = parse_access_keys(keys_text)
    auth_disabled = settings.get("MPU_AUTH_DISABLED") is True
    if not keys and not auth_disabled:
        raise ValueError('no access keys: set MPU_ACCESS_KEYS="AK:SECRET" (see README)')
    rate_limit = RateLimit.from_settings(settings, os.environ)
    auth_failure_limit = AuthFailureLimit.from_settings(settings, os.environ)
    token_settings = TokenSettings.from_settings(settings, os.environ)
    app = APIFlask(
        __name__, title="rtc-mpu", version=_version(), spec_path="/openapi.json", docs_path="/docs"
    )
    app.json = JSONProvider(app)  # answers stay valid Unicode whatever is stored
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.config["SPEC_FORMAT"] = "json"
    app.config["DESCRIPTION"] = DESCRIPTION
    app.spec_processor(document_guard)
    # The OpenAPI document shows the answers the API really gives.
    app.config["VALIDATION_ERROR_STATUS_CODE"] = 400
    app.config["VALIDATION_ERROR_DESCRIPTION"] = "Missing or invalid parameter (MissingParameter, ...)"
    app.config["AUTH_ERROR_STATUS_CODE"] = 403
    app.config["AUTH_ERROR_DESCRIPTION"] = "Forbidden, InvalidAccessKeyId.NotFound or SignatureDoesNotMatch"
    app.config["VALIDATION_ERROR_SCHEMA"] = ErrorOut
    app.config["HTTP_ERROR_SCHEMA"] = ErrorOut
    app.security_schemes = {
        "BasicAuth": {
            "type": "http",
            "scheme": "basic",
            "description": "AccessKeyId:secret (MPU_ACCESS_KEYS)",
        }
    }
    redis_url = settings.get("MPU_REDIS_URL", os.environ.get("MPU_REDIS_URL", "redis://127.0.0.1:6379/0"))
    store = settings.get("STORE")
    layouts = settings.get("LAYOUT_STORE")
    service = MixService(
        (lambda: store) if store is not None else _task_store_factory(redis_url),
        (lambda: layouts) if layouts is not None else None,
        settings.get("ENQUEUE") or _celery_enqueue,
    )
    limiter = RateLimiter(rate_limit, _redis_of(service)) if rate_limit.enabled else None
    auth_throttle = (
        AuthFailureThrottle(auth_failure_limit, _redis_of(service))
        if auth_failure_limit.enabled and not auth_disabled
        else None
    )
    recordings_root = str(settings.get("MPU_RECORDINGS_DIR") or recordings_dir())
    retention = settings.get("MPU_RECORDINGS_RETENTION_DAYS")
    app.extensions["mpu"] = Services(
        keys,
        service,
        auth_disabled,
        limiter,
        auth_throttle,
        recordings_root,
        float(retention) if retention is not None else recordings_retention_days(),
    )
    app.extensions["mpu_tokens"] = TokenIssuer(
        token_settings, _redis_of(service), settings.get("TOKEN_CLOCK") or time.time
    )
    app.before_request(_limit_query_length)
    errors.register(app)
    app.register_blueprint(tasks_bp)
    app.register_blueprint(outputs_bp)
    app.register_blueprint(layouts_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(tokens_bp)
    app.register_blueprint(ingests_bp)
    if settings.get("ENQUEUE_INGEST") is not None:
        app.config["ENQUEUE_INGEST"] = settings["ENQUEUE_INGEST"]
    app.register_blueprint(rpc_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(dashboard_bp)
    app.config["MPU_EDGE_URL"] = settings.get("MPU_EDGE_URL") or os.environ.get("MPU_EDGE_URL") or ""
    app.register_blueprint(whip_bp)
    return app
