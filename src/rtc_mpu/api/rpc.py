"""The MPU RPC dialect at ``/``: Alibaba Cloud RTC's MPU actions, so apps written against the official
SDKs (``aliyun-python-sdk-rtc``, ``alibabacloud-rtc20180111``) or raw signed RPC calls move to us by
changing the endpoint.

A request is ``GET`` or ``POST /`` with ``Action=<name>`` (or the header ``x-acs-action``) and its
parameters in the query string and/or a form body (``application/x-www-form-urlencoded``), signed
with RPC signature v1 or ACS3-HMAC-SHA256 (:mod:`rtc_mpu.api.signatures`): a timestamp within 15 minutes
and a nonce used once (kept in Redis). The parameters are parsed by :mod:`rtc_mpu.api.rpc_params` (both
encodings of nested lists), validated by the same schemas as the REST API (:mod:`rtc_mpu.api.schemas`) and
served by the same :class:`rtc_mpu.api.service.MixService`. Answers are JSON with a ``RequestId`` (XML with
``Format=XML``); errors have the vendor's shape ``{"RequestId", "HostId", "Code", "Message"}``.

Only signed inputs give a call its meaning (issue #11): ``Action`` and ``Version`` come from the
parameters, or from the headers ``x-acs-action`` / ``x-acs-version`` under ACS3 (which must sign every
``x-acs-*`` header, :mod:`rtc_mpu.api.signatures`); a parameter and its header that disagree are refused (400
``InvalidParameter``), and so are ``Action``, ``Version`` or ``Format`` given twice with different
values. RPC signature v1 signs no header, so there the header may only repeat the signed parameter
(as the older SDK sends it): otherwise 400 ``IncompleteSignature``.

Before the signature is checked, the throttle of failed authentication (:mod:`rtc_mpu.api.ratelimit`, "Failed
authentication") may refuse the call: 429 ``Throttling.Authentication`` with ``Retry-After`` (seconds)
and ``x-acs-retry-after`` (milliseconds); a call whose signature check fails counts as a failure, for
its source address and the AccessKeyId it names. After the signature, each call counts against its
access key's rate limit: over it, HTTP 429 ``Throttling.User`` with the same headers (the newer SDK
reads ``x-acs-retry-after``). A call has at most :data:`rtc_mpu.api.rpc_params.MAX_PARAMS`
parameters (400 ``InvalidParameter``) and a query string of at most 32 KiB (414, :mod:`rtc_mpu.api.app`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app, request
from marshmallow import Schema, ValidationError

from rtc_mpu.api.auth import admit_attempt, count_failure
from rtc_mpu.api.errors import first_problem, request_id, rpc_field, with_field
from rtc_mpu.api.ratelimit import AUTH_THROTTLING_CODE, THROTTLING_CODE, AuthThrottledError, Decision
from rtc_mpu.api.rpc_format import error_response, render
from rtc_mpu.api.rpc_params import RpcParamError, parse_rpc_params, wire_name
from rtc_mpu.api.schemas import (
    TASK_ID,
    CustomLayoutIn,
    CustomLayoutPatchIn,
    LayoutIn,
    StartFieldsIn,
    TaskUpdateIn,
    first_character_problem,
    is_task_id,
)
from rtc_mpu.api.service import (
    APP_ID,
    LayoutPage,
    MixService,
    ServiceError,
    layout_out,
    validation_code,
)
from rtc_mpu.api.signatures import (
    RPC_V1,
    TIMESTAMP_WINDOW,
    SignatureError,
    SignedRequest,
    Verified,
    claimed_access_key_id,
    first_conflict,
    verify,
)
from rtc_mpu.layouts import Layout
from rtc_mpu.spec.urls import redact_url
from rtc_mpu.workers.model import TaskRecord
from rtc_mpu.workers.stats import VadSnapshot
from rtc_mpu.workers.task_view import STATUS_TEXT

bp = APIBlueprint("rpc", __name__, enable_openapi=False)

#: The API version the actions belong to.
VERSION = "2018-01-11"
#: Longest SignatureNonce accepted, in characters.
MAX_NONCE_LENGTH = 128


@dataclass(frozen=True)
class Call:
    """One RPC call being served: the app it acts on and its business parameters (snake_case)."""

    app_id: str
    params: dict[str, Any]

    def required(self, name: str) -> Any:
        """A parameter that must be present.

        Raises:
            ServiceError: MissingParameter.
        """
        if name not in self.params or self.params[name] in ("", None):
            raise ServiceError(400, "MissingParameter", f"{wire_name([name])} is required", (name,))
        return self.params[name]

    def integer(self, name: str, default: int | None = None) -> int | None:
        """An integer parameter (None or ``default`` when absent).

        Raises:
            ServiceError: InvalidParameter when it is not an integer.
        """
        value = self.params.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ServiceError(400, "InvalidParameter", f"{wire_name([name])} must be an integer", (name,))
        return value

    def load(self, schema: Schema, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """The parameters (less ``exclude``) validated by a REST schema.

        Raises:
            ServiceError: the first invalid or missing parameter.
        """
        data = {k: v for k, v in self.params.items() if k not in exclude}
        try:
            loaded: dict[str, Any] = schema.load(data)
        except ValidationError as exc:
            path, text = first_problem(exc.messages, [])
            keys: list[str | int] = [int(p) if isinstance(p, str) and p.isdigit() else p for p in path]
            if text == "Unknown field.":
                text = "unknown parameter"
            raise ServiceError(400, validation_code(keys, text), text, tuple(keys)) from None
        return loaded


def _service() -> MixService:
    service: MixService = current_app.extensions["mpu"].service
    return service


def _task_id(call: Call) -> str:
    """The TaskId.

    Raises:
        ServiceError: MissingParameter, or InvalidParameter when it is not a TaskId's form.
    """
    task_id = call.required("task_id")
    if not isinstance(task_id, str):
        raise ServiceError(400, "InvalidParameter", "TaskId must be a string", ("task_id",))
    if not is_task_id(task_id):
        raise ServiceError(400, "InvalidParameter", f"TaskId {TASK_ID.error}", ("task_id",))
    return task_id


def _check_characters(params: dict[str, Any]) -> None:
    """Refuse a request whose strings (or names) hold a character :mod:`rtc_mpu.spec.text_rules` refuses,
    whatever the action does with them, before it does anything.

    Raises:
        ServiceError: InvalidParameter (InvalidStreamURL.Malformed for the StreamURL) naming the
            parameter.
    """
    found = first_character_problem(params)
    if found is not None:
        path, problem = found
        raise ServiceError(400, validation_code(path, problem), problem, path)


def _layout_id(call: Call) -> int:
    call.required("layout_id")
    layout_id = call.integer("layout_id")
    assert layout_id is not None
    return layout_id


def _status(record: TaskRecord) -> dict[str, Any]:
    """GetMPUTaskStatus: the vendor's ``Status`` and, as extensions the SDKs ignore, what we know more."""
    return {
        "Status": int(record.status),
        "TaskId": record.task_id,
        "ChannelId": record.params.channel_id,
        "StatusText": STATUS_TEXT[record.status],
        "State": str(record.state),
        "Reason": record.reason,
        "StreamURL": redact_url(record.params.stream_url),
        "LayoutId": record.layout_id,
        "Users": record.users,
        "Restarts": record.restarts,
        "Ignored": [wire_name(name.split(".")) for name in record.params.ignored()],
        "OverlayProblems": [
            {"Name": name, "Reason": reason}
            for name, reason in (record.stats.overlay_problems if record.stats else {}).items()
        ],
        "Vad": _vad(record.stats.vad if record.stats else None),
    }


