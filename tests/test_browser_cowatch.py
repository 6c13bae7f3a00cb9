"""Watch together in a real browser (Debian's Chromium): the stack's /cowatch/ page plays an ingest's
media locally and keeps it in step with the progress the ingest's publisher sends on its data channel
(janus.js, a subscribe token): aligned while playing, paused with it, and after its seek."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from rtc_mpu.ingest.media import describe, open_media
from rtc_mpu.ingest.player import Player
from rtc_mpu.ingest.publisher import IngestPublisher
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.spec import tokens
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from tests.conftest import TOKEN_SECRET
from tests.ingest_media import serve_folder, write_numbered_clip
from tests.test_browser_publish import CHROMIUM_FLAGS
from tests.test_browser_watch import Reports
from tests.test_token_mode import create_room

APP, CHANNEL, USER = "app1", "cowatch-page", "movie"


def latest(reports: Reports, since: float) -> list[dict[str, Any]]:
    return [r for r in reports.items if r["at"] > since and r.get("drift_ms") is not None]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_chromium_plays_the_media_in_step_with_the_ingest(
    janus_tokens: Janus, nginx_rtmp: NginxRtmp, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: apt-get install chromium (scripts/install-system-deps.sh)"
    write_numbered_clip(tmp_path / "clip.mp4", seconds=60, width=320, height=180)
    channel = ChannelConfig(janus_tokens.url, APP, CHANNEL, token_secret=TOKEN_SECRET)
    asyncio.run(create_room(janus_tokens, APP, CHANNEL, []))
    watcher = tokens.mint_token(
        TOKEN_SECRET, APP, CHANNEL, "watcher", tokens.Role.SUBSCRIBE, int(time.time()) + 300
    )
    reports = Reports()

    async def scenario(base: str) -> None:
        container = open_media(
            f"{base}/clip.mp4",
            media_dir=None,
            allow_private=True,
            open_timeout_seconds=5,
            read_timeout_seconds=5,
        )
        publisher = IngestPublisher(channel, USER, video=True, audio=True)
        await publisher.add()
        player = Player(container, describe(container), publisher, ingest_id="film", url=f"{base}/clip.mp4")
        player.start()
        page = f"http://{nginx_rtmp.host}:{nginx_rtmp.http_port}/cowatch/?" + urllib.parse.urlencode(
            {"token": watcher, "user": USER, "janus": janus_tokens.url, "report": reports.url}
        )
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
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
                started = time.monotonic()
                while not [r for r in latest(reports, started) if r["local_playing"] and r["messages"] >= 3]:
                    assert time.monotonic() - started < 40, f"the page never aligned: {reports.items[-3:]}"
                    await asyncio.sleep(0.2)
                await asyncio.sleep(3.0)
                playing = latest(reports, time.monotonic() - 2.5)
                assert playing and all(abs(r["drift_ms"]) <= 300 for r in playing), playing
                assert all(r["state"] == "playing" and r["local_playing"] for r in playing), playing
                # The host pauses: the local player pauses at the ingest's position.
                player.pause()
                await asyncio.sleep(2.5)
                paused = latest(reports, time.monotonic() - 1.2)
                assert paused and all(r["state"] == "paused" and not r["local_playing"] for r in paused), (
                    paused
                )
                assert all(abs(r["drift_ms"]) <= 100 for r in paused), paused
                # The host seeks to 40 s and plays: the local player follows.
                player.seek(40.0)
                player.play()
                await asyncio.sleep(3.5)
                after = latest(reports, time.monotonic() - 1.2)
                assert after and all(r["local_ms"] > 39000 and abs(r["drift_ms"]) <= 300 for r in after), (
                    after
                )
                print(f"co-watching page: drift while playing {[r['drift_ms'] for r in playing]} ms")
            finally:
                browser.terminate()
                browser.wait(timeout=10)
                player.stop()
                await publisher.remove()

    try:
        with serve_folder(tmp_path) as base:
            asyncio.run(scenario(base))
    finally:
        reports.close()
