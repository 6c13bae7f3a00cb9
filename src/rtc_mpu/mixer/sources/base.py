"""The ``Source`` interface: how the pipeline learns who is in a channel and receives their media.

A source (the Janus VideoRoom channel, local files, synthetic test users) reports users in join
order, their video streams (:class:`rtc_mpu.spec.streams.StreamKey`, screen shares following the
convention of :mod:`rtc_mpu.spec.streams`) and their decoded frames to a :class:`FrameReceiver` (the
pipeline).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Protocol

import av

from rtc_mpu.spec.streams import StreamKey


class FrameReceiver(Protocol):
    """What a source calls, always from the event loop's thread."""

    def on_user(self, user_id: str, present: bool) -> None:
        """A user joined (``present``) or left the channel. Join order is the order of these calls."""

    def on_video_stream(self, stream: StreamKey, active: bool) -> None:
        """A video stream was published (``active``) or unpublished; an active stream takes a pane."""

    def on_video_frame(self, stream: StreamKey, frame: av.VideoFrame | None) -> None:
        """The stream's newest decoded picture (any size or pixel format).

        ``None`` blanks it: its pane shows the background while the stream keeps its pane (an input
        that ended or broke).
        """

    def on_audio_frame(self, user_id: str, frame: av.AudioFrame) -> None:
        """Decoded audio of a user, any sample format, rate or layout, in arrival order."""


class Source(abc.ABC):
    """A channel's participants, feeding a :class:`FrameReceiver`.

    Live sources (``live = True``) push frames as they arrive; the pipeline then prebuffers audio.
    Paced sources (``live = False``, e.g. files rendered offline) deliver media only when
    :meth:`advance_to` is awaited, which makes an offline render exact and repeatable.
    """

    live: bool = True

    @abc.abstractmethod
    async def start(self, receiver: FrameReceiver) -> None:
        """Begin delivering to ``receiver``.

        Raises:
            SourceError: when the channel cannot be reached at all.
        """

    @property
    def finished(self) -> bool:
        """True once the source will deliver nothing more (every file ended); a channel never is."""
        return False

    async def advance_to(self, media_time: float) -> None:
        """Deliver everything whose presentation time is before ``media_time`` (seconds from start).

        Live sources ignore this.
        """
        return None

    def want(self, video: frozenset[StreamKey] | None, audio: frozenset[str] | None) -> None:
        """Which media the receiver currently needs (issue 18): the video streams it draws and the
        users it hears; None means everything. Called on the event loop, only when the sets change.

        A source may stop receiving and decoding what is not named (a stream or user it announces
        later included, until a later call names it) and resume it when it is named again. A video
        stream it stops is blanked (``on_video_frame(stream, None)``) and stays so until its first
        new picture; it stays published (``on_video_stream``) and keeps counting for the layout.
        This default receives everything and ignores the call.
        """
        return None

    def draw_sizes(self, sizes: Mapping[StreamKey, tuple[int, int]]) -> None:
        """The size each shown video stream is drawn at (issue 18): ``(width, height)`` of its pane in
        canvas pixels (the largest, if a stream has several panes); streams not named are not shown.
        Called on the event loop, only when the sizes change.

        A source that can receive a stream at several sizes (simulcast) may pick the smallest that
        still fills the pane; the pictures it delivers may change size at any frame. This default
        ignores the call.
        """
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release every resource. Safe to call twice."""


class SourceError(RuntimeError):
    """A source failed as a whole (the channel server is unreachable, no input can be opened)."""
