"""A running task's outputs on the worker (issue 13): from ``params.outputs`` to the pipeline's outputs.

The task's outputs (:meth:`rtc_mpu.workers.model.TaskParams.output_specs`, :mod:`rtc_mpu.spec.outputs`)
become the destinations of its one encode (:class:`rtc_mpu.mixer.pipeline.Pipeline`):

- The **main output** is the first RTMP output (:func:`main_output`): the pipeline's ``target``,
  whose failures and give-up decide the task's status (5/6, 2) as a single StreamURL always did. A
  task without an RTMP output gets a main output that discards the packets (:class:`NullMuxer`),
  so every real output is an added one that fails alone.
- Every **other RTMP output** is added with :meth:`Pipeline.add_output`, reconnecting on its own
  forever: a dead CDN shows ``reconnecting``/``failed`` in its :class:`OutputStats`, never stops the
  task nor stalls the others.
- A **recording** writes ``<recordings dir>/<app_id>/<task_id>/<RecordOutput.file_name(...)>``
  (fragmented MP4, FLV or MKV), rolling over every ``max_duration_seconds`` at a keyframe; each file
  is named from the template with its own start time (:class:`Recording`), and each finished file
  gets a sidecar ``<file>.json`` (:func:`write_sidecar`) and a ``recording.ready`` webhook event
  (:meth:`rtc_mpu.workers.store.TaskStore.emit_recording_ready`, fenced by the claim's token; the
  output's thread only queues it: one thread of :class:`TaskOutputs` makes the Redis calls, in
  order, errors logged, never blocking the mix). A task resumed after a worker died starts a new
  file; :func:`repair_sidecars` writes the sidecars of the files the dead worker left.
- **HLS** writes ``<hls dir>/<app_id>/<task_id>/index.m3u8`` and its segments
  (:class:`~rtc_mpu.mixer.output.muxers.HlsMuxer`). A playlist already there (the task resumed on
  another worker, its pipeline rebuilt, the output reopened) is continued: numbering goes on, an
  ``#EXT-X-DISCONTINUITY`` marks the new run. The playlist is finalized (``#EXT-X-ENDLIST``) when
  the output ends for good (the task ends, or the output is removed), not when the task goes on
  elsewhere (:attr:`TaskOutputs.task_continues`). After the task ended, the folder is removed once
  ``MPU_HLS_RETENTION_SECONDS`` passed (:func:`sweep_hls`, run by every worker's reconciler; at once
  by the worker that ends the task when the retention is 0), never while the task is active.
- An **rtc** output publishes the mix back into the channel as ``<task_id>.mix`` over WebRTC, reusing
  the task's H.264 (:mod:`rtc_mpu.mixer.output.rtc`); a task with one encodes main profile
  (:func:`video_profile`), and adding one to a task encoding high profile rebuilds its pipeline
  (:func:`needs_rebuild`).
- A **snapshot** output is a :class:`~rtc_mpu.mixer.output.snapshot.SnapshotTaker` fed through the
  pipeline's frame listener (:class:`SnapshotSlot`); each JPEG goes to the store
  (:meth:`rtc_mpu.workers.store.TaskStore.put_snapshot`), errors logged.

A directory that cannot be created or written (or a full disk) fails only that output, with the
reason in its :class:`OutputStats`. Outputs added or removed on a running task (a new record version)
are applied by :meth:`TaskOutputs.apply` (:func:`output_changes`); a new RTMP output starts at a
keyframe the encoder is asked for at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av

from rtc_mpu.mixer.output.encoder import EncodedPacket, StreamTemplates
from rtc_mpu.mixer.output.muxers import (
    ContainerMuxer,
    FinishedFile,
    HlsMuxer,
    Muxer,
    MuxerFactory,
    OutputTarget,
    RollingFileMuxer,
    file_output,
    hls_output,
    numbered_path,
    rtmp_output,
)
from rtc_mpu.mixer.output.outputs import Output, OutputState
from rtc_mpu.mixer.output.rtc import RTC_PROFILE, rtc_muxer_factory, rtc_output
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget, sink_target
from rtc_mpu.mixer.output.snapshot import Snapshot, SnapshotTaker
from rtc_mpu.mixer.pipeline import MAIN_OUTPUT, Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.spec.outputs import (
    RECORD_FORMATS,
    HlsOutput,
    OutputSpec,
    RecordOutput,
    RtcOutput,
    RtmpOutput,
    SnapshotOutput,
)
from rtc_mpu.spec.storage import (
    HLS_PLAYLIST,
    SIDECAR_SUFFIX,
    newest_change,
    remove_task_folder,
    task_folder,
    task_folders,
)
from rtc_mpu.spec.tokens import MIX_SUFFIX
from rtc_mpu.workers.model import TaskNotFoundError, TaskRecord
from rtc_mpu.workers.stats import OutputStats
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

log = logging.getLogger(__name__)

#: Shortest time a snapshot is kept in the store, in seconds (else 3 intervals).
MIN_SNAPSHOT_TTL_SECONDS = 60.0
#: HLS segments in a sliding-window playlist.
HLS_LIST_SIZE = 5
#: The sink of the main output of a task without an RTMP output (never opened by FFmpeg).
NULL_SINK = SinkTarget("null:", "null", "(no RTMP output)", False)
#: Seconds a task's HLS folder without a task record (its record expired, a day after the task ended)
#: must have been left unchanged before it is removed, whatever the retention: a folder being
#: written always has an active record, but one whose record this worker cannot see is not removed
#: while something writes to it.
HLS_ORPHAN_MIN_AGE = 600.0


# -- plain decisions -------------------------------------------------------------------------------
def main_output(specs: Sequence[OutputSpec]) -> RtmpOutput | None:
    """The task's main output: its first RTMP output, or None when it has none."""
    return next((spec for spec in specs if isinstance(spec, RtmpOutput)), None)


