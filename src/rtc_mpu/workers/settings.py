"""Worker settings from the environment (documented in README), read once per process.

The API process reads them too (the task store's lease and cooldown), so this module loads no media
library: :meth:`WorkerSettings.image_limits` imports the mixer's image fetcher only when called.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rtc_mpu.spec import storage
from rtc_mpu.spec.tokens import SIGNATURES, check_secret
from rtc_mpu.spec.urls import allow_private_urls
from rtc_mpu.workers.capacity import cpu_cores, default_capacity
from rtc_mpu.workers.store_protocol import DEFAULT_COOLDOWN_SECONDS, DEFAULT_LEASE_SECONDS

if TYPE_CHECKING:  # the mixer loads aiohttp, numpy and Pillow: not in the API process
    from rtc_mpu.mixer.overlays.images import FetchLimits


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None


def _capacity() -> float:
    value = os.environ.get("MPU_WORKER_CAPACITY")
    if not value:
        return default_capacity()
    try:
        capacity = float(value)
    except ValueError:
        capacity = -1.0
    if not (capacity >= 0 and capacity != float("inf")):
        raise ValueError(f"MPU_WORKER_CAPACITY must be a number of units >= 0, got {value!r}")
    return capacity


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _count(name: str, default: int) -> int:
    """An integer >= 0 from the environment."""
    value = _int(name, default)
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value}")
    return value


#: Mix slots (pool processes) per CPU core by default: more than the capacity admits of unit mixes
#: (:func:`rtc_mpu.workers.capacity.default_capacity`, about 1.71 per core), so that the capacity,
#: not the slots, decides how many mixes a node runs; smaller tasks (audio only, 360p) fill the rest.
MIX_SLOTS_PER_CORE = 2


def default_mix_slots(cores: int | None = None) -> int:
    """Mixes one worker runs at once by default (``MPU_MIX_SLOTS``): :data:`MIX_SLOTS_PER_CORE` per
    CPU core (``cores``, default :func:`rtc_mpu.workers.capacity.cpu_cores`)."""
    return MIX_SLOTS_PER_CORE * (cores or cpu_cores())


def encoder_threads(mix_slots: int, cores: int | None = None) -> int:
    """libx264 threads per mix (``MPU_ENCODER_THREADS``; 0 = x264's own choice, 1.5 per core).

    Default: the node's cores shared by the mixes it runs at once (``mix_slots``), at least 1. A node
    full of mixes gets the most pictures per CPU-second from one thread per encoder (x264's slice
    threads cost synchronisation, and every mix's threads compete for the same cores): with 1-4 live
    4-user 720p mixes on 2 cores ``python -m bench.capacity --tasks 1,2,3,4 --threads`` measured the
    encode thread and x264's threads at 0.20-0.23 CPU-s/s per mix with x264's own choice, 0.18-0.20 on
    one thread (issue 18). A node with cores to spare per mix (``cores > mix_slots``) still slices each
    picture over its share of them.

    Args:
        mix_slots: mixes one worker runs at once.
        cores: CPU cores of the node (default: :func:`rtc_mpu.workers.capacity.cpu_cores`).

    Raises:
        ValueError: ``MPU_ENCODER_THREADS`` is not an integer >= 0.
    """
    if os.environ.get("MPU_ENCODER_THREADS"):
        return _count("MPU_ENCODER_THREADS", 0)
    return max(1, (cores or cpu_cores()) // max(1, mix_slots))


#: Where recordings go (``MPU_RECORDINGS_DIR``), relative to the working directory unless absolute.
DEFAULT_RECORDINGS_DIR = "recordings"
#: Days a recording is kept (``MPU_RECORDINGS_RETENTION_DAYS``; 0 = forever).
DEFAULT_RECORDINGS_RETENTION_DAYS = 30.0
#: Seconds a task's HLS folder is kept after the task ended (``MPU_HLS_RETENTION_SECONDS``; 0 = removed
#: at once).
DEFAULT_HLS_RETENTION_SECONDS = 3600.0


def recordings_dir() -> str:
    """The recordings directory (``MPU_RECORDINGS_DIR``, default ``recordings`` under the working
    directory), shared by the worker (which writes ``<dir>/<app_id>/<task_id>/...``) and the API (which
    lists, serves and deletes them): both must see the same directory (a shared volume when workers
    run on other hosts)."""
    return os.environ.get("MPU_RECORDINGS_DIR") or DEFAULT_RECORDINGS_DIR


def recordings_retention_days() -> float:
    """How many days recordings are kept (``MPU_RECORDINGS_RETENTION_DAYS``, default 30; 0 = forever).
    The API deletes older files lazily, when it lists a task's recordings.

    Raises:
        ValueError: not a number >= 0.
    """
    value = _float("MPU_RECORDINGS_RETENTION_DAYS", DEFAULT_RECORDINGS_RETENTION_DAYS)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"MPU_RECORDINGS_RETENTION_DAYS must be a number of days >= 0, got {value!r}")
    return value


def hls_retention_seconds() -> float:
    """How many seconds a task's HLS folder (``<MPU_HLS_DIR>/<app_id>/<task_id>``: its playlist, ended
    by ``#EXT-X-ENDLIST``, and its segments) is kept after the task ended
    (``MPU_HLS_RETENTION_SECONDS``, default 3600; 0 = removed as soon as the task ends). The worker
    that ends a task removes it at once when 0; every worker's reconciler sweeps the directory
    (:func:`rtc_mpu.workers.outputs.sweep_hls`) for the rest. Never while the task is active.

    Raises:
        ValueError: not a number >= 0.
    """
    value = _float("MPU_HLS_RETENTION_SECONDS", DEFAULT_HLS_RETENTION_SECONDS)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"MPU_HLS_RETENTION_SECONDS must be a number of seconds >= 0, got {value!r}")
    return value


def token_secret() -> str | None:
    """The shared channel-token secret (``MPU_TOKEN_SECRET``; Janus' ``token_auth_secret``), or None
    when unset (Janus without token authentication). Read by the workers (their own credentials),
    the API (issuing tokens) and the edge (checking them).

    Raises:
        ValueError: set but not a valid secret (:func:`rtc_mpu.spec.tokens.check_secret`).
    """
    value = os.environ.get("MPU_TOKEN_SECRET") or None
    return check_secret(value) if value is not None else None


def token_signature() -> str:
    """How Janus checks signed tokens (``MPU_JANUS_TOKEN_SIGNATURE``): ``sha1`` (Janus 1.1, the
    default) or ``sha256url`` (later Janus versions).

    Raises:
        ValueError: another value.
    """
    value = os.environ.get("MPU_JANUS_TOKEN_SIGNATURE") or "sha1"
    if value not in SIGNATURES:
        raise ValueError(f"MPU_JANUS_TOKEN_SIGNATURE must be one of {', '.join(SIGNATURES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    """How workers run mixes.

    Attributes:
        redis_url: task store and Celery broker (``MPU_REDIS_URL``).
        janus_url: the channels' Janus HTTP API (``MPU_JANUS_URL``).
        janus_api_secret: Janus' api_secret (``MPU_JANUS_API_SECRET``), if any.
        token_secret: the channel-token secret (``MPU_TOKEN_SECRET``), if Janus uses token
            authentication: mixes then connect with their own service tokens (:func:`token_secret`).
        token_signature: Janus' signed-token scheme (``MPU_JANUS_TOKEN_SIGNATURE``, :func:`token_signature`).
        mix_slots: mixes one worker runs at once (``MPU_MIX_SLOTS``, Celery concurrency; default
            :func:`default_mix_slots`, 2 per CPU core: the capacity decides how many run).
        mixes_per_process: Celery tasks (mixes, and deliveries refused for capacity) a pool process
            runs before it exits and a fresh one is forked (``MPU_MIXES_PER_PROCESS``, Celery's
            ``worker_max_tasks_per_child``). Default 1: every mix starts in a fresh process, so what
            a mix allocated (and the allocator's fragmentation) goes back to the system when it ends
            and a pool process's memory is bounded by one mix's. 0: processes are reused forever.
        capacity: what one worker node (a Celery worker with ``mix_slots`` processes) takes, in units
            of :mod:`rtc_mpu.workers.capacity` (1.0 = one 1280x720 30 fps mix of 4 inputs); a task that does
            not fit waits in the queue (``MPU_WORKER_CAPACITY``, default
            :func:`rtc_mpu.workers.capacity.default_capacity`, about 1.71 per CPU core; 0 = unlimited).
        encoder_threads: libx264 threads of each mix (``MPU_ENCODER_THREADS``; default
            :func:`encoder_threads`: the node's cores over ``mix_slots``, at least 1; 0 = x264's
            own choice).
        empty_timeout: seconds an empty channel is mixed before the task stops by itself with
            status 4 (``MPU_EMPTY_TIMEOUT``, default 30).
        heartbeat_interval: seconds between heartbeats/lease renewals (``MPU_HEARTBEAT_INTERVAL``).
        lease_seconds: seconds a lease outlives the last heartbeat (``MPU_LEASE_SECONDS``, default
            :data:`~rtc_mpu.workers.store_protocol.DEFAULT_LEASE_SECONDS`, 8).
        cooldown_seconds: seconds a StreamURL is refused after its task stopped (``MPU_COOLDOWN``,
            default :data:`~rtc_mpu.workers.store_protocol.DEFAULT_COOLDOWN_SECONDS`, 10).
        retry_initial, retry_max: RTMP reconnect backoff bounds in seconds.
        give_up_after: seconds of continuous push failure before the task stops (``MPU_GIVE_UP_AFTER``).
        max_restarts: restarts after worker deaths before a task is marked failed.
        image_allow_private: overlay images may come from private and loopback addresses
            (``MPU_ALLOW_PRIVATE_URLS=1``, or the older ``MPU_IMAGE_ALLOW_PRIVATE=1``; off by default:
            a task's image URLs must not reach the worker's own network).
        image_max_bytes: largest overlay image in bytes (``MPU_IMAGE_MAX_BYTES``, 5 MiB).
        image_timeout: seconds to fetch one overlay image (``MPU_IMAGE_TIMEOUT``, 5).
        clock_time_zone: IANA time zone of ClockWidgets that name none (``MPU_CLOCK_TIME_ZONE``;
            empty: the worker's local time).
        recordings_dir: where recordings go, ``<dir>/<app_id>/<task_id>/`` (``MPU_RECORDINGS_DIR``,
            default ``recordings`` in the working directory, made absolute; the API reads the same
            variable: :func:`recordings_dir`).
        hls_dir: where HLS outputs go, ``<dir>/<app_id>/<task_id>/index.m3u8`` (``MPU_HLS_DIR``,
            default ``<MPU_RUN_DIR or run>/hls``, served by the local stack's nginx:
            :func:`rtc_mpu.spec.storage.hls_dir`).
        hls_retention_seconds: seconds a task's HLS folder is kept after the task ended
            (``MPU_HLS_RETENTION_SECONDS``, default 3600; 0 = removed when it ends):
            :func:`hls_retention_seconds`.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    janus_url: str = "http://127.0.0.1:8088/janus"
    janus_api_secret: str | None = None
    token_secret: str | None = None
    token_signature: str = "sha1"
    mix_slots: int = field(default_factory=default_mix_slots)
    mixes_per_process: int = 1
    capacity: float = field(default_factory=default_capacity)
    encoder_threads: int = 0
    empty_timeout: float = 30.0
    heartbeat_interval: float = 1.0
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    retry_initial: float = 1.0
    retry_max: float = 5.0
    give_up_after: float = 300.0
    max_restarts: int = 5
    image_allow_private: bool = False
    image_max_bytes: int = 5 * 1024 * 1024
    image_timeout: float = 5.0
    clock_time_zone: str | None = None
    recordings_dir: Path = field(default_factory=lambda: Path(DEFAULT_RECORDINGS_DIR).absolute())
    hls_dir: Path = field(default_factory=lambda: storage.hls_dir({}))
    hls_retention_seconds: float = DEFAULT_HLS_RETENTION_SECONDS

    @classmethod
    def from_env(cls) -> WorkerSettings:
        """Read the ``MPU_*`` variables.

        Raises:
            ValueError: a variable is malformed (the message names it).
        """
        return cls(
            redis_url=os.environ.get("MPU_REDIS_URL", cls.redis_url),
            janus_url=os.environ.get("MPU_JANUS_URL", cls.janus_url),
            janus_api_secret=os.environ.get("MPU_JANUS_API_SECRET") or None,
            token_secret=token_secret(),
            token_signature=token_signature(),
            mix_slots=_int("MPU_MIX_SLOTS", default_mix_slots()),
            mixes_per_process=_count("MPU_MIXES_PER_PROCESS", cls.mixes_per_process),
            capacity=_capacity(),
            encoder_threads=encoder_threads(_int("MPU_MIX_SLOTS", default_mix_slots())),
            empty_timeout=_float("MPU_EMPTY_TIMEOUT", cls.empty_timeout),
            heartbeat_interval=_float("MPU_HEARTBEAT_INTERVAL", cls.heartbeat_interval),
            lease_seconds=_float("MPU_LEASE_SECONDS", cls.lease_seconds),
            cooldown_seconds=_float("MPU_COOLDOWN", cls.cooldown_seconds),
            give_up_after=_float("MPU_GIVE_UP_AFTER", cls.give_up_after),
            max_restarts=_int("MPU_MAX_RESTARTS", cls.max_restarts),
            image_allow_private=allow_private_urls(),
            image_max_bytes=_int("MPU_IMAGE_MAX_BYTES", cls.image_max_bytes),
            image_timeout=_float("MPU_IMAGE_TIMEOUT", cls.image_timeout),
            clock_time_zone=os.environ.get("MPU_CLOCK_TIME_ZONE") or None,
            recordings_dir=Path(recordings_dir()).absolute(),
            hls_dir=storage.hls_dir(),
            hls_retention_seconds=hls_retention_seconds(),
        )

    def image_limits(self) -> FetchLimits:
        """How overlay images are fetched (a worker's call: it imports the mixer's image fetcher)."""
        from rtc_mpu.mixer.overlays.images import FetchLimits

        return FetchLimits(
            max_bytes=self.image_max_bytes, timeout=self.image_timeout, allow_private=self.image_allow_private
        )


def worker_id() -> str:
    """This process's name in task records: ``<host>:<pid>``, where ``<host>`` is ``MPU_WORKER_HOST`` if
    set (containers sharing the host's network and so its hostname: ``docker/entrypoint.py`` gives each
    replica its own) and the hostname otherwise."""
    host = os.environ.get("MPU_WORKER_HOST", "").strip() or socket.gethostname()
    return f"{host}:{os.getpid()}"
