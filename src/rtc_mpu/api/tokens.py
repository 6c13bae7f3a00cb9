"""Channel tokens over JSON REST (issue 14): ``POST /v1/apps/{app_id}/tokens`` gives an app backend a
token that lets one user publish into (or watch) one channel until an expiry, like ZEGO's token,
Tencent's UserSig or Agora's token.

Same guards as the other REST resources (:func:`rtc_mpu.api.auth.guard_app_request`: HTTP Basic with
an access key allowed for the AppId, its rate limit, the AppId's form, a JSON object body of limited
size), then the body's schema (:class:`TokenIn`).

A token is a Janus signed token carrying our claims (:mod:`rtc_mpu.spec.tokens`). Janus checks its
signature and expiry on every request of a session; a channel's room checks a publisher's ``join``
against its ``allowed`` list, which this module keeps:

* ``role: "publish"``: the channel's room is created in Janus if missing (:mod:`rtc_mpu.api.janus_rooms`:
  admin key, room secret, PIN, an empty ``allowed`` list, :data:`~rtc_mpu.api.janus_rooms.ROOM_PUBLISHERS`
  publishers, the bitrate cap and codecs of :func:`rtc_mpu.stack.publisher.ensure_room`), the token is
  added to its ``allowed`` list, and the room's publish tokens that have expired are removed from it in
  the same Janus session. Every publish token issued is kept in Redis with its expiry (a sorted set per
  room, :meth:`TokenIssuer.key`), which is how the clean-up knows them; when the room had to be created
  (Janus restarted), the room's tokens that are still valid are put back on its list too.
* ``role: "subscribe"``: only minted. Janus 1.1 does not check subscribers against ``allowed``: a
  subscriber needs a valid token for its session and the room's PIN, which this API hands out only
  with a token of the channel.

Janus cannot bind a token to a UserId (only to a room and an expiry): the UserId is enforced where
we can see it (the WHIP endpoint, our pages).

Settings (app config keys, else environment variables; :class:`TokenSettings`): ``MPU_TOKEN_SECRET``
(Janus' ``token_auth_secret``; unset: the endpoint answers 501 ``Tokens.NotConfigured``),
``MPU_JANUS_URL``, ``MPU_JANUS_TOKEN_SIGNATURE``, ``MPU_JANUS_API_SECRET``; ``TOKEN_CLOCK`` (tests
only): ``() -> float``, the Unix time tokens are minted at.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from apiflask import APIBlueprint, Schema
from apiflask.fields import Integer, String
from apiflask.validators import Length, OneOf, Range
from flask import current_app
from marshmallow import ValidationError

from rtc_mpu.api.auth import guard_app_request
from rtc_mpu.api.janus_rooms import (
    ROOM_PUBLISHERS,
    JanusRefusedError,
    JanusRooms,
    JanusUnavailableError,
)
from rtc_mpu.api.schemas import InputSchema
from rtc_mpu.api.service import ServiceError
from rtc_mpu.api.tasks import LIMIT_ERRORS
from rtc_mpu.spec.tokens import (
    MAX_ID_LENGTH,
    MIX_SUFFIX,
    SIGNATURES,
    TTL_SECONDS,
    Claims,
    Role,
    check_id,
    check_secret,
    mint_token,
    room_name,
    room_pin,
)

log = logging.getLogger(__name__)

bp = APIBlueprint("tokens", __name__, url_prefix="/v1", tag="Channel tokens")
bp.before_request(guard_app_request)

#: Janus' HTTP API as the API reaches it, unless ``MPU_JANUS_URL`` says otherwise (the workers' default).
DEFAULT_JANUS_URL = "http://127.0.0.1:8088/janus"
#: Seconds a room's record of publish tokens is kept after the last of them expired (Redis key expiry):
#: until then an issuance for the room removes the expired ones from Janus' ``allowed`` list.
KEEP_EXPIRED_SECONDS = 7 * 86400
#: Most expired tokens removed from a room's ``allowed`` list per issuance (the rest at the next one).
MAX_REMOVED = 1000
#: Most still-valid tokens put back on the list of a room that had to be created again (the
#: longest-lived first).
MAX_RESTORED = 1000
#: Janus VideoRoom's "no such room" error code (a room gone with Janus' restart has no list to edit).
ERROR_NO_SUCH_ROOM = 426
#: Seconds between two sweeps of expired publish tokens (:class:`TokenSweeper`).
SWEEP_INTERVAL_SECONDS = 60.0
#: Errors of ``POST /v1/apps/{app_id}/tokens`` (documented in the OpenAPI document).
TOKEN_ERRORS = {
    400: "Missing or invalid parameter: MissingParameter or InvalidParameter, with field channel_id, "
    "user_id (also: ends in .mix), ttl_seconds (an integer 60-86400) or role; an unknown field; a "
    "malformed AppId (field app_id); a JSON body of more than 2000 values or nested deeper than 8",
    413: "Request body larger than 64 KiB (RequestTooLarge)",
    **LIMIT_ERRORS,
    501: "Tokens.NotConfigured: the API has no MPU_TOKEN_SECRET (Janus runs without token authentication)",
    503: "ServiceUnavailable (Redis), Janus.Unavailable (Janus did not answer in time) or Janus.Refused "
    "(Janus refused the API's requests: MPU_TOKEN_SECRET or MPU_JANUS_TOKEN_SIGNATURE differs from "
    "Janus'); no token is issued",
}

# ZADD the new token with its expiry, keep the key until KEEP_EXPIRED_SECONDS after the last expiry,
# and answer the expired ones (score < now), at most MAX_REMOVED.
# KEYS[1]: the room's set; ARGV: token, expires_at, now, keep seconds, limit.
_RECORD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(last[2])) + tonumber(ARGV[4]))
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[5]))
"""


