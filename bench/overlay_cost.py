"""Per-frame cost of overlays on a 1280x720 canvas: 2 images + 4 texts + a clock, next to the ffmpeg
CLI drawing the same overlays (overlay + drawtext filters).

Run it from the repository root::

    .venv/bin/python -m bench.overlay_cost [--frames 900] [--no-ffmpeg]

Ours: :class:`rtc_mpu.mixer.overlays.render.OverlayRenderer` makes the sprites (a watermark 256x144 with
alpha, an opaque logo 256x144, four ~40 px texts of which two are boxed, one clock) and
:class:`rtc_mpu.mixer.video.compositor.Compositor` composes 4 panes of 616x346 with and without them; the
difference per frame is the overlay cost (the clock is re-rendered once a second: ``now`` advances
1/30 s per frame). Wall time of this process, best of 3.

ffmpeg: the same canvas from ``color`` sources stacked 2x2 (the panes), then ``overlay`` of the two
images and ``drawtext`` of the four texts and a ``%{localtime}`` clock, ``-f null``; the difference of
CPU time (user + sys of the child) with and without those filters, per frame.

It prints numbers and asserts nothing about speed. The target (issue #6) is <= 1 ms per frame for ours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
from PIL import Image

from rtc_mpu.layouts import system_layout
from rtc_mpu.mixer.overlays.render import OverlayRenderer
from rtc_mpu.mixer.overlays.text import FONT_FILES
from rtc_mpu.mixer.video.compositor import Compositor, PaneDraw
from rtc_mpu.mixer.video.geometry import pane_rect
from rtc_mpu.spec.overlays import build_overlays
from rtc_mpu.spec.task import CropMode

WIDTH, HEIGHT, FPS = 1280, 720, 30
TEXTS = ["Host: Alice 爱丽丝", "Guest: Bob", "Live from Hangzhou", "Q&A at 21:00"]


def write_images(folder: Path) -> tuple[Path, Path]:
    """A semi-transparent watermark and an opaque logo, 256x144 PNGs."""
    ramp = np.zeros((144, 256, 4), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 256, dtype=np.uint8)[None, :]
    ramp[..., 1], ramp[..., 2] = 200, 80
    ramp[..., 3] = np.linspace(40, 255, 144, dtype=np.uint8)[:, None]
    watermark, logo = folder / "watermark.png", folder / "logo.png"
    Image.fromarray(ramp, "RGBA").save(watermark)
    Image.new("RGBA", (256, 144), (20, 60, 200, 255)).save(logo)
    return watermark, logo


def our_cost(frames: int, watermark: Path, logo: Path) -> tuple[float, float]:
    """(ms per frame without overlays, ms per frame with them), best of 3."""
    overlays = build_overlays(
        watermarks=[
            {"url": "http://bench/watermark.png", "x": 0.78, "y": 0.02, "width": 0.2, "height": 0.2}
            | {"alpha": 0.8},
            {"url": "http://bench/logo.png", "x": 0.02, "y": 0.78, "width": 0.2, "height": 0.2},
        ],
        user_panes=[
            {"pane_id": i, "texts": [{"text": t, "x": 0.05, "y": 0.8, "font_size": 36, "box": i % 2}]}
            for i, t in enumerate(TEXTS)
        ],
        clock_widgets=[{"x": 0.45, "y": 0.02, "font_size": 36, "font_color": 0x00FFFF}],
        clock_time_zone="UTC",
    )
    renderer = OverlayRenderer(WIDTH, HEIGHT)
    renderer.set_overlays(overlays)
    renderer.set_image("http://bench/watermark.png", np.asarray(Image.open(watermark).convert("RGBA")))
    renderer.set_image("http://bench/logo.png", np.asarray(Image.open(logo).convert("RGBA")))
    layout = system_layout(6)
    compositor = Compositor(WIDTH, HEIGHT, (0, 0, 0), CropMode.PAD)
    pictures = []
    for pane in layout.panes:
        rect = pane_rect(pane, WIDTH, HEIGHT)
        picture = np.full((rect.height, rect.width, 3), 40 * (pane.id + 1), np.uint8)
        pictures.append(av.VideoFrame.from_ndarray(picture, format="rgb24"))
    draws = [
        PaneDraw((6, pane.id), pane_rect(pane, WIDTH, HEIGHT), pane.zorder, pictures[pane.id])
        for pane in layout.panes
    ]
    panes = {pane.id: (pane, True) for pane in layout.panes}
    start = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

    def timed(with_overlays: bool) -> float:
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            for i in range(frames):
                now = start + timedelta(seconds=i / FPS)
                sprites = renderer.draws(panes, now) if with_overlays else []
                compositor.compose(draws, sprites)
            best = min(best, (time.perf_counter() - began) / frames * 1000)
        return best

    timed(True)  # warm: scale the images once, render the texts once
    return timed(False), timed(True)


def ffmpeg_cost(ffmpeg: str, frames: int, watermark: Path, logo: Path) -> tuple[float, float]:
    """(CPU ms per frame without overlays, with them) of the ffmpeg CLI, best of 3."""
    font = str(FONT_FILES[0][0])
    panes = "".join(
        f"color=c=0x{40 * (i + 1):02x}{40 * (i + 1):02x}{40 * (i + 1):02x}:s=616x346:r={FPS}[p{i}];"
        for i in range(4)
    )
    base = f"{panes}[p0][p1][p2][p3]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0,pad={WIDTH}:{HEIGHT}[canvas]"
    texts = ",".join(
        f"drawtext=fontfile={font}:text='{t.replace(':', chr(92) + ':')}':fontsize=36:fontcolor=white:"
        f"x={(i % 2) * 640 + 30}:y={(i // 2) * 360 + 290}" + (":box=1:boxcolor=black" if i % 2 else "")
        for i, t in enumerate(TEXTS)
    )
    clock_text = "%{localtime\\:%H\\\\\\:%M\\\\\\:%S}"
    clock = f"drawtext=fontfile={font}:text='{clock_text}':fontsize=36:fontcolor=cyan:x=576:y=14"
    full = (
        f"{base};movie={watermark}[wm];movie={logo}[logo];"
        f"[canvas][wm]overlay=x=1000:y=14:format=yuv420[a];[a][logo]overlay=x=26:y=560:format=yuv420,"
        f"{texts},{clock}[out]"
    )
    results = []
    for graph, label in ((f"{base};[canvas]null[out]", "[out]"), (full, "[out]")):
        best = float("inf")
        for _ in range(3):
            command = [
                ffmpeg, "-v", "error", "-filter_complex", graph, "-map", label,
                "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-f", "null", "-",
            ]  # fmt: skip
            process = subprocess.Popen(command)
            _, status, usage = os.wait4(process.pid, 0)
            if status != 0:
                raise RuntimeError(f"ffmpeg failed: {' '.join(command)}")
            best = min(best, (usage.ru_utime + usage.ru_stime) / frames * 1000)
        results.append(best)
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    """Print the per-frame costs; 0 when done, 1 when ffmpeg is asked for and missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=900)
    parser.add_argument("--no-ffmpeg", action="store_true", help="skip the ffmpeg baseline")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        watermark, logo = write_images(Path(folder))
        plain, with_overlays = our_cost(args.frames, watermark, logo)
        print(
            f"ours: compose 4 panes {plain:.3f} ms/frame; with 2 images, 4 texts, a clock {with_overlays:.3f}"
        )
        print(f"ours: overlay cost {with_overlays - plain:.3f} ms/frame (target <= 1 ms)")
        if args.no_ffmpeg:
            return 0
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            print("ffmpeg CLI not found (make bench installs it)", file=sys.stderr)
            return 1
        base, full = ffmpeg_cost(ffmpeg, args.frames, watermark, logo)
        print(f"ffmpeg: canvas {base:.3f} CPU-ms/frame; with overlay + drawtext {full:.3f}")
        print(f"ffmpeg: overlay cost {full - base:.3f} CPU-ms/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
