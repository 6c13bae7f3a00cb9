"""``mpu task`` against the live API and a worker (real Redis, Janus and nginx-rtmp; a publisher over
WebRTC), every ``mpu`` process logging JSON (``MPU_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from tests.service import ACCESS_KEY, SECRET, Service, running_service, service_env

APP, CHANNEL, TASK = "cliapp", "cli-room", "cli1"
#: The stream key of the task's StreamURL: in no output and no log.
STREAM_KEY = "clisecretkey"
#: A log line in the text format (``FORMAT``).
TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.fixture
def service(redis_server: Redis, janus: Janus, tmp_path: Path) -> Iterator[Service]:
    # Its own Redis database (13): its own Celery queue and task store.
    env = service_env(
        f"{redis_server.url.rsplit('/', 1)[0]}/13",
        janus.url,
        MPU_COOLDOWN="5",
        MPU_LEASE_SECONDS="3",
        MPU_LOG_FORMAT="json",
    )
    with running_service(env, tmp_path) as service:
        yield service


def mpu_task(service: Service, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``mpu task ARGV`` as a process, with the service's API and key."""
    env = {
        **service.env,
        "MPU_API_URL": service.base,
        "MPU_ACCESS_KEY": f"{ACCESS_KEY}:{SECRET}",
        "MPU_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "rtc_mpu.cli.main", "task", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for text in (done.stdout, done.stderr):
        assert SECRET not in text and STREAM_KEY not in text and "auth=" not in text, text
    return done


@pytest.mark.timeout(90)
def test_mpu_task_start_status_list_layout_stop(
    service: Service, janus: Janus, nginx_rtmp: NginxRtmp
) -> None:
    publisher = subprocess.Popen(
        [
            *(sys.executable, "-m", "rtc_mpu.cli.main", "publish", "--janus", janus.url, "--app", APP),
            *("--channel", CHANNEL, "--users", "1", "--size", "320x180", "--duration", "45"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        began = time.monotonic()
        url = f"{nginx_rtmp.rtmp_url('cli-' + STREAM_KEY)}?auth=tok"
        start = [
            *("start", "--app", APP, "--task", TASK, "--channel", CHANNEL, "--stream-url", url),
            *("--layout-ids", "1,2", "--media-encode", "1", "--timeout", "30"),
        ]
        started = mpu_task(service, *start)
        assert started.returncode == 0, f"{started.stderr}\n--- worker ---\n{service.log('worker')}"
        progress = [line.split(" ", 1)[1] for line in started.stderr.splitlines()]
        assert progress[0].startswith(f"task {TASK} accepted: queued (status 0"), progress
        assert progress[-1].startswith("running (status 1"), progress
        print(f"mpu task start: running after {time.monotonic() - began:.2f} s; progress {progress}")

        status = mpu_task(service, "status", "--app", APP, "--task", TASK, "--json")
        assert status.returncode == 0, status.stderr
        task = json.loads(status.stdout)
        assert (task["state"], task["status"], task["channel_id"]) == ("running", 1, CHANNEL)
        assert task["stream_url"].endswith("/live/cli***")

        listing = mpu_task(service, "list", "--app", APP)
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()
        assert header.split()[:4] == ["TASK", "CHANNEL", "STATE", "STATUS"]
        assert [row.split()[:4] for row in rows] == [[TASK, CHANNEL, "running", "1"]]

        layout = mpu_task(service, "layout", "--app", APP, "--task", TASK, "--layout-ids", "2", "--json")
        assert layout.returncode == 0 and json.loads(layout.stdout)["layout_ids"] == [2], layout.stderr

        # The same StreamURL while the task pushes it: refused, exit 2.
        again = mpu_task(service, *[a if a != TASK else "cli2" for a in start])
        assert again.returncode == 2 and "StreamURL.InUse" in again.stderr, again.stderr

        stopped = mpu_task(service, "stop", "--app", APP, "--task", TASK, "--json", "--timeout", "30")
        assert stopped.returncode == 0, stopped.stderr
        ended = json.loads(stopped.stdout)
        assert (ended["state"], ended["status"]) == ("ended", 3)
        assert "stop requested: stopping" in stopped.stderr or "ended" in stopped.stderr

        missing = mpu_task(service, "status", "--app", APP, "--task", "nope")
        assert missing.returncode == 2 and "InvalidTask.NotFound" in missing.stderr
    finally:
        publisher.kill()
        publisher.wait(timeout=10)

    # Every log line of the API and the worker is one JSON object; the worker's name the task.
    service.stop_all()
    entries = []
    for name in ("api", "worker"):
        text = (service.log_dir / f"{name}.log").read_text()
        assert STREAM_KEY not in text and "auth=tok" not in text
        for line in text.splitlines():
            if line.startswith("{"):
                entries.append(json.loads(line))
            else:  # what is not JSON is not a log record (Celery's banner, ``mpu api``'s address)
                assert not TEXT_RECORD.match(line), line
    assert {e["logger"] for e in entries} >= {"rtc_mpu.workers.mix_runner", "waitress"}
    mine = [e for e in entries if e.get("task_id") == TASK]
    assert mine and all(e["app_id"] == APP for e in mine), entries[-20:]
