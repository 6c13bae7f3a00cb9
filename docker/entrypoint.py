"""The containers' entrypoint: ``entrypoint.py serve SERVICE`` and ``entrypoint.py health SERVICE``.

SERVICE is one of ``redis``, ``janus``, ``nginx``, ``api``, ``worker``, ``events``, ``edge``, ``flower``.

``serve`` replaces itself (``exec``) with the service's program in the foreground, so the program is
the container's process 1 and gets its signals (a worker's SIGTERM hands its shows over, as ``mpu
worker`` does). Redis, Janus and nginx-rtmp get their configs from the local stack's own rendering code
(:mod:`rtc_mpu.stack`: the same ``deploy/`` templates ``mpu stack up`` writes), with only what a
container changes: logs to stdout/stderr, Redis' data in ``/data`` with append-only persistence,
Janus' ``nat_1_1_mapping``. ``health`` exits 0 when the service answers (compose ``healthcheck``;
under podman here, ``podman healthcheck run`` polls it).

Environment (``docker-compose.yml`` passes them; ``.env.example``):

- ``MPU_BIND_HOST`` (``127.0.0.1``): the address every service listens on (``0.0.0.0`` for workers on
  other machines: then set ``MPU_REDIS_PASSWORD``).
- ``MPU_REDIS_PORT``, ``MPU_JANUS_PORT``, ``MPU_RTMP_PORT``, ``MPU_HLS_PORT``, ``MPU_API_PORT``,
  ``MPU_EDGE_PORT``, ``MPU_FLOWER_PORT``: ports (defaults 6379, 8088, 1935, 8081, 8080, 8090, 5555).
- ``MPU_TOKEN_SECRET``: Janus' signed-token secret (required by janus, api, worker, edge).
- ``MPU_RTP_PORT_RANGE`` (``20000-40000``), ``MPU_JANUS_NAT_1_1`` (public IPs of a 1:1 NAT, comma
  separated; Janus ``--nat-1-1``), ``MPU_JANUS_API_SECRET``.
- ``MPU_REDIS_PASSWORD``: if set, Redis requires it (``requirepass``); the other services' URLs must
  carry it (``redis://:PASSWORD@host:port/0``).
- ``MPU_WORKER_HOST``: a worker's name in task records and its Celery node name (``mix@<it>``);
  default ``<hostname>-<6 random hex digits>``, so replicas sharing the host's hostname (host
  networking) differ. Written to ``/tmp/mpu/worker-host``.
- ``MPU_FLOWER_AUTH``: ``user:password`` (HTTP Basic, several separated by commas); Flower refuses to
  start without it.

Standard library and :mod:`rtc_mpu.stack` only for redis, janus and nginx (their images have Debian's
``python3`` and the source tree, no virtualenv).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

#: Scratch space for rendered configs and pid files (the image makes it writable by its user).
RUN_DIR = Path(os.environ.get("MPU_CONTAINER_RUN_DIR", "/tmp/mpu"))
#: Redis' data (a volume): the append-only file lives here.
REDIS_DATA_DIR = Path(os.environ.get("MPU_REDIS_DATA_DIR", "/data"))
#: The workers' HLS directory (a volume shared with nginx, which serves it).
HLS_DIR = Path(os.environ.get("MPU_HLS_DIR", "/var/lib/mpu/hls"))
WORKER_HOST_FILE = RUN_DIR / "worker-host"
DEFAULT_PORTS = {
    "MPU_REDIS_PORT": 6379,
    "MPU_JANUS_PORT": 8088,
    "MPU_RTMP_PORT": 1935,
    "MPU_HLS_PORT": 8081,
    "MPU_API_PORT": 8080,
    "MPU_EDGE_PORT": 8090,
    "MPU_FLOWER_PORT": 5555,
}
#: Seconds every health probe may take in total (compose's healthcheck timeout is larger).
PROBE_TIMEOUT_SECONDS = 4.0


class ConfigError(ValueError):
    """A missing or malformed variable; the message names it."""


def port(name: str, env: Mapping[str, str] | None = None) -> int:
    """The TCP port in ``env[name]`` (default: :data:`DEFAULT_PORTS`).

    Raises:
        ConfigError: not a number in 1-65535.
    """
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return DEFAULT_PORTS[name]
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{name}={text!r} is not a TCP port (1-65535)")
    return int(text)


def bind_host(env: Mapping[str, str] | None = None) -> str:
    """``MPU_BIND_HOST`` (default ``127.0.0.1``)."""
    return (os.environ if env is None else env).get("MPU_BIND_HOST", "").strip() or "127.0.0.1"


def probe_host(env: Mapping[str, str] | None = None) -> str:
    """Where a health probe connects: the bind address, or loopback for a wildcard bind."""
    host = bind_host(env)
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def required(name: str, env: Mapping[str, str] | None = None) -> str:
    """``env[name]``, which must be set and not empty.

    Raises:
        ConfigError: it is missing or empty.
    """
    value = (os.environ if env is None else env).get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set (see .env.example)")
    return value


def flower_auth(env: Mapping[str, str] | None = None) -> str:
    """``MPU_FLOWER_AUTH``: one or more ``user:password`` separated by commas, each part not empty.

    Raises:
        ConfigError: missing or malformed (the secret is never quoted).
    """
    value = required("MPU_FLOWER_AUTH", env)
    for entry in value.split(","):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ConfigError("MPU_FLOWER_AUTH must be user:password[,user2:password2]: Flower is never open")
    return value


def worker_host(env: Mapping[str, str] | None = None) -> str:
    """This worker's name in task records and its Celery node name's host part: ``MPU_WORKER_HOST``,
    else ``<hostname>-<6 random hex digits>`` (unique even where replicas share the hostname).

    Raises:
        ConfigError: ``MPU_WORKER_HOST`` has characters other than ``A-Z a-z 0-9 . _ -``.
    """
    value = (os.environ if env is None else env).get("MPU_WORKER_HOST", "").strip()
    if not value:
        value = f"{socket.gethostname()}-{secrets.token_hex(3)}"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", value):
        raise ConfigError("MPU_WORKER_HOST must be 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
    return value


def service_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for the Python services: empty ``MPU_*`` variables removed (an empty line in ``.env``
    means "the default", which the programs only apply to unset ones), and the URLs the services
    reach each other by filled in when unset: ``MPU_REDIS_URL`` (``redis://[:MPU_REDIS_PASSWORD@]HOST:
    MPU_REDIS_PORT/0``), ``MPU_JANUS_URL``, ``MPU_EDGE_URL``, where HOST is ``MPU_SERVICES_HOST`` or the
    probe address (:func:`probe_host`: the services share the host's network).

    Raises:
        ConfigError: a port variable is malformed.
    """
    out = {k: v for k, v in env.items() if not (k.startswith("MPU_") and not v.strip())}
    host = out.get("MPU_SERVICES_HOST", "").strip() or probe_host(out)
    password = out.get("MPU_REDIS_PASSWORD", "")
    userinfo = f":{urllib.parse.quote(password, safe='')}@" if password else ""
    out.setdefault("MPU_REDIS_URL", f"redis://{userinfo}{host}:{port('MPU_REDIS_PORT', out)}/0")
    out.setdefault("MPU_JANUS_URL", f"http://{host}:{port('MPU_JANUS_PORT', out)}/janus")
    out.setdefault("MPU_EDGE_URL", f"http://{host}:{port('MPU_EDGE_PORT', out)}")
    return out


