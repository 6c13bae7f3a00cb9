"""The one service layer behind both API dialects (JSON REST under ``/v1`` and the MPU RPC at ``/``).

The views validate a request with the schemas of :mod:`rtc_mpu.api.schemas` (snake_case field names) and
call a :class:`MixService` method; every failure is a :class:`ServiceError` with the error code,
HTTP status and the request field at fault (a :data:`rtc_mpu.layouts.FieldPath`, snake_case as the
schemas name it), which each dialect renders in its own error shape and names (:mod:`rtc_mpu.api.errors`:
REST ``field`` ``user_panes.0.user_id``, RPC message ``UserPanes.1.UserId: ...``). Nothing here knows
about HTTP requests, Flask or the wire names.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

from rtc_mpu.layouts import FieldPath, Layout, SpecError, system_layout
from rtc_mpu.spec import urls
from rtc_mpu.spec.outputs import (
    MAX_OUTPUTS,
    OutputSpec,
    RtmpOutput,
    check_outputs,
    output_to_dict,
    parse_output,
)
from rtc_mpu.spec.urls import Resolver, stream_url_key
from rtc_mpu.workers.model import (
    RefusedOutput,
    StoreError,
    StreamURLRefusedError,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
    TaskStoppingError,
)
from rtc_mpu.workers.store_protocol import LayoutStoreProtocol, TaskStoreProtocol

log = logging.getLogger(__name__)
#: The parameters and the result of a store call (:meth:`MixService.call_store`).
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: AppIds: no ``:`` (a channel's Janus room is ``"<AppId>:<ChannelId>"``, which must name one app).
APP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Custom layout ids start here (:mod:`rtc_mpu.workers.layout_store`); smaller ids are system layouts.
FIRST_CUSTOM_LAYOUT_ID = 100
#: Error code per request field whose malformed value has a vendor code of its own
#: (the vendor's MPU API, 2018-01-11 "Errors").
MALFORMED_CODES = {
    "layout_ids": "InvalidLayoutID.Malformed",
    "media_encode": "InvalidMediaEncode.Malformed",
    "background_color": "InvalidBackgroundColor.Malformed",
    "stream_url": "InvalidStreamURL.Malformed",
}
#: Highest PageNum and largest PageSize of a layout listing (both dialects).
MAX_PAGE_NUM, MAX_PAGE_SIZE = 100000, 100


class ServiceError(Exception):
    """A request the service refuses or cannot serve.

    Attributes:
        status: the HTTP status (400, 403, 404, 409, 503...).
        code: the error code (vendor codes where the vendor has one).
        message: for people; never contains a secret or a stream key. The dialects lead it with the
            field's name (:func:`rtc_mpu.api.errors.with_field`).
        field: the request field at fault, in the schemas' snake_case names and 0-based list
            positions (``("user_panes", 0, "user_id")``: :data:`rtc_mpu.layouts.FieldPath`), whoever
            found the error (schemas, spec validation, stores), or None.
    """

    def __init__(self, status: int, code: str, message: str, field: FieldPath | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def validation_code(path: Sequence[str | int], text: str) -> str:
    """The error code of a schema validation failure of the field at ``path`` with message ``text``:
    ``MissingParameter`` for a missing field, the vendor's ``*.Malformed`` code for LayoutIds,
    MediaEncode and BackgroundColor, ``InvalidParameter`` otherwise."""
    if "Missing data" in text:
        return "MissingParameter"
    return MALFORMED_CODES.get(str(path[0]) if path else "", "InvalidParameter")


@dataclass(frozen=True)
class LayoutPage:
    """One page of an app's custom layouts.

    Attributes:
        total: how many layouts match the filter.
        page_num, page_size: the page (1-based) and its size.
        layouts: the layouts on this page, by id.
    """

    total: int
    page_num: int
    page_size: int
    layouts: list[Layout]

    @property
    def total_pages(self) -> int:
        """Number of pages of ``page_size``."""
        return math.ceil(self.total / self.page_size) if self.page_size else 0


def layout_out(layout: Layout) -> dict[str, Any]:
    """A layout in the API's snake_case field names (CustomLayoutOut)."""
    return {
        "layout_id": layout.id,
        "name": layout.name,
        "audio_mix_count": layout.audio_mix_count,
        "panes": [
            {
                "pane_id": pane.id,
                "major_pane": int(pane.id == layout.major_pane),
                "x": pane.x,
                "y": pane.y,
                "width": pane.width,
                "height": pane.height,
                "z_order": pane.zorder,
            }
            for pane in layout.panes
        ],
    }


