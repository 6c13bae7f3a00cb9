"""Sinks: where the encoded stream goes. An RTMP(S) server (FLV over RTMP) or a local file.

Only ``rtmp://`` and ``rtmps://`` URLs or plain file paths with a known container extension ever
reach FFmpeg; anything else (``file:``, ``concat:``, ``tcp:``, ``http:``...) is refused first.

Opening is two steps: :func:`open_sink` allocates the container (no I/O), the caller adds its
streams, then :func:`start_sink` writes the header, which is when FFmpeg connects to the RTMP server
(``avio_open`` runs in PyAV's ``start_encoding``, not in ``av.open``).

Timeouts: PyAV applies ``av.open(timeout=...)`` to inputs only, and opens an output's AVIO without
options, so neither an interrupt callback nor ``rw_timeout`` reaches an RTMP *output*. Only the TCP
connect has FFmpeg's own default timeout; the RTMP handshake and every later write wait as long as
the server keeps the connection open without answering or reading. Bound them from outside: run
the blocking calls on a thread that may be abandoned (:class:`rtc_mpu.mixer.output.push.Connection`
does, with :data:`DEFAULT_OPEN_TIMEOUT` and :data:`DEFAULT_WRITE_TIMEOUT`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import av
from av.container import OutputContainer

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.urls import redact_url, validate_stream_url

#: Container format by file extension for file sinks.
FILE_FORMATS = {".flv": "flv", ".mp4": "mp4", ".mkv": "matroska", ".ts": "mpegts", ".mov": "mov"}
#: Seconds allowed to connect to an RTMP server (TCP, RTMP handshake, connect and publish commands)
#: before the attempt counts as failed (enforced by the caller, see the module docstring).
DEFAULT_OPEN_TIMEOUT = 5.0
#: Seconds a single encode-and-write may block before the push counts as failed (enforced by the caller).
DEFAULT_WRITE_TIMEOUT = 5.0


class SinkError(RuntimeError):
    """The output endpoint failed: the user's RTMP server refused or dropped us, or a file is unwritable.

    Attributes:
        target: the redacted URL or file path (safe to log and show).
        push_url_problem: True when the endpoint answered but refused (bad app/key: status 6);
            False for network problems (unreachable, timed out, reset: status 5).
    """

    def __init__(self, message: str, target: str, *, push_url_problem: bool) -> None:
        super().__init__(f"{message} ({target})")
        self.target = target
        self.push_url_problem = push_url_problem


@dataclass(frozen=True)
class SinkTarget:
    """A validated output: ``url`` is what FFmpeg opens, ``display`` what logs show."""

    url: str
    container_format: str
    display: str
    is_network: bool


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_url(target: str) -> bool:
    """True if ``target`` starts with a scheme or protocol prefix (``rtmp://``, ``file:``, ``concat:``).

    Such a target is never treated as a file path: FFmpeg would interpret the prefix as a protocol.
    """
    return bool(_SCHEME.match(target))


def sink_target(target: str) -> SinkTarget:
    """Validate an output: an ``rtmp(s)://`` URL, or a file path ending in .flv/.mp4/.mkv/.ts/.mov.

    Raises:
        SpecError: ``InvalidStreamURL.Malformed`` for a URL that is not rtmp(s) (or a ``proto:``
            prefix), or ``InvalidParameter`` for a file with an unknown extension.
    """
    if is_url(target):
        url = validate_stream_url(target)
        return SinkTarget(url, "flv", redact_url(url), True)
    suffix = Path(target).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise SpecError("InvalidParameter", f"output file must end in one of {sorted(FILE_FORMATS)}")
    absolute = str(Path(target).resolve())
    return SinkTarget(absolute, FILE_FORMATS[suffix], target, False)


def open_sink(target: SinkTarget, options: Mapping[str, str]) -> OutputContainer:
    """Allocate the output container with FFmpeg container ``options`` (``flvflags``, ``movflags``,
    ``hls_time``...); nothing is connected or created yet (see :func:`start_sink`).

    Raises:
        SinkError: FFmpeg refused the target (no I/O happens here, so this is rare).
    """
    try:
        return av.open(target.url, mode="w", format=target.container_format, container_options=dict(options))
    except (av.error.FFmpegError, OSError) as exc:
        raise sink_error(exc, target, "cannot open output") from None


def start_sink(container: OutputContainer, target: SinkTarget) -> None:
    """Open the container's streams and write its header: connects to the RTMP server (TCP, RTMP
    handshake, ``connect`` and ``publish``) or creates the file. Blocking: call it off the event loop;
    it has no timeout of its own beyond FFmpeg's TCP connect timeout (see the module docstring).

    Raises:
        SinkError: the server could not be reached or refused the stream; the file could not be created.
    """
    try:
        container.start_encoding()
    except (av.error.FFmpegError, OSError) as exc:
        raise sink_error(exc, target, "cannot open output") from None


def sink_error(exc: BaseException, target: SinkTarget, action: str) -> SinkError:
    """The :class:`SinkError` for an FFmpeg/OS error ``exc`` raised while opening ``target``.

    Refused connections, timeouts, resets and broken pipes are network problems (status 5). FFmpeg
    reports any other failure of a network target as a plain I/O error: the RTMP server answered but
    refused (unknown application, publish refused, bad key), or the host name does not resolve;
    both mean the push URL is wrong (status 6). ``action`` prefixes errors of file targets.
    """
    reason = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, ConnectionRefusedError):  # av.error's classes derive from the builtin ones
        return SinkError(f"connection refused: {reason}", target.display, push_url_problem=False)
    if isinstance(exc, TimeoutError | ConnectionError | av.error.ExitError):
        return SinkError(f"network error: {reason}", target.display, push_url_problem=False)
    if target.is_network and isinstance(exc, av.error.FFmpegError):
        return SinkError(f"the endpoint refused the stream: {reason}", target.display, push_url_problem=True)
    return SinkError(f"{action}: {reason}", target.display, push_url_problem=False)
