"""Log formatting of every ``mpu`` process (the API, the workers and their mix processes, the CLI tools):
one record is one line, whatever a request put into the values it logs.

Values logged come from outside (a ChannelId, a UserId, a publisher's name in the channel, an error
from a remote server): :class:`SafeFormatter` writes the characters that could forge or disguise a log
line (newlines and every other C0/C1 control, U+2028/U+2029, bidirectional controls, lone surrogates;
:func:`rtc_mpu.spec.text_rules.escape_for_log`) as Python escapes (``\\n``, ``\\u202e``). It escapes the
arguments of a record, not its format string (the program's own text), and a record without arguments
entirely; tracebacks keep their line breaks. An argument the program made itself and wants on several
lines (a traceback it formatted) is passed as :class:`Verbatim`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from rtc_mpu.spec.text_rules import escape_for_log

__all__ = ["FORMAT", "SafeFormatter", "Verbatim", "configure_logging"]

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


def configure_logging(level: str | int) -> None:
    """Log to stderr at ``level`` with :class:`SafeFormatter` (the root logger's only handler, as
    :func:`logging.basicConfig` sets it up; Celery workers keep it: ``worker_hijack_root_logger`` is
    off, and their pool processes inherit it).

    Raises:
        ValueError: an unknown level name.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(FORMAT))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
