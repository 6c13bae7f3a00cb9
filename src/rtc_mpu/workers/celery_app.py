"""The Celery app: one long-running Celery task per mix, on the Redis broker.

Delivery policy (docs/architecture.md "A task's life"):
- **Ack early** (``task_acks_late = False``): a message is acknowledged when a worker starts it, so
  a mix running for hours is never redelivered by the broker's visibility timeout. Crash recovery
  is ours, not the broker's: the reconciler re-enqueues tasks whose heartbeat stopped.
- **Prefetch 1** (``worker_prefetch_multiplier = 1``, ``-O fair``) and ``worker_disable_prefetch``: a
  worker fetches a message only while it has a free mix slot (with early acks, prefetch alone would let
  a worker whose slots all run mixes reserve more messages, which would wait behind hours-long mixes).
- **Capacity**: each worker node (a Celery worker, its ``-n`` name) takes tasks up to its capacity
  (``MPU_WORKER_CAPACITY`` units, :mod:`rtc_mpu.workers.capacity`), checked atomically by the
  claim. A task that does not fit is sent back with a countdown of about 2 s (:func:`requeue_mix`) and keeps
  state QUEUED, so another node, or this one later, takes it.
- **Concurrency = mix slots** (``MPU_MIX_SLOTS``, prefork: each mix in its own process, no GIL sharing).
- **A fresh process per mix** (``worker_max_tasks_per_child`` = ``MPU_MIXES_PER_PROCESS``, default 1):
  a pool process exits after its mix and the pool forks a new one, so a mix's memory goes back to the
  system when it ends (a reused process grew by about 0.7 MiB per mix, without bound:
  ``bench.worker_memory``). The main process imports the mix pipeline before its pool forks
  (:func:`_preload_mix_modules`), so a fresh process starts a mix about as fast as a reused one.
- **Visibility timeout** 1 hour for the few reserved-but-unstarted messages; a duplicate delivery is
  harmless because running a mix starts by claiming it in Redis with a fencing token.
- **Control** (stop, layout updates) goes through the task record in Redis, read at every heartbeat
  (1 s), never ``revoke(terminate=True)``.
- **Shutdown hands over**: SIGTERM (to the worker, or to its pool processes as systemd's default
  KillMode does) makes each running mix stop pushing within a heartbeat, give its task back
  (:meth:`rtc_mpu.workers.store.TaskStore.release`) and queue it again at once, so another worker resumes it
  with the same TaskId and StreamURL after a gap of about a second or two; then the worker exits
  (Celery's warm shutdown). A second SIGTERM or SIGQUIT is Celery's cold shutdown (the mixes die; the
  lease expires and the reconciler restarts them elsewhere).
- **Reconciler**: each worker process checks every few seconds for tasks whose worker died (heartbeat
  older than the lease) and re-enqueues them; the restart keeps TaskId and StreamURL. It also
  re-enqueues a never-claimed task whose record nobody touched for :data:`RESCUE_QUEUED_AFTER` seconds
  (its message may have died with a worker that had acknowledged it); a duplicate message is harmless.
  Every :data:`HLS_SWEEP_INTERVAL` seconds it also removes the HLS folders of tasks that ended more
  than ``MPU_HLS_RETENTION_SECONDS`` ago (:func:`sweep_hls_once`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
import threading
import time
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_ready, worker_shutting_down

from rtc_mpu.workers.model import TaskRecord
from rtc_mpu.workers.settings import WorkerSettings, worker_id
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

log = logging.getLogger(__name__)

#: The Celery queue of mix tasks.
QUEUE = "mixes"
#: Seconds a never-claimed task's record may stay untouched before the reconciler enqueues it again.
RESCUE_QUEUED_AFTER = 60.0
#: At most one restart message per stale task per this many seconds (all workers' reconcilers pass
#: every RECONCILE_INTERVAL; a restart that found no free slot is queued again after this).
RESTART_MESSAGE_EVERY = 10.0
#: Seconds between reconciler passes.
RECONCILE_INTERVAL = 2.0
#: Seconds between two sweeps of the HLS directory (:func:`sweep_hls_once`).
HLS_SWEEP_INTERVAL = 60.0
#: Seconds before an ingest that did not fit a node is offered again.
NO_CAPACITY_RETRY_SECONDS = 2.0
#: At most one restart message per stale ingest per this many seconds.
INGEST_RESTART_EVERY = 10.0
#: Seconds removing a dead worker's ``.mix`` publisher from Janus may take.
MIX_REMOVE_TIMEOUT_SECONDS = 5.0
#: Seconds between checks that the pool has all its processes (Celery's own check is every 5 s).
POOL_CHECK_INTERVAL = 0.25

settings = WorkerSettings.from_env()
app = Celery("rtc_mpu", broker=settings.redis_url)
app.conf.update(
    task_acks_late=False,
    worker_prefetch_multiplier=1,
    worker_disable_prefetch=True,
    worker_concurrency=settings.mix_slots,
    worker_max_tasks_per_child=settings.mixes_per_process or None,
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_send_sent_event=True,
    worker_send_task_events=True,
)


#: Set when this worker shuts down; created before the pool forks, so its processes share it.
shutting_down = multiprocessing.Event()


@worker_shutting_down.connect
def _hand_over_on_shutdown(**_: Any) -> None:
    shutting_down.set()


@worker_init.connect
def _preload_mix_modules(**_: Any) -> None:
    """Import the mix pipeline (aiortc, the mixer; about 0.2 CPU-s and 20 MiB) in the worker's main
    process before its pool forks, so a pool process, fresh for every mix, does not import it again.
    Not at module level: the API imports this module too."""
    import rtc_mpu.workers.mix_runner  # noqa: F401


class _RefillPool(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery is untyped
    """Replaces an exited pool process within :data:`POOL_CHECK_INTERVAL` seconds.

    Celery forks a replacement when it sees a pool process's exit, but a process seen before it can
    be reaped (its pipes close a moment before) is only replaced by the pool's 5-second check, and a
    mix delivered meanwhile waits for it (measured: 1 start in 10 up to 5 s late with a fresh
    process per mix). The same check, on the worker's event loop, every 0.25 s.
    """

    requires = ("celery.worker.components:Pool",)

    def start(self, worker: Any) -> None:
        if getattr(worker, "hub", None) is not None:
            worker.hub.call_repeatedly(POOL_CHECK_INTERVAL, lambda: worker.pool.maintain_pool())


app.steps["worker"].add(_RefillPool)


def _store() -> TaskStoreProtocol:
    """A task store on the worker settings' Redis, with their lease and cooldown."""
    from rtc_mpu.workers.store import TaskStore

    return TaskStore.from_url(
        settings.redis_url, cooldown_seconds=settings.cooldown_seconds, lease_seconds=settings.lease_seconds
    )


