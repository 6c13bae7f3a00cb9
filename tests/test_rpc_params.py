"""api/rpc_params.py: RPC parameters to nested snake_case, against hand-written requests, both official
SDKs' encodings and hypothesis-generated requests."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from alibabacloud_rtc20180111 import models as rtc_models
from alibabacloud_rtc20180111.client import Client as NewSdkClient
from alibabacloud_tea_openapi import utils_models
from alibabacloud_tea_openapi.utils import Utils as OpenApiUtilClient
from aliyunsdkrtc.request.v20180111.CreateMPULayoutRequest import CreateMPULayoutRequest
from aliyunsdkrtc.request.v20180111.StartMPUTaskRequest import StartMPUTaskRequest
from aliyunsdkrtc.request.v20180111.UpdateMPUTaskRequest import UpdateMPUTaskRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc_mpu.api.rpc_params import (
    COMMON_PARAMS,
    MAX_LIST_INDEX,
    MAX_PARAMS,
    MAX_VALUE_LENGTH,
    RpcParamError,
    parse_rpc_params,
    snake_case,
    wire_name,
)

Pairs = list[tuple[str, str]]


def parse(query: str) -> dict[str, Any]:
    """``parse_rpc_params`` of a query string such as ``"A=1&B.1=2"`` (values are not percent-decoded)."""
    return parse_rpc_params(
        [(name, value) for name, _, value in (p.partition("=") for p in query.split("&"))]
    )


def error_of(pairs: Pairs) -> RpcParamError:
    """The RpcParamError that ``pairs`` raise."""
    with pytest.raises(RpcParamError) as caught:
        parse_rpc_params(pairs)
    return caught.value


# ---------------------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("wire", "snake"),
    [
        ("StreamURL", "stream_url"),
        ("ZOrder", "z_order"),
        ("UserId", "user_id"),
        ("LayoutIds", "layout_ids"),
        ("SubSpecAudioUsers", "sub_spec_audio_users"),
        ("EnablePortraitSegmentation", "enable_portrait_segmentation"),
        ("TimeStampRef", "time_stamp_ref"),
        ("AppId", "app_id"),
        ("PaneId", "pane_id"),
        ("X", "x"),
        ("BoxBorderWidth", "box_border_width"),
        ("user_id", "user_id"),
    ],
)
def test_snake_case(wire: str, snake: str) -> None:
    assert snake_case(wire) == snake


@pytest.mark.parametrize(
    ("path", "wire"),
    [
        (["user_panes", 0, "images", 1, "x"], "UserPanes.1.Images.2.X"),
        (["stream_url"], "StreamURL"),
        (["z_order"], "ZOrder"),
        (["layout_ids", 2], "LayoutIds.3"),
        (["enhanced_param", "enable_portrait_segmentation"], "EnhancedParam.EnablePortraitSegmentation"),
        (["user_panes", 15, "texts", 0, "box_border_width"], "UserPanes.16.Texts.1.BoxBorderWidth"),
        (["panes", 0, "major_pane"], "Panes.1.MajorPane"),
        (["sub_spec_share_screen_users", 0], "SubSpecShareScreenUsers.1"),
        (["caller_uid"], "callerUid"),
        (["some_new_field"], "SomeNewField"),
        ([], ""),
    ],
)
def test_wire_name(path: list[str | int], wire: str) -> None:
    assert wire_name(path) == wire


def test_wire_name_inverts_parse() -> None:
    pairs = [("UserPanes.1.Texts.2.FontSize", "1"), ("StreamURL", "u"), ("LayoutIds.3", "1")]
    parsed = parse_rpc_params(pairs)
    assert wire_name(["user_panes", 0, "texts", 1, "font_size"]) == pairs[0][0]
    assert parsed["user_panes"][0]["texts"][0]["font_size"] == 1
    assert wire_name(["stream_url"]) == "StreamURL"


# ---------------------------------------------------------------------------------------------------------
# Structure


def test_scalars_and_common_params_dropped() -> None:
    pairs = [(name, "x") for name in sorted(COMMON_PARAMS)] + [("AppId", "a1"), ("TaskId", "t1")]
    assert parse_rpc_params(pairs) == {"app_id": "a1", "task_id": "t1"}
    assert parse_rpc_params([]) == {}


def test_list_of_scalars_ordered_by_index_with_holes_dropped() -> None:
    assert parse("SubSpecUsers.10=c&SubSpecUsers.2=b&SubSpecUsers.1=a") == {"sub_spec_users": ["a", "b", "c"]}
    assert parse("LayoutIds.3=9&LayoutIds.1=4") == {"layout_ids": [4, 9]}


def test_list_of_dicts() -> None:
    assert parse("Backgrounds.2.Url=u2&Backgrounds.1.Url=u1&Backgrounds.1.X=0.5&Backgrounds.2.ZOrder=3") == {
        "backgrounds": [{"url": "u1", "x": 0.5}, {"url": "u2", "z_order": 3}]
    }


def test_nested_lists_of_dicts() -> None:
    query = (
        "UserPanes.2.UserId=u2&UserPanes.1.UserId=u1&UserPanes.1.Images.2.Url=i2&UserPanes.1.Images.1.Url=i1"
        "&UserPanes.2.Texts.1.Text=hi&UserPanes.2.Texts.1.FontSize=12"
    )
    assert parse(query) == {
        "user_panes": [
            {"user_id": "u1", "images": [{"url": "i1"}, {"url": "i2"}]},
            {"user_id": "u2", "texts": [{"text": "hi", "font_size": 12}]},
        ]
    }


def test_four_list_levels_allowed_five_refused() -> None:
    assert parse("A.1.B.2.C.3.D.4.E=v") == {"a": [{"b": [{"c": [{"d": [{"e": "v"}]}]}]}]}
    assert error_of([("A.1.B.2.C.3.D.4.E.5", "v")]).field == "A.1.B.2.C.3.D.4.E.5"


def test_struct_and_booleans() -> None:
    query = (
        "EnhancedParam.EnablePortraitSegmentation=true&EnhancedParam.EnableVirtualConference=FALSE"
        "&EnhancedParam.EnableCartoonPortrait=1&EnhancedParam.EnableVoiceChanger=0"
        "&EnhancedParam.EnableUserPaneBackground=yes&EnhancedParam.BackgroundPath=1"
    )
    assert parse(query) == {
        "enhanced_param": {
            "enable_portrait_segmentation": True,
            "enable_virtual_conference": False,
            "enable_cartoon_portrait": True,
            "enable_voice_changer": False,
            "enable_user_pane_background": "yes",
            "background_path": "1",
        }
    }
    # "True" is what both SDKs send for a Python True.
    assert parse("EnhancedParam.EnablePortraitSegmentation=True") == {
        "enhanced_param": {"enable_portrait_segmentation": True}
    }


def test_same_value_twice_is_fine() -> None:
    pairs = [("AppId", "a"), ("LayoutIds.1", "2"), ("AppId", "a"), ("LayoutIds.1", "2"), ("app_id", "a")]
    assert parse_rpc_params(pairs) == {"app_id": "a", "layout_ids": [2]}


# ---------------------------------------------------------------------------------------------------------
# Typed values


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MediaEncode", "20", 20),
        ("MediaEncode", "+20", 20),
        ("TimeStampRef", "-123456789012345678", -123456789012345678),
        ("TimeStampRef", "1234567890123456789", "1234567890123456789"),
        ("MediaEncode", "abc", "abc"),
        ("MediaEncode", "", ""),
        ("MediaEncode", " 20", " 20"),
        ("MediaEncode", "2_0", "2_0"),
        ("MediaEncode", "\u0662\u0660", "\u0662\u0660"),
        ("MediaEncode", "20.0", "20.0"),
        ("BackgroundColor", "16777215", 16777215),
        ("CropMode", "2", 2),
        ("MixMode", "0", 0),
        ("StreamType", "1", 1),
        ("PayloadType", "1", 1),
        ("ReportVad", "1", 1),
        ("VadInterval", "1000", 1000),
        ("RtpExtInfo", "1", 1),
        ("TaskType", "3", 3),
        ("TaskMode", "1", 1),
        ("AudioMixCount", "4", 4),
        ("LayoutId", "100", 100),
        ("PageNum", "2", 2),
        ("PageSize", "10", 10),
        ("AppId", "12", "12"),
        ("TaskProfile", "4IN_720P", "4IN_720P"),
        ("StreamURL", "rtmp://h/a?b=1", "rtmp://h/a?b=1"),
    ],
)
def test_scalar_typing(name: str, value: str, expected: Any) -> None:
    parsed = parse_rpc_params([(name, value)])
    assert parsed == {snake_case(name): expected}
    assert type(parsed[snake_case(name)]) is type(expected)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("X", "0.5", 0.5),
        ("X", "1", 1.0),
        ("X", "-.25", -0.25),
        ("X", "1e-3", 0.001),
        ("X", "1E2", 100.0),
        ("X", "nan", "nan"),
        ("X", "inf", "inf"),
        ("X", "-Infinity", "-Infinity"),
        ("X", "1e999", "1e999"),
        ("X", "0x10", "0x10"),
        ("X", "1_0", "1_0"),
        ("X", ".", "."),
        ("Y", "0.25", 0.25),
        ("Width", "0.5", 0.5),
        ("Height", "1", 1.0),
        ("Alpha", "0.3", 0.3),
        ("ZOrder", "3", 3),
        ("ZOrder", "3.0", "3.0"),
        ("Display", "2", 2),
        ("FontSize", "12", 12),
        ("FontSize", "12.0", "12.0"),
        ("FontType", "1", 1),
        ("FontColor", "255", 255),
        ("BorderColor", "1", 1),
        ("BorderWidth", "2", 2),
        ("Box", "1", 1),
        ("BoxColor", "7", 7),
        ("BoxBorderWidth", "1", 1),
        ("Url", "3", "3"),
        ("Text", "3", "3"),
    ],
)
def test_item_field_typing(field: str, value: str, expected: Any) -> None:
    item = parse_rpc_params([(f"Watermarks.1.{field}", value)])["watermarks"][0]
    assert item == {snake_case(field): expected}
    assert type(item[snake_case(field)]) is type(expected)


def test_pane_typing() -> None:
    assert parse(
        "UserPanes.1.PaneId=3&UserPanes.1.UserId=7&UserPanes.1.SegmentType=1&UserPanes.1.SourceType=0"
    ) == {"user_panes": [{"pane_id": 3, "user_id": "7", "segment_type": 1, "source_type": "0"}]}
    assert parse("Panes.1.MajorPane=1&Panes.1.X=0&LayoutIds.1=x") == {
        "panes": [{"major_pane": 1, "x": 0.0}],
        "layout_ids": ["x"],
    }


# ---------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("", None),
        ("A" * 201, "A" * 200),
        ("A..B", "A..B"),
        ("A.", "A."),
        (".A", ".A"),
        ("A.0", "A.0"),
        ("A.01", "A.01"),
        (f"A.{MAX_LIST_INDEX + 1}", f"A.{MAX_LIST_INDEX + 1}"),
        ("A.99999999999999999999999", "A.99999999999999999999999"),
        ("A.1x", "A.1x"),
        ("A.1.2x.B", "A.1.2x.B"),
        ("1A", "1A"),
        ("12", "12"),
        ("A-B", "A-B"),
        ("A B", "A B"),
        ("A[1]", "A[1]"),
        ("Ünïcode", "Ünïcode"),
        ("A\u0661", "A\u0661"),
        ("UserPanes.1a.X", "UserPanes.1a.X"),
        ("UserPanes.0.UserId", "UserPanes.0.UserId"),
    ],
)
def test_bad_names(name: str, field: str | None) -> None:
    error = error_of([("AppId", "a"), (name, "v")])
    assert error.code == "InvalidParameter"
    assert error.field == field
    assert error.message == str(error)


def test_long_name_ok_up_to_200() -> None:
    assert parse_rpc_params([("A" * 200, "v")]) == {snake_case("A" * 200): "v"}


def test_same_name_two_values() -> None:
    error = error_of([("TaskId", "a"), ("TaskId", "b")])
    assert error.field == "TaskId"
    assert "twice" in error.message
    # Two spellings that land on the same place count as the same name.
    assert error_of([("StreamURL", "a"), ("stream_url", "b")]).field == "stream_url"


@pytest.mark.parametrize(
    "pairs",
    [
        [("LayoutIds", "1"), ("LayoutIds.1", "2")],
        [("LayoutIds.1", "2"), ("LayoutIds", "1")],
        [("EnhancedParam", "1"), ("EnhancedParam.EnableVoiceChanger", "true")],
        [("EnhancedParam.EnableVoiceChanger", "true"), ("EnhancedParam", "1")],
        [("Watermarks.1", "u"), ("Watermarks.1.Url", "u")],
        [("Watermarks.1.Url", "u"), ("Watermarks.1", "u")],
        [("Watermarks.1.Url", "u"), ("Watermarks.Url", "u")],
        [("Watermarks.Url", "u"), ("Watermarks.1.Url", "u")],
        [("UserPanes.1.Images.1.Url", "u"), ("UserPanes.1.Images", "x")],
    ],
)
def test_scalar_list_and_struct_conflicts(pairs: Pairs) -> None:
    assert error_of(pairs).field == pairs[1][0]


def test_too_many_params() -> None:
    pairs = [(f"SubSpecUsers.{i % 64 + 1}", str(i % 64)) for i in range(MAX_PARAMS)]
    assert len(parse_rpc_params(pairs)["sub_spec_users"]) == 64
    assert "more than" in error_of([*pairs, ("Action", "StartMPUTask")]).message


def test_value_too_long() -> None:
    assert parse_rpc_params([("StreamURL", "u" * MAX_VALUE_LENGTH)]) == {"stream_url": "u" * MAX_VALUE_LENGTH}
    assert error_of([("StreamURL", "u" * (MAX_VALUE_LENGTH + 1))]).field == "StreamURL"
    assert error_of([("Signature", "s" * (MAX_VALUE_LENGTH + 1))]).field == "Signature"


@pytest.mark.parametrize(
    "pairs",
    [
        None,
        5,
        [("A",)],
        [("A", "b", "c")],
        [("A", 1)],
        [(1, "a")],
        ["Ab"],
    ],
)
def test_malformed_input(pairs: Any) -> None:
    with pytest.raises(RpcParamError):
        parse_rpc_params(pairs)


# ---------------------------------------------------------------------------------------------------------
# The old SDK's UserPanes.<i><j>.Field encoding


def test_old_encoding_image_and_text() -> None:
    assert parse("UserPanes.1.UserId=u&UserPanes.11.Url=i&UserPanes.11.X=0.5&UserPanes.12.Text=t") == {
        "user_panes": [{"user_id": "u", "images": [{"url": "i", "x": 0.5}], "texts": [{"text": "t"}]}]
    }


def test_old_encoding_shared_fields_only_make_an_image() -> None:
    assert parse("UserPanes.11.X=0.1&UserPanes.11.ZOrder=2") == {
        "user_panes": [{"images": [{"x": 0.1, "z_order": 2}]}]
    }


def test_old_encoding_collision_gives_shared_fields_to_the_text() -> None:
    # What the old SDK sends for an image and a text at the same (pane, item): its dict keeps the text's X.
    query = "UserPanes.11.Url=i&UserPanes.11.Width=0.5&UserPanes.11.X=0.7&UserPanes.11.Text=t"
    query += "&UserPanes.11.Alpha=1"
    assert parse(query) == {
        "user_panes": [
            {"images": [{"url": "i", "width": 0.5}], "texts": [{"text": "t", "x": 0.7, "alpha": 1.0}]}
        ]
    }


def test_old_encoding_text_identified_by_the_dotted_form() -> None:
    assert parse("UserPanes.1.Texts.1.Text=t&UserPanes.11.X=0.2") == {
        "user_panes": [{"texts": [{"text": "t", "x": 0.2}]}]
    }


def test_old_encoding_equals_dotted() -> None:
    old = (
        "UserPanes.1.UserId=u1&UserPanes.1.PaneId=0&UserPanes.11.Url=a&UserPanes.11.Display=2&UserPanes.12.Url=b"
        "&UserPanes.12.ZOrder=4&UserPanes.2.UserId=u2&UserPanes.21.Text=hi&UserPanes.21.FontSize=20"
        "&UserPanes.21.Y=0.9&UserPanes.21.BoxColor=5"
    )
    dotted = (
        "UserPanes.1.UserId=u1&UserPanes.1.PaneId=0&UserPanes.1.Images.1.Url=a&UserPanes.1.Images.1.Display=2"
        "&UserPanes.1.Images.2.Url=b&UserPanes.1.Images.2.ZOrder=4&UserPanes.2.UserId=u2"
        "&UserPanes.2.Texts.1.Text=hi&UserPanes.2.Texts.1.FontSize=20&UserPanes.2.Texts.1.Y=0.9"
        "&UserPanes.2.Texts.1.BoxColor=5"
    )
    assert parse(old) == parse(dotted)
    assert parse(old)["user_panes"][1] == {
        "user_id": "u2",
        "texts": [{"text": "hi", "font_size": 20, "y": 0.9, "box_color": 5}],
    }


def test_old_and_dotted_mixed_in_one_pane() -> None:
    query = "UserPanes.1.UserId=u&UserPanes.1.Images.1.Url=a&UserPanes.11.X=0.5&UserPanes.12.Url=b"
    assert parse(query) == {
        "user_panes": [{"user_id": "u", "images": [{"url": "a", "x": 0.5}, {"url": "b"}]}]
    }
    # The same field in both forms: equal values merge, different ones are refused.
    assert parse("UserPanes.11.Url=a&UserPanes.1.Images.1.Url=a") == {
        "user_panes": [{"images": [{"url": "a"}]}]
    }
    error = error_of([("UserPanes.11.Url", "a"), ("UserPanes.1.Images.1.Url", "b")])
    assert error.field == "UserPanes.1.Images.1.Url"


@pytest.mark.parametrize(
    ("query", "pane", "item"),
    [
        ("UserPanes.101.Url=u", 10, 1),
        ("UserPanes.110.Url=u", 1, 10),
        ("UserPanes.1664.Url=u", 16, 64),
        ("UserPanes.1111.Url=u", 11, 11),
        ("UserPanes.1.UserId=a&UserPanes.164.Url=u", 1, 64),
        ("UserPanes.16.UserId=a&UserPanes.164.Url=u", 16, 4),
        ("UserPanes.1.UserId=a&UserPanes.111.Url=u", 1, 11),
        ("UserPanes.11.UserId=a&UserPanes.111.Url=u", 11, 1),
        ("UserPanes.11.SegmentType=1&UserPanes.111.Url=u", 11, 1),
        ("UserPanes.1.PaneId=0&UserPanes.111.Url=u", 1, 11),
        ("UserPanes.1.SourceType=camera&UserPanes.111.Url=u", 1, 11),
    ],
)
def test_old_encoding_splits(query: str, pane: int, item: int) -> None:
    pairs = [(name, value) for name, _, value in (p.partition("=") for p in query.split("&"))]
    assert parse_rpc_params(pairs)["user_panes"][-1]["images"] == [{"url": "u"}]
    # Where the item landed, told by a dotted field at the same place colliding with it.
    conflict = [*pairs, (f"UserPanes.{pane}.Images.{item}.Url", "other")]
    assert error_of(conflict).field == f"UserPanes.{pane}.Images.{item}.Url"


@pytest.mark.parametrize(
    "query",
    [
        "UserPanes.111.Url=u",
        "UserPanes.1.UserId=a&UserPanes.11.UserId=b&UserPanes.111.Url=u",
        "UserPanes.1.Images.1.Url=x&UserPanes.111.Text=u",
    ],
)
def test_old_encoding_ambiguous(query: str) -> None:
    pairs = [(name, value) for name, _, value in (p.partition("=") for p in query.split("&"))]
    error = error_of(pairs)
    assert error.field == "UserPanes.111." + pairs[-1][0].rsplit(".", 1)[1]
    assert "ambiguous" in error.message
    kind = "Texts" if pairs[-1][0].endswith(".Text") else "Images"
    assert f"use the dotted form UserPanes.<i>.{kind}.<j>." in error.message


@pytest.mark.parametrize(
    "name", ["UserPanes.1.X", "UserPanes.170.Url", "UserPanes.01.Url", "UserPanes.1765.Text"]
)
def test_old_encoding_without_a_split(name: str) -> None:
    error = error_of([(name, "1")])
    assert error.field == name
    assert "dotted form" in error.message


def test_unknown_pane_field_is_not_an_item() -> None:
    assert parse("UserPanes.11.Foo=1") == {"user_panes": [{"foo": "1"}]}


# ---------------------------------------------------------------------------------------------------------
# The official SDKs


PANES: list[dict[str, Any]] = [
    {
        "PaneId": 0,
        "UserId": "u1",
        "SourceType": "camera",
        "Images": [
            {
                "Url": "http://img/1.png",
                "Display": 2,
                "X": 0.1,
                "Y": 0.2,
                "Width": 0.3,
                "Height": 0.4,
                "ZOrder": 5,
            },
            {"Url": "http://img/2.png", "X": 0.5},
        ],
    },
    {
        "PaneId": 1,
        "UserId": "u2",
        "Texts": [
            {
                "Text": "hello",
                "X": 0.1,
                "Y": 0.9,
                "ZOrder": 2,
                "FontType": 1,
                "FontSize": 24,
                "FontColor": 255,
            },
            {"Text": "box", "Box": 1, "BoxColor": 3, "BoxBorderWidth": 2, "BorderColor": 9, "BorderWidth": 1},
            {"Text": "alpha", "Alpha": 0.5},
        ],
    },
]

EXPECTED: dict[str, Any] = {
    "app_id": "app1",
    "channel_id": "ch1",
    "task_id": "task-1",
    "stream_url": "rtmp://h/live/s?auth=a*b~c&x=1",
    "layout_ids": [1, 2],
    "media_encode": 20,
    "background_color": 65535,
    "crop_mode": 1,
    "sub_spec_audio_users": ["allStream"],
    "watermarks": [{"url": "http://img/w.png", "alpha": 0.5, "x": 0.9, "z_order": 9}],
    "user_panes": [
        {
            "pane_id": 0,
            "user_id": "u1",
            "source_type": "camera",
            "images": [
                {
                    "url": "http://img/1.png",
                    "display": 2,
                    "x": 0.1,
                    "y": 0.2,
                    "width": 0.3,
                    "height": 0.4,
                    "z_order": 5,
                },
                {"url": "http://img/2.png", "x": 0.5},
            ],
        },
        {
            "pane_id": 1,
            "user_id": "u2",
            "texts": [
                {
                    "text": "hello",
                    "x": 0.1,
                    "y": 0.9,
                    "z_order": 2,
                    "font_type": 1,
                    "font_size": 24,
                    "font_color": 255,
                },
                {
                    "text": "box",
                    "box": 1,
                    "box_color": 3,
                    "box_border_width": 2,
                    "border_color": 9,
                    "border_width": 1,
                },
                {"text": "alpha", "alpha": 0.5},
            ],
        },
    ],
    "enhanced_param": {"enable_portrait_segmentation": True},
}


def old_sdk_pairs(request: Any) -> Pairs:
    """What aliyun-python-sdk-core sends for ``request``: the signed URL's query (common params
    included) and the form body, as strings."""
    url = request.get_url("cn-hangzhou", "AK", "SECRET")
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    return query + [(name, str(value)) for name, value in request.get_body_params().items()]


def test_old_sdk_start_mpu_task() -> None:
    request = StartMPUTaskRequest()
    request.set_AppId("app1")
    request.set_ChannelId("ch1")
    request.set_TaskId("task-1")
    request.set_StreamURL("rtmp://h/live/s?auth=a*b~c&x=1")
    request.set_LayoutIdss([1, 2])
    request.set_MediaEncode(20)
    request.set_BackgroundColor(65535)
    request.set_CropMode(1)
    request.set_OwnerId(42)
    request.set_SubSpecAudioUserss(["allStream"])
    request.set_Watermarkss([{"Url": "http://img/w.png", "Alpha": 0.5, "X": 0.9, "ZOrder": 9}])
    request.set_UserPaness(PANES)
    request.set_EnhancedParam({"EnablePortraitSegmentation": True})
    pairs = old_sdk_pairs(request)
    assert ("UserPanes.11.Url", "http://img/1.png") in pairs
    assert ("UserPanes.23.Alpha", "0.5") in pairs
    assert ("EnhancedParam.EnablePortraitSegmentation", "True") in pairs
    assert {"Signature", "SignatureNonce", "Timestamp", "AccessKeyId", "OwnerId"} <= {
        name for name, _ in pairs
    }
    assert parse_rpc_params(pairs) == EXPECTED


def test_old_sdk_image_and_text_in_one_pane_lose_the_image_position() -> None:
    request = UpdateMPUTaskRequest()
    request.set_AppId("a")
    request.set_TaskId("t")
    request.set_UserPaness(
        [
            {
                "UserId": "u",
                "Images": [{"Url": "http://i", "X": 0.1, "Y": 0.2, "ZOrder": 1}],
                "Texts": [{"Text": "t", "X": 0.7, "Y": 0.8, "ZOrder": 2}],
            }
        ]
    )
    assert parse_rpc_params(old_sdk_pairs(request)) == {
        "app_id": "a",
        "task_id": "t",
        "user_panes": [
            {
                "user_id": "u",
                "images": [{"url": "http://i"}],
                "texts": [{"text": "t", "x": 0.7, "y": 0.8, "z_order": 2}],
            }
        ],
    }


def test_old_sdk_create_mpu_layout() -> None:
    request = CreateMPULayoutRequest()
    request.set_AppId("a")
    request.set_Name("mine")
    request.set_AudioMixCount(3)
    request.set_Paness(
        [
            {"PaneId": 0, "MajorPane": 1, "X": 0, "Y": 0, "Width": 1, "Height": 1, "ZOrder": 0},
            {"PaneId": 1, "X": 0.75, "Y": 0.75, "Width": 0.25, "Height": 0.25, "ZOrder": 1},
        ]
    )
    assert parse_rpc_params(old_sdk_pairs(request)) == {
        "app_id": "a",
        "name": "mine",
        "audio_mix_count": 3,
        "panes": [
            {"pane_id": 0, "major_pane": 1, "x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0, "z_order": 0},
            {"pane_id": 1, "x": 0.75, "y": 0.75, "width": 0.25, "height": 0.25, "z_order": 1},
        ],
    }


def new_sdk_pairs(call: str, request: Any) -> Pairs:
    """What alibabacloud-rtc20180111's client puts in the query and the form body for ``request``:
    its ``<call>_with_options`` runs for real, with ``call_api`` (the HTTP part) replaced by a recorder."""
    client = NewSdkClient(
        utils_models.Config(
            access_key_id="AK", access_key_secret="SECRET", endpoint="127.0.0.1:9", protocol="http"
        )
    )
    recorded: list[Any] = []

    def call_api(params: Any, api_request: Any, runtime: Any) -> dict[str, Any]:
        recorded.append(api_request)
        return {"body": {"RequestId": "r"}, "headers": {}, "statusCode": 200}

    client.call_api = call_api
    getattr(client, call)(request)
    (api_request,) = recorded
    query: dict[str, str] = api_request.query
    body: dict[str, str] = api_request.body or {}
    return [*query.items(), *body.items()]


def new_sdk_pane(pane: dict[str, Any]) -> Any:
    """PANES[i] as the new SDK's model."""
    images = [
        rtc_models.StartMPUTaskRequestUserPanesImages(
            url=i.get("Url"),
            display=i.get("Display"),
            x=i.get("X"),
            y=i.get("Y"),
            width=i.get("Width"),
            height=i.get("Height"),
            zorder=i.get("ZOrder"),
        )
        for i in pane.get("Images", [])
    ]
    texts = [
        rtc_models.StartMPUTaskRequestUserPanesTexts(
            text=t.get("Text"),
            x=t.get("X"),
            y=t.get("Y"),
            zorder=t.get("ZOrder"),
            font_type=t.get("FontType"),
            font_size=t.get("FontSize"),
            font_color=t.get("FontColor"),
            box=t.get("Box"),
            box_color=t.get("BoxColor"),
            box_border_width=t.get("BoxBorderWidth"),
            border_color=t.get("BorderColor"),
            border_width=t.get("BorderWidth"),
            alpha=t.get("Alpha"),
        )
        for t in pane.get("Texts", [])
    ]
    return rtc_models.StartMPUTaskRequestUserPanes(
        pane_id=pane["PaneId"],
        user_id=pane["UserId"],
        source_type=pane.get("SourceType"),
        images=images or None,
        texts=texts or None,
    )


