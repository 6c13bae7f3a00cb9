"""Runs one mix task to its end: claim it, mix the channel into its StreamURL, report, stop.

Celery-free (the Celery task in :mod:`rtc_mpu.workers.celery_app` only calls :meth:`MixRunner.run`), so it
can be driven by tests and tools directly. One call runs one task in this process:

1. **Claim** the task in the store, getting a fencing token. A second delivery of the same message,
   or a task whose worker is alive, gets no token and returns at once. Given a worker node, the claim
   also books the task's cost within the node's capacity; a task that does not fit is queued again
   (:meth:`MixRunner.claim`).
2. **Mix**: a :class:`rtc_mpu.mixer.sources.janus.JanusSource` for the channel feeds a
   :class:`rtc_mpu.mixer.pipeline.Pipeline` pushing to the StreamURL in real time.
3. **Supervise**, every ``heartbeat_interval`` seconds: heartbeat with the status (0 while the channel
   has nobody, 1 while pushing users), layout, users and output statistics; this renews the URL
   lease. A heartbeat refused (another worker holds a newer token) stops the push at once: the URL is
   never pushed twice. A stop request ends the task (status 3); a new ``spec_version`` is applied at
   the next frame; a channel empty for ``empty_timeout`` seconds ends it (status 4). From the moment
   the task is ending until the push has ended, it reports state ``stopping`` (the store keeps a
   stop-requested task ``stopping`` whatever a heartbeat says).
4. **Push failures** (the RTMP server refuses or drops us, or restarts) are handled inside the
   pipeline, which reconnects with exponential backoff and jitter while the channel subscription and
   the media clock go on (see :mod:`rtc_mpu.mixer.pipeline`). Each heartbeat reads
   ``pipeline.push_status``: status 6 (push URL refused) or 5 (network) with state ``retrying`` while
   it fails, 1 (or 0) again once pushing; after ``give_up_after`` seconds of failing, the task stops
   (status 2) with the reason.
   A task taken over from another worker (a restart) whose first pushes are refused shows status 0,
   state ``starting`` and a reason saying it is being taken over, not 6, for up to
   :data:`TAKEOVER_GRACE_SECONDS`: the server may still hold the previous worker's connection.
5. **Finish**: release the leases, set the URL cooldowns, final status and reason.

Several outputs (issue 13): the task's outputs (``params.outputs``) are built by
:class:`rtc_mpu.workers.outputs.TaskOutputs`. The first RTMP output is the pipeline's main output
(what steps 3 and 4 call the push: its failures decide the status); every other output is added to
the pipeline, reconnects on its own and only ever fails itself; each heartbeat reports every output's
:class:`~rtc_mpu.workers.stats.OutputStats`. Outputs added or removed on a running task (a new
``spec_version``) are applied at the next heartbeat; a change of the main output rebuilds the
pipeline. Before mixing, recordings a dead worker left without a sidecar get one
(:func:`rtc_mpu.workers.outputs.repair_sidecars`). A pipeline stopped while the task goes on (handed
over, fenced out, rebuilt) leaves its HLS playlists open for the next run
(:attr:`~rtc_mpu.workers.outputs.TaskOutputs.task_continues`); a task that ends with
``hls_retention_seconds`` 0 has its HLS folder removed at once (else the reconciler's sweep does it
later).

Each decision is a small function without I/O, tested without servers: what a claimed task mixes
(:func:`mix_plan`), what a heartbeat reports (:func:`heartbeat_report`: status from the push and the
users, :func:`task_stats`), how the run ends from the record a heartbeat returned
(:func:`next_outcome`), and a push given up on (:func:`gave_up`); :class:`MixRunner` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from rtc_mpu.layouts import SpecError
from rtc_mpu.logs import logging_task
from rtc_mpu.mixer.output.push import SinkStatus
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget, sink_target
from rtc_mpu.mixer.pipeline import Pipeline, PipelineStats
from rtc_mpu.mixer.sources.janus import ChannelConfig, ChannelStatus, JanusSource
from rtc_mpu.spec.outputs import OutputSpec
from rtc_mpu.spec.storage import task_folder
from rtc_mpu.spec.task import TaskSpec
from rtc_mpu.spec.urls import redact_url
from rtc_mpu.workers.capacity import params_cost, requeue_delay
from rtc_mpu.workers.ingest_store import IngestStore
from rtc_mpu.workers.model import ClaimResult, TaskNotFoundError, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.outputs import (
    NULL_SINK,
    TaskOutputs,
    main_output,
    needs_rebuild,
    remove_hls,
    repair_sidecars,
    video_profile,
)
from rtc_mpu.workers.settings import WorkerSettings
from rtc_mpu.workers.stats import OutputStats, TaskStats, VadSnapshot
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

log = logging.getLogger(__name__)

#: Seconds after a takeover (a restart on this worker) during which the RTMP server refusing the push
#: is shown as the takeover going on (status 0) rather than a push URL problem (status 6): a server
#: keeps the previous worker's connection, and refuses a second publisher of the stream, until it
#: notices that connection is gone (at once for a closed socket, up to its timeout for a lost host).
TAKEOVER_GRACE_SECONDS = 60.0


#: ``(app_id, task_id, countdown_seconds) -> None``: queue a task again, to be delivered after the countdown.
Requeue = Callable[[str, str, float], None]


@dataclass
class Outcome:
    """How a run ended: the final status and reason, or ``fenced`` (another worker took over)."""

    status: TaskStatus = TaskStatus.STOPPED
    reason: str = "stopped"
    fenced: bool = False
    #: The worker is shutting down and gave the task back (it resumes on another worker).
    handed_over: bool = False

    @property
    def ends(self) -> bool:
        """The task ends here (neither fenced out nor handed over): it is *stopping* meanwhile."""
        return not (self.fenced or self.handed_over)


@dataclass(frozen=True)
class MixPlan:
    """What a claimed task mixes, validated (:func:`mix_plan`).

    Attributes:
        spec: the mixer's task, from the parameters of ``spec_version``.
        target: the main output (the first RTMP output), validated;
            :data:`~rtc_mpu.workers.outputs.NULL_SINK` for a task without an RTMP output.
        channel: the channel to subscribe to.
        spec_version: the version of the parameters ``spec`` was made from.
        restart: the task had been claimed by another worker before (a takeover).
        outputs: every output of the task, in order (the main one included).
    """

    spec: TaskSpec
    target: SinkTarget
    channel: ChannelConfig
    spec_version: int
    restart: bool
    outputs: tuple[OutputSpec, ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    """What one heartbeat reports (:meth:`rtc_mpu.workers.store.TaskStore.heartbeat`).

    Attributes:
        status, state, reason: from :func:`push_report`.
        layout_id: the layout in use (None before the first frame, or audio only).
        users: the channel's users, in join order.
        stats: the output statistics so far.
    """

    status: TaskStatus
    state: TaskState
    reason: str
    layout_id: int | None
    users: list[str]
    stats: TaskStats


@dataclass
class Supervision:
    """What the supervision of one run remembers from one heartbeat to the next.

    Attributes:
        empty_since: ``time.monotonic()`` seconds since when the channel has had nobody to mix.
        takeover_until: for a task taken over from another worker that has not pushed yet, the
            monotonic time until which a refused push is shown as the takeover (:func:`push_report`);
            None otherwise.
        spec_version: the version of the parameters the pipeline runs.
        outcome: how the run ends, once decided (:func:`next_outcome`); None while it goes on.
        replan: the main output changed: the pipeline stops and a new one is made from the latest
            record.
    """

    empty_since: float
    takeover_until: float | None
    spec_version: int
    outcome: Outcome | None = None
    replan: bool = False

    @classmethod
    def start(cls, plan: MixPlan, now: float) -> Supervision:
        """The state when the mix starts at monotonic time ``now`` (seconds): the channel counts as
        empty from now; a restart gets :data:`TAKEOVER_GRACE_SECONDS` of takeover."""
        takeover_until = now + TAKEOVER_GRACE_SECONDS if plan.restart else None
        return cls(empty_since=now, takeover_until=takeover_until, spec_version=plan.spec_version)

    def observe(self, users: bool, connected: bool, now: float) -> None:
        """Note what a heartbeat at monotonic time ``now`` sees: somebody to mix (``users``) restarts
        the empty-channel timer; a connected push ends the takeover."""
        if users:
            self.empty_since = now
        if connected:
            self.takeover_until = None

    @property
    def ending(self) -> str | None:
        """Why the task is ending, once it is (it ends here: neither fenced out nor handed over);
        None while it runs."""
        return self.outcome.reason if self.outcome is not None and self.outcome.ends else None


def waiting_reason(source: JanusSource) -> str:
    """Why a task has nobody to mix: the channel is empty, does not exist yet, or Janus fails."""
    if source.status is ChannelStatus.JOINED:
        return "waiting for the channel to have a publisher"
    detail = f": {source.last_error}" if source.last_error else ""
    return f"waiting for the channel ({source.status.value}{detail})"


def push_failing_reason(sink: SinkStatus, now: float) -> str:
    """The status reason while the push fails: since when, the (redacted) error, the attempt number.

    Args:
        sink: the pipeline's sink state (not connected).
        now: ``time.monotonic()`` seconds.
    """
    since = now - sink.failing_since if sink.failing_since is not None else 0.0
    return (
        f"push failing since {since:.0f} s: {sink.last_error or 'not connected yet'}; "
        f"reconnecting (attempt {sink.attempts + 1})"
    )


def takeover_reason(sink: SinkStatus) -> str:
    """The status reason while a taken-over task's pushes are refused (see :func:`push_report`)."""
    return (
        "restarting: taking over from the previous worker; the RTMP server still refuses the push "
        f"(it may still hold the previous connection): {sink.last_error or 'not connected yet'}; "
        f"retrying (attempt {sink.attempts + 1})"
    )


