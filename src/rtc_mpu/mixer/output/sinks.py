"""Sinks: where the encoded stream goes. An RTMP(S) server (FLV over RTMP) or a local file.

Only ``rtmp://`` and ``rtmps://`` URLs or plain file paths with a known container extension ever
reach FFmpeg; anything else (``file:``, ``concat:``, ``tcp:``, ``http:``...) is refused first.

A file is opened by PyAV in two steps: :func:`open_sink` allocates the container (no I/O), the
caller adds its streams, then :func:`start_sink` creates the file and writes the header.

A network sink never lets PyAV touch the network: PyAV holds the GIL while it opens an output's
AVIO (PyAV issue #2400), so the RTMP handshake would stall every thread of the mix, and it gives
an output no interrupt callback, so a server that stops answering would block forever. Instead
:func:`open_link` connects with :class:`rtc_mpu.mixer.output.avio.UrlWriter` (FFmpeg's own RTMP
client, called with the GIL released, every call under a deadline) and PyAV muxes the FLV into a
:class:`~rtc_mpu.mixer.output.avio.MemorySink` whose bytes the caller then writes to the link.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import av
from av.container import OutputContainer

from rtc_mpu.layouts import SpecError
from rtc_mpu.mixer.output.avio import AVERROR_EXIT, AvioError, MemorySink, UrlWriter
from rtc_mpu.spec.urls import redact_url, validate_stream_url

#: Container format by file extension for file sinks.
FILE_FORMATS = {".flv": "flv", ".mp4": "mp4", ".mkv": "matroska", ".ts": "mpegts", ".mov": "mov"}
#: Seconds allowed to connect to an RTMP server (TCP, RTMP handshake, connect and publish commands)
#: before the attempt counts as failed.
DEFAULT_OPEN_TIMEOUT = 5.0
#: Seconds a single write may block before the push counts as failed (the server stopped reading).
DEFAULT_WRITE_TIMEOUT = 5.0
#: Errno values of a network failure (status 5) rather than a refusal by the server (status 6).
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
}


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


def open_sink(
    target: SinkTarget, options: Mapping[str, str], memory: MemorySink | None = None
) -> OutputContainer:
    """Allocate the output container with FFmpeg container ``options`` (``flvflags``, ``movflags``,
    ``hls_time``...); nothing is connected or created yet (see :func:`start_sink`). With ``memory``
    (a network target) the container writes into it instead of opening ``target.url``, and flushes
    after every packet.

    Raises:
        SinkError: FFmpeg refused the target (no I/O happens here, so this is rare).
    """
    try:
        if memory is not None:
            return av.open(
                memory,
                mode="w",
                format=target.container_format,
                container_options={**options, "flush_packets": "1"},
            )
        return av.open(target.url, mode="w", format=target.container_format, container_options=dict(options))
    except (av.error.FFmpegError, OSError) as exc:
        raise sink_error(exc, target, "cannot open output") from None


def start_sink(container: OutputContainer, target: SinkTarget) -> None:
    """Open the container's streams and write its header: creates the file (or, for a container
    over a :class:`MemorySink`, writes the header into it). Blocking: call it off the event loop.

    Raises:
        SinkError: the file could not be created.
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


def open_link(target: SinkTarget, timeout_seconds: float) -> UrlWriter:
    """Connect to a network target (for RTMP: TCP, handshake, ``connect`` and ``publish``) within
    ``timeout_seconds``, without holding the GIL. Blocking: call it off the event loop.

    Raises:
        SinkError: the server could not be reached, did not answer in time, or refused the stream.
    """
    try:
        return UrlWriter(target.url, timeout_seconds=timeout_seconds)
    except AvioError as exc:
        raise link_error(exc, target, opening=True) from None


def link_error(exc: AvioError, target: SinkTarget, *, opening: bool) -> SinkError:
    """The :class:`SinkError` for a failed call of a network link to ``target``.

    Refused connections, resets, broken pipes, unreachable networks, timeouts and interruptions are
    network problems (status 5). Any other failure while ``opening`` is FFmpeg's plain I/O error
    for a server that answered but refused (unknown application, publish refused, bad key) or a host
    name that does not resolve: the push URL is wrong (status 6).
    """
    if exc.code == -errno.ECONNREFUSED:
        return SinkError(f"connection refused: {exc.strerror}", target.display, push_url_problem=False)
    network = exc.timed_out or exc.code == AVERROR_EXIT or -exc.code in _NETWORK_ERRNOS
    if network or not opening:
        return SinkError(f"network error: {exc.strerror or exc}", target.display, push_url_problem=False)
    return SinkError(
        f"the endpoint refused the stream: {exc.strerror or exc}", target.display, push_url_problem=True
    )
