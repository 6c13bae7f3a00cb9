"""Prometheus metrics for operators: ``GET /metrics`` (text exposition format, prometheus-client).

Read from Redis at each scrape, so every API process answers the same numbers:

- ``mpu_tasks{state}``: active tasks by state (queued, starting, running, retrying, stopping, and
  "worker lost" for a claimed task whose heartbeat is older than the lease);
- ``mpu_tasks_by_status{status}``: active tasks by the vendor's status code (0-6);
- ``mpu_task_dropped_video_frames``, ``mpu_task_dropped_audio_blocks``, ``mpu_task_sink_reconnects``,
  ``mpu_task_restarts``: sums over the active tasks of what their workers last reported;
- ``mpu_task_av_offset_max_ms``: the largest A/V offset (``|audio - video|`` as the mixer places them,
  ms) among the participants of the active tasks, 0 with none (``TaskStats.av_offsets_ms``);
- ``mpu_task_av_out_of_sync``: participants of active tasks whose audio is placed more than
  :data:`AUDIO_LATE_LIMIT_MS` after or :data:`AUDIO_EARLY_LIMIT_MS` before their picture;
- ``mpu_queue_length``: mix messages waiting in the Celery queue;
- ``mpu_node_load{node}``: capacity units booked on each worker node.

No label carries a StreamURL, an access key or a user id. Scraping needs an access key (HTTP Basic,
like the REST API: Prometheus' ``basic_auth``); a scrape while Redis is down answers 503.
"""

from __future__ import annotations

from collections import Counter

from apiflask import APIBlueprint
from flask import Response, current_app
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rtc_mpu.api.auth import authenticate_any
from rtc_mpu.api.service import ServiceError
from rtc_mpu.workers.model import TaskState, TaskStatus
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

bp = APIBlueprint("metrics", __name__, enable_openapi=False)

#: The Celery queue of mix tasks (rtc_mpu.workers.celery_app.QUEUE; not imported: the API does not load
#: Celery).
QUEUE = "mixes"
#: Lip-sync limits in ms, EBU R37 (2007): audio at most 60 ms late or 40 ms early relative to video.
AUDIO_LATE_LIMIT_MS = 60.0
AUDIO_EARLY_LIMIT_MS = 40.0


def _gauges(store: TaskStoreProtocol) -> CollectorRegistry:
    """A fresh registry holding this scrape's values.

    Raises:
        StoreUnavailableError: Redis failed.
    """
    registry = CollectorRegistry()
    records = [record.as_seen(store.lease_seconds) for record in store.active_tasks()]
    by_state = Counter(str(record.state) for record in records)
    tasks = Gauge("mpu_tasks", "Active mix tasks by state", ["state"], registry=registry)
    for state in TaskState:
        if state is not TaskState.ENDED:
            tasks.labels(str(state)).set(by_state.get(str(state), 0))
    by_status = Counter(int(record.status) for record in records)
    statuses = Gauge(
        "mpu_tasks_by_status", "Active mix tasks by status code (0-6)", ["status"], registry=registry
    )
    for status in TaskStatus:
        statuses.labels(str(int(status))).set(by_status.get(int(status), 0))
    stats = [record.stats for record in records if record.stats is not None]
    for name, help_text, total in (
        (
            "mpu_task_dropped_video_frames",
            "Video frames dropped, summed over active tasks",
            sum(s.dropped_video_frames for s in stats),
        ),
        (
            "mpu_task_dropped_audio_blocks",
            "Audio blocks dropped, summed over active tasks",
            sum(s.dropped_audio_blocks for s in stats),
        ),
        (
            "mpu_task_sink_reconnects",
            "RTMP reconnections, summed over active tasks",
            sum(s.sink_reconnects for s in stats),
        ),
    ):
        Gauge(name, help_text, registry=registry).set(total)
    offsets = [offset for s in stats for offset in s.av_offsets_ms.values()]
    Gauge(
        "mpu_task_av_offset_max_ms",
        "Largest audio-video offset of a participant of an active task, ms",
        registry=registry,
    ).set(max((abs(offset) for offset in offsets), default=0.0))
    Gauge(
        "mpu_task_av_out_of_sync",
        "Participants of active tasks whose audio is placed out of EBU R37's lip-sync limits",
        registry=registry,
    ).set(sum(1 for offset in offsets if offset > AUDIO_LATE_LIMIT_MS or offset < -AUDIO_EARLY_LIMIT_MS))
    Gauge("mpu_task_restarts", "Worker restarts, summed over active tasks", registry=registry).set(
        sum(record.restarts for record in records)
    )
    load = Gauge("mpu_node_load", "Capacity units booked on a worker node", ["node"], registry=registry)
    for node, units in store.node_loads().items():
        load.labels(node).set(units)
    Gauge("mpu_queue_length", "Mix messages waiting in the Celery queue", registry=registry).set(
        store.queue_length(QUEUE)
    )
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """The metrics (see the module docstring)."""
    services = current_app.extensions["mpu"]
    if not services.auth_disabled:
        authenticate_any(services.access_keys)
    service = services.service
    try:
        registry = service.call_store(_gauges, service.store)
    except ServiceError as exc:
        return Response(f"# {exc.code}: {exc.message}\n", status=exc.status, mimetype="text/plain")
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
