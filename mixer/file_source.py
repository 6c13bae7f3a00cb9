"""A paced :class:`Source` of local media files: each file stands in for one user, in join order.

Used by ``mpu render`` (offline previews and renders, or a live push from files) and by the tests.
Files are decoded on demand by :meth:`FileSource.advance_to`, so an offline render is exact. Each
user's times start at 0 (the file's first frame). A file that cannot be opened, is corrupt or has
ended leaves its user in the channel with a blank pane (background) and no audio; the mix goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
from av.container import InputContainer

from mixer.source import FrameReceiver, Source, StreamKey

log = logging.getLogger(__name__)

#: Consecutive undecodable packets after which an input is considered broken and ends.
MAX_DECODE_ERRORS = 25

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
    """One file's decoder: yields frames with their time (seconds from the file's first frame)."""

    def __init__(self, path: str, loop: bool) -> None:
        self.path = path
        self.loop = loop
        self.has_video = False
        self.ended = False
        self._container: InputContainer | None = None
        self._frames: Iterator[tuple[float, Decoded]] | None = None
        self.pending: tuple[float, Decoded] | None = None

    def open(self) -> None:
        """Open and probe the file. Raises av.error.FFmpegError or OSError if it cannot be read."""
        self._frames = self._generate()
        self.pending = next(self._frames, None)
        if self.pending is None:
            self.ended = True

    def _open_container(self) -> InputContainer:
        container = av.open(self.path, mode="r", timeout=5.0)
        for stream in container.streams.video:
            stream.thread_type = "AUTO"
        self.has_video = bool(container.streams.video)
        return container

    def _generate(self) -> Iterator[tuple[float, Decoded]]:
        offset = 0.0
        while True:
            self._container = container = self._open_container()
            streams = [*container.streams.video[:1], *container.streams.audio[:1]]
            if not streams:
                container.close()
                return
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
                        last_end = max(last_end, t + frame.samples / frame.sample_rate)
                    else:
                        rate = packet.stream.average_rate or 30
                        last_end = max(last_end, t + 1 / float(rate))
                    yield offset + t, frame
            container.close()
            if not self.loop or last_end <= 0:
                return
            offset += last_end

    def take_until(self, media_time: float) -> Iterator[Decoded]:
        """Yield every frame with time before ``media_time`` (seconds); sets ``ended`` at the end."""
        assert self._frames is not None
        while self.pending is not None and self.pending[0] < media_time:
            yield self.pending[1]
            try:
                self.pending = next(self._frames, None)
            except (av.error.FFmpegError, OSError) as exc:
                log.warning("%s: input broke: %s", self.path, exc)
                self.pending = None
        if self.pending is None:
            self.ended = True

    def close(self) -> None:
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
                source.ended = True
                source.has_video = True
            if source.has_video:
                receiver.on_video_stream(StreamKey(user_id), True)

    @property
    def finished(self) -> bool:
        """True when every file has ended (never with ``loop``)."""
        return all(source.ended and source.pending is None for _, source in self._inputs)

    async def advance_to(self, media_time: float) -> None:
        """Deliver each file's audio before ``media_time`` and its latest picture at that time."""
        receiver = self._receiver
        if receiver is None:
            return
        for user_id, source in self._inputs:
            if source.ended and source.pending is None:
                continue
            latest: av.VideoFrame | None = None
            for frame in source.take_until(media_time):
                if isinstance(frame, av.AudioFrame):
                    receiver.on_audio_frame(user_id, frame)
                else:
                    latest = frame
            if latest is not None:
                receiver.on_video_frame(StreamKey(user_id), latest)
            if source.ended:
                log.info("user %s: %s ended", user_id, source.path)
                receiver.on_video_frame(StreamKey(user_id), None)
                source.close()

    async def close(self) -> None:
        """Close every file."""
        for _, source in self._inputs:
            source.close()
