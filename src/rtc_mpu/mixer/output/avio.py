"""Network output I/O through FFmpeg's AVIO API, called with the GIL released and with deadlines.

Why: PyAV opens an output's AVIO (``avio_open``: TCP connect, the RTMP handshake, ``connect`` and
``publish``) and writes its header and trailer while holding the GIL (PyAV issue #2400), without an
interrupt callback. Opening an RTMP output therefore stalls every thread of the mix for the whole
handshake, and a server that accepts the TCP connection but never answers freezes the process.

So a network output is split in two: PyAV muxes FLV into memory (:class:`MemorySink`, no I/O), and
:class:`UrlWriter` carries those bytes to the server through the *same* libavformat PyAV loaded,
called with :mod:`ctypes` (which releases the GIL for the duration of every foreign call). FFmpeg's
``rtmp`` protocol takes an FLV byte stream and sends it as RTMP messages, exactly as when the muxer
writes to it directly. Every blocking call runs under a deadline checked by FFmpeg's interrupt
callback (FFmpeg polls it at least every 100 ms while it waits on a socket), and
:meth:`UrlWriter.interrupt` makes a call blocked on another thread return at once.

Only the public AVIO API is used (``avio_open2``, ``avio_write``, ``avio_flush``, ``avio_closep``,
``av_strerror``), plus the documented public fields of ``AVIOContext`` up to ``error`` (libavformat
``avio.h``: stable since libavformat 57, and checked when a context is opened).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import av  # noqa: F401  (loads the libavformat this module must use: PyAV's own)

#: ``AVIO_FLAG_WRITE`` (libavformat/avio.h).
_AVIO_FLAG_WRITE = 2
#: ``AVERROR_EXIT`` = ``-MKTAG('E','X','I','T')`` (libavutil/error.h): the interrupt callback stopped it.
AVERROR_EXIT = -0x54495845
#: Protocols an output URL may use: the RTMP(S) layers and nothing else (no file:, no http:).
PROTOCOL_WHITELIST = "rtmp,rtmps,tcp,tls"
#: Oldest libavformat major version whose ``AVIOContext`` starts as :class:`_AVIOContextHead` says.
_MIN_AVFORMAT_MAJOR = 58

_INTERRUPT_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _AVIOInterruptCB(ctypes.Structure):
    _fields_ = [("callback", _INTERRUPT_CB), ("opaque", ctypes.c_void_p)]


class _AVIOContextHead(ctypes.Structure):
    """The first public fields of ``AVIOContext`` (libavformat/avio.h), up to ``write_flag``."""

    _fields_ = [
        ("av_class", ctypes.c_void_p),
        ("buffer", ctypes.c_void_p),
        ("buffer_size", ctypes.c_int),
        ("buf_ptr", ctypes.c_void_p),
        ("buf_end", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("read_packet", ctypes.c_void_p),
        ("write_packet", ctypes.c_void_p),
        ("seek", ctypes.c_void_p),
        ("pos", ctypes.c_int64),
        ("eof_reached", ctypes.c_int),
        ("error", ctypes.c_int),
        ("write_flag", ctypes.c_int),
    ]


class AvioError(OSError):
    """An AVIO call failed.

    Attributes:
        code: the negative AVERROR code (``-errno`` for system errors, :data:`AVERROR_EXIT` when
            interrupted: the deadline passed or :meth:`UrlWriter.interrupt` was called).
        timed_out: the call's deadline passed.
    """

    def __init__(self, code: int, message: str, *, timed_out: bool = False) -> None:
        if -4096 < code < 0:
            super().__init__(-code, message)
        else:
            super().__init__(message)
        self.code = code
        self.timed_out = timed_out


@dataclass(frozen=True)
class _Libav:
    avformat: ctypes.CDLL
    avutil: ctypes.CDLL
    major: int


def _loaded_library(stem: str) -> str | None:
    """The path of the ``lib<stem>`` this process already loaded (PyAV's), from /proc/self/maps."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if Path(path).name.startswith(f"lib{stem}"):
            return path
    return None


@functools.cache
def libav() -> _Libav:
    """PyAV's own libavformat and libavutil, with the prototypes this module calls.

    Raises:
        OSError: the libraries cannot be found, or their version is older than this module knows.
    """
    paths = {}
    for stem in ("avformat", "avutil"):
        path = _loaded_library(stem) or ctypes.util.find_library(stem)
        if path is None:
            raise OSError(f"lib{stem} not found")
        paths[stem] = path
    avformat = ctypes.CDLL(paths["avformat"])
    avutil = ctypes.CDLL(paths["avutil"])
    avformat.avformat_version.restype = ctypes.c_uint
    major = avformat.avformat_version() >> 16
    if major < _MIN_AVFORMAT_MAJOR:
        raise OSError(f"libavformat {major} is older than {_MIN_AVFORMAT_MAJOR}")
    avformat.avformat_network_init.restype = ctypes.c_int
    avformat.avformat_network_init()
    avformat.avio_open2.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(_AVIOInterruptCB),
        ctypes.POINTER(ctypes.c_void_p),
    ]
    avformat.avio_open2.restype = ctypes.c_int
    avformat.avio_write.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    avformat.avio_write.restype = None
    avformat.avio_flush.argtypes = [ctypes.c_void_p]
    avformat.avio_flush.restype = None
    avformat.avio_closep.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    avformat.avio_closep.restype = ctypes.c_int
    avutil.av_dict_set.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    avutil.av_dict_set.restype = ctypes.c_int
    avutil.av_dict_free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    avutil.av_dict_free.restype = None
    avutil.av_strerror.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    avutil.av_strerror.restype = ctypes.c_int
    return _Libav(avformat, avutil, major)


