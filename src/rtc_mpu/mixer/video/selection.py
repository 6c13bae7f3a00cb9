"""Layout selection: which of a task's layouts to use and which stream goes in which pane.

Rules (issue #2, following the vendor's documented behaviour):
- the streams counted are every active camera stream plus every active screen-share stream that a
  UserPane pins; they are ordered by their users' join order (camera before screen for one user);
- the layout whose pane count equals that number is used; if none does, the smallest layout with
  more panes; with more streams than the largest layout has panes, the largest;
- pinned UserPanes win their pane when the pinned stream is present; the other panes, in pane-id
  order, take the remaining streams in join order (so with too many users the earliest are shown);
- a *reserved* pin (its user is in the channel without the pinned video, and the pane has a
  placeholder image) keeps its pane empty, so the placeholder shows there, and counts as a stream
  for the layout choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rtc_mpu.layouts import Layout, Pane
from rtc_mpu.spec.streams import SourceType, StreamKey
from rtc_mpu.spec.task import UserPane


@dataclass(frozen=True)
class PaneAssignment:
    """One pane of the chosen layout and the stream drawn in it (None: the pane shows background)."""

    pane: Pane
    stream: StreamKey | None


@dataclass(frozen=True)
class LayoutChoice:
    """The layout in use and its pane assignments, in pane-id order."""

    layout: Layout
    assignments: tuple[PaneAssignment, ...]


def eligible_streams(streams: Sequence[StreamKey], user_panes: Sequence[UserPane]) -> list[StreamKey]:
    """The streams that count for layout selection, keeping the given (join) order.

    Cameras always count; a screen share counts only when a UserPane pins it.
    """
    pinned = {StreamKey(p.user_id, p.source_type) for p in user_panes}
    return [s for s in streams if s.source_type is SourceType.CAMERA or s in pinned]


def pick_layout(layouts: Sequence[Layout], stream_count: int) -> Layout:
    """The layout for ``stream_count`` video streams (see the module rules).

    Raises:
        ValueError: if ``layouts`` is empty.
    """
    if not layouts:
        raise ValueError("a task with video needs at least one layout")
    by_count = sorted(layouts, key=lambda layout: layout.pane_count)
    for layout in by_count:
        if layout.pane_count >= stream_count:
            return layout
    return by_count[-1]


def choose_layout(
    layouts: Sequence[Layout],
    streams: Sequence[StreamKey],
    user_panes: Sequence[UserPane],
    reserved: Sequence[UserPane] = (),
) -> LayoutChoice:
    """Choose the layout and fill its panes.

    Args:
        layouts: the task's layouts (distinct pane counts).
        streams: the active video streams, ordered by the join order of their users.
        user_panes: the task's pinned panes.
        reserved: pins whose panes stay empty (see the module rules).

    Raises:
        ValueError: if ``layouts`` is empty.
    """
    candidates = eligible_streams(streams, user_panes)
    layout = pick_layout(layouts, len(candidates) + len(reserved))
    pane_ids = {pane.id for pane in layout.panes}
    present = set(candidates)
    chosen: dict[int, StreamKey] = {}
    for pin in user_panes:
        key = StreamKey(pin.user_id, pin.source_type)
        if pin.pane_id in pane_ids and key in present:
            chosen[pin.pane_id] = key
    kept_empty = {pin.pane_id for pin in reserved if pin.pane_id not in chosen}
    placed = set(chosen.values())
    waiting = iter(s for s in candidates if s not in placed and s.source_type is SourceType.CAMERA)
    assignments = []
    for pane in layout.panes:
        stream = chosen.get(pane.id)
        if stream is None and pane.id not in kept_empty:
            stream = next(waiting, None)
        assignments.append(PaneAssignment(pane, stream))
    return LayoutChoice(layout, tuple(assignments))
