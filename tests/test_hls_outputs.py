"""HLS outputs after issue 13: a task resumed elsewhere continues its playlist, and a task's HLS folder
is removed after the task ended (``MPU_HLS_RETENTION_SECONDS``).

The playlists are written by real FFmpeg (PyAV's ``hls`` muxer) from tiny synthetic encodes; the
retention sweep runs on temporary folders with a stand-in task store. The tests at the end run the
mix runner on a real Redis (integration tier).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
import pytest

from rtc_mpu.mixer.output.muxers import HLS_ENDLIST, drop_endlist, hls_output, open_muxer
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.spec.outputs import HlsOutput
from rtc_mpu.spec.storage import newest_change, remove_task_folder, task_folder, task_folders
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers import mix_runner
from rtc_mpu.workers.mix_runner import MixRunner, Outcome
from rtc_mpu.workers.model import (
    StoreUnavailableError,
    TaskNotFoundError,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
)
from rtc_mpu.workers.outputs import (
    HLS_ORPHAN_MIN_AGE,
    TaskOutputs,
    hls_expired,
    hls_muxer_factory,
    sweep_hls,
)
from rtc_mpu.workers.settings import (
    DEFAULT_HLS_RETENTION_SECONDS,
    WorkerSettings,
    hls_retention_seconds,
)
from rtc_mpu.workers.store_protocol import TaskStoreProtocol
from tests.conftest import StoreFactory
from tests.test_outputs import SETTINGS, encode

SEGMENT = re.compile(r"index(\d+)\.ts")


# -- reading a playlist ----------------------------------------------------------------------------
@dataclass
class Playlist:
    """What a player reads in ``index.m3u8``.

    Attributes:
        media_sequence: ``#EXT-X-MEDIA-SEQUENCE``.
        segments: the segment numbers listed (``index<n>.ts``), in order.
        discontinuities: the numbers of the segments preceded by ``#EXT-X-DISCONTINUITY``.
        discontinuity_tags: how many ``#EXT-X-DISCONTINUITY`` tags there are.
        ended: it ends with ``#EXT-X-ENDLIST``.
    """

    media_sequence: int
    segments: list[int] = field(default_factory=list)
    discontinuities: list[int] = field(default_factory=list)
    discontinuity_tags: int = 0
    ended: bool = False


def read_playlist(folder: Path) -> Playlist:
    lines = [line.strip() for line in (folder / "index.m3u8").read_text().splitlines() if line.strip()]
    sequence = next(int(line.split(":")[1]) for line in lines if line.startswith("#EXT-X-MEDIA-SEQUENCE:"))
    result = Playlist(sequence, ended=lines[-1] == HLS_ENDLIST)
    pending_discontinuity = False
    for line in lines:
        if line == "#EXT-X-DISCONTINUITY":
            pending_discontinuity = True
            result.discontinuity_tags += 1
        match = SEGMENT.fullmatch(line)
        if match:
            number = int(match.group(1))
            result.segments.append(number)
            if pending_discontinuity:
                result.discontinuities.append(number)
            pending_discontinuity = False
    assert lines.count(HLS_ENDLIST) <= 1
    return result


def segment_files(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := SEGMENT.fullmatch(p.name)))


def run_hls(
    folder: Path,
    seconds: float,
    *,
    event: bool = False,
    list_size: int = 5,
    final: bool = True,
) -> Playlist:
    """One run of a task's HLS output into ``folder`` through the worker's muxer factory: ``seconds`` of
    a 160x90 15 fps encode (a keyframe, so a segment, every 2 s)."""
    encoder, packets = encode(SETTINGS, seconds)
    target = hls_output(str(folder / "index.m3u8"), segment_seconds=2, list_size=list_size, event=event)
    muxer = hls_muxer_factory(target, encoder.templates, final=lambda: final)
    for packet in packets:
        muxer.write(packet)
    muxer.close()
    return read_playlist(folder)


# -- a resumed task continues its playlist ---------------------------------------------------------
def test_a_fresh_hls_output_starts_at_segment_zero_without_a_discontinuity(tmp_path: Path) -> None:
    playlist = run_hls(tmp_path / "app1" / "t1", 6.0)
    assert playlist.media_sequence == 0
    assert playlist.segments == [0, 1, 2]
    assert playlist.discontinuity_tags == 0
    assert playlist.ended, "the trailer finalizes the playlist of an output that ends"


def test_a_resumed_sliding_playlist_numbers_on_and_keeps_deleting_old_segments(tmp_path: Path) -> None:
    folder = tmp_path / "app1" / "t1"
    first = run_hls(folder, 6.0)
    assert first.segments == [0, 1, 2]
    second = run_hls(folder, 4.0)  # the task resumed on another worker
    assert second.media_sequence == 0
    assert second.segments == [0, 1, 2, 3, 4], "numbering goes on; segment 0 is not overwritten"
    assert second.discontinuities == [3] and second.discontinuity_tags == 1
    third = run_hls(folder, 10.0)
    assert third.segments == [5, 6, 7, 8, 9] and third.media_sequence == 5
    assert third.discontinuities == [5] and third.discontinuity_tags == 1
    sequences = [first.media_sequence, second.media_sequence, third.media_sequence]
    assert sequences == sorted(sequences), "EXT-X-MEDIA-SEQUENCE never goes back"
    on_disk = segment_files(folder)
    assert set(third.segments) <= set(on_disk), "every listed segment exists"
    # The sliding window deletes what leaves it (FFmpeg keeps one segment past the list).
    assert on_disk == [4, 5, 6, 7, 8, 9]


def test_a_resumed_event_playlist_keeps_every_segment(tmp_path: Path) -> None:
    folder = tmp_path / "app1" / "t1"
    for _ in range(3):
        playlist = run_hls(folder, 4.0, event=True)
    assert playlist.media_sequence == 0
    assert playlist.segments == [0, 1, 2, 3, 4, 5] == segment_files(folder)
    # One discontinuity per resumed run, never more (discont_start would add one before segment 0
    # at every open).
    assert playlist.discontinuities == [2, 4] and playlist.discontinuity_tags == 2
    assert playlist.ended
    with av.open(str(folder / "index.m3u8")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 3 * 4 * SETTINGS.fps, "a player gets every frame of the three runs"


def test_an_output_that_goes_on_elsewhere_leaves_its_playlist_open(tmp_path: Path) -> None:
    folder = tmp_path / "app1" / "t1"
    handed_over = run_hls(folder, 4.0, final=False)
    assert not handed_over.ended, "players keep reloading while the task moves"
    assert handed_over.segments == [0, 1]
    resumed = run_hls(folder, 4.0)
    assert resumed.segments == [0, 1, 2, 3] and resumed.discontinuities == [2]
    assert resumed.ended


def test_open_muxer_continues_an_hls_playlist_too(tmp_path: Path) -> None:
    encoder, packets = encode(SETTINGS, 4.0)
    target = hls_output(str(tmp_path / "index.m3u8"), segment_seconds=2)
    for _ in range(2):
        muxer = open_muxer(target, encoder.templates)
        for packet in packets:
            muxer.write(packet)
        muxer.close()
    assert read_playlist(tmp_path).segments == [0, 1, 2, 3]


def test_drop_endlist_removes_only_a_final_tag(tmp_path: Path) -> None:
    path = tmp_path / "index.m3u8"
    assert drop_endlist(path) is False  # no playlist
    path.write_text("#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n#EXT-X-ENDLIST\n\n")
    assert drop_endlist(path) is True
    assert path.read_text() == "#EXTM3U\n#EXTINF:2.0,\nindex0.ts\n"
    assert drop_endlist(path) is False
    assert [p.name for p in tmp_path.iterdir()] == ["index.m3u8"], "no temporary file left"


class NoStore:
    """TaskOutputs' store, for outputs that never take snapshots."""