def test_new_sdk_start_mpu_task() -> None:
    request = rtc_models.StartMPUTaskRequest(
        app_id="app1",
        channel_id="ch1",
        task_id="task-1",
        stream_url="rtmp://h/live/s?auth=a*b~c&x=1",
        layout_ids=[1, 2],
        media_encode=20,
        background_color=65535,
        crop_mode=1,
        owner_id=42,
        sub_spec_audio_users=["allStream"],
        watermarks=[
            rtc_models.StartMPUTaskRequestWatermarks(url="http://img/w.png", alpha=0.5, x=0.9, zorder=9)
        ],
        user_panes=[new_sdk_pane(pane) for pane in PANES],
        enhanced_param=rtc_models.StartMPUTaskRequestEnhancedParam(enable_portrait_segmentation=True),
    )
    pairs = new_sdk_pairs("start_mputask", request)
    assert ("UserPanes.1.Images.1.Url", "http://img/1.png") in pairs
    assert ("LayoutIds.2", "2") in pairs
    assert ("EnhancedParam.EnablePortraitSegmentation", "True") in pairs
    assert parse_rpc_params(pairs) == EXPECTED


def test_new_sdk_utils_query_matches_the_client() -> None:
    # The client's flattening is OpenApiUtilClient.query of its {"WireName": value} dict.
    request = rtc_models.StartMPUTaskRequest(
        app_id="app1", layout_ids=[3], user_panes=[new_sdk_pane(PANES[1])]
    )
    assert dict(new_sdk_pairs("start_mputask", request)) == OpenApiUtilClient.query(request.to_map())