def janus_command(command: list[str], nat_1_1: str) -> list[str]:
    """Janus' command line from :meth:`rtc_mpu.stack.janus.Janus.prepare` made for a container: logs to
    stdout only (no ``-N``, no ``-L FILE``) and, with ``nat_1_1`` (public IPs, comma separated), the
    1:1 NAT mapping (``--nat-1-1``, Janus' ``nat_1_1_mapping``).

    Raises:
        ConfigError: ``nat_1_1`` is not a comma-separated list of addresses.
    """
    out: list[str] = []
    skip = False
    for arg in command:
        if skip:
            skip = False
            continue
        if arg == "-N":
            continue
        if arg == "-L":
            skip = True
            continue
        out.append(arg)
    if nat_1_1:
        if not re.fullmatch(r"[0-9A-Fa-f.:]+(,[0-9A-Fa-f.:]+)*", nat_1_1):
            raise ConfigError(f"MPU_JANUS_NAT_1_1={nat_1_1!r} is not a comma-separated list of IP addresses")
        out.append(f"--nat-1-1={nat_1_1}")
    return out


def redis_command(command: list[str], data_dir: Path, password: str) -> list[str]:
    """Redis' command line from :meth:`rtc_mpu.stack.redis.Redis.prepare` made for a container: data
    in ``data_dir`` with append-only persistence (fsync every second), the log on stdout, and
    ``requirepass`` when ``password`` is set. Options after the config file override it."""
    out = [*command, "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
    out += ["--logfile", ""]
    if password:
        out += ["--requirepass", password]
    return out


def _serve_redis() -> list[str]:
    from rtc_mpu.stack.redis import Redis

    redis = Redis(RUN_DIR / "redis", port("MPU_REDIS_PORT"), bind_host())
    REDIS_DATA_DIR.mkdir(parents=True, exist_ok=True)
    return redis_command(redis.prepare(), REDIS_DATA_DIR, os.environ.get("MPU_REDIS_PASSWORD", ""))


def _serve_janus() -> list[str]:
    from rtc_mpu.stack.janus import Janus

    janus = Janus(
        RUN_DIR / "janus",
        http_port=port("MPU_JANUS_PORT"),
        host=bind_host(),
        api_secret=os.environ.get("MPU_JANUS_API_SECRET") or None,
        rtp_port_range=os.environ.get("MPU_RTP_PORT_RANGE", "").strip() or "20000-40000",
        token_secret=required("MPU_TOKEN_SECRET"),
    )
    return janus_command(janus.prepare(), os.environ.get("MPU_JANUS_NAT_1_1", "").strip())


def _serve_nginx() -> list[str]:
    from rtc_mpu.stack.nginx_rtmp import NginxRtmp

    run_dir = RUN_DIR / "nginx"
    nginx = NginxRtmp(run_dir, port("MPU_RTMP_PORT"), port("MPU_HLS_PORT"), bind_host(), task_hls_dir=HLS_DIR)
    command = nginx.prepare()
    # The config's error_log and -e name this file: make it the container's stderr.
    log = run_dir / "nginx-error.log"
    log.unlink(missing_ok=True)
    log.symlink_to("/dev/stderr")
    return command


def _serve_api() -> list[str]:
    required("MPU_TOKEN_SECRET")
    return ["mpu", "api", "--host", bind_host(), "--port", str(port("MPU_API_PORT"))]


def _serve_worker() -> list[str]:
    required("MPU_TOKEN_SECRET")
    host = worker_host()
    os.environ["MPU_WORKER_HOST"] = host  # the task records' worker name (rtc_mpu.workers.settings)
    WORKER_HOST_FILE.parent.mkdir(parents=True, exist_ok=True)
    WORKER_HOST_FILE.write_text(host + "\n", encoding="ascii")
    print(f"entrypoint: worker mix@{host}", file=sys.stderr, flush=True)
    return ["mpu", "worker", "--name", f"mix@{host}"]


def _serve_events() -> list[str]:
    host = worker_host()
    WORKER_HOST_FILE.parent.mkdir(parents=True, exist_ok=True)
    WORKER_HOST_FILE.write_text(host + "\n", encoding="ascii")
    return ["mpu", "events", "--name", f"events@{host}"]


def _serve_edge() -> list[str]:
    required("MPU_TOKEN_SECRET")
    return ["mpu", "edge", "--host", bind_host(), "--port", str(port("MPU_EDGE_PORT"))]


def _serve_flower() -> list[str]:
    os.environ["FLOWER_BASIC_AUTH"] = flower_auth()  # Flower reads its options from FLOWER_* variables
    return ["mpu", "flower", "--host", bind_host(), "--port", str(port("MPU_FLOWER_PORT"))]


#: The services run by ``mpu`` (the app image), which reach the others by URL.
PYTHON_SERVICES = frozenset({"api", "worker", "events", "edge", "flower"})
SERVE: dict[str, Callable[[], list[str]]] = {
    "redis": _serve_redis,
    "janus": _serve_janus,
    "nginx": _serve_nginx,
    "api": _serve_api,
    "worker": _serve_worker,
    "events": _serve_events,
    "edge": _serve_edge,
    "flower": _serve_flower,
}


def _http_status(url: str, headers: Mapping[str, str] | None = None) -> int | None:
    """The HTTP status of GET ``url`` (never through a proxy), None when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT_SECONDS) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _redis_answers() -> bool:
    password = os.environ.get("MPU_REDIS_PASSWORD", "")
    try:
        with socket.create_connection(
            (probe_host(), port("MPU_REDIS_PORT")), timeout=PROBE_TIMEOUT_SECONDS
        ) as sock:
            if password:
                data = password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"PONG" not in reply and len(reply) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.endswith(b"+PONG\r\n") and not reply.startswith(b"-")


def _janus_answers() -> bool:
    from rtc_mpu.stack.local_stack import janus_info

    info = janus_info(f"http://{probe_host()}:{port('MPU_JANUS_PORT')}/janus", PROBE_TIMEOUT_SECONDS)
    plugins = info.get("plugins") if info else None
    return isinstance(plugins, dict) and "janus.plugin.videoroom" in plugins


def _nginx_answers() -> bool:
    host = probe_host()
    try:
        with socket.create_connection((host, port("MPU_RTMP_PORT")), timeout=PROBE_TIMEOUT_SECONDS):
            pass
    except OSError:
        return False
    return _http_status(f"http://{host}:{port('MPU_HLS_PORT')}/stat") == 200


def _celery_answers(app_module: str, prefix: str) -> bool:
    import importlib

    try:
        host = WORKER_HOST_FILE.read_text(encoding="ascii").strip()
    except OSError:
        return False
    app = importlib.import_module(app_module).app
    replies = app.control.ping(destination=[f"{prefix}@{host}"], timeout=PROBE_TIMEOUT_SECONDS / 2)
    return bool(replies)


def _flower_answers() -> bool:
    """Flower answers with its authentication on: 401 without credentials, 200 with the first ones."""
    base = f"http://{probe_host()}:{port('MPU_FLOWER_PORT')}"
    if _http_status(f"{base}/") != 401:
        return False
    first = flower_auth().split(",")[0]
    auth = "Basic " + base64.b64encode(first.encode()).decode()
    return _http_status(f"{base}/healthcheck", {"Authorization": auth}) == 200


HEALTH: dict[str, Callable[[], bool]] = {
    "redis": _redis_answers,
    "janus": _janus_answers,
    "nginx": _nginx_answers,
    "api": lambda: _http_status(f"http://{probe_host()}:{port('MPU_API_PORT')}/v1/health") == 200,
    "worker": lambda: _celery_answers("rtc_mpu.workers.celery_app", "mix"),
    "events": lambda: _celery_answers("rtc_mpu.workers.events_app", "events"),
    "edge": lambda: _http_status(f"http://{probe_host()}:{port('MPU_EDGE_PORT')}/healthz") == 200,
    "flower": _flower_answers,
}


def main(argv: list[str]) -> int:
    """``serve SERVICE`` (does not return on success) or ``health SERVICE``; 2 on bad usage or a
    configuration error (the log line names the variable), 1 when unhealthy."""
    if len(argv) != 2 or argv[0] not in ("serve", "health") or argv[1] not in SERVE:
        print(f"usage: entrypoint.py serve|health {'|'.join(SERVE)}", file=sys.stderr)
        return 2
    action, service = argv
    try:
        if service in PYTHON_SERVICES:
            environment = service_environment(os.environ)
            os.environ.clear()
            os.environ.update(environment)
        if action == "health":
            healthy = HEALTH[service]()
            print(f"{service}: {'healthy' if healthy else 'unhealthy'}")
            return 0 if healthy else 1
        command = SERVE[service]()
    except ConfigError as exc:
        print(f"entrypoint: {service}: {exc}", file=sys.stderr, flush=True)
        return 2
    except ValueError as exc:  # a malformed value found by the stack's own checks (token secret, ...)
        print(f"entrypoint: {service}: {exc}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as exc:  # a program is missing from the image (ServiceStartError)
        print(f"entrypoint: {service}: {exc}", file=sys.stderr, flush=True)
        return 1
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
