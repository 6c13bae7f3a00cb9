"""A task's outputs as plain data: where one composite and one encode go.

A task has up to :data:`MAX_OUTPUTS` outputs, each with a server-assigned ``output_id`` (``o1``,
``o2``, ... in request order; ids of removed outputs are never reused within a task):

- ``{"kind": "rtmp", "url": "rtmp://..."}``: a push under the StreamURL rules (:mod:`rtc_mpu.spec.urls`).
- ``{"kind": "record", "format": "mp4"|"flv"|"mkv", "template": ..., "max_duration_seconds": ...}``:
  files under the recordings directory; MP4 is fragmented (readable up to the last fragment if the
  worker dies). ``template`` names the file inside the task's own folder
  ``<recordings dir>/<app_id>/<task_id>/`` with the placeholders ``{app_id}``, ``{task_id}``,
  ``{output_id}`` and ``{start_time}`` (``YYYYmmddTHHMMSSZ``, UTC); a leading ``{app_id}/{task_id}/``
  is accepted and means that folder (the documented example). ``max_duration_seconds`` (optional,
  >= :data:`MIN_FILE_SECONDS`) rolls over to a new file at a keyframe.
- ``{"kind": "hls", "segment_seconds": 2, "playlist": "sliding"|"event"}``: segments and
  ``index.m3u8`` under ``<hls dir>/<app_id>/<task_id>/``.
- ``{"kind": "snapshot", "interval_seconds": 5}``: a JPEG of the composite every N seconds.
- ``{"kind": "rtc"}``: the mix published back into the channel over WebRTC as publisher
  ``<task_id>.mix`` (no URL; at most one per task; the task then encodes H.264 main profile).

Errors are :class:`~rtc_mpu.layouts.SpecError` with a field path (``("outputs", 2, "url")``) and the
codes ``InvalidOutput.Kind``, ``InvalidOutput.LimitExceeded``, ``InvalidOutput.Duplicate``,
``InvalidOutput.Template``, ``InvalidParameter``, or the StreamURL codes of :mod:`rtc_mpu.spec.urls`.
This module imports no media library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec import urls

#: Most outputs of one task (Tencent's mix-to-CDN takes up to 10 push URLs).
MAX_OUTPUTS = 10
#: Output kinds accepted today, and the reserved one.
KINDS = ("rtmp", "record", "hls", "snapshot", "rtc")
RESERVED_KINDS: tuple[str, ...] = ()
#: Recording container formats and their file extensions.
RECORD_FORMATS = {"mp4": ".mp4", "flv": ".flv", "mkv": ".mkv"}
#: Default file-name template of a recording (inside the task's folder).
DEFAULT_TEMPLATE = "{start_time}_{output_id}"
#: Shortest ``max_duration_seconds`` of a recording file, and the longest template.
MIN_FILE_SECONDS = 10.0
MAX_TEMPLATE_LENGTH = 200
#: HLS segment length range in seconds, and the default.
HLS_SEGMENT_SECONDS = (1.0, 10.0)
DEFAULT_HLS_SEGMENT_SECONDS = 2.0
HLS_PLAYLISTS = ("sliding", "event")
#: Snapshot interval range in seconds, and the default.
SNAPSHOT_INTERVAL_SECONDS = (1.0, 3600.0)
DEFAULT_SNAPSHOT_INTERVAL_SECONDS = 5.0
#: ``{start_time}`` format (UTC).
START_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
#: The placeholders a template may use.
PLACEHOLDERS = ("app_id", "task_id", "output_id", "start_time")
_TASK_FOLDER_PREFIX = "{app_id}/{task_id}/"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: A template path segment after the placeholders are taken out: letters, digits, ``._-``.
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_OUTPUT_ID = re.compile(r"o[1-9][0-9]{0,5}")


@dataclass(frozen=True)
class RtmpOutput:
    """An RTMP/RTMPS push. ``url`` is validated (:func:`rtc_mpu.spec.urls.validate_stream_url`)."""

    output_id: str
    url: str
    kind: str = "rtmp"


@dataclass(frozen=True)
class RecordOutput:
    """A recording: ``format`` (``mp4``, ``flv``, ``mkv``), the file-name ``template`` (validated,
    relative to the task's folder, without extension), ``max_duration_seconds`` per file (None: one
    file for the whole task)."""

    output_id: str
    format: str = "mp4"
    template: str = DEFAULT_TEMPLATE
    max_duration_seconds: float | None = None
    kind: str = "record"

    def file_name(self, app_id: str, task_id: str, start: datetime) -> str:
        """The file's path relative to the task's folder, e.g. ``20261201T101500Z_o2.mp4``.

        Args:
            start: when the file starts (converted to UTC).
        """
        return (
            render_template(self.template, app_id, task_id, self.output_id, start)
            + RECORD_FORMATS[self.format]
        )


@dataclass(frozen=True)
class HlsOutput:
    """HLS segments of ``segment_seconds`` seconds and a ``sliding`` window or full ``event`` playlist."""

    output_id: str
    segment_seconds: float = DEFAULT_HLS_SEGMENT_SECONDS
    playlist: str = "sliding"
    kind: str = "hls"


@dataclass(frozen=True)
class SnapshotOutput:
    """A JPEG of the composite every ``interval_seconds`` seconds of media time."""

    output_id: str
    interval_seconds: float = DEFAULT_SNAPSHOT_INTERVAL_SECONDS
    kind: str = "snapshot"


@dataclass(frozen=True)
class RtcOutput:
    """The mix published back into the channel over WebRTC, as publisher ``<task_id>.mix``."""

    output_id: str
    kind: str = "rtc"


OutputSpec = RtmpOutput | RecordOutput | HlsOutput | SnapshotOutput | RtcOutput


def _error(code: str, message: str, *path: str | int) -> SpecError:
    return SpecError(code, message, ("outputs", *path))


def _number(
    item: Mapping[str, object], name: str, default: float, low: float, high: float, index: int
) -> float:
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _error("InvalidParameter", f"{name} must be a number", index, name)
    if not low <= value <= high:
        raise _error("InvalidParameter", f"{name} must be between {low:g} and {high:g}", index, name)
    return float(value)


def check_template(template: str) -> str:
    """Validate a recording file-name template and return it without a leading ``{app_id}/{task_id}/``.

    A template is at most :data:`MAX_TEMPLATE_LENGTH` characters of path segments joined by ``/``;
    each segment, once its placeholders are taken out, is letters, digits, ``.``, ``_`` and ``-``
    (never ``.`` or ``..`` alone, never empty); placeholders are those of :data:`PLACEHOLDERS`. The
    extension comes from the format, so none is needed (one that matches is dropped).

    Raises:
        ValueError: the reason, in words.
    """
    if not template or len(template) > MAX_TEMPLATE_LENGTH:
        raise ValueError(f"template must be 1-{MAX_TEMPLATE_LENGTH} characters")
    if template.startswith(_TASK_FOLDER_PREFIX):
        template = template[len(_TASK_FOLDER_PREFIX) :]
    for extension in RECORD_FORMATS.values():
        if template.endswith(extension):
            template = template[: -len(extension)]
    for name in _PLACEHOLDER.findall(template):
        if name not in PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
    bare = _PLACEHOLDER.sub("x", template)
    for segment in bare.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment) or segment.startswith("."):
            raise ValueError(
                "template must be a relative path of segments made of letters, digits, '.', '_', '-' "
                "and placeholders (no '..', no leading '/' or '.')"
            )
    if "{start_time}" not in template and "{output_id}" not in template:
        # Two files (two outputs, a rollover, a resumed task) would otherwise share a name.
        raise ValueError("template must contain {start_time} or {output_id}")
    return template


def render_template(template: str, app_id: str, task_id: str, output_id: str, start: datetime) -> str:
    """The template (already checked) with its placeholders filled in.

    ``app_id`` and ``task_id`` are validated ids (``[A-Za-z0-9_-]``), so the result stays a safe
    relative path.
    """
    values = {
        "app_id": app_id,
        "task_id": task_id,
        "output_id": output_id,
        "start_time": start.astimezone(UTC).strftime(START_TIME_FORMAT),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def parse_output(item: object, output_id: str, index: int) -> OutputSpec:
    """One output of a request (a JSON object) as its spec, with the given id.

    Args:
        index: its position in the request, for error field paths.

    Raises:
        SpecError: unknown or reserved kind, a bad field (field path ``("outputs", index, name)``).
    """
    if not isinstance(item, Mapping):
        raise _error("InvalidParameter", "an output must be an object", index)
    kind = item.get("kind")
    if kind in RESERVED_KINDS:
        raise _error(
            "InvalidOutput.Kind", f"output kind {kind!r} is reserved and not available yet", index, "kind"
        )
    if kind not in KINDS:
        raise _error("InvalidOutput.Kind", f"output kind must be one of {', '.join(KINDS)}", index, "kind")
    allowed = {
        "rtmp": {"kind", "url"},
        "record": {"kind", "format", "template", "max_duration_seconds"},
        "hls": {"kind", "segment_seconds", "playlist"},
        "snapshot": {"kind", "interval_seconds"},
        "rtc": {"kind"},
    }[str(kind)]
    for name in item:
        if name not in allowed and name != "output_id":
            raise _error("InvalidParameter", f"unknown field {name!r} for a {kind} output", index, str(name))
    if kind == "rtmp":
        url = item.get("url")
        if not isinstance(url, str):
            raise _error("InvalidStreamURL.Malformed", "url is required for an rtmp output", index, "url")
        try:
            return RtmpOutput(output_id, urls.validate_stream_url(url))
        except SpecError as exc:
            raise _error(exc.code, exc.message, index, "url") from None
    if kind == "record":
        fmt = item.get("format", "mp4")
        if fmt not in RECORD_FORMATS:
            raise _error(
                "InvalidParameter", f"format must be one of {', '.join(RECORD_FORMATS)}", index, "format"
            )
        template = item.get("template", DEFAULT_TEMPLATE)
        if not isinstance(template, str):
            raise _error("InvalidOutput.Template", "template must be a string", index, "template")
        try:
            template = check_template(template)
        except ValueError as exc:
            raise _error("InvalidOutput.Template", str(exc), index, "template") from None
        max_duration: float | None = None
        if item.get("max_duration_seconds") is not None:
            max_duration = _number(item, "max_duration_seconds", 0.0, MIN_FILE_SECONDS, 86400.0, index)
        return RecordOutput(output_id, str(fmt), template, max_duration)
    if kind == "hls":
        playlist = item.get("playlist", "sliding")
        if playlist not in HLS_PLAYLISTS:
            raise _error("InvalidParameter", "playlist must be 'sliding' or 'event'", index, "playlist")
        segment = _number(item, "segment_seconds", DEFAULT_HLS_SEGMENT_SECONDS, *HLS_SEGMENT_SECONDS, index)
        return HlsOutput(output_id, segment, str(playlist))
    if kind == "rtc":
        return RtcOutput(output_id)
    interval = _number(
        item, "interval_seconds", DEFAULT_SNAPSHOT_INTERVAL_SECONDS, *SNAPSHOT_INTERVAL_SECONDS, index
    )
    return SnapshotOutput(output_id, interval)


def next_output_id(used: Iterable[str]) -> str:
    """The next id after the highest of ``used`` (``o1`` when none)."""
    highest = max((int(i[1:]) for i in used if _OUTPUT_ID.fullmatch(i)), default=0)
    return f"o{highest + 1}"


def check_outputs(outputs: Sequence[OutputSpec]) -> None:
    """Rules across a task's outputs: at most :data:`MAX_OUTPUTS`, one destination once, one HLS,
    one snapshot and one rtc output, distinct ids.

    Raises:
        SpecError: ``InvalidOutput.LimitExceeded`` or ``InvalidOutput.Duplicate`` (field path of the
            offending output, by position).
    """
    if len(outputs) > MAX_OUTPUTS:
        raise _error("InvalidOutput.LimitExceeded", f"a task has at most {MAX_OUTPUTS} outputs", MAX_OUTPUTS)
    seen_destinations: dict[str, int] = {}
    seen_kinds: set[str] = set()
    seen_ids: set[str] = set()
    for index, output in enumerate(outputs):
        if output.output_id in seen_ids:
            raise _error("InvalidOutput.Duplicate", f"output id {output.output_id} twice", index)
        seen_ids.add(output.output_id)
        if isinstance(output, RtmpOutput):
            key = urls.stream_url_key(output.url)
            if key in seen_destinations:
                raise _error(
                    "InvalidOutput.Duplicate",
                    f"the same destination as output #{seen_destinations[key]}",
                    index,
                    "url",
                )
            seen_destinations[key] = index
        elif output.kind in ("hls", "snapshot", "rtc"):
            if output.kind in seen_kinds:
                raise _error("InvalidOutput.Duplicate", f"a task has at most one {output.kind} output", index)
            seen_kinds.add(output.kind)


def output_to_dict(output: OutputSpec) -> dict[str, object]:
    """The JSON object of an output spec (as stored and as answered, URL not redacted)."""
    if isinstance(output, RtmpOutput):
        return {"output_id": output.output_id, "kind": "rtmp", "url": output.url}
    if isinstance(output, RecordOutput):
        return {
            "output_id": output.output_id,
            "kind": "record",
            "format": output.format,
            "template": output.template,
            "max_duration_seconds": output.max_duration_seconds,
        }
    if isinstance(output, HlsOutput):
        return {
            "output_id": output.output_id,
            "kind": "hls",
            "segment_seconds": output.segment_seconds,
            "playlist": output.playlist,
        }
    if isinstance(output, RtcOutput):
        return {"output_id": output.output_id, "kind": "rtc"}
    return {"output_id": output.output_id, "kind": "snapshot", "interval_seconds": output.interval_seconds}


def output_from_dict(data: Mapping[str, object]) -> OutputSpec:
    """An output spec from its stored JSON object (:func:`output_to_dict`).

    Raises:
        SpecError: the object is not a valid output.
    """
    output_id = data.get("output_id")
    if not isinstance(output_id, str) or not _OUTPUT_ID.fullmatch(output_id):
        raise _error("InvalidParameter", f"bad output_id {output_id!r}")
    fields = {k: v for k, v in data.items() if k != "output_id"}
    return parse_output(fields, output_id, 0)
