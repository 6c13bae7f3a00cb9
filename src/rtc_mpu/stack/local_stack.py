"""The local stack behind ``mpu stack up | down | status``: Redis, Janus and nginx-rtmp on loopback.

Each service runs as an ordinary process from Debian's packages, with its config rendered from
``deploy/`` into the run directory (not committed):

- Redis ``redis://127.0.0.1:6379/0`` (no persistence);
- Janus HTTP API ``http://127.0.0.1:8088/janus`` (VideoRoom with string ids, HTTP transport only);
- nginx-rtmp: RTMP push/play ``rtmp://127.0.0.1:1935/live/<stream>``, HLS (2 s fragments)
  ``http://127.0.0.1:8081/hls/<stream>.m3u8``, publisher/player counts ``http://127.0.0.1:8081/stat``.

``up`` starts them detached (they outlive the command) and records each in ``<run_dir>/<service>.pid``
with its command line and start time; ``down`` signals only processes that still match such a record,
so a pid reused by another program is never killed. ``up`` is idempotent, waits until every service
answers, and refuses a port that something else already uses.

Environment variables (read by :meth:`StackConfig.from_env`):

=========================  ===============  ===================================================
variable                   default          meaning
=========================  ===============  ===================================================
``MPU_RUN_DIR``            ``run``          configs, logs, pid files, HLS segments
``MPU_REDIS_PORT``         6379             Redis TCP port
``MPU_JANUS_PORT``         8088             Janus HTTP API port
``MPU_RTMP_PORT``          1935             nginx-rtmp RTMP port
``MPU_HLS_PORT``           8081             nginx HTTP port (HLS and ``/stat``)
``MPU_JANUS_API_SECRET``   (none)           if set, Janus API requests must carry it
``MPU_RTP_PORT_RANGE``     ``20000-40000``  UDP ports Janus uses for media
``MPU_TOKEN_SECRET``       (generated)      channel-token secret; else ``<run_dir>/token-secret``
=========================  ===============  ===================================================

Janus always runs with token authentication (signed tokens, :mod:`rtc_mpu.spec.tokens`): nobody
publishes or subscribes without a token from the API or the workers' own credentials. The secret is
``MPU_TOKEN_SECRET``, or else the one ``up`` generates once into ``<run_dir>/token-secret`` (mode
0600); the API, the workers and the edge must be given the same value (``mpu demo`` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rtc_mpu.spec import storage
from rtc_mpu.spec.tokens import check_secret
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import DEFAULT_MODULE, NginxRtmp
from rtc_mpu.stack.ports import port_in_use
from rtc_mpu.stack.process import (
    REPO_ROOT,
    START_TIMEOUT,
    ServiceStartError,
    find_binary,
    read_pid_file,
    stop_recorded,
)
from rtc_mpu.stack.redis import Redis, ping
from rtc_mpu.stack.secrets import TOKEN_SECRET_FILE

__all__ = [
    "INSTALL_SCRIPT",
    "SERVICES",
    "ServiceStartError",
    "ServiceStatus",
    "StackConfig",
    "install_missing_packages",
    "janus_info",
    "missing_packages",
    "stack_down",
    "stack_status",
    "stack_up",
]

#: Installs missing Debian packages (``stack`` set) as root, else prints the apt command and fails.
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-system-deps.sh"
#: The services, in start order (stopped in reverse).
SERVICES = ("redis", "janus", "nginx")


@dataclass(frozen=True)
class StackConfig:
    """Where the local stack runs (see the module docstring for the environment variables)."""

    run_dir: Path = Path("run")
    redis_port: int = 6379
    janus_port: int = 8088
    rtmp_port: int = 1935
    hls_port: int = 8081
    janus_api_secret: str | None = None
    rtp_port_range: str = "20000-40000"
    host: str = "127.0.0.1"
    #: The channel-token secret (``MPU_TOKEN_SECRET``, else ``<run_dir>/token-secret`` if it exists;
    #: ``up`` generates it when neither is set: :func:`ensure_token_secret`).
    token_secret: str | None = None
    #: The workers' HLS directory (``MPU_HLS_DIR``, default ``<run_dir>/hls``), served by nginx at
    #: ``/hls/<app_id>/<task_id>/index.m3u8`` (:func:`rtc_mpu.spec.storage.hls_dir`).
    task_hls_dir: Path = Path("run/hls")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """The config from ``environ`` (default: ``os.environ``); unset or empty variables keep defaults.

        Raises:
            ValueError: a variable is malformed (the message names it).
        """
        env = os.environ if environ is None else environ

        def port(name: str, default: int) -> int:
            text = env.get(name, "").strip()
            if not text:
                return default
            if not text.isdigit() or not 1 <= int(text) <= 65535:
                raise ValueError(f"{name}={text!r} is not a TCP port (1-65535)")
            return int(text)

        rtp_range = env.get("MPU_RTP_PORT_RANGE", "").strip() or cls.rtp_port_range
        low, _, high = rtp_range.partition("-")
        if not (low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535):
            raise ValueError(f"MPU_RTP_PORT_RANGE={rtp_range!r} is not a UDP port range like 20000-40000")
        return cls(
            run_dir=Path(env.get("MPU_RUN_DIR", "").strip() or cls.run_dir),
            redis_port=port("MPU_REDIS_PORT", cls.redis_port),
            janus_port=port("MPU_JANUS_PORT", cls.janus_port),
            rtmp_port=port("MPU_RTMP_PORT", cls.rtmp_port),
            hls_port=port("MPU_HLS_PORT", cls.hls_port),
            janus_api_secret=env.get("MPU_JANUS_API_SECRET") or None,
            rtp_port_range=rtp_range,
            task_hls_dir=storage.hls_dir(env),
            token_secret=_token_secret(env, Path(env.get("MPU_RUN_DIR", "").strip() or cls.run_dir)),
        )

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def janus_url(self) -> str:
        return f"http://{self.host}:{self.janus_port}/janus"

    def rtmp_url(self, stream: str = "<stream>") -> str:
        return f"rtmp://{self.host}:{self.rtmp_port}/live/{stream}"

    def hls_url(self, stream: str = "<stream>") -> str:
        return f"http://{self.host}:{self.hls_port}/hls/{stream}.m3u8"

    @property
    def stat_url(self) -> str:
        return f"http://{self.host}:{self.hls_port}/stat"

    def pid_file(self, service: str) -> Path:
        """Where ``up`` records ``service``'s process."""
        return self.run_dir.resolve() / f"{service}.pid"


