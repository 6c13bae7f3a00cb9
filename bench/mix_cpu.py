"""CPU cost of a 4-user 1280x720 30 fps mix (layout 6, MediaEncode 27): ``mpu render`` vs the ffmpeg CLI.

Run it from the repository root::

    .venv/bin/python -m bench.mix_cpu [--seconds 20] [--repeat 2] [--case all] [--json results.json]

What it does:

1. Generates, once, 4 input clips per case into ``--cache-dir`` (default ``bench/.cache/``) with the
   ffmpeg CLI: a solid colour per user with a moving test-pattern inset and a moving white bar (real
   motion for x264), a distinct sine tone per user; H.264 yuv420p + AAC 48 kHz mono in MP4, 30 fps.
   Case ``pane-size``: inputs of exactly the pane size of layout 6 on the canvas (616x346), so the
   mixer copies them without scaling. Case ``720p``: 1280x720 inputs, scaled down to the panes.
   Generation time is not measured.
2. Renders each case ``--repeat`` times with ``mpu render --offline`` (ours) and with one ffmpeg
   CLI command doing the same job (the baseline), alternating, each as a child process, and reports
   the smallest CPU time (user + sys of the child, from ``os.wait4``) and wall time of each side.
   Both sides leave every thread count at its default (automatic); ours decodes its inputs with slice
   threads only (see mixer/file_source.py), ffmpeg with frame threads. A "steady" ratio also leaves out
   our fixed start-up cost (``python -c "import rtc_mpu.cli.main"``: interpreter, numpy, PyAV), which a
   long-running task pays once.
3. Times :meth:`rtc_mpu.mixer.video.compositor.Compositor.compose` in this process with fresh decoded frames
on every
   call (so the per-pane scale cache never hides a copy), for both input sizes.

It prints numbers and asserts nothing about speed. Exit status: 0 done, 1 ffmpeg missing, a child
failed, or an output does not have the expected number of video frames.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av

from rtc_mpu.layouts import Pane, media_encode, system_layout
from rtc_mpu.mixer.output.encoder import AAC_FAST_CODER_MIN_BITRATE, DEFAULT_GOP_SECONDS, DEFAULT_PRESET
from rtc_mpu.mixer.video.compositor import Compositor, PaneDraw
from rtc_mpu.mixer.video.geometry import Rect, fit, pane_rect
from rtc_mpu.spec.task import CropMode

#: System layout mixed by both sides: "gallery 4", four equal panes.
LAYOUT_ID = 6
#: MediaEncode of the output: 1280x720, 30 fps, 2048 kbit/s video, 128 kbit/s audio.
MEDIA_ENCODE_ID = 27
#: Audio sample rate of inputs and output, in Hz.
SAMPLE_RATE = 48000
#: Users (input clips) per case.
USERS = 4
#: Extra seconds of input beyond ``--seconds``, so no input ends before the output does.
INPUT_TAIL_SECONDS = 1.0
#: Frames decoded per input clip for the compositing measurement (cycled through, one fresh frame per call).
COMPOSE_DECODED_FRAMES = 60
#: Bumped when the generated clips change, to invalidate old caches.
CLIP_RECIPE_VERSION = 1
#: Repository root (the children run from here, so ``-m rtc_mpu.cli.main`` resolves without an install).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Default input cache (gitignored).
DEFAULT_CACHE_DIR = REPO_ROOT / "bench" / ".cache"

#: Background colour (8-bit RGB) of each user's clip.
COLORS: list[tuple[int, int, int]] = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 210, 40)]
#: Tone frequency (Hz) of each user's clip.
TONES: list[float] = [440.0, 620.0, 830.0, 1070.0]


class BenchError(Exception):
    """The benchmark cannot go on (a tool is missing or a child process failed)."""


@dataclass(frozen=True)
class Case:
    """One input configuration.

    Attributes:
        name: ``pane-size`` or ``720p``.
        width, height: input picture size in pixels.
    """

    name: str
    width: int
    height: int

    @property
    def size(self) -> str:
        """``WIDTHxHEIGHT``."""
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Output:
    """The output format both sides produce (from MediaEncode ``MEDIA_ENCODE_ID`` and mixer/encoder.py).

    Attributes:
        width, height: canvas size in pixels.
        fps: frames per second.
        video_bitrate, audio_bitrate: bit/s.
        gop_frames: keyframe interval in frames.
        preset: x264 preset.
    """

    width: int
    height: int
    fps: int
    video_bitrate: int
    audio_bitrate: int
    gop_frames: int
    preset: str


def output_format() -> Output:
    """The output of MediaEncode ``MEDIA_ENCODE_ID`` with the encoder's default GOP and preset."""
    encode = media_encode(MEDIA_ENCODE_ID)
    return Output(
        width=encode.width,
        height=encode.height,
        fps=encode.fps,
        video_bitrate=encode.video_bitrate,
        audio_bitrate=encode.audio_bitrate,
        gop_frames=DEFAULT_GOP_SECONDS * encode.fps,
        preset=DEFAULT_PRESET,
    )


