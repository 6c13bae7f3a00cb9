"""Memory of a Celery worker over many short mixes (issue 11, D10), and how long a mix takes to start.

Run it from the repository root (needs the Debian ``redis-server``, ``janus``, ``nginx`` and
``libnginx-mod-rtmp``)::

    .venv/bin/python -m bench.worker_memory [--rounds 3] [--tasks 30] [--at-once 2] [--seconds 5]

It starts a private Redis, Janus and nginx-rtmp on free loopback ports, the API (``mpu api``) and one
real worker (``mpu worker --slots N``, as an operator runs it), and then runs ``--rounds`` rounds of
``--tasks`` mix tasks, each started through the REST API on an empty channel (1280x720 30 fps,
MediaEncode 27, LayoutIds [1]: 0.74 capacity units, so ``--at-once`` 2 fits the default capacity of a
2-core machine), ``--at-once`` at a time, and stopped through the API (DELETE) ``--seconds`` after it
reported state ``running``. After each round (once the pool has its processes again) it prints each
worker process's RSS (``VmRSS``) and PSS (``Pss`` of ``smaps_rollup``: shared pages split between the
processes that share them) in MiB, the main process's open file descriptors, the pool processes'
PIDs and the highest RSS a pool process reached during the round (sampled every 0.5 s); at the
end, whether the total RSS and the main process's RSS are flat within 5 % between round 1 and the
last round, and the start
latencies: from the POST's answer to state ``starting`` (the task's message reached a pool process,
which claimed it) and to state ``running`` (the first heartbeat of the pipeline, at most one
``MPU_HEARTBEAT_INTERVAL`` after it started), median, 90th percentile and maximum, in seconds.
It prints numbers and asserts nothing (exit 1 only if a task misbehaved: not running within 60 s,
not ended within 30 s of its stop, or ended with another status than 3).

By default a batch starts as soon as the previous one has ended (state ``ended``, a moment before
its pool processes have exited): the worst case for a fresh process per mix. ``--pause S`` waits
``S`` seconds between batches, as when mixes do not end and start back to back.

``--mixes-per-process N`` sets ``MPU_MIXES_PER_PROCESS`` for the worker (how many Celery tasks a pool
process runs before it is replaced; 0 = never replaced), to compare with the default.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rtc_mpu.cli.demo import ApiClient
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port, wait_for_port
from rtc_mpu.stack.redis import Redis

APP = "bench"
KEY, SECRET = "bench", "bench-secret"
#: The flatness target between the first and the last round, in percent.
FLAT_PERCENT = 5.0
#: Seconds between polls of a task's state (the latencies' resolution).
POLL = 0.05


@dataclass
class ProcessMemory:
    """One process's memory: ``rss`` and ``pss`` in KiB, ``fds`` open file descriptors."""

    pid: int
    rss: int
    pss: int
    fds: int


def _status_kib(pid: int, path: str, key: str) -> int:
    """The ``key:`` line of ``/proc/<pid>/<path>`` in KiB (0 if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/{path}").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def memory_of(pid: int) -> ProcessMemory:
    """RSS and PSS (KiB) and open file descriptors of ``pid`` (zeros if it is gone)."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = 0
    return ProcessMemory(
        pid, _status_kib(pid, "status", "VmRSS"), _status_kib(pid, "smaps_rollup", "Pss"), fds
    )


