"""``mpu render``: run the mixing pipeline from local files, each file standing in for one user.

Usage (other tools rely on it)::

    mpu render --layout-ids 6 --media-encode 27 --duration 3 --output out.flv a.mp4 b.mp4 c.mp4 d.mp4

A file output is rendered as fast as the CPU allows (offline, exact); an ``rtmp(s)://`` output is
pushed in real time, like a live task. ``--realtime`` / ``--offline`` override that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from layouts import Layout, SpecError, layout_from_dict
from mixer.file_source import FileSource
from mixer.pipeline import Pipeline, PipelineStats
from mixer.sinks import SinkError, sink_target
from mixer.source import SourceError
from mixer.spec import CropMode, SourceType, UserPane, build_task_spec

log = logging.getLogger("mpu.render")

#: Exit codes: 0 done, 2 invalid arguments or spec, 3 the sink failed, 4 the inputs failed.
EXIT_SPEC, EXIT_SINK, EXIT_SOURCE = 2, 3, 4


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def _color(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer R + G*256 + B*65536, got {text!r}") from None


def _user_pane(text: str) -> UserPane:
    """``PANE=USER`` or ``PANE=USER:shareScreen``."""
    pane, sep, rest = text.partition("=")
    user, _, source = rest.partition(":")
    if not sep or not pane.isdigit() or not user:
        raise argparse.ArgumentTypeError(f"expected PANE=USER[:shareScreen], got {text!r}")
    try:
        return UserPane(int(pane), user, SourceType(source or "camera"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"SourceType must be camera or shareScreen, got {source!r}"
        ) from None


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
    p.add_argument(
        "--layout-ids", type=_int_list, default=None, help="comma list of LayoutIds (default 1,2,5-11)"
    )
    p.add_argument(
        "--media-encode", type=int, default=27, help="MediaEncode id (default 27: 1280x720 30 fps)"
    )
    p.add_argument(
        "--task-profile", default=None, help="TaskProfile, e.g. 4IN_720P (default: smallest that fits)"
    )
    p.add_argument(
        "--duration", type=float, default=None, help="seconds of output (default: until inputs end)"
    )
    p.add_argument(
        "--crop-mode", type=int, default=int(CropMode.PAD), help="1 crop to fill, 2 pad to fit (default)"
    )
    p.add_argument(
        "--background-color", type=_color, default=0, help="R + G*256 + B*65536 (default 0, black)"
    )
    p.add_argument(
        "--user-pane",
        type=_user_pane,
        action="append",
        default=[],
        metavar="PANE=USER[:shareScreen]",
        help="pin a user (file name without extension) to a pane; repeatable",
    )
    p.add_argument(
        "--layout-file",
        type=Path,
        action="append",
        default=[],
        help="JSON file with a custom layout (or a list of them) in the layouts/ schema; repeatable",
    )
    p.add_argument("--loop", action="store_true", help="restart each input when it ends")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime", dest="realtime", action="store_true", default=None, help="pace by the clock"
    )
    pace.add_argument("--offline", dest="realtime", action="store_false", help="render as fast as possible")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.set_defaults(func=run)


def _custom_layouts(paths: list[Path]) -> dict[int, Layout]:
    layouts: dict[int, Layout] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(
                "InvalidLayoutID.Malformed", f"cannot read layout file {path}: {exc}", "LayoutIds"
            ) from None
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise SpecError(
                    "InvalidLayoutID.Malformed", f"{path}: a layout must be an object", "LayoutIds"
                )
            layout = layout_from_dict(item)
            layouts[layout.id] = layout
    return layouts


def run(args: argparse.Namespace) -> int:
    """Validate, then render. Returns the process exit code."""
    try:
        custom = _custom_layouts(args.layout_file)
        layout_ids = args.layout_ids or (sorted(custom) if custom else None)
        spec = build_task_spec(
            layout_ids=layout_ids,
            media_encode_id=args.media_encode,
            profile=args.task_profile,
            user_panes=args.user_pane,
            background_color=args.background_color,
            crop_mode=args.crop_mode,
            custom_layouts=custom,
        )
        target = sink_target(args.output)
    except SpecError as exc:
        print(f"mpu render: error {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_SPEC
    if args.duration is not None and args.duration <= 0:
        print("mpu render: error InvalidParameter: --duration must be positive", file=sys.stderr)
        return EXIT_SPEC
    if args.loop and args.duration is None and not target.is_network:
        print("mpu render: error InvalidParameter: --loop to a file needs --duration", file=sys.stderr)
        return EXIT_SPEC
    realtime = target.is_network if args.realtime is None else args.realtime
    source = FileSource(args.inputs, loop=args.loop)
    pipeline = Pipeline(spec, source, target, realtime=realtime, duration=args.duration, preset=args.preset)
    started = time.monotonic()
    try:
        stats = asyncio.run(_run_until_signal(pipeline))
    except SinkError as exc:
        print(f"mpu render: output failed: {exc}", file=sys.stderr)
        return EXIT_SINK
    except SourceError as exc:
        print(f"mpu render: inputs failed: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    elapsed = time.monotonic() - started
    print(
        f"rendered {stats.video_frames} video frames ({stats.dropped_video_frames} dropped), "
        f"{stats.audio_blocks} audio blocks to {target.display} in {elapsed:.2f} s",
        file=sys.stderr,
    )
    return 0


async def _run_until_signal(pipeline: Pipeline) -> PipelineStats:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pipeline.stop)
    return await pipeline.run()
