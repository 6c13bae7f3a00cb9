"""A real browser (Debian's Chromium) watches a task's mix over WebRTC on the stack's /watch/ page
(janus.js, a subscribe token), decoding the main-profile H.264 the task encodes and its Opus audio."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from typing import Any

import numpy as np
import pytest

from rtc_mpu.mixer.output.rtc import RTC_PROFILE, rtc_muxer_factory, rtc_output
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.spec import tokens
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.workers.outputs import NULL_SINK, null_muxer
from tests.conftest import TOKEN_SECRET
from tests.media import COLORS, TONES
from tests.scripted_source import ScriptedSource, ScriptedUser
from tests.test_browser_publish import CHROMIUM_FLAGS
from tests.test_token_mode import create_room


class Reports:
    """A loopback HTTP server collecting a page's reports (JSON bodies of POSTs); each is answered with
    :attr:`answer` as JSON when it is set (the WHIP page stops on ``{"stop": true}``), else 204."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.answer: dict[str, Any] | None = None
        reports = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                with contextlib.suppress(ValueError):
                    reports.items.append({**json.loads(self.rfile.read(length)), "at": time.monotonic()})
                answer = json.dumps(reports.answer).encode() if reports.answer is not None else b""
                self.send_response(200 if answer else 204)
                self.send_header("Access-Control-Allow-Origin", "*")
                if answer:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/report"

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.timeout(120)
def test_chromium_watches_the_mix_on_the_watch_page(janus_tokens: Janus, nginx_rtmp: NginxRtmp) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: apt-get install chromium (scripts/install-system-deps.sh)"
    channel = ChannelConfig(janus_tokens.url, "app1", "watch-page", token_secret=TOKEN_SECRET)
    asyncio.run(create_room(janus_tokens, "app1", "watch-page", []))
    viewer_token = tokens.mint_token(
        TOKEN_SECRET, "app1", "watch-page", "viewer", tokens.Role.SUBSCRIBE, int(time.time()) + 300
    )
    reports = Reports()
    page = f"http://{nginx_rtmp.host}:{nginx_rtmp.http_port}/watch/?" + urllib.parse.urlencode(
        {"token": viewer_token, "task": "t1", "janus": janus_tokens.url, "report": reports.url}
    )
    spec = build_task_spec(layout_ids=[1], media_encode_id=1)
    source = ScriptedSource([ScriptedUser("alice", COLORS[0], TONES[0], width=320, height=180)])
    pipeline = Pipeline(
        spec, source, NULL_SINK, realtime=True, muxer_factory=null_muxer, video_profile=RTC_PROFILE
    )

    async def scenario() -> float:
        mix = asyncio.create_task(pipeline.run())
        loop = asyncio.get_running_loop()
        await pipeline.add_output(
            "rtc",
            rtc_output(channel, "t1.mix"),
            muxer_factory=rtc_muxer_factory(channel, "t1.mix", loop, pipeline.request_keyframe),
        )
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
            started = time.monotonic()
            browser = subprocess.Popen(
                [
                    chromium,
                    *CHROMIUM_FLAGS,
                    "--autoplay-policy=no-user-gesture-required",
                    f"--user-data-dir={profile}",
                    page,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                first_picture: float | None = None
                while time.monotonic() - started < 60:
                    await asyncio.sleep(0.5)
                    if first_picture is None and any(r.get("frames", 0) > 0 for r in reports.items):
                        first_picture = time.monotonic() - started
                    if any(r.get("frames", 0) > 60 and r.get("centre") for r in reports.items):
                        break
            finally:
                browser.terminate()
                browser.wait(timeout=10)
        pipeline.stop()
        await asyncio.wait_for(mix, 20)
        return first_picture if first_picture is not None else -1.0

    try:
        first_picture = asyncio.run(scenario())
    finally:
        reports.close()
    playing = [r for r in reports.items if r.get("frames", 0) > 60 and r.get("centre")]
    assert playing, f"the page never played the mix: last reports {reports.items[-3:]}"
    last = playing[-1]
    print(
        f"Chromium's first decoded picture {first_picture:.2f} s after opening the page; last report {last}"
    )
    assert (last["width"], last["height"]) == (spec.width, spec.height)
    assert np.abs(np.array(last["centre"]) - np.array(COLORS[0])).max() < 40, last
    assert last["audioTracks"] == 1
