"""``mpu edge``: the WHIP ingest edge (:mod:`rtc_mpu.edge`), a long-lived asyncio process.

``mpu edge [--host 127.0.0.1] [--port 8090]`` serves WHIP until SIGINT/SIGTERM, then makes every
publisher it holds leave. Configured by ``MPU_TOKEN_SECRET`` (else the local stack's
``$MPU_RUN_DIR/token-secret``), ``MPU_JANUS_URL``, ``MPU_JANUS_TOKEN_SIGNATURE`` and the
``MPU_EDGE_*`` variables (README). The API forwards its WHIP routes to ``MPU_EDGE_URL``
(``http://127.0.0.1:8090``).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge``."""
    edge = subparsers.add_parser("edge", help="run the WHIP ingest edge (holds publishers' Janus sessions)")
    edge.add_argument(
        "--host", default=None, help="address to listen on (default MPU_EDGE_HOST or 127.0.0.1)"
    )
    edge.add_argument("--port", type=int, default=None, help="port (default MPU_EDGE_PORT or 8090)")
    edge.set_defaults(func=run_edge)


def run_edge(args: argparse.Namespace) -> int:
    """Serve WHIP until interrupted; 2 on a configuration error."""
    from rtc_mpu.edge.app import run
    from rtc_mpu.edge.settings import EdgeSettings
    from rtc_mpu.stack.local_stack import StackConfig

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        if not os.environ.get("MPU_TOKEN_SECRET"):  # the local stack's generated secret, if any
            stack_secret = StackConfig.from_env().token_secret
            if stack_secret:
                overrides["token_secret"] = stack_secret
        settings = EdgeSettings.from_env(overrides=overrides)
    except ValueError as exc:
        print(f"mpu edge: {exc}", file=sys.stderr)
        return 2
    try:
        run(settings, lambda line: print(line, file=sys.stderr, flush=True))
    except OSError as exc:
        print(f"mpu edge: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0
