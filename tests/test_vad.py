"""Voice activity: hysteresis, report cadence, ordering and the JSON carried in the SEI."""

from __future__ import annotations

import json
import math

import pytest

from rtc_mpu.mixer.audio.mixer import BLOCK_SECONDS
from rtc_mpu.mixer.audio.vad import VadReport, VoiceActivityDetector


def block_time(k: int) -> float:
    """Media time in seconds of audio block ``k``."""
    return k * BLOCK_SECONDS


def blocks_for(seconds: float) -> int:
    return math.ceil(seconds / BLOCK_SECONDS)


def feed(vad: VoiceActivityDetector, start: int, count: int, levels: dict[str, float]) -> list[VadReport]:
    """Blocks ``start .. start + count - 1`` at constant levels; the reports returned."""
    reports = []
    for k in range(start, start + count):
        report = vad.update(block_time(k), levels)
        if report is not None:
            reports.append(report)
    return reports


def test_hysteresis_start_keep_and_stop_after_hang() -> None:
    vad = VoiceActivityDetector(interval_seconds=0.1)
    k = 0
    state: list[tuple[int, bool]] = []

    def step(level: float, count: int) -> None:
        nonlocal k
        for _ in range(count):
            vad.update(block_time(k), {"a": level})
            state.append((k, "a" in vad.active_users()))
            k += 1

    step(-60.0, 10)
    assert not any(speaking for _, speaking in state)
    step(-40.0, 3)  # at the on level is not above it
    assert not state[-1][1]
    step(-39.9, 1)  # rises above -40: speaking at once
    assert state[-1][1]
    step(-45.0, blocks_for(2.0))  # between off and on: keeps speaking
    assert all(speaking for _, speaking in state[-blocks_for(2.0) :])
    # Below -50: still speaking until 0.3 s after the first block below it.
    first_below = k
    step(-55.0, blocks_for(0.3) + 2)
    speaking_at = {i: s for i, s in state}
    stop = next(i for i in range(first_below, k) if not speaking_at[i])
    assert block_time(stop) - block_time(first_below) == pytest.approx(0.3, abs=BLOCK_SECONDS)
    assert block_time(stop) - block_time(first_below) >= 0.3 - 1e-9
    assert all(speaking_at[i] for i in range(first_below, stop))
    # Quiet again but between the levels: does not start.
    step(-45.0, 20)
    assert not state[-1][1]


def test_a_dip_shorter_than_the_hang_time_keeps_speaking() -> None:
    vad = VoiceActivityDetector(interval_seconds=0.1)
    k = 0
    for level, seconds in [(-20.0, 0.5), (-70.0, 0.25), (-48.0, 0.05), (-70.0, 0.25), (-30.0, 0.1)]:
        for _ in range(blocks_for(seconds)):
            vad.update(block_time(k), {"a": level})
            assert "a" in vad.active_users(), f"stopped at {block_time(k):.3f} s"
            k += 1


def test_reports_follow_the_interval_grid_from_the_first_call() -> None:
    vad = VoiceActivityDetector(interval_seconds=1.0)
    start = 5
    reports = feed(vad, start, blocks_for(5.05), {"a": -30.0})
    t0 = block_time(start)
    assert reports[0].t == t0  # first call reports at once
    assert len(reports) == 6
    for n, report in enumerate(reports):
        # The first block at or after t0 + n seconds: no drift from the 21.3 ms block length.
        assert t0 + n - 1e-9 <= report.t < t0 + n + BLOCK_SECONDS

    fast = VoiceActivityDetector(interval_seconds=0.1)
    assert len(feed(fast, 0, blocks_for(1.0), {"a": -30.0})) == 10


def test_interval_minimum_and_parameter_checks() -> None:
    VoiceActivityDetector(interval_seconds=0.1)
    with pytest.raises(ValueError):
        VoiceActivityDetector(interval_seconds=0.05)
    with pytest.raises(ValueError):
        VoiceActivityDetector(on_db=-50.0, off_db=-40.0)
    with pytest.raises(ValueError):
        VoiceActivityDetector(hang_seconds=-1.0)


