"""Tests for rtc_mpu.mixer.audio.mixer: jitter buffer, resampling, loudest-N selection, limiter, AAC
framing."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from rtc_mpu.mixer.audio.mixer import (
    BLOCK_SAMPLES,
    CHANNELS,
    LEVEL_FLOOR_DB,
    SAMPLE_RATE,
    AudioMixer,
    JitterBuffer,
)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

BLOCK_S = BLOCK_SAMPLES / SAMPLE_RATE


# ---------------------------------------------------------------------------------------------- helpers


def tone(freq: float, rate: int, seconds: float, amp: float, phase: float = 0.0) -> F64:
    """1-D sine of ``amp`` (linear full scale) at ``freq`` Hz sampled at ``rate`` Hz."""
    t = np.arange(round(seconds * rate)) / rate
    return np.asarray(amp * np.sin(2 * np.pi * freq * t + phase), dtype=np.float64)


def square_ish(freq: float, rate: int, seconds: float, phase: float = 0.0) -> F64:
    """Full-scale, steep-edged (clipped sine) wave at ``freq`` Hz."""
    return np.clip(4.0 * tone(freq, rate, seconds, 1.0, phase), -1.0, 1.0)


def to_s16(signal: F64) -> npt.NDArray[np.int16]:
    return np.asarray(np.clip(np.round(signal * 32767.0), -32768, 32767), dtype=np.int16)


def make_frames(signal: F64, rate: int, fmt: str, chunk_ms: int = 20) -> list[av.AudioFrame]:
    """Cut a (channels, n) signal in [-1, 1] into ~20 ms AudioFrames of format ``fmt``."""
    channels = signal.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    chunk = rate * chunk_ms // 1000
    frames: list[av.AudioFrame] = []
    for start in range(0, signal.shape[1], chunk):
        part = signal[:, start : start + chunk]
        frame: av.AudioFrame
        if fmt == "s16":  # packed: (1, n * channels) interleaved
            frame = av.AudioFrame.from_ndarray(to_s16(part.T.reshape(1, -1)), format=fmt, layout=layout)
        elif fmt == "s16p":
            frame = av.AudioFrame.from_ndarray(to_s16(part), format=fmt, layout=layout)
        elif fmt == "flt":
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(part.T.reshape(1, -1), dtype=np.float32), format=fmt, layout=layout
            )
        elif fmt == "fltp":
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(part, dtype=np.float32), format=fmt, layout=layout
            )
        else:
            raise AssertionError(fmt)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        frames.append(frame)
    return frames


class Source:
    """A user's pre-cut frames, pushed in real-time order relative to the mixer clock."""

    def __init__(self, user_id: str, frames: Sequence[av.AudioFrame]) -> None:
        self.user_id = user_id
        self.frames = list(frames)
        self.index = 0
        self.pushed_seconds = 0.0

    def feed_until(self, mixer: AudioMixer, seconds: float) -> None:
        while self.pushed_seconds < seconds and self.index < len(self.frames):
            frame = self.frames[self.index]
            mixer.push(self.user_id, frame)
            self.pushed_seconds += frame.samples / frame.sample_rate
            self.index += 1


def run(
    mixer: AudioMixer,
    sources: Sequence[Source],
    n_blocks: int,
    audio_mix_count: int,
    join_order: Sequence[str] | None = None,
    selections: list[list[str]] | None = None,
    start_block: int = 0,
) -> F32:
    """Drive the mixer clock from block ``start_block`` for ``n_blocks`` blocks (sources are fed in
    real time relative to block 0); returns the concatenated (2, n_blocks * 1024) output."""
    order = [s.user_id for s in sources] if join_order is None else list(join_order)
    blocks: list[F32] = []
    for k in range(start_block, start_block + n_blocks):
        for source in sources:
            source.feed_until(mixer, (k + 1) * BLOCK_S)
        block = mixer.mix_block(audio_mix_count, order)
        assert block.shape == (CHANNELS, BLOCK_SAMPLES)
        assert block.dtype == np.float32
        blocks.append(block)
        if selections is not None:
            selections.append(mixer.mixed_users())
    return np.concatenate(blocks, axis=1)