def children_of(pid: int) -> list[int]:
    """PIDs of the live child processes of ``pid`` (from ``/proc/*/stat``), sorted."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def mib(kib: float) -> str:
    """KiB as MiB with one decimal."""
    return f"{kib / 1024:.1f}"


@dataclass
class RoundResult:
    """What one round measured. Memory in KiB, latencies in seconds."""

    main: ProcessMemory
    children: list[ProcessMemory]
    peak_child_rss: int
    to_starting: list[float] = field(default_factory=list)
    to_running: list[float] = field(default_factory=list)
    to_ended: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total_rss(self) -> int:
        """RSS of the main process and every pool process, KiB (shared pages counted in each)."""
        return self.main.rss + sum(c.rss for c in self.children)

    @property
    def total_pss(self) -> int:
        """PSS of the main process and every pool process, KiB."""
        return self.main.pss + sum(c.pss for c in self.children)


class Bench:
    """The stack, the API and the worker, and the rounds of tasks."""

    def __init__(self, run_dir: Path, args: argparse.Namespace) -> None:
        self.run_dir = run_dir
        self.args = args
        self.redis = Redis(run_dir / "redis", port=free_port())
        self.janus = Janus(run_dir / "janus", http_port=free_port())
        self.nginx = NginxRtmp(run_dir / "nginx", rtmp_port=free_port(), http_port=free_port())
        self.api_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.client = ApiClient(f"http://127.0.0.1:{self.api_port}", KEY, SECRET)
        self.peak_child_rss = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Start the stack, the API and the worker; stop them afterwards."""
        self.redis.start()
        try:
            self.janus.start()
            self.nginx.start()
            env = dict(os.environ)
            env.update(
                MPU_REDIS_URL=self.redis.url,
                MPU_JANUS_URL=self.janus.url,
                MPU_ACCESS_KEYS=f"{KEY}:{SECRET}",
                MPU_RATE_LIMIT="0",
                MPU_COOLDOWN="1",
                MPU_LOG_LEVEL=os.environ.get("MPU_LOG_LEVEL", "INFO"),
            )
            if self.args.mixes_per_process is not None:
                env["MPU_MIXES_PER_PROCESS"] = str(self.args.mixes_per_process)
            self._spawn("api", ["api", "--port", str(self.api_port)], env)
            if not wait_for_port("127.0.0.1", self.api_port, 30):
                raise RuntimeError(f"the API did not start:\n{self.log('api')}")
            self._spawn("worker", ["worker", "--slots", str(self.args.slots), "--name", "bench@%h"], env)
            deadline = time.monotonic() + 60
            while " ready." not in self.log("worker"):
                if time.monotonic() > deadline or self.processes["worker"].poll() is not None:
                    raise RuntimeError(f"the worker did not start:\n{self.log('worker')}")
                time.sleep(0.2)
            yield
        finally:
            self._stop_processes()
            self.nginx.stop()
            self.janus.stop()
            self.redis.stop()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.run_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "rtc_mpu.cli.main", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _stop_processes(self) -> None:
        """SIGTERM each started process's group (the worker's pool too), SIGKILL after 30 s."""
        for process in reversed(list(self.processes.values())):
            if process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def log(self, name: str) -> str:
        """A process's log so far."""
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def worker_pid(self) -> int:
        """The worker's main process."""
        return self.processes["worker"].pid

    def _sample_children(self) -> None:
        for pid in children_of(self.worker_pid):
            self.peak_child_rss = max(self.peak_child_rss, _status_kib(pid, "status", "VmRSS"))

    def _state(self, task_id: str) -> dict[str, object]:
        status, task = self.client.call("GET", f"/v1/apps/{APP}/tasks/{task_id}")
        return task if status == 200 else {}

    def run_batch(self, task_ids: list[str], result: RoundResult) -> None:
        """Start ``task_ids`` together, stop each ``--seconds`` after it runs, wait until all ended."""
        posted: dict[str, float] = {}
        for task_id in task_ids:
            status, body = self.client.call(
                "POST",
                f"/v1/apps/{APP}/tasks",
                {
                    "task_id": task_id,
                    "channel_id": "empty",
                    "stream_url": self.nginx.rtmp_url(f"wm-{task_id}"),
                    "layout_ids": [1],
                    "media_encode": 27,
                },
            )
            if status != 201:
                result.problems.append(f"{task_id}: POST answered {status} {body}")
                continue
            posted[task_id] = time.monotonic()
        starting: dict[str, float] = {}
        running: dict[str, float] = {}
        stopped: dict[str, float] = {}
        ended: set[str] = set()
        next_sample = 0.0
        while len(ended) < len(posted):
            if time.monotonic() >= next_sample:
                self._sample_children()
                next_sample = time.monotonic() + 0.5
            for task_id, started in posted.items():
                if task_id not in ended:
                    self._poll(task_id, started, starting, running, stopped, ended, result)
            time.sleep(POLL)
        result.to_starting += [starting[t] for t in posted if t in starting]
        result.to_running += [running[t] for t in posted if t in running]

    def _poll(
        self,
        task_id: str,
        started: float,
        starting: dict[str, float],
        running: dict[str, float],
        stopped: dict[str, float],
        ended: set[str],
        result: RoundResult,
    ) -> None:
        """Read one task's state; note when it started and ran, stop it when its time is up."""
        task = self._state(task_id)
        state, now = task.get("state"), time.monotonic()
        if state not in (None, "queued") and task_id not in starting:
            starting[task_id] = now - started
        if state in ("running", "stopping", "ended") and task_id not in running:
            running[task_id] = now - started
        late = task_id not in running and now - started > 60
        if late:
            result.problems.append(f"{task_id}: not running 60 s after its POST: {task}")
        if task_id not in stopped and (
            late or (task_id in running and now - started - running[task_id] >= self.args.seconds)
        ):
            self.client.call("DELETE", f"/v1/apps/{APP}/tasks/{task_id}")
            stopped[task_id] = time.monotonic()
        if state == "ended":
            ended.add(task_id)
            result.to_ended.append(now - stopped.get(task_id, now))
            if task.get("status") != 3:
                result.problems.append(
                    f"{task_id}: ended with status {task.get('status')}: {task.get('reason')}"
                )
        elif task_id in stopped and now - stopped[task_id] > 30:
            result.problems.append(f"{task_id}: not ended 30 s after its DELETE: {task}")
            ended.add(task_id)

    def run_round(self, number: int) -> RoundResult:
        """One round of ``--tasks`` tasks, ``--at-once`` at a time; then the worker's memory."""
        self.peak_child_rss = 0
        result = RoundResult(memory_of(self.worker_pid), [], 0)
        ids = [f"r{number}-{i}" for i in range(self.args.tasks)]
        for first in range(0, len(ids), self.args.at_once):
            if first and self.args.pause:
                time.sleep(self.args.pause)
            self.run_batch(ids[first : first + self.args.at_once], result)
        # Let the pool settle: pool processes that exited are replaced within a few seconds.
        deadline = time.monotonic() + 15
        time.sleep(2.0)
        while len(children_of(self.worker_pid)) < self.args.slots and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        result.main = memory_of(self.worker_pid)
        result.children = [memory_of(pid) for pid in children_of(self.worker_pid)]
        result.peak_child_rss = self.peak_child_rss
        return result


