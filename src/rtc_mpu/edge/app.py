"""The edge's HTTP side: WHIP (RFC 9725) on aiohttp.

Routes (the API forwards the same paths on its own address, :mod:`rtc_mpu.api.whip`):

``POST /v1/apps/{app_id}/channels/{channel_id}/whip``
    ``Authorization: Bearer <publish token>``, ``Content-Type: application/sdp``, an SDP offer →
    ``201 Created``, the SDP answer (``application/sdp``), ``Location:
    /v1/apps/{app_id}/channels/{channel_id}/whip/{resource_id}``, an ``ETag``, and one ``Link: <url>;
    rel="ice-server"`` per STUN/TURN server of ``MPU_WHIP_ICE_SERVERS`` (RFC 9725 4.6). The client
    appears in the channel as publisher ``<UserId>`` (display name ``<UserId>``), the token's user.
``DELETE <Location>``
    ``200``: the publisher leaves. The resource id (192 random bits) is the credential: no token is
    needed (an expired token must not keep a client from hanging up); an unknown id is ``404``.
``PATCH <Location>``
    Trickle ICE (``application/trickle-ice-sdpfrag``, RFC 8840): the candidates go to Janus, ``204``.
    ICE restarts (other ``ice-ufrag``/``ice-pwd``) are not supported: ``422``. ``If-Match`` other than
    the resource's ``ETag`` or ``*``: ``412``.
``OPTIONS`` of either
    ``204`` with ``Accept-Post: application/sdp`` (endpoint) or ``Accept-Patch:
    application/trickle-ice-sdpfrag`` (resource), ``Allow``, and CORS headers (every answer allows
    any origin: the credential is a bearer token, never a cookie).
``GET /healthz``
    ``200`` ``{"status": "ok", "publishers": n}`` (not forwarded by the API).

Errors have the REST API's shape ``{"code", "message", "field", "request_id"}``:

======  ==========================================================================================
status  code: when
======  ==========================================================================================
400     ``InvalidSdp.Malformed``: not UTF-8, not SDP, not a WebRTC offer (ICE, DTLS fingerprint),
        or Janus found the SDP invalid; ``InvalidSdp.NoMedia``: it sends neither audio nor video;
        ``InvalidSdp.Codec``: an audio or video section offers no codec the channel takes (Opus;
        VP8, H.264), or Janus refused one
401     ``InvalidToken`` (with ``WWW-Authenticate: Bearer``): no token, a malformed, forged token
403     ``TokenExpired``; ``InvalidToken.Channel``: another channel's token; ``InvalidToken.Role``:
        not a publish token; ``InvalidUserId.Reserved``: a UserId ending in ``.mix`` (a task's mix);
        ``InvalidToken.NotAllowed``: Janus refused the token (not on the room's list: revoked)
404     ``InvalidChannel.NotFound``: Janus has no room for the channel (no token was issued since
        Janus started); ``InvalidResource.NotFound``: no such resource (DELETE, PATCH);
        ``NotFound``: another path
405     ``MethodNotAllowed`` (with ``Allow``)
409     ``InvalidUserId.InUse``: the UserId already publishes in the channel
412     ``PreconditionFailed``: ``If-Match`` does not match the resource's ``ETag``
413     ``RequestTooLarge``: a body over 64 KiB
415     ``InvalidContentType``: not ``application/sdp`` (POST) / ``application/trickle-ice-sdpfrag``
        (PATCH)
422     ``IceRestart.Unsupported``: a PATCH asking for an ICE restart
502     ``Janus.Error``: Janus refused in a way not listed here
503     ``InvalidChannel.Full`` (the room's publisher limit; ``Retry-After``); ``Janus.Unavailable``:
        Janus did not answer within ``MPU_EDGE_JANUS_TIMEOUT``; ``Janus.Refused``: Janus refused the
        edge's service token (another secret); ``Edge.Busy``: the edge holds
        ``MPU_EDGE_MAX_SESSIONS`` publishers
======  ==========================================================================================

No error leaves anything in Janus (:mod:`rtc_mpu.edge.publishers`). Tokens never reach the logs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from rtc_mpu.edge.publishers import EdgeBusyError, Publishers, Resource
from rtc_mpu.edge.sdp import SdpError, check_offer, parse_trickle
from rtc_mpu.edge.settings import EdgeSettings
from rtc_mpu.mixer.sources.janus_http import (
    JanusError,
    JanusSession,
    JanusSessionLostError,
    JanusUnreachableError,
)
from rtc_mpu.spec.tokens import MIX_SUFFIX, Claims, Role, TokenError, verify_token

log = logging.getLogger(__name__)

#: The WHIP endpoint and a resource under it.
ENDPOINT = "/v1/apps/{app_id}/channels/{channel_id}/whip"
RESOURCE = ENDPOINT + "/{resource_id}"
SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
#: ``WWW-Authenticate`` realm.
REALM = "rtc-mpu"
#: Seconds a client is told to wait (``Retry-After``) when the room or Janus is full or down.
RETRY_AFTER = 5
#: CORS headers of every answer (browsers' WHIP clients; the token is a bearer token, not a cookie).
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": (
        "Location, ETag, Link, Accept-Post, Accept-Patch, Allow, WWW-Authenticate"
    ),
    "Access-Control-Max-Age": "600",
}
#: VideoRoom and Janus error codes → (HTTP status, our code).
JANUS_ERRORS: dict[int, tuple[int, str]] = {
    426: (404, "InvalidChannel.NotFound"),  # JANUS_VIDEOROOM_ERROR_NO_SUCH_ROOM
    432: (503, "InvalidChannel.Full"),  # JANUS_VIDEOROOM_ERROR_PUBLISHERS_FULL
    433: (403, "InvalidToken.NotAllowed"),  # JANUS_VIDEOROOM_ERROR_UNAUTHORIZED (allowed list, PIN)
    436: (409, "InvalidUserId.InUse"),  # JANUS_VIDEOROOM_ERROR_ID_EXISTS
    437: (400, "InvalidSdp.Malformed"),  # JANUS_VIDEOROOM_ERROR_INVALID_SDP
    464: (400, "InvalidSdp.Malformed"),  # JANUS_ERROR_JSEP_UNKNOWN_TYPE
    465: (400, "InvalidSdp.Malformed"),  # JANUS_ERROR_JSEP_INVALID_SDP
}
PUBLISHERS: web.AppKey[Publishers] = web.AppKey("publishers", Publishers)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error answer in the REST API's shape."""
    body = {"code": code, "message": message, "field": None, "request_id": str(uuid.uuid4())}
    return web.json_response(body, status=status, headers=headers)