@app.task(name="rtc_mpu.run_mix", bind=True, ignore_result=True)
def run_mix(self: Any, app_id: str, task_id: str) -> str:
    """Run one mix task to its end in this worker process, within the capacity of this worker node
    (Celery's node name); returns how it ended (for Flower)."""
    from rtc_mpu.workers.mix_runner import MixRunner

    if shutting_down.is_set():  # a message fetched while shutting down: give it to another worker
        requeue_mix(app_id, task_id, 0.0)
        return "queued again: this worker is shutting down"
    node = self.request.hostname or socket.gethostname()
    runner = MixRunner(
        _store(),
        app_id,
        task_id,
        worker_id(),
        settings,
        node=node,
        requeue=requeue_mix,
        draining=shutting_down.is_set,
    )
    # A SIGTERM sent to this pool process itself (systemd signals the whole group) also hands over.
    previous = signal.signal(signal.SIGTERM, lambda *_: shutting_down.set())
    try:
        outcome = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if outcome is None:
        if runner.no_capacity:
            return f"queued again: node {node} has no capacity for it"
        return "not claimed (running elsewhere or ended)"
    if outcome.handed_over:
        return "handed over: this worker is shutting down"
    return (
        "fenced out: another worker took over"
        if outcome.fenced
        else f"{outcome.status.name}: {outcome.reason}"
    )


