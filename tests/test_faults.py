"""Fault injection with real processes (issue #7): the API and Celery workers as processes, a private
Redis and Janus per test (so pausing or restarting them touches no other test), the shared
nginx-rtmp, publishers over WebRTC and a viewer pulling the RTMP stream. Each test prints what it
measured; timing bounds are loose (the targets are in the README), the safety properties are exact.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtc_mpu.stack.demo_media import COLORS
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.redis import Redis
from tests.service import Service, running_service, service_env
from tests.test_service_e2e import APP, Viewer, colour_at, near, publish, stream_stats, wait_until


@dataclass
class FaultStack:
    """A private Redis and Janus, and the service (API + worker) on them."""

    redis: Redis
    janus: Janus
    service: Service


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[FaultStack]:
    redis = Redis(tmp_path / "redis", port=free_port())
    redis.start()
    janus_port = free_port()
    janus = Janus(tmp_path / "janus", http_port=janus_port, rtp_port_range="41000-42000")
    janus.start()
    env = service_env(redis.url, janus.url, MPU_COOLDOWN="3", MPU_LEASE_SECONDS="8", MPU_RATE_LIMIT="0")
    try:
        with running_service(env, tmp_path) as service:
            yield FaultStack(redis, janus, service)
    finally:
        janus.stop()
        redis.stop()


def start_task(service: Service, task_id: str, channel: str, url: str, layout_ids: list[int]) -> None:
    status, task = service.call(
        "POST",
        f"/v1/apps/{APP}/tasks",
        {
            "task_id": task_id,
            "channel_id": channel,
            "stream_url": url,
            "layout_ids": layout_ids,
            "media_encode": 1,
        },
    )
    assert status == 201, task


def largest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time without a new picture between ``start`` and ``end``."""
    inside = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in itertools.pairwise(inside))


class PublisherCounter(threading.Thread):
    """Samples nginx-rtmp's publishers of a stream every 50 ms; remembers the most seen at once."""

    def __init__(self, server: NginxRtmp, stream: str) -> None:
        super().__init__(daemon=True)
        self.server, self.stream = server, stream
        self.most = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                count = stream_stats(self.server, self.stream)[0]
            except OSError:
                continue
            self.most = max(self.most, count)
            self.samples += 1


@pytest.mark.timeout(150)
def test_redis_paused_for_5_s_no_gap_503s_then_normal(stack: FaultStack, nginx_rtmp: NginxRtmp) -> None:
    service = stack.service
    publishers = publish(stack.janus, "redis-fault", 1, 80)
    try:
        time.sleep(1.0)
        viewer = Viewer(nginx_rtmp, "redis-fault")
        viewer.start()
        start_task(service, "r", "redis-fault", nginx_rtmp.rtmp_url("redis-fault"), [1])
        service.wait_task(APP, "r", lambda t: t["status"] == 1, 30)
        wait_until(lambda: len(viewer.pictures) >= 30, 30, "the viewer receives the mix")
        counter = PublisherCounter(nginx_rtmp, "redis-fault")
        counter.start()
        pid = stack.redis.pid
        assert pid is not None
        paused = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        answers = []
        try:
            while time.monotonic() - paused < 5.0:
                began = time.monotonic()
                status, body = service.call("GET", f"/v1/apps/{APP}/tasks/r")
                answers.append((status, body.get("code"), time.monotonic() - began))
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        before = service.wait_task(APP, "r", lambda t: t["status"] == 1, 20)
        after = service.wait_task(APP, "r", lambda t: t["updated_at"] > before["updated_at"], 10)
        back = time.monotonic() - resumed
        time.sleep(2.0)
        counter.done.set()
        counter.join()
        gap = largest_gap([t for t, _ in viewer.pictures], paused - 1.0, time.monotonic())
        codes = Counter((s, c) for s, c, _ in answers)
        slowest = max(d for _, _, d in answers)
        print(
            f"Redis paused 5 s: largest gap in the viewer's pictures {gap:.2f} s; API answers {dict(codes)}"
            f" (slowest {slowest:.1f} s); heartbeats back {back:.1f} s after; most publishers {counter.most}"
        )
        assert gap < 1.0, "the show went on while Redis was away"
        assert codes[(503, "ServiceUnavailable")] >= 1 and all(s in (200, 503) for s, _, _ in answers)
        assert after["status"] == 1 and after["restarts"] == 0
        assert counter.most == 1 and counter.samples > 20
        status, _ = service.call("DELETE", f"/v1/apps/{APP}/tasks/r")
        assert status == 200
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)


