"""Rate limits per access key, and the throttle of failed authentication, shared by every API process
through Redis.

**Algorithm**: GCRA (the generic cell rate algorithm), which behaves as a token bucket of ``burst``
requests refilled at ``rate`` requests per second: a key that has been quiet may send ``burst``
requests at once, then one every ``1 / rate`` seconds. It is one Lua script on the task store's Redis
(atomic, and timed by the Redis server's clock ``TIME``, so API processes on several machines share
one limit whatever their clocks say). Key ``{p}:rate:<AccessKeyId>`` (``{p}``: the task store's
prefix) holds the *theoretical arrival time* in microseconds of server time and expires when the
bucket is full again. A refused request costs nothing.

**Where**: every authenticated REST call, after its credentials are checked and before its body is
parsed (:func:`rtc_mpu.api.auth.guard_app_request`), and every RPC call after its signature is checked
(:mod:`rtc_mpu.api.rpc`). Over the limit the answer is HTTP 429 with ``Retry-After`` (whole seconds, rounded
up) and the vendor's throttling code ``Throttling.User``, in each dialect's error shape; the RPC
answer also carries ``x-acs-retry-after`` in milliseconds, which the newer vendor SDK reads.

**Settings**: ``MPU_RATE_LIMIT`` (requests per second per access key, default 20) and
``MPU_RATE_BURST`` (default 40); either one 0 switches the limit off.

**Redis down**: the limiter *fails open*: the request goes on (a warning is logged, and the
limiter is not tried again for :data:`FAIL_OPEN_SECONDS`, so an unreachable Redis does not cost every
request a timeout), and then fails the way every store call does, 503 ``ServiceUnavailable``, if it
needs the store. A rate limit protects the service; it must not be what turns an outage into
errors of its own.

**Failed authentication** (:class:`AuthFailureThrottle`; issue #11): credentials are checked before
the rate limit above, so wrong secrets and bad signatures need a limit of their own. A *failure* is a
request whose credentials are refused: REST without credentials, with an unknown key or a wrong
secret (not a valid key's 403 for an AppId it may not touch); RPC whose signature check fails for any
reason (missing, malformed, wrong, expired, replayed nonce). At most ``N`` = ``MPU_AUTH_FAILURE_LIMIT``
(default 10) failures are answered in a window of ``W`` = ``MPU_AUTH_FAILURE_WINDOW_SECONDS`` (default
60) seconds, which starts at the first failure; attempts beyond them are answered 429:

- *per source address*: once an address has ``N`` failures in its window, every request from it (REST
  or RPC, whatever key it names, right or wrong credentials) is answered 429 for the rest of that
  window;
- *per access key*: once a configured key has ``N`` failures in its window (from all addresses
  together), its requests are answered 429 for the rest of that window, but only from addresses that
  themselves failed for this key in the last ``W`` seconds. An address that has not failed for the
  key, such as its owner's, is still served: a stranger cannot lock a valid key out, and a guesser
  spread over many addresses gets one more try per new address instead of ``N``. (An owner's address
  that also failed for the key in that window is refused with the strangers until the window ends.)
  Unknown key ids are counted per address only.

The throttle is checked *before* the credentials (a throttled request gets no signature check, and
its body is not parsed), and a failure is counted after them. The answer is HTTP 429 with the code
``Throttling.Authentication`` and ``Retry-After`` (whole seconds left in the window), in each
dialect's error shape (RPC: also ``x-acs-retry-after`` in milliseconds). Requests checked at the same
moment are not serialized, so concurrent failures may pass the limit by the number of requests in
flight. ``MPU_AUTH_FAILURE_LIMIT=0`` switches the throttle off. Redis keys: ``{p}:authfail:addr:<addr>``
and ``{p}:authfail:key:<AccessKeyId>`` (failure counters that expire with their window) and
``{p}:authfail:pair:<AccessKeyId>:<addr>`` (this address failed for this key; expires ``W`` seconds
after its last failure). Like the rate limit, it fails open when Redis fails.

**Source address**: the peer address of the connection (``request.remote_addr``), unless that peer is
one of ``MPU_TRUSTED_PROXIES`` (comma-separated IP addresses or CIDR networks, default none): then the
``X-Forwarded-For`` header is read from the right, skipping the trusted proxies, and the first address
that is not one of them is the source (every hop trusted: the left-most one). An entry that is not an
IP address (``a.b.c.d:port`` and ``[v6]:port`` are read as addresses) ends the walk, and the hop that
sent it counts as the source. ``X-Forwarded-For`` from a peer that is not trusted is ignored, so a
client cannot pick its own address. An IPv4-mapped IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
#: The error code of a request refused after too many failed authentication attempts (rtc-mpu's).
AUTH_THROTTLING_CODE = "Throttling.Authentication"
#: Default failed attempts allowed per window, per source address and per access key.
DEFAULT_AUTH_FAILURE_LIMIT = 10
#: Default length of the failure-counting window, in seconds.
DEFAULT_AUTH_FAILURE_WINDOW_SECONDS = 60.0

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


def _setting(config: Mapping[str, Any], environ: Mapping[str, str], name: str) -> Any:
    """The setting ``name`` from ``config``, else from ``environ``; None when unset or empty."""
    given = config.get(name, environ.get(name))
    return None if given is None or given == "" else given


def _count(config: Mapping[str, Any], environ: Mapping[str, str], name: str, default: int) -> int:
    """The setting ``name`` (see :func:`_setting`) as an integer >= 0; ``default`` when unset.

    Raises:
        ValueError: it is not an integer >= 0.
    """
    text = _setting(config, environ, name)
    try:
        count = default if text is None else int(str(text))
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {text!r}")
    return count


def _number(
    config: Mapping[str, Any],
    environ: Mapping[str, str],
    name: str,
    default: float,
    *,
    zero_allowed: bool,
    meaning: str,
) -> float:
    """The setting ``name`` (see :func:`_setting`) as a finite number > 0 (>= 0 when ``zero_allowed``)
    of ``meaning`` (``seconds``, ``requests per second``); ``default`` when unset.

    Raises:
        ValueError: it is not such a number.
    """
    text = _setting(config, environ, name)
    try:
        number = default if text is None else float(text)
    except (TypeError, ValueError):
        number = -1.0
    if not (math.isfinite(number) and (number >= 0 if zero_allowed else number > 0)):
        raise ValueError(f"{name} must be {meaning} {'>=' if zero_allowed else '>'} 0, got {text!r}")
    return number


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

        rate = _number(
            config, environ, "MPU_RATE_LIMIT", DEFAULT_RATE, zero_allowed=True, meaning="requests per second"
        )
        return cls(rate, _count(config, environ, "MPU_RATE_BURST", DEFAULT_BURST))


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


class _FailOpenScripts:
    """Runs Lua scripts on the task store's Redis for a limiter, failing open: when Redis fails, the
    failure is logged and no script runs for :data:`FAIL_OPEN_SECONDS` (see the module docstring).

    Args:
        target: ``() -> (redis client, key prefix)`` of the task store, or None when the store keeps no
            Redis client (a test double). Called at each run, so the store can be made on first use.
        failure: the warning logged when Redis fails: ``%s`` the error's class, ``%g`` the seconds.
    """

    def __init__(self, target: Callable[[], tuple[redis.Redis, str] | None], failure: str) -> None:
        self._target = target
        self._failure = failure
        self._scripts: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        #: ``time.monotonic()`` until which no script runs (after a Redis failure).
        self.off_until = 0.0

    def run(self, lua: str, keys: Callable[[str], list[str]], args: list[int]) -> Any:
        """Run ``lua`` on the keys ``keys(prefix)`` with ``args``; its answer, or None without Redis, when
        Redis failed, or within :data:`FAIL_OPEN_SECONDS` of a failure."""
        if time.monotonic() < self.off_until:
            return None
        target = self._target()
        if target is None:
            return None
        client, prefix = target
        try:
            return self.script(client, lua)(keys=keys(prefix), args=args)
        except redis.exceptions.RedisError as exc:
            self.off_until = time.monotonic() + FAIL_OPEN_SECONDS
            log.warning(self._failure, exc.__class__.__name__, FAIL_OPEN_SECONDS)
            return None

    def script(self, client: redis.Redis, lua: str) -> Any:
        """``lua`` registered on ``client`` (once per client and script)."""
        with self._lock:
            script = self._scripts.get((id(client), lua))
            if script is None:
                script = self._scripts[(id(client), lua)] = client.register_script(lua)
            return script


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
        self._interval_us = max(1, round(1_000_000 / limit.rate)) if limit.enabled else 0
        self._redis = _FailOpenScripts(
            target, "rate limiter: Redis failed (%s); requests are not rate-limited for the next %g s"
        )

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
        if not self.limit.enabled:
            return ALLOWED
        answer = self._redis.run(
            _GCRA, lambda prefix: [self.key(prefix, key_id)], [self._interval_us, self.limit.burst]
        )
        if answer is None:
            return ALLOWED
        allowed, amount = answer
        if int(allowed):
            return Decision(True, remaining=int(amount))
        return Decision(False, retry_after=int(amount) / 1_000_000)


# -- failed authentication ---------------------------------------------------------------------------

#: An IP network of ``MPU_TRUSTED_PROXIES``.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: An IP address.
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# KEYS: the address's failure counter [, the access key's failure counter, the (key, address) marker].
# ARGV: the limit (failures allowed). Returns {0, 0} (allowed) or {1, milliseconds left of the block}.
_AUTH_CHECK = """
local limit = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= limit then
  return {1, redis.call('PTTL', KEYS[1])}
