"""Where a task's files live (issue 13): folder names shared by the worker, the API and the stack.

- Recordings: ``<MPU_RECORDINGS_DIR>/<app_id>/<task_id>/<file>`` (the directory is read by
  :func:`rtc_mpu.workers.settings.recordings_dir`, worker and API alike) and, beside each finished
  file, ``<file>.json`` (:data:`SIDECAR_SUFFIX`) with ``{"name" (relative to the task's folder),
  "size_bytes", "duration_seconds", "start_time" (ISO 8601 UTC)}``, written atomically by the worker.
- ``MPU_HLS_DIR`` (default ``<MPU_RUN_DIR or run>/hls``, the directory the local stack's nginx
  serves at ``/hls/<app_id>/<task_id>/index.m3u8``): ``<dir>/<app_id>/<task_id>/index.m3u8`` and its
  segments. The worker and the local stack (:mod:`rtc_mpu.stack`) read it here, so they agree.

Relative paths are relative to the working directory of the process that reads them. Standard
library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Environment variables and defaults (relative to the working directory).
HLS_DIR_VARIABLE = "MPU_HLS_DIR"
RUN_DIR_VARIABLE = "MPU_RUN_DIR"
DEFAULT_RUN_DIR = "run"
#: The sidecar of a finished recording ``x.mp4`` is ``x.mp4.json``.
SIDECAR_SUFFIX = ".json"
#: The playlist of a task's HLS output, in its folder.
HLS_PLAYLIST = "index.m3u8"


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


def task_folder(root: Path, app_id: str, task_id: str) -> Path:
    """``root/<app_id>/<task_id>``: a task's folder under the recordings or HLS directory.

    Raises:
        ValueError: an id that is empty, ``.``/``..``, or holds a path separator (ids are validated
            ``[A-Za-z0-9_-]`` strings; this guards the path anyway).
    """
    for value in (app_id, task_id):
        if value in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(f"not a safe id for a folder name: {value!r}")
    return root / app_id / task_id
