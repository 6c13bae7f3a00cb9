"""The MPU RPC dialect at ``/`` in process (Flask test client, a real Redis task store): transport
details the SDK tests do not reach: GET and form bodies, XML, both nested-list encodings, the error
shape, and a fuzz run of arbitrary parameters that must never give a 5xx."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc_mpu.api.app import create_app
from rtc_mpu.api.signatures import rpc_v1_signature
from rtc_mpu.workers.model import TaskState, TaskStatus
from rtc_mpu.workers.store import TaskStore

AK, SECRET = "rpc-key", "rpc-secret"
URL = "rtmp://cdn.example.com/live/streamkey?auth=zz"


class Queue:
    """A recording enqueue function."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, app_id: str, task_id: str) -> None:
        self.calls.append((app_id, task_id))


@pytest.fixture
def open_client(task_store: TaskStore) -> FlaskClient:
    """Authentication off: the transport alone."""
    return create_app({"MPU_AUTH_DISABLED": True, "STORE": task_store, "ENQUEUE": Queue()}).test_client()


@pytest.fixture
def signed_client(task_store: TaskStore) -> FlaskClient:
    return create_app(
        {"MPU_ACCESS_KEYS": f"{AK}:{SECRET}", "STORE": task_store, "ENQUEUE": Queue()}
    ).test_client()


def start_params(task_id: str = "t1", **extra: str) -> dict[str, str]:
    params = {
        "Action": "StartMPUTask",
        "Version": "2018-01-11",
        "AppId": "app1",
        "ChannelId": "ch1",
        "TaskId": task_id,
        "StreamURL": URL,
        "LayoutIds.1": "1",
        "LayoutIds.2": "2",
    }
    params.update(extra)
    return params


def status_of(client: FlaskClient, task_id: str = "t1", fmt: str = "JSON") -> Any:
    query = {"Action": "GetMPUTaskStatus", "AppId": "app1", "TaskId": task_id, "Format": fmt}
    return client.get("/?" + urlencode(query))


def test_get_query_post_query_and_form_body_are_the_same_call(
    open_client: FlaskClient, task_store: TaskStore
) -> None:
    answer = open_client.get(
        "/?" + urlencode(start_params("by-get", StreamURL=URL.replace("streamkey", "a")))
    )
    assert answer.status_code == 200 and answer.json is not None and answer.json["RequestId"]
    answer = open_client.post("/", data=start_params("by-form", StreamURL=URL.replace("streamkey", "b")))
    assert answer.status_code == 200, answer.json
    mixed = start_params("by-both", StreamURL=URL.replace("streamkey", "c"))
    form = {k: mixed.pop(k) for k in ("LayoutIds.1", "LayoutIds.2", "StreamURL")}
    answer = open_client.post("/?" + urlencode(mixed), data=form)
    assert answer.status_code == 200, answer.json
    for task_id in ("by-get", "by-form", "by-both"):
        assert task_store.get_task("app1", task_id).params.layout_ids == (1, 2)


def test_both_encodings_of_pane_images_and_texts(open_client: FlaskClient, task_store: TaskStore) -> None:
    dotted = {
        "UserPanes.1.PaneId": "0",
        "UserPanes.1.UserId": "alice",
        "UserPanes.1.Images.1.Url": "https://example.com/a.png",
        "UserPanes.1.Images.1.X": "0.25",
        "UserPanes.1.Images.1.Display": "2",
        "UserPanes.1.Texts.1.Text": "Alice",
        "UserPanes.1.Texts.1.FontSize": "20",
    }
    old = {  # the old SDK's encoding: no dot between the pane and the item index
        "UserPanes.1.PaneId": "0",
        "UserPanes.1.UserId": "alice",
        "UserPanes.11.Url": "https://example.com/a.png",
        "UserPanes.12.Url": "https://example.com/a.png",
        "UserPanes.12.X": "0.25",
        "UserPanes.12.Display": "2",
        "UserPanes.11.Text": "Alice",
        "UserPanes.11.FontSize": "20",
    }
    assert open_client.post("/", data=start_params("dotted", **dotted)).status_code == 200
    other = URL.replace("streamkey", "old")
    assert open_client.post("/", data=start_params("old", StreamURL=other, **old)).status_code == 200
    (pane,) = task_store.get_task("app1", "dotted").params.user_panes
    (old_pane,) = task_store.get_task("app1", "old").params.user_panes
    assert pane["images"][0]["x"] == 0.25 and pane["images"][0]["display"] == 2
    assert pane["texts"][0] == old_pane["texts"][0]
    assert old_pane["images"][1] == pane["images"][0]
    assert old_pane["images"][0]["url"] == "https://example.com/a.png"


