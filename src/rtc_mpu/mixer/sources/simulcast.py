"""Which simulcast substream of a stream to receive, given the size its pane is drawn at (issue 18).

A simulcasting publisher sends its camera at up to three sizes (*substreams* 0, 1, 2, smallest to
largest, in Janus' VideoRoom numbering); Janus relays one of them per subscriber stream, chosen with
a subscriber ``configure`` (``streams: [{"mid", "substream"}]``; by default the largest). Receiving
the smallest substream that still fills the pane spares decoding (and scaling down) pictures that
are up to 16 times larger than what is drawn.

Sizes are learned, not assumed: each substream's size is what was decoded while Janus said it was
relaying that substream; a substream not seen yet is estimated from the nearest one seen, each
smaller substream being half as wide and high (browsers' default ``scaleResolutionDownBy`` of 4, 2
and 1 for three encodings: WebRTC's simulcast defaults in libwebrtc and Firefox, and janus.js').
Nothing is chosen before a size is known: Janus' default (the largest) stays.

This module is plain logic (no I/O, no clock of its own): :class:`LayerSelector` is told the times.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Substreams Janus' VideoRoom relays (0-2: ``substream`` must be 0, 1 or 2 in a subscriber
#: ``configure``, janus_videoroom.c); 2 is the largest and Janus' default.
SUBSTREAMS = 3
TOP_SUBSTREAM = SUBSTREAMS - 1
#: Tolerance when comparing a substream's size with its pane's, as a fraction of the pane: a substream
#: up to 10 % smaller than the pane still counts as filling it (a slight upscale, rather than decoding
#: a picture 4 times larger because a browser rounded a 640x360 layer to 636x358 or an odd pane edge).
SIZE_MARGIN = 0.1
#: Seconds between two substream switches of one stream (hysteresis: a layout that flips, a size
#: estimate that moves, never make Janus switch, and the publisher send a keyframe, more often).
SWITCH_HOLD_SECONDS = 3.0
#: Seconds after Janus says it switched substreams before decoded sizes are taken as the new
#: substream's (pictures of the old one still being decoded; Janus switches at the new one's keyframe).
SETTLE_SECONDS = 0.5

Size = tuple[int, int]


def estimated_sizes(observed: Mapping[int, Size]) -> dict[int, Size]:
    """Each substream's (width, height) in pixels: as ``observed`` (decoded sizes by substream), or
    estimated from the nearest observed one, a substream lower being half as wide and high. Empty when
    nothing was observed."""
    if not observed:
        return {}
    sizes: dict[int, Size] = {}
    for substream in range(SUBSTREAMS):
        if substream in observed:
            sizes[substream] = observed[substream]
            continue
        nearest = min(observed, key=lambda s: (abs(s - substream), -s))
        width, height = observed[nearest]
        scale = 2.0 ** (substream - nearest)
        sizes[substream] = (round(width * scale), round(height * scale))
    return sizes


def choose_substream(pane: Size, observed: Mapping[int, Size], margin: float = SIZE_MARGIN) -> int | None:
    """The smallest substream whose picture fills a pane of ``pane`` (width, height in pixels) within
    ``margin`` (a fraction of the pane), or the largest when none does; None when no size is known.

    Args:
        pane: the pane's size in canvas pixels.
        observed: decoded sizes by substream (0 smallest .. :data:`TOP_SUBSTREAM`).
        margin: how much smaller than the pane a substream may be and still count as filling it.
    """
    sizes = estimated_sizes(observed)
    if not sizes:
        return None
    width, height = pane
    for substream in range(SUBSTREAMS):
        layer_width, layer_height = sizes[substream]
        if layer_width >= width * (1 - margin) and layer_height >= height * (1 - margin):
            return substream
    return TOP_SUBSTREAM


class LayerSelector:
    """The substream choice of one simulcast video stream, with hysteresis.

    Fed the pane size (:meth:`set_pane`), Janus' substream events (:meth:`on_substream`) and decoded
    picture sizes (:meth:`on_frame`); :meth:`decide` says which substream to ask Janus for now, if any.
    Times are seconds on any one monotonic clock (the event loop's).

    Args:
        hold_seconds: least time between two requests (:data:`SWITCH_HOLD_SECONDS`).
        margin: see :func:`choose_substream`.
        settle_seconds: see :data:`SETTLE_SECONDS`.
    """

    def __init__(
        self,
        *,
        hold_seconds: float = SWITCH_HOLD_SECONDS,
        margin: float = SIZE_MARGIN,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.hold_seconds = hold_seconds
        self.margin = margin
        self.settle_seconds = settle_seconds
        #: Decoded (width, height) by substream.
        self.observed: dict[int, Size] = {}
        #: The pane's size, None while the stream is not shown (then nothing changes).
        self.pane: Size | None = None
        #: The substream Janus says it relays (None: not said yet), and since when.
        self.current: int | None = None
        self.current_since = 0.0
        #: The substream asked for (None: never asked, Janus' default, the largest), and when.
        self.target: int | None = None
        self.target_at: float | None = None

    def set_pane(self, pane: Size | None) -> None:
        """The stream is drawn at ``pane`` (width, height in pixels), or not shown (None)."""
        self.pane = pane

    def on_substream(self, substream: int, now: float) -> None:
        """Janus relays ``substream`` from ``now`` on (its subscriber event ``"substream"``)."""
        if substream != self.current:
            self.current, self.current_since = substream, now

    def on_frame(self, width: int, height: int, now: float) -> bool:
        """A picture of ``width`` x ``height`` was decoded at ``now``; True when that taught a new size
        (then :meth:`decide` may answer differently)."""
        substream = self.current
        if substream is None or now - self.current_since < self.settle_seconds:
            return False
        if self.observed.get(substream) == (width, height):
            return False
        self.observed[substream] = (width, height)
        return True

    def wanted(self) -> int | None:
        """The substream the pane calls for now (no hysteresis), None when unknown or not shown."""
        if self.pane is None:
            return None
        return choose_substream(self.pane, self.observed, self.margin)

    def pending(self) -> bool:
        """Whether the pane calls for another substream than the one asked for (Janus' default, the
        largest, when none was)."""
        choice = self.wanted()
        return choice is not None and choice != (TOP_SUBSTREAM if self.target is None else self.target)

    def decide(self, now: float) -> int | None:
        """The substream to ask Janus for at ``now``, or None: nothing to change, or a change must wait
        (then :meth:`hold_until` says until when). The caller reports a request with :meth:`asked`."""
        if not self.pending() or self.hold_until() > now:
            return None
        return self.wanted()

    def hold_until(self) -> float:
        """When the next switch may be asked for (seconds; 0 when it may at once)."""
        return 0.0 if self.target_at is None else self.target_at + self.hold_seconds

    def asked(self, substream: int, now: float) -> None:
        """``substream`` was asked for at ``now``."""
        self.target, self.target_at = substream, now