def test_time_going_backwards_restarts_the_grid() -> None:
    vad = VoiceActivityDetector(interval_seconds=1.0)
    assert vad.update(10.0, {}) is not None
    assert vad.update(10.5, {}) is None
    report = vad.update(0.0, {})
    assert report is not None and report.t == 0.0
    assert vad.update(0.5, {}) is None
    assert vad.update(1.0, {}) is not None


def test_loudest_first_speaker_and_forgotten_users() -> None:
    vad = VoiceActivityDetector(interval_seconds=0.1)
    levels = {"quiet": -60.0, "bob": -35.0, "alice": -20.0, "carol": -30.0}
    report = vad.update(0.0, levels)
    assert report is not None
    assert report.speaking == ("alice", "carol", "bob")
    assert report.speaker == "alice"
    assert report.levels == levels

    # carol gets louder than alice; bob drops between the levels and keeps speaking.
    later = {"quiet": -60.0, "bob": -45.0, "alice": -25.0, "carol": -10.0}
    reports = feed(vad, 1, blocks_for(0.2), later)
    assert reports[-1].speaking == ("carol", "alice", "bob")
    assert reports[-1].speaker == "carol"

    # alice leaves (missing from levels): forgotten, and starts silent when she returns quietly.
    without_alice = {u: v for u, v in later.items() if u != "alice"}
    reports = feed(vad, 100, blocks_for(0.2), without_alice)
    assert reports[-1].speaking == ("carol", "bob")
    assert "alice" not in reports[-1].levels
    reports = feed(vad, 200, blocks_for(0.2), {**without_alice, "alice": -45.0})
    assert reports[-1].speaking == ("carol", "bob")

    # Nobody above the off level for the hang time: nobody speaks.
    reports = feed(vad, 300, blocks_for(0.5), {"bob": -80.0, "carol": -100.0})
    assert reports[-1].speaking == ()
    assert reports[-1].speaker is None


def test_equal_levels_keep_the_mixer_order() -> None:
    vad = VoiceActivityDetector()
    report = vad.update(0.0, {"z": -20.0, "a": -20.0, "m": -10.0})
    assert report is not None
    assert report.speaking == ("m", "z", "a")


def test_json_shape() -> None:
    report = VadReport(
        t=12.3456,
        levels={"alice": -21.43, "bob": -38.06, "\u6797": -100.0, "zero": -0.04},
        speaking=("alice", "bob"),
        speaker="alice",
    )
    data = report.to_json()
    assert isinstance(data, bytes)
    assert b" " not in data  # compact
    assert "\u6797".encode() in data  # UTF-8, not \u escapes
    document = json.loads(data.decode("utf-8"))
    assert list(document) == ["ts", "speaker", "speaking", "levels"]
    assert document == {
        "ts": 12346,
        "speaker": "alice",
        "speaking": ["alice", "bob"],
        "levels": {"alice": -21.4, "bob": -38.1, "\u6797": -100.0, "zero": 0.0},
    }
    assert isinstance(document["ts"], int)
    assert b'"zero":0.0' in data

    silent = VadReport(t=0.0, levels={}, speaking=(), speaker=None)
    assert silent.to_json() == b'{"ts":0,"speaker":null,"speaking":[],"levels":{}}'


def test_bad_levels_read_as_the_floor_and_the_json_stays_valid() -> None:
    vad = VoiceActivityDetector()
    report = vad.update(0.0, {"a": float("nan"), "b": float("-inf"), "c": -300.0})
    assert report is not None
    assert report.levels == {"a": -100.0, "b": -100.0, "c": -100.0}
    assert json.loads(report.to_json())["levels"] == {"a": -100.0, "b": -100.0, "c": -100.0}