@dataclass
class ServiceStatus:
    """One service of the stack as seen by ``up``, ``down`` or ``status``.

    Attributes:
        name: ``redis``, ``janus`` or ``nginx``.
        pid: its process id while a process recorded by ``up`` runs, else None.
        urls: what clients connect to, by label.
        running: a process started by ``up`` (per its pid file) is alive.
        answering: the service answers on its port(s) (Redis PING, Janus ``/info`` with the VideoRoom
            plugin, nginx RTMP port and ``/stat``), whoever runs it.
        note: what happened: ``started``, ``already running``, ``stopped``, ``not running``, ...
        log: the service's log file.
    """

    name: str
    pid: int | None
    urls: dict[str, str]
    running: bool
    answering: bool
    note: str = ""
    log: Path | None = None

    @property
    def ok(self) -> bool:
        """Started by the stack and answering."""
        return self.running and self.answering


class _Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class _Spec:
    name: str
    ports: tuple[tuple[int, str, str], ...]  # (port, what, environment variable)
    stop_signal: int
    urls: dict[str, str]
    log: Path
    answers: Callable[[], bool]
    make: Callable[[], _Service] = field(repr=False)


def _http_get(url: str, timeout: float) -> bytes | None:
    """The body of a 200 answer to GET ``url`` (never through a proxy), else None."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body if response.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def janus_info(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """Janus' ``GET <url>/info`` answer (``"janus": "server_info"``), or None if it does not answer."""
    body = _http_get(url.rstrip("/") + "/info", timeout)
    if body is None:
        return None
    try:
        info = json.loads(body)
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("janus") == "server_info" else None


def _janus_answers(url: str) -> bool:
    info = janus_info(url)
    plugins = info.get("plugins") if info else None
    return isinstance(plugins, dict) and "janus.plugin.videoroom" in plugins


