"""One JSON error shape for every error: ``{"code", "message", "field", "request_id"}``.

Codes follow Alibaba Cloud RTC's where it has one (shared/reference/mpu-api.md "Errors"), and
rtc-mpu's own otherwise (README "Error codes").
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import g
from werkzeug.exceptions import HTTPException

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
    415: "InvalidParameter",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def request_id() -> str:
    """This request's id (a UUID), made on first use."""
    if "request_id" not in g:
        g.request_id = str(uuid.uuid4())
    rid: str = g.request_id
    return rid


def api_error(status: int, code: str, message: str, field: str | None = None) -> HTTPError:
    """An error to raise from a view: it renders in the one error shape."""
    return HTTPError(status, message, extra_data={"code": code, "field": field})


def _validation(detail: Any) -> tuple[str, str, str | None]:
    """(code, message, field) from marshmallow's ``{"json": {"field": ["msg"]}}`` detail."""
    if isinstance(detail, dict):
        for messages in detail.values():
            if isinstance(messages, dict) and messages:
                field, problems = next(iter(messages.items()))
                text = problems[0] if isinstance(problems, list) and problems else str(problems)
                if isinstance(problems, dict):  # nested: take the inner field's message
                    text = str(problems)
                code = "MissingParameter" if "Missing data" in str(text) else "InvalidParameter"
                return code, f"{field}: {text}", str(field)
    return "InvalidParameter", "invalid request", None


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
            "message": message,
            "field": field,
            "request_id": request_id(),
        }
        return body, status, error.headers

    @app.errorhandler(HTTPException)
    def http_exception(error: HTTPException) -> tuple[dict[str, Any], int]:
        status = error.code or 500
        return {
            "code": DEFAULT_CODES.get(status, "Error"),
            "message": error.description or "",
            "field": None,
            "request_id": request_id(),
        }, status

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[dict[str, Any], int]:
        if isinstance(error, HTTPError):
            raise error
        rid = request_id()
        log.exception("request %s failed", rid)
        return {"code": "InternalError", "message": "internal error", "field": None, "request_id": rid}, 500
