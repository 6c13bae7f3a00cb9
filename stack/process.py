"""A service of the local stack run as a child process: config from a template, start, wait, stop."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from stack.ports import wait_for_port

#: Folder of the service config templates.
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
#: Seconds to wait for a service to accept connections.
START_TIMEOUT = 15.0


class ServiceError(RuntimeError):
    """A local service is missing (package not installed) or did not start."""


def find_binary(name: str, package: str, fallback_dirs: Sequence[str] = ("/usr/sbin", "/usr/bin")) -> str:
    """The path of ``name``.

    Raises:
        ServiceError: it is not installed; the message names the Debian package to install.
    """
    found = shutil.which(name)
    if found:
        return found
    for folder in fallback_dirs:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise ServiceError(
        f"{name} is not installed: apt-get install {package} (scripts/install-system-deps.sh does it)"
    )


def render_template(template: Path, values: Mapping[str, str], destination: Path) -> Path:
    """Write ``template`` with every ``{key}`` replaced by ``values[key]`` to ``destination``."""
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(text, encoding="utf-8")
    return destination


class ManagedProcess:
    """A child process that listens on TCP ports once ready.

    Args:
        name: service name for messages.
        log_path: the service's own log file, quoted when it fails to start.
    """

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def launch(
        self, command: Sequence[str], host: str, ports: Sequence[int], timeout: float = START_TIMEOUT
    ) -> None:
        """Start ``command`` and wait until every port on ``host`` accepts connections.

        Raises:
            ServiceError: the process exited or the ports did not open in ``timeout`` seconds (the
                end of its log is quoted).
        """
        self.process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        ok = all(wait_for_port(host, port, timeout) for port in ports)
        if not ok or self.process.poll() is not None:
            self.stop()
            detail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise ServiceError(f"{self.name} did not start on {host}:{list(ports)}: {detail}")

    def stop(self, stop_signal: int = signal.SIGTERM) -> None:
        """Stop the process (``stop_signal``, then SIGKILL after 5 s). Safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