class RefusedError(Exception):
    """A request refused with an error answer (:func:`error`)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = error(status, code, message, headers)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RefusedError(
            401,
            "InvalidToken",
            "a publish token is required: Authorization: Bearer <token>",
            {"WWW-Authenticate": f'Bearer realm="{REALM}"'},
        )
    return token.strip()


def authorize(settings: EdgeSettings, request: web.Request) -> tuple[Claims, str]:
    """The verified claims and the token of a POST: a publish token of the path's channel.

    Raises:
        RefusedError: 401 ``InvalidToken``, 403 ``TokenExpired``, ``InvalidToken.Channel``,
            ``InvalidToken.Role`` or ``InvalidUserId.Reserved``.
    """
    token = _bearer(request)
    try:
        claims = verify_token(settings.token_secret, token, time.time(), settings.token_signature)
    except TokenError as exc:
        if exc.code == "TokenExpired":
            raise RefusedError(403, exc.code, exc.message) from None
        raise RefusedError(
            401,
            "InvalidToken",
            exc.message,
            {"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
        ) from None
    if claims.role is not Role.PUBLISH:
        raise RefusedError(
            403, "InvalidToken.Role", f"a {claims.role} token cannot publish: ask for a publish token"
        )
    app_id, channel_id = request.match_info["app_id"], request.match_info["channel_id"]
    if (claims.app_id, claims.channel_id) != (app_id, channel_id):
        raise RefusedError(403, "InvalidToken.Channel", "the token is for another channel")
    if claims.user_id.endswith(MIX_SUFFIX):
        raise RefusedError(
            403, "InvalidUserId.Reserved", f"UserIds ending in {MIX_SUFFIX!r} are reserved for a task's mix"
        )
    return claims, token


def _content_type(request: web.Request, wanted: str) -> None:
    if request.content_type.lower() != wanted:
        header = {"Accept-Post": SDP} if wanted == SDP else {"Accept-Patch": TRICKLE}
        raise RefusedError(415, "InvalidContentType", f"the body must be {wanted}", header)


async def _text(request: web.Request, settings: EdgeSettings) -> str:
    if (request.content_length or 0) > settings.max_body:
        raise RefusedError(413, "RequestTooLarge", f"the body is over {settings.max_body} bytes")
    body = await request.read()  # the app's client_max_size answers 413 beyond it
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise RefusedError(400, "InvalidSdp.Malformed", "the body is not UTF-8 text") from None


def janus_refusal(exc: JanusError) -> web.Response:
    """The answer to a Janus failure (see the table in the module docstring)."""
    if isinstance(exc, JanusUnreachableError):
        log.warning("Janus unavailable: %s", exc.reason)
        return error(
            503, "Janus.Unavailable", "the media server is not available", {"Retry-After": str(RETRY_AFTER)}
        )
    if exc.code in JANUS_ERRORS:
        status, code = JANUS_ERRORS[exc.code]
        headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
        return error(status, code, exc.reason, headers)
    if exc.code == 403:  # Janus refused the edge's own service token: its secret is not Janus'
        log.error("Janus refused the edge's credentials (is MPU_TOKEN_SECRET Janus' token_auth_secret?)")
        return error(503, "Janus.Refused", "the media server refused the edge's credentials")
    log.warning("Janus error %s: %s", exc.code, exc.reason)
    return error(502, "Janus.Error", f"the media server refused: {exc.reason}")


def location(resource: Resource) -> str:
    """A resource's URL (an absolute path)."""
    app_id, channel_id = quote(resource.app_id, safe=""), quote(resource.channel_id, safe="")
    return f"/v1/apps/{app_id}/channels/{channel_id}/whip/{resource.id}"


