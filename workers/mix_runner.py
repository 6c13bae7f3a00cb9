"""Runs one mix task to its end: claim it, mix the channel into its StreamURL, report, stop.

Celery-free (the Celery task in :mod:`workers.celery_app` only calls :meth:`MixRunner.run`), so it
can be driven by tests and tools directly. One call runs one task in this process:

1. **Claim** the task in the store, getting a fencing token. A second delivery of the same message,
   or a task whose worker is alive, gets no token and returns at once.
2. **Mix**: a :class:`mixer.janus_source.JanusSource` for the channel feeds a
   :class:`mixer.pipeline.Pipeline` pushing to the StreamURL in real time.
3. **Supervise**, every ``heartbeat_interval`` seconds: heartbeat with the status (0 while the channel
   has nobody, 1 while pushing users), layout, users and output statistics; this renews the URL
   lease. A heartbeat refused (another worker holds a newer token) stops the push at once: the URL is
   never pushed twice. A stop request ends the task (status 3); a new ``spec_version`` is applied at
   the next frame; a channel empty for ``empty_timeout`` seconds ends it (status 4).
4. **Push failures** (the RTMP server refuses or drops us) are retried with exponential backoff and
   jitter, status 6 (push URL refused) or 5 (network) meanwhile; after ``give_up_after`` seconds of
   failing, the task stops (status 2) with the reason.
5. **Finish**: release the lease, set the URL cooldown, final status and reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from layouts import SpecError
from mixer.janus_source import ChannelConfig, ChannelStatus, JanusSource
from mixer.pipeline import Pipeline
from mixer.sinks import SinkError, sink_target
from mixer.urls import redact_url
from workers.model import TaskRecord, TaskState, TaskStatus
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)


class MixStore(Protocol):
    """The parts of :class:`workers.store.TaskStore` a runner uses."""

    def claim(self, app_id: str, task_id: str, worker: str) -> int | None: ...

    def get_task(self, app_id: str, task_id: str) -> TaskRecord: ...

    def heartbeat(
        self,
        app_id: str,
        task_id: str,
        token: int,
        *,
        status: TaskStatus | None = None,
        state: TaskState | None = None,
        reason: str | None = None,
        layout_id: int | None = None,
        users: list[str] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> TaskRecord | None: ...

    def finish(
        self, app_id: str, task_id: str, token: int | None, status: TaskStatus, reason: str
    ) -> TaskRecord | None: ...


@dataclass
class Outcome:
    """How a run ended: the final status and reason, or ``fenced`` (another worker took over)."""

    status: TaskStatus = TaskStatus.STOPPED
    reason: str = "stopped"
    fenced: bool = False


def waiting_reason(source: JanusSource) -> str:
    """Why a task has nobody to mix: the channel is empty, does not exist yet, or Janus fails."""
    if source.status is ChannelStatus.JOINED:
        return "waiting for the channel to have a publisher"
    detail = f": {source.last_error}" if source.last_error else ""
    return f"waiting for the channel ({source.status.value}{detail})"


class MixRunner:
    """Runs one task (see the module docstring).

    Args:
        store: the task store.
        app_id, task_id: the task.
        worker: this worker's name for the record.
        settings: timings and where Janus is.
    """

    def __init__(self, store: MixStore, app_id: str, task_id: str, worker: str, settings: WorkerSettings):
        self.store = store
        self.app_id = app_id
        self.task_id = task_id
        self.worker = worker
        self.settings = settings
        self.token: int | None = None
        self._last: TaskRecord | None = None

    def run(self) -> Outcome | None:
        """Claim and run the task to its end (blocking). None when the task could not be claimed.

        Raises:
            StoreUnavailableError: the store failed before the task was claimed.
        """
        token = self.store.claim(self.app_id, self.task_id, self.worker)
        if token is None:
            log.info(
                "task %s/%s is not claimable (running elsewhere, stopped or ended)", self.app_id, self.task_id
            )
            return None
        self.token = token
        try:
            return asyncio.run(self._run(token))
        except Exception as exc:  # a bug or an unexpected failure: end the task truthfully
            log.exception("task %s/%s failed", self.app_id, self.task_id)
            reason = f"internal error: {exc.__class__.__name__}"
            self.store.finish(self.app_id, self.task_id, token, TaskStatus.STOPPED, reason)
            return Outcome(TaskStatus.STOPPED, reason)

    def _beat(self, token: int, **fields: Any) -> TaskRecord | None:
        try:
            return self.store.heartbeat(self.app_id, self.task_id, token, **fields)
        except Exception as exc:  # the store is down: keep mixing, try again at the next beat
            log.warning("heartbeat failed (%s); the mix goes on", exc)
            return self._last

    async def _run(self, token: int) -> Outcome:
        record = self.store.get_task(self.app_id, self.task_id)
        self._last = record
        try:
            spec = record.params.to_spec(self.settings.clock_time_zone)
            target = sink_target(record.params.stream_url)
        except SpecError as exc:
            invalid = Outcome(TaskStatus.STOPPED, f"invalid parameters: {exc.code}: {exc.message}")
            self.store.finish(self.app_id, self.task_id, token, invalid.status, invalid.reason)
            return invalid
        version = record.spec_version
        channel = ChannelConfig(
            self.settings.janus_url,
            self.app_id,
            record.params.channel_id,
            api_secret=self.settings.janus_api_secret,
        )
        failing_since: float | None = None
        backoff = self.settings.retry_initial
        empty_since = time.monotonic()
        outcome: Outcome | None = None
        log.info(
            "task %s/%s: mixing %s into %s", self.app_id, self.task_id, channel.room, redact_url(target.url)
        )
        while outcome is None:
            source = JanusSource(channel)
            pipeline = Pipeline(
                spec, source, target, realtime=True, image_limits=self.settings.image_limits()
            )
            mix = asyncio.create_task(pipeline.run())
            pushing_since = time.monotonic()
            while not mix.done():
                await asyncio.wait({mix}, timeout=self.settings.heartbeat_interval)
                stats = pipeline.stats
                if stats.users:
                    empty_since = time.monotonic()
                if (
                    failing_since is not None
                    and time.monotonic() - pushing_since > 2 * self.settings.heartbeat_interval
                ):
                    failing_since, backoff = None, self.settings.retry_initial  # the push works again
                fresh = self._beat(
                    token,
                    status=TaskStatus.RUNNING if stats.users else TaskStatus.WAITING,
                    state=TaskState.RUNNING,
                    reason="pushing" if stats.users else waiting_reason(source),
                    layout_id=stats.layout_id,
                    users=list(stats.users),
                    stats={
                        "video_frames": stats.video_frames,
                        "dropped_video_frames": stats.dropped_video_frames,
                        "audio_blocks": stats.audio_blocks,
                        "layout_changes": stats.layout_changes,
                        "mixed_audio_users": list(stats.mixed_audio_users),
                        "overlay_problems": dict(stats.overlay_problems),
                        "vad": stats.vad,
                        "sei_messages": stats.sei_messages,
                    },
                )
                if fresh is None:
                    log.warning(
                        "task %s/%s: fenced out by a newer claim; stopping", self.app_id, self.task_id
                    )
                    outcome = Outcome(fenced=True)
                    pipeline.stop()
                elif fresh.stop_requested:
                    outcome = Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user")
                    pipeline.stop()
                elif time.monotonic() - empty_since >= self.settings.empty_timeout:
                    outcome = Outcome(
                        TaskStatus.CHANNEL_ENDED,
                        f"the channel was empty for {self.settings.empty_timeout:g} s",
                    )
                    pipeline.stop()
                elif fresh.spec_version != version:
                    try:
                        pipeline.update_spec(fresh.params.to_spec(self.settings.clock_time_zone))
                        version = fresh.spec_version
                        log.info(
                            "task %s/%s: layout updated (version %d)", self.app_id, self.task_id, version
                        )
                    except (SpecError, ValueError) as exc:
                        log.warning("task %s/%s: update refused: %s", self.app_id, self.task_id, exc)
                        version = fresh.spec_version
                self._last = fresh
            try:
                await mix
            except SinkError as exc:
                if outcome is not None:
                    break
                now = time.monotonic()
                failing_since = failing_since or now
                status = TaskStatus.PUSH_URL_PROBLEM if exc.push_url_problem else TaskStatus.NETWORK_PROBLEM
                if now - failing_since >= self.settings.give_up_after:
                    outcome = Outcome(TaskStatus.STOPPED, f"gave up after {now - failing_since:.0f} s: {exc}")
                    break
                delay = backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, self.settings.retry_max)
                log.warning(
                    "task %s/%s: push failed (%s); retrying in %.1f s", self.app_id, self.task_id, exc, delay
                )
                outcome = await self._wait_retry(token, status, f"push failed, retrying: {exc}", delay)
        if not outcome.fenced:
            self.store.finish(self.app_id, self.task_id, token, outcome.status, outcome.reason)
        log.info("task %s/%s ended: %s (%s)", self.app_id, self.task_id, outcome.status.name, outcome.reason)
        return outcome

    async def _wait_retry(self, token: int, status: TaskStatus, reason: str, delay: float) -> Outcome | None:
        """Sleep ``delay`` seconds before a reconnect, heartbeating; an Outcome if the task must end."""
        deadline = time.monotonic() + delay
        while True:
            fresh = self._beat(token, status=status, state=TaskState.RETRYING, reason=reason)
            if fresh is None:
                return Outcome(fenced=True)
            if fresh.stop_requested:
                return Outcome(TaskStatus.STOPPED_BY_USER, "stopped by the user")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(left, self.settings.heartbeat_interval))