@app.task(name="rtc_mpu.run_ingest", bind=True, ignore_result=True)
def run_ingest(self: Any, app_id: str, ingest_id: str) -> str:
    """Run one stream ingest (issue 19) to its end in this worker process, within the capacity of
    this worker node; returns how it ended (for Flower)."""
    import os

    from rtc_mpu.workers.ingest_runner import IngestRunner, IngestSettings
    from rtc_mpu.workers.ingest_store import IngestStore

    if shutting_down.is_set():  # fetched while shutting down: give it to another worker
        enqueue_ingest(app_id, ingest_id, 0.0)
        return "queued again: this worker is shutting down"
    node = self.request.hostname or socket.gethostname()
    store = _store()
    runner = IngestRunner(
        IngestStore(store.client, store.prefix, settings.lease_seconds),
        app_id,
        ingest_id,
        worker_id(),
        settings,
        IngestSettings.from_env(dict(os.environ)),
        node=node,
        capacity=settings.capacity or None,
        draining=shutting_down.is_set,
        requeue=enqueue_ingest,
    )
    # A SIGTERM sent to this pool process itself (systemd signals the whole group) also hands over.
    previous = signal.signal(signal.SIGTERM, lambda *_: shutting_down.set())
    try:
        outcome = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if runner.no_capacity:
        enqueue_ingest(app_id, ingest_id, NO_CAPACITY_RETRY_SECONDS)
        return f"queued again: node {node} has no capacity for it"
    return outcome


def enqueue_ingest(app_id: str, ingest_id: str, countdown: float = 0.0) -> None:
    """Queue a stream ingest (called by the API after it is stored, and by the reconciler).

    Raises:
        kombu / redis errors: the broker is unreachable.
    """
    run_ingest.apply_async(args=[app_id, ingest_id], queue=QUEUE, countdown=countdown or None, retry=False)


def enqueue_mix(app_id: str, task_id: str) -> None:
    """Queue a mix task (called by the API after the task is stored).

    Raises:
        kombu / redis errors: the broker is unreachable.
    """
    run_mix.apply_async(args=[app_id, task_id], queue=QUEUE, retry=False)


def requeue_mix(app_id: str, task_id: str, countdown: float) -> None:
    """Queue a mix task again, to be delivered ``countdown`` seconds from now (a worker node had no
    capacity for it).

    Raises:
        kombu / redis errors: the broker is unreachable.
    """
    run_mix.apply_async(args=[app_id, task_id], queue=QUEUE, countdown=countdown, retry=False)


def reconcile_once(store: TaskStoreProtocol) -> list[str]:
    """Re-enqueue every task whose worker died; end those that were stopping (status 3, leases
    released with their cooldowns) and fail those restarted too often; re-enqueue the never-claimed
    tasks idle for :data:`RESCUE_QUEUED_AFTER` seconds. Returns their names (``<app_id>/<task_id>``).

    Raises:
        StoreUnavailableError: Redis failed.
        kombu / redis errors: the broker is unreachable.
    """
    from rtc_mpu.workers.model import TaskStatus

    handled = []
    for record in store.stale_tasks():
        name = f"{record.app_id}/{record.task_id}"
        if record.stop_requested:  # its worker died while stopping: the stop is done, not restarted
            store.finish(
                record.app_id,
                record.task_id,
                record.fence,
                TaskStatus.STOPPED_BY_USER,
                "stopped by the user (its worker died while stopping)",
            )
            log.warning("task %s: worker %s died while stopping; ended", name, record.worker)
            remove_left_mix_publisher(record)
        elif record.restarts >= settings.max_restarts:
            store.finish(
                record.app_id,
                record.task_id,
                record.fence,
                TaskStatus.STOPPED,
                f"its worker died {record.restarts + 1} times; giving up",
            )
            log.error("task %s: gave up after %d restarts", name, record.restarts)
            remove_left_mix_publisher(record)
        elif store.note_restart(record.app_id, record.task_id, RESTART_MESSAGE_EVERY):
            log.warning("task %s: worker %s stopped heartbeating; restarting it", name, record.worker)
            enqueue_mix(record.app_id, record.task_id)
        else:
            continue  # a restart message was queued less than RESTART_MESSAGE_EVERY seconds ago
        handled.append(name)
    handled += restart_stale_ingests(store)
    for app_id, task_id in store.rescue_queued(RESCUE_QUEUED_AFTER):
        log.warning(
            "task %s/%s: queued for %g s without a worker trying it; enqueuing it again",
            app_id,
            task_id,
            RESCUE_QUEUED_AFTER,
        )
        enqueue_mix(app_id, task_id)
        handled.append(f"{app_id}/{task_id}")
    return handled


