"""Channel tokens: what lets one user publish into (or watch) one channel until an expiry.

A token is a Janus *signed token* (Janus' ``token_auth_secret`` mode) that also carries our claims,
so one string is checked twice with one shared secret (``MPU_TOKEN_SECRET``):

* by Janus, on every request of a session (``token`` of the Janus API): the expiry and the HMAC,
  and that it grants the VideoRoom plugin. Janus 1.1 (Debian's) signs the part before ``:`` with
  HMAC-SHA1 and standard base64 (``src/auth.c``, ``janus_auth_check_signature``); later Janus
  versions switched to HMAC-SHA256 in base64url, see :data:`SIGNATURES`.
* by us (:func:`verify_token`): the same signature, then the claims: which app, channel, user and
  role. The WHIP endpoint and the pages enforce the user; Janus cannot (it binds a token to a room,
  through the room's ``allowed`` list, and to an expiry, never to a publisher id).

Format: ``<expiry>,janus,janus.plugin.videoroom,mpu1.<claims>:<signature>`` where ``<expiry>`` is
Unix seconds and ``<claims>`` the base64url (unpadded) JSON ``{"a": app, "c": channel, "u": user,
"r": role, "p": room PIN}``. Janus ignores the fourth field (it only looks for the plugin's package
name among the fields after the realm). The claims are signed, not secret: a client reads its room
and PIN from its own token (:func:`read_claims`).

Rooms: each channel's VideoRoom room gets a PIN and a room secret derived from the shared secret
(:func:`room_pin`, :func:`room_secret`), so only holders of the secret (the API, the workers) manage
rooms, and a subscriber (which Janus 1.1 does not check against ``allowed``) needs the PIN our API
hands only to holders of a token for that channel.

This module is plain data and the standard library; nothing here talks to Janus.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from rtc_mpu.spec.text_rules import char_problem

#: Janus' realm and the plugin a channel token grants.
REALM = "janus"
PLUGIN = "janus.plugin.videoroom"
#: Prefix of our claims field (its version).
CLAIMS_PREFIX = "mpu1."
#: Shortest and longest token lifetime an app may ask for, seconds.
TTL_SECONDS = (60, 86400)
#: The lifetime of the workers' own tokens (minted afresh for every connection), seconds.
SERVICE_TTL_SECONDS = 86400
#: Longest id (AppId, ChannelId, UserId) in a token, characters (as the task spec).
MAX_ID_LENGTH = 64
#: Suffix of the publisher id a task's mix is published under; no user may take it.
MIX_SUFFIX = ".mix"
#: Signature schemes of Janus versions: Janus 1.1.x (HMAC-SHA1, base64) and later (HMAC-SHA256, base64url).
SIGNATURES = ("sha1", "sha256url")
_ID = re.compile(r"[^\s,:]+")
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,256}")
_EXPIRY = re.compile(r"[0-9]{1,11}")


class Role(enum.StrEnum):
    """What a token allows: ``publish`` into the channel, ``subscribe`` to it (watch), or the
    workers' own ``service`` credentials (any channel, minted from the secret, never handed out)."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    SERVICE = "service"


class TokenError(ValueError):
    """A token was refused.

    Attributes:
        code: ``InvalidToken`` (malformed, forged or signed with another secret: HTTP 401) or
            ``TokenExpired`` (HTTP 403).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Claims:
    """What a verified token says.

    Attributes:
        app_id, channel_id: the channel (``*`` for a service token: any).
        user_id: the publisher or viewer id (``*`` for a service token).
        role: see :class:`Role`.
        expires_at: Unix seconds.
    """

    app_id: str
    channel_id: str
    user_id: str
    role: Role
    expires_at: int
    room_pin: str = ""

    @property
    def room(self) -> str:
        """The channel's VideoRoom room id (:func:`room_name`)."""
        return room_name(self.app_id, self.channel_id)

    def allows(self, app_id: str, channel_id: str) -> bool:
        """Whether the token is for this channel (a service token is for every channel)."""
        if self.role is Role.SERVICE:
            return True
        return (self.app_id, self.channel_id) == (app_id, channel_id)

    @property
    def expires_at_iso(self) -> str:
        """The expiry as ISO 8601 UTC (``2026-12-01T10:15:00Z``)."""
        return datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def room_name(app_id: str, channel_id: str) -> str:
    """The VideoRoom room id (a string) of a channel: ``"<AppId>:<ChannelId>"``."""
    return f"{app_id}:{channel_id}"


