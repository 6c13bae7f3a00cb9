"""What a task draws besides its panes, and whom it mixes: overlays (Backgrounds, Watermarks, pane
Images and Texts, ClockWidgets) and the subscription lists (SubSpec*/UnsubSpec*), validated from the
task's snake_case parameters (:class:`rtc_mpu.workers.model.TaskParams` dicts, the vendor's MPU API,
2018-01-11).

Coordinates are normalized: Backgrounds, Watermarks and ClockWidgets to the canvas, pane Images and
Texts to their pane. ZOrder is one scale for panes and overlays: everything is drawn by ascending
ZOrder; at equal ZOrder, backgrounds first, then panes, then pane images and texts, then
watermarks, then clocks.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rtc_mpu.layouts import FieldPath, SpecError
from rtc_mpu.spec.colors import MAX_COLOR
from rtc_mpu.spec.streams import SourceType, StreamKey
from rtc_mpu.spec.text_rules import CharRule, char_problem

#: The value of SubSpecAudioUsers that means every user (the vendor's MPU API, 2018-01-11).
ALL_STREAMS = "allStream"
#: Most overlays of one kind (per task, or per pane for pane images and texts).
MAX_OVERLAYS = 16
#: The ``FontType`` ids of texts and clocks, 0..5 (the vendor's MPU API, 2018-01-11 names six but not their
#: typefaces; :data:`rtc_mpu.mixer.overlays.text.FONT_FILES` maps each to a font file).
FONT_TYPES: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
#: Font sizes accepted, in output pixels (the vendor's ``FontSize`` range).
MIN_FONT_SIZE, MAX_FONT_SIZE = 1, 72
#: Widest text border and box padding accepted, in output pixels (``BorderWidth``, ``BoxBorderWidth``).
MAX_BORDER_WIDTH = 16


class Display(enum.IntEnum):
    """When an image shows (``Display``)."""

    NEVER = 0
    ALWAYS = 1
    #: Only while its pane shows no video: a placeholder for a camera that is off.
    PLACEHOLDER = 2


class Layer(enum.IntEnum):
    """Drawing order of overlay kinds at equal ZOrder."""

    BACKGROUND = 0
    PANE = 1
    PANE_OVERLAY = 2
    WATERMARK = 3
    CLOCK = 4


@dataclass(frozen=True)
class Box:
    """A normalized rectangle: corner (x, y) and size, as fractions of the canvas or pane."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class ImageOverlay:
    """An image (Backgrounds.N, Watermarks.N, UserPanes.N.Images.M).

    Attributes:
        where: the wire name of the parameter, e.g. ``Watermarks.1`` (for the task status).
        url: http(s) URL of the image.
        box: where it goes, normalized to the canvas (or to its pane for pane images).
        zorder: drawing order (see the module docstring).
        display: when it shows.
        alpha: opacity 0 (transparent) .. 1 (opaque), multiplied with the image's own alpha.
        layer: its kind, for the order at equal ZOrder.
    """

    where: str
    url: str
    box: Box
    zorder: int
    display: Display
    alpha: float
    layer: Layer


@dataclass(frozen=True)
class TextStyle:
    """How a text or clock is drawn (hashable: a key of the mixer's text cache).

    The options mirror FFmpeg's drawtext filter, which the vendor's options match one for one.

    Attributes:
        font_type: one of :data:`FONT_TYPES`.
        font_size: em size in pixels of the output canvas, :data:`MIN_FONT_SIZE`..:data:`MAX_FONT_SIZE`.
        font_color: the vendor's colour int ``R + G * 256 + B * 65536`` (:mod:`rtc_mpu.spec.colors`).
        alpha: opacity of the text and its border, 0 (transparent) .. 1 (opaque); as in FFmpeg's
            drawtext, the box is not affected.
        border_color: colour int of the outline around the glyphs.
        border_width: outline width in pixels, 0 for none (Pillow's ``stroke_width``).
        box: draw a filled rectangle of ``box_color`` behind the text.
        box_color: colour int of the box (opaque).
        box_border_width: padding of the box around the text, in pixels (FFmpeg's ``boxborderw``).

    Raises:
        ValueError: a field out of its range.
    """

    font_type: int = 0
    font_size: int = 24
    font_color: int = MAX_COLOR
    alpha: float = 1.0
    border_color: int = 0
    border_width: int = 0
    box: bool = False
    box_color: int = 0
    box_border_width: int = 0

    def __post_init__(self) -> None:
        if self.font_type not in FONT_TYPES:
            raise ValueError(f"font_type {self.font_type} is not one of {list(FONT_TYPES)}")
        if not MIN_FONT_SIZE <= self.font_size <= MAX_FONT_SIZE:
            raise ValueError(f"font_size {self.font_size} is outside {MIN_FONT_SIZE}..{MAX_FONT_SIZE}")
        for name in ("font_color", "border_color", "box_color"):
            if not 0 <= getattr(self, name) <= MAX_COLOR:
                raise ValueError(f"{name} {getattr(self, name)} is outside 0..0xFFFFFF")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha {self.alpha} is outside 0..1")
        if self.border_width < 0 or self.box_border_width < 0:
            raise ValueError("border_width and box_border_width must not be negative")


