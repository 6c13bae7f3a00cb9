"""What a mix task is, as stored in Redis and shown by the API: parameters, status, errors.

Statuses follow Alibaba Cloud RTC's GetMPUTaskStatus codes (the vendor's MPU API, 2018-01-11); ``state``
and ``reason`` say more. A task is *active* until it ends; only active tasks hold their StreamURL.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from rtc_mpu.layouts import FieldPath, Layout, SpecError, layout_from_dict
from rtc_mpu.spec.outputs import OutputSpec, output_from_dict
from rtc_mpu.spec.overlays import build_overlays, build_subscriptions
from rtc_mpu.spec.task import TaskSpec, UserPane, build_task_spec
from rtc_mpu.spec.urls import validate_stream_url
from rtc_mpu.workers.stats import TaskStats


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


#: TaskParams fields holding lists (tuples in the dataclass, JSON arrays when stored).
_LIST_FIELDS = (
    "layout_ids",
    "user_panes",
    "backgrounds",
    "watermarks",
    "clock_widgets",
    "sub_spec_users",
    "sub_spec_audio_users",
    "sub_spec_camera_users",
    "sub_spec_share_screen_users",
    "unsub_spec_audio_users",
    "unsub_spec_camera_users",
    "unsub_spec_share_screen_users",
    "custom_layouts",
    "outputs",
)
#: Subscription lists (SubSpec*/UnsubSpec*).
_SUBSCRIPTION_FIELDS = tuple(name for name in _LIST_FIELDS if "spec_" in name)
#: Scalar parameters accepted but not applied by the mixer, with the value that means "off": any
#: other value is reported by :meth:`TaskParams.ignored`.
_NOT_APPLIED = {
    "rtp_ext_info": 0,
    "time_stamp_ref": None,
    "task_type": None,
    "task_mode": 0,
}


@dataclass(frozen=True)
class TaskParams:
    """StartMPUTask's parameters in snake_case, JSON-serialisable; :meth:`to_spec` validates them.

    Every field is the snake_case form of the wire parameter of the same name
    (the vendor's MPU API, 2018-01-11): ``channel_id`` (ChannelId), ``stream_url`` (StreamURL),
    ``task_profile`` (TaskProfile), ``media_encode`` (MediaEncode), ``layout_ids`` (LayoutIds),
    ``user_panes`` (UserPanes: dicts with pane_id, user_id, source_type, segment_type, images,
    texts), ``background_color`` (BackgroundColor, ``R + G*256 + B*65536``), ``crop_mode``
    (CropMode), ``backgrounds``/``watermarks``/``clock_widgets`` (dicts of the overlay fields,
    coordinates normalized to the canvas), the SubSpec*/UnsubSpec* user lists, ``mix_mode``,
    ``stream_type``, ``source_type``, ``payload_type``, ``report_vad``, ``vad_interval``,
    ``rtp_ext_info``, ``time_stamp_ref``, ``task_type``, ``task_mode`` and ``enhanced_param``
    (EnhancedParam.*, booleans and BackgroundPath).

    ``custom_layouts`` is not a wire parameter: the custom layouts (:meth:`layouts.Layout.to_dict`)
    that ``layout_ids`` names, copied when the task starts or its layout changes, so a task runs
    the same on any worker whatever happens to the stored layout afterwards.
    """

    channel_id: str
    stream_url: str
    media_encode: int = 27
    task_profile: str | None = None
    layout_ids: tuple[int, ...] = ()
    user_panes: tuple[dict[str, Any], ...] = ()
    background_color: int = 0
    crop_mode: int = 2
    backgrounds: tuple[dict[str, Any], ...] = ()
    watermarks: tuple[dict[str, Any], ...] = ()
    clock_widgets: tuple[dict[str, Any], ...] = ()
    sub_spec_users: tuple[str, ...] = ()
    sub_spec_audio_users: tuple[str, ...] = ()
    sub_spec_camera_users: tuple[str, ...] = ()
    sub_spec_share_screen_users: tuple[str, ...] = ()
    unsub_spec_audio_users: tuple[str, ...] = ()
    unsub_spec_camera_users: tuple[str, ...] = ()
    unsub_spec_share_screen_users: tuple[str, ...] = ()
    mix_mode: int = 1
    stream_type: int = 0
    source_type: str = "camera"
    payload_type: int = 0
    report_vad: int = 0
    vad_interval: int | None = None
    rtp_ext_info: int = 0
    time_stamp_ref: int | None = None
    task_type: int | None = None
    task_mode: int = 0
    enhanced_param: dict[str, Any] = field(default_factory=dict)
    custom_layouts: tuple[dict[str, Any], ...] = ()
    # Issue 13 (several outputs per task), the contract shared by the API and the worker: the
    # :func:`rtc_mpu.spec.outputs.output_to_dict` objects of EVERY output of the task, in id order,
    # INCLUDING the RTMP output that ``stream_url`` names (``o1`` when stream_url was given). The
    # API validates them (:func:`rtc_mpu.spec.outputs.parse_output`/``check_outputs``) before they are
    # stored; read them with :meth:`output_specs`. ``stream_url`` stays the first RTMP output's URL
    # ("" when the task has none). Records of older versions (no ``outputs``) read as
    # ``[{"output_id": "o1", "kind": "rtmp", "url": stream_url}]`` (:meth:`from_dict`). Adding or
    # removing an output bumps the record's ``spec_version`` like any other update.
    outputs: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        """A task made from ``stream_url`` alone (the vendor RPC dialect, records of older versions)
        has that URL as its one output ``o1``."""
        if not self.outputs and self.stream_url:
            object.__setattr__(
                self, "outputs", ({"output_id": "o1", "kind": "rtmp", "url": self.stream_url},)
            )

    def output_specs(self) -> list[OutputSpec]:
        """The outputs as specs (:mod:`rtc_mpu.spec.outputs`), in stored order.

        Raises:
            SpecError: a stored output is not valid (only records written by hand).
        """
        return [output_from_dict(item) for item in self.outputs]

    def ignored(self) -> list[str]:
        """Parameters given but not applied by the mixer, as snake_case paths (portrait
        segmentation ``user_panes.segment_type``, virtual background ``task_mode``,
        ``enhanced_param.enable_...``, ``rtp_ext_info``, ``time_stamp_ref``, ``task_type``), for the
        task status: a client can see that its request was accepted but is not honoured."""
        result = []
        if any(pane.get("segment_type") for pane in self.user_panes):
            result.append("user_panes.segment_type")
        result += [name for name, off in _NOT_APPLIED.items() if getattr(self, name) != off]
        result += [f"enhanced_param.{name}" for name, value in sorted(self.enhanced_param.items()) if value]
        return result

    def custom_layout_objects(self) -> dict[int, Layout]:
        """The copied custom layouts by id.

        Raises:
            SpecError: a stored copy is not a valid layout (``InvalidLayoutID.Malformed``).
        """
        layouts = [layout_from_dict(data) for data in self.custom_layouts]
        return {layout.id: layout for layout in layouts}

    def to_spec(self, clock_time_zone: str | None = None) -> TaskSpec:
        """Validate into the mixer's :class:`TaskSpec` (and the StreamURL).

        Args:
            clock_time_zone: time zone of clocks that name none (the worker's setting).

        Raises:
            SpecError: with the vendor-compatible code of the first invalid parameter.
        """
        validate_stream_url(self.stream_url)
        panes = []
        for index, pane in enumerate(self.user_panes):
            try:
                panes.append(
                    UserPane(int(pane["pane_id"]), str(pane["user_id"]), pane.get("source_type", "camera"))
                )
            except (KeyError, TypeError, ValueError):
                raise SpecError(
                    "InvalidParameter", f"malformed UserPane {pane!r}", ("user_panes", index)
                ) from None
        overlays = build_overlays(
            backgrounds=self.backgrounds,
            watermarks=self.watermarks,
            clock_widgets=self.clock_widgets,
            user_panes=self.user_panes,
            clock_time_zone=clock_time_zone,
        )
        subscriptions = build_subscriptions(**{name: getattr(self, name) for name in _SUBSCRIPTION_FIELDS})
        return build_task_spec(
            layout_ids=list(self.layout_ids) or None,
            media_encode_id=self.media_encode,
            profile=self.task_profile,
            user_panes=panes,
            background_color=self.background_color,
            crop_mode=self.crop_mode,
            custom_layouts=self.custom_layout_objects(),
            overlays=None if overlays.empty else overlays,
            subscriptions=None if subscriptions.everyone else subscriptions,
            mix_mode=self.mix_mode,
            stream_type=self.stream_type,
            relay_source=self.source_type,
            report_vad=bool(self.report_vad),
            vad_interval_ms=self.vad_interval,
            payload_type=self.payload_type,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        for name in _LIST_FIELDS:
            data[name] = [dict(item) if isinstance(item, dict) else item for item in getattr(self, name)]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskParams:
        """Inverse of :meth:`to_dict`; fields missing from ``data`` (older records) take their defaults.

        Raises:
            KeyError: ``channel_id`` or ``stream_url`` is missing.
        """
        values: dict[str, Any] = {"channel_id": data["channel_id"], "stream_url": data["stream_url"]}
        for item in fields(cls):
            if item.name in values or item.name not in data:
                continue
            value = data[item.name]
            if item.name in _LIST_FIELDS:
                value = tuple(dict(v) if isinstance(v, dict) else v for v in value or ())
            elif item.name == "enhanced_param":
                value = dict(value or {})
            values[item.name] = value
        return cls(**values)


@dataclass
class TaskRecord:
    """A mix task as stored.

    Attributes:
        app_id, task_id: identity (TaskId unique per AppId among active tasks).
        params: the task's parameters (layout updates replace them and bump ``spec_version``).
        status, state, reason: see :class:`TaskStatus` and :class:`TaskState`; reason is for people.
        stream_key: the canonical StreamURL (:func:`rtc_mpu.spec.urls.stream_url_key`), its destination as
            spelled.
        worker: the worker running it (hostname/pid), if claimed.
        node: the worker node (Celery node name, ``-n``) whose capacity it uses, if claimed by one.
        cost: what it costs that node, in units (:mod:`rtc_mpu.workers.capacity`; 0.0 until claimed).
        fence: the fencing token of the current claim (0: never claimed).
        restarts: how many times it was claimed again after a worker died.
        stop_requested: a stop was asked for; the worker finishes at its next check.
        spec_version: bumped at each parameter update; the worker applies a new version at once.
        created_at, updated_at, heartbeat_at, ended_at: Unix times in seconds (0: never).
        layout_id, users: the layout in use and the channel's users (join order), from the worker.
        stats: the output statistics its worker last reported (:class:`rtc_mpu.workers.stats.TaskStats`);
            None until a worker's first heartbeat (shown as ``{}``, and stored so).
        lease_keys: the names of its StreamURL leases and cooldowns (:func:`rtc_mpu.spec.urls.lease_keys`:
            ``stream_key`` and the addresses its host resolved to when it started), all taken and
            released together; empty in records of older versions, where ``stream_key`` is the only one.
            With several RTMP outputs: the union of every RTMP output's keys (``output_leases``).
        output_leases: each RTMP output's own lease keys (output id -> keys), released with their own
            cooldown when that output is removed; empty in records of older versions (the one output
            ``o1`` has ``lease_keys``; :meth:`leases_of`).
        last_output: the highest output number ever assigned in this task (``o3`` -> 3), so that ids
            of removed outputs are never reused (0 in records of older versions: see
            :meth:`used_output_ids`).
        outputs_version: bumped each time an output is added or removed (a parameter update made from
            an older read of the outputs is retried, never writes them back).
    """

    app_id: str
    task_id: str
    params: TaskParams
    stream_key: str
    status: TaskStatus = TaskStatus.WAITING
    state: TaskState = TaskState.QUEUED
    reason: str = "queued: waiting for a worker"
    worker: str | None = None
    node: str | None = None
    cost: float = 0.0
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
    stats: TaskStats | None = None
    lease_keys: list[str] = field(default_factory=list)
    output_leases: dict[str, list[str]] = field(default_factory=dict)
    last_output: int = 0
    outputs_version: int = 0

    def leases_of(self, output_id: str) -> list[str]:
        """The lease keys of one RTMP output ([] for other kinds or unknown ids)."""
        if self.output_leases:
            return list(self.output_leases.get(output_id, []))
        first = next((o for o in self.params.outputs if o.get("kind") == "rtmp"), None)
        if first is not None and first.get("output_id") == output_id:
            return list(self.lease_keys or [self.stream_key])
        return []

    def used_output_ids(self) -> list[str]:
        """Every output id this task has had (at least: the current ones and ``o<last_output>``),
        for :func:`rtc_mpu.spec.outputs.next_output_id`."""
        ids = [str(o.get("output_id")) for o in self.params.outputs]
        return [*ids, f"o{self.last_output}"] if self.last_output else ids

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
        data["stats"] = {} if self.stats is None else self.stats.to_dict()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskRecord:
        """Inverse of :meth:`to_json` (``stats`` ``{}`` or absent: None).

        Raises:
            ValueError, KeyError, TypeError: not the JSON of a record.
        """
        data = json.loads(text)
        data["params"] = TaskParams.from_dict(data["params"])
        data["status"] = TaskStatus(data["status"])
        data["state"] = TaskState(data["state"])
        stats = data.get("stats") or {}
        if not isinstance(stats, dict):
            raise ValueError(f"a record's stats must be a JSON object, got {type(stats).__name__}")
        data["stats"] = TaskStats.from_dict(stats) if stats else None
        return cls(**data)


class ClaimResult(enum.Enum):
    """How a claim (:meth:`rtc_mpu.workers.store.TaskStore.claim_on`) went."""

    CLAIMED = "ok"  # this worker has the task now, with a new fencing token
    GONE = "gone"  # no such task, or it has ended
    HELD = "held"  # a live worker has it (e.g. a second delivery of the same message)
    STOPPED = "stopped"  # a stop was requested while it had no worker: now ended (status 3)
    URL_TAKEN = "url_taken"  # another task took its StreamURL while it had no worker: now ended (status 2)
    NO_CAPACITY = "no_capacity"  # the node's load plus the task's cost exceeds the node's capacity


@dataclass(frozen=True)
class Claim:
    """The answer to a claim.

    Attributes:
        result: what happened.
        token: the fencing token when CLAIMED, else None.
        load: the node's load besides this task, in units, when CLAIMED or NO_CAPACITY (0.0 without
            capacity accounting).
        restart: the task had been claimed before (its worker died): a NO_CAPACITY restart is left to
            the reconciler, which re-enqueues stale tasks by itself.
    """

    result: ClaimResult
    token: int | None = None
    load: float = 0.0
    restart: bool = False


def no_capacity_reason(cost: float) -> str:
    """The reason of a task refused by every node so far (``cost`` in units)."""
    return f"queued: no worker has capacity for it (cost {cost:.1f} units)"


class StoreError(RuntimeError):
    """A task-store failure with an API error code and HTTP status.

    Attributes:
        code: the error code returned to clients.
        http_status: the HTTP status for it.
        field: the request field at fault (a :data:`rtc_mpu.layouts.FieldPath`), or None.
    """

    code = "InternalError"
    http_status = 500
    field: FieldPath | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TaskExistsError(StoreError):
    """An active task with this TaskId exists for the AppId."""

    code, http_status = "TaskExisted", 409


class TaskNotFoundError(StoreError):
    """No such task for the AppId."""

    code, http_status = "InvalidTask.NotFound", 404


class TaskStoppingError(StoreError):
    """The task is stopping (a stop was requested, or it is ending by itself): it takes no updates."""

    code, http_status = "InvalidTask.Stopping", 409


class CustomLayoutMissingError(StoreError):
    """A custom layout the task names does not exist (any more) for the AppId."""

    code, http_status, field = "InvalidLayoutID.Malformed", 400, ("layout_ids",)


class OutputNotFoundError(StoreError):
    """The task has no output with this id."""

    code, http_status = "InvalidOutput.NotFound", 404


class OutputRequiredError(StoreError):
    """Removing this output would leave the task without an RTMP output (its StreamURL)."""

    code, http_status = "InvalidOutput.Required", 409


@dataclass(frozen=True)
class RefusedOutput:
    """One RTMP output whose StreamURL leases could not be taken (a start, or an added output).

    Attributes:
        output_id: the output's id (``o1``...; an added output's would-be id).
        url: its URL, redacted (:func:`rtc_mpu.spec.urls.redact_url`: no credentials, query string or
            stream key).
        destination: the refused destination, redacted, when it is another address of the URL's host
            (a lease key other than the URL's own), else None.
        holder: the active task holding it (``"<AppId>/<TaskId>"``: maybe another AppId's, never shown
            to API callers), or None when it is cooling down.
        seconds_left: whole seconds of cooldown left (rounded up) when it is cooling down, else None.
    """

    output_id: str
    url: str
    destination: str | None = None
    holder: str | None = None
    seconds_left: int | None = None

    @property
    def in_use(self) -> bool:
        """Another active task holds it (else: it is cooling down)."""
        return self.holder is not None


class StreamURLRefusedError(StoreError):
    """Some StreamURL leases could not be taken (nothing was changed).

    Attributes:
        refused: every refused RTMP output, in the task's output order (in use or cooling down each).
    """

    def __init__(self, message: str, refused: tuple[RefusedOutput, ...] = ()) -> None:
        super().__init__(message)
        self.refused = refused


class StreamURLInUseError(StreamURLRefusedError):
    """Another active task pushes to the same destination (one of its lease keys)."""

    code, http_status = "StreamURL.InUse", 409


class StreamURLCoolingDownError(StreamURLRefusedError):
    """The StreamURL was used by a task that stopped less than the cooldown ago.

    Attributes:
        seconds_left: whole seconds until the URL may be used again (rounded up; the longest of
            ``refused``).
    """

    code, http_status = "StreamURL.CoolingDown", 409

    def __init__(self, message: str, seconds_left: int, refused: tuple[RefusedOutput, ...] = ()) -> None:
        super().__init__(message, refused)
        self.seconds_left = seconds_left


class StoreUnavailableError(StoreError):
    """Redis cannot be reached; nothing was changed."""

    code, http_status = "ServiceUnavailable", 503
