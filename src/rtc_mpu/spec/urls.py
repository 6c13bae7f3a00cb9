"""StreamURL checks: what may reach FFmpeg as an output URL, how it appears in logs, its lease keys.

FFmpeg opens many protocols (``file:``, ``concat:``, ``tcp:``, ...); only ``rtmp://`` and ``rtmps://``
with a host may ever be handed to it as a push URL (docs/architecture.md, "Security rules").

A StreamURL names a *destination*: scheme, host, port, app and stream name. The same destination
can be spelled many ways (``localhost`` and ``127.0.0.1``, ``2130706433``, ``0x7f000001``, ``127.1``,
``[::ffff:127.0.0.1]``, upper case, a trailing dot, the default port written or not), so the
StreamURL rules (one active task per destination, a cooldown after it) are keyed on
:func:`stream_url_key` (the canonical spelling) and on :func:`lease_keys` (that, plus the addresses
the host name resolves to when the task starts). FFmpeg is always handed the URL as the user gave it.

This module stays import-light (the API process imports it): the standard library only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from rtc_mpu.layouts.errors import SpecError

ALLOWED_SCHEMES = ("rtmp", "rtmps")
#: Default ports (RTMP: 1935, RTMPS: 443) used when a URL names none, for the lease key.
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
#: Longest StreamURL accepted, in characters.
MAX_URL_LENGTH = 2048
#: How long resolving a StreamURL's host name may take when a task starts, in seconds.
RESOLVE_TIMEOUT = 2.0
#: Host name lookups running at once in this process; a lookup that finds no free slot within its
#: timeout fails like a slow one (a hanging DNS server cannot pile up threads without bound).
MAX_CONCURRENT_LOOKUPS = 16
_CODE = "InvalidStreamURL.Malformed"
_UNRESOLVABLE = "InvalidStreamURL.Unresolvable"
_FIELD = ("stream_url",)
#: ASCII whitespace and control characters.
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
#: Unicode categories refused anywhere in a StreamURL: controls, format characters (bidi overrides,
#: zero-width ...), surrogates, and space and line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
#: One label of an IPv4 address in any form ``inet_aton`` (and so FFmpeg, via getaddrinfo) takes.
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
#: A host name (lower case, ASCII; underscores occur in private names).
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")

#: ``(host, port) -> addresses``: resolves a host name to IP address texts; raises ``OSError`` (e.g.
#: ``socket.gaierror``) when the name does not resolve. May block: :func:`lease_keys` bounds it.
Resolver = Callable[[str, int], Sequence[str]]


def _malformed(message: str) -> SpecError:
    return SpecError(_CODE, message, _FIELD)


@dataclass(frozen=True)
class Destination:
    """A parsed StreamURL, canonical.

    Attributes:
        scheme: ``rtmp`` or ``rtmps``.
        host: an IPv4 address in dotted-quad form, an IPv6 address compressed (no brackets; an
            IPv4-mapped one is its IPv4 address), or a lower-case ASCII host name without a trailing
            dot.
        is_address: ``host`` is an IP address (nothing to resolve).
        port: the port, the scheme's default (:data:`DEFAULT_PORTS`) when the URL names none.
        path: the app and stream name: the non-empty path segments joined by ``/``.
    """

    scheme: str
    host: str
    is_address: bool
    port: int
    path: str

    def key(self, host: str | None = None) -> str:
        """``scheme://host:port/app/stream`` for this destination, or for the same one at ``host``
        (a canonical address text); IPv6 addresses in brackets."""
        host = self.host if host is None else host
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.port}/{self.path}"


def _check_characters(url: str) -> None:
    if _CONTROL.search(url):
        raise _malformed("StreamURL contains whitespace or control characters")
    for char in url:
        if ord(char) > 0x7E and unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise _malformed("StreamURL contains whitespace, control, format or surrogate characters")


def _ipv4(host: str) -> str | None:
    """The dotted-quad form of ``host`` if it is an IPv4 address in any form ``inet_aton`` accepts
    (``127.0.0.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``); None if it is not
    numeric at all (a host name).

    Raises:
        SpecError: all its labels are numbers but they make no IPv4 address (``256.1.1.1``, ``08``,
            ``1.2.3.4.5``).
    """
    labels = host.split(".")
    if not all(_NUMBER.fullmatch(label) for label in labels):
        return None
    numbers: list[int] = []
    for label in labels:
        try:
            if label[:2].lower() == "0x":
                numbers.append(int(label[2:], 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label[1:], 8))
            else:
                numbers.append(int(label, 10))
        except ValueError:  # "0x" without digits, an octal label with 8 or 9
            raise _malformed("StreamURL has an invalid IPv4 address") from None
    if len(numbers) > 4:
        raise _malformed("StreamURL has an invalid IPv4 address")
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (5 - len(numbers))):
        raise _malformed("StreamURL has an invalid IPv4 address")
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return str(ipaddress.IPv4Address(value))


def canonical_address(text: str) -> str | None:
    """An IP address text in canonical form: IPv4 dotted quad, IPv6 compressed and lower case with
    an IPv4-mapped address (``::ffff:a.b.c.d``) as its IPv4 address and no zone (``%eth0``); None if
    ``text`` is not an IP address."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def _host(netloc: str, scheme: str) -> tuple[str, bool, int]:
    """(canonical host, whether it is an address, port) of a URL's authority.

    Raises:
        SpecError: Malformed: no host, a bad port, a bad IPv6 literal, a host that is neither an IP
            address nor an ASCII host name.
    """
    hostport = netloc.rpartition("@")[2]
    port_text: str | None = None
    if hostport.startswith("["):
        literal, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _malformed("StreamURL has an invalid IPv6 address")
        port_text = rest[1:] if rest else None
        if "%" in literal:
            raise _malformed("StreamURL must not name an IPv6 zone")
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise _malformed("StreamURL has an invalid IPv6 address") from None
        host, is_address = canonical_address(str(address)) or "", True
    else:
        if ":" in hostport:
            hostport, _, port_text = hostport.partition(":")
        name = hostport.lower()
        if name.endswith("."):
            name = name[:-1]
        if not name:
            raise _malformed("StreamURL must name a host")
        if not name.isascii():
            raise _malformed("StreamURL's host must be ASCII (write an internationalized name as xn--...)")
        ipv4 = _ipv4(name)
        if ipv4 is not None:
            host, is_address = ipv4, True
        elif _NAME.fullmatch(name) and len(name) <= 253 and max(map(len, name.split("."))) <= 63:
            host, is_address = name, False
        else:
            raise _malformed("StreamURL's host is not a valid host name or IP address")
    if port_text is None:
        return host, is_address, DEFAULT_PORTS[scheme]
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) <= 65535:
        raise _malformed("StreamURL has an invalid port (1-65535)")
    return host, is_address, int(port_text)


