"""Layout selection by user count and pane assignment (join order, UserPanes pins, screen shares)."""

from __future__ import annotations

import pytest

from rtc_mpu.layouts import Layout, system_layout
from rtc_mpu.mixer.video.selection import LayoutChoice, choose_layout, eligible_streams, pick_layout
from rtc_mpu.spec.streams import SourceType, StreamKey
from rtc_mpu.spec.task import UserPane

CAMERA, SCREEN = SourceType.CAMERA, SourceType.SHARE_SCREEN


def layouts(*ids: int) -> list[Layout]:
    return [system_layout(i) for i in ids]


def cams(*users: str) -> list[StreamKey]:
    return [StreamKey(user, CAMERA) for user in users]


def shown(choice: LayoutChoice) -> list[str | None]:
    """The pane contents in pane-id order: ``user`` for a camera, ``user/screen`` for a share."""
    result: list[str | None] = []
    for assignment in choice.assignments:
        stream = assignment.stream
        if stream is None:
            result.append(None)
        else:
            result.append(stream.user_id if stream.source_type is CAMERA else f"{stream.user_id}/screen")
    return result


# --- pick_layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "layout_id"), [(0, 1), (1, 1), (2, 2), (3, 5), (4, 6), (5, 6), (7, 6)])
def test_pick_layout(count: int, layout_id: int) -> None:
    assert pick_layout(layouts(1, 2, 5, 6), count).id == layout_id


@pytest.mark.parametrize(("count", "layout_id"), [(0, 1), (1, 1), (2, 2), (3, 5), (4, 6), (9, 6)])
def test_pick_layout_ignores_the_listed_order(count: int, layout_id: int) -> None:
    assert pick_layout(layouts(6, 2, 5, 1), count).id == layout_id


@pytest.mark.parametrize(("count", "layout_id"), [(1, 1), (2, 6), (3, 6), (4, 6), (5, 6)])
def test_pick_layout_smallest_with_more_panes(count: int, layout_id: int) -> None:
    assert pick_layout(layouts(1, 6), count).id == layout_id


def test_pick_layout_with_only_large_layouts() -> None:
    assert pick_layout(layouts(11, 6), 1).id == 6


def test_pick_layout_needs_a_layout() -> None:
    with pytest.raises(ValueError):
        pick_layout([], 1)
    with pytest.raises(ValueError):
        choose_layout([], cams("a"), [])


# --- choose_layout --------------------------------------------------------------------------------


def test_panes_fill_in_join_order() -> None:
    choice = choose_layout(layouts(1, 2, 5, 6), cams("carol", "alice", "bob"), [])
    assert choice.layout.id == 5
    assert shown(choice) == ["carol", "alice", "bob"]
    assert [(a.pane.id, a.stream) for a in choice.assignments] == [
        (0, StreamKey("carol")),
        (1, StreamKey("alice")),
        (2, StreamKey("bob")),
    ]


def test_no_streams_shows_background() -> None:
    choice = choose_layout(layouts(1, 2), [], [])
    assert choice.layout.id == 1
    assert shown(choice) == [None]


def test_fewer_streams_than_panes_leaves_panes_empty() -> None:
    choice = choose_layout(layouts(1, 6), cams("a", "b"), [])
    assert choice.layout.id == 6
    assert shown(choice) == ["a", "b", None, None]


def test_more_users_than_panes_shows_the_earliest() -> None:
    choice = choose_layout(layouts(1, 2, 5, 6), cams("a", "b", "c", "d", "e", "f", "g"), [])
    assert choice.layout.id == 6
    assert shown(choice) == ["a", "b", "c", "d"]


def test_pinned_user_takes_its_pane_and_others_fill_in_order() -> None:
    pins = [UserPane(0, "c")]
    choice = choose_layout(layouts(1, 2, 5, 6), cams("a", "b", "c"), pins)
    assert choice.layout.id == 5
    assert shown(choice) == ["c", "a", "b"]


def test_pin_to_a_middle_pane() -> None:
    choice = choose_layout(layouts(6), cams("a", "b", "c", "d"), [UserPane(2, "a")])
    assert shown(choice) == ["b", "c", "a", "d"]


def test_two_pins() -> None:
    pins = [UserPane(3, "a"), UserPane(0, "d")]
    choice = choose_layout(layouts(6), cams("a", "b", "c", "d"), pins)
    assert shown(choice) == ["d", "b", "c", "a"]


