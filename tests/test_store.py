"""The task store against a real Redis: atomic starts, StreamURL leases and cooldowns, claims with
fencing tokens, heartbeats, stops, parameter updates, and a Redis that is down."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from rtc_mpu.spec.outputs import RtmpOutput
from rtc_mpu.spec.urls import parse_stream_url, stream_url_key
from rtc_mpu.stack.ports import free_port
from rtc_mpu.workers.model import (
    CustomLayoutMissingError,
    RefusedOutput,
    StoreUnavailableError,
    StreamURLCoolingDownError,
    StreamURLInUseError,
    TaskExistsError,
    TaskNotFoundError,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
    TaskStoppingError,
)
from rtc_mpu.workers.stats import TaskStats, VadSnapshot
from rtc_mpu.workers.store import STOPPING_REASON, TaskStore, _text
from tests.conftest import StoreFactory

SECRET = "S3cr3tAuth"
URL = f"rtmp://example.com/live/stream?auth={SECRET}"
KEY = stream_url_key(URL)


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store()


def new_task(task_id: str = "t1", url: str = URL, app_id: str = "app1", **params: Any) -> TaskRecord:
    return TaskRecord(app_id, task_id, TaskParams("ch1", url, **params), stream_url_key(url))


def lease_holder(store: TaskStore, url: str = URL) -> str | None:
    value = store.client.get(store.lease_key(stream_url_key(url)))
    return value.decode() if isinstance(value, bytes) else value


# -- start, get, list ------------------------------------------------------------------------


def test_start_get_list_round_trip(store: TaskStore) -> None:
    before = time.time()
    first = store.start_task(
        new_task("t1", layout_ids=(1, 6), user_panes=({"pane_id": 0, "user_id": "u1"},), media_encode=1)
    )
    store.start_task(new_task("t2", "rtmp://example.com/live/other"))
    store.start_task(new_task("t1", "rtmp://example.com/live/third", app_id="app2"))

    got = store.get_task("app1", "t1")
    assert got == first
    assert got.state is TaskState.QUEUED and got.status is TaskStatus.WAITING and got.active
    assert got.params.layout_ids == (1, 6)
    assert got.params.user_panes == ({"pane_id": 0, "user_id": "u1"},)
    assert got.params.stream_url == URL and got.stream_key == KEY
    assert got.users == [] and got.stats is None and got.fence == 0
    assert before - 1 < got.created_at == got.updated_at < time.time() + 1  # the server's clock
    assert [r.task_id for r in store.list_tasks("app1")] == ["t1", "t2"]
    assert [(r.app_id, r.task_id) for r in store.list_tasks("app2")] == [("app2", "t1")]
    assert store.list_tasks("nobody") == []
    assert sorted((r.app_id, r.task_id) for r in store.active_tasks()) == [
        ("app1", "t1"),
        ("app1", "t2"),
        ("app2", "t1"),
    ]
    assert lease_holder(store) == "app1/t1"
    assert store.client.ttl(store.lease_key(KEY)) == -1  # no TTL while queued: nobody renews it yet


@pytest.mark.parametrize("task_id", ["missing", "../t1", "t1/x", "a:b", ""])
def test_get_unknown_task(store: TaskStore, task_id: str) -> None:
    store.start_task(new_task("t1"))
    with pytest.raises(TaskNotFoundError):
        store.get_task("app1", task_id)
    with pytest.raises(TaskNotFoundError):
        store.get_task("app2", "t1")


def test_start_refuses_malformed_records(store: TaskStore) -> None:
    with pytest.raises(ValueError):
        store.start_task(new_task("bad/id"))
    record = new_task("t1")
    record.stream_key = "rtmp://elsewhere:1935/live/stream"
    with pytest.raises(ValueError):
        store.start_task(record)
    record = new_task("t1")
    record.fence = 3
    with pytest.raises(ValueError):
        store.start_task(record)
    assert store.active_tasks() == []


def test_task_id_in_use_until_it_ends(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    with pytest.raises(TaskExistsError) as caught:
        store.start_task(new_task("t1", "rtmp://example.com/live/other"))
    assert caught.value.code == "TaskExisted"
    assert store.get_task("app1", "t1").params.stream_url == URL  # unchanged
    assert lease_holder(store, "rtmp://example.com/live/other") is None  # the refused start took nothing
    store.start_task(new_task("t1", app_id="app2", url="rtmp://example.com/live/app2"))  # other app: fine

    assert store.finish("app1", "t1", None, TaskStatus.STOPPED_BY_USER, "stopped by the user") is not None
    again = store.start_task(new_task("t1", "rtmp://example.com/live/other"))
    assert again.state is TaskState.QUEUED and again.params.stream_url.endswith("/other")
    assert store.get_task("app1", "t1") == again
    assert [r.task_id for r in store.list_tasks("app1")] == ["t1"]  # replaced, not listed twice
    assert store.client.pttl(store.task_key("app1", "t1")) == -1  # the ended record's TTL is gone


# -- StreamURL rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "rtmp://example.com/live/stream",
        "rtmp://example.com/live/stream?auth=another",
        "rtmp://EXAMPLE.com/live/stream?x=1",
        "RTMP://example.com:1935/live/stream",
        "rtmp://example.com:1935//live//stream#frag",
    ],
)
def test_same_stream_url_is_in_use(store: TaskStore, variant: str) -> None:
    store.start_task(new_task("t1"))
    with pytest.raises(StreamURLInUseError) as caught:
        store.start_task(new_task("t2", variant))
    assert caught.value.code == "StreamURL.InUse"
    assert "app1/t1" in caught.value.message
    assert SECRET not in caught.value.message and "auth" not in caught.value.message
    assert "/live/stream" not in caught.value.message  # redacted: rtmp://example.com:1935/live/str***
    with pytest.raises(TaskNotFoundError):
        store.get_task("app1", "t2")
    # Another port, host or stream name is another URL.
    for other in (
        "rtmp://example.com:1936/live/stream",
        "rtmp://example.org/live/stream",
        "rtmp://example.com/live/stream2",
    ):
        store.start_task(new_task(f"o{len(store.active_tasks())}", other))


def test_cooldown_after_finish(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=10.0)
    store.start_task(new_task("t1"))
    store.finish("app1", "t1", None, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    assert lease_holder(store) is None
    assert 9000 < store.client.pttl(store.cooldown_key(KEY)) <= 10000
    with pytest.raises(StreamURLCoolingDownError) as caught:
        store.start_task(new_task("t2", "rtmp://example.com/live/stream?auth=new"))
    assert caught.value.code == "StreamURL.CoolingDown"
    assert caught.value.seconds_left == 10
    assert SECRET not in caught.value.message
    with pytest.raises(TaskNotFoundError):
        store.get_task("app1", "t2")
    with pytest.raises(StreamURLCoolingDownError):  # the same TaskId too
        store.start_task(new_task("t1"))


def test_url_accepted_after_cooldown(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=1.0)
    store.start_task(new_task("t1"))
    store.finish("app1", "t1", None, TaskStatus.STOPPED, "failed")
    with pytest.raises(StreamURLCoolingDownError) as caught:
        store.start_task(new_task("t2"))
    assert caught.value.seconds_left == 1
    time.sleep(1.05)
    assert store.start_task(new_task("t2")).task_id == "t2"
    assert lease_holder(store) == "app1/t2"


def _race(make_store: StoreFactory, records: list[TaskRecord]) -> Counter[str]:
    """Start ``records`` at once from one thread and one client each; count the outcomes."""
    stores = [make_store() for _ in records]
    for s in stores:
        s.ping()  # connect before the race
    barrier = threading.Barrier(len(records))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def run(s: TaskStore, record: TaskRecord) -> None:
        barrier.wait()
        try:
            s.start_task(record)
            outcome = "ok"
        except Exception as exc:
            outcome = exc.__class__.__name__
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=run, args=pair) for pair in zip(stores, records, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_race_one_url_exactly_one_start(make_store: StoreFactory) -> None:
    records = [new_task(f"t{i}", f"{URL}&n={i}") for i in range(100)]
    outcomes = _race(make_store, records)
    assert outcomes == {"ok": 1, "StreamURLInUseError": 99}
    store = make_store()
    [winner] = store.active_tasks()
    assert lease_holder(store) == f"app1/{winner.task_id}"
    assert [r.task_id for r in store.list_tasks("app1")] == [winner.task_id]


def test_race_one_task_id_exactly_one_start(make_store: StoreFactory) -> None:
    records = [new_task("same", f"rtmp://example.com/live/s{i}") for i in range(50)]
    outcomes = _race(make_store, records)
    assert outcomes == {"ok": 1, "TaskExistsError": 49}
    store = make_store()
    [winner] = store.active_tasks()
    leases = list(store.client.scan_iter(match=f"{store.prefix}:lease:*"))
    assert leases == [store.lease_key(winner.stream_key).encode()]  # the losers left no lease behind


# -- claims, heartbeats, fencing ---------------------------------------------------------------


def test_claim_fencing_and_takeover(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.5)
    store.start_task(new_task("t1"))
    assert store.claim("app1", "t1", "w1") == 1
    claimed = store.get_task("app1", "t1")
    assert (claimed.fence, claimed.worker, claimed.state, claimed.restarts) == (
        1,
        "w1",
        TaskState.STARTING,
        0,
    )
    assert 0 < store.client.pttl(store.lease_key(KEY)) <= 500  # the lease's TTL starts at the claim
    assert store.claim("app1", "t1", "w1") is None  # a second delivery of the same message
    assert store.claim("app1", "t1", "w2") is None  # the heartbeat is fresh
    assert store.stale_tasks() == []
    assert store.claim("app1", "missing", "w2") is None

    time.sleep(0.6)  # w1 died: no heartbeat for lease_seconds
    assert [r.task_id for r in store.stale_tasks()] == ["t1"]
    assert store.claim("app1", "t1", "w2") == 2
    taken = store.get_task("app1", "t1")
    assert (taken.fence, taken.worker, taken.restarts) == (2, "w2", 1)
    assert store.stale_tasks() == []

    assert store.heartbeat("app1", "t1", 1, status=TaskStatus.RUNNING) is None  # w1 is fenced out
    assert store.finish("app1", "t1", 1, TaskStatus.STOPPED, "w1 gives up") is None
    assert store.finish("app1", "t1", None, TaskStatus.STOPPED, "not claimed?") is None
    after = store.get_task("app1", "t1")
    assert after.active and after.fence == 2 and after.status is TaskStatus.WAITING
    assert lease_holder(store) == "app1/t1"
    assert store.client.exists(store.cooldown_key(KEY)) == 0

    beat = store.heartbeat("app1", "t1", 2, status=TaskStatus.RUNNING)
    assert beat is not None and beat.status is TaskStatus.RUNNING
    ended = store.finish("app1", "t1", 2, TaskStatus.CHANNEL_ENDED, "the channel was empty")
    assert ended is not None and ended.state is TaskState.ENDED and ended.status is TaskStatus.CHANNEL_ENDED
    assert ended.ended_at >= ended.heartbeat_at > 0
    assert lease_holder(store) is None and store.client.exists(store.cooldown_key(KEY)) == 1
    assert store.active_tasks() == []
    assert store.claim("app1", "t1", "w3") is None  # ended
    assert store.finish("app1", "t1", 2, TaskStatus.STOPPED, "twice") is None  # idempotent
    assert store.get_task("app1", "t1").status is TaskStatus.CHANNEL_ENDED


def test_tokens_are_never_reused_by_a_new_task_with_the_same_id(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=0.0)
    store.start_task(new_task("t1"))
    assert store.claim("app1", "t1", "w1") == 1
    store.finish("app1", "t1", 1, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    store.start_task(new_task("t1"))
    assert store.claim("app1", "t1", "w2") == 2
    assert store.heartbeat("app1", "t1", 1) is None  # the first incarnation's worker cannot touch it


def test_heartbeat_updates_fields_and_keeps_the_lease(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.5)
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    claimed_at = store.get_task("app1", "t1").heartbeat_at
    time.sleep(0.05)
    # Empty lists and objects survive the scripts (Redis' Lua cjson would turn [] into {}).
    stats = TaskStats(
        video_frames=10,
        mixed_audio_users=(),
        overlay_problems={},
        vad=VadSnapshot(ts_ms=1500, speaker=None, speaking=(), levels_dbfs={"u1": -100.0}),
    )
    beat = store.heartbeat(
        "app1",
        "t1",
        token,
        status=TaskStatus.RUNNING,
        state=TaskState.RUNNING,
        reason="pushing",
        layout_id=6,
        users=["u1", "u2"],
        stats=stats,
    )
    assert beat is not None
    assert (beat.status, beat.state, beat.reason, beat.layout_id) == (
        TaskStatus.RUNNING,
        TaskState.RUNNING,
        "pushing",
        6,
    )
    assert beat.users == ["u1", "u2"] and beat.stats == stats
    raw = store.client.hget(store.task_key("app1", "t1"), "stats")
    assert raw is not None and TaskStats.from_json(raw) == stats
    assert b'"mixed_audio_users":[]' in raw and b'"overlay_problems":{}' in raw
    assert beat.heartbeat_at > claimed_at and beat.updated_at == beat.heartbeat_at
    assert beat == store.get_task("app1", "t1")
    only_status = store.heartbeat("app1", "t1", token, status=TaskStatus.NETWORK_PROBLEM)
    assert only_status is not None and only_status.users == ["u1", "u2"] and only_status.reason == "pushing"

    deadline = time.monotonic() + 1.2  # well past lease_seconds, renewed every 0.15 s
    while time.monotonic() < deadline:
        assert store.heartbeat("app1", "t1", token) is not None
        assert 0 < store.client.pttl(store.lease_key(KEY)) <= 500
        time.sleep(0.15)
    assert lease_holder(store) == "app1/t1"
    assert store.claim("app1", "t1", "w2") is None

    time.sleep(0.6)  # no heartbeats: the lease expires by itself and the URL is free
    assert store.client.exists(store.lease_key(KEY)) == 0
    store.start_task(new_task("t2", "rtmp://example.com:1935/live/stream?auth=other"))
    assert lease_holder(store) == "app1/t2"
    # The old worker wakes up: its URL belongs to t2 now, so it must stop, and its task ends.
    assert store.heartbeat("app1", "t1", token) is None
    old = store.get_task("app1", "t1")
    assert old.state is TaskState.ENDED and old.status is TaskStatus.STOPPED and "app1/t2" in old.reason
    assert lease_holder(store) == "app1/t2"
    assert store.client.exists(store.cooldown_key(KEY)) == 0  # t2 is pushing; no cooldown from t1


def test_heartbeat_recreates_an_expired_lease_nobody_took(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.5)
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    time.sleep(0.6)
    assert store.client.exists(store.lease_key(KEY)) == 0
    assert store.heartbeat("app1", "t1", token) is not None
    assert lease_holder(store) == "app1/t1"
    assert 0 < store.client.pttl(store.lease_key(KEY)) <= 500
    with pytest.raises(StreamURLInUseError):
        store.start_task(new_task("t2"))


def test_stale_claim_loses_a_url_taken_meanwhile(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.5)
    store.start_task(new_task("t1"))
    assert store.claim("app1", "t1", "w1") == 1
    time.sleep(0.6)
    store.start_task(new_task("t2"))
    assert store.claim("app1", "t1", "w2") is None
    old = store.get_task("app1", "t1")
    assert old.state is TaskState.ENDED and old.status is TaskStatus.STOPPED
    assert lease_holder(store) == "app1/t2"
    assert store.stale_tasks() == []


def test_heartbeat_and_finish_refuse_bad_arguments(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    assert store.heartbeat("app1", "t1", 0) is None  # an unclaimed task has no token
    with pytest.raises(ValueError):
        store.heartbeat("app1", "t1", 1, state=TaskState.ENDED)
    with pytest.raises(ValueError):
        store.finish("app1", "t1", None, TaskStatus.RUNNING, "not final")
    assert store.get_task("app1", "t1").active


# -- stop and updates --------------------------------------------------------------------------


def test_request_stop_of_a_queued_task_ends_it(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    stopped = store.request_stop("app1", "t1")
    assert stopped.state is TaskState.ENDED and stopped.status is TaskStatus.STOPPED_BY_USER
    assert stopped.stop_requested and stopped.ended_at > 0
    assert lease_holder(store) is None
    assert 9000 < store.client.pttl(store.cooldown_key(KEY)) <= 10000
    assert 86_000_000 < store.client.pttl(store.task_key("app1", "t1")) <= 86_400_000
    assert store.active_tasks() == []
    assert store.claim("app1", "t1", "w1") is None
    assert store.request_stop("app1", "t1") == stopped  # idempotent: unchanged
    with pytest.raises(TaskNotFoundError):
        store.request_stop("app1", "missing")


def test_request_stop_of_a_claimed_task_reaches_the_worker(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    asked = store.request_stop("app1", "t1")
    assert asked.active and asked.stop_requested
    assert lease_holder(store) == "app1/t1"
    beat = store.heartbeat("app1", "t1", token, state=TaskState.STOPPING)
    assert beat is not None and beat.stop_requested
    ended = store.finish("app1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    assert ended is not None and ended.status is TaskStatus.STOPPED_BY_USER
    assert lease_holder(store) is None


def test_request_stop_of_a_task_whose_worker_died_ends_it(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.5)
    store.start_task(new_task("t1"))
    store.start_task(new_task("t2", "rtmp://example.com/live/two"))
    t1 = store.claim("app1", "t1", "w1")
    assert t1 is not None and store.claim("app1", "t2", "w1") is not None
    store.request_stop("app1", "t2")  # asked while alive, then the worker died
    time.sleep(0.6)
    stopped = store.request_stop("app1", "t1")
    assert stopped.state is TaskState.ENDED and stopped.status is TaskStatus.STOPPED_BY_USER
    assert store.heartbeat("app1", "t1", t1) is None
    assert store.claim("app1", "t2", "w2") is None  # the reconciler's retry ends it instead
    assert store.get_task("app1", "t2").status is TaskStatus.STOPPED_BY_USER
    assert store.active_tasks() == []


def test_update_params_bumps_spec_version(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    updated = store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(1, 6)))
    assert updated.spec_version == 2 and updated.params.layout_ids == (1, 6)
    assert store.get_task("app1", "t1") == updated
    new_key = TaskParams("ch1", "rtmp://EXAMPLE.com/live/stream?auth=rotated")
    assert store.update_params("app1", "t1", new_key).spec_version == 3  # a new auth key is allowed
    with pytest.raises(ValueError):
        store.update_params("app1", "t1", TaskParams("ch1", "rtmp://example.com/live/elsewhere"))
    assert store.get_task("app1", "t1").spec_version == 3
    with pytest.raises(TaskNotFoundError):
        store.update_params("app1", "missing", TaskParams("ch1", URL))
    store.request_stop("app1", "t1")
    with pytest.raises(TaskNotFoundError):
        store.update_params("app1", "t1", TaskParams("ch1", URL))


def test_ended_records_expire(make_store: StoreFactory) -> None:
    store = make_store(ended_ttl_seconds=0.5, cooldown_seconds=0.0)
    store.start_task(new_task("t1"))
    store.start_task(new_task("t2", "rtmp://example.com/live/two"))
    store.request_stop("app1", "t1")
    assert [r.task_id for r in store.list_tasks("app1")] == ["t1", "t2"]
    time.sleep(0.6)
    assert [r.task_id for r in store.list_tasks("app1")] == ["t2"]
    with pytest.raises(TaskNotFoundError):
        store.get_task("app1", "t1")
    store.start_task(new_task("t3", "rtmp://example.com/live/three"))  # prunes the app's index
    assert store.client.zrange(f"{store.prefix}:app:app1:tasks", 0, -1) == [b"t2", b"t3"]


# -- Redis down ----------------------------------------------------------------------------------


def test_redis_down_is_store_unavailable_quickly() -> None:
    store = TaskStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    calls: list[Callable[[], object]] = [
        store.ping,
        lambda: store.start_task(new_task("t1")),
        lambda: store.get_task("app1", "t1"),
        lambda: store.claim("app1", "t1", "w1"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            call()
        assert time.monotonic() - started < 3.0
        assert caught.value.http_status == 503
        assert "127.0.0.1" not in caught.value.message  # no internal address in what clients see


def test_redis_not_answering_times_out() -> None:
    with socket.socket() as server:  # accepts connections (backlog) but never replies
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        store = TaskStore.from_url(f"redis://127.0.0.1:{server.getsockname()[1]}/0", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.get_task("app1", "t1")
        assert time.monotonic() - started < 2.0


# -- issue 11, D8: a lease per destination, a set of them all or none ---------------------------


def with_leases(record: TaskRecord, *hosts: str) -> TaskRecord:
    """``record`` leasing its StreamURL's destination at ``hosts`` too (as resolved addresses)."""
    destination = parse_stream_url(record.stream_key)
    return replace(record, lease_keys=[destination.key(host) for host in hosts])