def _schema_panes(panes: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int | None]:
    """API panes (PaneIn) -> the layouts schema's panes and the major pane id.

    Raises:
        ServiceError: more than one pane is marked MajorPane.
    """
    major = [pane["pane_id"] for pane in panes if pane.get("major_pane")]
    if len(major) > 1:
        raise ServiceError(400, "InvalidParameter", f"panes {major} are all marked MajorPane", ("panes",))
    converted = [
        {
            "id": pane["pane_id"],
            "x": pane["x"],
            "y": pane["y"],
            "width": pane["width"],
            "height": pane["height"],
            "zorder": pane.get("z_order", 0),
        }
        for pane in panes
    ]
    return converted, (major[0] if major else None)


def _params_from(body: Mapping[str, Any], base: TaskParams) -> TaskParams:
    """``base`` with the fields ``body`` names (snake_case, as the schemas load them)."""
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("task_id",) or not hasattr(base, name):
            continue
        if isinstance(value, list):
            value = tuple(dict(v) if isinstance(v, dict) else v for v in value)
        elif isinstance(value, dict):
            value = dict(value)
        changes[name] = value
    return replace(base, **changes)


def _output_field(path: FieldPath | None) -> FieldPath | None:
    """A field path of :mod:`rtc_mpu.spec.outputs` (``("outputs", 0, "url")``) inside one output's
    own body (``("url",)``)."""
    if path and len(path) >= 2 and path[0] == "outputs":
        return tuple(path[2:]) or None
    return path


def parse_request_outputs(stream_url: str | None, items: Sequence[object]) -> list[OutputSpec]:
    """A start request's outputs as specs: ``stream_url`` (if given) is ``o1``, the ``outputs`` items
    follow in order (``o2``..., or ``o1``... without stream_url), checked together
    (:func:`rtc_mpu.spec.outputs.check_outputs`).

    Raises:
        ServiceError: 400 with the code of :mod:`rtc_mpu.spec.outputs` and the field: ``stream_url``,
            or ``outputs.N.name`` with N the position in ``items`` (``outputs.N`` for the first output
            past the limit of :data:`rtc_mpu.spec.outputs.MAX_OUTPUTS`, counting stream_url).
    """
    specs: list[OutputSpec] = []
    if stream_url is not None:
        try:
            specs.append(RtmpOutput("o1", urls.validate_stream_url(stream_url)))
        except SpecError as exc:
            raise ServiceError(400, exc.code, exc.message, ("stream_url",)) from None
    offset = len(specs)
    if len(items) + offset > MAX_OUTPUTS:
        raise ServiceError(
            400,
            "InvalidOutput.LimitExceeded",
            f"a task has at most {MAX_OUTPUTS} outputs (stream_url counts as one)",
            ("outputs", MAX_OUTPUTS - offset),
        )
    for index, item in enumerate(items):
        try:
            specs.append(parse_output(item, f"o{index + offset + 1}", index))
        except SpecError as exc:
            raise ServiceError(400, exc.code, exc.message, exc.field) from None
    try:
        check_outputs(specs)
    except SpecError as exc:
        field = exc.field
        if field and len(field) >= 2 and isinstance(field[1], int):
            field = ("outputs", field[1] - offset, *field[2:])
        raise ServiceError(400, exc.code, exc.message, field) from None
    return specs


def output_lease_keys(
    specs: Sequence[OutputSpec], resolve: Resolver, with_stream_url: bool
) -> dict[str, list[str]]:
    """Each RTMP output's lease keys (:func:`rtc_mpu.spec.urls.lease_keys`; host names resolved now,
    up to :data:`rtc_mpu.spec.urls.RESOLVE_TIMEOUT` seconds each).

    Args:
        with_stream_url: the first spec is the request's ``stream_url`` (field names of errors).

    Raises:
        ServiceError: InvalidStreamURL.Unresolvable (400); InvalidOutput.Duplicate (400: two outputs
            reach the same destination, e.g. a host name and its address).
    """
    fields = output_fields(specs, with_stream_url)
    found: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, RtmpOutput):
            continue
        field = fields[spec.output_id]
        try:
            keys = urls.lease_keys(spec.url, resolve)
        except SpecError as exc:
            raise ServiceError(400, exc.code, exc.message, field) from None
        for key in keys:
            if key in owner:
                raise ServiceError(
                    400,
                    "InvalidOutput.Duplicate",
                    f"the same destination as output {owner[key]} (one of its addresses)",
                    field,
                )
            owner[key] = spec.output_id
        found[spec.output_id] = keys
    return found


