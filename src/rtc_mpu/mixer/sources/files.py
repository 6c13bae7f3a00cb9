"""A paced :class:`Source` of local media files: each file stands in for one user, in join order.

Used by ``mpu render`` (offline previews and renders, or a live push from files) and by the tests.
Files are decoded on demand by :meth:`FileSource.advance_to`, so an offline render is exact. Each
user's times start at 0 (the file's first frame). At media time ``t`` a user's pane shows the
latest picture stamped at or before ``t``, and the audio starting before ``t`` has been delivered,
whatever order the decoder returned them in. A file that cannot be opened or is corrupt, and one
that has ended (once the media clock passes the end of its last picture), leaves its user in the
channel with a blank pane (background) and no audio; the mix goes on.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
from av.container import InputContainer

from rtc_mpu.mixer.sources.base import FrameReceiver, Source
from rtc_mpu.spec.streams import StreamKey

log = logging.getLogger(__name__)

#: Consecutive undecodable packets after which an input is considered broken and ends.
MAX_DECODE_ERRORS = 25
#: Slack (seconds) when comparing a time stamp with a clock tick: covers float rounding and
#: millisecond time stamps (FLV), far below any frame interval.
TIME_EPSILON = 1e-3
#: Most seconds an input is decoded ahead of the media clock while a frame of one kind is still awaited
#: (a stream that stopped early, a badly interleaved file): bounds the decoded frames held in memory.
MAX_LOOKAHEAD = 1.0
#: Picture duration (as frames per second) assumed when a video stream does not state its frame rate.
DEFAULT_FPS = 30

Decoded = av.VideoFrame | av.AudioFrame


def user_ids_for(paths: Sequence[str]) -> list[str]:
    """User ids for files: the file name without extension, made unique with ``-2``, ``-3`` suffixes."""
    ids: list[str] = []
    for path in paths:
        base = Path(path).stem or "user"
        name, n = base, 2
        while name in ids:
            name, n = f"{base}-{n}", n + 1
        ids.append(name)
    return ids


class _FileInput:
    """One file's decoder, read ahead of the media clock into one queue per kind (audio, video).

    Times are seconds from the file's first frame (plus the lengths of earlier passes when looping).
    Decoders return audio and video in their own order (a threaded or reordering video decoder hands
    pictures out a few frames late), so :meth:`take` keeps decoding until each kind the file has shows
    a frame beyond the requested time, then delivers by time stamp, not by decode order.
    """

    def __init__(self, path: str, loop: bool) -> None:
        self.path = path
        self.loop = loop
        self.has_video = False
        self.has_audio = False
        #: Every frame was delivered and the media clock reached the end of the last picture (pane blanked).
        self.ended = False
        self._container: InputContainer | None = None
        self._frames: Iterator[tuple[float, float, Decoded]] | None = None
        self._eof = False  # the decoder is exhausted (end of file, or broken)
        self._video_end = 0.0  # media time at which the latest decoded picture stops being current
        self._audio: deque[tuple[float, av.AudioFrame]] = deque()
        self._video: deque[tuple[float, av.VideoFrame]] = deque()

    def open(self) -> None:
        """Open and probe the file, decoding its first frame.

        Raises:
            av.error.FFmpegError, OSError: the file cannot be read.
        """
        self._frames = self._generate()
        self._read()

    @property
    def drained(self) -> bool:
        """The decoder is exhausted and every decoded frame has been delivered."""
        return self._eof and not self._audio and not self._video

    @property
    def video_end(self) -> float:
        """Media time (seconds) at which the last picture decoded so far ends (0 without pictures)."""
        return self._video_end

    def _open_container(self) -> InputContainer:
        container = av.open(self.path, mode="r", timeout=5.0)
        for stream in container.streams.video:
            # Slice threads only: frame threading costs more CPU and delays every picture by a frame per
            # thread (measured on 720p H.264: about 10% less CPU and 18% less wall time with SLICE).
            stream.thread_type = "SLICE"
        self.has_video = bool(container.streams.video)
        self.has_audio = bool(container.streams.audio)
        return container

    def _generate(self) -> Iterator[tuple[float, float, Decoded]]:
        """Yield ``(time, end, frame)`` in decode order; times in seconds from the first frame."""
        offset = 0.0
        while True:
            self._container = container = self._open_container()
            streams = [*container.streams.video[:1], *container.streams.audio[:1]]
            if not streams:
                container.close()
                return
            picture_seconds = {
                stream.index: 1 / float(stream.average_rate or DEFAULT_FPS)
                for stream in container.streams.video
            }
            origin: float | None = None
            last_end = 0.0
            errors = 0
            for packet in container.demux(streams):
                try:
                    frames = packet.decode()
                    errors = 0
                except av.error.FFmpegError as exc:
                    errors += 1
                    log.warning("%s: undecodable packet: %s", self.path, exc)
                    if errors >= MAX_DECODE_ERRORS:
                        container.close()
                        return
                    continue
                for frame in frames:
                    if not isinstance(frame, (av.VideoFrame, av.AudioFrame)) or frame.time is None:
                        continue
                    if origin is None:
                        origin = frame.time
                    t = frame.time - origin
                    if isinstance(frame, av.AudioFrame):
                        end = t + frame.samples / frame.sample_rate
                    else:
                        end = t + picture_seconds.get(packet.stream.index, 1 / DEFAULT_FPS)
                    last_end = max(last_end, end)
                    yield offset + t, offset + end, frame
            container.close()
            if not self.loop or last_end <= 0:
                return
            offset += last_end

    def _read(self) -> None:
        """Decode the next frame into its queue, or mark the end. Raises what the decoder raises."""
        assert self._frames is not None
        item = next(self._frames, None)
        if item is None:
            self._eof = True
            return
        t, end, frame = item
        if isinstance(frame, av.AudioFrame):
            self._audio.append((t, frame))
        else:
            self._video.append((t, frame))
            self._video_end = end

    def _fill(self, media_time: float) -> None:
        """Decode until each kind the file has holds a frame after ``media_time`` (or the input ends).

        Gives up early once any queue reaches :data:`MAX_LOOKAHEAD` seconds past ``media_time``: one
        kind has stopped (a stream shorter than the other, undecodable) and memory must stay bounded.
        """
        horizon = media_time + TIME_EPSILON
        audio, video = self._audio, self._video
        while not self._eof:
            need_audio = self.has_audio and (not audio or audio[-1][0] < media_time)
            need_video = self.has_video and (not video or video[-1][0] <= horizon)
            if not (need_audio or need_video):
                return
            newest = max(audio[-1][0] if audio else -math.inf, video[-1][0] if video else -math.inf)
            if newest > media_time + MAX_LOOKAHEAD:
                return
            try:
                self._read()
            except (av.error.FFmpegError, OSError) as exc:
                log.warning("%s: input broke: %s", self.path, exc)
                self._eof = True

    def take(self, media_time: float) -> tuple[list[av.AudioFrame], av.VideoFrame | None]:
        """The audio frames starting before ``media_time`` (seconds) and the latest picture at that time.

        A picture counts as current from its time stamp on (with :data:`TIME_EPSILON` of slack).
        """
        self._fill(media_time)
        audio: list[av.AudioFrame] = []
        while self._audio and self._audio[0][0] < media_time:
            audio.append(self._audio.popleft()[1])
        picture: av.VideoFrame | None = None
        horizon = media_time + TIME_EPSILON
        while self._video and self._video[0][0] <= horizon:
            picture = self._video.popleft()[1]
        return audio, picture

    def close(self) -> None:
        self._eof = True
        self._audio.clear()
        self._video.clear()
        if self._container is not None:
            self._container.close()
            self._container = None


class FileSource(Source):
    """Files as channel users, in join order.

    Args:
        paths: media files (any format FFmpeg reads), one per user, in join order.
        user_ids: user ids, defaults to :func:`user_ids_for`.
        loop: start a file again when it ends (for endless previews and demos).

    Raises:
        ValueError: ``user_ids`` has another length than ``paths``.
    """

    live = False

    def __init__(
        self, paths: Sequence[str], user_ids: Sequence[str] | None = None, loop: bool = False
    ) -> None:
        ids = list(user_ids) if user_ids is not None else user_ids_for(paths)
        if len(ids) != len(paths):
            raise ValueError("one user id per file")
        self._inputs = [(uid, _FileInput(os.fspath(p), loop)) for uid, p in zip(ids, paths, strict=True)]
        self._receiver: FrameReceiver | None = None

    async def start(self, receiver: FrameReceiver) -> None:
        """Join every user (in argument order) and open the files; unreadable ones show background."""
        self._receiver = receiver
        for user_id, source in self._inputs:
            receiver.on_user(user_id, True)
            try:
                source.open()
            except (av.error.FFmpegError, OSError) as exc:
                log.warning("user %s: cannot read %s: %s", user_id, source.path, exc)
                source.close()
                source.ended = True
                source.has_video = True
            if source.has_video:
                receiver.on_video_stream(StreamKey(user_id), True)

    @property
    def finished(self) -> bool:
        """True when every file has ended (never with ``loop``)."""
        return all(source.ended for _, source in self._inputs)

    async def advance_to(self, media_time: float) -> None:
        """Deliver each file's audio starting before ``media_time`` and its latest picture at that time.

        A file whose frames have all been delivered ends once ``media_time`` reaches the end of its
        last picture: its pane is blanked and the file closed.
        """
        receiver = self._receiver
        if receiver is None:
            return
        for user_id, source in self._inputs:
            if source.ended:
                continue
            audio, picture = source.take(media_time)
            for frame in audio:
                receiver.on_audio_frame(user_id, frame)
            if picture is not None:
                receiver.on_video_frame(StreamKey(user_id), picture)
            if source.drained and media_time + TIME_EPSILON >= source.video_end:
                log.info("user %s: %s ended", user_id, source.path)
                source.ended = True
                source.close()
                if source.has_video:
                    receiver.on_video_frame(StreamKey(user_id), None)

    async def close(self) -> None:
        """Close every file."""
        for _, source in self._inputs:
            source.close()