def test_new_sdk_create_mpu_layout() -> None:
    request = rtc_models.CreateMPULayoutRequest(
        app_id="a",
        name="mine",
        audio_mix_count=3,
        panes=[
            rtc_models.CreateMPULayoutRequestPanes(
                pane_id=0, major_pane=1, x=0.0, y=0.0, width=1.0, height=1.0, zorder=0
            )
        ],
    )
    pairs = new_sdk_pairs("create_mpulayout", request)
    assert ("Panes.1.X", "0.0") in pairs
    assert parse_rpc_params(pairs) == {
        "app_id": "a",
        "name": "mine",
        "audio_mix_count": 3,
        "panes": [
            {"pane_id": 0, "major_pane": 1, "x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0, "z_order": 0}
        ],
    }


# ---------------------------------------------------------------------------------------------------------
# Properties

FEW = settings(max_examples=200, deadline=None)

NAME_PARTS = st.one_of(
    st.sampled_from(
        [
            "UserPanes",
            "Images",
            "Texts",
            "X",
            "Url",
            "Text",
            "UserId",
            "LayoutIds",
            "EnhancedParam",
            "EnablePortraitSegmentation",
            "Action",
            "",
            "0",
            "01",
            "1a",
        ]
    ),
    st.integers(0, 2000).map(str),
    st.text(max_size=4),
)
ANY_NAME = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="UserPanes.0123456789XTxtImgIdsLayout_", max_size=40),
    st.lists(NAME_PARTS, min_size=1, max_size=7).map(".".join),
)
ANY_VALUE = st.one_of(
    st.text(max_size=12), st.sampled_from(["1", "-0", "0.5", "true", "nan", "1e999", "12.0", "9" * 19])
)


