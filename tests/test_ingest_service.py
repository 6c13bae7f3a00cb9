"""Stream ingest end to end (issue 19): the REST API, two real workers, token-mode Janus and an MP4
served over HTTP. A subscriber in the channel sees the media's frames and hears its tone; the host's
pause, seek and resume reach it; the worker running the ingest is killed and the other one takes it
over at the position the audience expects."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from rtc_mpu.mixer.output.sei import find_sei_payloads
from rtc_mpu.spec import tokens
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from rtc_mpu.stack.viewer import Viewer
from rtc_mpu.workers.ingest_store import IngestStore
from rtc_mpu.workers.store import TaskStore
from tests.conftest import TOKEN_SECRET
from tests.ingest_media import read_frame_number, serve_folder, write_numbered_clip
from tests.service import Service, running_service, service_env
from tests.test_rtc_output import dominant_hz

APP, CHANNEL, USER = "app1", "cowatch", "movie"
FPS = 30
DB = 12


@pytest.fixture
def media_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("served")
    write_numbered_clip(folder / "clip.mp4", seconds=60, fps=FPS)
    with serve_folder(folder) as base:
        yield base


@pytest.fixture
def service(redis_server: Redis, janus_tokens: Janus, tmp_path: Path) -> Iterator[Service]:
    env = service_env(
        f"{redis_server.url.rsplit('/', 1)[0]}/{DB}",
        janus_tokens.url,
        MPU_TOKEN_SECRET=TOKEN_SECRET,
        MPU_LEASE_SECONDS="6",  # a kill is noticed after it; a SIGTERM hands over at once
        MPU_ALLOW_PRIVATE_URLS="1",
    )
    with running_service(env, tmp_path) as running:
        running.start_worker("worker2")
        yield running


class Seen:
    """Frame numbers with their arrival (monotonic seconds), mono audio, and progress messages."""

    def __init__(self) -> None:
        self.pictures: list[tuple[float, int]] = []
        self.audio: list[np.ndarray] = []
        self.messages = 0
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=48000)

    def frame(self, frame: av.VideoFrame | av.AudioFrame, arrived: float) -> None:
        if isinstance(frame, av.VideoFrame):
            self.pictures.append((time.monotonic(), read_frame_number(frame.to_ndarray(format="rgb24"))))
        else:
            self.audio += [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]

    def message(self, text: str | bytes, arrived: float) -> None:
        self.messages += 1

    def after(self, moment: float) -> list[int]:
        return [n for t, n in self.pictures if t > moment]


def viewer(janus: Janus, seen: Seen) -> Viewer:
    room = tokens.room_name(APP, CHANNEL)
    token = tokens.mint_token(
        TOKEN_SECRET, APP, CHANNEL, "watcher", tokens.Role.SUBSCRIBE, int(time.time()) + 600
    )
    return Viewer(
        janus.url,
        room,
        USER,
        seen.frame,
        token=token,
        pin=tokens.room_pin(TOKEN_SECRET, room),
        on_message=seen.message,
    )


async def watch(janus: Janus, seen: Seen, seconds: float) -> Viewer:
    """Subscribe to the ingest's publisher as soon as it is in the room (retrying for ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        watching = viewer(janus, seen)
        try:
            await watching.start(timeout_seconds=3)
            return watching
        except Exception:
            await watching.stop()
            assert time.monotonic() < deadline, "the ingest never appeared in the channel"
            await asyncio.sleep(0.1)


async def watch_until_pictures(janus: Janus, seen: Seen, seconds: float, what: str) -> Viewer:
    """Watch until pictures arrive, subscribing again every 2 s: a subscription made to a publisher
    that is then replaced (a takeover) gets nothing more, as a page would resubscribe."""
    deadline = time.monotonic() + seconds
    while True:
        assert time.monotonic() < deadline, what
        watching = await watch(janus, seen, seconds)
        started = time.monotonic()
        while not seen.pictures and time.monotonic() - started < 2:
            await asyncio.sleep(0.02)
        if seen.pictures:
            return watching
        await watching.stop()


