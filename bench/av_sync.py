"""Lip sync, skew, clock drift and glass-to-glass delay of a live mix, measured as an RTMP viewer (issue 17).

Run it from the repository root (needs the Debian ``janus`` and ``libnginx-mod-rtmp`` packages)::

    .venv/bin/python -m bench.av_sync [--participants N] [--seconds S] [--offsets MS,MS,..] [--json PATH]

A private Janus and nginx-rtmp on free loopback ports. A child process publishes ``N`` participants
(aiortc, VP8 + Opus) whose pictures flash white and whose microphones beep over the same 100 ms of
every wall-clock second, on one capture clock (:class:`FlashVideoTrack`, :class:`BeepAudioTrack`):
the flash starts on the whole second (a 30 fps capture grid is aligned to it), the beep
``offset_ms`` later (participant 1: 0 ms, the others ``--offsets``), each participant at its own tone
(:data:`BEEP_HZ`, multiples of 200 Hz) and its own pane. This process mixes the channel as a task does
(:class:`~rtc_mpu.mixer.sources.janus.JanusSource` → :class:`~rtc_mpu.mixer.pipeline.Pipeline`,
640x360 30 fps, MediaEncode 52, the default layouts) and pushes to nginx-rtmp; a second child
process plays the stream as a viewer (PyAV), stamps every packet with its arrival wall-clock time and
remuxes it into a file, which is analysed after the run:

- ``offset_ms_median`` / ``offset_ms_max`` per participant: audio onset minus video onset, in output
  pts, minus the sender's own offset (what the mix adds; 0 is perfect, positive = audio late). Audio
  onsets are found to the sample (the beep's frequency demodulated, a 5 ms boxcar whose nulls fall on
  the other participants' tones, the 50 % crossing interpolated between samples); video onsets are
  the 50 % crossing of the pane's mean luma interpolated between the last dark and the first white
  output frame. ``offset_ms_p95``: the 95th percentile of its absolute value; ``abs_offset`` = the
  median without removing the sender's offset.
- ``skew_ms``: per flash, the spread across participants of the video onsets and of the audio onsets
  (each minus its sender offset); the median over flashes of the larger of the two.
- ``drift_ms_per_hour``: output video pts against the viewer's wall clock: the least residual
  ``arrival - pts`` of each 5 s window (the least-delayed packet), fitted by a straight line; the
  slope extrapolated to one hour, with its standard error (a run of ``S`` seconds resolves roughly
  ``2 ms / S * 3600``).
- ``g2g_p50_ms``: glass to glass: arrival time at the viewer of the first white output frame minus
  the flash's capture time (the whole second).

The first ``WARM_UP_SECONDS`` (ICE, DTLS, first keyframes, jitter estimates) are not measured. It prints
numbers and asserts nothing; the machine's load is reported beside them (2 shared cores: noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

#: Capture rate of the flashing camera, frames per second (a divisor of 1000 ms grid: 1/30 s).
CAMERA_FPS = 30
#: Camera picture size in pixels.
CAMERA_SIZE = (320, 180)
#: Microphone rate (Hz) and frame length (samples: Opus' usual 20 ms).
MIC_RATE = 48000
MIC_FRAME = 960
#: How long each flash and beep lasts, seconds.
FLASH_SECONDS = 0.1
#: Beep frequency per participant, Hz: multiples of 200 Hz, at least 400 Hz apart, so the 5 ms boxcar
#: of :func:`beep_onsets` (nulls every 200 Hz) rejects the others' steady tones.
BEEP_HZ = (600.0, 1000.0, 1400.0, 1800.0, 2200.0, 2600.0, 3000.0, 3400.0, 3800.0)
#: Beep peak, fraction of full scale (several beeps summed stay below the limiter's threshold).
BEEP_AMPLITUDE = 0.2
#: Default sender offsets (beep start minus flash start), ms, of participants 2, 3, ... (participant 1: 0).
DEFAULT_OFFSETS_MS = (40, -30, 80, -60, 20, -20, 60, -40)
#: Seconds not measured at the start of a run.
WARM_UP_SECONDS = 5.0
#: The mix: MediaEncode 52 (640x360, 30 fps, 500 kbit/s).
MEDIA_ENCODE_ID = 52
#: Window of the lower-envelope drift fit, seconds.
DRIFT_WINDOW_SECONDS = 5.0
#: Boxcar of the beep demodulator, samples at 48 kHz (5 ms: nulls every 200 Hz).
BOXCAR_SAMPLES = 240

Floats = npt.NDArray[np.float64]


def dark_color(index: int) -> tuple[int, int, int]:
    """Participant ``index``'s (0-based) dark background, 8-bit RGB (luma well below white)."""
    palette = ((90, 20, 20), (20, 90, 30), (20, 40, 110), (100, 90, 20), (90, 30, 90), (20, 90, 95))
    return palette[index % len(palette)]


