"""Snapshots: a JPEG of the composite every N seconds of media time, for dashboards and thumbnails.

Snapshots are taken from the composited picture itself (decoded YUV420p, before the encoder), never
from a second encoder. :meth:`SnapshotTaker.offer` is called with each composited frame on the
pipeline's job thread (see ``frame_listeners`` of :class:`rtc_mpu.mixer.pipeline.Pipeline`); when a
snapshot is due it only copies the frame's three planes (about 0.1 ms for 1280x720) and returns. The
conversion to RGB, the scaling, the JPEG encoding and the callback run on the taker's own single
worker thread, so the compositing thread's critical path never waits for them. If the previous
snapshot is still being made when the next is due, the new one is skipped and counted.

Colour: the compositor's frames are BT.601 limited range ("TV", Y 16..235), tagged so
(:mod:`rtc_mpu.mixer.video.color`). PyAV's ``to_image``/``reformat`` convert with the frame's
colorspace tag but, unless told, leave the source range to libswscale's guess (limited for YUV); so
the conversion here passes the source matrix and range explicitly, read from the frame's tags, with
BT.601 limited range assumed for untagged frames. JPEG (JFIF) stores full-range BT.601 YCbCr, which
Pillow converts to and from RGB; so a pane of RGB (255, 0, 0) decodes as about (255, 0, 0).
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.video.plane import VideoPlane
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from PIL import Image

log = logging.getLogger(__name__)

#: Seconds of media time between snapshots unless told otherwise.
DEFAULT_INTERVAL_SECONDS = 5.0
#: JPEG quality (Pillow's 1-95 scale) unless told otherwise.
DEFAULT_QUALITY = 80
#: Widest snapshot in pixels unless told otherwise; wider composites are scaled down, keeping aspect.
DEFAULT_MAX_WIDTH = 640
#: Seconds :meth:`SnapshotTaker.close` waits for a snapshot being made unless told otherwise.
DEFAULT_CLOSE_TIMEOUT = 2.0

#: Frame colorspace tags (FFmpeg's AVColorSpace codes) to the YUV matrix libswscale should use.
_MATRICES: dict[int, Colorspace] = {
    1: Colorspace.ITU709,  # BT709
    4: Colorspace.FCC,  # FCC
    5: Colorspace.ITU601,  # BT470BG (BT.601 625 lines; what Colorspace.ITU601 tags a frame with)
    6: Colorspace.ITU601,  # SMPTE170M (BT.601 525 lines)
    7: Colorspace.SMPTE240M,  # SMPTE240M
    9: Colorspace.BT2020,  # BT2020_NCL
}
#: Scaling and conversion flags: area averaging for downscaling, exact rounding and full chroma
#: interpolation (without the last two a pure red pane decodes as about 252 instead of 254-255).
_FLAGS = Interpolation.AREA | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass(frozen=True)
class Snapshot:
    """One JPEG of the composite.

    Attributes:
        jpeg: the JPEG (JFIF, baseline, 4:2:0) file's bytes.
        width, height: the JPEG's size in pixels (the composite's, or scaled down to the taker's
            ``max_width`` keeping the aspect ratio).
        pts_seconds: the frame's media-clock time in seconds (its pts times its time_base).
        taken_at_unix_seconds: wall-clock time (seconds since the Unix epoch) when the frame was
            offered, i.e. just after it was composited.
    """

    jpeg: bytes
    width: int
    height: int
    pts_seconds: float
    taken_at_unix_seconds: float


@dataclass
class SnapshotStats:
    """What a :class:`SnapshotTaker` did; counters only grow.

    Attributes:
        offered: frames offered.
        taken: snapshots made (converted and encoded) and handed to the callback.
        skipped_busy: snapshots due while the previous one was still being made, so not taken.
        failed: snapshots whose conversion or JPEG encoding raised (logged).
        callback_errors: calls of ``on_snapshot`` that raised (logged, never propagated).
    """

    offered: int = 0
    taken: int = 0
    skipped_busy: int = 0
    failed: int = 0
    callback_errors: int = 0


def _source_colors(frame: av.VideoFrame) -> tuple[Colorspace, ColorRange]:
    """The YUV matrix and range of ``frame`` from its tags; BT.601 and limited range when untagged."""
    matrix = _MATRICES.get(int(frame.colorspace), Colorspace.ITU601)
    full = int(frame.color_range) == int(ColorRange.JPEG)
    return matrix, ColorRange.JPEG if full else ColorRange.MPEG


def scaled_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    """The snapshot size of a ``width`` x ``height`` picture: unchanged if ``max_width`` is None or
    not smaller than ``width``, else ``max_width`` wide and the height scaled to keep the aspect
    ratio (rounded, at least 1)."""
    if max_width is None or width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def frame_to_jpeg(
    frame: av.VideoFrame, *, quality: int = DEFAULT_QUALITY, max_width: int | None = DEFAULT_MAX_WIDTH
) -> tuple[bytes, int, int]:
    """Convert a planar YUV frame to a JPEG, scaling it down to at most ``max_width`` pixels wide.

    The YUV to RGB conversion uses the frame's colorspace and range tags (BT.601 limited range when
    untagged), see the module docstring. May take a few ms for a 1280x720 frame: call it off the
    compositing thread. ``frame`` is only read (libswscale's wrapper changes its tags for the
    duration of the call and restores them, so no other thread may use it meanwhile).

    Args:
        frame: the picture (e.g. the compositor's yuv420p output).
        quality: JPEG quality, 1 (smallest) to 95 (best).
        max_width: widest output in pixels, or None for the frame's size.

    Returns:
        ``(jpeg bytes, width, height)``.

    Raises:
        ValueError: the frame cannot be converted (an unsupported format) or Pillow refuses it.
    """
    width, height = scaled_size(frame.width, frame.height, max_width)
    matrix, color_range = _source_colors(frame)
    rgb = frame.reformat(
        width=width,
        height=height,
        format="rgb24",
        src_colorspace=matrix,
        src_color_range=color_range,
        dst_color_range=ColorRange.JPEG,
        interpolation=_FLAGS,
        threads=1,
    ).to_ndarray()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue(), width, height


def _rows(plane: VideoPlane) -> npt.NDArray[np.uint8]:
    """A ``(rows, line size in bytes)`` uint8 view of a plane, padding included."""
    rows: npt.NDArray[np.uint8] = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(
        plane.height, plane.line_size
    )
    return rows


def copy_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A new frame of the same size and format holding a copy of ``frame``'s pixels and colour tags
    (a memory copy: about 0.1 ms for a 1280x720 yuv420p frame), pts unset."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        width = min(source.line_size, target.line_size)
        np.copyto(_rows(target)[:, :width], _rows(source)[:, :width])
    copy.colorspace = frame.colorspace
    copy.color_range = frame.color_range
    return copy


class SnapshotTaker:
    """Makes a JPEG of the composite every ``interval_seconds`` of media time and hands it to a callback.

    Offer it every composited frame with :meth:`offer` (from one thread: the pipeline's job thread).
    The first frame offered is snapshotted; after that, the first frame whose media time is at least
    ``interval_seconds`` after the previous due snapshot's frame (taken or skipped). Frames at 30 fps
    for 12 s with the default interval give snapshots at 0, 5 and 10 s. A media time earlier than the
    previous snapshot's (a new clock) restarts the schedule.

    ``on_snapshot`` is called on the taker's worker thread, one snapshot at a time, in media-time
    order; it may block (a slow callback makes later due snapshots skipped and counted in
    ``stats.skipped_busy``) and may raise (logged and counted in ``stats.callback_errors``; never
    propagated to the caller of :meth:`offer`).

    Args:
        on_snapshot: receives each :class:`Snapshot`.
        interval_seconds: media-clock seconds between snapshots; > 0.
        quality: JPEG quality, 1 to 95.
        max_width: widest snapshot in pixels (wider composites are scaled down keeping the aspect
            ratio), > 0, or None for the composite's own size.

    Raises:
        ValueError: ``interval_seconds`` not a finite number > 0, ``quality`` outside 1..95, or
            ``max_width`` < 1.
    """

    def __init__(
        self,
        on_snapshot: Callable[[Snapshot], None],
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        quality: int = DEFAULT_QUALITY,
        max_width: int | None = DEFAULT_MAX_WIDTH,
    ) -> None:
        if not (interval_seconds > 0 and interval_seconds != float("inf")):
            raise ValueError(f"interval_seconds must be a finite number > 0, got {interval_seconds!r}")
        if not 1 <= quality <= 95:
            raise ValueError(f"quality must be 1..95, got {quality!r}")
        if max_width is not None and max_width < 1:
            raise ValueError(f"max_width must be >= 1 or None, got {max_width!r}")
        self.on_snapshot = on_snapshot
        self.interval_seconds = interval_seconds
        self.quality = quality
        self.max_width = max_width
        self.stats = SnapshotStats()
        #: The interval as an exact fraction, so 0.1 s at 30 fps is exactly 3 frames.
        self._interval = Fraction(interval_seconds).limit_denominator(1_000_000)
        self._last_due: Fraction | None = None
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")

    def due(self, pts: int, time_base: Fraction) -> bool:
        """Whether a frame at ``pts`` (in ``time_base`` seconds) is due for a snapshot; no side effects."""
        now = pts * time_base
        last = self._last_due
        return last is None or now < last or now >= last + self._interval

    def offer(self, frame: av.VideoFrame, pts: int, time_base: Fraction) -> None:
        """Offer one composited frame; if a snapshot is due, copy its pixels and make the JPEG on the
        worker thread. Returns at once; never raises for a due snapshot's problems (they are logged).

        ``frame`` is not kept: it may be reused or handed to the encoder as soon as this returns.

        Args:
            frame: a planar 8-bit YUV picture (the compositor's yuv420p output), only read.
            pts: the frame's media-clock time in ``time_base`` units (the pipeline's frame index).
            time_base: seconds per pts unit (``1/fps``).
        """
        with self._lock:
            if self._closed:
                return
            self.stats.offered += 1
            if not self.due(pts, time_base):
                return
            self._last_due = pts * time_base
            if self._pending is not None and not self._pending.done():
                self.stats.skipped_busy += 1
                return
            wall = time.time()
            seconds = float(pts * time_base)
            try:
                copy = copy_frame(frame)
            except Exception:  # an unusual frame (hardware, odd layout): logged, never raised
                self.stats.failed += 1
                log.exception("snapshot at %.3f s failed", seconds)
                return
            self._pending = self._executor.submit(self._make, copy, seconds, wall)

    def _make(self, frame: av.VideoFrame, pts_seconds: float, wall: float) -> None:
        """On the worker thread: convert, encode and deliver one snapshot."""
        try:
            jpeg, width, height = frame_to_jpeg(frame, quality=self.quality, max_width=self.max_width)
        except Exception:
            self.stats.failed += 1
            log.exception("snapshot at %.3f s failed", pts_seconds)
            return
        self.stats.taken += 1
        try:
            self.on_snapshot(Snapshot(jpeg, width, height, pts_seconds, wall))
        except Exception:
            self.stats.callback_errors += 1
            log.exception("snapshot callback failed (snapshot at %.3f s)", pts_seconds)

    def flush(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds (None: no limit) for the snapshot being made, callback included.

        Returns:
            True if none is being made any more; False if the wait timed out.
        """
        with self._lock:
            pending = self._pending
        if pending is None:
            return True
        done, _ = concurrent.futures.wait([pending], timeout=timeout)
        return bool(done)

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Stop taking snapshots: wait up to ``timeout`` seconds for the one being made (its callback
        included), then shut the worker down. Later offers are ignored. Idempotent.

        Returns:
            True if no snapshot was still being made when it returned; False if the wait timed out
            (the worker thread then finishes that snapshot in the background).
        """
        with self._lock:
            self._closed = True
        finished = self.flush(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        return finished

    def __enter__(self) -> SnapshotTaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LatestJpegFile:
    """An ``on_snapshot`` that keeps the newest snapshot in one file, replaced atomically.

    Each JPEG is written to a hidden temporary file in the same directory, then renamed over
    ``directory / name``, so a reader (a dashboard, a web server) sees the previous or the new
    picture, never half of one.

    Args:
        directory: an existing, writable directory.
        name: the file's name in it.

    Raises:
        OSError: (when called) the file cannot be written; :class:`SnapshotTaker` logs and counts it.
    """

    def __init__(self, directory: Path, name: str = "latest.jpg") -> None:
        self.path = directory / name
        self._temporary = directory / f".{name}.tmp"

    def __call__(self, snapshot: Snapshot) -> None:
        self._temporary.write_bytes(snapshot.jpeg)
        os.replace(self._temporary, self.path)
