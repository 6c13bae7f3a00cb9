"""``mpu demo``: the whole service on this machine, mixing a real WebRTC channel anyone can watch.

1. Brings the local stack up like ``mpu stack up`` (Redis, Janus, nginx-rtmp; ports from the
   ``MPU_*`` variables, see README).
2. Starts the API (``mpu api`` on ``MPU_API_PORT``, default 8080), one worker (``mpu worker``) and
   Flower (``MPU_FLOWER_PORT``, default 5555) as child processes, logging to ``run/*.log``.
3. Publishes user1 into channel ``demo`` of app ``demo`` over WebRTC (with a publish token the API
   issues: Janus runs with token authentication), starts a mix task through the REST API with
   LayoutIds [1, 2] pushing to ``rtmp://127.0.0.1:<port>/live/demo``, and publishes user2 three
   seconds later, so the mix switches from one pane to side by side.
4. Prints where to watch, writes a PNG snapshot of what a viewer receives, and runs until Ctrl-C or
   ``DURATION`` seconds; then stops the task through the API, its processes, and the stack if it
   started it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av

from rtc_mpu.mixer.sources.janus_http import JanusError
from rtc_mpu.spec.tokens import room_name
from rtc_mpu.stack.local_stack import StackConfig, stack_down, stack_up
from rtc_mpu.stack.ports import wait_for_port
from rtc_mpu.stack.process import ServiceStartError
from rtc_mpu.stack.publisher import Publisher, synthetic_tracks

log = logging.getLogger("mpu.demo")

#: Seconds between two demo users joining (so the layout switch is visible).
JOIN_INTERVAL = 3.0
#: The access key the demo gives its API when MPU_ACCESS_KEYS is not set.
DEMO_KEY, DEMO_SECRET = "demo", "demo-secret"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the ``mpu`` parser."""
    p = subparsers.add_parser("demo", help="run the whole service locally, mixing a WebRTC channel to watch")
    p.add_argument("--users", type=int, default=2, help="participants, 1..9 (default 2)")
    p.add_argument(
        "--duration", type=float, default=None, help="seconds, 0 = until Ctrl-C (default: env DURATION)"
    )
    p.add_argument(
        "--media-encode", type=int, default=27, help="MediaEncode id (default 27: 1280x720 30 fps)"
    )
    p.set_defaults(func=run)


def save_snapshot(url: str, path: Path, timeout: float = 15.0) -> bool:
    """Pull ``url`` as a viewer, decode one frame and write it as PNG. Returns False on failure."""
    try:
        with av.open(url, options={"analyzeduration": "2000000"}, timeout=timeout) as container:
            for frame in container.decode(video=0):
                image = frame.reformat(format="rgb24")
                encoder = av.CodecContext.create("png", "w")
                encoder.width, encoder.height, encoder.pix_fmt = image.width, image.height, "rgb24"
                path.write_bytes(b"".join(bytes(p) for p in encoder.encode(image)))
                return True
    except (av.error.FFmpegError, OSError) as exc:
        log.warning("snapshot failed: %s", exc)
    return False


