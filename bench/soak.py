"""Soak test of one live mix (issue #7; not run in CI): memory and file descriptors over a long show.

Run it from the repository root (needs the Debian ``janus``, ``nginx`` and ``libnginx-mod-rtmp``)::

    .venv/bin/python -m bench.soak [--minutes 30] [--sample 10]

It starts a private Janus and nginx-rtmp on free loopback ports, publishes 2 users for the whole run
and a third user that joins for 20 s of every minute (so subscriptions, peer connections and layouts
churn), and runs ``mpu mix`` (the same pipeline a task runs: aiortc subscriber, compositor, audio
mixer, x264 + AAC, FLV over RTMP) at MediaEncode 1 (640x360, 15 fps). Every ``--sample`` seconds
it reads the mix process's RSS (``/proc/<pid>/status`` VmRSS) and open file descriptors
(``/proc/<pid>/fd``). It reports the values after a 2-minute warm-up and at the end, and their
growth (targets: RSS < 5 %, no descriptor growth). It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port

#: Seconds of output before the baseline sample (imports, JIT-free but caches fill up).
WARM_UP = 120.0


def publisher(janus: Janus, users: int, first: int, seconds: float) -> subprocess.Popen[bytes]:
    """``mpu publish`` of ``users`` synthetic users numbered from ``first``, for ``seconds``."""
    command = [
        sys.executable, "-m", "rtc_mpu.cli.main", "publish", "--janus", janus.url, "--channel", "soak",
        "--users", str(users), "--first", str(first), "--size", "320x180", "--duration", str(seconds),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the samples and the growth."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as run_dir:
        janus = Janus(Path(run_dir) / "janus", http_port=free_port())
        nginx = NginxRtmp(Path(run_dir) / "nginx", rtmp_port=free_port(), http_port=free_port())
        janus.start()
        nginx.start()
        steady = publisher(janus, 2, 1, seconds + 60)
        guest: subprocess.Popen[bytes] | None = None
        mix: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(2.0)
            mix = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rtc_mpu.cli.main",
                    "mix",
                    "--janus",
                    janus.url,
                    "--channel",
                    "soak",
                    "--layout-ids",
                    "1,2,5",
                    "--media-encode",
                    "1",
                    "--duration",
                    str(seconds),
                    "--output",
                    nginx.rtmp_url("soak"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started = time.monotonic()
            samples: list[tuple[float, int, int]] = []
            next_guest = started + 30.0
            while mix.poll() is None:
                now = time.monotonic()
                if now >= next_guest:
                    guest = publisher(janus, 1, 3, 20)
                    next_guest += 60.0
                try:
                    sample = (now - started, rss_kib(mix.pid), fd_count(mix.pid))
                except (FileNotFoundError, ProcessLookupError):
                    break
                samples.append(sample)
                print(f"  t={sample[0]:7.0f} s  RSS {sample[1] / 1024:7.1f} MiB  fds {sample[2]}", flush=True)
                time.sleep(args.sample)
            mix.wait(timeout=60)
        finally:
            for process in (guest, steady, mix):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=15)
            nginx.stop()
            janus.stop()
    warm = [s for s in samples if s[0] >= min(WARM_UP, seconds / 4)]
    if len(warm) < 2:
        print("too few samples after the warm-up; run longer")
        return 1
    first, last = warm[0], warm[-1]
    growth = 100.0 * (last[1] - first[1]) / first[1]
    print(
        f"soak of {args.minutes:g} min (mix exit {mix.returncode if mix else '?'}): "
        f"RSS {first[1] / 1024:.1f} -> "
        f"{last[1] / 1024:.1f} MiB ({growth:+.1f} %, target < 5 %), file descriptors {first[2]} -> {last[2]} "
        f"(target: no growth), max {max(s[2] for s in warm)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
