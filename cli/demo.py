"""``mpu demo``: a live mix anyone can watch, on this machine, with nothing but Debian packages.

Starts nginx-rtmp (RTMP on ``MPU_RTMP_PORT``, default 1935; HLS over HTTP on ``MPU_HLS_PORT``, default
8081), makes synthetic participants (a colour, a moving box and a tone each), mixes them live with
the media pipeline and pushes the mix to ``rtmp://127.0.0.1:<port>/live/demo``. It prints where to
watch, writes a PNG snapshot of what a viewer receives, and runs until Ctrl-C or ``DURATION`` seconds.

Until the RTC channel lands (issue #3), the participants are local files standing in for users.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import av

from mixer.file_source import FileSource
from mixer.pipeline import Pipeline
from mixer.sinks import SinkError, sink_target
from mixer.spec import build_task_spec
from stack.demo_media import COLORS, TONES, write_clip
from stack.nginx_rtmp import NginxRtmp, ServiceError

log = logging.getLogger("mpu.demo")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the ``mpu`` parser."""
    p = subparsers.add_parser("demo", help="run a local live mix to watch (nginx-rtmp + synthetic users)")
    p.add_argument("--users", type=int, default=4, help="participants, 1..9 (default 4)")
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DURATION", "0") or 0),
        help="seconds to run, 0 = until Ctrl-C (default: env DURATION)",
    )
    p.add_argument("--run-dir", type=Path, default=Path(os.environ.get("MPU_RUN_DIR", "run")))
    p.add_argument("--rtmp-port", type=int, default=int(os.environ.get("MPU_RTMP_PORT", "1935")))
    p.add_argument("--hls-port", type=int, default=int(os.environ.get("MPU_HLS_PORT", "8081")))
    p.add_argument(
        "--media-encode", type=int, default=27, help="MediaEncode id (default 27: 1280x720 30 fps)"
    )
    p.set_defaults(func=run)


def save_snapshot(url: str, path: Path, timeout: float = 15.0) -> bool:
    """Pull ``url`` as a viewer, decode one frame and write it as PNG. Returns False on failure."""
    try:
        with av.open(url, options={"analyzeduration": "2000000"}, timeout=timeout) as container:
            for frame in container.decode(video=0):
                image = frame.reformat(format="rgb24")
                encoder = av.CodecContext.create("png", "w")
                encoder.width, encoder.height, encoder.pix_fmt = image.width, image.height, "rgb24"
                data = b"".join(bytes(p) for p in encoder.encode(image))
                path.write_bytes(data)
                return True
    except (av.error.FFmpegError, OSError) as exc:
        log.warning("snapshot failed: %s", exc)
    return False


def run(args: argparse.Namespace) -> int:
    """Start the demo; returns the exit code."""
    if not 1 <= args.users <= len(COLORS):
        print(f"mpu demo: --users must be 1..{len(COLORS)}", file=sys.stderr)
        return 2
    run_dir: Path = args.run_dir.resolve()
    media_dir = run_dir / "demo"
    media_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(args.users):
        path = media_dir / f"user{i + 1}.mp4"
        if not path.exists():
            write_clip(
                path,
                color=COLORS[i],
                tone_hz=TONES[i],
                seconds=8,
                width=640,
                height=360,
                fps=30,
                moving_box=True,
            )
        clips.append(str(path))
    server = NginxRtmp(run_dir / "nginx", rtmp_port=args.rtmp_port, http_port=args.hls_port)
    try:
        server.start()
    except ServiceError as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 1
    url = server.rtmp_url("demo")
    try:
        spec = build_task_spec(layout_ids=[1, 2, 5, 6, 7, 8, 9, 10, 11], media_encode_id=args.media_encode)
        pipeline = Pipeline(
            spec,
            FileSource(clips, loop=True),
            sink_target(url),
            realtime=True,
            duration=args.duration or None,
        )
        snapshot = run_dir / "demo-snapshot.png"
        print(f"demo: mixing {args.users} users (layout by user count) into {url}")
        print(f"  watch RTMP : ffplay -fflags nobuffer {url}")
        print(
            f"  watch HLS  : {server.hls_url('demo')}  (ffplay or any HLS player; first segment after ~4 s)"
        )
        print(f"  snapshot   : {snapshot} (written a few seconds after start)")
        print("  stop       : Ctrl-C" + (f" (or after {args.duration:g} s)" if args.duration else ""))
        sys.stdout.flush()

        def snap() -> None:
            time.sleep(3)
            if save_snapshot(url, snapshot):
                print(f"demo: snapshot written to {snapshot}", flush=True)

        threading.Thread(target=snap, daemon=True).start()
        asyncio.run(_run(pipeline))
    except SinkError as exc:
        print(f"mpu demo: push failed: {exc}", file=sys.stderr)
        return 3
    finally:
        server.stop()
    print("demo: stopped cleanly")
    return 0


async def _run(pipeline: Pipeline) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pipeline.stop)
    await pipeline.run()