@pytest.mark.timeout(150)
def test_janus_restart_panes_return(stack: FaultStack, nginx_rtmp: NginxRtmp) -> None:
    service = stack.service
    publishers = publish(stack.janus, "janus-fault", 2, 80)
    try:
        time.sleep(1.5)
        viewer = Viewer(nginx_rtmp, "janus-fault")
        viewer.start()
        start_task(service, "j", "janus-fault", nginx_rtmp.rtmp_url("janus-fault"), [2])
        service.wait_task(APP, "j", lambda t: t["status"] == 1 and len(t["users"]) == 2, 30)
        wait_until(lambda: len(viewer.pictures) >= 15, 30, "the viewer receives the mix")
        stack.janus.stop()
        publishers.terminate()
        publishers.wait(timeout=15)
        stopped = time.monotonic()
        time.sleep(2.0)
        stack.janus.start()
        publishers = publish(stack.janus, "janus-fault", 2, 60)
        rejoined = time.monotonic()

        def both_users_shown() -> bool:
            recent = [p for t, p in viewer.pictures if t > rejoined]
            if not recent:
                return False
            picture = recent[-1]
            return near(colour_at(picture, 0.30, 0.326), COLORS[0]) and near(
                colour_at(picture, 0.80, 0.326), COLORS[1]
            )

        wait_until(both_users_shown, 30, "both panes back in the viewer's picture")
        returned = time.monotonic() - rejoined
        gap = largest_gap([t for t, _ in viewer.pictures], stopped, time.monotonic())
        print(
            f"Janus restarted: panes back {returned:.1f} s after the publishers rejoined; the output "
            f"never stopped (largest gap in the viewer's pictures {gap:.2f} s)"
        )
        assert gap < 1.0
        task = service.wait_task(APP, "j", lambda t: t["status"] == 1 and len(t["users"]) == 2, 10)
        assert task["restarts"] == 0
        service.call("DELETE", f"/v1/apps/{APP}/tasks/j")
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)


@pytest.mark.timeout(120)
def test_100_concurrent_starts_on_one_url_exactly_one_wins(stack: FaultStack, nginx_rtmp: NginxRtmp) -> None:
    service = stack.service
    url = nginx_rtmp.rtmp_url("race") + "?auth=k"

    def start(index: int) -> tuple[int, str | None]:
        status, body = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {"task_id": f"race{index}", "channel_id": "nobody-here", "stream_url": url, "layout_ids": [1]},
        )
        return status, body.get("code")

    with ThreadPoolExecutor(32) as pool:
        results = Counter(pool.map(start, range(100)))
    print(f"100 concurrent starts on one StreamURL: {dict(results)}")
    assert results[(201, None)] == 1
    assert results[(409, "StreamURL.InUse")] == 99
    _, tasks = service.call("GET", f"/v1/apps/{APP}/tasks")
    active = [t for t in tasks["tasks"] if t["state"] != "ended"]
    assert len(active) == 1
    service.call("DELETE", f"/v1/apps/{APP}/tasks/{active[0]['task_id']}")