def output_changes(
    running: Mapping[str, OutputSpec], wanted: Sequence[OutputSpec], main_id: str | None
) -> tuple[list[OutputSpec], list[str]]:
    """What to add and what to remove so that the added outputs ``running`` (by id, without the main
    one) become ``wanted`` (every output of the new record version, the main one included).

    An output whose id is kept but whose spec changed is removed and added again. The main output
    (``main_id``) is neither added nor removed here (see :func:`main_changed`).

    Returns:
        (specs to add, in ``wanted`` order; ids to remove, in ``running`` order).
    """
    wanted_by_id = {spec.output_id: spec for spec in wanted if spec.output_id != main_id}
    removed = [oid for oid, spec in running.items() if wanted_by_id.get(oid) != spec]
    added = [spec for oid, spec in wanted_by_id.items() if running.get(oid) != spec]
    return added, removed


def main_changed(main: RtmpOutput | None, wanted: Sequence[OutputSpec]) -> bool:
    """Whether the new outputs ``wanted`` have another main output than ``main`` (it was removed, or
    another RTMP output comes first): the pipeline must then be rebuilt (its main output is fixed)."""
    return main_output(wanted) != main


def video_profile(specs: Sequence[OutputSpec]) -> str:
    """The x264 profile a task with outputs ``specs`` encodes: main with an rtc output, else high."""
    return RTC_PROFILE if any(isinstance(spec, RtcOutput) for spec in specs) else "high"


def needs_rebuild(main: RtmpOutput | None, wanted: Sequence[OutputSpec], profile: str) -> bool:
    """Whether the pipeline (main output ``main``, encoding ``profile``) must be rebuilt for the outputs
    ``wanted``: another main output (:func:`main_changed`), or an rtc output added to a task encoding
    high profile. Removing the rtc output keeps main profile until the task restarts (no gap)."""
    return main_changed(main, wanted) or (video_profile(wanted) == RTC_PROFILE and profile != RTC_PROFILE)


def snapshot_ttl(interval_seconds: float) -> float:
    """Seconds a snapshot is kept in the store: 3 intervals, at least :data:`MIN_SNAPSHOT_TTL_SECONDS`."""
    return max(MIN_SNAPSHOT_TTL_SECONDS, 3 * interval_seconds)


