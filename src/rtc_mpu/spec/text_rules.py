"""Which characters the strings of a request may hold, and how untrusted text is shown in logs.

Shared by the API (both dialects check every string of a request with :func:`char_problem` before
anything is stored, :mod:`rtc_mpu.api.schemas`), the task spec and the layout store (the same checks again, in
depth) and the log formatting of every ``mpu`` process (:func:`escape_for_log`).

Two rules:

* :attr:`CharRule.NAME`, for every string but free text: ids (AppId, ChannelId, UserId, TaskId, the
  SubSpec*/UnsubSpec* user lists), layout names, URLs, time zones, TaskProfile... Refused: the C0 and
  C1 control characters (U+0000-U+001F, U+007F-U+009F: newline, tab, NUL, ...), the line and paragraph
  separators U+2028 and U+2029, the bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E,
  U+2066-U+2069), lone surrogates (U+D800-U+DFFF: they cannot be encoded in UTF-8) and U+FFFE, U+FFFF
  (not characters of XML 1.0). Such characters forge log lines, reverse how an id reads, break RPC XML
  answers and Redis writes.
* :attr:`CharRule.TEXT`, for free text drawn on the video (``UserPanes.N.Texts.M.Text``): the same,
  except that ``"\\n"`` (a line break: the renderer starts a new line) and the bidirectional controls
  (right-to-left writing needs them) are allowed.
"""

from __future__ import annotations

import enum
import re

__all__ = ["CharRule", "char_problem", "escape_for_log"]

#: Never valid in any string: lone surrogates, and U+FFFE, U+FFFF (not XML 1.0 characters).
_NEVER = "\ud800-\udfff\ufffe\uffff"
#: Line and paragraph separators (Unicode's own line breaks).
_SEPARATORS = "\u2028\u2029"
#: Bidirectional controls (Unicode's Bidi_Control property).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"

_NAME_REFUSED = re.compile(f"[\x00-\x1f\x7f-\x9f{_SEPARATORS}{_BIDI}{_NEVER}]")
_TEXT_REFUSED = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_SEPARATORS}{_NEVER}]")
#: What :func:`escape_for_log` escapes (all of the refused characters of NAME).
_LOG_ESCAPED = _NAME_REFUSED
_LOG_ESCAPED_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_SEPARATORS}{_BIDI}{_NEVER}]")


class CharRule(enum.StrEnum):
    """Which characters a string may hold (module docstring)."""

    NAME = "name"
    TEXT = "text"


def _kind(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "a lone surrogate"
    if code in (0xFFFE, 0xFFFF):
        return "a noncharacter"
    if code in (0x2028, 0x2029):
        return "a line separator"
    if code <= 0x1F or 0x7F <= code <= 0x9F:
        return "a control character"
    return "a bidirectional control"


def char_problem(value: str, rule: CharRule = CharRule.NAME) -> str | None:
    """What is wrong with the characters of ``value`` under ``rule``, or None if nothing is.

    The answer names the first refused character by its code point and position (e.g. ``"contains a
    control character (U+000A) at position 3"``), never the value itself.
    """
    pattern = _TEXT_REFUSED if rule is CharRule.TEXT else _NAME_REFUSED
    found = pattern.search(value)
    if found is None:
        return None
    char = found.group()
    return f"contains {_kind(char)} (U+{ord(char):04X}) at position {found.start() + 1}"


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_for_log(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character :attr:`CharRule.NAME` refuses written as a Python escape
    (``\\n``, ``\\x00``, ``\\u202e``, ``\\ud800``): one log line stays one line and reads as written.
    With ``keep_newlines``, ``"\\n"`` stays (for tracebacks, which the program makes)."""
    pattern = _LOG_ESCAPED_BUT_NEWLINE if keep_newlines else _LOG_ESCAPED
    return pattern.sub(_escape, text)
