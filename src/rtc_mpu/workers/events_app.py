"""The events worker (``mpu events``): a Celery app of its own, on the queue ``events``, that delivers
webhooks (:mod:`rtc_mpu.workers.webhooks`); never a mix slot, never the mixes' queue.

- A **dispatcher** thread in the worker's main process waits on the store's notifications
  (:meth:`~rtc_mpu.workers.store.TaskStore.wait_outbox`) and sends :func:`deliver_events` for the
  outbox that got an event; every :data:`SWEEP_INTERVAL` seconds it also sends one for every
  non-empty outbox (a lost notification, a worker that died holding an outbox, a retry whose message
  was lost).
- :func:`deliver_events` takes the outbox's lock (one deliverer per outbox: its events leave in
  order), delivers until it is empty or an endpoint must wait, and then schedules itself once for
  when the next attempt is due (:meth:`~rtc_mpu.workers.store.TaskStore.note_retry`). A duplicate
  message is harmless: attempts happen only when due (their times are in the delivery records).
- Thread pool (deliveries wait on the network, not the CPU), ``MPU_EVENTS_CONCURRENCY`` threads
  (default 8); acks early (the outbox in Redis, not the message, is the truth).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from rtc_mpu.workers.store_protocol import TaskStoreProtocol
from rtc_mpu.workers.webhooks import DeliverySettings, deliver_head

log = logging.getLogger(__name__)

#: The Celery queue of webhook deliveries.
EVENTS_QUEUE = "events"
#: Seconds between two sweeps of every non-empty outbox.
SWEEP_INTERVAL = 5.0
#: Seconds an outbox's lock lasts (renewed for each event).
LOCK_SECONDS = 120.0

redis_url = os.environ.get("MPU_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("rtc_mpu_events", broker=redis_url)
app.conf.update(
    task_acks_late=False,
    worker_prefetch_multiplier=4,
    task_default_queue=EVENTS_QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_stop = threading.Event()
_local: dict[str, Any] = {}


def _store() -> TaskStoreProtocol:
    from rtc_mpu.workers.store import TaskStore

    if "store" not in _local:
        _local["store"] = TaskStore.from_url(redis_url)
        _local["settings"] = DeliverySettings.from_env()
    store: TaskStoreProtocol = _local["store"]
    return store


@app.task(name="rtc_mpu.deliver_events", ignore_result=True)
def deliver_events(name: str) -> str:
    """Deliver the outbox ``name`` (``<app_id>/<task_id>``) as far as possible now."""
    store = _store()
    settings: DeliverySettings = _local["settings"]
    token = uuid.uuid4().hex
    while True:
        if not store.lock_outbox(name, token, LOCK_SECONDS):
            return "busy"  # its holder looks at the outbox again after letting go
        try:
            wait = deliver_head(store, name, settings)
        finally:
            store.unlock_outbox(name, token)
        if wait is not None:
            break
        # An event written while this holder had the lock: its own trigger found the outbox busy.
        if store.outbox_head(name) is None:
            return "empty"
    if store.note_retry(name, max(wait, 0.05)):
        deliver_events.apply_async(args=[name], queue=EVENTS_QUEUE, countdown=wait, retry=False)
    return f"next attempt in {wait:.1f} s"


def dispatch_forever(store: TaskStoreProtocol, stop: threading.Event) -> None:
    """Send a delivery for each notified outbox, and for every outbox each :data:`SWEEP_INTERVAL`."""
    import time

    next_sweep = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_INTERVAL
                for name in store.outbox_names():
                    deliver_events.apply_async(args=[name], queue=EVENTS_QUEUE, retry=False)
            notified = store.wait_outbox(1.0)
            if notified is not None:
                deliver_events.apply_async(args=[notified], queue=EVENTS_QUEUE, retry=False)
        except Exception as exc:  # Redis down: wait and try again
            log.warning("events dispatcher: %s", exc)
            stop.wait(1.0)


@worker_ready.connect
def _start_dispatcher(sender: Any = None, **_: Any) -> None:
    if getattr(getattr(sender, "app", None), "main", None) != app.main:
        return
    threading.Thread(
        target=dispatch_forever, args=(_store(), _stop), name="events-dispatcher", daemon=True
    ).start()


@worker_shutting_down.connect
def _stop_dispatcher(**_: Any) -> None:
    _stop.set()
