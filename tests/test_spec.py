"""build_task_spec: defaults, each error code (the vendor's MPU API, 2018-01-11, "Errors"), colours."""

from __future__ import annotations

from typing import Any, cast

import pytest

from rtc_mpu.layouts import Layout, Pane, SpecError, system_layout
from rtc_mpu.spec.colors import rgb_from_color_int
from rtc_mpu.spec.streams import SourceType
from rtc_mpu.spec.task import (
    DEFAULT_LAYOUT_IDS,
    CropMode,
    TaskSpec,
    UserPane,
    build_task_spec,
)


def raises(code: str, **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        build_task_spec(**kwargs)
    assert info.value.code == code, info.value
    return info.value


def custom_layout(layout_id: int, pane_count: int) -> Layout:
    width = 1 / pane_count
    panes = tuple(Pane(i, i * width, 0.0, width, 1.0) for i in range(pane_count))
    return Layout(id=layout_id, name=f"columns {pane_count}", panes=panes, audio_mix_count=4)


# --- defaults -------------------------------------------------------------------------------------


def test_defaults() -> None:
    spec = build_task_spec()
    assert spec.media_encode.id == 27
    assert (spec.width, spec.height, spec.fps) == (1280, 720, 30)
    assert spec.video_bitrate == 2_048_000
    assert spec.audio_bitrate > 0
    assert DEFAULT_LAYOUT_IDS == (1, 2, 5, 6, 7, 8, 9, 10, 11)
    assert [layout.id for layout in spec.layouts] == [1, 2, 5, 6, 7, 8, 9, 10, 11]
    assert [layout.pane_count for layout in spec.layouts] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert spec.task_profile.name == "9IN_720P"
    assert spec.crop_mode is CropMode.PAD
    assert spec.background_color == 0
    assert spec.background_rgb == (0, 0, 0)
    assert spec.user_panes == ()


@pytest.mark.parametrize("empty", [None, [], ()])
def test_no_layout_ids_means_the_defaults(empty: Any) -> None:
    spec = build_task_spec(layout_ids=empty)
    assert [layout.id for layout in spec.layouts] == [1, 2, 5, 6, 7, 8, 9, 10, 11]


def test_layouts_keep_the_given_order() -> None:
    spec = build_task_spec(layout_ids=[6, 1, 13])
    assert [layout.id for layout in spec.layouts] == [6, 1, 13]
    assert spec.layouts[2] == system_layout(13)


def test_smallest_profile_follows_the_encoding_and_largest_layout() -> None:
    assert build_task_spec(layout_ids=[1], media_encode_id=1).task_profile.name == "1IN_360P"
    assert build_task_spec(layout_ids=[1, 6], media_encode_id=30).task_profile.name == "4IN_1080P"
    assert build_task_spec(layout_ids=[13], media_encode_id=31).task_profile.name == "2IN_1080P"


def test_explicit_profile_is_case_insensitive() -> None:
    spec = build_task_spec(profile="16in_1080p")
    assert spec.task_profile.name == "16IN_1080P"


def test_unknown_profile() -> None:
    error = raises("InvalidTaskProfile.Malformed", profile="5IN_720P")
    assert error.field == ("task_profile",)


def test_spec_is_immutable() -> None:
    spec: TaskSpec = build_task_spec()
    with pytest.raises(AttributeError):
        spec.background_color = 1  # type: ignore[misc]


# --- LayoutIds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout_id", [12, 99, 0, -1])
def test_unknown_layout_id(layout_id: int) -> None:
    error = raises("InvalidLayoutID.Malformed", layout_ids=[1, layout_id])
    assert error.field == ("layout_ids", 1)


@pytest.mark.parametrize("bad", [True, "1", 1.0, None])
def test_layout_id_must_be_an_int(bad: Any) -> None:
    error = raises("InvalidLayoutID.Malformed", layout_ids=[bad])
    assert error.field == ("layout_ids", 0)


@pytest.mark.parametrize("ids", [[3, 4], [2, 13], [1, 2, 3], [6, 11, 13, 2]])
def test_two_layouts_with_the_same_pane_count(ids: list[int]) -> None:
    error = raises("InvalidLayoutID.Malformed", layout_ids=ids)
    assert error.field == ("layout_ids",)


def test_a_layout_listed_twice() -> None:
    raises("InvalidLayoutID.Malformed", layout_ids=[5, 5])


def test_at_most_16_layout_ids() -> None:
    layouts = {100 + n: custom_layout(100 + n, n) for n in range(1, 17)}
    spec = build_task_spec(layout_ids=sorted(layouts), custom_layouts=layouts, profile="16IN_720P")
    assert len(spec.layouts) == 16
    layouts[117] = custom_layout(117, 1)
    raises("InvalidLayoutID.Malformed", layout_ids=sorted(layouts), custom_layouts=layouts)


@pytest.mark.parametrize(
    ("ids", "profile"), [([11], "4IN_720P"), ([1, 6], "2IN_1080P"), ([2], "1IN_720P"), (None, "4IN_720P")]
)
def test_layout_with_more_panes_than_the_profile(ids: list[int] | None, profile: str) -> None:
    error = raises("InvalidLayoutID.Malformed", layout_ids=ids, profile=profile)
    assert error.field == ("layout_ids",)


def test_layout_with_as_many_panes_as_the_profile() -> None:
    assert build_task_spec(layout_ids=[1, 6], profile="4IN_720P").task_profile.name == "4IN_720P"


def test_custom_layouts_are_used() -> None:
    three = custom_layout(1001, 3)
    twelve = custom_layout(1002, 12)
    spec = build_task_spec(layout_ids=[1, 1001, 1002], custom_layouts={1001: three, 1002: twelve})
    assert spec.layouts == (system_layout(1), three, twelve)
    assert spec.task_profile.name == "12IN_720P"


def test_custom_layout_with_the_pane_count_of_a_system_layout() -> None:
    raises("InvalidLayoutID.Malformed", layout_ids=[5, 1001], custom_layouts={1001: custom_layout(1001, 3)})


def test_custom_layout_not_given_is_unknown() -> None:
    raises("InvalidLayoutID.Malformed", layout_ids=[1001], custom_layouts={1002: custom_layout(1002, 3)})


# --- MediaEncode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encode_id", [2, 29, 44, -1])
def test_unknown_media_encode(encode_id: int) -> None:
    error = raises("InvalidMediaEncode.Malformed", media_encode_id=encode_id)
    assert error.field == ("media_encode",)


@pytest.mark.parametrize(
    ("encode_id", "profile"), [(30, "4IN_720P"), (31, "9IN_720P"), (27, "4IN_360P"), (27, "Mixed_Audio")]
)
def test_media_encode_above_the_profile(encode_id: int, profile: str) -> None:
    error = raises("InvalidMediaEncode.Malformed", media_encode_id=encode_id, layout_ids=[1], profile=profile)
    assert error.field == ("media_encode",)


def test_portrait_encoding_within_the_profile() -> None:
    spec = build_task_spec(media_encode_id=31, layout_ids=[1], profile="1IN_1080P")
    assert (spec.width, spec.height) == (1080, 1920)


def test_audio_only() -> None:
    spec = build_task_spec(media_encode_id=0)
    assert spec.layouts == ()
    assert spec.task_profile.name == "Mixed_Audio"
    assert spec.media_encode.audio_only
    assert spec.audio_bitrate == 64_000
    assert (spec.width, spec.height, spec.fps) == (0, 0, 0)


def test_audio_only_ignores_layout_ids() -> None:
    spec = build_task_spec(media_encode_id=0, layout_ids=[12, 3, 4])
    assert spec.layouts == ()
    assert spec.task_profile.name == "Mixed_Audio"


# --- BackgroundColor ------------------------------------------------------------------------------


@pytest.mark.parametrize("color", [-1, 16777216, True, False, "red", 1.5, None])
def test_bad_background_color(color: Any) -> None:
    error = raises("InvalidBackgroundColor.Malformed", background_color=color)
    assert error.field == ("background_color",)


@pytest.mark.parametrize(
    ("color", "rgb"),
    [
        (0, (0, 0, 0)),
        (0x0000FF, (255, 0, 0)),  # R is the low byte: pure red
        (0x00FF00, (0, 255, 0)),
        (0xFF0000, (0, 0, 255)),  # B is the high byte: pure blue
        (16777215, (255, 255, 255)),
        (90 + 20 * 256 + 120 * 65536, (90, 20, 120)),
        (1 + 2 * 256 + 3 * 65536, (1, 2, 3)),
    ],
)
def test_background_rgb(color: int, rgb: tuple[int, int, int]) -> None:
    spec = build_task_spec(background_color=color)
    assert spec.background_color == color
    assert spec.background_rgb == rgb
    assert rgb_from_color_int(color) == rgb


# --- CropMode -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "mode"), [(1, CropMode.CROP), (2, CropMode.PAD)])
def test_crop_modes(value: int, mode: CropMode) -> None:
    assert build_task_spec(crop_mode=value).crop_mode is mode


@pytest.mark.parametrize("value", [0, 3, -1, "pad"])
def test_bad_crop_mode(value: Any) -> None:
    error = raises("InvalidParameter", crop_mode=value)
    assert error.field == ("crop_mode",)


# --- UserPanes ------------------------------------------------------------------------------------


def test_user_panes_are_kept_and_source_types_normalized() -> None:
    panes = [
        UserPane(0, "alice"),
        UserPane(1, "alice", cast(SourceType, "shareScreen")),
        UserPane(15, "bob", SourceType.CAMERA),
    ]
    spec = build_task_spec(user_panes=panes)
    assert spec.user_panes == (
        UserPane(0, "alice", SourceType.CAMERA),
        UserPane(1, "alice", SourceType.SHARE_SCREEN),
        UserPane(15, "bob", SourceType.CAMERA),
    )
    assert spec.user_panes[1].source_type is SourceType.SHARE_SCREEN


@pytest.mark.parametrize(
    ("panes", "field"),
    [
        ([UserPane(16, "alice")], ("user_panes", 0, "pane_id")),
        ([UserPane(-1, "alice")], ("user_panes", 0, "pane_id")),
        ([UserPane(cast(int, True), "alice")], ("user_panes", 0, "pane_id")),
        ([UserPane(cast(int, "1"), "alice")], ("user_panes", 0, "pane_id")),
        ([UserPane(0, "")], ("user_panes", 0, "user_id")),
        ([UserPane(0, "u" * 65)], ("user_panes", 0, "user_id")),
        ([UserPane(0, cast(str, 7))], ("user_panes", 0, "user_id")),
        ([UserPane(0, "alice"), UserPane(0, "bob")], ("user_panes", 1, "pane_id")),
        ([UserPane(0, "alice"), UserPane(1, "alice")], ("user_panes", 1, "user_id")),
        (
            [
                UserPane(0, "alice", SourceType.SHARE_SCREEN),
                UserPane(3, "alice", cast(SourceType, "shareScreen")),
            ],
            ("user_panes", 1, "user_id"),
        ),
        ([UserPane(0, "alice", cast(SourceType, "window"))], ("user_panes", 0, "source_type")),
        ([UserPane(0, "alice", cast(SourceType, "Camera"))], ("user_panes", 0, "source_type")),
        ([UserPane(i, f"user{i}") for i in range(16)] + [UserPane(0, "x")], ("user_panes",)),
    ],
)
def test_bad_user_panes(panes: list[UserPane], field: tuple[str | int, ...]) -> None:
    error = raises("InvalidParameter", user_panes=panes)
    assert error.field == field


def test_camera_and_screen_of_one_user_may_be_pinned() -> None:
    spec = build_task_spec(user_panes=[UserPane(0, "alice"), UserPane(1, "alice", SourceType.SHARE_SCREEN)])
    assert len(spec.user_panes) == 2


def test_sixteen_user_panes_and_a_64_character_user_id() -> None:
    panes = [UserPane(i, f"user{i}") for i in range(15)] + [UserPane(15, "u" * 64)]
    assert len(build_task_spec(user_panes=panes).user_panes) == 16
