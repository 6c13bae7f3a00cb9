"""A service of the local stack run as a child process: config from a template, start, wait, stop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rtc_mpu.stack.ports import wait_for_port

#: Folder of the service config templates.
#: The checkout's root: ``src/rtc_mpu/stack/process.py`` is three folders below it (the stack runs
#: from a checkout, with the package installed editable, as ``make`` does).
REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY_DIR = REPO_ROOT / "deploy"
#: Seconds to wait for a service to accept connections.
START_TIMEOUT = 15.0

# Detached processes started by this Python process, kept so that they are reaped (not left as zombies)
# when stopped from here and do not warn "still running" when their ManagedProcess goes away.
_DETACHED: dict[int, subprocess.Popen[bytes]] = {}


class ServiceStartError(RuntimeError):
    """A local service is missing (package not installed) or did not start."""


def find_binary(name: str, package: str, fallback_dirs: Sequence[str] = ("/usr/sbin", "/usr/bin")) -> str:
    """The path of ``name``.

    Raises:
        ServiceStartError: it is not installed; the message names the Debian package to install.
    """
    found = shutil.which(name)
    if found:
        return found
    for folder in fallback_dirs:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise ServiceStartError(
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


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says about a detached service process.

    Attributes:
        pid: its process id.
        command: the command line it was started with (``/proc/<pid>/cmdline`` must still say so).
        start_time: when it started, in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
            None if unknown; a reused pid has another start time.
        ports: the TCP ports it was started to listen on.
    """

    pid: int
    command: tuple[str, ...]
    start_time: int | None = None
    ports: tuple[int, ...] = ()

    def matches(self) -> bool:
        """True if ``pid`` is alive (not a zombie) and is still the process this record describes."""
        stat = _proc_stat(self.pid)
        if stat is None or stat[0] == "Z":
            return False
        if self.start_time is not None and stat[1] != self.start_time:
            return False
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return tuple(arg.decode(errors="surrogateescape") for arg in raw.split(b"\0")[:-1]) == self.command


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) of ``pid``, None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses, so split after the last ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def write_pid_file(path: Path, pid: int, command: Sequence[str], ports: Sequence[int] = ()) -> PidRecord:
    """Record a detached process in ``path``: the pid alone on the first line (``kill $(head -1 path)``
    works), then one JSON line with the command line, start time and ports."""
    stat = _proc_stat(pid)
    record = PidRecord(pid, tuple(command), stat[1] if stat else None, tuple(ports))
    details = {"command": list(record.command), "start_time": record.start_time, "ports": list(record.ports)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{pid}\n{json.dumps(details)}\n", encoding="utf-8")
    temporary.replace(path)
    return record


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``; None if there is no such file. A file without a command line (e.g. a
    bare pid) gives a record with an empty command, which never matches a process."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except OSError:
        return PidRecord(0, ())
    try:
        pid = int(lines[0].strip())
    except (IndexError, ValueError):
        return PidRecord(0, ())
    try:
        details = json.loads(lines[1])
        command = tuple(str(arg) for arg in details["command"])
        start = details.get("start_time")
        ports = tuple(int(port) for port in details.get("ports", ()))
    except (IndexError, ValueError, TypeError, KeyError, AttributeError):
        return PidRecord(pid, ())
    return PidRecord(pid, command, start if isinstance(start, int) else None, ports)


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our own child (else it would stay a zombie)."""
    process = _DETACHED.get(pid)
    if process is not None:
        if process.poll() is not None:
            del _DETACHED[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _send_signal(record: PidRecord, stop_signal: int) -> bool:
    """Send ``stop_signal`` to the process of ``record`` if it still matches; False if it does not.

    A pidfd pins the process between the check and the signal, so a pid reused in between is never hit.
    """
    try:
        pidfd: int | None = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return False
    except OSError:
        pidfd = None
    try:
        if not record.matches():
            return False
        if pidfd is None:
            os.kill(record.pid, stop_signal)
        else:
            signal.pidfd_send_signal(pidfd, stop_signal)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _wait_gone(record: PidRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(record.pid)
        if not record.matches():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_recorded(path: Path, stop_signal: int = signal.SIGTERM, timeout: float = 5.0) -> str:
    """Stop the process recorded in pid file ``path`` and remove the file.

    Only a process whose command line and start time still match the record is signalled
    (``stop_signal``, then SIGKILL after ``timeout`` seconds); a pid now used by another process is
    left alone. Returns ``"stopped"``, ``"not running"`` (no pid file) or ``"stale"`` (the recorded
    process was already gone; the file is removed).
    """
    record = read_pid_file(path)
    if record is None:
        return "not running"
    result = "stale"
    if _send_signal(record, stop_signal):
        result = "stopped"
        if not _wait_gone(record, timeout):
            _send_signal(record, signal.SIGKILL)
            _wait_gone(record, 5.0)
    path.unlink(missing_ok=True)
    return result


class ManagedProcess:
    """A child process that listens on TCP ports once ready.

    Args:
        name: service name for messages.
        log_path: the service's own log file, quoted when it fails to start.
        pid_file: if set, the process is started detached (a session of its own: it outlives the
            Python process that started it and does not get its terminal's signals) and recorded in
            this file (:func:`write_pid_file`), so another process can stop it (:func:`stop_recorded`).
    """

    def __init__(self, name: str, log_path: Path, pid_file: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def launch(
        self,
        command: Sequence[str],
        host: str,
        ports: Sequence[int],
        timeout: float = START_TIMEOUT,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """Start ``command`` and wait until every port on ``host`` accepts connections and ``ready()``
        (if given) returns True.

        Raises:
            ServiceStartError: the process exited or was not ready in ``timeout`` seconds (the end of its
                log is quoted).
        """
        detached = self.pid_file is not None
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=detached,
        )
        if self.pid_file is not None:
            _DETACHED[self.process.pid] = self.process
            write_pid_file(self.pid_file, self.process.pid, command, ports)
        deadline = time.monotonic() + timeout
        ok = all(wait_for_port(host, port, max(0.0, deadline - time.monotonic())) for port in ports)
        while ok and ready is not None and not ready():
            if self.process.poll() is not None or time.monotonic() >= deadline:
                ok = False
            else:
                time.sleep(0.1)
        if not ok or self.process.poll() is not None:
            self.stop()
            detail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise ServiceStartError(f"{self.name} did not start on {host}:{list(ports)}: {detail}")

    def stop(self, stop_signal: int = signal.SIGTERM) -> None:
        """Stop the process (``stop_signal``, then SIGKILL after 5 s). Safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.pid_file is not None:
            _DETACHED.pop(process.pid, None)
            record = read_pid_file(self.pid_file)
            if record is not None and record.pid == process.pid:
                self.pid_file.unlink(missing_ok=True)
        if process.poll() is not None:
            return
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
