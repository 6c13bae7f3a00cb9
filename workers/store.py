"""The task store in Redis: task records, StreamURL leases and cooldowns, claims with fencing tokens.

Keys (``<p>`` is the prefix, default ``mpu``):

- ``<p>:task:<AppId>:<TaskId>``: the task record (JSON, :class:`workers.model.TaskRecord`); an
  ended task's record expires after ``ended_ttl_seconds``.
- ``<p>:tasks:<AppId>``: set of the app's TaskIds; ``<p>:active``: set of ``<AppId>/<TaskId>`` of
  active tasks.
- ``<p>:lease:<normalized StreamURL>``: ``<AppId>/<TaskId>`` of the task pushing to that URL. No TTL
  while the task is queued; from its claim on, a TTL of ``lease_seconds`` renewed by every heartbeat,
  so a dead worker's lease expires by itself.
- ``<p>:cooldown:<normalized StreamURL>``: set for ``cooldown_seconds`` when a task using the URL ends.

Every change that reads and writes several keys runs as one optimistic transaction (WATCH the keys,
MULTI/EXEC, retry on conflict): of many concurrent starts for one URL exactly one commits. Times are
the client's Unix time in seconds (keep workers' clocks in sync with NTP). Every Redis call has
connect and read timeouts; any Redis failure raises :class:`StoreUnavailableError` with nothing half
written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import redis
from redis.client import Pipeline

from mixer.urls import stream_url_key
from workers.model import (
    StoreUnavailableError,
    StreamURLCoolingDownError,
    StreamURLInUseError,
    TaskExistsError,
    TaskNotFoundError,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
)

T = TypeVar("T")

#: Seconds allowed to connect to Redis and for each reply.
REDIS_TIMEOUT = 2.0
#: Attempts of an optimistic transaction before giving up (only under extreme contention).
MAX_ATTEMPTS = 200


def _text(value: bytes | str) -> str:
    """A Redis reply as text (clients may or may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskStore:
    """Task records and StreamURL leases in Redis (see the module docstring).

    Args:
        client: a redis-py client (see :meth:`from_url` for one with timeouts).
        prefix: key prefix.
        cooldown_seconds: how long a StreamURL is refused after its task ends.
        lease_seconds: how long a claimed task's lease outlives its last heartbeat; a claim whose
            heartbeat is older is considered dead and may be claimed again.
        ended_ttl_seconds: how long an ended task's record is kept for status queries.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "mpu",
        cooldown_seconds: float = 10.0,
        lease_seconds: float = 15.0,
        ended_ttl_seconds: float = 86400.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.cooldown_seconds = cooldown_seconds
        self.lease_seconds = lease_seconds
        self.ended_ttl_seconds = ended_ttl_seconds

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> TaskStore:
        """A store on a new client for ``url`` with connect/read timeouts of ``REDIS_TIMEOUT`` seconds."""
        client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        return cls(client, **kwargs)

    # -- keys ---------------------------------------------------------------------------------
    def _task_key(self, app_id: str, task_id: str) -> str:
        return f"{self.prefix}:task:{app_id}:{task_id}"

    def _index_key(self, app_id: str) -> str:
        return f"{self.prefix}:tasks:{app_id}"

    def _active_key(self) -> str:
        return f"{self.prefix}:active"

    def _lease_key(self, stream_key: str) -> str:
        return f"{self.prefix}:lease:{stream_key}"

    def _cooldown_key(self, stream_key: str) -> str:
        return f"{self.prefix}:cooldown:{stream_key}"

    @staticmethod
    def _member(app_id: str, task_id: str) -> str:
        return f"{app_id}/{task_id}"

    # -- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def _redis_errors(self) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc.__class__.__name__}") from None

    def _transaction(self, keys: list[str], body: Callable[[Pipeline], T]) -> T:
        """Run ``body`` under WATCH ``keys``; ``body`` reads, then calls ``pipe.multi()`` and queues
        writes (executed when it returns). Retried when a watched key changed meanwhile."""
        with self._redis_errors():
            for _ in range(MAX_ATTEMPTS):
                with self.client.pipeline() as pipe:
                    try:
                        pipe.watch(*keys)  # type: ignore[no-untyped-call]
                        result = body(pipe)
                        if pipe.explicit_transaction:
                            pipe.execute()
                        return result
                    except redis.exceptions.WatchError:
                        continue
            raise StoreUnavailableError("Redis transaction kept conflicting; try again")

    @staticmethod
    def _read(pipe: Pipeline, key: str) -> TaskRecord | None:
        raw = pipe.get(key)
        return TaskRecord.from_json(raw) if raw else None

    # -- API side -----------------------------------------------------------------------------
    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            StoreUnavailableError: it does not.
        """
        with self._redis_errors():
            self.client.ping()

    def start_task(self, record: TaskRecord) -> TaskRecord:
        """Store a new task and take its StreamURL lease, atomically.

        Raises:
            TaskExistsError: an active task has this TaskId in this AppId.
            StreamURLInUseError: an active task pushes to the same normalized StreamURL.
            StreamURLCoolingDownError: the URL's task ended less than ``cooldown_seconds`` ago.
            StoreUnavailableError: Redis failed; nothing was written.
        """
        key = self._task_key(record.app_id, record.task_id)
        lease, cooldown = self._lease_key(record.stream_key), self._cooldown_key(record.stream_key)
        member = self._member(record.app_id, record.task_id)

        def body(pipe: Pipeline) -> TaskRecord:
            existing = self._read(pipe, key)
            if existing is not None and existing.active:
                raise TaskExistsError(f"task {record.task_id} already exists in app {record.app_id}")
            holder = pipe.get(lease)
            if holder:
                raise StreamURLInUseError(f"the StreamURL is in use by task {_text(holder)}")
            left = pipe.pttl(cooldown)
            if left > 0:
                seconds = math.ceil(left / 1000)
                raise StreamURLCoolingDownError(
                    f"the StreamURL was used by a task that stopped; retry in {seconds} s", seconds
                )
            now = time.time()
            stored = replace(record, created_at=now, updated_at=now)
            pipe.multi()
            pipe.set(key, stored.to_json())
            pipe.sadd(self._index_key(record.app_id), record.task_id)
            pipe.sadd(self._active_key(), member)
            pipe.set(lease, member)
            return stored

        return self._transaction([key, lease, cooldown], body)

    def get_task(self, app_id: str, task_id: str) -> TaskRecord:
        """The task's record.

        Raises:
            TaskNotFoundError: no such task (or its ended record expired).
            StoreUnavailableError: Redis failed.
        """
        with self._redis_errors():
            raw = self.client.get(self._task_key(app_id, task_id))
        if not raw:
            raise TaskNotFoundError(f"task {task_id} does not exist in app {app_id}")
        return TaskRecord.from_json(raw)

    def list_tasks(self, app_id: str) -> list[TaskRecord]:
        """The app's active and recently ended tasks, oldest first.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with self._redis_errors():
            ids = sorted(_text(t) for t in self.client.smembers(self._index_key(app_id)))
            raws = self.client.mget([self._task_key(app_id, t) for t in ids]) if ids else []
            gone = [t for t, raw in zip(ids, raws, strict=True) if not raw]
            if gone:
                self.client.srem(self._index_key(app_id), *gone)
        records = [TaskRecord.from_json(raw) for raw in raws if raw]
        return sorted(records, key=lambda r: r.created_at)

    def active_tasks(self) -> list[TaskRecord]:
        """Every active task of every app.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with self._redis_errors():
            members = [_text(m) for m in self.client.smembers(self._active_key())]
            keys = [self._task_key(*m.split("/", 1)) for m in members]
            raws = self.client.mget(keys) if keys else []
        records = [TaskRecord.from_json(raw) for raw in raws if raw]
        return [r for r in records if r.active]

    def request_stop(self, app_id: str, task_id: str) -> TaskRecord:
        """Ask a task to stop. A task no worker has claimed yet ends at once (status 3); an ended
        task is returned unchanged.

        Raises:
            TaskNotFoundError, StoreUnavailableError.
        """
        record = self.get_task(app_id, task_id)
        if not record.active:
            return record
        if record.state is TaskState.QUEUED:
            ended = self.finish(app_id, task_id, None, TaskStatus.STOPPED_BY_USER, "stopped by the user")
            if ended is not None:
                return ended
        key = self._task_key(app_id, task_id)

        def body(pipe: Pipeline) -> TaskRecord:
            current = self._read(pipe, key)
            if current is None:
                raise TaskNotFoundError(f"task {task_id} does not exist in app {app_id}")
            if not current.active:
                return current
            updated = replace(
                current,
                stop_requested=True,
                state=TaskState.STOPPING,
                reason="stop requested",
                updated_at=time.time(),
            )
            pipe.multi()
            pipe.set(key, updated.to_json())
            return updated

        return self._transaction([key], body)

    def update_params(self, app_id: str, task_id: str, params: TaskParams) -> TaskRecord:
        """Replace an active task's parameters (layout updates) and bump its ``spec_version``.

        Raises:
            TaskNotFoundError: no such active task.
            ValueError: the new parameters name another StreamURL.
            StoreUnavailableError: Redis failed.
        """
        key = self._task_key(app_id, task_id)

        def body(pipe: Pipeline) -> TaskRecord:
            current = self._read(pipe, key)
            if current is None or not current.active:
                raise TaskNotFoundError(f"task {task_id} is not running in app {app_id}")
            if stream_url_key(params.stream_url) != current.stream_key:
                raise ValueError("the StreamURL of a running task cannot change")
            updated = replace(
                current, params=params, spec_version=current.spec_version + 1, updated_at=time.time()
            )
            pipe.multi()
            pipe.set(key, updated.to_json())
            return updated

        return self._transaction([key], body)

    # -- worker side --------------------------------------------------------------------------
    def claim(self, app_id: str, task_id: str, worker: str) -> int | None:
        """Claim a task for ``worker``: returns a new fencing token, or None when the task is ended,
        being stopped, or claimed by a worker whose heartbeat is fresh.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        key = self._task_key(app_id, task_id)

        def body(pipe: Pipeline) -> int | None:
            current = self._read(pipe, key)
            now = time.time()
            if current is None or not current.active or current.stop_requested:
                return None
            if current.fence and now - current.heartbeat_at < self.lease_seconds:
                return None
            lease = self._lease_key(current.stream_key)
            holder = pipe.get(lease)
            member = self._member(app_id, task_id)
            if holder and _text(holder) != member:
                return None  # the URL went to another task while this one's worker was dead
            token = current.fence + 1
            updated = replace(
                current,
                fence=token,
                worker=worker,
                state=TaskState.STARTING,
                reason="starting",
                heartbeat_at=now,
                updated_at=now,
                restarts=current.restarts + (1 if current.fence else 0),
            )
            pipe.multi()
            pipe.set(key, updated.to_json())
            pipe.set(lease, member, px=int(self.lease_seconds * 1000))
            return token

        return self._transaction([key], body)

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
    ) -> TaskRecord | None:
        """Report progress and renew the lease. None when ``token`` is stale (another claim holds
        the task), the task ended, or the URL's lease belongs to another task: stop pushing then.

        Raises:
            StoreUnavailableError: Redis failed (the caller keeps mixing and tries again).
        """
        key = self._task_key(app_id, task_id)
        member = self._member(app_id, task_id)

        def body(pipe: Pipeline) -> TaskRecord | None:
            current = self._read(pipe, key)
            if current is None or not current.active or current.fence != token:
                return None
            lease = self._lease_key(current.stream_key)
            holder = pipe.get(lease)
            if holder and _text(holder) != member:
                return None
            changes: dict[str, Any] = {"heartbeat_at": time.time(), "updated_at": time.time()}
            if status is not None:
                changes["status"] = status
            if state is not None and current.state is not TaskState.STOPPING:
                changes["state"] = state
            if reason is not None and current.state is not TaskState.STOPPING:
                changes["reason"] = reason
            if layout_id is not None:
                changes["layout_id"] = layout_id
            if users is not None:
                changes["users"] = list(users)
            if stats is not None:
                changes["stats"] = dict(stats)
            updated = replace(current, **changes)
            pipe.multi()
            pipe.set(key, updated.to_json())
            pipe.set(lease, member, px=int(self.lease_seconds * 1000))
            return updated

        return self._transaction([key], body)

    def finish(
        self, app_id: str, task_id: str, token: int | None, status: TaskStatus, reason: str
    ) -> TaskRecord | None:
        """End a task: final status and reason, release its lease, set the URL's cooldown. Only the
        holder of ``token`` (or anyone, with None, for a task never claimed) may; otherwise None.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        key = self._task_key(app_id, task_id)
        member = self._member(app_id, task_id)

        def body(pipe: Pipeline) -> TaskRecord | None:
            current = self._read(pipe, key)
            if current is None or not current.active:
                return None
            if (token is None and current.fence) or (token is not None and current.fence != token):
                return None
            lease, cooldown = self._lease_key(current.stream_key), self._cooldown_key(current.stream_key)
            holder = pipe.get(lease)
            now = time.time()
            ended = replace(
                current, state=TaskState.ENDED, status=status, reason=reason, ended_at=now, updated_at=now
            )
            pipe.multi()
            pipe.set(key, ended.to_json(), px=int(self.ended_ttl_seconds * 1000))
            pipe.srem(self._active_key(), member)
            if holder is None or _text(holder) == member:
                pipe.delete(lease)
                pipe.set(cooldown, member, px=max(1, int(self.cooldown_seconds * 1000)))
            return ended

        return self._transaction([key, self._lease_key(self.get_task(app_id, task_id).stream_key)], body)

    def stale_tasks(self) -> list[TaskRecord]:
        """Active, claimed tasks whose heartbeat is older than ``lease_seconds`` (their worker died).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        now = time.time()
        return [r for r in self.active_tasks() if r.fence and now - r.heartbeat_at >= self.lease_seconds]