def output_fields(specs: Sequence[OutputSpec], with_stream_url: bool) -> dict[str, FieldPath]:
    """The request field of each RTMP output's URL of a start request, by output id: ``stream_url``
    (``o1`` when the request gives it) or ``outputs.N.url`` (N: the position in ``outputs``)."""
    offset = 1 if with_stream_url else 0
    return {
        spec.output_id: ("stream_url",)
        if with_stream_url and position == 0
        else ("outputs", position - offset, "url")
        for position, spec in enumerate(specs)
        if isinstance(spec, RtmpOutput)
    }


def _refused_text(refused: RefusedOutput, cooldown_seconds: float | None, name: str, several: bool) -> str:
    """Why one output's URL was refused, for API callers (never the holder: maybe another AppId's)."""
    where = f" (the same destination: {refused.destination})" if refused.destination else ""
    if refused.in_use:
        return f"{name}{where} is in use by another active task"
    ended = f"less than {cooldown_seconds:g} s ago" if cooldown_seconds else "moments ago"
    free = f" (free in {refused.seconds_left} s)" if several and refused.seconds_left else ""
    return f"{name}{where} was used by a task that ended {ended}{free}"


def lease_refusal(
    exc: StreamURLRefusedError,
    fields: Mapping[str, FieldPath],
    *,
    cooldown_seconds: float | None = None,
    added: bool = False,
) -> ServiceError:
    """The 409 for StreamURL leases refused by the store (StreamURL.InUse or StreamURL.CoolingDown):
    its message names every refused output with its redacted URL (:class:`RefusedOutput`), the first
    one of the error's kind leading; its field is that output's request field.

    Args:
        fields: each output's request field by output id (:func:`output_fields`; ``{}``: none known).
        cooldown_seconds: the store's cooldown (said in the message), None: not said.
        added: one output added to a running task (POST .../outputs: named by its URL alone, as it
            got no id; the field is the body's ``url``; the task's other outputs are unchanged), else a
            task's start (nothing was started, no lease was taken).
    """
    refused = list(exc.refused)
    in_use = exc.code == "StreamURL.InUse"
    refused.sort(key=lambda r: r.in_use != in_use)  # stable: the request's order within each kind
    several = len(refused) > 1
    parts = [
        _refused_text(r, cooldown_seconds, r.url if added else f"output {r.output_id} ({r.url})", several)
        for r in refused
    ] or ["the StreamURL is in use by another active task" if in_use else "the StreamURL is cooling down"]
    message = parts[0] + "".join(f"; also {part}" for part in parts[1:])
    seconds_left = getattr(exc, "seconds_left", None)
    if not in_use and seconds_left:
        message += f"; try again in {seconds_left} s"
    if added:
        message += "; the output was not added (the task's other outputs are unchanged)"
    else:
        message += "; nothing was started"
    field = ("url",) if added else fields.get(refused[0].output_id) if refused else None
    return ServiceError(exc.http_status, exc.code, message, field)


