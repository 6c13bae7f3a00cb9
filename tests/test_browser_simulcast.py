"""Issue 18, simulcast: a real Chromium (fake 1280x720 camera) publishes three rid simulcast encodings
(full, 1/2, 1/4 size) into a real Janus; the channel source, told the stream is drawn in a 320x180
pane, has Janus relay the smallest substream, and the full one once the pane is 1280x720.

The page (served here, on loopback: a secure context for getUserMedia) talks to Janus' HTTP API
itself: create a session, attach the VideoRoom, ``joinandconfigure`` with a non-trickle offer,
long-poll for the answer and then keep long-polling (which keeps the session alive)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator

import av
import pytest

from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusSession
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.stack.janus import Janus
from tests.test_browser_publish import CHROMIUM_FLAGS
from tests.test_janus_source import wait_for

APP, USER = "app1", "chromium-simulcast"
#: Room bitrate cap (REMB), bit/s: room for the three layers (libwebrtc's defaults for a 720p camera:
#: about 2.5 Mbit/s + 0.7 + 0.2 at most).
ROOM_BITRATE = 4_000_000
#: Seconds allowed for a substream switch to show in the decoded sizes (generous: the size learned,
#: Janus' PLI, the publisher's keyframe, hysteresis, a loaded 2-core machine).
SWITCH_DEADLINE = 10.0

PAGE = """<!doctype html><meta charset="utf-8"><title>simulcast publisher</title>
<script>
const q = new URLSearchParams(location.search);
const janus = q.get("janus"), room = q.get("room"), user = q.get("user");
const txn = () => Math.random().toString(36).slice(2);
async function post(path, body) {
  const r = await fetch(janus + path, {method: "POST", body: JSON.stringify({...body, transaction: txn()})});
  return r.json();
}
async function main() {
  const session = (await post("", {janus: "create"})).data.id;
  const handle = (await post("/" + session, {janus: "attach", plugin: "janus.plugin.videoroom"})).data.id;
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection({iceServers: []});
  // Janus' default rid order is "hml": the first encoding is the largest (substream 2).
  pc.addTransceiver(media.getVideoTracks()[0], {direction: "sendonly", sendEncodings: [
    {rid: "h", scaleResolutionDownBy: 1},
    {rid: "m", scaleResolutionDownBy: 2},
    {rid: "l", scaleResolutionDownBy: 4},
  ]});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  await post("/" + session + "/" + handle, {janus: "message",
    body: {request: "joinandconfigure", room: room, ptype: "publisher", id: user, video: true, audio: false},
    jsep: {type: "offer", sdp: pc.localDescription.sdp}});
  for (;;) {
    const events = await (await fetch(janus + "/" + session + "?maxev=5&rid=" + Date.now())).json();
    for (const e of Array.isArray(events) ? events : [events]) {
      if (e.jsep && e.jsep.type === "answer") await pc.setRemoteDescription(e.jsep);
    }
  }
}
main().catch(e => console.error("simulcast page failed", e));
</script>
"""


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def page_server() -> Iterator[str]:
    """Serve :data:`PAGE` on a free loopback port; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def create_room(janus_url: str, room: str) -> None:
    """Create VideoRoom ``room`` (VP8, :data:`ROOM_BITRATE`) unless it exists."""
    session = JanusSession(janus_url)
    await session.connect()
    try:
        handle = await session.attach()
        body = {
            "request": "create",
            "room": room,
            "bitrate": ROOM_BITRATE,
            "videocodec": "vp8",
            "publishers": 4,
        }
        with contextlib.suppress(JanusError):
            await handle.request(body)
    finally:
        await session.close()


@contextlib.asynccontextmanager
async def simulcast_browser(
    janus_url: str, room: str, user: str, extra_flags: tuple[str, ...] = ()
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Chromium publishing ``user``'s fake camera with three simulcast encodings into ``room``
    (``extra_flags``: more Chromium flags, e.g. ``--use-file-for-fake-video-capture=<y4m>``)."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: apt-get install chromium (scripts/install-system-deps.sh)"
    await create_room(janus_url, room)
    with page_server() as base, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        page = base + "?" + urllib.parse.urlencode({"janus": janus_url, "room": room, "user": user})
        browser = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}", page],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield browser
        finally:
            browser.terminate()
            await asyncio.to_thread(browser.wait, 10)


class Sizes:
    """A FrameReceiver keeping each decoded picture's (monotonic seconds, width, height) of one user."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.frames: list[tuple[float, int, int]] = []

    def on_user(self, user_id: str, present: bool) -> None:
        return None

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        return None

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        if frame is not None and stream.user_id == self.user:
            self.frames.append((time.monotonic(), frame.width, frame.height))

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        return None

    def recent(self, seconds: float = 0.5) -> list[tuple[int, int]]:
        """Sizes of the pictures decoded in the last ``seconds``."""
        now = time.monotonic()
        return [(w, h) for t, w, h in self.frames if now - t <= seconds]

    def steady(self, predicate: Callable[[int, int], bool]) -> bool:
        """Whether at least 3 pictures came in the last 0.5 s, all matching ``predicate``."""
        recent = self.recent()
        return len(recent) >= 3 and all(predicate(w, h) for w, h in recent)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_small_pane_receives_the_small_substream_and_a_large_one_the_full(janus: Janus) -> None:
    config = ChannelConfig(janus.url, APP, "simulcast")

    async def scenario() -> None:
        sizes = Sizes(USER)
        source = JanusSource(config)
        await source.start(sizes)
        source.draw_sizes({StreamKey(USER): (320, 180)})
        try:
            async with simulcast_browser(janus.url, config.room, USER):
                await wait_for(lambda: len(sizes.frames) > 0, 30)
                first = time.monotonic()
                subscription = source._subscriptions[USER]  # white box: the publisher's video is simulcast
                assert subscription.layers is not None, "Janus says the publisher's video is simulcast"
                widest = max(w for _, w, _ in sizes.frames)
                print(f"first pictures {sorted({(w, h) for _, w, h in sizes.frames})}")
                # A 320x180 pane: the smallest substream (a quarter of the camera's width).
                took = await wait_for(
                    lambda: sizes.steady(lambda w, h: w <= 400 and h <= 240), SWITCH_DEADLINE
                )
                small = sizes.recent()[-1]
                widest = max(w for _, w, _ in sizes.frames)
                print(
                    f"small pane: {small} after {time.monotonic() - first:.2f} s from the first picture "
                    f"({took:.2f} s of waiting); layers seen {subscription.layers.observed}"
                )
                assert widest >= 3 * small[0], ("the full picture was seen first", widest, small)
                # A 1280x720 pane: the full substream again.
                source.draw_sizes({StreamKey(USER): (1280, 720)})
                asked = time.monotonic()
                await wait_for(lambda: sizes.steady(lambda w, h: w >= 3 * small[0]), SWITCH_DEADLINE)
                large = sizes.recent()[-1]
                print(f"large pane: {large} after {time.monotonic() - asked:.2f} s")
                assert large[0] >= 960, large
                assert subscription.layers.target == 2
                assert source.last_error is None, source.last_error
        finally:
            await source.close()

    asyncio.run(scenario())
