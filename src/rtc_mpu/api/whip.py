"""WHIP on the API's address: a thin proxy to the edge (:mod:`rtc_mpu.edge`, ``mpu edge``).

The WHIP routes (``POST /v1/apps/{app_id}/channels/{channel_id}/whip``, ``DELETE``/``PATCH`` of
``.../whip/{resource_id}``, ``OPTIONS`` of both) are forwarded with their body and the headers that
matter (``Authorization``, ``Content-Type``, ``If-Match``, CORS preflight headers) to
``MPU_EDGE_URL`` (default ``http://127.0.0.1:8090``), and the edge's answer is returned verbatim:
status, body and its WHIP headers (``Location``, ``ETag``, ``Accept-Post``, ``WWW-Authenticate``...).
The edge holds the Janus sessions; the request thread only waits for its answer (at most
:data:`EDGE_TIMEOUT` seconds). The edge checks the bearer token: these routes take no access key.

Edge down (refused, timed out, not HTTP): ``503`` ``Edge.Unavailable``. The standard library only
(``urllib``): the API process never loads aiohttp.

Failed tokens count as failed authentication (:mod:`rtc_mpu.api.ratelimit`, the access keys' rule per
source address): a ``POST`` the edge refuses for its token (``401``, or ``403`` with a token code:
:data:`TOKEN_FAILURE_CODES`) is counted for the client's address, and once an address has
``MPU_AUTH_FAILURE_LIMIT`` failures within ``MPU_AUTH_FAILURE_WINDOW_SECONDS`` its ``POST`` are
answered ``429`` ``Throttling.Authentication`` with ``Retry-After`` for the rest of the window, without
reaching the edge. Expose the API, not the edge (which does not throttle), to clients.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from http.client import HTTPException, HTTPResponse
from urllib.parse import quote

from apiflask import APIBlueprint
from flask import Response, current_app, jsonify, request

from rtc_mpu.api.auth import Attempt, admit_attempt, count_failure
from rtc_mpu.api.errors import request_id
from rtc_mpu.api.ratelimit import AUTH_THROTTLING_CODE, AuthThrottledError
from rtc_mpu.spec.text_rules import char_problem

log = logging.getLogger(__name__)

bp = APIBlueprint("whip", __name__, enable_openapi=False)

#: The edge's address when ``MPU_EDGE_URL`` is not set (``mpu edge``'s default).
DEFAULT_EDGE_URL = "http://127.0.0.1:8090"
#: Seconds the edge has to answer (its own Janus exchange is limited to 15 s).
EDGE_TIMEOUT = 20.0
#: Largest answer body passed on, bytes (an SDP answer is a few KiB).
MAX_ANSWER_BYTES = 1024 * 1024
#: Request headers forwarded to the edge.
FORWARDED_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "Accept",
    "User-Agent",
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
)
#: Answer headers passed back to the client (besides the body's Content-Type).
FORWARDED_RESPONSE_HEADERS = (
    "Location",
    "ETag",
    "Allow",
    "Accept-Post",
    "Accept-Patch",
    "Link",
    "WWW-Authenticate",
    "Retry-After",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
)


#: The edge's error codes (rtc_mpu.edge.app) that mean the bearer token failed: counted as failed
#: authentication for the client's address.
TOKEN_FAILURE_CODES = frozenset(
    {"InvalidToken", "InvalidToken.Channel", "InvalidToken.Role", "InvalidToken.NotAllowed", "TokenExpired"}
)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


#: No proxies from the environment, no redirects: the request goes to the edge and nowhere else.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def edge_url() -> str:
    """The edge's base URL (``MPU_EDGE_URL`` of :func:`rtc_mpu.api.app.create_app`, else the default)."""
    return str(current_app.config.get("MPU_EDGE_URL") or DEFAULT_EDGE_URL).rstrip("/")


def _unavailable(reason: str) -> Response:
    log.warning("WHIP edge unavailable: %s", reason)
    response = jsonify(
        {
            "code": "Edge.Unavailable",
            "message": "the WHIP edge is not available",
            "field": None,
            "request_id": request_id(),
        }
    )
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _refused(field: str, message: str) -> Response:
    response = jsonify(
        {"code": "InvalidParameter", "message": message, "field": field, "request_id": request_id()}
    )
    response.status_code = 400
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _throttled(exc: AuthThrottledError) -> Response:
    response = jsonify(
        {"code": AUTH_THROTTLING_CODE, "message": exc.message, "field": None, "request_id": request_id()}
    )
    response.status_code = 429
    response.headers["Retry-After"] = str(exc.decision.retry_after_seconds)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


def token_failed(status: int, body: bytes) -> bool:
    """Whether an edge answer (``status``, JSON ``body``) refused the request's token."""
    if status not in (401, 403):
        return False
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return False
    return code in TOKEN_FAILURE_CODES


def _answer(reply: HTTPResponse | urllib.error.HTTPError, attempt: Attempt | None = None) -> Response:
    body = reply.read(MAX_ANSWER_BYTES)
    if attempt is not None and token_failed(reply.status or 0, body):
        count_failure(attempt)
    response = Response(body, status=reply.status)
    content_type = reply.headers.get("Content-Type")
    if content_type:
        response.headers["Content-Type"] = content_type
    else:
        del response.headers["Content-Type"]
    for name in FORWARDED_RESPONSE_HEADERS:
        for value in reply.headers.get_all(name) or ():
            response.headers.add(name, value)
    return response


@bp.route(
    "/v1/apps/<app_id>/channels/<channel_id>/whip",
    methods=["POST", "OPTIONS"],
    provide_automatic_options=False,
)
@bp.route(
    "/v1/apps/<app_id>/channels/<channel_id>/whip/<resource_id>",
    methods=["DELETE", "PATCH", "OPTIONS"],
    provide_automatic_options=False,
)
def forward(app_id: str, channel_id: str, resource_id: str | None = None) -> Response:
    """Forward the request to the edge; return its answer verbatim (503 if it does not answer). Ids
    with control, bidirectional or other refused characters are answered 400 here, never forwarded."""
    for name, value in (("app_id", app_id), ("channel_id", channel_id), ("resource_id", resource_id)):
        problem = char_problem(value) if value is not None else None
        if problem is not None:
            return _refused(name, f"{name}: {problem}")
    path = f"/v1/apps/{quote(app_id, safe='')}/channels/{quote(channel_id, safe='')}/whip"
    if resource_id is not None:
        path += f"/{quote(resource_id, safe='')}"
    url = edge_url() + path
    attempt: Attempt | None = None
    if request.method == "POST":  # the only request that carries a token
        try:
            attempt = admit_attempt({}, None)
        except AuthThrottledError as exc:
            return _throttled(exc)
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
    body = request.get_data(cache=False) if request.method in ("POST", "PATCH") else None
    outgoing = urllib.request.Request(url, data=body, headers=headers, method=request.method)
    try:
        with _OPENER.open(outgoing, timeout=EDGE_TIMEOUT) as reply:
            return _answer(reply, attempt)
    except urllib.error.HTTPError as exc:  # the edge's 4xx/5xx answers: returned as they are
        with exc:
            return _answer(exc, attempt)
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        return _unavailable(f"{exc.__class__.__name__}: {exc}")