@dataclass(frozen=True)
class TextOverlay:
    """A text (UserPanes.N.Texts.M) or a clock (ClockWidgets.N, ``text`` empty: the wall clock).

    Attributes:
        where: the wire name, e.g. ``UserPanes.1.Texts.1``.
        text: the text (empty for a clock).
        x, y: top-left corner, normalized to the pane (texts) or the canvas (clocks).
        zorder: drawing order.
        style: font, size in output pixels, colours, border and box.
        layer: PANE_OVERLAY for texts, CLOCK for clocks.
        time_zone: IANA time zone of a clock (None: the worker's local time).
    """

    where: str
    text: str
    x: float
    y: float
    zorder: int
    style: TextStyle
    layer: Layer
    time_zone: str | None = None


@dataclass(frozen=True)
class PaneOverlays:
    """The images and texts of one UserPane, drawn in the pane with that PaneId."""

    pane_id: int
    images: tuple[ImageOverlay, ...] = ()
    texts: tuple[TextOverlay, ...] = ()

    @property
    def has_placeholder(self) -> bool:
        """Whether an image of this pane shows only while the pane has no video."""
        return any(image.display is Display.PLACEHOLDER for image in self.images)


@dataclass(frozen=True)
class Overlays:
    """Everything a task draws besides its panes."""

    backgrounds: tuple[ImageOverlay, ...] = ()
    watermarks: tuple[ImageOverlay, ...] = ()
    clocks: tuple[TextOverlay, ...] = ()
    panes: tuple[PaneOverlays, ...] = ()

    def images(self) -> list[ImageOverlay]:
        """Every image overlay (to fetch)."""
        result = [*self.backgrounds, *self.watermarks]
        for pane in self.panes:
            result += pane.images
        return result

    def for_pane(self, pane_id: int) -> PaneOverlays | None:
        """The overlays of pane ``pane_id``, if any."""
        for pane in self.panes:
            if pane.pane_id == pane_id:
                return pane
        return None

    @property
    def empty(self) -> bool:
        """Nothing to draw."""
        return not (self.backgrounds or self.watermarks or self.clocks or self.panes)


@dataclass(frozen=True)
class Subscriptions:
    """Whose streams a task mixes (SubSpecUsers, SubSpecAudioUsers, SubSpecCameraUsers,
    SubSpecShareScreenUsers and the UnsubSpec* lists). An empty Sub list means everyone; an Unsub
    list removes users from what the Sub lists allow. The worker still receives every stream of the
    channel; these lists choose what is drawn, heard and counted for the layout."""

    users: frozenset[str] = field(default_factory=frozenset)
    audio_users: frozenset[str] = field(default_factory=frozenset)
    camera_users: frozenset[str] = field(default_factory=frozenset)
    share_screen_users: frozenset[str] = field(default_factory=frozenset)
    unsub_audio_users: frozenset[str] = field(default_factory=frozenset)
    unsub_camera_users: frozenset[str] = field(default_factory=frozenset)
    unsub_share_screen_users: frozenset[str] = field(default_factory=frozenset)

    def wants_user(self, user_id: str) -> bool:
        """Whether the user is subscribed at all."""
        return not self.users or user_id in self.users

    def wants_audio(self, user_id: str) -> bool:
        """Whether the user's audio is mixed."""
        allowed = not self.audio_users or ALL_STREAMS in self.audio_users or user_id in self.audio_users
        return self.wants_user(user_id) and allowed and user_id not in self.unsub_audio_users

    def wants_video(self, stream: StreamKey) -> bool:
        """Whether the stream (camera or screen share) is drawn and counted."""
        if not self.wants_user(stream.user_id):
            return False
        if stream.source_type is SourceType.SHARE_SCREEN:
            chosen, removed = self.share_screen_users, self.unsub_share_screen_users
        else:
            chosen, removed = self.camera_users, self.unsub_camera_users
        return (not chosen or stream.user_id in chosen) and stream.user_id not in removed

    @property
    def everyone(self) -> bool:
        """No list narrows anything."""
        return self == Subscriptions()


def _number(
    data: Mapping[str, Any], name: str, default: float, path: FieldPath, low: float, high: float
) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError("InvalidParameter", "must be a number", (*path, name))
    if not low <= value <= high:
        raise SpecError("InvalidParameter", f"{value} is outside {low}..{high}", (*path, name))
    return float(value)


