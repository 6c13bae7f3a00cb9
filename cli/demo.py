"""``mpu demo``: a live mix of a real WebRTC channel that anyone can watch, on this machine.

Brings the local stack up like ``mpu stack up`` (Redis, Janus, nginx-rtmp; ports from the ``MPU_*``
variables, see README),
publishes demo participants into channel ``demo:demo`` with aiortc (user1 at once, user2 three
seconds later, each with its own colour, moving bar, label and tone), and mixes the channel with
LayoutIds [1, 2]: a single pane that becomes side by side when user2 joins. The mix is pushed to
``rtmp://127.0.0.1:<port>/live/demo``. It prints where to watch, writes a PNG snapshot of what a
viewer receives, and runs until Ctrl-C or ``DURATION`` seconds, then stops the stack if it started it.
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
from stack.local_stack import StackConfig, stack_down, stack_up
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
        default=None,
        help="seconds to run, 0 = until Ctrl-C (default: env DURATION, else 0)",
    )
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
    """Bring the local stack up (``mpu stack up``), run the demo, and take down what it started."""
    if not 1 <= args.users <= 9:
        print("mpu demo: --users must be 1..9", file=sys.stderr)
        return 2
    try:
        config = StackConfig.from_env()
        duration = args.duration if args.duration is not None else float(os.environ.get("DURATION") or 0)
    except ValueError as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 2
    try:
        statuses = stack_up(config)
    except ServiceError as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 1
    started_here = all(status.note == "started" for status in statuses.values())
    try:
        return asyncio.run(_demo(args, config, duration))
    finally:
        if started_here:
            stack_down(config)
        else:
            print("demo: the stack was already running; leaving it up (`mpu stack down` stops it)")


async def _demo(args: argparse.Namespace, config: StackConfig, duration: float) -> int:
    janus_url = config.janus_url
    channel = ChannelConfig(janus_url, "demo", "demo", api_secret=config.janus_api_secret)
    url = config.rtmp_url("demo")
    snapshot = config.run_dir.resolve() / "demo-snapshot.png"
    try:
        spec = build_task_spec(layout_ids=[1, 2], media_encode_id=args.media_encode)
    except SpecError as exc:
        print(f"mpu demo: error {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    pipeline = Pipeline(spec, JanusSource(channel), sink_target(url), duration=duration or None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pipeline.stop)
    print(f"demo: channel {channel.room} on {janus_url}, mixed with LayoutIds [1, 2] into {url}")
    print(f"  watch RTMP : ffplay -fflags nobuffer {url}")
    print(f"  watch HLS  : {config.hls_url('demo')}  (any HLS player; first segment after ~4 s)")
    page = f"http://{config.host}:{config.hls_port}/publish/?app=demo&channel=demo&user=me"
    print(f"  join       : {page}  (a browser), or .venv/bin/mpu publish --app demo --channel demo --first 3")
    print(f"  operate    : .venv/bin/mpu stack status; RTMP stats at {config.stat_url}")
    print(f"  snapshot   : {snapshot} (once every demo user has joined)")
    print("  stop       : Ctrl-C" + (f" (or after {duration:g} s)" if duration else ""), flush=True)
    publishers: list[Publisher] = []
    mix = asyncio.create_task(pipeline.run())
    try:
        for index in range(args.users):
            if index:
                await asyncio.wait({mix}, timeout=JOIN_INTERVAL)
            if mix.done():
                break
            user = f"user{index + 1}"
            publisher = Publisher(
                janus_url,
                channel.room,
                user,
                synthetic_tracks(index, user, 640, 360, 30),
                api_secret=config.janus_api_secret,
            )
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
