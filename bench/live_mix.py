"""CPU of one live mix: 2 users published over WebRTC, mixed at 1280x720 30 fps into nginx-rtmp.

Run it from the repository root (needs the Debian ``janus``, ``nginx`` and ``libnginx-mod-rtmp``)::

    .venv/bin/python -m bench.live_mix [--seconds 20] [--users 2] [--media-encode 27]

It starts a private Janus and nginx-rtmp on free loopback ports, publishes ``--users`` synthetic
users (640x360, 30 fps, VP8 + Opus) with ``mpu publish`` in one child process, and runs the same
mix a task runs (``mpu mix``: subscribe with aiortc, composite, mix audio, x264 veryfast CBR + AAC,
push FLV) in another, for ``--seconds``. It reports the mix process's CPU (user + sys, from
``os.wait4``) per second of wall time, its peak RSS and the frames it pushed. It prints numbers and
asserts nothing.
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


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--media-encode", type=int, default=27)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as run_dir:
        janus = Janus(Path(run_dir) / "janus", http_port=free_port())
        nginx = NginxRtmp(Path(run_dir) / "nginx", rtmp_port=free_port(), http_port=free_port())
        janus.start()
        nginx.start()
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtc_mpu.cli.main",
                "publish",
                "--janus",
                janus.url,
                "--channel",
                "bench",
                "--users",
                str(args.users),
                "--size",
                "640x360",
                "--fps",
                "30",
                "--duration",
                str(args.seconds + 20),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(2.0)
            started = time.monotonic()
            mix = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rtc_mpu.cli.main",
                    "mix",
                    "--janus",
                    janus.url,
                    "--channel",
                    "bench",
                    "--layout-ids",
                    "1,2,5,6",
                    "--media-encode",
                    str(args.media_encode),
                    "--duration",
                    str(args.seconds),
                    "--output",
                    nginx.rtmp_url("bench"),
                ],
                stderr=subprocess.PIPE,
            )
            _, status, usage = os.wait4(mix.pid, 0)
            wall = time.monotonic() - started
            report = mix.stderr.read().decode(errors="replace").strip().splitlines() if mix.stderr else []
            mix.returncode = os.waitstatus_to_exitcode(status)
        finally:
            publisher.terminate()
            publisher.wait(timeout=15)
            nginx.stop()
            janus.stop()
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"live mix of {args.users} WebRTC users (640x360 30 fps) at MediaEncode {args.media_encode}, "
        f"{args.seconds:g} s, {os.cpu_count()} CPUs (the whole process, start-up included)"
    )
    per_second = cpu / args.seconds
    rss = usage.ru_maxrss / 1024
    print(f"  CPU: {cpu:.2f} CPU-s for {args.seconds:g} s of output = {per_second:.3f} CPU-s per output s")
    print(f"  wall {wall:.1f} s (start-up, subscriptions and sink included); peak RSS {rss:.0f} MiB")
    print(f"  mpu mix: {report[-1] if report else '(no report)'} (exit {mix.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