@FEW
@given(st.lists(st.tuples(ANY_NAME, ANY_VALUE), max_size=30))
def test_property_only_rpc_param_errors(pairs: Pairs) -> None:
    try:
        parsed = parse_rpc_params(pairs)
    except RpcParamError as error:
        assert error.code == "InvalidParameter"
        assert error.message
        assert error.field is None or isinstance(error.field, str)
    else:
        assert isinstance(parsed, dict)


SNAKE = {
    "AppId": "app_id",
    "TaskId": "task_id",
    "StreamURL": "stream_url",
    "MediaEncode": "media_encode",
    "TimeStampRef": "time_stamp_ref",
    "LayoutIds": "layout_ids",
    "SubSpecAudioUsers": "sub_spec_audio_users",
    "UserPanes": "user_panes",
    "PaneId": "pane_id",
    "UserId": "user_id",
    "SourceType": "source_type",
    "SegmentType": "segment_type",
    "Images": "images",
    "Texts": "texts",
    "Url": "url",
    "Display": "display",
    "X": "x",
    "Y": "y",
    "Width": "width",
    "Height": "height",
    "ZOrder": "z_order",
    "Text": "text",
    "FontType": "font_type",
    "FontSize": "font_size",
    "FontColor": "font_color",
    "BorderColor": "border_color",
    "BorderWidth": "border_width",
    "Box": "box",
    "BoxColor": "box_color",
    "BoxBorderWidth": "box_border_width",
    "Alpha": "alpha",
    "Backgrounds": "backgrounds",
    "EnhancedParam": "enhanced_param",
    "EnablePortraitSegmentation": "enable_portrait_segmentation",
    "BackgroundPath": "background_path",
}

