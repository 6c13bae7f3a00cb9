"""One field path in errors (issue 12): every layer (schemas, spec validation, stores, the service) names
the request field at fault by one path, the schemas' snake_case names and 0-based positions
(:data:`rtc_mpu.layouts.FieldPath`), and each dialect renders it (:mod:`rtc_mpu.api.errors`): REST answers
the body's JSON path in ``field`` and leads the message with it; RPC leads the message with the
vendor's parameter (``UserPanes.2.PaneId``), through the one table of wire names
(:func:`rtc_mpu.api.rpc_params.wire_name`).

Every StartMPUTask field has a case below (:func:`test_every_start_field_has_a_case`): a field added to
:class:`rtc_mpu.api.schemas.TaskIn` fails it until a case provokes an error on it in both dialects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from apiflask.fields import List, Nested
from flask.testing import FlaskClient
from marshmallow import Schema

from rtc_mpu.api.app import create_app
from rtc_mpu.api.errors import rest_field, rpc_field, with_field
from rtc_mpu.api.rpc_params import wire_name
from rtc_mpu.api.schemas import TaskIn
from rtc_mpu.workers.store import TaskStore

#: A valid StartMPUTask body; each case changes or adds one field.
BASE: dict[str, Any] = {
    "task_id": "t1",
    "channel_id": "room",
    "stream_url": "rtmp://cdn.example.com/live/key",
}
TOO_LONG_NAME = "n" * 65
#: TaskIn fields the RPC dialect does not have (its StartMPUTask is the vendor's, unchanged).
REST_ONLY = {"outputs"}

#: (changes to BASE, the path of the field at fault, the error code). Errors found by the schemas, by
#: the spec validation (layouts, StreamURL, panes, overlays) and by the service (custom layouts).
CASES: list[tuple[dict[str, Any], tuple[str | int, ...], str]] = [
    ({"task_id": "bad id!"}, ("task_id",), "InvalidParameter"),
    ({"channel_id": ""}, ("channel_id",), "InvalidParameter"),
    ({"stream_url": "http://cdn.example.com/live/key"}, ("stream_url",), "InvalidStreamURL.Malformed"),
    ({"stream_url": "rtmp://push.invalid/live/key"}, ("stream_url",), "InvalidStreamURL.Unresolvable"),
    ({"task_profile": "NOPE"}, ("task_profile",), "InvalidTaskProfile.Malformed"),
    ({"task_profile": "1IN_720P", "layout_ids": [2]}, ("layout_ids",), "InvalidLayoutID.Malformed"),
    ({"payload_type": 2}, ("payload_type",), "InvalidParameter"),
    ({"report_vad": 2}, ("report_vad",), "InvalidParameter"),
    ({"vad_interval": 50}, ("vad_interval",), "InvalidParameter"),
    ({"rtp_ext_info": 2}, ("rtp_ext_info",), "InvalidParameter"),
    ({"time_stamp_ref": "soon"}, ("time_stamp_ref",), "InvalidParameter"),
    ({"task_type": 101}, ("task_type",), "InvalidParameter"),
    ({"task_mode": 2}, ("task_mode",), "InvalidParameter"),
    (
        {"enhanced_param": {"background_path": "p" * 2049}},
        ("enhanced_param", "background_path"),
        "InvalidParameter",
    ),
    ({"media_encode": 999}, ("media_encode",), "InvalidMediaEncode.Malformed"),
    ({"media_encode": 20, "task_profile": "4IN_360P"}, ("media_encode",), "InvalidMediaEncode.Malformed"),
    ({"layout_ids": [1, 12]}, ("layout_ids", 1), "InvalidLayoutID.Malformed"),
    ({"layout_ids": [3, 4]}, ("layout_ids",), "InvalidLayoutID.Malformed"),
    ({"layout_ids": [1, 1]}, ("layout_ids",), "InvalidLayoutID.Malformed"),
    ({"layout_ids": [1, 150]}, ("layout_ids", 1), "InvalidLayoutID.Malformed"),  # no such custom layout
    *(
        ({name: ["alice", TOO_LONG_NAME]}, (name, 1), "InvalidParameter")
        for name in (
            "sub_spec_users",
            "sub_spec_audio_users",
            "sub_spec_camera_users",
            "sub_spec_share_screen_users",
            "unsub_spec_audio_users",
            "unsub_spec_camera_users",
            "unsub_spec_share_screen_users",
        )
    ),
    ({"mix_mode": 2}, ("mix_mode",), "InvalidParameter"),
    ({"stream_type": 3}, ("stream_type",), "InvalidParameter"),
    ({"source_type": "window"}, ("source_type",), "InvalidParameter"),
    ({"user_panes": [{"pane_id": 0}]}, ("user_panes", 0, "user_id"), "MissingParameter"),
    (
        {"user_panes": [{"pane_id": 0, "user_id": "u"}, {"pane_id": 0, "user_id": "v"}]},
        ("user_panes", 1, "pane_id"),
        "InvalidParameter",
    ),
    (
        {"user_panes": [{"pane_id": 0, "user_id": "u"}, {"pane_id": 1, "user_id": "u"}]},
        ("user_panes", 1, "user_id"),
        "InvalidParameter",
    ),
    (
        {"user_panes": [{"pane_id": 0, "user_id": "u", "images": [{"url": "ftp://example.com/a.png"}]}]},
        ("user_panes", 0, "images", 0, "url"),
        "InvalidParameter",
    ),
    ({"background_color": 0x1000000}, ("background_color",), "InvalidBackgroundColor.Malformed"),
    ({"crop_mode": 5}, ("crop_mode",), "InvalidParameter"),
    ({"backgrounds": [{"url": "ftp://example.com/a.png"}]}, ("backgrounds", 0, "url"), "InvalidParameter"),
    (
        {"watermarks": [{"url": "https://example.com/a.png", "alpha": 2}]},
        ("watermarks", 0, "alpha"),
        "InvalidParameter",
    ),
    ({"clock_widgets": [{"font_size": 100}]}, ("clock_widgets", 0, "font_size"), "InvalidParameter"),
    # outputs (issue 13): REST only (REST_ONLY); the RPC dialect refuses the parameter.
    ({"outputs": [{"kind": "webrtc"}]}, ("outputs", 0, "kind"), "InvalidOutput.Kind"),
    (
        {"outputs": [{"kind": "rtc", "url": "rtmp://a.example.com/l/k"}]},
        ("outputs", 0, "url"),
        "InvalidParameter",
    ),
    (
        {"outputs": [{"kind": "ftp", "url": "rtmp://a.example.com/l/k"}]},
        ("outputs", 0, "kind"),
        "InvalidOutput.Kind",
    ),
    (
        {"outputs": [{"kind": "rtmp", "url": "http://cdn.example.com/live/other"}]},
        ("outputs", 0, "url"),
        "InvalidStreamURL.Malformed",
    ),
    (
        {"outputs": [{"kind": "snapshot"}, {"kind": "record", "template": "../{start_time}"}]},
        ("outputs", 1, "template"),
        "InvalidOutput.Template",
    ),
    (
        {"outputs": [{"kind": "record", "template": "/abs/{start_time}"}]},
        ("outputs", 0, "template"),
        "InvalidOutput.Template",
    ),
    (
        {
            "outputs": [
                {"kind": "snapshot"},
                {"kind": "rtmp", "url": "RTMP://CDN.Example.com:1935/live/key?x=1"},
            ]
        },
        ("outputs", 1, "url"),
        "InvalidOutput.Duplicate",
    ),
    (
        {"outputs": [{"kind": "record", "template": "{output_id}"}] * 10},
        ("outputs", 9),
        "InvalidOutput.LimitExceeded",
    ),
    (
        {"clock_widgets": [{"time_zone": "Mars/Olympus"}]},
        ("clock_widgets", 0, "time_zone"),
        "InvalidParameter",
    ),
]


def case_id(case: tuple[dict[str, Any], tuple[str | int, ...], str]) -> str:
    return f"{'.'.join(map(str, case[1]))}-{case[2]}"


def wire_pairs(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str, str]]:
    """A REST body as RPC parameters (``UserPanes.1.Images.1.Url``)."""
    if isinstance(data, dict):
        return [pair for key, value in data.items() for pair in wire_pairs(value, (*path, key))]
    if isinstance(data, list):
        return [pair for index, value in enumerate(data) for pair in wire_pairs(value, (*path, index))]
    text = ("true" if data else "false") if isinstance(data, bool) else str(data)
    return [(wire_name(path), text)]


def in_schema(schema: Schema, path: tuple[str | int, ...]) -> bool:
    """Whether ``path`` names a field of ``schema`` (list positions inside lists)."""
    if not path or not isinstance(path[0], str) or path[0] not in schema.fields:
        return False
    field: Any = schema.fields[path[0]]
    rest = path[1:]
    while rest:
        if isinstance(field, List) and isinstance(rest[0], int):
            field, rest = field.inner, rest[1:]
        elif isinstance(field, Nested) and isinstance(field.schema, Schema):
            return in_schema(field.schema, rest)
        else:
            return False
    return True


@pytest.fixture
def client(task_store: TaskStore) -> FlaskClient:
    """Both dialects (authentication off: the error rendering alone)."""
    app = create_app(
        {"MPU_AUTH_DISABLED": True, "STORE": task_store, "ENQUEUE": lambda app_id, task_id: None}
    )
    return app.test_client()


def test_every_start_field_has_a_case() -> None:
    covered = {str(path[0]) for _, path, _ in CASES}
    assert covered == set(TaskIn().fields), set(TaskIn().fields) ^ covered


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_both_dialects_name_the_field(
    client: FlaskClient, case: tuple[dict[str, Any], tuple[str | int, ...], str]
) -> None:
    changes, path, code = case
    body = {**BASE, **changes}

    rest = client.post("/v1/apps/app1/tasks", json=body)
    data = rest.json
    assert rest.status_code == 400 and data is not None, (rest.status_code, data)
    dotted = ".".join(str(part) for part in path)
    assert (data["code"], data["field"]) == (code, dotted), data
    assert in_schema(TaskIn(), path), path  # the JSON path of a body field
    assert all(isinstance(p, int) or p == p.lower() for p in path), path  # snake_case
    assert data["message"].startswith(dotted), data

    query = {"Action": "StartMPUTask", "Version": "2018-01-11", "AppId": "app1", **dict(wire_pairs(body))}
    rpc = client.post("/", data=urlencode(query), content_type="application/x-www-form-urlencoded")
    answer = rpc.json
    assert rpc.status_code == 400 and answer is not None, (rpc.status_code, answer)
    if path[0] in REST_ONLY:  # not a parameter of the vendor's dialect
        assert answer["Code"] == "InvalidParameter", answer
        assert answer["Message"].startswith(wire_name(path[:1])), answer
        return
    assert answer["Code"] == code, answer
    assert answer["Message"].startswith(wire_name(path)), answer  # the vendor's parameter
    assert dotted not in answer["Message"] or dotted == wire_name(path), answer


def test_the_renderings() -> None:
    path = ("user_panes", 1, "images", 0, "url")
    assert (rest_field(path), rpc_field(path)) == ("user_panes.1.images.0.url", "UserPanes.2.Images.1.Url")
    assert (rest_field(("stream_url",)), rpc_field(("stream_url",))) == ("stream_url", "StreamURL")
    assert rest_field(None) is None and rpc_field(None) is None and rest_field(()) is None
    assert with_field("CropMode", "must be 1 or 2") == "CropMode: must be 1 or 2"
    assert with_field("CropMode", "CropMode 5 must be 1 or 2") == "CropMode 5 must be 1 or 2"  # named already
    assert (
        with_field("LayoutIds.2", "LayoutIds lists a layout twice")
        == "LayoutIds.2: LayoutIds lists a layout twice"
    )
    assert (
        with_field("Name", "Names must differ") == "Name: Names must differ"
    )  # a longer word is not the name
    assert with_field(None, "no field") == "no field"