def _integer(data: Mapping[str, Any], name: str, default: int, path: FieldPath, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError("InvalidParameter", f"must be an integer in {low}..{high}", (*path, name))
    return value


def _box(data: Mapping[str, Any], path: FieldPath) -> Box:
    box = Box(
        _number(data, "x", 0.0, path, 0.0, 1.0),
        _number(data, "y", 0.0, path, 0.0, 1.0),
        _number(data, "width", 1.0, path, 0.0, 1.0),
        _number(data, "height", 1.0, path, 0.0, 1.0),
    )
    if box.width <= 0 or box.height <= 0:
        raise SpecError("InvalidParameter", "Width and Height must be > 0", path)
    return box


def image_overlay(data: Mapping[str, Any], where: str, layer: Layer, path: FieldPath = ()) -> ImageOverlay:
    """Validate an image overlay dict (url, x, y, width, height, z_order, display, alpha); ``where``
    names it in status reports (``Backgrounds.1``), ``path`` is its request field
    (``("backgrounds", 0)``).

    Raises:
        SpecError: InvalidParameter with the field at fault under ``path``.
    """
    url = data.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")) or len(url) > 2048:
        raise SpecError("InvalidParameter", "must be an http(s) URL", (*path, "url"))
    highest = 2 if layer is Layer.PANE_OVERLAY else 1
    return ImageOverlay(
        where=where,
        url=url,
        box=_box(data, path),
        zorder=_integer(data, "z_order", 0, path, 0, 100),
        display=Display(_integer(data, "display", 1, path, 0, highest)),
        alpha=_number(data, "alpha", 1.0, path, 0.0, 1.0),
        layer=layer,
    )


def text_style(data: Mapping[str, Any], path: FieldPath = ()) -> TextStyle:
    """Validate the font and box fields of a text or clock dict (request field ``path``) into a
    :class:`TextStyle`.

    Raises:
        SpecError: InvalidParameter with the field at fault under ``path``.
    """
    return TextStyle(
        font_type=_integer(data, "font_type", 0, path, min(FONT_TYPES), max(FONT_TYPES)),
        font_size=_integer(data, "font_size", 24, path, MIN_FONT_SIZE, MAX_FONT_SIZE),
        font_color=_integer(data, "font_color", MAX_COLOR, path, 0, MAX_COLOR),
        alpha=_number(data, "alpha", 1.0, path, 0.0, 1.0),
        border_color=_integer(data, "border_color", 0, path, 0, MAX_COLOR),
        border_width=_integer(data, "border_width", 0, path, 0, MAX_BORDER_WIDTH),
        box=bool(_integer(data, "box", 0, path, 0, 1)),
        box_color=_integer(data, "box_color", 0, path, 0, MAX_COLOR),
        box_border_width=_integer(data, "box_border_width", 0, path, 0, MAX_BORDER_WIDTH),
    )


def text_overlay(
    data: Mapping[str, Any], where: str, layer: Layer, time_zone: str | None = None, path: FieldPath = ()
) -> TextOverlay:
    """Validate a text dict (text, x, y, z_order and the style fields) or a clock dict (no text);
    ``where`` names it in status reports, ``path`` is its request field.

    Raises:
        SpecError: InvalidParameter with the field at fault under ``path`` (also an unknown time zone,
            or a character :mod:`rtc_mpu.spec.text_rules` refuses in texts).
    """
    text = data.get("text", "")
    if not isinstance(text, str) or len(text) > 256 or (layer is not Layer.CLOCK and not text):
        raise SpecError("InvalidParameter", "must be 1..256 characters", (*path, "text"))
    problem = char_problem(text, CharRule.TEXT)
    if problem is not None:
        raise SpecError("InvalidParameter", problem, (*path, "text"))
    if time_zone is not None:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SpecError(
                "InvalidParameter", f"unknown time zone {time_zone!r}", (*path, "time_zone")
            ) from None
    return TextOverlay(
        where=where,
        text=text,
        x=_number(data, "x", 0.0, path, 0.0, 1.0),
        y=_number(data, "y", 0.0, path, 0.0, 1.0),
        zorder=_integer(data, "z_order", 0, path, 0, 100),
        style=text_style(data, path),
        layer=layer,
        time_zone=time_zone,
    )


def _items(values: Any, path: FieldPath) -> list[Mapping[str, Any]]:
    if values is None:
        return []
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) or len(values) > MAX_OVERLAYS:
        raise SpecError("InvalidParameter", f"at most {MAX_OVERLAYS} items", path)
    if not all(isinstance(item, Mapping) for item in values):
        raise SpecError("InvalidParameter", "items must be objects", path)
    return list(values)