def _quantiles(values: list[float]) -> str:
    """Median, 90th percentile and maximum of ``values`` (seconds)."""
    if not values:
        return "no values"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered):.2f} s, p90 {p90:.2f} s, max {ordered[-1]:.2f} s"


def report_round(number: int, result: RoundResult) -> None:
    """Print one round's memory and latencies."""
    print(f"round {number}: worker processes after the round (MiB)", flush=True)
    print(f"  main  pid {result.main.pid:>7}  RSS {mib(result.main.rss):>6}  PSS {mib(result.main.pss):>6}"
          f"  fds {result.main.fds}")  # fmt: skip
    for child in result.children:
        print(f"  child pid {child.pid:>7}  RSS {mib(child.rss):>6}  PSS {mib(child.pss):>6}")
    print(f"  total            RSS {mib(result.total_rss):>6}  PSS {mib(result.total_pss):>6}")
    print(f"  highest RSS of a pool process during the round: {mib(result.peak_child_rss)} MiB")
    print(f"  POST -> starting: {_quantiles(result.to_starting)}")
    print(f"  POST -> running:  {_quantiles(result.to_running)}")
    print(f"  DELETE -> ended:  {_quantiles(result.to_ended)}")
    for problem in result.problems:
        print(f"  PROBLEM {problem}")


def _change(first: int, last: int) -> str:
    growth = 100.0 * (last - first) / first if first else float("nan")
    verdict = "flat" if abs(growth) <= FLAT_PERCENT else "NOT flat"
    return f"{mib(first)} -> {mib(last)} MiB ({growth:+.1f} %, {verdict} within {FLAT_PERCENT:g} %)"


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the measurements."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=30, help="tasks per round")
    parser.add_argument("--at-once", type=int, default=2, help="tasks running at once (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds each task runs")
    parser.add_argument("--slots", type=int, default=2, help="the worker's mix slots (default 2)")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between a batch's end and the next one's start"
    )
    parser.add_argument("--mixes-per-process", type=int, default=None, help="MPU_MIXES_PER_PROCESS")
    parser.add_argument("--logs", type=Path, default=None, help="copy the API's and the worker's logs here")
    args = parser.parse_args(argv)
    results: list[RoundResult] = []
    setting = (
        os.environ.get("MPU_MIXES_PER_PROCESS") if args.mixes_per_process is None else args.mixes_per_process
    )
    print(
        f"worker memory: {args.rounds} rounds of {args.tasks} tasks on an empty channel (MediaEncode 27), "
        f"{args.at_once} at a time, each stopped {args.seconds:g} s after it runs, {args.pause:g} s between "
        "batches; "
        f"worker --slots {args.slots}, "
        f"MPU_MIXES_PER_PROCESS={setting if setting is not None else '(default)'}; {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        bench = Bench(Path(run_dir), args)
        with bench.running():
            before = memory_of(bench.worker_pid)
            children = [memory_of(pid) for pid in children_of(bench.worker_pid)]
            print(
                f"idle worker before round 1: main RSS {mib(before.rss)} MiB, pool processes RSS "
                f"{', '.join(mib(c.rss) for c in children)} MiB",
                flush=True,
            )
            for number in range(1, args.rounds + 1):
                result = bench.run_round(number)
                report_round(number, result)
                results.append(result)
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for name in bench.processes:
                (args.logs / f"{name}.log").write_text(bench.log(name))
    first, last = results[0], results[-1]
    print(f"round 1 -> round {len(results)}:")
    print(f"  total RSS: {_change(first.total_rss, last.total_rss)}")
    print(f"  total PSS: {_change(first.total_pss, last.total_pss)}")
    print(f"  main RSS:  {_change(first.main.rss, last.main.rss)}")
    print(f"  highest pool-process RSS during a round: {_change(first.peak_child_rss, last.peak_child_rss)}")
    print(f"  POST -> starting, all rounds: {_quantiles([x for r in results for x in r.to_starting])}")
    print(f"  POST -> running, all rounds:  {_quantiles([x for r in results for x in r.to_running])}")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
