"""Pane rectangles in pixels (even, inside the canvas, no overlap, no seam) and crop/pad fits."""

from __future__ import annotations

import itertools

import pytest

from rtc_mpu.layouts import Layout, Pane, system_layout, system_layouts
from rtc_mpu.mixer.video.geometry import Placement, Rect, even, fit, pane_rect
from rtc_mpu.spec.task import CropMode

CANVASES = [(1280, 720), (640, 360), (1920, 1080), (720, 1280), (1080, 1920)]
LAYOUT_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]


def rects(layout: Layout, width: int, height: int) -> list[tuple[Pane, Rect]]:
    return [(pane, pane_rect(pane, width, height)) for pane in layout.panes]


def overlap(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height


def test_layout_ids_cover_every_system_layout() -> None:
    assert sorted(system_layouts()) == LAYOUT_IDS


@pytest.mark.parametrize(("width", "height"), CANVASES)
@pytest.mark.parametrize("layout_id", LAYOUT_IDS)
def test_rects_are_even_and_inside_the_canvas(layout_id: int, width: int, height: int) -> None:
    for pane, rect in rects(system_layout(layout_id), width, height):
        for value in (rect.x, rect.y, rect.width, rect.height):
            assert value % 2 == 0, f"pane {pane.id}: {rect}"
        assert rect.width > 0 and rect.height > 0
        assert rect.x >= 0 and rect.x + rect.width <= width
        assert rect.y >= 0 and rect.y + rect.height <= height
        # within a pixel's rounding (edges rounded to even: at most 1 px each) of the normalized pane
        assert abs(rect.x - pane.x * width) <= 1
        assert abs(rect.y - pane.y * height) <= 1
        assert abs(rect.x + rect.width - (pane.x + pane.width) * width) <= 1
        assert abs(rect.y + rect.height - (pane.y + pane.height) * height) <= 1


@pytest.mark.parametrize(("width", "height"), CANVASES)
@pytest.mark.parametrize("layout_id", LAYOUT_IDS)
def test_panes_of_equal_zorder_never_overlap(layout_id: int, width: int, height: int) -> None:
    placed = rects(system_layout(layout_id), width, height)
    for (p, a), (q, b) in itertools.combinations(placed, 2):
        if p.zorder == q.zorder:
            assert not overlap(a, b), f"layout {layout_id} panes {p.id} {a} and {q.id} {b} overlap"


def three_columns() -> Layout:
    panes = tuple(Pane(i, i / 3, 0.0, 1 / 3, 1.0) for i in range(3))
    return Layout(id=500, name="thirds", panes=panes, audio_mix_count=3)


def grid(n: int) -> Layout:
    size = 1 / n
    panes = tuple(Pane(r * n + c, c * size, r * size, size, size) for r in range(n) for c in range(n))
    return Layout(id=600 + n, name=f"grid {n}", panes=panes, audio_mix_count=16)


def touching_pairs(layout: Layout) -> list[tuple[Pane, Pane, str]]:
    pairs = []
    for p, q in itertools.permutations(layout.panes, 2):
        if abs(p.x + p.width - q.x) < 1e-9:
            pairs.append((p, q, "x"))
        if abs(p.y + p.height - q.y) < 1e-9:
            pairs.append((p, q, "y"))
    return pairs


@pytest.mark.parametrize(("width", "height"), [*CANVASES, (64, 48), (1000, 562), (854, 480)])
@pytest.mark.parametrize(
    "layout", [system_layout(13), three_columns(), grid(3), grid(4)], ids=lambda layout: layout.name
)
def test_touching_panes_share_the_pixel_edge(layout: Layout, width: int, height: int) -> None:
    pairs = touching_pairs(layout)
    assert pairs
    for p, q, axis in pairs:
        a, b = pane_rect(p, width, height), pane_rect(q, width, height)
        if axis == "x":
            assert a.x + a.width == b.x, f"seam or overlap between panes {p.id} and {q.id}: {a} {b}"
        else:
            assert a.y + a.height == b.y, f"seam or overlap between panes {p.id} and {q.id}: {a} {b}"


@pytest.mark.parametrize(("width", "height"), CANVASES)
def test_layout_13_covers_the_canvas_without_seam(width: int, height: int) -> None:
    left, right = (pane_rect(p, width, height) for p in system_layout(13).panes)
    assert left == Rect(0, 0, width // 2, height)
    assert right == Rect(width // 2, 0, width // 2, height)


def test_literal_rects() -> None:
    left, right = system_layout(13).panes
    assert pane_rect(left, 1280, 720) == Rect(0, 0, 640, 720)
    assert pane_rect(right, 1280, 720) == Rect(640, 0, 640, 720)
    assert pane_rect(left, 720, 1280) == Rect(0, 0, 360, 1280)
    (single,) = system_layout(1).panes
    assert pane_rect(single, 1920, 1080) == Rect(0, 0, 1920, 1080)
    assert pane_rect(single, 1080, 1920) == Rect(0, 0, 1080, 1920)
    first, second = system_layout(2).panes
    # 0.0021*640 = 1.3 -> 2, 0.2516*360 = 90.6 -> 90,
    # (0.0021+0.4968)*640 = 319.3 -> 320, 0.7484*360 = 269.4 -> 270
    assert pane_rect(first, 640, 360) == Rect(2, 90, 318, 180)
    # 0.501*640 = 320.6 -> 320, 0.9978*640 = 638.6 -> 638
    assert pane_rect(second, 640, 360) == Rect(320, 90, 318, 180)
    # picture-in-picture 1, small pane: 8, 4.5 -> 4, 310.2 -> 310, 174.5 -> 174
    assert pane_rect(system_layout(3).panes[1], 1280, 720) == Rect(8, 4, 302, 170)
    # gallery 4, pane 3: 648.3 -> 648, 364.7 -> 364, 1263.4 -> 1264, 710.6 -> 710
    assert pane_rect(system_layout(6).panes[3], 1280, 720) == Rect(648, 364, 616, 346)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (1.2, 2), (2.9, 2), (3.1, 4), (319.3, 320), (174.49, 174), (-1.2, -2)]
)
def test_even(value: float, expected: int) -> None:
    assert even(value) == expected


# --- fit ------------------------------------------------------------------------------------------


def test_pad_4_3_into_16_9() -> None:
    placement = fit(320, 240, Rect(0, 0, 640, 360), CropMode.PAD)
    assert placement == Placement(480, 360, 0, 0, Rect(80, 0, 480, 360))


def test_pad_is_centred_in_an_offset_pane() -> None:
    placement = fit(320, 240, Rect(100, 50, 640, 360), CropMode.PAD)
    assert placement.target == Rect(180, 50, 480, 360)
    assert (placement.crop_x, placement.crop_y) == (0, 0)


def test_pad_wide_source_gets_bars_above_and_below() -> None:
    placement = fit(640, 180, Rect(0, 0, 640, 360), CropMode.PAD)
    assert placement == Placement(640, 180, 0, 0, Rect(0, 90, 640, 180))


def test_crop_4_3_into_16_9() -> None:
    pane = Rect(0, 0, 640, 360)
    placement = fit(320, 240, pane, CropMode.CROP)
    assert (placement.scaled_width, placement.scaled_height) == (640, 480)
    assert placement.crop_x == 0
    assert placement.crop_y == 60
    assert placement.target == pane


def test_crop_16_9_into_4_3_crops_the_sides() -> None:
    pane = Rect(20, 40, 480, 360)
    placement = fit(1280, 720, pane, CropMode.CROP)
    assert (placement.scaled_width, placement.scaled_height) == (640, 360)
    assert (placement.crop_x, placement.crop_y) == (80, 0)
    assert placement.target == pane


def test_same_aspect_fills_the_pane_in_both_modes() -> None:
    pane = Rect(10, 20, 320, 180)
    for mode in CropMode:
        assert fit(1280, 720, pane, mode) == Placement(320, 180, 0, 0, pane)


SOURCES = [(320, 240), (640, 360), (1920, 1080), (1080, 1920), (333, 177), (177, 333), (2, 2), (4000, 10)]
PANES = [Rect(0, 0, 640, 360), Rect(2, 90, 318, 180), Rect(8, 4, 302, 170), Rect(100, 100, 2, 2)]


@pytest.mark.parametrize("pane", PANES, ids=str)
@pytest.mark.parametrize(("source_width", "source_height"), SOURCES)
def test_pad_properties(source_width: int, source_height: int, pane: Rect) -> None:
    placement = fit(source_width, source_height, pane, CropMode.PAD)
    target = placement.target
    values = (
        placement.scaled_width,
        placement.scaled_height,
        target.x,
        target.y,
        target.width,
        target.height,
    )
    assert all(v % 2 == 0 for v in values), placement
    assert (placement.crop_x, placement.crop_y) == (0, 0)
    assert (target.width, target.height) == (placement.scaled_width, placement.scaled_height)
    assert pane.x <= target.x and target.x + target.width <= pane.x + pane.width
    assert pane.y <= target.y and target.y + target.height <= pane.y + pane.height
    assert target.width == pane.width or target.height == pane.height  # touches two sides
    left, right = target.x - pane.x, pane.x + pane.width - target.x - target.width
    top, bottom = target.y - pane.y, pane.y + pane.height - target.y - target.height
    assert abs(left - right) <= 2 and abs(top - bottom) <= 2  # centred


@pytest.mark.parametrize("pane", PANES, ids=str)
@pytest.mark.parametrize(("source_width", "source_height"), SOURCES)
def test_crop_properties(source_width: int, source_height: int, pane: Rect) -> None:
    placement = fit(source_width, source_height, pane, CropMode.CROP)
    values = (placement.scaled_width, placement.scaled_height, placement.crop_x, placement.crop_y)
    assert all(v % 2 == 0 for v in values), placement
    assert placement.target == pane
    assert placement.scaled_width >= pane.width and placement.scaled_height >= pane.height
    assert placement.scaled_width == pane.width or placement.scaled_height == pane.height
    spare_x = placement.scaled_width - pane.width
    spare_y = placement.scaled_height - pane.height
    assert 0 <= placement.crop_x <= spare_x and 0 <= placement.crop_y <= spare_y
    assert abs(2 * placement.crop_x - spare_x) <= 2 and abs(2 * placement.crop_y - spare_y) <= 2  # centred


@pytest.mark.parametrize("mode", list(CropMode))
@pytest.mark.parametrize("pane", [Rect(10, 20, 0, 0), Rect(10, 20, 0, 100), Rect(10, 20, 100, 0)], ids=str)
def test_tiny_pane_gives_an_empty_target(pane: Rect, mode: CropMode) -> None:
    placement = fit(320, 240, pane, mode)
    assert placement.target.width == 0 or placement.target.height == 0
    assert (placement.target.x, placement.target.y) == (10, 20)


@pytest.mark.parametrize("size", [(0, 240), (320, 0), (-2, 240), (320, -240), (0, 0)])
def test_invalid_source_size(size: tuple[int, int]) -> None:
    for mode in CropMode:
        with pytest.raises(ValueError):
            fit(size[0], size[1], Rect(0, 0, 640, 360), mode)
