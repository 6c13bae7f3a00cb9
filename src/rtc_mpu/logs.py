"""Log formatting of every ``mpu`` process (the API, the workers and their mix processes, the CLI tools):
one record is one line, whatever a request put into the values it logs.

Values logged come from outside (a ChannelId, a UserId, a publisher's name in the channel, an error
from a remote server): :class:`SafeFormatter` writes the characters that could forge or disguise a log
line (newlines and every other C0/C1 control, U+2028/U+2029, bidirectional controls, lone surrogates;
:func:`rtc_mpu.spec.text_rules.escape_for_log`) as Python escapes (``\\n``, ``\\u202e``). It escapes the
arguments of a record, not its format string (the program's own text), and a record without arguments
entirely; tracebacks keep their line breaks. An argument the program made itself and wants on several
lines (a traceback it formatted) is passed as :class:`Verbatim`.

With ``MPU_LOG_FORMAT=json`` (:func:`configure_logging`), :class:`JsonFormatter` writes each record as
one JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``app_id``/``task_id`` when the
record names a task (:func:`task_ids`), ``exc_info``/``stack_info`` when it has them; the message
escaped as above and every ``rtmp://``/``rtmps://`` URL in it redacted
(:func:`rtc_mpu.spec.urls.redact_url`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from rtc_mpu.spec.text_rules import escape_for_log
from rtc_mpu.spec.urls import redact_url

__all__ = [
    "FORMAT",
    "LOG_FORMATS",
    "JsonFormatter",
    "SafeFormatter",
    "Verbatim",
    "configure_logging",
    "logging_task",
    "redact_urls",
]

#: The line format of every ``mpu`` process.
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Verbatim(str):
    """A log argument made by the program (never request data) whose line breaks are kept; its other
    control characters are still escaped."""

    __slots__ = ()


class _Escaped:
    """A log argument that formats (``%s``, ``%r``) with its controls escaped."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape_for_log(str(self.value))

    def __repr__(self) -> str:
        return escape_for_log(repr(self.value))


def _safe_arg(value: object) -> object:
    if isinstance(value, Verbatim):
        return escape_for_log(value, keep_newlines=True)
    if isinstance(value, int | float):  # for %d, %.2f ... (bools and IntEnums are ints)
        return value
    return _Escaped(value)


#: What :mod:`traceback` writes between chained exceptions.
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _exception_lines(error: traceback.TracebackException, seen: set[int]) -> list[str]:
    """What :mod:`traceback` prints for ``error`` and its chain, with each exception's message (and
    notes) escaped onto one line."""
    seen.add(id(error))
    lines: list[str] = []
    if error.__cause__ is not None and id(error.__cause__) not in seen:
        lines += [*_exception_lines(error.__cause__, seen), _CAUSE]
    elif (
        error.__context__ is not None and not error.__suppress_context__ and id(error.__context__) not in seen
    ):
        lines += [*_exception_lines(error.__context__, seen), _CONTEXT]
    if error.exceptions:  # an ExceptionGroup: traceback's own layout, line breaks kept
        return [*lines, *error.format(chain=False)]
    if error.stack:
        lines += ["Traceback (most recent call last):\n", *error.stack.format()]
    lines += [escape_for_log(line.rstrip("\n")) + "\n" for line in error.format_exception_only()]
    return lines


