"""``mpu mix``: mix a live channel (a Janus VideoRoom room) into an RTMP push or a file, by hand.

Usage::

    mpu mix --app demo --channel room1 --layout-ids 1,2 --output rtmp://127.0.0.1:1935/live/mix

The same pipeline a mix task runs, without the API: for operators and demos. Stops on Ctrl-C
or after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import os
import sys

from rtc_mpu.cli.options import (
    add_snapshot_arguments,
    add_spec_arguments,
    run_pipeline,
    snapshot_taker,
    spec_and_target,
)
from rtc_mpu.mixer.output.sinks import SinkError
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.workers.settings import token_secret, token_signature

#: Janus' HTTP API unless ``--janus`` or ``MPU_JANUS_URL`` says otherwise.
DEFAULT_JANUS_URL = "http://127.0.0.1:8088/janus"


def add_channel_arguments(p: argparse.ArgumentParser) -> None:
    """``--app``, ``--channel``, ``--janus`` and the room PIN, shared by ``mix`` and ``publish``."""
    p.add_argument("--app", default="demo", help="AppId (default demo)")
    p.add_argument("--channel", required=True, help="ChannelId; the room is '<AppId>:<ChannelId>'")
    p.add_argument(
        "--janus",
        default=os.environ.get("MPU_JANUS_URL", DEFAULT_JANUS_URL),
        help="Janus HTTP API URL (env MPU_JANUS_URL, default http://127.0.0.1:8088/janus)",
    )
    p.add_argument(
        "--pin", default=os.environ.get("MPU_ROOM_PIN"), help="room PIN, if any (env MPU_ROOM_PIN)"
    )


def channel_config(args: argparse.Namespace) -> ChannelConfig:
    """The channel named by :func:`add_channel_arguments`'s options (API secret from
    MPU_JANUS_API_SECRET; with MPU_TOKEN_SECRET set, Janus' signed-token mode: the mixer signs its own
    service tokens, :mod:`rtc_mpu.spec.tokens`).

    Raises:
        ValueError: MPU_TOKEN_SECRET or MPU_JANUS_TOKEN_SIGNATURE is malformed.
    """
    return ChannelConfig(
        janus_url=args.janus,
        app_id=args.app,
        channel_id=args.channel,
        api_secret=os.environ.get("MPU_JANUS_API_SECRET") or None,
        room_pin=args.pin,
        token_secret=token_secret(),
        token_signature=token_signature(),
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mix`` on the ``mpu`` parser."""
    p = subparsers.add_parser(
        "mix",
        help="mix a live channel into an RTMP push or a file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_channel_arguments(p)
    p.add_argument("--output", "-o", required=True, help="rtmp(s):// URL or a file (.flv .mp4 .mkv .ts .mov)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    add_spec_arguments(p)
    add_snapshot_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate, then mix until stopped. Returns the exit code (2 bad spec, 3 output failed)."""
    valid = spec_and_target(args, "mix")
    if valid is None:
        return 2
    spec, target = valid
    try:
        snapshots = snapshot_taker(args, spec)
    except ValueError as exc:
        print(f"mpu mix: error InvalidParameter: {exc}", file=sys.stderr)
        return 2
    source = JanusSource(channel_config(args))
    pipeline = Pipeline(
        spec,
        source,
        target,
        realtime=True,
        duration=args.duration,
        preset=args.preset,
        frame_listeners=[snapshots.offer] if snapshots is not None else (),
    )
    print(f"mpu mix: mixing {source.config.room} from {args.janus} into {target.display}", file=sys.stderr)
    try:
        stats = run_pipeline(pipeline)
    except SinkError as exc:
        print(f"mpu mix: output failed: {exc}", file=sys.stderr)
        return 3
    finally:
        if snapshots is not None:
            snapshots.close()
    print(
        f"mpu mix: {stats.video_frames} video frames ({stats.dropped_video_frames} dropped), "
        f"{stats.audio_blocks} audio blocks; users at the end: {', '.join(stats.users) or 'none'}",
        file=sys.stderr,
    )
    return 0