end
if #KEYS == 3 and tonumber(redis.call('GET', KEYS[2]) or '0') >= limit
    and redis.call('EXISTS', KEYS[3]) == 1 then
  return {1, math.min(redis.call('PTTL', KEYS[2]), redis.call('PTTL', KEYS[3]))}
end
return {0, 0}
"""

# KEYS: as above. ARGV: the window in milliseconds. Counts one failure; a counter's window starts at its
# first failure (a counter without an expiry, which should not exist, gets one).
_AUTH_FAIL = """
local window = tonumber(ARGV[1])
for i = 1, math.min(#KEYS, 2) do
  redis.call('INCR', KEYS[i])
  if redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], window)
  end
end
if #KEYS == 3 then
  redis.call('SET', KEYS[3], '1', 'PX', window)
end
return 1
"""


def parse_trusted_proxies(text: str) -> tuple[IPNetwork, ...]:
    """``MPU_TRUSTED_PROXIES``: comma-separated IP addresses and CIDR networks (blanks ignored).

    Raises:
        ValueError: an entry is neither (the message names it).
    """
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"MPU_TRUSTED_PROXIES: {entry[:64]!r} is not an IP address or a CIDR network"
            ) from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An IP address as a peer or an ``X-Forwarded-For`` entry gives it (``a.b.c.d``, ``a.b.c.d:port``,
    ``v6``, ``[v6]``, ``[v6]:port``; an IPv4-mapped IPv6 address as its IPv4 address), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def source_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The source address of a request (module docstring, "Source address").

    Args:
        peer: the connection's peer address (``request.remote_addr``; None when unknown).
        forwarded_for: the ``X-Forwarded-For`` header (None when absent).
        trusted: the proxies whose ``X-Forwarded-For`` is believed.

    Returns:
        The address in its normal text form, or ``peer`` as given (``"unknown"`` for None) when it is
        not an IP address.
    """

    def is_trusted(address: IPAddress) -> bool:
        return any(address in network for network in trusted)

    hop = parse_address(peer or "")
    if hop is None:
        return peer or "unknown"
    if not forwarded_for or not is_trusted(hop):
        return str(hop)
    for entry in reversed(forwarded_for.split(",")):
        previous = parse_address(entry)
        if previous is None:
            return str(hop)  # the (trusted) hop that handed us something that is no address
        hop = previous
        if not is_trusted(hop):
            return str(hop)
    return str(hop)


