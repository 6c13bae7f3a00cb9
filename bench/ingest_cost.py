"""Stream ingest (issue 19): the CPU one ingest costs, next to the ffmpeg CLI doing the same work.

Run it from the repository root::

    .venv/bin/python -m bench.ingest_cost [--seconds 20] [--size 1280x720] [--json PATH]

A clip of FFmpeg's ``testsrc2`` (moving shapes and text) with a tone is written at the size and
30 fps as H.264 + AAC in MP4, then played in real time by :class:`rtc_mpu.ingest.player.Player`
(decode, scale, libx264 ``veryfast``/``zerolatency`` re-encode, AAC to Opus, RTP packetizing) into a
sink that counts what it gets: this process's CPU seconds per second of media, the first 3 s not
measured. The baseline: the ffmpeg CLI reading the same file in real time (``-re``) and encoding the
same way (libx264 veryfast zerolatency at the same bitrate, libopus) to RTP (``-f rtp``) on loopback.
It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rtc_mpu.ingest.media import describe, open_media
from rtc_mpu.ingest.player import Player, output_size, video_bitrate
from rtc_mpu.stack.ports import free_port

WARM_UP_SECONDS = 3.0


class CountingSink:
    """A :class:`~rtc_mpu.ingest.player.PlayerSink` that counts access units, Opus frames and messages."""

    def __init__(self) -> None:
        self.video = 0
        self.audio = 0
        self.messages = 0
        self.bytes = 0

    def send_video(self, access_unit: bytes, timestamp: int) -> None:
        self.video += 1
        self.bytes += len(access_unit)

    def send_audio(self, opus: bytes, timestamp: int) -> None:
        self.audio += 1

    def send_data(self, text: str) -> None:
        self.messages += 1


def write_clip(path: Path, seconds: float, width: int, height: int) -> None:
    """``seconds`` of testsrc2 at ``width`` x ``height`` 30 fps (H.264, CRF 20) with a 440 Hz tone (AAC)."""
    source = av.open(f"testsrc2=size={width}x{height}:rate=30:duration={seconds:g}", format="lavfi")
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "20", "g": "60"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=48000, layout="stereo")
        for index, frame in enumerate(source.decode(video=0)):
            frame.pts, frame.time_base = index, Fraction(1, 30)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = round(seconds * 48000)
        for start in range(0, total, 1024):
            count = min(1024, total - start)
            t = np.arange(start, start + count) / 48000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            block = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            block.sample_rate, block.pts, block.time_base = 48000, start, Fraction(1, 48000)
            out.mux(audio.encode(block))
        out.mux(audio.encode(None))
    source.close()


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def ours(path: Path, seconds: float) -> dict[str, float]:
    container = open_media(
        "media:" + path.name,
        media_dir=path.parent,
        allow_private=False,
        open_timeout_seconds=5,
        read_timeout_seconds=5,
    )
    sink = CountingSink()
    player = Player(container, describe(container), sink, ingest_id="bench", url="media:" + path.name)
    player.start()
    time.sleep(WARM_UP_SECONDS)
    cpu, wall, frames = cpu_seconds(), time.monotonic(), sink.video
    time.sleep(seconds)
    elapsed = time.monotonic() - wall
    used = (cpu_seconds() - cpu) / elapsed
    fps = (sink.video - frames) / elapsed
    player.stop()
    return {
        "cpu_per_second": used,
        "fps": fps,
        "kbit_per_second": sink.bytes * 8 / 1000 / (elapsed + WARM_UP_SECONDS),
    }


def ffmpeg(path: Path, seconds: float, width: int, height: int) -> float:
    """The ffmpeg CLI's CPU seconds per second doing the same: decode, scale, x264, Opus, RTP."""
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise SystemExit("ffmpeg (Debian package ffmpeg) is needed for the baseline: make bench installs it")
    out_w, out_h = output_size(width, height)
    port = free_port()
    command = [
        binary, "-hide_banner", "-loglevel", "error", "-re", "-i", str(path),
        "-map", "0:v", "-vf", f"scale={out_w}:{out_h}", "-c:v", "libx264", "-preset", "veryfast",
        "-tune", "zerolatency", "-profile:v", "main", "-b:v", str(video_bitrate(out_w, out_h)), "-g", "60",
        "-f", "rtp", f"rtp://127.0.0.1:{port}",
        "-map", "0:a", "-c:a", "libopus", "-b:a", "96000", "-ar", "48000", "-ac", "2",
        "-f", "rtp", f"rtp://127.0.0.1:{port + 2}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    time.sleep(WARM_UP_SECONDS)
    before = _process_cpu(process.pid)
    started = time.monotonic()
    time.sleep(seconds)
    used = (_process_cpu(process.pid) - before) / (time.monotonic() - started)
    process.terminate()
    process.wait(10)
    return used


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    width, height = (int(part) for part in options.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        write_clip(clip, options.seconds + WARM_UP_SECONDS + 5, width, height)
        mine = ours(clip, options.seconds)
        theirs = ffmpeg(clip, options.seconds, width, height)
    result = {
        "size": options.size,
        "ingest_cpu_per_second": mine["cpu_per_second"],
        "ingest_fps": mine["fps"],
        "ingest_video_kbit_per_second": mine["kbit_per_second"],
        "ffmpeg_cpu_per_second": theirs,
        "ratio": mine["cpu_per_second"] / theirs if theirs else 0.0,
    }
    print(f"one ingest of a {options.size} 30 fps H.264/AAC file, re-encoded to H.264 + Opus, in real time")
    for key, value in result.items():
        print(f"  {key:32s} {value:.3f}" if isinstance(value, float) else f"  {key:32s} {value}")
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
