"""Both official Python SDKs of Alibaba Cloud RTC, unchanged but for the endpoint and the keys, drive
our MPU RPC dialect served by waitress on a free port (a real Redis behind it; mixes are recorded,
not run: tests/test_service_e2e.py runs a real one started the same way).

- ``aliyun-python-sdk-core`` + ``aliyun-python-sdk-rtc`` (RPC signature v1, HMAC-SHA1);
- ``alibabacloud-rtc20180111`` + ``alibabacloud-tea-openapi`` (ACS3-HMAC-SHA256).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aliyunsdkcore.request
import pytest
import waitress
from alibabacloud_rtc20180111 import models as rtc
from alibabacloud_rtc20180111.client import Client as NewClient
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.models import Config
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.http import protocol_type
from aliyunsdkcore.request import CommonRequest, RpcRequest
from aliyunsdkcore.utils import parameter_helper
from aliyunsdkrtc.request.v20180111.CreateMPULayoutRequest import CreateMPULayoutRequest
from aliyunsdkrtc.request.v20180111.DeleteMPULayoutRequest import DeleteMPULayoutRequest
from aliyunsdkrtc.request.v20180111.DescribeMPULayoutInfoListRequest import DescribeMPULayoutInfoListRequest
from aliyunsdkrtc.request.v20180111.GetMPUTaskStatusRequest import GetMPUTaskStatusRequest
from aliyunsdkrtc.request.v20180111.ModifyMPULayoutRequest import ModifyMPULayoutRequest
from aliyunsdkrtc.request.v20180111.StartMPUTaskRequest import StartMPUTaskRequest
from aliyunsdkrtc.request.v20180111.StopMPUTaskRequest import StopMPUTaskRequest
from aliyunsdkrtc.request.v20180111.UpdateMPUTaskRequest import UpdateMPUTaskRequest

from rtc_mpu.api.app import create_app
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.model import TaskNotFoundError, TaskRecord, TaskStatus
from rtc_mpu.workers.store import TaskStore

AK, SECRET = "LTAI-test-key", "test-secret-0123456789"
BOUND_AK, BOUND_SECRET = "LTAI-bound", "bound-secret"  # may only touch app "other"


@dataclass
class Server:
    """The API on a free port, its store, and the mixes it enqueued."""

    endpoint: str
    store: TaskStore
    enqueued: list[tuple[str, str]] = field(default_factory=list)

    def task(self, app_id: str, task_id: str) -> TaskRecord:
        return self.store.get_task(app_id, task_id)


@pytest.fixture(scope="module")
def server(redis_server: Redis) -> Iterator[Server]:
    prefix = f"sdk{uuid.uuid4().hex}"
    store = TaskStore.from_url(redis_server.url, prefix=prefix, cooldown_seconds=30)
    enqueued: list[tuple[str, str]] = []
    app = create_app(
        {
            "MPU_ACCESS_KEYS": f"{AK}:{SECRET},{BOUND_AK}:{BOUND_SECRET}:other",
            # The SDK calls of this module come faster than one key's rate limit (20/s, burst 40);
            # rate limits have their own tests. Failed-login throttling stays on (fewer than 10 here).
            "MPU_RATE_LIMIT": 0,
            "STORE": store,
            "ENQUEUE": lambda app_id, task_id: enqueued.append((app_id, task_id)),
        }
    )
    http = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    try:
        yield Server(f"127.0.0.1:{http.effective_port}", store, enqueued)
    finally:
        http.close()
        keys = list(store.client.scan_iter(match=f"{prefix}:*"))
        if keys:
            store.client.delete(*keys)
        store.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def stream_url() -> str:
    return f"rtmp://127.0.0.1:1935/live/{unique('s')}?auth_key=secret-{uuid.uuid4().hex}"


# -- the old SDK (RPC signature v1) -------------------------------------------------------------


def old_client(key: str = AK, secret: str = SECRET) -> AcsClient:
    aliyunsdkcore.request.set_default_protocol_type(protocol_type.HTTP)
    return AcsClient(key, secret, "cn-hangzhou", auto_retry=False, timeout=10, connect_timeout=5)


def old_call(server: Server, request: RpcRequest, client: AcsClient | None = None) -> dict[str, Any]:
    request.set_endpoint(server.endpoint)
    answer: dict[str, Any] = json.loads((client or old_client()).do_action_with_exception(request))
    return answer


def old_error(server: Server, request: RpcRequest, client: AcsClient | None = None) -> ServerException:
    with pytest.raises(ServerException) as caught:
        old_call(server, request, client)
    return caught.value


def old_start(app_id: str, task_id: str, url: str, **extra: Any) -> StartMPUTaskRequest:
    request = StartMPUTaskRequest()
    request.set_AppId(app_id)
    request.set_ChannelId("ch1")
    request.set_TaskId(task_id)
    request.set_StreamURL(url)
    request.set_MediaEncode(extra.pop("MediaEncode", 27))
    request.set_LayoutIdss(extra.pop("LayoutIds", [1, 2]))
    for name, value in extra.items():
        getattr(request, f"set_{name}")(value)
    return request


def old_status(server: Server, app_id: str, task_id: str) -> dict[str, Any]:
    request = GetMPUTaskStatusRequest()
    request.set_AppId(app_id)
    request.set_TaskId(task_id)
    return old_call(server, request)


def test_old_sdk_start_with_panes_images_texts_status_update_stop(server: Server) -> None:
    task_id, url = unique("t"), stream_url()
    request = old_start(
        "app1",
        task_id,
        url,
        BackgroundColor=0x0000FF,
        UserPaness=[
            {
                "PaneId": 0,
                "UserId": "alice",
                "SourceType": "camera",
                "Images": [{"Url": "https://example.com/a.png", "Display": 2, "Width": 0.5, "Height": 0.5}],
            },
            {
                "PaneId": 1,
                "UserId": "bob",
                "Texts": [
                    {
                        "Text": "Bob 鲍勃",
                        "X": 0.1,
                        "Y": 0.8,
                        "FontType": 1,
                        "FontSize": 24,
                        "FontColor": 65535,
                    }
                ],
            },
        ],
    )
    request.add_query_param("TaskProfile", "2IN_720P")
    answer = old_call(server, request)
    assert answer["RequestId"]
    record = server.task("app1", task_id)
    assert (record.params.layout_ids, record.params.background_color, record.params.task_profile) == (
        (1, 2),
        0x0000FF,
        "2IN_720P",
    )
    alice, bob = record.params.user_panes
    assert (alice["user_id"], alice["images"][0]["url"], alice["images"][0]["display"]) == (
        "alice",
        "https://example.com/a.png",
        2,
    )
    assert alice["images"][0]["width"] == 0.5 and alice["texts"] == []
    assert (bob["texts"][0]["text"], bob["texts"][0]["x"], bob["texts"][0]["font_color"]) == (
        "Bob 鲍勃",
        0.1,
        65535,
    )
    assert ("app1", task_id) in server.enqueued

    status = old_status(server, "app1", task_id)
    assert status["Status"] == TaskStatus.WAITING and status["RequestId"] != answer["RequestId"]
    assert "secret" not in json.dumps(status)  # the StreamURL's auth key is redacted
    assert status["Ignored"] == []  # images and texts are drawn

    update = UpdateMPUTaskRequest()
    update.set_AppId("app1")
    update.set_TaskId(task_id)
    update.set_LayoutIdss([13, 1])
    update.set_SubSpecAudioUserss(["alice"])
    old_call(server, update)
    record = server.task("app1", task_id)
    assert record.params.layout_ids == (13, 1) and record.params.sub_spec_audio_users == ("alice",)
    assert record.spec_version == 2

    stop = StopMPUTaskRequest()
    stop.set_AppId("app1")
    stop.set_TaskId(task_id)
    old_call(server, stop)
    assert old_status(server, "app1", task_id)["Status"] == TaskStatus.STOPPED_BY_USER


def test_update_mpu_layout_through_a_common_request(server: Server) -> None:
    """UpdateMPULayout is in the vendor's API but in neither SDK's generated requests: apps call it
    with the old SDK's CommonRequest, as here."""
    task_id = unique("t")
    old_call(server, old_start("app1", task_id, stream_url()))
    request = CommonRequest(domain=server.endpoint, version="2018-01-11", action_name="UpdateMPULayout")
    request.set_method("POST")
    request.set_protocol_type(protocol_type.HTTP)
    for name, value in {"AppId": "app1", "TaskId": task_id, "LayoutIds.1": "13", "LayoutIds.2": "1"}.items():
        request.add_query_param(name, value)
    request.add_query_param("UserPanes.1.PaneId", "1")
    request.add_query_param("UserPanes.1.UserId", "carol")
    answer = json.loads(old_client().do_action_with_exception(request))
    assert answer["RequestId"]
    record = server.task("app1", task_id)
    assert record.params.layout_ids == (13, 1)
    assert record.params.user_panes[0]["user_id"] == "carol"


