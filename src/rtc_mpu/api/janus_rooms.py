"""A small synchronous client of Janus' HTTP API for the API process: it keeps channels' VideoRoom rooms
and their ``allowed`` lists (publish tokens, :mod:`rtc_mpu.api.tokens`).

One short Janus session per use (:meth:`JanusRooms.session`): ``create`` with a service token
(:func:`rtc_mpu.spec.tokens.mint_service_token`), ``attach`` ``janus.plugin.videoroom``, the plugin's
synchronous requests (``exists``, ``create``, ``allowed``: Janus answers them in the HTTP response,
so no long poll is needed), then ``destroy``. Every HTTP call has a timeout, and a whole session a
deadline (:data:`SESSION_SECONDS`). Standard library only (``urllib``): the API process loads no
aiohttp (docs/architecture.md).

Rooms are made as the stack and the demo publisher make them (:func:`rtc_mpu.stack.publisher.ensure_room`:
the same bitrate cap, publishers limit and codecs), plus the token mode's admin key, room secret,
PIN and an ``allowed`` list (:mod:`rtc_mpu.spec.tokens`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

from rtc_mpu.spec import tokens

log = logging.getLogger(__name__)

#: Seconds allowed for one HTTP call to Janus.
REQUEST_SECONDS = 5.0
#: Seconds allowed for a whole session (create, attach, the requests, destroy).
SESSION_SECONDS = 10.0
#: Seconds allowed for the closing ``destroy`` (best effort).
DESTROY_SECONDS = 2.0
#: Largest Janus answer read, bytes (an ``allowed`` answer lists every token of the room).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Most publishers in a channel's room (the VideoRoom ``publishers``; the demo publisher's limit).
ROOM_PUBLISHERS = 16
#: Per-publisher bitrate cap (REMB) of a channel's room, bit/s: what a mix needs of a publisher
#: (docs/architecture.md: a 128 kbit/s cap drives browsers down to 320x240 at 7-10 fps).
ROOM_BITRATE = 1_500_000
#: Video codecs a channel's room takes (WHIP clients such as OBS and FFmpeg send H.264).
ROOM_VIDEOCODEC = "vp8,h264"
#: Audio codec a channel's room takes.
ROOM_AUDIOCODEC = "opus"
#: VideoRoom error code: the room already exists (JANUS_VIDEOROOM_ERROR_ROOM_EXISTS).
ERROR_ROOM_EXISTS = 427

JsonDict = dict[str, Any]


class JanusUnavailableError(Exception):
    """Janus did not answer: connection refused, timeout, an HTTP error status or a malformed answer.

    Attributes:
        reason: what happened (no secret or token in it).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JanusRefusedError(Exception):
    """Janus, or its VideoRoom plugin, answered with an error (a wrong token, admin key or room
    secret: the API's ``MPU_TOKEN_SECRET`` is not Janus' ``token_auth_secret``).

    Attributes:
        code: Janus' or the plugin's error code (0 when it gave none).
        reason: Janus' explanation.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


def _error_of(reply: JsonDict) -> JanusRefusedError | None:
    """The error a Janus answer carries (core ``error``, or the plugin's ``error_code``), or None."""
    if reply.get("janus") == "error":
        error = reply.get("error")
        if isinstance(error, dict):
            return JanusRefusedError(_int(error.get("code")), str(error.get("reason", "unknown error")))
        return JanusRefusedError(0, str(error))
    data = plugin_data(reply)
    if "error_code" in data or "error" in data:
        return JanusRefusedError(_int(data.get("error_code")), str(data.get("error", "plugin error")))
    return None


def _int(value: object) -> int:
    """A JSON integer of Janus' answer (an id, an error code), or 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _id_of(reply: JsonDict, what: str) -> int:
    """The id a ``create`` or ``attach`` answer gives (``data.id``).

    Raises:
        JanusUnavailableError: the answer has none.
    """
    data = reply.get("data")
    value = _int(data.get("id")) if isinstance(data, dict) else 0
    if value <= 0:
        raise JanusUnavailableError(f"{what!r}: Janus answered without an id")
    return value


def plugin_data(reply: JsonDict) -> JsonDict:
    """A plugin answer's data (``plugindata.data``), or ``{}``."""
    plugindata = reply.get("plugindata")
    data = plugindata.get("data") if isinstance(plugindata, dict) else None
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class JanusRooms:
    """Janus as the API sees it.

    Attributes:
        url: the HTTP API, e.g. ``http://127.0.0.1:8088/janus`` (``MPU_JANUS_URL``).
        token_secret: the channel-token secret (``MPU_TOKEN_SECRET``, Janus' ``token_auth_secret``).
        token_signature: Janus' signed-token scheme (:data:`rtc_mpu.spec.tokens.SIGNATURES`).
        api_secret: Janus' ``api_secret`` (``MPU_JANUS_API_SECRET``), if it has one.
    """

    url: str
    token_secret: str
    token_signature: str = "sha1"
    api_secret: str | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[RoomsHandle]:
        """A Janus session with a VideoRoom handle, destroyed afterwards (best effort).

        Raises:
            JanusUnavailableError: Janus did not answer in time.
            JanusRefusedError: Janus refused the session or the handle (e.g. it does not accept the
                service token: another secret or signature scheme).
        """
        deadline = time.monotonic() + SESSION_SECONDS
        token = tokens.mint_service_token(self.token_secret, time.time(), self.token_signature)
        base = self.url.rstrip("/")
        session_id = _id_of(self._post(base, {"janus": "create"}, token, deadline), "create")
        try:
            attached = self._post(
                f"{base}/{session_id}", {"janus": "attach", "plugin": tokens.PLUGIN}, token, deadline
            )
            handle_id = _id_of(attached, "attach")
            yield RoomsHandle(self, f"{base}/{session_id}/{handle_id}", token, deadline)
        finally:
            try:
                self._post(
                    f"{base}/{session_id}",
                    {"janus": "destroy"},
                    token,
                    min(deadline, time.monotonic() + DESTROY_SECONDS),
                )
            except (JanusUnavailableError, JanusRefusedError) as exc:
                log.warning("destroying Janus session %s failed: %s", session_id, exc)

    def _post(self, url: str, payload: JsonDict, token: str, deadline: float) -> JsonDict:
        """POST one Janus request; Janus' answer (a JSON object).

        Raises:
            JanusUnavailableError: no answer before ``deadline`` (and within :data:`REQUEST_SECONDS`),
                an HTTP error status, or an answer that is not a JSON object.
            JanusRefusedError: Janus answered with an error.
        """
        timeout = min(REQUEST_SECONDS, deadline - time.monotonic())
        if timeout <= 0:
            raise JanusUnavailableError(f"no time left for {payload.get('janus')!r}")
        body: JsonDict = {**payload, "transaction": secrets.token_hex(8), "token": token}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        what = payload.get("janus")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise JanusUnavailableError(f"{what!r}: HTTP {exc.code}") from None
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise JanusUnavailableError(f"{what!r}: {reason.__class__.__name__}: {reason}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise JanusUnavailableError(f"{what!r}: an answer over {MAX_ANSWER_BYTES} bytes")
        try:
            reply = json.loads(raw)
        except ValueError:
            raise JanusUnavailableError(f"{what!r}: an answer that is not JSON") from None
        if not isinstance(reply, dict):
            raise JanusUnavailableError(f"{what!r}: an answer that is not a JSON object")
        error = _error_of(reply)
        if error is not None:
            raise error
        return reply


@dataclass(frozen=True)
class RoomsHandle:
    """A VideoRoom handle in a session of :meth:`JanusRooms.session`."""

    rooms: JanusRooms
    url: str
    token: str
    deadline: float

    def request(self, body: JsonDict) -> JsonDict:
        """A synchronous VideoRoom request; the plugin's answer data.

        Raises:
            JanusUnavailableError, JanusRefusedError: as :meth:`JanusRooms._post` (a plugin error is
                a JanusRefusedError with the plugin's code).
        """
        reply = self.rooms._post(self.url, {"janus": "message", "body": body}, self.token, self.deadline)
        if reply.get("janus") != "success":
            raise JanusUnavailableError(f"{body.get('request')!r}: Janus answered {reply.get('janus')!r}")
        return plugin_data(reply)

    def ensure_room(self, room: str) -> bool:
        """Make sure the channel's room ``room`` exists; True if this call created it (with an empty
        ``allowed`` list: nobody publishes until a token is added).

        Raises:
            JanusUnavailableError, JanusRefusedError: as :meth:`request` (a room created meanwhile by
                someone else is not an error).
        """
        if self.request({"request": "exists", "room": room}).get("exists") is True:
            return False
        secret = self.rooms.token_secret
        try:
            self.request(
                {
                    "request": "create",
                    "room": room,
                    "permanent": False,
                    "description": f"rtc-mpu channel {room}",
                    "admin_key": tokens.admin_key(secret),
                    "secret": tokens.room_secret(secret, room),
                    "pin": tokens.room_pin(secret, room),
                    "allowed": [],
                    "publishers": ROOM_PUBLISHERS,
                    "bitrate": ROOM_BITRATE,
                    "videocodec": ROOM_VIDEOCODEC,
                    "audiocodec": ROOM_AUDIOCODEC,
                    "notify_joining": True,
                }
            )
        except JanusRefusedError as exc:
            if exc.code != ERROR_ROOM_EXISTS:
                raise
            return False
        return True

    def edit_allowed(self, room: str, action: str, entries: Sequence[str]) -> list[str]:
        """Add (``action="add"``) or remove (``"remove"``) ``entries`` of the room's ``allowed`` list;
        the list as Janus then holds it (an empty ``add`` only reads it). Removing an entry that is not
        there is not an error.

        Raises:
            JanusUnavailableError, JanusRefusedError: as :meth:`request` (426: no such room; 433: the
                room secret is wrong).
        """
        data = self.request(
            {
                "request": "allowed",
                "action": action,
                "room": room,
                "secret": tokens.room_secret(self.rooms.token_secret, room),
                "allowed": list(entries),
            }
        )
        listed = data.get("allowed")
        return [str(entry) for entry in listed] if isinstance(listed, list) else []
