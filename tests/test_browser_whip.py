"""A real browser (Debian's Chromium, fake camera and microphone) publishes over WHIP from the stack's
/whip/ page: a plain RTCPeerConnection POSTs its offer with a publish token to the API's WHIP endpoint
(another origin than the page's nginx: CORS preflight, ``Location`` read cross-origin), the edge
publishes it into a token-mode Janus as the token's user and a channel source decodes its picture and
audio; then the page stops (``DELETE`` of the ``Location``) and the user leaves the channel."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import numpy as np
import pytest

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from tests.conftest import TOKEN_SECRET
from tests.test_browser_publish import CHROMIUM_FLAGS
from tests.test_browser_watch import Reports
from tests.test_janus_source import Recorder, has_media, wait_for
from tests.test_token_mode import create_room
from tests.test_whip_ingest import ApiServer, publish_token, running_edge

APP, CHANNEL, USER = "app1", "whip-browser", "chromium-whip"


@pytest.mark.timeout(90)
def test_chromium_publishes_over_whip_from_the_whip_page(janus_tokens: Janus, nginx_rtmp: NginxRtmp) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: apt-get install chromium (scripts/install-system-deps.sh)"
    token = publish_token(APP, CHANNEL, USER)
    reports = Reports()
    recorder = Recorder()
    timings: dict[str, float] = {}

    def page_says(status: str) -> bool:
        return any(r.get("status") == status for r in reports.items)

    async def stop_browser(browser: subprocess.Popen[bytes]) -> None:
        browser.terminate()
        await asyncio.to_thread(browser.wait, 10)

    async def scenario() -> None:
        await create_room(janus_tokens, APP, CHANNEL, [token])
        source = JanusSource(ChannelConfig(janus_tokens.url, APP, CHANNEL, token_secret=TOKEN_SECRET))
        await source.start(recorder)
        async with contextlib.AsyncExitStack() as stack:  # closed in reverse: browser, API, edge, source
            stack.push_async_callback(source.close)
            edge_url, publishers = await stack.enter_async_context(running_edge(janus_tokens.url))
            api_url = stack.enter_context(ApiServer(edge_url))
            await wait_for(lambda: source.status.value == "joined", 10)
            # The page is served by nginx, the endpoint by the API: two origins (CORS).
            page = f"http://{nginx_rtmp.host}:{nginx_rtmp.http_port}/whip/?" + urllib.parse.urlencode(
                {
                    "token": token,
                    "whip": f"{api_url}/v1/apps/{APP}/channels/{CHANNEL}/whip",
                    "report": reports.url,
                }
            )
            # Chromium may still be writing its profile as it exits: ignore errors removing it.
            profile = stack.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True))
            started = time.monotonic()
            browser = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", page],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.push_async_callback(stop_browser, browser)
            try:
                await wait_for(lambda: has_media(recorder, USER), 30)
            except AssertionError:
                raise AssertionError(f"no media; the page reported {reports.items[-3:]}") from None
            timings["media"] = time.monotonic() - started
            # The edge published the token's user; the page sees its PeerConnection up.
            [resource] = publishers.resources.values()
            assert (resource.user_id, resource.connected) == (USER, True)
            await wait_for(lambda: page_says("publishing"), 5)
            before = len(recorder.audio[USER])
            await asyncio.sleep(1.0)
            # 20 ms Opus frames: about 50 a second keep arriving.
            assert len(recorder.audio[USER]) - before >= 25

            # The page stops: it DELETEs its Location (read cross-origin) and the user leaves the channel.
            reports.answer = {"stop": True}
            asked = time.monotonic()
            await wait_for(lambda: USER in recorder.leaves, 10)
            timings["leave"] = time.monotonic() - asked
            await wait_for(lambda: not publishers.resources, 5)
            await wait_for(lambda: page_says("stopped"), 5)

    try:
        asyncio.run(scenario())
    finally:
        reports.close()
    publishing = [r for r in reports.items if r.get("status") == "publishing"]
    stopped = [r for r in reports.items if r.get("status") == "stopped"]
    print(
        f"Chromium over WHIP: picture and audio in the channel {timings['media']:.2f} s after opening "
        f"the page; the user left {timings['leave']:.2f} s after the page was told to stop; "
        f"last report while publishing {publishing[-1]}"
    )
    assert publishing[-1]["videoBytes"] > 0 and publishing[-1]["audioBytes"] > 0, publishing[-1]
    assert (stopped[-1]["resource"], stopped[-1]["deleteStatus"], stopped[-1]["error"]) == (True, 200, None)
    assert recorder.joins == [USER] and recorder.leaves == [USER]
    picture = recorder.pictures[USER]
    assert picture.shape[1] >= 320 and picture.std() > 5, "a real camera picture, not a blank one"
    assert np.concatenate(recorder.audio[USER], axis=1).std() > 1e-3, "the fake microphone beeps"
