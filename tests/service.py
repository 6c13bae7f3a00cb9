"""Helpers for end-to-end tests of the service: the API and a Celery worker (and the WHIP edge, for
token mode) as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtc_mpu.cli.demo import ApiClient
from rtc_mpu.stack.ports import free_port, wait_for_port

#: The access key every e2e test uses.
ACCESS_KEY, SECRET = "testkey", "test-secret"


@dataclass
class Service:
    """The API and one worker (and the WHIP edge if asked), started as child processes with a shared
    environment."""

    env: dict[str, str]
    log_dir: Path
    api_port: int = field(default_factory=free_port)
    edge_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self) -> None:
        """Start ``mpu api`` and wait until it accepts connections."""
        self._spawn("api", ["api", "--port", str(self.api_port)])
        assert wait_for_port("127.0.0.1", self.api_port, 20), self.log("api")

    @property
    def edge_url(self) -> str:
        """The WHIP edge's base URL (the API forwards its WHIP routes there)."""
        return f"http://127.0.0.1:{self.edge_port}"

    def start_edge(self) -> None:
        """Start ``mpu edge`` (it needs ``MPU_TOKEN_SECRET``) and wait until it accepts connections."""
        self._spawn("edge", ["edge", "--port", str(self.edge_port)])
        assert wait_for_port("127.0.0.1", self.edge_port, 20), self.log("edge")

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        """Start ``mpu worker`` (one mix slot) in its own process group."""
        return self._spawn(name, ["worker", "--slots", "1", "--name", f"{name}@%h"])

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            [sys.executable, "-m", "rtc_mpu.cli.main", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        """The end of a process's log."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process's whole group (a Celery worker has pool children)."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s)."""
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(name)

    def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A JSON request with the e2e access key; returns (HTTP status, decoded body)."""
        return ApiClient(self.base, ACCESS_KEY, SECRET).call(method, path, body)

    def wait_task(self, app_id: str, task_id: str, predicate: Any, timeout: float) -> dict[str, Any]:
        """Poll GET until ``predicate(task)`` holds; fail with the last task and the logs."""
        deadline = time.monotonic() + timeout
        task: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, task = self.call("GET", f"/v1/apps/{app_id}/tasks/{task_id}")
            if status == 200 and predicate(task):
                return task
            time.sleep(0.1)
        raise AssertionError(f"task never matched: {task}\n--- worker log ---\n{self.log('worker')}")


def service_env(redis_url: str, janus_url: str, **settings: str) -> dict[str, str]:
    """This process's environment for the service on ``redis_url`` and ``janus_url``: the e2e access
    key, heartbeats every 0.5 s, INFO logs, then ``settings`` (``MPU_*`` names)."""
    env = dict(os.environ)
    env.update(
        MPU_REDIS_URL=redis_url,
        MPU_JANUS_URL=janus_url,
        MPU_ACCESS_KEYS=f"{ACCESS_KEY}:{SECRET}",
        MPU_HEARTBEAT_INTERVAL="0.5",
        MPU_LOG_LEVEL="INFO",
        **settings,
    )
    return env


@contextlib.contextmanager
def running_service(env: dict[str, str], log_dir: Path, *, edge: bool = False) -> Iterator[Service]:
    """The API and one worker started with ``env``, logging into ``log_dir``; all stopped afterwards.

    ``edge``: also ``mpu edge`` (WHIP), which the API forwards to (``MPU_EDGE_URL``); token mode, so
    ``env`` must hold ``MPU_TOKEN_SECRET`` (Janus' ``token_auth_secret``).
    """
    service = Service(env, log_dir)
    try:
        if edge:
            service.env = {**env, "MPU_EDGE_URL": service.edge_url}
            service.start_edge()
        service.start_api()
        service.start_worker()
        yield service
    finally:
        service.stop_all()
