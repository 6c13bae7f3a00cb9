"""Where a task's files live (issue 13): folder names shared by the worker, the API and the stack.

- Recordings: ``<MPU_RECORDINGS_DIR>/<app_id>/<task_id>/<file>`` (the directory is read by
  :func:`rtc_mpu.workers.settings.recordings_dir`, worker and API alike) and, beside each finished
  file, ``<file>.json`` (:data:`SIDECAR_SUFFIX`) with ``{"name" (relative to the task's folder),
  "size_bytes", "duration_seconds", "start_time" (ISO 8601 UTC)}``, written atomically by the worker.
- ``MPU_HLS_DIR`` (default ``<MPU_RUN_DIR or run>/hls``, the directory the local stack's nginx
  serves at ``/hls/<app_id>/<task_id>/index.m3u8``): ``<dir>/<app_id>/<task_id>/index.m3u8`` and its
  segments. The worker and the local stack (:mod:`rtc_mpu.stack`) read it here, so they agree. A
  task's HLS folder is removed after the task ended (``MPU_HLS_RETENTION_SECONDS``,
  :func:`rtc_mpu.workers.settings.hls_retention_seconds`) with :func:`remove_task_folder`, which never
  leaves the directory; :func:`task_folders` and :func:`newest_change` are what the sweep looks at.

Relative paths are relative to the working directory of the process that reads them. Standard
library only.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

#: Environment variables and defaults (relative to the working directory).
HLS_DIR_VARIABLE = "MPU_HLS_DIR"
RUN_DIR_VARIABLE = "MPU_RUN_DIR"
DEFAULT_RUN_DIR = "run"
#: The sidecar of a finished recording ``x.mp4`` is ``x.mp4.json``.
SIDECAR_SUFFIX = ".json"
#: The playlist of a task's HLS output, in its folder.
HLS_PLAYLIST = "index.m3u8"


def recording_url(app_id: str, task_id: str, name: str) -> str:
    """The path of recording ``name`` (relative to the task's folder, ``/``-separated) in the
    recordings API: ``/v1/apps/{app_id}/tasks/{task_id}/recordings/{name}`` (the name quoted)."""
    return f"/v1/apps/{app_id}/tasks/{task_id}/recordings/{quote(name, safe='/')}"


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def hls_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of worker-written HLS (``MPU_HLS_DIR``, default ``<MPU_RUN_DIR or run>/hls``,
    what the local stack's nginx serves), made absolute; not created."""
    env = _env(environ)
    value = env.get(HLS_DIR_VARIABLE, "").strip()
    if not value:
        value = str(Path(env.get(RUN_DIR_VARIABLE, "").strip() or DEFAULT_RUN_DIR) / "hls")
    return Path(value).absolute()


def _safe_name(value: str) -> bool:
    """A folder name :func:`task_folder` accepts."""
    return value not in ("", ".", "..") and not any(c in value for c in "/\\\0")


def task_folder(root: Path, app_id: str, task_id: str) -> Path:
    """``root/<app_id>/<task_id>``: a task's folder under the recordings or HLS directory.

    Raises:
        ValueError: an id that is empty, ``.``/``..``, or holds a path separator (ids are validated
            ``[A-Za-z0-9_-]`` strings; this guards the path anyway).
    """
    for value in (app_id, task_id):
        if not _safe_name(value):
            raise ValueError(f"not a safe id for a folder name: {value!r}")
    return root / app_id / task_id


def _real_directory(path: Path) -> bool:
    """``path`` is a directory itself, not a symlink to one (``lstat``: links are not followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def task_folders(root: Path) -> list[tuple[str, str, Path]]:
    """Every task folder under ``root``: ``(app_id, task_id, root/<app_id>/<task_id>)``, sorted.

    Only real directories are listed: a symlink (to a folder inside ``root`` or outside), a file, or a
    name :func:`task_folder` would refuse is skipped, at either level. A missing ``root`` has none.
    """
    found: list[tuple[str, str, Path]] = []
    try:
        apps = sorted(os.listdir(root))
    except OSError:
        return found
    for app_id in apps:
        app_folder = root / app_id
        if not _safe_name(app_id) or not _real_directory(app_folder):
            continue
        try:
            tasks = sorted(os.listdir(app_folder))
        except OSError:
            continue
        found += [
            (app_id, task_id, app_folder / task_id)
            for task_id in tasks
            if _safe_name(task_id) and _real_directory(app_folder / task_id)
        ]
    return found


def newest_change(folder: Path) -> float:
    """When ``folder`` or an entry directly in it was last modified, as a Unix time in seconds
    (``lstat``: symlinks are not followed); 0.0 when the folder cannot be read."""
    newest = 0.0
    try:
        newest = os.lstat(folder).st_mtime
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                except OSError:  # removed meanwhile
                    continue
    except OSError:
        return newest
    return newest


def remove_task_folder(root: Path, app_id: str, task_id: str) -> bool:
    """Delete ``root/<app_id>/<task_id>`` and everything in it, never anything outside ``root``.

    Symlinks are never followed: one inside the folder is removed as a link (its target stays), and
    a task folder or an app folder that is a symlink (wherever it points) is refused. ``root`` itself
    may be a symlink (an operator's choice); the folder must resolve inside it. The app folder is
    kept (a worker may be creating another task's folder in it).

    Returns:
        True when the folder was removed, False when there was none.

    Raises:
        ValueError: an unsafe id (:func:`task_folder`), or a folder that is a symlink, not a
            directory, or resolves outside ``root``: nothing is deleted.
        OSError: the folder could not be deleted (what could be is).
    """
    task_folder(root, app_id, task_id)  # the ids are safe folder names
    try:
        base = root.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    app_folder = base / app_id
    folder = app_folder / task_id
    if not os.path.lexists(folder):
        return False
    for path in (app_folder, folder):
        if not _real_directory(path):
            raise ValueError(f"refusing to delete {folder}: {path} is a symlink or not a directory")
    if folder.resolve() != folder or not folder.is_relative_to(base):
        raise ValueError(f"refusing to delete {folder}: it resolves outside {base}")
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:  # removed meanwhile (another worker's sweep)
        return False
    return True
