"""The edge's settings, from ``MPU_*`` environment variables (README, "Environment variables")."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rtc_mpu.spec.tokens import SIGNATURES, check_secret

#: Where the edge listens by default (the API forwards to ``http://127.0.0.1:8090``).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_JANUS_URL = "http://127.0.0.1:8088/janus"


#: ICE server URL schemes (RFC 7064, RFC 7065).
ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
#: What an ICE server URL may hold: no space, quote, angle bracket, comma, semicolon or backslash
#: (they would end the ``Link`` value or its URI reference), nothing outside printable ASCII.
_ICE_URL = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+=%-]+")
_LINK_PARAM = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # printable ASCII but '"' and '\\'


def ice_server_links(urls_text: str, username: str | None, credential: str | None) -> tuple[str, ...]:
    """``Link`` header values (RFC 9725 4.6) for the comma-separated ICE server URLs ``urls_text``;
    TURN URLs carry ``username``/``credential`` (``credential-type="password"``).

    Raises:
        ValueError: a URL with another scheme or characters a header cannot carry; a TURN URL
            without both credentials; a credential with a quote, backslash or non-printable character.
    """
    links = []
    for url in (part.strip() for part in urls_text.split(",")):
        if not url:
            continue
        scheme = url.partition(":")[0].lower()
        if scheme not in ICE_SCHEMES or not _ICE_URL.fullmatch(url) or len(url) <= len(scheme) + 1:
            raise ValueError(f"MPU_WHIP_ICE_SERVERS: {url!r} is not a stun:, stuns:, turn: or turns: URL")
        link = f'<{url}>; rel="ice-server"'
        if scheme.startswith("turn"):
            if not username or not credential:
                raise ValueError(
                    f"MPU_WHIP_ICE_SERVERS: {url!r} needs MPU_WHIP_TURN_USERNAME and MPU_WHIP_TURN_CREDENTIAL"
                )
            for name, value in (
                ("MPU_WHIP_TURN_USERNAME", username),
                ("MPU_WHIP_TURN_CREDENTIAL", credential),
            ):
                if not _LINK_PARAM.fullmatch(value):
                    raise ValueError(f"{name} may hold printable ASCII only, without quotes or backslashes")
            link += f'; username="{username}"; credential="{credential}"; credential-type="password"'
        links.append(link)
    return tuple(links)


@dataclass(frozen=True)
class EdgeSettings:
    """How the edge runs.

    Attributes:
        token_secret: the channel-token secret (``MPU_TOKEN_SECRET``, required): the edge checks
            publish tokens with it and talks to Janus with service tokens minted from it.
        janus_url: Janus' HTTP API (``MPU_JANUS_URL``).
        janus_api_secret: Janus' ``api_secret``, if it has one (``MPU_JANUS_API_SECRET``).
        token_signature: Janus' signed-token scheme (``MPU_JANUS_TOKEN_SIGNATURE``, ``sha1`` for
            Janus 1.1).
        host, port: where the edge listens (``MPU_EDGE_HOST``, ``MPU_EDGE_PORT``).
        janus_timeout: seconds allowed for the whole Janus exchange of one request (session,
            attach, join, publish), ``MPU_EDGE_JANUS_TIMEOUT``.
        connect_timeout: seconds a publisher has to complete ICE and DTLS after its ``201``
            (``MPU_EDGE_CONNECT_TIMEOUT``); then its resource is removed.
        media_timeout: seconds without any media from a publisher (Janus' ``media`` events) after
            which its resource is removed: a client that vanished without ``DELETE`` or a DTLS
            alert (``MPU_EDGE_MEDIA_TIMEOUT``).
        max_resources: most publishers the edge holds at once (``MPU_EDGE_MAX_SESSIONS``); one more
            is answered 503.
        max_body: largest request body, bytes (64 KiB).
        ice_links: the ``Link`` header values (RFC 9725 4.6, ``rel="ice-server"``) a ``201`` carries:
            the STUN/TURN servers WHIP clients should use to reach Janus, from
            ``MPU_WHIP_ICE_SERVERS`` (comma-separated ``stun:``/``stuns:``/``turn:``/``turns:``
            URLs) with ``MPU_WHIP_TURN_USERNAME`` and ``MPU_WHIP_TURN_CREDENTIAL`` for the TURN ones
            (:func:`ice_server_links`).
    """

    token_secret: str
    janus_url: str = DEFAULT_JANUS_URL
    janus_api_secret: str | None = None
    token_signature: str = "sha1"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    janus_timeout: float = 15.0
    connect_timeout: float = 30.0
    media_timeout: float = 30.0
    max_resources: int = 500
    max_body: int = 64 * 1024
    ice_links: tuple[str, ...] = ()

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
    ) -> EdgeSettings:
        """The settings from ``environ`` (default ``os.environ``); ``overrides`` (field names) win.

        Raises:
            ValueError: ``MPU_TOKEN_SECRET`` is missing or invalid, or another variable is
                malformed (the message names it).
        """
        env = os.environ if environ is None else environ

        def number(name: str, default: float, low: float, integer: bool = False) -> float:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = int(text) if integer else float(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None
            if not value >= low:
                raise ValueError(f"{name}={text!r} must be at least {low:g}")
            return value

        secret = env.get("MPU_TOKEN_SECRET", "").strip()
        signature = env.get("MPU_JANUS_TOKEN_SIGNATURE", "").strip() or "sha1"
        if signature not in SIGNATURES:
            raise ValueError(f"MPU_JANUS_TOKEN_SIGNATURE must be one of {', '.join(SIGNATURES)}")
        port = int(number("MPU_EDGE_PORT", DEFAULT_PORT, 1, integer=True))
        if port > 65535:
            raise ValueError(f"MPU_EDGE_PORT={port} is not a TCP port (1-65535)")
        values: dict[str, object] = {
            "token_secret": secret,
            "janus_url": env.get("MPU_JANUS_URL", "").strip() or DEFAULT_JANUS_URL,
            "janus_api_secret": env.get("MPU_JANUS_API_SECRET") or None,
            "token_signature": signature,
            "host": env.get("MPU_EDGE_HOST", "").strip() or DEFAULT_HOST,
            "port": port,
            "janus_timeout": number("MPU_EDGE_JANUS_TIMEOUT", cls.janus_timeout, 1),
            "connect_timeout": number("MPU_EDGE_CONNECT_TIMEOUT", cls.connect_timeout, 1),
            "media_timeout": number("MPU_EDGE_MEDIA_TIMEOUT", cls.media_timeout, 1),
            "max_resources": int(number("MPU_EDGE_MAX_SESSIONS", cls.max_resources, 1, integer=True)),
            "ice_links": ice_server_links(
                env.get("MPU_WHIP_ICE_SERVERS", ""),
                env.get("MPU_WHIP_TURN_USERNAME") or None,
                env.get("MPU_WHIP_TURN_CREDENTIAL") or None,
            ),
        }
        values.update(overrides or {})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Validate the settings.

        Raises:
            ValueError: no or an invalid token secret.
        """
        if not self.token_secret:
            raise ValueError(
                "MPU_TOKEN_SECRET is not set: the edge checks publish tokens with the secret Janus and "
                "the API share (see README, Tokens)"
            )
        check_secret(self.token_secret)