def push_report(
    sink: SinkStatus,
    users: bool,
    waiting: str,
    now: float,
    *,
    takeover_until: float | None = None,
    ending: str | None = None,
) -> tuple[TaskStatus, TaskState, str]:
    """The (status, state, reason) a heartbeat reports.

    Args:
        sink: the pipeline's sink state.
        users: the mix has somebody to show.
        waiting: the reason while nobody is there (:func:`waiting_reason`).
        now: ``time.monotonic()`` seconds.
        takeover_until: for a task taken over from another worker that has not pushed yet, the
            monotonic time until which a refused push is shown as the takeover (status 0, state
            ``starting``); None otherwise.
        ending: why the task is ending, once it is (state ``stopping`` with that reason, the status
            as the push is); None while it runs.
    """
    if sink.connected or sink.last_error is None:  # pushing, or still opening the first time
        status = TaskStatus.RUNNING if users else TaskStatus.WAITING
        state, reason = TaskState.RUNNING, "pushing" if users else waiting
    elif sink.push_url_problem and takeover_until is not None and now < takeover_until:
        status, state, reason = TaskStatus.WAITING, TaskState.STARTING, takeover_reason(sink)
    else:
        status = TaskStatus.PUSH_URL_PROBLEM if sink.push_url_problem else TaskStatus.NETWORK_PROBLEM
        state, reason = TaskState.RETRYING, push_failing_reason(sink, now)
    if ending is not None:
        return status, TaskState.STOPPING, f"stopping: {ending}"
    return status, state, reason