def layout_panes(out: Output) -> list[tuple[Pane, Rect]]:
    """The panes of layout ``LAYOUT_ID`` with their pixel rectangles on the ``out`` canvas."""
    return [(pane, pane_rect(pane, out.width, out.height)) for pane in system_layout(LAYOUT_ID).panes]


def pane_input_size(out: Output) -> tuple[int, int]:
    """The input size (pixels) that fills every pane of the layout exactly, so the mixer does no scaling.

    Raises:
        BenchError: if the panes differ in size or a picture of that size would still be scaled or padded.
    """
    rects = [rect for _, rect in layout_panes(out)]
    sizes = {(rect.width, rect.height) for rect in rects}
    if len(sizes) != 1:
        raise BenchError(f"layout {LAYOUT_ID} panes differ in size: {sorted(sizes)}")
    width, height = sizes.pop()
    for rect in rects:
        placement = fit(width, height, rect, CropMode.PAD)
        if (placement.scaled_width, placement.scaled_height) != (width, height) or placement.target != rect:
            raise BenchError(f"a {width}x{height} picture is not copied 1:1 into pane {rect}: {placement}")
    return width, height


def cases(out: Output) -> list[Case]:
    """Both cases, pane-size first."""
    width, height = pane_input_size(out)
    return [Case("pane-size", width, height), Case("720p", 1280, 720)]


# -- tools ------------------------------------------------------------------------------------------