INTS = st.integers(-(10**18) + 1, 10**18 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
STRINGS = st.text(max_size=16)
IMAGE = st.fixed_dictionaries(
    {"Url": STRINGS},
    optional={"Display": INTS, "X": FLOATS, "Y": FLOATS, "Width": FLOATS, "Height": FLOATS, "ZOrder": INTS},
)
TEXT = st.fixed_dictionaries(
    {"Text": STRINGS},
    optional={
        "X": FLOATS,
        "Y": FLOATS,
        "ZOrder": INTS,
        "FontType": INTS,
        "FontSize": INTS,
        "FontColor": INTS,
        "BorderColor": INTS,
        "BorderWidth": INTS,
        "Box": INTS,
        "BoxColor": INTS,
        "BoxBorderWidth": INTS,
        "Alpha": FLOATS,
    },
)
PANE = st.fixed_dictionaries(
    {"UserId": STRINGS},
    optional={
        "PaneId": INTS,
        "SourceType": STRINGS,
        "SegmentType": INTS,
        "Images": st.lists(IMAGE, min_size=1, max_size=3),
        "Texts": st.lists(TEXT, min_size=1, max_size=3),
    },
)
START_REQUEST = st.fixed_dictionaries(
    {"AppId": STRINGS, "TaskId": STRINGS},
    optional={
        "StreamURL": STRINGS,
        "MediaEncode": INTS,
        "TimeStampRef": INTS,
        "LayoutIds": st.lists(INTS, min_size=1, max_size=5),
        "SubSpecAudioUsers": st.lists(STRINGS, min_size=1, max_size=5),
        "UserPanes": st.lists(PANE, min_size=1, max_size=4),
        "Backgrounds": st.lists(IMAGE, min_size=1, max_size=3),
        "EnhancedParam": st.fixed_dictionaries(
            {"EnablePortraitSegmentation": st.booleans()}, optional={"BackgroundPath": STRINGS}
        ),
    },
)


def encode_dotted(value: Any, prefix: str = "") -> Pairs:
    """``value`` (wire-named dicts and lists) in the dotted encoding, booleans as ``true``/``false``."""
    if isinstance(value, dict):
        return [
            pair
            for key, item in value.items()
            for pair in encode_dotted(item, f"{prefix}.{key}" if prefix else key)
        ]
    if isinstance(value, list):
        return [
            pair for index, item in enumerate(value, 1) for pair in encode_dotted(item, f"{prefix}.{index}")
        ]
    if isinstance(value, bool):
        return [(prefix, "true" if value else "false")]
    if isinstance(value, float):
        return [(prefix, repr(value))]
    return [(prefix, str(value))]


def snake_keys(value: Any) -> Any:
    """``value`` with its wire-named keys in snake_case (by the table above, not by the module)."""
    if isinstance(value, dict):
        return {SNAKE[key]: snake_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snake_keys(item) for item in value]
    return value


@FEW
@given(START_REQUEST, st.randoms(use_true_random=False), st.booleans())
def test_property_dotted_round_trip(request: dict[str, Any], rnd: random.Random, repeat: bool) -> None:
    pairs = encode_dotted(request)
    if repeat:  # the same pairs in the query string and the form body
        pairs += pairs
    rnd.shuffle(pairs)
    assert parse_rpc_params(pairs) == snake_keys(request)


# Fewer text fields than TEXT, so that 9 panes of 9 items stay under MAX_PARAMS.
OLD_TEXT = st.fixed_dictionaries(
    {"Text": STRINGS},
    optional={"X": FLOATS, "Y": FLOATS, "ZOrder": INTS, "FontSize": INTS, "FontColor": INTS, "Alpha": FLOATS},
)
OLD_PANE = st.fixed_dictionaries(
    {"UserId": STRINGS, "PaneId": INTS},
    optional={"SourceType": STRINGS, "SegmentType": INTS},
).flatmap(
    lambda pane: st.one_of(
        st.lists(IMAGE, min_size=1, max_size=9).map(lambda images: {**pane, "Images": images}),
        st.lists(OLD_TEXT, min_size=1, max_size=9).map(lambda texts: {**pane, "Texts": texts}),
        st.just(pane),
    )
)


@FEW
@given(st.lists(OLD_PANE, min_size=1, max_size=9), st.randoms(use_true_random=False))
def test_property_old_encoding_equals_dotted(panes: list[dict[str, Any]], rnd: random.Random) -> None:
    request = StartMPUTaskRequest()
    request.set_UserPaness(panes)
    old = [(name, str(value)) for name, value in request.get_query_params().items()]
    dotted = list(OpenApiUtilClient.query({"UserPanes": panes}).items())
    assert len(old) == len(dotted) <= MAX_PARAMS
    rnd.shuffle(old)
    assert parse_rpc_params(old) == parse_rpc_params(dotted) == {"user_panes": snake_keys(panes)}
