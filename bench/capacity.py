"""Capacity of one worker (issue 18): how many live 4-user 720p30 mixes it carries in real time.

Run it from the repository root (needs the Debian ``redis-server``, ``janus``, ``nginx``,
``libnginx-mod-rtmp`` and ``ffmpeg``)::

    .venv/bin/python -m bench.capacity [--max-tasks 6] [--seconds 30] [--json PATH]

It starts its own Redis, Janus and nginx-rtmp on free loopback ports, the API (``mpu api``) and one
real worker (``mpu worker --slots <max-tasks>``, ``MPU_WORKER_CAPACITY=0``: it admits every task), as
an operator runs them. Then, for N = 1, 2, ... in two variants, ``shared`` (N tasks on one channel)
and ``per-task`` (one channel per task), it starts N tasks through the REST API (LayoutIds [6]:
"gallery 4", four 616x346 panes on the canvas; MediaEncode 27: 1280x720 30 fps, 2048 kbit/s) and
measures them for ``--seconds`` after a warm-up; a variant stops at the first N whose slowest task
delivers less than :data:`REALTIME_FPS` or at ``--max-tasks``.

Each channel has 4 users publishing 640x360 at 30 fps. Three (four in the other channels) are
Janus VideoRoom remote publishers (:class:`rtc_mpu.ingest.publisher.IngestPublisher`) relaying a
pre-encoded clip (H.264 Annex B without B-frames, a keyframe every second, and 20 ms Opus frames)
in real time with plain RTP, all from one child process that never decodes nor encodes: their CPU
is printed. The fourth user of the first channel is ``mpu publish --stamp-time`` (aiortc, VP8 +
Opus, encoded live) whose pictures carry their capture time (wall clock, ms) in their bottom rows.
Janus offers the relays' H.264 without ``fmtp``; the channel source accepts it
(:func:`rtc_mpu.mixer.sources.codecs.accept_unlabelled_h264`).

Measured for each N over the window (the worker's own counters are read through the API):

- ``fps_min``: the lowest delivered frame rate of a task, counted by one demux-only RTMP reader per
  task on nginx-rtmp (PyAV, no decoding: video packets arriving in the window / window);
- ``dropped``: ``stats.dropped_video_frames`` of all tasks (GET /v1/apps/{app}/tasks/{id}), the
  window's increase;
- ``cpu_per_task``: CPU-seconds of the worker's whole process tree (main process and pool
  processes, ``/proc/<pid>/stat`` utime + stime) per wall second, divided by N;
- ``machine_cpu``: the busy fraction of all cores (``/proc/stat``: all but idle and iowait), 0-1,
  everything on the machine included (the publishers, the readers, other users' processes);
- ``g2g_p50_ms``/``g2g_p95_ms``: glass to glass, capture to a decoded picture of the first task's
  RTMP output (PyAV, slice threads): the stamp is read from the stamped user's pane (scaled from
  640x360 to 616x346 by the mixer; whichever pane decodes to a time within 10 s of now);
- ``rss_mb_max``: the highest RSS (``VmRSS``) of a pool process (one mix each) sampled every second;
- ``ffmpeg_ratio``: ``cpu_per_task`` over the CPU per second of the ffmpeg CLI doing one mix of the
  same job in real time (``-re``): decoding 4 copies of the clip, scaling to the panes, ``xstack``,
  ``amix`` and x264/AAC with the settings of ``bench/mix_cpu.py``'s command (run once, before the
  mixes, on a machine without them). The CLI pays no RTP, SRTP, jitter buffer nor push.

It prints a table and, with ``--json``, writes the rows (a JSON list). Exit 0 when it ran (whatever
the numbers), 1 when it could not (a missing program, a task that never ran). On a shared 2-core
machine the numbers move with whatever else runs: ``machine_cpu`` includes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

from bench.mix_cpu import Case, ffmpeg_command, find_ffmpeg, layout_panes, output_format
from bench.threads import ThreadSampler
from rtc_mpu.cli.demo import ApiClient
from rtc_mpu.ingest.publisher import IngestPublisher
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.mixer.sources.janus_http import JanusSession
from rtc_mpu.mixer.video.geometry import Placement, fit
from rtc_mpu.spec.task import CropMode
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port, wait_for_port
from rtc_mpu.stack.publisher import STAMP_BITS, STAMP_BLOCK, ensure_room, wall_ms
from rtc_mpu.stack.redis import Redis

APP = "bench"
KEY, SECRET = "bench", "bench-secret"
#: System layout of every task: "gallery 4" (four equal panes).
LAYOUT_ID = 6
#: MediaEncode of every task: 1280x720, 30 fps, 2048 kbit/s video, 128 kbit/s audio.
MEDIA_ENCODE_ID = 27
#: Users per channel, and their picture size (pixels) and frame rate.
USERS_PER_CHANNEL = 4
USER_WIDTH, USER_HEIGHT, USER_FPS = 640, 360, 30
#: Below this delivered frame rate (fps) a task misses real time (issue 18: 30 fps output, 10 % slack).
REALTIME_FPS = 27.0
#: Seconds after every task of a step runs before its window starts (ICE, DTLS, keyframes, readers).
WARMUP_SECONDS = 6.0
#: Seconds a task may take from its POST to state ``running``.
RUNNING_TIMEOUT_SECONDS = 60.0
#: The relayed clip: seconds, video bit/s, keyframe interval (frames), Opus frame (samples at 48 kHz).
CLIP_SECONDS = 20
CLIP_VIDEO_BITRATE = 800_000
CLIP_GOP_FRAMES = 30
OPUS_RATE = 48000
OPUS_FRAME_SAMPLES = 960
#: Bumped when the clip's recipe changes, to invalidate the cache.
CLIP_VERSION = 2  # 2: P-frames between the IDRs (version 1 was all IDR)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = REPO_ROOT / "bench" / ".cache"
#: Options of the RTMP readers (FFmpeg's rtmp protocol and demuxer): no input buffering.
RTMP_OPTIONS = {"rtmp_live": "live", "fflags": "nobuffer", "analyzeduration": "2000000"}
#: Seconds a reader waits with other packets but no video before it reopens the stream.
VIDEO_SILENCE_SECONDS = 5.0
#: A stamp read further than this from now (ms) is not a stamp (another user's pixels, or garbage).
STAMP_VALID_MS = 10_000
#: Mean absolute luma difference (8-bit levels) above which a pane counts as changed between pictures.
PANE_CHANGE_LEVEL = 0.5
#: Least share of task 1's pictures in which every pane changed; less is reported as a problem (a
#: frozen pane costs the encoder almost nothing, which would flatter the CPU numbers; the stamped
#: aiortc user, encoding live on the same machine, sends 22-30 fps of the mix's 30 when it is busy).
PANE_MOTION_MIN = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the clip ---------------------------------------------------------------------------------------


@dataclass
class Clip:
    """The pre-encoded clip the relays send.

    Attributes:
        video: H.264 access units, Annex B, SPS/PPS in-band before each IDR, one per 1/30 s.
        audio: Opus frames of :data:`OPUS_FRAME_SAMPLES` samples (48 kHz stereo).
        mkv: the same streams in Matroska (the ffmpeg CLI baseline's input).
    """

    video: list[bytes]
    audio: list[bytes]
    mkv: Path


def _split(blob: bytes, sizes: Sequence[int]) -> list[bytes]:
    parts, offset = [], 0
    for size in sizes:
        parts.append(blob[offset : offset + size])
        offset += size
    return parts


def prepare_clip(cache_dir: Path, ffmpeg: str) -> Clip:
    """The clip, encoded once into ``cache_dir``: FFmpeg's ``testsrc2`` (moving shapes and text) at
    640x360 30 fps through libx264 (veryfast, zerolatency, main, no B-frames, 800 kbit/s, IDR every
    30 frames; no global header, so the packets are Annex B with SPS/PPS in-band) and a 440 Hz sine
    through libopus (20 ms frames, 48 kHz stereo), :data:`CLIP_SECONDS` long.

    Raises:
        RuntimeError: the ffmpeg CLI could not remux it into Matroska.
    """
    folder = cache_dir / f"capacity-clip-v{CLIP_VERSION}"
    meta_path = folder / "clip.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads(meta_path.read_text())
        if not (folder / "clip.mkv").is_file():
            raise KeyError("clip.mkv")
        return Clip(
            _split((folder / "clip.h264").read_bytes(), meta["video"]),
            _split((folder / "clip.opus").read_bytes(), meta["audio"]),
            folder / "clip.mkv",
        )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"encoding the relayed clip into {folder} ...", file=sys.stderr)
    frames = CLIP_SECONDS * USER_FPS
    encoder = av.CodecContext.create("libx264", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = USER_WIDTH, USER_HEIGHT, "yuv420p"
    encoder.time_base = fractions.Fraction(1, USER_FPS)
    encoder.framerate = fractions.Fraction(USER_FPS)
    encoder.bit_rate = CLIP_VIDEO_BITRATE
    encoder.gop_size = CLIP_GOP_FRAMES
    encoder.max_b_frames = 0
    encoder.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "main", "scenecut": "0"}
    video: list[bytes] = []
    source = av.open(f"testsrc2=size={USER_WIDTH}x{USER_HEIGHT}:rate={USER_FPS}", format="lavfi")
    for index, frame in enumerate(source.decode(video=0)):
        if index >= frames:
            break
        picture = frame.reformat(format="yuv420p")
        picture.pts, picture.time_base = index, encoder.time_base
        picture.pict_type = PictureType.NONE  # lavfi marks every frame I: x264 would make each an IDR
        video += [bytes(packet) for packet in encoder.encode(picture)]
    video += [bytes(packet) for packet in encoder.encode(None)]
    source.close()
    audio: list[bytes] = []
    with av.open(str(folder / "clip.ogg"), "w", format="ogg") as ogg:
        stream = ogg.add_stream("libopus", rate=OPUS_RATE, layout="stereo")
        assert isinstance(stream, av.AudioStream)
        t = np.arange(CLIP_SECONDS * OPUS_RATE) / OPUS_RATE
        tone = (0.3 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
        for block in range(len(tone) // OPUS_FRAME_SAMPLES):
            samples = tone[block * OPUS_FRAME_SAMPLES : (block + 1) * OPUS_FRAME_SAMPLES]
            chunk = av.AudioFrame.from_ndarray(np.repeat(samples[None, :], 2, axis=0).T.reshape(1, -1),
                                               format="s16", layout="stereo")  # fmt: skip
            chunk.sample_rate, chunk.pts = OPUS_RATE, block * OPUS_FRAME_SAMPLES
            for packet in stream.encode(chunk):
                audio.append(bytes(packet))
                ogg.mux(packet)
        for packet in stream.encode(None):
            audio.append(bytes(packet))
            ogg.mux(packet)
    (folder / "clip.h264").write_bytes(b"".join(video))
    (folder / "clip.opus").write_bytes(b"".join(audio))
    remux = subprocess.run(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "h264", "-framerate", str(USER_FPS),
         "-i", str(folder / "clip.h264"), "-i", str(folder / "clip.ogg"), "-c", "copy",
         str(folder / "clip.mkv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if remux.returncode != 0:
        raise RuntimeError(f"remuxing the clip failed: {remux.stderr[-2000:]}")
    meta_path.write_text(json.dumps({"video": [len(v) for v in video], "audio": [len(a) for a in audio]}))
    return Clip(video, audio, folder / "clip.mkv")


# -- the relay child process ------------------------------------------------------------------------


def relay(publishers: Sequence[IngestPublisher], clip: Clip, stop: threading.Event) -> None:
    """Send the clip through every publisher in real time until ``stop``, looping with timestamps that
    continue (video in 1/90000 s, audio in 1/48000 s). Publisher ``i`` starts ``3 i`` seconds into
    the clip (keyframe-aligned), so the panes differ."""
    start = time.monotonic()
    video_tick = audio_tick = errors = 0
    video_period, audio_period = 1 / USER_FPS, OPUS_FRAME_SAMPLES / OPUS_RATE
    n_video, n_audio = len(clip.video), len(clip.audio)
    while not stop.is_set():
        video_due, audio_due = start + video_tick * video_period, start + audio_tick * audio_period
        delay = min(video_due, audio_due) - time.monotonic()
        if delay > 0:
            stop.wait(delay)
            continue
        for index, publisher in enumerate(publishers):
            try:
                if video_due <= audio_due:
                    unit = clip.video[(video_tick + index * 3 * USER_FPS) % n_video]
                    publisher.send_video(unit, video_tick * 90000 // USER_FPS)
                else:
                    frame = clip.audio[(audio_tick + index * 150) % n_audio]
                    publisher.send_audio(frame, audio_tick * OPUS_FRAME_SAMPLES)
            except OSError:
                errors += 1
        if video_due <= audio_due:
            video_tick += 1
        else:
            audio_tick += 1
    print(f"relay: {video_tick} video and {audio_tick} audio ticks, {errors} send errors", file=sys.stderr)


async def relay_main(config: dict[str, Any]) -> int:
    """The relay child: create the rooms, add the publishers, print ``ready``, relay until SIGTERM."""
    clip = prepare_clip(Path(config["cache_dir"]), config["ffmpeg"])
    janus_url = str(config["janus_url"])
    publishers: list[IngestPublisher] = []
    for channel_id, users in config["channels"].items():
        channel = ChannelConfig(janus_url, APP, channel_id)
        session = JanusSession(janus_url)
        await session.connect()
        try:
            await ensure_room(await session.attach(), channel.room)
        finally:
            await session.close()
        for user in users:
            publisher = IngestPublisher(channel, user, video=True, audio=True)
            await publisher.add(replace=True)
            publishers.append(publisher)
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    stop = threading.Event()
    thread = threading.Thread(target=relay, args=(publishers, clip, stop), name="relay")
    thread.start()
    print("ready", flush=True)
    await stopped.wait()
    stop.set()
    await asyncio.to_thread(thread.join)
    for publisher in publishers:
        await publisher.remove()
    return 0


# -- the observer child process ---------------------------------------------------------------------


def pane_placements() -> list[Placement]:
    """Where a 640x360 user lands in each pane of layout 6 on the 1280x720 canvas (the task's default
    crop mode, ``PAD``)."""
    out = output_format()
    return [fit(USER_WIDTH, USER_HEIGHT, rect, CropMode.PAD) for _, rect in layout_panes(out)]


def read_scaled_stamp(luma: npt.NDArray[np.uint8], placement: Placement) -> int:
    """The capture stamp (ms modulo 2**32) of :func:`rtc_mpu.stack.publisher.stamp_capture_time` read
    from a (H, W) uint8 Y plane where a 640x360 picture was scaled into ``placement`` (the stamp's
    8-pixel blocks become about 7.7 pixels in a 616x346 pane): the centre of each block is averaged."""
    scale_x = placement.scaled_width / USER_WIDTH
    scale_y = placement.scaled_height / USER_HEIGHT
    left = placement.target.x - placement.crop_x
    top = placement.target.y - placement.crop_y
    rows = luma[top + int((USER_HEIGHT - STAMP_BLOCK + 2) * scale_y) : top + int((USER_HEIGHT - 2) * scale_y)]
    value = 0
    for bit in range(STAMP_BITS):
        x0 = left + int((bit * STAMP_BLOCK + 2) * scale_x + 0.5)
        x1 = left + int(((bit + 1) * STAMP_BLOCK - 2) * scale_x + 0.5)
        value = (value << 1) | int(float(rows[:, x0:x1].mean()) > 127)
    return value


def _open_rtmp(url: str, stop: threading.Event) -> av.container.InputContainer | None:
    """``url`` opened for reading (retried every 0.5 s until ``stop``; failures on stderr)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            container = av.open(url, options=RTMP_OPTIONS, timeout=(10.0, 5.0))
        except (av.error.FFmpegError, OSError) as exc:
            print(f"observer: {url}: cannot open: {exc}", file=sys.stderr, flush=True)
            stop.wait(0.5)
            continue
        took = time.monotonic() - started
        if not container.streams.video:
            # Nothing arrived while FFmpeg probed: PyAV's demux never yields packets of a stream
            # that appears after it started, so this reader would count nothing. Again.
            print(
                f"observer: {url}: no video stream after {took:.2f} s; reopening", file=sys.stderr, flush=True
            )
            container.close()
            continue
        print(f"observer: {url}: opened in {took:.2f} s", file=sys.stderr, flush=True)
        return container
    return None


def count_packets(url: str, arrivals: list[float], stop: threading.Event) -> None:
    """Append the wall time (``time.time()``, s) of every video packet read from ``url`` (no decoding)."""
    while not stop.is_set():
        container = _open_rtmp(url, stop)
        if container is None:
            return
        last_video = time.monotonic()
        try:
            for packet in container.demux():  # FLV's streams appear with their first packets
                if stop.is_set():
                    break
                if packet.size and packet.stream.type == "video":
                    arrivals.append(time.time())
                    last_video = time.monotonic()
                elif time.monotonic() - last_video > VIDEO_SILENCE_SECONDS:
                    print(f"observer: {url}: audio but no video for a while; reopening", file=sys.stderr)
                    break
        except (av.error.FFmpegError, OSError) as exc:
            print(f"observer: {url}: {exc}", file=sys.stderr, flush=True)
        finally:
            container.close()


def pane_changes(
    luma: npt.NDArray[np.uint8], previous: npt.NDArray[np.uint8] | None, placements: Sequence[Placement]
) -> list[bool]:
    """Which panes of a (H, W) uint8 Y plane differ from the ``previous`` picture's (mean absolute
    difference over the pane above :data:`PANE_CHANGE_LEVEL`, every 4th pixel); all False without one."""
    if previous is None:
        return [False] * len(placements)
    changed = []
    for placement in placements:
        t = placement.target
        a = luma[t.y : t.y + t.height : 4, t.x : t.x + t.width : 4].astype(np.int16)
        b = previous[t.y : t.y + t.height : 4, t.x : t.x + t.width : 4].astype(np.int16)
        changed.append(float(np.abs(a - b).mean()) > PANE_CHANGE_LEVEL)
    return changed


def read_delays(
    url: str, delays: list[tuple[float, int]], changes: list[tuple[float, list[bool]]], stop: threading.Event
) -> None:
    """Decode ``url`` and append (wall time s, glass-to-glass ms) for every picture whose stamp reads,
    and (wall time s, which panes changed since the previous picture) for every picture."""
    placements = pane_placements()
    previous: npt.NDArray[np.uint8] | None = None
    while not stop.is_set():
        configured: set[int] = set()
        container = _open_rtmp(url, stop)
        if container is None:
            return
        try:
            for packet in container.demux():
                if stop.is_set():
                    break
                if packet.stream.type != "video":
                    continue
                if packet.stream.index not in configured:  # before the decoder opens
                    packet.stream.codec_context.thread_type = "SLICE"  # frame threads add delay
                    configured.add(packet.stream.index)
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    now = wall_ms()
                    plane = frame.planes[0]
                    luma = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)
                    changes.append((time.time(), pane_changes(luma, previous, placements)))
                    previous = luma[:, : frame.width].copy()
                    found = [(now - read_scaled_stamp(luma, p)) & 0xFFFFFFFF for p in placements]
                    valid = [d for d in found if d < STAMP_VALID_MS]
                    if valid:
                        delays.append((time.time(), min(valid)))
        except (av.error.FFmpegError, OSError) as exc:
            print(f"observer: {url}: {exc}", file=sys.stderr, flush=True)
        finally:
            container.close()


