"""Characters in request strings, both dialects, on the real Redis store (issue 11): lone surrogates
(D1), a stored layout name that broke every answer listing it (D2), ids with a trailing newline (D3),
control and bidirectional characters in ids and names (D5), the RPC PageNum cap, the error of an
out-of-canvas custom layout, and the log formatting that keeps one record on one line.

The field lists are derived, not written out: the REST operations and their request schemas from the
app's own routes, every string field (and its character rule) from the schemas, the RPC actions from
:data:`rtc_mpu.api.rpc.ACTIONS`. A new string field, schema, operation or action either is covered at once or
fails :func:`test_every_request_schema_and_field_is_covered` until its base request below names it.
"""

from __future__ import annotations

import copy
import http.server
import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import pytest
from apiflask import APIFlask, Schema
from apiflask.fields import Field, List, Nested, String
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from rtc_mpu.api.app import create_app
from rtc_mpu.api.ingests import ControlIn, IngestIn
from rtc_mpu.api.rpc import ACTIONS, VERSION
from rtc_mpu.api.rpc_format import to_xml
from rtc_mpu.api.rpc_params import wire_name
from rtc_mpu.api.schemas import (
    CHAR_RULE,
    TASK_ID,
    AddOutputIn,
    CustomLayoutIn,
    CustomLayoutPatchIn,
    InputSchema,
    LayoutIn,
    LayoutQuery,
    StartFieldsIn,
    TaskIn,
    TaskUpdateIn,
    is_task_id,
    text_fields,
)
from rtc_mpu.api.service import MAX_PAGE_NUM, validation_code
from rtc_mpu.api.signatures import rpc_v1_signature
from rtc_mpu.api.tokens import TokenIn
from rtc_mpu.api.webhooks import WebhooksIn
from rtc_mpu.layouts import SpecError
from rtc_mpu.logs import SafeFormatter, Verbatim, configure_logging
from rtc_mpu.spec.overlays import Layer, build_subscriptions, text_overlay
from rtc_mpu.spec.task import UserPane, build_task_spec
from rtc_mpu.spec.text_rules import CharRule, char_problem, escape_for_log
from rtc_mpu.stack.janus import Janus
from rtc_mpu.workers.layout_store import LayoutStore
from rtc_mpu.workers.store import TaskStore
from tests.signing import basic_auth

APP = "chars"
KEY, SECRET = "chars-key", "chars-secret"
AUTH = basic_auth(KEY, SECRET)
#: One character of each refused kind: C0 (NUL, tab, newline, carriage return, escape), DEL, C1 (NEL
#: too), the line/paragraph separators, bidi marks, embeddings, overrides and isolates, lone
#: surrogates, the two non-XML noncharacters.
BAD = [
    "\x00",
    "\t",
    "\n",
    "\r",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9f",
    "\u2028",
    "\u2029",
    "\u061c",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ud800",
    "\udfff",
    "\ufffe",
    "\uffff",
]
#: Characters every rule accepts (space, non-ASCII letters, emoji, zero-width joiner, private use).
GOOD = [" ", "é", "中", "\U0001f600", "\u200d", "\ue000", "&", "<", "]", "\\"]
#: The ones overlay texts accept among BAD: a line break, and the bidi controls of right-to-left text.
TEXT_ALLOWED = {"\n", "\u061c", "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069"}

Path = tuple[str | int, ...]


# -- the rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", BAD)
def test_names_refuse_every_kind_of_control_and_texts_only_some(char: str) -> None:
    for value in (char, f"a{char}", f"ab{char}c"):
        problem = char_problem(value)
        assert problem is not None and f"U+{ord(char):04X}" in problem
        assert (char_problem(value, CharRule.TEXT) is None) == (char in TEXT_ALLOWED)
    assert "\n" not in escape_for_log(f"x{char}y") and escape_for_log(f"x{char}y") != f"x{char}y"


@pytest.mark.parametrize("char", GOOD)
def test_ordinary_characters_pass(char: str) -> None:
    assert char_problem(f"a{char}b") is None and char_problem(f"a{char}b", CharRule.TEXT) is None
    assert escape_for_log(char) == char


def test_task_ids_match_whole() -> None:
    """D3: ``^...$`` with ``re.match`` took "t1\\n"; the validator matches the whole value."""
    assert is_task_id("t1") and is_task_id("a" * 55)
    for value in ("t1\n", "t1\r\n", "\nt1", "t 1", "", "a" * 56, "t1\x00", 5, None):
        assert not is_task_id(value), value
    assert TASK_ID.regex.pattern == "^[A-Za-z0-9_-]{1,55}$"  # what the OpenAPI document shows


# -- derived field lists ----------------------------------------------------------------------------


