"""Webhooks end to end: a real Redis, a real events worker process (``mpu events``, the queue
``events``) and a real receiver process. A task's life, driven through the task store's scripts
(the changes a worker and the API make), arrives at the receiver signed, in order, once each; with
the receiver down for 10 s, nothing is lost. Prints the delay from a change to its arrival."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.stack.ports import free_port, wait_for_port
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.events import WebhookEndpoint, verify
from rtc_mpu.workers.model import TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.store import TaskStore

SECRET = "integration-secret-0123"
pytestmark = pytest.mark.integration


class Receiver:
    """``tests.webhook_receiver`` as a child process, restartable on the same port."""

    def __init__(self, port: int, path: Path) -> None:
        self.port, self.path = port, path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mpu"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.webhook_receiver", str(self.port), str(self.path)],
            cwd=Path(__file__).parent.parent,
        )
        assert wait_for_port("127.0.0.1", self.port, 10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def received(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@pytest.fixture
def setup(redis_server: Redis, tmp_path: Path) -> Iterator[tuple[TaskStore, Receiver]]:
    store = TaskStore.from_url(redis_server.url)
    receiver = Receiver(free_port(), tmp_path / "received.jsonl")
    receiver.start()
    env = {
        **os.environ,
        "MPU_REDIS_URL": redis_server.url,
        "MPU_ALLOW_PRIVATE_URLS": "1",  # the receiver listens on 127.0.0.1
        "MPU_LOG_LEVEL": "INFO",
    }
    log = open(tmp_path / "events.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_mpu.cli.main",
            "events",
            "--concurrency",
            "4",
            "--name",
            f"events{free_port()}@%h",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield store, receiver
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
        receiver.stop()
        print((tmp_path / "events.log").read_text(errors="replace")[-2000:])
        for key in store.client.scan_iter(match="mpu:*"):
            store.client.delete(key)
        store.close()


def wait_for(receiver: Receiver, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = receiver.received()
        if len(got) >= count:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{len(receiver.received())} of {count} events arrived: {receiver.received()}")


def life(store: TaskStore, task_id: str, changes: dict[int, float]) -> None:
    """A task's life through the store's scripts; ``changes``: sequence -> when its change was made."""
    url = f"rtmp://example.com/live/{task_id}?auth=secretkey"

    def at(seq: int) -> None:
        changes[seq] = time.time()

    at(1)
    store.start_task(TaskRecord("app1", task_id, TaskParams("ch1", url), stream_url_key(url)))
    at(2)
    token = store.claim("app1", task_id, "w1")
    assert token is not None
    time.sleep(0.1)
    at(3)
    store.heartbeat(
        "app1", task_id, token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="running"
    )
    time.sleep(0.1)
    at(4)
    store.heartbeat(
        "app1", task_id, token, status=TaskStatus.NETWORK_PROBLEM, state=TaskState.RETRYING, reason="retrying"
    )
    time.sleep(0.1)
    at(5)
    store.heartbeat(
        "app1", task_id, token, status=TaskStatus.RUNNING, state=TaskState.RUNNING, reason="running"
    )
    time.sleep(0.1)
    at(6)
    store.finish("app1", task_id, token, TaskStatus.STOPPED_BY_USER, "stopped by the user")


TYPES = [
    "task.started",
    "task.status_changed",
    "task.status_changed",
    "task.status_changed",
    "task.status_changed",
    "task.ended",
]


def check(received: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    bodies = []
    for item in received:
        body = json.loads(item["body"])
        if (body.get("task") or {}).get("task_id") != task_id:
            continue
        assert verify(item["signature"], item["body"].encode(), SECRET, time.time(), tolerance=600)
        assert "secretkey" not in item["body"]
        assert item["path"] == "/hooks/mpu"
        bodies.append({**body, "arrived": item["arrived"]})
    assert [b["sequence"] for b in bodies] == [1, 2, 3, 4, 5, 6], "in order, once each"
    assert [b["type"] for b in bodies] == TYPES
    assert [b["task"]["status"] for b in bodies] == [0, 0, 1, 5, 1, 3]
    assert len({b["id"] for b in bodies}) == 6
    return bodies


def test_a_task_life_arrives_signed_in_order_once(setup: tuple[TaskStore, Receiver]) -> None:
    store, receiver = setup
    store.set_webhooks("app1", [WebhookEndpoint(receiver.url, SECRET)])
    store.emit_ping("app1")  # the worker is up once the ping arrived
    ping = json.loads(wait_for(receiver, 1, 60)[0]["body"])
    assert ping["type"] == "ping" and ping["task"] is None and ping["app_id"] == "app1"
    delays: list[float] = []
    for i in range(10):
        changes: dict[int, float] = {}
        life(store, f"t{i}", changes)
        got = wait_for(receiver, 1 + 6 * (i + 1), 30)
        bodies = check(got, f"t{i}")
        delays += [b["arrived"] - changes[b["sequence"]] for b in bodies]
    time.sleep(1.0)
    assert len(receiver.received()) == 61, "no duplicates"
    delays.sort()
    p50, p95 = statistics.median(delays), delays[int(0.95 * (len(delays) - 1))]
    print(
        f"\nwebhook delay from a change to its arrival over {len(delays)} events:"
        f" p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
    )
    assert p95 < 5.0
    deliveries = store.deliveries("app1")
    assert deliveries and all(d.delivered_at is not None and d.last_status == 200 for d in deliveries)


def test_nothing_is_lost_while_the_receiver_is_down(setup: tuple[TaskStore, Receiver]) -> None:
    store, receiver = setup
    store.set_webhooks("app1", [WebhookEndpoint(receiver.url, SECRET)])
    receiver.stop()
    down_at = time.monotonic()
    changes: dict[int, float] = {}
    life(store, "down", changes)
    time.sleep(max(0.0, 10.0 - (time.monotonic() - down_at)))
    assert receiver.received() == []
    failed = store.deliveries("app1")
    assert failed and failed[0].attempts >= 3 and failed[0].delivered_at is None
    receiver.start()
    back_at = time.time()
    got = wait_for(receiver, 6, 90)  # the next attempt is at most 16 s away (1, 2, 4, 8, 16 s)
    check(got, "down")
    print(f"\nreceiver back: all 6 events arrived {got[-1]['arrived'] - back_at:.1f} s later")
    time.sleep(1.0)
    assert len(receiver.received()) == 6
    started = next(d for d in store.deliveries("app1") if d.sequence == 1)
    assert started.attempts >= 4 and started.delivered_at is not None
