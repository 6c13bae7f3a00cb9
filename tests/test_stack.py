"""The local stack (``mpu stack up | down | status``): real Redis, Janus and nginx-rtmp on free ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_mpu.cli.main import main
from rtc_mpu.stack import local_stack
from rtc_mpu.stack.local_stack import (
    SERVICES,
    ServiceStartError,
    StackConfig,
    stack_down,
    stack_status,
    stack_up,
)
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.process import write_pid_file

#: The port variables, in the order of :func:`_ports`.
PORT_VARIABLES = ("MPU_REDIS_PORT", "MPU_JANUS_PORT", "MPU_RTMP_PORT", "MPU_HLS_PORT")


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _env(run_dir: Path) -> dict[str, str]:
    env = {"MPU_RUN_DIR": str(run_dir)}
    env.update((variable, str(port)) for variable, port in zip(PORT_VARIABLES, _free_ports(4), strict=True))
    return env


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        body: bytes = response.read()
        return body


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A foreign process (``sleep 30``) that the stack must never signal."""
    process = subprocess.Popen(["sleep", "30"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def config(tmp_path: Path) -> Iterator[StackConfig]:
    """A stack config on free loopback ports in a temporary run directory; stopped after the test."""
    config = StackConfig.from_env(_env(tmp_path / "run"))
    try:
        yield config
    finally:
        stack_down(config)


def _ports(config: StackConfig) -> list[int]:
    return [config.redis_port, config.janus_port, config.rtmp_port, config.hls_port]


@pytest.mark.integration  # starts (or needs) the real Redis, Janus and nginx-rtmp
@pytest.mark.timeout(60)
def test_up_status_down(
    config: StackConfig, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pid file left behind whose pid now belongs to another program: up starts Janus anyway, and
    # nothing signals that program.
    janus_pid_file = config.pid_file("janus")
    write_pid_file(janus_pid_file, sleeper.pid, ["/usr/bin/janus", "-F", "elsewhere"], [config.janus_port])

    statuses = stack_up(config)
    assert list(statuses) == list(SERVICES)
    assert all(s.ok and s.note == "started" and s.pid for s in statuses.values()), statuses
    pids = {name: s.pid for name, s in statuses.items()}
    assert sleeper.pid not in pids.values()
    assert statuses["redis"].urls == {"Redis": f"redis://127.0.0.1:{config.redis_port}/0"}
    assert statuses["nginx"].urls["HLS"] == f"http://127.0.0.1:{config.hls_port}/hls/<stream>.m3u8"

    # Each service answers for real.
    with socket.create_connection(("127.0.0.1", config.redis_port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"
    info = json.loads(_get(f"http://127.0.0.1:{config.janus_port}/janus/info"))
    assert info["janus"] == "server_info"
    assert set(info["plugins"]) == {"janus.plugin.videoroom"}
    assert set(info["transports"]) == {"janus.transport.http"}
    stat = ElementTree.fromstring(_get(f"http://127.0.0.1:{config.hls_port}/stat"))
    assert stat.tag == "rtmp"
    assert stat.findtext("pid") == str(pids["nginx"])
    assert _answers(config.rtmp_port)
    # Services are detached: a session of their own, not the test's.
    assert all(os.getsid(pid) == pid for pid in pids.values() if pid)

    # Idempotent: nothing restarted.
    again = stack_up(config)
    assert {name: s.pid for name, s in again.items()} == pids
    assert all(s.ok and s.note == "already running" for s in again.values()), again

    status = stack_status(config)
    assert all(s.ok for s in status.values()) and {n: s.pid for n, s in status.items()} == pids
    monkeypatch.setenv("MPU_RUN_DIR", str(config.run_dir))
    for variable, port in zip(PORT_VARIABLES, _ports(config), strict=True):
        monkeypatch.setenv(variable, str(port))
    assert main(["stack", "status"]) == 0

    down = stack_down(config)
    assert all(s.note == "stopped" and not s.running and not s.answering for s in down.values()), down
    assert not any(_alive(pid) for pid in pids.values() if pid)
    assert not any(_answers(port) for port in _ports(config))
    assert not any(config.pid_file(name).exists() for name in SERVICES)
    assert sleeper.poll() is None, "stack_down killed a process it did not start"
    assert main(["stack", "status"]) == 3


@pytest.mark.integration  # starts (or needs) the real Redis, Janus and nginx-rtmp
@pytest.mark.timeout(20)
def test_down_leaves_foreign_processes_alone(config: StackConfig, sleeper: subprocess.Popen[bytes]) -> None:
    # Every pid file names the foreign process: as a reused pid (another command line), as a record of
    # the right command but another start time, and as a bare pid.
    write_pid_file(config.pid_file("redis"), sleeper.pid, ["/usr/bin/redis-server", "redis.conf"])
    details = {"command": ["sleep", "30"], "start_time": 1, "ports": [config.janus_port]}
    config.pid_file("janus").write_text(f"{sleeper.pid}\n{json.dumps(details)}\n")
    config.pid_file("nginx").write_text(f"{sleeper.pid}\n")

    assert not any(s.running for s in stack_status(config).values())
    down = stack_down(config)
    assert all(s.note == "not running (stale pid file)" for s in down.values()), down
    assert sleeper.poll() is None, "stack_down killed a process it did not start"
    assert not any(config.pid_file(name).exists() for name in SERVICES)


@pytest.mark.integration  # starts (or needs) the real Redis, Janus and nginx-rtmp
@pytest.mark.timeout(20)
@pytest.mark.parametrize("variable", PORT_VARIABLES)
def test_port_in_use_is_a_clear_error(tmp_path: Path, variable: str) -> None:
    env = _env(tmp_path / "run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env[variable] = str(port)
        config = StackConfig.from_env(env)
        with pytest.raises(ServiceStartError) as error:
            stack_up(config)
    message = str(error.value)
    assert f"port {port}" in message and variable in message and "already in use" in message
    # Nothing was started.
    assert not any(config.pid_file(name).exists() for name in SERVICES)
    assert not any(_answers(p) for p in _ports(config) if p != port)


@pytest.mark.integration  # starts (or needs) the real Redis, Janus and nginx-rtmp
@pytest.mark.timeout(30)
def test_failed_start_stops_what_it_started(config: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # nginx starts but never passes its readiness check: Redis and Janus, started by the same call,
    # are stopped again and nothing is left behind.
    monkeypatch.setattr(local_stack, "_nginx_answers", lambda config: False)
    with pytest.raises(ServiceStartError, match=r"nginx \(started\) does not answer"):
        stack_up(config, timeout=1.0)
    assert not any(config.pid_file(name).exists() for name in SERVICES)
    assert not any(_answers(port) for port in _ports(config))


def test_config_from_env() -> None:
    default = StackConfig.from_env({})
    assert (default.run_dir, default.redis_port, default.janus_port) == (Path("run"), 6379, 8088)
    assert (default.rtmp_port, default.hls_port, default.rtp_port_range) == (1935, 8081, "20000-40000")
    assert default.janus_api_secret is None
    assert default.janus_url == "http://127.0.0.1:8088/janus"
    assert default.rtmp_url("demo") == "rtmp://127.0.0.1:1935/live/demo"
    assert default.hls_url("demo") == "http://127.0.0.1:8081/hls/demo.m3u8"
    custom = StackConfig.from_env(
        {"MPU_REDIS_PORT": "7000", "MPU_JANUS_API_SECRET": "s", "MPU_RTP_PORT_RANGE": "30000-30100"}
    )
    assert (custom.redis_port, custom.janus_api_secret, custom.rtp_port_range) == (7000, "s", "30000-30100")
    for name, value in [
        ("MPU_JANUS_PORT", "http"),
        ("MPU_RTMP_PORT", "70000"),
        ("MPU_RTP_PORT_RANGE", "9-1"),
    ]:
        with pytest.raises(ValueError, match=name):
            StackConfig.from_env({name: value})


def test_status_exit_code_when_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _env(tmp_path / "run").items():
        monkeypatch.setenv(name, value)
    assert main(["stack", "status"]) == 3
    monkeypatch.setenv("MPU_REDIS_PORT", "not-a-port")
    assert main(["stack", "down"]) == 2


def test_mpu_commands_adopt_the_stack_token_secret(tmp_path: Path) -> None:
    """``mpu stack up`` generates the secret into the run dir; the other commands read it from there
    when MPU_TOKEN_SECRET is unset, and never override a value that is set."""
    from rtc_mpu.stack.local_stack import ensure_token_secret
    from rtc_mpu.stack.secrets import adopt_stack_token_secret

    config = ensure_token_secret(StackConfig(run_dir=tmp_path))
    assert config.token_secret and (tmp_path / "token-secret").stat().st_mode & 0o777 == 0o600
    env: dict[str, str] = {"MPU_RUN_DIR": str(tmp_path)}
    assert adopt_stack_token_secret(env) == str(tmp_path / "token-secret")
    assert env["MPU_TOKEN_SECRET"] == config.token_secret
    assert StackConfig.from_env(env).token_secret == config.token_secret
    mine = {"MPU_RUN_DIR": str(tmp_path), "MPU_TOKEN_SECRET": "operator-chosen-secret-0123"}
    assert (
        adopt_stack_token_secret(mine) is None and mine["MPU_TOKEN_SECRET"] == "operator-chosen-secret-0123"
    )
    assert adopt_stack_token_secret({"MPU_RUN_DIR": str(tmp_path / "nowhere")}) is None
    again = ensure_token_secret(StackConfig(run_dir=tmp_path))
    assert again.token_secret == config.token_secret, "a second `up` keeps the first secret"