def test_old_sdk_layout_crud(server: Server) -> None:
    app_id = unique("app")
    create = CreateMPULayoutRequest()
    create.set_AppId(app_id)
    create.set_Name("speaker")
    create.set_AudioMixCount(2)
    create.set_Paness(
        [
            {"PaneId": 0, "MajorPane": 1, "X": 0, "Y": 0, "Width": 1, "Height": 1, "ZOrder": 0},
            {"PaneId": 1, "X": 0.7, "Y": 0.7, "Width": 0.25, "Height": 0.25, "ZOrder": 1},
        ]
    )
    layout_id = old_call(server, create)["LayoutId"]
    assert layout_id >= 100

    describe = DescribeMPULayoutInfoListRequest()
    describe.set_AppId(app_id)
    listing = old_call(server, describe)
    assert listing["TotalNum"] == 1 and listing["TotalPage"] == 1
    (layout,) = listing["Layouts"]["Layout"]
    assert (layout["LayoutId"], layout["Name"], layout["AudioMixCount"]) == (layout_id, "speaker", 2)
    panes = layout["Panes"]["Panes"]
    assert [(p["PaneId"], p["MajorPane"], p["X"], p["Width"], p["ZOrder"]) for p in panes] == [
        (0, 1, 0.0, 1.0, 0),
        (1, 0, 0.7, 0.25, 1),
    ]

    modify = ModifyMPULayoutRequest()
    modify.set_AppId(app_id)
    modify.set_LayoutId(layout_id)
    modify.set_Name("speaker-2")
    old_call(server, modify)

    # A task using the layout: deleting it is refused until the task stops.
    task_id = unique("t")
    old_call(server, old_start(app_id, task_id, stream_url(), LayoutIds=[1, layout_id]))
    assert server.task(app_id, task_id).params.custom_layouts[0]["name"] == "speaker-2"
    delete = DeleteMPULayoutRequest()
    delete.set_AppId(app_id)
    delete.set_LayoutId(layout_id)
    error = old_error(server, delete)
    assert (error.get_error_code(), error.get_http_status()) == ("InvalidLayout.InUse", 409)
    assert task_id in error.get_error_msg()
    stop = StopMPUTaskRequest()
    stop.set_AppId(app_id)
    stop.set_TaskId(task_id)
    old_call(server, stop)
    old_call(server, delete)
    error = old_error(server, delete)
    assert (error.get_error_code(), error.get_http_status()) == ("InvalidLayout.NotFound", 404)
    assert old_call(server, describe)["TotalNum"] == 0


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"LayoutIds": [3, 4]}, "InvalidLayoutID.Malformed"),  # same pane count
        ({"LayoutIds": [12]}, "InvalidLayoutID.Malformed"),  # no such layout
        ({"LayoutIds": ["x"]}, "InvalidLayoutID.Malformed"),
        ({"MediaEncode": 999}, "InvalidMediaEncode.Malformed"),
        ({"MediaEncode": "abc"}, "InvalidMediaEncode.Malformed"),
        ({"BackgroundColor": 0x1000000}, "InvalidBackgroundColor.Malformed"),
        ({"BackgroundColor": "red"}, "InvalidBackgroundColor.Malformed"),
        ({"CropMode": 7}, "InvalidParameter"),
        (
            {"UserPaness": [{"PaneId": 0, "UserId": "a", "Images": [{"Url": "file:///etc/passwd"}]}]},
            "InvalidParameter",
        ),
    ],
)
def test_old_sdk_malformed_parameters(server: Server, extra: dict[str, Any], code: str) -> None:
    task_id = unique("t")
    error = old_error(server, old_start("app1", task_id, stream_url(), **extra))
    assert (error.get_error_code(), error.get_http_status()) == (code, 400)
    assert error.get_request_id()
    with pytest.raises(TaskNotFoundError):
        server.task("app1", task_id)  # nothing was stored


