"""The main job end to end: real Redis, Janus and nginx-rtmp; the API and a Celery worker as processes;
publishers over WebRTC; a viewer pulling the RTMP stream and checking panes and tones."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import av
import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.stack.demo_media import COLORS, TONES
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from tests.media import rgb, tone_level_db
from tests.service import ACCESS_KEY, SECRET, Service, running_service, service_env

APP = "app1"
WIDTH, HEIGHT = 640, 360


def stream_stats(server: NginxRtmp, stream: str) -> tuple[int, bool]:
    """(publishers of ``stream`` on nginx-rtmp, whether its video headers arrived)."""
    with urllib.request.urlopen(f"http://{server.host}:{server.http_port}/stat", timeout=2) as response:
        root = ElementTree.fromstring(response.read())
    for s in root.iter("stream"):
        if s.findtext("name") == stream:
            publishers = sum(1 for c in s.iter("client") if c.find("publishing") is not None)
            return publishers, s.find("meta/video") is not None
    return 0, False


class Viewer(threading.Thread):
    """Pulls an RTMP stream as a player would and keeps every decoded picture with its arrival time."""

    def __init__(self, server: NginxRtmp, stream: str) -> None:
        super().__init__(daemon=True)
        self.server, self.stream = server, stream
        self.pictures: list[tuple[float, npt.NDArray[np.uint8]]] = []
        self.audio: list[npt.NDArray[np.float32]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not stream_stats(self.server, self.stream)[1]:
            time.sleep(0.05)
        try:
            with av.open(
                self.server.rtmp_url(self.stream), options={"analyzeduration": "2000000"}, timeout=(10.0, 5.0)
            ) as container:
                resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
                for frame in container.decode():
                    if isinstance(frame, av.VideoFrame):
                        self.pictures.append((time.monotonic(), rgb(frame)))
                    elif isinstance(frame, av.AudioFrame):
                        self.audio.extend(
                            f.to_ndarray().astype(np.float32) for f in resampler.resample(frame)
                        )
        except av.error.FFmpegError as exc:  # nginx-rtmp keeps players connected: the end is a timeout
            self.error = exc


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def colour_at(picture: npt.NDArray[np.uint8], x: float, y: float) -> npt.NDArray[np.float64]:
    """Mean colour of a 10x10 patch at fractions (x, y) of the picture."""
    h, w = picture.shape[:2]
    cx, cy = int(x * w), int(y * h)
    patch: npt.NDArray[np.float64] = picture[cy - 5 : cy + 5, cx - 5 : cx + 5].reshape(-1, 3).mean(axis=0)
    return patch


def near(colour: npt.NDArray[np.float64], expected: tuple[int, int, int]) -> bool:
    return bool(np.abs(colour - np.array(expected)).max() <= 25)


@pytest.fixture
def service(
    redis_server: Redis, janus: Janus, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Service]:
    # Each test gets its own Redis database: its own Celery queue and task store.
    db = {
        "test_start_view_update_stop_and_cooldown": 1,
        "test_killed_worker_is_replaced": 2,
        "test_an_unreachable_rtmp_server_is_retried_and_visible": 3,
        "test_an_empty_channel_stops_the_task_by_itself": 4,
        "test_old_sdk_client_code_starts_a_real_mix": 5,
    }[request.node.name]
    env = service_env(
        f"{redis_server.url.rsplit('/', 1)[0]}/{db}",
        janus.url,
        MPU_COOLDOWN="3",
        MPU_LEASE_SECONDS="3",
        MPU_EMPTY_TIMEOUT="2" if "empty_channel" in request.node.name else "30",
    )
    with running_service(env, tmp_path) as service:
        yield service


def publish(janus: Janus, channel: str, users: int, seconds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_mpu.cli.main",
            "publish",
            "--janus",
            janus.url,
            "--app",
            APP,
            "--channel",
            channel,
            "--users",
            str(users),
            "--size",
            "320x180",
            "--duration",
            str(seconds),
        ],
        stdout=subprocess.DEVNULL,
    )


@pytest.mark.timeout(150)
def test_start_view_update_stop_and_cooldown(service: Service, janus: Janus, nginx_rtmp: NginxRtmp) -> None:
    publishers = publish(janus, "e2e", 2, 90)
    try:
        time.sleep(1.5)  # both users are publishing before the task starts
        url = nginx_rtmp.rtmp_url("e2e-main")
        viewer = Viewer(nginx_rtmp, "e2e-main")
        viewer.start()
        posted = time.monotonic()
        status, task = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": "main",
                "channel_id": "e2e",
                "stream_url": f"{url}?auth=k1",
                "layout_ids": [2],
                "media_encode": 1,
            },
        )
        assert status == 201, task
        assert "auth=k1" not in str(task) and "e2e-main" not in str(task), "the stream key is never shown"
        while not stream_stats(nginx_rtmp, "e2e-main")[1]:
            assert time.monotonic() - posted < 20, service.log("worker")
            time.sleep(0.02)
        first_keyframe = time.monotonic() - posted
        print(f"POST to first video at the RTMP server: {first_keyframe:.2f} s")
        running = service.wait_task(APP, "main", lambda t: t["status"] == 1 and len(t["users"]) == 2, 20)
        assert running["layout_id"] == 2 and running["users"] == ["user1", "user2"]

        # The viewer watches layout 2 (user1 left, user2 right) for a while...
        wait_until(lambda: len(viewer.pictures) >= 15, 30, "the viewer receives the mix")
        time.sleep(0.5)
        status, task = service.call("PATCH", f"/v1/apps/{APP}/tasks/main/layout", {"layout_ids": [1]})
        assert status == 200, task
        service.wait_task(APP, "main", lambda t: t["layout_id"] == 1, 10)
        updated = time.monotonic()
        # ... and then layout 1: user1 alone, full frame.
        wait_until(
            lambda: sum(1 for t, _ in viewer.pictures if t > updated + 1.5) >= 10, 30, "the new layout"
        )
        status, task = service.call("DELETE", f"/v1/apps/{APP}/tasks/main")
        assert status == 200, task
        ended = service.wait_task(APP, "main", lambda t: t["state"] == "ended", 15)
        stopped = time.monotonic()
        assert ended["status"] == 3
        # URL rules: refused while cooling down (another query string is the same URL), then accepted.
        status, refused = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": "again",
                "channel_id": "e2e",
                "stream_url": f"{url}?auth=other",
                "layout_ids": [2],
                "media_encode": 1,
            },
        )
        assert status == 409 and refused["code"] == "StreamURL.CoolingDown", refused
        time.sleep(max(0.0, 3.2 - (time.monotonic() - stopped)))
        status, accepted = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": "again",
                "channel_id": "e2e",
                "stream_url": f"{url}?auth=other",
                "layout_ids": [2],
                "media_encode": 1,
            },
        )
        assert status == 201, accepted
        status, _ = service.call("DELETE", f"/v1/apps/{APP}/tasks/again")
        assert status == 200
        viewer.join(timeout=30)
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)

    # What the viewer saw: layout 2 with both users, then layout 1 with user1 alone.
    before = [p for t, p in viewer.pictures if t < updated - 0.5]
    after = [p for t, p in viewer.pictures if updated + 1.5 < t < stopped - 0.5]
    assert before and after, (len(viewer.pictures), viewer.error)
    # Sample at 60% across and 15% down each user's picture: clear of its label (top left), its
    # moving bar (the middle half of its height) and the pane edges.
    assert near(colour_at(before[-1], 0.30, 0.326), COLORS[0]), "layout 2, left pane: user1"
    assert near(colour_at(before[-1], 0.80, 0.326), COLORS[1]), "layout 2, right pane: user2"
    assert near(colour_at(after[-1], 0.80, 0.15), COLORS[0]), "layout 1 shows user1 over the whole canvas"
    levels = [tone_level_db(np.concatenate(viewer.audio, axis=1), 48000, f) for f in TONES[:2]]
    assert min(levels) > -25, levels
    # The stream ended cleanly: the viewer got pictures until the stop, and nobody publishes any more.
    assert viewer.pictures[-1][0] > stopped - 1.5
    assert stream_stats(nginx_rtmp, "e2e-main")[0] == 0


@pytest.mark.timeout(150)
def test_killed_worker_is_replaced(service: Service, janus: Janus, nginx_rtmp: NginxRtmp) -> None:
    publishers = publish(janus, "e2e-kill", 1, 90)
    try:
        time.sleep(1.0)
        url = nginx_rtmp.rtmp_url("e2e-kill")
        status, task = service.call(
            "POST",
            f"/v1/apps/{APP}/tasks",
            {
                "task_id": "k",
                "channel_id": "e2e-kill",
                "stream_url": url,
                "layout_ids": [1],
                "media_encode": 1,
            },
        )
        assert status == 201, task
        first = service.wait_task(APP, "k", lambda t: t["status"] == 1, 20)
        service.kill("worker")  # SIGKILL the worker and its pool: no goodbye, no lease release
        killed = time.monotonic()
        # Nobody pushes now; the status must not claim otherwise for long, and the URL is not held forever.
        stale = service.wait_task(
            APP, "k", lambda t: t["reason"] != first["reason"] or t["state"] != "running", 15
        )
        print(f"status after the kill: {stale['status']} {stale['state']} {stale['reason']!r}")
        service.start_worker("worker2")
        resumed = service.wait_task(APP, "k", lambda t: t["restarts"] >= 1 and t["status"] == 1, 40)
        print(f"resumed on {resumed['worker']} {time.monotonic() - killed:.1f} s after the kill")
        max_publishers = 0
        for _ in range(20):  # never two pushes to the URL
            max_publishers = max(max_publishers, stream_stats(nginx_rtmp, "e2e-kill")[0])
            time.sleep(0.1)
        assert max_publishers == 1
        status, _ = service.call("DELETE", f"/v1/apps/{APP}/tasks/k")
        assert status == 200
        service.wait_task(APP, "k", lambda t: t["state"] == "ended", 15)
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)


@pytest.mark.timeout(90)
def test_an_unreachable_rtmp_server_is_retried_and_visible(service: Service, janus: Janus) -> None:
    from rtc_mpu.stack.ports import free_port

    url = f"rtmp://127.0.0.1:{free_port()}/live/nowhere?auth=secret"
    status, task = service.call(
        "POST",
        f"/v1/apps/{APP}/tasks",
        {
            "task_id": "refused",
            "channel_id": "nobody-here",
            "stream_url": url,
            "media_encode": 1,
        },
    )
    assert status == 201, task
    failing = service.wait_task(APP, "refused", lambda t: t["state"] == "retrying", 20)
    assert failing["status"] == 5, failing  # connection refused: a network problem, retried with backoff
    assert "secret" not in str(failing) and "nowhere" not in str(failing)
    status, _ = service.call("DELETE", f"/v1/apps/{APP}/tasks/refused")
    assert status == 200
    ended = service.wait_task(APP, "refused", lambda t: t["state"] == "ended", 15)
    assert ended["status"] == 3


@pytest.mark.timeout(90)
def test_an_empty_channel_stops_the_task_by_itself(service: Service, nginx_rtmp: NginxRtmp) -> None:
    url = nginx_rtmp.rtmp_url("e2e-empty")
    status, task = service.call(
        "POST",
        f"/v1/apps/{APP}/tasks",
        {
            "task_id": "lonely",
            "channel_id": "nobody-comes",
            "stream_url": url,
            "media_encode": 1,
        },
    )
    assert status == 201, task
    waiting = service.wait_task(APP, "lonely", lambda t: t["state"] == "running", 20)
    assert waiting["status"] == 0, "running but waiting for the channel to have a publisher"
    assert waiting["reason"].startswith("waiting for the channel"), waiting["reason"]
    ended = service.wait_task(APP, "lonely", lambda t: t["state"] == "ended", 20)
    assert ended["status"] == 4 and "empty" in ended["reason"]
    status, refused = service.call(
        "POST",
        f"/v1/apps/{APP}/tasks",
        {
            "task_id": "next",
            "channel_id": "nobody-comes",
            "stream_url": url,
            "media_encode": 1,
        },
    )
    assert status == 409 and refused["code"] == "StreamURL.CoolingDown", (
        "the lease was released with a cooldown"
    )


@pytest.mark.timeout(120)
def test_old_sdk_client_code_starts_a_real_mix(service: Service, janus: Janus, nginx_rtmp: NginxRtmp) -> None:
    """The vendor's documented client code, unchanged but for the endpoint and the keys."""
    import aliyunsdkcore.request
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.http import protocol_type
    from aliyunsdkrtc.request.v20180111.GetMPUTaskStatusRequest import GetMPUTaskStatusRequest
    from aliyunsdkrtc.request.v20180111.StartMPUTaskRequest import StartMPUTaskRequest
    from aliyunsdkrtc.request.v20180111.StopMPUTaskRequest import StopMPUTaskRequest

    publishers = publish(janus, "sdk", 2, 60)
    try:
        time.sleep(1.5)
        viewer = Viewer(nginx_rtmp, "sdk-live")
        viewer.start()

        client = AcsClient(ACCESS_KEY, SECRET, "cn-hangzhou")
        request = StartMPUTaskRequest()
        request.set_AppId(APP)
        request.set_ChannelId("sdk")
        request.set_TaskId("sdk-task")
        request.set_MediaEncode(52)
        request.set_BackgroundColor(0)
        request.set_LayoutIdss([1, 2])
        request.set_StreamURL(nginx_rtmp.rtmp_url("sdk-live") + "?auth_key=k")
        request.add_query_param("TaskProfile", "2IN_720P")
        request.set_endpoint(f"127.0.0.1:{service.api_port}")
        aliyunsdkcore.request.set_default_protocol_type(protocol_type.HTTP)
        response = client.do_action_with_exception(request)
        assert b"RequestId" in response

        status = GetMPUTaskStatusRequest()
        status.set_AppId(APP)
        status.set_TaskId("sdk-task")
        status.set_endpoint(f"127.0.0.1:{service.api_port}")
        wait_until(lambda: b'"Status":1' in client.do_action_with_exception(status), 20, "status 1")
        wait_until(lambda: len(viewer.pictures) >= 20, 30, "the viewer receives the mix")
        picture = viewer.pictures[-1][1]
        assert picture.shape[:2] == (360, 640)
        assert near(colour_at(picture, 0.30, 0.326), COLORS[0]), "layout 2, left pane: user1"
        assert near(colour_at(picture, 0.80, 0.326), COLORS[1]), "layout 2, right pane: user2"

        stop = StopMPUTaskRequest()
        stop.set_AppId(APP)
        stop.set_TaskId("sdk-task")
        stop.set_endpoint(f"127.0.0.1:{service.api_port}")
        client.do_action_with_exception(stop)
        wait_until(lambda: b'"Status":3' in client.do_action_with_exception(status), 15, "status 3")
        wait_until(lambda: stream_stats(nginx_rtmp, "sdk-live")[0] == 0, 10, "the push ends")
    finally:
        publishers.terminate()
        publishers.wait(timeout=15)
