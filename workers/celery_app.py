"""The Celery app: one long-running Celery task per mix, on the Redis broker.

Delivery policy (shared/DESIGN.md "A task's life"):
- **Ack early** (``task_acks_late = False``): a message is acknowledged when a worker starts it, so
  a mix running for hours is never redelivered by the broker's visibility timeout. Crash recovery
  is ours, not the broker's: the reconciler re-enqueues tasks whose heartbeat stopped.
- **Prefetch 1** (``worker_prefetch_multiplier = 1``, ``-O fair``): a worker reserves no more messages
  than it has free mix slots, so nothing waits behind an hours-long mix on a busy worker.
- **Concurrency = mix slots** (``MPU_MIX_SLOTS``, prefork: each mix in its own process, no GIL sharing).
- **Visibility timeout** 1 hour for the few reserved-but-unstarted messages; a duplicate delivery is
  harmless because running a mix starts by claiming it in Redis with a fencing token.
- **Control** (stop, layout updates) goes through the task record in Redis, read at every heartbeat
  (1 s), never ``revoke(terminate=True)``.
- **Reconciler**: each worker process checks every few seconds for tasks whose worker died (heartbeat
  older than the lease) and re-enqueues them; the restart keeps TaskId and StreamURL.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from workers.settings import WorkerSettings, worker_id

log = logging.getLogger(__name__)

#: The Celery queue of mix tasks.
QUEUE = "mixes"
#: Seconds between reconciler passes.
RECONCILE_INTERVAL = 2.0

settings = WorkerSettings.from_env()
app = Celery("rtc_mpu", broker=settings.redis_url)
app.conf.update(
    task_acks_late=False,
    worker_prefetch_multiplier=1,
    worker_concurrency=settings.mix_slots,
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_send_sent_event=True,
    worker_send_task_events=True,
)


def _store() -> Any:
    from workers.store import TaskStore

    return TaskStore.from_url(
        settings.redis_url, cooldown_seconds=settings.cooldown_seconds, lease_seconds=settings.lease_seconds
    )


@app.task(name="rtc_mpu.run_mix", ignore_result=True)
def run_mix(app_id: str, task_id: str) -> str:
    """Run one mix task to its end in this worker process; returns how it ended (for Flower)."""
    from workers.mix_runner import MixRunner

    outcome = MixRunner(_store(), app_id, task_id, worker_id(), settings).run()
    if outcome is None:
        return "not claimed (running elsewhere or ended)"
    return "handed over" if outcome.fenced else f"{outcome.status.name}: {outcome.reason}"


def enqueue_mix(app_id: str, task_id: str) -> None:
    """Queue a mix task (called by the API after the task is stored).

    Raises:
        kombu / redis errors: the broker is unreachable.
    """
    run_mix.apply_async(args=[app_id, task_id], queue=QUEUE, retry=False)


def reconcile_once(store: Any) -> list[str]:
    """Re-enqueue every task whose worker died; fail those restarted too often. Returns their ids."""
    from workers.model import TaskStatus

    handled = []
    for record in store.stale_tasks():
        name = f"{record.app_id}/{record.task_id}"
        if record.restarts >= settings.max_restarts:
            store.finish(
                record.app_id,
                record.task_id,
                record.fence,
                TaskStatus.STOPPED,
                f"its worker died {record.restarts + 1} times; giving up",
            )
            log.error("task %s: gave up after %d restarts", name, record.restarts)
        else:
            log.warning("task %s: worker %s stopped heartbeating; restarting it", name, record.worker)
            enqueue_mix(record.app_id, record.task_id)
        handled.append(name)
    return handled


def _reconcile_forever(stop: threading.Event) -> None:
    store = _store()
    while not stop.wait(RECONCILE_INTERVAL):
        try:
            reconcile_once(store)
        except Exception as exc:  # Redis down: try again next time
            log.warning("reconciler: %s", exc)


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    thread = threading.Thread(
        target=_reconcile_forever, args=(threading.Event(),), name="reconciler", daemon=True
    )
    thread.start()