class CaptureClock:
    """One capture clock for a participant's camera and microphone: wall-clock time ``t`` (seconds
    since the epoch) is due at event-loop time ``t + shift``. ``origin`` is the whole wall-clock
    second at which both start (at least 1 s ahead)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        now_wall = time.time()
        self.shift = loop.time() - now_wall
        self.origin = float(math.ceil(now_wall) + 1)

    async def sleep_until(self, wall: float) -> None:
        """Sleep until wall-clock time ``wall`` (seconds since the epoch)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, wall + self.shift - loop.time()))


class FlashVideoTrack(MediaStreamTrack):
    """A dark picture that turns white for :data:`FLASH_SECONDS` from every whole wall-clock second.

    Frames are captured on a :data:`CAMERA_FPS` grid aligned to whole seconds (frame ``i`` at
    ``clock.origin + i / CAMERA_FPS``); pts in 1/90000 s.
    """

    kind = "video"

    def __init__(self, index: int, clock: CaptureClock) -> None:
        super().__init__()
        width, height = CAMERA_SIZE
        self._clock = clock
        self._dark = np.zeros((height, width, 3), np.uint8)
        self._dark[:] = dark_color(index)
        self._white = np.full((height, width, 3), 255, np.uint8)
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        """The next picture, captured (paced) on the grid; white in the first 100 ms of a second."""
        if self.readyState != "live":
            raise MediaStreamError
        await self._clock.sleep_until(self._clock.origin + self._index / CAMERA_FPS)
        flashing = self._index % CAMERA_FPS < round(FLASH_SECONDS * CAMERA_FPS)
        frame = av.VideoFrame.from_ndarray(self._white if flashing else self._dark, format="rgb24")
        frame.pts = self._index * (90000 // CAMERA_FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self._index += 1
        return frame


class BeepAudioTrack(MediaStreamTrack):
    """Silence with a :data:`FLASH_SECONDS` beep at ``frequency`` Hz starting ``offset_ms`` after every
    whole wall-clock second; 20 ms frames of 48 kHz mono s16, sample ``s`` captured at
    ``clock.origin + s / 48000``."""

    kind = "audio"

    def __init__(self, frequency: float, offset_ms: float, clock: CaptureClock) -> None:
        super().__init__()
        self._clock = clock
        self._frequency = frequency
        self._offset_samples = round(offset_ms * MIC_RATE / 1000)
        self._sent = 0

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms, paced in real time (handed over once its last sample is captured)."""
        if self.readyState != "live":
            raise MediaStreamError
        await self._clock.sleep_until(self._clock.origin + (self._sent + MIC_FRAME) / MIC_RATE)
        index = np.arange(self._sent, self._sent + MIC_FRAME, dtype=np.int64)
        on = (index - self._offset_samples) % MIC_RATE < round(FLASH_SECONDS * MIC_RATE)
        tone = BEEP_AMPLITUDE * 32767 * np.sin(2 * np.pi * self._frequency * index / MIC_RATE) * on
        frame = av.AudioFrame.from_ndarray(tone.astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._sent += MIC_FRAME
        return frame


def participant_tracks(index: int, offset_ms: float) -> list[MediaStreamTrack]:
    """Participant ``index`` (0-based): its flashing camera and beeping microphone on one clock.

    Must be called inside the event loop that runs the tracks.
    """
    clock = CaptureClock()
    return [FlashVideoTrack(index, clock), BeepAudioTrack(BEEP_HZ[index % len(BEEP_HZ)], offset_ms, clock)]


def participant_offsets(participants: int, offsets_ms: Sequence[float]) -> list[float]:
    """Sender offsets (beep minus flash, ms): participant 1 at 0, the others from ``offsets_ms``."""
    return [0.0] + [float(offsets_ms[i % len(offsets_ms)]) for i in range(participants - 1)]


# -- the viewer ------------------------------------------------------------------------------------


def view(url: str, seconds: float, out: Path, arrivals_path: Path) -> None:
    """Play ``url`` (RTMP) for ``seconds``, remux it into ``out`` (FLV) and write ``arrivals_path``:
    JSON ``[[is_video, pts_seconds, arrival_wall_seconds], ...]`` for every packet."""
    arrivals: list[tuple[bool, float, float]] = []
    source = av.open(url, options={"rw_timeout": "10000000", "fflags": "nobuffer"}, timeout=20)
    try:
        sink = av.open(str(out), "w", format="flv")
        try:
            mapping = {
                s.index: sink.add_stream_from_template(s)
                for s in source.streams
                if s.type in ("audio", "video")
            }
            end = time.monotonic() + seconds
            try:
                for packet in source.demux():
                    now = time.time()
                    stream = mapping.get(packet.stream.index)
                    if stream is None or packet.pts is None or packet.time_base is None:
                        continue
                    arrivals.append(
                        (packet.stream.type == "video", float(packet.pts * packet.time_base), now)
                    )
                    packet.stream = stream
                    sink.mux(packet)
                    if time.monotonic() > end:
                        break
            except (av.error.EOFError, av.error.OSError) as exc:  # the publisher stopped: the stream ended
                print(f"viewer: stream ended ({exc})", file=sys.stderr)
        finally:
            sink.close()
    finally:
        source.close()
    arrivals_path.write_text(json.dumps(arrivals))


# -- analysis --------------------------------------------------------------------------------------


@dataclass
class Participant:
    """One participant's numbers (ms)."""

    user: str
    sender_offset_ms: float
    flashes: int
    offset_ms_median: float
    offset_ms_max: float
    offset_ms_p95: float
    abs_offset_ms_median: float
    video_onsets: list[float] = field(default_factory=list, repr=False)
    audio_onsets: list[float] = field(default_factory=list, repr=False)


def crossings(times: Floats, values: Floats, threshold: float, rearm: float) -> list[float]:
    """Rising crossings of ``threshold`` by ``values`` (sampled at ``times``, seconds), each linearly
    interpolated between the samples either side; a crossing counts only after ``values`` fell below
    ``rearm`` again."""
    result: list[float] = []
    armed = bool(values.size) and values[0] < rearm
    above = values >= threshold
    for i in range(1, values.size):
        if values[i] < rearm:
            armed = True
        elif armed and above[i] and not above[i - 1]:
            v0, v1 = values[i - 1], values[i]
            fraction = (threshold - v0) / (v1 - v0) if v1 != v0 else 1.0
            result.append(float(times[i - 1] + fraction * (times[i] - times[i - 1])))
            armed = False
    return result


def beep_onsets(samples: Floats, start: float, rate: int, frequency: float) -> list[float]:
    """Onsets (seconds of output pts) of the beeps at ``frequency`` in mono ``samples`` starting at pts
    ``start``: the complex demodulation at ``frequency`` smoothed by a :data:`BOXCAR_SAMPLES` boxcar
    (its delay removed), crossing half of the beeps' typical level."""
    n = np.arange(samples.size)
    baseband = samples * np.exp(-2j * np.pi * frequency * n / rate)
    kernel = np.ones(BOXCAR_SAMPLES) / BOXCAR_SAMPLES
    envelope = np.abs(np.convolve(baseband, kernel, mode="same"))
    level = float(np.percentile(envelope, 99.5))
    if level <= 1e-4:
        return []
    # mode="same" centres the boxcar: the 50 % point of a step is at the step itself.
    times = start + n / rate
    return crossings(times, envelope, 0.5 * level, 0.2 * level)


def decode(path: Path) -> tuple[list[tuple[float, npt.NDArray[np.uint8]]], Floats, float, int]:
    """The file's video frames as ``(pts seconds, (H, W) uint8 Y plane)`` and its audio as mono
    float64 samples with the pts (seconds) of the first one and the rate (Hz)."""
    frames: list[tuple[float, npt.NDArray[np.uint8]]] = []
    chunks: list[Floats] = []
    audio_start: float | None = None
    rate = 48000
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if frame.pts is None or frame.time_base is None:
                continue
            pts = float(frame.pts * frame.time_base)
            if isinstance(frame, av.VideoFrame):
                luma = np.frombuffer(memoryview(frame.planes[0]), np.uint8).reshape(frame.height, -1)
                frames.append((pts, luma[:, : frame.width].copy()))
            elif isinstance(frame, av.AudioFrame):
                if audio_start is None:
                    audio_start, rate = pts, frame.sample_rate
                chunks.append(frame.to_ndarray().reshape(frame.layout.nb_channels, -1).mean(axis=0))
    audio = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)
    return frames, audio, audio_start or 0.0, rate