def test_xml_answers_and_errors(open_client: FlaskClient) -> None:
    assert open_client.post("/", data=start_params()).status_code == 200
    answer = status_of(open_client, fmt="XML")
    assert answer.status_code == 200 and answer.mimetype == "application/xml"
    root = ElementTree.fromstring(answer.data)
    assert root.tag == "GetMPUTaskStatusResponse"
    assert root.findtext("Status") == "0" and root.findtext("RequestId")
    assert "streamkey" not in answer.get_data(as_text=True)
    missing = status_of(open_client, "nope", fmt="XML")
    error = ElementTree.fromstring(missing.data)
    assert missing.status_code == 404 and error.tag == "Error"
    assert error.findtext("Code") == "InvalidTask.NotFound" and error.findtext("HostId") == "localhost"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"Action": "Nope", "AppId": "a"}, 404, "InvalidAction.NotFound"),
        ({"AppId": "a"}, 400, "MissingParameter"),
        ({"Action": "GetMPUTaskStatus", "TaskId": "t"}, 400, "MissingParameter"),
        ({"Action": "GetMPUTaskStatus", "AppId": "a"}, 400, "MissingParameter"),
        ({"Action": "GetMPUTaskStatus", "AppId": "a:b", "TaskId": "t"}, 400, "InvalidParameter"),
        (
            {"Action": "GetMPUTaskStatus", "AppId": "a", "TaskId": "t", "Version": "2017-01-01"},
            400,
            "InvalidVersion",
        ),
        ({"Action": "StartMPUTask", "AppId": "a", "TaskId": "t", "ChannelId": "c"}, 400, "MissingParameter"),
        ({**start_params(), "Unknown": "1"}, 400, "InvalidParameter"),
        ({**start_params(), "LayoutIds": "1"}, 400, "InvalidParameter"),  # scalar and list at once
        (
            {**start_params(), "UserPanes.111.Url": "https://e.com/a.png"},
            400,
            "InvalidParameter",
        ),  # ambiguous
        (
            {
                **start_params(),
                "UserPanes.1.PaneId": "0",
                "UserPanes.1.UserId": "u",
                "UserPanes.1.Images.1.Url": "ftp://e.com/a.png",
            },
            400,
            "InvalidParameter",
        ),
        (
            {
                **start_params(),
                "UserPanes.1.PaneId": "0",
                "UserPanes.1.UserId": "u",
                "UserPanes.1.Texts.1.Text": "t",
                "UserPanes.1.Texts.1.FontSize": "73",
            },
            400,
            "InvalidParameter",
        ),
        (
            {**start_params(), "Watermarks.1.Url": "https://e.com/w.png", "Watermarks.1.Alpha": "2"},
            400,
            "InvalidParameter",
        ),
        ({**start_params(), "MediaEncode": "x"}, 400, "InvalidMediaEncode.Malformed"),
        ({**start_params(), "LayoutIds.1": "one"}, 400, "InvalidLayoutID.Malformed"),
        ({**start_params(), "BackgroundColor": "-1"}, 400, "InvalidBackgroundColor.Malformed"),
        ({**start_params(), "StreamURL": "file:///etc/passwd"}, 400, "InvalidStreamURL.Malformed"),
        ({"Action": "DeleteMPULayout", "AppId": "a", "LayoutId": "x"}, 400, "InvalidParameter"),
        ({"Action": "DeleteMPULayout", "AppId": "a", "LayoutId": "5"}, 404, "InvalidLayout.NotFound"),
        ({"Action": "DescribeMPULayoutInfoList", "AppId": "a", "PageSize": "1000"}, 400, "InvalidParameter"),
    ],
)
def test_errors_have_the_vendor_shape(
    open_client: FlaskClient, params: dict[str, str], status: int, code: str
) -> None:
    answer = open_client.post("/", data=params)
    body = answer.json
    assert answer.status_code == status and body is not None, body
    assert set(body) == {"RequestId", "HostId", "Code", "Message"} and body["Code"] == code, body
    assert "streamkey" not in answer.get_data(as_text=True)