@dataclass(frozen=True)
class TokenSettings:
    """What the tokens endpoint needs.

    Attributes:
        secret: the channel-token secret (``MPU_TOKEN_SECRET``; Janus' ``token_auth_secret``), or None:
            tokens are not issued (501 ``Tokens.NotConfigured``).
        signature: Janus' signed-token scheme (``MPU_JANUS_TOKEN_SIGNATURE``: ``sha1`` for Janus 1.1,
            the default, or ``sha256url`` for later versions).
        janus_url: Janus' HTTP API as the API reaches it (``MPU_JANUS_URL``, default
            :data:`DEFAULT_JANUS_URL`).
        janus_api_secret: Janus' ``api_secret`` (``MPU_JANUS_API_SECRET``), if it has one.
    """

    secret: str | None = None
    signature: str = "sha1"
    janus_url: str = DEFAULT_JANUS_URL
    janus_api_secret: str | None = None

    @classmethod
    def from_settings(cls, config: Mapping[str, Any], environ: Mapping[str, str]) -> TokenSettings:
        """Read the settings from ``config`` (the app's), else ``environ``; empty values are unset.

        Raises:
            ValueError: ``MPU_TOKEN_SECRET`` is not a valid secret
                (:func:`rtc_mpu.spec.tokens.check_secret`), or ``MPU_JANUS_TOKEN_SIGNATURE`` is not
                one of :data:`rtc_mpu.spec.tokens.SIGNATURES`.
        """

        def setting(name: str) -> str | None:
            value = config[name] if name in config else environ.get(name)
            return str(value) if value else None

        secret = setting("MPU_TOKEN_SECRET")
        signature = setting("MPU_JANUS_TOKEN_SIGNATURE") or "sha1"
        if signature not in SIGNATURES:
            raise ValueError(
                f"MPU_JANUS_TOKEN_SIGNATURE must be one of {', '.join(SIGNATURES)}, got {signature!r}"
            )
        return cls(
            secret=check_secret(secret) if secret is not None else None,
            signature=signature,
            janus_url=setting("MPU_JANUS_URL") or DEFAULT_JANUS_URL,
            janus_api_secret=setting("MPU_JANUS_API_SECRET"),
        )


