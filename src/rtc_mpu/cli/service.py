"""``mpu api``, ``mpu worker`` and ``mpu flower``: the service's processes, run by hand or by ``make demo``.

- ``mpu api [--host 127.0.0.1] [--port 8080]``: the HTTP API (waitress WSGI server), configured by
  ``MPU_ACCESS_KEYS`` and ``MPU_REDIS_URL``.
- ``mpu worker [--slots N] [--mixes-per-process M]``: a Celery worker running up to N mixes at once
  (``MPU_MIX_SLOTS``), each pool process replaced by a fresh one after M mixes (``MPU_MIXES_PER_PROCESS``,
  default 1; 0 = never).
- ``mpu events [--concurrency 8]``: the events worker: a Celery worker on the queue ``events`` that
  delivers webhooks (:mod:`rtc_mpu.workers.events_app`), apart from the mixes.
- ``mpu flower [--port 5555]``: Flower, Celery's monitor, for operators watching the queue.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``api``, ``worker`` and ``flower``."""
    api = subparsers.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default=os.environ.get("MPU_API_HOST", "127.0.0.1"))
    api.add_argument("--port", type=int, default=int(os.environ.get("MPU_API_PORT", "8080") or 8080))
    api.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    api.set_defaults(func=run_api)
    worker = subparsers.add_parser("worker", help="run a Celery worker that runs mix tasks")
    worker.add_argument(
        "--slots", type=int, default=None, help="mixes at once (default MPU_MIX_SLOTS or 2 per CPU core)"
    )
    worker.add_argument(
        "--mixes-per-process",
        type=int,
        default=None,
        help="mixes a pool process runs before a fresh one replaces it, which returns their memory "
        "(default MPU_MIXES_PER_PROCESS or 1; 0 = reuse processes forever)",
    )
    worker.add_argument(
        "--name",
        default="mix@%h",
        help="Celery node name, also the unit of MPU_WORKER_CAPACITY (default mix@<hostname>: one worker "
        "per host; give each worker of one host its own name to give each its own capacity)",
    )
    worker.set_defaults(func=run_worker)
    events = subparsers.add_parser("events", help="run the events worker that delivers webhooks")
    events.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("MPU_EVENTS_CONCURRENCY", "8") or 8),
        help="deliveries at once (threads; default MPU_EVENTS_CONCURRENCY or 8)",
    )
    events.add_argument("--name", default="events@%h", help="Celery node name (default events@<hostname>)")
    events.set_defaults(func=run_events)
    flower = subparsers.add_parser("flower", help="run Flower, Celery's monitor")
    flower.add_argument("--host", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=int(os.environ.get("MPU_FLOWER_PORT", "5555") or 5555))
    flower.set_defaults(func=run_flower)


def run_api(args: argparse.Namespace) -> int:
    """Serve the API until interrupted."""
    import waitress

    from rtc_mpu.api.app import create_app
    from rtc_mpu.api.tokens import TokenIssuer, TokenSweeper

    try:
        app = create_app()
    except ValueError as exc:
        print(f"mpu api: {exc}", file=sys.stderr)
        return 2
    print(
        f"mpu api: listening on http://{args.host}:{args.port} (OpenAPI at /openapi.json, docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    issuer = app.extensions.get("mpu_tokens")
    if isinstance(issuer, TokenIssuer) and issuer.settings.secret:
        TokenSweeper(issuer).start()  # expired publish tokens off the rooms' allowed lists
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="rtc-mpu")
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker (blocks; SIGTERM = warm shutdown: running mixes finish first)."""
    if args.slots is not None:
        os.environ["MPU_MIX_SLOTS"] = str(args.slots)
    if args.mixes_per_process is not None:
        os.environ["MPU_MIXES_PER_PROCESS"] = str(args.mixes_per_process)
    from rtc_mpu.mixer.overlays.text import FontError, check_fonts

    try:
        from rtc_mpu.workers.celery_app import QUEUE, app, settings
    except ValueError as exc:  # a malformed MPU_* variable (the message names it)
        print(f"mpu worker: {exc}", file=sys.stderr)
        return 2

    try:
        check_fonts()  # texts and clocks need them: fail now, not in the middle of a show
    except FontError as exc:
        print(f"mpu worker: {exc}", file=sys.stderr)
        return 1

    argv = [
        "worker",
        "-Q",
        QUEUE,
        "-c",
        str(settings.mix_slots),
        "-O",
        "fair",
        "-E",
        "--loglevel",
        os.environ.get("MPU_LOG_LEVEL", "INFO"),
    ]
    argv += ["-n", args.name]
    app.worker_main(argv)
    return 0


def run_events(args: argparse.Namespace) -> int:
    """Run the events worker (blocks; SIGTERM = warm shutdown: deliveries under way finish)."""
    from rtc_mpu.workers.webhooks import DeliverySettings

    try:
        DeliverySettings.from_env()
    except ValueError as exc:  # a malformed MPU_WEBHOOK_* variable (the message names it)
        print(f"mpu events: {exc}", file=sys.stderr)
        return 2
    from rtc_mpu.workers.events_app import EVENTS_QUEUE, app

    argv = ["worker", "-Q", EVENTS_QUEUE, "-P", "threads", "-c", str(max(1, args.concurrency))]
    argv += ["--loglevel", os.environ.get("MPU_LOG_LEVEL", "INFO"), "-n", args.name]
    app.worker_main(argv)
    return 0


def run_flower(args: argparse.Namespace) -> int:
    """Run Flower against the same broker (blocks)."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "rtc_mpu.workers.celery_app",
        "flower",
        f"--address={args.host}",
        f"--port={args.port}",
    ]
    return subprocess.call(command)
