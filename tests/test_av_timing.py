"""Lip-sync timing (issue 17) on synthetic data: RTP timestamps to sender times, aiortc's audio hold
removed, samples placed on the output timeline by sender time, the A/V offset in stats and /metrics."""

from __future__ import annotations

import asyncio
import fractions
import inspect
import math
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc.jitterbuffer import JitterBuffer as AiortcJitterBuffer
from aiortc.rtcrtpreceiver import RTCRtpReceiver, TimestampMapper
from aiortc.rtp import RtpPacket

from rtc_mpu.mixer.audio.mixer import (
    ALIGN_TOLERANCE_SECONDS,
    AUDIO_LATENCY_MARGIN_SECONDS,
    BLOCK_SAMPLES,
    SAMPLE_RATE,
    AudioMixer,
    JitterBuffer,
)
from rtc_mpu.mixer.clock import MediaClock
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.mixer.pipeline import Pipeline
from rtc_mpu.mixer.sources.janus import (
    OPUS_LOOKAHEAD_SAMPLES,
    RECEIVER_JITTER_BUFFER,
    RECEIVER_TIMESTAMP_MAPPER,
    TIMING_WINDOW_SECONDS,
    PassThroughAudioBuffer,
    TrackTiming,
    frame_sender_time,
    instrument_receiver,
)
from rtc_mpu.spec.streams import StreamKey
from rtc_mpu.spec.task import build_task_spec
from rtc_mpu.workers.stats import TaskStats
from tests.scripted_source import ScriptedSource

FRAME = 960  # 20 ms of 48 kHz


def ramp(start: int, n: int) -> npt.NDArray[np.float32]:
    """``(2, n)`` samples whose value is their index / 1e6 (so a sample tells where it came from)."""
    values = (np.arange(start, start + n, dtype=np.float64) / 1e6).astype(np.float32)
    return np.stack([values, values])


def index_of(block: npt.NDArray[np.float32], at: int) -> int:
    """The source index of the sample at ``at`` of a block of :func:`ramp` samples."""
    return round(float(block[0, at]) * 1e6)


# -- TrackTiming ------------------------------------------------------------------------------------


def test_sender_time_follows_the_earliest_arrival_not_the_jitter() -> None:
    timing = TrackTiming(48000)
    rng = np.random.default_rng(1)
    base = 1000.0
    times = []
    for k in range(200):  # 4 s of 20 ms packets, 5-40 ms late, one at the least delay (5 ms)
        timestamp = 123_456 + k * FRAME
        delay = 0.005 if k == 50 else 0.005 + rng.uniform(0.001, 0.035)
        arrival = base + (k + 1) * FRAME / 48000 + delay  # sent once its last sample is captured
        timing.on_packet(timestamp, arrival)
        sent = timing.sender_time(timestamp, FRAME)
        assert sent is not None
        times.append(sent)
    # After the least-delayed packet, every frame maps to capture time + 5 ms (+ a constant).
    first = 123_456 / 48000
    for k in range(51, 200):
        assert times[k] == pytest.approx(
            base + k * FRAME / 48000 + 0.005 + (123_456 / 48000 - first), abs=1e-6
        )
    # Consecutive frames are exactly 20 ms apart once the minimum is found: no jitter passes through.
    assert np.allclose(np.diff(times[51:]), FRAME / 48000, atol=1e-9)


def test_sender_time_unwraps_32_bit_timestamps_and_forgets_old_minima() -> None:
    timing = TrackTiming(90000)
    start = (1 << 32) - 3 * 3000
    sent = []
    for k in range(6):
        timestamp = (start + k * 3000) & 0xFFFFFFFF
        timing.on_packet(timestamp, 10.0 + k / 30 + 0.02)
        value = timing.sender_time(timestamp)
        assert value is not None
        sent.append(value)
    assert np.allclose(np.diff(sent), 1 / 30, atol=1e-9), "no jump at the wrap"
    # A path that got 30 ms slower for good is followed once the old minima leave the window.
    t = 10.0
    k = 6
    while t < 10.0 + TIMING_WINDOW_SECONDS + 2:
        timestamp = (start + k * 3000) & 0xFFFFFFFF
        t = 10.0 + k / 30 + 0.05
        timing.on_packet(timestamp, t)
        value = timing.sender_time(timestamp)
        k += 1
    assert value is not None
    assert value == pytest.approx(t, abs=1e-6)  # every packet now meets the new delay: no lower minimum


