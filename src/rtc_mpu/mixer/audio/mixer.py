"""Audio side of the live mixer: per-user jitter buffers, loudest-N selection, mixing and limiting.

Data flow::

    user decoder --push(user_id, av.AudioFrame)--> per-user AudioResampler (-> fltp stereo 48 kHz)
                 --> per-user JitterBuffer ((2, n) float32 chunks)
    media clock  --mix_block(count, join_order)--> pull BLOCK_SAMPLES from every buffer, update levels,
                 select the loudest <= count users (with hysteresis), sum in float32, limiter + soft clip
                 --> (2, BLOCK_SAMPLES) float32 in [-1, 1] --make_frame(block, pts)--> av.AudioFrame for AAC

All sample arrays handled here are ``(channels, samples)`` = ``(2, n)`` ``float32`` arrays, stereo
(row 0 = left, row 1 = right), 48 kHz, full scale = 1.0.  Levels are in dBFS of the RMS value
(a full-scale square wave is 0 dBFS, a full-scale sine about -3 dBFS).

:class:`AudioMixer` is thread-safe: ``push`` may be called from decoder threads while the media
clock calls ``mix_block`` from another thread.  :class:`JitterBuffer` on its own is not thread-safe.
"""

from __future__ import annotations

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
    "BLOCK_SAMPLES",
    "BLOCK_SECONDS",
    "CHANNELS",
    "HYSTERESIS_DB",
    "LEVEL_FLOOR_DB",
    "LEVEL_TIME_CONSTANT",
    "SAMPLE_RATE",
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

_TIME_BASE: Final[Fraction] = Fraction(1, SAMPLE_RATE)
_LEVEL_ALPHA: Final[float] = 1.0 - math.exp(-BLOCK_SECONDS / LEVEL_TIME_CONSTANT)
_LEVEL_FLOOR_LINEAR: Final[float] = 10.0 ** (LEVEL_FLOOR_DB / 20.0)
# FFmpeg's (libswresample's) gain for a mono channel upmixed to each side of stereo: -3 dB.
_MONO_TO_STEREO_GAIN: Final = np.float32(math.sqrt(0.5))
# Input formats converted by numpy (the same values FFmpeg gives) instead of an AudioResampler, whose
# filter graph costs tens of microseconds per frame: float samples at the output rate, mono or stereo.
_DIRECT_FORMATS: Final = frozenset({"flt", "fltp"})
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


def _stereo_planes(frame: av.AudioFrame) -> Samples:
    """A new ``(2, n)`` array of an fltp stereo frame (one copy, straight from its two planes)."""
    n = frame.samples
    out = np.empty((CHANNELS, n), dtype=np.float32)
    out[0] = _plane(frame, 0, n)
    out[1] = _plane(frame, 1, n)
    return out


def _direct_samples(frame: av.AudioFrame) -> Samples:
    """A new ``(2, n)`` array of a 48 kHz flt/fltp mono/stereo frame, as FFmpeg's resampler converts it.

    Mono goes to both sides at -3 dB (:data:`_MONO_TO_STEREO_GAIN`, the same float32 product FFmpeg
    computes); stereo is copied (and de-interleaved for ``flt``).
    """
    n = frame.samples
    out = np.empty((CHANNELS, n), dtype=np.float32)
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
        """Drop all buffered samples (not counted as dropped) and go back to buffering."""
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


@dataclass
class _UserAudio:
    buffer: JitterBuffer
    resampler: av.AudioResampler | None = None
    resampler_key: _ResamplerKey | None = None
    level: float = 0.0  # EMA of block RMS, linear full scale
    block: Samples = field(default_factory=lambda: _silence(BLOCK_SAMPLES))


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
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input side

    def push(self, user_id: str, frame: av.AudioFrame) -> None:
        """Queue one decoded audio frame of a user.

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
            if user.resampler is None:
                user.buffer.push_owned(_direct_samples(frame))
            else:
                for out in user.resampler.resample(frame):
                    user.buffer.push_owned(_stereo_planes(out))

    def remove_user(self, user_id: str) -> None:
        """Forget a user's buffer, resampler, level and mixing slot (no-op for unknown users)."""
        with self._lock:
            self._users.pop(user_id, None)
            if user_id in self._selected:
                self._selected.remove(user_id)

    # ------------------------------------------------------------------ output side

    def mix_block(self, audio_mix_count: int, join_order: Sequence[str]) -> Samples:
        """Produce the next mixed block.

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
            for user in self._users.values():
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
