"""The ``rtc`` output (issue 14): glass-to-glass delay to a WebRTC viewer, and the CPU the output adds.

Run it from the repository root (needs the Debian ``janus`` package)::

    .venv/bin/python -m bench.rtc_delay [--seconds 15] [--json PATH]

A private Janus on free loopback ports; ``mpu publish`` (a child process) publishes one synthetic
1280x720 30 fps user whose pictures carry their capture time (wall clock, ms) burned into the bottom
rows (:func:`rtc_mpu.stack.publisher.stamp_capture_time`). This process mixes the channel as a task
does (:class:`~rtc_mpu.mixer.sources.janus.JanusSource` into a 1280x720 30 fps pipeline, MediaEncode
27, layout 1: the user fills the canvas 1:1, so the stamp survives) with an ``rtc`` output publishing
``bench.mix`` into the same room. A second child process watches ``bench.mix`` with aiortc
(:class:`rtc_mpu.stack.viewer.Viewer`) and reads the stamp of every decoded picture: the delay is
``decode time - capture time``, capture to the viewer's decoded picture through Janus twice, the mix
and the encoder. The mix runs with and without the ``rtc`` output, alternated, twice each; the CPU
the output adds is this process's mean CPU time per second with it minus without it (noisy on a
busy machine: x264's threads vary between runs by about as much), and, measured directly, the CPU
of the output's job thread (``/proc``: Opus encoding of the mixed blocks, RTP packetizing and
sending), each beside the whole task's. With ``--users N`` the channel has N publishers (all
decoded, the first fills the canvas; the delay is only read right with ``--size 1280x720``).
Last, 300 frames of FFmpeg's ``testsrc2`` at 1280x720 are encoded in high and in main profile (the
one an rtc output imposes) to compare their CPU, their bytes and their picture quality (luma PSNR
against the source). The first 4 s of each run are not measured. It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from rtc_mpu.mixer.output.encoder import EncoderSettings, PacketEncoder
from rtc_mpu.mixer.output.rtc import RTC_PROFILE, rtc_muxer_factory, rtc_output
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.publisher import read_capture_time, wall_ms
from rtc_mpu.stack.viewer import Viewer
from rtc_mpu.workers.outputs import NULL_SINK, null_muxer

#: Seconds ignored at the start of a run (ICE, DTLS, first keyframes).
WARM_UP_SECONDS = 4.0
MEDIA_ENCODE_ID = 27  # 1280x720, 30 fps
#: The rtc output's job thread (``mpu-out-<name>`` cut to 15 characters, outputs.py).
OUTPUT_THREAD = "mpu-out-rtc"


def profile_cost(profile: str, frames: int = 300) -> tuple[float, int, float]:
    """Encode ``frames`` 1280x720 frames of FFmpeg's ``testsrc2`` (moving shapes, text and a
    gradient) with the task's encoder settings (MediaEncode 27, 2 Mbit/s CBR) in ``profile``.

    Returns:
        CPU seconds of the encode, bytes out, and the mean luma PSNR (dB) of the decoded pictures
        against the source (the quality at that bitrate).
    """
    settings = EncoderSettings(1280, 720, 30, 2_048_000, 128_000, profile=profile)
    encoder = PacketEncoder(settings)
    source = av.open(f"testsrc2=size=1280x720:rate=30:duration={frames / 30:g}", format="lavfi")
    pictures = [frame for frame in source.decode(video=0)][:frames]
    source.close()
    packets = []
    started = cpu_seconds()
    for index, picture in enumerate(pictures):
        packets += encoder.encode_video(picture, index)
    packets += encoder.flush()
    used = cpu_seconds() - started
    templates = encoder.templates
    assert templates.video is not None
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = templates.video.codec_context.extradata
    decoded = []
    for packet in packets:
        if packet.video:
            decoded += decoder.decode(av.Packet(packet.data))
    decoded += decoder.decode(None)
    psnr = []
    for original, output in zip(pictures, decoded, strict=False):
        a = luma(original).astype(np.float64)
        b = luma(output).astype(np.float64)
        mse = float(np.mean((a - b) ** 2))
        psnr.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    return used, sum(len(p.data) for p in packets if p.video), float(np.mean(psnr))


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The (H, W) uint8 Y plane of a yuv420p ``frame``."""
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width]


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def thread_cpu_seconds(name: str) -> float:
    """CPU seconds (user + system) of this process's Python threads named ``name`` so far, from
    ``/proc/self/task/<tid>/stat`` (fields 14 and 15, in clock ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if thread.name != name or thread.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def view(janus_url: str, room: str, feed: str, seconds: float) -> list[int]:
    """Watch ``feed`` for ``seconds`` (after the warm-up); the delay of each decoded picture, ms."""
    delays: list[int] = []
    measuring_from = time.monotonic() + WARM_UP_SECONDS

    def on_frame(frame: av.VideoFrame | av.AudioFrame, arrived: float) -> None:
        if not isinstance(frame, av.VideoFrame) or arrived < measuring_from:
            return
        now = wall_ms()
        luma = np.frombuffer(memoryview(frame.planes[0]), np.uint8).reshape(frame.height, -1)[
            :, : frame.width
        ]
        stamp = read_capture_time(np.repeat(luma[:, :, None], 3, axis=2))
        delays.append((now - stamp) & 0xFFFFFFFF)

    viewer = Viewer(janus_url, room, feed, on_frame)
    for _ in range(100):
        try:
            await viewer.start()
            break
        except Exception:  # the mix is not published yet
            await viewer.stop()
            viewer = Viewer(janus_url, room, feed, on_frame)
            await asyncio.sleep(0.2)
    await asyncio.sleep(WARM_UP_SECONDS + seconds)
    await viewer.stop()
    print(f"viewer: {len(delays)} pictures measured", file=sys.stderr)
    return delays


async def mix(
    janus: Janus, room_channel: str, seconds: float, with_rtc: bool, viewer_json: Path
) -> dict[str, float]:
    """Mix the channel for the warm-up plus ``seconds``; CPU seconds per second of this process."""
    channel = ChannelConfig(janus.url, "bench", room_channel)
    spec = build_task_spec(layout_ids=[1], media_encode_id=MEDIA_ENCODE_ID)
    pipeline = Pipeline(
        spec,
        JanusSource(channel),
        NULL_SINK,
        realtime=True,
        muxer_factory=null_muxer,
        video_profile=RTC_PROFILE,
    )
    run = asyncio.create_task(pipeline.run())
    viewer: subprocess.Popen[bytes] | None = None
    if with_rtc:
        await pipeline.add_output(
            "rtc",
            rtc_output(channel, "bench.mix"),
            muxer_factory=rtc_muxer_factory(
                channel, "bench.mix", asyncio.get_running_loop(), pipeline.request_keyframe
            ),
        )
        viewer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.rtc_delay",
                "--view",
                janus.url,
                channel.room,
                "bench.mix",
                str(seconds),
                str(viewer_json),
            ]
        )
    await asyncio.sleep(WARM_UP_SECONDS)
    cpu, wall, output_cpu = cpu_seconds(), time.monotonic(), thread_cpu_seconds(OUTPUT_THREAD)
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - wall
    used = (cpu_seconds() - cpu) / elapsed
    output_used = (thread_cpu_seconds(OUTPUT_THREAD) - output_cpu) / elapsed
    if viewer is not None:
        await asyncio.to_thread(viewer.wait, WARM_UP_SECONDS + seconds + 30)
    pipeline.stop()
    await run
    return {
        "cpu_per_second": used,
        "output_thread_cpu_per_second": output_used,
        "video_frames": float(pipeline.stats.video_frames),
    }


async def bench(seconds: float, users: int = 1, size: str = "1280x720") -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        janus = Janus(Path(folder) / "janus", http_port=free_port(), rtp_port_range="45000-45999")
        janus.start()
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtc_mpu.cli.main",
                "publish",
                "--janus",
                janus.url,
                "--app",
                "bench",
                "--channel",
                "rtc",
                "--users",
                str(users),
                "--size",
                size,
                "--fps",
                "30",
                "--stamp-time",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(2.0)
            viewer_json = Path(folder) / "viewer.json"
            # Alternated, twice each: x264's threads alone vary by more than the output costs.
            runs = [
                await mix(janus, "rtc", seconds, with_output, viewer_json)
                for with_output in (True, False) * 2
            ]
            with_rtc = {key: (runs[0][key] + runs[2][key]) / 2 for key in runs[0]}
            without = {key: (runs[1][key] + runs[3][key]) / 2 for key in runs[1]}
            delays = np.array(json.loads(viewer_json.read_text()) or [0])
        finally:
            publisher.terminate()
            publisher.wait(10)
            janus.stop()
    added = with_rtc["cpu_per_second"] - without["cpu_per_second"]
    high_cpu, high_bytes, high_psnr = profile_cost("high")
    main_cpu, main_bytes, main_psnr = profile_cost(RTC_PROFILE)
    return {
        "users": users,
        "encode_cpu_s_300_frames_high": high_cpu,
        "encode_cpu_s_300_frames_main": main_cpu,
        "encode_kbytes_high": high_bytes / 1000,
        "encode_kbytes_main": main_bytes / 1000,
        "psnr_y_db_high": high_psnr,
        "psnr_y_db_main": main_psnr,
        "delay_ms_p50": float(np.percentile(delays, 50)),
        "delay_ms_p95": float(np.percentile(delays, 95)),
        "delay_ms_max": float(delays.max()),
        "pictures_measured": len(delays),
        "task_cpu_per_second_with_rtc": with_rtc["cpu_per_second"],
        "task_cpu_per_second_without_rtc": without["cpu_per_second"],
        "rtc_output_cpu_per_second": added,
        "rtc_output_share_of_task": added / with_rtc["cpu_per_second"] if with_rtc["cpu_per_second"] else 0.0,
        "rtc_thread_cpu_per_second": with_rtc["output_thread_cpu_per_second"],
        "rtc_thread_share_of_task": (
            with_rtc["output_thread_cpu_per_second"] / with_rtc["cpu_per_second"]
            if with_rtc["cpu_per_second"]
            else 0.0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--view":  # the viewer child process
        janus_url, room, feed, seconds, out = args[1:6]
        delays = asyncio.run(view(janus_url, room, feed, float(seconds)))
        Path(out).write_text(json.dumps(delays))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--users",
        type=int,
        default=1,
        help="publishers in the channel (all decoded; the first fills the canvas)",
    )
    parser.add_argument("--size", default="1280x720", help="the publishers' picture size")
    options = parser.parse_args(args)
    result = asyncio.run(bench(options.seconds, options.users, options.size))
    print("rtc output: capture -> Janus -> mix (1280x720 30 fps, main profile) -> Janus -> aiortc viewer")
    for key, value in result.items():
        print(f"  {key:36s} {value:.3f}" if isinstance(value, float) else f"  {key:36s} {value}")
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