def test_old_sdk_conflicts_task_existed_url_in_use_cooling_down(server: Server) -> None:
    task_id, url = unique("t"), stream_url()
    old_call(server, old_start("app1", task_id, url))
    error = old_error(server, old_start("app1", task_id, stream_url()))
    assert (error.get_error_code(), error.get_http_status()) == ("TaskExisted", 409)
    error = old_error(server, old_start("app1", unique("t"), url.replace("secret", "other")))
    assert (error.get_error_code(), error.get_http_status()) == ("StreamURL.InUse", 409)
    stop = StopMPUTaskRequest()
    stop.set_AppId("app1")
    stop.set_TaskId(task_id)
    old_call(server, stop)
    error = old_error(server, old_start("app1", unique("t"), url))
    assert (error.get_error_code(), error.get_http_status()) == ("StreamURL.CoolingDown", 409)
    assert "s" in error.get_error_msg()  # the seconds left


def test_old_sdk_unknown_task(server: Server) -> None:
    request = GetMPUTaskStatusRequest()
    request.set_AppId("app1")
    request.set_TaskId("nope")
    error = old_error(server, request)
    assert (error.get_error_code(), error.get_http_status()) == ("InvalidTask.NotFound", 404)


def test_old_sdk_authentication_failures(server: Server) -> None:
    request = old_start("app1", unique("t"), stream_url())
    error = old_error(server, request, old_client(AK, "wrong-secret"))
    assert (error.get_error_code(), error.get_http_status()) == ("SignatureDoesNotMatch", 400)
    error = old_error(server, old_start("app1", unique("t"), stream_url()), old_client("LTAI-nobody", SECRET))
    assert (error.get_error_code(), error.get_http_status()) == ("InvalidAccessKeyId.NotFound", 404)
    # A key bound to app "other" may act on it, not on app1.
    bound = old_client(BOUND_AK, BOUND_SECRET)
    error = old_error(server, old_start("app1", unique("t"), stream_url()), bound)
    assert (error.get_error_code(), error.get_http_status()) == ("Forbidden", 403)
    assert old_call(server, old_start("other", unique("t"), stream_url()), bound)["RequestId"]