async def until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, what
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_an_ingest_plays_is_controlled_over_rest_and_survives_its_worker(
    service: Service, janus_tokens: Janus, redis_server: Redis, media_base: str
) -> None:
    body = {
        "ingest_id": "film",
        "channel_id": CHANNEL,
        "user_id": USER,
        "url": f"{media_base}/clip.mp4?signature=s3cr3t",
    }
    requested = time.monotonic()
    status, created = service.call("POST", f"/v1/apps/{APP}/ingests", body)
    assert status == 201, created
    assert created["state"] == "starting" and created["url"].startswith("http://127.0.0.1:")
    assert "s3cr3t" not in created["url"], "the URL is redacted"
    status, again = service.call("POST", f"/v1/apps/{APP}/ingests", body)
    assert (status, again["code"]) == (409, "InvalidIngest.Exists")
    status, other = service.call("POST", f"/v1/apps/{APP}/ingests", {**body, "ingest_id": "film2"})
    assert (status, other["code"]) == (409, "InvalidIngest.UserInUse")
    status, bad = service.call(
        "POST", f"/v1/apps/{APP}/ingests", {**body, "ingest_id": "f3", "url": "file:///etc/passwd"}
    )
    assert (status, bad["code"], bad["field"]) == (400, "InvalidIngest.Url", "url")

    seen = Seen()

    async def scenario() -> None:
        watching = await watch(janus_tokens, seen, 20)
        await until(lambda: bool(seen.pictures), 20, "no picture")
        print(f"ingest: request -> first picture at the subscriber {time.monotonic() - requested:.2f} s")
        await until(lambda: len(seen.pictures) > 60 and seen.messages >= 2, 15, "not playing")
        assert abs(dominant_hz(np.concatenate(seen.audio[-40:])) - 440) < 15
        status, got = service.call("GET", f"/v1/apps/{APP}/ingests/film")
        assert status == 200 and got["state"] == "playing" and got["duration_ms"] == 60000
        shown_ms = seen.pictures[-1][1] * 1000 / FPS
        assert abs(got["position_ms"] - shown_ms) < 1500, (got, shown_ms)
        # Pause over REST: nothing new within 200 ms (plus the loopback's few ms).
        status, _ = service.call("PATCH", f"/v1/apps/{APP}/ingests/film", {"state": "paused"})
        assert status == 200
        asked = time.monotonic()
        await asyncio.sleep(1.0)
        late = seen.after(asked + 0.25)
        last = max((t for t, _ in seen.pictures if t > asked), default=asked)
        print(f"ingest: PATCH pause -> last picture at the subscriber {last - asked:.3f} s")
        assert late == [], late
        status, got = service.call("GET", f"/v1/apps/{APP}/ingests/film")
        assert got["state"] == "paused"
        # Seek to 30 s and resume: the frame of 30 s within 1 s.
        status, _ = service.call(
            "PATCH", f"/v1/apps/{APP}/ingests/film", {"position_seconds": 30, "state": "playing"}
        )
        assert status == 200
        asked = time.monotonic()
        took = await until(lambda: any(n >= 870 for n in seen.after(asked)), 3, "no picture after the seek")
        print(f"ingest: PATCH seek to 30 s -> the frame of 30 s at the subscriber {took:.2f} s")
        assert took < 1.0, took
        assert all(850 <= n <= 1000 for n in seen.after(asked + took)), seen.after(asked)[:10]
        # Kill the worker running it: the other takes it over where the audience expects it.
        tasks = TaskStore.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/{DB}")
        record = IngestStore(tasks.client, tasks.prefix).get(APP, "film")
        assert record.worker is not None
        victim = _worker_of(service, record.worker)
        await until(lambda: bool(seen.after(asked + 1.5)), 5, "not playing after the seek")
        killed_at = time.monotonic()
        frame_at_kill = seen.pictures[-1][1]
        service.kill(victim)
        await watching.stop()
        # The dead worker's publisher stays in the room (it belongs to the room) until the new worker
        # replaces it: a subscriber that joined the old one subscribes again, as a page does when
        # Janus announces the publisher anew.
        again = Seen()
        watching = await watch_until_pictures(janus_tokens, again, 20, "no picture after the takeover")
        back_at, number = again.pictures[0]
        print(f"ingest: worker killed -> picture again {back_at - killed_at:.2f} s")
        assert back_at - killed_at < 15
        expected = frame_at_kill + (back_at - killed_at) * FPS
        assert abs(number - expected) <= 2 * FPS + FPS, (number, expected)
        await watching.stop()
        # A worker that shuts down (SIGTERM, `docker stop`) gives it to another at once.
        service.start_worker("worker3")
        await asyncio.sleep(3.0)  # the new worker is up
        record = IngestStore(tasks.client, tasks.prefix).get(APP, "film")
        assert record.worker is not None
        runner = _worker_of(service, record.worker)
        stopping_at = time.monotonic()
        service.kill(runner, signal.SIGTERM)
        third = Seen()
        watching = await watch_until_pictures(janus_tokens, third, 20, "no picture after the handover")
        print(f"ingest: worker stopped (SIGTERM) -> picture again {third.pictures[0][0] - stopping_at:.2f} s")
        assert third.pictures[0][0] - stopping_at < 5, "handed over, not waiting for the 6 s lease"
        assert IngestStore(tasks.client, tasks.prefix).get(APP, "film").restarts >= 2
        await watching.stop()
        status, _ = service.call("DELETE", f"/v1/apps/{APP}/ingests/film")
        assert status == 200
        await until(
            lambda: service.call("GET", f"/v1/apps/{APP}/ingests/film")[1]["state"] == "ended",
            10,
            "not ended",
        )

    asyncio.run(scenario())

    # A URL that does not answer with media: the ingest fails with the reason, nothing is published.
    status, _ = service.call(
        "POST",
        f"/v1/apps/{APP}/ingests",
        {**body, "ingest_id": "gone", "user_id": "gone", "url": f"{media_base}/missing.mp4"},
    )
    assert status == 201
    deadline = time.monotonic() + 20
    while (failed := service.call("GET", f"/v1/apps/{APP}/ingests/gone")[1])["state"] != "failed":
        assert time.monotonic() < deadline, failed
        time.sleep(0.1)
    assert failed["reason"].startswith("InvalidIngest.Unreachable"), failed