def analyse(
    path: Path,
    arrivals: list[tuple[bool, float, float]],
    panes: dict[str, tuple[int, int, int, int]],
    offsets_ms: dict[str, float],
    tones: dict[str, float],
    measured_from: float,
) -> dict[str, Any]:
    """The numbers of one run (see the module docstring).

    Args:
        path: the viewer's FLV.
        arrivals: ``(is_video, pts seconds, arrival wall seconds)`` per packet.
        panes: user → ``(x, y, width, height)`` of their pane, pixels of the output.
        offsets_ms: user → sender offset (beep minus flash), ms.
        tones: user → beep frequency, Hz.
        measured_from: pts (seconds) before which nothing is measured.
    """
    frames, audio, audio_start, rate = decode(path)
    times = np.array([t for t, _ in frames])
    result: list[Participant] = []
    for user, (x, y, w, h) in panes.items():
        lumas = np.array(
            [
                float(luma[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3].mean())
                for _, luma in frames
            ]
        )
        dark = float(np.median(lumas))
        video = [t for t in crossings(times, lumas, (dark + 235) / 2, dark + 20) if t >= measured_from]
        beeps = beep_onsets(audio, audio_start, rate, tones[user])
        sender = offsets_ms[user] / 1000
        paired: list[tuple[float, float]] = []
        for v in video:
            near = [a for a in beeps if abs(a - v - sender) < 0.4]
            if near:
                paired.append((v, min(near, key=lambda a: abs(a - v - sender))))
        errors = [(a - v - sender) * 1000 for v, a in paired]
        result.append(
            Participant(
                user=user,
                sender_offset_ms=offsets_ms[user],
                flashes=len(paired),
                offset_ms_median=statistics.median(errors) if errors else math.nan,
                offset_ms_max=max(errors, key=abs) if errors else math.nan,
                offset_ms_p95=float(np.percentile(np.abs(errors), 95)) if errors else math.nan,
                abs_offset_ms_median=statistics.median((a - v) * 1000 for v, a in paired)
                if paired
                else math.nan,
                video_onsets=[v for v, _ in paired],
                audio_onsets=[a - sender for _, a in paired],
            )
        )
    return {
        "participants": [
            {k: v for k, v in asdict(p).items() if k not in ("video_onsets", "audio_onsets")} for p in result
        ],
        "skew_ms": skew_ms(result),
        **drift(arrivals, measured_from),
        **glass_to_glass(result, arrivals),
    }