# -- the new SDK (ACS3-HMAC-SHA256) -------------------------------------------------------------


def new_client(server: Server, key: str = AK, secret: str = SECRET) -> NewClient:
    return NewClient(
        Config(
            access_key_id=key,
            access_key_secret=secret,
            endpoint=server.endpoint,
            protocol="http",
            read_timeout=10000,
            connect_timeout=5000,
        )
    )


def new_error(call: Callable[[], Any]) -> AlibabaCloudException:
    with pytest.raises(AlibabaCloudException) as caught:
        call()
    return caught.value


def test_new_sdk_start_with_panes_images_texts_status_update_stop(server: Server) -> None:
    client, task_id = new_client(server), unique("t")
    started = client.start_mputask(
        rtc.StartMPUTaskRequest(
            app_id="app1",
            channel_id="ch1",
            task_id=task_id,
            stream_url=stream_url(),
            media_encode=20,
            layout_ids=[1, 2, 6],
            background_color=0x00FF00,
            crop_mode=1,
            user_panes=[
                rtc.StartMPUTaskRequestUserPanes(
                    pane_id=0,
                    user_id="alice",
                    source_type="shareScreen",
                    images=[
                        rtc.StartMPUTaskRequestUserPanesImages(
                            url="https://example.com/i.png", display=1, x=0.25
                        )
                    ],
                    texts=[rtc.StartMPUTaskRequestUserPanesTexts(text="Alice", font_size=30, zorder=2)],
                )
            ],
            watermarks=[
                rtc.StartMPUTaskRequestWatermarks(
                    url="https://example.com/w.png", alpha=0.5, width=0.1, height=0.1
                )
            ],
            clock_widgets=[rtc.StartMPUTaskRequestClockWidgets(x=0.9, y=0.05, font_size=20)],
            enhanced_param=rtc.StartMPUTaskRequestEnhancedParam(enable_portrait_segmentation=True),
            report_vad=1,
            vad_interval=1000,
        )
    )
    assert started.body.request_id
    params = server.task("app1", task_id).params
    assert (params.media_encode, params.layout_ids, params.crop_mode) == (20, (1, 2, 6), 1)
    pane = params.user_panes[0]
    assert (pane["source_type"], pane["images"][0]["x"], pane["texts"][0]["z_order"]) == (
        "shareScreen",
        0.25,
        2,
    )
    assert params.watermarks[0]["alpha"] == 0.5 and params.clock_widgets[0]["font_size"] == 20
    assert params.enhanced_param == {"enable_portrait_segmentation": True}
    assert "enhanced_param.enable_portrait_segmentation" in params.ignored()

    status = client.get_mputask_status(rtc.GetMPUTaskStatusRequest(app_id="app1", task_id=task_id))
    assert status.body.status == 0 and status.body.request_id

    client.update_mputask(
        rtc.UpdateMPUTaskRequest(
            app_id="app1", task_id=task_id, layout_ids=[13], background_color=255, media_encode=20
        )
    )
    params = server.task("app1", task_id).params
    assert (params.layout_ids, params.background_color, params.watermarks[0]["alpha"]) == ((13,), 255, 0.5)

    error = new_error(
        lambda: client.update_mputask(
            rtc.UpdateMPUTaskRequest(app_id="app1", task_id=task_id, media_encode=27)
        )
    )
    assert (error.code, error.status_code) == ("InvalidMediaEncode.Malformed", 400)

    client.stop_mputask(rtc.StopMPUTaskRequest(app_id="app1", task_id=task_id))
    status = client.get_mputask_status(rtc.GetMPUTaskStatusRequest(app_id="app1", task_id=task_id))
    assert status.body.status == TaskStatus.STOPPED_BY_USER


