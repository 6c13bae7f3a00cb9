"""Where one process's CPU goes, thread by thread: the benches' per-thread breakdown of a mix.

Linux counts CPU time per thread (``/proc/<pid>/task/<tid>/stat``: utime + stime, clock ticks). Python
3.11 does not give its threads kernel names, so the Python names (``MainThread``: the event loop;
``mpu-encode``; ``mpu-out-<output>``; aiortc's ``video-decoder``/``audio-decoder``) are read with
``py-spy dump`` (the sampling profiler, a ``dev`` dependency), which lists each Python thread with its
kernel thread id. Threads that never run Python (libx264's encoding threads, FFmpeg's decoder threads,
libsrtp, ...) are grouped under their kernel name (FFmpeg 7 names its own threads ``av:<codec>:...``;
others keep the process's name), reported as ``native: <name>``.

Usage::

    sampler = ThreadSampler(pid)    # names the threads and reads their CPU time
    ...                             # the window
    shares = sampler.stop()         # {group: CPU-seconds per wall second}
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Seconds ``py-spy dump`` may take.
PY_SPY_TIMEOUT_SECONDS = 20.0
#: ``py-spy dump`` thread lines: ``Thread 12345 (idle): "MainThread"``.
_THREAD_LINE = re.compile(r'^Thread (\d+) \((?:active|idle)[^)]*\): "([^"]*)"', re.MULTILINE)
#: Python thread names folded into one group (a number of threads doing the same job).
_GROUPS = {"MainThread": "event loop (MainThread)"}


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime in clock ticks of each thread of ``pid``, by kernel thread id (empty if gone)."""
    result: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        result[int(tid)] = int(fields[11]) + int(fields[12])
    return result


def kernel_name(pid: int, tid: int) -> str:
    """The thread's kernel name (``comm``), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


def python_thread_names(pid: int) -> dict[int, str]:
    """Python thread names by kernel thread id, from ``py-spy dump`` (empty when py-spy is missing or
    cannot attach: then only kernel names are known)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {}
    try:
        out = subprocess.run(
            [spy, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=PY_SPY_TIMEOUT_SECONDS,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(tid): name for tid, name in _THREAD_LINE.findall(out)}


def group_of(name: str | None, kernel: str, process_name: str) -> str:
    """The group a thread's CPU is reported under (see the module docstring)."""
    if name:
        return _GROUPS.get(name, name.rstrip("0123456789_-") or name)
    if kernel and kernel != process_name:
        return f"native: {kernel.rstrip('0123456789')}"
    return "native: unnamed (x264, codecs)"


class ThreadSampler:
    """CPU time of one process's threads between construction and :meth:`stop`, by group.

    Args:
        pid: the process (a worker's pool process running one mix).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.names = python_thread_names(pid)
        self._process_name = kernel_name(pid, pid)
        self._start = thread_ticks(pid)
        self._kernel = {tid: kernel_name(pid, tid) for tid in self._start}
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """CPU-seconds per wall second of each group since construction, largest first; threads born
        during the window count from 0 (unnamed by py-spy, they fall in the native groups)."""
        end = thread_ticks(self.pid)
        wall = max(1e-6, time.monotonic() - self._t0)
        shares: dict[str, float] = collections.defaultdict(float)
        for tid, ticks in end.items():
            kernel = self._kernel.get(tid) or kernel_name(self.pid, tid)
            group = group_of(self.names.get(tid), kernel, self._process_name)
            shares[group] += (ticks - self._start.get(tid, 0)) / CLOCK_TICKS / wall
        return {group: round(cpu, 4) for group, cpu in sorted(shares.items(), key=lambda item: -item[1])}
