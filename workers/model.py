"""What a mix task is, as stored in Redis and shown by the API: parameters, status, errors.

Statuses follow Alibaba Cloud RTC's GetMPUTaskStatus codes (shared/reference/mpu-api.md); ``state``
and ``reason`` say more. A task is *active* until it ends; only active tasks hold their StreamURL.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from layouts import SpecError
from mixer.spec import TaskSpec, UserPane, build_task_spec
from mixer.urls import validate_stream_url


class TaskStatus(enum.IntEnum):
    """The vendor's status codes (``Status`` of GetMPUTaskStatus)."""

    WAITING = 0  # started, waiting for the channel to have a publisher (or queued for a worker)
    RUNNING = 1  # pushing
    STOPPED = 2  # stopped (by the system: failed, or given up)
    STOPPED_BY_USER = 3
    CHANNEL_ENDED = 4  # the channel stayed empty for the auto-stop time
    NETWORK_PROBLEM = 5  # CDN/network problem (retrying)
    PUSH_URL_PROBLEM = 6  # the push URL is refused (retrying)


class TaskState(enum.StrEnum):
    """Where a task is in its life (finer than the status code)."""

    QUEUED = "queued"  # waiting for a worker with a free slot
    STARTING = "starting"  # claimed by a worker, opening the sink and the channel
    RUNNING = "running"
    RETRYING = "retrying"  # the sink failed; reconnecting with backoff
    STOPPING = "stopping"  # stop requested; the worker is flushing
    ENDED = "ended"
    WORKER_LOST = "worker lost"  # shown, never stored: the worker stopped heartbeating