def spectrum_db(x: npt.NDArray[np.floating], rate: int = SAMPLE_RATE) -> tuple[F64, F64]:
    """Hann-windowed magnitude spectrum scaled so a sine of amplitude A peaks at ~20*log10(A) dB."""
    window = np.hanning(len(x))
    mag = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64) * window)) / (np.sum(window) / 2.0)
    freqs = np.asarray(np.fft.rfftfreq(len(x), 1.0 / rate), dtype=np.float64)
    return freqs, 20.0 * np.log10(np.maximum(mag, 1e-12))


def peak_db(freqs: F64, db: F64, freq: float, bins: int = 2) -> float:
    i = int(np.argmin(np.abs(freqs - freq)))
    return float(np.max(db[max(0, i - bins) : i + bins + 1]))


def max_db_outside(freqs: F64, db: F64, exclude: Sequence[float], bins: int = 12) -> float:
    mask = np.ones(len(freqs), dtype=bool)
    mask[:3] = False  # DC
    for f in exclude:
        i = int(np.argmin(np.abs(freqs - f)))
        mask[max(0, i - bins) : i + bins + 1] = False
    return float(np.max(db[mask]))


def find_lag(out: npt.NDArray[np.floating], ref: npt.NDArray[np.floating], max_lag: int) -> int:
    """Lag (samples) at which ``out`` best matches ``ref`` delayed, searched in [0, max_lag]."""
    m = min(len(out), len(ref)) - max_lag
    # scores[lag] = dot(out[lag : lag + m], ref[:m]), in one call (a loop of dots is 10x slower).
    scores = np.correlate(
        np.asarray(out[: m + max_lag], np.float64), np.asarray(ref[:m], np.float64), "valid"
    )
    return int(np.argmax(scores))


# ---------------------------------------------------------------------------------------------- JitterBuffer


def ramp_chunk(start: int, n: int) -> F32:
    """(2, n) chunk whose left row holds start..start+n-1 and right row the negated values."""
    values = np.arange(start, start + n, dtype=np.float32)
    return np.stack([values, -values])


def test_jitter_buffer_prefill_returns_silence_until_depth_reached() -> None:
    jb = JitterBuffer(prefill_samples=2048, max_samples=9600)
    jb.push(ramp_chunk(1, 1000))
    out = jb.pull(1024)
    assert out.shape == (2, 1024) and out.dtype == np.float32
    assert not out.any()
    assert jb.depth == 1000 and jb.underruns == 0
    jb.push(ramp_chunk(1001, 1500))
    out = jb.pull(1024)
    np.testing.assert_array_equal(out, ramp_chunk(1, 1024))
    assert jb.depth == 2500 - 1024


def test_jitter_buffer_underrun_pads_with_silence_and_rebuffers() -> None:
    jb = JitterBuffer(prefill_samples=2048, max_samples=9600)
    jb.push(ramp_chunk(1, 2500))
    np.testing.assert_array_equal(jb.pull(1024), ramp_chunk(1, 1024))
    np.testing.assert_array_equal(jb.pull(1024), ramp_chunk(1025, 1024))
    out = jb.pull(1024)  # only 452 left
    np.testing.assert_array_equal(out[:, :452], ramp_chunk(2049, 452))
    assert not out[:, 452:].any()
    assert jb.underruns == 1 and jb.depth == 0
    # Back to buffering: below prefill the new data is held back, and no new underrun is counted.
    jb.push(ramp_chunk(5000, 1000))
    assert not jb.pull(1024).any()
    assert not jb.pull(1024).any()
    assert jb.underruns == 1 and jb.depth == 1000
    jb.push(ramp_chunk(6000, 1100))
    np.testing.assert_array_equal(jb.pull(1024), ramp_chunk(5000, 1024))


def test_jitter_buffer_overflow_drops_oldest_down_to_prefill() -> None:
    jb = JitterBuffer(prefill_samples=100, max_samples=1000)
    for start in range(0, 1200, 300):  # 4 chunks, exceeds max on the 4th push
        jb.push(ramp_chunk(start, 300))
    assert jb.depth == 100
    assert jb.dropped_samples == 1100
    np.testing.assert_array_equal(jb.pull(100), ramp_chunk(1100, 100))  # newest samples kept
    jb.push(ramp_chunk(0, 1001))
    assert jb.dropped_samples == 1100 + 901 and jb.depth == 100


