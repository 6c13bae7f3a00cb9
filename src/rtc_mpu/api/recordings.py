"""A task's recording files on disk: listed, resolved safely and deleted for the REST API.

The worker writes each recording under ``<recordings dir>/<app_id>/<task_id>/`` (``MPU_RECORDINGS_DIR``,
:func:`rtc_mpu.workers.settings.recordings_dir`; a template may add subfolders) and, once a file is
finished, a sidecar ``<file>.json`` beside it: ``{"name", "size_bytes", "duration_seconds",
"start_time"}`` (``start_time`` ISO 8601 UTC). A file without a sidecar (being written, or its worker
died) is listed with its size on disk and ``duration_seconds`` null; its ``start_time`` is read from a
``YYYYmmddTHHMMSSZ`` in its name, else null.

The path depends only on AppId and TaskId, so recordings outlive the task's record. Retention
(``MPU_RECORDINGS_RETENTION_DAYS``, 0 = forever) is applied lazily: listing a task's recordings deletes
the files (and sidecars) last modified longer ago, and an expired file is not served.

Names from requests are resolved so that nothing outside the task's folder can be reached: each
``/``-separated segment is letters, digits, ``.``, ``_``, ``-`` (not starting with ``.``), the
extension is a recording's, and the resolved path (symlinks followed) must stay inside the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rtc_mpu.api.service import ServiceError
from rtc_mpu.spec.outputs import RECORD_FORMATS, START_TIME_FORMAT
from rtc_mpu.spec.storage import recording_url

#: MIME type per recording extension.
MIME_TYPES = {".mp4": "video/mp4", ".flv": "video/x-flv", ".mkv": "video/x-matroska"}
#: Extension of a sidecar (appended to the recording's name).
SIDECAR = ".json"
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
_START_IN_NAME = re.compile(r"\d{8}T\d{6}Z")
_MAX_NAME = 1024


@dataclass(frozen=True)
class Recording:
    """One recording file.

    Attributes:
        name: its path relative to the task's folder (``/``-separated).
        size_bytes: bytes (the sidecar's, else the file's size now).
        duration_seconds: seconds of media, or None (no sidecar: unfinished).
        start_time: ISO 8601 UTC, or None when unknown.
    """

    name: str
    size_bytes: int
    duration_seconds: float | None
    start_time: str | None

    def to_dict(self, app_id: str, task_id: str) -> dict[str, object]:
        """The JSON object of the API (RecordingOut), with its download ``url``."""
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "duration_seconds": self.duration_seconds,
            "start_time": self.start_time,
            "url": recording_url(app_id, task_id, self.name),
        }


def task_folder(root: str | os.PathLike[str], app_id: str, task_id: str) -> Path:
    """``<root>/<app_id>/<task_id>`` (ids already validated: no ``/``, no ``..``)."""
    return Path(root) / app_id / task_id


def _not_found(name: str) -> ServiceError:
    return ServiceError(404, "InvalidRecording.NotFound", f"no recording {name!r} for this task")


def _is_recording(name: str) -> bool:
    return any(name.endswith(extension) for extension in RECORD_FORMATS.values())


def _expired(path: Path, retention_days: float, now: float) -> bool:
    if retention_days <= 0:
        return False
    try:
        return now - path.stat().st_mtime > retention_days * 86400.0
    except OSError:
        return False


def resolve(root: str | os.PathLike[str], app_id: str, task_id: str, name: str) -> Path:
    """The file a request's recording ``name`` designates.

    Raises:
        ServiceError: 404 ``InvalidRecording.NotFound``: a malformed name (``..``, absolute, controls,
            not a recording's extension), a path leaving the task's folder (symlinks included), or no
            such regular file.
    """
    if not name or len(name) > _MAX_NAME or not _is_recording(name):
        raise _not_found(name[:80])
    segments = name.split("/")
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise _not_found(name[:80])
    folder = task_folder(root, app_id, task_id)
    try:
        base = folder.resolve(strict=True)
        path = folder.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):
        raise _not_found(name) from None
    if not path.is_relative_to(base) or not path.is_file():
        raise _not_found(name)
    return path


def _sidecar(path: Path, name: str) -> Recording | None:
    """The sidecar's facts, or None (missing or malformed)."""
    try:
        data = json.loads(Path(str(path) + SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeError):
        return None
    if not isinstance(data, dict):
        return None
    size, duration, start = data.get("size_bytes"), data.get("duration_seconds"), data.get("start_time")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        return None
    if start is not None and not isinstance(start, str):
        return None
    return Recording(name, size, None if duration is None else float(duration), start)


def _start_from_name(name: str) -> str | None:
    match = _START_IN_NAME.search(name)
    if match is None:
        return None
    try:
        start = datetime.strptime(match.group(0), START_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return start.isoformat().replace("+00:00", "Z")


def delete_file(path: Path) -> None:
    """Delete a recording and its sidecar (either may be gone already)."""
    for victim in (path, Path(str(path) + SIDECAR)):
        with contextlib.suppress(FileNotFoundError):
            victim.unlink()


def list_recordings(
    root: str | os.PathLike[str], app_id: str, task_id: str, retention_days: float, now: float | None = None
) -> list[Recording]:
    """The task's recording files (``.mp4``, ``.flv``, ``.mkv``), by start time then name; sidecars,
    symlinks and names :func:`resolve` would refuse are not listed. Files older than ``retention_days``
    (by modification time; 0 = keep forever) are deleted with their sidecars instead of being listed.

    Raises:
        OSError: the folder cannot be read (other than missing: then the list is empty).
    """
    now = time.time() if now is None else now
    folder = task_folder(root, app_id, task_id)
    if not folder.is_dir() or folder.is_symlink():
        return []
    found: list[Recording] = []
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not (Path(directory) / d).is_symlink())
        for file_name in sorted(files):
            path = Path(directory) / file_name
            if not _is_recording(file_name) or path.is_symlink() or not path.is_file():
                continue
            name = path.relative_to(folder).as_posix()
            if not all(_SEGMENT.fullmatch(segment) for segment in name.split("/")):
                continue  # hidden or oddly named: never written by a worker, never served
            if _expired(path, retention_days, now):
                delete_file(path)
                continue
            recording = _sidecar(path, name)
            if recording is None:
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                recording = Recording(name, size, None, _start_from_name(name))
            found.append(recording)
    return sorted(found, key=lambda r: (r.start_time or "", r.name))


def is_expired(path: Path, retention_days: float, now: float | None = None) -> bool:
    """Whether a recording is past the retention period (``retention_days`` 0: never)."""
    return _expired(path, retention_days, time.time() if now is None else now)
