"""Channel subscription cost: capture-to-delivery delay and CPU per subscribed user, at 360p and 720p.

Run it from the repository root (needs the Debian ``janus`` package)::

    .venv/bin/python -m bench.channel_delay [--users 2] [--seconds 15] [--json PATH]

For each size, it starts a private Janus on a free loopback port, runs ``mpu publish`` with
``--users`` synthetic users at 30 fps in a child process (their CPU is not counted), and subscribes
in this process with :class:`rtc_mpu.mixer.sources.janus.JanusSource`, exactly as a mix task does. Each
published picture carries its capture time (wall clock, ms) burned into its bottom rows
(:func:`rtc_mpu.stack.publisher.stamp_capture_time`); for each decoded frame handed to the pipeline the
delay is ``delivery time - capture time``. CPU is this process's CPU time (user + sys) over the
measured window, divided by the number of users: the cost of receiving, decrypting, depacketizing
and decoding one user's audio and video. The first 3 seconds (ICE, DTLS, first keyframe) are not
measured. It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.publisher import read_capture_time, wall_ms

#: Seconds ignored at the start (ICE, DTLS, the first keyframe).
WARMUP_SECONDS = 3.0
#: Sizes measured: name, width, height.
SIZES = (("360p", 640, 360), ("720p", 1280, 720))


@dataclass
class Result:
    """One size's numbers: delays in ms, CPU in CPU-seconds per second per user."""

    size: str
    users: int
    frames: int
    fps_per_user: float
    delay_p50_ms: float
    delay_p90_ms: float
    delay_max_ms: float
    cpu_per_user: float


class DelayRecorder:
    """A FrameReceiver that reads each picture's capture stamp when it is delivered."""

    def __init__(self) -> None:
        self.measuring = False
        self.delays: list[int] = []
        self.frames = 0

    def on_user(self, user_id: str, present: bool) -> None:
        """Ignored."""

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        """Ignored."""

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        """Record the capture-to-delivery delay of a picture (the stamp is read from its Y plane)."""
        if frame is None or not self.measuring:
            return
        now = wall_ms()
        luma = np.frombuffer(memoryview(frame.planes[0]), np.uint8).reshape(frame.height, -1)[
            :, : frame.width
        ]
        stamp = read_capture_time(np.repeat(luma[:, :, None], 3, axis=2))
        self.delays.append((now - stamp) & 0xFFFFFFFF)
        self.frames += 1

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        """Ignored (audio is still received and decoded: its CPU counts)."""


async def measure(janus: Janus, size: tuple[str, int, int], users: int, seconds: float) -> Result:
    """Publish ``users`` users of ``size`` in a child process and subscribe to them here."""
    name, width, height = size
    channel = f"bench-{name}"
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_mpu.cli.main",
            "publish",
            "--janus",
            janus.url,
            "--channel",
            channel,
            "--users",
            str(users),
            "--size",
            f"{width}x{height}",
            "--fps",
            "30",
            "--stamp-time",
            "--duration",
            str(seconds + WARMUP_SECONDS + 5),
        ],
        stdout=subprocess.DEVNULL,
    )
    recorder = DelayRecorder()
    source = JanusSource(ChannelConfig(janus.url, "demo", channel))
    try:
        await source.start(recorder)
        await asyncio.sleep(WARMUP_SECONDS)
        recorder.measuring = True
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        recorder.measuring = False
    finally:
        await source.close()
        publisher.terminate()
        publisher.wait(timeout=15)
    valid = [d for d in recorder.delays if d < 10_000]
    if not valid:
        raise RuntimeError(f"{name}: no readable capture stamps in {recorder.frames} frames")
    delays = np.array(valid)
    return Result(
        size=f"{name} {width}x{height}",
        users=users,
        frames=recorder.frames,
        fps_per_user=recorder.frames / wall / users,
        delay_p50_ms=float(np.percentile(delays, 50)),
        delay_p90_ms=float(np.percentile(delays, 90)),
        delay_max_ms=float(delays.max()),
        cpu_per_user=cpu / wall / users,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as run_dir:
        janus = Janus(Path(run_dir), http_port=free_port())
        janus.start()
        try:
            for size in SIZES:
                results.append(asyncio.run(measure(janus, size, args.users, args.seconds)))
        finally:
            janus.stop()
    print(
        f"Janus VideoRoom subscription, {args.users} users at 30 fps (VP8 + Opus), "
        f"{args.seconds:g} s measured, {os.cpu_count()} CPUs, one RTCPeerConnection per publisher"
    )
    print(f"{'size':<15}{'fps/user':>9}{'delay p50':>11}{'p90':>8}{'max':>8}{'CPU-s/s per user':>18}")
    for r in results:
        print(
            f"{r.size:<15}{r.fps_per_user:>9.1f}{r.delay_p50_ms:>9.0f}ms{r.delay_p90_ms:>6.0f}ms"
            f"{r.delay_max_ms:>6.0f}ms{r.cpu_per_user:>18.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