class MixService:
    """Tasks and layouts of every app, on the task store.

    Args:
        store_factory: makes the task store (:class:`rtc_mpu.workers.store.TaskStore`) on first use.
        layouts_factory: makes the custom layout store (:class:`rtc_mpu.workers.layout_store.LayoutStore`)
            on first use; None: one on the task store's Redis client and key prefix.
        enqueue: ``(app_id, task_id) -> None``, queues the mix on a worker.
        resolve: how a StreamURL's host name is resolved when a task starts (tests inject one);
            None: :func:`rtc_mpu.spec.urls.system_resolve`, bounded by
                :data:`rtc_mpu.spec.urls.RESOLVE_TIMEOUT`.
    """

    def __init__(
        self,
        store_factory: Callable[[], TaskStoreProtocol],
        layouts_factory: Callable[[], LayoutStoreProtocol] | None,
        enqueue: Callable[[str, str], None],
        resolve: Resolver | None = None,
    ) -> None:
        self._store_factory = store_factory
        self._layouts_factory = layouts_factory
        self._store: TaskStoreProtocol | None = None
        self._layouts: LayoutStoreProtocol | None = None
        self.enqueue = enqueue
        self.resolve = resolve

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def store(self) -> TaskStoreProtocol:
        """The task store (made on first use)."""
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    @property
    def layouts(self) -> LayoutStoreProtocol:
        """The custom layout store (made on first use)."""
        if self._layouts is None:
            if self._layouts_factory is not None:
                self._layouts = self._layouts_factory()
            else:
                from rtc_mpu.workers.layout_store import LayoutStore

                self._layouts = LayoutStore(self.store.client, prefix=self.store.prefix)
        return self._layouts

    @staticmethod
    def call_store(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call a store (or a validation), turning its errors into :class:`ServiceError`.

        Returns:
            What ``function`` returns.

        Raises:
            ServiceError: for a :class:`rtc_mpu.workers.model.StoreError` (its status and code: 404,
                409, 503...), a :class:`rtc_mpu.layouts.SpecError` (400 with its code and field).
        """
        try:
            return function(*args, **kwargs)
        except StreamURLRefusedError as exc:  # the store names the holder: maybe another AppId's task
            raise lease_refusal(exc, {}) from None
        except StoreError as exc:
            raise ServiceError(exc.http_status, exc.code, exc.message, exc.field) from None
        except SpecError as exc:
            raise ServiceError(400, exc.code, exc.message, exc.field) from None

    def _with_layouts(self, app_id: str, params: TaskParams) -> TaskParams:
        """``params`` with copies of the custom layouts its LayoutIds name, validated as a spec.

        Raises:
            ServiceError: an unknown layout id, or any invalid parameter (vendor codes).
        """
        custom_ids = [i for i in params.layout_ids if isinstance(i, int) and i >= FIRST_CUSTOM_LAYOUT_ID]
        found: dict[int, Layout] = (
            self.call_store(self.layouts.get_many, app_id, custom_ids) if custom_ids else {}
        )
        missing = [i for i in custom_ids if i not in found]
        if missing:
            raise ServiceError(
                400,
                "InvalidLayoutID.Malformed",
                f"no layout {missing[0]} for this AppId",
                ("layout_ids", params.layout_ids.index(missing[0])),
            )
        params = replace(params, custom_layouts=tuple(found[i].to_dict() for i in custom_ids))
        self.call_store(params.to_spec)
        return params

    # -- tasks -----------------------------------------------------------------------------------
    def start_task(self, app_id: str, body: Mapping[str, Any]) -> TaskRecord:
        """StartMPUTask: validate, store (taking every StreamURL lease) and enqueue.

        Args:
            body: TaskIn as loaded (snake_case; task_id and channel_id required; stream_url, outputs
                or both: ``stream_url`` is output ``o1``, the request's ``outputs`` follow as ``o2``...
                ``stream_url`` absent: the first RTMP output of ``outputs`` is the StreamURL).

        Every RTMP output's host name is resolved here (at most
        :data:`rtc_mpu.spec.urls.RESOLVE_TIMEOUT` seconds each) and the task takes a lease on each of
        their destinations (:func:`rtc_mpu.spec.urls.lease_keys`), all or none.

        Raises:
            ServiceError: invalid parameters (400; outputs: ``InvalidOutput.Kind``,
                ``InvalidOutput.LimitExceeded``, ``InvalidOutput.Duplicate``, ``InvalidOutput.Template``
                with the field ``outputs.N.name``), MissingParameter (400: neither stream_url nor an
                rtmp output), InvalidStreamURL.Unresolvable (400: a host name does not resolve in time),
                TaskExisted / StreamURL.InUse / StreamURL.CoolingDown (409; the latter two name every
                refused output by id and redacted URL, the field is the first one's: ``stream_url`` or
                ``outputs.N.url``; no lease is taken), ServiceUnavailable (503: Redis or the queue;
                nothing is left started).
        """
        fields = {name: value for name, value in body.items() if name != "outputs"}
        stream_url = body.get("stream_url")
        specs = parse_request_outputs(stream_url, body.get("outputs") or [])
        rtmp = [spec for spec in specs if isinstance(spec, RtmpOutput)]
        if not rtmp:
            raise ServiceError(
                400, "MissingParameter", "give stream_url or an rtmp output in outputs", ("stream_url",)
            )
        fields["stream_url"] = rtmp[0].url
        base = TaskParams(
            channel_id=body["channel_id"],
            stream_url=rtmp[0].url,
            outputs=tuple(output_to_dict(spec) for spec in specs),
        )
        params = self._with_layouts(app_id, _params_from(fields, base))
        stream_key = self.call_store(stream_url_key, params.stream_url)
        # The default resolver is looked up when used, so that tests can swap it.
        resolve = self.resolve if self.resolve is not None else urls.system_resolve
        output_leases = output_lease_keys(specs, resolve, stream_url is not None)
        lease_keys = sorted({key for keys in output_leases.values() for key in keys})
        record = TaskRecord(
            app_id,
            body["task_id"],
            params,
            stream_key,
            lease_keys=lease_keys,
            output_leases=output_leases,
        )
        stored: TaskRecord = self.call_store(
            self._leased_start, record, output_fields(specs, stream_url is not None)
        )
        try:
            self.enqueue(app_id, stored.task_id)
        except Exception as exc:
            log.error("cannot enqueue %s/%s: %s", app_id, stored.task_id, exc.__class__.__name__)
            # Never a half-started task; it never pushed, so its StreamURL gets no cooldown.
            self.call_store(
                self.store.finish,
                app_id,
                stored.task_id,
                None,
                TaskStatus.STOPPED,
                "the task queue was unavailable; nothing was started",
                cooldown=False,
            )
            raise ServiceError(
                503, "ServiceUnavailable", "the task queue is unavailable; nothing was started"
            ) from None
        return stored

    def _leased_start(self, record: TaskRecord, fields: Mapping[str, FieldPath]) -> TaskRecord:
        """The store's start of ``record``; refused leases named by the outputs' request ``fields``.

        Raises:
            ServiceError: StreamURL.InUse / StreamURL.CoolingDown (409, :func:`lease_refusal`).
            StoreError: as :meth:`rtc_mpu.workers.store.TaskStore.start_task`.
        """
        try:
            return self.store.start_task(record)
        except StreamURLRefusedError as exc:
            raise lease_refusal(exc, fields, cooldown_seconds=self.store.cooldown_seconds) from None

    def add_output(self, app_id: str, task_id: str, item: Mapping[str, Any]) -> tuple[TaskRecord, str]:
        """Add one output to an active task (POST .../outputs): validated, its URL's leases taken
        atomically with the change; the worker starts it at its next heartbeat.

        Args:
            item: the output object (OutputIn as loaded).

        Returns:
            The updated record and the new output's id.

        Raises:
            ServiceError: an invalid output (400, field ``url``, ``kind``... of the body),
                InvalidOutput.LimitExceeded (400: the task has 10 outputs), InvalidOutput.Duplicate (400:
                the task already pushes there), InvalidTask.NotFound (404), InvalidTask.Stopping,
                StreamURL.InUse, StreamURL.CoolingDown (409, field ``url``, the message shows it redacted:
                nothing changed), ServiceUnavailable (503).
        """
        try:
            spec = parse_output(item, "o1", 0)
        except SpecError as exc:
            raise ServiceError(400, exc.code, exc.message, _output_field(exc.field)) from None
        keys: list[str] = []
        if isinstance(spec, RtmpOutput):
            resolve = self.resolve if self.resolve is not None else urls.system_resolve
            try:
                keys = urls.lease_keys(spec.url, resolve)
            except SpecError as exc:
                raise ServiceError(400, exc.code, exc.message, ("url",)) from None
        record: TaskRecord = self.call_store(self._leased_add, app_id, task_id, spec, keys)
        return record, str(record.params.outputs[-1]["output_id"])

    def _leased_add(self, app_id: str, task_id: str, spec: OutputSpec, keys: Sequence[str]) -> TaskRecord:
        """The store's add of one output; a refused lease is that output's (field ``url``).

        Raises:
            ServiceError: StreamURL.InUse / StreamURL.CoolingDown (409, :func:`lease_refusal`).
            StoreError, SpecError: as :meth:`rtc_mpu.workers.store.TaskStore.add_output`.
        """
        try:
            return self.store.add_output(app_id, task_id, spec, keys)
        except StreamURLRefusedError as exc:
            raise lease_refusal(exc, {}, cooldown_seconds=self.store.cooldown_seconds, added=True) from None

    def remove_output(self, app_id: str, task_id: str, output_id: str) -> TaskRecord:
        """Remove one output of an active task (DELETE .../outputs/{output_id}); an RTMP output's leases
        are released with their own cooldown. A task keeps at least one RTMP output.

        Raises:
            ServiceError: InvalidTask.NotFound, InvalidOutput.NotFound (404), InvalidTask.Stopping,
                InvalidOutput.Required (409: the task's last rtmp output), ServiceUnavailable (503).
        """
        record: TaskRecord = self.call_store(self.store.remove_output, app_id, task_id, output_id)
        return record

    def snapshot(self, app_id: str, task_id: str) -> tuple[bytes, float]:
        """The task's latest snapshot: (JPEG bytes, Unix seconds it was taken).

        Raises:
            ServiceError: InvalidSnapshot.NotReady (404: none yet, none any more, or the task has no
                snapshot output), ServiceUnavailable (503).
        """
        try:
            record: TaskRecord | None = self.call_store(self.store.get_task, app_id, task_id)
        except ServiceError as exc:
            if exc.status != 404:
                raise
            record = None
        found: tuple[bytes, float] | None = self.call_store(self.store.get_snapshot, app_id, task_id)
        has_output = record is None or any(o.get("kind") == "snapshot" for o in record.params.outputs)
        if found is None or not has_output:
            raise ServiceError(
                404, "InvalidSnapshot.NotReady", f"task {task_id} has no snapshot (yet, or a snapshot output)"
            )
        return found

    def get_task(self, app_id: str, task_id: str) -> TaskRecord:
        """GetMPUTaskStatus: the record as it should be shown (a dead worker's task says so).

        Raises:
            ServiceError: InvalidTask.NotFound (404), ServiceUnavailable (503).
        """
        record: TaskRecord = self.call_store(self.store.get_task, app_id, task_id)
        return record.as_seen(self.store.lease_seconds)

    def list_tasks(self, app_id: str) -> list[TaskRecord]:
        """The app's active and recently ended tasks.

        Raises:
            ServiceError: ServiceUnavailable (503).
        """
        lease = self.store.lease_seconds
        return [r.as_seen(lease) for r in self.call_store(self.store.list_tasks, app_id)]

    def stop_task(self, app_id: str, task_id: str) -> TaskRecord:
        """StopMPUTask (idempotent: stopping a stopping or ended task answers its record as it is).
        A task with a live worker answers state ``stopping`` (its status unchanged) until the push
        has ended; one without ends at once (status 3).

        Raises:
            ServiceError: InvalidTask.NotFound (404), ServiceUnavailable (503).
        """
        record: TaskRecord = self.call_store(self.store.request_stop, app_id, task_id)
        return record

    def update_task(self, app_id: str, task_id: str, changes: Mapping[str, Any]) -> TaskRecord:
        """UpdateMPULayout / UpdateMPUTask: change the named parameters of an active task; the worker
        applies them at the next frame.

        Args:
            changes: LayoutIn or TaskUpdateIn as loaded (only the fields to change).

        Raises:
            ServiceError: MissingParameter (nothing to change), InvalidParameter (MediaEncode differs
                from the running one), invalid values (400), InvalidTask.NotFound (404),
                InvalidTask.Stopping (409: a stop was requested, or it is ending by itself),
                ServiceUnavailable (503).
        """
        if not changes:
            raise ServiceError(
                400, "MissingParameter", "give at least one parameter to change", ("layout_ids",)
            )
        record: TaskRecord = self.call_store(self.store.get_task, app_id, task_id)
        if record.active and (record.stop_requested or record.state is TaskState.STOPPING):
            # Checked again atomically by the store's update (a stop may come in between).
            stopping = TaskStoppingError(f"task {task_id} is stopping; it takes no updates")
            raise ServiceError(stopping.http_status, stopping.code, stopping.message)
        if "media_encode" in changes and changes["media_encode"] != record.params.media_encode:
            raise ServiceError(
                400,
                "InvalidMediaEncode.Malformed",
                f"MediaEncode cannot change while a task runs (it is {record.params.media_encode})",
                ("media_encode",),
            )
        params = self._with_layouts(app_id, _params_from(changes, record.params))
        before, after = self.call_store(record.params.to_spec), self.call_store(params.to_spec)
        if (before.has_video, before.has_audio) != (after.has_video, after.has_audio):
            raise ServiceError(
                400,
                "InvalidParameter",
                "MixMode/StreamType cannot add or remove the audio or video stream of a running task",
                ("stream_type",),
            )
        updated: TaskRecord = self.call_store(self.store.update_params, app_id, task_id, params)
        return updated

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            ServiceError: ServiceUnavailable (503).
        """
        self.call_store(self.store.ping)

    # -- layouts ---------------------------------------------------------------------------------
    def create_layout(self, app_id: str, body: Mapping[str, Any]) -> Layout:
        """CreateMPULayout: store a custom layout; its id is assigned (100 and up, per AppId).

        Args:
            body: CustomLayoutIn as loaded (name, panes, optional audio_mix_count).

        Raises:
            ServiceError: invalid panes or name (400), InvalidLayout.LimitExceeded (400),
                ServiceUnavailable (503).
        """
        panes, major = _schema_panes(body["panes"])
        layout: Layout = self.call_store(
            self.layouts.create,
            app_id,
            name=body["name"],
            panes=panes,
            audio_mix_count=body.get("audio_mix_count"),
            major_pane=major,
        )
        return layout

    def modify_layout(self, app_id: str, layout_id: int, body: Mapping[str, Any]) -> Layout:
        """ModifyMPULayout: change a custom layout's name, AudioMixCount or panes (all of them).
        Running tasks keep the copy they started with until their layout is updated.

        Raises:
            ServiceError: MissingParameter (nothing to change), invalid values (400),
                InvalidLayout.NotFound (404), ServiceUnavailable (503).
        """
        if not body:
            raise ServiceError(400, "MissingParameter", "give Name, AudioMixCount or Panes", ("panes",))
        kwargs: dict[str, Any] = {"name": body.get("name"), "audio_mix_count": body.get("audio_mix_count")}
        if "panes" in body:
            kwargs["panes"], kwargs["major_pane"] = _schema_panes(body["panes"])
        layout: Layout = self.call_store(self.layouts.modify, app_id, layout_id, **kwargs)
        return layout

    def delete_layout(self, app_id: str, layout_id: int) -> None:
        """DeleteMPULayout.

        Raises:
            ServiceError: InvalidLayout.InUse (409: an active task lists it), InvalidLayout.NotFound
                (404), ServiceUnavailable (503).
        """
        self.call_store(self.layouts.delete, app_id, layout_id)

    def get_layout(self, app_id: str, layout_id: int) -> Layout:
        """A system layout (ids below 100) or one of the app's custom layouts.

        Raises:
            ServiceError: InvalidLayout.NotFound (404), ServiceUnavailable (503).
        """
        if layout_id < FIRST_CUSTOM_LAYOUT_ID:
            try:
                return system_layout(layout_id)
            except SpecError:
                raise ServiceError(404, "InvalidLayout.NotFound", f"no layout {layout_id}") from None
        layout: Layout = self.call_store(self.layouts.get, app_id, layout_id)
        return layout

    def list_layouts(
        self,
        app_id: str,
        *,
        layout_id: int | None = None,
        name: str | None = None,
        page_num: int = 1,
        page_size: int = 10,
    ) -> LayoutPage:
        """DescribeMPULayoutInfoList / DescribeMPULayoutList: the app's custom layouts, a page at a time.

        Raises:
            ServiceError: a page outside PageNum 1..100000, PageSize 1..100 (400), ServiceUnavailable (503).
        """
        if not 1 <= page_num <= MAX_PAGE_NUM:
            raise ServiceError(400, "InvalidParameter", f"PageNum must be 1..{MAX_PAGE_NUM}", ("page_num",))
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ServiceError(
                400, "InvalidParameter", f"PageSize must be 1..{MAX_PAGE_SIZE}", ("page_size",)
            )
        total, layouts = self.call_store(
            self.layouts.list, app_id, layout_id=layout_id, name=name, page_num=page_num, page_size=page_size
        )
        return LayoutPage(total, page_num, page_size, list(layouts))