def test_jitter_buffer_reads_across_chunk_boundaries_in_order() -> None:
    jb = JitterBuffer(prefill_samples=0, max_samples=100_000)
    sizes = [7, 300, 1, 960, 441, 2000, 13, 960]
    start = 0
    for size in sizes:
        jb.push(ramp_chunk(start, size))
        start += size
    got = np.concatenate([jb.pull(n) for n in (5, 1024, 1, 700, 1024, 1024)], axis=1)
    np.testing.assert_array_equal(got, ramp_chunk(0, 3778))
    assert got.shape[1] == 3778 and jb.underruns == 0 and jb.depth == sum(sizes) - 3778


def test_jitter_buffer_zero_prefill_plays_immediately() -> None:
    jb = JitterBuffer(prefill_samples=0, max_samples=1000)
    assert not jb.pull(4).any() and jb.underruns == 0  # empty: silence, not an underrun
    jb.push(ramp_chunk(1, 10))
    np.testing.assert_array_equal(jb.pull(4), ramp_chunk(1, 4))
    jb.push(np.zeros((2, 0), dtype=np.float32))
    assert jb.depth == 6


def test_jitter_buffer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(prefill_samples=-1, max_samples=10)
    with pytest.raises(ValueError):
        JitterBuffer(prefill_samples=100, max_samples=50)
    jb = JitterBuffer(prefill_samples=0, max_samples=10)
    with pytest.raises(ValueError):
        jb.push(np.zeros((1, 10), dtype=np.float32))
    with pytest.raises(ValueError):
        jb.push(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError):
        jb.pull(-1)


# ---------------------------------------------------------------------------------------------- mixing


def test_three_users_with_mixed_formats_and_rates_are_all_mixed() -> None:
    seconds = 1.6
    sources = [
        Source("a", make_frames(tone(440, 16000, seconds, 0.25)[None, :], 16000, "s16")),
        Source("b", make_frames(np.stack([tone(660, 44100, seconds, 0.25)] * 2), 44100, "s16p")),
        Source("c", make_frames(np.stack([tone(990, 48000, seconds, 0.25)] * 2), 48000, "fltp")),
    ]
    mixer = AudioMixer()
    out = run(mixer, sources, n_blocks=64, audio_mix_count=3)
    assert mixer.mixed_users() == ["a", "b", "c"]
    assert all(s["underruns"] == 0 and s["dropped_samples"] == 0 for s in mixer.stats().values())
    tail = out[:, -32 * BLOCK_SAMPLES :]
    for channel in tail:
        freqs, db = spectrum_db(channel)
        peaks = [peak_db(freqs, db, f) for f in (440, 660, 990)]
        # mono is upmixed at -3 dB by FFmpeg: 0.25 -> -15 dBFS, stereo sources -12 dBFS.
        assert -16.5 < peaks[0] < -14.0
        assert -13.5 < peaks[1] < -11.0
        assert -13.5 < peaks[2] < -11.0
        assert max_db_outside(freqs, db, (440, 660, 990)) < min(peaks) - 50.0


def test_mix_count_keeps_the_loudest_and_drops_the_quietest() -> None:
    seconds = 2.0
    # "quiet" joined first, so it is selected initially and must be replaced by the louder "loud2".
    amps = {"quiet": 0.03, "loud1": 0.3, "loud2": 0.1}
    freqs_by_user = {"quiet": 990.0, "loud1": 440.0, "loud2": 660.0}
    sources = [
        Source(u, make_frames(np.stack([tone(freqs_by_user[u], 48000, seconds, amps[u])] * 2), 48000, "fltp"))
        for u in ("quiet", "loud1", "loud2")
    ]
    mixer = AudioMixer()
    selections: list[list[str]] = []
    out = run(mixer, sources, n_blocks=80, audio_mix_count=2, selections=selections)
    assert selections[0] == ["quiet", "loud1"]  # join-order fill while everybody is still silent
    assert mixer.mixed_users() == ["loud1", "loud2"]
    levels = mixer.levels()
    assert levels["loud1"] > levels["loud2"] > levels["quiet"] > -40.0
    freqs, db = spectrum_db(out[0, -32 * BLOCK_SAMPLES :])
    loud = min(peak_db(freqs, db, 440), peak_db(freqs, db, 660))
    assert loud > -25.0
    assert peak_db(freqs, db, 990) < loud - 40.0


