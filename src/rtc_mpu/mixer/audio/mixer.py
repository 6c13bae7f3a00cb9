"""Audio side of the live mixer: per-user jitter buffers, loudest-N selection, mixing and limiting.

Data flow::

    user decoder --push(user_id, av.AudioFrame)--> per-user AudioResampler (-> fltp stereo 48 kHz)
                 --> per-user JitterBuffer ((2, n) float32 chunks)
    media clock  --mix_block(count, join_order)--> pull BLOCK_SAMPLES from every buffer, update levels,
                 select the loudest <= count users (with hysteresis), sum in float32, limiter + soft clip
                 --> (2, BLOCK_SAMPLES) float32 in [-1, 1] --make_frame(block, pts)--> av.AudioFrame for AAC

Timing (issue 17, lip sync): a live source may give each frame its *sender time*, the instant of its first
sample on the event loop's clock (seconds, ``loop.time()`` domain) as the source estimates it from RTP
timestamps (:mod:`rtc_mpu.mixer.sources.janus`), and the pipeline reports each user's video latency
(:meth:`AudioMixer.note_video_latency`). A timed user's samples are then placed on the output timeline
by their sender time, not by arrival: block ``k``, presented at ``presentation_time``, starts with the
sample sent at ``presentation_time - L``, where ``L`` (the user's *playout latency*) is the user's video
latency, or what the audio itself needs when that is more (or when the user has no video): every
user's voice leaves the mix in step with their picture, whatever either path costs, and a user who
joins, leaves or stalls moves nobody else. Frames without a sender time (files, tests) keep the
prefill behaviour.

All sample arrays handled here are ``(channels, samples)`` = ``(2, n)`` ``float32`` arrays, stereo
(row 0 = left, row 1 = right), 48 kHz, full scale = 1.0.  Levels are in dBFS of the RMS value
(a full-scale square wave is 0 dBFS, a full-scale sine about -3 dBFS).

:class:`AudioMixer` is thread-safe: ``push`` may be called from decoder threads while the media
clock calls ``mix_block`` from another thread.  :class:`JitterBuffer` on its own is not thread-safe.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

import av
import numpy as np
import numpy.typing as npt

__all__ = [
    "ALIGN_TOLERANCE_SECONDS",
    "AUDIO_LATENCY_IGNORED",
    "AUDIO_LATENCY_MARGIN_SECONDS",
    "AUDIO_LATENCY_WINDOW",
    "BLOCK_SAMPLES",
    "BLOCK_SECONDS",
    "CHANNELS",
    "HYSTERESIS_DB",
    "LEVEL_FLOOR_DB",
    "LEVEL_TIME_CONSTANT",
    "RESYNC_SECONDS",
    "SAMPLE_RATE",
    "TIMED_MAX_SAMPLES",
    "VIDEO_LATENCY_WINDOW",
    "VIDEO_STALE_SECONDS",
    "AudioMixer",
    "JitterBuffer",
]

SAMPLE_RATE: Final[int] = 48000
"""Output (and internal) sample rate in Hz."""

CHANNELS: Final[int] = 2
"""Output (and internal) channel count: stereo, row 0 = left, row 1 = right."""

BLOCK_SAMPLES: Final[int] = 1024
"""Samples per channel in one mixed block (the AAC-LC frame size); one block lasts 1024/48000 s."""

BLOCK_SECONDS: Final[float] = BLOCK_SAMPLES / SAMPLE_RATE
"""Duration of one mixed block in seconds (about 21.3 ms)."""

LEVEL_TIME_CONSTANT: Final[float] = 0.3
"""Time constant in seconds of the exponential moving average of each user's block RMS."""

LEVEL_FLOOR_DB: Final[float] = -100.0
"""Level reported (dBFS) for silence; levels are never below this."""

HYSTERESIS_DB: Final[float] = 3.0
"""A non-mixed user replaces the quietest mixed one only if it is more than this many dB louder."""

ALIGN_TOLERANCE_SECONDS: Final[float] = 0.004
"""A timed buffer is re-aligned (samples dropped or silence inserted) only when its audio is off its
place on the timeline by more than this (4 ms: far below what anyone notices between lips and voice;
EBU R37 allows +40/-60 ms), so the estimators' sub-millisecond jitter never clicks."""

RESYNC_SECONDS: Final[float] = 0.5
"""A timed frame whose sender time is this far off the buffer's continuation (a publisher restarted,
timestamps jumped) restarts the buffer at that time instead of filling or trimming the difference."""

AUDIO_LATENCY_MARGIN_SECONDS: Final[float] = 0.005
"""Added to the largest recent audio latency (arrival minus sender time of a frame's first sample) for
the least playout latency the audio needs: the mixer reads a block when its last sample is due."""

TIMED_MAX_SAMPLES: Final[int] = SAMPLE_RATE
"""A timed buffer holds at least this many samples (1 s) before dropping the oldest: its depth is the
playout latency, which follows a user's video however slow that is."""

