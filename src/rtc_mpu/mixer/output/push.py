"""The connection of one output: its writer (a muxer), the job thread that writes off the event loop,
and the reconnects of a live push.

:class:`Connection` owns all of it; :class:`rtc_mpu.mixer.output.outputs.Output` builds on it, fed the
packets the task's one encoder made (:class:`rtc_mpu.mixer.pipeline.Pipeline` keeps the media clock,
the sources, the compositor, the audio mixer and the encoder, and hands every packet to each output),
which either queues it on its job thread or drops and counts it. Jobs run in submission order, so pts
are strictly increasing.

Reconnecting (a live push, ``realtime`` to an RTMP target, with ``give_up_after`` not 0): when a
write fails, a job stays blocked for more than ``write_timeout`` (the server stopped reading), or the
sink cannot be opened, the connection does not end. The broken writer is aborted on its own thread
(never waited for), and while there is no connection everything submitted is dropped and counted
(:attr:`SinkStatus.dropped_video_frames`, :attr:`SinkStatus.dropped_audio_blocks`). A new writer is
opened on a new thread after an exponential backoff with *equal jitter* (:func:`reconnect_wait`); an
open that takes more than ``open_timeout`` counts as failed and its thread is abandoned. Once open,
writing goes on from the current packet: pts stay the clock's, and the new connection starts at a
keyframe, so a player sees the picture freeze for the outage and go on at the right time, never a
rewind. :attr:`Connection.status` shows the state (for task status 5/6); after ``give_up_after``
seconds of continuous failure :meth:`Connection.check` raises the last :class:`SinkError`.
Nothing of this blocks the event loop: opens, writes and closes all run on worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from rtc_mpu.mixer.output.encoder import EncoderSettings
from rtc_mpu.mixer.output.sinks import DEFAULT_OPEN_TIMEOUT, DEFAULT_WRITE_TIMEOUT, SinkError, SinkTarget

log = logging.getLogger(__name__)

#: Seconds a new connection must carry the push before its outage counts as over: a server that
#: accepts and then drops us again at once keeps the give-up timer running and the backoff growing.
STABLE_CONNECTION_SECONDS = 5.0
#: Largest exponent of the reconnect backoff (the delay is capped at ``retry_max`` long before).
_MAX_BACKOFF_EXPONENT = 32

_T = TypeVar("_T")


class Writer(Protocol):
    """What a connection writes through: a :class:`~rtc_mpu.mixer.output.muxers.Muxer` (muxes packets
    encoded once for all outputs) or a test's stand-in. Both methods block; they run on the
    connection's job thread."""

    def close(self) -> None:
        """Flush, write the trailer and close the sink (raises SinkError when the final writes fail)."""

    def abort(self) -> None:
        """Close the sink without flushing, ignoring errors (the endpoint already failed)."""

    def interrupt(self) -> None:
        """Make a call blocked on the network on the job thread return soon; safe from any thread."""


_W = TypeVar("_W", bound=Writer)


