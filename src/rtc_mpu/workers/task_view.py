"""A task as clients see it: the record with every URL redacted (the REST API's ``TaskOut``, and the
``task`` of each webhook event, :mod:`rtc_mpu.workers.events`). Plain data, no I/O: the API and the
events worker build the same view from a :class:`~rtc_mpu.workers.model.TaskRecord`."""

from __future__ import annotations

from typing import Any

from rtc_mpu.spec.urls import redact_url
from rtc_mpu.workers.model import TaskRecord, TaskStatus

#: The text of each vendor status code.
STATUS_TEXT = {
    TaskStatus.WAITING: "waiting for the channel",
    TaskStatus.RUNNING: "running",
    TaskStatus.STOPPED: "stopped",
    TaskStatus.STOPPED_BY_USER: "stopped by the user",
    TaskStatus.CHANNEL_ENDED: "stopped: the channel ended",
    TaskStatus.NETWORK_PROBLEM: "CDN/network problem",
    TaskStatus.PUSH_URL_PROBLEM: "push URL problem",
}


def output_view(record: TaskRecord) -> list[dict[str, Any]]:
    """The task's outputs (OutputOut): each stored output (URLs redacted) with the state, error and
    counters of the worker's last report (``connecting`` and no counters before any)."""
    reported = {o.output_id: o for o in (record.stats.outputs if record.stats is not None else ())}
    answer = []
    for stored in record.params.outputs:
        item: dict[str, Any] = {k: v for k, v in stored.items() if v is not None}
        if "url" in item:
            item["url"] = redact_url(str(item["url"]))
        stats = reported.get(str(stored.get("output_id")))
        if stats is None:
            item.update(state="connecting", error=None, stats={})
        else:
            counters = stats.to_dict()
            item.update(state=stats.state, error=stats.error)
            item["stats"] = {
                k: v for k, v in counters.items() if k not in ("output_id", "kind", "state", "error")
            }
        answer.append(item)
    return answer


def task_view(record: TaskRecord) -> dict[str, Any]:
    """A record as clients see it (TaskOut: the StreamURL and every output URL redacted)."""
    return {
        "app_id": record.app_id,
        "task_id": record.task_id,
        "channel_id": record.params.channel_id,
        "stream_url": redact_url(record.params.stream_url),
        "status": int(record.status),
        "status_text": STATUS_TEXT[record.status],
        "state": str(record.state),
        "reason": record.reason,
        "worker": record.worker,
        "restarts": record.restarts,
        "layout_id": record.layout_id,
        "layout_ids": list(record.params.layout_ids),
        "users": record.users,
        "stats": {} if record.stats is None else record.stats.to_dict(),
        "outputs": output_view(record),
        "ignored": record.params.ignored(),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "ended_at": record.ended_at,
    }
