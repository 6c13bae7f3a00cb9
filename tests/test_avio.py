"""The network link of an output (rtc_mpu.mixer.output.avio): FFmpeg's AVIO called with the GIL
released, every call under a deadline, interruptible from another thread. Local TCP listeners stand
in for servers (no RTMP needed: ``tcp:`` is one of the whitelisted layers)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rtc_mpu.mixer.output.avio import AVERROR_EXIT, AvioError, MemorySink, UrlWriter
from rtc_mpu.mixer.output.sinks import SinkTarget, link_error, open_link


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP server that accepts connections into its backlog and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


class Ticker:
    """A Python thread noting the largest gap between its 5 ms sleeps: large gaps mean the GIL was held."""

    def __init__(self) -> None:
        self.largest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            time.sleep(0.005)
            now = time.monotonic()
            self.largest_gap = max(self.largest_gap, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rtmp_url(server: socket.socket) -> str:
    return f"rtmp://127.0.0.1:{server.getsockname()[1]}/live/key"


def test_an_rtmp_server_that_never_answers_times_out_without_holding_the_gil(listener: socket.socket) -> None:
    with Ticker() as ticker:
        started = time.monotonic()
        with pytest.raises(AvioError) as caught:
            UrlWriter(rtmp_url(listener), timeout_seconds=1.0)
        took = time.monotonic() - started
    assert caught.value.timed_out and caught.value.code == AVERROR_EXIT
    assert "timed out after 1 s" in str(caught.value)
    assert 0.9 <= took < 3.0
    assert ticker.largest_gap < 0.15, "other Python threads ran during the handshake"


def test_interrupt_from_another_thread_ends_a_blocked_write(listener: socket.socket) -> None:
    writer = UrlWriter(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=2.0)
    blocked_at: list[float] = []

    def interrupt_when_blocked() -> None:
        time.sleep(0.5)  # the writes have filled the socket buffers by now
        blocked_at.append(time.monotonic())
        writer.interrupt()

    threading.Thread(target=interrupt_when_blocked, daemon=True).start()
    with pytest.raises(AvioError) as caught:
        for _ in range(100_000):
            writer.write(b"x" * 65536, timeout_seconds=30.0)
    assert blocked_at and time.monotonic() - blocked_at[0] < 0.5
    assert caught.value.code == AVERROR_EXIT and not caught.value.timed_out
    assert "interrupted" in str(caught.value)
    with pytest.raises(AvioError):
        writer.write(b"more", timeout_seconds=1.0)  # an interrupted writer stays stopped
    writer.abort()


def test_a_closed_port_is_a_refused_connection_not_a_bad_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        target = SinkTarget(f"rtmp://127.0.0.1:{port}/live/secret", "flv", "rtmp://127.0.0.1/live/***", True)
        with pytest.raises(Exception) as caught:
            open_link(target, 2.0)
    error = caught.value
    assert "connection refused" in str(error) and not getattr(error, "push_url_problem", True)
    assert "secret" not in str(error)


@pytest.mark.parametrize(
    "url", ["file:/tmp/mpu-avio-test.flv", "http://127.0.0.1:9/x", "pipe:1", "udp://127.0.0.1:9"]
)
def test_only_rtmp_layers_are_opened(url: str) -> None:
    with pytest.raises(AvioError):
        UrlWriter(url, timeout_seconds=1.0)


def test_bytes_arrive_in_order_and_a_closed_peer_fails_the_write() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = bytearray()
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        accepted.append(conn)
        while len(received) < 300_000 and (chunk := conn.recv(65536)):
            received.extend(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    writer = UrlWriter(f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout_seconds=2.0)
    payload = bytes(range(256)) * 1200  # 307200 bytes, more than one AVIO buffer
    writer.write(payload[:1000], timeout_seconds=2.0)
    writer.write(payload[1000:], timeout_seconds=2.0)
    thread.join(5)
    assert bytes(received) == payload[: len(received)] and len(received) >= 300_000
    accepted[0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    accepted[0].close()  # RST: the next writes fail with a reset or broken pipe
    server.close()
    with pytest.raises(AvioError) as caught:
        for _ in range(50):
            writer.write(b"x" * 65536, timeout_seconds=2.0)
            time.sleep(0.01)
    assert -caught.value.code in {errno.ECONNRESET, errno.EPIPE}
    sink_error = link_error(caught.value, SinkTarget("tcp://x", "flv", "tcp://x", True), opening=False)
    assert not sink_error.push_url_problem
    writer.abort()
    writer.abort()  # idempotent
    assert not writer.is_open


def test_a_write_to_a_peer_that_stopped_reading_times_out(listener: socket.socket) -> None:
    writer = UrlWriter(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=2.0)
    started = time.monotonic()
    with Ticker() as ticker, pytest.raises(AvioError) as caught:
        for _ in range(10_000):  # fills the socket buffers, then blocks
            writer.write(b"x" * 65536, timeout_seconds=0.5)
    assert caught.value.timed_out
    assert time.monotonic() - started < 5.0
    assert ticker.largest_gap < 0.15
    writer.abort()


def test_memory_sink_hands_over_what_was_written_once() -> None:
    sink = MemorySink()
    assert sink.write(b"FLV") == 3
    sink.write(b"\x01\x05")
    assert sink.take() == b"FLV\x01\x05"
    assert sink.take() == b""