def render_with_outputs(clip: Path, hls_root: Path, *, task_continues: bool) -> Playlist:
    """A 4-second offline mix of ``clip`` whose only output is HLS, made by the worker's
    :class:`TaskOutputs` (as :class:`MixRunner` does), the task going on after it or not."""
    outputs = TaskOutputs(
        [HlsOutput("o1")], "app1", "t1", cast(TaskStoreProtocol, NoStore()), hls_root, hls_root
    )
    pipeline = Pipeline(
        build_task_spec(layout_ids=[1], media_encode_id=1),
        FileSource([str(clip)]),
        outputs.main_target,
        realtime=False,
        duration=4.0,
        muxer_factory=outputs.main_muxer_factory,
    )

    async def scenario() -> None:
        await outputs.start(pipeline)
        outputs.task_continues = task_continues
        await pipeline.run()
        await outputs.close()

    asyncio.run(scenario())
    assert pipeline.outputs["o1"].status.last_error is None
    return read_playlist(task_folder(hls_root, "app1", "t1"))


@pytest.mark.timeout(60)
def test_a_task_handed_over_continues_its_hls_on_the_next_worker(tmp_path: Path, clips: list[Path]) -> None:
    handed_over = render_with_outputs(clips[0], tmp_path, task_continues=True)
    assert not handed_over.ended and handed_over.segments and handed_over.segments[0] == 0
    ended = render_with_outputs(clips[0], tmp_path, task_continues=False)
    assert ended.segments[: len(handed_over.segments)] == handed_over.segments
    resumed = ended.segments[len(handed_over.segments) :]
    assert resumed and resumed[0] == handed_over.segments[-1] + 1
    assert ended.discontinuities == [resumed[0]]
    assert ended.ended


