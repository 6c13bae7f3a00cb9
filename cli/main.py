"""Entry point of the ``mpu`` console script."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli import demo, mix, publish, render, stack


def build_parser() -> argparse.ArgumentParser:
    """The ``mpu`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mpu", description="rtc-mpu: RTC-to-RTMP live stream mixer")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MPU_LOG_LEVEL", "WARNING"),
        help="DEBUG, INFO, WARNING (default; env MPU_LOG_LEVEL)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    render.add_parser(subparsers)
    mix.add_parser(subparsers)
    publish.add_parser(subparsers)
    demo.add_parser(subparsers)
    stack.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mpu`` with ``argv`` (default: the process arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aioice logs every ICE connectivity check at INFO; keep it to warnings unless debugging.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("aioice").setLevel(logging.WARNING)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