def safe_message(record: logging.LogRecord) -> str:
    """The record's message with its arguments (or, without arguments, all of it) escaped."""
    if not record.args:
        return escape_for_log(str(record.msg))
    args: Any
    if isinstance(record.args, Mapping):
        args = {key: _safe_arg(value) for key, value in record.args.items()}
    else:
        args = tuple(_safe_arg(value) for value in record.args)
    try:
        text: str = str(record.msg) % args
    except (TypeError, ValueError, KeyError):  # a format that does not fit its arguments
        return escape_for_log(f"{record.msg!s} {record.args!r}")
    return text


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that escapes what a record's values could smuggle into the log
    (module docstring). The record itself is left unchanged for other handlers."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (plus its traceback, if any)."""
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = safe_message(record), None
        if safe.exc_text:  # cached by another handler's formatter, unescaped
            safe.exc_text = escape_for_log(safe.exc_text, keep_newlines=True)
        return super().format(safe)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        """The traceback with its line breaks, each exception's message on one line (escaped: it may
        quote outside data), other controls escaped."""
        _, value, _ = ei
        if not isinstance(value, BaseException):
            return escape_for_log(super().formatException(ei), keep_newlines=True)
        lines = _exception_lines(traceback.TracebackException.from_exception(value), set())
        return escape_for_log("".join(lines).rstrip("\n"), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        """The stack, its line breaks kept and other controls escaped."""
        return escape_for_log(super().formatStack(stack_info), keep_newlines=True)


#: URLs that may carry a stream key (their stream name and query are redacted in JSON logs).
_PUSH_URL = re.compile(r"rtmps?://[^\s'\"<>]+", re.IGNORECASE)
#: Log messages the workers write as ``task <app_id>/<task_id>...`` (their arguments name the task).
_TASK_PREFIXES = ("task %s/%s", "HLS of task %s/%s", "cannot remove the HLS of task %s/%s")


def redact_urls(text: str) -> str:
    """``text`` with every ``rtmp://``/``rtmps://`` URL redacted (stream name cut, query and user
    info dropped)."""
    return _PUSH_URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    trailing = len(url) - len(url.rstrip(").,;:!?]"))  # sentence punctuation after the URL stays
    return redact_url(url[: len(url) - trailing]) + url[len(url) - trailing :]


#: The task this process mixes (:func:`logging_task`), for records that name none.
_process_task: tuple[str, str] | None = None


@contextlib.contextmanager
def logging_task(app_id: str, task_id: str) -> Iterator[None]:
    """While inside, JSON records of this process that name no task get ``app_id`` and ``task_id``
    (a mix process runs one task: its pipeline, sources and outputs log without ids). Process-wide,
    not per thread: for a process that runs one task at a time."""
    global _process_task
    saved, _process_task = _process_task, (app_id, task_id)
    try:
        yield
    finally:
        _process_task = saved


def task_ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(app_id, task_id) of a record: its ``app_id``/``task_id`` attributes (``extra=``), else the
    first two arguments of a message written ``task %s/%s ...`` (as the workers log tasks), else a
    single ``app/task`` argument of ``task %s ...`` (the reconciler's), else the process's task
    (:func:`logging_task`)."""
    app_id, task_id = getattr(record, "app_id", None), getattr(record, "task_id", None)
    if app_id is not None or task_id is not None:
        return _id(app_id), _id(task_id)
    msg, args = record.msg, record.args
    if isinstance(msg, str) and isinstance(args, tuple) and args:
        if len(args) >= 2 and msg.startswith(_TASK_PREFIXES):
            return _id(args[0]), _id(args[1])
        if msg.startswith("task %s") and isinstance(args[0], str) and args[0].count("/") == 1:
            app, task = args[0].split("/")
            return _id(app), _id(task)
    if _process_task is not None:
        return _id(_process_task[0]), _id(_process_task[1])
    return None, None


def _id(value: object) -> str | None:
    return None if value is None else escape_for_log(str(value))


class JsonFormatter(SafeFormatter):
    """One JSON object per line: ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger``,
    ``message`` (escaped as :class:`SafeFormatter` does, push URLs redacted), ``app_id`` and
    ``task_id`` when the record names a task (:func:`task_ids`), ``exc_info`` and ``stack_info`` (with
    their line breaks, which JSON writes as ``\\n``) when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_urls(safe_message(record)),
        }
        app_id, task_id = task_ids(record)
        if app_id is not None:
            entry["app_id"] = app_id
        if task_id is not None:
            entry["task_id"] = task_id
        if record.exc_info:
            entry["exc_info"] = redact_urls(self.formatException(record.exc_info))
        elif record.exc_text:  # cached by another handler's formatter, unescaped
            entry["exc_info"] = redact_urls(escape_for_log(record.exc_text, keep_newlines=True))
        if record.stack_info:
            entry["stack_info"] = redact_urls(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


#: Values of ``MPU_LOG_FORMAT``.
LOG_FORMATS = ("text", "json")


def configure_logging(level: str | int, log_format: str | None = None) -> None:
    """Log to stderr at ``level`` with :class:`SafeFormatter`, or :class:`JsonFormatter` when
    ``log_format`` (default: env ``MPU_LOG_FORMAT``, else ``text``) is ``json`` (the root logger's only
    handler, as :func:`logging.basicConfig` sets it up; Celery workers keep it:
    ``worker_hijack_root_logger`` is off, and their pool processes inherit it).

    Raises:
        ValueError: an unknown level name or log format.
    """
    chosen = (log_format if log_format is not None else os.environ.get("MPU_LOG_FORMAT") or "text").lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"MPU_LOG_FORMAT must be text or json, not {chosen!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else SafeFormatter(FORMAT))
    if chosen == "json":  # warnings.warn() writes to stderr itself: one JSON line too
        logging.captureWarnings(True)
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