def reconnect_wait(
    attempt: int,
    initial: float,
    maximum: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before reconnection attempt ``attempt`` (0 for the first) of an outage.

    Exponential backoff with *equal jitter*: the ceiling ``min(maximum, initial * 2**attempt)``
    doubles at each attempt, and the wait is drawn uniformly from ``[ceiling / 2, ceiling]``. Half the
    ceiling is a floor, so a refusing server is never hammered (full jitter, ``[0, ceiling]``, can
    retry at once several times in a row), and the random half spreads the reconnects of the many
    pushes that one CDN or server restart breaks at the same moment.

    Args:
        attempt: reconnection attempts already made in this outage.
        initial: ceiling of the first wait, in seconds.
        maximum: largest ceiling, in seconds.
        uniform: ``random.uniform`` or a stand-in (tests).
    """
    ceiling = min(maximum, initial * 2.0 ** min(attempt, _MAX_BACKOFF_EXPONENT))
    return uniform(ceiling / 2, ceiling)


@dataclass
class SinkStatus:
    """The state and counters of one :class:`Connection`, for task status and tests (owned and
    updated by the connection, on the event loop).

    Attributes:
        connected: a writer is open and the push is being written.
        failing_since: ``time.monotonic()`` seconds when the current outage began (the first failure
            since the push last stayed up :data:`STABLE_CONNECTION_SECONDS`); None while connected.
        last_error: the latest failure, redacted (a :class:`SinkError` message names the redacted
            target), or None if the sink never failed.
        push_url_problem: the latest failure was a refusal by the server (status 6) rather than a
            network problem (status 5).
        reconnects: reconnections that succeeded.
        attempts: reconnection attempts that failed in the current outage (the next one is number
            ``attempts + 1``); 0 while no outage is going on.
        dropped_video_frames: video frames handed to the connection but not sent: it was
            disconnected, or its job thread lagged a live clock (see ``max_backlog``).
        dropped_audio_blocks: audio blocks handed to the connection while it was disconnected.
    """

    connected: bool = False
    failing_since: float | None = None
    last_error: str | None = None
    push_url_problem: bool = False
    reconnects: int = 0
    attempts: int = 0
    dropped_video_frames: int = 0
    dropped_audio_blocks: int = 0


class JobThread:
    """One daemon thread running submitted callables in order: the jobs of one writer (connection).

    A ``ThreadPoolExecutor``'s threads are joined by ``shutdown(wait=True)`` and at interpreter exit,
    but a write to a server that stopped reading blocks for good (:mod:`rtc_mpu.mixer.output.sinks`).
    This thread can be abandoned instead: :meth:`shutdown` only asks it to exit once the jobs already
    queued are done, and as a daemon it never holds up the process's exit.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        #: ``time.monotonic()`` seconds when the running job started; None while idle.
        self.busy_since: float | None = None
        #: Done when the thread has exited.
        self.exited: concurrent.futures.Future[None] = concurrent.futures.Future()
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, job: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        """Queue ``job``; its future can be cancelled until it starts."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((future, job))
        return future

    def shutdown(self) -> concurrent.futures.Future[None]:
        """Let the thread exit after the jobs queued so far (cancelled ones are skipped); no waiting."""
        self._jobs.put(None)
        return self.exited

    def _work(self) -> None:
        try:
            while (item := self._jobs.get()) is not None:
                future, job = item
                if not future.set_running_or_notify_cancel():
                    continue
                self.busy_since = time.monotonic()
                try:
                    result = job()
                except BaseException as exc:  # handed to whoever waits for the job, like an executor
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    self.busy_since = None
        finally:
            self.exited.set_result(None)


def abort_opened(opening: concurrent.futures.Future[Any]) -> None:
    """Abort the writer (a muxer) ``opening`` made, if it made one (an open given up on)."""
    if opening.done() and not opening.cancelled() and opening.exception() is None:
        opening.result().abort()


class Connection(Generic[_W]):
    """One output of the mix: its writer and sink, the job thread that runs them, and its reconnects.

    The caller (the pipeline, on the event loop) drives it:

    1. :meth:`open` once, before the clock starts;
    2. per packet the subclass's submit (:meth:`rtc_mpu.mixer.output.outputs.Output.submit`), which
       returns whether it was queued (False: dropped and counted in :attr:`status`);
    3. after every clock step :meth:`collect` (finished jobs, and backpressure for an offline
       render) and :meth:`check` (blocked writes, the end of an outage, giving up);
    4. at the end :meth:`drain` (what was submitted is written) when the mix ended normally, then
       always :meth:`close` (the trailer written, the sink closed).

    Every method runs on the event loop and never blocks it: opens, writes and closes run on the
    connection's :class:`JobThread` (a new one per writer, abandoned if it hangs). Everything of one
    output is in here, with its own :attr:`status`: a second output is a second connection fed the
    same packets, and its failures and reconnects never touch the first.

    Args:
        settings: what to encode (size, fps, bit/s).
        target: the validated sink (see :func:`rtc_mpu.mixer.output.sinks.sink_target`).
        realtime: the output is paced by the wall clock (a live push). Only a real-time push to a
            network target reconnects (and only with ``give_up_after`` not 0): a file is never
            reopened (that would truncate it).
        retry_initial: ceiling of the first reconnect wait, in seconds (:func:`reconnect_wait`).
        retry_max: largest reconnect wait ceiling, in seconds.
        give_up_after: seconds of continuous failure after which :meth:`check` raises the last
            :class:`SinkError`; None never gives up; 0 raises at the first failure without
            reconnecting.
        open_timeout: seconds one connection attempt may take (TCP, RTMP handshake, publish) before
            it counts as failed; network targets only.
        write_timeout: seconds one write job may block before the push counts as failed
            (the server stopped reading); network targets only. Closing may take twice as long.
        max_backlog: seconds of video (at ``settings.fps``) that may wait for the job thread before
            further video frames are dropped; None never drops for lag (an offline render, paced by
            :meth:`collect` instead).
        thread_name: the name of the connection's job threads.

    Raises:
        ValueError: a retry, open or write time is not positive, or ``give_up_after`` is negative.
    """

    def __init__(
        self,
        settings: EncoderSettings,
        target: SinkTarget,
        *,
        realtime: bool = True,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        give_up_after: float | None = 0.0,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_backlog: float | None = None,
        thread_name: str = "mpu-encode",
    ) -> None:
        if min(retry_initial, retry_max, open_timeout, write_timeout) <= 0 or (give_up_after or 0) < 0:
            raise ValueError("retry, open and write times must be positive and give_up_after >= 0")
        self.settings = settings
        self.target = target
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.give_up_after = give_up_after
        self.open_timeout = open_timeout
        self.write_timeout = write_timeout
        self.max_backlog = max_backlog
        self._thread_name = thread_name
        #: The connection's state and counters (see :class:`SinkStatus`).
        self.status = SinkStatus()
        #: Whether a failed sink is reopened (else the first failure is raised).
        self.reconnecting = realtime and target.is_network and give_up_after != 0
        self._encoder: _W | None = None
        #: The thread of the open encoder: its writes, then its close.
        self._thread: JobThread | None = None
        #: Threads of closed or abandoned encoders, until they exit.
        self._retired: list[JobThread] = []
        #: Submitted jobs in order, each with whether it is a video frame.
        self._pending: collections.deque[tuple[bool, concurrent.futures.Future[Any]]] = collections.deque()
        #: ``time.monotonic()`` when the current outage began (kept through short-lived connections).
        self._outage_since: float | None = None
        self._connected_at: float | None = None
        self._last_error: SinkError | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        #: An unexpected error of the reconnect task, raised by :meth:`check`.
        self._fatal: Exception | None = None
        self._finishing = False

    # -- the caller's side ---------------------------------------------------------------------
    async def open(self) -> None:
        """Open the first connection, within ``open_timeout`` seconds (network targets).

        Raises:
            SinkError: the sink could not be opened and this connection does not reconnect (one that
                does starts reconnecting in the background and returns).
        """
        try:
            encoder, thread = await self._open()
        except SinkError as exc:
            self._failed(exc)  # raises unless reconnecting
            return
        self._connected(encoder, thread)
        log.info("pushing to %s", self.target.display)

    async def collect(self, keep: int | None) -> None:
        """Collect finished jobs; wait until at most ``keep`` jobs are pending (None: no waiting). A
        :class:`SinkError` of a job (or a job of a network push blocked for ``write_timeout`` seconds)
        counts as a failure of the connection: it is aborted and reopened, or the error is raised.

        Raises:
            SinkError: the sink failed and this connection does not reconnect.
        """
        pending = self._pending
        while pending and (pending[0][1].done() or (keep is not None and len(pending) > keep)):
            _, future = pending.popleft()
            try:
                if future.done():
                    result = (
                        future.result()
                    )  # no asyncio future (nor a loop iteration) for a job already done
                else:
                    timeout = self._job_timeout(self.write_timeout)
                    try:
                        result = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
                    except TimeoutError:
                        raise self._write_timed_out() from None
            except SinkError as exc:
                self._failed(exc)
                return
            self._job_done(result)

    def check(self) -> None:
        """Once per clock step: end a stable connection's outage, catch a blocked write, give up.

        Raises:
            SinkError: the last failure, once the sink has failed for ``give_up_after`` seconds.
            Exception: what made reopening the sink fail unexpectedly (not a SinkError).
        """
        if self._fatal is not None:
            raise self._fatal
        now = time.monotonic()
        if self._encoder is not None:
            if (
                self._outage_since is not None
                and now - (self._connected_at or now) >= STABLE_CONNECTION_SECONDS
            ):
                self._outage_since = None
                self.status.attempts = 0
            thread = self._thread
            busy = thread.busy_since if thread is not None else None
            if self.target.is_network and busy is not None and now - busy > self.write_timeout:
                self._failed(self._write_timed_out())
        if (
            self._encoder is None
            and self.give_up_after is not None
            and self._outage_since is not None
            and self._last_error is not None
            and now - self._outage_since >= self.give_up_after
        ):
            log.warning(
                "giving up on %s after %.1f s of failures: %s",
                self.target.display,
                now - self._outage_since,
                self._last_error,
            )
            raise self._last_error

    async def drain(self) -> None:
        """Wait until every submitted job is done (each within ``write_timeout`` seconds on a network
        target). From now on a failure is not reconnected.

        Raises:
            SinkError: a job failed and this connection does not reconnect (one that does only
                logs it: it was finishing anyway).
        """
        self._finishing = True
        await self.collect(0)

    async def close(self) -> None:
        """Stop reconnecting, write the trailer and close the sink after the running job (queued ones
        are cancelled), then give the threads of closed or abandoned writers a moment to exit. Never
        waits forever on a network target: closing may take ``2 * write_timeout`` seconds, and each
        waiting thread ``write_timeout`` more.

        Raises:
            SinkError: the final writes failed and this connection does not reconnect.
        """
        self._finishing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            await asyncio.gather(self._reconnect_task, return_exceptions=True)
        try:
            await self._close_encoder()
        finally:
            await self._wait_retired()

    # -- the connection ------------------------------------------------------------------------
    def _backlogged(self) -> bool:
        """More than ``max_backlog`` seconds of video frames wait for the job thread."""
        if self.max_backlog is None:
            return False
        pending_video = sum(1 for is_video, _ in self._pending if is_video)
        return pending_video > self.max_backlog * self.settings.fps

    def _job_timeout(self, seconds: float) -> float | None:
        """How long to wait for a job that may block on the network (None: as long as it takes)."""
        return seconds if self.target.is_network else None

    def _job_done(self, result: Any) -> None:
        """A job finished without error (``result``: what it returned); a hook for subclasses."""

    def _make_writer(self) -> _W:
        """Make and open the writer (blocking; runs on the new job thread)."""
        raise NotImplementedError

    async def _open(self) -> tuple[_W, JobThread]:
        """Make and open a writer on a new thread (which then runs its jobs), within ``open_timeout``.

        Raises:
            SinkError: the open failed or timed out (the thread is abandoned and closes what it opens).
        """
        thread = JobThread(self._thread_name)
        future = thread.submit(self._make_writer)
        try:
            encoder = await asyncio.wait_for(
                asyncio.wrap_future(future), self._job_timeout(self.open_timeout)
            )
        except BaseException as exc:
            thread.submit(lambda: abort_opened(future))
            self._retire(thread)
            if isinstance(exc, TimeoutError):
                raise SinkError(
                    f"connecting timed out after {self.open_timeout:g} s",
                    self.target.display,
                    push_url_problem=False,
                ) from None
            raise
        return encoder, thread

    def _connected(self, encoder: _W, thread: JobThread) -> None:
        self._encoder, self._thread = encoder, thread
        self._connected_at = time.monotonic()
        self.status.connected = True
        self.status.failing_since = None

    def _retire(self, thread: JobThread) -> None:
        thread.shutdown()
        self._retired = [t for t in self._retired if not t.exited.done()]
        self._retired.append(thread)

    def _note_error(self, exc: SinkError) -> None:
        self._last_error = exc
        self.status.last_error = str(exc)
        self.status.push_url_problem = exc.push_url_problem

    def _failed(self, exc: SinkError) -> None:
        """The open encoder (if any) failed: abort it without waiting, then reconnect or raise.

        Raises:
            SinkError: ``exc``, when this connection does not reconnect.
        """
        now = time.monotonic()
        encoder, thread = self._encoder, self._thread
        self._encoder = self._thread = None
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        if thread is not None:
            if encoder is not None:
                encoder.interrupt()  # a write blocked on a dead server returns, so the thread exits
                thread.submit(encoder.abort)
            self._retire(thread)
        stable = self._connected_at is not None and now - self._connected_at >= STABLE_CONNECTION_SECONDS
        if self._outage_since is None or stable:
            self._outage_since = now
            self.status.attempts = 0
        elif self._connected_at is not None:  # a reconnection that did not hold: back off further
            self.status.attempts += 1
        self._connected_at = None
        self.status.connected = False
        self.status.failing_since = self._outage_since
        self._note_error(exc)
        if not self.reconnecting:
            raise exc
        if self._finishing:
            log.warning("push failed while finishing: %s", exc)
            return
        log.warning("push failed: %s; reconnecting", exc)
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Reopen the sink with backoff until it is open (cancelled by :meth:`close`). An unexpected
        error (a bug, not a :class:`SinkError`) is kept for :meth:`check` to raise."""
        while self._encoder is None:
            wait = reconnect_wait(self.status.attempts, self.retry_initial, self.retry_max)
            await asyncio.sleep(wait)
            try:
                encoder, thread = await self._open()
            except Exception as exc:
                if not isinstance(exc, SinkError):
                    self._fatal = exc
                    return
                self.status.attempts += 1
                self._note_error(exc)
                log.info(
                    "reconnecting to %s failed (attempt %d): %s",
                    self.target.display,
                    self.status.attempts,
                    exc,
                )
                continue
            outage = time.monotonic() - (self._outage_since or time.monotonic())
            self.status.reconnects += 1
            log.info(
                "push reconnected to %s after %.1f s (%d failed attempts)",
                self.target.display,
                outage,
                self.status.attempts,
            )
            self._connected(encoder, thread)

    def _write_timed_out(self) -> SinkError:
        return SinkError(
            f"write timed out after {self.write_timeout:g} s", self.target.display, push_url_problem=False
        )

    async def _close_encoder(self) -> None:
        """Close the open writer after its running job (queued ones are cancelled).

        Raises:
            SinkError: the final writes failed, and this connection does not reconnect (a
                reconnecting one only logs it: it was finishing anyway).
        """
        encoder, thread = self._encoder, self._thread
        self._encoder = self._thread = None
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        if thread is None or encoder is None:
            return
        closing = thread.submit(encoder.close)
        self._retire(thread)
        timeout = self._job_timeout(2 * self.write_timeout)
        try:
            await asyncio.wait_for(asyncio.wrap_future(closing), timeout)
        except TimeoutError:
            log.warning("closing %s timed out after %g s; abandoned", self.target.display, timeout)
        except SinkError as exc:
            self._note_error(exc)
            if not self.reconnecting:
                raise
            log.warning("closing the push failed: %s", exc)

    async def _wait_retired(self) -> None:
        """Give the threads of closed or abandoned writers a moment to exit (never forever)."""
        waiting = [asyncio.wrap_future(t.exited) for t in self._retired if not t.exited.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=self._job_timeout(self.write_timeout))
        self._retired = [t for t in self._retired if not t.exited.done()]
        if self._retired:
            log.warning(
                "%d encoder thread(s) still blocked on %s; abandoned", len(self._retired), self.target.display
            )