def test_other_methods_and_oversized_bodies_answer_in_the_vendor_shape(open_client: FlaskClient) -> None:
    answer = open_client.put("/", data=start_params())
    assert answer.status_code == 405 and answer.json is not None and answer.json["Code"] == "MethodNotAllowed"
    assert {"GET", "POST"} <= set(answer.headers["Allow"].split(", "))  # RFC 9110
    answer = open_client.post("/", data={"Action": "StartMPUTask", "ChannelId": "x" * 70000})
    assert answer.status_code == 413 and answer.json is not None and answer.json["Code"] == "RequestTooLarge"


def test_unsigned_and_badly_signed_requests_are_refused(signed_client: FlaskClient) -> None:
    answer = signed_client.post("/", data=start_params())
    assert answer.status_code == 400 and answer.json is not None and answer.json["Code"] == "MissingParameter"
    params = {
        **start_params(),
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": "2020-01-01T00:00:00Z",
    }
    params["Signature"] = rpc_v1_signature(SECRET, "POST", list(params.items()))
    answer = signed_client.post("/", data=params)
    assert answer.json is not None and answer.json["Code"] == "InvalidTimeStamp.Expired"
    params["TaskId"] = "changed-after-signing"
    answer = signed_client.post("/", data=params)
    assert answer.json is not None and answer.json["Code"] == "SignatureDoesNotMatch"


NAMES = st.sampled_from(
    [
        "Action",
        "AppId",
        "TaskId",
        "ChannelId",
        "StreamURL",
        "MediaEncode",
        "LayoutIds.1",
        "LayoutIds.17",
        "LayoutIds",
        "UserPanes.1.PaneId",
        "UserPanes.1.UserId",
        "UserPanes.11.Url",
        "UserPanes.11.X",
        "UserPanes.1.Images.1.Url",
        "UserPanes.1.Texts.1.Text",
        "UserPanes.99.Text",
        "Backgrounds.1.Url",
        "Watermarks.1.Alpha",
        "ClockWidgets.1.FontSize",
        "EnhancedParam.EnablePortraitSegmentation",
        "LayoutId",
        "Name",
        "Panes.1.X",
        "Panes.1.PaneId",
        "PageNum",
        "PageSize",
        "Format",
        "Version",
        "SubSpecUsers.1",
        "CropMode",
        "BackgroundColor",
        "TaskProfile",
        "MixMode",
        "x.y.z.w.v",
        "",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "0.5",
            "1e309",
            "nan",
            "abc",
            "",
            "StartMPUTask",
            "app1",
            "GetMPUTaskStatus",
            "CreateMPULayout",
            "DescribeMPULayoutInfoList",
            "UpdateMPULayout",
            "rtmp://h/live/s",
            "XML",
            "https://e.com/a.png",
            "99999999999999999999",
        ]
    ),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(NAMES | st.text(max_size=12), VALUES), max_size=12))