def test_a_lease_set_is_taken_all_or_none_each_with_its_cooldown(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=10.0)
    url = "rtmp://push.example.com/live/x"
    first = store.start_task(with_leases(new_task("t1", url), "10.0.0.1", "10.0.0.2"))
    assert first.lease_keys == sorted(
        [
            "rtmp://10.0.0.1:1935/live/x",
            "rtmp://10.0.0.2:1935/live/x",
            "rtmp://push.example.com:1935/live/x",
        ]
    )
    for key in first.lease_keys:
        assert lease_holder(store, key) == "app1/t1"
    # Another name for one of those addresses: refused, and it took none of its leases.
    with pytest.raises(StreamURLInUseError) as caught:
        store.start_task(
            with_leases(new_task("t2", "rtmp://other.example.com/live/x"), "10.0.0.9", "10.0.0.2")
        )
    assert "app1/t1" in caught.value.message and "10.0.0.2" in caught.value.message
    for host in ("other.example.com", "10.0.0.9"):
        assert lease_holder(store, f"rtmp://{host}:1935/live/x") is None
    with pytest.raises(StreamURLInUseError):
        store.start_task(new_task("t3", "rtmp://10.0.0.1/live/x"))

    token = store.claim("app1", "t1", "w1")
    assert token is not None
    for key in first.lease_keys:
        assert 0 < store.client.pttl(store.lease_key(key)) <= 15000  # every lease gets the TTL
    assert store.heartbeat("app1", "t1", token) is not None
    store.finish("app1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    for key in first.lease_keys:
        assert lease_holder(store, key) is None
        assert 9000 < store.client.pttl(store.cooldown_key(key)) <= 10000  # each its own cooldown
    with pytest.raises(StreamURLCoolingDownError):
        store.start_task(new_task("t4", "rtmp://10.0.0.2:1935/live/x"))
    store.client.delete(store.cooldown_key("rtmp://10.0.0.1:1935/live/x"))
    with pytest.raises(StreamURLCoolingDownError):  # the others still cool down
        store.start_task(with_leases(new_task("t4", url), "10.0.0.1", "10.0.0.2"))
    assert store.start_task(new_task("t5", "rtmp://10.0.0.1/live/x")).active


def test_cooldown_reports_the_longest_rest(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=10.0)
    store.client.set(store.cooldown_key("rtmp://10.0.0.1:1935/live/x"), "app1/old", px=2000)
    store.client.set(store.cooldown_key("rtmp://10.0.0.2:1935/live/x"), "app1/old", px=7000)
    with pytest.raises(StreamURLCoolingDownError) as caught:
        store.start_task(with_leases(new_task("t1", "rtmp://h.example.com/live/x"), "10.0.0.1", "10.0.0.2"))
    assert caught.value.seconds_left == 7


def with_outputs(task_id: str, *urls: str) -> TaskRecord:
    """A new task pushing to ``urls`` (o1, o3, o5...: a recording between each two)."""
    outputs: list[dict[str, object]] = []
    for n, url in enumerate(urls):
        if n:
            outputs.append({"output_id": f"o{len(outputs) + 1}", "kind": "record"})
        outputs.append({"output_id": f"o{len(outputs) + 1}", "kind": "rtmp", "url": url})
    return new_task(task_id, urls[0], outputs=tuple(outputs))


def all_leases(store: TaskStore) -> dict[str, str | None]:
    """Every lease in the store: key -> holder."""
    leases: dict[str, str | None] = {}
    for key in store.client.scan_iter(match=f"{store.prefix}:lease:*"):
        holder = store.client.get(key)
        leases[_text(key)] = None if holder is None else _text(holder)
    return leases


def test_a_refused_start_names_every_refused_output_and_takes_no_lease(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=10.0)
    free, busy, cool = (
        f"rtmp://{h}.example.com/live/key-{h}?auth={SECRET}" for h in ("free", "busy", "cool")
    )
    store.start_task(new_task("holder", busy))
    store.client.set(store.cooldown_key(stream_url_key(cool)), "app1/old", px=4000)
    before = all_leases(store)
    with pytest.raises(StreamURLInUseError) as caught:
        store.start_task(with_outputs("t1", free, cool, busy))
    assert caught.value.refused == (
        RefusedOutput("o3", "rtmp://cool.example.com/live/key***", seconds_left=4),
        RefusedOutput("o5", "rtmp://busy.example.com/live/key***", holder="app1/holder"),
    )
    assert "output o5" in caught.value.message and "app1/holder" in caught.value.message
    assert SECRET not in caught.value.message and "key-" not in caught.value.message
    assert all_leases(store) == before
    with pytest.raises(TaskNotFoundError):
        store.get_task("app1", "t1")
    # Cooling down alone: the longest rest.
    store.client.set(store.cooldown_key(stream_url_key(free)), "app1/old", px=9000)
    with pytest.raises(StreamURLCoolingDownError) as cooling:
        store.start_task(with_outputs("t1", free, cool))
    assert cooling.value.seconds_left == 9
    assert [(r.output_id, r.seconds_left, r.in_use) for r in cooling.value.refused] == [
        ("o1", 9, False),
        ("o3", 4, False),
    ]
    assert all_leases(store) == before


def test_a_refused_added_output_is_named_and_takes_no_lease(make_store: StoreFactory) -> None:
    store = make_store(cooldown_seconds=10.0)
    busy = "rtmp://busy.example.com/live/key-busy"
    store.start_task(new_task("holder", busy))
    running = store.start_task(with_outputs("t1", URL))
    before = all_leases(store)
    with pytest.raises(StreamURLInUseError) as caught:
        store.add_output("app1", "t1", RtmpOutput("o0", busy + "?auth=x"))
    assert caught.value.refused == (
        RefusedOutput("o2", "rtmp://busy.example.com/live/key***", holder="app1/holder"),
    )
    # An address of the URL's host held by another task: that destination is named.
    with pytest.raises(StreamURLInUseError) as caught:
        store.add_output(
            "app1",
            "t1",
            RtmpOutput("o0", "rtmp://other.example.com/live/key-busy"),
            ["rtmp://busy.example.com:1935/live/key-busy"],
        )
    assert caught.value.refused == (
        RefusedOutput(
            "o2",
            "rtmp://other.example.com/live/key***",
            destination="rtmp://busy.example.com:1935/live/key***",
            holder="app1/holder",
        ),
    )
    assert all_leases(store) == before
    assert store.get_task("app1", "t1").params.outputs == running.params.outputs


def test_a_lease_key_must_be_the_same_destination(store: TaskStore) -> None:
    record = new_task("t1", "rtmp://h.example.com/live/x")
    for wrong in (
        "rtmp://10.0.0.1:1935/live/y",
        "rtmps://10.0.0.1:1935/live/x",
        "rtmp://10.0.0.1:1936/live/x",
        "rtmp://10.0.0.1/live/x",  # not canonical (no port)
        "file:///etc/passwd",
    ):
        with pytest.raises(ValueError):
            store.start_task(replace(record, lease_keys=[wrong]))
    assert store.active_tasks() == []


def test_concurrent_starts_of_overlapping_lease_sets_exactly_one_wins(make_store: StoreFactory) -> None:
    records = [
        with_leases(new_task(f"t{i}", f"rtmp://name{i}.example.com/live/x"), f"10.0.0.{i % 3}", "10.0.0.9")
        for i in range(30)
    ]
    outcomes = _race(make_store, records)
    assert outcomes == {"ok": 1, "StreamURLInUseError": 29}
    store = make_store()
    [winner] = store.active_tasks()
    leases = sorted(_text(k) for k in store.client.scan_iter(match=f"{store.prefix}:lease:*"))
    assert leases == sorted(store.lease_key(k) for k in winner.lease_keys)


def test_a_record_of_an_older_version_still_renews_releases_and_ends(make_store: StoreFactory) -> None:
    """Records written before lease_keys existed have one lease, on their stream_key."""
    store = make_store(lease_seconds=0.5, cooldown_seconds=10.0)
    store.start_task(new_task("t1"))
    store.client.hdel(store.task_key("app1", "t1"), "lease_keys")
    old = store.get_task("app1", "t1")
    assert old.lease_keys == [] and lease_holder(store) == "app1/t1"
    token = store.claim("app1", "t1", "w1")
    assert token is not None and 0 < store.client.pttl(store.lease_key(KEY)) <= 500
    time.sleep(0.3)
    assert store.heartbeat("app1", "t1", token, status=TaskStatus.RUNNING) is not None
    assert store.client.pttl(store.lease_key(KEY)) > 300  # renewed
    released = store.release("app1", "t1", token, "handed over")
    assert released is not None and store.client.pttl(store.lease_key(KEY)) == -1
    token = store.claim("app1", "t1", "w2")
    assert token is not None
    assert store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(6,))).spec_version == 2
    with pytest.raises(StreamURLInUseError):
        store.start_task(new_task("t2"))
    assert store.finish("app1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user") is not None
    assert lease_holder(store) is None and store.client.exists(store.cooldown_key(KEY)) == 1


