"""The mix runner's decisions, without servers (issue 12): what a claimed task mixes, what a heartbeat
reports (status from the push and the users, the statistics), and how a run ends from the record a
heartbeat returned."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from rtc_mpu.mixer.output.push import SinkStatus
from rtc_mpu.mixer.output.sinks import SinkError
from rtc_mpu.mixer.pipeline import PipelineStats
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers.mix_runner import (
    TAKEOVER_GRACE_SECONDS,
    Heartbeat,
    MixPlan,
    Outcome,
    Supervision,
    gave_up,
    heartbeat_report,
    mix_plan,
    next_outcome,
    task_stats,
)
from rtc_mpu.workers.model import TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.settings import WorkerSettings
from rtc_mpu.workers.stats import TaskStats, VadSnapshot

URL = "rtmp://example.com/live/runner-key?auth=secret"
SETTINGS = WorkerSettings(janus_url="http://janus.invalid:8088/janus", janus_api_secret="s", capacity=1.0)
NOW = 1000.0


def record(**changes: Any) -> TaskRecord:
    base = TaskRecord("app1", "t1", TaskParams("ch1", URL, layout_ids=(1,)), stream_url_key(URL))
    return dataclasses.replace(base, **changes)


# -- what a claimed task mixes --------------------------------------------------------------------


def test_the_plan_of_a_valid_task() -> None:
    plan = mix_plan(record(spec_version=3), SETTINGS)
    assert isinstance(plan, MixPlan)
    assert plan.spec_version == 3 and not plan.restart and plan.target.url == URL
    assert (plan.channel.app_id, plan.channel.channel_id, plan.channel.api_secret) == ("app1", "ch1", "s")
    assert plan.channel.janus_url == SETTINGS.janus_url
    restarted = mix_plan(record(restarts=1), SETTINGS)
    assert isinstance(restarted, MixPlan) and restarted.restart


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (TaskParams("ch1", URL, layout_ids=(99,)), "invalid parameters: InvalidLayoutID.Malformed: "),
        (TaskParams("ch1", "http://example.com/x"), "invalid parameters: InvalidStreamURL.Malformed: "),
    ],
)
def test_invalid_parameters_end_the_task(params: TaskParams, reason: str) -> None:
    outcome = mix_plan(record(params=params), SETTINGS)
    assert isinstance(outcome, Outcome)
    assert outcome.status is TaskStatus.STOPPED and outcome.reason.startswith(reason) and outcome.ends


# -- what a heartbeat reports ---------------------------------------------------------------------


def pipeline_stats(users: list[str]) -> PipelineStats:
    return PipelineStats(
        video_frames=30,
        dropped_video_frames=1,
        audio_blocks=40,
        dropped_audio_blocks=2,
        layout_id=1 if users else None,
        layout_changes=1,
        users=users,
        mixed_audio_users=users,
        overlay_problems={"Backgrounds.1": "not an image"},
        vad={"ts": 500, "speaker": None, "speaking": [], "levels": {"alice": -100.0}},
        sei_messages=7,
    )


def test_the_statistics_come_from_the_pipeline_and_its_push() -> None:
    stats = task_stats(pipeline_stats(["alice"]), SinkStatus(connected=True, reconnects=2))
    assert stats == TaskStats(
        video_frames=30,
        dropped_video_frames=1,
        audio_blocks=40,
        dropped_audio_blocks=2,
        sink_reconnects=2,
        layout_changes=1,
        mixed_audio_users=("alice",),
        overlay_problems={"Backgrounds.1": "not an image"},
        vad=VadSnapshot(ts_ms=500, speaker=None, speaking=(), levels_dbfs={"alice": -100.0}),
        sei_messages=7,
    )
    assert task_stats(PipelineStats(), SinkStatus()).vad is None


PUSHING = SinkStatus(connected=True)
OPENING = SinkStatus()  # not connected yet, never failed
DOWN = SinkStatus(failing_since=NOW - 12, last_error="connection refused", attempts=2)
REFUSED = dataclasses.replace(DOWN, push_url_problem=True)


@pytest.mark.parametrize(
    ("users", "push", "takeover_until", "ending", "expected"),
    [
        (["alice"], PUSHING, None, None, (TaskStatus.RUNNING, TaskState.RUNNING, "pushing")),
        ([], PUSHING, None, None, (TaskStatus.WAITING, TaskState.RUNNING, "nobody here")),
        (["alice"], OPENING, None, None, (TaskStatus.RUNNING, TaskState.RUNNING, "pushing")),
        (
            ["alice"],
            DOWN,
            None,
            None,
            (TaskStatus.NETWORK_PROBLEM, TaskState.RETRYING, "push failing since 12 s"),
        ),
        (["alice"], REFUSED, None, None, (TaskStatus.PUSH_URL_PROBLEM, TaskState.RETRYING, "push failing")),
        (
            ["alice"],
            REFUSED,
            NOW + 1,
            None,
            (TaskStatus.WAITING, TaskState.STARTING, "restarting: taking over"),
        ),
        (["alice"], REFUSED, NOW, None, (TaskStatus.PUSH_URL_PROBLEM, TaskState.RETRYING, "push failing")),
        (["alice"], DOWN, NOW + 1, None, (TaskStatus.NETWORK_PROBLEM, TaskState.RETRYING, "push failing")),
        (
            ["alice"],
            PUSHING,
            None,
            "stopped by the user",
            (TaskStatus.RUNNING, TaskState.STOPPING, "stopping: "),
        ),
        (["alice"], DOWN, None, "x", (TaskStatus.NETWORK_PROBLEM, TaskState.STOPPING, "stopping: x")),
    ],
)
def test_the_status_comes_from_the_push_and_the_users(
    users: list[str],
    push: SinkStatus,
    takeover_until: float | None,
    ending: str | None,
    expected: tuple[TaskStatus, TaskState, str],
) -> None:
    beat = heartbeat_report(
        pipeline_stats(users), push, "nobody here", NOW, takeover_until=takeover_until, ending=ending
    )
    assert (beat.status, beat.state) == expected[:2]
    assert beat.reason.startswith(expected[2]), beat.reason
    assert "secret" not in beat.reason
    assert beat.users == users and beat.layout_id == (1 if users else None)
    assert beat.stats.sink_reconnects == push.reconnects and beat.stats.video_frames == 30


def test_a_heartbeat_is_plain_data() -> None:
    beat = heartbeat_report(PipelineStats(users=["a"]), PUSHING, "w", NOW)
    assert beat == Heartbeat(TaskStatus.RUNNING, TaskState.RUNNING, "pushing", None, ["a"], TaskStats())


# -- how a run ends -------------------------------------------------------------------------------

LIVE = record(fence=1, state=TaskState.RUNNING)
STOP = dataclasses.replace(LIVE, stop_requested=True)


def decide(
    current: Outcome | None, fresh: TaskRecord | None, *, draining: bool = False, empty: float = 0.0
) -> Outcome | None:
    return next_outcome(current, fresh, draining=draining, empty_seconds=empty, empty_timeout=30.0)


def test_a_live_record_goes_on() -> None:
    assert decide(None, LIVE) is None
    assert decide(None, LIVE, empty=29.9) is None


def test_no_record_means_fenced_out_whatever_was_decided() -> None:
    for current in (None, Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user")):
        outcome = decide(current, None)
        assert outcome is not None and outcome.fenced and not outcome.ends


def test_a_run_already_ending_stays_as_decided() -> None:
    current = Outcome(TaskStatus.CHANNEL_ENDED, "the channel was empty for 30 s")
    assert decide(current, STOP, draining=True, empty=99) is current


def test_a_stop_request_ends_the_task_even_while_draining() -> None:
    outcome = decide(None, STOP, draining=True, empty=99)
    assert outcome == Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user")


def test_a_draining_worker_hands_the_task_over() -> None:
    outcome = decide(None, LIVE, draining=True, empty=99)
    assert outcome is not None and outcome.handed_over and not outcome.ends


def test_an_empty_channel_ends_the_task() -> None:
    assert decide(None, LIVE, empty=30.0) == Outcome(
        TaskStatus.CHANNEL_ENDED, "the channel was empty for 30 s"
    )


def test_a_push_given_up_on_stops_the_task() -> None:
    error = SinkError("connection refused", "rtmp://example.com/live/***", push_url_problem=False)
    assert gave_up(error, NOW - 300.4, NOW) == Outcome(
        TaskStatus.STOPPED, "gave up after 300 s: connection refused (rtmp://example.com/live/***)"
    )
    assert gave_up(error, None, NOW).reason.startswith("gave up after 0 s: ")


# -- what the supervision remembers ---------------------------------------------------------------


def test_the_supervision_of_a_restart_starts_with_a_takeover() -> None:
    plan = mix_plan(record(restarts=2, spec_version=4), SETTINGS)
    assert isinstance(plan, MixPlan)
    run = Supervision.start(plan, NOW)
    assert (run.empty_since, run.takeover_until, run.spec_version, run.outcome) == (
        NOW,
        NOW + TAKEOVER_GRACE_SECONDS,
        4,
        None,
    )
    run.observe(users=False, connected=False, now=NOW + 5)
    assert (run.empty_since, run.takeover_until) == (NOW, NOW + TAKEOVER_GRACE_SECONDS)
    run.observe(users=True, connected=True, now=NOW + 6)
    assert (run.empty_since, run.takeover_until) == (NOW + 6, None)
    first = mix_plan(record(), SETTINGS)
    assert isinstance(first, MixPlan) and Supervision.start(first, NOW).takeover_until is None


def test_the_supervision_says_why_the_task_is_ending() -> None:
    plan = mix_plan(record(), SETTINGS)
    assert isinstance(plan, MixPlan)
    run = Supervision.start(plan, NOW)
    assert run.ending is None
    run.outcome = Outcome(handed_over=True)
    assert run.ending is None  # handed over: it does not end here
    run.outcome = Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user")
    assert run.ending == "stopped by the user"
