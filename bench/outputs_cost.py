"""Issue 13: what an extra output costs when the encode is shared, and the gap it causes on the others.

Run it from the repository root (needs the Debian nginx-rtmp packages and the ffmpeg CLI)::

    .venv/bin/python -m bench.outputs_cost [--seconds 10] [--json PATH]

1. CPU: an offline render (as fast as it goes) of a 1280x720 30 fps mix (MediaEncode 27, layout 1, one
   moving-box clip) to 1, 2 and 4 RTMP outputs on a local nginx-rtmp, and to 1 RTMP output plus an MP4
   recording. CPU is this process's user + sys time over the render, per second of output. Beside each,
   the ffmpeg CLI encoding the same clip once (libx264 veryfast zerolatency CBR, AAC) into ``-f tee`` of
   the same outputs (its CPU from ``getrusage(RUSAGE_CHILDREN)``).
2. Gap: a real-time mix to output 1 watched by a viewer (wall-clock time of each decoded frame); output
   2 is added after 3 s and removed 3 s later. Printed: the largest inter-frame gap the viewer saw in the
   second around each event, and over the whole run.

It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from rtc_mpu.mixer.output.muxers import file_output, rtmp_output
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.files import FileSource
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.demo_media import write_clip
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port

MEDIA_ENCODE_ID = 27  # 1280x720, 30 fps, 2048 kbit/s video, 128 kbit/s audio


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def render(clip: Path, server: NginxRtmp, rtmp: int, recordings: int, seconds: float, folder: Path) -> float:
    """CPU seconds per output second of an offline render to ``rtmp`` RTMP outputs and ``recordings`` MP4s."""
    spec = build_task_spec(layout_ids=[1], media_encode_id=MEDIA_ENCODE_ID)
    pipeline = Pipeline(
        spec,
        FileSource([str(clip)], loop=True),
        sink_target(server.rtmp_url("s0")),
        realtime=False,
        duration=seconds,
    )

    async def run() -> None:
        for i in range(1, rtmp):
            await pipeline.add_output(f"r{i}", rtmp_output(server.rtmp_url(f"s{i}")))
        for i in range(recordings):
            await pipeline.add_output(f"rec{i}", file_output(str(folder / f"rec{i}.mp4")))
        await pipeline.run()

    before = cpu()
    asyncio.run(run())
    return (cpu() - before) / seconds


def ffmpeg_tee(
    clip: Path, server: NginxRtmp, rtmp: int, recordings: int, seconds: float, folder: Path
) -> float:
    """The same with the ffmpeg CLI: one encode, ``-f tee`` to the same outputs."""
    targets = [f"[f=flv:onfail=ignore]{server.rtmp_url(f'f{i}')}" for i in range(rtmp)]
    targets += [
        f"[f=mp4:movflags=frag_keyframe+empty_moov]{folder / f'ff{i}.mp4'}" for i in range(recordings)
    ]
    rate = "2048k"
    command = [
        shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip),
        "-t", str(seconds), "-vf", "scale=1280:720", "-r", "30", "-map", "0:v", "-map", "0:a",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", rate, "-maxrate", rate,
        "-bufsize", rate, "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-bf", "0",
        "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-flags", "+global_header",
        "-f", "tee", "|".join(targets),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, timeout=seconds * 20 + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / seconds


def gaps(clip: Path, server: NginxRtmp) -> dict[str, float]:
    """Largest inter-frame gaps (seconds) a viewer of output 1 sees around adding/removing output 2."""
    spec = build_task_spec(layout_ids=[1], media_encode_id=MEDIA_ENCODE_ID)
    pipeline = Pipeline(
        spec,
        FileSource([str(clip)], loop=True),
        sink_target(server.rtmp_url("g0")),
        realtime=True,
        duration=14,
    )
    times: list[float] = []
    events: dict[str, float] = {}

    def viewer() -> None:
        with av.open(server.rtmp_url("g0"), options={"analyzeduration": "3000000"}, timeout=(10.0, 3.0)) as c:
            try:
                for packet in c.demux(video=0):
                    for _ in packet.decode():
                        times.append(time.monotonic())
            except av.error.FFmpegError:
                return

    async def run() -> None:
        mix = asyncio.create_task(pipeline.run())
        await asyncio.sleep(1.0)
        threading.Thread(target=viewer, daemon=True).start()
        await asyncio.sleep(4.0)
        events["add"] = time.monotonic()
        await pipeline.add_output("g1", rtmp_output(server.rtmp_url("g1")))
        await asyncio.sleep(3.0)
        events["remove"] = time.monotonic()
        await pipeline.remove_output("g1")
        await mix

    asyncio.run(run())
    time.sleep(3.5)
    t = np.array(times)
    d = np.diff(t)

    def around(at: float) -> float:
        mask = (t[1:] >= at - 0.2) & (t[1:] <= at + 1.5)
        return float(d[mask].max()) if mask.any() else float("nan")

    return {
        "frames_seen": float(len(t)),
        "max_gap_add_s": around(events["add"]),
        "max_gap_remove_s": around(events["remove"]),
        "max_gap_whole_run_s": float(d[t[1:] > t[0] + 1.0].max()),
        "typical_gap_s": float(np.median(d)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = write_clip(
            folder / "clip.mp4", color=(200, 60, 60), tone_hz=440, seconds=10, width=640, height=360, fps=30,
            moving_box=True,
        )  # fmt: skip
        server = NginxRtmp(folder / "nginx", rtmp_port=free_port(), http_port=free_port())
        server.start()
        try:
            print(f"CPU seconds per output second, 1280x720 30 fps, {args.seconds:g} s offline render")
            print(f"{'outputs':<18}{'rtc-mpu':>10}{'ffmpeg tee':>12}")
            for name, rtmp, rec in [
                ("1 rtmp", 1, 0),
                ("2 rtmp", 2, 0),
                ("4 rtmp", 4, 0),
                ("1 rtmp + 1 mp4", 1, 1),
            ]:
                ours = render(clip, server, rtmp, rec, args.seconds, folder)
                theirs = ffmpeg_tee(clip, server, rtmp, rec, args.seconds, folder)
                results[name] = {"rtc_mpu": round(ours, 3), "ffmpeg_tee": round(theirs, 3)}
                print(f"{name:<18}{ours:>10.3f}{theirs:>12.3f}")
            gap = gaps(clip, server)
            results["gaps"] = gap
            print(
                "viewer of output 1 (real time, 30 fps): " + ", ".join(f"{k}={v:.3f}" for k, v in gap.items())
            )
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