async def post_offer(request: web.Request) -> web.StreamResponse:
    """``POST`` an offer: publish (see the module docstring)."""
    publishers = request.app[PUBLISHERS]
    settings = publishers.settings
    claims, token = authorize(settings, request)
    _content_type(request, SDP)
    text = await _text(request, settings)
    try:
        offer = check_offer(text)
    except SdpError as exc:
        raise RefusedError(400, exc.code, exc.message) from None
    try:
        resource, answer = await publishers.publish(claims, token, text, offer)
    except EdgeBusyError as exc:
        raise RefusedError(503, "Edge.Busy", str(exc), {"Retry-After": str(RETRY_AFTER)}) from None
    except SdpError as exc:
        raise RefusedError(400, exc.code, exc.message) from None
    except JanusError as exc:
        return janus_refusal(exc)
    response = web.Response(
        status=201,
        text=answer,
        content_type=SDP,
        headers={"Location": location(resource), "ETag": resource.etag},
    )
    for link in request.app[PUBLISHERS].settings.ice_links:  # RFC 9725 4.6: STUN/TURN for the client
        response.headers.add("Link", link)
    return response


def _resource(request: web.Request) -> Resource:
    info = request.match_info
    resource = request.app[PUBLISHERS].get(info["resource_id"], info["app_id"], info["channel_id"])
    if resource is None:
        raise RefusedError(
            404, "InvalidResource.NotFound", "no such WHIP resource (it ended, or never existed)"
        )
    return resource


async def delete_resource(request: web.Request) -> web.StreamResponse:
    """``DELETE`` a resource: the publisher leaves."""
    resource = _resource(request)
    await request.app[PUBLISHERS].remove(resource.id, "DELETE")
    return web.Response(status=200)