def skew_ms(participants: list[Participant]) -> float:
    """Median over flashes (whole seconds) of the larger spread across participants of video onsets
    and of audio onsets (minus the sender offsets), ms; 0 with one participant."""
    if len(participants) < 2:
        return 0.0
    spreads = []
    onsets = [v for p in participants for v in p.video_onsets]
    if not onsets:
        return math.nan
    phase = onsets[0] % 1.0  # flashes are a whole second apart: number them from this phase

    def flash(onset: float) -> int:
        return round(onset - phase)

    for number in {flash(v) for v in onsets}:
        video = [v for p in participants for v in p.video_onsets if flash(v) == number]
        audio = [
            a
            for p in participants
            for v, a in zip(p.video_onsets, p.audio_onsets, strict=True)
            if flash(v) == number
        ]
        if len(video) == len(participants):
            spreads.append(max(max(video) - min(video), max(audio) - min(audio)) * 1000)
    return statistics.median(spreads) if spreads else math.nan


def drift(arrivals: list[tuple[bool, float, float]], measured_from: float) -> dict[str, float]:
    """Slope of the least ``arrival - pts`` per :data:`DRIFT_WINDOW_SECONDS` window of video packets,
    extrapolated to ms per hour, with its standard error and the span fitted (seconds)."""
    video = np.array([(pts, wall) for is_video, pts, wall in arrivals if is_video and pts >= measured_from])
    if video.shape[0] < 10:
        return {"drift_ms_per_hour": math.nan, "drift_stderr_ms_per_hour": math.nan, "drift_span_s": 0.0}
    pts, wall = video[:, 0], video[:, 1]
    residual = wall - pts
    window = np.floor((pts - pts[0]) / DRIFT_WINDOW_SECONDS)
    xs, ys = [], []
    for w in np.unique(window):
        inside = window == w
        best = int(np.argmin(np.where(inside, residual, np.inf)))
        xs.append(pts[best])
        ys.append(residual[best])
    x, y = np.array(xs), np.array(ys)
    if x.size < 3:
        return {"drift_ms_per_hour": math.nan, "drift_stderr_ms_per_hour": math.nan, "drift_span_s": 0.0}
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    stderr = math.sqrt(float(np.sum((y - fitted) ** 2)) / (x.size - 2) / float(np.sum((x - x.mean()) ** 2)))
    return {
        "drift_ms_per_hour": float(slope) * 3600 * 1000,
        "drift_stderr_ms_per_hour": stderr * 3600 * 1000,
        "drift_span_s": float(x[-1] - x[0]),
    }