def task_stats(stats: PipelineStats, push: SinkStatus, outputs: tuple[OutputStats, ...] = ()) -> TaskStats:
    """The statistics a heartbeat reports, from the pipeline's and its main output's (``push``), with
    each output's own (``outputs``, :meth:`rtc_mpu.workers.outputs.TaskOutputs.stats`).

    Raises:
        ValueError: ``stats.vad`` is not a voice-activity report
            (:meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`, parsed).
    """
    return TaskStats(
        video_frames=stats.video_frames,
        dropped_video_frames=stats.dropped_video_frames,
        audio_blocks=stats.audio_blocks,
        dropped_audio_blocks=stats.dropped_audio_blocks,
        sink_reconnects=push.reconnects,
        layout_changes=stats.layout_changes,
        mixed_audio_users=tuple(stats.mixed_audio_users),
        overlay_problems=dict(stats.overlay_problems),
        vad=None if stats.vad is None else VadSnapshot.from_dict(stats.vad),
        sei_messages=stats.sei_messages,
        outputs=outputs,
        av_offsets_ms=dict(stats.av_offsets_ms),
    )


def heartbeat_report(
    stats: PipelineStats,
    push: SinkStatus,
    waiting: str,
    now: float,
    *,
    takeover_until: float | None = None,
    ending: str | None = None,
    outputs: tuple[OutputStats, ...] = (),
) -> Heartbeat:
    """What a heartbeat reports: the status from the push and the users (:func:`push_report`, whose
    arguments these are), the layout, the users and the statistics (:func:`task_stats`, with each
    output's ``outputs``).

    Raises:
        ValueError: as :func:`task_stats`.
    """
    status, state, reason = push_report(
        push, bool(stats.users), waiting, now, takeover_until=takeover_until, ending=ending
    )
    return Heartbeat(
        status, state, reason, stats.layout_id, list(stats.users), task_stats(stats, push, outputs)
    )