@pytest.mark.parametrize("late_gain_db", [0.0, 1.5])
def test_mix_count_with_equal_loudness_keeps_join_order_without_flapping(late_gain_db: float) -> None:
    seconds = 2.5
    amp = 0.2
    # "z" is equal, or slightly louder but within the 3 dB hysteresis: it must never get in.
    spec = {"x": (440.0, amp), "y": (660.0, amp), "z": (990.0, amp * 10 ** (late_gain_db / 20))}
    sources = [
        Source(u, make_frames(np.stack([tone(f, 48000, seconds, a)] * 2), 48000, "fltp"))
        for u, (f, a) in spec.items()
    ]
    mixer = AudioMixer()
    selections: list[list[str]] = []
    out = run(mixer, sources, n_blocks=110, audio_mix_count=2, selections=selections)
    assert all(sel == ["x", "y"] for sel in selections)
    levels = mixer.levels()
    assert abs(levels["z"] - levels["x"] - late_gain_db) < 0.5  # the levels really are (nearly) equal
    freqs, db = spectrum_db(out[1, -32 * BLOCK_SAMPLES :])
    present = min(peak_db(freqs, db, 440), peak_db(freqs, db, 660))
    assert present > -20.0
    assert peak_db(freqs, db, 990) < present - 40.0


def test_new_user_fills_a_free_slot_and_removed_user_frees_it() -> None:
    mixer = AudioMixer(prefill_samples=0)
    a = Source("a", make_frames(np.stack([tone(440, 48000, 1.0, 0.2)] * 2), 48000, "fltp"))
    b = Source("b", make_frames(np.stack([tone(660, 48000, 1.0, 0.2)] * 2), 48000, "fltp"))
    run(mixer, [a], n_blocks=10, audio_mix_count=2, join_order=["a"])
    b.pushed_seconds = 10 * BLOCK_S  # "b" joins at block 10
    assert mixer.mixed_users() == ["a"]
    run(mixer, [a, b], n_blocks=5, audio_mix_count=2, join_order=["a", "b"], start_block=10)
    assert mixer.mixed_users() == ["a", "b"]
    mixer.remove_user("a")
    assert "a" not in mixer.stats() and "a" not in mixer.levels()
    out = run(mixer, [b], n_blocks=20, audio_mix_count=2, join_order=["b"], start_block=15)
    assert mixer.mixed_users() == ["b"]
    freqs, db = spectrum_db(out[0, -16 * BLOCK_SAMPLES :])
    assert peak_db(freqs, db, 660) > -20.0
    assert peak_db(freqs, db, 440) < peak_db(freqs, db, 660) - 40.0


def test_loud_inputs_are_limited_without_wraparound_or_clicks() -> None:
    seconds = 1.5

    def wave(freq: float, phase: float, square: bool) -> F64:
        make = square_ish if square else (lambda f, r, s, p: tone(f, r, s, 1.0, p))
        return np.stack([make(freq, 48000, seconds, phase), make(freq * 1.01, 48000, seconds, phase + 1.0)])

    # Full-scale s16 inputs whose sum peaks near 4.0 with a block peak that varies block to block.
    waves = [wave(97.0, 0.0, True), wave(151.0, 0.5, False), wave(233.0, 1.0, True), wave(307.0, 1.5, False)]
    sources = [Source(f"u{i}", make_frames(w, 48000, "s16p")) for i, w in enumerate(waves)]
    mixer = AudioMixer()
    out = run(mixer, sources, n_blocks=64, audio_mix_count=4)

    assert np.all(np.abs(out) <= 1.0)
    expected = np.sum([to_s16(w).astype(np.float64) / 32768.0 for w in waves], axis=0)
    assert np.max(np.abs(expected)) > 3.5  # the plain sum would clip / wrap badly
    lag = find_lag(out[0], expected[0], 4 * BLOCK_SAMPLES)
    n = out.shape[1] - lag
    ref = expected[:, :n]
    got = out[:, lag:].astype(np.float64)
    for channel in range(2):
        assert np.corrcoef(got[channel], ref[channel])[0, 1] > 0.9
    loud = np.abs(ref) > 0.1
    assert np.mean(np.sign(got[loud]) == np.sign(ref[loud])) > 0.99

    # Recover the gain sample by sample where the soft knee is inactive and the input is big
    # enough.  A linear ramp changes it by at most 1/1024 per sample; a per-block step would
    # show up as a jump at block boundaries.
    valid = (np.abs(ref[0]) > 0.2) & (np.abs(got[0]) < 0.85 * 0.89)
    idx = np.flatnonzero(valid)
    gain = got[0, idx] / ref[0, idx]
    assert np.median(gain) < 0.5  # the limiter really is reducing the level
    gaps = np.diff(idx)
    close = gaps <= 4
    slopes = np.abs(np.diff(gain))[close] / gaps[close]
    assert float(np.max(slopes)) < 0.0015
    block_of = (idx + lag) // BLOCK_SAMPLES
    crossing = close & (np.diff(block_of) == 1)
    assert int(np.sum(crossing)) > 20  # the smoothness check did look at block boundaries
    per_block = [float(np.median(gain[block_of == b])) for b in range(10, 60) if np.any(block_of == b)]
    assert max(per_block) - min(per_block) > 0.01  # and the gain did change between blocks


