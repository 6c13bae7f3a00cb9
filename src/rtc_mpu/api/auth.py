"""Authentication of API calls: HTTP Basic with access keys.

Scheme: the AccessKeyId is the user name and its secret the password
(``Authorization: Basic base64(AK:SECRET)``; ``curl -u AK:SECRET``). Keys come from
``MPU_ACCESS_KEYS="AK:SECRET,AK2:SECRET2"``; a key written ``AK:SECRET:app1|app2`` may only touch
those AppIds. Secrets are compared in constant time. Failures are 403 with code
``Forbidden`` (no credentials), ``InvalidAccessKeyId.NotFound`` (unknown key),
``SignatureDoesNotMatch`` (wrong secret) or ``Forbidden`` (AppId not allowed for this key); the
answer to a request without credentials carries ``WWW-Authenticate: Basic realm="rtc-mpu"``.
Failed attempts are throttled per source address and per access key (:mod:`rtc_mpu.api.ratelimit`, "Failed
authentication": after ``MPU_AUTH_FAILURE_LIMIT`` (10) failures in ``MPU_AUTH_FAILURE_WINDOW_SECONDS``
(60) from one address, or for one key from addresses that failed for it, further attempts get 429
``Throttling.Authentication`` with ``Retry-After`` for the rest of the window). The order: that throttle
first (before the credentials are looked at), then the credentials (a failure is counted: no
credentials, unknown key, wrong secret), before anything else of the request (its body is not even
parsed), then the access key's rate limit (429 ``Throttling.User`` with ``Retry-After``), then the AppId
(a valid key's 403 for another AppId is not a failed attempt), then the JSON body's size
(:data:`MAX_JSON_VALUES` values, :data:`MAX_JSON_DEPTH` levels). :func:`admit_attempt` and
:func:`count_failure` serve the RPC dialect's signatures too. Only tests may switch authentication off,
with the app config ``MPU_AUTH_DISABLED=True``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from apiflask import HTTPError
from flask import current_app, request
from werkzeug.datastructures import Authorization

from rtc_mpu.api.errors import api_error
from rtc_mpu.api.ratelimit import AUTH_THROTTLING_CODE, THROTTLING_CODE, AuthThrottledError
from rtc_mpu.api.service import APP_ID

#: The ``WWW-Authenticate`` challenge sent when credentials are missing.
CHALLENGE = 'Basic realm="rtc-mpu", charset="UTF-8"'
#: Most values (objects, arrays, strings, numbers, booleans, nulls; keys do not count) in a JSON body.
MAX_JSON_VALUES = 2000
#: Deepest nesting of objects and arrays in a JSON body (the body itself is level 1).
MAX_JSON_DEPTH = 8


@dataclass(frozen=True)
class AccessKey:
    """An access key: its id, secret and the AppIds it may touch (empty: all)."""

    key_id: str
    secret: str
    app_ids: frozenset[str] = frozenset()

    def allows(self, app_id: str) -> bool:
        """Whether this key may act on ``app_id``."""
        return not self.app_ids or app_id in self.app_ids


def parse_access_keys(text: str) -> dict[str, AccessKey]:
    """Parse ``MPU_ACCESS_KEYS``.

    Raises:
        ValueError: an entry is not ``AK:SECRET`` or ``AK:SECRET:app1|app2`` (the message never
            contains a secret).
    """
    keys: dict[str, AccessKey] = {}
    for index, entry in enumerate(part.strip() for part in text.split(",")):
        if not entry:
            continue
        fields = entry.split(":")
        if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
            raise ValueError(f"MPU_ACCESS_KEYS entry #{index + 1} must be AK:SECRET or AK:SECRET:app1|app2")
        apps = frozenset(a for a in fields[2].split("|") if a) if len(fields) == 3 else frozenset()
        keys[fields[0]] = AccessKey(fields[0], fields[1], apps)
    return keys


def authenticate(keys: dict[str, AccessKey], app_id: str) -> AccessKey:
    """Check this request's credentials for ``app_id``.

    Raises:
        HTTPError: 403 with the code of the failure.
    """
    key = authenticate_any(keys)
    if not key.allows(app_id):
        raise api_error(403, "Forbidden", f"this access key may not act on app {app_id}")
    return key


@dataclass(frozen=True)
class Attempt:
    """An authentication attempt: its source address and the configured access key it names (None: it
    names none, or a key that is not configured)."""

    source: str
    key_id: str | None


def admit_attempt(keys: dict[str, AccessKey], claimed_key_id: str | None) -> Attempt | None:
    """Check this request against the throttle of failed authentication, before its credentials are.

    Args:
        keys: the configured access keys.
        claimed_key_id: the AccessKeyId the request names, not verified (None: none).

    Returns:
        The attempt, to give :func:`count_failure` if the credentials fail; None without a throttle.

    Raises:
        AuthThrottledError: this source address, or this key from this address, failed too often.
    """
    throttle = current_app.extensions["mpu"].auth_throttle
    if throttle is None:
        return None
    source = throttle.source(request.remote_addr, request.headers.get("X-Forwarded-For"))
    attempt = Attempt(source, claimed_key_id if claimed_key_id in keys else None)
    decision = throttle.check(attempt.source, attempt.key_id)
    if not decision.allowed:
        raise AuthThrottledError(decision, throttle.message(decision))
    return attempt


def count_failure(attempt: Attempt | None) -> None:
    """Count a failed authentication attempt (nothing without a throttle). Never raises for Redis."""
    throttle = current_app.extensions["mpu"].auth_throttle
    if throttle is not None and attempt is not None:
        throttle.record_failure(attempt.source, attempt.key_id)


def authenticate_any(keys: dict[str, AccessKey]) -> AccessKey:
    """Check this request's credentials: any configured access key (for operators' endpoints), after
    the throttle of failed attempts; a failure is counted.

    Raises:
        HTTPError: 429 ``Throttling.Authentication`` with ``Retry-After`` (seconds) for a throttled
            source address or key (the credentials not checked); 403 with the code of the failure.
    """
    credentials = request.authorization
    claimed = credentials.username if credentials is not None and credentials.type == "basic" else None
    try:
        attempt = admit_attempt(keys, claimed)
    except AuthThrottledError as exc:
        raise api_error(
            429,
            AUTH_THROTTLING_CODE,
            exc.message,
            headers={"Retry-After": str(exc.decision.retry_after_seconds)},
        ) from None
    try:
        return _check_credentials(keys, credentials)
    except HTTPError:
        count_failure(attempt)
        raise


def _check_credentials(keys: dict[str, AccessKey], credentials: Authorization | None) -> AccessKey:
    """The access key of HTTP Basic ``credentials``.

    Raises:
        HTTPError: 403 with the code of the failure.
    """
    if credentials is None or credentials.type != "basic" or not credentials.username:
        raise api_error(
            403,
            "Forbidden",
            "authentication required: HTTP Basic with AccessKeyId:secret",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    key = keys.get(credentials.username)
    if key is None:
        raise api_error(403, "InvalidAccessKeyId.NotFound", "unknown access key")
    if not hmac.compare_digest(key.secret.encode(), (credentials.password or "").encode()):
        raise api_error(403, "SignatureDoesNotMatch", "the secret does not match the access key")
    return key


def json_size_problem(data: Any) -> str | None:
    """Why a parsed JSON body is too large (more than :data:`MAX_JSON_VALUES` values, or nested deeper
    than :data:`MAX_JSON_DEPTH`), or None."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_JSON_VALUES:
            return f"the JSON body has more than {MAX_JSON_VALUES} values"
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return None