@pytest.mark.timeout(150)
def test_killed_worker_resumes_on_another_and_never_two_pushes(
    stack: FaultStack, nginx_rtmp: NginxRtmp
) -> None:
    service = stack.service
    publishers = publish(stack.janus, "kill-fault", 1, 90)
    try:
        time.sleep(1.0)
        start_task(service, "k", "kill-fault", nginx_rtmp.rtmp_url("kill-fault"), [1])
        service.wait_task(APP, "k", lambda t: t["status"] == 1, 30)  # on "worker", the only one
        service.start_worker("standby")  # a second worker, idle until the first one dies
        time.sleep(3.0)
        counter = PublisherCounter(nginx_rtmp, "kill-fault")
        counter.start()
        service.kill("worker")  # SIGKILL the worker and its pool: no goodbye, no lease release
        killed = time.monotonic()
        wait_until(lambda: stream_stats(nginx_rtmp, "kill-fault")[0] == 0, 10, "nginx-rtmp notices")
        wait_until(lambda: stream_stats(nginx_rtmp, "kill-fault") == (1, True), 40, "a new push")
        viewer = Viewer(nginx_rtmp, "kill-fault")
        viewer.start()
        wait_until(lambda: bool(viewer.pictures), 20, "the viewer sees the stream again")
        back = viewer.pictures[0][0] - killed
        resumed = service.wait_task(APP, "k", lambda t: t["restarts"] >= 1 and t["status"] == 1, 20)
        time.sleep(3.0)
        counter.done.set()
        counter.join()
        print(
            f"worker SIGKILLed: a viewer sees the stream again {back:.1f} s later (lease 8 s), pushed by "
            f"{resumed['worker']} (restarts {resumed['restarts']}); most publishers at once {counter.most} "
            f"over {counter.samples} samples"
        )
        assert counter.most == 1 and counter.samples > 50
        assert back < 20
        service.call("DELETE", f"/v1/apps/{APP}/tasks/k")
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)


@pytest.mark.timeout(150)
def test_sigterm_hands_the_show_over_to_another_worker(stack: FaultStack, nginx_rtmp: NginxRtmp) -> None:
    service = stack.service
    publishers = publish(stack.janus, "term-fault", 1, 90)
    try:
        time.sleep(1.0)
        start_task(service, "h", "term-fault", nginx_rtmp.rtmp_url("term-fault"), [1])
        service.wait_task(APP, "h", lambda t: t["status"] == 1, 30)  # on "worker", the only one
        service.start_worker("standby")
        time.sleep(3.0)
        counter = PublisherCounter(nginx_rtmp, "term-fault")
        counter.start()
        terminated = time.monotonic()
        os.killpg(service.processes["worker"].pid, signal.SIGTERM)  # as systemd stops a service
        wait_until(lambda: stream_stats(nginx_rtmp, "term-fault")[0] == 0, 10, "the old push stops")
        stopped = time.monotonic() - terminated
        wait_until(lambda: stream_stats(nginx_rtmp, "term-fault") == (1, True), 30, "the new push")
        back = time.monotonic() - terminated
        service.processes["worker"].wait(timeout=30)
        exited = time.monotonic() - terminated
        resumed = service.wait_task(APP, "h", lambda t: t["status"] == 1, 20)
        viewer = Viewer(nginx_rtmp, "term-fault")
        viewer.start()
        wait_until(lambda: bool(viewer.pictures), 20, "a viewer sees the stream")
        counter.done.set()
        counter.join()
        print(
            f"SIGTERM: the old worker stopped pushing {stopped:.1f} s later and exited after {exited:.1f} s; "
            f"the show was pushed again {back:.1f} s after the signal by {resumed['worker']} "
            f"(restarts {resumed['restarts']}); most publishers at once {counter.most}"
        )
        assert counter.most == 1
        assert back < 10 and resumed["restarts"] == 1
        assert "worker" not in service.processes or service.processes["worker"].returncode is not None
        service.call("DELETE", f"/v1/apps/{APP}/tasks/h")
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)
