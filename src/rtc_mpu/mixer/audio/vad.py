"""Voice activity per user, decided from the audio mixer's smoothed levels.

The media clock calls :meth:`VoiceActivityDetector.update` once per mixed audio block (1024 samples
at 48 kHz, about 21.3 ms) with :meth:`rtc_mpu.mixer.audio.mixer.AudioMixer.levels` (dBFS of a ~0.3 s moving
average of the block RMS, floored at -100).  Every ``interval_seconds`` of media time it returns a
:class:`VadReport`, whose :meth:`VadReport.to_json` is the payload of the H.264 SEI message the
encoder puts into the video (:mod:`rtc_mpu.mixer.output.sei`), so a player learns who is speaking in sync
with the
picture.

The interval comes from the vendor's ``VadInterval`` parameter, read as milliseconds (default 1000 ms,
at least 100 ms): ``VoiceActivityDetector(interval_seconds=vad_interval_ms / 1000)``.

Not thread-safe: call it from the media clock's thread only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from rtc_mpu.mixer.audio.mixer import LEVEL_FLOOR_DB

__all__ = [
    "DEFAULT_HANG_SECONDS",
    "DEFAULT_INTERVAL_SECONDS",
    "DEFAULT_OFF_DB",
    "DEFAULT_ON_DB",
    "MIN_INTERVAL_SECONDS",
    "VadReport",
    "VoiceActivityDetector",
]

DEFAULT_INTERVAL_SECONDS: Final[float] = 1.0
"""Seconds between reports (the vendor's default VadInterval of 1000 ms)."""

MIN_INTERVAL_SECONDS: Final[float] = 0.1
"""Shortest accepted report interval in seconds (VadInterval 100 ms)."""

DEFAULT_ON_DB: Final[float] = -40.0
"""Level in dBFS a silent user must rise above to start speaking."""

DEFAULT_OFF_DB: Final[float] = -50.0
"""Level in dBFS a speaking user must stay below (for the hang time) to stop speaking."""

DEFAULT_HANG_SECONDS: Final[float] = 0.3
"""Seconds a speaking user's level must stay below the off level before they stop speaking."""

# Media times are sums of block durations: compare them with this slack (seconds).
_EPSILON: Final[float] = 1e-9


@dataclass(frozen=True)
class VadReport:
    """Who speaks at one moment.

    Attributes:
        t: media time in seconds (of the audio block the report was made at).
        levels: user -> smoothed level in dBFS (-100 floor), every user the mixer knows.
        speaking: users whose voice is active, loudest first.
        speaker: the loudest speaking user, or None when nobody speaks.
    """

    t: float
    levels: dict[str, float]
    speaking: tuple[str, ...]
    speaker: str | None

    def to_json(self) -> bytes:
        """The SEI payload: compact UTF-8 JSON (no spaces, non-ASCII user ids kept as UTF-8).

        Shape, keys in this order::

            {"ts":1000,"speaker":"alice","speaking":["alice","bob"],"levels":{"alice":-21.4,"bob":-38.0,"carol":-100.0}}

        - ``ts``: media time in integer milliseconds (``round(t * 1000)``), the same clock as the
          video pts (frame index / fps) and the audio pts, both starting at 0.
        - ``speaker``: the loudest speaking user id, or ``null``.
        - ``speaking``: speaking user ids, loudest first (``[]`` when nobody speaks).
        - ``levels``: every known user id -> smoothed level in dBFS, rounded to 0.1 dB, -100.0 = silence.
        """
        document = {
            "ts": round(self.t * 1000),
            "speaker": self.speaker,
            "speaking": list(self.speaking),
            "levels": {user: round(level, 1) + 0.0 for user, level in self.levels.items()},
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass
class _UserState:
    speaking: bool = False
    below_since: float | None = None  # media time (s) the level first went below off_db while speaking


class VoiceActivityDetector:
    """Decides who speaks from levels with hysteresis.

    A user starts speaking when their level rises above ``on_db`` and stops when it stays below
    ``off_db`` for ``hang_seconds`` (measured from the first block below it; any block at or above
    ``off_db`` restarts the wait).  Between the two levels nothing changes.

    Args:
        interval_seconds: seconds of media time between reports (the vendor's VadInterval, which we read
            as milliseconds: default 1000 ms -> 1.0 s, minimum 100 ms -> 0.1 s).  Reports stay on a
            grid from the first one, so they do not drift with the block length.
        on_db: start level in dBFS (default -40).
        off_db: stop level in dBFS (default -50); at most ``on_db``.
        hang_seconds: seconds below ``off_db`` before a speaker stops (default 0.3).

    Raises:
        ValueError: if ``interval_seconds < 0.1``, ``off_db > on_db`` or ``hang_seconds < 0``.
    """

    def __init__(
        self,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        on_db: float = DEFAULT_ON_DB,
        off_db: float = DEFAULT_OFF_DB,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
    ) -> None:
        if not interval_seconds >= MIN_INTERVAL_SECONDS - _EPSILON:
            raise ValueError(
                f"VAD interval must be at least {MIN_INTERVAL_SECONDS} s, got {interval_seconds}"
            )
        if not off_db <= on_db:
            raise ValueError(f"off_db ({off_db}) must not exceed on_db ({on_db})")
        if not hang_seconds >= 0:
            raise ValueError(f"hang_seconds must be >= 0, got {hang_seconds}")
        self.interval_seconds = float(interval_seconds)
        self.on_db = float(on_db)
        self.off_db = float(off_db)
        self.hang_seconds = float(hang_seconds)
        self._users: dict[str, _UserState] = {}
        self._anchor: float | None = None  # media time (s) of the first report of the current grid
        self._next_due = 0.0  # media time (s) of the next report
        self._last_t: float | None = None

    def active_users(self) -> frozenset[str]:
        """The users whose voice is active after the last :meth:`update` (reports or not)."""
        return frozenset(user for user, state in self._users.items() if state.speaking)

    def update(self, t: float, levels: Mapping[str, float]) -> VadReport | None:
        """Feed one audio block's levels; a report when one is due, else None.

        Args:
            t: media time of the block in seconds.
            levels: user -> smoothed level in dBFS (:meth:`rtc_mpu.mixer.audio.mixer.AudioMixer.levels`);
                NaN, infinities and levels below -100 read as -100.  Users missing here are
                forgotten (a returning user starts silent).

        Returns:
            A :class:`VadReport` at the first call and then whenever ``t`` reaches the next multiple
            of ``interval_seconds`` after the first report; None otherwise.  If ``t`` goes backwards
            (a new media clock) the grid restarts and a report is returned at once.
        """
        if self._last_t is not None and t < self._last_t - _EPSILON:
            self._anchor = None
            for state in self._users.values():
                if state.below_since is not None:
                    state.below_since = min(state.below_since, t)
        self._last_t = t
        clean = {user: _clean_level(level) for user, level in levels.items()}
        for user in [user for user in self._users if user not in clean]:
            del self._users[user]
        for user, level in clean.items():
            self._step(self._users.setdefault(user, _UserState()), t, level)
        if self._anchor is not None and t < self._next_due - _EPSILON:
            return None
        if self._anchor is None:
            self._anchor = t
        periods = math.floor((t - self._anchor) / self.interval_seconds + _EPSILON) + 1
        self._next_due = self._anchor + periods * self.interval_seconds
        order = {user: i for i, user in enumerate(clean)}
        speaking = tuple(
            sorted(
                (user for user in clean if self._users[user].speaking),
                key=lambda user: (-clean[user], order[user]),
            )
        )
        return VadReport(t=t, levels=clean, speaking=speaking, speaker=speaking[0] if speaking else None)

    def _step(self, state: _UserState, t: float, level: float) -> None:
        """Advance one user's hysteresis with the level of the block at media time ``t``."""
        if not state.speaking:
            if level > self.on_db:
                state.speaking, state.below_since = True, None
            return
        if level >= self.off_db:
            state.below_since = None
            return
        if state.below_since is None:
            state.below_since = t
        if t - state.below_since >= self.hang_seconds - _EPSILON:
            state.speaking, state.below_since = False, None


def _clean_level(level: float) -> float:
    """``level`` as a float; NaN, infinities and anything below the floor read as the -100 dBFS floor."""
    level = float(level)
    if not math.isfinite(level) or level < LEVEL_FLOOR_DB:
        return LEVEL_FLOOR_DB
    return level
