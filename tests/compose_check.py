"""The containers, proved by running them (``make compose-test`` → ``scripts/compose-test.sh`` → this).

``python -m tests.compose_check`` expects the images built (the script builds them) and podman-compose
on ``MPU_PODMAN_COMPOSE``. It brings the compose project up on the ports of the ``MPU_*_PORT`` variables
(defaults below, apart from ``mpu stack``'s and from the ephemeral range the test fixtures' free ports
come from), polls every service's healthcheck with ``podman healthcheck run`` (podman schedules none
here), publishes 2 users from this machine with ``mpu publish`` (publish tokens from the containers'
API) into the containers' Janus, starts a task through the containers' API, decodes the RTMP output as a
viewer (both users' panes and tones), scales the workers to 2, SIGKILLs the worker container running
the task and checks the show resumes on the other one, brings a second worker back and stops the one
running the task with SIGTERM (the show is handed over, the container exits 0), then takes the project
down (containers and volumes). Before ``up`` it validates the file with Debian's docker-compose and
checks that the api and Flower refuse to start without their credentials. It prints the times it
measures. Exit code 0 when every check held.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import av
import numpy as np
import numpy.typing as npt

from rtc_mpu.stack.demo_media import COLORS, TONES

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
#: The compose test's ports: below the ephemeral range (32768-60999 here) that free_port() draws the
#: test suite's fixtures from, and apart from mpu stack's defaults (6379, 8088, 1935, 8081, ...).
TEST_PORTS = {
    "MPU_REDIS_PORT": 16379,
    "MPU_JANUS_PORT": 18088,
    "MPU_RTMP_PORT": 11935,
    "MPU_HLS_PORT": 18081,
    "MPU_API_PORT": 18080,
    "MPU_EDGE_PORT": 18090,
    "MPU_FLOWER_PORT": 15555,
}
#: Janus' UDP media ports in the test (the suite's Janus fixtures use 43000-44999).
TEST_RTP_RANGE = "24000-24999"
SERVICES = ("redis", "janus", "nginx-rtmp", "api", "worker", "events", "edge", "flower")
APP = "ct"
#: Seconds a service may take to become healthy after ``up`` (generous: a loaded 2-core machine).
HEALTHY_TIMEOUT_SECONDS = 180.0
#: Sampling points of layout 2 (user1 left, user2 right), as in tests/test_service_e2e.py: 60% across
#: and 15% down each user's picture, clear of its label and its moving bar.
PANES = ((0.30, 0.326), (0.80, 0.326))


class CheckError(AssertionError):
    """A check of the compose test did not hold."""


def log(message: str) -> None:
    """One progress line on stdout."""
    print(f"compose-test: {message}", flush=True)


def run(
    command: Sequence[str],
    timeout_seconds: float = 120.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (text output captured); raise CheckError when ``check`` and it fails."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if check and result.returncode != 0:
        raise CheckError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def wait_until(
    condition: Callable[[], bool], timeout_seconds: float, what: str, interval: float = 0.5
) -> float:
    """Poll ``condition``; return the seconds it took, or raise CheckError naming ``what``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_seconds:
            raise CheckError(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


@dataclass
class Project:
    """The compose project under test: its name, env file and the commands that drive it."""

    name: str
    env_file: Path
    ports: dict[str, int]
    settings: dict[str, str]
    podman_compose: str
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['MPU_API_PORT']}"

    @property
    def janus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['MPU_JANUS_PORT']}/janus"

    def rtmp_url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.ports['MPU_RTMP_PORT']}/live/{stream}"

    def compose(self, *args: str, timeout_seconds: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``podman-compose -p NAME --env-file FILE -f docker-compose.yml ARGS``."""
        command = [self.podman_compose, "-p", self.name, "--env-file", str(self.env_file)]
        command += ["-f", str(COMPOSE_FILE), *args]
        return run(command, timeout_seconds, env={**self.environ, "MPU_ENV_FILE": str(self.env_file)})

    def containers(self, service: str) -> list[str]:
        """Names of the project's running containers of ``service``."""
        result = run(
            [
                "podman",
                "ps",
                "--filter",
                f"label=io.podman.compose.project={self.name}",
                "--filter",
                f"label=io.podman.compose.service={service}",
                "--format",
                "{{.Names}}",
            ]
        )
        return sorted(line for line in result.stdout.split() if line)

    def healthy(self, container: str) -> bool:
        """``podman healthcheck run`` says the container is healthy."""
        return run(["podman", "healthcheck", "run", container], 60, check=False).returncode == 0

    def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """A JSON request to the containers' API with the test's access key (10 s timeout)."""
        key = self.settings["MPU_ACCESS_KEYS"]
        request = urllib.request.Request(
            self.api + path,
            method=method,
            data=json.dumps(dict(body)).encode() if body is not None else None,
            headers={
                "Authorization": "Basic " + base64.b64encode(key.encode()).decode(),
                "Content-Type": "application/json",
            },
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def task(self, task_id: str) -> dict[str, Any]:
        """GET the task (CheckError unless 200)."""
        status, body = self.call("GET", f"/v1/apps/{APP}/tasks/{task_id}")
        if status != 200:
            raise CheckError(f"GET task {task_id}: HTTP {status} {body}")
        return body

    def logs(self, container: str, lines: int = 40) -> str:
        """The end of a container's log."""
        result = run(["podman", "logs", "--tail", str(lines), container], 30, check=False)
        return result.stdout + result.stderr


def write_env_file(directory: Path, ports: Mapping[str, int]) -> tuple[Path, dict[str, str]]:
    """The project's env file with fresh random secrets (never printed)."""
    settings = {
        "MPU_TOKEN_SECRET": secrets.token_urlsafe(32),
        "MPU_ACCESS_KEYS": f"compose-test:{secrets.token_urlsafe(24)}",
        "MPU_FLOWER_AUTH": f"ops:{secrets.token_urlsafe(24)}",
        "MPU_BIND_HOST": "127.0.0.1",
        "MPU_RTP_PORT_RANGE": os.environ.get("MPU_RTP_PORT_RANGE") or TEST_RTP_RANGE,
        "MPU_LOG_LEVEL": "INFO",
        "MPU_IMAGE_TAG": os.environ.get("MPU_IMAGE_TAG") or "latest",
        **{name: str(value) for name, value in ports.items()},
    }
    path = directory / "compose.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="ascii")
    path.chmod(0o600)
    return path, settings


def test_ports() -> dict[str, int]:
    """The ports: ``MPU_*_PORT`` from the environment, else :data:`TEST_PORTS`."""
    ports = {}
    for name, default in TEST_PORTS.items():
        text = os.environ.get(name, "").strip()
        ports[name] = int(text) if text else default
    return ports


def check_config(project: Project) -> None:
    """``docker-compose -f docker-compose.yml config`` (Debian's 1.29.2) accepts the file."""
    binary = shutil.which("docker-compose")
    if binary is None:
        raise CheckError("docker-compose is not installed: scripts/install-system-deps.sh compose")
    run(
        [binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        60,
        env={**project.environ, "MPU_ENV_FILE": str(project.env_file)},
    )
    log("docker-compose config: the file is valid")


def check_refusals(project: Project) -> None:
    """The api container exits with a clear line without or with malformed MPU_ACCESS_KEYS; Flower
    without MPU_FLOWER_AUTH; nothing runs as root."""
    image = f"localhost/rtc-mpu-app:{project.settings['MPU_IMAGE_TAG']}"
    secret = project.settings["MPU_TOKEN_SECRET"]
    for keys in ("", "no-colon-here"):
        result = run(
            [
                *("podman", "run", "--rm", "--network", "host", "-e", f"MPU_TOKEN_SECRET={secret}"),
                *("-e", f"MPU_ACCESS_KEYS={keys}", "-e", "MPU_API_PORT=1", image, "serve", "api"),
            ],
            120,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode == 0 or "MPU_ACCESS_KEYS" not in output:
            raise CheckError(
                f"the api started with MPU_ACCESS_KEYS={keys!r}: exit {result.returncode} {output}"
            )
        log(f"api with MPU_ACCESS_KEYS={keys!r}: exit {result.returncode}: {output.strip().splitlines()[-1]}")
    result = run(["podman", "run", "--rm", "--network", "host", image, "serve", "flower"], 60, check=False)
    output = result.stdout + result.stderr
    if result.returncode == 0 or "MPU_FLOWER_AUTH" not in output:
        raise CheckError(f"flower started without MPU_FLOWER_AUTH: {output}")
    log(f"flower without MPU_FLOWER_AUTH: exit {result.returncode}: {output.strip().splitlines()[-1]}")


def wait_healthy(project: Project, services: Sequence[str]) -> float:
    """Poll every container of ``services`` with ``podman healthcheck run`` until all are healthy;
    returns the seconds it took."""
    pending = {c for s in services for c in project.containers(s)}
    missing = [s for s in services if not project.containers(s)]
    if missing:
        raise CheckError(f"no running container for {missing}")
    start = time.monotonic()
    while pending:
        pending = {c for c in pending if not project.healthy(c)}
        if pending and time.monotonic() - start > HEALTHY_TIMEOUT_SECONDS:
            raise CheckError(
                f"not healthy after {HEALTHY_TIMEOUT_SECONDS:.0f} s: {sorted(pending)}\n"
                + "\n".join(f"--- {c}\n{project.logs(c)}" for c in sorted(pending))
            )
        if pending:
            time.sleep(0.5)
    return time.monotonic() - start


def check_containers(project: Project) -> None:
    """Non-root everywhere; Redis persists append-only into its volume; Flower asks for credentials."""
    for service in SERVICES:
        for container in project.containers(service):
            uid = run(["podman", "exec", container, "id", "-u"], 30).stdout.strip()
            if uid == "0":
                raise CheckError(f"{container} runs as root")
    redis = project.containers("redis")[0]
    appendonly = run(
        [
            "podman",
            "exec",
            redis,
            "redis-cli",
            "-p",
            str(project.ports["MPU_REDIS_PORT"]),
            "config",
            "get",
            "appendonly",
        ]
    ).stdout.split()
    if appendonly[-1:] != ["yes"]:
        raise CheckError(f"redis appendonly is {appendonly}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(f"http://127.0.0.1:{project.ports['MPU_FLOWER_PORT']}/", timeout=5)
        raise CheckError("Flower answered without credentials")
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise CheckError(f"Flower without credentials: HTTP {exc.code}") from None
    log(
        "every container runs as a non-root user; redis appendonly=yes; "
        "Flower answers 401 without credentials"
    )


@contextlib.contextmanager
def publishing(project: Project, channel: str, users: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``mpu publish`` of ``users`` (user i sends COLORS[i] and TONES[i]) with publish tokens from the
    containers' API, for as long as the block runs."""
    tokens = []
    for user in users:
        status, body = project.call(
            "POST",
            f"/v1/apps/{APP}/tokens",
            {"channel_id": channel, "user_id": user, "ttl_seconds": 3600, "role": "publish"},
        )
        if status != 201:
            raise CheckError(f"publish token for {user}: HTTP {status} {body}")
        tokens.append(str(body["token"]))
    command = [sys.executable, "-m", "rtc_mpu.cli.main", "publish", "--janus", project.janus_url]
    command += ["--app", APP, "--channel", channel, "--size", "320x180", "--duration", "900"]
    for token in tokens:
        command += ["--token", token]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while len([s for s in seen if "publishing into" in s]) < len(users):
            if process.poll() is not None or time.monotonic() > deadline:
                rest = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise CheckError(f"mpu publish did not publish: {''.join(seen)}{rest}")
            assert process.stdout is not None
            seen.append(process.stdout.readline().decode(errors="replace"))
        log(f"mpu publish: {', '.join(users)} publishing into the containers' Janus ({channel})")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def stream_publishers(project: Project, stream: str) -> int:
    """How many clients publish ``stream`` on the containers' nginx-rtmp (its /stat page)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{project.ports['MPU_HLS_PORT']}/stat", timeout=5) as response:
        root = ElementTree.fromstring(response.read())
    for s in root.iter("stream"):
        if s.findtext("name") == stream:
            return sum(1 for c in s.iter("client") if c.find("publishing") is not None)
    return 0


@dataclass
class Watched:
    """What a viewer decoded: pictures as ``(H, W, 3)`` uint8 RGB (every 5th frame), stereo float32
    audio ``(2, n)`` at 48 kHz, and the monotonic time of the first picture."""

    pictures: list[npt.NDArray[np.uint8]]
    audio: npt.NDArray[np.float32]
    first_picture_at: float


def watch(url: str, seconds: float) -> Watched:
    """Play ``url`` as a viewer would for ``seconds`` of wall time after the first picture."""
    pictures: list[npt.NDArray[np.uint8]] = []
    audio: list[npt.NDArray[np.float32]] = []
    first = 0.0
    frames = 0
    with av.open(url, options={"analyzeduration": "2000000"}, timeout=(15.0, 5.0)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        for frame in container.decode():
            if isinstance(frame, av.VideoFrame):
                if not first:
                    first = time.monotonic()
                if frames % 5 == 0:
                    pictures.append(frame.to_ndarray(format="rgb24").astype(np.uint8, copy=False))
                frames += 1
            elif isinstance(frame, av.AudioFrame):
                audio.extend(f.to_ndarray().astype(np.float32) for f in resampler.resample(frame))
            if first and time.monotonic() - first > seconds:
                break
    if not pictures or not audio:
        raise CheckError(
            f"the viewer decoded {len(pictures)} pictures and {len(audio)} audio frames of {url}"
        )
    return Watched(pictures, np.concatenate(audio, axis=1), first)


def colour_at(picture: npt.NDArray[np.uint8], x: float, y: float) -> npt.NDArray[np.float64]:
    """Mean RGB of a 10x10 patch at fractions (x, y) of the picture."""
    h, w = picture.shape[:2]
    cx, cy = int(x * w), int(y * h)
    patch: npt.NDArray[np.float64] = picture[cy - 5 : cy + 5, cx - 5 : cx + 5].reshape(-1, 3).mean(axis=0)
    return patch


def tone_level_db(samples: npt.NDArray[np.float32], sample_rate: int, freq: float) -> float:
    """Level in dB (re a full-scale sine) of the spectrum's peak within 10 Hz of ``freq``; first channel."""
    x = samples[0].astype(np.float64)
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window)) / (window.sum() / 2)
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    band = (freqs > freq - 10) & (freqs < freq + 10)
    return float(20 * np.log10(spectrum[band].max() + 1e-12))


def check_show(watched: Watched, what: str) -> None:
    """Both users' panes (layout 2: user1 left, user2 right) in the last picture, both tones in the audio."""
    last = watched.pictures[-1]
    for index, (x, y) in enumerate(PANES):
        colour = colour_at(last, x, y)
        if np.abs(colour - np.array(COLORS[index])).max() > 25:
            raise CheckError(
                f"{what}: pane {index + 1} is {colour.round()}, not user{index + 1}'s {COLORS[index]}"
            )
    levels = [tone_level_db(watched.audio, 48000, f) for f in TONES[:2]]
    if min(levels) <= -25:
        raise CheckError(f"{what}: tone levels {levels} dB (both must be above -25 dB)")
    log(
        f"{what}: {len(watched.pictures) * 5} frames decoded, panes user1 {COLORS[0]} and user2 {COLORS[1]} "
        f"seen, tones {TONES[0]:g} Hz {levels[0]:.1f} dB and {TONES[1]:g} Hz {levels[1]:.1f} dB"
    )


def worker_hosts(project: Project) -> dict[str, str]:
    """Each running worker container's ``MPU_WORKER_HOST`` (its name in task records), by container."""
    hosts = {}
    for container in project.containers("worker"):
        hosts[container] = run(
            ["podman", "exec", container, "cat", "/tmp/mpu/worker-host"], 30
        ).stdout.strip()
    return hosts


def graceful_handover(project: Project, stream: str, timings: dict[str, float]) -> None:
    """Back to 2 workers (``up -d`` recreates the killed one), then ``podman stop`` (SIGTERM) the worker
    running the task: it hands the show over to the other and exits 0 within its grace period."""
    started = time.monotonic()
    project.compose("up", "-d")
    wait_until(lambda: len(project.containers("worker")) == 2, 60, "the second worker container again")
    wait_healthy(project, ["worker"])
    log(f"2 worker containers again, healthy {time.monotonic() - started:.1f} s after `up -d`")
    hosts = worker_hosts(project)
    before = project.task("show")
    host = str(before["worker"]).rsplit(":", 1)[0]
    victim = next((c for c, h in hosts.items() if h == host), None)
    if victim is None:
        raise CheckError(f"task runs on {before['worker']!r}, which is none of {hosts}")
    stopped = time.monotonic()
    stopping = subprocess.Popen(
        ["podman", "stop", "--time", "60", victim], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    moved: dict[str, Any] = {}

    def moved_elsewhere() -> bool:
        moved.clear()
        moved.update(project.task("show"))
        worker = str(moved.get("worker") or "")
        return (
            moved["status"] == 1
            and moved["restarts"] > before["restarts"]
            and bool(worker)
            and not worker.startswith(f"{host}:")
        )

    wait_until(moved_elsewhere, 60, "the show handed over on SIGTERM", interval=0.1)
    timings["sigterm_to_resumed_seconds"] = time.monotonic() - stopped
    stopping.wait(timeout=90)
    timings["sigterm_to_container_exit_seconds"] = time.monotonic() - stopped
    code = run(["podman", "inspect", "--format", "{{.State.ExitCode}}", victim], 30).stdout.strip()
    if code != "0":
        raise CheckError(f"{victim} exited {code} on SIGTERM (a graceful stop exits 0)")
    log(
        f"SIGTERM to {victim}: the show resumed on {moved['worker']} after "
        f"{timings['sigterm_to_resumed_seconds']:.1f} s; the container exited 0 after "
        f"{timings['sigterm_to_container_exit_seconds']:.1f} s"
    )
    check_show(watch(project.rtmp_url(stream), 4.0), "after the SIGTERM handover")


def scenario(project: Project, timings: dict[str, float]) -> None:
    """Up, publish, task, watch, scale, kill, resume, watch (see the module docstring)."""
    started = time.monotonic()
    project.compose("up", "-d")
    wait_healthy(project, SERVICES)
    timings["up_to_healthy_seconds"] = time.monotonic() - started
    log(f"all {len(SERVICES)} services healthy {timings['up_to_healthy_seconds']:.1f} s after `up -d`")
    check_containers(project)

    channel = f"ct-{secrets.token_hex(3)}"
    stream = f"ct-{secrets.token_hex(4)}"
    with publishing(project, channel, ["user1", "user2"]):
        status, task = project.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": "show",
                "channel_id": channel,
                "stream_url": project.rtmp_url(stream),
                "layout_ids": [2],
                "media_encode": 1,
            },
        )
        if status != 201:
            raise CheckError(f"StartMPUTask: HTTP {status} {task}")
        posted = time.monotonic()
        wait_until(
            lambda: (t := project.task("show"))["status"] == 1 and len(t["users"]) == 2,
            60,
            "the task running with 2 users",
        )
        log(f"task running with both users {time.monotonic() - posted:.1f} s after the POST")
        check_show(watch(project.rtmp_url(stream), 4.0), "before the kill")

        scaled = time.monotonic()
        project.environ["MPU_WORKERS"] = "2"  # the worker's `scale:` (podman-compose's down then knows both)
        project.compose("up", "-d")
        wait_until(lambda: len(project.containers("worker")) == 2, 60, "a second worker container")
        wait_healthy(project, ["worker"])
        timings["scale_to_healthy_seconds"] = time.monotonic() - scaled
        hosts = worker_hosts(project)
        if len(set(hosts.values())) != 2:
            raise CheckError(f"the worker replicas do not have distinct names: {hosts}")
        log(
            f"2 worker containers healthy {timings['scale_to_healthy_seconds']:.1f} s "
            f"after `MPU_WORKERS=2 up -d`: {hosts}"
        )

        running = project.task("show")
        host = str(running["worker"]).rsplit(":", 1)[0]
        victims = [c for c, h in hosts.items() if h == host]
        if len(victims) != 1:
            raise CheckError(f"task runs on {running['worker']!r}, which is none of {hosts}")
        victim = victims[0]
        # SIGKILL and remove at once: no goodbye, no lease release, and no restart by the restart policy.
        killed = time.monotonic()
        run(["podman", "rm", "--force", "--time", "0", victim], 60)
        log(f"SIGKILLed {victim} (mix@{host}), which ran the task")
        resumed: dict[str, Any] = {}

        def resumed_elsewhere() -> bool:
            resumed.clear()
            resumed.update(project.task("show"))
            worker = str(resumed.get("worker") or "")
            return (
                resumed["status"] == 1
                and resumed["restarts"] >= 1
                and bool(worker)
                and not worker.startswith(f"{host}:")
            )

        wait_until(resumed_elsewhere, 90, "the task resumed on the other worker", interval=0.1)
        timings["kill_to_resumed_seconds"] = time.monotonic() - killed
        log(f"task resumed on {resumed['worker']} {timings['kill_to_resumed_seconds']:.1f} s after the kill")
        after = watch(project.rtmp_url(stream), 4.0)
        timings["kill_to_first_picture_seconds"] = after.first_picture_at - killed
        check_show(after, "after the kill")
        most = 0
        for _ in range(10):  # never two pushes to the URL
            most = max(most, stream_publishers(project, stream))
            time.sleep(0.1)
        if most != 1:
            raise CheckError(f"{most} clients publish the stream (one push at a time)")
        graceful_handover(project, stream, timings)
        status, body = project.call("DELETE", f"/v1/apps/{APP}/tasks/show")
        if status != 200:
            raise CheckError(f"StopMPUTask: HTTP {status} {body}")
        wait_until(lambda: project.task("show")["state"] == "ended", 30, "the task ended")
        log("task stopped and ended")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the compose test; 0 when every check held."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", default=os.environ.get("MPU_COMPOSE_PROJECT") or "mpu-compose-test")
    parser.add_argument("--keep", action="store_true", help="leave the project up (debugging)")
    args = parser.parse_args(argv)
    podman_compose = os.environ.get("MPU_PODMAN_COMPOSE") or str(
        REPO_ROOT / "build/compose-venv/bin/podman-compose"
    )
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mpu-compose-") as tmp:
        ports = test_ports()
        env_file, settings = write_env_file(Path(tmp), ports)
        project = Project(args.project, env_file, ports, settings, podman_compose)
        project.environ["MPU_WORKERS"] = "1"
        if project.containers("redis") or project.containers("worker"):
            raise CheckError(
                f"project {args.project} is already up: {podman_compose} -p {args.project} down -v"
            )
        check_config(project)
        check_refusals(project)
        ok = False
        try:
            scenario(project, timings)
            ok = True
        except CheckError as exc:
            print(f"compose-test: FAILED: {exc}", file=sys.stderr, flush=True)
            for service in SERVICES:
                for container in project.containers(service):
                    print(f"--- {container}\n{project.logs(container)}", file=sys.stderr)
        finally:
            if not args.keep:
                project.compose("down", "-v", "--timeout", "20", timeout_seconds=300)
                leftovers = run(
                    [
                        "podman",
                        "ps",
                        "-a",
                        "--filter",
                        f"label=io.podman.compose.project={args.project}",
                        "-q",
                    ]
                ).stdout.split()
                volumes = run(
                    [
                        "podman",
                        "volume",
                        "ls",
                        "--filter",
                        f"label=io.podman.compose.project={args.project}",
                        "-q",
                    ]
                ).stdout.split()
                log(f"down -v: {len(leftovers)} containers and {len(volumes)} volumes left")
                if leftovers or volumes:
                    ok = False
                    run(["podman", "rm", "--force", "--time", "5", *leftovers], 120, check=False)
                    run(["podman", "volume", "rm", "--force", *volumes], 60, check=False)
    for name, value in timings.items():
        print(f"compose-test: {name} = {value:.1f}")
    print(f"compose-test: {'PASSED' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
