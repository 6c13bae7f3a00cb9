"""Pushing to a real nginx-rtmp: a viewer pulls the RTMP stream and the HLS output while we push."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import av
import numpy as np
import numpy.typing as npt

from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.video.geometry import fit, pane_rect
from rtc_mpu.spec.task import CropMode
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port
from tests.media import COLORS, TONES, rgb, tone_level_db

SECONDS = 5


def mpu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtc_mpu.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def is_publishing(server: NginxRtmp, stream: str) -> bool:
    """Whether nginx-rtmp's stat page lists ``stream`` with a publisher whose video headers arrived."""
    url = f"http://{server.host}:{server.http_port}/stat"
    with urllib.request.urlopen(url, timeout=2) as response:
        root = ElementTree.fromstring(response.read())
    return any(
        s.findtext("name") == stream
        and s.find("client/publishing") is not None
        and s.find("meta/video") is not None
        for s in root.iter("stream")
    )


def watch(server: NginxRtmp, stream: str, into: dict[str, object], deadline: float) -> None:
    """A viewer: wait until the stream is live (as a player page would), then decode until it stops.

    nginx-rtmp keeps a player connected after the publisher leaves, so the end shows up as a read
    timeout; everything decoded until then is kept.
    """
    while time.monotonic() < deadline and not is_publishing(server, stream):
        time.sleep(0.05)
    pictures: list[npt.NDArray[np.uint8]] = []
    audio: list[npt.NDArray[np.float32]] = []
    into["pictures"], into["audio"] = pictures, audio
    # A live FLV is probed in real time: keep analyzeduration (microseconds) below the open timeout.
    options = {"analyzeduration": "3000000"}
    try:
        with av.open(server.rtmp_url(stream), options=options, timeout=(10.0, 3.0)) as container:
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
            for frame in container.decode():
                if isinstance(frame, av.VideoFrame):
                    pictures.append(rgb(frame))
                elif isinstance(frame, av.AudioFrame):
                    audio.extend(f.to_ndarray() for f in resampler.resample(frame))
    except av.error.FFmpegError as exc:
        into["error"] = exc


def test_live_push_is_watchable_over_rtmp_and_hls(nginx_rtmp: NginxRtmp, clips: list[Path]) -> None:
    url = nginx_rtmp.rtmp_url("mix1")
    seen: dict[str, object] = {}
    viewer = threading.Thread(
        target=watch, args=(nginx_rtmp, "mix1", seen, time.monotonic() + 20), daemon=True
    )
    viewer.start()
    result = mpu(
        "render",
        "--layout-ids",
        "2",
        "--media-encode",
        "1",
        "--duration",
        str(SECONDS),
        "--output",
        url,
        str(clips[0]),
        str(clips[1]),
    )
    assert result.returncode == 0, result.stderr
    viewer.join(timeout=20)
    pictures = seen["pictures"]
    assert isinstance(pictures, list) and pictures, f"viewer got nothing: {seen.get('error')}"
    # The viewer joins a moment after the push starts, but must see most of it at 15 fps.
    assert len(pictures) >= (SECONDS - 2) * 15, len(pictures)
    picture = pictures[-5]
    for pane in system_layout(2).panes:
        r = fit(320, 180, pane_rect(pane, 640, 360), CropMode.PAD).target
        mean = picture[r.y + 4 : r.y + r.height - 4, r.x + 4 : r.x + r.width - 4].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - COLORS[pane.id]).max() <= 12, (pane.id, mean)
    chunks = seen["audio"]
    assert isinstance(chunks, list) and chunks
    levels = [tone_level_db(np.concatenate(chunks, axis=1), 48000, f) for f in TONES[:2]]
    assert min(levels) > -20, levels
    # nginx-rtmp turned the push into HLS for viewers: the playlist lists segments that decode.
    playlist = nginx_rtmp.hls_dir / "mix1.m3u8"
    assert playlist.exists()
    segments = [line for line in playlist.read_text().splitlines() if line.endswith(".ts")]
    assert segments
    with urllib.request.urlopen(nginx_rtmp.hls_url("mix1"), timeout=5) as response:
        assert segments[0] in response.read().decode()
    with av.open(str(nginx_rtmp.hls_dir / segments[0])) as segment:
        assert len(list(segment.decode(video=0))) > 0


def test_refused_connection_fails_fast_with_the_key_redacted(clips: list[Path]) -> None:
    url = f"rtmp://127.0.0.1:{free_port()}/live/secretstreamkey?auth=topsecret"
    started = time.monotonic()
    result = mpu(
        "render", "--media-encode", "1", "--duration", "2", "--output", url, str(clips[0]), timeout=30
    )
    assert result.returncode == 3
    assert time.monotonic() - started < 15
    assert "output failed" in result.stderr
    assert "secretstreamkey" not in result.stderr and "topsecret" not in result.stderr
    assert "rtmp://127.0.0.1" in result.stderr
