"""The one typed interface of the task store, and of the custom layout store.

Everything that uses a task store (the API's service layer, ``/metrics``, the signed-request nonce
register, the mix runner, the reconciler) is typed with :class:`TaskStoreProtocol`, which
:class:`rtc_mpu.workers.store.TaskStore` implements on Redis; the API's custom layouts go through
:class:`LayoutStoreProtocol` (:class:`rtc_mpu.workers.layout_store.LayoutStore`). The semantics, the
errors and the atomicity of each method are documented on those classes; the Redis key layout stays
inside them.

The default timings live here, read by both the store and the worker settings
(:class:`rtc_mpu.workers.settings.WorkerSettings`), so that a store made without settings behaves
like the workers' one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import redis

from rtc_mpu.layouts import Layout
from rtc_mpu.spec.outputs import OutputSpec
from rtc_mpu.workers.events import Delivery, WebhookEndpoint
from rtc_mpu.workers.model import Claim, TaskParams, TaskRecord, TaskState, TaskStatus
from rtc_mpu.workers.stats import TaskStats

#: Seconds a claimed task's StreamURL leases outlive its last heartbeat (``MPU_LEASE_SECONDS``); a
#: claimed task whose heartbeat is this old is stale (its worker died).
DEFAULT_LEASE_SECONDS = 8.0
#: Seconds a StreamURL is refused after its task ended (``MPU_COOLDOWN``).
DEFAULT_COOLDOWN_SECONDS = 10.0


class TaskStoreProtocol(Protocol):
    """Mix tasks, their StreamURL leases and cooldowns, claims and heartbeats, node loads (see
    :class:`rtc_mpu.workers.store.TaskStore` for what each method guarantees and raises; every
    method may raise :class:`rtc_mpu.workers.model.StoreUnavailableError`)."""

    @property
    def lease_seconds(self) -> float:
        """How long a lease outlives the last heartbeat, in seconds (tasks silent this long are
        shown as "worker lost" and may be claimed again)."""
        ...

    @property
    def cooldown_seconds(self) -> float:
        """How long a StreamURL is refused after its task ended, in seconds."""
        ...

    @property
    def client(self) -> redis.Redis:
        """The Redis client, for components that keep keys of their own on the same server under
        :attr:`prefix` (the rate limiter, the authentication throttle, the layout store)."""
        ...

    @property
    def prefix(self) -> str:
        """The prefix of every key of the store."""
        ...

    def close(self) -> None: ...

    def ping(self) -> None: ...

    def use_nonce(self, key_id: str, nonce: str, ttl_seconds: float) -> bool: ...

    # -- the API -------------------------------------------------------------------------------
    def start_task(self, record: TaskRecord) -> TaskRecord: ...

    def put_snapshot(
        self, app_id: str, task_id: str, jpeg: bytes, taken_at_unix_seconds: float, ttl_seconds: float
    ) -> None: ...

    def get_snapshot(self, app_id: str, task_id: str) -> tuple[bytes, float] | None: ...

    def get_task(self, app_id: str, task_id: str) -> TaskRecord: ...

    def list_tasks(self, app_id: str) -> list[TaskRecord]: ...

    def request_stop(self, app_id: str, task_id: str) -> TaskRecord: ...

    def add_output(
        self, app_id: str, task_id: str, output: OutputSpec, lease_keys: Sequence[str] = ()
    ) -> TaskRecord: ...

    def remove_output(self, app_id: str, task_id: str, output_id: str) -> TaskRecord: ...

    def update_params(self, app_id: str, task_id: str, params: TaskParams) -> TaskRecord: ...

    # -- workers -------------------------------------------------------------------------------
    def claim(self, app_id: str, task_id: str, worker: str) -> int | None: ...

    def claim_on(
        self,
        app_id: str,
        task_id: str,
        worker: str,
        *,
        node: str | None = None,
        cost: float = 0.0,
        capacity: float | None = None,
    ) -> Claim: ...

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
        stats: TaskStats | None = None,
        capacity: float | None = None,
    ) -> TaskRecord | None: ...

    def release(self, app_id: str, task_id: str, token: int, reason: str) -> TaskRecord | None: ...

    def finish(
        self,
        app_id: str,
        task_id: str,
        token: int | None,
        status: TaskStatus,
        reason: str,
        *,
        cooldown: bool = True,
    ) -> TaskRecord | None: ...

    # -- the reconciler ------------------------------------------------------------------------
    def active_tasks(self) -> list[TaskRecord]: ...

    def stale_tasks(self) -> list[TaskRecord]: ...

    def note_restart(self, app_id: str, task_id: str, seconds: float) -> bool: ...

    def rescue_queued(self, idle_seconds: float) -> list[tuple[str, str]]: ...

    # -- operators (/metrics) ------------------------------------------------------------------
    def node_load(self, node: str) -> dict[str, float]: ...

    def node_loads(self) -> dict[str, float]: ...

    def node_capacity(self, node: str) -> float | None: ...

    def queue_length(self, queue: str) -> int: ...

    # Events: webhooks and their outbox (rtc_mpu.workers.events, rtc_mpu.workers.webhooks).

    def webhooks(self, app_id: str) -> list[WebhookEndpoint]: ...

    def set_webhooks(self, app_id: str, endpoints: Sequence[WebhookEndpoint]) -> list[WebhookEndpoint]: ...

    def server_time(self) -> float: ...

    def emit_ping(self, app_id: str) -> str: ...

    def emit_recording_ready(
        self, app_id: str, task_id: str, token: int, recording: Mapping[str, object]
    ) -> bool: ...

    def outbox_names(self) -> list[str]: ...

    def wait_outbox(self, timeout: float) -> str | None: ...

    def outbox_head(self, name: str) -> str | None: ...

    def outbox_ack(self, name: str, event_id: str) -> bool: ...

    def lock_outbox(self, name: str, token: str, seconds: float) -> bool: ...

    def unlock_outbox(self, name: str, token: str) -> None: ...

    def note_retry(self, name: str, seconds: float) -> bool: ...

    def delivery(self, app_id: str, event_id: str, url: str) -> Delivery | None: ...

    def record_delivery(self, app_id: str, delivery: Delivery) -> None: ...

    def deliveries(self, app_id: str, limit: int = ...) -> list[Delivery]: ...


class LayoutStoreProtocol(Protocol):
    """Custom layouts per AppId (see :class:`rtc_mpu.workers.layout_store.LayoutStore` for what each
    method guarantees and raises)."""

    def create(
        self,
        app_id: str,
        *,
        name: str,
        panes: Sequence[Mapping[str, object]],
        audio_mix_count: int | None = None,
        major_pane: int | None = None,
    ) -> Layout: ...

    def modify(
        self,
        app_id: str,
        layout_id: int,
        *,
        name: str | None = None,
        panes: Sequence[Mapping[str, object]] | None = None,
        audio_mix_count: int | None = None,
        major_pane: int | None = None,
    ) -> Layout: ...

    def delete(self, app_id: str, layout_id: int) -> None: ...

    def get(self, app_id: str, layout_id: int) -> Layout: ...

    def get_many(self, app_id: str, layout_ids: Iterable[int]) -> dict[int, Layout]: ...

    def list(
        self,
        app_id: str,
        *,
        layout_id: int | None = None,
        name: str | None = None,
        page_num: int = 1,
        page_size: int = 10,
    ) -> tuple[int, list[Layout]]: ...
