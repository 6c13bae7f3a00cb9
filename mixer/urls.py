"""StreamURL checks: what may reach FFmpeg as an output URL, how it appears in logs, its lease key.

FFmpeg opens many protocols (``file:``, ``concat:``, ``tcp:``, ...); only ``rtmp://`` and ``rtmps://``
with a host may ever be handed to it as a push URL (shared/DESIGN.md, "Security rules").
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from layouts.errors import SpecError

ALLOWED_SCHEMES = ("rtmp", "rtmps")
#: Default ports (RTMP: 1935, RTMPS: 443) used when a URL names none, for the lease key.
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
#: Longest StreamURL accepted, in characters.
MAX_URL_LENGTH = 2048
_CODE = "InvalidStreamURL.Malformed"
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def validate_stream_url(url: str) -> str:
    """Check that ``url`` is a push URL FFmpeg may open; return it with its scheme lower-cased.

    Accepts ``rtmp://host[:port]/app/stream[?query]`` and the same with ``rtmps``.

    Raises:
        SpecError: ``InvalidStreamURL.Malformed`` (field ``StreamURL``) for another scheme, no host,
            no app or stream name, a bad port, whitespace or control characters, or more than
            2048 characters. The message never repeats the query string (it may hold a key).
    """
    if not isinstance(url, str) or not url:
        raise SpecError(_CODE, "StreamURL is required", "StreamURL")
    if len(url) > MAX_URL_LENGTH:
        raise SpecError(_CODE, f"StreamURL is longer than {MAX_URL_LENGTH} characters", "StreamURL")
    if _CONTROL.search(url):
        raise SpecError(_CODE, "StreamURL contains whitespace or control characters", "StreamURL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES or not url.lower().startswith(f"{scheme}://"):
        raise SpecError(
            _CODE, f"StreamURL must start with rtmp:// or rtmps://, not {scheme or 'no'} scheme", "StreamURL"
        )
    try:
        port = parts.port
    except ValueError:
        raise SpecError(_CODE, "StreamURL has an invalid port", "StreamURL") from None
    if not parts.hostname or port == 0:
        raise SpecError(_CODE, "StreamURL must name a host", "StreamURL")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2:
        raise SpecError(_CODE, "StreamURL must name an app and a stream: rtmp://host/app/stream", "StreamURL")
    # FFmpeg looks protocols up case-sensitively: hand it a lower-case scheme.
    return scheme + url[len(scheme) :]


def redact_url(url: str) -> str:
    """The URL with credentials, the query string and the stream name hidden, for logs and status.

    ``rtmp://user:pw@host:1935/live/secretkey?auth=x`` becomes ``rtmp://host:1935/live/sec***``.
    The first three characters of the stream name are kept so an operator can tell streams apart.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    segments = parts.path.split("/")
    named = [i for i, segment in enumerate(segments) if segment]
    if len(named) > 1:  # the last named segment is the stream name (a trailing slash may follow it)
        segments[named[-1]] = segments[named[-1]][:3] + "***"
    return f"{parts.scheme}://{host}{port}{'/'.join(segments)}"


def stream_url_key(url: str) -> str:
    """The normalized StreamURL that names a lease: scheme, host, port, app and stream name.

    Scheme and host are lower-cased, the default port is filled in, repeated slashes collapse, and
    the query string and fragment (e.g. an auth key) are dropped: two URLs that differ only there
    push to the same stream.

    Raises:
        SpecError: as :func:`validate_stream_url`.
    """
    validate_stream_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or DEFAULT_PORTS[scheme]
    path = "/".join(s for s in parts.path.split("/") if s)
    return f"{scheme}://{host}:{port}/{path}"