def iso_utc(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC to the second, ``2026-12-01T10:15:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sidecar_path(path: Path) -> Path:
    """The sidecar of recording ``path``: ``<path>.json``."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sidecar(
    folder: Path, path: Path, size_bytes: int, duration_seconds: float, start: datetime
) -> dict[str, object]:
    """The sidecar object of recording ``path`` in the task's ``folder``: ``name`` (relative to the
    folder, ``/``-separated), ``size_bytes``, ``duration_seconds`` (rounded to ms) and ``start_time``
    (ISO 8601 UTC)."""
    return {
        "name": path.relative_to(folder).as_posix(),
        "size_bytes": size_bytes,
        "duration_seconds": round(max(0.0, duration_seconds), 3),
        "start_time": iso_utc(start),
    }


def write_sidecar(path: Path, data: Mapping[str, object]) -> None:
    """Write the sidecar of recording ``path`` atomically (a hidden temporary file, then a rename):
    a reader sees no sidecar or a whole one.

    Raises:
        OSError: it cannot be written.
    """
    target = sidecar_path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(dict(data), separators=(",", ":")), encoding="utf-8")
    os.replace(temporary, target)


def probe_duration(path: Path) -> float | None:
    """Seconds of media in a recording, from its first to the end of its last demuxable packet (a file
    cut by a crash is read up to its last complete fragment); None when it cannot be opened."""
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError):
        return None
    start: float | None = None
    end = 0.0
    try:
        with contextlib.suppress(av.error.FFmpegError, OSError):
            for packet in container.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                seconds = float(packet.pts * packet.time_base)
                start = seconds if start is None else min(start, seconds)
                end = max(end, seconds + float((packet.duration or 0) * packet.time_base))
    finally:
        container.close()
    return 0.0 if start is None else max(0.0, end - start)


def repair_sidecars(folder: Path) -> list[Path]:
    """Write the missing sidecars of the recordings in a task's ``folder`` (files a worker that died
    left without one): duration by :func:`probe_duration`, start time = modification time minus
    duration. Files that cannot be opened are skipped (logged). Errors never raise.

    Returns:
        The recordings that got a sidecar.
    """
    repaired: list[Path] = []
    if not folder.is_dir():
        return repaired
    for path in sorted(folder.rglob("*")):
        if path.suffix not in RECORD_FORMATS.values() or not path.is_file() or sidecar_path(path).exists():
            continue
        duration = probe_duration(path)
        if duration is None:
            log.warning("recording %s left by a previous worker is unreadable; no sidecar", path)
            continue
        try:
            stat = path.stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            write_sidecar(
                path, sidecar(folder, path, stat.st_size, duration, modified - timedelta(seconds=duration))
            )
        except OSError as exc:
            log.warning("cannot write the sidecar of %s: %s", path, exc)
            continue
        log.info("recording %s left by a previous worker: %.1f s, sidecar written", path, duration)
        repaired.append(path)
    return repaired


def unique_path(path: Path) -> Path:
    """``path``, or ``stem-0001.ext``, ``stem-0002.ext``... when a file (or its sidecar) of that name
    exists: a template without ``{start_time}``, or two files in one second, never overwrite one."""
    candidate, index = path, 0
    while candidate.exists() or sidecar_path(candidate).exists():
        index += 1
        candidate = Path(numbered_path(str(path), index))
    return candidate


def _make_dirs(folder: Path, display: str) -> None:
    """Create ``folder``; an OS error (read-only, full disk, permissions) as the output's SinkError.

    Raises:
        SinkError: it cannot be created.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(
            f"cannot create {folder}: {exc.strerror or exc}", display, push_url_problem=False
        ) from None


# -- output helpers ------------------------------------------------------------------------------
class NullMuxer:
    """The main output of a task without an RTMP output: takes every packet, writes nothing."""

    def write(self, packet: EncodedPacket) -> int:
        """Discard ``packet``; 0 bytes written."""
        return 0

    def close(self) -> None:
        """Nothing to close."""

    def abort(self) -> None:
        """Nothing to abort."""

    def interrupt(self) -> None:
        """Nothing blocks."""


def null_muxer(target: OutputTarget, templates: StreamTemplates) -> Muxer:
    """A :data:`~rtc_mpu.mixer.output.muxers.MuxerFactory` of :class:`NullMuxer`."""
    return NullMuxer()