def throttle(key_id: str) -> None:
    """Count a request of access key ``key_id`` against its rate limit.

    Raises:
        HTTPError: 429 ``Throttling.User`` with ``Retry-After`` (seconds), over the limit.
    """
    limiter = current_app.extensions["mpu"].limiter
    if limiter is None:
        return
    decision = limiter.hit(key_id)
    if not decision.allowed:
        raise api_error(
            429,
            THROTTLING_CODE,
            limiter.message(decision),
            headers={"Retry-After": str(decision.retry_after_seconds)},
        )


def guard_app_request() -> None:
    """``before_request`` of the REST blueprints, before the body is even parsed: the credentials
    for the URL's ``app_id``, then the key's rate limit, then the AppId's form, then a JSON object
    body for POST/PUT/PATCH, of limited size.

    Raises:
        HTTPError: 403 (credentials), 429 (rate limit), 400 (AppId, body).
    """
    services = current_app.extensions["mpu"]
    app_id = (request.view_args or {}).get("app_id")
    if app_id is None:  # /v1/health: no authentication
        return
    if not services.auth_disabled:
        throttle(authenticate(services.access_keys, app_id).key_id)
    if not APP_ID.fullmatch(app_id):
        raise api_error(400, "InvalidParameter", "must be 1-64 characters of A-Z a-z 0-9 _ -", "app_id")
    if request.method in ("POST", "PUT", "PATCH"):
        problem: str | None
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # deeper than the JSON parser's own limit (about 1000 levels)
            body, problem = None, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        else:
            problem = json_size_problem(body) if isinstance(body, dict | list) else None
        if problem is not None:
            raise api_error(400, "InvalidParameter", problem)
        if not isinstance(body, dict):
            raise api_error(
                400, "InvalidParameter", "the body must be a JSON object (Content-Type: application/json)"
            )