def test_fuzz_no_5xx(open_client: FlaskClient, pairs: list[tuple[str, str]]) -> None:
    answer = open_client.post("/", data=urlencode(pairs), content_type="application/x-www-form-urlencoded")
    assert answer.status_code < 500, answer.get_data(as_text=True)
    body = answer.json if answer.mimetype == "application/json" else None
    if answer.status_code >= 400 and body is not None:
        assert {"Code", "Message", "RequestId", "HostId"} <= set(body)


# -- issue 11: malformed URLs (D4), destinations (D8), stopping (D9) in the vendor's shape ---------


def call(client: FlaskClient, action: str, fmt: str = "JSON", **params: str) -> Any:
    return client.post("/", data={"Action": action, "AppId": "app1", "Format": fmt, **params})


@pytest.mark.parametrize("url", ["rtmp://[::1/live/x", "rtmp://h:99999/live/x", "rtmp://h/live/x\u202e"])
@pytest.mark.parametrize("fmt", ["JSON", "XML"])
def test_a_malformed_stream_url_is_400_in_the_vendor_shape(
    open_client: FlaskClient, url: str, fmt: str
) -> None:
    answer = open_client.post("/", data={**start_params(StreamURL=url), "Format": fmt})
    assert answer.status_code == 400, answer.get_data(as_text=True)
    if fmt == "XML":
        assert ElementTree.fromstring(answer.data).findtext("Code") == "InvalidStreamURL.Malformed"
    else:
        assert answer.json is not None and answer.json["Code"] == "InvalidStreamURL.Malformed"


def test_an_alias_of_a_pushing_url_is_in_use_and_an_unknown_host_unresolvable(
    open_client: FlaskClient, task_store: TaskStore
) -> None:
    assert (
        open_client.post("/", data=start_params("t1", StreamURL="rtmp://127.0.0.1/live/x")).status_code == 200
    )
    for alias in (
        "rtmp://localhost:1935/live/x",
        "rtmp://0x7f000001/live/x",
        "rtmp://[::ffff:7f00:1]/live/x",
    ):
        answer = open_client.post("/", data=start_params("t2", StreamURL=alias))
        assert answer.status_code == 409 and answer.json is not None
        assert answer.json["Code"] == "StreamURL.InUse", alias
    answer = open_client.post("/", data=start_params("t3", StreamURL="rtmp://push.invalid/live/x?auth=zz"))
    assert answer.status_code == 400 and answer.json is not None
    assert answer.json["Code"] == "InvalidStreamURL.Unresolvable" and "zz" not in answer.get_data(
        as_text=True
    )


def test_stop_shows_stopping_and_refuses_updates_in_the_vendor_shape(
    open_client: FlaskClient, task_store: TaskStore
) -> None:
    assert open_client.post("/", data=start_params()).status_code == 200
    token = task_store.claim("app1", "t1", "w1")
    assert token is not None
    task_store.heartbeat("app1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING)
    assert call(open_client, "StopMPUTask", TaskId="t1").status_code == 200
    status = status_of(open_client).json
    assert status is not None and (status["Status"], status["State"]) == (1, "stopping")
    for action, params in (
        ("UpdateMPULayout", {"LayoutIds.1": "6"}),
        ("UpdateMPUTask", {"CropMode": "1"}),
    ):
        answer = call(open_client, action, TaskId="t1", **params)
        assert answer.status_code == 409 and answer.json is not None
        assert set(answer.json) == {"RequestId", "HostId", "Code", "Message"}
        assert answer.json["Code"] == "InvalidTask.Stopping"
        xml = call(open_client, action, fmt="XML", TaskId="t1", **params)
        assert (
            xml.status_code == 409
            and ElementTree.fromstring(xml.data).findtext("Code") == "InvalidTask.Stopping"
        )
    again = call(open_client, "StopMPUTask", TaskId="t1")
    assert again.status_code == 200 and status_of(open_client).json["State"] == "stopping"
    task_store.finish("app1", "t1", token, TaskStatus.STOPPED_BY_USER, "stopped by the user")
    ended = status_of(open_client).json
    assert ended is not None and (ended["Status"], ended["State"]) == (3, "ended")