def test_sudden_overload_is_soft_clipped_not_hard_clipped() -> None:
    seconds = 1.0
    quiet = np.stack([tone(440, 48000, seconds, 0.3)] * 2)
    onset = 20 * BLOCK_SAMPLES + 100  # "late" starts loud in the middle of a block
    late = np.zeros((2, quiet.shape[1]))
    late[:, onset:] = np.stack([tone(660, 48000, seconds, 0.95)] * 2)[:, : quiet.shape[1] - onset]
    sources = [
        Source("quiet", make_frames(quiet, 48000, "fltp")),
        Source("late", make_frames(late, 48000, "fltp")),
    ]
    mixer = AudioMixer(prefill_samples=0)
    out = run(mixer, sources, n_blocks=40, audio_mix_count=2)
    expected = quiet + late  # prefill 0 and paced pushes: no delay; peaks at ~1.25
    before = 20 * BLOCK_SAMPLES  # blocks before the onset's block pass with gain 1
    np.testing.assert_array_equal(out[:, :before], expected[:, :before].astype(np.float32))
    after = out[:, onset : 22 * BLOCK_SAMPLES]
    # The gain cannot react before the block ends, so the knee engages: values above the
    # threshold, squeezed below 1.0 (a hard clip would flatten them at exactly 1.0).
    assert np.max(np.abs(after)) > 0.95
    assert np.max(np.abs(after)) < 1.0
    assert np.corrcoef(after[0], expected[0, onset : 22 * BLOCK_SAMPLES])[0, 1] > 0.99


def test_single_user_at_normal_level_passes_through_unchanged() -> None:
    rng = np.random.default_rng(1)
    seconds = 1.0
    signal = np.stack([tone(440, 48000, seconds, 0.5, phase=0.3), rng.uniform(-0.5, 0.5, 48000)])
    mixer = AudioMixer()
    out = run(mixer, [Source("solo", make_frames(signal, 48000, "fltp"))], n_blocks=44, audio_mix_count=3)
    lag = find_lag(out[1], signal[1], 4 * BLOCK_SAMPLES)
    assert 0 < lag <= 2048 + BLOCK_SAMPLES  # prefill delay, bounded
    assert not out[:, :lag].any()  # silence while prefilling
    n = out.shape[1] - lag
    np.testing.assert_allclose(out[:, lag:], signal[:, :n], atol=1e-3, rtol=0)


def test_limiter_gain_releases_back_towards_unity() -> None:
    burst_blocks = 15
    burst = np.stack([square_ish(100, 48000, burst_blocks * BLOCK_S)] * 2)
    quiet = np.stack([tone(440, 48000, 2.2, 0.25)] * 2)
    signal = np.concatenate([burst, quiet], axis=1)  # full-scale burst, then -12 dBFS
    frames = make_frames(signal, 48000, "fltp")
    sources = [Source(u, frames) for u in ("a", "b", "c")]  # three identical users: burst sums to 3.0
    mixer = AudioMixer(prefill_samples=0, release_seconds=0.25)
    out = run(mixer, sources, n_blocks=110, audio_mix_count=3).astype(np.float64)
    expected = 3 * signal[:, : out.shape[1]]  # prefill 0 and paced pushes: no delay
    assert np.max(np.abs(out)) <= 1.0

    def gain_of_block(k: int) -> float:
        o = out[0, k * BLOCK_SAMPLES : (k + 1) * BLOCK_SAMPLES]
        e = expected[0, k * BLOCK_SAMPLES : (k + 1) * BLOCK_SAMPLES]
        return float(np.dot(o, e) / np.dot(e, e))

    burst_gain = gain_of_block(burst_blocks - 2)
    assert burst_gain == pytest.approx(0.89 / 3.0, rel=0.05)
    # After the burst the gain recovers exponentially (time constant 0.25 s), not instantly.
    t = 10 * BLOCK_S
    model = 1.0 - (1.0 - burst_gain) * np.exp(-t / 0.25)
    assert gain_of_block(burst_blocks + 10) == pytest.approx(model, abs=0.05)
    assert gain_of_block(burst_blocks + 10) < 0.9
    # ... and is back at unity (0.75 peak sum is below the threshold) by the end.
    assert gain_of_block(109) == pytest.approx(1.0, abs=0.003)