@dataclass(frozen=True)
class TaskParams:
    """StartMPUTask's parameters in snake_case, JSON-serialisable; :meth:`to_spec` validates them.

    Attributes mirror the wire names: ``channel_id`` (ChannelId), ``stream_url`` (StreamURL),
    ``task_profile`` (TaskProfile), ``media_encode`` (MediaEncode), ``layout_ids`` (LayoutIds),
    ``user_panes`` (UserPanes: dicts with pane_id, user_id, source_type), ``background_color``
    (BackgroundColor), ``crop_mode`` (CropMode).
    """

    channel_id: str
    stream_url: str
    media_encode: int = 27
    task_profile: str | None = None
    layout_ids: tuple[int, ...] = ()
    user_panes: tuple[dict[str, Any], ...] = ()
    background_color: int = 0
    crop_mode: int = 2
    sub_spec_users: tuple[str, ...] = ()
    sub_spec_audio_users: tuple[str, ...] = ()

    def ignored(self) -> list[str]:
        """The names of parameters given but not applied by the mixer yet (issue #6), for the status."""
        return [name for name in ("sub_spec_users", "sub_spec_audio_users") if getattr(self, name)]

    def to_spec(self) -> TaskSpec:
        """Validate into the mixer's :class:`TaskSpec` (and the StreamURL).

        Raises:
            SpecError: with the vendor-compatible code of the first invalid parameter.
        """
        validate_stream_url(self.stream_url)
        panes = []
        for pane in self.user_panes:
            try:
                panes.append(
                    UserPane(int(pane["pane_id"]), str(pane["user_id"]), pane.get("source_type", "camera"))
                )
            except (KeyError, TypeError, ValueError):
                raise SpecError("InvalidParameter", f"malformed UserPane {pane!r}", "UserPanes") from None
        return build_task_spec(
            layout_ids=list(self.layout_ids) or None,
            media_encode_id=self.media_encode,
            profile=self.task_profile,
            user_panes=panes,
            background_color=self.background_color,
            crop_mode=self.crop_mode,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["layout_ids"] = list(self.layout_ids)
        data["user_panes"] = [dict(p) for p in self.user_panes]
        data["sub_spec_users"] = list(self.sub_spec_users)
        data["sub_spec_audio_users"] = list(self.sub_spec_audio_users)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskParams:
        """Inverse of :meth:`to_dict`."""
        return cls(
            channel_id=data["channel_id"],
            stream_url=data["stream_url"],
            media_encode=data.get("media_encode", 27),
            task_profile=data.get("task_profile"),
            layout_ids=tuple(data.get("layout_ids") or ()),
            user_panes=tuple(dict(p) for p in data.get("user_panes") or ()),
            background_color=data.get("background_color", 0),
            crop_mode=data.get("crop_mode", 2),
            sub_spec_users=tuple(data.get("sub_spec_users") or ()),
            sub_spec_audio_users=tuple(data.get("sub_spec_audio_users") or ()),
        )


@dataclass
class TaskRecord:
    """A mix task as stored.

    Attributes:
        app_id, task_id: identity (TaskId unique per AppId among active tasks).
        params: the task's parameters (layout updates replace them and bump ``spec_version``).
        status, state, reason: see :class:`TaskStatus` and :class:`TaskState`; reason is for people.
        stream_key: the normalized StreamURL (:func:`mixer.urls.stream_url_key`), the lease's name.
        worker: the worker running it (hostname/pid), if claimed.
        fence: the fencing token of the current claim (0: never claimed).
        restarts: how many times it was claimed again after a worker died.
        stop_requested: a stop was asked for; the worker finishes at its next check.
        spec_version: bumped at each parameter update; the worker applies a new version at once.
        created_at, updated_at, heartbeat_at, ended_at: Unix times in seconds (0: never).
        layout_id, users: the layout in use and the channel's users (join order), from the worker.
        stats: output statistics from the worker (frames, dropped frames, bytes...).
    """

    app_id: str
    task_id: str
    params: TaskParams
    stream_key: str
    status: TaskStatus = TaskStatus.WAITING
    state: TaskState = TaskState.QUEUED
    reason: str = "queued: waiting for a worker"
    worker: str | None = None
    fence: int = 0
    restarts: int = 0
    stop_requested: bool = False
    spec_version: int = 1
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    heartbeat_at: float = 0.0
    ended_at: float = 0.0
    layout_id: int | None = None
    users: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True until the task has ended."""
        return self.state is not TaskState.ENDED

    def as_seen(self, lease_seconds: float, now: float | None = None) -> TaskRecord:
        """The record as it should be shown: a claimed task whose heartbeat is older than
        ``lease_seconds`` is not pushing any more (its worker died), whatever it last reported."""
        now = time.time() if now is None else now
        silent = now - self.heartbeat_at
        if not self.active or not self.fence or silent < lease_seconds:
            return self
        return replace(
            self,
            status=TaskStatus.WAITING,
            state=TaskState.WORKER_LOST,
            reason=f"worker {self.worker} stopped heartbeating {silent:.0f} s ago; "
            "the task restarts on the next free worker",
        )

    def to_json(self) -> str:
        """Serialise for Redis."""
        data = asdict(self)
        data["params"] = self.params.to_dict()
        data["status"] = int(self.status)
        data["state"] = str(self.state)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskRecord:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        data["params"] = TaskParams.from_dict(data["params"])
        data["status"] = TaskStatus(data["status"])
        data["state"] = TaskState(data["state"])
        return cls(**data)


class StoreError(RuntimeError):
    """A task-store failure with an API error code and HTTP status.

    Attributes:
        code: the error code returned to clients.
        http_status: the HTTP status for it.
    """

    code = "InternalError"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TaskExistsError(StoreError):
    """An active task with this TaskId exists for the AppId."""

    code, http_status = "TaskExisted", 409


class TaskNotFoundError(StoreError):
    """No such task for the AppId."""

    code, http_status = "InvalidTask.NotFound", 404


class StreamURLInUseError(StoreError):
    """Another active task pushes to the same (normalized) StreamURL."""

    code, http_status = "StreamURL.InUse", 409


class StreamURLCoolingDownError(StoreError):
    """The StreamURL was used by a task that stopped less than the cooldown ago.

    Attributes:
        seconds_left: whole seconds until the URL may be used again (rounded up).
    """

    code, http_status = "StreamURL.CoolingDown", 409

    def __init__(self, message: str, seconds_left: int) -> None:
        super().__init__(message)
        self.seconds_left = seconds_left


class StoreUnavailableError(StoreError):
    """Redis cannot be reached; nothing was changed."""

    code, http_status = "ServiceUnavailable", 503
