"""Fetching the images of a mix task's overlays (watermarks, backgrounds, pane images) safely.

An image URL comes from the API caller, so fetching it must not become a way into the worker's network
(docs/architecture.md, "Security rules"):

- only ``http://`` and ``https://`` URLs, for the first request and for every redirect target;
- the connection only ever goes to an address that was checked: host names are resolved through
  :class:`PublicAddressResolver`, which drops every address that is not public (so there is no window
  between a check and the connection, and each redirect hop is resolved through it again), and literal
  IP hosts, which aiohttp connects to without asking the resolver, are checked here before each request;
- redirects are followed here, one checked hop at a time, at most ``max_redirects`` of them;
- a total time limit per image (connect, headers and body of every hop), a byte limit (by
  Content-Length and while reading), and a pixel limit checked on the header before any pixel is decoded;
- decoding by Pillow, restricted to the usual web formats;
- the URL's query string (it may hold a signed token) never reaches a log or an error: see
  :func:`redact_image_url`.

:class:`ImageCache` fetches each URL once per task and hands every caller the same decoded array.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import numpy.typing as npt
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image, ImageOps
from yarl import URL

from rtc_mpu.spec.urls import is_public_address as is_public_address  # re-exported (tests patch it here)

log = logging.getLogger(__name__)

#: URL schemes an image may be fetched from (redirect targets included).
ALLOWED_SCHEMES: Final = ("http", "https")
#: Pillow formats an image may be decoded from: the usual web formats. Others (EPS runs Ghostscript,
#: and many rarely used parsers) are never tried on untrusted bytes.
IMAGE_FORMATS: Final = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
#: Longest image URL accepted, in characters.
MAX_URL_LENGTH: Final = 4096
#: Longest path kept by :func:`redact_image_url`, in characters.
MAX_REDACTED_PATH: Final = 80
#: HTTP statuses that redirect.
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
#: Bytes read from a response body at a time.
_CHUNK = 64 * 1024
_USER_AGENT = "rtc-mpu-image-fetch/1"
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
#: NAT64 well-known prefix (RFC 6052): the last 32 bits are an IPv4 address.
#: Held while Pillow parses a header with DecompressionBombWarning turned into an error
#: (warnings filters are process-wide state).
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class FetchLimits:
    """Limits for fetching one image.

    Attributes:
        max_bytes: largest body accepted, in bytes (5 MiB by default); refused by Content-Length
            before reading and also once more than this many bytes arrived.
        timeout: total time for one image in seconds (connect, headers and body, every redirect hop
            included; decoding is not counted).
        max_pixels: largest width * height accepted, checked on the image header before decoding.
        max_redirects: most redirects followed (0: none).
        allow_private: connect to addresses that are not public: loopback, private (RFC 1918),
            link-local, CGNAT (100.64.0.0/10), unique-local IPv6, multicast, reserved, unspecified, and
            IPv4-mapped/NAT64/6to4 IPv6 forms of those. False (refused) by default.
    """

    max_bytes: int = 5 * 1024 * 1024
    timeout: float = 5.0
    max_pixels: int = 4096 * 4096
    max_redirects: int = 3
    allow_private: bool = False


class ImageError(Exception):
    """Why an image cannot be used.

    Attributes:
        reason: a short text for the task status, e.g. ``"HTTP 404"``, ``"not an image"``,
            ``"timed out after 5 s"``. It never holds the URL.
        url: the URL redacted by :func:`redact_image_url` (no query string, fragment or credentials);
            ``str(error)`` is ``"<url>: <reason>"``.
    """

    def __init__(self, reason: str, url: str = "") -> None:
        """Make an error for ``url`` (redacted here, so the raw URL may be passed) with ``reason``."""
        self.reason = reason
        self.url = redact_image_url(url) if url else ""
        super().__init__(f"{self.url}: {reason}" if self.url else reason)

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str]]:
        """Pickle as ``(reason, url)``."""
        return (type(self), (self.reason, self.url))


class BlockedAddressError(OSError):
    """A host resolved only to addresses that are not public (raised by :class:`PublicAddressResolver`).

    It is an :class:`OSError` so that aiohttp's connector treats it as a resolution failure.

    Attributes:
        host: the host name that was resolved.
        addresses: the addresses it resolved to, all refused.
    """

    def __init__(self, host: str, addresses: list[str]) -> None:
        """Record ``host`` and the refused ``addresses``."""
        self.host = host
        self.addresses = addresses
        super().__init__(f"host {host} resolves only to private or loopback addresses")


def redact_image_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]/path`` for logs and status texts.

    The query string, the fragment and any ``user:password@`` are dropped, control characters are removed
    and a path longer than 80 characters is cut to 80 (ending in ``...``).
    ``https://u:p@cdn.example.com/wm.png?sig=x`` becomes ``https://cdn.example.com/wm.png``.
    A string that cannot be parsed gives ``"<invalid url>"``.
    """
    try:
        parts = urlsplit(_CONTROL.sub("", url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path
    if len(path) > MAX_REDACTED_PATH:
        path = path[: MAX_REDACTED_PATH - 3] + "..."
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{path}"


def _address_allowed(address: str, allow_private: bool) -> bool:
    """Whether a connection to ``address`` (an IP address text) is allowed under ``allow_private``."""
    return allow_private or is_public_address(address)


class PublicAddressResolver(AbstractResolver):
    """An aiohttp resolver that drops every resolved address that is not public.

    Wraps another resolver (``aiohttp.ThreadedResolver`` by default, made on first use). The addresses it
    returns are the only ones aiohttp connects to, so there is no gap between check and connection.

    Raises (from :meth:`resolve`):
        BlockedAddressError: every address of the host was refused.
        OSError: the inner resolver failed (e.g. ``socket.gaierror`` for an unknown host).
    """

    def __init__(self, allow_private: bool = False, inner: AbstractResolver | None = None) -> None:
        """Filter unless ``allow_private``; resolve with ``inner`` (default: a ThreadedResolver)."""
        self._allow_private = allow_private
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` with the inner resolver and keep only the allowed addresses."""
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        kept = [r for r in results if _address_allowed(r["host"], False)]
        if not kept:
            raise BlockedAddressError(host, [r["host"] for r in results])
        return kept

    async def close(self) -> None:
        """Close the inner resolver."""
        if self._inner is not None:
            await self._inner.close()


#: allow_private of each session made by make_session(): fetch_image only uses those.
_SESSIONS: weakref.WeakKeyDictionary[aiohttp.ClientSession, bool] = weakref.WeakKeyDictionary()


def make_session(
    limits: FetchLimits, *, inner_resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """An aiohttp session for :func:`fetch_image` under ``limits``; call it inside a running event loop.

    Its connector resolves through :class:`PublicAddressResolver` (wrapping ``inner_resolver``, default
    ``aiohttp.ThreadedResolver``); it ignores proxy environment variables and keeps no cookies.
    The caller closes it.
    """
    connector = aiohttp.TCPConnector(
        resolver=PublicAddressResolver(limits.allow_private, inner_resolver), limit_per_host=4
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=limits.timeout),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": _USER_AGENT, "Accept": "image/*"},
    )
    _SESSIONS[session] = limits.allow_private
    return session


def _check_url(url: URL, limits: FetchLimits) -> None:
    """Refuse a URL (first request or redirect target) aiohttp must not be asked to fetch.

    Checks the scheme, and a literal IP host (aiohttp does not ask the resolver about those). Anything
    aiohttp would take for an IP literal (digits and dots, or a colon) must parse as an allowed address.

    Raises:
        ImageError: with the reason (the caller adds the URL).
    """
    if url.scheme not in ALLOWED_SCHEMES:
        raise ImageError("scheme must be http or https")
    host = url.raw_host
    if not host:
        raise ImageError("URL has no host")
    if ":" in host or host.replace(".", "").isdigit():
        try:
            ip = ipaddress.ip_address(host.replace("%25", "%"))
        except ValueError:
            raise ImageError("invalid IP address") from None
        if not _address_allowed(str(ip), limits.allow_private):
            raise ImageError(f"address {host} is private or loopback")


async def _read_body(response: aiohttp.ClientResponse, limits: FetchLimits) -> bytes:
    """The body of ``response``, refusing more than ``limits.max_bytes`` (see :func:`fetch_image`)."""
    too_large = f"larger than {limits.max_bytes} bytes"
    length = response.content_length
    if length is not None and length > limits.max_bytes:
        raise ImageError(too_large)
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limits.max_bytes:
            raise ImageError(too_large)
    return bytes(body)


async def _download(url: str, limits: FetchLimits, session: aiohttp.ClientSession) -> bytes:
    """The body of ``url``, redirects followed one checked hop at a time. Errors: see fetch_image."""
    try:
        current = URL(url)
    except (ValueError, TypeError):
        raise ImageError("invalid URL") from None
    timeout = aiohttp.ClientTimeout(total=limits.timeout)
    for hop in range(limits.max_redirects + 1):
        _check_url(current, limits)
        async with session.get(current, allow_redirects=False, timeout=timeout) as response:
            if response.status in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise ImageError(f"HTTP {response.status} without Location")
                if hop == limits.max_redirects:
                    break
                try:
                    current = current.join(URL(location))
                except (ValueError, TypeError):
                    raise ImageError("invalid redirect URL") from None
                continue
            if response.status != 200:
                raise ImageError(f"HTTP {response.status}")
            return await _read_body(response, limits)
    raise ImageError("too many redirects")


def _connect_reason(error: aiohttp.ClientConnectorError) -> str:
    """A status reason for a failed connection (never the URL)."""
    cause = error.os_error
    if isinstance(cause, BlockedAddressError):
        return str(cause)
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "cannot resolve host"
    if isinstance(error, aiohttp.ClientSSLError):
        return "TLS error"
    return f"cannot connect ({os.strerror(cause.errno) if cause.errno else type(cause).__name__})"


def _decode(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Decode ``data`` (first frame) into a read-only (H, W, 4) uint8 RGBA array. Errors: see fetch_image."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(BytesIO(data), formats=IMAGE_FORMATS)
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image of {width}x{height} pixels exceeds {max_pixels}")
            if width <= 0 or height <= 0:
                raise ImageError("not an image")
            frame = ImageOps.exif_transpose(image)  # loads the first frame only
            if frame.mode.startswith("I;16"):  # 16-bit grey: keep the high byte (convert() would clip)
                grey = (np.asarray(frame, dtype=np.uint16) >> 8).astype(np.uint8)
                frame = Image.fromarray(grey, "L")
            rgba = np.asarray(frame.convert("RGBA"), dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image exceeds {max_pixels} pixels") from None
    except Exception:  # any Pillow failure (OSError, ValueError, SyntaxError, EOFError, MemoryError...)
        raise ImageError("not an image") from None
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ImageError("not an image")
    rgba = np.ascontiguousarray(rgba)
    rgba.flags.writeable = False
    return rgba


async def fetch_image(
    url: str, limits: FetchLimits, session: aiohttp.ClientSession | None = None
) -> npt.NDArray[np.uint8]:
    """Download and decode one image.

    Args:
        url: an ``http://`` or ``https://`` URL.
        limits: the limits and the address policy.
        session: a session made by :func:`make_session` (a new one is made and closed if None).

    Returns:
        A read-only, C-contiguous (H, W, 4) uint8 RGBA array: straight (not premultiplied) alpha, 255
        for opaque images; the first frame of an animated image; EXIF orientation applied.

    Raises:
        ImageError: ``.reason`` is one of ``"scheme must be http or https"``, ``"invalid URL"``,
            ``"URL has no host"``, ``"invalid IP address"``, ``"address 127.0.0.1 is private or
            loopback"``, ``"host h resolves only to private or loopback addresses"``, ``"cannot resolve
            host"``, ``"cannot connect (...)"``, ``"TLS error"``, ``"timed out after 5 s"``, ``"HTTP
            404"``, ``"HTTP 302 without Location"``, ``"invalid redirect URL"``, ``"too many
            redirects"``, ``"larger than 5242880 bytes"``, ``"download failed (...)"``, ``"not an
            image"``, ``"image of 10000x10000 pixels exceeds 16777216"``, ``"image exceeds N pixels"``.
        ValueError: ``session`` was not made by :func:`make_session`, or it allows private addresses
            while ``limits`` do not.
    """
    if session is not None:
        session_allows_private = _SESSIONS.get(session)
        if session_allows_private is None:
            raise ValueError(
                "fetch_image needs a session made by rtc_mpu.mixer.overlays.images.make_session()"
            )
        if session_allows_private and not limits.allow_private:
            raise ValueError("the session allows private addresses but the limits do not")
    try:
        if len(url) > MAX_URL_LENGTH:
            raise ImageError(f"URL longer than {MAX_URL_LENGTH} characters")
        own_session = session is None
        active = make_session(limits) if session is None else session
        try:
            async with asyncio.timeout(limits.timeout):
                data = await _download(url, limits, active)
        except TimeoutError:
            raise ImageError(f"timed out after {limits.timeout:g} s") from None
        except aiohttp.ClientConnectorError as error:
            raise ImageError(_connect_reason(error)) from None
        except aiohttp.ClientError as error:
            raise ImageError(f"download failed ({type(error).__name__})") from None
        finally:
            if own_session:
                await active.close()
        return await asyncio.to_thread(_decode, data, limits.max_pixels)
    except ImageError as error:
        if error.url:
            raise
        raise ImageError(error.reason, url) from None


class ImageCache:
    """Per-task image cache: each URL is fetched once and every caller gets the same array.

    Concurrent callers of :meth:`get` for one URL share one download; a failure is cached too (the
    same :class:`ImageError` is raised again). A caller that is cancelled does not cancel the download
    for the others. Use it from one event loop; :meth:`close` when the task ends.
    """

    def __init__(
        self,
        limits: FetchLimits = FetchLimits(),  # frozen: sharing the default is safe
        *,
        session_factory: Callable[[FetchLimits], aiohttp.ClientSession] | None = None,
    ) -> None:
        """Cache images fetched under ``limits``.

        Args:
            limits: the limits and the address policy of every fetch.
            session_factory: makes the session on first use, called with ``limits`` inside the event
                loop; it must return a session from :func:`make_session` (the default), e.g. with
                another inner resolver.
        """
        self._limits = limits
        self._session_factory = session_factory or make_session
        self._session: aiohttp.ClientSession | None = None
        self._entries: dict[str, asyncio.Task[npt.NDArray[np.uint8]]] = {}
        self._closed = False

    async def get(self, url: str) -> npt.NDArray[np.uint8]:
        """The decoded image at ``url``: a read-only (H, W, 4) uint8 RGBA array (see :func:`fetch_image`).

        Raises:
            ImageError: the image cannot be used (cached: the same error for every later call).
            RuntimeError: the cache is closed.
        """
        if self._closed:
            raise RuntimeError("ImageCache is closed")
        task = self._entries.get(url)
        if task is None:
            if self._session is None:
                self._session = self._session_factory(self._limits)
            task = asyncio.create_task(self._fetch(url, self._session))
            self._entries[url] = task
            task.add_done_callback(lambda done: self._forget_unless_cacheable(url, done))
        return await asyncio.shield(task)

    async def _fetch(self, url: str, session: aiohttp.ClientSession) -> npt.NDArray[np.uint8]:
        """fetch_image, logging a failure once (redacted)."""
        try:
            return await fetch_image(url, self._limits, session)
        except ImageError as error:
            log.warning("image %s cannot be used: %s", error.url, error.reason)
            raise

    def _forget_unless_cacheable(self, url: str, task: asyncio.Task[npt.NDArray[np.uint8]]) -> None:
        """Keep images and ImageErrors; drop a cancelled or otherwise failed fetch so it is retried."""
        failed_otherwise = task.cancelled() or not isinstance(task.exception(), ImageError | None)
        if failed_otherwise and self._entries.get(url) is task:
            del self._entries[url]

    async def close(self) -> None:
        """Cancel the downloads under way and close the session. Later :meth:`get` calls raise."""
        self._closed = True
        pending = [task for task in self._entries.values() if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._entries.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
