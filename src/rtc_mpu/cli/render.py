"""``mpu render``: run the mixing pipeline from local files, each file standing in for one user.

Usage (other tools rely on it)::

    mpu render --layout-ids 6 --media-encode 27 --duration 3 --output out.flv a.mp4 b.mp4 c.mp4 d.mp4

A file output is rendered as fast as the CPU allows (offline, exact); an ``rtmp(s)://`` output is
pushed in real time, like a live task. ``--realtime`` / ``--offline`` override that.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from rtc_mpu.cli.options import (
    add_snapshot_arguments,
    add_spec_arguments,
    run_pipeline,
    snapshot_taker,
    spec_and_target,
)
from rtc_mpu.mixer.output.sinks import SinkError
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.base import SourceError
from rtc_mpu.mixer.sources.files import FileSource

log = logging.getLogger("mpu.render")

#: Exit codes: 0 done, 2 invalid arguments or spec, 3 the sink failed, 4 the inputs failed.
EXIT_SPEC, EXIT_SINK, EXIT_SOURCE = 2, 3, 4


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``render`` on the ``mpu`` parser."""
    p = subparsers.add_parser(
        "render",
        help="mix local files (one per user, in join order) into a file or an RTMP push",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="media files, one per user, in join order")
    p.add_argument(
        "--output", "-o", required=True, help="output file (.flv .mp4 .mkv .ts .mov) or rtmp(s):// URL"
    )
    add_spec_arguments(p)
    p.add_argument(
        "--duration", type=float, default=None, help="seconds of output (default: until inputs end)"
    )
    p.add_argument("--loop", action="store_true", help="restart each input when it ends")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime", dest="realtime", action="store_true", default=None, help="pace by the clock"
    )
    pace.add_argument("--offline", dest="realtime", action="store_false", help="render as fast as possible")
    add_snapshot_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate, then render. Returns the process exit code."""
    valid = spec_and_target(args, "render")
    if valid is None:
        return EXIT_SPEC
    spec, target = valid
    if args.duration is not None and args.duration <= 0:
        print("mpu render: error InvalidParameter: --duration must be positive", file=sys.stderr)
        return EXIT_SPEC
    if args.loop and args.duration is None and not target.is_network:
        print("mpu render: error InvalidParameter: --loop to a file needs --duration", file=sys.stderr)
        return EXIT_SPEC
    try:
        snapshots = snapshot_taker(args, spec)
    except ValueError as exc:
        print(f"mpu render: error InvalidParameter: {exc}", file=sys.stderr)
        return EXIT_SPEC
    realtime = target.is_network if args.realtime is None else args.realtime
    source = FileSource(args.inputs, loop=args.loop)
    pipeline = Pipeline(
        spec,
        source,
        target,
        realtime=realtime,
        duration=args.duration,
        preset=args.preset,
        frame_listeners=[snapshots.offer] if snapshots is not None else (),
    )
    started = time.monotonic()
    try:
        stats = run_pipeline(pipeline)
    except SinkError as exc:
        print(f"mpu render: output failed: {exc}", file=sys.stderr)
        return EXIT_SINK
    except SourceError as exc:
        print(f"mpu render: inputs failed: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    finally:
        if snapshots is not None:
            snapshots.close()
    elapsed = time.monotonic() - started
    print(
        f"rendered {stats.video_frames} video frames ({stats.dropped_video_frames} dropped), "
        f"{stats.audio_blocks} audio blocks to {target.display} in {elapsed:.2f} s",
        file=sys.stderr,
    )
    if snapshots is not None:
        print(
            f"{snapshots.stats.taken} snapshots ({snapshots.stats.skipped_busy} skipped, "
            f"{snapshots.stats.failed + snapshots.stats.callback_errors} failed), the last in "
            f"{args.snapshot_dir / 'latest.jpg'}",
            file=sys.stderr,
        )
    return 0