@dataclass(frozen=True)
class IssuedToken:
    """A token and what a client needs to join with it.

    Attributes:
        token: the token (Janus' ``token`` on every request, and the ``token`` of a publisher's join).
        claims: what it says (its room, PIN and expiry).
    """

    token: str
    claims: Claims


class TokenIssuer:
    """Mints channel tokens and keeps the rooms' ``allowed`` lists in Janus.

    Args:
        settings: :class:`TokenSettings`.
        redis_target: ``() -> (redis client, key prefix)``: the task store's (made on first use).
        clock: the Unix time tokens are minted at (seconds).
    """

    def __init__(
        self,
        settings: TokenSettings,
        redis_target: Callable[[], tuple[redis.Redis, str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._redis = redis_target
        self._clock = clock

    @staticmethod
    def key(prefix: str, room: str) -> str:
        """The Redis key of a room's publish tokens: a sorted set, token -> expiry (Unix seconds)."""
        return f"{prefix}:tokens:{room}"

    def issue(self, app_id: str, channel_id: str, user_id: str, role: Role, ttl_seconds: int) -> IssuedToken:
        """A token for ``user_id`` in the channel with ``role``, valid ``ttl_seconds`` from now.

        For ``Role.PUBLISH`` the channel's room exists in Janus afterwards and lists the token (the
        module docstring); nothing is returned unless it does. The ids and the TTL are validated by
        the request's schema (:class:`TokenIn`).

        Raises:
            ServiceError: 501 ``Tokens.NotConfigured`` (no ``MPU_TOKEN_SECRET``); 503
                ``ServiceUnavailable`` (Redis), ``Janus.Unavailable`` (no answer in time),
                ``Janus.Refused`` (Janus answered an error). After a 503 from Janus the token is
                not on the room's list, or, if Janus applied the addition without answering in time,
                it is recorded in Redis and removed from the list after its expiry like any other.
            ValueError: an id is invalid or ``role`` is ``Role.SERVICE`` (the schema refuses both).
        """
        secret = self.settings.secret
        if secret is None:
            raise ServiceError(
                501,
                "Tokens.NotConfigured",
                "channel tokens are not configured: set MPU_TOKEN_SECRET (Janus' token_auth_secret)",
            )
        if role is Role.SERVICE:
            raise ValueError("service tokens are never issued")
        now = int(self._clock())
        expires_at = now + ttl_seconds
        token = mint_token(secret, app_id, channel_id, user_id, role, expires_at, self.settings.signature)
        room = room_name(app_id, channel_id)
        claims = Claims(app_id, channel_id, user_id, role, expires_at, room_pin(secret, room))
        if role is Role.PUBLISH:
            self._allow(secret, room, token, expires_at, now)
        log.info("%s token for %s in %s until %s", role, user_id, room, claims.expires_at_iso)
        return IssuedToken(token, claims)

    def _allow(self, secret: str, room: str, token: str, expires_at: int, now: int) -> None:
        """Record ``token`` for ``room``, make sure the room exists, remove its expired tokens from the
        ``allowed`` list and add ``token`` (and, to a room created now, the room's still-valid tokens).

        Raises:
            ServiceError: 503 (Redis, Janus), as :meth:`issue`.
        """
        try:
            client, prefix = self._redis()
            key = self.key(prefix, room)
            expired = [
                _text(t)
                for t in client.register_script(_RECORD)(
                    keys=[key], args=[token, expires_at, now, KEEP_EXPIRED_SECONDS, MAX_REMOVED]
                )
            ]
        except redis.exceptions.RedisError as exc:
            log.warning("tokens: Redis unavailable: %s", exc.__class__.__name__)
            raise ServiceError(
                503, "ServiceUnavailable", "Redis is unavailable; no token was issued"
            ) from None
        rooms = JanusRooms(
            self.settings.janus_url, secret, self.settings.signature, self.settings.janus_api_secret
        )
        try:
            with rooms.session() as handle:
                created = handle.ensure_room(room)
                entries = [token]
                if created:
                    entries += [t for t in self._still_valid(client, key, now) if t != token]
                elif expired:
                    handle.edit_allowed(room, "remove", expired)
                handle.edit_allowed(room, "add", entries)
        except JanusUnavailableError as exc:
            log.warning("tokens: Janus at %s did not answer: %s", self.settings.janus_url, exc.reason)
            raise ServiceError(
                503, "Janus.Unavailable", f"Janus did not answer ({exc.reason}); no token was issued"
            ) from None
        except JanusRefusedError as exc:
            log.warning("tokens: Janus refused: %s", exc)
            raise ServiceError(
                503,
                "Janus.Refused",
                f"Janus refused ({exc.code}: {exc.reason}); no token was issued. Does MPU_TOKEN_SECRET "
                "match Janus' token_auth_secret, and MPU_JANUS_TOKEN_SIGNATURE its version?",
            ) from None
        if expired:
            try:
                client.zrem(key, *expired)
            except redis.exceptions.RedisError as exc:  # removed from Janus; removed again next time
                log.warning("tokens: Redis unavailable after the clean-up: %s", exc.__class__.__name__)

    def sweep(self) -> int:
        """Take every expired publish token off its room's ``allowed`` list (Janus checks a publisher's
        join against the list only, not the listed token's expiry) and forget it. Rooms whose Janus
        edit fails keep their tokens for the next sweep. Returns how many tokens were removed.

        Raises:
            redis.exceptions.RedisError: Redis is unavailable (nothing is removed).
        """
        secret = self.settings.secret
        if secret is None:
            return 0
        client, prefix = self._redis()
        now = int(self._clock())
        removed = 0
        rooms = JanusRooms(
            self.settings.janus_url, secret, self.settings.signature, self.settings.janus_api_secret
        )
        marker = f"{prefix}:tokens:"
        for raw_key in client.scan_iter(match=f"{marker}*", count=200):
            key = _text(raw_key)
            expired = [_text(t) for t in client.zrangebyscore(key, "-inf", now - 1, start=0, num=MAX_REMOVED)]
            if not expired:
                continue
            room = key[len(marker) :]
            try:
                with rooms.session() as handle:
                    handle.edit_allowed(room, "remove", expired)
            except JanusRefusedError as exc:
                if exc.code != ERROR_NO_SUCH_ROOM:
                    log.warning("tokens: sweeping %s refused: %s", room, exc)
                    continue
            except JanusUnavailableError as exc:
                log.warning("tokens: Janus did not answer while sweeping: %s", exc.reason)
                return removed
            client.zrem(key, *expired)
            removed += len(expired)
        if removed:
            log.info("tokens: %d expired publish tokens taken off their rooms' lists", removed)
        return removed

    @staticmethod
    def _still_valid(client: redis.Redis, key: str, now: int) -> list[str]:
        """The room's recorded tokens that have not expired at ``now``, longest-lived first.

        Raises:
            ServiceError: 503 ``ServiceUnavailable``, Redis is unavailable.
        """
        try:
            found = client.zrevrangebyscore(key, "+inf", now, start=0, num=MAX_RESTORED)
        except redis.exceptions.RedisError:
            raise ServiceError(
                503, "ServiceUnavailable", "Redis is unavailable; no token was issued"
            ) from None
        return [_text(t) for t in found]


def _text(value: object) -> str:
    """A Redis answer's member as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_validator(name: str, publisher: bool = False) -> Callable[[Any], None]:
    """A marshmallow validator of an id in a token (:func:`rtc_mpu.spec.tokens.check_id`); a UserId
    (``publisher``) may not end in :data:`rtc_mpu.spec.tokens.MIX_SUFFIX` (a task's mix publishes under
    ``<TaskId>.mix``)."""

    def validate(value: Any) -> None:
        try:
            check_id(value, name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if publisher and str(value).endswith(MIX_SUFFIX):
            raise ValidationError(f"{name} must not end in {MIX_SUFFIX!r} (reserved for a task's mix)")

    return validate


#: What the OpenAPI document says of a token's ids.
_ID_RULE = (
    f"1-{MAX_ID_LENGTH} characters; no whitespace, ',' or ':', and no control, bidi or other refused "
    "characters"
)


class TokenIn(InputSchema):
    """``POST /v1/apps/{app_id}/tokens``: who may do what in which channel, for how long."""

    channel_id = String(
        required=True,
        validate=[Length(1, MAX_ID_LENGTH), _id_validator("channel_id")],
        metadata={"description": f"the channel (ChannelId): {_ID_RULE}", "example": "room1"},
    )
    user_id = String(
        required=True,
        validate=[Length(1, MAX_ID_LENGTH), _id_validator("user_id", publisher=True)],
        metadata={
            "description": f"the user (UserId; a publisher's id in the room): {_ID_RULE}; not ending in .mix",
            "example": "alice",
        },
    )
    ttl_seconds = Integer(
        required=True,
        strict=True,
        validate=Range(*TTL_SECONDS),
        metadata={"description": "how long the token is valid, seconds (60-86400)", "example": 3600},
    )
    role = String(
        required=True,
        validate=OneOf([str(Role.PUBLISH), str(Role.SUBSCRIBE)]),
        metadata={"description": "publish into the channel, or subscribe to it (watch)"},
    )


class TokenOut(Schema):
    """A channel token and what a client needs to join the channel's Janus VideoRoom room with it."""

    token = String(
        metadata={
            "description": "Janus' token: send it as `token` with every Janus request, and as the "
            "`token` of a publisher's join"
        }
    )
    expires_at = String(
        metadata={"description": "when it expires, ISO 8601 UTC", "example": "2026-12-01T10:15:00Z"}
    )
    room = String(metadata={"description": "the channel's VideoRoom room id: <AppId>:<ChannelId>"})
    room_pin = String(metadata={"description": "the room's PIN (`pin` of a join, publisher or subscriber)"})


def issuer() -> TokenIssuer:
    """The token issuer of this app."""
    found: TokenIssuer = current_app.extensions["mpu_tokens"]
    return found


@bp.post("/apps/<app_id>/tokens")
@bp.input(TokenIn, arg_name="body")
@bp.output(TokenOut, status_code=201)
@bp.doc(
    summary="Issue a channel token (publish or subscribe) for one user until an expiry",
    description="A publish token is put on the `allowed` list of the channel's Janus room (created if "
    "missing; expired tokens are taken off it at the same time): only then is it returned. A subscribe "
    f"token is only minted. Rooms take at most {ROOM_PUBLISHERS} publishers. Janus binds a token to "
    "the room and the expiry, not to the UserId.",
    security="BasicAuth",
    responses=TOKEN_ERRORS,
)
def issue_token(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
    issued = issuer().issue(
        app_id, body["channel_id"], body["user_id"], Role(body["role"]), body["ttl_seconds"]
    )
    return {
        "token": issued.token,
        "expires_at": issued.claims.expires_at_iso,
        "room": issued.claims.room,
        "room_pin": issued.claims.room_pin,
    }


class TokenSweeper:
    """A daemon thread running :meth:`TokenIssuer.sweep` every ``interval_seconds`` (``mpu api`` starts
    one per process; sweeping twice is harmless: removing a token not on a list is not an error).

    Args:
        issuer: the app's :class:`TokenIssuer` (``app.extensions["mpu_tokens"]``).
        interval_seconds: seconds between sweeps.
    """

    def __init__(self, issuer: TokenIssuer, interval_seconds: float = SWEEP_INTERVAL_SECONDS) -> None:
        self._issuer = issuer
        self._interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpu-token-sweeper", daemon=True)

    def start(self) -> None:
        """Start sweeping (the first sweep after one interval)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the running sweep."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_seconds):
            try:
                self._issuer.sweep()
            except redis.exceptions.RedisError as exc:
                log.warning("tokens: sweep skipped, Redis unavailable: %s", exc.__class__.__name__)
            except Exception:  # never let the sweeper die
                log.exception("tokens: sweep failed")