def test_a_timestamp_jump_restarts_the_mapping_and_unknown_timestamps_have_none() -> None:
    timing = TrackTiming(48000)
    timing.on_packet(1000, 5.0)
    assert timing.sender_time(1000, FRAME) == pytest.approx(5.0 - FRAME / 48000)
    assert timing.sender_time(999_999) is None
    timing.on_packet(10_000_000, 5.04)  # a new source: timestamps 200 s ahead
    assert timing.sender_time(10_000_000, FRAME) == pytest.approx(5.04 - FRAME / 48000)


# -- aiortc's audio hold -----------------------------------------------------------------------------


def packet(sequence: int, timestamp: int) -> RtpPacket:
    rtp = RtpPacket(payload_type=111, sequence_number=sequence, timestamp=timestamp)
    rtp._data = b"opus"  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return rtp


def test_each_audio_packet_is_decoded_at_once_and_late_or_duplicate_ones_are_dropped() -> None:
    buffer = PassThroughAudioBuffer()
    out = [buffer.add(packet(s, s * FRAME)) for s in (65534, 65535, 0, 0, 65535, 2)]
    frames = [frame for _, frame in out]
    assert [f.timestamp if f else None for f in frames] == [
        65534 * FRAME,
        65535 * FRAME,
        0,
        None,
        None,
        2 * FRAME,
    ]
    assert all(frame is None or frame.data == b"opus" for frame in frames)
    assert not any(pli for pli, _ in out)


# -- the timed jitter buffer -------------------------------------------------------------------------


def test_timed_buffer_fills_gaps_trims_overlaps_and_plays_from_the_asked_time() -> None:
    buffer = JitterBuffer(prefill_samples=0, max_samples=9600)
    buffer.push_timed(ramp(0, FRAME), 100.0)
    buffer.push_timed(ramp(FRAME, FRAME), 100.0 + FRAME / SAMPLE_RATE + 0.0005)  # jitter: appended as is
    buffer.push_timed(ramp(3 * FRAME, FRAME), 100.0 + 3 * FRAME / SAMPLE_RATE)  # one frame lost
    assert buffer.depth == 4 * FRAME
    buffer.push_timed(ramp(3 * FRAME, FRAME), 100.0 + 3 * FRAME / SAMPLE_RATE)  # a duplicate
    assert buffer.depth == 4 * FRAME
    block = buffer.pull_at(4 * FRAME, 100.0)
    assert index_of(block, 0) == 0 and index_of(block, FRAME) == FRAME
    assert not block[:, 2 * FRAME : 3 * FRAME].any(), "the lost frame is silence"
    assert index_of(block, 3 * FRAME) == 3 * FRAME
    assert buffer.last_start_time == pytest.approx(100.0)


def test_timed_buffer_drops_late_audio_and_delays_early_audio() -> None:
    buffer = JitterBuffer(prefill_samples=0, max_samples=9600)
    buffer.push_timed(ramp(0, 4800), 50.0)
    block = buffer.pull_at(1024, 50.010)  # the block starts 10 ms after the oldest sample
    assert index_of(block, 0) == 480 and buffer.dropped_samples == 480
    assert buffer.last_start_time == pytest.approx(50.010)
    block = buffer.pull_at(1024, 50.010 + 1024 / SAMPLE_RATE - 0.008)  # 8 ms earlier than the audio
    assert not block[:, :384].any() and index_of(block, 384) == 480 + 1024
    # Within the tolerance nothing moves (no click for estimator jitter).
    head = buffer.head_time
    assert head is not None
    block = buffer.pull_at(1024, head + ALIGN_TOLERANCE_SECONDS / 2)
    assert index_of(block, 0) == 480 + 1024 + 640