def test_new_sdk_layout_crud(server: Server) -> None:
    client, app_id = new_client(server), unique("app")
    panes = [
        rtc.CreateMPULayoutRequestPanes(pane_id=0, x=0, y=0, width=0.5, height=1, zorder=0),
        rtc.CreateMPULayoutRequestPanes(pane_id=1, x=0.5, y=0, width=0.5, height=1, zorder=0),
    ]
    created = client.create_mpulayout(rtc.CreateMPULayoutRequest(app_id=app_id, name="halves", panes=panes))
    layout_id = created.body.layout_id
    assert layout_id >= 100
    client.modify_mpulayout(
        rtc.ModifyMPULayoutRequest(
            app_id=app_id,
            layout_id=layout_id,
            audio_mix_count=1,
            panes=[
                rtc.ModifyMPULayoutRequestPanes(pane_id=0, major_pane=1, x=0.1, y=0.1, width=0.8, height=0.8)
            ],
        )
    )
    listing = client.describe_mpulayout_info_list(
        rtc.DescribeMPULayoutInfoListRequest(app_id=app_id, page_num=1, page_size=10)
    )
    assert listing.body.total_num == 1
    layout = listing.body.layouts.layout[0]
    assert (layout.layout_id, layout.name, layout.audio_mix_count) == (layout_id, "halves", 1)
    assert [(p.pane_id, p.major_pane, p.x, p.width) for p in layout.panes.panes] == [(0, 1, 0.1, 0.8)]
    client.delete_mpulayout(rtc.DeleteMPULayoutRequest(app_id=app_id, layout_id=layout_id))
    error = new_error(
        lambda: client.delete_mpulayout(rtc.DeleteMPULayoutRequest(app_id=app_id, layout_id=layout_id))
    )
    assert (error.code, error.status_code) == ("InvalidLayout.NotFound", 404)
    # A malformed layout: a pane reaching outside the canvas.
    error = new_error(
        lambda: client.create_mpulayout(
            rtc.CreateMPULayoutRequest(
                app_id=app_id,
                name="bad",
                panes=[rtc.CreateMPULayoutRequestPanes(pane_id=0, x=0.8, y=0, width=0.5, height=1)],
            )
        )
    )
    assert (error.code, error.status_code) == ("InvalidLayoutID.Malformed", 400)