def _nginx_answers(config: StackConfig) -> bool:
    if not _port_answers(config.host, config.rtmp_port):
        return False
    body = _http_get(config.stat_url, 2.0)
    return body is not None and b"<rtmp>" in body


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _specs(config: StackConfig) -> list[_Spec]:
    run_dir = config.run_dir.resolve()
    host = config.host
    return [
        _Spec(
            "redis",
            ((config.redis_port, "Redis", "MPU_REDIS_PORT"),),
            signal.SIGTERM,
            {"Redis": config.redis_url},
            run_dir / "redis" / "redis.log",
            lambda: ping(host, config.redis_port),
            lambda: Redis(run_dir / "redis", config.redis_port, host, config.pid_file("redis")),
        ),
        _Spec(
            "janus",
            ((config.janus_port, "Janus HTTP API", "MPU_JANUS_PORT"),),
            signal.SIGTERM,
            {"Janus API": config.janus_url},
            run_dir / "janus" / "janus.log",
            lambda: _janus_answers(config.janus_url),
            lambda: Janus(
                run_dir / "janus",
                http_port=config.janus_port,
                host=host,
                api_secret=config.janus_api_secret,
                rtp_port_range=config.rtp_port_range,
                pid_file=config.pid_file("janus"),
                token_secret=config.token_secret,
            ),
        ),
        _Spec(
            "nginx",
            (
                (config.rtmp_port, "nginx RTMP", "MPU_RTMP_PORT"),
                (config.hls_port, "nginx HTTP (HLS, /stat)", "MPU_HLS_PORT"),
            ),
            signal.SIGQUIT,
            {"RTMP": config.rtmp_url(), "HLS": config.hls_url(), "stat": config.stat_url},
            run_dir / "nginx" / "nginx-error.log",
            lambda: _nginx_answers(config),
            lambda: NginxRtmp(
                run_dir / "nginx",
                config.rtmp_port,
                config.hls_port,
                host,
                pid_file=config.pid_file("nginx"),
                task_hls_dir=config.task_hls_dir,
            ),
        ),
    ]


def missing_packages(include_tools: bool = True) -> list[str]:
    """Debian packages of the ``stack`` set whose files are missing, in the script's order.

    Args:
        include_tools: also check ``ffmpeg`` (the CLI tools, e.g. ``ffplay`` to watch), which the
            services themselves do not need.
    """
    checks: list[tuple[str, Callable[[], bool]]] = [
        ("redis-server", lambda: _has_binary("redis-server")),
        ("janus", lambda: _has_binary("janus")),
        ("nginx", lambda: _has_binary("nginx")),
        ("libnginx-mod-rtmp", DEFAULT_MODULE.exists),
    ]
    if include_tools:
        checks.append(("ffmpeg", lambda: _has_binary("ffmpeg")))
    return [package for package, present in checks if not present()]


def _has_binary(name: str) -> bool:
    try:
        find_binary(name, name)
    except ServiceStartError:
        return False
    return True


def install_missing_packages() -> list[str]:
    """Run ``scripts/install-system-deps.sh stack`` if a package of the stack is missing.

    As root the script installs them with apt-get; otherwise it prints the exact apt command (on
    stderr). Returns the packages still missing afterwards that the services do not need (``ffmpeg``).

    Raises:
        ServiceStartError: a package the services need is still missing.
    """
    if not missing_packages():
        return []
    if INSTALL_SCRIPT.exists():
        subprocess.run(["bash", str(INSTALL_SCRIPT), "stack"], stdin=subprocess.DEVNULL, check=False)
    still = missing_packages(include_tools=False)
    if still:
        raise ServiceStartError(
            f"not installed: {' '.join(still)}: as root, run "
            f"apt-get update && apt-get install -y --no-install-recommends {' '.join(missing_packages())}"
        )
    return missing_packages()


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialize ``up`` and ``down`` on one run directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _status(spec: _Spec, config: StackConfig, note: str = "") -> ServiceStatus:
    record = read_pid_file(config.pid_file(spec.name))
    running = record is not None and record.matches()
    pid = record.pid if record is not None and running else None
    return ServiceStatus(spec.name, pid, dict(spec.urls), running, spec.answers(), note, spec.log)


def _token_secret(env: Mapping[str, str], run_dir: Path) -> str | None:
    value = env.get("MPU_TOKEN_SECRET") or None
    if value is None:
        with contextlib.suppress(OSError):
            value = (run_dir / TOKEN_SECRET_FILE).read_text(encoding="ascii").strip() or None
    if value is not None:
        try:
            check_secret(value)
        except ValueError as exc:
            raise ValueError(f"{exc} (MPU_TOKEN_SECRET or {run_dir / TOKEN_SECRET_FILE})") from None
    return value