def check_id(value: object, name: str) -> str:
    """Validate an AppId, ChannelId or UserId for a token: 1..64 characters, no control or bidi
    characters, no whitespace, ``,`` or ``:`` (they separate a token's fields).

    Raises:
        ValueError: the reason, naming ``name``.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"{name} must be a string of 1..{MAX_ID_LENGTH} characters")
    problem = char_problem(value)
    if problem:
        raise ValueError(f"{name} {problem}")
    if not _ID.fullmatch(value):
        raise ValueError(f"{name} must not contain whitespace, ',' or ':'")
    return value


def check_secret(secret: str) -> str:
    """Validate the shared token secret (``MPU_TOKEN_SECRET``): 16-256 characters of ``A-Z a-z 0-9 _ -``
    (it is written into Janus' config file and keys HMACs; ``secrets.token_urlsafe(32)`` makes one).

    Raises:
        ValueError: it is too short, too long, or has other characters.
    """
    if not _SECRET.fullmatch(secret):
        raise ValueError("MPU_TOKEN_SECRET must be 16-256 characters of A-Z, a-z, 0-9, '_' and '-'")
    return secret


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(secret: str, data: str, scheme: str) -> str:
    if scheme == "sha1":
        return base64.b64encode(hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()).decode()
    if scheme == "sha256url":
        return _b64url(hmac.new(secret.encode(), data.encode(), hashlib.sha256).digest())
    raise ValueError(f"unknown signature scheme {scheme!r}; use one of {', '.join(SIGNATURES)}")


def mint_token(
    secret: str,
    app_id: str,
    channel_id: str,
    user_id: str,
    role: Role,
    expires_at: int,
    scheme: str = "sha1",
) -> str:
    """A token for ``user_id`` in the channel with ``role`` until ``expires_at`` (Unix seconds).

    Raises:
        ValueError: an id is invalid (:func:`check_id`), the secret is empty, or the scheme unknown.
    """
    if not secret:
        raise ValueError("the token secret is empty")
    if role is not Role.SERVICE:
        for value, name in ((app_id, "AppId"), (channel_id, "ChannelId"), (user_id, "UserId")):
            check_id(value, name)
    pin = "" if role is Role.SERVICE else room_pin(secret, room_name(app_id, channel_id))
    claims = json.dumps(
        {"a": app_id, "c": channel_id, "u": user_id, "r": str(role), "p": pin}, separators=(",", ":")
    )
    data = f"{int(expires_at)},{REALM},{PLUGIN},{CLAIMS_PREFIX}{_b64url(claims.encode())}"
    return f"{data}:{_sign(secret, data, scheme)}"


def mint_service_token(secret: str, now: float, scheme: str = "sha1") -> str:
    """The workers' own credentials: a ``service`` token for every channel, valid
    :data:`SERVICE_TTL_SECONDS` from ``now`` (Unix seconds)."""
    return mint_token(secret, "*", "*", "*", Role.SERVICE, int(now) + SERVICE_TTL_SECONDS, scheme)


def verify_token(secret: str, token: object, now: float, scheme: str = "sha1") -> Claims:
    """Check a token's signature and expiry and return its claims.

    Raises:
        TokenError: ``InvalidToken`` (not a string, malformed, forged, another secret) or
            ``TokenExpired`` (validly signed but past its expiry at ``now``, Unix seconds).
    """
    if not isinstance(token, str) or len(token) > 2048 or ":" not in token:
        raise TokenError("InvalidToken", "the token is malformed")
    data, _, signature = token.rpartition(":")
    if not hmac.compare_digest(signature.encode(), _sign(secret, data, scheme).encode()):
        raise TokenError("InvalidToken", "the token's signature is not valid")
    claims = read_claims(token)
    if now > claims.expires_at:
        raise TokenError("TokenExpired", f"the token expired at {claims.expires_at_iso}")
    return claims


def read_claims(token: str) -> Claims:
    """A token's claims *without* checking its signature or expiry: for a client reading its own
    room and PIN. Never use it to decide access (:func:`verify_token` does).

    Raises:
        TokenError: ``InvalidToken``, the token is malformed.
    """
    data = token.rpartition(":")[0]
    fields = data.split(",")
    if (
        len(fields) != 4
        or fields[1] != REALM
        or fields[2] != PLUGIN
        or not fields[3].startswith(CLAIMS_PREFIX)
    ):
        raise TokenError("InvalidToken", "the token is not a channel token")
    if not _EXPIRY.fullmatch(fields[0]):  # Unix seconds before 5138; int() takes " 5", "5_0", other digits
        raise TokenError("InvalidToken", "the token's expiry is malformed")
    try:
        expires_at = int(fields[0])
        encoded = fields[3][len(CLAIMS_PREFIX) :]
        raw = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        return Claims(
            str(raw["a"]), str(raw["c"]), str(raw["u"]), Role(raw["r"]), expires_at, str(raw.get("p", ""))
        )
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):  # deeply nested JSON
        raise TokenError("InvalidToken", "the token's claims are malformed") from None


def _derived(secret: str, purpose: str, room: str) -> str:
    return hmac.new(secret.encode(), f"{purpose}:{room}".encode(), hashlib.sha256).hexdigest()[:24]


def room_pin(secret: str, room: str) -> str:
    """The PIN of a channel's room (needed to join it as publisher or subscriber), from the secret."""
    return _derived(secret, "pin", room)


def room_secret(secret: str, room: str) -> str:
    """The room's ``secret`` (needed to edit or destroy it and its ``allowed`` list), from the secret."""
    return _derived(secret, "room-secret", room)


def admin_key(secret: str) -> str:
    """The VideoRoom ``admin_key`` (needed to create rooms), from the secret."""
    return _derived(secret, "admin-key", "videoroom")