def glass_to_glass(
    participants: list[Participant], arrivals: list[tuple[bool, float, float]]
) -> dict[str, float]:
    """Arrival of the first white output frame minus the flash's capture time (its whole second), ms."""
    video = sorted((pts, wall) for is_video, pts, wall in arrivals if is_video)
    pts_list = [p for p, _ in video]
    delays = []
    for participant in participants:
        for onset in participant.video_onsets:
            index = int(np.searchsorted(pts_list, onset))  # the first frame at or after the crossing
            if index < len(video):
                wall = video[index][1]
                delays.append((wall - math.floor(wall)) * 1000)
    if not delays:
        return {"g2g_p50_ms": math.nan, "g2g_p90_ms": math.nan}
    return {"g2g_p50_ms": float(np.percentile(delays, 50)), "g2g_p90_ms": float(np.percentile(delays, 90))}


# -- the run ---------------------------------------------------------------------------------------


async def publish(janus_url: str, room: str, offsets_ms: list[float], seconds: float) -> None:
    """Publish the participants (``p1``, ``p2``, ...) for ``seconds``."""
    from rtc_mpu.stack.publisher import Publisher

    publishers = [
        Publisher(janus_url, room, f"p{i + 1}", participant_tracks(i, offset))
        for i, offset in enumerate(offsets_ms)
    ]
    try:
        for publisher in publishers:
            await publisher.start()
        await asyncio.sleep(seconds)
    finally:
        for publisher in publishers:
            await publisher.stop()


