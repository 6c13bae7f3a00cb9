"""``mpu stack up | down | status``: the local Redis, Janus and nginx-rtmp (see
:mod:`rtc_mpu.stack.local_stack`).

Ports and the run directory come from the environment (``MPU_RUN_DIR``, ``MPU_REDIS_PORT``,
``MPU_JANUS_PORT``, ``MPU_RTMP_PORT``, ``MPU_HLS_PORT``, ``MPU_JANUS_API_SECRET``,
``MPU_RTP_PORT_RANGE``; README). Exit codes: 0 done (``status``: every service runs and answers);
1 a service could not be started or a package is missing; 2 a malformed variable; 3 (``status``) a
service is not running or does not answer.
"""

from __future__ import annotations

import argparse
import sys

from rtc_mpu.stack.local_stack import (
    ServiceStartError,
    ServiceStatus,
    StackConfig,
    install_missing_packages,
    stack_down,
    stack_status,
    stack_up,
)

#: Exit code of ``mpu stack status`` when a service is not running or does not answer.
EXIT_NOT_RUNNING = 3


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``stack`` on the ``mpu`` parser."""
    p = subparsers.add_parser(
        "stack",
        help="local Redis, Janus and nginx-rtmp: up, down, status",
        description="Ports and run directory: env MPU_RUN_DIR, MPU_REDIS_PORT, MPU_JANUS_PORT, "
        "MPU_RTMP_PORT, MPU_HLS_PORT, MPU_JANUS_API_SECRET, MPU_RTP_PORT_RANGE (README).",
    )
    actions = p.add_subparsers(dest="stack_command", required=True)
    up = actions.add_parser("up", help="install missing packages (as root), start what is not running")
    up.add_argument(
        "--no-install", action="store_true", help="do not run scripts/install-system-deps.sh stack"
    )
    up.set_defaults(func=run_up)
    actions.add_parser("down", help="stop the services `up` started").set_defaults(func=run_down)
    actions.add_parser("status", help="show each service, its pid, URLs, whether it answers").set_defaults(
        func=run_status
    )


def _config() -> StackConfig | None:
    try:
        return StackConfig.from_env()
    except ValueError as exc:
        print(f"mpu stack: {exc}", file=sys.stderr)
        return None


def print_statuses(statuses: dict[str, ServiceStatus]) -> None:
    """One block per service: name, state, pid, then its URLs."""
    for status in statuses.values():
        pid = f"pid {status.pid}" if status.pid is not None else "-"
        answers = "answers" if status.answering else "does not answer"
        print(f"{status.name:<6} {status.note:<28} {pid:<11} {answers}")
        for label, url in status.urls.items():
            print(f"       {label:<10} {url}")


def run_up(args: argparse.Namespace) -> int:
    """``mpu stack up``."""
    config = _config()
    if config is None:
        return 2
    try:
        if not args.no_install:
            optional = install_missing_packages()
            if optional:
                print(f"mpu stack: optional, not installed: {' '.join(optional)}", file=sys.stderr)
        statuses = stack_up(config)
    except ServiceStartError as exc:
        print(f"mpu stack up: {exc}", file=sys.stderr)
        return 1
    print_statuses(statuses)
    print(f"run directory: {config.run_dir.resolve()} (configs, logs, pid files); stop: mpu stack down")
    return 0


def run_down(args: argparse.Namespace) -> int:
    """``mpu stack down``."""
    config = _config()
    if config is None:
        return 2
    for status in stack_down(config).values():
        print(f"{status.name:<6} {status.note}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """``mpu stack status``."""
    config = _config()
    if config is None:
        return 2
    statuses = stack_status(config)
    print_statuses(statuses)
    return 0 if all(status.ok for status in statuses.values()) else EXIT_NOT_RUNNING