class ApiClient:
    """A tiny client of the REST API with HTTP Basic auth (10 s timeouts): the demo's, and the one the
    benchmarks and the end-to-end tests use."""

    def __init__(self, base: str, key: str, secret: str) -> None:
        self.base = base
        #: What to pass to ``curl -u``: the demo's own key in full, any other key without its secret.
        self.credentials = (
            f"{key}:{secret}" if (key, secret) == (DEMO_KEY, DEMO_SECRET) else f"{key}:<secret>"
        )
        self.auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()

    def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send a JSON request; returns (HTTP status, decoded body), error statuses included."""
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(dict(body)).encode() if body is not None else None,
            headers={"Authorization": self.auth, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    if not 1 <= args.users <= 9:
        print("mpu demo: --users must be 1..9", file=sys.stderr)
        return 2
    try:
        config = StackConfig.from_env()
        duration = args.duration if args.duration is not None else float(os.environ.get("DURATION") or 0)
        api_port = int(os.environ.get("MPU_API_PORT") or 8080)
        flower_port = int(os.environ.get("MPU_FLOWER_PORT") or 5555)
    except ValueError as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 2
    try:
        statuses = stack_up(config)
        config = StackConfig.from_env()  # with the token secret `up` may have generated
    except (ServiceStartError, ValueError) as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 1
    started_here = all(status.note == "started" for status in statuses.values())
    run_dir = config.run_dir.resolve()
    env = dict(os.environ)
    env.setdefault("MPU_ACCESS_KEYS", f"{DEMO_KEY}:{DEMO_SECRET}")
    env.update(MPU_REDIS_URL=config.redis_url, MPU_JANUS_URL=config.janus_url)
    if config.token_secret:
        env["MPU_TOKEN_SECRET"] = config.token_secret
    key, secret = env["MPU_ACCESS_KEYS"].split(",")[0].split(":")[:2]
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in (
            ("api", ["api", "--port", str(api_port)]),
            ("worker", ["worker", "--name", "demo@%h"]),
            ("flower", ["flower", "--port", str(flower_port)]),
            ("edge", ["edge"]),
        ):
            with open(run_dir / f"{name}.log", "wb") as out:
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "rtc_mpu.cli.main", *command],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        if not wait_for_port("127.0.0.1", api_port, 20):
            print(f"mpu demo: the API did not start; see {run_dir / 'api.log'}", file=sys.stderr)
            return 1
        api = ApiClient(f"http://127.0.0.1:{api_port}", key, secret)
        return asyncio.run(_demo(args, config, api, duration, flower_port))
    finally:
        for child in reversed(children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        if started_here:
            stack_down(config)
        else:
            print("demo: the stack was already running; leaving it up (`mpu stack down` stops it)")


async def _demo(
    args: argparse.Namespace, config: StackConfig, api: ApiClient, duration: float, flower_port: int
) -> int:
    url = config.rtmp_url("demo")
    room = room_name("demo", "demo")
    snapshot = config.run_dir.resolve() / "demo-snapshot.png"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    publishers: list[Publisher] = []

    async def publish_token(user: str) -> str | None:
        """A publish token for ``user`` in channel demo from the API (None: Janus takes no tokens)."""
        if not config.token_secret:
            return None
        status, body = await asyncio.to_thread(
            api.call,
            "POST",
            "/v1/apps/demo/tokens",
            {"channel_id": "demo", "user_id": user, "ttl_seconds": 86400, "role": "publish"},
        )
        if status != 201:
            raise RuntimeError(f"the API refused a publish token for {user}: HTTP {status} {body}")
        return str(body["token"])

    async def join(index: int) -> None:
        user = f"user{index + 1}"
        publisher = Publisher(
            config.janus_url,
            room,
            user,
            synthetic_tracks(index, user, 640, 360, 30),
            api_secret=config.janus_api_secret,
            token=await publish_token(user),
        )
        await publisher.start()
        publishers.append(publisher)
        print(f"demo: {user} joined channel demo", flush=True)

    try:
        await join(0)
        started = time.monotonic()
        status, task = await asyncio.to_thread(
            api.call,
            "POST",
            "/v1/apps/demo/tasks",
            {
                "task_id": "demo",
                "channel_id": "demo",
                "stream_url": url,
                "layout_ids": [1, 2],
                "media_encode": args.media_encode,
                # the mix also goes back into the channel over WebRTC (the /watch/ page)
                "outputs": [{"kind": "rtc"}] if config.token_secret else [],
                # A wall clock in the top right corner: the overlays are drawn by the mixer.
                "clock_widgets": [{"x": 0.84, "y": 0.03, "font_size": 32, "box": 1, "box_border_width": 6}],
            },
        )
        if status != 201:
            print(f"mpu demo: StartMPUTask failed: HTTP {status} {task}", file=sys.stderr)
            return 1
        print(f"demo: task demo started through the API; mixing {room} with LayoutIds [1, 2] into {url}")
        print(f"  watch RTMP : ffplay -fflags nobuffer {url}")
        print(f"  watch HLS  : {config.hls_url('demo')}  (any HLS player; first segment after ~4 s)")
        print(f"  the API    : {api.base}/docs (OpenAPI at {api.base}/openapi.json)")
        print(f"  the task   : curl -u {api.credentials} {api.base}/v1/apps/demo/tasks/demo")
        print(f"  the queue  : Flower at http://127.0.0.1:{flower_port}")
        page_token = await publish_token("me")
        page = f"http://{config.host}:{config.hls_port}/publish/?" + (
            urllib.parse.urlencode({"token": page_token}) if page_token else "app=demo&channel=demo&user=me"
        )
        print(f"  join       : {page}  (a browser)")
        print(f"  WHIP       : {api.base}/v1/apps/demo/channels/demo/whip  (Bearer: a publish token, README)")
        whip_token = await publish_token("whip-browser")
        if whip_token:
            whip_page = urllib.parse.urlencode({"token": whip_token})
            print(f"  WHIP page  : http://{config.host}:{config.hls_port}/whip/?{whip_page}  (WHIP)")
        watch_token = await publish_token("viewer")
        if watch_token:
            watch = urllib.parse.urlencode({"token": watch_token, "task": "demo"})
            print(f"  watch RTC  : http://{config.host}:{config.hls_port}/watch/?{watch}  (the rtc output)")
        print(f"  snapshot   : {snapshot} (once every demo user has joined)")
        print("  stop       : Ctrl-C" + (f" (or after {duration:g} s)" if duration else ""), flush=True)
        for index in range(1, args.users):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), JOIN_INTERVAL)
            if stop.is_set():
                break
            await join(index)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.5)
            if not stop.is_set() and await asyncio.to_thread(save_snapshot, url, snapshot):
                print(f"demo: snapshot written to {snapshot}", flush=True)
        remaining = duration - (time.monotonic() - started) if duration else None
        if remaining is None or remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), remaining)
        status, task = await asyncio.to_thread(api.call, "DELETE", "/v1/apps/demo/tasks/demo")
        for _ in range(100):
            status, task = await asyncio.to_thread(api.call, "GET", "/v1/apps/demo/tasks/demo")
            if task.get("state") == "ended":
                break
            await asyncio.sleep(0.1)
        print(f"demo: task ended with status {task.get('status')} ({task.get('reason')})")
    except JanusError as exc:
        print(f"mpu demo: Janus: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"mpu demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for publisher in publishers:
            await publisher.stop()
    print("demo: stopped cleanly")
    return 0
