"""Sinks: where the encoded stream goes. An RTMP(S) server (FLV over RTMP) or a local file.

Only ``rtmp://`` and ``rtmps://`` URLs or plain file paths with a known container extension ever
reach FFmpeg; anything else (``file:``, ``concat:``, ``tcp:``, ``http:``...) is refused first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av
from av.container import OutputContainer

from layouts import SpecError
from mixer.urls import redact_url, validate_stream_url

#: Container format by file extension for file sinks.
FILE_FORMATS = {".flv": "flv", ".mp4": "mp4", ".mkv": "matroska", ".ts": "mpegts", ".mov": "mov"}
#: Seconds allowed to connect to an RTMP server before the push fails.
DEFAULT_OPEN_TIMEOUT = 5.0
#: Seconds a single write to the RTMP server may block before the push fails.
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
        raise SpecError(
            "InvalidParameter", f"output file must end in one of {sorted(FILE_FORMATS)}", "output"
        )
    absolute = str(Path(target).resolve())
    return SinkTarget(absolute, FILE_FORMATS[suffix], target, False)


def open_sink(
    target: SinkTarget,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> OutputContainer:
    """Open the output container (connects to the RTMP server). Blocking: call it off the event loop.

    Raises:
        SinkError: the server could not be reached or refused the stream; the file could not be created.
    """
    options: dict[str, str] = {}
    if target.container_format == "flv":
        options["flvflags"] = "no_duration_filesize"
    if target.is_network:
        options["rw_timeout"] = str(int(write_timeout * 1_000_000))
    try:
        return av.open(
            target.url,
            mode="w",
            format=target.container_format,
            container_options=options,
            timeout=(open_timeout, write_timeout),
        )
    except av.error.ConnectionRefusedError as exc:
        raise SinkError(
            f"connection refused: {exc.strerror}", target.display, push_url_problem=False
        ) from None
    except (av.error.TimeoutError, av.error.ConnectionResetError, av.error.ExitError) as exc:
        raise SinkError(f"network error: {exc.strerror}", target.display, push_url_problem=False) from None
    except av.error.FFmpegError as exc:
        raise SinkError(
            f"the endpoint refused the stream: {exc.strerror}",
            target.display,
            push_url_problem=target.is_network,
        ) from None
    except OSError as exc:
        raise SinkError(
            f"cannot open output: {exc.strerror}", target.display, push_url_problem=False
        ) from None