async def mix_and_watch(
    janus_url: str, rtmp_url: str, offsets_ms: list[float], seconds: float, folder: Path
) -> dict[str, Any]:
    """Publish (child), mix (here), watch (child); analyse. Returns the result dictionary."""
    from rtc_mpu.mixer.output.sinks import sink_target
    from rtc_mpu.mixer.pipeline import Pipeline
    from rtc_mpu.mixer.sources.janus import ChannelConfig, JanusSource
    from rtc_mpu.mixer.video.geometry import pane_rect
    from rtc_mpu.spec.task import build_task_spec

    total = WARM_UP_SECONDS + seconds
    room_channel = ChannelConfig(janus_url, "bench", "avsync")
    publisher = subprocess.Popen(
        [sys.executable, "-m", "bench.av_sync", "--publish", janus_url, room_channel.room,
         ",".join(str(o) for o in offsets_ms), str(total + 15)],
    )  # fmt: skip
    await asyncio.sleep(3.0)
    spec = build_task_spec(media_encode_id=MEDIA_ENCODE_ID)
    pipeline = Pipeline(
        spec, JanusSource(room_channel), sink_target(rtmp_url), realtime=True, give_up_after=None
    )
    run = asyncio.create_task(pipeline.run())
    viewer: subprocess.Popen[bytes] | None = None
    flv, arrivals_path = folder / "viewer.flv", folder / "arrivals.json"
    load_before = os.getloadavg()
    try:
        for _ in range(100):
            if pipeline.push_status.connected:
                break
            await asyncio.sleep(0.1)
        viewer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.av_sync",
                "--view",
                rtmp_url,
                str(total + 2),
                str(flv),
                str(arrivals_path),
            ]
        )
        seen: dict[str, list[float]] = {}  # the mixer's own A/V offsets, sampled once a second
        for second in range(int(total + 3)):
            await asyncio.sleep(1.0)
            if second >= WARM_UP_SECONDS:
                for user, offset in getattr(pipeline.stats, "av_offsets_ms", {}).items():
                    seen.setdefault(user, []).append(offset)
        choice = pipeline.layout
        assert choice is not None, "the mix drew no frame"
        panes = {
            a.stream.user_id: pane_rect(a.pane, spec.width, spec.height)
            for a in choice.assignments
            if a.stream is not None
        }
        await asyncio.to_thread(viewer.wait, 30)
        stats = pipeline.stats
    finally:
        pipeline.stop()
        await asyncio.gather(run, return_exceptions=True)
        publisher.terminate()
        publisher.wait(15)
        if viewer is not None and viewer.poll() is None:
            viewer.terminate()
    arrivals = [(bool(v), float(p), float(w)) for v, p, w in json.loads(arrivals_path.read_text())]
    users = sorted(panes)
    offsets = {f"p{i + 1}": o for i, o in enumerate(offsets_ms)}
    tones = {f"p{i + 1}": BEEP_HZ[i % len(BEEP_HZ)] for i in range(len(offsets_ms))}
    result = analyse(
        flv,
        arrivals,
        {u: (r.x, r.y, r.width, r.height) for u, r in panes.items()},
        {u: offsets[u] for u in users},
        {u: tones[u] for u in users},
        measured_from=WARM_UP_SECONDS,
    )
    result["mixer_av_offsets_ms"] = {
        user: {"median": statistics.median(values), "max": max(values, key=abs)}
        for user, values in seen.items()
    }
    audio = getattr(
        pipeline, "_audio", None
    )  # the mixer's own latencies (diagnostics; absent before issue 17)
    result["mixer_timings_ms"] = (
        audio.timings_ms() if audio is not None and hasattr(audio, "timings_ms") else {}
    )
    result["dropped_video_frames"] = stats.dropped_video_frames
    result["load_average_1m_before_after"] = [load_before[0], os.getloadavg()[0]]
    result["seconds_measured"] = seconds
    return result