def test_users_without_audio_or_outside_join_order_are_silent() -> None:
    mixer = AudioMixer(prefill_samples=0)
    silent = mixer.mix_block(4, ["ghost"])
    assert silent.shape == (2, BLOCK_SAMPLES) and not silent.any()
    hidden = Source("hidden", make_frames(np.stack([tone(440, 48000, 0.5, 0.5)] * 2), 48000, "fltp"))
    hidden.feed_until(mixer, 0.4)
    depth = mixer.stats()["hidden"]["depth"]
    out = mixer.mix_block(4, ["ghost"])
    assert not out.any()
    assert mixer.stats()["hidden"]["depth"] == depth - BLOCK_SAMPLES  # still pulled
    assert mixer.mixed_users() == ["ghost"]
    levels = mixer.levels()
    assert "ghost" not in levels and levels["hidden"] > -40.0  # one block into a ~0.3 s average
    assert not mixer.mix_block(0, ["hidden"]).any()


def test_levels_are_smoothed_block_rms_in_dbfs() -> None:
    mixer = AudioMixer(prefill_samples=0)
    sine = np.concatenate([np.stack([tone(440, 48000, 2.0, 0.5)] * 2), np.zeros((2, 48000))], axis=1)
    sources = [
        Source("sine", make_frames(sine, 48000, "fltp")),
        Source("mute", make_frames(np.zeros((2, 144000)), 48000, "fltp")),
    ]
    rms_db = 20 * np.log10(0.5 / np.sqrt(2))
    # ~0.3 s after the tone starts, an EMA with a 0.3 s time constant is at 1 - 1/e: about -4 dB.
    run(mixer, sources, n_blocks=14, audio_mix_count=2)
    assert mixer.levels()["sine"] == pytest.approx(rms_db + 20 * np.log10(1 - np.exp(-1)), abs=1.0)
    run(mixer, sources, n_blocks=80, audio_mix_count=2, start_block=14)  # ~2 s: settled
    levels = mixer.levels()
    assert levels["sine"] == pytest.approx(rms_db, abs=0.3)
    assert levels["mute"] == LEVEL_FLOOR_DB
    # After the tone stops the level decays exponentially (8.7 dB per 0.3 s), not straight to the floor.
    run(mixer, sources, n_blocks=18, audio_mix_count=2, start_block=94)
    silent_for = 112 * BLOCK_S - 2.0
    assert mixer.levels()["sine"] == pytest.approx(rms_db - 8.686 * silent_for / 0.3, abs=1.0)


def test_input_format_change_recreates_the_resampler() -> None:
    first = make_frames(tone(440, 16000, 0.6, 0.4)[None, :], 16000, "s16")
    second = make_frames(np.stack([tone(660, 44100, 1.0, 0.4)] * 2), 44100, "flt")
    mixer = AudioMixer()
    out = run(mixer, [Source("u", first + second)], n_blocks=70, audio_mix_count=1)
    freqs, db = spectrum_db(out[0, 8 * BLOCK_SAMPLES : 24 * BLOCK_SAMPLES])
    assert peak_db(freqs, db, 440) > -20.0
    freqs, db = spectrum_db(out[0, -24 * BLOCK_SAMPLES :])
    assert peak_db(freqs, db, 660) > -12.0
    assert peak_db(freqs, db, 440) < -60.0


