"""Issue 15: the API's CPU with the operator dashboard open on 20 tasks.

Run it from the repository root (needs the Debian ``redis-server`` package)::

    .venv/bin/python -m bench.dashboard_cpu [--tasks 20] [--seconds 30] [--viewers 1]

A private Redis and the API (``mpu api``, an operator key) on free loopback ports; ``--tasks`` tasks
are started through the REST API (no worker runs, so they stay ``queued``: the dashboard lists them
with their records, as it lists running ones, without statistics). Then ``--viewers`` dashboards
poll ``GET /dashboard/api/tasks`` every 2 s as the page does, for ``--seconds``. Printed: the API
process's CPU seconds per second while idle and while the dashboards are open (from
``/proc/<pid>/stat``), and the answer's size and latency. It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rtc_mpu.cli.demo import ApiClient
from rtc_mpu.stack.ports import free_port, wait_for_port
from rtc_mpu.stack.redis import Redis

KEY, SECRET = "operator", "operator-secret"
#: How often the page polls, seconds (api/dashboard_static/dashboard.js).
POLL_SECONDS = 2.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--viewers", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        redis = Redis(Path(folder) / "redis", port=free_port())
        redis.start()
        port = free_port()
        env = {
            **os.environ,
            "MPU_REDIS_URL": redis.url,
            "MPU_ACCESS_KEYS": f"{KEY}:{SECRET}",
            "MPU_RATE_LIMIT": "0",
            "MPU_LOG_LEVEL": "WARNING",
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "rtc_mpu.cli.main", "api", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            if not wait_for_port("127.0.0.1", port, 20):
                print("the API did not start", file=sys.stderr)
                return 1
            client = ApiClient(f"http://127.0.0.1:{port}", KEY, SECRET)
            for n in range(args.tasks):
                status, body = client.call(
                    "POST",
                    f"/v1/apps/app{n % 4}/tasks",
                    {
                        "task_id": f"t{n}",
                        "channel_id": f"room{n}",
                        "stream_url": f"rtmp://127.0.0.1/live/s{n}",
                    },
                )
                if status != 201:
                    print(f"start {n}: HTTP {status} {body}", file=sys.stderr)
                    return 1
            time.sleep(2.0)
            idle_cpu, idle_from = cpu_seconds(api.pid), time.monotonic()
            time.sleep(args.seconds / 3)
            idle = (cpu_seconds(api.pid) - idle_cpu) / (time.monotonic() - idle_from)
            auth = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/dashboard/api/tasks", headers={"Authorization": auth}
            )
            latencies: list[float] = []
            size = 0
            start_cpu, started = cpu_seconds(api.pid), time.monotonic()
            next_poll = started
            while time.monotonic() - started < args.seconds:
                for _ in range(args.viewers):
                    sent = time.monotonic()
                    with urllib.request.urlopen(request, timeout=10) as response:
                        size = len(response.read())
                    latencies.append(time.monotonic() - sent)
                next_poll += POLL_SECONDS
                time.sleep(max(0.0, next_poll - time.monotonic()))
            busy = (cpu_seconds(api.pid) - start_cpu) / (time.monotonic() - started)
        finally:
            api.terminate()
            api.wait(10)
            redis.stop()
    print(
        f"the API, {args.viewers} dashboard(s) open on {args.tasks} tasks, polling every {POLL_SECONDS:g} s"
    )
    print(f"  API CPU idle                        {idle:.4f} CPU-s/s")
    print(f"  API CPU with the dashboard(s) open  {busy:.4f} CPU-s/s")
    print(f"  answer size                         {size} bytes")
    p50, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
    print(f"  answer latency p50 / max            {p50:.1f} / {worst:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
