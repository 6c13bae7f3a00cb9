"""One JSON error shape for every error: ``{"code", "message", "field", "request_id"}``.

Codes follow Alibaba Cloud RTC's where it has one (the vendor's MPU API, 2018-01-11 "Errors"), and
rtc-mpu's own otherwise (README "Error codes").

The request field at fault is named here, for both dialects, from the one path every layer raises
with (:data:`rtc_mpu.layouts.FieldPath`: the schemas' snake_case names, 0-based positions): REST
answers its JSON path (:func:`rest_field`, ``user_panes.0.user_id``), RPC the vendor's name
(:func:`rpc_field`, ``UserPanes.1.UserId``, through :func:`rtc_mpu.api.rpc_params.wire_name`, the one
table of wire names); in both the message starts with it (:func:`with_field`).
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import g, request
from werkzeug.exceptions import HTTPException

from rtc_mpu.api.rpc_format import error_response
from rtc_mpu.api.rpc_params import wire_name
from rtc_mpu.api.service import ServiceError, validation_code
from rtc_mpu.layouts import FieldPath
from rtc_mpu.logs import Verbatim

log = logging.getLogger(__name__)

#: Default code per HTTP status, when the error carries none.
DEFAULT_CODES = {
    400: "InvalidParameter",
    401: "Forbidden",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestTooLarge",
    414: "RequestURITooLong",
    415: "InvalidParameter",
    429: "Throttling.User",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def request_id() -> str:
    """This request's id (a UUID), made on first use."""
    if "request_id" not in g:
        g.request_id = str(uuid.uuid4())
    rid: str = g.request_id
    return rid


def rest_field(path: FieldPath | None) -> str | None:
    """The REST name of a request field: its JSON path, dotted (``user_panes.0.user_id``), or None."""
    return ".".join(str(part) for part in path) if path else None


def rpc_field(path: FieldPath | None) -> str | None:
    """The RPC name of a request field: the vendor's parameter (``UserPanes.1.UserId``), or None."""
    return wire_name(path) if path else None


def with_field(name: str | None, text: str) -> str:
    """An error message: ``text`` led by the field's ``name`` in the dialect's spelling (``"name: text"``),
    unless there is no field or ``text`` already starts with that name (``"CropMode 5 must be..."``)."""
    if not name or re.match(re.escape(name) + r"(?![\w.])", text):
        return text
    return f"{name}: {text}"


def api_error(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> HTTPError:
    """An error to raise from a view: it renders in the one error shape."""
    return HTTPError(status, message, headers=headers, extra_data={"code": code, "field": field})


def first_problem(messages: Any, path: list[str]) -> tuple[list[str], str]:
    """The first message in marshmallow's nested error messages, and the keys leading to it
    (as strings: list positions are digits)."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            return first_problem(value, [*path, str(key)])
        return path, "invalid request"
    if isinstance(messages, list):
        return first_problem(messages[0], path) if messages else (path, "invalid request")
    return path, str(messages)


def _validation(detail: Any) -> tuple[str, str, str | None]:
    """(code, message, field) from marshmallow's ``{"json": {"field": ["msg"]}}`` detail; a nested
    field is dotted (``user_panes.0.user_id``); an error of the whole body has no field."""
    path, text = first_problem(detail, [])
    keys = [p for p in path[1:] if p != "_schema"]  # path[0]: the location (json...)
    field = rest_field(tuple(keys))
    return validation_code(keys, text), with_field(field, text), field


def register(app: APIFlask) -> None:
    """Install the error processor (APIFlask's errors) and handlers for everything else."""

    @app.error_processor
    def render(error: HTTPError) -> tuple[dict[str, Any], int, Any]:
        extra = error.extra_data or {}
        code = extra.get("code")
        message = error.message or ""
        field = extra.get("field")
        if code is None and error.status_code in (400, 422) and error.detail:
            code, message, field = _validation(error.detail)
        status = 400 if error.status_code == 422 else error.status_code
        body = {
            "code": code or DEFAULT_CODES.get(status, "Error"),
            "message": with_field(field, message),
            "field": field,
            "request_id": request_id(),
        }
        return body, status, error.headers

    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError) -> Any:
        field = rest_field(error.field)
        return {
            "code": error.code,
            "message": with_field(field, error.message),
            "field": field,
            "request_id": request_id(),
        }, error.status

    @app.errorhandler(HTTPException)
    def http_exception(error: HTTPException) -> Any:
        status = error.code or 500
        # The exception's own headers (a 405's Allow, RFC 9110), not the Content-Type of its HTML page.
        headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
        if request.blueprint == "rpc" or request.path == "/":
            response = error_response(
                status,
                DEFAULT_CODES.get(status, "Error"),
                error.description or "",
                request_id(),
                request.host,
            )
            response.headers.extend(headers)
            return response
        return (
            {
                "code": DEFAULT_CODES.get(status, "Error"),
                "message": error.description or "",
                "field": None,
                "request_id": request_id(),
            },
            status,
            headers,
        )

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        if isinstance(error, HTTPError):
            raise error
        rid = request_id()
        # The frames, not the exception's message: that might quote a StreamURL or a secret.
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("request %s failed: %s\n%s", rid, error.__class__.__name__, Verbatim(frames))
        if request.blueprint == "rpc" or request.path == "/":
            return error_response(500, "InternalError", "internal error", rid, request.host)
        return {"code": "InternalError", "message": "internal error", "field": None, "request_id": rid}, 500
