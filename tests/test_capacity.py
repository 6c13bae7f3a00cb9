"""Worker capacity (issue #7): the cost model, claims within a node's capacity on a real Redis (atomic,
released when tasks end, move or die), the runner sending a task that does not fit back to the queue,
and the waiting task shown as queued by both API dialects."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rtc_mpu.api.app import create_app
from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers import capacity
from rtc_mpu.workers import settings as worker_settings
from rtc_mpu.workers.capacity import AUDIO_ONLY_COST, UNIT_CPU, default_capacity, params_cost, task_cost
from rtc_mpu.workers.mix_runner import MixRunner
from rtc_mpu.workers.model import (
    ClaimResult,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
    no_capacity_reason,
)
from rtc_mpu.workers.settings import WorkerSettings
from rtc_mpu.workers.store import TaskStore
from tests.conftest import StoreFactory


@pytest.fixture
def store(make_store: StoreFactory) -> TaskStore:
    return make_store()


def start(store: TaskStore, task_id: str, app_id: str = "app1", **params: Any) -> TaskRecord:
    url = f"rtmp://example.com/live/{app_id}-{task_id}"
    return store.start_task(
        TaskRecord(app_id, task_id, TaskParams("ch1", url, **params), stream_url_key(url))
    )


# -- the cost model --------------------------------------------------------------------------------


def cost_of(
    media_encode: int, profile: str | None = None, layout_ids: tuple[int, ...] = (1,), **kw: Any
) -> float:
    return task_cost(TaskParams("c", "rtmp://h/live/s", media_encode=media_encode, task_profile=profile,
                                layout_ids=layout_ids, **kw))  # fmt: skip


def test_cost_model_numbers() -> None:
    assert round(UNIT_CPU, 6) == 0.35
    # The unit: 1280x720 at 30 fps, four inputs (each a 640x360 pane: 0.04 CPU-s/s to receive and decode).
    assert cost_of(27, "4IN_720P") == pytest.approx(1.0)
    # Two inputs of 640x720 panes (decode interpolated between 360p and 720p).
    assert cost_of(27, "2IN_720P") == pytest.approx((0.19 + 2 * (0.04 + 0.05 / 3)) / 0.35, abs=1e-3)
    assert cost_of(27, "1IN_720P") == pytest.approx((0.19 + 0.09) / 0.35, abs=1e-3)
    # 16 inputs: each at least a 360p decode, whatever the pane's size.
    assert cost_of(27, "16IN_720P") == pytest.approx((0.19 + 16 * 0.04) / 0.35, abs=1e-3)
    # 1080p30: the encoder's share grows with the pixel rate (x2.25); a single input is capped at 720p.
    assert cost_of(30, "1IN_1080P") == pytest.approx((0.19 * 2.25 + 0.09) / 0.35, abs=1e-3)
    assert cost_of(30, "16IN_1080P") == pytest.approx((0.19 * 2.25 + 16 * 0.04) / 0.35, abs=1e-3)
    # 640x360 at 15 fps (MediaEncode 1), two inputs: an eighth of the unit's pixel rate.
    assert cost_of(1, "2IN_360P") == pytest.approx((0.19 / 8 + 2 * 0.04) / 0.35, abs=1e-3)
    # Without a TaskProfile: the smallest that fits the largest layout (layout 6 has 4 panes).
    assert cost_of(27, None, (1, 6)) == cost_of(27, "4IN_720P")
    assert cost_of(27, None, (1, 2)) == cost_of(27, "2IN_720P")
    # Audio only: MediaEncode 0, Mixed_Audio, or an audio relay.
    assert cost_of(0) == AUDIO_ONLY_COST == 0.1
    assert cost_of(0, "Mixed_Audio") == AUDIO_ONLY_COST
    assert cost_of(27, "4IN_720P", mix_mode=0, stream_type=1) == AUDIO_ONLY_COST
    # A video relay: one input over the whole canvas, whatever the profile.
    assert cost_of(27, "4IN_720P", mix_mode=0) == cost_of(27, "1IN_720P")
    # Bigger is never cheaper.
    assert (
        cost_of(27, "1IN_720P") < cost_of(27, "2IN_720P") < cost_of(27, "4IN_720P") < cost_of(27, "9IN_720P")
    )
    assert (
        cost_of(1, "4IN_360P") < cost_of(52, "4IN_360P") < cost_of(27, "4IN_720P") < cost_of(30, "4IN_1080P")
    )


def test_cost_of_a_spec_and_of_invalid_params() -> None:
    spec = build_task_spec(layout_ids=[6], media_encode_id=27)
    assert task_cost(spec) == pytest.approx(1.0)
    bad = TaskParams("c", "rtmp://h/live/s", media_encode=12345)
    with pytest.raises(SpecError):
        task_cost(bad)
    assert params_cost(bad) == 0.0  # it ends at once as invalid: it must not wait for capacity


def test_default_capacity_admits_what_the_bench_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0.6 CPU-s/s of each core for mixes: 3 unit mixes on 2 cores (bench.capacity: 3 at 62-64 % busy).
    monkeypatch.setattr(capacity, "cpu_cores", lambda: 2)
    assert default_capacity() == pytest.approx(3.42)
    assert 3 * cost_of(27, "4IN_720P") <= default_capacity() < 4 * cost_of(27, "4IN_720P")
    monkeypatch.setattr(capacity, "cpu_cores", lambda: 8)
    assert default_capacity() == pytest.approx(13.71)
    monkeypatch.undo()
    monkeypatch.delenv("MPU_WORKER_CAPACITY", raising=False)
    assert WorkerSettings.from_env().capacity == default_capacity()
    monkeypatch.setenv("MPU_WORKER_CAPACITY", "3.5")
    assert WorkerSettings.from_env().capacity == 3.5
    monkeypatch.setenv("MPU_WORKER_CAPACITY", "0")
    assert WorkerSettings.from_env().capacity == 0.0
    for bad in ("-1", "lots", "inf"):
        monkeypatch.setenv("MPU_WORKER_CAPACITY", bad)
        with pytest.raises(ValueError, match="MPU_WORKER_CAPACITY"):
            WorkerSettings.from_env()
    delays = [capacity.requeue_delay() for _ in range(200)]
    assert 1.0 <= min(delays) < max(delays) <= 3.0


# -- claims within a node's capacity ----------------------------------------------------------------


def test_claims_up_to_capacity_then_another_node(store: TaskStore) -> None:
    for task_id in ("a", "b", "c"):
        start(store, task_id)
    first = store.claim_on("app1", "a", "w1", node="n1", cost=0.8, capacity=2.0)
    assert first.result is ClaimResult.CLAIMED and first.token == 1 and first.load == 0.0
    second = store.claim_on("app1", "b", "w2", node="n1", cost=0.8, capacity=2.0)
    assert second.result is ClaimResult.CLAIMED and second.load == pytest.approx(0.8)
    assert store.node_load("n1") == {"app1/a": 0.8, "app1/b": 0.8}
    # 1.6 + 0.8 > 2.0: refused, the task stays queued and says why.
    refused = store.claim_on("app1", "c", "w3", node="n1", cost=0.8, capacity=2.0)
    assert refused.result is ClaimResult.NO_CAPACITY and refused.token is None and not refused.restart
    assert refused.load == pytest.approx(1.6)
    waiting = store.get_task("app1", "c")
    assert (waiting.state, waiting.status, waiting.fence, waiting.worker) == (
        TaskState.QUEUED,
        TaskStatus.WAITING,
        0,
        None,
    )
    assert (
        waiting.reason == no_capacity_reason(0.8) == "queued: no worker has capacity for it (cost 0.8 units)"
    )
    assert store.node_load("n1") == {"app1/a": 0.8, "app1/b": 0.8}
    # Another node takes it.
    taken = store.claim_on("app1", "c", "w4", node="n2", cost=0.8, capacity=2.0)
    assert taken.result is ClaimResult.CLAIMED and taken.token == 3
    record = store.get_task("app1", "c")
    assert (record.state, record.node, record.cost, record.worker) == (TaskState.STARTING, "n2", 0.8, "w4")
    assert store.node_load("n2") == {"app1/c": 0.8}
    # A second delivery of the same message is still HELD (the fencing decides, not the capacity).
    assert store.claim_on("app1", "c", "w5", node="n1", cost=0.8, capacity=2.0).result is ClaimResult.HELD
    assert store.claim_on("app1", "zz", "w5", node="n1", cost=0.8, capacity=2.0).result is ClaimResult.GONE


def test_exact_fit_small_tasks_and_unlimited(store: TaskStore) -> None:
    for task_id in ("a", "b", "c", "d"):
        start(store, task_id)
    assert store.claim_on("app1", "a", "w", node="n1", cost=1.5, capacity=2.0).result is ClaimResult.CLAIMED
    assert store.claim_on("app1", "b", "w", node="n1", cost=0.5, capacity=2.0).result is ClaimResult.CLAIMED
    full = store.claim_on("app1", "c", "w", node="n1", cost=0.1, capacity=2.0)
    assert full.result is ClaimResult.NO_CAPACITY
    # No capacity given: the load is kept but nothing is refused.
    unlimited = store.claim_on("app1", "c", "w", node="n1", cost=5.0)
    assert unlimited.result is ClaimResult.CLAIMED and unlimited.load == pytest.approx(2.0)
    # Without a node there is no accounting at all (the plain claim).
    assert store.claim("app1", "d", "w") is not None
    assert store.get_task("app1", "d").node is None
    assert sum(store.node_load("n1").values()) == pytest.approx(7.0)
    with pytest.raises(ValueError):
        store.claim_on("app1", "d", "w", node="n1", cost=-1.0, capacity=2.0)
    with pytest.raises(ValueError):
        store.claim_on("app1", "d", "w", node="n1", cost=1.0, capacity=0.0)
    with pytest.raises(ValueError):
        store.claim_on("app1", "d", "w", node="", cost=1.0)


def test_a_task_larger_than_a_node_runs_on_an_idle_node(store: TaskStore) -> None:
    start(store, "huge")
    start(store, "small")
    start(store, "huge2")
    assert (
        store.claim_on("app1", "small", "w", node="busy", cost=0.1, capacity=2.0).result
        is ClaimResult.CLAIMED
    )
    assert (
        store.claim_on("app1", "huge", "w", node="busy", cost=3.3, capacity=2.0).result
        is ClaimResult.NO_CAPACITY
    )
    taken = store.claim_on("app1", "huge", "w", node="idle", cost=3.3, capacity=2.0)
    assert taken.result is ClaimResult.CLAIMED
    # ...and nothing else fits next to it.
    assert (
        store.claim_on("app1", "huge2", "w", node="idle", cost=0.1, capacity=2.0).result
        is ClaimResult.NO_CAPACITY
    )


def test_claims_and_heartbeats_record_the_nodes_capacity(store: TaskStore) -> None:
    for task_id in ("a", "b"):
        start(store, task_id)
    assert store.node_capacity("n1") is None, "not reported yet"
    token = store.claim_on("app1", "a", "w", node="n1", cost=1.0, capacity=3.0).token
    assert token is not None and store.node_capacity("n1") == 3.0
    store.claim_on("app1", "b", "w", node="n2", cost=1.0)  # unlimited: 0
    assert store.node_capacity("n2") == 0.0
    assert 0 < store.client.pttl(store.capacity_key("n1")) <= store.ended_ttl_seconds * 1000
    # A heartbeat reports the capacity of the node in the task's record (the worker's setting).
    assert store.heartbeat("app1", "a", token, capacity=4.5) is not None
    assert store.node_capacity("n1") == 4.5
    assert store.heartbeat("app1", "a", token) is not None  # none given: unchanged
    assert store.node_capacity("n1") == 4.5
    assert store.heartbeat("app1", "a", token + 100, capacity=9.0) is None  # fenced out: nothing
    assert store.node_capacity("n1") == 4.5
    assert store.claim("app1", "b", "w") is None  # held; a claim without a node records nothing
    assert store.node_capacity("") is None
    with pytest.raises(ValueError):
        store.heartbeat("app1", "a", token, capacity=-1.0)


def test_finishing_frees_capacity(store: TaskStore) -> None:
    for task_id in ("a", "b", "c"):
        start(store, task_id)
    token_a = store.claim_on("app1", "a", "w", node="n1", cost=1.0, capacity=2.0).token
    token_b = store.claim_on("app1", "b", "w", node="n1", cost=1.0, capacity=2.0).token
    assert token_a is not None and token_b is not None
    assert (
        store.claim_on("app1", "c", "w", node="n1", cost=1.0, capacity=2.0).result is ClaimResult.NO_CAPACITY
    )
    assert store.finish("app1", "a", token_a, TaskStatus.CHANNEL_ENDED, "empty") is not None
    assert store.node_load("n1") == {"app1/b": 1.0}
    assert store.claim_on("app1", "c", "w", node="n1", cost=1.0, capacity=2.0).result is ClaimResult.CLAIMED
    # A stop request of a live task is carried out by its worker, which finishes it.
    store.request_stop("app1", "b")
    assert "app1/b" in store.node_load("n1")
    assert store.finish("app1", "b", token_b, TaskStatus.STOPPED_BY_USER, "stopped by the user") is not None
    assert store.node_load("n1") == {"app1/c": 1.0}


def test_stale_and_fenced_tasks_release_their_load(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.3)
    for task_id in ("a", "b", "c", "d"):
        start(store, task_id)
    token_a = store.claim_on("app1", "a", "w1", node="dead", cost=1.5, capacity=2.0).token
    assert token_a is not None
    assert (
        store.claim_on("app1", "b", "w1", node="dead", cost=1.0, capacity=2.0).result
        is ClaimResult.NO_CAPACITY
    )
    time.sleep(0.4)  # the worker of "a" died: its heartbeat is older than the lease
    # The next claim on the dead worker's node no longer counts it, and drops its entry.
    assert (
        store.claim_on("app1", "b", "w2", node="dead", cost=1.0, capacity=2.0).result is ClaimResult.CLAIMED
    )
    assert store.node_load("dead") == {"app1/b": 1.0}
    # The reconciler's restart of "a" elsewhere: "a" moves to node n2 and is fenced out on "dead".
    restarted = store.claim_on("app1", "a", "w3", node="n2", cost=1.5, capacity=2.0)
    assert (
        restarted.result is ClaimResult.CLAIMED and restarted.token is not None and restarted.token > token_a
    )
    assert store.get_task("app1", "a").restarts == 1
    assert store.heartbeat("app1", "a", token_a) is None  # the old worker is fenced out...
    assert "app1/a" not in store.node_load("dead")  # ...and does not count on its old node
    assert store.node_load("n2") == {"app1/a": 1.5}
    # A stale claimed task moved straight to another node (the entry on the old node goes at once).
    token_c = store.claim_on("app1", "c", "w1", node="n3", cost=0.5, capacity=2.0).token
    assert token_c is not None and store.node_load("n3") == {"app1/c": 0.5}
    time.sleep(0.4)
    assert store.claim_on("app1", "c", "w4", node="n4", cost=0.5, capacity=2.0).result is ClaimResult.CLAIMED
    assert store.node_load("n3") == {} and store.node_load("n4") == {"app1/c": 0.5}
    # A stale task ended by a stop request (no live worker) leaves its node too.
    time.sleep(0.4)
    assert store.request_stop("app1", "c").state is TaskState.ENDED
    assert store.node_load("n4") == {}


def test_a_restart_that_does_not_fit_is_left_to_the_reconciler(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.3)
    start(store, "a")
    start(store, "big")
    assert store.claim_on("app1", "a", "w1", node="n1", cost=1.0, capacity=2.0).token is not None
    time.sleep(0.4)
    assert store.claim_on("app1", "big", "w2", node="n2", cost=1.5, capacity=2.0).token is not None
    refused = store.claim_on("app1", "a", "w2", node="n2", cost=1.0, capacity=2.0)
    assert refused.result is ClaimResult.NO_CAPACITY and refused.restart
    assert store.get_task("app1", "a").reason != no_capacity_reason(1.0)  # the record shows the lost worker
    assert [r.task_id for r in store.stale_tasks()] == ["a"]  # the reconciler keeps trying


def test_heartbeat_puts_a_dropped_entry_back(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=0.3)
    start(store, "a")
    start(store, "b")
    token = store.claim_on("app1", "a", "w1", node="n1", cost=1.5, capacity=2.0).token
    assert token is not None
    time.sleep(0.4)  # the worker could not heartbeat for a while, but nobody took its task
    assert store.claim_on("app1", "b", "w2", node="n1", cost=0.4, capacity=2.0).token is not None
    assert store.node_load("n1") == {"app1/b": 0.4}
    assert store.heartbeat("app1", "a", token) is not None  # it is back: so is its load
    assert store.node_load("n1") == {"app1/a": 1.5, "app1/b": 0.4}


def test_concurrent_claims_never_exceed_capacity(make_store: StoreFactory) -> None:
    tasks = [f"t{i}" for i in range(24)]
    setup = make_store()
    for task_id in tasks:
        start(setup, task_id)
    stores = [make_store() for _ in range(8)]
    results: list[tuple[str, ClaimResult]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores))

    def worker(index: int) -> None:
        barrier.wait()
        for task_id in tasks:
            claim = stores[index].claim_on("app1", task_id, f"w{index}", node="n1", cost=0.7, capacity=3.0)
            with lock:
                results.append((task_id, claim.result))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    claimed = [task_id for task_id, result in results if result is ClaimResult.CLAIMED]
    assert len(claimed) == 4  # 4 x 0.7 = 2.8 <= 3.0 < 5 x 0.7
    assert len(set(claimed)) == 4  # each by one thread only
    assert sum(setup.node_load("n1").values()) == pytest.approx(2.8)
    assert {result for _, result in results} <= {
        ClaimResult.CLAIMED,
        ClaimResult.HELD,
        ClaimResult.NO_CAPACITY,
    }


def test_rescue_of_idle_queued_tasks(make_store: StoreFactory) -> None:
    store = make_store()
    start(store, "idle")
    start(store, "claimed")
    assert store.claim("app1", "claimed", "w") is not None
    assert store.rescue_queued(60) == []
    time.sleep(0.3)
    assert store.rescue_queued(0.2) == [("app1", "idle")]
    assert store.rescue_queued(0.2) == []  # touched: once per idle time, whoever asks
    # A task refused for capacity is touched at each refusal: it is not rescued while its message goes round.
    assert store.claim_on("app1", "claimed", "w", node="n", cost=1.0).result is ClaimResult.HELD
    start(store, "hog")
    assert store.claim_on("app1", "hog", "w", node="n", cost=1.0, capacity=1.0).result is ClaimResult.CLAIMED
    time.sleep(0.3)
    assert (
        store.claim_on("app1", "idle", "w", node="n", cost=0.5, capacity=1.0).result
        is ClaimResult.NO_CAPACITY
    )
    assert store.rescue_queued(0.2) == []
    time.sleep(0.3)
    assert store.rescue_queued(0.2) == [("app1", "idle")]
    assert (
        store.claim_on("app1", "idle", "w", node="n0", cost=0.5, capacity=1.0).result is ClaimResult.CLAIMED
    )
    time.sleep(0.3)
    assert store.rescue_queued(0.2) == []  # claimed: nothing to rescue


# -- the runner ------------------------------------------------------------------------------------


class Requeues:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self.fail = fail

    def __call__(self, app_id: str, task_id: str, countdown: float) -> None:
        self.calls.append((app_id, task_id, countdown))
        if self.fail:
            raise ConnectionError("broker down")


def test_runner_requeues_instead_of_running_when_the_node_is_full(store: TaskStore) -> None:
    settings = WorkerSettings(capacity=1.0)
    start(store, "running", layout_ids=(6,), media_encode=27)  # 1.0 unit
    start(store, "next", layout_ids=(1,), media_encode=27)  # 1IN_720P: 0.8
    assert store.claim_on("app1", "running", "w0", node="n1", cost=1.0, capacity=1.0).token is not None
    requeues = Requeues()
    runner = MixRunner(store, "app1", "next", "w1", settings, node="n1", requeue=requeues)
    assert runner.run() is None  # no pipeline was started (it would need Janus)
    assert runner.no_capacity
    assert [(a, t) for a, t, _ in requeues.calls] == [("app1", "next")]
    assert 1.0 <= requeues.calls[0][2] <= 3.0
    record = store.get_task("app1", "next")
    assert (record.state, record.status, record.fence) == (TaskState.QUEUED, TaskStatus.WAITING, 0)
    assert record.reason == "queued: no worker has capacity for it (cost 0.8 units)"
    # The broker is down: nothing is lost, the record stays queued for the reconciler's rescue.
    failing = Requeues(fail=True)
    runner = MixRunner(store, "app1", "next", "w1", settings, node="n1", requeue=failing)
    assert runner.run() is None and runner.no_capacity and len(failing.calls) == 1
    assert store.get_task("app1", "next").state is TaskState.QUEUED
    # Another node's runner claims it (its pipeline is not run here: only the claim is looked at).
    other = MixRunner(store, "app1", "next", "w2", settings, node="n2", requeue=requeues)
    assert other.claim() is not None and not other.no_capacity
    assert store.node_load("n2") == {"app1/next": pytest.approx(0.8)}
    assert len(requeues.calls) == 1
    # Tasks gone or running elsewhere are not claimed and not requeued either.
    assert MixRunner(store, "app1", "next", "w3", settings, node="n3", requeue=requeues).claim() is None
    assert MixRunner(store, "app1", "nope", "w3", settings, node="n3", requeue=requeues).claim() is None
    assert len(requeues.calls) == 1


def test_runner_without_a_node_claims_without_accounting(store: TaskStore) -> None:
    start(store, "a")
    runner = MixRunner(store, "app1", "a", "w1", WorkerSettings(capacity=0.01))
    assert runner.claim() == 1
    assert store.get_task("app1", "a").node is None


# -- what the API shows ----------------------------------------------------------------------------


def test_queued_for_capacity_is_visible_in_both_dialects(store: TaskStore) -> None:
    app = create_app(
        {"MPU_ACCESS_KEYS": "", "MPU_AUTH_DISABLED": True, "STORE": store, "ENQUEUE": lambda a, t: None}
    )
    client = app.test_client()
    body = {"task_id": "t1", "channel_id": "c1", "stream_url": "rtmp://example.com/live/x", "layout_ids": [6]}
    assert client.post("/v1/apps/app1/tasks", json=body).status_code == 201
    start(store, "hog")
    assert store.claim_on("app1", "hog", "w", node="n1", cost=1.5, capacity=2.0).token is not None
    runner = MixRunner(store, "app1", "t1", "w", WorkerSettings(capacity=2.0), node="n1", requeue=Requeues())
    assert runner.claim() is None and runner.no_capacity
    task = client.get("/v1/apps/app1/tasks/t1").json
    assert task is not None
    assert (task["status"], task["state"], task["worker"]) == (0, "queued", None)
    assert task["reason"] == "queued: no worker has capacity for it (cost 1.0 units)"
    answer = client.get("/", query_string={"Action": "GetMPUTaskStatus", "Version": "2018-01-11",
                                           "AppId": "app1", "TaskId": "t1"})  # fmt: skip
    assert answer.status_code == 200, answer.get_data(as_text=True)
    status = answer.json
    assert status is not None
    assert (status["Status"], status["State"], status["Reason"]) == (0, "queued", task["reason"])


def test_default_slots_leave_the_decision_to_the_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPU_MIX_SLOTS", raising=False)
    monkeypatch.delenv("MPU_ENCODER_THREADS", raising=False)
    monkeypatch.setattr(worker_settings, "cpu_cores", lambda: 2)
    monkeypatch.setattr(capacity, "cpu_cores", lambda: 2)
    loaded = WorkerSettings.from_env()
    # 4 slots on 2 cores: more than the 3 unit mixes the capacity admits; x264 on one thread each.
    assert loaded.mix_slots == 4 and loaded.mix_slots > loaded.capacity
    assert loaded.encoder_threads == 1
    monkeypatch.setenv("MPU_MIX_SLOTS", "1")
    assert WorkerSettings.from_env().encoder_threads == 2  # a node's one mix slices over both cores
    monkeypatch.setenv("MPU_ENCODER_THREADS", "0")
    assert WorkerSettings.from_env().encoder_threads == 0  # x264's own choice
    monkeypatch.setenv("MPU_ENCODER_THREADS", "-1")
    with pytest.raises(ValueError, match="MPU_ENCODER_THREADS"):
        WorkerSettings.from_env()
