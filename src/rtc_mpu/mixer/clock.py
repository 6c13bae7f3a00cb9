"""The media clock: one timeline per task, in seconds from the first output sample.

Video frame ``n`` is due at ``n / fps``; audio block ``k`` (``BLOCK_SAMPLES`` samples at 48 kHz) can be
mixed once its last sample is due, at ``(k + 1) * BLOCK_SAMPLES / 48000``. A real-time clock waits on
the event loop's monotonic clock for those instants; an offline clock never waits (a render runs
as fast as the CPU allows and gives the same output).
"""

from __future__ import annotations

import asyncio


class MediaClock:
    """Maps media time (seconds since start) to the event loop's monotonic clock.

    Args:
        realtime: wait for each instant (live output) or not (offline render).
    """

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._origin: float | None = None

    def start(self) -> None:
        """Set media time 0 to now. Must run inside the event loop."""
        self._origin = asyncio.get_running_loop().time()

    def loop_time(self, media_time: float) -> float | None:
        """The event loop's clock (seconds, ``loop.time()``) at ``media_time`` (seconds), or None for
        an offline clock (media time is not tied to any instant) or before :meth:`start`.

        Output pts derive from media time only (frame ``n`` at ``n / fps``, block ``k`` at
        ``1024 * k / 48000``), and media time is the event loop's monotonic clock minus one origin set
        once: pts never drift from the wall clock, whatever the inputs do (issue 17).
        """
        if self._origin is None or not self.realtime:
            return None
        return self._origin + media_time

    def now(self) -> float:
        """Current media time in seconds (for an offline clock: always 0).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._origin is None:
            raise RuntimeError("the media clock has not been started")
        if not self.realtime:
            return 0.0
        return asyncio.get_running_loop().time() - self._origin

    async def wait_until(self, media_time: float) -> float:
        """Sleep until ``media_time`` (seconds) and return how late we woke, in seconds (>= 0).

        An offline clock returns 0 at once, after yielding to the loop once.
        """
        if not self.realtime:
            await asyncio.sleep(0)
            return 0.0
        delay = media_time - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, self.now() - media_time)