def rule_of(field: Field[Any]) -> CharRule:
    return CharRule(field.metadata.get(CHAR_RULE, CharRule.NAME))


def string_paths(schema: Schema, prefix: Path = ()) -> Iterator[tuple[Path, CharRule]]:
    """Every string field of ``schema`` and its nested schemas (list items at position 0)."""
    for name, field in schema.fields.items():
        yield from _field_paths(field, (*prefix, name))


def _field_paths(field: Field[Any], path: Path) -> Iterator[tuple[Path, CharRule]]:
    if isinstance(field, String):
        yield path, rule_of(field)
    elif isinstance(field, List):
        yield from _field_paths(field.inner, (*path, 0))
    elif isinstance(field, Nested):
        nested = field.schema
        assert isinstance(nested, Schema)
        yield from string_paths(nested, path)


def nested_schemas(schema: Schema) -> Iterator[Schema]:
    yield schema
    for field in schema.fields.values():
        inner = field.inner if isinstance(field, List) else field
        if isinstance(inner, Nested):
            assert isinstance(inner.schema, Schema)
            yield from nested_schemas(inner.schema)


#: A pane with an image and a text: every string a pane has.
PANE = {
    "pane_id": 0,
    "user_id": "alice",
    "source_type": "camera",
    "images": [{"url": "https://example.com/a.png"}],
    "texts": [{"text": "Alice"}],
}
OVERLAYS: dict[str, Any] = {
    "user_panes": [PANE],
    "backgrounds": [{"url": "https://example.com/b.png"}],
    "watermarks": [{"url": "https://example.com/w.png", "alpha": 0.5}],
    "clock_widgets": [{"time_zone": "Asia/Shanghai"}],
}
SUBSCRIPTIONS = {
    name: ["alice"]
    for name in (
        "sub_spec_users",
        "sub_spec_audio_users",
        "sub_spec_camera_users",
        "sub_spec_share_screen_users",
        "unsub_spec_audio_users",
        "unsub_spec_camera_users",
        "unsub_spec_share_screen_users",
    )
}
HALVES = [
    {"pane_id": 0, "x": 0, "y": 0, "width": 0.5, "height": 1},
    {"pane_id": 1, "x": 0.5, "y": 0, "width": 0.5, "height": 1},
]
#: A valid request per request schema, naming every string field the schema has (checked).
START_FIELDS: dict[str, Any] = {
    "task_id": "full",
    "channel_id": "room",
    "stream_url": "rtmp://cdn.example.com/live/full",
    "task_profile": "9IN_720P",
    "source_type": "camera",
    "enhanced_param": {"background_path": "https://example.com/bg.png"},
    **OVERLAYS,
    **SUBSCRIPTIONS,
}
#: An output of each kind with string fields (the fields of one kind are refused in another's).
OUTPUT_BASES: list[dict[str, Any]] = [
    {"kind": "rtmp", "url": "rtmp://cdn.example.com/live/added"},
    {"kind": "record", "format": "mp4", "template": "{start_time}_{output_id}"},
    {"kind": "hls", "playlist": "sliding"},
]
BASES: dict[type[Schema], dict[str, Any]] = {
    TaskIn: {**START_FIELDS, "outputs": [{"kind": "rtmp", "url": "rtmp://cdn.example.com/live/full-o2"}]},
    StartFieldsIn: START_FIELDS,
    AddOutputIn: OUTPUT_BASES[0],
    TaskUpdateIn: {"source_type": "camera", **OVERLAYS, **SUBSCRIPTIONS},
    LayoutIn: {"layout_ids": [1, 2], **OVERLAYS},
    CustomLayoutIn: {"name": "halves", "panes": HALVES},
    CustomLayoutPatchIn: {"name": "renamed"},
    LayoutQuery: {"name": "halves"},
    # a subscribe token: minted without Janus (a publish token needs it: tests/test_tokens_api.py)
    TokenIn: {"channel_id": "room", "user_id": "alice", "ttl_seconds": 60, "role": "subscribe"},
    WebhooksIn: {"endpoints": [{"url": "https://hooks.example.com/mpu", "secret": "0123456789abcdef"}]},
    IngestIn: {"ingest_id": "film2", "channel_id": "room", "user_id": "movie2", "url": "media:film.mp4"},
    ControlIn: {"state": "paused"},
}
#: More valid requests of a schema whose string fields cannot all be in one (outputs of other kinds);
#: a field's tests use the first base that has it.
EXTRA_BASES: dict[type[Schema], list[dict[str, Any]]] = {
    TaskIn: [
        {
            **START_FIELDS,
            "task_id": f"full{i}",
            "stream_url": f"rtmp://cdn.example.com/live/full{i}",
            "outputs": [o],
        }
        for i, o in enumerate(OUTPUT_BASES[1:], 1)
    ],
    AddOutputIn: OUTPUT_BASES[1:],
}