def _vad(report: VadSnapshot | None) -> dict[str, Any] | None:
    """A voice-activity report in wire names (``Ts`` in ms, ``Level`` in dBFS), user ids as values
    (never as XML element names)."""
    if report is None:
        return None
    return {
        "Ts": report.ts_ms,
        "Speaker": report.speaker,
        "Speaking": list(report.speaking),
        "Levels": [{"UserId": user, "Level": level} for user, level in report.levels_dbfs.items()],
    }


def _layout(layout: Layout) -> dict[str, Any]:
    """A layout as DescribeMPULayoutInfoList shows it (``Panes.Panes[]``)."""
    data = layout_out(layout)
    panes = [{wire_name([k]): v for k, v in pane.items()} for pane in data["panes"]]
    return {
        "LayoutId": data["layout_id"],
        "Name": data["name"],
        "AudioMixCount": data["audio_mix_count"],
        "Panes": {"Panes": panes},
    }


def _page(page: LayoutPage) -> dict[str, Any]:
    return {
        "TotalNum": page.total,
        "TotalPage": page.total_pages,
        "Layouts": {"Layout": [_layout(layout) for layout in page.layouts]},
    }


def start_mpu_task(call: Call) -> dict[str, Any]:
    """StartMPUTask."""
    _service().start_task(call.app_id, call.load(StartFieldsIn()))
    return {}


