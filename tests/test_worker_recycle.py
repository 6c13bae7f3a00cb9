"""A mix's memory goes back to the system when it ends (issue 11, D10): each mix runs in a fresh pool
process (``MPU_MIXES_PER_PROCESS``, Celery's ``worker_max_tasks_per_child``), and the setting's parsing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.settings import WorkerSettings
from tests.service import Service, running_service, service_env

APP = "app1"


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("1", 1), ("3", 3), ("0", 0)])
def test_mixes_per_process_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int) -> None:
    if value is None:
        monkeypatch.delenv("MPU_MIXES_PER_PROCESS", raising=False)
    else:
        monkeypatch.setenv("MPU_MIXES_PER_PROCESS", value)
    assert WorkerSettings.from_env().mixes_per_process == expected


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_mixes_per_process_must_be_a_count(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MPU_MIXES_PER_PROCESS", value)
    with pytest.raises(ValueError, match="MPU_MIXES_PER_PROCESS"):
        WorkerSettings.from_env()


@pytest.fixture
def service(tmp_path: Path, janus: Janus) -> Iterator[Service]:
    """The API and a one-slot worker on a private Redis and the session's Janus."""
    redis = Redis(tmp_path / "redis", port=free_port())
    redis.start()
    env = service_env(redis.url, janus.url, MPU_RATE_LIMIT="0")
    env.pop("MPU_MIXES_PER_PROCESS", None)  # the default
    try:
        with running_service(env, tmp_path) as service:
            yield service
    finally:
        redis.stop()


def pool_processes(worker_pid: int) -> set[int]:
    """The live child processes of a worker's main process."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and int(fields[1]) == worker_pid and fields[0] != "Z":
            found.add(int(entry))
    return found


@pytest.mark.timeout(60)
def test_each_mix_runs_in_a_fresh_pool_process(service: Service, nginx_rtmp: NginxRtmp) -> None:
    """Two mixes one after the other on a one-slot worker run in two different pool processes; the
    first one's process has exited by the time the second runs, and the pool keeps its one process."""
    worker_pid = service.processes["worker"].pid
    pids = []
    for task_id in ("first", "second"):
        status, body = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": task_id,
                "channel_id": "recycle",  # nobody publishes: an empty channel
                "stream_url": nginx_rtmp.rtmp_url(f"recycle-{task_id}"),
                "layout_ids": [1],
                "media_encode": 1,
            },
        )
        assert status == 201, body
        task = service.wait_task(APP, task_id, lambda t: t["state"] == "running", 30)
        pid = int(task["worker"].rsplit(":", 1)[1])  # "<hostname>:<pid>" of the pool process
        assert pid in pool_processes(worker_pid)
        pids.append(pid)
        service.call("DELETE", f"/v1/apps/{APP}/tasks/{task_id}")
        ended = service.wait_task(APP, task_id, lambda t: t["state"] == "ended", 15)
        assert ended["status"] == 3, ended
    assert pids[0] != pids[1], "the second mix ran in the first one's process"
    assert not Path(f"/proc/{pids[0]}").exists() or pids[0] not in pool_processes(worker_pid)
    deadline = time.monotonic() + 10
    while len(pool_processes(worker_pid)) != 1 or pids[1] in pool_processes(worker_pid):
        assert time.monotonic() < deadline, f"the pool has {pool_processes(worker_pid)}, ran {pids}"
        time.sleep(0.1)
