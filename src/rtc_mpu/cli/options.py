"""Options shared by the ``mpu`` commands that mix: the task spec's parameters, and running a pipeline."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from pathlib import Path

from rtc_mpu.layouts import Layout, SpecError, layout_from_dict
from rtc_mpu.mixer.output.sinks import SinkTarget, sink_target
from rtc_mpu.mixer.output.snapshot import DEFAULT_INTERVAL_SECONDS, LatestJpegFile, SnapshotTaker
from rtc_mpu.mixer.pipeline import Pipeline, PipelineStats
from rtc_mpu.spec.streams import SourceType
from rtc_mpu.spec.task import CropMode, TaskSpec, UserPane, build_task_spec


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


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--layout-ids``, ``--media-encode``, ``--task-profile``, ``--crop-mode``,
    ``--background-color``, ``--user-pane``, ``--layout-file`` and ``--preset`` to ``p``."""
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
        help="pin a user to a pane; repeatable",
    )
    p.add_argument(
        "--layout-file",
        type=Path,
        action="append",
        default=[],
        help="JSON file with a custom layout (or a list of them) in the layouts/ schema; repeatable",
    )
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_snapshot_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--snapshot-dir`` and ``--snapshot-interval`` to ``p`` (see :func:`snapshot_taker`)."""
    p.add_argument(
        "--snapshot-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep a JPEG of the composite (at most 640 px wide) in DIR/latest.jpg, replaced atomically",
    )
    p.add_argument(
        "--snapshot-interval",
        type=_positive_seconds,
        default=DEFAULT_INTERVAL_SECONDS,
        metavar="S",
        help=f"seconds of media time between snapshots (default {DEFAULT_INTERVAL_SECONDS:g})",
    )


def snapshot_taker(args: argparse.Namespace, spec: TaskSpec) -> SnapshotTaker | None:
    """The snapshot taker ``--snapshot-dir`` asks for, writing ``DIR/latest.jpg`` (the directory is
    created if missing), or None when not asked. Pass its ``offer`` to the pipeline's
    ``frame_listeners`` and close it after the pipeline has run.

    Raises:
        ValueError: the task has no video, or the directory cannot be made (the message says which).
    """
    directory: Path | None = args.snapshot_dir
    if directory is None:
        return None
    if not spec.has_video:
        raise ValueError("--snapshot-dir needs a video output (MediaEncode 0 is audio only)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--snapshot-dir {directory}: {exc.strerror or exc}") from None
    return SnapshotTaker(LatestJpegFile(directory), interval_seconds=args.snapshot_interval)


def _custom_layouts(paths: list[Path]) -> dict[int, Layout]:
    layouts: dict[int, Layout] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(
                "InvalidLayoutID.Malformed", f"cannot read layout file {path}: {exc}", ("layout_ids",)
            ) from None
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise SpecError(
                    "InvalidLayoutID.Malformed", f"{path}: a layout must be an object", ("layout_ids",)
                )
            layout = layout_from_dict(item)
            layouts[layout.id] = layout
    return layouts


def spec_from_args(args: argparse.Namespace) -> TaskSpec:
    """Build the task spec from the options of :func:`add_spec_arguments`.

    Raises:
        SpecError: any parameter is invalid (the code says which).
    """
    custom = _custom_layouts(args.layout_file)
    return build_task_spec(
        layout_ids=args.layout_ids or (sorted(custom) if custom else None),
        media_encode_id=args.media_encode,
        profile=args.task_profile,
        user_panes=args.user_pane,
        background_color=args.background_color,
        crop_mode=args.crop_mode,
        custom_layouts=custom,
    )


def spec_and_target(args: argparse.Namespace, command: str) -> tuple[TaskSpec, SinkTarget] | None:
    """The task spec (:func:`spec_from_args`) and the output (``--output``) of ``mpu <command>``; None,
    with the error printed to stderr, when either is invalid."""
    try:
        return spec_from_args(args), sink_target(args.output)
    except SpecError as exc:
        print(f"mpu {command}: error {exc.code}: {exc.message}", file=sys.stderr)
        return None


def run_pipeline(pipeline: Pipeline) -> PipelineStats:
    """Run ``pipeline`` in a new event loop until done, SIGINT or SIGTERM (which stop it cleanly).

    Raises:
        SinkError, SourceError: as :meth:`Pipeline.run`.
    """

    async def main() -> PipelineStats:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pipeline.stop)
        return await pipeline.run()

    return asyncio.run(main())