@pytest.mark.parametrize(
    ("fmt", "channels"),
    [(fmt, channels) for fmt in ("fltp", "flt", "s16", "s16p") for channels in (1, 2)],
)
def test_48k_input_gives_exactly_what_ffmpegs_resampler_gives(fmt: str, channels: int) -> None:
    # flt/fltp/s16/s16p mono or stereo at 48 kHz skip the resampler (numpy; aiortc's Opus decoder
    # gives s16 stereo): the samples must be FFmpeg's to the bit.
    rng = np.random.default_rng(7)
    signal = rng.uniform(-0.6, 0.6, (channels, 20 * BLOCK_SAMPLES))
    # 1008-sample frames, so blocks straddle them. Separate copies: the resampler may take a frame's data.
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
    expected = np.concatenate(
        [o.to_ndarray() for f in make_frames(signal, 48000, fmt, chunk_ms=21) for o in resampler.resample(f)],
        axis=1,
    )
    mixer = AudioMixer(prefill_samples=0, max_samples=signal.shape[1])
    for frame in make_frames(signal, 48000, fmt, chunk_ms=21):
        mixer.push("u", frame)
    out = np.concatenate([mixer.mix_block(1, ["u"]) for _ in range(19)], axis=1)
    assert np.max(np.abs(out)) < 0.89  # below the limiter threshold: the mix is the user's samples
    np.testing.assert_array_equal(out, expected[:, : out.shape[1]])


def test_non_finite_samples_are_replaced() -> None:
    data = np.full((2, BLOCK_SAMPLES), 0.25, dtype=np.float32)
    data[0, :3] = [np.nan, np.inf, -np.inf]
    frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="stereo")
    frame.sample_rate = 48000
    mixer = AudioMixer(prefill_samples=0)
    mixer.push("u", frame)
    out = mixer.mix_block(1, ["u"])
    assert np.all(np.isfinite(out))
    # NaN -> 0, +inf -> 1.0 and -inf -> -1.0, which the limiter then brings down towards its threshold.
    assert out[0, 0] == 0.0 and out[0, 1] > 0.8 and out[0, 2] < -0.8
    assert np.all(out[0, 3:] > 0.2) and np.all(out[1] > 0.2)


def test_push_and_mix_reject_bad_arguments() -> None:
    mixer = AudioMixer()
    frame = av.AudioFrame.from_ndarray(np.zeros((2, 480), dtype=np.float32), format="fltp", layout="stereo")
    with pytest.raises(ValueError):
        mixer.push("u", frame)  # sample_rate not set
    with pytest.raises(ValueError):
        mixer.mix_block(-1, [])
    with pytest.raises(ValueError):
        AudioMixer(limiter_threshold=1.5)
    with pytest.raises(ValueError):
        AudioMixer(prefill_samples=5000, max_samples=4000)
    with pytest.raises(ValueError):
        AudioMixer.make_frame(np.zeros((1, BLOCK_SAMPLES), dtype=np.float32), 0)


# ---------------------------------------------------------------------------------------------- AAC framing


def test_make_frame_encodes_to_aac_and_decodes_back_to_the_tone(tmp_path: Path) -> None:
    mixer = AudioMixer(prefill_samples=0)
    source = Source("u", make_frames(np.stack([tone(1000, 48000, 1.2, 0.5)] * 2), 48000, "fltp"))
    path = tmp_path / "out.aac"
    with av.open(str(path), "w", format="adts") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        for i in range(50):
            source.feed_until(mixer, (i + 1) * BLOCK_S)
            frame = AudioMixer.make_frame(mixer.mix_block(1, ["u"]), pts=i * BLOCK_SAMPLES)
            assert frame.format.name == "fltp" and frame.layout.name == "stereo"
            assert frame.sample_rate == SAMPLE_RATE and frame.samples == BLOCK_SAMPLES
            assert frame.pts == i * BLOCK_SAMPLES and frame.time_base == Fraction(1, 48000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    decoded: list[npt.NDArray[np.floating]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            assert frame.sample_rate == SAMPLE_RATE
            decoded.append(np.asarray(frame.to_ndarray(), dtype=np.float64).reshape(2, -1))
    audio = np.concatenate(decoded, axis=1)
    assert audio.shape[1] >= 48 * BLOCK_SAMPLES
    freqs, db = spectrum_db(audio[0, 4096 : 4096 + 32768])
    assert abs(freqs[int(np.argmax(db))] - 1000.0) < 3.0
    assert peak_db(freqs, db, 1000) == pytest.approx(20 * np.log10(0.5), abs=2.0)