async def patch_resource(request: web.Request) -> web.StreamResponse:
    """``PATCH`` a resource with trickle ICE candidates (no ICE restart)."""
    resource = _resource(request)
    if_match = request.headers.get("If-Match")
    if if_match is not None and if_match.strip() not in ("*", resource.etag):
        raise RefusedError(412, "PreconditionFailed", "If-Match does not match the resource's ETag")
    _content_type(request, TRICKLE)
    try:
        fragment = parse_trickle(await _text(request, request.app[PUBLISHERS].settings))
    except SdpError as exc:
        raise RefusedError(400, exc.code, exc.message) from None
    ufrag, pwd = fragment.ice_ufrag, fragment.ice_pwd
    if (ufrag is not None and ufrag != resource.offer.ice_ufrag) or (
        pwd is not None and pwd != resource.offer.ice_pwd
    ):
        raise RefusedError(422, "IceRestart.Unsupported", "ICE restarts are not supported: POST a new offer")
    try:
        await request.app[PUBLISHERS].trickle(resource, fragment)
    except JanusSessionLostError:
        raise RefusedError(
            404, "InvalidResource.NotFound", "the WHIP resource ended (Janus lost it)"
        ) from None
    except JanusError as exc:
        return janus_refusal(exc)
    return web.Response(status=204)


async def options_endpoint(request: web.Request) -> web.StreamResponse:
    """``OPTIONS`` of the endpoint (RFC 9725; CORS preflight)."""
    return web.Response(status=204, headers={"Accept-Post": SDP, "Allow": "OPTIONS, POST"})


async def options_resource(request: web.Request) -> web.StreamResponse:
    """``OPTIONS`` of a resource (CORS preflight)."""
    return web.Response(status=204, headers={"Accept-Patch": TRICKLE, "Allow": "OPTIONS, PATCH, DELETE"})


async def health(request: web.Request) -> web.StreamResponse:
    """``GET /healthz``: the edge answers, and how many publishers it holds."""
    return web.json_response({"status": "ok", "publishers": len(request.app[PUBLISHERS].resources)})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals and aiohttp's own errors (404, 405, 413) in the one error shape; unexpected
    exceptions as 500 ``InternalError`` (logged without the request's headers or body)."""
    try:
        return await handler(request)
    except RefusedError as refused:
        return refused.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        codes = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        return error(exc.status, codes.get(exc.status, "Error"), exc.reason, headers)
    except Exception:
        log.exception("WHIP %s %s failed", request.method, request.match_info.route.resource)
        return error(500, "InternalError", "internal error")


async def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in CORS.items():
        response.headers.setdefault(name, value)


def create_app(
    settings: EdgeSettings, session_factory: Callable[..., JanusSession] = JanusSession
) -> web.Application:
    """The edge's aiohttp application; its publishers are removed when it shuts down."""
    app = web.Application(client_max_size=settings.max_body, middlewares=[errors_middleware])
    publishers = Publishers(settings, session_factory)
    app[PUBLISHERS] = publishers
    app.router.add_post(ENDPOINT, post_offer)
    app.router.add_route("OPTIONS", ENDPOINT, options_endpoint)
    app.router.add_delete(RESOURCE, delete_resource)
    app.router.add_patch(RESOURCE, patch_resource)
    app.router.add_route("OPTIONS", RESOURCE, options_resource)
    app.router.add_get("/healthz", health)
    app.on_response_prepare.append(_add_cors)

    async def close_publishers(_: web.Application) -> None:
        await publishers.close_all()

    app.on_shutdown.append(close_publishers)
    return app


def run(settings: EdgeSettings, print_fn: Callable[[str], Any] = print) -> None:
    """Serve the edge until SIGINT/SIGTERM, then remove every publisher.

    Raises:
        OSError: the address is taken.
    """
    print_fn(
        f"mpu edge: WHIP on http://{settings.host}:{settings.port}{ENDPOINT}, Janus at {settings.janus_url}"
    )
    # No access log: a resource's URL is its credential.
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None, print=None)
