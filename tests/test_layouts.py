"""System layouts, the MediaEncode and TaskProfile tables, and the layout schema.

Expected values are copied literally from the vendor's MPU API documentation, not derived from the data files.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from rtc_mpu.layouts import (
    Layout,
    SpecError,
    layout_from_dict,
    media_encode,
    media_encodes,
    smallest_profile,
    system_layout,
    system_layouts,
    task_profile,
    task_profiles,
)

LAYOUT_CODE = "InvalidLayoutID.Malformed"

#: Every system layout of the reference: id -> (name, [(x, y, width, height, zorder), ...] by pane id).
REFERENCE_LAYOUTS: dict[int, tuple[str, list[tuple[float, float, float, float, int]]]] = {
    1: ("single", [(0, 0, 1, 1, 0)]),
    2: ("side-by-side 1", [(0.0021, 0.2516, 0.4968, 0.4968, 0), (0.501, 0.2516, 0.4968, 0.4968, 0)]),
    3: ("picture-in-picture 1", [(0, 0, 1, 1, 0), (0.00625, 0.00625, 0.2361, 0.2361, 1)]),
    4: ("picture-in-picture 2", [(0, 0, 1, 1, 0), (0.7576, 0.7576, 0.2361, 0.2361, 1)]),
    5: (
        "gallery 3",
        [
            (0.2547, 0.00625, 0.4906, 0.4906, 0),
            (0.00625, 0.5031, 0.4906, 0.4906, 0),
            (0.5031, 0.5031, 0.4906, 0.4906, 0),
        ],
    ),
    6: (
        "gallery 4",
        [
            (0.013, 0.013, 0.4805, 0.4805, 0),
            (0.5065, 0.013, 0.4805, 0.4805, 0),
            (0.013, 0.5065, 0.4805, 0.4805, 0),
            (0.5065, 0.5065, 0.4805, 0.4805, 0),
        ],
    ),
    7: (
        "gallery 5",
        [
            (0.1718, 0.1718, 0.325, 0.325, 0),
            (0.5031, 0.1718, 0.325, 0.325, 0),
            (0.00625, 0.503, 0.325, 0.325, 0),
            (0.3375, 0.503, 0.325, 0.325, 0),
            (0.66875, 0.503, 0.325, 0.325, 0),
        ],
    ),
    8: (
        "gallery 6",
        [
            (0.00625, 0.1718, 0.325, 0.325, 0),
            (0.3375, 0.1718, 0.325, 0.325, 0),
            (0.6688, 0.1718, 0.325, 0.325, 0),
            (0.00625, 0.5031, 0.325, 0.325, 0),
            (0.3375, 0.5031, 0.325, 0.325, 0),
            (0.6688, 0.5031, 0.325, 0.325, 0),
        ],
    ),
    9: (
        "gallery 7",
        [
            (0.00625, 0.00625, 0.7391, 0.7391, 0),
            (0.7516, 0.1336, 0.2422, 0.2422, 0),
            (0.7516, 0.3821, 0.2422, 0.2422, 0),
            (0.00625, 0.7516, 0.2422, 0.2422, 0),
            (0.2547, 0.7516, 0.2422, 0.2422, 0),
            (0.5032, 0.7516, 0.2422, 0.2422, 0),
            (0.7516, 0.7516, 0.2422, 0.2422, 0),
        ],
    ),
    10: (
        "gallery 8",
        [
            (0.00625, 0.00625, 0.7391, 0.7391, 0),
            (0.7516, 0.00625, 0.2422, 0.2422, 0),
            (0.7516, 0.2547, 0.2422, 0.2422, 0),
            (0.7516, 0.5032, 0.2422, 0.2422, 0),
            (0.00625, 0.7516, 0.2422, 0.2422, 0),
            (0.2547, 0.7516, 0.2422, 0.2422, 0),
            (0.5032, 0.7516, 0.2422, 0.2422, 0),
            (0.7516, 0.7516, 0.2422, 0.2422, 0),
        ],
    ),
    11: (
        "gallery 9",
        [
            (0.00625, 0.00625, 0.325, 0.325, 0),
            (0.3375, 0.00625, 0.325, 0.325, 0),
            (0.6688, 0.00625, 0.325, 0.325, 0),
            (0.00625, 0.3375, 0.325, 0.325, 0),
            (0.3375, 0.3375, 0.325, 0.325, 0),
            (0.6688, 0.3375, 0.325, 0.325, 0),
            (0.00625, 0.6688, 0.325, 0.325, 0),
            (0.3375, 0.6688, 0.325, 0.325, 0),
            (0.6688, 0.6688, 0.325, 0.325, 0),
        ],
    ),
    13: ("side-by-side 2", [(0, 0, 0.5, 1, 0), (0.5, 0, 0.5, 1, 0)]),
}

#: Pane count of every system layout (reference, "System layouts").
PANE_COUNTS = {1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7, 10: 8, 11: 9, 13: 2}

#: The reference's MediaEncode table: id -> (width, height, kbit/s, fps); 0 is audio only.
REFERENCE_ENCODES: dict[int, tuple[int, int, int, int]] = {
    1: (640, 360, 500, 15),
    52: (640, 360, 500, 30),
    53: (360, 640, 500, 15),
    54: (360, 640, 500, 30),
    10: (960, 540, 700, 24),
    20: (1280, 720, 1024, 25),
    22: (720, 1280, 1024, 30),
    23: (800, 600, 1024, 30),
    24: (750, 780, 1024, 30),
    25: (750, 540, 700, 30),
    26: (720, 1280, 2048, 30),
    27: (1280, 720, 2048, 30),
    28: (1280, 720, 3096, 30),
    30: (1920, 1080, 2048, 30),
    31: (1080, 1920, 2048, 30),
    32: (1024, 768, 1024, 24),
    33: (1280, 960, 1024, 24),
    34: (1024, 768, 2048, 24),
    35: (1280, 960, 2048, 24),
    36: (1280, 720, 1024, 24),
    37: (1280, 720, 2048, 24),
    38: (540, 960, 750, 15),
    39: (540, 960, 1500, 30),
    40: (1280, 720, 1200, 15),
    41: (720, 1280, 1200, 15),
    42: (720, 1280, 1500, 15),
    43: (540, 960, 1200, 15),
}


# --- system layouts -------------------------------------------------------------------------------


def test_system_layout_ids_are_1_to_11_and_13() -> None:
    assert sorted(system_layouts()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]


def test_there_is_no_system_layout_12() -> None:
    with pytest.raises(SpecError) as info:
        system_layout(12)
    assert info.value.code == LAYOUT_CODE
    assert info.value.field == ("layout_ids",)


@pytest.mark.parametrize("layout_id", [0, 14, 99, -1])
def test_unknown_system_layout_raises(layout_id: int) -> None:
    with pytest.raises(SpecError) as info:
        system_layout(layout_id)
    assert info.value.code == LAYOUT_CODE


@pytest.mark.parametrize(("layout_id", "count"), sorted(PANE_COUNTS.items()))
def test_pane_counts(layout_id: int, count: int) -> None:
    layout = system_layout(layout_id)
    assert layout.pane_count == count
    assert len(layout.panes) == count
    assert [p.id for p in layout.panes] == list(range(count))


@pytest.mark.parametrize("layout_id", sorted(REFERENCE_LAYOUTS))
def test_every_pane_matches_the_reference(layout_id: int) -> None:
    name, expected = REFERENCE_LAYOUTS[layout_id]
    layout = system_layout(layout_id)
    assert layout.id == layout_id
    assert layout.name == name
    actual = [(p.x, p.y, p.width, p.height, p.zorder) for p in layout.panes]
    assert len(actual) == len(expected)
    for pane_id, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got[:4] == pytest.approx(want[:4], abs=1e-9), f"layout {layout_id} pane {pane_id}"
        assert got[4] == want[4], f"layout {layout_id} pane {pane_id} zorder"


def test_layout_2_literally() -> None:
    panes = system_layout(2).panes
    assert (panes[0].x, panes[0].y, panes[0].width, panes[0].height) == (0.0021, 0.2516, 0.4968, 0.4968)
    assert (panes[1].x, panes[1].y, panes[1].width, panes[1].height) == (0.501, 0.2516, 0.4968, 0.4968)


def test_picture_in_picture_small_pane_is_on_top() -> None:
    for layout_id, corner in ((3, 0.00625), (4, 0.7576)):
        big, small = system_layout(layout_id).panes
        assert (big.x, big.y, big.width, big.height, big.zorder) == (0, 0, 1, 1, 0)
        assert (small.x, small.y, small.width, small.height) == (corner, corner, 0.2361, 0.2361)
        assert small.zorder == 1


def test_layout_13_halves() -> None:
    left, right = system_layout(13).panes
    assert (left.x, left.y, left.width, left.height) == (0, 0, 0.5, 1)
    assert (right.x, right.y, right.width, right.height) == (0.5, 0, 0.5, 1)


def test_layout_11_is_a_row_major_3x3_grid() -> None:
    stops = [0.00625, 0.3375, 0.6688]
    panes = system_layout(11).panes
    assert [(p.x, p.y) for p in panes] == [(x, y) for y in stops for x in stops]
    assert {(p.width, p.height) for p in panes} == {(0.325, 0.325)}


@pytest.mark.parametrize("layout_id", sorted(PANE_COUNTS))
def test_every_pane_lies_inside_the_canvas(layout_id: int) -> None:
    for pane in system_layout(layout_id).panes:
        assert 0 <= pane.x <= 1 and 0 <= pane.y <= 1
        assert 0 < pane.width <= 1 and 0 < pane.height <= 1
        assert pane.x + pane.width <= 1 + 1e-9
        assert pane.y + pane.height <= 1 + 1e-9


@pytest.mark.parametrize("layout_id", sorted(PANE_COUNTS))
def test_system_layouts_mix_up_to_16_audio_sources(layout_id: int) -> None:
    assert 1 <= system_layout(layout_id).audio_mix_count <= 16


# --- MediaEncode ----------------------------------------------------------------------------------


def test_media_encode_table_has_the_28_reference_ids() -> None:
    assert sorted(media_encodes()) == sorted([0, *REFERENCE_ENCODES])
    assert len(media_encodes()) == 28


@pytest.mark.parametrize("encode_id", sorted(REFERENCE_ENCODES))
def test_media_encode_values(encode_id: int) -> None:
    width, height, kbps, fps = REFERENCE_ENCODES[encode_id]
    encode = media_encode(encode_id)
    assert encode.id == encode_id
    assert (encode.width, encode.height, encode.fps) == (width, height, fps)
    assert encode.video_bitrate == kbps * 1000
    assert not encode.audio_only
    assert encode.audio_bitrate > 0


def test_media_encode_spot_checks() -> None:
    one = media_encode(1)
    assert (one.width, one.height, one.video_bitrate, one.fps) == (640, 360, 500_000, 15)
    e27 = media_encode(27)
    assert (e27.width, e27.height, e27.video_bitrate, e27.fps) == (1280, 720, 2_048_000, 30)
    e30 = media_encode(30)
    assert (e30.width, e30.height, e30.video_bitrate, e30.fps) == (1920, 1080, 2_048_000, 30)
    e31 = media_encode(31)
    assert (e31.width, e31.height, e31.video_bitrate, e31.fps) == (1080, 1920, 2_048_000, 30)
    e43 = media_encode(43)
    assert (e43.width, e43.height, e43.video_bitrate, e43.fps) == (540, 960, 1_200_000, 15)


def test_media_encode_0_is_audio_only_at_64_kbps() -> None:
    audio = media_encode(0)
    assert audio.audio_only
    assert (audio.width, audio.height, audio.video_bitrate, audio.fps) == (0, 0, 0, 0)
    assert audio.audio_bitrate == 64_000


@pytest.mark.parametrize("encode_id", [2, 3, 11, 29, 44, 55, -1, 100])
def test_unknown_media_encode(encode_id: int) -> None:
    with pytest.raises(SpecError) as info:
        media_encode(encode_id)
    assert info.value.code == "InvalidMediaEncode.Malformed"
    assert info.value.field == ("media_encode",)


@pytest.mark.parametrize("bad", [True, "27", 27.0, None])
def test_media_encode_requires_an_int(bad: Any) -> None:
    with pytest.raises(SpecError) as info:
        media_encode(bad)
    assert info.value.code == "InvalidMediaEncode.Malformed"


# --- TaskProfile ----------------------------------------------------------------------------------


def test_task_profile_names() -> None:
    expected = {f"{n}IN_{r}" for n in (1, 2, 4, 9, 12, 16) for r in ("1080P", "720P", "360P")}
    assert set(task_profiles()) == expected | {"Mixed_Audio"}


@pytest.mark.parametrize(
    ("name", "canonical", "inputs", "long_side", "short_side"),
    [
        ("4IN_720P", "4IN_720P", 4, 1280, 720),
        ("4in_720p", "4IN_720P", 4, 1280, 720),
        ("16In_1080p", "16IN_1080P", 16, 1920, 1080),
        (" 9in_360P ", "9IN_360P", 9, 640, 360),
        ("1IN_1080P", "1IN_1080P", 1, 1920, 1080),
        ("12IN_360P", "12IN_360P", 12, 640, 360),
    ],
)
def test_task_profile_parses_case_insensitively(
    name: str, canonical: str, inputs: int, long_side: int, short_side: int
) -> None:
    profile = task_profile(name)
    assert profile.name == canonical
    assert profile.max_video_inputs == inputs
    assert (profile.max_long_side, profile.max_short_side) == (long_side, short_side)
    assert not profile.audio_only


@pytest.mark.parametrize("name", ["Mixed_Audio", "mixed_audio", "MIXED_AUDIO"])
def test_mixed_audio_profile(name: str) -> None:
    profile = task_profile(name)
    assert profile.name == "Mixed_Audio"
    assert profile.audio_only
    assert profile.max_video_inputs == 0


@pytest.mark.parametrize(
    "name", ["3IN_720P", "4IN_480P", "4IN_720", "IN_720P", "", "Mixed", "17IN_1080P", "4IN_720P_X", 4, None]
)
def test_unknown_task_profile(name: Any) -> None:
    with pytest.raises(SpecError) as info:
        task_profile(name)
    assert info.value.code == "InvalidTaskProfile.Malformed"
    assert info.value.field == ("task_profile",)


@pytest.mark.parametrize(
    ("profile", "encode_id", "allowed"),
    [
        ("1IN_1080P", 31, True),  # 1080x1920 portrait fits a 1080P profile
        ("1IN_1080P", 30, True),
        ("4IN_720P", 30, False),  # 1920x1080 is above 720P
        ("4IN_720P", 31, False),
        ("4IN_720P", 27, True),
        ("1IN_720P", 22, True),  # 720x1280 portrait fits 720P
        ("1IN_720P", 24, False),  # 750x780: the short side 750 is above 720
        ("1IN_1080P", 24, True),
        ("1IN_360P", 1, True),
        ("1IN_360P", 53, True),  # 360x640 portrait
        ("1IN_360P", 10, False),  # 960x540
        ("1IN_360P", 0, True),  # audio only fits everything
        ("Mixed_Audio", 0, True),
        ("Mixed_Audio", 1, False),
    ],
)
def test_profile_allows(profile: str, encode_id: int, allowed: bool) -> None:
    assert task_profile(profile).allows(media_encode(encode_id)) is allowed


@pytest.mark.parametrize(
    ("encode_id", "inputs", "expected"),
    [
        (27, 9, "9IN_720P"),
        (27, 10, "12IN_720P"),
        (27, 0, "1IN_720P"),
        (27, 1, "1IN_720P"),
        (1, 1, "1IN_360P"),
        (1, 3, "4IN_360P"),
        (31, 4, "4IN_1080P"),
        (30, 16, "16IN_1080P"),
        (24, 2, "2IN_1080P"),
        (53, 2, "2IN_360P"),
        (0, 0, "Mixed_Audio"),
        (0, 9, "Mixed_Audio"),
    ],
)
def test_smallest_profile(encode_id: int, inputs: int, expected: str) -> None:
    assert smallest_profile(media_encode(encode_id), inputs).name == expected


def test_smallest_profile_too_many_inputs() -> None:
    with pytest.raises(SpecError) as info:
        smallest_profile(media_encode(30), 17)
    assert info.value.code == "InvalidTaskProfile.Malformed"


# --- layout_from_dict -----------------------------------------------------------------------------


def valid_layout() -> dict[str, Any]:
    return {
        "id": 100,
        "name": "custom",
        "audio_mix_count": 4,
        "major_pane": 0,
        "panes": [
            {"id": 0, "x": 0.0, "y": 0.0, "width": 0.5, "height": 1.0, "zorder": 0},
            {"id": 1, "x": 0.5, "y": 0.25, "width": 0.5, "height": 0.5, "zorder": 2},
        ],
    }


def test_valid_custom_layout() -> None:
    layout = layout_from_dict(valid_layout())
    assert layout.id == 100
    assert layout.name == "custom"
    assert layout.audio_mix_count == 4
    assert layout.major_pane == 0
    assert layout.pane_count == 2
    second = layout.panes[1]
    assert (second.id, second.x, second.y, second.width, second.height, second.zorder) == (
        1,
        0.5,
        0.25,
        0.5,
        0.5,
        2,
    )


def test_panes_are_ordered_by_id() -> None:
    data = valid_layout()
    data["panes"].reverse()
    assert [p.id for p in layout_from_dict(data).panes] == [0, 1]


def test_optional_fields_default() -> None:
    data = valid_layout()
    del data["audio_mix_count"], data["major_pane"]
    for pane in data["panes"]:
        del pane["zorder"]
    layout = layout_from_dict(data)
    assert layout.audio_mix_count == 16
    assert layout.major_pane is None
    assert {p.zorder for p in layout.panes} == {0}


def test_sixteen_panes_and_edges_touching_the_canvas_are_accepted() -> None:
    data = valid_layout()
    data["panes"] = [
        {"id": i, "x": (i % 4) / 4, "y": (i // 4) / 4, "width": 0.25, "height": 0.25} for i in range(16)
    ]
    data["major_pane"] = None
    layout = layout_from_dict(data)
    assert layout.pane_count == 16
    data["panes"] = [
        {"id": i, "x": i / 3, "y": 0, "width": 1 / 3, "height": 1} for i in range(3)
    ]  # 2/3 + 1/3 rounds to 1.0000000000000002 or so
    assert layout_from_dict(data).pane_count == 3


def _mutate(path: str, value: Any) -> dict[str, Any]:
    data = valid_layout()
    if path.startswith("pane1."):
        data["panes"][1][path.removeprefix("pane1.")] = value
    else:
        data[path] = value
    return data


def _seventeen_panes() -> dict[str, Any]:
    data = valid_layout()
    data["major_pane"] = None
    data["panes"] = [
        {"id": i, "x": (i % 4) / 4, "y": (i // 4) / 5, "width": 0.25, "height": 0.2} for i in range(17)
    ]
    return data


def _duplicate_ids() -> dict[str, Any]:
    data = valid_layout()
    data["panes"][1]["id"] = 0
    return data


def _no_panes_key() -> dict[str, Any]:
    data = valid_layout()
    del data["panes"]
    return data


def _missing_width() -> dict[str, Any]:
    data = valid_layout()
    del data["panes"][1]["width"]
    return data


INVALID_LAYOUTS: dict[str, dict[str, Any]] = {
    "no panes": _mutate("panes", []),
    "panes key missing": _no_panes_key(),
    "panes not a list": _mutate("panes", {"id": 0}),
    "17 panes": _seventeen_panes(),
    "duplicate pane ids": _duplicate_ids(),
    "x + width > 1": _mutate("pane1.x", 0.6),
    "y + height > 1": _mutate("pane1.y", 0.6),
    "negative x": _mutate("pane1.x", -0.1),
    "x above 1": _mutate("pane1.x", 1.5),
    "width 0": _mutate("pane1.width", 0),
    "height 0": _mutate("pane1.height", 0.0),
    "negative width": _mutate("pane1.width", -0.2),
    "width above 1": _mutate("pane1.width", 1.5),
    "width missing": _missing_width(),
    "non-numeric x": _mutate("pane1.x", "0.5"),
    "None width": _mutate("pane1.width", None),
    "NaN x": _mutate("pane1.x", math.nan),
    "NaN width": _mutate("pane1.width", math.nan),
    "infinite height": _mutate("pane1.height", math.inf),
    "bool width": _mutate("pane1.width", True),
    "bool x": _mutate("pane1.x", False),
    "bool pane id": _mutate("pane1.id", True),
    "float pane id": _mutate("pane1.id", 1.0),
    "pane id 16": _mutate("pane1.id", 16),
    "negative pane id": _mutate("pane1.id", -1),
    "float zorder": _mutate("pane1.zorder", 1.5),
    "pane not an object": _mutate("panes", [[0, 0, 1, 1]]),
    "AudioMixCount 0": _mutate("audio_mix_count", 0),
    "AudioMixCount 17": _mutate("audio_mix_count", 17),
    "AudioMixCount bool": _mutate("audio_mix_count", True),
    "AudioMixCount str": _mutate("audio_mix_count", "4"),
    "major pane missing": _mutate("major_pane", 5),
    "major pane bool": _mutate("major_pane", True),
    "layout id not int": _mutate("id", "100"),
    "name not str": _mutate("name", 7),
}


@pytest.mark.parametrize("case", sorted(INVALID_LAYOUTS))
def test_layout_from_dict_rejects(case: str) -> None:
    with pytest.raises(SpecError) as info:
        layout_from_dict(copy.deepcopy(INVALID_LAYOUTS[case]))
    assert info.value.code == LAYOUT_CODE


def test_rejections_name_the_field() -> None:
    with pytest.raises(SpecError) as info:
        layout_from_dict(_mutate("audio_mix_count", 17))
    assert info.value.field == ("audio_mix_count",)
    with pytest.raises(SpecError) as info:
        layout_from_dict(_mutate("major_pane", 5))
    assert info.value.field == ("panes",)
    with pytest.raises(SpecError) as info:
        layout_from_dict(_mutate("pane1.x", 0.6))
    assert info.value.field == ("panes", 1)


def test_spec_error_is_a_value_error_with_the_code_in_its_text() -> None:
    with pytest.raises(ValueError, match=r"^InvalidLayoutID\.Malformed: "):
        layout_from_dict(_mutate("panes", []))


# --- to_dict --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout_id", sorted(PANE_COUNTS))
def test_system_layout_round_trips_through_json(layout_id: int) -> None:
    layout = system_layout(layout_id)
    again = layout_from_dict(json.loads(json.dumps(layout.to_dict())))
    assert again == layout


def test_custom_layout_round_trips() -> None:
    layout = layout_from_dict(valid_layout())
    assert layout.to_dict() == valid_layout()
    assert layout_from_dict(layout.to_dict()) == layout


def test_to_dict_of_layout_3() -> None:
    assert system_layout(3).to_dict() == {
        "id": 3,
        "name": "picture-in-picture 1",
        "audio_mix_count": 16,
        "major_pane": 0,
        "panes": [
            {"id": 0, "x": 0, "y": 0, "width": 1, "height": 1, "zorder": 0},
            {"id": 1, "x": 0.00625, "y": 0.00625, "width": 0.2361, "height": 0.2361, "zorder": 1},
        ],
    }


def test_layout_is_immutable() -> None:
    layout: Layout = system_layout(1)
    with pytest.raises(AttributeError):
        layout.id = 2  # type: ignore[misc]