VIDEO_LATENCY_WINDOW: Final[int] = 90
"""Video latencies kept per user (about 3 s at 30 fps); the playout latency follows their median."""

AUDIO_LATENCY_WINDOW: Final[int] = 250
"""Audio latencies kept per user (about 5 s of 20 ms frames)."""

AUDIO_LATENCY_IGNORED: Final[int] = 12
"""The largest audio latencies of the window not counted in what the audio needs (5 %: a stall of the
process of up to about 240 ms every 5 s costs a gap in that user's sound, not seconds of lip sync)."""

VIDEO_STALE_SECONDS: Final[float] = 2.0
"""A user whose last video frame is older than this (seconds) is placed as audio only."""

_TIME_BASE: Final[Fraction] = Fraction(1, SAMPLE_RATE)
_LEVEL_ALPHA: Final[float] = 1.0 - math.exp(-BLOCK_SECONDS / LEVEL_TIME_CONSTANT)
_LEVEL_FLOOR_LINEAR: Final[float] = 10.0 ** (LEVEL_FLOOR_DB / 20.0)
# FFmpeg's (libswresample's) gain for a mono channel upmixed to each side of stereo: -3 dB.
_MONO_TO_STEREO_GAIN: Final = np.float32(math.sqrt(0.5))
# Input formats converted by numpy (the same values FFmpeg gives) instead of an AudioResampler, whose
# filter graph costs tens of microseconds per frame: float and 16-bit samples at the output rate, mono
# or stereo (aiortc's Opus decoder gives s16 stereo).
_DIRECT_FORMATS: Final = frozenset({"flt", "fltp", "s16", "s16p"})
# libswresample's s16 -> float conversion: a product with 2**-15 (exact in float32).
_S16_SCALE: Final = np.float32(1.0 / 32768.0)
_DIRECT_LAYOUTS: Final = frozenset({"mono", "stereo"})
# Fractions 1/N .. N/N used to ramp the limiter gain linearly across one block.
_RAMP: Final[npt.NDArray[np.float64]] = np.arange(1, BLOCK_SAMPLES + 1, dtype=np.float64) / BLOCK_SAMPLES

Samples = npt.NDArray[np.float32]
"""A ``(2, n)`` float32 array: stereo samples at 48 kHz, full scale 1.0."""


def _silence(n: int) -> Samples:
    return np.zeros((CHANNELS, n), dtype=np.float32)


def _peak(samples: Samples) -> float:
    """Largest absolute sample value (two reductions, no temporary array)."""
    return max(float(samples.max()), -float(samples.min()))


def _to_db(linear: float) -> float:
    """Convert a linear amplitude to dBFS, floored at :data:`LEVEL_FLOOR_DB`."""
    if linear <= _LEVEL_FLOOR_LINEAR:
        return LEVEL_FLOOR_DB
    return max(LEVEL_FLOOR_DB, 20.0 * math.log10(linear))


def _plane(frame: av.AudioFrame, index: int, count: int) -> npt.NDArray[np.float32]:
    """The first ``count`` float32 values of a frame's plane, as a read-only view (no copy)."""
    return np.frombuffer(memoryview(frame.planes[index]), dtype=np.float32, count=count)


def _plane_s16(frame: av.AudioFrame, index: int, count: int) -> npt.NDArray[np.int16]:
    """The first ``count`` int16 values of a frame's plane, as a read-only view (no copy)."""
    return np.frombuffer(memoryview(frame.planes[index]), dtype=np.int16, count=count)


def _stereo_planes(frame: av.AudioFrame) -> Samples:
    """A new ``(2, n)`` array of an fltp stereo frame (one copy, straight from its two planes)."""
    n = frame.samples
    out = np.empty((CHANNELS, n), dtype=np.float32)
    out[0] = _plane(frame, 0, n)
    out[1] = _plane(frame, 1, n)
    return out


def _direct_samples(frame: av.AudioFrame) -> Samples:
    """A new ``(2, n)`` array of a 48 kHz flt/fltp/s16/s16p mono/stereo frame, as FFmpeg's resampler
    converts it (the same float32 values, checked by tests/test_audio_mixer.py).

    16-bit samples are scaled by 2**-15 (:data:`_S16_SCALE`); mono goes to both sides at -3 dB
    (:data:`_MONO_TO_STEREO_GAIN`, the same float32 product FFmpeg computes); stereo is copied (and
    de-interleaved for ``flt`` and ``s16``).
    """
    n = frame.samples
    out = np.empty((CHANNELS, n), dtype=np.float32)
    if frame.format.name in ("s16", "s16p"):
        if frame.layout.nb_channels == 1:
            np.multiply(_plane_s16(frame, 0, n), _S16_SCALE, out=out[0])
            out[0] *= _MONO_TO_STEREO_GAIN
            out[1] = out[0]
        elif frame.format.is_planar:
            np.multiply(_plane_s16(frame, 0, n), _S16_SCALE, out=out[0])
            np.multiply(_plane_s16(frame, 1, n), _S16_SCALE, out=out[1])
        else:
            np.multiply(_plane_s16(frame, 0, 2 * n).reshape(n, CHANNELS).T, _S16_SCALE, out=out)
        return out
    if frame.layout.nb_channels == 1:
        np.multiply(_plane(frame, 0, n), _MONO_TO_STEREO_GAIN, out=out[0])
        out[1] = out[0]
    elif frame.format.is_planar:
        out[0] = _plane(frame, 0, n)
        out[1] = _plane(frame, 1, n)
    else:
        out[:] = _plane(frame, 0, 2 * n).reshape(n, CHANNELS).T
    return out