def run(participants: int, seconds: float, offsets_ms: Sequence[float]) -> dict[str, Any]:
    """Start Janus and nginx-rtmp, run one measurement, stop them."""
    from rtc_mpu.stack.janus import Janus
    from rtc_mpu.stack.nginx_rtmp import NginxRtmp
    from rtc_mpu.stack.ports import free_port

    offsets = participant_offsets(participants, offsets_ms)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        janus = Janus(folder / "janus", http_port=free_port(), rtp_port_range="46000-46999")
        nginx = NginxRtmp(folder / "nginx", rtmp_port=free_port(), http_port=free_port())
        janus.start()
        nginx.start()
        try:
            return asyncio.run(mix_and_watch(janus.url, nginx.rtmp_url("avsync"), offsets, seconds, folder))
        finally:
            nginx.stop()
            janus.stop()


def print_table(result: dict[str, Any]) -> None:
    """The table of one run."""
    print(
        f"A/V sync as an RTMP viewer sees it: {len(result['participants'])} participants, "
        f"{result['seconds_measured']:g} s measured, {os.cpu_count()} CPUs, "
        f"load {result['load_average_1m_before_after'][0]:.2f} -> "
        f"{result['load_average_1m_before_after'][1]:.2f}"
    )
    print(
        f"{'user':<6}{'sender':>8}{'flashes':>9}{'offset_ms_median':>18}{'offset_ms_max':>15}"
        f"{'|p95|':>7}{'a-v raw':>9}"
    )
    for p in result["participants"]:
        print(
            f"{p['user']:<6}{p['sender_offset_ms']:>8.0f}{p['flashes']:>9}{p['offset_ms_median']:>18.1f}"
            f"{p['offset_ms_max']:>15.1f}{p['offset_ms_p95']:>7.1f}{p['abs_offset_ms_median']:>9.1f}"
        )
    print(f"skew_ms            {result['skew_ms']:.1f}")
    print(
        f"drift_ms_per_hour  {result['drift_ms_per_hour']:.1f} ± {result['drift_stderr_ms_per_hour']:.1f} "
        f"(fitted over {result['drift_span_s']:.0f} s, extrapolated)"
    )
    print(f"g2g_p50_ms         {result['g2g_p50_ms']:.0f} (p90 {result['g2g_p90_ms']:.0f})")
    if result.get("mixer_av_offsets_ms"):
        print(f"mixer's own a-v (ms, sampled each second): {result['mixer_av_offsets_ms']}")
    for user, timing in sorted(result.get("mixer_timings_ms", {}).items()):
        print(f"mixer timing {user}: {timing}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--publish`` / ``--view``, one of its child processes)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--publish":
        janus_url, room, offsets, seconds = args[1:5]
        asyncio.run(publish(janus_url, room, [float(o) for o in offsets.split(",")], float(seconds)))
        return 0
    if args and args[0] == "--view":
        url, seconds, out, arrivals = args[1:5]
        view(url, float(seconds), Path(out), Path(arrivals))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--offsets",
        default=",".join(str(o) for o in DEFAULT_OFFSETS_MS),
        help="sender offsets (beep minus flash, ms) of participants 2, 3, ...",
    )
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(args)
    result = run(options.participants, options.seconds, [float(o) for o in options.offsets.split(",")])
    print_table(result)
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