def stop_mpu_task(call: Call) -> dict[str, Any]:
    """StopMPUTask."""
    _service().stop_task(call.app_id, _task_id(call))
    return {}


def get_mpu_task_status(call: Call) -> dict[str, Any]:
    """GetMPUTaskStatus."""
    return _status(_service().get_task(call.app_id, _task_id(call)))


def update_mpu_layout(call: Call) -> dict[str, Any]:
    """UpdateMPULayout (LayoutIds required, as the vendor's)."""
    task_id = _task_id(call)
    call.required("layout_ids")
    _service().update_task(call.app_id, task_id, call.load(LayoutIn(), exclude=("task_id",)))
    return {}


def update_mpu_task(call: Call) -> dict[str, Any]:
    """UpdateMPUTask."""
    task_id = _task_id(call)
    _service().update_task(call.app_id, task_id, call.load(TaskUpdateIn(), exclude=("task_id",)))
    return {}


def create_mpu_layout(call: Call) -> dict[str, Any]:
    """CreateMPULayout: answers the new ``LayoutId``."""
    layout = _service().create_layout(call.app_id, call.load(CustomLayoutIn()))
    return {"LayoutId": layout.id}


def modify_mpu_layout(call: Call) -> dict[str, Any]:
    """ModifyMPULayout."""
    layout_id = _layout_id(call)
    _service().modify_layout(call.app_id, layout_id, call.load(CustomLayoutPatchIn(), exclude=("layout_id",)))
    return {}


def delete_mpu_layout(call: Call) -> dict[str, Any]:
    """DeleteMPULayout."""
    _service().delete_layout(call.app_id, _layout_id(call))
    return {}


def describe_mpu_layouts(call: Call) -> dict[str, Any]:
    """DescribeMPULayoutInfoList and DescribeMPULayoutList (filters LayoutId and Name, paging)."""
    name = call.params.get("name")
    if name is not None and not isinstance(name, str):
        raise ServiceError(400, "InvalidParameter", "Name must be a string", ("name",))
    page = _service().list_layouts(
        call.app_id,
        layout_id=call.integer("layout_id"),
        name=name,
        page_num=call.integer("page_num", 1) or 1,
        page_size=call.integer("page_size", 10) or 10,
    )
    return _page(page)


#: The actions and what serves them.
ACTIONS: Mapping[str, Callable[[Call], dict[str, Any]]] = {
    "StartMPUTask": start_mpu_task,
    "StopMPUTask": stop_mpu_task,
    "GetMPUTaskStatus": get_mpu_task_status,
    "UpdateMPULayout": update_mpu_layout,
    "UpdateMPUTask": update_mpu_task,
    "CreateMPULayout": create_mpu_layout,
    "ModifyMPULayout": modify_mpu_layout,
    "DeleteMPULayout": delete_mpu_layout,
    "DescribeMPULayoutInfoList": describe_mpu_layouts,
    "DescribeMPULayoutList": describe_mpu_layouts,
}


def _pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]], bytes]:
    """(query and form pairs, query pairs, raw body) of this request."""
    body = request.get_data(cache=True)
    query = list(request.args.items(multi=True))
    form = (
        list(request.form.items(multi=True))
        if request.mimetype == "application/x-www-form-urlencoded"
        else []
    )
    return query + form, query, body


def _authenticate(pairs: list[tuple[str, str]], query: list[tuple[str, str]], body: bytes) -> Verified | None:
    """After the throttle of failed attempts, verify the signature, the timestamp and the nonce (a
    failure is counted); what was verified, or None without auth.

    Raises:
        AuthThrottledError: this source address, or the named key from it, failed too often (nothing
            was verified).
        SignatureError: with the vendor's code.
        ServiceError: Redis is unavailable for the nonce register (503).
    """
    services = current_app.extensions["mpu"]
    if services.auth_disabled:
        return None
    signed = SignedRequest(request.method, request.path, pairs, query, dict(request.headers), body)
    attempt = admit_attempt(services.access_keys, claimed_access_key_id(signed))

    def secret_of(key_id: str) -> str | None:
        key = services.access_keys.get(key_id)
        return None if key is None else str(key.secret)

    def use_nonce(key_id: str, nonce: str) -> bool:
        if len(nonce) > MAX_NONCE_LENGTH:
            raise SignatureError("InvalidParameter", f"SignatureNonce is longer than {MAX_NONCE_LENGTH}", 400)
        return bool(services.use_nonce(key_id, nonce, 2 * TIMESTAMP_WINDOW))

    try:
        return verify(signed, secret_of, use_nonce=use_nonce)
    except SignatureError:
        count_failure(attempt)
        raise


