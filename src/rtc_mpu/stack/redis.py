"""Redis (Debian ``redis-server``) as a child process: loopback, no persistence.

Listens on ``redis://{host}:{port}/0``. The config comes from ``deploy/redis.conf.template``.
"""

from __future__ import annotations

import socket
from pathlib import Path

from rtc_mpu.stack.process import DEPLOY_DIR, ManagedProcess, find_binary, render_template

TEMPLATE = DEPLOY_DIR / "redis.conf.template"


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Redis server on ``host:port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n") and len(reply) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply == b"+PONG\r\n"


class Redis:
    """One Redis instance.

    Args:
        run_dir: folder for its config and log (created); also its working directory.
        port: TCP port on ``host``.
        host: address to listen on (loopback by default).
        pid_file: if set, Redis is started detached and recorded there (see
            :class:`rtc_mpu.stack.process.ManagedProcess`).
    """

    def __init__(
        self, run_dir: Path, port: int = 6379, host: str = "127.0.0.1", pid_file: Path | None = None
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.port = port
        self.host = host
        self._process = ManagedProcess("redis", self.run_dir / "redis.log", pid_file)

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._process.pid

    @property
    def url(self) -> str:
        """The connection URL (database 0)."""
        return f"redis://{self.host}:{self.port}/0"

    def ping(self) -> bool:
        """True if the server answers ``PING``."""
        return ping(self.host, self.port)

    def start(self) -> None:
        """Write the config and start Redis; wait until it answers ``PING``.

        Raises:
            ServiceStartError: redis-server is not installed or did not come up.
        """
        self._process.launch(self.prepare(), self.host, [self.port], ready=self.ping)

    def prepare(self) -> list[str]:
        """Write ``<run_dir>/redis.conf`` and return the command line, without starting Redis
        (:meth:`start` launches it; a container's entrypoint appends options and runs it).

        Raises:
            ServiceStartError: redis-server is not installed.
        """
        binary = find_binary("redis-server", "redis-server")
        values = {"run_dir": str(self.run_dir), "host": self.host, "port": str(self.port)}
        config = render_template(TEMPLATE, values, self.run_dir / "redis.conf")
        return [binary, str(config)]

    def stop(self) -> None:
        """Stop Redis. Safe to call twice."""
        self._process.stop()
