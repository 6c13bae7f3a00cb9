"""Authentication of API calls: HTTP Basic with access keys.

Scheme: the AccessKeyId is the user name and its secret the password
(``Authorization: Basic base64(AK:SECRET)``; ``curl -u AK:SECRET``). Keys come from
``MPU_ACCESS_KEYS="AK:SECRET,AK2:SECRET2"``; a key written ``AK:SECRET:app1|app2`` may only touch
those AppIds. Secrets are compared in constant time. Failures are 403 with code
``Forbidden`` (no credentials), ``InvalidAccessKeyId.NotFound`` (unknown key),
``SignatureDoesNotMatch`` (wrong secret) or ``Forbidden`` (AppId not allowed for this key); the
answer to a request without credentials carries ``WWW-Authenticate: Basic realm="rtc-mpu"``.
Credentials are checked before anything else of the request (its body is not even parsed), then
the access key's rate limit (:mod:`api.ratelimit`: 429 ``Throttling.User`` with ``Retry-After``),
then the AppId, then the JSON body's size (:data:`MAX_JSON_VALUES` values, :data:`MAX_JSON_DEPTH`
levels). Only tests may switch authentication off, with the app config ``MPU_AUTH_DISABLED=True``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from flask import current_app, request

from api.errors import api_error
from api.ratelimit import THROTTLING_CODE
from api.service import APP_ID

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


def authenticate_any(keys: dict[str, AccessKey]) -> AccessKey:
    """Check this request's credentials: any configured access key (for operators' endpoints).

    Raises:
        HTTPError: 403 with the code of the failure.
    """
    credentials = request.authorization
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
        raise api_error(400, "InvalidParameter", "AppId must be 1-64 characters of A-Z a-z 0-9 _ -", "app_id")
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