class JitterBuffer:
    """Per-user FIFO of stereo 48 kHz float32 samples that absorbs network/decoder jitter.

    Samples are stored as a deque of ``(2, n)`` float32 chunks plus a read offset into the oldest
    chunk, so push and pull cost O(number of chunks touched), with no per-sample Python work.

    State machine: the buffer starts *buffering*; :meth:`pull` returns silence until the depth
    reaches ``prefill_samples`` (and is non-zero), then it is *playing*.  A pull that finds fewer
    samples than requested while playing returns what is there padded with zeros, counts one
    underrun and goes back to buffering.  A :meth:`push` that makes the depth exceed
    ``max_samples`` drops the oldest samples down to ``prefill_samples`` (bounding the latency)
    and counts them in :attr:`dropped_samples`.

    Args:
        prefill_samples: Depth in samples (per channel, 48 kHz) to reach before playing;
            0 = play as soon as anything is buffered (offline / paced sources).
        max_samples: Depth in samples above which the oldest samples are dropped.

    Raises:
        ValueError: if ``prefill_samples < 0``, ``max_samples < 1`` or
            ``max_samples < prefill_samples``.
    """

    def __init__(self, prefill_samples: int, max_samples: int) -> None:
        if prefill_samples < 0:
            raise ValueError(f"prefill_samples must be >= 0, got {prefill_samples}")
        if max_samples < 1 or max_samples < prefill_samples:
            raise ValueError(
                f"max_samples must be >= 1 and >= prefill_samples ({prefill_samples}), got {max_samples}"
            )
        self._prefill = prefill_samples
        self._max = max_samples
        self._chunks: deque[Samples] = deque()
        self._offset = 0  # samples already consumed from self._chunks[0]
        self._depth = 0
        self._playing = False
        self._underruns = 0
        self._dropped = 0
        #: Sender time (seconds) just after the newest buffered sample; None while untimed.
        self._tail_time: float | None = None
        #: Sender time (seconds) of the first sample of the latest :meth:`pull_at` block.
        self.last_start_time: float | None = None

    @property
    def timed(self) -> bool:
        """Whether the buffer holds samples placed by sender time (:meth:`push_timed`)."""
        return self._tail_time is not None

    @property
    def head_time(self) -> float | None:
        """Sender time in seconds of the oldest buffered sample (of the next one, when empty), or None
        while untimed."""
        if self._tail_time is None:
            return None
        return self._tail_time - self._depth / SAMPLE_RATE

    @property
    def prefill_samples(self) -> int:
        """Depth (samples per channel) required before playback starts or resumes."""
        return self._prefill

    @property
    def max_samples(self) -> int:
        """Depth (samples per channel) above which the oldest samples are dropped."""
        return self._max

    @property
    def depth(self) -> int:
        """Number of buffered samples per channel (48 kHz)."""
        return self._depth

    @property
    def underruns(self) -> int:
        """Number of times playback ran dry (each starvation episode counts once)."""
        return self._underruns

    @property
    def dropped_samples(self) -> int:
        """Total samples per channel discarded because the depth exceeded ``max_samples``."""
        return self._dropped

    def push(self, samples: npt.ArrayLike) -> None:
        """Append samples at the tail of the FIFO (the data is copied).

        Args:
            samples: ``(2, n)`` array, stereo, 48 kHz, full scale 1.0; converted to float32.
                ``n == 0`` is a no-op.

        Raises:
            ValueError: if ``samples`` is not two-dimensional with exactly 2 rows.
        """
        chunk = np.array(samples, dtype=np.float32, copy=True, order="C")
        if chunk.ndim != 2 or chunk.shape[0] != CHANNELS:
            raise ValueError(f"samples must have shape (2, n), got {chunk.shape}")
        self.push_owned(chunk)

    def push_owned(self, chunk: Samples) -> None:
        """Append a chunk without copying it: the buffer takes ownership (nobody else may write it).

        Args:
            chunk: C-contiguous ``(2, n)`` float32 array, stereo, 48 kHz (not checked).
        """
        n = int(chunk.shape[1])
        if n == 0:
            return
        self._chunks.append(chunk)
        self._depth += n
        if self._depth > self._max:
            excess = self._depth - self._prefill
            self._discard(excess)
            self._dropped += excess

    def push_timed(self, chunk: Samples, start_time: float) -> None:
        """Append a chunk whose first sample was sent at ``start_time`` (the buffer takes ownership).

        A chunk that continues the buffer within :data:`ALIGN_TOLERANCE_SECONDS` is appended as it is
        (the estimate's jitter is ignored); a later one is preceded by silence filling the gap (a lost
        packet); an earlier one loses the samples the buffer already holds (a duplicate); one more than
        :data:`RESYNC_SECONDS` off restarts the buffer at ``start_time``. A depth above
        ``max_samples`` (and :data:`TIMED_MAX_SAMPLES`) drops the oldest samples down to it.

        Args:
            chunk: C-contiguous ``(2, n)`` float32 array, stereo, 48 kHz (not checked).
            start_time: sender time of ``chunk[:, 0]`` in seconds (the event loop's clock).
        """
        n = int(chunk.shape[1])
        if n == 0:
            return
        tail = self._tail_time
        if tail is None or abs(start_time - tail) > RESYNC_SECONDS:
            self.clear()
            self._tail_time = start_time
        else:
            gap = start_time - tail
            if gap > ALIGN_TOLERANCE_SECONDS:
                silence = round(gap * SAMPLE_RATE)
                self._append(_silence(silence))
            elif gap < -ALIGN_TOLERANCE_SECONDS:
                overlap = round(-gap * SAMPLE_RATE)
                if overlap >= n:
                    return
                chunk = chunk[:, overlap:]
        self._append(chunk)
        cap = max(self._max, TIMED_MAX_SAMPLES)
        if self._depth > cap:
            excess = self._depth - cap
            self._discard(excess)
            self._dropped += excess

    def _append(self, chunk: Samples) -> None:
        """Append a timed chunk and move the tail time by its length."""
        n = int(chunk.shape[1])
        self._chunks.append(chunk)
        self._depth += n
        assert self._tail_time is not None
        self._tail_time += n / SAMPLE_RATE

    def pull_at(self, n: int, start_time: float) -> Samples:
        """Remove and return ``n`` samples to be played from sender time ``start_time`` (a timed buffer).

        When the oldest buffered sample is more than :data:`ALIGN_TOLERANCE_SECONDS` older than
        ``start_time`` (the audio would be late), the samples before ``start_time`` are dropped
        (counted in :attr:`dropped_samples`); when it is that much newer (audio missing, a stall or a
        late start), the block begins with silence up to it. Within the tolerance it plays as it is.
        Running dry after having played counts one underrun. :attr:`last_start_time` tells the sender
        time of the block's first sample.

        Args:
            n: samples per channel (48 kHz).
            start_time: sender time in seconds (the event loop's clock) the block should start with.

        Returns:
            ``(2, n)`` float32 array, stereo, 48 kHz (a new array owned by the caller).

        Raises:
            ValueError: if ``n < 0`` or the buffer is not timed.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        head = self.head_time
        if head is None:
            raise ValueError("pull_at needs a timed buffer (push_timed)")
        error = head - start_time
        lead = 0
        if error < -ALIGN_TOLERANCE_SECONDS:
            late = min(self._depth, round(-error * SAMPLE_RATE))
            self._discard(late)
            self._dropped += late
            head = self._tail_time - self._depth / SAMPLE_RATE if self._tail_time is not None else head
            error = head - start_time
        if error > ALIGN_TOLERANCE_SECONDS:
            lead = min(n, round(error * SAMPLE_RATE))
        out = np.zeros((CHANNELS, n), dtype=np.float32)
        take = min(n - lead, self._depth)
        self.last_start_time = head - lead / SAMPLE_RATE if take > 0 else None
        if take > 0:
            self._read_into(out[:, lead:], take)
            self._playing = True
        if lead + take < n:
            if self._playing:
                self._underruns += 1
            self._playing = False
            # Nothing more was sent yet: what comes next belongs after this block on the timeline.
            if self._depth == 0 and self._tail_time is not None:
                self._tail_time = max(self._tail_time, start_time + n / SAMPLE_RATE)
        return out

    def pull(self, n: int) -> Samples:
        """Remove and return the oldest ``n`` samples.

        Returns silence while buffering; when playing with fewer than ``n`` samples buffered,
        returns those followed by zeros, counts an underrun and goes back to buffering.

        Args:
            n: Samples per channel to return (48 kHz).

        Returns:
            ``(2, n)`` float32 array, stereo, 48 kHz (a new array owned by the caller).

        Raises:
            ValueError: if ``n < 0``.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not self._playing and self._depth >= max(self._prefill, 1):
            self._playing = True
        if not self._playing or n == 0:
            return _silence(n)
        head = self._chunks[0] if self._chunks else None
        if head is not None and self._offset == 0 and head.shape[1] == n:
            # The oldest chunk is exactly the request (AAC frames and blocks are both 1024 samples):
            # hand it over instead of copying it; the buffer keeps no reference to it.
            self._chunks.popleft()
            self._depth -= n
            return head
        out = np.empty((CHANNELS, n), dtype=np.float32)
        filled = self._read_into(out, min(n, self._depth))
        if filled < n:
            out[:, filled:] = 0.0
            self._underruns += 1
            self._playing = False
        return out

    def clear(self) -> None:
        """Drop all buffered samples (not counted as dropped), forget the timing and go back to
        buffering."""
        self._tail_time = None
        self._chunks.clear()
        self._offset = 0
        self._depth = 0
        self._playing = False

    def _read_into(self, out: Samples, n: int) -> int:
        """Copy the oldest ``n`` (<= depth) samples into ``out[:, :n]`` and consume them."""
        pos = 0
        while pos < n:
            head = self._chunks[0]
            take = min(n - pos, head.shape[1] - self._offset)
            out[:, pos : pos + take] = head[:, self._offset : self._offset + take]
            pos += take
            self._consume_head(take)
        return pos

    def _discard(self, n: int) -> None:
        """Consume the oldest ``n`` (<= depth) samples without copying them."""
        while n > 0:
            take = min(n, self._chunks[0].shape[1] - self._offset)
            n -= take
            self._consume_head(take)

    def _consume_head(self, take: int) -> None:
        self._offset += take
        self._depth -= take
        if self._offset >= self._chunks[0].shape[1]:
            self._chunks.popleft()
            self._offset = 0