def _worker_of(service: Service, worker: str) -> str:
    """The name of the service process whose pool runs ``worker`` (``<hostname>:<pid>``)."""
    pid = int(worker.rsplit(":", 1)[1])
    for name, process in service.processes.items():
        if name.startswith("worker") and _is_ancestor(process.pid, pid):
            return name
    raise AssertionError(f"no worker process runs {worker}")


def _is_ancestor(ancestor: int, pid: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        pid = int(fields[1])
    return False


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_mix_of_the_channel_carries_the_ingest_progress_in_its_sei(
    service: Service, nginx_rtmp: NginxRtmp, media_base: str
) -> None:
    """A task with voice-activity SEI (PayloadType 1) on the ingest's channel: every SEI message also
    says where the ingest is (``"ingest"``, the same envelope), so an HLS/RTMP player can align
    captions or lyrics to the media."""
    body = {
        "ingest_id": "song",
        "channel_id": CHANNEL,
        "user_id": "karaoke",
        "url": f"{media_base}/clip.mp4",
        "loop": True,
    }
    assert service.call("POST", f"/v1/apps/{APP}/ingests", body)[0] == 201
    url = f"rtmp://127.0.0.1:{nginx_rtmp.rtmp_port}/live/cowatch-sei"
    task = {"task_id": "sei", "channel_id": CHANNEL, "stream_url": url, "layout_ids": [1], "media_encode": 1,
            "payload_type": 1, "vad_interval": 500}  # fmt: skip
    status, started = service.call("POST", f"/v1/apps/{APP}/tasks", task)
    assert status == 201, started
    service.wait_task(APP, "sei", lambda t: t["status"] == 1, 30)
    found: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    with av.open(url, options={"rw_timeout": "10000000"}, timeout=10) as container:
        for packet in container.demux(video=0):
            for payload in find_sei_payloads(bytes(packet)):
                document = json.loads(payload)
                if "ingest" in document:
                    found.append((time.monotonic(), document))
            if len(found) >= 6 or time.monotonic() > deadline:
                break
    assert len(found) >= 6, f"SEI with the ingest's progress: {found[-1:]}"
    entries = [document["ingest"][0] for _, document in found]
    assert {e["ingest_id"] for e in entries} == {"song"} and {e["user_id"] for e in entries} == {"karaoke"}
    assert all(e["state"] == "playing" and e["duration_ms"] == 60000 for e in entries), entries
    assert entries[-1]["position_ms"] > entries[0]["position_ms"], "the position moves on"
    assert all("ts" in document and "levels" in document for _, document in found), "one envelope"
    service.call("DELETE", f"/v1/apps/{APP}/tasks/sei")
    service.call("DELETE", f"/v1/apps/{APP}/ingests/song")
