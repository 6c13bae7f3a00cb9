"""Muxers: each output's container, fed the packets the task's one encoder made.

A :class:`ContainerMuxer` copies the encoder's streams (codec parameters and extradata,
:class:`~rtc_mpu.mixer.output.encoder.StreamTemplates`) into its own container and writes
:class:`~rtc_mpu.mixer.output.encoder.EncodedPacket` s into it: FLV over RTMP(S), a file (fragmented
MP4, FLV, MKV) or HLS (FFmpeg's ``hls`` muxer: MPEG-TS segments and a playlist; :class:`HlsMuxer`
continues a playlist an earlier run left in the folder).
:class:`RollingFileMuxer` starts a new file at the first keyframe past a duration and reports each
finished file. Everything here blocks (network and disk I/O): run it on an output's own thread
(:class:`rtc_mpu.mixer.output.outputs.Output`).

Which containers: :func:`rtmp_output`, :func:`file_output` and :func:`hls_output` make the
:class:`OutputTarget` of each kind; only their formats ever reach FFmpeg (RTMP URLs are validated by
:func:`rtc_mpu.mixer.output.sinks.sink_target`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import av
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream

from rtc_mpu.layouts import SpecError
from rtc_mpu.mixer.output.avio import AvioError, MemorySink, UrlWriter
from rtc_mpu.mixer.output.encoder import EncodedPacket, StreamTemplates
from rtc_mpu.mixer.output.sinks import (
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    SinkError,
    SinkTarget,
    link_error,
    open_link,
    open_sink,
    sink_error,
    sink_target,
    start_sink,
)

#: Container options of a crash-safe MP4: fragments at each keyframe, a moov without samples first,
#: so a file cut short (the process killed, the disk full) is readable up to its last fragment.
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
#: The ``hls_flags`` that make FFmpeg's ``hls`` muxer continue the playlist at its path (see
#: :func:`continued_hls`).
HLS_APPEND_LIST = "append_list"
#: The tag that ends a playlist (written by the ``hls`` muxer's trailer): players stop reloading it.
HLS_ENDLIST = "#EXT-X-ENDLIST"


@dataclass(frozen=True)
class OutputTarget:
    """Where one output goes and how it is muxed.

    Attributes:
        sink: the validated destination (URL or absolute path, container format, redacted name).
        options: FFmpeg container options (``movflags``, ``hls_time``...).
        max_file_seconds: a recording rolls over to a new file at the first keyframe at least this
            many seconds (of media) after its file began; None: one file.
        kind: ``rtmp``, ``file`` or ``hls``.
    """

    sink: SinkTarget
    options: dict[str, str] = field(default_factory=dict)
    max_file_seconds: float | None = None
    kind: str = "file"

    @property
    def display(self) -> str:
        """The redacted URL or path (safe to log)."""
        return self.sink.display


def rtmp_output(url: str) -> OutputTarget:
    """An RTMP(S) push (FLV).

    Raises:
        SpecError: the URL is not a valid ``rtmp(s)://`` push URL.
    """
    sink = sink_target(url)
    if not sink.is_network:
        raise SpecError("InvalidStreamURL.Malformed", "an RTMP output needs an rtmp:// or rtmps:// URL")
    return OutputTarget(sink, {"flvflags": "no_duration_filesize"}, kind="rtmp")


def file_output(path: str, max_file_seconds: float | None = None) -> OutputTarget:
    """A recording at ``path`` (already rendered by the caller): .mp4 (fragmented, crash-safe), .flv,
    .mkv, .ts or .mov (by extension).

    Raises:
        SpecError: a URL, or an unknown extension.
        ValueError: ``max_file_seconds`` is not positive.
    """
    if max_file_seconds is not None and max_file_seconds <= 0:
        raise ValueError("max_file_seconds must be positive")
    sink = sink_target(path)
    if sink.is_network:
        raise SpecError("InvalidParameter", "a recording needs a file path")
    options = dict(FRAGMENTED_MP4) if sink.container_format == "mp4" else {}
    if sink.container_format == "flv":
        options["flvflags"] = "no_duration_filesize"
    return OutputTarget(sink, options, max_file_seconds, kind="file")


def hls_output(
    playlist: str, *, segment_seconds: float = 2.0, list_size: int = 5, event: bool = False
) -> OutputTarget:
    """HLS: ``playlist`` (``.m3u8``) and its MPEG-TS segments beside it.

    Args:
        segment_seconds: target segment length (``hls_time``; segments cut at keyframes, so a multiple
            of the 2 s GOP in practice).
        list_size: segments in a sliding-window playlist (older ones are deleted); ignored for ``event``.
        event: an event playlist (``hls_playlist_type=event``): every segment kept and listed.

    Raises:
        SpecError: the path does not end in ``.m3u8`` or looks like a URL.
        ValueError: a non-positive segment length or list size.
    """
    if segment_seconds <= 0 or list_size <= 0:
        raise ValueError("segment_seconds and list_size must be positive")
    if playlist.lower().startswith(("file:", "http:", "https:")) or ":" in Path(playlist).name:
        raise SpecError("InvalidParameter", "an HLS output needs a local .m3u8 path")
    if Path(playlist).suffix.lower() != ".m3u8":
        raise SpecError("InvalidParameter", "an HLS playlist must end in .m3u8")
    absolute = str(Path(playlist).resolve())
    options = {"hls_time": f"{segment_seconds:g}"}
    if event:
        options["hls_playlist_type"] = "event"
    else:
        options |= {"hls_list_size": str(list_size), "hls_flags": "delete_segments"}
    return OutputTarget(SinkTarget(absolute, "hls", playlist, False), options, kind="hls")


class Muxer(Protocol):
    """What an output writes through: :class:`ContainerMuxer`, :class:`RollingFileMuxer` or a test's
    stand-in. Every method blocks and raises :class:`SinkError` when the endpoint fails."""

    def write(self, packet: EncodedPacket) -> int:
        """Mux one packet; the payload bytes written."""

    def close(self) -> None:
        """Write the trailer and close the sink."""

    def abort(self) -> None:
        """Close the sink without caring for the trailer, ignoring errors. Idempotent."""

    def interrupt(self) -> None:
        """Make a write or close blocked on the network return soon (safe from any thread)."""


#: Makes and opens a muxer (connects, creates the file, writes the header); blocking.
MuxerFactory = Callable[[OutputTarget, StreamTemplates], Muxer]


class ContainerMuxer:
    """One container written with the encoder's packets. The constructor connects (RTMP) or creates the
    file and writes the header.

    A network target is muxed into memory and carried by a :class:`~rtc_mpu.mixer.output.avio.UrlWriter`
    (see :mod:`rtc_mpu.mixer.output.sinks`): connecting, every write and closing release the GIL and
    end within their timeouts.

    Args:
        target: the output.
        templates: the encoder's streams.
        url: a file path that replaces the target's (a rolled recording's next file).
        open_timeout_seconds: how long connecting to a network target may take.
        write_timeout_seconds: how long one write (or closing) to a network target may block.

    Raises:
        SinkError: from the constructor (cannot connect or create) and from every write and close.
    """

    def __init__(
        self,
        target: OutputTarget,
        templates: StreamTemplates,
        url: str | None = None,
        *,
        open_timeout_seconds: float = DEFAULT_OPEN_TIMEOUT,
        write_timeout_seconds: float = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self.target = target
        sink = target.sink if url is None else SinkTarget(url, target.sink.container_format, url, False)
        self._sink = sink
        self._closed = False
        self._write_timeout_seconds = write_timeout_seconds
        self._link: UrlWriter | None = None
        self._memory: MemorySink | None = None
        if sink.is_network:
            self._link = open_link(sink, open_timeout_seconds)
            self._memory = MemorySink()
        try:
            self._container: OutputContainer = open_sink(sink, target.options, self._memory)
        except SinkError:
            self._abort_link()
            raise
        try:
            self._video: Stream | None = (
                self._container.add_stream_from_template(templates.video) if templates.video else None
            )
            self._audio: Stream | None = (
                self._container.add_stream_from_template(templates.audio) if templates.audio else None
            )
        except (av.error.FFmpegError, OSError) as exc:
            self._close_quietly()
            raise sink_error(exc, sink, "cannot open output") from None
        try:
            start_sink(self._container, sink)
            self._send("write")
        except SinkError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self._container.close()
        self._abort_link()

    def _abort_link(self) -> None:
        if self._link is not None:
            self._link.abort()

    def _send(self, what: str) -> None:
        """Write what the container muxed into memory to the network link (no-op for a file)."""
        if self._link is None or self._memory is None:
            return
        data = self._memory.take()
        if not data:
            return
        try:
            self._link.write(data, timeout_seconds=self._write_timeout_seconds)
        except AvioError as exc:
            raise self._failed(what, exc) from None

    def write(self, packet: EncodedPacket) -> int:
        """Mux ``packet`` (a copy: FFmpeg takes the data it writes).

        Raises:
            SinkError: the write failed (network, disk full, read-only...).
        """
        stream = self._video if packet.video else self._audio
        if stream is None:
            return 0
        out = Packet(packet.data)
        out.stream = stream
        out.time_base = packet.time_base
        out.pts, out.dts = packet.pts, packet.dts
        out.duration = packet.duration
        out.is_keyframe = packet.keyframe
        try:
            self._container.mux_one(out)
        except (av.error.FFmpegError, OSError) as exc:
            raise self._failed("write", exc) from None
        self._send("write")
        return len(packet.data)

    def close(self) -> None:
        """Write the trailer and close. Idempotent.

        Raises:
            SinkError: the final writes failed (the container is closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError) as exc:
                raise self._failed("closing", exc) from None
            self._send("closing")
            if self._link is not None:
                try:
                    self._link.close(timeout_seconds=self._write_timeout_seconds)
                except AvioError as exc:
                    raise self._failed("closing", exc) from None
        finally:
            self._abort_link()

    def abort(self) -> None:
        """Close without caring for the trailer, ignoring every error. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_quietly()

    def interrupt(self) -> None:
        """Make a network write or close blocked on another thread return within about 100 ms."""
        if self._link is not None:
            self._link.interrupt()

    def _failed(self, what: str, exc: Exception) -> SinkError:
        if isinstance(exc, AvioError):  # its message says what failed ("writing timed out after 5 s")
            return link_error(exc, self._sink, opening=False)
        return SinkError(
            f"{what} failed: {getattr(exc, 'strerror', None) or exc}",
            self._sink.display,
            push_url_problem=False,
        )


def continued_hls(target: OutputTarget) -> OutputTarget:
    """An :func:`hls_output` target that continues the playlist an earlier run left at its path (a task
    resumed on another worker, a pipeline rebuilt, an output reopened after a failure); ``target``
    itself when there is none, so a new playlist starts at segment 0 with no discontinuity.

    With ``hls_flags=append_list`` FFmpeg reads the playlist when it opens: its segments stay listed
    (a sliding window still deletes the oldest as new ones come; an event playlist keeps them all),
    the new segments are numbered on from the last one (``index<n>.ts`` and
    ``#EXT-X-MEDIA-SEQUENCE`` never go back, so players keep going), and the first new segment is
    preceded by ``#EXT-X-DISCONTINUITY`` (the timestamps restart). ``discont_start`` is not used: it
    adds a discontinuity before the first listed segment at every open, and those pile up on a
    playlist resumed several times. An existing :data:`HLS_ENDLIST` is dropped as the playlist is
    rewritten.
    """
    if target.kind != "hls" or not os.path.isfile(target.sink.url):
        return target
    flags = [f for f in target.options.get("hls_flags", "").split("+") if f]
    if HLS_APPEND_LIST not in flags:
        flags.append(HLS_APPEND_LIST)
    return replace(target, options=target.options | {"hls_flags": "+".join(flags)})


def drop_endlist(playlist: str | os.PathLike[str]) -> bool:
    """Remove the :data:`HLS_ENDLIST` a closed ``hls`` muxer wrote at the end of ``playlist``, so that
    players keep reloading a playlist whose task goes on elsewhere. The playlist is replaced
    atomically (a temporary file beside it, then a rename): a reader sees the old or the new one.

    Returns:
        True when a tag was removed; False when there was none or no playlist.

    Raises:
        OSError: the playlist cannot be rewritten.
    """
    path = Path(playlist)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[-1].strip() != HLS_ENDLIST:
        return False
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return True


class HlsMuxer(ContainerMuxer):
    """An HLS output: FFmpeg's ``hls`` muxer continuing the playlist already at the target's path, if
    any (:func:`continued_hls`). Closing writes the trailer, which finalizes the playlist with
    :data:`HLS_ENDLIST`, unless ``final()`` says the output goes on elsewhere: then the tag is removed
    again (:func:`drop_endlist`) and the next run continues the playlist.

    Args:
        target: an :func:`hls_output` target.
        templates: the encoder's streams.
        final: asked when the muxer closes: True (the default) when this output ends for good.

    Raises:
        SinkError: as :class:`ContainerMuxer`, and closing when the playlist cannot be rewritten.
    """

    def __init__(
        self, target: OutputTarget, templates: StreamTemplates, final: Callable[[], bool] = lambda: True
    ) -> None:
        super().__init__(continued_hls(target), templates)
        self._final = final

    def close(self) -> None:
        """Write the trailer and close; remove :data:`HLS_ENDLIST` when the output is not final.

        Raises:
            SinkError: the final writes failed.
        """
        super().close()
        if self._final():
            return
        try:
            drop_endlist(self.target.sink.url)
        except OSError as exc:
            raise SinkError(
                f"cannot reopen the playlist: {exc.strerror or exc}",
                self.target.display,
                push_url_problem=False,
            ) from None


@dataclass(frozen=True)
class FinishedFile:
    """A recording file that is complete (rolled over or closed).

    Attributes:
        path: its absolute path.
        size: bytes on disk.
        duration: seconds of media in it (first packet to the end of the last).
        started_at: wall-clock time (UTC) its first packet was written.
        start_seconds: media-clock time of its first packet, in seconds.
        packets: packets written into it.
    """

    path: str
    size: int
    duration: float
    started_at: datetime
    start_seconds: float
    packets: int


#: Called with each finished file, on the output's thread (must not block).
FileListener = Callable[[FinishedFile], None]


def numbered_path(path: str, index: int) -> str:
    """The path of file ``index`` of a rolled recording: ``path`` itself for 0, else
    ``stem-0001.ext``, ``stem-0002.ext``..."""
    if index == 0:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{index:04d}{p.suffix}"))


class RollingFileMuxer:
    """A recording cut into files of at most about ``target.max_file_seconds`` each: the file rolls over
    before the first video keyframe (any packet when there is no video) at least that long after its
    first packet, so every file starts with a keyframe and no packet is lost or written twice. The
    first file is created by the constructor.

    Args:
        target: a file target (``max_file_seconds`` None: one file, reported when closed).
        templates: the encoder's streams.
        listener: told of each finished file (on the writing thread), or None.
        path_for: the path of file n (default :func:`numbered_path`).
        make: opens one file's muxer (tests).

    Raises:
        SinkError: a file cannot be created or written.
    """

    def __init__(
        self,
        target: OutputTarget,
        templates: StreamTemplates,
        listener: FileListener | None = None,
        path_for: Callable[[str, int], str] = numbered_path,
        make: Callable[[OutputTarget, StreamTemplates, str], Muxer] = ContainerMuxer,
    ) -> None:
        self.target = target
        self._templates = templates
        self._listener = listener
        self._path_for = path_for
        self._make = make
        self._index = 0
        self._has_video = templates.video is not None
        self._path = path_for(target.sink.url, 0)
        self._muxer: Muxer = make(target, templates, self._path)
        self._first: float | None = None
        self._end = 0.0
        self._packets = 0
        self._started_at = datetime.now(UTC)
        #: Every file finished so far.
        self.finished: list[FinishedFile] = []

    def write(self, packet: EncodedPacket) -> int:
        """Write ``packet``, first rolling over to a new file if it is where the current one ends.

        Raises:
            SinkError: the write, closing the old file or creating the new one failed.
        """
        limit = self.target.max_file_seconds
        boundary = packet.keyframe and (packet.video or not self._has_video)
        if (
            limit is not None
            and boundary
            and self._first is not None
            and packet.seconds - self._first >= limit
        ):
            self._finish()
            self._index += 1
            self._path = self._path_for(self.target.sink.url, self._index)
            self._muxer = self._make(self.target, self._templates, self._path)
            self._first, self._packets, self._started_at = None, 0, datetime.now(UTC)
        if self._first is None:
            self._first = packet.seconds
        written = self._muxer.write(packet)
        self._packets += 1
        self._end = max(self._end, packet.seconds + float(packet.duration * packet.time_base))
        return written

    def _finish(self) -> None:
        self._muxer.close()
        try:
            size = os.path.getsize(self._path)
        except OSError:
            size = 0
        done = FinishedFile(
            path=self._path,
            size=size,
            duration=max(0.0, self._end - (self._first or 0.0)),
            started_at=self._started_at,
            start_seconds=self._first or 0.0,
            packets=self._packets,
        )
        self.finished.append(done)
        if self._listener is not None:
            self._listener(done)

    def close(self) -> None:
        """Close the current file (trailer written) and report it.

        Raises:
            SinkError: the final writes failed.
        """
        self._finish()

    def abort(self) -> None:
        """Close the current file without caring for the trailer (a fragmented MP4 stays readable)."""
        self._muxer.abort()

    def interrupt(self) -> None:
        """Files do not block on a network; nothing to interrupt."""


def open_muxer(
    target: OutputTarget, templates: StreamTemplates, listener: FileListener | None = None
) -> Muxer:
    """The muxer of ``target``: a :class:`RollingFileMuxer` for a recording, else a
    :class:`ContainerMuxer`. Blocking (connects, creates files).

    Raises:
        SinkError: it cannot be opened.
    """
    if target.kind == "file":
        return RollingFileMuxer(target, templates, listener)
    if target.kind == "hls":
        return HlsMuxer(target, templates)
    return ContainerMuxer(target, templates)


def legacy_output(sink: SinkTarget) -> OutputTarget:
    """The output of a single ``--output`` target as it always was: FLV over RTMP, or a file in the
    container of its extension (MP4 not fragmented, so its duration is in the header)."""
    if sink.is_network:
        return OutputTarget(sink, {"flvflags": "no_duration_filesize"}, kind="rtmp")
    options = {"flvflags": "no_duration_filesize"} if sink.container_format == "flv" else {}
    return OutputTarget(sink, options, kind="file")