class Recording:
    """One record output of a task: where its files go and what happens when one is finished.

    Args:
        spec: the output.
        app_id, task_id: the task.
        folder: the task's recordings folder (``<recordings dir>/<app_id>/<task_id>``).
        now: the wall clock (tests).
        on_ready: called (on the output's thread; it must not block) with each finished file's
            ``{"output_id", "name", "size_bytes", "duration_seconds", "start_time"}`` after its
            sidecar was written or attempted; its errors are logged.

    Attributes:
        files: files finished so far (their sidecars written or attempted).
        error: the last sidecar error, or None.
    """

    def __init__(
        self,
        spec: RecordOutput,
        app_id: str,
        task_id: str,
        folder: Path,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_ready: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self.spec = spec
        self.app_id = app_id
        self.task_id = task_id
        self.folder = folder
        self._now = now
        self._on_ready = on_ready
        self.files = 0
        self.error: str | None = None
        self._lock = threading.Lock()

    def next_path(self) -> Path:
        """The path of a file starting now (the template with the current time, made unique)."""
        return unique_path(self.folder / self.spec.file_name(self.app_id, self.task_id, self._now()))

    def target(self) -> OutputTarget:
        """The output target of the recording's first file (starting now).

        Raises:
            SpecError: the file name has an extension the muxers do not know (not with a valid spec).
        """
        return file_output(str(self.next_path()), self.spec.max_duration_seconds)

    def path_for(self, first: str, index: int) -> str:
        """:class:`RollingFileMuxer`'s ``path_for``: file 0 is ``first``, a rolled file is named from
        the template with its own start time."""
        return first if index == 0 else str(self.next_path())

    def muxer_factory(self, target: OutputTarget, templates: StreamTemplates) -> Muxer:
        """Open the recording (on the output's thread): its folder, then a rolling file muxer.

        Raises:
            SinkError: the folder or the file cannot be created.
        """
        _make_dirs(Path(target.sink.url).parent, target.display)

        def make(target: OutputTarget, templates: StreamTemplates, path: str) -> Muxer:
            _make_dirs(Path(path).parent, target.display)
            return ContainerMuxer(target, templates, path)

        return RollingFileMuxer(target, templates, self.finished, path_for=self.path_for, make=make)

    def finished(self, done: FinishedFile) -> None:
        """A file is finished (on the output's thread): write its sidecar, then hand its data to
        ``on_ready``; errors are logged."""
        path = Path(done.path)
        data: dict[str, object] | None = None
        try:
            data = sidecar(self.folder, path, done.size, done.duration, done.started_at)
            write_sidecar(path, data)
        except (OSError, ValueError) as exc:
            with self._lock:
                self.error = f"cannot write the sidecar of {path.name}: {exc}"
            log.error("recording %s: %s", path, self.error)
        with self._lock:
            self.files += 1
        if data is not None and self._on_ready is not None:
            try:
                self._on_ready({"output_id": self.spec.output_id, **data})
            except Exception:  # never fails the recording
                log.exception("recording %s: announcing the finished file failed", path)


def hls_muxer_factory(
    target: OutputTarget, templates: StreamTemplates, final: Callable[[], bool] = lambda: True
) -> Muxer:
    """Open an HLS output (on its thread): its folder, then FFmpeg's ``hls`` muxer, continuing the
    playlist an earlier run left there (:class:`HlsMuxer`; ``final``: see there).

    Raises:
        SinkError: the folder or the playlist cannot be created.
    """
    _make_dirs(Path(target.sink.url).parent, target.display)
    return HlsMuxer(target, templates, final)


# -- HLS retention ---------------------------------------------------------------------------------
class TaskLookup(Protocol):
    """What :func:`sweep_hls` needs of the task store (:class:`rtc_mpu.workers.store.TaskStore`)."""

    def get_task(self, app_id: str, task_id: str) -> TaskRecord:
        """The task's record.

        Raises:
            TaskNotFoundError: there is none (never started, or expired after it ended).
            StoreUnavailableError: the store failed.
        """
        ...


def hls_expired(record: TaskRecord | None, changed_at: float, retention_seconds: float, now: float) -> bool:
    """Whether a task's HLS folder may be removed at ``now``.

    Args:
        record: the task's record, or None when it has none.
        changed_at: when the folder last changed (:func:`~rtc_mpu.spec.storage.newest_change`).
        retention_seconds: how long a folder is kept after its task ended, in seconds (0: not kept).
        now: the current time.

    ``changed_at`` and ``now`` are Unix times in seconds. An active task's folder is never removed
    (queued, starting, running, retrying, stopping: whoever runs it writes there). An ended task's
    folder is removed ``retention_seconds`` after the later of its end and the folder's last change.
    A folder without a record is removed ``retention_seconds`` (at least :data:`HLS_ORPHAN_MIN_AGE`)
    after its last change.
    """
    if record is not None and record.active:
        return False
    if record is None:
        return now - changed_at >= max(retention_seconds, HLS_ORPHAN_MIN_AGE)
    return now - max(record.ended_at, changed_at) >= retention_seconds


def sweep_hls(
    root: Path, store: TaskLookup, retention_seconds: float, now: float | None = None
) -> list[Path]:
    """Remove the HLS folders under ``root`` (``MPU_HLS_DIR``) whose retention is over
    (:func:`hls_expired`, each task's record read from ``store``), with
    :func:`~rtc_mpu.spec.storage.remove_task_folder`: symlinks are never followed and nothing outside
    ``root`` is deleted. A folder that cannot be removed is logged and left for the next sweep.

    Args:
        root: the HLS directory.
        store: the task store.
        retention_seconds: seconds a folder is kept after its task ended.
        now: the current Unix time in seconds (default: now).

    Returns:
        The folders removed.

    Raises:
        StoreUnavailableError: the store failed (the folders not yet looked at are left alone).
    """
    removed: list[Path] = []
    for app_id, task_id, folder in task_folders(root):
        try:
            record: TaskRecord | None = store.get_task(app_id, task_id)
        except TaskNotFoundError:
            record = None
        moment = time.time() if now is None else now
        if not hls_expired(record, newest_change(folder), retention_seconds, moment):
            continue
        try:
            if remove_task_folder(root, app_id, task_id):
                removed.append(folder)
                log.info("HLS of task %s/%s removed (ended, retention over)", app_id, task_id)
        except (OSError, ValueError) as exc:
            log.warning("cannot remove the HLS of task %s/%s: %s", app_id, task_id, exc)
    return removed


def remove_hls(root: Path, app_id: str, task_id: str) -> bool:
    """Remove a task's HLS folder now (the task has just ended and the retention is 0): errors are
    logged, never raised. True when it was removed."""
    try:
        removed = remove_task_folder(root, app_id, task_id)
    except (OSError, ValueError) as exc:
        log.warning("cannot remove the HLS of task %s/%s: %s", app_id, task_id, exc)
        return False
    if removed:
        log.info("HLS of task %s/%s removed (ended, no retention)", app_id, task_id)
    return removed


class SnapshotSlot:
    """The pipeline's frame listener for a snapshot output that may come and go while it runs: offers
    each frame to the current :class:`SnapshotTaker`, if any. Set from the event loop, called on the
    encode thread (a reference read is atomic)."""

    def __init__(self) -> None:
        self.taker: SnapshotTaker | None = None

    def __call__(self, frame: av.VideoFrame, pts: int, time_base: Fraction) -> None:
        taker = self.taker
        if taker is not None:
            taker.offer(frame, pts, time_base)


@dataclass
class SnapshotSink:
    """Stores a task's snapshots (a :class:`SnapshotTaker`'s ``on_snapshot``, on its thread).

    Attributes:
        stored: snapshots stored; ``bytes_stored``: their JPEG bytes.
        error: the last store error (redacted by the store's message), None after a success.
    """

    store: TaskStoreProtocol
    app_id: str
    task_id: str
    interval_seconds: float
    stored: int = 0
    bytes_stored: int = 0
    error: str | None = None

    def __call__(self, snapshot: Snapshot) -> None:
        try:
            self.store.put_snapshot(
                self.app_id,
                self.task_id,
                snapshot.jpeg,
                snapshot.taken_at_unix_seconds,
                ttl_seconds=snapshot_ttl(self.interval_seconds),
            )
        except Exception as exc:  # the store is down: the next snapshot tries again
            self.error = f"cannot store the snapshot: {exc.__class__.__name__}"
            log.warning("task %s/%s: %s (%s)", self.app_id, self.task_id, self.error, exc)
            return
        self.stored += 1
        self.bytes_stored += len(snapshot.jpeg)
        self.error = None


# -- the task's outputs --------------------------------------------------------------------------
class TaskOutputs:
    """The outputs of one run of a task (see the module docstring); made per pipeline.

    Args:
        specs: the task's outputs (:meth:`TaskParams.output_specs`).
        app_id, task_id: the task.
        store: where snapshots go.
        recordings_dir, hls_dir: the roots (:class:`rtc_mpu.workers.settings.WorkerSettings`).
        retry_initial, retry_max: the reconnect backoff of added RTMP outputs, in seconds.
        channel: the task's channel (where an rtc output publishes), or None (rtc outputs refused).
        token: the claim's fencing token: each finished recording file is announced with it
            (``recording.ready``, :meth:`rtc_mpu.workers.store.TaskStore.emit_recording_ready`) on a
            thread of its own; None: not announced.
    """

    def __init__(
        self,
        specs: Sequence[OutputSpec],
        app_id: str,
        task_id: str,
        store: TaskStoreProtocol,
        recordings_dir: Path,
        hls_dir: Path,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 5.0,
        channel: ChannelConfig | None = None,
        token: int | None = None,
    ) -> None:
        self.app_id = app_id
        self.token = token
        #: Makes the ``recording.ready`` Redis calls, one at a time in order (made with the first
        #: recording when there is a token; shut down by :meth:`close`).
        self._announcer: ThreadPoolExecutor | None = None
        self.channel = channel
        self.task_id = task_id
        self.store = store
        self.recordings_folder = task_folder(recordings_dir, app_id, task_id)
        self.hls_folder = task_folder(hls_dir, app_id, task_id)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.main = main_output(specs)
        #: Every output of the task, in order (the main one included).
        self.specs: list[OutputSpec] = list(specs)
        #: The added outputs the pipeline has (by id, not the main one).
        self.running: dict[str, OutputSpec] = {}
        self.recordings: dict[str, Recording] = {}
        self.snapshots: dict[str, SnapshotSink] = {}
        self.slot = SnapshotSlot()
        #: Outputs that could not even be made (a bad path), by id, with why.
        self.problems: dict[str, str] = {}
        #: The task goes on after this pipeline (handed over, fenced out, or the pipeline rebuilt):
        #: set before the pipeline stops, so HLS playlists are left open for the next run (no
        #: ``#EXT-X-ENDLIST``). False: outputs that close end for good.
        self.task_continues = False

    @property
    def main_target(self) -> SinkTarget:
        """The pipeline's ``target``: the main RTMP output, or :data:`NULL_SINK`.

        Raises:
            SpecError: the main output's URL is not a valid push URL.
        """
        return sink_target(self.main.url) if self.main is not None else NULL_SINK

    @property
    def main_muxer_factory(self) -> MuxerFactory | None:
        """The main output's muxer factory: None (FLV over RTMP) or :func:`null_muxer`."""
        return None if self.main is not None else null_muxer

    async def start(self, pipeline: Pipeline) -> None:
        """Add every output but the main one to ``pipeline`` (before or while it runs)."""
        await self.apply(pipeline, self.specs)

    async def apply(self, pipeline: Pipeline, wanted: Sequence[OutputSpec]) -> None:
        """Make the pipeline's added outputs those of ``wanted`` (:func:`output_changes`): removed
        ones are closed (a recording's last file finished), new ones added. The main output is not
        changed here (:func:`main_changed`)."""
        main_id = self.main.output_id if self.main is not None else None
        added, removed = output_changes(self.running, wanted, main_id)
        for output_id in removed:
            await self._remove(pipeline, output_id)
        for spec in added:
            await self._add(pipeline, spec)
        self.specs = list(wanted)

    async def _add(self, pipeline: Pipeline, spec: OutputSpec) -> None:
        self.running[spec.output_id] = spec
        self.problems.pop(spec.output_id, None)
        if isinstance(spec, SnapshotOutput):
            sink = SnapshotSink(self.store, self.app_id, self.task_id, spec.interval_seconds)
            old, self.slot.taker = (
                self.slot.taker,
                SnapshotTaker(sink, interval_seconds=spec.interval_seconds),
            )
            self.snapshots[spec.output_id] = sink
            if old is not None:
                old.close(timeout=0)
            log.info("task %s/%s: snapshots every %g s", self.app_id, self.task_id, spec.interval_seconds)
            return
        name = self._pipeline_name(pipeline, spec.output_id)
        factory: MuxerFactory | None = None
        try:
            if isinstance(spec, RtmpOutput):
                target = rtmp_output(spec.url)
            elif isinstance(spec, RecordOutput):
                on_ready = None
                if self.token is not None:
                    if self._announcer is None:
                        self._announcer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mpu-announce")
                    on_ready = self._queue_ready
                recording = Recording(
                    spec, self.app_id, self.task_id, self.recordings_folder, on_ready=on_ready
                )
                self.recordings[spec.output_id] = recording
                target, factory = recording.target(), recording.muxer_factory
            elif isinstance(spec, RtcOutput):
                if self.channel is None:
                    raise ValueError("this worker has no channel to publish the mix into")
                publisher_id = f"{self.task_id}{MIX_SUFFIX}"
                target = rtc_output(self.channel, publisher_id)
                factory = rtc_muxer_factory(
                    self.channel, publisher_id, asyncio.get_running_loop(), pipeline.request_keyframe
                )
            else:
                assert isinstance(spec, HlsOutput)
                target = hls_output(
                    str(self.hls_folder / HLS_PLAYLIST),
                    segment_seconds=spec.segment_seconds,
                    list_size=HLS_LIST_SIZE,
                    event=spec.playlist == "event",
                )
                factory = self._hls_muxer
        except (ValueError, OSError) as exc:  # SpecError is a ValueError
            self.problems[spec.output_id] = str(exc)
            log.error("task %s/%s: output %s refused: %s", self.app_id, self.task_id, spec.output_id, exc)
            return
        try:
            await pipeline.add_output(
                name,
                target,
                give_up_after=None,
                retry_initial=self.retry_initial,
                retry_max=self.retry_max,
                muxer_factory=factory,
            )
        except SinkError as exc:  # a file or HLS output that cannot be created: it alone is failed
            log.error("task %s/%s: output %s failed: %s", self.app_id, self.task_id, spec.output_id, exc)
            return
        log.info(
            "task %s/%s: output %s (%s) added: %s",
            self.app_id,
            self.task_id,
            spec.output_id,
            spec.kind,
            target.display,
        )

    async def _remove(self, pipeline: Pipeline, output_id: str) -> None:
        spec = self.running.pop(output_id, None)
        if isinstance(spec, SnapshotOutput):
            self.snapshots.pop(output_id, None)
            taker, self.slot.taker = self.slot.taker, None
            if taker is not None:
                await asyncio.to_thread(taker.close)
        else:
            name = self._current_name(pipeline, output_id)
            if name is not None:
                await pipeline.remove_output(name)
        log.info("task %s/%s: output %s removed", self.app_id, self.task_id, output_id)

    def _hls_muxer(self, target: OutputTarget, templates: StreamTemplates) -> Muxer:
        """:func:`hls_muxer_factory`, the playlist finalized on close unless :attr:`task_continues`."""
        return hls_muxer_factory(target, templates, final=lambda: not self.task_continues)

    @staticmethod
    def _pipeline_name(pipeline: Pipeline, output_id: str) -> str:
        """A name for output ``output_id`` in the pipeline: the id, or ``<id>#n`` when an output of that
        id was removed before (a changed spec) and the pipeline keeps the old one's status."""
        existing = pipeline.outputs
        name, index = output_id, 1
        while name in existing:
            index += 1
            name = f"{output_id}#{index}"
        return name

    @staticmethod
    def _current_name(pipeline: Pipeline, output_id: str) -> str | None:
        names = [n for n in pipeline.outputs if n == output_id or n.startswith(output_id + "#")]
        return names[-1] if names else None

    def _queue_ready(self, recording: dict[str, object]) -> None:
        """:class:`Recording`'s ``on_ready`` (on an output's thread): queue the announcement."""
        announcer = self._announcer
        if announcer is None:
            return
        try:
            announcer.submit(self._announce_ready, recording)
        except RuntimeError:  # closed: the pipeline outlived close()
            log.warning(
                "task %s/%s: recording %s finished after the outputs closed; not announced",
                self.app_id,
                self.task_id,
                recording.get("name"),
            )

    def _announce_ready(self, recording: dict[str, object]) -> None:
        """The ``recording.ready`` event of a finished file (on the announcer's thread); errors logged."""
        assert self.token is not None
        try:
            held = self.store.emit_recording_ready(self.app_id, self.task_id, self.token, recording)
        except Exception as exc:  # the store is down: the file and its sidecar are there all the same
            log.warning(
                "task %s/%s: recording.ready of %s not queued: %s",
                self.app_id,
                self.task_id,
                recording.get("name"),
                exc,
            )
            return
        if not held:
            log.info(
                "task %s/%s: recording %s finished after this worker lost the task; not announced",
                self.app_id,
                self.task_id,
                recording.get("name"),
            )

    async def close(self) -> None:
        """Stop taking snapshots (waits for the one being stored, off the event loop), then wait for
        the recordings' announcements still queued (off the event loop)."""
        taker, self.slot.taker = self.slot.taker, None
        if taker is not None:
            await asyncio.to_thread(taker.close)
        announcer = self._announcer  # kept: a later submit raises, and is logged
        if announcer is not None:
            await asyncio.to_thread(announcer.shutdown, wait=True)

    def stats(self, pipeline: Pipeline) -> tuple[OutputStats, ...]:
        """Each output's :class:`OutputStats`, in the task's output order."""
        outputs = pipeline.outputs
        result = []
        for spec in self.specs:
            if isinstance(spec, SnapshotOutput):
                sink = self.snapshots.get(spec.output_id)
                result.append(snapshot_stats(spec, sink, self.problems.get(spec.output_id)))
                continue
            if self.main is not None and spec.output_id == self.main.output_id:
                output = outputs.get(MAIN_OUTPUT)
            else:
                name = self._current_name(pipeline, spec.output_id)
                output = outputs.get(name) if name is not None else None
            recording = self.recordings.get(spec.output_id)
            result.append(output_stats(spec, output, recording, self.problems.get(spec.output_id)))
        return tuple(result)


def output_stats(
    spec: OutputSpec, output: Output | None, recording: Recording | None, problem: str | None
) -> OutputStats:
    """An RTMP, record or HLS output's :class:`OutputStats` from its pipeline output (None: not made,
    ``problem`` says why, or not added yet)."""
    if output is None:
        state = "failed" if problem is not None else "connecting"
        return OutputStats(spec.output_id, spec.kind, state=state, error=problem)
    status = output.status
    error = status.last_error
    files = len(status.files)
    if recording is not None:
        files = recording.files
        error = error or recording.error
    return OutputStats(
        output_id=spec.output_id,
        kind=spec.kind,
        state=OutputState(status.state).value,
        bytes_written=status.bytes_written,
        bitrate_bps=int(status.bitrate),
        reconnects=status.reconnects,
        dropped_video_frames=status.dropped_video_frames,
        dropped_audio_blocks=status.dropped_audio_blocks,
        files=files,
        error=error,
    )


def snapshot_stats(spec: SnapshotOutput, sink: SnapshotSink | None, problem: str | None) -> OutputStats:
    """A snapshot output's :class:`OutputStats`: ``connected`` once a snapshot was stored,
    ``reconnecting`` while storing fails, ``files`` = snapshots stored, ``bytes_written`` their bytes."""
    if sink is None:
        return OutputStats(
            spec.output_id, spec.kind, state="failed" if problem else "connecting", error=problem
        )
    state = "connected" if sink.stored else "connecting"
    if sink.error is not None:  # storing fails: the next snapshot tries again
        state = "reconnecting"
    return OutputStats(
        output_id=spec.output_id,
        kind=spec.kind,
        state=state,
        bytes_written=sink.bytes_stored,
        files=sink.stored,
        error=sink.error,
    )