def ensure_token_secret(config: StackConfig) -> StackConfig:
    """``config`` with a token secret: its own, or a new random one written to
    ``<run_dir>/token-secret`` (mode 0600) for the next commands to read."""
    if config.token_secret:
        return config
    path = config.run_dir / TOKEN_SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # written meanwhile: use that one
        secret = path.read_text(encoding="ascii").strip()
        return dataclasses.replace(config, token_secret=check_secret(secret))
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret + "\n")
    return dataclasses.replace(config, token_secret=secret)


def stack_up(config: StackConfig, timeout: float = START_TIMEOUT) -> dict[str, ServiceStatus]:
    """Start every service that is not running yet and wait until each answers.

    A service whose pid file names a live process started by ``up`` (same command line) is left
    alone (note ``already running``). Ports are checked before anything starts. If a service fails
    to start, those started by this call are stopped again.

    Raises:
        ServiceStartError: a package is missing, a port is taken by another process (the message names
            the port and the variable to change it), or a service did not come up (its log is quoted).
    """
    missing = missing_packages(include_tools=False)
    if missing:
        raise ServiceStartError(
            f"not installed: {' '.join(missing)}: apt-get install {' '.join(missing)} "
            "(scripts/install-system-deps.sh stack does it; `mpu stack up` runs it)"
        )
    with _locked(config.run_dir.resolve()):
        config = ensure_token_secret(config)
        specs = _specs(config)
        running: set[str] = set()
        for spec in specs:
            pid_file = config.pid_file(spec.name)
            record = read_pid_file(pid_file)
            if record is not None and record.matches():
                wanted = tuple(port for port, _, _ in spec.ports)
                if record.ports != wanted:
                    raise ServiceStartError(
                        f"{spec.name} is already running (pid {record.pid}) on port(s) "
                        f"{list(record.ports)}, not {list(wanted)}: run `mpu stack down` first"
                    )
                running.add(spec.name)
            elif record is not None:
                pid_file.unlink(missing_ok=True)  # its process is gone (or the pid was reused)
        for spec in specs:
            if spec.name in running:
                continue
            for port, what, variable in spec.ports:
                if port_in_use(config.host, port):
                    raise ServiceStartError(
                        f"port {port} ({what}) on {config.host} is already in use by another process: "
                        f"set {variable} to a free port, or stop that process"
                    )
        started: list[_Service] = []
        statuses: dict[str, ServiceStatus] = {}
        try:
            for spec in specs:
                if spec.name in running:
                    note = "already running"
                else:
                    service = spec.make()
                    service.start()
                    started.append(service)
                    note = "started"
                if not _wait(spec.answers, timeout):
                    where = ", ".join(spec.urls.values())
                    raise ServiceStartError(
                        f"{spec.name} ({note}) does not answer at {where}; see {spec.log}"
                        + (" (or run `mpu stack down` and try again)" if note != "started" else "")
                    )
                statuses[spec.name] = _status(spec, config, note)
        except BaseException:
            for service in reversed(started):
                service.stop()
            raise
    return statuses


def stack_down(config: StackConfig) -> dict[str, ServiceStatus]:
    """Stop the services ``up`` started (SIGTERM, nginx SIGQUIT; SIGKILL after 5 s) and remove their
    pid files. A pid file whose process is gone or whose pid now belongs to another program is
    removed without signalling anything."""
    notes = {"stopped": "stopped", "not running": "not running", "stale": "not running (stale pid file)"}
    statuses: dict[str, ServiceStatus] = {}
    with _locked(config.run_dir.resolve()):
        for spec in reversed(_specs(config)):
            result = stop_recorded(config.pid_file(spec.name), spec.stop_signal)
            statuses[spec.name] = _status(spec, config, notes[result])
    return {name: statuses[name] for name in SERVICES}


def stack_status(config: StackConfig) -> dict[str, ServiceStatus]:
    """Each service: its recorded process if alive, and whether it answers."""
    statuses = {}
    for spec in _specs(config):
        status = _status(spec, config)
        if status.ok:
            status.note = "running"
        elif status.running:
            status.note = "running, does not answer"
        elif status.answering:
            status.note = "not started by mpu stack (something else answers)"
        else:
            status.note = "not running"
        statuses[spec.name] = status
    return statuses
