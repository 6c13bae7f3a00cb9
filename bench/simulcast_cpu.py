"""What receiving a small simulcast substream saves (issue 18): CPU seconds per second of a process
whose channel source subscribes to one Chromium publishing a 1280x720 fake camera in three simulcast
encodings, the stream drawn in a 320x180 pane, with the substream choice (the smallest substream) and
without it (a 1280x720 pane: the largest, Janus' default). Phases alternate so the machine's load
drifts into both; each is measured after the switch settled.

Run: ``.venv/bin/python -m bench.simulcast_cpu [seconds per phase] [rounds] [camera.y4m]`` (starts its
own Janus). Chromium's fake camera (a small animation on a flat background) is cheap to decode; a
``.y4m`` file (1280x720) makes the camera show it instead.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.ports import free_port
from tests.test_browser_simulcast import Sizes, simulcast_browser
from tests.test_janus_source import wait_for

USER = "chromium-simulcast"
#: Seconds after a pane change before a phase is measured (Janus' switch at the next keyframe).
SETTLE_SECONDS = 6.0


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads: aiortc's decoders too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(janus_url: str, phase_seconds: float, rounds: int, flags: tuple[str, ...]) -> None:
    sizes = Sizes(USER)
    source = JanusSource(ChannelConfig(janus_url, "app1", "simulcast-cpu"))
    await source.start(sizes)
    results: dict[str, list[float]] = {"choice (320x180 pane)": [], "top layer (1280x720)": []}
    try:
        async with simulcast_browser(janus_url, "app1:simulcast-cpu", USER, flags):
            await wait_for(lambda: len(sizes.frames) > 0, 30)
            for _ in range(rounds):
                for name, pane in (
                    ("choice (320x180 pane)", (320, 180)),
                    ("top layer (1280x720)", (1280, 720)),
                ):
                    source.draw_sizes({StreamKey(USER): pane})
                    await asyncio.sleep(SETTLE_SECONDS)
                    frames, cpu, wall = len(sizes.frames), cpu_seconds(), time.monotonic()
                    await asyncio.sleep(phase_seconds)
                    cpu, wall = cpu_seconds() - cpu, time.monotonic() - wall
                    seen = sorted({(w, h) for _, w, h in sizes.frames[frames:]})
                    rate = cpu / wall
                    results[name].append(rate)
                    print(
                        f"{name}: {rate:.3f} CPU-s/s over {wall:.1f} s, "
                        f"{len(sizes.frames) - frames} pictures {seen}, "
                        f"load average {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    finally:
        await source.close()
    for name, rates in results.items():
        runs = ", ".join(f"{r:.3f}" for r in rates)
        print(f"{name}: mean {sum(rates) / len(rates):.3f} CPU-s/s, runs {runs}")


def main() -> None:
    phase_seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    flags = (f"--use-file-for-fake-video-capture={sys.argv[3]}",) if len(sys.argv) > 3 else ()
    with tempfile.TemporaryDirectory() as run_dir:
        janus = Janus(Path(run_dir), http_port=free_port())
        janus.start()
        try:
            asyncio.run(measure(janus.url, phase_seconds, rounds, flags))
        finally:
            janus.stop()


if __name__ == "__main__":
    main()