# -- retention ---------------------------------------------------------------------------------------
NOW = 1_800_000_000.0
HOUR = 3600.0


def record(task_id: str, *, ended_at: float | None) -> TaskRecord:
    url = f"rtmp://example.com/live/{task_id}"
    base = TaskRecord("app1", task_id, TaskParams("ch1", url), stream_url_key(url))
    if ended_at is None:
        base.state, base.status = TaskState.RUNNING, TaskStatus.RUNNING
    else:
        base.state, base.status, base.ended_at = TaskState.ENDED, TaskStatus.STOPPED_BY_USER, ended_at
    return base


class Records:
    """The store's ``get_task`` over a dict; ``down`` makes it fail as Redis would."""

    def __init__(self, *records: TaskRecord, down: bool = False) -> None:
        self.records = {(r.app_id, r.task_id): r for r in records}
        self.down = down
        self.asked: list[str] = []

    def get_task(self, app_id: str, task_id: str) -> TaskRecord:
        self.asked.append(f"{app_id}/{task_id}")
        if self.down:
            raise StoreUnavailableError("the task store is unavailable")
        try:
            return self.records[(app_id, task_id)]
        except KeyError:
            raise TaskNotFoundError(f"no task {task_id}") from None


def hls_folder(root: Path, task_id: str, changed_at: float, app_id: str = "app1") -> Path:
    """A task's HLS folder with a playlist and two segments, everything last changed at ``changed_at``."""
    folder = root / app_id / task_id
    folder.mkdir(parents=True)
    for name in ("index.m3u8", "index0.ts", "index1.ts"):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (changed_at, changed_at))
    os.utime(folder, (changed_at, changed_at))
    return folder