def test_a_stalled_timed_buffer_plays_silence_and_resumes_in_place() -> None:
    buffer = JitterBuffer(prefill_samples=0, max_samples=9600)
    buffer.push_timed(ramp(0, 1024), 10.0)
    buffer.pull_at(1024, 10.0)
    for k in range(1, 5):  # 4 blocks with nothing sent
        assert not buffer.pull_at(1024, 10.0 + k * 1024 / SAMPLE_RATE).any()
    assert buffer.underruns == 1
    # The sender resumes where the timeline now is: its audio plays in place, not shifted.
    now = 10.0 + 5 * 1024 / SAMPLE_RATE
    buffer.push_timed(ramp(5 * 1024, 2048), now)
    block = buffer.pull_at(1024, now)
    assert index_of(block, 0) == 5 * 1024


def test_pull_at_needs_a_timed_buffer() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(0, 10).pull_at(10, 0.0)


# -- the mixer's placement ---------------------------------------------------------------------------


def audio_frame(start: int, n: int = FRAME) -> av.AudioFrame:
    """A 48 kHz fltp stereo frame of :func:`ramp` samples."""
    frame = av.AudioFrame.from_ndarray(ramp(start, n), format="fltp", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = start
    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return frame


def feed(
    mixer: AudioMixer, user: str, until: float, audio_latency: float, video_latency: float | None
) -> None:
    """Push ``user``'s audio sent from t=0 until ``until`` (arriving ``audio_latency`` after its first
    sample) and note camera frames at 30 fps arriving ``video_latency`` after they were sent."""
    for k in range(int(until * SAMPLE_RATE) // FRAME):
        sent = k * FRAME / SAMPLE_RATE
        mixer.push(user, audio_frame(k * FRAME), sender_time=sent, arrival_time=sent + audio_latency)
    if video_latency is not None:
        for n in range(int(until * 30)):
            mixer.note_video_latency(user, video_latency, n / 30 + video_latency)


def test_audio_is_placed_with_the_users_video_latency() -> None:
    mixer = AudioMixer(prefill_samples=2048)
    feed(mixer, "alice", 1.0, audio_latency=0.022, video_latency=0.060)
    presented = 0.5
    block = mixer.mix_block(4, ["alice"], presentation_time=presented)
    # The block presented at 0.5 s starts with what alice sent at 0.5 - 0.060 s.
    expected = round((presented - 0.060) * SAMPLE_RATE)
    assert abs(index_of(block, 0) - expected) <= ALIGN_TOLERANCE_SECONDS * SAMPLE_RATE
    assert mixer.av_offsets_ms()["alice"] == pytest.approx(0.0, abs=ALIGN_TOLERANCE_SECONDS * 1000)


def test_audio_that_cannot_keep_up_with_the_video_is_reported_late() -> None:
    mixer = AudioMixer()
    feed(mixer, "bob", 1.0, audio_latency=0.080, video_latency=0.030)
    mixer.mix_block(4, ["bob"], presentation_time=0.6)
    offset = mixer.av_offsets_ms()["bob"]
    assert offset == pytest.approx((0.080 + AUDIO_LATENCY_MARGIN_SECONDS - 0.030) * 1000, abs=1.0)


def test_audio_only_users_play_with_their_own_latency_and_have_no_offset() -> None:
    mixer = AudioMixer()
    feed(mixer, "carol", 1.0, audio_latency=0.021, video_latency=None)
    block = mixer.mix_block(4, ["carol"], presentation_time=0.5)
    expected = round((0.5 - 0.021 - AUDIO_LATENCY_MARGIN_SECONDS) * SAMPLE_RATE)
    assert abs(index_of(block, 0) - expected) <= ALIGN_TOLERANCE_SECONDS * SAMPLE_RATE
    assert "carol" not in mixer.av_offsets_ms()


def test_one_user_stalling_or_leaving_never_moves_another() -> None:
    mixer = AudioMixer()
    latency = 0.022
    sent = {"alice": 0, "dave": 0}  # frames pushed so far
    # (white box: the buffer tells the sender time of each block's first sample)
    starts = []
    for k in range(90):
        presented = k * BLOCK_SAMPLES / SAMPLE_RATE
        mixed_at = presented + BLOCK_SAMPLES / SAMPLE_RATE  # a block is mixed when its last sample is due
        for user in ("alice", "dave"):
            if user == "dave" and 0.4 < mixed_at < 1.0:
                continue  # dave stalls for 0.6 s, then sends what he has
            while (sent[user] + 1) * FRAME / SAMPLE_RATE + latency <= mixed_at:
                at = sent[user] * FRAME / SAMPLE_RATE
                mixer.push(user, audio_frame(sent[user] * FRAME), sender_time=at, arrival_time=at + latency)
                sent[user] += 1
        for n in range(int(mixed_at * 30) - 3, int(mixed_at * 30)):
            mixer.note_video_latency("alice", 0.050, n / 30 + 0.050)
        if k == 70:
            mixer.remove_user("dave")
        mixer.mix_block(1, ["alice", "dave"], presentation_time=presented)
        if k >= 10:
            start = mixer._users["alice"].buffer.last_start_time
            assert start is not None
            starts.append(presented - start)
    assert max(starts) - min(starts) <= 1e-9, "alice's playout latency never moved"
    assert max(starts) == pytest.approx(0.050, abs=ALIGN_TOLERANCE_SECONDS)


def test_frames_without_sender_time_keep_the_prefill() -> None:
    mixer = AudioMixer(prefill_samples=2048)
    mixer.push("erin", audio_frame(0, 1024))
    assert not mixer.mix_block(4, ["erin"], presentation_time=1.0).any()  # below the prefill
    mixer.push("erin", audio_frame(1024, 1024))
    assert index_of(mixer.mix_block(4, ["erin"], presentation_time=1.1), 0) == 0


# -- the clock -------------------------------------------------------------------------------------


def test_media_time_maps_to_the_loop_clock_only_in_real_time() -> None:
    async def scenario() -> tuple[float | None, float | None, float]:
        live, offline = MediaClock(True), MediaClock(False)
        live.start()
        offline.start()
        return live.loop_time(2.5), offline.loop_time(2.5), asyncio.get_running_loop().time()

    live, offline, now = asyncio.run(scenario())
    assert live is not None and now - 0.1 < live - 2.5 <= now
    assert offline is None
    assert MediaClock(True).loop_time(1.0) is None


# -- stats -----------------------------------------------------------------------------------------


def test_offsets_round_trip_in_the_task_stats_and_bad_ones_are_refused() -> None:
    stats = TaskStats(av_offsets_ms={"alice": 3.5, "bob": -12.0})
    assert TaskStats.from_json(stats.to_json()) == stats
    assert TaskStats.from_dict({}).av_offsets_ms == {}
    for bad in ({"alice": "3"}, {"alice": math.inf}, [1.0], {"alice": True}):
        with pytest.raises(ValueError):
            TaskStats.from_dict({"av_offsets_ms": bad})


def test_a_short_stall_of_the_audio_does_not_move_the_lip_sync_but_a_lasting_delay_does() -> None:
    mixer = AudioMixer()
    feed(mixer, "fred", 5.0, audio_latency=0.022, video_latency=0.040)
    for k in range(7):  # the process stalled for 140 ms: 7 frames arrive at once, late
        sent = 5.0 + k * FRAME / SAMPLE_RATE
        mixer.push("fred", audio_frame(250 * FRAME + k * FRAME), sender_time=sent, arrival_time=5.16 + 0.022)
    mixer.mix_block(4, ["fred"], presentation_time=5.1)
    assert abs(mixer.av_offsets_ms()["fred"]) <= ALIGN_TOLERANCE_SECONDS * 1000
    for k in range(7, 200):  # then every frame arrives 100 ms late: the audio cannot keep up
        sent = 5.0 + k * FRAME / SAMPLE_RATE
        mixer.push("fred", audio_frame(250 * FRAME + k * FRAME), sender_time=sent, arrival_time=sent + 0.1)
    for n in range(150, 270):
        mixer.note_video_latency("fred", 0.040, n / 30 + 0.040)
    mixer.mix_block(4, ["fred"], presentation_time=8.5)
    assert mixer.av_offsets_ms()["fred"] == pytest.approx(
        (0.1 + AUDIO_LATENCY_MARGIN_SECONDS - 0.040) * 1000, abs=1
    )


# -- the hooks into aiortc's receiver ---------------------------------------------------------------


class FakeReceiver:
    """What :func:`instrument_receiver` and :func:`frame_sender_time` touch on aiortc's RTCRtpReceiver."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        setattr(self, RECEIVER_JITTER_BUFFER, AiortcJitterBuffer(capacity=16, prefetch=4))
        setattr(self, RECEIVER_TIMESTAMP_MAPPER, TimestampMapper())

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.handled.append(packet.sequence_number)


def test_an_instrumented_receiver_notes_arrivals_and_decodes_audio_without_holding_it() -> None:
    receiver = FakeReceiver()

    async def scenario() -> tuple[TrackTiming, float]:
        timing = instrument_receiver(receiver, "audio")
        await receiver._handle_rtp_packet(packet(7, 48_000), 0)
        return timing, asyncio.get_running_loop().time()

    timing, after = asyncio.run(scenario())
    assert receiver.handled == [7], "aiortc's own handling still runs"
    assert isinstance(getattr(receiver, RECEIVER_JITTER_BUFFER), PassThroughAudioBuffer)
    getattr(receiver, RECEIVER_TIMESTAMP_MAPPER).map(48_000 - 960)  # the track's first frame
    frame = audio_frame(960)  # pts 960: RTP timestamp 48_000
    sent = frame_sender_time(receiver, timing, frame)
    assert sent is not None
    # arrival - its 20 ms - the Opus encoder's lookahead, within the moment the packet was handled
    assert after - 0.5 < sent + FRAME / 48000 + OPUS_LOOKAHEAD_SAMPLES / 48000 <= after
    video = av.VideoFrame(16, 16, "yuv420p")
    assert frame_sender_time(receiver, TrackTiming(90000), video) is None, "no pts"


def test_aiortc_still_has_the_receiver_internals_the_source_relies_on() -> None:
    source = inspect.getsource(RTCRtpReceiver.__init__)
    assert "self.__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)" in source
    assert "self.__timestamp_mapper = TimestampMapper()" in source
    mapper = TimestampMapper()
    mapper.map(1234)
    assert mapper._origin == 1234


# -- the pipeline: a late tick shows the picture of its own instant --------------------------------


def test_a_video_tick_shows_what_had_arrived_when_it_was_due(tmp_path: Path) -> None:
    spec = build_task_spec(layout_ids=[1], media_encode_id=52)
    pipeline = Pipeline(spec, ScriptedSource([]), sink_target(str(tmp_path / "unused.flv")), realtime=True)
    key = StreamKey("alice")
    frames = [av.VideoFrame(16, 16, "yuv420p") for _ in range(3)]

    async def scenario() -> list[av.VideoFrame | None]:
        loop = asyncio.get_running_loop()
        arrivals = []
        for frame in frames:
            pipeline.on_video_frame(key, frame)
            arrivals.append(loop.time())
            await asyncio.sleep(0.02)
        return [
            pipeline._frame_at(key, arrivals[0] - 0.01),  # before any: the oldest kept
            pipeline._frame_at(key, arrivals[1] + 0.001),  # a tick due then, run later
            pipeline._frame_at(key, loop.time()),
            pipeline._frame_at(key, None),  # no clock: the latest
        ]

    assert asyncio.run(scenario()) == [frames[0], frames[1], frames[2], frames[2]]
