"""A stream ingest as plain data: a media URL played into a channel as a participant (issue 19).

An ingest pulls a media URL (HTTP(S) MP4/MKV/WebM, HLS, RTMP(S), or a file of the operator's media
directory named ``media:NAME``) and publishes it into a channel's VideoRoom room as the user
``user_id``, paced in real time by its timestamps; the host controls it (play, pause, seek, volume)
and the channel's participants get its progress every second over the publisher's data channel.

This module checks what an app asks for (:func:`parse_ingest`, :func:`parse_control`) and names the
states; it does no I/O. The API validates with it, the worker re-checks what it reads back.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.text_rules import char_problem
from rtc_mpu.spec.tokens import MAX_ID_LENGTH, MIX_SUFFIX, check_id

#: URL schemes an ingest may pull (FFmpeg's protocols are whitelisted to match: no ``file:``,
#: ``concat:``, ``subfile:``...); ``media:NAME`` names a file of ``MPU_MEDIA_DIR``.
URL_SCHEMES = ("http", "https", "rtmp", "rtmps")
MEDIA_SCHEME = "media"
#: Longest URL accepted, characters.
MAX_URL_LENGTH = 2048
#: An ingest id: the TaskId rule.
INGEST_ID = re.compile(r"[A-Za-z0-9_-]{1,55}")
#: A media file name under ``MPU_MEDIA_DIR``: no directories, no hidden files.
MEDIA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: Volume range, percent (100 = as recorded).
VOLUME_PERCENT = (0, 200)
#: Largest start or seek position, seconds (a day).
MAX_POSITION_SECONDS = 86400.0


class IngestState(enum.StrEnum):
    """Where an ingest is: ``starting`` (queued, or its worker opens the URL), ``playing``,
    ``paused``, ``ended`` (end of the media without loop, or stopped), ``failed`` (with a reason)."""

    STARTING = "starting"
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """Whether the ingest still runs (or is about to)."""
        return self in (IngestState.STARTING, IngestState.PLAYING, IngestState.PAUSED)


@dataclass(frozen=True)
class IngestSpec:
    """What an app asked for.

    Attributes:
        ingest_id: unique in the app (the TaskId rule).
        channel_id: the channel to publish into.
        user_id: the publisher's UserId in the channel (not ending in ``.mix``).
        url: the media URL (``http(s)``, ``rtmp(s)``) or ``media:NAME``.
        loop: start again at the end of the media (else the ingest ends there).
        start_at_seconds: where playing starts, seconds of media time.
        volume_percent: audio gain, percent (0-200).
    """

    ingest_id: str
    channel_id: str
    user_id: str
    url: str
    loop: bool = False
    start_at_seconds: float = 0.0
    volume_percent: int = 100


@dataclass(frozen=True)
class Control:
    """A change of a running ingest (``PATCH``); None fields are left as they are.

    Attributes:
        state: ``playing`` or ``paused``.
        position_seconds: seek there (media time, seconds).
        volume_percent: the new volume (0-200).
    """

    state: IngestState | None = None
    position_seconds: float | None = None
    volume_percent: int | None = None


def _error(field: str, message: str, code: str = "InvalidParameter") -> SpecError:
    return SpecError(code, message, (field,))


def check_ingest_id(value: object) -> str:
    """An ingest id.

    Raises:
        SpecError: not 1-55 characters of ``A-Z a-z 0-9 _ -``.
    """
    if not isinstance(value, str) or not INGEST_ID.fullmatch(value):
        raise _error("ingest_id", "ingest_id must be 1-55 characters of A-Z a-z 0-9 _ -", "InvalidIngest.Id")
    return value


def check_url(value: object) -> str:
    """An ingest URL: ``http(s)://`` or ``rtmp(s)://`` with a host, or ``media:NAME``. Whether its
    host is a public address is checked when it is opened (name resolution belongs to the worker).

    Raises:
        SpecError: ``InvalidIngest.Url`` with the reason.
    """
    if not isinstance(value, str) or not value:
        raise _error("url", "url must be a non-empty string", "InvalidIngest.Url")
    if len(value) > MAX_URL_LENGTH:
        raise _error("url", f"url is longer than {MAX_URL_LENGTH} characters", "InvalidIngest.Url")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value) or char_problem(value) is not None:
        raise _error("url", "url contains whitespace, control or refused characters", "InvalidIngest.Url")
    scheme, _, rest = value.partition(":")
    scheme = scheme.lower()
    if scheme == MEDIA_SCHEME:
        if not MEDIA_NAME.fullmatch(rest):
            raise _error(
                "url",
                "media:NAME names a file of the media directory: 1-128 characters of A-Z a-z 0-9 _ . -, "
                "not starting with '.' or '-'",
                "InvalidIngest.Url",
            )
        return value
    if scheme not in URL_SCHEMES:
        raise _error(
            "url",
            f"url scheme {scheme!r} is not allowed (http, https, rtmp, rtmps, media:NAME)",
            "InvalidIngest.Url",
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise _error("url", "url is not a valid URL", "InvalidIngest.Url") from None
    if not rest.startswith("//") or not host:
        raise _error("url", "url has no host", "InvalidIngest.Url")
    return value


def _number(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _error(field, f"{field} must be a number")
    if not low <= value <= high:
        raise _error(field, f"{field} must be {low:g}-{high:g}")
    return float(value)


def _volume(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error("volume", "volume must be an integer percent")
    if not VOLUME_PERCENT[0] <= value <= VOLUME_PERCENT[1]:
        raise _error("volume", f"volume must be {VOLUME_PERCENT[0]}-{VOLUME_PERCENT[1]} (percent)")
    return value


def _id(value: object, field: str) -> str:
    try:
        return check_id(value, field)
    except ValueError as exc:
        raise _error(field, str(exc)) from None


def parse_ingest(body: dict[str, Any]) -> IngestSpec:
    """An :class:`IngestSpec` from a request body (``ingest_id``, ``channel_id``, ``user_id``,
    ``url``, optional ``loop``, ``start_at``, ``volume``).

    Raises:
        SpecError: a missing, unknown or invalid field (``field`` names it).
    """
    known = {"ingest_id", "channel_id", "user_id", "url", "loop", "start_at", "volume"}
    for name in body:
        if name not in known:
            raise _error(str(name), f"unknown field {name!r}")
    for name in ("ingest_id", "channel_id", "user_id", "url"):
        if name not in body:
            raise _error(name, f"{name} is required", "MissingParameter")
    user_id = _id(body["user_id"], "user_id")
    if user_id.endswith(MIX_SUFFIX):
        raise _error("user_id", f"user_id must not end in {MIX_SUFFIX!r} (reserved for a task's mix)")
    loop = body.get("loop", False)
    if not isinstance(loop, bool):
        raise _error("loop", "loop must be true or false")
    return IngestSpec(
        ingest_id=check_ingest_id(body["ingest_id"]),
        channel_id=_id(body["channel_id"], "channel_id"),
        user_id=user_id,
        url=check_url(body["url"]),
        loop=loop,
        start_at_seconds=_number(body.get("start_at", 0), "start_at", 0, MAX_POSITION_SECONDS),
        volume_percent=_volume(body.get("volume", 100)),
    )


def parse_control(body: dict[str, Any]) -> Control:
    """A :class:`Control` from a ``PATCH`` body (``state``: playing|paused, ``position_seconds``,
    ``volume``; at least one).

    Raises:
        SpecError: an unknown or invalid field, or none at all.
    """
    known = {"state", "position_seconds", "volume"}
    for name in body:
        if name not in known:
            raise _error(str(name), f"unknown field {name!r}")
    if not body:
        raise _error("state", "give state, position_seconds or volume", "MissingParameter")
    state = None
    if "state" in body:
        if body["state"] not in (IngestState.PLAYING, IngestState.PAUSED):
            raise _error("state", "state must be 'playing' or 'paused'")
        state = IngestState(body["state"])
    position = None
    if "position_seconds" in body:
        position = _number(body["position_seconds"], "position_seconds", 0, MAX_POSITION_SECONDS)
    volume = _volume(body["volume"]) if "volume" in body else None
    return Control(state, position, volume)


__all__ = [
    "MAX_ID_LENGTH",
    "Control",
    "IngestSpec",
    "IngestState",
    "check_ingest_id",
    "check_url",
    "parse_control",
    "parse_ingest",
]