@dataclass(frozen=True)
class AuthFailureLimit:
    """The throttle of failed authentication (module docstring).

    Attributes:
        max_failures: failed attempts answered per window, per source address and per access key;
            the attempts after them are throttled (0: no throttle).
        window_seconds: length of a window, in seconds, from its first failure.
        trusted_proxies: the proxies whose ``X-Forwarded-For`` gives the source address.
    """

    max_failures: int = DEFAULT_AUTH_FAILURE_LIMIT
    window_seconds: float = DEFAULT_AUTH_FAILURE_WINDOW_SECONDS
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether failed attempts are throttled at all."""
        return self.max_failures > 0

    @classmethod
    def from_settings(cls, config: Mapping[str, Any], environ: Mapping[str, str]) -> AuthFailureLimit:
        """``MPU_AUTH_FAILURE_LIMIT``, ``MPU_AUTH_FAILURE_WINDOW_SECONDS`` and ``MPU_TRUSTED_PROXIES`` from
        ``config``, else from ``environ``, else the defaults (10, 60 s, none).

        Raises:
            ValueError: the limit is not an integer >= 0, the window not a finite number of seconds
                > 0, or a proxy not an IP address or CIDR network.
        """

        limit = _count(config, environ, "MPU_AUTH_FAILURE_LIMIT", DEFAULT_AUTH_FAILURE_LIMIT)
        window = _number(
            config,
            environ,
            "MPU_AUTH_FAILURE_WINDOW_SECONDS",
            DEFAULT_AUTH_FAILURE_WINDOW_SECONDS,
            zero_allowed=False,
            meaning="seconds",
        )
        proxies_text = _setting(config, environ, "MPU_TRUSTED_PROXIES")
        proxies = parse_trusted_proxies(str(proxies_text)) if proxies_text is not None else ()
        return cls(limit, window, proxies)


class AuthThrottledError(Exception):
    """A request refused by :class:`AuthFailureThrottle` before its credentials were checked.

    Attributes:
        decision: the throttle's answer (``retry_after``: seconds left of the block).
        message: why, for people.
    """

    def __init__(self, decision: Decision, message: str) -> None:
        super().__init__(message)
        self.decision = decision
        self.message = message


class AuthFailureThrottle:
    """Counts failed authentication per source address and per access key on the task store's Redis,
    and refuses what is over the limit (see the module docstring for the rule).

    Args:
        limit: the limit (and the trusted proxies).
        target: ``() -> (redis client, key prefix)`` of the task store, or None when the store keeps
            no Redis client (a test double): then nothing is throttled.
    """

    def __init__(self, limit: AuthFailureLimit, target: Callable[[], tuple[redis.Redis, str] | None]) -> None:
        self.limit = limit
        self._window_ms = max(1, math.ceil(limit.window_seconds * 1000))
        self._redis = _FailOpenScripts(
            target,
            "authentication throttle: Redis failed (%s); failed attempts are not throttled for the next %g s",
        )

    def source(self, peer: str | None, forwarded_for: str | None) -> str:
        """The source address of a request (:func:`source_address` with the trusted proxies)."""
        return source_address(peer, forwarded_for, self.limit.trusted_proxies)

    def keys(self, prefix: str, source: str, key_id: str | None) -> list[str]:
        """The Redis keys of a request: the address's counter, and for a configured access key its
        counter and the (key, address) marker."""
        keys = [f"{prefix}:authfail:addr:{source}"]
        if key_id is not None:
            keys += [f"{prefix}:authfail:key:{key_id}", f"{prefix}:authfail:pair:{key_id}:{source}"]
        return keys

    def message(self, decision: Decision) -> str:
        """Why a request was refused, for people."""
        return (
            f"Request was denied: {self.limit.max_failures} failed authentication attempts within "
            f"{self.limit.window_seconds:g} s from this address or for this access key; retry in "
            f"{decision.retry_after_seconds} s"
        )

    def check(self, source: str, key_id: str | None) -> Decision:
        """Whether a request from ``source`` naming the configured access key ``key_id`` (None: no
        configured key) may have its credentials checked.

        Never raises for Redis failures: it fails open (logged).
        """
        answer = self._run(_AUTH_CHECK, (source, key_id), [self.limit.max_failures])
        if answer is None or not int(answer[0]):
            return ALLOWED
        left_ms = int(answer[1])
        return Decision(False, retry_after=left_ms / 1000 if left_ms > 0 else self.limit.window_seconds)

    def record_failure(self, source: str, key_id: str | None) -> None:
        """Count a failed attempt from ``source`` naming the configured access key ``key_id`` (None: no
        configured key).

        Never raises for Redis failures: it fails open (logged).
        """
        self._run(_AUTH_FAIL, (source, key_id), [self._window_ms])

    def _run(self, lua: str, request: tuple[str, str | None], args: list[int]) -> Any:
        """Run a script on the request's keys; None when switched off, without Redis, or Redis failed."""
        if not self.limit.enabled:
            return None
        return self._redis.run(lua, lambda prefix: self.keys(prefix, *request), args)
