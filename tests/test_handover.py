"""Handing a running task over when its worker shuts down (issue #7): the store's release, and the
runner's drain."""

from __future__ import annotations

import time

import pytest

from mixer.urls import stream_url_key
from workers.model import TaskParams, TaskRecord, TaskState, TaskStatus
from workers.store import TaskStore

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
