"""The push's connection machinery of a live pipeline: the reconnect backoff, the connection state
reported to the task status, and the per-connection job thread that can be abandoned when a write
hangs. :class:`rtc_mpu.mixer.pipeline.Pipeline` uses them; they know nothing of compositing or audio.
"""

from __future__ import annotations

import concurrent.futures
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rtc_mpu.mixer.output.encoder import Encoder

#: Seconds a new connection must carry the push before its outage counts as over: a server that
#: accepts and then drops us again at once keeps the give-up timer running and the backoff growing.
STABLE_CONNECTION_SECONDS = 5.0
#: Largest exponent of the reconnect backoff (the delay is capped at ``retry_max`` long before).
_MAX_BACKOFF_EXPONENT = 32

_T = TypeVar("_T")


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
    """The push's connection state, for task status and tests (owned and updated by the pipeline).

    Attributes:
        connected: an encoder is open and the push is being written.
        failing_since: ``time.monotonic()`` seconds when the current outage began (the first failure
            since the push last stayed up :data:`STABLE_CONNECTION_SECONDS`); None while connected.
        last_error: the latest failure, redacted (a :class:`SinkError` message names the redacted
            target), or None if the sink never failed.
        push_url_problem: the latest failure was a refusal by the server (status 6) rather than a
            network problem (status 5).
        reconnects: reconnections that succeeded.
        attempts: reconnection attempts that failed in the current outage (the next one is number
            ``attempts + 1``); 0 while no outage is going on.
    """

    connected: bool = False
    failing_since: float | None = None
    last_error: str | None = None
    push_url_problem: bool = False
    reconnects: int = 0
    attempts: int = 0


class JobThread:
    """One daemon thread running submitted callables in order: the jobs of one encoder (connection).

    A ``ThreadPoolExecutor``'s threads are joined by ``shutdown(wait=True)`` and at interpreter exit,
    but a write to a server that stopped reading blocks for good (:mod:`rtc_mpu.mixer.output.sinks`). This
    thread can
    be abandoned instead: :meth:`shutdown` only asks it to exit once the jobs already queued are done,
    and as a daemon it never holds up the process's exit.
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


def abort_opened(opening: concurrent.futures.Future[Encoder]) -> None:
    """Abort the encoder ``opening`` made, if it made one (an open given up on, run after it ends)."""
    if opening.done() and not opening.cancelled() and opening.exception() is None:
        opening.result().abort()