def next_outcome(
    current: Outcome | None,
    fresh: TaskRecord | None,
    *,
    draining: bool,
    empty_seconds: float,
    empty_timeout: float,
) -> Outcome | None:
    """How the run ends, from the record a heartbeat returned: ``current`` when nothing changes
    (the same object), a new :class:`Outcome` when the run must end now, None while it goes on.

    In this order: no record (fenced out, or the lease may have expired) ends the push at once,
    whatever was decided before; a run already ending stays so; a stop request ends the task
    (status 3; before ``draining``: a stopped task is not handed over); a worker shutting down hands
    it over; a channel empty for ``empty_timeout`` seconds ends it (status 4).

    Args:
        current: what was decided before (None: nothing yet).
        fresh: the record the heartbeat returned (None: this worker must stop pushing).
        draining: this worker is shutting down.
        empty_seconds: how long the channel has had nobody to mix, in seconds.
        empty_timeout: after how many seconds an empty channel ends the task.
    """
    if fresh is None:
        return Outcome(fenced=True)
    if current is not None:
        return current
    if fresh.stop_requested:
        return Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user")
    if draining:
        return Outcome(handed_over=True)
    if empty_seconds >= empty_timeout:
        return Outcome(TaskStatus.CHANNEL_ENDED, f"the channel was empty for {empty_timeout:g} s")
    return None


def gave_up(error: SinkError, failing_since: float | None, now: float) -> Outcome:
    """The outcome of a push the pipeline stopped retrying (``give_up_after``): status 2, for how long
    it failed (``failing_since`` and ``now`` in ``time.monotonic()`` seconds) and why."""
    failed_for = now - failing_since if failing_since is not None else 0.0
    return Outcome(TaskStatus.STOPPED, f"gave up after {failed_for:.0f} s: {error}")


def mix_plan(record: TaskRecord, settings: WorkerSettings) -> MixPlan | Outcome:
    """What a claimed task mixes, or, when its parameters or its outputs do not validate, the
    outcome that ends it (status 2, "invalid parameters: <code>: <message>"). The main output is the
    first RTMP output (:func:`rtc_mpu.workers.outputs.main_output`)."""
    try:
        spec = record.params.to_spec(settings.clock_time_zone)
        outputs = tuple(record.params.output_specs())
        main = main_output(outputs)
        target = sink_target(main.url) if main is not None else NULL_SINK
    except SpecError as exc:
        return Outcome(TaskStatus.STOPPED, f"invalid parameters: {exc.code}: {exc.message}")
    channel = ChannelConfig(
        settings.janus_url,
        record.app_id,
        record.params.channel_id,
        api_secret=settings.janus_api_secret,
        token_secret=settings.token_secret,
        token_signature=settings.token_signature,
    )
    return MixPlan(spec, target, channel, record.spec_version, restart=record.restarts > 0, outputs=outputs)


