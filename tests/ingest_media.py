"""Test media for ingests: an MP4 whose pictures carry their frame number (burned in, readable after
encoding) and whose audio is a tone, and an HTTP server with byte ranges (as nginx or a CDN serves
files; FFmpeg seeks in an MP4 with ``Range`` requests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np

from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.publisher import read_capture_time, stamp_capture_time


def write_numbered_clip(
    path: Path,
    *,
    seconds: float = 40.0,
    fps: int = 30,
    width: int = 640,
    height: int = 360,
    tone_hz: float = 440.0,
    gop_frames: int = 30,
) -> Path:
    """An MP4 (H.264 with a keyframe every ``gop_frames``, AAC, moov first) whose frame ``n`` shows
    ``n`` in its bottom rows (:func:`read_frame_number`) over a grey picture, with a ``tone_hz`` sine."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        video = container.add_stream(
            "libx264", rate=fps, options={"preset": "ultrafast", "crf": "20", "g": str(gop_frames), "bf": "0"}
        )
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="mono")
        base = np.full((height, width, 3), 128, np.uint8)
        for index in range(round(seconds * fps)):
            picture = base.copy()
            stamp_capture_time(picture, index)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        total = round(seconds * 48000)
        for start in range(0, total, 1024):
            count = min(1024, total - start)
            t = np.arange(start, start + count) / 48000
            samples = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None, :]
            block = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            block.sample_rate, block.pts, block.time_base = 48000, start, Fraction(1, 48000)
            container.mux(audio.encode(block))
        container.mux(audio.encode(None))
    return path


def read_frame_number(picture: Any) -> int:
    """The frame number burned in by :func:`write_numbered_clip`, from an RGB ``(H, W, 3)`` picture
    of the clip's size."""
    return read_capture_time(picture)


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder with single byte ranges (``Range: bytes=a-b``), quietly."""

    def send_head(self) -> Any:
        header = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not header.startswith("bytes=") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first_text, _, last_text = header[6:].partition("-")
        first = int(first_text or 0)
        last = min(int(last_text), size - 1) if last_text else size - 1
        if first >= size:
            self.send_error(416)
            return None
        handle = path.open("rb")
        handle.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self._remaining = last - first + 1
        return handle

    def copyfile(self, source: Any, outputfile: Any) -> None:
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            super().copyfile(source, outputfile)
            return
        while remaining > 0:
            chunk = source.read(min(65536, remaining))
            if not chunk:
                return
            try:
                outputfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            remaining -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``folder`` with byte ranges, until the block ends."""

    def handler(*args: Any) -> RangeHandler:
        return RangeHandler(*args, directory=str(folder))

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(5)