def error_text(code: int) -> str:
    """FFmpeg's message for the AVERROR ``code`` (``av_strerror``)."""
    buf = ctypes.create_string_buffer(256)
    libav().avutil.av_strerror(code, buf, len(buf))
    return buf.value.decode("utf-8", "replace")


class UrlWriter:
    """A write-only FFmpeg URL (``rtmp://``, ``rtmps://``) whose open, writes and close release the
    GIL and each end by a deadline.

    One thread at a time may call :meth:`write` and :meth:`close`; :meth:`interrupt` may be called
    from any thread. The constructor connects (for RTMP: TCP, handshake, ``connect``, ``publish``).

    Args:
        url: the URL FFmpeg opens (already validated: only :data:`PROTOCOL_WHITELIST` protocols).
        timeout_seconds: how long opening may take.

    Raises:
        AvioError: the open failed, timed out (``timed_out``) or was interrupted.
    """

    def __init__(self, url: str, *, timeout_seconds: float) -> None:
        self._lib = libav()
        self._deadline = time.monotonic() + timeout_seconds
        self._timeout_seconds = timeout_seconds
        self._interrupted = False
        self._callback = _INTERRUPT_CB(self._should_stop)  # referenced for the context's lifetime
        self._interrupt_cb = _AVIOInterruptCB(self._callback, None)
        self._ctx = ctypes.c_void_p()
        options = ctypes.c_void_p()
        try:
            self._lib.avutil.av_dict_set(
                ctypes.byref(options), b"protocol_whitelist", PROTOCOL_WHITELIST.encode(), 0
            )
            code = self._lib.avformat.avio_open2(
                ctypes.byref(self._ctx),
                url.encode(),
                _AVIO_FLAG_WRITE,
                ctypes.byref(self._interrupt_cb),
                ctypes.byref(options),
            )
        finally:
            self._lib.avutil.av_dict_free(ctypes.byref(options))
        if code < 0:
            self._ctx = ctypes.c_void_p()
            raise self._error(code, "connecting")
        head = _AVIOContextHead.from_address(self._ctx.value or 0)
        if head.write_flag != 1 or head.buffer_size <= 0 or head.error != 0:
            self._close_quietly()
            raise AvioError(-5, f"libavformat {self._lib.major}: AVIOContext layout not as expected")

    @property
    def is_open(self) -> bool:
        """The context is open (not closed or aborted)."""
        return bool(self._ctx.value)

    def _should_stop(self, _opaque: int | None) -> int:
        """FFmpeg's interrupt callback: 1 stops the blocking call (AVERROR_EXIT)."""
        return 1 if self._interrupted or time.monotonic() > self._deadline else 0

    def _error(self, code: int, what: str) -> AvioError:
        timed_out = code == AVERROR_EXIT and not self._interrupted and time.monotonic() > self._deadline
        if timed_out:
            return AvioError(code, f"{what} timed out after {self._timeout_seconds:g} s", timed_out=True)
        if code == AVERROR_EXIT:
            return AvioError(code, f"{what} interrupted")
        return AvioError(code, f"{what} failed: {error_text(code)}")

    def write(self, data: bytes, *, timeout_seconds: float) -> None:
        """Write ``data`` and flush it to the network, within ``timeout_seconds``.

        Raises:
            AvioError: the write failed (reset, broken pipe...), timed out or was interrupted; the
                writer is unusable afterwards (only :meth:`close` is left).
        """
        if not self._ctx.value:
            raise AvioError(-32, "writing failed: the output is closed")
        if self._interrupted:
            raise AvioError(AVERROR_EXIT, "writing interrupted")
        self._timeout_seconds = timeout_seconds
        self._deadline = time.monotonic() + timeout_seconds
        self._lib.avformat.avio_write(self._ctx, data, len(data))
        self._lib.avformat.avio_flush(self._ctx)
        code = _AVIOContextHead.from_address(self._ctx.value).error
        if code < 0:
            raise self._error(code, "writing")

    def close(self, *, timeout_seconds: float) -> None:
        """Flush and close (for RTMP: ``FCUnpublish`` and ``deleteStream``), within ``timeout_seconds``.
        Idempotent.

        Raises:
            AvioError: the final writes failed or timed out (the context is freed anyway).
        """
        if not self._ctx.value:
            return
        self._timeout_seconds = timeout_seconds
        self._deadline = time.monotonic() + timeout_seconds
        code = self._lib.avformat.avio_closep(ctypes.byref(self._ctx))
        if code < 0:
            raise self._error(code, "closing")

    def abort(self) -> None:
        """Close at once without waiting for the network (interrupts, then frees). Idempotent."""
        self._interrupted = True
        self._close_quietly()

    def interrupt(self) -> None:
        """Make a call blocked on another thread return within about 100 ms (AVERROR_EXIT), and every
        later write fail. Safe from any thread."""
        self._interrupted = True

    def _close_quietly(self) -> None:
        if self._ctx.value:
            self._lib.avformat.avio_closep(ctypes.byref(self._ctx))


class MemorySink:
    """A write-only file object PyAV muxes into (``av.open(sink, "w", format=...)``): it keeps the
    bytes until :meth:`take`. Not seekable, so muxers write as they would to a network stream."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        """Keep ``data``; its length."""
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        """Everything written since the last call, and forget it."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data
