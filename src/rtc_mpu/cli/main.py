"""Entry point of the ``mpu`` console script.

Each subcommand lives in its own module, imported only when that subcommand runs: ``mpu render``
does not pay for importing aiortc, aiohttp and Pillow (about 0.5 CPU-s per start).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from rtc_mpu.logs import configure_logging
from rtc_mpu.stack.secrets import adopt_stack_token_secret

#: Subcommand → (module defining ``add_parser``, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "render": (
        "rtc_mpu.cli.render",
        "mix local files (one per user, in join order) into a file or an RTMP push",
    ),
    "mix": ("rtc_mpu.cli.mix", "mix a live channel into an RTMP push or a file"),
    "publish": ("rtc_mpu.cli.publish", "publish demo participants into a channel"),
    "demo": ("rtc_mpu.cli.demo", "run a local live mix of a WebRTC channel to watch"),
    "stack": ("rtc_mpu.cli.stack", "start, stop or check the local stack (Redis, Janus, nginx-rtmp)"),
    "api": ("rtc_mpu.cli.service", "run the HTTP API"),
    "worker": ("rtc_mpu.cli.service", "run a Celery worker that runs mix tasks"),
    "flower": ("rtc_mpu.cli.service", "run Flower, Celery's monitor"),
    "events": ("rtc_mpu.cli.service", "run the events worker that delivers webhooks (queue events)"),
    "edge": ("rtc_mpu.cli.edge", "run the WHIP ingest edge (holds publishers' Janus sessions)"),
    "task": ("rtc_mpu.cli.task", "start, stop, watch and change mix tasks through the REST API"),
}


def _requested(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``, if any."""
    return next((arg for arg in argv if arg in COMMANDS), None)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``mpu`` argument parser; with ``only``, just that subcommand is fully defined (imported)."""
    parser = argparse.ArgumentParser(prog="mpu", description="rtc-mpu: RTC-to-RTMP live stream mixer")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MPU_LOG_LEVEL", "WARNING"),
        help="DEBUG, INFO, WARNING (default; env MPU_LOG_LEVEL)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    wanted = COMMANDS[only][0] if only is not None else None
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if (wanted is None or module == wanted) and module not in registered:
            importlib.import_module(module).add_parser(subparsers)  # may define several subcommands
            registered.add(module)
        elif module != wanted:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mpu`` with ``argv`` (default: the process arguments); returns the exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    command = _requested(arguments)
    args = build_parser(command if command is not None else next(iter(COMMANDS))).parse_args(arguments)
    configure_logging(args.log_level)  # one line per record: logged values have their controls escaped
    # aioice logs every ICE connectivity check at INFO; keep it to warnings unless debugging.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("aioice").setLevel(logging.WARNING)
    adopt_stack_token_secret(os.environ)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