_ResamplerKey = tuple[str, str, int]


class SortedWindow:
    """The last ``maxlen`` values (seconds) in arrival order and kept sorted, so that order statistics
    (:meth:`largest`, :meth:`median`) cost O(1) at every mixed block instead of a sort or a heap over
    the window (each :meth:`append` costs two binary searches and a list shift of up to ``maxlen``).

    Args:
        maxlen: values kept (the oldest leaves when a new one comes); > 0.
    """

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._arrivals: deque[float] = deque()
        self._sorted: list[float] = []

    def append(self, value: float) -> None:
        """Add ``value`` (a finite number), dropping the oldest when ``maxlen`` are kept."""
        if len(self._arrivals) == self.maxlen:
            oldest = self._arrivals.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._arrivals.append(value)
        bisect.insort(self._sorted, value)

    def __len__(self) -> int:
        return len(self._sorted)

    def largest(self, rank: int) -> float:
        """The ``rank``-th largest value (1: the largest).

        Raises:
            IndexError: fewer than ``rank`` values (or ``rank`` < 1).
        """
        if not 1 <= rank <= len(self._sorted):
            raise IndexError(f"rank {rank} of {len(self._sorted)} values")
        return self._sorted[-rank]

    def median(self) -> float:
        """The median (the mean of the two middle values for an even count), as ``statistics.median``.

        Raises:
            IndexError: the window is empty.
        """
        values, count = self._sorted, len(self._sorted)
        if not count:
            raise IndexError("median of an empty window")
        middle = count // 2
        return values[middle] if count % 2 else (values[middle - 1] + values[middle]) / 2


