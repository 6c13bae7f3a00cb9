"""``mpu demo``: a live mix of a real WebRTC channel that anyone can watch, on this machine.

Starts Janus (VideoRoom, HTTP API on ``MPU_JANUS_PORT``, default 8088) and nginx-rtmp (RTMP on
``MPU_RTMP_PORT``, default 1935; HLS on ``MPU_HLS_PORT``, default 8081) from Debian's packages,
publishes demo participants into channel ``demo:demo`` with aiortc (user1 at once, user2 three
seconds later, each with its own colour, moving bar, label and tone), and mixes the channel with
LayoutIds [1, 2]: a single pane that becomes side by side when user2 joins. The mix is pushed to
``rtmp://127.0.0.1:<port>/live/demo``. It prints where to watch, writes a PNG snapshot of what a
viewer receives, and runs until Ctrl-C or ``DURATION`` seconds, then stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import av

from layouts import SpecError
from mixer.janus_api import JanusError
from mixer.janus_source import ChannelConfig, JanusSource
from mixer.pipeline import Pipeline
from mixer.sinks import SinkError, sink_target
from mixer.spec import build_task_spec
from stack.janus import Janus
from stack.nginx_rtmp import NginxRtmp
from stack.process import ServiceError
from stack.publisher import Publisher, synthetic_tracks

log = logging.getLogger("mpu.demo")

#: Seconds between two demo users joining (so the layout switch is visible).
JOIN_INTERVAL = 3.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the ``mpu`` parser."""
    p = subparsers.add_parser("demo", help="run a local live mix of a WebRTC channel to watch")
    p.add_argument("--users", type=int, default=2, help="participants, 1..9 (default 2)")
    p.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DURATION", "0") or 0),
        help="seconds to run, 0 = until Ctrl-C (default: env DURATION)",
    )
    p.add_argument("--run-dir", type=Path, default=Path(os.environ.get("MPU_RUN_DIR", "run")))
    p.add_argument("--janus-port", type=int, default=int(os.environ.get("MPU_JANUS_PORT", "8088")))
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
                path.write_bytes(b"".join(bytes(p) for p in encoder.encode(image)))
                return True
    except (av.error.FFmpegError, OSError) as exc:
        log.warning("snapshot failed: %s", exc)
    return False


def run(args: argparse.Namespace) -> int:
    """Start the demo; returns the exit code."""
    if not 1 <= args.users <= 9:
        print("mpu demo: --users must be 1..9", file=sys.stderr)
        return 2
    run_dir: Path = args.run_dir.resolve()
    janus = Janus(run_dir / "janus", http_port=args.janus_port)
    nginx = NginxRtmp(run_dir / "nginx", rtmp_port=args.rtmp_port, http_port=args.hls_port)
    try:
        janus.start()
        nginx.start()
        return asyncio.run(_demo(args, janus, nginx, run_dir))
    except ServiceError as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 1
    finally:
        nginx.stop()
        janus.stop()


async def _demo(args: argparse.Namespace, janus: Janus, nginx: NginxRtmp, run_dir: Path) -> int:
    channel = ChannelConfig(janus.url, "demo", "demo")
    url = nginx.rtmp_url("demo")
    snapshot = run_dir / "demo-snapshot.png"
    try:
        spec = build_task_spec(layout_ids=[1, 2], media_encode_id=args.media_encode)
    except SpecError as exc:
        print(f"mpu demo: error {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    pipeline = Pipeline(spec, JanusSource(channel), sink_target(url), duration=args.duration or None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pipeline.stop)
    print(f"demo: channel {channel.room} on {janus.url}, mixed with LayoutIds [1, 2] into {url}")
    print(f"  watch RTMP : ffplay -fflags nobuffer {url}")
    print(f"  watch HLS  : {nginx.hls_url('demo')}  (any HLS player; first segment after ~4 s)")
    print(f"  join       : mpu publish --janus {janus.url} --app demo --channel demo --users 1 --first 9")
    print(f"  snapshot   : {snapshot} (once every demo user has joined)")
    print("  stop       : Ctrl-C" + (f" (or after {args.duration:g} s)" if args.duration else ""), flush=True)
    publishers: list[Publisher] = []
    mix = asyncio.create_task(pipeline.run())
    try:
        for index in range(args.users):
            if index:
                await asyncio.wait({mix}, timeout=JOIN_INTERVAL)
            if mix.done():
                break
            user = f"user{index + 1}"
            publisher = Publisher(janus.url, channel.room, user, synthetic_tracks(index, user, 640, 360, 30))
            await publisher.start()
            publishers.append(publisher)
            print(f"demo: {user} joined", flush=True)
        if not mix.done():
            await asyncio.wait({mix}, timeout=2.0)
            if not mix.done() and await asyncio.to_thread(save_snapshot, url, snapshot):
                print(f"demo: snapshot written to {snapshot}", flush=True)
        await mix
    except JanusError as exc:
        print(f"mpu demo: Janus: {exc}", file=sys.stderr)
        pipeline.stop()
        return 1
    except SinkError as exc:
        print(f"mpu demo: push failed: {exc}", file=sys.stderr)
        return 3
    finally:
        if not mix.done():
            pipeline.stop()
            with contextlib.suppress(Exception):
                await mix
        for publisher in publishers:
            await publisher.stop()
    print("demo: stopped cleanly")
    return 0