@pytest.mark.parametrize(
    ("ended_at", "changed_at", "retention", "expired"),
    [
        (None, NOW - 10 * HOUR, 0.0, False),  # active: never, however old its files
        (NOW - HOUR, NOW - HOUR, HOUR, True),
        (NOW - HOUR + 1, NOW - 2 * HOUR, HOUR, False),  # retention counts from the end
        (NOW - 2 * HOUR, NOW - 10, HOUR, False),  # ...or from the last change, if later
        (NOW - 1, NOW - 1, 0.0, True),  # 0: at once
        (0.0, NOW - 2 * HOUR, HOUR, True),  # an end time unknown: the last change
    ],
)
def test_an_hls_folder_expires_after_its_task_ended(
    ended_at: float | None, changed_at: float, retention: float, expired: bool
) -> None:
    assert hls_expired(record("t1", ended_at=ended_at), changed_at, retention, NOW) is expired


def test_a_folder_without_a_task_record_waits_for_the_retention_and_a_minimum() -> None:
    assert hls_expired(None, NOW - HOUR, HOUR, NOW) is True
    assert hls_expired(None, NOW - HOUR + 1, HOUR, NOW) is False
    assert hls_expired(None, NOW - HLS_ORPHAN_MIN_AGE + 1, 0.0, NOW) is False
    assert hls_expired(None, NOW - HLS_ORPHAN_MIN_AGE, 0.0, NOW) is True


def test_the_sweep_removes_ended_tasks_folders_after_the_retention_only(tmp_path: Path) -> None:
    old = NOW - 2 * HOUR
    running = hls_folder(tmp_path, "running", old)  # a running task whose files look old
    expired = hls_folder(tmp_path, "expired", old)
    recent = hls_folder(tmp_path, "recent", NOW - 60)
    orphan = hls_folder(tmp_path, "orphan", old)  # its record expired
    fresh_orphan = hls_folder(tmp_path, "fresh-orphan", NOW - 60)
    store = Records(
        record("running", ended_at=None),
        record("expired", ended_at=old),
        record("recent", ended_at=NOW - 60),
    )
    removed = sweep_hls(tmp_path, store, HOUR, now=NOW)
    assert sorted(removed) == sorted([expired, orphan])
    assert not expired.exists() and not orphan.exists()
    assert all(f.is_dir() for f in (running, recent, fresh_orphan))
    assert (tmp_path / "app1").is_dir(), "the app folder stays"
    assert sweep_hls(tmp_path, store, 0.0, now=NOW) == [recent]  # no retention: once ended


def test_the_sweep_never_follows_symlinks_out_of_the_hls_directory(tmp_path: Path) -> None:
    root, outside = tmp_path / "hls", tmp_path / "outside"
    precious = hls_folder(outside, "precious", NOW - 2 * HOUR)
    expired = hls_folder(root, "expired", NOW - 2 * HOUR)
    (expired / "link.ts").symlink_to(precious / "index0.ts")
    (expired / "linked-folder").symlink_to(precious)
    (root / "app1" / "linked-task").symlink_to(precious)  # a task folder that is a symlink
    (root / "linked-app").symlink_to(outside / "app1")  # an app folder that is a symlink
    store = Records(record("expired", ended_at=NOW - 2 * HOUR))
    assert task_folders(root) == [("app1", "expired", expired)]
    assert sweep_hls(root, store, HOUR, now=NOW) == [expired]
    assert not expired.exists()
    assert sorted(p.name for p in precious.iterdir()) == ["index.m3u8", "index0.ts", "index1.ts"]
    assert store.asked == ["app1/expired"], "symlinked folders are not even considered"
    with pytest.raises(ValueError, match="symlink"):
        remove_task_folder(root, "app1", "linked-task")
    with pytest.raises(ValueError, match="symlink"):
        remove_task_folder(root, "linked-app", "precious")
    for bad in ("..", ".", "", "a/b"):
        with pytest.raises(ValueError):
            remove_task_folder(root, "app1", bad)
    assert precious.is_dir() and (root / "app1" / "linked-task").is_symlink()


