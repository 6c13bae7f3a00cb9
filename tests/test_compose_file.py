"""docker-compose.yml, .env.example and docker/entrypoint.py read as data (no container, no server):
the rules of issue 16 that a file can break. ``make compose-test`` runs the containers themselves."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML (from schemathesis, a dev dependency) has no stubs here

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"redis", "janus", "nginx-rtmp", "api", "worker", "events", "edge", "flower"}


def load_entrypoint() -> ModuleType:
    """docker/entrypoint.py as a module (it is a script in the images, not part of the package)."""
    spec = importlib.util.spec_from_file_location("mpu_docker_entrypoint", ROOT / "docker" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


entrypoint = load_entrypoint()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return loaded


def test_every_service_is_there_with_health_restart_and_host_networking(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["network_mode"] == "host", name  # Janus' host candidates; ports from MPU_*_PORT
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python3", "/app/docker/entrypoint.py", "health"], name
        assert test[4] in entrypoint.HEALTH, name
        assert service["command"][0] == "serve" and service["command"][1] == test[4], name
        assert service["image"].startswith("localhost/rtc-mpu-"), name
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert "container_name" not in service, f"{name}: a fixed name cannot scale"


def test_each_image_is_a_stage_of_the_dockerfile(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for name, service in compose["services"].items():
        target = service["build"]["target"]
        assert target in stages, name
        assert service["image"].split(":")[0] == f"localhost/rtc-mpu-{target}", name


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services and rule == {"condition": "service_healthy"}, (name, dependency)
    assert set(services["api"]["depends_on"]) == {"redis", "janus"}
    assert set(services["worker"]["depends_on"]) == {"redis", "janus"}


def test_data_that_must_survive_lives_in_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "recordings:/var/lib/mpu/recordings" in services["worker"]["volumes"]
    assert "hls:/var/lib/mpu/hls" in services["worker"]["volumes"]
    assert "hls:/var/lib/mpu/hls:ro" in services["nginx-rtmp"]["volumes"]
    assert set(compose["volumes"]) == {"redis-data", "recordings", "hls", "media"}
    assert services["worker"]["environment"]["MPU_RECORDINGS_DIR"] == "/var/lib/mpu/recordings"
    # The API lists, serves and expires the recordings the workers write: the same volume.
    assert "recordings:/var/lib/mpu/recordings" in services["api"]["volumes"]
    assert services["api"]["environment"]["MPU_RECORDINGS_DIR"] == "/var/lib/mpu/recordings"
    assert services["worker"]["environment"]["MPU_MEDIA_DIR"] == "/var/lib/mpu/media"


def test_workers_scale_and_stop_gracefully(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["scale"] == "${MPU_WORKERS:-1}"
    assert worker["stop_signal"] == "SIGTERM"
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace is not None and int(grace.group(1)) >= 30, "a mix needs time to hand over"


def test_no_secret_has_a_value_in_the_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for name in ("MPU_TOKEN_SECRET", "MPU_ACCESS_KEYS", "MPU_FLOWER_AUTH", "MPU_REDIS_PASSWORD"):
        assert name not in text, f"{name} comes only from the env file"
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    for name in ("MPU_TOKEN_SECRET", "MPU_ACCESS_KEYS", "MPU_FLOWER_AUTH", "MPU_REDIS_PASSWORD"):
        assert example[name] == "", f"{name} has no default in .env.example"
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert "SECRET" not in dockerfile and "ACCESS_KEYS" not in dockerfile
    # Every service but the root-only parts runs as the unprivileged user.
    assert dockerfile.count("USER mpu") == 4


def test_the_images_install_the_stacks_package_groups() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    script = (ROOT / "scripts" / "install-system-deps.sh").read_text(encoding="utf-8")
    for group in ("image-redis", "image-janus", "image-nginx", "image-app"):
        assert f"install-system-deps.sh {group}" in dockerfile
        assert f"  {group})" in script


def test_janus_command_logs_to_stdout_and_takes_the_nat_mapping() -> None:
    command = ["/usr/bin/janus", "-F", "/c", "-C", "/c/janus.jcfg", "-N", "-L", "/r/janus.log"]
    assert entrypoint.janus_command(command, "") == ["/usr/bin/janus", "-F", "/c", "-C", "/c/janus.jcfg"]
    assert entrypoint.janus_command(command, "203.0.113.7")[-1] == "--nat-1-1=203.0.113.7"
    with pytest.raises(entrypoint.ConfigError, match="MPU_JANUS_NAT_1_1"):
        entrypoint.janus_command(command, "203.0.113.7; rm -rf /")


def test_redis_command_persists_append_only() -> None:
    command = entrypoint.redis_command(["/usr/bin/redis-server", "/r/redis.conf"], Path("/data"), "")
    assert command[:2] == ["/usr/bin/redis-server", "/r/redis.conf"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options == {"--dir": "/data", "--appendonly": "yes", "--appendfsync": "everysec", "--logfile": ""}
    with_password = entrypoint.redis_command(["redis-server", "c"], Path("/data"), "pw")
    assert with_password[-2:] == ["--requirepass", "pw"]


def test_service_environment_fills_the_urls_and_drops_empty_settings() -> None:
    env = entrypoint.service_environment(
        {"MPU_REDIS_PORT": "16379", "MPU_JANUS_PORT": "18088", "MPU_LOG_FORMAT": "", "PATH": "/bin"}
    )
    assert env["MPU_REDIS_URL"] == "redis://127.0.0.1:16379/0"
    assert env["MPU_JANUS_URL"] == "http://127.0.0.1:18088/janus"
    assert env["MPU_EDGE_URL"] == "http://127.0.0.1:8090"
    assert "MPU_LOG_FORMAT" not in env and env["PATH"] == "/bin"
    remote = entrypoint.service_environment(
        {"MPU_SERVICES_HOST": "10.0.0.5", "MPU_REDIS_PASSWORD": "p@ss/word", "MPU_BIND_HOST": "0.0.0.0"}
    )
    assert remote["MPU_REDIS_URL"] == "redis://:p%40ss%2Fword@10.0.0.5:6379/0"
    given = entrypoint.service_environment({"MPU_REDIS_URL": "redis://r:1/2"})
    assert given["MPU_REDIS_URL"] == "redis://r:1/2"
    with pytest.raises(entrypoint.ConfigError, match="MPU_REDIS_PORT"):
        entrypoint.service_environment({"MPU_REDIS_PORT": "http"})


@pytest.mark.parametrize("value", ["", "nopassword", "user:", ":pw", "a:b,c"])
def test_flower_never_starts_open(value: str) -> None:
    with pytest.raises(entrypoint.ConfigError, match="MPU_FLOWER_AUTH"):
        entrypoint.flower_auth({"MPU_FLOWER_AUTH": value})


def test_flower_auth_accepts_user_password_pairs() -> None:
    assert entrypoint.flower_auth({"MPU_FLOWER_AUTH": "ops:pw,dev:x:y"}) == "ops:pw,dev:x:y"


def test_each_worker_replica_names_itself() -> None:
    first, second = entrypoint.worker_host({}), entrypoint.worker_host({})
    assert first != second and re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{6}", first)
    assert entrypoint.worker_host({"MPU_WORKER_HOST": "mixer-3"}) == "mixer-3"
    with pytest.raises(entrypoint.ConfigError, match="MPU_WORKER_HOST"):
        entrypoint.worker_host({"MPU_WORKER_HOST": "a b"})


def test_unknown_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint.main(["serve"]) == 2
    assert entrypoint.main(["start", "redis"]) == 2
    assert "usage" in capsys.readouterr().err