def base_for(schema: type[Schema], path: Path) -> dict[str, Any]:
    """The base request of ``schema`` that has ``path`` (BASES, else EXTRA_BASES)."""
    for base in [BASES[schema], *EXTRA_BASES.get(schema, [])]:
        if get_path(base, path) is not None:
            return base
    return BASES[schema]


#: What the path parameters name: the app, the task and the custom layout made by the fixtures.
PATH_VALUES = {"app_id": APP, "task_id": "t1", "layout_id": "100", "ingest_id": "film"}


@dataclass(frozen=True)
class RestTarget:
    """One REST operation that takes input: method, URL rule, the schema and where its input goes."""

    method: str
    rule: str
    schema: type[Schema]
    location: str  # "json", "query", or "path" (then schema is unused)

    def __str__(self) -> str:
        return f"{self.method} {self.rule} ({self.location})"


def rest_targets(app: APIFlask) -> list[RestTarget]:
    """Every REST operation with a request schema or a string path parameter, from the app's routes."""
    targets: list[RestTarget] = []
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions[rule.endpoint], "_spec", {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if "body" in spec:
                targets.append(RestTarget(method, rule.rule, type(spec["body"]), "json"))
            for args in spec.get("args", []):
                targets.append(RestTarget(method, rule.rule, type(args[0]), args[1]))
            if any(type(c).__name__ == "UnicodeConverter" for c in rule._converters.values()):
                targets.append(RestTarget(method, rule.rule, Schema, "path"))
    return targets


def _plain_app() -> APIFlask:
    return create_app({"MPU_AUTH_DISABLED": True, "STORE": object(), "ENQUEUE": lambda a, t: None})


REST_TARGETS = rest_targets(_plain_app())


def rest_fields() -> list[tuple[RestTarget, Path, CharRule]]:
    fields: list[tuple[RestTarget, Path, CharRule]] = []
    for target in REST_TARGETS:
        if target.location == "path":
            names = re.findall(r"<(?:string:)?([a-z_]+)>", target.rule)
            fields += [(target, (name,), CharRule.NAME) for name in names]
        else:
            fields += [(target, path, rule) for path, rule in string_paths(target.schema())]
    return fields


REST_FIELDS = rest_fields()

#: Per RPC action: the schema its parameters are validated with (None: it takes no structure) and
#: its other parameters (snake_case) in a valid call.
RPC_CALLS: dict[str, tuple[type[Schema] | None, dict[str, Any]]] = {
    "StartMPUTask": (StartFieldsIn, {}),
    "UpdateMPULayout": (LayoutIn, {"task_id": "t1"}),
    "UpdateMPUTask": (TaskUpdateIn, {"task_id": "t1"}),
    "CreateMPULayout": (CustomLayoutIn, {}),
    "ModifyMPULayout": (CustomLayoutPatchIn, {"layout_id": 100}),
    "DescribeMPULayoutInfoList": (LayoutQuery, {}),
    "DescribeMPULayoutList": (LayoutQuery, {}),
    "GetMPUTaskStatus": (None, {"task_id": "t1"}),
    "StopMPUTask": (None, {"task_id": "nobody"}),  # never stops t1, whatever a test does
    "DeleteMPULayout": (None, {"layout_id": 999}),
}


def rpc_base(action: str) -> dict[str, Any]:
    schema, extra = RPC_CALLS[action]
    return {"app_id": APP, **(copy.deepcopy(BASES[schema]) if schema is not None else {}), **extra}


def rpc_fields() -> list[tuple[str, Path, CharRule]]:
    fields: list[tuple[str, Path, CharRule]] = []
    for action, (schema, extra) in RPC_CALLS.items():
        fields.append((action, ("app_id",), CharRule.NAME))
        fields += [
            (action, (name,), CharRule.NAME) for name, value in extra.items() if isinstance(value, str)
        ]
        if schema is not None:
            fields += [(action, path, rule) for path, rule in string_paths(schema())]
    return fields


RPC_FIELDS = rpc_fields()


def test_every_request_schema_and_field_is_covered() -> None:
    """A new operation, action, schema or string field is noticed here."""
    assert set(RPC_CALLS) == set(ACTIONS)
    used = {t.schema for t in REST_TARGETS if t.location != "path"}
    used |= {schema for schema, _ in RPC_CALLS.values() if schema is not None}
    assert used == set(BASES), "give each request schema a base request in BASES"
    for schema_class in used:
        for schema in nested_schemas(schema_class()):
            assert isinstance(schema, InputSchema), f"{type(schema).__name__} must derive from InputSchema"
        for path, _ in string_paths(schema_class()):
            assert get_path(base_for(schema_class, path), path) is not None, (
                f"BASES[{schema_class.__name__}] lacks {path}"
            )
    # Free text is a decision (README "Characters"): today only overlay texts.
    assert text_fields() == {"text"}
    assert {path[-1] for _, path, rule in REST_FIELDS if rule is CharRule.TEXT} == {"text"}
    assert len(REST_FIELDS) > 50 and len(RPC_FIELDS) > 50  # not an empty derivation


# -- requests ---------------------------------------------------------------------------------------


def get_path(data: Any, path: Path) -> Any:
    for key in path:
        if isinstance(key, int):
            data = data[key] if isinstance(data, list) and len(data) > key else None
        else:
            data = data.get(key) if isinstance(data, dict) else None
    return data


def set_path(data: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    result = copy.deepcopy(data)
    node: Any = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return result


def as_received(value: str) -> str:
    """What a server decodes from ``value`` sent in a URL or a form (UTF-8; no lone surrogates)."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def well_formed_json(response: TestResponse) -> Any:
    """The answer's JSON, checked to be JSON whose strings are Unicode (UTF-8 encodable)."""
    assert response.mimetype == "application/json", response.data[:200]
    data = json.loads(response.data)
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return data


def rest_call(
    client: FlaskClient, target: RestTarget, body: Any, path_values: Mapping[str, str]
) -> TestResponse:
    url = target.rule
    for name, value in path_values.items():
        url = re.sub(rf"<(?:[a-z]+:)?{name}>", quote(value, safe="", errors="surrogatepass"), url)
    if target.location == "query":
        url += "?" + urlencode(body, errors="surrogatepass")
        return client.open(url, method=target.method, headers=AUTH)
    if target.location == "path":
        return client.open(
            url, method=target.method, headers=AUTH, json={} if target.method != "GET" else None
        )
    return client.open(
        url, method=target.method, headers=AUTH, data=json.dumps(body), content_type="application/json"
    )


def rest_with(client: FlaskClient, target: RestTarget, path: Path, value: str) -> tuple[TestResponse, str]:
    """Send ``target``'s base request with ``value`` at ``path``; the answer and what the server saw."""
    if target.location == "path":
        assert isinstance(path[0], str)
        body = copy.deepcopy(BASES.get(target.schema, {}))
        return rest_call(client, target, body, {**PATH_VALUES, path[0]: value}), as_received(value)
    body = set_path(base_for(target.schema, path), path, value)
    seen = value if target.location == "json" else as_received(value)
    return rest_call(client, target, body, PATH_VALUES), seen


def check_rest(response: TestResponse, target: RestTarget, path: Path, seen: str, rule: CharRule) -> None:
    assert response.status_code < 500, (str(target), path, response.data[:300])
    if target.location == "path" and (not seen or "/" in seen):
        return  # another route, or a redirect to one (an empty segment): routing, not characters
    data = well_formed_json(response) if response.status_code != 204 else None
    if char_problem(seen, rule) is None:
        return
    assert response.status_code == 400 and data is not None, (str(target), path, response.data[:300])
    field = ".".join(str(p) for p in path)
    assert data["field"] == field and data["code"] == validation_code(path, ""), (str(target), data)
    if target.location != "path":  # (the AppId's message is rtc_mpu.api.auth's: "app_id: must be ...")
        assert data["message"].startswith(f"{field}: contains"), data


def flatten(data: Any, path: Path = ()) -> list[tuple[str, str]]:
    """snake_case parameters as RPC wire pairs (``UserPanes.1.Images.1.Url``)."""
    if isinstance(data, dict):
        return [pair for key, value in data.items() for pair in flatten(value, (*path, key))]
    if isinstance(data, list):
        return [pair for index, value in enumerate(data) for pair in flatten(value, (*path, index))]
    text = ("true" if data else "false") if isinstance(data, bool) else str(data)
    return [(wire_name(path), as_received(text))]


def rpc_call(client: FlaskClient, action: str, params: dict[str, Any], xml: bool = False) -> TestResponse:
    """A signed RPC v1 POST of ``action`` with ``params`` (snake_case, AppId included)."""
    pairs = [
        ("Action", action),
        ("Version", VERSION),
        ("Format", "XML" if xml else "JSON"),
        ("AccessKeyId", KEY),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", uuid.uuid4().hex),
        ("Timestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        *flatten(params),
    ]
    pairs.append(("Signature", rpc_v1_signature(SECRET, "POST", pairs)))
    return client.post("/", data=urlencode(pairs), content_type="application/x-www-form-urlencoded")


def rpc_body(response: TestResponse, xml: bool) -> dict[str, str | None]:
    """The answer parsed (its top-level Code and Message), checked to be well-formed."""
    if xml:
        assert response.mimetype == "application/xml", response.data[:200]
        root = ElementTree.fromstring(response.data)
        return {"Code": root.findtext("Code"), "Message": root.findtext("Message")}
    data = well_formed_json(response)
    assert isinstance(data, dict)
    return {"Code": data.get("Code"), "Message": data.get("Message")}


def check_rpc(response: TestResponse, action: str, path: Path, seen: str, rule: CharRule, xml: bool) -> None:
    assert response.status_code < 500, (action, path, response.data[:300])
    body = rpc_body(response, xml)
    if char_problem(seen, rule) is None:
        return
    assert response.status_code == 400, (action, path, response.data[:300])
    assert body["Code"] == validation_code(path, ""), (action, path, body)
    assert (body["Message"] or "").startswith(f"{wire_name(path)}: contains"), (action, path, body)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in_edge() -> Iterator[str]:
    """A stand-in for the WHIP edge (this test is about the API's own checks): answers 404 to all."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"code": "InvalidResource.NotFound", "message": "stand-in", "field": null}')

        do_POST = do_DELETE = do_PATCH = do_OPTIONS = _answer  # noqa: N815 (http.server's names)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def app(task_store: TaskStore, stand_in_edge: str, janus: Janus) -> APIFlask:
    """The API on the real Redis, with custom layout 100 ("halves"), task t1 (using it) and ingest
    "film" in APP."""
    app = create_app(
        {
            "MPU_EDGE_URL": stand_in_edge,
            "MPU_JANUS_URL": janus.url,
            "ENQUEUE_INGEST": lambda a, i: None,
            "MPU_ACCESS_KEYS": f"{KEY}:{SECRET}",
            "STORE": task_store,
            "ENQUEUE": lambda a, t: None,
            "MPU_RATE_LIMIT": 0,
            "MPU_TOKEN_SECRET": "chars-token-secret-0123456789",
        }
    )
    client = app.test_client()
    created = client.post(f"/v1/apps/{APP}/layouts", json=BASES[CustomLayoutIn], headers=AUTH)
    assert created.status_code == 201 and created.json is not None and created.json["layout_id"] == 100
    task = {"task_id": "t1", "channel_id": "room", "stream_url": "rtmp://cdn.example.com/live/t1"}
    started = client.post(f"/v1/apps/{APP}/tasks", json={**task, "layout_ids": [100]}, headers=AUTH)
    assert started.status_code == 201, started.json
    ingest = {"ingest_id": "film", "channel_id": "room", "user_id": "movie", "url": "media:film.mp4"}
    ingested = client.post(f"/v1/apps/{APP}/ingests", json=ingest, headers=AUTH)
    assert ingested.status_code == 201, ingested.json
    return app


@pytest.fixture
def client(app: APIFlask) -> FlaskClient:
    return app.test_client()


def test_the_base_requests_are_valid(client: FlaskClient) -> None:
    """So that a 400 in the tests below is the characters' doing."""
    for target in REST_TARGETS:
        if target.location != "path":
            for base in [BASES[target.schema], *EXTRA_BASES.get(target.schema, [])]:
                response = rest_call(client, target, base, PATH_VALUES)
                assert response.status_code < 300, (str(target), response.json)
    for action in ("UpdateMPULayout", "UpdateMPUTask", "ModifyMPULayout", "GetMPUTaskStatus"):
        response = rpc_call(client, action, rpc_base(action))
        assert response.status_code == 200, (action, response.json)
    response = rpc_call(client, "StartMPUTask", {**rpc_base("StartMPUTask"), "task_id": "rpc-full"})
    assert response.status_code == 409 and response.json is not None  # REST's "full" holds the URL
    assert response.json["Code"] == "StreamURL.InUse"


# -- the reproductions of issue 11 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        (("channel_id",), "\ud800", "InvalidParameter"),
        (("stream_url",), "rtmp://cdn.example.com/live/\ud800", "InvalidStreamURL.Malformed"),
        (("stream_url",), "rtmp://cdn.example.com/live/a\x85b", "InvalidStreamURL.Malformed"),
        (("user_panes", 0, "user_id"), "\ud800", "InvalidParameter"),
        (("user_panes", 0, "texts", 0, "text"), "\ud800", "InvalidParameter"),
        (("sub_spec_users", 0), "\ud800", "InvalidParameter"),
        (("task_id",), "tnl\n", "InvalidParameter"),
        (("channel_id",), "a\nb", "InvalidParameter"),
        (("channel_id",), "a\x00b", "InvalidParameter"),
        (("channel_id",), "a\tb", "InvalidParameter"),
        (("channel_id",), "\u202eevil", "InvalidParameter"),
        (("channel_id",), "a\r\nInjected: x", "InvalidParameter"),
        (("user_panes", 0, "user_id"), "a\nb", "InvalidParameter"),
        (("sub_spec_audio_users", 0), "\u2066x", "InvalidParameter"),
    ],
)
def test_rest_start_refuses_what_gave_500_or_was_stored(
    client: FlaskClient, task_store: TaskStore, field: Path, value: str, code: str
) -> None:
    body = set_path(BASES[TaskIn], field, value)
    response = client.post(
        f"/v1/apps/{APP}/tasks", data=json.dumps(body), content_type="application/json", headers=AUTH
    )
    data = well_formed_json(response)
    dotted = ".".join(str(p) for p in field)
    assert (response.status_code, data["code"], data["field"]) == (400, code, dotted), data
    assert [r.task_id for r in task_store.list_tasks(APP)] == ["t1"]


def test_rest_task_ids_in_the_path(client: FlaskClient) -> None:
    for method in ("GET", "DELETE", "PATCH"):
        response = client.open(f"/v1/apps/{APP}/tasks/tnl%0A", method=method, headers=AUTH, json={})
        data = well_formed_json(response)
        assert (response.status_code, data["code"], data["field"]) == (400, "InvalidParameter", "task_id")
    response = client.get(f"/v1/apps/{APP}/tasks/t1", headers=AUTH)
    assert response.status_code == 200


@pytest.mark.parametrize("name", ["\ud800", "a\nb", "a\x00", "\u202eevil", "a\r\nInjected: x", "\ufffe"])
def test_layout_names_are_refused_in_both_dialects(client: FlaskClient, name: str) -> None:
    """D2/D5: such a name was stored, then broke every listing that included it."""
    response = client.post(
        f"/v1/apps/{APP}/layouts",
        data=json.dumps({"name": name, "panes": HALVES}),
        content_type="application/json",
        headers=AUTH,
    )
    assert (response.status_code, well_formed_json(response)["field"]) == (400, "name")
    response = client.patch(
        f"/v1/apps/{APP}/layouts/100",
        data=json.dumps({"name": name}),
        content_type="application/json",
        headers=AUTH,
    )
    assert (response.status_code, well_formed_json(response)["field"]) == (400, "name")
    if name != as_received(name):
        return  # a lone surrogate cannot be sent in a form
    for xml in (False, True):
        response = rpc_call(client, "CreateMPULayout", {"app_id": APP, "name": name, "panes": HALVES}, xml)
        assert response.status_code == 400 and rpc_body(response, xml)["Code"] == "InvalidParameter"
        response = rpc_call(client, "ModifyMPULayout", {"app_id": APP, "layout_id": 100, "name": name}, xml)
        assert response.status_code == 400 and (rpc_body(response, xml)["Message"] or "").startswith("Name: ")
    listing = rpc_call(client, "DescribeMPULayoutInfoList", {"app_id": APP}, xml=True)
    assert ElementTree.fromstring(listing.data).findtext("TotalNum") == "1"


def test_a_stored_bad_layout_name_still_gives_well_formed_answers(
    client: FlaskClient, task_store: TaskStore
) -> None:
    """D2, for data stored before the rule: JSON and XML answers replace what they cannot carry."""
    name = "\ud800x\x01y\ufffe\u202e"
    stored = {
        "id": 150,
        "name": name,
        "audio_mix_count": 16,
        "major_pane": None,
        "panes": [{"id": 0, "x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0, "zorder": 0}],
    }
    task_store.client.hset(f"{task_store.prefix}:app:{APP}:layouts", "150", json.dumps(stored))
    for action in ("DescribeMPULayoutInfoList", "DescribeMPULayoutList"):
        response = rpc_call(client, action, {"app_id": APP, "layout_id": 150})
        data = well_formed_json(response)
        assert (
            response.status_code == 200 and data["Layouts"]["Layout"][0]["Name"] == "\ufffdx\x01y\ufffe\u202e"
        )
        response = rpc_call(client, action, {"app_id": APP}, xml=True)
        assert response.status_code == 200, response.data
        names = [e.text for e in ElementTree.fromstring(response.data).iter("Name")]
        assert names == ["halves", "\ufffdx\ufffdy\ufffd\u202e"]
    response = client.get(f"/v1/apps/{APP}/layouts", headers=AUTH)
    assert response.status_code == 200 and well_formed_json(response)["total_num"] == 2


def xml_char(char: str) -> bool:
    """Whether XML 1.0 allows ``char`` (its ``Char`` production)."""
    code = ord(char)
    return char in "\t\n\r" or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000


def test_xml_is_well_formed_whatever_it_carries() -> None:
    text = "".join(chr(c) for c in range(0x21)) + "\ud800\udfff\ufffe\uffff\x7f\x85\u202e<&>]]>"
    expected = "".join(c if xml_char(c) else "\ufffd" for c in text).replace("\r", "\n")
    root = ElementTree.fromstring(to_xml("R", {"A": text, "B": [text, {"C": text}], "D": None, "E": True}))
    assert [e.text for e in root.iter() if e.tag in "ABC"] == [expected, expected, None, expected]
    assert root.findtext("E") == "true"


@pytest.mark.parametrize(("task_id", "status"), [("rnl\n", 400), ("r n", 400), ("nobody", 404)])
@pytest.mark.parametrize("action", ["GetMPUTaskStatus", "StopMPUTask", "UpdateMPUTask"])
def test_rpc_task_ids_are_validated(client: FlaskClient, action: str, task_id: str, status: int) -> None:
    """D3: ``TaskId=rnl%0A``."""
    params = {**rpc_base(action), "task_id": task_id}
    for xml in (False, True):
        response = rpc_call(client, action, params, xml)
        body = rpc_body(response, xml)
        assert response.status_code == status, body
        if status == 400:
            assert body["Code"] == "InvalidParameter" and (body["Message"] or "").startswith("TaskId")
    response = rpc_call(client, "StartMPUTask", {**rpc_base("StartMPUTask"), "task_id": "rnl\n"})
    assert response.status_code == 400 and rpc_body(response, False)["Message"] == (
        "TaskId: contains a control character (U+000A) at position 4"
    )


def test_rpc_page_num_has_the_rest_cap(client: FlaskClient) -> None:
    for action in ("DescribeMPULayoutInfoList", "DescribeMPULayoutList"):
        response = rpc_call(client, action, {"app_id": APP, "page_num": MAX_PAGE_NUM + 1})
        assert response.status_code == 400 and response.json is not None
        assert response.json["Code"] == "InvalidParameter" and "PageNum" in response.json["Message"]
        response = rpc_call(client, action, {"app_id": APP, "page_num": MAX_PAGE_NUM})
        assert response.status_code == 200 and response.json is not None and response.json["TotalNum"] == 1
    response = client.get(f"/v1/apps/{APP}/layouts?page_num={MAX_PAGE_NUM + 1}", headers=AUTH)
    assert response.status_code == 400 and well_formed_json(response)["field"] == "page_num"


def test_an_out_of_canvas_layout_is_named_by_itself(client: FlaskClient) -> None:
    """It said "layout 100" whatever the layout."""
    wide = [{**HALVES[0], "x": 0.9}]
    response = client.post(f"/v1/apps/{APP}/layouts", json={"name": "wide", "panes": wide}, headers=AUTH)
    data = well_formed_json(response)
    assert response.status_code == 400 and data["code"] == "InvalidLayoutID.Malformed"
    assert 'the new layout "wide" pane #0' in data["message"] and "layout 100" not in data["message"]
    created = client.post(f"/v1/apps/{APP}/layouts", json={"name": "two", "panes": HALVES}, headers=AUTH)
    assert created.status_code == 201 and created.json is not None and created.json["layout_id"] == 101
    response = client.patch(f"/v1/apps/{APP}/layouts/101", json={"panes": wide}, headers=AUTH)
    message = well_formed_json(response)["message"]
    assert response.status_code == 400 and "layout 101 pane #0" in message and "layout 100" not in message


# -- the class: every string field of both dialects -------------------------------------------------


@pytest.mark.parametrize(("target", "path", "rule"), REST_FIELDS, ids=[f"{t} {p}" for t, p, _ in REST_FIELDS])
def test_rest_every_string_field_refuses_every_kind(
    client: FlaskClient, target: RestTarget, path: Path, rule: CharRule
) -> None:
    for char in BAD:
        value = "a" + char + "b" if len(path) > 1 or path[0] != "stream_url" else f"rtmp://h/live/a{char}b"
        response, seen = rest_with(client, target, path, value)
        check_rest(response, target, path, seen, rule)


@pytest.mark.parametrize(("action", "path", "rule"), RPC_FIELDS, ids=[f"{a} {p}" for a, p, _ in RPC_FIELDS])
def test_rpc_every_string_field_refuses_every_kind(
    client: FlaskClient, action: str, path: Path, rule: CharRule
) -> None:
    for index, char in enumerate(BAD):
        xml = index % 2 == 1
        value = f"rtmp://h/live/a{char}b" if path == ("stream_url",) else f"a{char}b"
        params = set_path(rpc_base(action), path, value)
        check_rpc(rpc_call(client, action, params, xml), action, path, as_received(value), rule, xml)


#: Any text, with the troublesome characters often.
TEXTS = st.text(
    st.one_of(
        st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"]),
        st.characters(),
        st.sampled_from(BAD + GOOD),
    ),
    max_size=12,
)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(field=st.sampled_from(REST_FIELDS), value=TEXTS)
def test_rest_any_text_in_any_field(
    client: FlaskClient, field: tuple[RestTarget, Path, CharRule], value: str
) -> None:
    target, path, rule = field
    response, seen = rest_with(client, target, path, value)
    check_rest(response, target, path, seen, rule)


@PROPERTY_SETTINGS
@given(field=st.sampled_from(RPC_FIELDS), value=TEXTS, xml=st.booleans())
def test_rpc_any_text_in_any_field(
    client: FlaskClient, field: tuple[str, Path, CharRule], value: str, xml: bool
) -> None:
    action, path, rule = field
    params = set_path(rpc_base(action), path, value)
    check_rpc(rpc_call(client, action, params, xml), action, path, as_received(value), rule, xml)


# -- in depth: the spec and the layout store --------------------------------------------------------


def test_the_spec_refuses_them_too() -> None:
    with pytest.raises(SpecError, match="contains a control") as caught:
        build_task_spec(user_panes=[UserPane(0, "a\nb")])
    assert caught.value.field == ("user_panes", 0, "user_id")
    with pytest.raises(SpecError, match="bidirectional") as caught:
        build_subscriptions(sub_spec_users=["ok", "\u202eevil"])
    assert caught.value.field == ("sub_spec_users", 1)
    hebrew = "\u202b\u05e2\u05d1\u05e8\u05d9\u05ea\u202c"  # in a right-to-left embedding
    assert text_overlay({"text": f"two\nlines {hebrew}"}, "UserPanes.1.Texts.1", Layer.PANE_OVERLAY).text
    with pytest.raises(SpecError, match="contains a control") as caught:
        text_overlay(
            {"text": "a\x00"}, "UserPanes.1.Texts.1", Layer.PANE_OVERLAY, path=("user_panes", 0, "texts", 0)
        )
    assert caught.value.field == ("user_panes", 0, "texts", 0, "text")


def test_the_layout_store_refuses_bad_names(task_store: TaskStore) -> None:
    layouts = LayoutStore(task_store.client, prefix=task_store.prefix)
    panes = [{"id": 0, "x": 0, "y": 0, "width": 1, "height": 1}]
    for name in ("a\nb", "\ud800", "\u2066"):
        with pytest.raises(SpecError) as caught:
            layouts.create(APP, name=name, panes=panes)
        assert (caught.value.code, caught.value.field) == ("InvalidParameter", ("name",))
    layout = layouts.create(APP, name="ok", panes=panes)
    with pytest.raises(SpecError):
        layouts.modify(APP, layout.id, name="x\x85")
    assert layouts.list(APP) == (1, [layout])


# -- logs -------------------------------------------------------------------------------------------


def formatted(*args: Any, exc: BaseException | None = None) -> str:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, args[0], args[1:] or None, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return SafeFormatter("%(levelname)s %(message)s").format(record)


def test_logged_values_cannot_forge_lines() -> None:
    assert formatted("user %s joined %r", "a\n2024 ERROR forged", "b\u202e") == (
        "WARNING user a\\n2024 ERROR forged joined 'b\\u202e'"
    )
    assert formatted("n=%d x=%.1f", 3, 2.5) == "WARNING n=3 x=2.5"
    assert formatted("no arguments a\r\nb\x00") == "WARNING no arguments a\\r\\nb\\x00"
    assert (
        formatted("frames\n%s", Verbatim("  File x\n  line\x1b")) == "WARNING frames\n  File x\n  line\\x1b"
    )
    assert formatted("%(who)s", {"who": "\u2028x"}) == "WARNING \\u2028x"
    assert formatted("bad %d", "x") == "WARNING bad %d ('x',)"
    try:
        raise ValueError("boom\nINFO forged\u202e")
    except ValueError as error:
        text = formatted("failed %s", "t\n", exc=error)
    assert text.startswith("WARNING failed t\\n\nTraceback (most recent call last):\n")
    assert text.endswith("ValueError: boom\\nINFO forged\\u202e")


def test_mpu_commands_log_through_the_safe_formatter() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging("info")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, SafeFormatter) and root.level == logging.INFO
        stream = io.StringIO()
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        logging.getLogger("workers.test").info("channel %s", "room\nfake")
        assert stream.getvalue().count("\n") == 1 and "room\\nfake" in stream.getvalue()
    finally:
        root.handlers, root.level = saved, level