# -- issue 11, D9: stopping ------------------------------------------------------------------------


def test_a_stop_of_a_pushing_task_shows_stopping_until_the_push_ended(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    store.heartbeat("app1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="pushing")
    asked = store.request_stop("app1", "t1")
    assert (asked.state, asked.status, asked.reason) == (
        TaskState.STOPPING,
        TaskStatus.RUNNING,
        STOPPING_REASON,
    )
    assert asked.stop_requested and asked.active and lease_holder(store) == "app1/t1"
    # A worker reporting "running" does not undo it; its other fields still update.
    beat = store.heartbeat(
        "app1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="pushing", users=["u"]
    )
    assert beat is not None and (beat.state, beat.reason, beat.users) == (
        TaskState.STOPPING,
        STOPPING_REASON,
        ["u"],
    )
    # A second stop answers the task as it is.
    again = store.request_stop("app1", "t1")
    assert again == store.get_task("app1", "t1") and again.state is TaskState.STOPPING
    with pytest.raises(TaskStoppingError) as caught:
        store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(6,)))
    assert (caught.value.code, caught.value.http_status) == ("InvalidTask.Stopping", 409)
    assert store.get_task("app1", "t1").spec_version == 1
    ended = store.finish("app1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    assert ended is not None and (ended.state, ended.status) == (TaskState.ENDED, TaskStatus.STOPPED_BY_USER)
    assert lease_holder(store) is None and store.client.exists(store.cooldown_key(KEY)) == 1


def test_a_task_ending_by_itself_is_stopping_and_takes_no_updates(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    beat = store.heartbeat(
        "app1", "t1", token, state=TaskState.STOPPING, reason="stopping: the channel was empty"
    )
    assert beat is not None and beat.state is TaskState.STOPPING and not beat.stop_requested
    with pytest.raises(TaskStoppingError):
        store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(6,)))


