"""A WHIP publisher in a running mix, end to end in token mode: real Redis, Janus (signed tokens),
nginx-rtmp; the API (``MPU_TOKEN_SECRET``), a Celery worker and the WHIP edge as processes. The app
backend asks the API for a publish token, a task mixes the channel (layout 1) to nginx-rtmp, FFmpeg's
WHIP muxer (a client nobody here wrote, :mod:`tests.whip_client`) publishes a red picture and a 440 Hz
tone through the API's WHIP endpoint, and an RTMP viewer decodes the mix: the pane is red, the audio's
strongest frequency is the tone."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.redis import Redis
from tests import whip_client
from tests.conftest import TOKEN_SECRET
from tests.service import Service, running_service, service_env
from tests.test_service_e2e import Viewer, colour_at, wait_until
from tests.test_whip_ingest import stop_client

APP, CHANNEL, USER, TASK = "app1", "whip-mix", "ffmpeg-red", "whipmix"


@pytest.fixture
def token_service(redis_server: Redis, janus_tokens: Janus, tmp_path: Path) -> Iterator[Service]:
    """The service in token mode (API, worker, edge) on its own Redis database (11)."""
    env = service_env(
        f"{redis_server.url.rsplit('/', 1)[0]}/11",
        janus_tokens.url,
        MPU_TOKEN_SECRET=TOKEN_SECRET,
        MPU_COOLDOWN="3",
        MPU_LEASE_SECONDS="3",
        MPU_EMPTY_TIMEOUT="30",
    )
    with running_service(env, tmp_path, edge=True) as service:
        yield service


def red(colour: npt.NDArray[np.float64]) -> bool:
    """Red-ish: the client's (200, 30, 30) after two H.264 encodes, with room to spare."""
    r, g, b = colour
    return bool(r > 140 and g < 90 and b < 90)


def dominant_frequency(audio: npt.NDArray[np.float32], sample_rate: int) -> float:
    """The strongest frequency (Hz, 50 Hz-10 kHz) of ``(channels, n)`` audio, their mean analysed."""
    x = audio.mean(axis=0).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    band = (freqs >= 50) & (freqs <= 10_000)
    return float(freqs[band][np.argmax(spectrum[band])])


@pytest.mark.timeout(90)
def test_a_whip_publisher_is_mixed_into_the_rtmp_output(
    token_service: Service, nginx_rtmp: NginxRtmp, tmp_path: Path
) -> None:
    service = token_service
    status, issued = service.call(
        "POST",
        f"/v1/apps/{APP}/tokens",
        {"channel_id": CHANNEL, "user_id": USER, "ttl_seconds": 300, "role": "publish"},
    )
    assert status == 201, issued
    status, task = service.call(
        "POST",
        f"/v1/apps/{APP}/tasks",
        {
            "task_id": TASK,
            "channel_id": CHANNEL,
            "stream_url": nginx_rtmp.rtmp_url(TASK),
            "layout_ids": [1],
            "media_encode": 1,
        },
    )
    assert status == 201, task
    # The mix pushes its background while the channel is empty: the viewer plays before anybody publishes,
    # so the time to the red picture is the publisher's, not the player's start-up.
    viewer = Viewer(nginx_rtmp, TASK)
    viewer.start()
    wait_until(lambda: len(viewer.pictures) >= 5, 30, "the viewer to play the (empty) mix")
    assert not red(colour_at(viewer.pictures[-1][1], 0.5, 0.5))

    cert, key = whip_client.write_p256_certificate(tmp_path / "cert")
    endpoint = f"{service.base}/v1/apps/{APP}/channels/{CHANNEL}/whip"
    client = whip_client.start(endpoint, issued["token"], cert, key, seconds=40)
    log = ""
    try:
        try:
            wait_until(lambda: any(red(colour_at(p, 0.5, 0.5)) for _, p in viewer.pictures), 20, "red")
        except AssertionError:
            raise AssertionError(
                f"no red picture in the mix\n--- edge ---\n{service.log('edge')}\n"
                f"--- worker ---\n{service.log('worker')}"
            ) from None
        first_red = next(t for t, p in viewer.pictures if red(colour_at(p, 0.5, 0.5)))
        running = service.wait_task(APP, TASK, lambda t: t["status"] == 1 and t["users"] == [USER], 10)
        assert running["state"] == "running"
        audio_from = len(viewer.audio)
        time.sleep(2.5)  # 2.5 s of the publisher's tone through the mix
        audio = np.concatenate(viewer.audio[audio_from:], axis=1)
        last = viewer.pictures[-1][1]
    finally:
        log = stop_client(client)  # SIGTERM: the muxer DELETEs its resource
    posted = re.search(r"whip_client: POST at monotonic ([\d.]+)", log)
    assert posted, log
    # FFmpeg's WHIP DELETE made the user leave the mix.
    service.wait_task(APP, TASK, lambda t: t["users"] == [], 15)
    status, _ = service.call("DELETE", f"/v1/apps/{APP}/tasks/{TASK}")
    assert status == 200
    service.wait_task(APP, TASK, lambda t: t["state"] == "ended", 20)

    centre = colour_at(last, 0.5, 0.5)
    frequency = dominant_frequency(audio, 48000)
    print(
        f"WHIP POST to the red picture in the RTMP output: {first_red - float(posted.group(1)):.2f} s; "
        f"pane colour {np.round(centre).tolist()}, dominant frequency {frequency:.1f} Hz "
        f"({audio.shape[1] / 48000:.1f} s of audio)"
    )
    assert red(centre), centre
    assert audio.shape[1] >= 48000, audio.shape
    assert abs(frequency - whip_client.TONE_HZ) < 15, frequency
    assert "whip_client: closed" in log, log