def test_pinned_user_beyond_the_pane_count_is_shown() -> None:
    choice = choose_layout(layouts(2), cams("a", "b", "c", "d"), [UserPane(1, "d")])
    assert shown(choice) == ["a", "d"]


def test_absent_pinned_user_leaves_the_pane_to_the_next_user() -> None:
    choice = choose_layout(layouts(1, 2, 5, 6), cams("a", "b"), [UserPane(0, "zed")])
    assert choice.layout.id == 2
    assert shown(choice) == ["a", "b"]


def test_absent_pinned_user_in_a_later_pane() -> None:
    choice = choose_layout(layouts(5), cams("a", "b"), [UserPane(1, "zed")])
    assert shown(choice) == ["a", "b", None]


def test_pin_to_a_pane_missing_from_the_chosen_layout_is_ignored() -> None:
    choice = choose_layout(layouts(1, 2, 5, 6), cams("a", "b"), [UserPane(5, "b")])
    assert choice.layout.id == 2
    assert shown(choice) == ["a", "b"]


def test_pin_to_a_missing_pane_does_not_displace_join_order() -> None:
    choice = choose_layout(layouts(2), cams("a", "b", "c"), [UserPane(7, "c"), UserPane(0, "b")])
    assert shown(choice) == ["b", "a"]


def test_unpinned_screen_share_does_not_count_nor_appear() -> None:
    streams = [StreamKey("a", CAMERA), StreamKey("a", SCREEN), StreamKey("b", CAMERA)]
    choice = choose_layout(layouts(1, 2, 5, 6), streams, [])
    assert choice.layout.id == 2
    assert shown(choice) == ["a", "b"]


def test_unpinned_screen_share_alone() -> None:
    choice = choose_layout(layouts(1, 2), [StreamKey("a", SCREEN)], [])
    assert choice.layout.id == 1
    assert shown(choice) == [None]


def test_pinned_screen_share_counts_and_appears_where_pinned() -> None:
    streams = [StreamKey("a", CAMERA), StreamKey("a", SCREEN), StreamKey("b", CAMERA)]
    choice = choose_layout(layouts(1, 2, 5, 6), streams, [UserPane(0, "a", SCREEN)])
    assert choice.layout.id == 5
    assert shown(choice) == ["a/screen", "a", "b"]


def test_pinned_screen_share_of_an_absent_stream() -> None:
    pins = [UserPane(0, "a", SCREEN)]
    choice = choose_layout(layouts(1, 2, 5, 6), cams("a", "b"), pins)
    assert choice.layout.id == 2
    assert shown(choice) == ["a", "b"]


def test_pinned_screen_share_never_fills_another_pane() -> None:
    # The share counts (3 streams -> layout 5, panes 0..2) but its pane 7 is not in the layout.
    streams = [StreamKey("a", CAMERA), StreamKey("a", SCREEN), StreamKey("b", CAMERA)]
    choice = choose_layout(layouts(1, 2, 5, 6), streams, [UserPane(7, "a", SCREEN)])
    assert choice.layout.id == 5
    assert shown(choice) == ["a", "b", None]


def test_camera_pin_does_not_pin_the_screen_share() -> None:
    streams = [StreamKey("a", SCREEN), StreamKey("b", CAMERA), StreamKey("a", CAMERA)]
    choice = choose_layout(layouts(1, 2, 5), streams, [UserPane(1, "a", CAMERA)])
    assert choice.layout.id == 2
    assert shown(choice) == ["b", "a"]


# --- eligible_streams -----------------------------------------------------------------------------


def test_eligible_streams() -> None:
    streams = [
        StreamKey("c", SCREEN),
        StreamKey("a", CAMERA),
        StreamKey("a", SCREEN),
        StreamKey("b", CAMERA),
        StreamKey("b", SCREEN),
    ]
    assert eligible_streams(streams, []) == [StreamKey("a", CAMERA), StreamKey("b", CAMERA)]
    pins = [UserPane(0, "b", SCREEN), UserPane(1, "zed", SCREEN)]
    assert eligible_streams(streams, pins) == [
        StreamKey("a", CAMERA),
        StreamKey("b", CAMERA),
        StreamKey("b", SCREEN),
    ]
    assert eligible_streams(streams, [UserPane(0, "a", CAMERA)]) == [
        StreamKey("a", CAMERA),
        StreamKey("b", CAMERA),
    ]


def test_eligible_streams_keeps_the_given_order() -> None:
    streams = [StreamKey("z"), StreamKey("m"), StreamKey("a")]
    assert eligible_streams(streams, []) == streams
