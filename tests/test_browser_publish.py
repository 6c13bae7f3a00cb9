"""A real browser (Debian's Chromium, fake camera and microphone) publishes through janus.js from the
stack's /publish/ page, and the channel source receives its video and audio."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from functools import partial

import numpy as np
import pytest

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from tests.test_janus_source import Recorder, has_media, wait_for

#: Flags for headless Chromium on a machine with no network but loopback (as the environment notes).
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@pytest.mark.timeout(90)
def test_browser_publishes_into_the_channel_with_janus_js(janus: Janus, nginx_rtmp: NginxRtmp) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: apt-get install chromium (scripts/install-system-deps.sh)"
    page = (
        f"http://{nginx_rtmp.host}:{nginx_rtmp.http_port}/publish/"
        f"?janus={janus.url}&app=app1&channel=browser&user=chromium-user"
    )

    async def scenario() -> None:
        recorder = Recorder()
        source = JanusSource(ChannelConfig(janus.url, "app1", "browser"))
        await source.start(recorder)
        try:
            # Chromium may still be writing its profile as it exits: ignore errors removing it.
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
                browser = subprocess.Popen(
                    [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", page],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    await wait_for(partial(has_media, recorder, "chromium-user"), 30)
                    before = len(recorder.audio["chromium-user"])
                    await asyncio.sleep(1.0)
                    # 20 ms Opus frames: about 50 a second keep arriving.
                    assert len(recorder.audio["chromium-user"]) - before >= 25
                finally:
                    browser.terminate()
                    browser.wait(timeout=10)
        finally:
            await source.close()
        assert recorder.joins == ["chromium-user"]
        picture = recorder.pictures["chromium-user"]
        assert picture.shape[1] >= 320 and picture.std() > 5, "a real camera picture, not a blank one"
        assert np.concatenate(recorder.audio["chromium-user"], axis=1).std() > 1e-3, (
            "the fake microphone beeps"
        )

    asyncio.run(scenario())
