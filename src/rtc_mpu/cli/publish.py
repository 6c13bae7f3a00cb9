"""``mpu publish``: demo participants publishing into a channel (a Janus VideoRoom room) with aiortc.

Usage::

    mpu publish --channel room1 --users 2 [--app demo] [--duration 60] [--screen] [--from clip.mp4]
    mpu publish --channel room1 --token TOKEN [--token TOKEN2 ...]

With Janus in token mode (the stack's default) each participant needs a publish token from
``POST /v1/apps/{app_id}/tokens``: ``--token`` (repeatable; env ``MPU_PUBLISH_TOKEN`` for one)
publishes one participant per token, named by the token's UserId, into the token's channel.

Each synthetic user (``user1``, ``user2``...) sends its own colour with a moving bar and its label,
and its own tone; ``--screen`` adds a screen share of user1 (publisher ``user1.screen``); ``--from``
publishes a media file instead of synthetic media (looped). The room is created if it does not
exist. Runs until Ctrl-C or ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from aiortc import MediaStreamTrack

from rtc_mpu.cli.mix import add_channel_arguments, channel_config
from rtc_mpu.mixer.sources.janus_http import JanusError
from rtc_mpu.spec.streams import SCREEN_SHARE_SUFFIX
from rtc_mpu.spec.tokens import TokenError, read_claims
from rtc_mpu.stack.publisher import Publisher, SyntheticVideoTrack, file_tracks, synthetic_tracks


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``publish`` on the ``mpu`` parser."""
    p = subparsers.add_parser(
        "publish",
        help="publish demo participants into a channel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_channel_arguments(p)
    p.add_argument(
        "--token",
        dest="tokens",
        action="append",
        default=[os.environ["MPU_PUBLISH_TOKEN"]] if os.environ.get("MPU_PUBLISH_TOKEN") else [],
        help="a publish token (repeatable): one participant per token, named by its UserId",
    )
    p.add_argument("--users", type=int, default=1, help="number of participants (default 1)")
    p.add_argument("--first", type=int, default=1, help="number of the first user (default 1: user1)")
    p.add_argument("--duration", type=float, default=None, help="seconds to publish (default: until Ctrl-C)")
    p.add_argument("--screen", action="store_true", help="also publish a screen share of the first user")
    p.add_argument("--from", dest="from_file", default=None, help="publish this media file instead")
    p.add_argument("--size", default="640x360", help="picture size of synthetic users (default 640x360)")
    p.add_argument("--fps", type=int, default=15, help="frame rate of synthetic users (default 15)")
    p.add_argument(
        "--stamp-time",
        action="store_true",
        help="burn the capture time into the pictures' bottom rows (for bench/channel_delay.py)",
    )
    p.set_defaults(func=run)


def _tracks(
    args: argparse.Namespace, index: int, user: str, width: int, height: int
) -> list[MediaStreamTrack]:
    if args.from_file:
        return file_tracks(args.from_file)
    return synthetic_tracks(index, user, width, height, args.fps, stamp_time=args.stamp_time)


def run(args: argparse.Namespace) -> int:
    """Publish until stopped. Returns the exit code (1 when Janus refuses or is unreachable)."""
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"mpu publish: --size must be WIDTHxHEIGHT, got {args.size!r}", file=sys.stderr)
        return 2
    if args.users < 1:
        print("mpu publish: --users must be at least 1", file=sys.stderr)
        return 2
    if args.screen and args.tokens:
        print(
            "mpu publish: --screen is not available with --token (a screen share needs its own token)",
            file=sys.stderr,
        )
        return 2
    config = channel_config(args)
    publishers = []
    for index, token in enumerate(args.tokens):
        try:
            claims = read_claims(token)
        except TokenError as exc:
            print(f"mpu publish: --token: {exc.message}", file=sys.stderr)
            return 2
        publishers.append(
            Publisher(
                config.janus_url,
                claims.room,
                claims.user_id,
                _tracks(args, index, claims.user_id, width, height),
                api_secret=config.api_secret,
                token=token,
            )
        )
    for n in range(args.first, args.first + args.users) if not args.tokens else ():
        user = f"user{n}"
        publishers.append(
            Publisher(
                config.janus_url,
                config.room,
                user,
                _tracks(args, n - 1, user, width, height),
                api_secret=config.api_secret,
                pin=config.room_pin,
            )
        )
    if args.screen:
        user = f"user{args.first}{SCREEN_SHARE_SUFFIX}"
        screen = SyntheticVideoTrack(f"user{args.first} screen", (90, 90, 90), width, height, args.fps)
        publishers.append(
            Publisher(
                config.janus_url,
                config.room,
                user,
                [screen],
                api_secret=config.api_secret,
                pin=config.room_pin,
            )
        )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            for publisher in publishers:
                await publisher.start()
                print(f"mpu publish: {publisher.user_id} publishing into {config.room}", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
            return 0
        except JanusError as exc:
            print(f"mpu publish: {exc}", file=sys.stderr)
            return 1
        finally:
            for publisher in publishers:
                await publisher.stop()

    return asyncio.run(main())