def test_the_hls_directory_may_itself_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "volume"
    expired = hls_folder(real, "expired", NOW - 2 * HOUR)
    (tmp_path / "hls").symlink_to(real)
    assert sweep_hls(tmp_path / "hls", Records(), HOUR, now=NOW) == [tmp_path / "hls" / "app1" / "expired"]
    assert not expired.exists()
    assert remove_task_folder(tmp_path / "hls", "app1", "gone") is False
    assert remove_task_folder(tmp_path / "missing", "app1", "t1") is False
    assert sweep_hls(tmp_path / "missing", Records(), HOUR, now=NOW) == []


def test_the_sweep_removes_nothing_while_the_store_is_down(tmp_path: Path) -> None:
    folder = hls_folder(tmp_path, "t1", NOW - 2 * HOUR)
    with pytest.raises(StoreUnavailableError):
        sweep_hls(tmp_path, Records(down=True), HOUR, now=NOW)
    assert folder.is_dir()


def test_newest_change_sees_the_latest_segment(tmp_path: Path) -> None:
    folder = hls_folder(tmp_path, "t1", NOW - HOUR)
    os.utime(folder / "index1.ts", (NOW - 5, NOW - 5))
    assert newest_change(folder) == NOW - 5
    assert newest_change(tmp_path / "missing") == 0.0


def test_the_reconciler_sweeps_with_the_worker_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtc_mpu.workers import celery_app

    hls_folder(tmp_path, "ended", time.time() - 10)
    hls_folder(tmp_path, "running", time.time() - 10)
    store = Records(record("ended", ended_at=time.time() - 10), record("running", ended_at=None))
    monkeypatch.setattr(celery_app, "settings", WorkerSettings(hls_dir=tmp_path, hls_retention_seconds=60.0))
    assert celery_app.sweep_hls_once(cast(TaskStoreProtocol, store)) == []
    monkeypatch.setattr(celery_app, "settings", WorkerSettings(hls_dir=tmp_path, hls_retention_seconds=5.0))
    assert celery_app.sweep_hls_once(cast(TaskStoreProtocol, store)) == ["app1/ended"]
    assert (tmp_path / "app1" / "running").is_dir()


@pytest.mark.parametrize(
    ("value", "expected"), [(None, DEFAULT_HLS_RETENTION_SECONDS), ("0", 0.0), ("90.5", 90.5)]
)
def test_the_hls_retention_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: float
) -> None:
    if value is None:
        monkeypatch.delenv("MPU_HLS_RETENTION_SECONDS", raising=False)
    else:
        monkeypatch.setenv("MPU_HLS_RETENTION_SECONDS", value)
    assert hls_retention_seconds() == expected == WorkerSettings.from_env().hls_retention_seconds
    assert DEFAULT_HLS_RETENTION_SECONDS == 3600.0


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_a_bad_hls_retention_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MPU_HLS_RETENTION_SECONDS", value)
    with pytest.raises(ValueError, match="MPU_HLS_RETENTION_SECONDS"):
        hls_retention_seconds()


# -- the runner: at once when the retention is 0, only when the task ends here ----------------------
class EndingStore:
    """The store calls of :meth:`MixRunner._end`: ``finish`` ends the task (or finds it ended)."""

    def __init__(self, ends: bool = True) -> None:
        self.ends = ends
        self.calls: list[str] = []

    def finish(self, app_id: str, task_id: str, token: int | None, status: TaskStatus, reason: str) -> Any:
        self.calls.append("finish")
        return record(task_id, ended_at=time.time()) if self.ends else None

    def release(self, app_id: str, task_id: str, token: int, reason: str) -> None:
        self.calls.append("release")


