"""Rate limits per access key, shared by every API process through Redis.

**Algorithm**: GCRA (the generic cell rate algorithm), which behaves as a token bucket of ``burst``
requests refilled at ``rate`` requests per second: a key that has been quiet may send ``burst``
requests at once, then one every ``1 / rate`` seconds. It is one Lua script on the task store's Redis
(atomic, and timed by the Redis server's clock ``TIME``, so API processes on several machines share
one limit whatever their clocks say). Key ``{p}:rate:<AccessKeyId>`` (``{p}``: the task store's
prefix) holds the *theoretical arrival time* in microseconds of server time and expires when the
bucket is full again. A refused request costs nothing.

**Where**: every authenticated REST call, after its credentials are checked and before its body is
parsed (:func:`api.auth.guard_app_request`), and every RPC call after its signature is checked
(:mod:`api.rpc`). Over the limit the answer is HTTP 429 with ``Retry-After`` (whole seconds, rounded
up) and the vendor's throttling code ``Throttling.User``, in each dialect's error shape; the RPC
answer also carries ``x-acs-retry-after`` in milliseconds, which the newer vendor SDK reads.

**Settings**: ``MPU_RATE_LIMIT`` (requests per second per access key, default 20) and
``MPU_RATE_BURST`` (default 40); either one 0 switches the limit off.

**Redis down**: the limiter *fails open*: the request goes on (a warning is logged, and the
limiter is not tried again for :data:`FAIL_OPEN_SECONDS`, so an unreachable Redis does not cost every
request a timeout), and then fails the way every store call does, 503 ``ServiceUnavailable``, if it
needs the store. A rate limit protects the service; it must not be what turns an outage into
errors of its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)

#: The error code of a throttled request (the vendor's).
THROTTLING_CODE = "Throttling.User"
#: Default requests per second per access key.
DEFAULT_RATE = 20.0
#: Default burst, in requests.
DEFAULT_BURST = 40
#: Seconds the limiter stays off after Redis failed it.
FAIL_OPEN_SECONDS = 5.0

# KEYS: the key's bucket. ARGV: microseconds per request, burst (requests).
# Returns {1, requests left} or {0, microseconds until the next request is allowed}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local ahead = tat + interval - now
if ahead > burst * interval then
  return {0, ahead - burst * interval}
end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((burst * interval - ahead) / interval)}
"""


@dataclass(frozen=True)
class RateLimit:
    """A rate limit per access key.

    Attributes:
        rate: requests per second (0: no limit).
        burst: requests a quiet key may send at once (0: no limit).
    """

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.rate > 0 and self.burst > 0

    @classmethod
    def from_settings(cls, config: Mapping[str, Any], environ: Mapping[str, str]) -> RateLimit:
        """``MPU_RATE_LIMIT`` and ``MPU_RATE_BURST`` from ``config``, else from ``environ``, else the
        defaults.

        Raises:
            ValueError: a value is not a finite number >= 0 (the rate) or an integer >= 0 (the burst).
        """

        def value(name: str) -> Any:
            given = config.get(name, environ.get(name))
            return None if given is None or given == "" else given

        rate_text, burst_text = value("MPU_RATE_LIMIT"), value("MPU_RATE_BURST")
        try:
            rate = DEFAULT_RATE if rate_text is None else float(rate_text)
        except (TypeError, ValueError):
            rate = -1.0
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"MPU_RATE_LIMIT must be requests per second >= 0, got {rate_text!r}")
        try:
            burst = DEFAULT_BURST if burst_text is None else int(str(burst_text))
        except ValueError:
            burst = -1
        if burst < 0:
            raise ValueError(f"MPU_RATE_BURST must be an integer >= 0, got {burst_text!r}")
        return cls(rate, burst)


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request.

    Attributes:
        allowed: the request may go on.
        retry_after: seconds until the key may send again (0.0 when allowed).
        remaining: requests the key may still send at once (when allowed; -1 when unknown).
    """

    allowed: bool
    retry_after: float = 0.0
    remaining: int = -1

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` in whole seconds, rounded up, at least 1 (the ``Retry-After`` header)."""
        return max(1, math.ceil(self.retry_after))


#: Every request is allowed (no limit, or no Redis to keep it in).
ALLOWED = Decision(True)


class RateLimiter:
    """Per-access-key limits on the task store's Redis (see the module docstring).

    Args:
        limit: the limit.
        target: ``() -> (redis client, key prefix)`` of the task store, or None when the store
            keeps no Redis client (a test double): then nothing is limited. Called at each request,
            so the store can be made on first use.
    """

    def __init__(self, limit: RateLimit, target: Callable[[], tuple[redis.Redis, str] | None]) -> None:
        self.limit = limit
        self._target = target
        self._interval_us = max(1, round(1_000_000 / limit.rate)) if limit.enabled else 0
        self._scripts: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._off_until = 0.0

    def key(self, prefix: str, key_id: str) -> str:
        """The Redis key of an access key's bucket."""
        return f"{prefix}:rate:{key_id}"

    def message(self, decision: Decision) -> str:
        """Why a request was refused, for people."""
        return (
            f"Request was denied due to user flow control: at most {self.limit.rate:g} requests per "
            f"second (bursts of {self.limit.burst}) per access key; retry in {decision.retry_after_seconds} s"
        )

    def hit(self, key_id: str) -> Decision:
        """Count one request of ``key_id``; whether it may go on.

        Never raises for Redis failures: it fails open (logged; see the module docstring).
        """
        if not self.limit.enabled or time.monotonic() < self._off_until:
            return ALLOWED
        target = self._target()
        if target is None:
            return ALLOWED
        client, prefix = target
        try:
            allowed, amount = self._script(client)(
                keys=[self.key(prefix, key_id)], args=[self._interval_us, self.limit.burst]
            )
        except redis.exceptions.RedisError as exc:
            self._off_until = time.monotonic() + FAIL_OPEN_SECONDS
            log.warning(
                "rate limiter: Redis failed (%s); requests are not rate-limited for the next %g s",
                exc.__class__.__name__,
                FAIL_OPEN_SECONDS,
            )
            return ALLOWED
        if int(allowed):
            return Decision(True, remaining=int(amount))
        return Decision(False, retry_after=int(amount) / 1_000_000)

    def _script(self, client: redis.Redis) -> Any:
        with self._lock:
            script = self._scripts.get(id(client))
            if script is None:
                script = self._scripts[id(client)] = client.register_script(_GCRA)
            return script