def test_a_stopping_task_whose_worker_died_is_ended_by_the_next_stop(
    make_store: StoreFactory,
) -> None:
    store = make_store(lease_seconds=0.5, cooldown_seconds=10.0)
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None and store.request_stop("app1", "t1").state is TaskState.STOPPING
    time.sleep(0.6)
    assert [r.task_id for r in store.stale_tasks()] == ["t1"]
    ended = store.request_stop("app1", "t1")
    assert (ended.state, ended.status) == (TaskState.ENDED, TaskStatus.STOPPED_BY_USER)
    assert lease_holder(store) is None and store.client.exists(store.cooldown_key(KEY)) == 1


def test_a_stopping_task_is_not_handed_over(store: TaskStore) -> None:
    store.start_task(new_task("t1"))
    token = store.claim("app1", "t1", "w1")
    assert token is not None
    store.request_stop("app1", "t1")
    released = store.release("app1", "t1", token, "handed over: worker w1 is shutting down")
    assert released is not None and (released.state, released.status) == (
        TaskState.ENDED,
        TaskStatus.STOPPED_BY_USER,
    )
    assert lease_holder(store) is None and store.client.exists(store.cooldown_key(KEY)) == 1
    assert store.claim("app1", "t1", "w2") is None


# -- issue 11, D7: a task never names a custom layout that does not exist ---------------------------


def test_a_start_or_update_naming_a_missing_custom_layout_is_refused(store: TaskStore) -> None:
    with pytest.raises(CustomLayoutMissingError) as caught:
        store.start_task(new_task("t1", layout_ids=(1, 100)))
    assert (caught.value.code, caught.value.http_status, caught.value.field) == (
        "InvalidLayoutID.Malformed",
        400,
        ("layout_ids",),
    )
    assert store.active_tasks() == [] and lease_holder(store) is None
    store.client.hset(store.layouts_key("app1"), "100", "{}")
    store.start_task(new_task("t1", layout_ids=(1, 100)))
    with pytest.raises(CustomLayoutMissingError):
        store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(101,)))
    assert store.update_params("app1", "t1", TaskParams("ch1", URL, layout_ids=(100, 6))).spec_version == 2
    with pytest.raises(CustomLayoutMissingError):  # another app's layout 100 is not this app's
        store.start_task(new_task("t1", "rtmp://example.com/live/app2", app_id="app2", layout_ids=(100,)))