def build_overlays(
    *,
    backgrounds: Iterable[Mapping[str, Any]] = (),
    watermarks: Iterable[Mapping[str, Any]] = (),
    clock_widgets: Iterable[Mapping[str, Any]] = (),
    user_panes: Iterable[Mapping[str, Any]] = (),
    clock_time_zone: str | None = None,
) -> Overlays:
    """Validate a task's overlay parameters (snake_case dicts as :class:`rtc_mpu.workers.model.TaskParams`
    holds them) into :class:`Overlays`; images with Display 0 are dropped here.

    Args:
        clock_time_zone: IANA time zone of the clocks that name none in their ``time_zone`` (our
            extension of ClockWidgets; None: the worker's local time).

    Raises:
        SpecError: InvalidParameter naming the first invalid item.
    """
    # ``where`` (1-based, the vendor's names) names an overlay in status reports; the request field of
    # an error is its path (0-based, snake_case).
    backs = [
        image_overlay(d, f"Backgrounds.{i + 1}", Layer.BACKGROUND, ("backgrounds", i))
        for i, d in enumerate(_items(list(backgrounds), ("backgrounds",)))
    ]
    marks = [
        image_overlay(d, f"Watermarks.{i + 1}", Layer.WATERMARK, ("watermarks", i))
        for i, d in enumerate(_items(list(watermarks), ("watermarks",)))
    ]
    clocks = [
        text_overlay(
            d,
            f"ClockWidgets.{i + 1}",
            Layer.CLOCK,
            d.get("time_zone") or clock_time_zone,
            ("clock_widgets", i),
        )
        for i, d in enumerate(_items(list(clock_widgets), ("clock_widgets",)))
    ]
    panes = []
    for n, pane in enumerate(_items(list(user_panes), ("user_panes",))):
        images = [
            image_overlay(
                d, f"UserPanes.{n + 1}.Images.{i + 1}", Layer.PANE_OVERLAY, ("user_panes", n, "images", i)
            )
            for i, d in enumerate(_items(pane.get("images"), ("user_panes", n, "images")))
        ]
        texts = [
            text_overlay(
                d, f"UserPanes.{n + 1}.Texts.{i + 1}", Layer.PANE_OVERLAY, path=("user_panes", n, "texts", i)
            )
            for i, d in enumerate(_items(pane.get("texts"), ("user_panes", n, "texts")))
        ]
        shown = tuple(image for image in images if image.display is not Display.NEVER)
        if shown or texts:
            pane_id = pane.get("pane_id")
            if isinstance(pane_id, bool) or not isinstance(pane_id, int):
                raise SpecError("InvalidParameter", "must be an integer", ("user_panes", n, "pane_id"))
            panes.append(PaneOverlays(pane_id, shown, tuple(texts)))
    visible = [image for image in backs + marks if image.display is not Display.NEVER]
    return Overlays(
        backgrounds=tuple(i for i in visible if i.layer is Layer.BACKGROUND),
        watermarks=tuple(i for i in visible if i.layer is Layer.WATERMARK),
        clocks=tuple(clocks),
        panes=tuple(panes),
    )


def build_subscriptions(**lists: Iterable[str]) -> Subscriptions:
    """Subscriptions from the snake_case lists (``sub_spec_users``, ``sub_spec_audio_users``,
    ``sub_spec_camera_users``, ``sub_spec_share_screen_users``, ``unsub_spec_audio_users``,
    ``unsub_spec_camera_users``, ``unsub_spec_share_screen_users``).

    Raises:
        SpecError: an unknown list name, a value that is not a string, or a user id with a character
            :mod:`rtc_mpu.spec.text_rules` refuses.
    """
    names = {
        "sub_spec_users": "users",
        "sub_spec_audio_users": "audio_users",
        "sub_spec_camera_users": "camera_users",
        "sub_spec_share_screen_users": "share_screen_users",
        "unsub_spec_audio_users": "unsub_audio_users",
        "unsub_spec_camera_users": "unsub_camera_users",
        "unsub_spec_share_screen_users": "unsub_share_screen_users",
    }
    values: dict[str, frozenset[str]] = {}
    for name, users in lists.items():
        if name not in names:
            raise SpecError("InvalidParameter", f"unknown subscription list {name}", (name,))
        users = list(users)
        for index, user in enumerate(users):
            if not isinstance(user, str) or not user:
                raise SpecError("InvalidParameter", "user ids must be non-empty strings", (name, index))
            problem = char_problem(user)
            if problem is not None:
                raise SpecError("InvalidParameter", problem, (name, index))
        values[names[name]] = frozenset(users)
    return Subscriptions(**values)