def restart_stale_ingests(store: TaskStoreProtocol) -> list[str]:
    """Queue again the active ingests nobody runs (their worker died, or their message was lost), at
    most once per :data:`INGEST_RESTART_EVERY` seconds each. Returns their names.

    Raises:
        redis errors: Redis failed. kombu errors: the broker is unreachable.
    """
    from rtc_mpu.workers.ingest_store import IngestStore

    ingests = IngestStore(store.client, store.prefix, settings.lease_seconds)
    handled = []
    for app_id, ingest_id in ingests.stale():
        marker = f"{store.prefix}:ingest_restart:{ingests.name(app_id, ingest_id)}"
        if not store.client.set(marker, "1", nx=True, px=round(INGEST_RESTART_EVERY * 1000)):
            continue
        log.warning("ingest %s/%s: nobody runs it; queuing it again", app_id, ingest_id)
        enqueue_ingest(app_id, ingest_id)
        handled.append(f"{app_id}/ingest:{ingest_id}")
    return handled


def remove_left_mix_publisher(
    record: TaskRecord, timeout_seconds: float = MIX_REMOVE_TIMEOUT_SECONDS
) -> bool:
    """Remove the ``<task_id>.mix`` publisher a task with an ``rtc`` output leaves in its channel's
    room when it ends without its worker (a Janus remote publisher belongs to the room, not to the
    dead worker's session: :mod:`rtc_mpu.mixer.output.rtc`). Best effort: failures are logged.

    Returns:
        True if a publisher was removed.
    """
    from rtc_mpu.mixer.output.rtc import remove_mix_publisher  # the mixer: not in the API process
    from rtc_mpu.mixer.sources.janus import ChannelConfig
    from rtc_mpu.spec.outputs import RtcOutput
    from rtc_mpu.spec.tokens import MIX_SUFFIX

    try:
        if not any(isinstance(spec, RtcOutput) for spec in record.params.output_specs()):
            return False
    except Exception:  # parameters that no longer validate: no output was ever published
        return False
    channel = ChannelConfig(
        settings.janus_url,
        record.app_id,
        record.params.channel_id,
        api_secret=settings.janus_api_secret,
        token_secret=settings.token_secret,
        token_signature=settings.token_signature,
    )
    publisher = f"{record.task_id}{MIX_SUFFIX}"

    async def remove() -> bool:
        return await asyncio.wait_for(remove_mix_publisher(channel, publisher), timeout_seconds)

    try:
        removed = asyncio.run(remove())
    except Exception as exc:  # Janus down or refusing: the publisher stays (no media) until Janus restarts
        log.warning(
            "task %s/%s: could not remove %s from its room: %s", record.app_id, record.task_id, publisher, exc
        )
        return False
    if removed:
        log.info(
            "task %s/%s: removed the %s its worker left in the room", record.app_id, record.task_id, publisher
        )
    return removed


def sweep_hls_once(store: TaskStoreProtocol) -> list[str]:
    """Remove the HLS folders (under ``MPU_HLS_DIR``) of tasks that ended more than
    ``MPU_HLS_RETENTION_SECONDS`` ago (:func:`rtc_mpu.workers.outputs.sweep_hls`); never an active
    task's. Returns their names (``<app_id>/<task_id>``).

    Raises:
        StoreUnavailableError: Redis failed.
    """
    from rtc_mpu.workers.outputs import sweep_hls  # the mixer: not in the API process

    removed = sweep_hls(settings.hls_dir, store, settings.hls_retention_seconds)
    return [f"{folder.parent.name}/{folder.name}" for folder in removed]


def _reconcile_forever(stop: threading.Event) -> None:
    store = _store()
    next_sweep = time.monotonic()
    while not stop.wait(RECONCILE_INTERVAL):
        try:
            reconcile_once(store)
        except Exception as exc:  # Redis down: try again next time
            log.warning("reconciler: %s", exc)
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + HLS_SWEEP_INTERVAL
            try:
                sweep_hls_once(store)
            except Exception as exc:  # Redis down, or the directory unreadable: next time
                log.warning("HLS sweep: %s", exc)


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    thread = threading.Thread(
        target=_reconcile_forever, args=(threading.Event(),), name="reconciler", daemon=True
    )
    thread.start()