def test_new_sdk_errors(server: Server) -> None:
    task_id, url = unique("t"), stream_url()
    start = rtc.StartMPUTaskRequest(app_id="app1", channel_id="c", task_id=task_id, stream_url=url)
    error = new_error(lambda: new_client(server, AK, "wrong").start_mputask(start))
    assert (error.code, error.status_code) == ("SignatureDoesNotMatch", 400)
    error = new_error(lambda: new_client(server, "LTAI-nobody", SECRET).start_mputask(start))
    assert (error.code, error.status_code) == ("InvalidAccessKeyId.NotFound", 404)
    error = new_error(lambda: new_client(server, BOUND_AK, BOUND_SECRET).start_mputask(start))
    assert (error.code, error.status_code) == ("Forbidden", 403)
    client = new_client(server)
    client.start_mputask(start)
    error = new_error(lambda: client.start_mputask(start))
    assert (error.code, error.status_code) == ("TaskExisted", 409)
    error = new_error(
        lambda: client.start_mputask(
            rtc.StartMPUTaskRequest(
                app_id="app1", channel_id="c", task_id=unique("t"), stream_url=url, layout_ids=[3, 4]
            )
        )
    )
    assert (error.code, error.status_code) == ("InvalidLayoutID.Malformed", 400)
    error = new_error(
        lambda: client.start_mputask(
            rtc.StartMPUTaskRequest(app_id="app1", channel_id="c", task_id=unique("t"), stream_url=url)
        )
    )
    assert (error.code, error.status_code) == ("StreamURL.InUse", 409)


# -- replay and clock -------------------------------------------------------------------------


def post(server: Server, path_and_query: str) -> tuple[int, dict[str, Any]]:
    """POST a URL the old SDK signed (``request.get_url``) as it is, so it can be sent twice."""
    request = urllib.request.Request(f"http://{server.endpoint}{path_and_query}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_replayed_request_is_refused(server: Server) -> None:
    request = GetMPUTaskStatusRequest()
    request.set_AppId("app1")
    request.set_TaskId("no-such-task")
    signed = request.get_url("cn-hangzhou", AK, SECRET)
    status, first = post(server, signed)
    assert (status, first["Code"]) == (404, "InvalidTask.NotFound")  # authenticated, then not found
    status, second = post(server, signed)
    assert (status, second["Code"]) == (400, "SignatureNonceUsed")
    assert (
        set(second) == {"RequestId", "HostId", "Code", "Message"}
        and second["RequestId"] != first["RequestId"]
    )


@pytest.mark.parametrize("skew", [-16 * 60, 16 * 60])
def test_a_timestamp_outside_15_minutes_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch, skew: int
) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + skew))
    monkeypatch.setattr(parameter_helper, "get_iso_8061_date", lambda: stamp)
    error = old_error(server, old_start("app1", unique("t"), stream_url()))
    assert (error.get_error_code(), error.get_http_status()) == ("InvalidTimeStamp.Expired", 400)