def _audio_need(latencies: SortedWindow) -> float:
    """The least playout latency (seconds) recent audio latencies need: the largest after the
    :data:`AUDIO_LATENCY_IGNORED` largest, plus :data:`AUDIO_LATENCY_MARGIN_SECONDS`."""
    if not latencies:
        return AUDIO_LATENCY_MARGIN_SECONDS
    ignored = min(AUDIO_LATENCY_IGNORED, (len(latencies) - 1) * AUDIO_LATENCY_IGNORED // AUDIO_LATENCY_WINDOW)
    return latencies.largest(ignored + 1) + AUDIO_LATENCY_MARGIN_SECONDS


@dataclass
class _VideoTiming:
    """A user's recent camera latencies (seconds) and when their last frame came (event loop's clock)."""

    latencies: SortedWindow = field(default_factory=lambda: SortedWindow(VIDEO_LATENCY_WINDOW))
    seen: float = -math.inf


@dataclass
class _UserAudio:
    buffer: JitterBuffer
    resampler: av.AudioResampler | None = None
    resampler_key: _ResamplerKey | None = None
    level: float = 0.0  # EMA of block RMS, linear full scale
    block: Samples = field(default_factory=lambda: _silence(BLOCK_SAMPLES))
    # Timing (seconds): recent audio latencies (arrival minus sender time of a frame's first sample).
    audio_latencies: SortedWindow = field(default_factory=lambda: SortedWindow(AUDIO_LATENCY_WINDOW))
    # Playout latency of the last timed block, and the video latency it was aimed at (None: audio only).
    playout_latency: float | None = None
    video_latency: float | None = None


class AudioMixer:
    """Mixes the audio of many users into fixed stereo 48 kHz blocks of :data:`BLOCK_SAMPLES`.

    Users push decoded frames of any format/rate/layout with :meth:`push`; the media clock calls
    :meth:`mix_block` every ``1024/48000`` s and gets a ``(2, 1024)`` float32 block with every
    value in [-1, 1], which :meth:`make_frame` turns into an ``av.AudioFrame`` for the AAC encoder.

    Args:
        prefill_samples: Per-user jitter-buffer depth (samples at 48 kHz) to reach before playing;
            0 = play immediately (offline / paced sources).  Default 2048 (about 43 ms).
        max_samples: Per-user depth (samples at 48 kHz) above which the oldest samples are dropped
            down to ``prefill_samples``.  Default 9600 (200 ms).
        limiter_threshold: Linear full-scale level (0 < t < 1) the limiter aims the block peak at;
            samples above it after the gain go through a soft knee that approaches but never
            exceeds 1.0.  Default 0.89 (about -1 dBFS).
        release_seconds: Time constant in seconds of the exponential release of the limiter
            gain back to 1.0.  Default 0.25.

    Raises:
        ValueError: on an invalid buffer size (see :class:`JitterBuffer`), a threshold outside
            (0, 1) or a non-positive release time.
    """

    def __init__(
        self,
        *,
        prefill_samples: int = 2048,
        max_samples: int = 9600,
        limiter_threshold: float = 0.89,
        release_seconds: float = 0.25,
    ) -> None:
        JitterBuffer(prefill_samples, max_samples)  # validate the buffer arguments up front
        if not 0.0 < limiter_threshold < 1.0:
            raise ValueError(f"limiter_threshold must be in (0, 1), got {limiter_threshold}")
        if not release_seconds > 0.0:
            raise ValueError(f"release_seconds must be > 0, got {release_seconds}")
        self._prefill = prefill_samples
        self._max = max_samples
        self._threshold = float(limiter_threshold)
        self._release_coeff = math.exp(-BLOCK_SECONDS / release_seconds)
        self._gain = 1.0
        self._users: dict[str, _UserAudio] = {}
        self._selected: list[str] = []  # currently mixed users, in join order
        self._video: dict[str, _VideoTiming] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input side

    def push(
        self,
        user_id: str,
        frame: av.AudioFrame,
        sender_time: float | None = None,
        arrival_time: float | None = None,
    ) -> None:
        """Queue one decoded audio frame of a user.

        With ``sender_time`` (seconds on the event loop's clock: when the frame's first sample was
        sent, as the source estimates it) the user's samples are placed on the output timeline by it
        (see the module docstring), and ``arrival_time`` (seconds, same clock, default
        ``sender_time``) minus ``sender_time`` counts as an audio latency of the user.

        The frame may have any sample format (s16, s16p, flt, fltp, ...), layout (mono, stereo,
        ...) and sample rate; it goes through the user's ``AudioResampler`` (fltp, stereo,
        48 kHz; recreated, after flushing the old one, when the input's (format, layout, rate)
        changes) and the resulting ``(2, n)`` float32 samples into the user's
        :class:`JitterBuffer`, created on the first push.  The resampler may hold samples back,
        so a push can add fewer or more samples than the frame holds.  Float (flt, fltp) mono or
        stereo frames at 48 kHz, what AAC and Opus decoders give, skip the resampler: numpy
        computes the same samples (mono at -3 dB on both sides), without its per-frame cost.
        Non-finite samples are replaced by 0 / ±1.

        Args:
            user_id: Identifier of the user.
            frame: Decoded audio; ``frame.sample_rate`` (Hz) must be set.

        Raises:
            ValueError: if ``frame.sample_rate`` is not positive.
            av.FFmpegError: if FFmpeg cannot convert the frame.
        """
        rate = int(frame.sample_rate)
        if rate <= 0:
            raise ValueError(f"frame.sample_rate must be > 0, got {rate}")
        if frame.samples == 0:
            return
        key: _ResamplerKey = (frame.format.name, frame.layout.name, rate)
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                user = _UserAudio(JitterBuffer(self._prefill, self._max))
                self._users[user_id] = user
            if user.resampler_key != key:
                if user.resampler is not None:
                    for out in user.resampler.resample(None):
                        user.buffer.push_owned(_stereo_planes(out))
                direct = rate == SAMPLE_RATE and key[0] in _DIRECT_FORMATS and key[1] in _DIRECT_LAYOUTS
                user.resampler = (
                    None if direct else av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
                )
                user.resampler_key = key
            if sender_time is not None:
                arrived = sender_time if arrival_time is None else arrival_time
                user.audio_latencies.append(arrived - sender_time)
                chunks = (
                    [_direct_samples(frame)]
                    if user.resampler is None
                    else [_stereo_planes(out) for out in user.resampler.resample(frame)]
                )
                start = sender_time
                for chunk in chunks:
                    user.buffer.push_timed(chunk, start)
                    start += chunk.shape[1] / SAMPLE_RATE
            elif user.resampler is None:
                if user.buffer.timed:
                    user.buffer.clear()
                user.buffer.push_owned(_direct_samples(frame))
            else:
                if user.buffer.timed:
                    user.buffer.clear()
                for out in user.resampler.resample(frame):
                    user.buffer.push_owned(_stereo_planes(out))

    def note_video_latency(self, user_id: str, latency_seconds: float, arrival_time: float) -> None:
        """A video frame of the user (their camera) arrived ``latency_seconds`` after it was sent, at
        ``arrival_time`` (seconds, the event loop's clock): their audio's playout latency follows the
        median of the recent ones (:data:`VIDEO_LATENCY_WINDOW`) while their video keeps coming
        (:data:`VIDEO_STALE_SECONDS`)."""
        with self._lock:
            video = self._video.get(user_id)
            if video is None:
                video = self._video[user_id] = _VideoTiming()
            video.latencies.append(latency_seconds)
            video.seen = arrival_time

    def _playout_latency(
        self, user: _UserAudio, video: _VideoTiming | None, presentation_time: float
    ) -> float:
        """The user's playout latency in seconds: their video latency (median), or what their audio
        needs (:func:`_audio_need`) if that is more or they have no recent video; sets
        ``user.video_latency``."""
        audio = _audio_need(user.audio_latencies)
        if video is not None and video.latencies and presentation_time - video.seen <= VIDEO_STALE_SECONDS:
            user.video_latency = video.latencies.median()
            return max(user.video_latency, audio)
        user.video_latency = None
        return audio

    def remove_user(self, user_id: str) -> None:
        """Forget a user's buffer, resampler, level and mixing slot (no-op for unknown users)."""
        with self._lock:
            self._users.pop(user_id, None)
            self._video.pop(user_id, None)
            if user_id in self._selected:
                self._selected.remove(user_id)

    # ------------------------------------------------------------------ output side

    def mix_block(
        self, audio_mix_count: int, join_order: Sequence[str], presentation_time: float | None = None
    ) -> Samples:
        """Produce the next mixed block.

        ``presentation_time`` (seconds on the event loop's clock) is when the block's first sample is
        presented on the output timeline; timed users' samples are taken by it (see the module
        docstring). Without it, or for untimed users, buffers play in arrival order.

        Pulls :data:`BLOCK_SAMPLES` from every known user's buffer (also users not in
        ``join_order``, so their buffers keep moving, though they are not mixed), updates each
        user's smoothed level, selects at most ``audio_mix_count`` users of ``join_order``
        (loudest first, stable, with :data:`HYSTERESIS_DB` hysteresis; free slots are filled in
        join order; users in ``join_order`` that never pushed audio count as silent), sums them
        in float32 and applies the limiter and soft clip.

        Args:
            audio_mix_count: Maximum number of users mixed; 0 gives silence.
            join_order: User ids eligible for mixing, earliest joined first (duplicates ignored).

        Returns:
            ``(2, 1024)`` float32 array, stereo, 48 kHz, every value in [-1, 1].

        Raises:
            ValueError: if ``audio_mix_count < 0``.
        """
        if audio_mix_count < 0:
            raise ValueError(f"audio_mix_count must be >= 0, got {audio_mix_count}")
        order = list(dict.fromkeys(join_order))
        with self._lock:
            for user_id, user in self._users.items():
                if presentation_time is not None and user.buffer.timed:
                    latency = self._playout_latency(user, self._video.get(user_id), presentation_time)
                    block = user.buffer.pull_at(BLOCK_SAMPLES, presentation_time - latency)
                    start = user.buffer.last_start_time
                    user.playout_latency = None if start is None else presentation_time - start
                else:
                    block = user.buffer.pull(BLOCK_SAMPLES)
                flat = block.reshape(-1)  # a view: pull returns new C-contiguous arrays, ours to change
                energy = float(np.dot(flat, flat))
                if not math.isfinite(energy):  # a NaN or an infinity in the block (or a float32 overflow)
                    np.nan_to_num(block, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
                    energy = float(np.dot(flat.astype(np.float64), flat.astype(np.float64)))
                rms = math.sqrt(energy / flat.size)
                user.level += _LEVEL_ALPHA * (rms - user.level)
                user.block = block
            self._selected = self._select(audio_mix_count, order)
            blocks = [u.block for u in map(self._users.get, self._selected) if u is not None]
            if not blocks:
                mix = _silence(BLOCK_SAMPLES)
            elif len(blocks) == 1:
                mix = blocks[0].copy()  # the user's block stays theirs; the limiter works in place
            else:
                mix = np.add(blocks[0], blocks[1])
                for block in blocks[2:]:
                    mix += block
            return self._limit(mix)

    def _level_db(self, user_id: str) -> float:
        user = self._users.get(user_id)
        return LEVEL_FLOOR_DB if user is None else _to_db(user.level)

    def _select(self, count: int, order: list[str]) -> list[str]:
        """Stable loudest-``count`` selection among ``order``; returns the selection in join order."""
        rank = {user_id: i for i, user_id in enumerate(order)}
        levels = {user_id: self._level_db(user_id) for user_id in order}
        selected = [u for u in self._selected if u in rank]
        if len(selected) > count:  # the count shrank: keep the loudest, earliest joined on ties
            selected = sorted(selected, key=lambda u: (-levels[u], rank[u]))[:count]
        chosen = set(selected)
        for user_id in order:  # fill free slots in join order
            if len(chosen) >= count:
                break
            chosen.add(user_id)
        # Swap in louder outsiders; each swap strictly raises the selected levels, so it ends.
        for _ in range(len(order)):
            outsiders = [u for u in order if u not in chosen]
            if not outsiders or not chosen:
                break
            loudest = min(outsiders, key=lambda u: (-levels[u], rank[u]))
            quietest = min(chosen, key=lambda u: (levels[u], -rank[u]))
            if levels[loudest] - levels[quietest] <= HYSTERESIS_DB:
                break
            chosen.remove(quietest)
            chosen.add(loudest)
        return [u for u in order if u in chosen]

    def _limit(self, mix: Samples) -> Samples:
        """Apply the ramped block gain and the soft clip to ``mix`` ((2, 1024) float32, in place)."""
        previous = self._gain
        target = 1.0 - (1.0 - previous) * self._release_coeff  # exponential release towards 1
        if target > 1.0 - 1e-6:
            target = 1.0
        peak = _peak(mix)
        if peak * target > self._threshold:  # instant attack
            target = self._threshold / peak
        self._gain = target
        if previous != 1.0 or target != 1.0:
            gains = (previous + (target - previous) * _RAMP).astype(np.float32)
            mix *= gains
            peak = _peak(mix)
        if peak > self._threshold:
            self._soft_clip(mix)
        return mix

    def _soft_clip(self, mix: Samples) -> None:
        """Tanh knee above the threshold: continuous with slope 1 at the knee, tends to ±1.0."""
        t = self._threshold
        over = np.abs(mix) > t
        x = mix[over]
        knee = t + (1.0 - t) * np.tanh((np.abs(x) - t) / (1.0 - t))
        mix[over] = np.copysign(np.minimum(knee, 1.0), x).astype(np.float32)

    @staticmethod
    def make_frame(block: npt.ArrayLike, pts: int) -> av.AudioFrame:
        """Wrap a mixed block in an ``av.AudioFrame`` ready for PyAV's AAC encoder.

        Args:
            block: ``(2, n)`` array (normally ``(2, 1024)`` from :meth:`mix_block`), stereo,
                48 kHz, converted to float32.
            pts: Presentation timestamp in 1/48000 s units (i.e. in samples).

        Returns:
            An fltp, stereo, 48 kHz ``av.AudioFrame`` with ``pts`` set and
            ``time_base = Fraction(1, 48000)``.

        Raises:
            ValueError: if ``block`` does not have shape ``(2, n)`` with ``n >= 1``.
        """
        data = np.ascontiguousarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] != CHANNELS or data.shape[1] < 1:
            raise ValueError(f"block must have shape (2, n) with n >= 1, got {data.shape}")
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = _TIME_BASE
        return frame

    # ------------------------------------------------------------------ introspection

    def levels(self) -> dict[str, float]:
        """Smoothed level of every known user in dBFS (EMA of block RMS, ~0.3 s time constant).

        Silence reads :data:`LEVEL_FLOOR_DB` (-100.0); levels are never below it.
        """
        with self._lock:
            return {user_id: _to_db(user.level) for user_id, user in self._users.items()}

    def mixed_users(self) -> list[str]:
        """The users mixed in the last :meth:`mix_block`, in join order."""
        with self._lock:
            return list(self._selected)

    def av_offsets_ms(self) -> dict[str, float]:
        """Per timed user with recent video: how much later their audio is placed on the output
        timeline than their picture, in ms (playout latency of the last block minus the median video
        latency; positive = audio late, negative = audio early), rounded to 0.1 ms."""
        with self._lock:
            return {
                user_id: round((user.playout_latency - user.video_latency) * 1000, 1)
                for user_id, user in self._users.items()
                if user.playout_latency is not None and user.video_latency is not None
            }

    def timings_ms(self) -> dict[str, dict[str, float | None]]:
        """Per timed user, in ms (rounded to 0.1; None when unknown): ``playout_latency`` of the last
        block, the median ``video_latency`` it aims at, and ``audio_latency_need``, the least playout
        latency the audio needs (see :data:`AUDIO_LATENCY_IGNORED`)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        with self._lock:
            return {
                user_id: {
                    "playout_latency": ms(user.playout_latency),
                    "video_latency": ms(user.video_latency),
                    "audio_latency_need": ms(_audio_need(user.audio_latencies)),
                }
                for user_id, user in self._users.items()
                if user.buffer.timed
            }

    def stats(self) -> dict[str, dict[str, int]]:
        """Per known user: ``underruns`` (count), ``dropped_samples`` and ``depth`` (samples at 48 kHz)."""
        with self._lock:
            return {
                user_id: {
                    "underruns": user.buffer.underruns,
                    "dropped_samples": user.buffer.dropped_samples,
                    "depth": user.buffer.depth,
                }
                for user_id, user in self._users.items()
            }
