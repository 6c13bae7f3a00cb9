"""Handing a running task over when its worker shuts down (issue #7): the store's release, and the
runner's drain; a task taken over, stopping, and the reconciler (issue #11)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from rtc_mpu.mixer.output.push import SinkStatus
from rtc_mpu.mixer.pipeline import PipelineStats
from rtc_mpu.mixer.sources.janus import ChannelStatus
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers import mix_runner
from rtc_mpu.workers.mix_runner import MixRunner, Outcome, push_report
from rtc_mpu.workers.model import TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.settings import WorkerSettings
from rtc_mpu.workers.store import TaskStore
from tests.conftest import StoreFactory

URL = "rtmp://example.com/live/handover?auth=secret"


def test_release_lets_another_worker_claim_at_once(task_store: TaskStore) -> None:
    record = TaskRecord("app1", "t1", TaskParams("ch1", URL), stream_url_key(URL))
    task_store.start_task(record)
    first = task_store.claim("app1", "t1", "old:1")
    assert first is not None
    assert task_store.claim("app1", "t1", "new:2") is None  # the old worker is alive: held
    released = task_store.release("app1", "t1", first, "handed over: worker old:1 is shutting down")
    assert released is not None
    assert (released.state, released.status, released.worker) == (TaskState.QUEUED, TaskStatus.WAITING, None)
    lease = task_store.lease_key(stream_url_key(URL))
    assert task_store.client.pttl(lease) == -1, "the lease stays the task's, without a TTL"
    assert task_store.client.exists(task_store.cooldown_key(stream_url_key(URL))) == 0, "no cooldown"
    second = task_store.claim("app1", "t1", "new:2")
    assert second is not None and second > first
    resumed = task_store.get_task("app1", "t1")
    assert (resumed.worker, resumed.restarts, resumed.state) == ("new:2", 1, TaskState.STARTING)
    assert task_store.client.pttl(lease) > 0
    # The old token can neither release nor heartbeat any more.
    assert task_store.release("app1", "t1", first, "again") is None
    assert task_store.heartbeat("app1", "t1", first, status=TaskStatus.RUNNING) is None


@pytest.mark.parametrize("task_id", ["missing", "bad/id"])
def test_release_of_unknown_tasks_changes_nothing(task_store: TaskStore, task_id: str) -> None:
    assert task_store.release("app1", task_id, 1, "x") is None


def test_one_restart_message_per_period(task_store: TaskStore) -> None:
    """The reconcilers of every worker pass every 2 s; a stale task gets one restart message per period."""
    assert task_store.note_restart("app1", "t1", 0.3) is True
    assert task_store.note_restart("app1", "t1", 0.3) is False
    assert task_store.note_restart("app1", "t2", 0.3) is True  # per task
    time.sleep(0.35)
    assert task_store.note_restart("app1", "t1", 0.3) is True


# -- issue 11: stopping (D9) and takeovers (status 0, not 6) in the runner; the reconciler ---------


class FakeChannel:
    """Stands in for JanusSource: a joined channel."""

    def __init__(self, config: object) -> None:
        self.status = ChannelStatus.JOINED
        self.last_error: str | None = None


class FakePipeline:
    """Stands in for rtc_mpu.mixer.pipeline.Pipeline: one user, a sink the test sets; after ``stop()`` the
    push takes ``FLUSH`` seconds to end (an encoder flushing, a connection closing)."""

    FLUSH = 0.6
    made: ClassVar[list[FakePipeline]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.spec = args[0]  # Pipeline(spec, source, target, ...): the task's TaskSpec
        self.sei_fields: dict[str, Any] = {}
        self.stats = PipelineStats(users=["alice"], layout_id=1)
        self.push_status = SinkStatus(connected=True)
        self.outputs: dict[str, Any] = {}  # Pipeline.outputs: the task's one output is the main one
        self.stopped_at: float | None = None
        FakePipeline.made.append(self)

    async def run(self) -> None:
        while self.stopped_at is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.FLUSH)

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def update_spec(self, spec: object) -> None:
        pass


@pytest.fixture
def fake_media(monkeypatch: pytest.MonkeyPatch) -> type[FakePipeline]:
    FakePipeline.made = []
    monkeypatch.setattr(mix_runner, "Pipeline", FakePipeline)
    monkeypatch.setattr(mix_runner, "JanusSource", FakeChannel)
    return FakePipeline


SETTINGS = WorkerSettings(heartbeat_interval=0.05, lease_seconds=8.0)


def run_in_thread(runner: MixRunner) -> tuple[threading.Thread, list[Outcome | None]]:
    outcome: list[Outcome | None] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run()), daemon=True)
    thread.start()
    return thread, outcome


def wait_record(store: TaskStore, check: Callable[[TaskRecord], bool], timeout: float = 5.0) -> TaskRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = store.get_task("app1", "t1")
        if check(record):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.02)


def test_the_runner_keeps_a_stopped_task_stopping_until_the_push_ended(
    make_store: StoreFactory, fake_media: type[FakePipeline]
) -> None:
    store = make_store(cooldown_seconds=10.0)
    store.start_task(TaskRecord("app1", "t1", TaskParams("ch1", URL, layout_ids=(1,)), stream_url_key(URL)))
    thread, outcome = run_in_thread(MixRunner(store, "app1", "t1", "w1", SETTINGS))
    wait_record(store, lambda r: r.status is TaskStatus.RUNNING and r.state is TaskState.RUNNING)
    asked = store.request_stop("app1", "t1")
    assert (asked.state, asked.status) == (TaskState.STOPPING, TaskStatus.RUNNING)
    wait_record(store, lambda r: fake_media.made[0].stopped_at is not None)  # the worker saw the stop
    seen = []
    while thread.is_alive():  # the flush: heartbeats go on, the task stays "stopping"
        seen.append(store.get_task("app1", "t1"))
        time.sleep(0.05)
    thread.join()
    during = [r for r in seen if r.active]
    assert len(during) >= 5 and all(r.state is TaskState.STOPPING for r in during), during
    assert any(r.heartbeat_at > asked.heartbeat_at for r in during)
    ended = store.get_task("app1", "t1")
    assert (ended.state, ended.status, ended.reason) == (
        TaskState.ENDED,
        TaskStatus.STOPPED_BY_USER,
        "stopped by the user",
    )
    assert outcome[0] is not None and outcome[0].status is TaskStatus.STOPPED_BY_USER
    key = stream_url_key(URL)
    assert (
        store.client.exists(store.lease_key(key)) == 0 and store.client.exists(store.cooldown_key(key)) == 1
    )


def test_a_task_stopped_while_its_worker_drains_ends_instead_of_moving(
    task_store: TaskStore, fake_media: type[FakePipeline]
) -> None:
    task_store.start_task(
        TaskRecord("app1", "t1", TaskParams("ch1", URL, layout_ids=(1,)), stream_url_key(URL))
    )
    draining = threading.Event()
    requeued: list[str] = []
    runner = MixRunner(
        task_store,
        "app1",
        "t1",
        "w1",
        SETTINGS,
        requeue=lambda app_id, task_id, delay: requeued.append(task_id),
        draining=draining.is_set,
    )
    thread, outcome = run_in_thread(runner)
    wait_record(task_store, lambda r: r.status is TaskStatus.RUNNING)
    task_store.request_stop("app1", "t1")
    draining.set()
    thread.join(10)
    assert (
        outcome[0] is not None
        and outcome[0].status is TaskStatus.STOPPED_BY_USER
        and not outcome[0].handed_over
    )
    assert task_store.get_task("app1", "t1").status is TaskStatus.STOPPED_BY_USER and requeued == []


def test_a_takeover_refused_by_the_server_shows_restarting_not_6(
    task_store: TaskStore, fake_media: type[FakePipeline]
) -> None:
    task_store.start_task(
        TaskRecord("app1", "t1", TaskParams("ch1", URL, layout_ids=(1,)), stream_url_key(URL))
    )
    first = task_store.claim("app1", "t1", "old:1")
    assert first is not None and task_store.release("app1", "t1", first, "handed over") is not None
    thread, _ = run_in_thread(MixRunner(task_store, "app1", "t1", "new:2", SETTINGS))
    wait_record(task_store, lambda r: r.restarts == 1 and bool(fake_media.made))
    pipeline = fake_media.made[0]
    # The server still holds the old worker's push and refuses the new one.
    pipeline.push_status = SinkStatus(
        connected=False,
        failing_since=time.monotonic(),
        last_error="refused: already publishing",
        push_url_problem=True,
        attempts=2,
    )
    shown = wait_record(task_store, lambda r: "the RTMP server still refuses" in r.reason)
    assert (shown.status, shown.state) == (TaskStatus.WAITING, TaskState.STARTING)
    assert "already publishing" in shown.reason and "attempt 3" in shown.reason
    pipeline.push_status = SinkStatus(connected=True)
    wait_record(task_store, lambda r: r.status is TaskStatus.RUNNING)
    # Refused again after it pushed: that is a push URL problem like any other.
    pipeline.push_status = SinkStatus(
        connected=False, failing_since=time.monotonic(), last_error="refused", push_url_problem=True
    )
    shown = wait_record(task_store, lambda r: r.status is TaskStatus.PUSH_URL_PROBLEM)
    assert shown.state is TaskState.RETRYING
    task_store.request_stop("app1", "t1")
    thread.join(10)


@pytest.mark.parametrize(
    ("sink", "takeover", "expected"),
    [
        (SinkStatus(connected=True), True, (TaskStatus.RUNNING, TaskState.RUNNING)),
        (SinkStatus(last_error="x", push_url_problem=True), True, (TaskStatus.WAITING, TaskState.STARTING)),
        (
            SinkStatus(last_error="x", push_url_problem=True),
            False,
            (TaskStatus.PUSH_URL_PROBLEM, TaskState.RETRYING),
        ),
        (
            SinkStatus(last_error="x", push_url_problem=False),
            True,
            (TaskStatus.NETWORK_PROBLEM, TaskState.RETRYING),
        ),
    ],
)
def test_push_report(sink: SinkStatus, takeover: bool, expected: tuple[TaskStatus, TaskState]) -> None:
    now = time.monotonic()
    status, state, _ = push_report(sink, True, "waiting", now, takeover_until=now + 1 if takeover else None)
    assert (status, state) == expected
    # After the grace period a refusal is status 6 again; once ending, the state is "stopping".
    assert push_report(sink, True, "w", now, takeover_until=now - 1)[0] is not TaskStatus.WAITING
    ending = push_report(sink, True, "w", now, takeover_until=now + 1 if takeover else None, ending="done")
    assert ending == (expected[0], TaskState.STOPPING, "stopping: done")  # the status stays the push's


def test_the_claim_reason_says_the_task_is_taken_over(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.3)
    store.start_task(TaskRecord("app1", "t1", TaskParams("ch1", URL), stream_url_key(URL)))
    first = store.claim("app1", "t1", "old:1")
    assert first is not None and store.release("app1", "t1", first, "handed over") is not None
    second = store.claim("app1", "t1", "new:2")
    assert second is not None
    assert store.get_task("app1", "t1").reason.startswith(
        "restarting: taking over from the previous worker, which handed"
    )
    time.sleep(0.35)
    assert store.claim("app1", "t1", "new:3") is not None
    after = store.get_task("app1", "t1")
    assert after.reason.startswith("restarting: taking over") and "stopped heartbeating" in after.reason
    assert after.status is TaskStatus.WAITING


def test_the_reconciler_ends_a_stopping_task_whose_worker_died(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtc_mpu.workers import celery_app

    enqueued: list[tuple[str, str]] = []
    monkeypatch.setattr(celery_app, "enqueue_mix", lambda app_id, task_id: enqueued.append((app_id, task_id)))
    store = make_store(lease_seconds=0.3, cooldown_seconds=10.0)
    for task_id, url in (("t1", URL), ("t2", "rtmp://example.com/live/other")):
        store.start_task(TaskRecord("app1", task_id, TaskParams("ch1", url), stream_url_key(url)))
        assert store.claim("app1", task_id, "w1") is not None
    store.request_stop("app1", "t1")  # stopping, then its worker dies (and t2's with it)
    time.sleep(0.35)
    assert sorted(celery_app.reconcile_once(store)) == ["app1/t1", "app1/t2"]
    ended = store.get_task("app1", "t1")
    assert (ended.state, ended.status) == (TaskState.ENDED, TaskStatus.STOPPED_BY_USER)
    key = stream_url_key(URL)
    assert (
        store.client.exists(store.lease_key(key)) == 0 and store.client.exists(store.cooldown_key(key)) == 1
    )
    assert enqueued == [("app1", "t2")]  # the other one restarts, as before
