"""Ingest records in Redis (issue 19): create, control, stop, and the worker's claim, heartbeat and end.

An ingest runs on the workers like a mix task, with the same rules: a claim takes a fencing token
(tokens increase and are never reused) and a share of its node's capacity (:data:`INGEST_COST`
units, counted with the node's tasks), the worker heartbeats every second with the progress and gets
the host's controls back, a worker whose heartbeat is older than the lease loses the ingest to the
next claim (the reconciler queues it again), and only the current claim can end it.

Records live beside the tasks' under ``{prefix}:task:{app_id}/ingest:{ingest_id}`` (a TaskId never
holds ``:``, so no task has that name), which lets a node's load count tasks and ingests alike; the
app's ingests are in ``{prefix}:app:{app_id}:ingests`` and the active ones in
``{prefix}:ingests:active``. Every field holds JSON text. An ended ingest's record expires after
:data:`ENDED_TTL_SECONDS`.

The API process uses this module (no media library here).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from rtc_mpu.spec.ingest import Control, IngestSpec, IngestState
from rtc_mpu.spec.urls import redact_url
from rtc_mpu.workers.store import load_script

#: Capacity units an ingest takes on its node: a 1280x720 30 fps decode, scale and re-encode measured
#: 0.19-0.20 CPU-s per second (``python -m bench.ingest_cost``), 0.57 of a unit
#: (:data:`rtc_mpu.workers.capacity.UNIT_CPU`, 0.35 CPU-s/s: a 4-user 720p mix, issue 18); rounded up
#: for HLS/RTMP sources' demuxing.
INGEST_COST = 0.6
#: Seconds an ended ingest's record is kept (listed, readable).
ENDED_TTL_SECONDS = 86400.0
#: Seconds without a heartbeat before another worker may take an ingest over.
DEFAULT_LEASE_SECONDS = 8.0


class IngestError(Exception):
    """A refused ingest request.

    Attributes:
        status: the HTTP status (404, 409).
        code: the error code (``InvalidIngest.NotFound``, ``InvalidIngest.Exists``,
            ``InvalidIngest.UserInUse``, ``InvalidIngest.Ended``).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class IngestRecord:
    """An ingest as stored.

    Attributes:
        app_id: the app.
        spec: what was asked for.
        state: starting, playing, paused, ended or failed.
        reason: why it ended or failed, or what it waits for.
        position_ms: media time played, milliseconds, at ``position_at`` (``time.time()`` seconds;
            0: never reported).
        duration_ms: the media's duration, or None (unknown or live).
        volume_percent: the volume now.
        active: not ended.
        fence: the current claim's token (0: never claimed).
        heartbeat_at: the last heartbeat, server time seconds (0: none).
        worker: the worker running it, or None.
        restarts: how many times another worker took it over.
        stop_requested: a stop was asked for.
        control: the host's latest controls (``state``, ``position_seconds``, ``volume``, ``version``).
        created_at: server time seconds.
    """

    app_id: str
    spec: IngestSpec
    state: IngestState
    reason: str
    position_ms: int
    position_at: float
    duration_ms: int | None
    volume_percent: int
    active: bool
    fence: int
    heartbeat_at: float
    worker: str | None
    restarts: int
    stop_requested: bool
    control: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def control_version(self) -> int:
        """The version of :attr:`control` (0: the host changed nothing)."""
        return int(self.control.get("version", 0))

    def position_now_ms(self, now: float | None = None) -> int:
        """Where a playing ingest is now (its last position plus the time since), else its position."""
        if self.state is not IngestState.PLAYING or not self.position_at:
            return self.position_ms
        moment = time.time() if now is None else now
        return self.position_ms + max(0, round((moment - self.position_at) * 1000))

    def to_json(self) -> dict[str, Any]:
        """The API's view (``GET .../ingests/{id}``): the URL redacted."""
        url = self.spec.url
        return {
            "ingest_id": self.spec.ingest_id,
            "channel_id": self.spec.channel_id,
            "user_id": self.spec.user_id,
            "url": url if url.startswith("media:") else redact_url(url),
            "loop": self.spec.loop,
            "state": str(self.state),
            "reason": self.reason,
            "position_ms": self.position_now_ms(),
            "duration_ms": self.duration_ms,
            "volume": self.volume_percent,
            "restarts": self.restarts,
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json(fields: dict[str, str], name: str, default: Any = None) -> Any:
    raw = fields.get(name)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


class IngestStore:
    """The ingest records on the task store's Redis (``client``, key ``prefix``).

    Args:
        client: the Redis client.
        prefix: the task store's key prefix.
        lease_seconds: seconds without a heartbeat before an ingest may be taken over.
    """

    def __init__(
        self, client: redis.Redis, prefix: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self._create = client.register_script(load_script("ingest_create.lua", prelude=True))
        self._claim = client.register_script(load_script("ingest_claim.lua", prelude=True))
        self._heartbeat = client.register_script(load_script("ingest_heartbeat.lua", prelude=True))
        self._finish = client.register_script(load_script("ingest_finish.lua", prelude=True))
        self._control = client.register_script(load_script("ingest_control.lua", prelude=True))
        self._release = client.register_script(load_script("ingest_release.lua", prelude=True))

    # -- keys ----------------------------------------------------------------------------------
    @staticmethod
    def name(app_id: str, ingest_id: str) -> str:
        """The ingest's name: its entry in a node's load, and the tail of its record's key."""
        return f"{app_id}/ingest:{ingest_id}"

    def record_key(self, app_id: str, ingest_id: str) -> str:
        """The record's key."""
        return f"{self.prefix}:task:{self.name(app_id, ingest_id)}"

    def _index_key(self, app_id: str) -> str:
        return f"{self.prefix}:app:{app_id}:ingests"

    @property
    def active_key(self) -> str:
        """The set of active ingests' names."""
        return f"{self.prefix}:ingests:active"

    # -- the API's side -----------------------------------------------------------------------------
    def create(self, app_id: str, spec: IngestSpec, cost: float = INGEST_COST) -> IngestRecord:
        """Store a new ingest (state ``starting``); an ended one of the same id is replaced.

        Raises:
            IngestError: 409 ``InvalidIngest.Exists`` (an active ingest has the id),
                ``InvalidIngest.UserInUse`` (another active ingest of the app publishes as this user
                in this channel).
            redis.RedisError: Redis failed.
        """
        fields = {
            "channel_id": json.dumps(spec.channel_id),
            "user_id": json.dumps(spec.user_id),
            "url": json.dumps(spec.url),
            "loop": json.dumps(spec.loop),
            "start_at": json.dumps(spec.start_at_seconds),
            "volume": json.dumps(spec.volume_percent),
            "ingest_state": json.dumps(str(IngestState.STARTING)),
            "reason": json.dumps("queued: waiting for a worker"),
            "position_ms": json.dumps(round(spec.start_at_seconds * 1000)),
            "position_at": "0",
            "duration_ms": "null",
        }
        name = self.name(app_id, spec.ingest_id)
        reply = self._create(
            keys=[self.record_key(app_id, spec.ingest_id), self._index_key(app_id), self.active_key],
            args=[
                self.prefix,
                name,
                json.dumps(fields),
                json.dumps(cost),
                fields["channel_id"],
                fields["user_id"],
                f"{app_id}/ingest:",
            ],
        )
        result = _text(reply[0])
        if result == "exists":
            raise IngestError(409, "InvalidIngest.Exists", f"ingest {spec.ingest_id!r} exists and is active")
        if result == "user_in_use":
            raise IngestError(
                409,
                "InvalidIngest.UserInUse",
                f"another ingest publishes as {spec.user_id!r} in channel {spec.channel_id!r}",
            )
        return self.get(app_id, spec.ingest_id)

    def get(self, app_id: str, ingest_id: str) -> IngestRecord:
        """The ingest.

        Raises:
            IngestError: 404 ``InvalidIngest.NotFound``.
            redis.RedisError: Redis failed.
        """
        raw = self.client.hgetall(self.record_key(app_id, ingest_id))
        if not raw:
            raise IngestError(404, "InvalidIngest.NotFound", f"no ingest {ingest_id!r} for AppId {app_id!r}")
        return self._record(app_id, ingest_id, {_text(k): _text(v) for k, v in raw.items()})

    def list_app(self, app_id: str) -> list[IngestRecord]:
        """The app's ingests (active and recently ended), by id. Expired records leave the index."""
        records = []
        for member in sorted(_text(m) for m in self.client.smembers(self._index_key(app_id))):
            ingest_id = member.partition("/ingest:")[2]
            try:
                records.append(self.get(app_id, ingest_id))
            except IngestError:
                self.client.srem(self._index_key(app_id), member)
        return records

    def control(self, app_id: str, ingest_id: str, change: Control) -> IngestRecord:
        """Record the host's change for the worker (it applies it within a heartbeat interval).

        Raises:
            IngestError: 404 ``InvalidIngest.NotFound``, 409 ``InvalidIngest.Ended``.
            redis.RedisError: Redis failed.
        """
        body: dict[str, Any] = {}
        if change.state is not None:
            body["state"] = str(change.state)
        if change.position_seconds is not None:
            body["position_seconds"] = change.position_seconds
            body["seek_id"] = time.time_ns()  # a seek to the same position again is a new seek
        if change.volume_percent is not None:
            body["volume"] = change.volume_percent
        self._change(app_id, ingest_id, "control", body)
        return self.get(app_id, ingest_id)

    def stop(self, app_id: str, ingest_id: str) -> IngestRecord:
        """Ask for the ingest to stop (it ends at once when no worker runs it). An ended one: as it is.

        Raises:
            IngestError: 404 ``InvalidIngest.NotFound``.
            redis.RedisError: Redis failed.
        """
        try:
            self._change(app_id, ingest_id, "stop", {})
        except IngestError as exc:
            if exc.code != "InvalidIngest.Ended":
                raise
        return self.get(app_id, ingest_id)

    def _change(self, app_id: str, ingest_id: str, kind: str, body: dict[str, Any]) -> None:
        reply = self._control(
            keys=[self.record_key(app_id, ingest_id), self.active_key],
            args=[
                self.prefix,
                self.name(app_id, ingest_id),
                kind,
                json.dumps(body),
                round(self.lease_seconds * 1000),
                round(ENDED_TTL_SECONDS * 1000),
            ],
        )
        result = _text(reply[0])
        if result == "missing":
            raise IngestError(404, "InvalidIngest.NotFound", f"no ingest {ingest_id!r} for AppId {app_id!r}")
        if result == "ended":
            raise IngestError(409, "InvalidIngest.Ended", f"ingest {ingest_id!r} has ended")

    # -- the worker's side --------------------------------------------------------------------------
    def claim(
        self,
        app_id: str,
        ingest_id: str,
        worker: str,
        *,
        node: str | None = None,
        cost: float = INGEST_COST,
        capacity: float | None = None,
    ) -> int | str | None:
        """Claim the ingest for ``worker`` (on ``node``, within its ``capacity`` units).

        Returns:
            The fencing token; None when it is gone, stopped or held by a live worker;
            ``"no_capacity"`` when it does not fit the node.
        """
        keys = [self.record_key(app_id, ingest_id), f"{self.prefix}:fence", self.active_key]
        if node is not None:
            keys.append(f"{self.prefix}:load:{node}")
        reply = self._claim(
            keys=keys,
            args=[
                self.prefix,
                self.name(app_id, ingest_id),
                json.dumps(worker),
                round(self.lease_seconds * 1000),
                json.dumps(node),
                json.dumps(cost),
                "" if capacity is None or capacity <= 0 else json.dumps(capacity),
                round(ENDED_TTL_SECONDS * 1000),
            ],
        )
        result = _text(reply[0])
        if result == "ok":
            return int(reply[1])
        if result == "no_capacity":
            return "no_capacity"
        return None

    def heartbeat(
        self,
        app_id: str,
        ingest_id: str,
        fence: int,
        progress: dict[str, Any],
        *,
        node: str | None = None,
        cost: float = INGEST_COST,
    ) -> tuple[dict[str, Any], bool] | None:
        """Report ``progress`` (``state``, ``reason``, ``position_ms``, ``position_at``,
        ``duration_ms``, ``volume``) under the claim ``fence``.

        Returns:
            (the host's controls, whether a stop was requested), or None when the claim was lost
            (another worker took over, or the ingest ended): stop at once.
        """
        keys = [self.record_key(app_id, ingest_id)]
        if node is not None:
            keys.append(f"{self.prefix}:load:{node}")
        reply = self._heartbeat(
            keys=keys,
            args=[
                self.prefix,
                self.name(app_id, ingest_id),
                str(fence),
                json.dumps(self._progress(progress)),
                json.dumps(cost),
            ],
        )
        if _text(reply[0]) != "ok":
            return None
        control = json.loads(_text(reply[1]) or "{}")
        return (control if isinstance(control, dict) else {}), _text(reply[3]) == "true"

    def finish(
        self,
        app_id: str,
        ingest_id: str,
        fence: int,
        state: IngestState,
        reason: str,
        progress: dict[str, Any],
    ) -> bool:
        """End the ingest (``ended`` or ``failed``) under the claim ``fence``.

        Returns:
            False when the claim was lost (nothing changed).
        """
        reply = self._finish(
            keys=[self.record_key(app_id, ingest_id), self.active_key],
            args=[
                self.prefix,
                self.name(app_id, ingest_id),
                str(fence),
                json.dumps(str(state)),
                json.dumps(reason),
                json.dumps(self._progress(progress)),
                round(ENDED_TTL_SECONDS * 1000),
            ],
        )
        return _text(reply[0]) == "ok"

    def release(self, app_id: str, ingest_id: str, fence: int, progress: dict[str, Any]) -> bool:
        """Give the ingest back under the claim ``fence`` (the worker shuts down): the next claim, by
        any worker, succeeds at once and resumes from ``progress``.

        Returns:
            False when the claim was lost (nothing changed).
        """
        reply = self._release(
            keys=[self.record_key(app_id, ingest_id)],
            args=[
                self.prefix,
                self.name(app_id, ingest_id),
                str(fence),
                json.dumps(self._progress(progress)),
            ],
        )
        return _text(reply[0]) == "ok"

    def stale(self, now: float | None = None, queued_after_seconds: float = 30.0) -> list[tuple[str, str]]:
        """Active ingests nobody runs: claimed but without a heartbeat for the lease, or never claimed
        for ``queued_after_seconds`` (the message was lost). (app_id, ingest_id) pairs."""
        moment = self._server_time() if now is None else now
        found = []
        for member in (_text(m) for m in self.client.smembers(self.active_key)):
            app_id, _, ingest_id = member.partition("/ingest:")
            values = self.client.hmget(
                self.record_key(app_id, ingest_id), ["fence", "heartbeat_at", "created_at"]
            )
            fence, heartbeat, created = (_text(v) if v is not None else "0" for v in values)
            if int(fence or 0) > 0:
                if moment - float(heartbeat or 0) >= self.lease_seconds:
                    found.append((app_id, ingest_id))
            elif moment - float(created or 0) >= queued_after_seconds:
                found.append((app_id, ingest_id))
        return found

    def channel_progress(
        self, app_id: str, channel_id: str, now: float | None = None
    ) -> list[dict[str, Any]]:
        """The progress of the app's active ingests in ``channel_id``, for the mix's SEI (``"ingest"``):
        ``[{"ingest_id", "user_id", "state", "position_ms", "duration_ms", "sent_at"}]``, by id;
        ``position_ms`` is where a playing one is at ``sent_at`` (ms since the epoch)."""
        moment = time.time() if now is None else now
        return [
            {
                "ingest_id": record.spec.ingest_id,
                "user_id": record.spec.user_id,
                "state": str(record.state),
                "position_ms": record.position_now_ms(moment),
                "duration_ms": record.duration_ms,
                "sent_at": round(moment * 1000),
            }
            for record in self.list_app(app_id)
            if record.active and record.spec.channel_id == channel_id
        ]

    def _server_time(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    @staticmethod
    def _progress(progress: dict[str, Any]) -> dict[str, str]:
        names = {
            "state": "ingest_state",
            "reason": "reason",
            "position_ms": "position_ms",
            "position_at": "position_at",
            "duration_ms": "duration_ms",
            "volume": "volume",
        }
        return {
            names[k]: json.dumps(str(v) if k == "state" else v) for k, v in progress.items() if k in names
        }

    def _record(self, app_id: str, ingest_id: str, fields: dict[str, str]) -> IngestRecord:
        spec = IngestSpec(
            ingest_id=ingest_id,
            channel_id=str(_json(fields, "channel_id", "")),
            user_id=str(_json(fields, "user_id", "")),
            url=str(_json(fields, "url", "")),
            loop=bool(_json(fields, "loop", False)),
            start_at_seconds=float(_json(fields, "start_at", 0.0)),
            volume_percent=int(_json(fields, "volume", 100)),
        )
        state_text = _json(fields, "ingest_state", "starting")
        try:
            state = IngestState(state_text)
        except ValueError:
            state = IngestState.FAILED
        worker = _json(fields, "worker")
        control = _json(fields, "control", {})
        return IngestRecord(
            app_id=app_id,
            spec=spec,
            state=state,
            reason=str(_json(fields, "reason", "")),
            position_ms=int(_json(fields, "position_ms", 0) or 0),
            position_at=float(_json(fields, "position_at", 0) or 0),
            duration_ms=_json(fields, "duration_ms"),
            volume_percent=int(_json(fields, "volume", 100)),
            active=fields.get("state") != '"ended"',
            fence=int(fields.get("fence") or 0),
            heartbeat_at=float(fields.get("heartbeat_at") or 0),
            worker=str(worker) if worker else None,
            restarts=int(fields.get("restarts") or 0),
            stop_requested=fields.get("stop_requested") == "true",
            control=control if isinstance(control, dict) else {},
            created_at=float(fields.get("created_at") or 0),
        )


__all__ = ["ENDED_TTL_SECONDS", "INGEST_COST", "IngestError", "IngestRecord", "IngestStore"]