def parse_stream_url(url: str) -> Destination:
    """Check that ``url`` is a push URL FFmpeg may open, and parse it into its canonical destination.

    Accepts ``rtmp://[user[:password]@]host[:port]/app/stream[?query][#fragment]`` and the same with
    ``rtmps``; ``host`` is an ASCII host name, an IPv4 address (in any form ``inet_aton`` takes) or
    an IPv6 address in brackets. The user info, query string and fragment are not part of the
    destination.

    Raises:
        SpecError: ``InvalidStreamURL.Malformed`` (field ``("stream_url",)``) for anything else: another
            scheme, no host, a bad host or IP literal, a bad port (not 1-65535, not digits), no app
            or stream name, whitespace, control, format or surrogate characters, or more than 2048
            characters. The message never repeats the URL (its query may hold a key).
    """
    if not isinstance(url, str) or not url:
        raise _malformed("StreamURL is required")
    if len(url) > MAX_URL_LENGTH:
        raise _malformed(f"StreamURL is longer than {MAX_URL_LENGTH} characters")
    _check_characters(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "Invalid IPv6 URL" for an unbalanced bracket
        raise _malformed("StreamURL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES or not url.lower().startswith(f"{scheme}://"):
        raise _malformed(f"StreamURL must start with rtmp:// or rtmps://, not {scheme or 'no'} scheme")
    host, is_address, port = _host(parts.netloc, scheme)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2:
        raise _malformed("StreamURL must name an app and a stream: rtmp://host/app/stream")
    return Destination(scheme, host, is_address, port, "/".join(segments))


def validate_stream_url(url: str) -> str:
    """Check that ``url`` is a push URL FFmpeg may open (:func:`parse_stream_url`); return it as
    given but with its scheme lower-cased (FFmpeg looks protocols up case-sensitively).

    Raises:
        SpecError: ``InvalidStreamURL.Malformed``, as :func:`parse_stream_url`.
    """
    destination = parse_stream_url(url)
    return destination.scheme + url[len(destination.scheme) :]


def redact_url(url: str) -> str:
    """The URL with credentials, the query string and the stream name hidden, for logs and status.

    ``rtmp://user:pw@host:1935/live/secretkey?auth=x`` becomes ``rtmp://host:1935/live/sec***``.
    The first three characters of the stream name are kept so an operator can tell streams apart.
    Never raises: a URL that cannot be parsed is ``<invalid url>``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    segments = parts.path.split("/")
    named = [i for i, segment in enumerate(segments) if segment]
    if len(named) > 1:  # the last named segment is the stream name (a trailing slash may follow it)
        segments[named[-1]] = segments[named[-1]][:3] + "***"
    return f"{parts.scheme}://{host}{port}{'/'.join(segments)}"


def stream_url_key(url: str) -> str:
    """The canonical spelling of a StreamURL's destination: ``scheme://host:port/app/stream``.

    Scheme and host are lower-cased, a trailing dot of the host name is dropped, an IP address is
    written in its canonical form (:func:`canonical_address`; IPv6 in brackets), the default port is
    filled in, repeated and trailing slashes collapse, and the user info, query string and fragment
    (e.g. an auth key) are dropped: URLs that differ only there push to the same stream. Host names
    are not resolved here (see :func:`lease_keys`).

    Raises:
        SpecError: ``InvalidStreamURL.Malformed``, as :func:`parse_stream_url`.
    """
    return parse_stream_url(url).key()


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to for a TCP connection to ``port`` (``socket.getaddrinfo``),
    as texts. Blocking, with no timeout of its own: :func:`lease_keys` runs it in a thread and
    stops waiting after its timeout.

    Raises:
        OSError: ``socket.gaierror`` when the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


_lookups = threading.BoundedSemaphore(MAX_CONCURRENT_LOOKUPS)


def _resolve_within(resolve: Resolver, host: str, port: int, timeout: float) -> list[str]:
    """``resolve(host, port)`` in a daemon thread, waiting at most ``timeout`` seconds (a lookup
    cannot be cancelled: a late one finishes in the background and is ignored).

    Raises:
        TimeoutError: no answer within ``timeout`` (or no free lookup slot).
        OSError, UnicodeError, ValueError: from ``resolve``.
    """
    deadline = time.monotonic() + timeout
    if not _lookups.acquire(timeout=timeout):
        raise TimeoutError("too many host name lookups at once")
    outcome: list[list[str] | BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(list(resolve(host, port)))
        except BaseException as exc:  # handed to the waiting caller
            outcome.append(exc)
        finally:
            _lookups.release()
            done.set()

    threading.Thread(target=run, name="resolve-stream-url", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"no answer within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def lease_keys(url: str, resolve: Resolver | None = None, *, timeout: float = RESOLVE_TIMEOUT) -> list[str]:
    """The lease keys of a StreamURL: one per destination it may push to, all taken (or refused)
    together when its task starts.

    For an IP address, the one key :func:`stream_url_key`. For a host name, that key (so the same
    name is one destination whatever it resolves to later) plus one key per address the name
    resolves to now, with the same scheme, port and path (so ``localhost`` and ``127.0.0.1`` are one
    destination). Sorted, without duplicates.

    Args:
        url: the StreamURL.
        resolve: how host names are resolved (tests inject one); None: :func:`system_resolve`.
        timeout: how long the resolution may take, in seconds.

    Raises:
        SpecError: ``InvalidStreamURL.Malformed`` as :func:`parse_stream_url`;
            ``InvalidStreamURL.Unresolvable`` (field ``("stream_url",)``) when the host name does not
            resolve to any IP address within ``timeout``. The message names the host, never the
            path or the query.
    """
    destination = parse_stream_url(url)
    if destination.is_address:
        return [destination.key()]
    resolver = resolve if resolve is not None else system_resolve
    try:
        found = _resolve_within(resolver, destination.host, destination.port, timeout)
    except TimeoutError:
        raise SpecError(
            _UNRESOLVABLE, f"StreamURL's host {destination.host} did not resolve within {timeout:g} s", _FIELD
        ) from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise SpecError(
            _UNRESOLVABLE,
            f"StreamURL's host {destination.host} does not resolve ({exc.__class__.__name__})",
            _FIELD,
        ) from None
    addresses = {address for text in found if (address := canonical_address(str(text))) is not None}
    if not addresses:
        raise SpecError(_UNRESOLVABLE, f"StreamURL's host {destination.host} has no IP address", _FIELD)
    return sorted({destination.key(), *(destination.key(address) for address in addresses)})


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an IP address is a public unicast address that images and webhooks may reach.

    False for loopback, private (RFC 1918 and the other ``is_private`` ranges), link-local, CGNAT
    100.64.0.0/10, unique-local IPv6, multicast, reserved, unspecified, and for IPv6 addresses that
    embed such an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
    ``2002::/16``). A string that is not an IP address (an IPv6 zone id is accepted) is not public.
    """
    if isinstance(address, str):
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
        except ValueError:
            return False
    else:
        ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        embedded = ip.sixtofour
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def allow_private_urls() -> bool:
    """Whether URLs that an app gives (overlay images, webhooks) may reach private, loopback or
    link-local addresses: ``MPU_ALLOW_PRIVATE_URLS=1`` (the one switch), or the older
    ``MPU_IMAGE_ALLOW_PRIVATE=1``, which keeps working. Off by default."""
    on = ("1", "true", "yes")
    return (
        os.environ.get("MPU_ALLOW_PRIVATE_URLS", "") in on
        or os.environ.get("MPU_IMAGE_ALLOW_PRIVATE", "") in on
    )