def find_ffmpeg(explicit: str | None) -> str:
    """The ffmpeg CLI to use: ``explicit``, else ``ffmpeg`` on PATH, else ``/usr/bin/ffmpeg``.

    Raises:
        BenchError: none of them exists.
    """
    candidates = [explicit] if explicit else [shutil.which("ffmpeg"), "/usr/bin/ffmpeg"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(
        "the ffmpeg CLI is missing (not on PATH nor /usr/bin/ffmpeg); install it: apt-get install ffmpeg"
    )


def tool_version(ffmpeg: str) -> str:
    """First line of ``ffmpeg -version``, e.g. ``ffmpeg version 5.1.x ...``."""
    result = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"


# -- inputs -----------------------------------------------------------------------------------------


def _even(value: float) -> int:
    return 2 * max(1, round(value / 2))


def clip_command(ffmpeg: str, case: Case, index: int, seconds: float, fps: int, path: Path) -> list[str]:
    """The ffmpeg command writing user ``index``'s clip of ``seconds`` seconds to ``path``.

    Picture: solid ``COLORS[index]``, a test-pattern inset (1/4 x 1/3 of the picture) sliding and
    bobbing, and a white bar (1/25 of the width) sweeping across. Sound: a ``TONES[index]`` Hz sine.
    """
    w, h = case.width, case.height
    r, g, b = COLORS[index]
    inset_w, inset_h = _even(w / 4), _even(h / 3)
    speed = w / 4  # pixels per second of the inset
    bar_w, bar_speed = _even(w / 25), w / 6.5
    graph = (
        f"[0:v][1:v]overlay=x='mod(t*{speed:.1f}+{index * w // 5},W-w)'"
        f":y='(H-h)/2*(1+sin(t*1.3+{index}))':shortest=1,"
        f"drawbox=x='mod(t*{bar_speed:.1f}+{index * w // 3},iw)':y=0:w={bar_w}:h=ih:color=white:t=fill,"
        "format=yuv420p[v]"
    )
    duration = f"{seconds:g}"
    return [
        ffmpeg, "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"color=c=0x{r:02X}{g:02X}{b:02X}:s={w}x{h}:r={fps}:d={duration}",
        "-f", "lavfi", "-i", f"testsrc2=s={inset_w}x{inset_h}:r={fps}:d={duration}",
        "-f", "lavfi", "-i", f"sine=frequency={TONES[index]:g}:sample_rate={SAMPLE_RATE}:duration={duration}",
        "-filter_complex", graph, "-map", "[v]", "-map", "2:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", str(2 * fps), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-ar", str(SAMPLE_RATE), "-ac", "1",
        "-f", "mp4", str(path),
    ]  # fmt: skip


def ensure_inputs(ffmpeg: str, case: Case, seconds: float, fps: int, cache_dir: Path) -> list[Path]:
    """The case's ``USERS`` clips (``seconds + INPUT_TAIL_SECONDS`` long), generated into ``cache_dir`` once.

    Raises:
        BenchError: ffmpeg failed.
    """
    clip_seconds = seconds + INPUT_TAIL_SECONDS
    folder = cache_dir / f"{case.name}-{case.size}-{clip_seconds:g}s"
    paths = [folder / f"user{i + 1}.mp4" for i in range(USERS)]
    recipe = {
        "version": CLIP_RECIPE_VERSION,
        "size": case.size,
        "seconds": clip_seconds,
        "fps": fps,
        "colors": COLORS,
        "tones": TONES,
    }
    manifest = folder / "manifest.json"
    try:
        if json.loads(manifest.read_text("utf-8")) == json.loads(json.dumps(recipe)) and all(
            p.is_file() for p in paths
        ):
            return paths
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    print(f"generating {USERS} {case.size} clips of {clip_seconds:g} s into {folder} ...", file=sys.stderr)
    for index, path in enumerate(paths):
        partial = path.with_suffix(".part.mp4")
        result = subprocess.run(
            clip_command(ffmpeg, case, index, clip_seconds, fps, partial),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"generating {path} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
        partial.replace(path)
    manifest.write_text(json.dumps(recipe, indent=1), "utf-8")
    return paths


# -- the two commands -------------------------------------------------------------------------------


def ours_command(inputs: Sequence[Path], seconds: float, output: Path) -> list[str]:
    """``mpu render --offline`` of the inputs, layout ``LAYOUT_ID``, MediaEncode ``MEDIA_ENCODE_ID``."""
    return [
        sys.executable, "-m", "rtc_mpu.cli.main", "render", "--offline",
        "--layout-ids", str(LAYOUT_ID), "--media-encode", str(MEDIA_ENCODE_ID),
        "--duration", f"{seconds:g}", "--output", str(output), *map(str, inputs),
    ]  # fmt: skip


def ffmpeg_command(
    ffmpeg: str, case: Case, inputs: Sequence[Path], seconds: float, out: Output, output: Path
) -> list[str]:
    """The ffmpeg CLI doing the same mix as ours.

    Video: each input scaled (bilinear, like the compositor) to the pane size when it is not that
    size already; ``xstack`` with ``fill=black`` places them at the panes' pixel positions (its canvas
    ends at the bottom-right pane edge) and ``pad`` extends it to the full black canvas. Audio: each
    input resampled to 48 kHz stereo, then ``amix`` (``normalize=0``: a plain sum, like our mixer).
    Encoding: libx264 and AAC with the settings of mixer/encoder.py (the same AAC coder); threads left
    at their defaults.
    """
    panes = layout_panes(out)
    pane_w, pane_h = pane_input_size(out)
    chains: list[str] = []
    video_labels: list[str] = []
    for i in range(len(inputs)):
        if (case.width, case.height) == (pane_w, pane_h):
            video_labels.append(f"[{i}:v]")
        else:
            chains.append(f"[{i}:v]scale={pane_w}:{pane_h}:flags=bilinear[v{i}]")
            video_labels.append(f"[v{i}]")
        chains.append(f"[{i}:a]aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo[a{i}]")
    positions = "|".join(f"{rect.x}_{rect.y}" for _, rect in panes[: len(inputs)])
    chains.append(
        f"{''.join(video_labels)}xstack=inputs={len(inputs)}:layout={positions}:fill=black,"
        f"pad={out.width}:{out.height}:0:0:color=black,format=yuv420p[v]"
    )
    chains.append(f"{''.join(f'[a{i}]' for i in range(len(inputs)))}amix=inputs={len(inputs)}:normalize=0[a]")
    gop = out.gop_frames
    input_args = [arg for path in inputs for arg in ("-i", str(path))]
    return [
        ffmpeg, "-nostdin", "-loglevel", "error", "-y", *input_args,
        "-filter_complex", ";".join(chains), "-map", "[v]", "-map", "[a]",
        "-c:v", "libx264", "-preset", out.preset, "-tune", "zerolatency", "-profile:v", "high",
        "-x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0:nal-hrd=cbr:force-cfr=1",
        "-forced-idr", "1", "-bf", "0",
        "-b:v", str(out.video_bitrate), "-maxrate", str(out.video_bitrate),
        "-bufsize", str(out.video_bitrate),
        "-pix_fmt", "yuv420p", "-r", str(out.fps),
        "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
        "-color_range", "tv",
        "-c:a", "aac", "-b:a", str(out.audio_bitrate), "-ar", str(SAMPLE_RATE), "-ac", "2",
        "-aac_coder", "fast" if out.audio_bitrate >= AAC_FAST_CODER_MIN_BITRATE else "twoloop",
        "-t", f"{seconds:g}", "-f", "flv", str(output),
    ]  # fmt: skip


# -- measuring --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One child process run.

    Attributes:
        user_s, sys_s: CPU seconds of the child in user and kernel mode (all its threads).
        wall_s: elapsed seconds from start to exit.
        max_rss_mib: peak resident memory of the child in MiB.
        video_frames: video packets in its output file.
    """

    user_s: float
    sys_s: float
    wall_s: float
    max_rss_mib: float
    video_frames: int

    @property
    def cpu_s(self) -> float:
        """user + sys CPU seconds."""
        return self.user_s + self.sys_s


def run_child(command: Sequence[str], output: Path | None, log_path: Path) -> Run:
    """Run ``command`` (which writes ``output``, if any) to completion and measure it with ``os.wait4``.

    Raises:
        BenchError: it exited non-zero; the message has the end of its output.
    """
    if output is not None:
        output.unlink(missing_ok=True)
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log_path.read_text("utf-8", errors="replace")[-3000:]
        raise BenchError(f"{' '.join(command)}\nexited with {code}:\n{tail}")
    frames = count_video_packets(output) if output is not None else 0
    return Run(usage.ru_utime, usage.ru_stime, wall, usage.ru_maxrss / 1024, frames)


def startup_cpu(workdir: Path, runs: int = 3) -> float:
    """Least CPU seconds (user + sys) of starting the interpreter and importing ``rtc_mpu.cli.main`` (what
    ``mpu render`` pays before its first frame: Python, numpy (OpenBLAS held to one thread by
    ``cli/__init__.py``), PyAV)."""
    command = [sys.executable, "-c", "import rtc_mpu.cli.main"]
    return min(run_child(command, None, workdir / "startup.log").cpu_s for _ in range(runs))


def count_video_packets(path: Path) -> int:
    """Video packets (= frames, no B-frames) in a media file; 0 if it is missing or unreadable."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            return sum(1 for packet in container.demux(video=0) if packet.size > 0)
    except (av.error.FFmpegError, OSError):
        return 0


_X264_SEI = re.compile(rb"x264 - core (\d+)[^\x00]*? - options: ([^\x00]*)")


def x264_info(path: Path) -> tuple[str, dict[str, str]]:
    """The x264 build (``core N``) and options, from the SEI message x264 writes in the first frame."""
    with path.open("rb") as file:
        head = file.read(1 << 20)
    match = _X264_SEI.search(head)
    if match is None:
        return "unknown", {}
    options = dict(item.partition("=")[::2] for item in match.group(2).decode("ascii", "replace").split())
    return f"core {match.group(1).decode()}", options


@dataclass
class Side:
    """Best-of-``repeat`` figures of one side of a case.

    Attributes:
        cpu_s: least user + sys CPU seconds of a run.
        wall_s: least wall seconds of a run.
        max_rss_mib: largest peak resident memory in MiB.
        video_frames: video frames of every run's output.
        x264: x264 build of the output.
        runs: every run.
    """

    cpu_s: float = float("inf")
    wall_s: float = float("inf")
    max_rss_mib: float = 0.0
    video_frames: list[int] = field(default_factory=list)
    x264: str = "unknown"
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run) -> None:
        """Fold in one run."""
        self.runs.append(run)
        self.cpu_s = min(self.cpu_s, run.cpu_s)
        self.wall_s = min(self.wall_s, run.wall_s)
        self.max_rss_mib = max(self.max_rss_mib, run.max_rss_mib)
        self.video_frames.append(run.video_frames)


@dataclass
class CaseResult:
    """Results of one case.

    Attributes:
        case: the inputs.
        seconds: output duration in seconds.
        expected_frames: video frames the output should have.
        ours, ffmpeg: both sides.
        x264_option_diff: x264 options whose values differ, as ``{name: (ours, ffmpeg)}``.
        compose_ms: mean wall milliseconds of one ``Compositor.compose`` of the 4 panes.
        startup_cpu_s: CPU seconds ours spends starting up (see :func:`startup_cpu`).
    """

    case: Case
    seconds: float
    expected_frames: int
    ours: Side = field(default_factory=Side)
    ffmpeg: Side = field(default_factory=Side)
    x264_option_diff: dict[str, tuple[str, str]] = field(default_factory=dict)
    compose_ms: float | None = None
    startup_cpu_s: float = 0.0

    @property
    def ratio(self) -> float:
        """Our CPU seconds over ffmpeg's."""
        return self.ours.cpu_s / self.ffmpeg.cpu_s

    @property
    def steady_ratio(self) -> float:
        """Our CPU seconds less our start-up (interpreter and imports) over ffmpeg's: the long-run ratio."""
        return (self.ours.cpu_s - self.startup_cpu_s) / self.ffmpeg.cpu_s

    def frames_ok(self) -> bool:
        """Every output has the expected number of video frames, within one frame."""
        return all(
            abs(n - self.expected_frames) <= 1 for n in self.ours.video_frames + self.ffmpeg.video_frames
        )


def measure_case(
    ffmpeg: str, case: Case, inputs: Sequence[Path], seconds: float, repeat: int, out: Output, workdir: Path
) -> CaseResult:
    """Render the case ``repeat`` times with each side, alternating (ours first), in child processes."""
    result = CaseResult(case, seconds, round(seconds * out.fps))
    ours_out, ffmpeg_out = workdir / f"{case.name}-ours.flv", workdir / f"{case.name}-ffmpeg.flv"
    for attempt in range(repeat):
        for label, side, command, output in (
            ("ours", result.ours, ours_command(inputs, seconds, ours_out), ours_out),
            (
                "ffmpeg",
                result.ffmpeg,
                ffmpeg_command(ffmpeg, case, inputs, seconds, out, ffmpeg_out),
                ffmpeg_out,
            ),
        ):
            run = run_child(command, output, workdir / f"{case.name}-{label}.log")
            side.add(run)
            print(
                f"  {case.name} {label:6} run {attempt + 1}/{repeat}: cpu {run.cpu_s:6.2f} s "
                f"(user {run.user_s:.2f} + sys {run.sys_s:.2f}), wall {run.wall_s:6.2f} s, "
                f"{run.video_frames} frames, peak RSS {run.max_rss_mib:.0f} MiB",
                file=sys.stderr,
            )
    result.ours.x264, ours_options = x264_info(ours_out)
    result.ffmpeg.x264, ffmpeg_options = x264_info(ffmpeg_out)
    result.x264_option_diff = {
        key: (ours_options.get(key, "-"), ffmpeg_options.get(key, "-"))
        for key in sorted(ours_options.keys() | ffmpeg_options.keys())
        if ours_options.get(key) != ffmpeg_options.get(key)
    }
    return result


# -- compositing share ------------------------------------------------------------------------------


def decode_frames(path: Path, count: int) -> list[av.VideoFrame]:
    """The first ``count`` decoded video frames of ``path``."""
    frames: list[av.VideoFrame] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames


def time_compose(inputs: Sequence[Path], out: Output, calls: int, rounds: int = 3) -> float:
    """Mean wall milliseconds of one ``Compositor.compose`` of the layout's panes (best of ``rounds``).

    Each pane gets a different decoded frame on every call (cycling through ``COMPOSE_DECODED_FRAMES``
    frames per input), as in a real mix where every input picture changes each tick, so every call
    converts or scales each picture and copies it into the canvas.
    """
    per_pane = [decode_frames(path, COMPOSE_DECODED_FRAMES) for path in inputs]
    cycle = min(len(frames) for frames in per_pane)
    if cycle < 2:
        raise BenchError("too few decodable frames in the inputs")
    panes = layout_panes(out)
    draws = [
        [
            PaneDraw(key=(LAYOUT_ID, pane.id), rect=rect, zorder=pane.zorder, frame=per_pane[k][i])
            for k, (pane, rect) in enumerate(panes[: len(per_pane)])
        ]
        for i in range(cycle)
    ]
    compositor = Compositor(out.width, out.height, (0, 0, 0), CropMode.PAD)
    for i in range(10):
        compositor.compose(draws[i % cycle])
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(calls):
            compositor.compose(draws[i % cycle])
        best = min(best, (time.perf_counter() - started) / calls * 1000)
    return best


# -- reporting --------------------------------------------------------------------------------------


def print_report(results: Sequence[CaseResult], out: Output, versions: dict[str, str]) -> None:
    """Print the tables to stdout."""
    frame_ms = 1000 / out.fps
    print()
    print(
        f"{out.width}x{out.height} {out.fps} fps, layout {LAYOUT_ID}, x264 {out.preset} "
        f"{out.video_bitrate // 1000} kbit/s CBR, AAC {out.audio_bitrate // 1000} kbit/s; "
        f"{results[0].seconds:g} s of output; best of {len(results[0].ours.runs)} runs; {os.cpu_count()} CPUs"
    )
    print(
        "  threads: automatic counts on both sides (ours decodes inputs with slice threads, ffmpeg with "
        "frame threads); ffmpeg composes with xstack(fill=black) + pad"
    )
    for name, version in versions.items():
        print(f"  {name}: {version}")
    print()
    header = (
        f"{'case':<10} {'input':>8} | {'ours CPU-s/s':>12} {'ffmpeg CPU-s/s':>14} "
        f"{'ratio':>6} {'steady':>6} | {'ours speed':>10} {'ffmpeg speed':>12} | "
        f"{'ours RSS':>8} {'ffm RSS':>8} | "
        "frames ours/ffmpeg (want)"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s = r.seconds
        frames = (
            f"{'/'.join(map(str, sorted(set(r.ours.video_frames))))} / "
            f"{'/'.join(map(str, sorted(set(r.ffmpeg.video_frames))))} ({r.expected_frames})"
            f"{'' if r.frames_ok() else '  MISMATCH'}"
        )
        print(
            f"{r.case.name:<10} {r.case.size:>8} | {r.ours.cpu_s / s:12.3f} {r.ffmpeg.cpu_s / s:14.3f} "
            f"{r.ratio:6.2f} {r.steady_ratio:6.2f} | "
            f"{s / r.ours.wall_s:9.2f}x {s / r.ffmpeg.wall_s:11.2f}x | "
            f"{r.ours.max_rss_mib:5.0f} MiB {r.ffmpeg.max_rss_mib:4.0f} MiB | {frames}"
        )
    print("(CPU-s/s = user+sys CPU seconds per output second; ratio = ours/ffmpeg CPU, target <= 1.20;")
    print(
        f" steady = the same without our {results[0].startup_cpu_s:.2f} CPU-s of start-up (python + imports);"
    )
    print(" speed = output seconds per wall second; RSS = peak resident memory)")
    for r in results:
        x264 = r.ours.x264 if r.ours.x264 == r.ffmpeg.x264 else f"ours {r.ours.x264}, ffmpeg {r.ffmpeg.x264}"
        diff = ", ".join(f"{k}={a}/{b}" for k, a, b in ((k, *v) for k, v in r.x264_option_diff.items()))
        print(f"{r.case.name}: x264 {x264}; options differing (ours/ffmpeg): {diff or 'none'}")
    composed = [(r, r.compose_ms) for r in results if r.compose_ms is not None]
    if composed:
        print()
        print(
            f"Compositor.compose on {out.width}x{out.height}, 4 panes, a new decoded frame per pane per call"
        )
        header = (
            f"{'case':<10} {'input':>8} | {'ms/frame':>8} | {'% of ' + format(frame_ms, '.1f') + ' ms':>12}"
        )
        print(header)
        print("-" * len(header))
        for r, ms in composed:
            print(f"{r.case.name:<10} {r.case.size:>8} | {ms:8.2f} | {ms / frame_ms * 100:11.1f}%")
        print("(target <= 5% for pane-size inputs)")


def to_json(results: Sequence[CaseResult], out: Output, versions: dict[str, str]) -> dict[str, object]:
    """The results as a JSON-able dict: times in seconds, ``cpu_per_output_s`` in CPU-s per output second."""
    return {
        "output": asdict(out),
        "layout_id": LAYOUT_ID,
        "cpus": os.cpu_count(),
        "versions": versions,
        "cases": {
            r.case.name: {
                "input": r.case.size,
                "seconds": r.seconds,
                "expected_frames": r.expected_frames,
                "ours": {**asdict(r.ours), "cpu_per_output_s": r.ours.cpu_s / r.seconds,
                         "speed": r.seconds / r.ours.wall_s},
                "ffmpeg": {**asdict(r.ffmpeg), "cpu_per_output_s": r.ffmpeg.cpu_s / r.seconds,
                           "speed": r.seconds / r.ffmpeg.wall_s},
                "ratio": r.ratio,
                "startup_cpu_s": r.startup_cpu_s,
                "steady_ratio": r.steady_ratio,
                "frames_ok": r.frames_ok(),
                "x264_option_diff": r.x264_option_diff,
                "compose_ms_per_frame": r.compose_ms,
                "compose_share_of_frame": None if r.compose_ms is None else r.compose_ms * out.fps / 1000,
            }
            for r in results
        },
    }  # fmt: skip


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.mix_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of output per render (default 20)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="renders per side and case; the least is kept (default 2)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="input clip cache (default bench/.cache)"
    )
    parser.add_argument(
        "--case", choices=["pane-size", "720p", "all"], default="all", help="which inputs (default all)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON"
    )
    parser.add_argument(
        "--ffmpeg", default=None, help="ffmpeg CLI (default: ffmpeg on PATH, else /usr/bin/ffmpeg)"
    )
    parser.add_argument(
        "--compose-calls", type=int, default=300, help="compose() calls per timing round (default 300)"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or args.compose_calls < 1:
        parser.error("--seconds must be positive, --repeat and --compose-calls at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(argv)
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
        out = output_format()
        selected = [c for c in cases(out) if args.case in ("all", c.name)]
        versions = {
            "ffmpeg CLI": f"{tool_version(ffmpeg)} ({ffmpeg})",
            "PyAV": f"{av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})",
            "python": sys.version.split()[0],
        }
        inputs = {c.name: ensure_inputs(ffmpeg, c, args.seconds, out.fps, args.cache_dir) for c in selected}
        results: list[CaseResult] = []
        with tempfile.TemporaryDirectory(prefix="mix_cpu-") as tmp:
            startup = startup_cpu(Path(tmp))
            for case in selected:
                print(
                    f"{case.name}: rendering {args.seconds:g} s x{args.repeat} per side ...", file=sys.stderr
                )
                result = measure_case(
                    ffmpeg, case, inputs[case.name], args.seconds, args.repeat, out, Path(tmp)
                )
                result.startup_cpu_s = startup
                results.append(result)
        for result in results:
            print(f"{result.case.name}: timing Compositor.compose ...", file=sys.stderr)
            result.compose_ms = time_compose(inputs[result.case.name], out, args.compose_calls)
    except BenchError as exc:
        print(f"bench.mix_cpu: {exc}", file=sys.stderr)
        return 1
    print_report(results, out, versions)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results, out, versions), indent=2) + "\n", "utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all(r.frames_ok() for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