class MixRunner:
    """Runs one task (see the module docstring).

    Args:
        store: the task store.
        app_id, task_id: the task.
        worker: this worker's name for the record.
        settings: timings, where Janus is, and the node's capacity (``settings.capacity``, units).
        node: the worker node this process belongs to (Celery's node name): the claim then checks
            and takes ``settings.capacity`` of that node. None: no capacity accounting (tools, tests).
        requeue: with ``node``, how a task that does not fit is queued again (``(app_id, task_id,
            countdown seconds)``); None: it is not (the reconciler rescues it later).
        draining: tells whether this worker is shutting down (SIGTERM): the runner then hands the
            task over (stops pushing, :meth:`rtc_mpu.workers.store.TaskStore.release`, queues it again
            through ``requeue`` at once) instead of ending it; None: never.
    """

    def __init__(
        self,
        store: TaskStoreProtocol,
        app_id: str,
        task_id: str,
        worker: str,
        settings: WorkerSettings,
        *,
        node: str | None = None,
        requeue: Requeue | None = None,
        draining: Callable[[], bool] | None = None,
    ):
        self.store = store
        self.app_id = app_id
        self.task_id = task_id
        self.worker = worker
        self.settings = settings
        self.node = node
        self.requeue = requeue
        self.draining = draining or (lambda: False)
        #: The last claim refused the task for lack of capacity (and it was queued again if it could).
        self.no_capacity = False
        self.token: int | None = None
        self._last: TaskRecord | None = None
        #: When the lease was last renewed (monotonic seconds); the claim renews it.
        self._renewed_at = time.monotonic()
        #: The store stayed unreachable until the lease may have expired: the push was stopped.
        self.lease_lost = False

    def run(self) -> Outcome | None:
        """Claim and run the task to its end (blocking). None when the task could not be claimed:
        running elsewhere, stopped or ended, or (with a node) it does not fit the node's capacity,
        in which case ``no_capacity`` is set and it was queued again (see :meth:`claim`).

        Raises:
            StoreUnavailableError: the store failed before the task was claimed.
        """
        token = self.claim()
        if token is None:
            log.info(
                "task %s/%s is not claimable (running elsewhere, stopped or ended)", self.app_id, self.task_id
            )
            return None
        self.token = token
        try:
            with logging_task(self.app_id, self.task_id):  # JSON logs name the task on every record
                return asyncio.run(self._run(token))
        except Exception as exc:  # a bug or an unexpected failure: end the task truthfully
            log.exception("task %s/%s failed", self.app_id, self.task_id)
            reason = f"internal error: {exc.__class__.__name__}"
            self.store.finish(self.app_id, self.task_id, token, TaskStatus.STOPPED, reason)
            return Outcome(TaskStatus.STOPPED, reason)

    def claim(self) -> int | None:
        """Claim the task; its fencing token, or None.

        Without a node: :meth:`rtc_mpu.workers.store.TaskStore.claim`. With one: the task's cost
        (:func:`rtc_mpu.workers.capacity.params_cost` of its stored parameters) is claimed within the node's
        capacity in one atomic step (:meth:`rtc_mpu.workers.store.TaskStore.claim_on`). A never-claimed task
        that does not fit keeps state QUEUED with the reason "queued: no worker has capacity for it
        (cost X.X units)" and is handed to ``requeue`` with a countdown of about 2 s (jittered), so
        another node, or this one later, takes it; a failing ``requeue`` is logged, and the
        reconciler rescues the task once its record has been idle for a while
        (:meth:`rtc_mpu.workers.store.TaskStore.rescue_queued`). A restart (its worker died) that does not
        fit is left to the reconciler, which re-enqueues stale tasks at every pass. Either way the
        claim's fencing token decides who runs it: a task never runs twice.

        Raises:
            StoreUnavailableError: the store failed.
        """
        self.no_capacity = False
        if self.node is None:
            return self.store.claim(self.app_id, self.task_id, self.worker)
        try:
            record = self.store.get_task(self.app_id, self.task_id)
        except TaskNotFoundError:
            return None
        if not record.active:
            return None
        cost = params_cost(record.params)
        capacity = self.settings.capacity if self.settings.capacity > 0 else None
        claim = self.store.claim_on(
            self.app_id, self.task_id, self.worker, node=self.node, cost=cost, capacity=capacity
        )
        if claim.result is not ClaimResult.NO_CAPACITY:
            return claim.token
        self.no_capacity = True
        name = f"{self.app_id}/{self.task_id}"
        if claim.restart or self.requeue is None:
            log.info("task %s (cost %.2f) does not fit node %s; reconciler retries", name, cost, self.node)
            return None
        delay = requeue_delay()
        log.info(
            "task %s (cost %.2f) does not fit node %s (load %.2f of %.2f); queued again in %.1f s",
            name,
            cost,
            self.node,
            claim.load,
            self.settings.capacity,
            delay,
        )
        try:
            self.requeue(self.app_id, self.task_id, delay)
        except Exception as exc:  # the broker is down: the reconciler rescues the idle task later
            log.error("task %s: cannot queue it again (%s); the reconciler will", name, exc)
        return None

    async def _beat_off_loop(self, token: int, beat: Heartbeat) -> TaskRecord | None:
        """:meth:`_beat` in a thread: a store that hangs (Redis paused, a network partition) must not
        stall the event loop that receives the channel's media and runs the media clock."""
        return await asyncio.to_thread(self._beat, token, beat)

    def _beat(self, token: int, beat: Heartbeat) -> TaskRecord | None:
        """Heartbeat; the fresh record, or None when this worker must stop pushing: fenced out by a
        newer claim, or unable to renew its lease for so long that it may have expired (the store is
        unreachable for ``lease_seconds`` minus two heartbeats: after that another worker could take
        the task over, and the URL must never be pushed twice). A shorter store outage is ridden out:
        the mix goes on and the next heartbeat catches up."""
        try:
            fresh = self.store.heartbeat(
                self.app_id,
                self.task_id,
                token,
                status=beat.status,
                state=beat.state,
                reason=beat.reason,
                layout_id=beat.layout_id,
                users=beat.users,
                stats=beat.stats,
                capacity=self.settings.capacity if self.node is not None else None,
            )
        except Exception as exc:  # the store is down: keep mixing, try again at the next beat
            silent = time.monotonic() - self._renewed_at
            if silent >= self.settings.lease_seconds - 2 * self.settings.heartbeat_interval:
                log.error("lease not renewed for %.1f s (%s); stopping the push", silent, exc)
                self.lease_lost = True
                return None
            log.warning("heartbeat failed (%s); the mix goes on", exc)
            return self._last
        if fresh is not None:
            self._renewed_at = time.monotonic()
        return fresh

    def _hand_over(self, token: int) -> None:
        """Give the task back (the push has stopped) and queue it again for another worker."""
        reason = f"handed over: worker {self.worker} is shutting down; resuming on another worker"
        try:
            released = self.store.release(self.app_id, self.task_id, token, reason)
        except Exception as exc:  # the store is down: the lease expires and the reconciler restarts it
            log.error("task %s/%s: cannot hand over (%s); it restarts later", self.app_id, self.task_id, exc)
            return
        if released is not None and released.active and self.requeue is not None:
            try:
                self.requeue(self.app_id, self.task_id, 0.0)
            except Exception as exc:  # the reconciler finds it (heartbeat 0 = stale) within seconds
                log.error("task %s/%s: cannot queue it again (%s)", self.app_id, self.task_id, exc)

    async def _run(self, token: int) -> Outcome:
        """Mix the claimed task until it ends, then end it in the store (or hand it over); how it
        ended.

        Raises:
            StoreUnavailableError: the store failed reading the task or ending it.
        """
        record = self.store.get_task(self.app_id, self.task_id)
        self._last = record
        plan = mix_plan(record, self.settings)
        if isinstance(plan, Outcome):
            self.store.finish(self.app_id, self.task_id, token, plan.status, plan.reason)
            return plan
        log.info(
            "task %s/%s: mixing %s into %s",
            self.app_id,
            self.task_id,
            plan.channel.room,
            redact_url(plan.target.url),
        )
        await asyncio.to_thread(self._repair_recordings)
        run = Supervision.start(plan, time.monotonic())
        outcome = run.outcome
        while outcome is None:
            await self._mix(token, plan, run)
            outcome = run.outcome
            if outcome is None and run.replan and self._last is not None:
                replanned = mix_plan(self._last, self.settings)
                if isinstance(replanned, Outcome):
                    outcome = replanned
                else:
                    plan, run.replan, run.spec_version = replanned, False, replanned.spec_version
                    log.info("task %s/%s: main output changed; pipeline rebuilt", self.app_id, self.task_id)
        return await self._end(token, outcome)

    def _repair_recordings(self) -> None:
        """Sidecars for the recordings a previous worker of this task left without one (it died)."""
        try:
            repair_sidecars(task_folder(self.settings.recordings_dir, self.app_id, self.task_id))
        except Exception:  # never keeps the task from running
            log.exception("task %s/%s: checking earlier recordings failed", self.app_id, self.task_id)

    async def _mix(self, token: int, plan: MixPlan, run: Supervision) -> None:
        """One pipeline from the channel to the StreamURL, supervised every ``heartbeat_interval``
        seconds (:meth:`_supervise`) until it has ended; a push the pipeline gave up on decides the
        outcome if nothing else did. A pipeline that ends without an outcome is started again by
        :meth:`_run` (with the parameters the run started with)."""
        source = JanusSource(plan.channel)
        outputs = TaskOutputs(
            plan.outputs,
            self.app_id,
            self.task_id,
            self.store,
            self.settings.recordings_dir,
            self.settings.hls_dir,
            retry_initial=self.settings.retry_initial,
            retry_max=self.settings.retry_max,
            channel=plan.channel,
            token=token,
        )
        pipeline = Pipeline(
            plan.spec,
            source,
            plan.target,
            realtime=True,
            image_limits=self.settings.image_limits(),
            retry_initial=self.settings.retry_initial,
            retry_max=self.settings.retry_max,
            give_up_after=self.settings.give_up_after,
            muxer_factory=outputs.main_muxer_factory,
            frame_listeners=[outputs.slot],
            video_profile=video_profile(plan.outputs),
            encoder_threads=self.settings.encoder_threads,
        )
        await outputs.start(pipeline)
        mix = asyncio.create_task(pipeline.run())
        try:
            while not mix.done():
                await asyncio.wait({mix}, timeout=self.settings.heartbeat_interval)
                await self._supervise(token, source, pipeline, outputs, run)
            try:
                await mix
            except SinkError as exc:  # the pipeline gave up reconnecting (give_up_after)
                if run.outcome is None:
                    run.outcome = gave_up(exc, pipeline.push_status.failing_since, time.monotonic())
        finally:
            await outputs.close()

    async def _supervise(
        self, token: int, source: JanusSource, pipeline: Pipeline, outputs: TaskOutputs, run: Supervision
    ) -> None:
        """One heartbeat (:func:`heartbeat_report`, with every output's statistics), then what its
        record asks for (:func:`next_outcome`): stop the pipeline when the run must end, or apply a
        new ``spec_version`` (layout, and outputs added or removed)."""
        stats, push, now = pipeline.stats, pipeline.push_status, time.monotonic()
        run.observe(bool(stats.users), push.connected, now)
        beat = heartbeat_report(
            stats,
            push,
            waiting_reason(source),
            now,
            takeover_until=run.takeover_until,
            ending=run.ending,
            outputs=outputs.stats(pipeline),
        )
        fresh = await self._beat_off_loop(token, beat)
        if pipeline.spec.sei:
            await self._ingests_for_sei(source, pipeline)
        outcome = next_outcome(
            run.outcome,
            fresh,
            draining=self.draining(),
            empty_seconds=now - run.empty_since,
            empty_timeout=self.settings.empty_timeout,
        )
        if outcome is not run.outcome:
            if outcome is not None and outcome.fenced:
                why = "its lease may have expired" if self.lease_lost else "fenced out by a newer claim"
                log.warning("task %s/%s: %s; stopping the push", self.app_id, self.task_id, why)
            elif outcome is not None and outcome.handed_over:
                log.warning("task %s/%s: this worker shuts down; handing over", self.app_id, self.task_id)
            run.outcome = outcome
            outputs.task_continues = outcome is not None and not outcome.ends
            pipeline.stop()
        elif outcome is None and fresh is not None and fresh.spec_version != run.spec_version:
            self._last = fresh
            await self._update(pipeline, outputs, fresh, run)
        self._last = fresh

    async def _ingests_for_sei(self, source: JanusSource, pipeline: Pipeline) -> None:
        """Put the progress of the channel's ingests into the SEI's envelope (``"ingest"``, issue 19),
        read off the event loop; a store that fails leaves the last one (and logs)."""
        client, prefix = getattr(self.store, "client", None), getattr(self.store, "prefix", None)
        if client is None or prefix is None:
            return
        channel = source.config.channel_id
        try:
            progress = await asyncio.to_thread(
                IngestStore(client, prefix).channel_progress, self.app_id, channel
            )
        except Exception as exc:  # Redis hiccup: the next heartbeat tries again
            log.debug("task %s/%s: ingests not read for the SEI: %s", self.app_id, self.task_id, exc)
            return
        if progress:
            pipeline.sei_fields["ingest"] = progress
        else:
            pipeline.sei_fields.pop("ingest", None)

    async def _update(
        self, pipeline: Pipeline, outputs: TaskOutputs, fresh: TaskRecord, run: Supervision
    ) -> None:
        """Apply the parameters of ``fresh`` (a new ``spec_version``): the layout at the pipeline's next
        frame, outputs added and removed now (a new main output rebuilds the pipeline: ``run.replan``);
        a version that does not validate is logged and skipped."""
        run.spec_version = fresh.spec_version
        try:
            wanted = fresh.params.output_specs()
            pipeline.update_spec(fresh.params.to_spec(self.settings.clock_time_zone))
        except (SpecError, ValueError) as exc:
            log.warning("task %s/%s: update refused: %s", self.app_id, self.task_id, exc)
            return
        log.info("task %s/%s: parameters updated (version %d)", self.app_id, self.task_id, fresh.spec_version)
        if needs_rebuild(outputs.main, wanted, pipeline.settings.profile):
            run.replan = True
            outputs.task_continues = True
            pipeline.stop()
            return
        await outputs.apply(pipeline, wanted)

    async def _end(self, token: int, outcome: Outcome) -> Outcome:
        """End the task as ``outcome`` says: hand it over, or finish it (nothing when fenced out); a task
        this worker ended has its HLS folder removed at once when ``hls_retention_seconds`` is 0.

        Raises:
            StoreUnavailableError: the store failed finishing it.
        """
        if outcome.handed_over:
            await asyncio.to_thread(self._hand_over, token)
        elif not outcome.fenced:
            ended = self.store.finish(self.app_id, self.task_id, token, outcome.status, outcome.reason)
            if ended is not None and self.settings.hls_retention_seconds == 0:
                await asyncio.to_thread(remove_hls, self.settings.hls_dir, self.app_id, self.task_id)
        log.info("task %s/%s ended: %s (%s)", self.app_id, self.task_id, outcome.status.name, outcome.reason)
        return outcome