#: The common parameters that headers may carry too: (parameter, header, default).
_HEADER_PARAMS = (("Action", "x-acs-action", ""), ("Version", "x-acs-version", VERSION))


def _action_and_version(pairs: list[tuple[str, str]], scheme: str | None) -> tuple[str, str]:
    """The call's Action and Version from signed inputs only (module docstring); ``scheme`` is the
    verified signature's (None: authentication off, when either source goes).

    Raises:
        ServiceError: InvalidParameter: Action, Version or Format given twice with different values, or
            a parameter and its header that disagree.
        SignatureError: IncompleteSignature: an RPC v1 call's ``x-acs-action`` / ``x-acs-version`` that
            is not its signed parameter.
    """
    conflict = first_conflict(pairs, ("Action", "Version", "Format"))
    if conflict is not None:
        raise ServiceError(400, "InvalidParameter", f"{conflict} is given twice with different values")
    common = dict(pairs)
    chosen: list[str] = []
    for name, header, default in _HEADER_PARAMS:
        param = common.get(name) or None
        sent = (request.headers.get(header) or "").strip() or None
        if sent is not None and sent != param:
            if scheme == RPC_V1:
                raise SignatureError(
                    "IncompleteSignature",
                    f"the header {header} is not covered by RPC signature v1 and is not the signed {name}",
                    400,
                )
            if param is not None:
                raise ServiceError(400, "InvalidParameter", f"{name} and the header {header} differ")
        chosen.append(param or sent or default)
    return chosen[0], chosen[1]


def _throttled(code: str, message: str, decision: Decision, rid: str, host: str, xml: bool) -> Response:
    """A 429 in the vendor's shape with ``Retry-After`` (seconds) and ``x-acs-retry-after`` (ms)."""
    response = error_response(429, code, message, rid, host, xml)
    response.headers["Retry-After"] = str(decision.retry_after_seconds)
    response.headers["x-acs-retry-after"] = str(max(1, round(decision.retry_after * 1000)))
    return response


@bp.route("/", methods=["GET", "POST"])
def rpc() -> Response:
    """Serve one MPU action (see the module docstring)."""
    rid = request_id()
    host = request.host
    xml = False
    try:
        pairs, query, body = _pairs()
        common = dict(pairs)
        xml = common.get("Format", "").upper() == "XML"
        verified = _authenticate(pairs, query, body)
        key_id = None if verified is None else verified.access_key_id
        limiter = current_app.extensions["mpu"].limiter
        if key_id is not None and limiter is not None:
            decision = limiter.hit(key_id)
            if not decision.allowed:
                return _throttled(THROTTLING_CODE, limiter.message(decision), decision, rid, host, xml)
        action, version = _action_and_version(pairs, None if verified is None else verified.scheme)
        if not action:
            raise ServiceError(400, "MissingParameter", "Action is required", ("action",))
        if action not in ACTIONS:
            raise ServiceError(404, "InvalidAction.NotFound", f"unknown Action {action[:64]!r}")
        if version != VERSION:
            raise ServiceError(400, "InvalidVersion", f"Version must be {VERSION}")
        params = parse_rpc_params(pairs)
        _check_characters(params)
        app_id = params.pop("app_id", None)
        if not app_id:
            raise ServiceError(400, "MissingParameter", "AppId is required", ("app_id",))
        if not isinstance(app_id, str) or not APP_ID.fullmatch(app_id):
            raise ServiceError(400, "InvalidParameter", "AppId must be 1-64 characters of A-Z a-z 0-9 _ -")
        if key_id is not None and not current_app.extensions["mpu"].access_keys[key_id].allows(app_id):
            raise ServiceError(403, "Forbidden", f"this access key may not act on AppId {app_id}")
        result = ACTIONS[action](Call(app_id, params))
        return render({"RequestId": rid, **result}, 200, f"{action}Response" if xml else None)
    except AuthThrottledError as exc:
        return _throttled(AUTH_THROTTLING_CODE, exc.message, exc.decision, rid, host, xml)
    except SignatureError as exc:
        return error_response(exc.http_status, exc.code, exc.message, rid, host, xml)
    except RpcParamError as exc:
        return error_response(400, exc.code, exc.message, rid, host, xml)
    except ServiceError as exc:  # the vendor's shape has no field: the message names it
        return error_response(
            exc.status, exc.code, with_field(rpc_field(exc.field), exc.message), rid, host, xml
        )