@pytest.mark.parametrize(
    ("outcome", "retention", "ends", "removed"),
    [
        (Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user"), 0.0, True, True),
        (Outcome(TaskStatus.CHANNEL_ENDED, "the channel stayed empty"), 0.0, True, True),
        (Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user"), HOUR, True, False),  # the sweep
        (Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user"), 0.0, False, False),  # not ours
        (Outcome(handed_over=True), 0.0, True, False),  # it resumes elsewhere
        (Outcome(fenced=True), 0.0, True, False),  # another worker has it
    ],
)
def test_a_task_ending_here_with_no_retention_loses_its_hls_at_once(
    tmp_path: Path, outcome: Outcome, retention: float, ends: bool, removed: bool
) -> None:
    folder = hls_folder(tmp_path, "t1", time.time())
    settings = WorkerSettings(hls_dir=tmp_path, hls_retention_seconds=retention)
    store = EndingStore(ends)
    runner = MixRunner(cast(TaskStoreProtocol, store), "app1", "t1", "w1", settings)
    assert asyncio.run(runner._end(7, outcome)) is outcome
    assert folder.exists() is not removed


# -- the runner on a real store (integration) ------------------------------------------------------
URL = "rtmp://example.com/live/hls-handover"


@pytest.fixture
def made_outputs(monkeypatch: pytest.MonkeyPatch) -> list[TaskOutputs]:
    """The runner's pipeline and channel are stand-ins (:mod:`tests.test_handover`); the
    :class:`TaskOutputs` it makes are kept."""
    from tests.test_handover import FakeChannel, FakePipeline

    made: list[TaskOutputs] = []

    class KeptOutputs(TaskOutputs):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    FakePipeline.made = []
    monkeypatch.setattr(mix_runner, "Pipeline", FakePipeline)
    monkeypatch.setattr(mix_runner, "JanusSource", FakeChannel)
    monkeypatch.setattr(mix_runner, "TaskOutputs", KeptOutputs)
    return made


def run_until(runner: MixRunner, store: Any, act: Any) -> Outcome | None:
    """Run ``runner`` in a thread; once the task is running, ``act()``; its outcome."""
    outcome: list[Outcome | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5.0
    while store.get_task("app1", "t1").status is not TaskStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    act()
    thread.join(10)
    assert not thread.is_alive()
    return outcome[0]


def test_a_handed_over_task_keeps_its_hls_open_and_its_folder(
    make_store: StoreFactory, made_outputs: list[TaskOutputs], tmp_path: Path
) -> None:
    store = make_store()
    store.start_task(TaskRecord("app1", "t1", TaskParams("ch1", URL, layout_ids=(1,)), stream_url_key(URL)))
    folder = hls_folder(tmp_path, "t1", time.time())
    draining = threading.Event()
    settings = WorkerSettings(heartbeat_interval=0.05, hls_dir=tmp_path, hls_retention_seconds=0.0)
    runner = MixRunner(store, "app1", "t1", "w1", settings, requeue=lambda *_: None, draining=draining.is_set)
    outcome = run_until(runner, store, draining.set)
    assert outcome is not None and outcome.handed_over
    assert [o.task_continues for o in made_outputs] == [True], "its playlists are not finalized"
    assert folder.is_dir() and store.get_task("app1", "t1").active


def test_a_stopped_task_finalizes_its_hls_and_loses_its_folder_without_retention(
    make_store: StoreFactory, made_outputs: list[TaskOutputs], tmp_path: Path
) -> None:
    store = make_store()
    store.start_task(TaskRecord("app1", "t1", TaskParams("ch1", URL, layout_ids=(1,)), stream_url_key(URL)))
    folder = hls_folder(tmp_path, "t1", time.time())
    settings = WorkerSettings(heartbeat_interval=0.05, hls_dir=tmp_path, hls_retention_seconds=0.0)
    runner = MixRunner(store, "app1", "t1", "w1", settings)
    outcome = run_until(runner, store, lambda: store.request_stop("app1", "t1"))
    assert outcome is not None and outcome.status is TaskStatus.STOPPED_BY_USER
    assert [o.task_continues for o in made_outputs] == [False], "its playlists are finalized"
    assert not folder.exists() and not store.get_task("app1", "t1").active