def observe_main(config: dict[str, Any]) -> int:
    """The observer child: a packet counter per URL and a stamp reader on the first, until SIGTERM;
    then the results as JSON into ``config["out"]``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    urls: list[str] = config["urls"]
    arrivals: list[list[float]] = [[] for _ in urls]
    delays: list[tuple[float, int]] = []
    changes: list[tuple[float, list[bool]]] = []
    threads = [
        threading.Thread(target=count_packets, args=(url, arrivals[i], stop), daemon=True)
        for i, url in enumerate(urls)
    ]
    threads.append(threading.Thread(target=read_delays, args=(urls[0], delays, changes, stop), daemon=True))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    for thread in threads:
        thread.join(timeout=6.0)
    for url, got in zip(urls, arrivals, strict=True):
        print(f"observer: {url}: {len(got)} video packets", file=sys.stderr, flush=True)
    # copies: a reader that did not stop in time may still append
    Path(config["out"]).write_text(
        json.dumps(
            {"arrivals": [list(a) for a in arrivals], "delays": list(delays), "changes": list(changes)}
        )
    )
    return 0


# -- /proc ------------------------------------------------------------------------------------------


def process_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (all its threads; 0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), from ``/proc/*/stat``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def tree_ticks(pid: int) -> dict[int, int]:
    """CPU ticks of ``pid`` and of each of its descendants, by pid."""
    return {p: process_ticks(p) for p in [pid, *descendants(pid)]}


def rss_kib(pid: int) -> int:
    """``VmRSS`` of ``pid`` in KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from ``/proc/stat`` (busy: all but idle and
    iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - values[3] - values[4], total


# -- the ffmpeg baseline ----------------------------------------------------------------------------


def ffmpeg_baseline(ffmpeg: str, clip: Clip, seconds: float, workdir: Path) -> float:
    """CPU-seconds per second of the ffmpeg CLI mixing 4 copies of the clip in real time with
    ``bench/mix_cpu.py``'s command (scale to the panes, xstack, amix, x264/AAC with the task's
    settings), every input read at its native rate (``-re``) and looped.

    Raises:
        RuntimeError: ffmpeg failed.
    """
    command = ffmpeg_command(
        ffmpeg,
        Case("relay", USER_WIDTH, USER_HEIGHT),
        [clip.mkv] * USERS_PER_CHANNEL,
        seconds,
        output_format(),
        workdir / "ffmpeg-baseline.flv",
    )
    realtime: list[str] = []
    for arg in command:
        if arg == "-i":
            realtime += ["-re", "-stream_loop", "-1"]
        realtime.append(arg)
    process = subprocess.Popen(realtime, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"the ffmpeg baseline failed (exit {process.returncode}): {error[-2000:]}")
    return (usage.ru_utime + usage.ru_stime) / seconds


# -- the bench --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One step: N tasks in one variant (the module's docstring defines the issue's fields).

    CPU in CPU-seconds per wall second (``machine_cpu``: a fraction of all cores, 0-1), frame rates
    in frames per second, delays in ms, memory in MiB. ``fps_worst_second``: the fewest video
    packets a reader got in one whole second of the window; ``ours_fps_min``: the lowest frame rate
    by the worker's own ``stats.video_frames``; ``worker_cpu``: the whole tree, all tasks;
    ``relay_cpu``, ``stamp_publisher_cpu``, ``observer_cpu``: the relays' child process, ``mpu
    publish --stamp-time``, the RTMP readers' child process; ``stack_cpu``: Janus, nginx, Redis and
    the API; ``others_cpu``: the rest of the machine (other users' processes, and this one's polling),
    busy cores minus all of the above.
    """

    tasks: int
    channels: str
    seconds: float
    fps_min: float
    fps_mean: float
    fps_worst_second: int
    ours_fps_min: float
    dropped: int
    cpu_per_task: float
    worker_cpu: float
    machine_cpu: float
    g2g_p50_ms: float | None
    g2g_p95_ms: float | None
    g2g_pictures: int
    rss_mb_max: float
    ffmpeg_cpu_per_mix: float
    ffmpeg_ratio: float
    relay_cpu: float
    stamp_publisher_cpu: float
    observer_cpu: float
    stack_cpu: float
    others_cpu: float
    problems: list[str] = field(default_factory=list)
    threads: dict[str, float] = field(default_factory=dict)
    threads_per_process: list[dict[str, float]] = field(default_factory=list)
    pane_motion: list[float] = field(default_factory=list)


class BenchError(Exception):
    """The bench cannot go on."""


class Bench:
    """The stack, the API, the worker, and the steps."""

    def __init__(self, run_dir: Path, args: argparse.Namespace, ffmpeg: str) -> None:
        self.run_dir = run_dir
        self.args = args
        self.ffmpeg = ffmpeg
        self.redis = Redis(run_dir / "redis", port=free_port())
        self.janus = Janus(run_dir / "janus", http_port=free_port())
        self.nginx = NginxRtmp(run_dir / "nginx", rtmp_port=free_port(), http_port=free_port())
        self.api_port = free_port()
        self.client = ApiClient(f"http://127.0.0.1:{self.api_port}", KEY, SECRET)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ffmpeg_cpu = 0.0
        self.step_count = 0

    # -- processes ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The stack, the API and the worker; everything stopped afterwards."""
        try:
            self.redis.start()
            self.janus.start()
            self.nginx.start()
            env = dict(os.environ)
            env.update(
                MPU_REDIS_URL=self.redis.url,
                MPU_JANUS_URL=self.janus.url,
                MPU_ACCESS_KEYS=f"{KEY}:{SECRET}",
                MPU_RATE_LIMIT="0",
                MPU_COOLDOWN="1",
                MPU_HEARTBEAT_INTERVAL="0.5",
                MPU_WORKER_CAPACITY="0",
                MPU_RECORDINGS_DIR=str(self.run_dir / "recordings"),
                MPU_HLS_DIR=str(self.run_dir / "hls"),
                MPU_LOG_LEVEL="INFO",
            )
            self.spawn("api", ["-m", "rtc_mpu.cli.main", "api", "--port", str(self.api_port)], env=env)
            if not wait_for_port("127.0.0.1", self.api_port, 30):
                raise BenchError(f"the API did not start:\n{self.log('api')}")
            slots = str(self.args.max_tasks)
            self.spawn(
                "worker", ["-m", "rtc_mpu.cli.main", "worker", "--slots", slots, "--name", "cap@%h"], env=env
            )
            deadline = time.monotonic() + 60
            while " ready." not in self.log("worker"):
                if time.monotonic() > deadline or self.processes["worker"].poll() is not None:
                    raise BenchError(f"the worker did not start:\n{self.log('worker')[-3000:]}")
                time.sleep(0.2)
            yield
        finally:
            for name in list(self.processes):
                self.stop(name)
            self.nginx.stop()
            self.janus.stop()
            self.redis.stop()

    def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, stdout_pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``python <args>`` from the repository root in its own process group, stderr (and
        stdout unless ``stdout_pipe``) into ``<run_dir>/<name>.log``."""
        log = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def stop(self, name: str, timeout_seconds: float = 20.0) -> None:
        """SIGTERM a started process's group, SIGKILL after ``timeout_seconds``."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log(self, name: str) -> str:
        """A process's log so far."""
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_line(self, name: str, text: str, timeout_seconds: float) -> None:
        """Wait until process ``name`` prints a line containing ``text`` on its stdout.

        Raises:
            BenchError: it exited or did not print it in time.
        """
        process = self.processes[name]
        assert process.stdout is not None
        deadline = time.monotonic() + timeout_seconds
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                line = process.stdout.readline()
                if not line:
                    break
                if text in line.decode(errors="replace"):
                    return
        raise BenchError(f"{name} did not print {text!r}:\n{self.log(name)[-3000:]}")

    # -- one step -----------------------------------------------------------------------------------
    def task(self, task_id: str) -> dict[str, Any]:
        """The task as GET answers it (empty if that failed)."""
        status, task = self.client.call("GET", f"/v1/apps/{APP}/tasks/{task_id}")
        return task if status == 200 else {}

    def start_publishers(self, channels: list[str]) -> None:
        """The stamped user in ``channels[0]`` and the relays filling every channel to 4 users."""
        self.spawn(
            "stamp",
            ["-m", "rtc_mpu.cli.main", "publish", "--janus", self.janus.url, "--app", APP,
             "--channel", channels[0], "--users", "1", "--size", f"{USER_WIDTH}x{USER_HEIGHT}",
             "--fps", str(USER_FPS), "--stamp-time"],
            stdout_pipe=True,
        )  # fmt: skip
        self.wait_line("stamp", "publishing into", 30)
        users = {
            # the stamped user is the first channel's fourth user
            channel: [f"relay{i}" for i in range(1, USERS_PER_CHANNEL + (1 if index else 0))]
            for index, channel in enumerate(channels)
        }
        config = self.run_dir / "relay.json"
        config.write_text(
            json.dumps(
                {
                    "janus_url": self.janus.url,
                    "channels": users,
                    "cache_dir": str(self.args.cache_dir),
                    "ffmpeg": self.ffmpeg,
                }
            )
        )
        self.spawn("relay", ["-m", "bench.capacity", "--relay-child", str(config)], stdout_pipe=True)
        self.wait_line("relay", "ready", 60)

    def step(self, variant: str, n: int) -> Row:
        """Run N tasks in ``variant`` and measure them."""
        self.step_count += 1
        prefix = f"s{self.step_count}"
        channels = ["shared"] if variant == "shared" else [f"ch{i}" for i in range(n)]
        problems: list[str] = []
        self.start_publishers(channels)
        task_ids = [f"{prefix}t{i}" for i in range(n)]
        urls = [self.nginx.rtmp_url(f"{prefix}-{i}") for i in range(n)]
        try:
            for i, task_id in enumerate(task_ids):
                status, body = self.client.call(
                    "POST",
                    f"/v1/apps/{APP}/tasks",
                    {
                        "task_id": task_id,
                        "channel_id": channels[i % len(channels)],
                        "stream_url": urls[i],
                        "layout_ids": [LAYOUT_ID],
                        "media_encode": MEDIA_ENCODE_ID,
                    },
                )
                if status != 201:
                    raise BenchError(f"{task_id}: POST answered {status} {body}")
            deadline = time.monotonic() + RUNNING_TIMEOUT_SECONDS
            while not all(self.task(t).get("state") == "running" for t in task_ids):
                if time.monotonic() > deadline:
                    states = {t: self.task(t).get("state") for t in task_ids}
                    raise BenchError(f"tasks not running after {RUNNING_TIMEOUT_SECONDS:g} s: {states}")
                time.sleep(0.2)
            return self.measure(variant, n, task_ids, urls, problems)
        finally:
            for task_id in task_ids:
                self.client.call("DELETE", f"/v1/apps/{APP}/tasks/{task_id}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(
                self.task(t).get("state") in ("ended", None) for t in task_ids
            ):
                time.sleep(0.2)
            self.stop("relay")
            self.stop("stamp")
            time.sleep(2.0)  # the pool forks fresh processes for the next step

    def fresh_stats(self, task_ids: list[str]) -> dict[str, tuple[float, dict[str, Any]]]:
        """Each task's ``stats`` just after a heartbeat changed them, with the ``time.time()`` it was
        read (heartbeats come every 0.5 s: reading at a change makes the worker's own frame rate
        exact to a poll, 50 ms, instead of a heartbeat)."""
        first = {t: self.task(t).get("stats") or {} for t in task_ids}
        fresh: dict[str, tuple[float, dict[str, Any]]] = {}
        deadline = time.monotonic() + 3.0
        while len(fresh) < len(task_ids):
            for task_id in task_ids:
                if task_id in fresh:
                    continue
                stats = self.task(task_id).get("stats") or {}
                if (
                    stats.get("video_frames") != first[task_id].get("video_frames")
                    or time.monotonic() > deadline
                ):
                    fresh[task_id] = (time.time(), stats)
            time.sleep(0.05)
        return fresh

    def cpu_ticks(self, roots: dict[str, int]) -> dict[str, dict[int, int]]:
        """CPU ticks of each named process and its descendants, by pid."""
        return {name: tree_ticks(pid) for name, pid in roots.items()}

    def measure(self, variant: str, n: int, task_ids: list[str], urls: list[str], problems: list[str]) -> Row:
        """The window: RTMP readers, CPU, RSS, the tasks' counters."""
        observed = self.run_dir / f"observed-{self.step_count}.json"
        config = self.run_dir / "observe.json"
        config.write_text(json.dumps({"urls": urls, "out": str(observed)}))
        self.spawn("observer", ["-m", "bench.capacity", "--observe-child", str(config)], stdout_pipe=True)
        self.wait_line("observer", "ready", 30)
        time.sleep(WARMUP_SECONDS)
        worker = self.processes["worker"].pid
        roots = {name: process.pid for name, process in self.processes.items()}
        roots.update(
            (name, pid)
            for name, pid in (("janus", self.janus.pid), ("nginx", self.nginx.pid), ("redis", self.redis.pid))
            if pid is not None
        )
        before = self.fresh_stats(task_ids)
        samplers = [ThreadSampler(pid) for pid in self.mix_processes(worker)] if self.args.threads else []
        ticks0, machine0, t0 = self.cpu_ticks(roots), machine_ticks(), time.time()
        rss_max = 0
        while time.time() < t0 + self.args.seconds:
            rss_max = max([rss_max, *(rss_kib(pid) for pid in descendants(worker))])
            time.sleep(min(1.0, max(0.0, t0 + self.args.seconds - time.time())))
        ticks1, machine1, t1 = self.cpu_ticks(roots), machine_ticks(), time.time()
        per_process = [sampler.stop() for sampler in samplers]
        threads = mean_shares(per_process)
        after = self.fresh_stats(task_ids)
        self.stop("observer")
        wall = t1 - t0
        try:
            seen = json.loads(observed.read_text())
        except (OSError, ValueError):
            seen = {"arrivals": [[] for _ in urls], "delays": [], "changes": []}
            problems.append("the observer wrote nothing")
        fps = [sum(1 for a in arrivals if t0 <= a < t1) / wall for arrivals in seen["arrivals"]]
        if not all(fps):
            problems.append(f"an RTMP reader got nothing (see observer.log): {self.log('observer')[-600:]}")
        whole_seconds = max(1, int(wall))
        worst = min(
            min(sum(1 for a in arrivals if t0 + s <= a < t0 + s + 1) for s in range(whole_seconds))
            for arrivals in seen["arrivals"]
        )
        ours = [
            (int(after[t][1].get("video_frames", 0)) - int(before[t][1].get("video_frames", 0)))
            / max(0.1, after[t][0] - before[t][0])
            for t in task_ids
        ]
        dropped = sum(
            int(after[t][1].get("dropped_video_frames", 0)) - int(before[t][1].get("dropped_video_frames", 0))
            for t in task_ids
        )
        delays = [d for at, d in seen["delays"] if t0 <= at < t1]
        changes = [c for at, c in seen.get("changes", []) if t0 <= at < t1]
        pane_motion = (
            [round(sum(c[i] for c in changes) / len(changes), 3) for i in range(4)] if changes else []
        )
        if min(pane_motion) < PANE_MOTION_MIN:
            problems.append(f"a pane of task 1 hardly moves (pictures that changed, per pane: {pane_motion})")
        cpu = {
            name: sum(ticks - ticks0[name].get(pid, 0) for pid, ticks in ticks1[name].items())
            / CLOCK_TICKS
            / wall
            for name in roots
        }
        busy = (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
        cpu_per_task = cpu["worker"] / n
        stack = sum(cpu[name] for name in ("janus", "nginx", "redis", "api") if name in cpu)
        if not delays:
            problems.append("no readable capture stamp in the first task's output")
        return Row(
            tasks=n,
            channels=variant,
            seconds=round(wall, 2),
            fps_min=round(min(fps), 2),
            fps_mean=round(statistics.fmean(fps), 2),
            fps_worst_second=worst,
            ours_fps_min=round(min(ours), 2),
            dropped=dropped,
            cpu_per_task=round(cpu_per_task, 3),
            worker_cpu=round(cpu["worker"], 3),
            machine_cpu=round(busy, 3),
            g2g_p50_ms=float(np.percentile(delays, 50)) if delays else None,
            g2g_p95_ms=float(np.percentile(delays, 95)) if delays else None,
            g2g_pictures=len(delays),
            rss_mb_max=round(rss_max / 1024, 1),
            ffmpeg_cpu_per_mix=round(self.ffmpeg_cpu, 3),
            ffmpeg_ratio=round(cpu_per_task / self.ffmpeg_cpu, 2) if self.ffmpeg_cpu else float("nan"),
            relay_cpu=round(cpu["relay"], 3),
            stamp_publisher_cpu=round(cpu["stamp"], 3),
            observer_cpu=round(cpu["observer"], 3),
            stack_cpu=round(stack, 3),
            others_cpu=round(busy * (os.cpu_count() or 1) - sum(cpu.values()), 3),
            problems=problems,
            threads=threads,
            threads_per_process=per_process,
            pane_motion=pane_motion,
        )

    def mix_processes(self, worker: int) -> list[int]:
        """The worker's pool processes that are running a mix: those busy for more than 0.05 CPU-s/s
        over half a second."""
        pool = descendants(worker)
        start = {pid: process_ticks(pid) for pid in pool}
        time.sleep(0.5)
        return [pid for pid in pool if (process_ticks(pid) - start[pid]) / CLOCK_TICKS / 0.5 > 0.05]


# -- report -----------------------------------------------------------------------------------------


def mean_shares(samples: Sequence[dict[str, float]]) -> dict[str, float]:
    """The per-group mean over processes of :meth:`bench.threads.ThreadSampler.stop`, largest first."""
    if not samples:
        return {}
    groups = {group for sample in samples for group in sample}
    mean = {group: sum(sample.get(group, 0.0) for sample in samples) / len(samples) for group in groups}
    return {group: round(cpu, 3) for group, cpu in sorted(mean.items(), key=lambda item: -item[1])}


def print_table(rows: Sequence[Row], ffmpeg_cpu: float) -> None:
    """The rows as a table on stdout."""
    print()
    print(
        f"capacity: 4 users 640x360 30 fps per channel, LayoutIds [{LAYOUT_ID}], "
        f"MediaEncode {MEDIA_ENCODE_ID} (1280x720 30 fps), {os.cpu_count()} CPUs; "
        f"ffmpeg CLI baseline {ffmpeg_cpu:.3f} CPU-s/s per mix"
    )
    header = (
        f"{'channels':<9}{'N':>3}{'fps min':>8}{'mean':>6}{'worst':>6}{'ours':>6}{'drop':>6}"
        f"{'CPU/task':>9}{'worker':>7}{'machine':>8}{'g2g p50':>8}{'p95':>6}{'RSS MiB':>8}{'/ffmpeg':>8}"
        f"{'relay':>6}{'stamp':>6}{'obs':>6}{'stack':>6}{'others':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        p50 = f"{r.g2g_p50_ms:.0f}" if r.g2g_p50_ms is not None else "-"
        p95 = f"{r.g2g_p95_ms:.0f}" if r.g2g_p95_ms is not None else "-"
        print(
            f"{r.channels:<9}{r.tasks:>3}{r.fps_min:>8.1f}{r.fps_mean:>6.1f}{r.fps_worst_second:>6}"
            f"{r.ours_fps_min:>6.1f}{r.dropped:>6}{r.cpu_per_task:>9.3f}{r.worker_cpu:>7.2f}"
            f"{r.machine_cpu * 100:>7.0f}%{p50:>8}{p95:>6}{r.rss_mb_max:>8.0f}{r.ffmpeg_ratio:>8.2f}"
            f"{r.relay_cpu:>6.2f}{r.stamp_publisher_cpu:>6.2f}{r.observer_cpu:>6.2f}{r.stack_cpu:>6.2f}"
            f"{r.others_cpu:>7.2f}"
        )
        for problem in r.problems:
            print(f"  PROBLEM {problem}")
        if r.pane_motion:
            print(f"  task 1's pictures in which each pane changed: {r.pane_motion}")
        if r.threads:
            shares = ", ".join(f"{group} {cpu:.3f}" for group, cpu in r.threads.items() if cpu >= 0.001)
            print(f"  per mix process (mean), CPU-s/s by thread: {shares}")
            for index, process in enumerate(r.threads_per_process):
                top = ", ".join(f"{group} {cpu:.3f}" for group, cpu in list(process.items())[:4])
                print(f"    process {index + 1}: {sum(process.values()):.3f} in all; {top}")
    print(
        "fps: video packets an RTMP reader got per task (min, mean over tasks; worst: fewest in one "
        "second), ours: the worker's own count (min);\n"
        "drop: frames all tasks dropped (stats); CPU/task, worker: CPU-s/s of the worker's process "
        "tree (per task, all); machine: all cores busy;\n"
        "g2g: capture -> decoded picture of task 1's RTMP output; RSS: highest pool process; "
        "/ffmpeg: CPU/task over the ffmpeg CLI's;\n"
        "CPU-s/s of relay: the relaying publishers, stamp: the aiortc user, obs: the RTMP readers, "
        "stack: Janus + nginx + Redis + API, others: the rest of the machine"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--max-tasks", type=int, default=6, help="largest N (default 6)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per step (default 30)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the rows here")
    parser.add_argument(
        "--variants", default="shared,per-task", help="which variants, in order (default shared,per-task)"
    )
    parser.add_argument(
        "--tasks",
        default=None,
        metavar="N,N,...",
        help="run exactly these N (e.g. 1,4) instead of 1, 2, ... up to --max-tasks",
    )
    parser.add_argument(
        "--ffmpeg-cpu",
        type=float,
        default=None,
        metavar="CPU",
        help="the ffmpeg CLI's CPU-s/s per mix from an earlier run (skips measuring it again)",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="break each mix process's CPU down by thread (names from py-spy dump, bench/threads.py)",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="the clip's cache")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg CLI (default: on PATH, else /usr/bin/ffmpeg)")
    parser.add_argument("--logs", type=Path, default=None, help="copy the processes' logs here")
    parser.add_argument("--relay-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--observe-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if args.max_tasks < 1 or args.seconds <= 0 or not set(variants) <= {"shared", "per-task"}:
        parser.error("--max-tasks >= 1, --seconds > 0, --variants from shared,per-task")
    args.variants = variants
    try:
        args.task_counts = (
            [int(n) for n in args.tasks.split(",")] if args.tasks else list(range(1, args.max_tasks + 1))
        )
    except ValueError:
        parser.error("--tasks: a comma-separated list of numbers")
    if min(args.task_counts) < 1:
        parser.error("--tasks: numbers >= 1")
    args.max_tasks = max(args.task_counts)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench (or one of its child processes); returns the exit status."""
    args = parse_args(argv)
    if args.relay_child is not None:
        return asyncio.run(relay_main(json.loads(args.relay_child.read_text())))
    if args.observe_child is not None:
        return observe_main(json.loads(args.observe_child.read_text()))
    rows: list[Row] = []
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
        with tempfile.TemporaryDirectory(prefix="capacity-") as folder:
            run_dir = Path(folder)
            clip = prepare_clip(args.cache_dir, ffmpeg)
            bench = Bench(run_dir, args, ffmpeg)
            if args.ffmpeg_cpu is not None:
                bench.ffmpeg_cpu = args.ffmpeg_cpu
            else:
                print(f"ffmpeg CLI baseline: one mix in real time for {args.seconds:g} s", file=sys.stderr)
                bench.ffmpeg_cpu = ffmpeg_baseline(ffmpeg, clip, args.seconds, run_dir)
            try:
                with bench.running():
                    for variant in args.variants:
                        for n in args.task_counts:
                            print(f"{variant}: {n} task(s) ...", file=sys.stderr)
                            try:
                                row = bench.step(variant, n)
                            except BenchError as exc:  # this variant cannot go on; the next may
                                print(f"bench.capacity: {variant}, {n} task(s): {exc}", file=sys.stderr)
                                break
                            rows.append(row)
                            print(f"  {asdict(row)}", file=sys.stderr)
                            if row.fps_min < REALTIME_FPS and not args.tasks:
                                break
            finally:
                if args.logs is not None:
                    args.logs.mkdir(parents=True, exist_ok=True)
                    for log in run_dir.glob("*.log"):
                        (args.logs / log.name).write_text(log.read_text(errors="replace"))
    except (BenchError, RuntimeError) as exc:
        print(f"bench.capacity: {exc}", file=sys.stderr)
        if rows:
            print_table(rows, rows[0].ffmpeg_cpu_per_mix)
        return 1
    print_table(rows, bench.ffmpeg_cpu)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
