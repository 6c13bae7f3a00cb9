"""The task store: mix tasks, StreamURL leases, cooldowns, claims and heartbeats in Redis.

Every change is one Lua script (atomic on the server, nothing half-done); reads are single commands
or read-only scripts. All times written by the store (``created_at``, ``updated_at``,
``heartbeat_at``, ``ended_at``) come from the Redis server's clock (``TIME`` inside the scripts), and
every age the store compares (heartbeat age, ``stale_tasks``) is measured against that same clock,
so workers with skewed clocks cannot steal or keep a task by mistake.

Keys (``{p}`` is the prefix, ``mpu`` by default; a task's *name* is ``<app_id>/<task_id>``, which is
unambiguous because a TaskId never contains ``/``):

- ``{p}:task:<app_id>/<task_id>``: hash, the task record. Each field holds the JSON of the field of
  the same name in :meth:`TaskRecord.to_json <rtc_mpu.workers.model.TaskRecord.to_json>` (so the hash is that
  JSON object split by field, and the scripts can change a field without parsing the record: Redis'
  Lua cjson would turn empty lists into ``{}`` and round times to 14 digits). No TTL while the task
  is active; ``ended_ttl_seconds`` after it ended.
- ``{p}:app:<app_id>:tasks``: sorted set of the app's TaskIds; score = when the record expires, in
  milliseconds of server time (``+inf`` while active). Expired members are pruned at the next start.
- ``{p}:active``: set of the names of all active tasks.
- ``{p}:lease:<stream key>``: a StreamURL lease, value = the holder's name. A task has one lease per
  stream key in its record's ``lease_keys`` (:func:`rtc_mpu.spec.urls.lease_keys`: its canonical StreamURL,
  :func:`rtc_mpu.spec.urls.stream_url_key`, and the same at each address its host resolved to when it
  started; no query string, so no auth key), all taken together or none; a record of an older
  version without ``lease_keys`` has one, on its ``stream_key``, and every script falls back to it.
  No TTL while the task is queued (nobody renews it yet); ``lease_seconds`` from the claim on,
  renewed by each heartbeat, so a dead worker's leases expire by themselves.
- ``{p}:cooldown:<stream key>``: value = the name of the task that stopped; expires after
  ``cooldown_seconds``, set for each of the task's stream keys when it ends. A StreamURL is refused
  while one of its stream keys has one.
- read only: ``{p}:app:<app_id>:layouts`` of :mod:`rtc_mpu.workers.layout_store`: a start or an update checks
  that the custom layouts it names exist, in the same script as its write.
- read only: a Celery queue of the broker on the same server (a list named after the queue, without
  the prefix), for its length (:meth:`TaskStore.queue_length`).
- ``{p}:nonce:<AccessKeyId>:<sha256 of nonce>``: a signed request's nonce, kept for twice the
  timestamp window (:meth:`TaskStore.use_nonce`).
- ``{p}:restarting:<app_id>/<task_id>``: a restart of the stale task was queued; expires after the
  reconciler's dedupe period (:meth:`TaskStore.note_restart`).
- ``{p}:fence``: counter of fencing tokens (one sequence for all tasks, so a token is never reused,
  not even by a later task with the same TaskId).
- ``{p}:load:<node>``: hash, the load of a worker node (a Celery worker, ``-n`` name): task name ->
  its cost in units (:mod:`rtc_mpu.workers.capacity`). A claim with a node (:meth:`TaskStore.claim_on`) checks
  and adds the task's cost in the same atomic step, and takes the entry off the task's previous
  node; ending a task removes it; a heartbeat re-asserts it. A claim drops the entries of tasks that
  are no longer live on that node (ended, moved, or heartbeat older than ``lease_seconds``), so a
  dead worker's load is released by the next claim on its node; no TTL.
- ``{p}:capacity:<node>``: the node's capacity in units as its worker last reported it (text of a
  number; 0 = unlimited, as ``MPU_WORKER_CAPACITY``), written by every claim with a node and every
  heartbeat given the capacity (:meth:`TaskStore.heartbeat`); expires ``ended_ttl_seconds`` after
  the last one (:meth:`TaskStore.node_capacity`, for the dashboard).

Events (webhooks, :mod:`rtc_mpu.workers.events`, delivered by :mod:`rtc_mpu.workers.webhooks`):

- ``{p}:app:<app_id>:webhooks``: JSON list of the app's endpoints (URL, secret, the previous secret
  while it is rotated). While it exists, every task script that changes one of the app's tasks
  appends an event to the task's outbox in the same script (``emit`` in prelude.lua): start
  (``task.started``), state or status (``task.status_changed``), the layout in use or the spec
  (``task.layout_changed``), outputs (``task.outputs_changed``), users (``channel.user_joined`` /
  ``left``), an output's trouble (``output.failed`` / ``output.recovered``), the end (``task.ended``);
  a finished recording file (``recording.ready``, :meth:`TaskStore.emit_recording_ready`, fenced by
  the claim's token like a heartbeat, the record unchanged).
- ``{p}:outbox:<name>``: list, a task's undelivered events, oldest first, each a JSON object
  ``{"id", "type", "sequence", "at" (server time), "data", "record" (the record right after the
  change)}``; ``<app_id>/`` (an empty TaskId) holds the app's pings. ``{p}:outbox``: set of the names
  of non-empty outboxes; ``{p}:outbox:notify``: list of names, pushed at each event (a deliverer
  waits on it; the last 1000 are kept, the set is the truth).
- ``{p}:events:seq:<name>``: the task's last event sequence number (expires with the ended record).
- ``{p}:outbox:lock:<name>``: who delivers the outbox now (a token, with a TTL);
  ``{p}:outbox:retry:<name>``: a retry is scheduled (TTL = its delay).
- ``{p}:app:<app_id>:deliveries``: hash ``"<event id> <url>"`` -> JSON of the delivery record
  (:class:`~rtc_mpu.workers.events.Delivery`); ``...:deliveries:order``: sorted set of the same
  fields by first write; the newest :data:`MAX_DELIVERIES` are kept.

The scripts compute the lease and cooldown key names from the record's stream keys, so this store
works on a single Redis server (or a primary with replicas), not on Redis Cluster. It needs Redis 5 or
newer (scripts that call ``TIME`` before writing).

The scripts are the ``.lua`` files of ``rtc_mpu/workers/lua/`` (package data, :func:`load_script`);
the task scripts start with ``prelude.lua``, whose functions they share. Each file's header says its
KEYS and ARGV.

Errors: every Redis failure (connection refused, timeout, any ``redis.exceptions.RedisError``) is
raised as :class:`~rtc_mpu.workers.model.StoreUnavailableError`. A connection that fails before a command is
sent changes nothing; after a *read timeout* the script may or may not have run (the same holds for
any remote call), which is why :meth:`TaskStore.from_url` disables redis-py's automatic retries: a
retried script could, e.g., claim a task twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.outputs import OutputSpec, RtmpOutput, check_outputs, next_output_id, output_to_dict
from rtc_mpu.spec.storage import recording_url
from rtc_mpu.spec.urls import parse_stream_url, redact_url, stream_url_key
from rtc_mpu.workers.events import Delivery, WebhookEndpoint, rotate
from rtc_mpu.workers.model import (
    Claim,
    ClaimResult,
    CustomLayoutMissingError,
    OutputNotFoundError,
    OutputRequiredError,
    RefusedOutput,
    StoreError,
    StoreUnavailableError,
    StreamURLCoolingDownError,
    StreamURLInUseError,
    StreamURLRefusedError,
    TaskExistsError,
    TaskNotFoundError,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
    TaskStoppingError,
    no_capacity_reason,
)
from rtc_mpu.workers.stats import TaskStats
from rtc_mpu.workers.store_protocol import DEFAULT_COOLDOWN_SECONDS, DEFAULT_LEASE_SECONDS

log = logging.getLogger(__name__)

#: A TaskId (the vendor's MPU API, 2018-01-11): ``[A-Za-z0-9_-]``, at most 55 bytes.
TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,55}")
#: The first id of custom layouts (:mod:`rtc_mpu.workers.layout_store`); smaller LayoutIds are system layouts.
FIRST_CUSTOM_LAYOUT_ID = 100
#: The reason of a task whose stop was requested while its worker pushes.
STOPPING_REASON = "stopping: stop requested; ending the push"
#: Default socket timeouts (connect and read) of :meth:`TaskStore.from_url`, in seconds.
DEFAULT_TIMEOUT = 2.0
#: Delivery records an app keeps (:meth:`TaskStore.deliveries`).
MAX_DELIVERIES = 200
#: Attempts of an update that lost a race with another change of the task's outputs.
_OUTPUT_RETRIES = 5
#: Fields the scripts stamp with the server's time when a task is created.
_SERVER_TIMES = ("created_at", "updated_at")
#: States a worker may report (QUEUED and ENDED belong to the store; WORKER_LOST is only shown).
_HEARTBEAT_STATES = frozenset({TaskState.STARTING, TaskState.RUNNING, TaskState.RETRYING, TaskState.STOPPING})


def load_script(name: str, *, prelude: bool = False) -> str:
    """The Lua script ``lua/<name>`` shipped in this package (package data, read with
    :mod:`importlib.resources`, so it works from a wheel or a zip too).

    Args:
        name: the file name, e.g. ``"claim.lua"``.
        prelude: prepend ``lua/prelude.lua`` (the server's time, ending a task, leases), which the
            task store's scripts share.

    Raises:
        FileNotFoundError: no such script in the package (a broken installation).
    """
    folder = resources.files("rtc_mpu.workers").joinpath("lua")
    text = folder.joinpath(name).read_text(encoding="utf-8")
    return folder.joinpath("prelude.lua").read_text(encoding="utf-8") + text if prelude else text


def _custom_layout_ids(params: TaskParams) -> list[str]:
    """The custom layout ids ``params`` names (as hash fields: decimal texts)."""
    return [
        str(i)
        for i in params.layout_ids
        if isinstance(i, int) and not isinstance(i, bool) and i >= FIRST_CUSTOM_LAYOUT_ID
    ]


def _output_number(output_id: object) -> int:
    """``3`` for ``"o3"``; 0 for anything else."""
    text = str(output_id)
    return int(text[1:]) if text[:1] == "o" and text[1:].isdigit() else 0


def _destination_keys(url: str, keys: Sequence[str]) -> list[str]:
    """``keys`` (sorted, with the URL's own stream key) after checking each is the URL's destination
    at another address.

    Raises:
        ValueError: a key is another destination.
    """
    own = stream_url_key(url)
    destination = parse_stream_url(own)
    checked = sorted({own, *keys})
    for key in checked:
        other = parse_stream_url(key) if isinstance(key, str) else None
        if other is None or key != other.key() or other.key(destination.host) != own:
            raise ValueError("a lease key is not its output's destination at another address")
    return checked


def _checked_output_leases(record: TaskRecord) -> dict[str, list[str]]:
    """Each RTMP output's lease keys (``record.output_leases``, or ``lease_keys`` for the first RTMP
    output of a record that gives no per-output keys), checked: each key is its output's destination
    at some address, every RTMP output has its keys, no key belongs to two outputs.

    Raises:
        ValueError: the record breaks one of these rules.
    """
    rtmp = [o for o in record.params.outputs if o.get("kind") == "rtmp"]
    if not rtmp or str(rtmp[0].get("url")) != record.params.stream_url:
        raise ValueError("the StreamURL must be the task's first RTMP output")
    given = record.output_leases or {str(rtmp[0]["output_id"]): list(record.lease_keys)}
    if set(given) - {str(o["output_id"]) for o in rtmp}:
        raise ValueError("lease keys of an output the task does not have")
    leases: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for output in rtmp:
        output_id = str(output["output_id"])
        keys = _destination_keys(str(output["url"]), given.get(output_id, []))
        for key in keys:
            if key in owner:
                raise ValueError(f"outputs {owner[key]} and {output_id} have the same destination")
            owner[key] = output_id
        leases[output_id] = keys
    return leases


def _lease_refusal(
    reply: Sequence[Any], outputs: Sequence[tuple[str, str, Sequence[str]]], cooldown_seconds: float
) -> StreamURLRefusedError:
    """The error for a script's lease refusal (``lease_refusal`` of prelude.lua: the outcome, then a
    (key, ``in_use``, holder) or (key, ``cooling``, ms left) triple per refused key), naming every
    refused output of ``outputs`` ((output id, URL, lease keys), in the task's order): in use when any
    of its keys is, else cooling down (the longest rest of its keys); the refused destination is the
    URL's own when it is refused, else one of its host's addresses.

    Returns:
        :class:`StreamURLInUseError` when any output is in use, else :class:`StreamURLCoolingDownError`
        (``seconds_left``: the longest rest). Messages show URLs redacted.
    """
    items = list(reply[1:])
    why: dict[str, tuple[str, Any]] = {}
    for i in range(0, len(items) - 2, 3):
        why[_text(items[i])] = (_text(items[i + 1]), items[i + 2])

    def left(pttl: Any) -> int:
        ms = int(pttl)
        return math.ceil(ms / 1000) if ms > 0 else math.ceil(cooldown_seconds)

    refused: list[RefusedOutput] = []
    for output_id, url, keys in outputs:
        own = stream_url_key(url)
        hits = [(key, why[key]) for key in keys if key in why]
        if not hits:
            continue
        taken = [(key, _text(value)) for key, (kind, value) in hits if kind == "in_use"]
        if taken:  # the URL's own destination rather than one of its addresses, when both are taken
            key, holder = min(taken, key=lambda pair: pair[0] != own)
            other = None if key == own else redact_url(key)
            refused.append(RefusedOutput(output_id, redact_url(url), other, holder=holder))
        else:  # the longest rest of its keys
            rests = {key: left(value) for key, (_, value) in hits}
            seconds = max(rests.values())
            key = own if own in rests else max(rests, key=lambda k: rests[k])
            other = None if key == own else redact_url(key)
            refused.append(RefusedOutput(output_id, redact_url(url), other, seconds_left=seconds))
    parts: list[str] = []
    for r in refused:
        where = f" (the same destination: {r.destination})" if r.destination else ""
        if r.in_use:
            parts.append(f"output {r.output_id}: StreamURL {r.url} is in use by task {r.holder}{where}")
        else:
            parts.append(f"output {r.output_id}: StreamURL {r.url}{where} cools down {r.seconds_left} s more")
    if any(r.in_use for r in refused) or (not refused and _text(reply[0]) == "in_use"):
        return StreamURLInUseError("; ".join(parts) or "a StreamURL is in use", tuple(refused))
    longest = max((r.seconds_left or 0 for r in refused), default=math.ceil(cooldown_seconds))
    return StreamURLCoolingDownError(
        f"{'; '.join(parts) or 'a StreamURL cools down'}: a destination is kept {cooldown_seconds:g} s after"
        f" a task ended; try again in {longest} s",
        seconds_left=longest,
        refused=tuple(refused),
    )


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    """Milliseconds for PX/PEXPIRE (at least 1)."""
    return max(1, round(seconds * 1000))


def _record(flat: Sequence[bytes | str]) -> TaskRecord:
    """A record from a hash's field/value list (values are JSON texts)."""
    items = [_text(v) for v in flat]
    text = "{" + ",".join(f"{_dump(items[i])}:{items[i + 1]}" for i in range(0, len(items), 2)) + "}"
    try:
        return TaskRecord.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"corrupt task record in Redis: {exc.__class__.__name__}: {exc}") from None


@contextmanager
def _unavailable() -> Iterator[None]:
    """Map every Redis failure to :class:`StoreUnavailableError`."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        # The details (addresses, script errors) go to the log, not to API clients.
        log.warning("task store: %s: %s", exc.__class__.__name__, exc)
        raise StoreUnavailableError(f"the task store is unavailable ({exc.__class__.__name__})") from None


def redis_client(url: str, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """A redis-py client for ``url`` with ``timeout`` seconds as its connect and read timeouts and
    no automatic retries (a retried script is not idempotent); bytes responses. No connection is
    made yet.

    Raises:
        ValueError: malformed URL.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


class TaskStore:
    """Mix tasks in Redis (see the module docstring for the keys and the guarantees).

    Args:
        client: a synchronous redis-py client. Give it socket timeouts (connect and read) and no
            automatic retries, as :meth:`from_url` does; responses may be bytes or str.
        prefix: prefix of every key.
        cooldown_seconds: how long a StreamURL is refused after its task ended, in seconds
            (default :data:`~rtc_mpu.workers.store_protocol.DEFAULT_COOLDOWN_SECONDS`, as the workers').
        lease_seconds: how long a claimed task's StreamURL lease outlives its last heartbeat, in
            seconds; a claimed task whose heartbeat is at least this old is *stale* (its worker died)
            and may be claimed again (default
            :data:`~rtc_mpu.workers.store_protocol.DEFAULT_LEASE_SECONDS`, as the workers').
        ended_ttl_seconds: how long an ended task's record is kept (for status queries), in seconds.

    Raises:
        ValueError: a duration is not positive (``cooldown_seconds`` may be 0), or the prefix is empty.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "mpu",
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        ended_ttl_seconds: float = 86400.0,
    ) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        if cooldown_seconds < 0 or lease_seconds <= 0 or ended_ttl_seconds <= 0:
            raise ValueError("lease_seconds and ended_ttl_seconds must be > 0, cooldown_seconds >= 0")
        self.client = client
        self.prefix = prefix
        self.cooldown_seconds = cooldown_seconds
        self.lease_seconds = lease_seconds
        self.ended_ttl_seconds = ended_ttl_seconds
        self._cooldown_ms = round(cooldown_seconds * 1000)
        self._lease_ms = _ms(lease_seconds)
        self._ttl_ms = _ms(ended_ttl_seconds)
        self._start = client.register_script(load_script("start.lua", prelude=True))
        self._claim = client.register_script(load_script("claim.lua", prelude=True))
        self._heartbeat = client.register_script(load_script("heartbeat.lua", prelude=True))
        self._finish = client.register_script(load_script("finish.lua", prelude=True))
        self._release = client.register_script(load_script("release.lua", prelude=True))
        self._request_stop = client.register_script(load_script("request_stop.lua", prelude=True))
        self._update_params = client.register_script(load_script("update_params.lua", prelude=True))
        self._set_outputs_script = client.register_script(load_script("set_outputs.lua", prelude=True))
        self._list_app = client.register_script(load_script("list_app.lua"))
        self._list_active = client.register_script(load_script("list_active.lua"))
        self._rescue_queued = client.register_script(load_script("rescue_queued.lua", prelude=True))
        self._ping = client.register_script(load_script("ping.lua"))
        self._recording_ready = client.register_script(load_script("recording_ready.lua", prelude=True))
        self._outbox_ack = client.register_script(load_script("outbox_ack.lua"))
        self._outbox_lock = client.register_script(load_script("outbox_lock.lua"))
        self._outbox_unlock = client.register_script(load_script("outbox_unlock.lua"))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        prefix: str = "mpu",
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        ended_ttl_seconds: float = 86400.0,
    ) -> TaskStore:
        """A store on a new client for ``url`` (``redis://host:port/db``).

        The client has ``timeout`` seconds as its connect and read timeouts and no automatic
        retries (a retried script is not idempotent). No connection is made yet.

        Raises:
            ValueError: malformed URL or settings.
        """
        return cls(
            redis_client(url, timeout),
            prefix=prefix,
            cooldown_seconds=cooldown_seconds,
            lease_seconds=lease_seconds,
            ended_ttl_seconds=ended_ttl_seconds,
        )

    def close(self) -> None:
        """Close the client's connections (the store can still be used: it reconnects)."""
        self.client.close()

    # Key names -------------------------------------------------------------------------------

    def task_key(self, app_id: str, task_id: str) -> str:
        """The record's key."""
        return f"{self.prefix}:task:{app_id}/{task_id}"

    def lease_key(self, stream_key: str) -> str:
        """The lease's key for a stream key (:func:`rtc_mpu.spec.urls.stream_url_key`, or one of
        :func:`rtc_mpu.spec.urls.lease_keys`)."""
        return f"{self.prefix}:lease:{stream_key}"

    def cooldown_key(self, stream_key: str) -> str:
        """The cooldown's key for a stream key."""
        return f"{self.prefix}:cooldown:{stream_key}"

    def layouts_key(self, app_id: str) -> str:
        """The app's custom layouts (the key of :meth:`rtc_mpu.workers.layout_store.LayoutStore.layouts_key`),
        which starts and updates check atomically."""
        return f"{self.prefix}:app:{app_id}:layouts"

    def load_key(self, node: str) -> str:
        """The key of a worker node's load (hash: task name -> cost in units)."""
        return f"{self.prefix}:load:{node}"

    def capacity_key(self, node: str) -> str:
        """The key of a worker node's reported capacity (units as text, 0 = unlimited)."""
        return f"{self.prefix}:capacity:{node}"

    def _index_key(self, app_id: str) -> str:
        return f"{self.prefix}:app:{app_id}:tasks"

    def _keys(self, app_id: str, task_id: str) -> list[str]:
        """Record, app index and active set: KEYS[1..3] of the scripts."""
        return [self.task_key(app_id, task_id), self._index_key(app_id), f"{self.prefix}:active"]

    @staticmethod
    def _valid(app_id: str, task_id: str) -> bool:
        return bool(app_id) and isinstance(task_id, str) and TASK_ID_PATTERN.fullmatch(task_id) is not None

    def _found(self, app_id: str, task_id: str) -> None:
        """Raise TaskNotFoundError for ids no task can have (a TaskId never contains ``/`` or ``:``)."""
        if not self._valid(app_id, task_id):
            raise TaskNotFoundError(f"no task {task_id!r} for AppId {app_id!r}")

    # Operations --------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            StoreUnavailableError: it does not (within the client's timeouts).
        """
        with _unavailable():
            self.client.ping()

    def use_nonce(self, key_id: str, nonce: str, ttl_seconds: float) -> bool:
        """Register the nonce of a signed API request (replay protection): ``SET NX`` on
        ``{p}:nonce:<key_id>:<sha256(nonce)>`` expiring after ``ttl_seconds``.

        Returns:
            True the first time, False if ``key_id`` used ``nonce`` within ``ttl_seconds``.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        digest = hashlib.sha256(nonce.encode("utf-8", "surrogatepass")).hexdigest()
        with _unavailable():
            return bool(
                self.client.set(f"{self.prefix}:nonce:{key_id}:{digest}", 1, nx=True, px=_ms(ttl_seconds))
            )

    def start_task(self, record: TaskRecord) -> TaskRecord:
        """Store a new task and take all its StreamURL leases, in one atomic step.

        Its leases are ``record.lease_keys`` and ``record.stream_key`` (:func:`rtc_mpu.spec.urls.lease_keys`:
        one per destination its StreamURL may push to), taken all or none. Refused if an *active*
        task has the same (AppId, TaskId), if another active task holds any of those leases, if any
        of them is cooling down, or if a custom layout its LayoutIds name (ids from
        :data:`FIRST_CUSTOM_LAYOUT_ID`) does not exist in :meth:`layouts_key` (checked in the same
        step, so a layout deleted meanwhile is never left named by a new task). An ended task with
        the same TaskId is replaced. The leases have no TTL until the task is claimed.
        ``created_at`` and ``updated_at`` are set to the server's time.

        Args:
            record: a new task: state QUEUED, never claimed, ``stream_key`` =
                ``stream_url_key(record.params.stream_url)``, ``lease_keys`` each the same scheme,
                port, app and stream at another host (or empty: ``stream_key`` alone).

        Returns:
            The stored record (``lease_keys`` sorted, with ``stream_key`` among them).

        Raises:
            TaskExistsError: an active task with this TaskId exists for the AppId.
            StreamURLInUseError: another active task pushes to one of the same destinations (the
                message names that task, and shows the URL redacted).
            StreamURLCoolingDownError: one of its destinations' previous task ended less than
                ``cooldown_seconds`` ago; ``seconds_left`` is the longest rest, rounded up to whole
                seconds.
                Both name every refused RTMP output in ``refused`` (:class:`RefusedOutput`: its id,
                redacted URL, in use or the seconds left), in the task's output order; none of the
                task's leases was taken.
            CustomLayoutMissingError: a custom layout it names does not exist (400
                ``InvalidLayoutID.Malformed``).
            ValueError: the record is not a new task, its TaskId is malformed, its stream_key does
                not match its StreamURL or a lease key is not that destination at another host
                (``SpecError``, a ValueError, for an invalid StreamURL).
            StoreUnavailableError: Redis failed.
        """
        if not self._valid(record.app_id, record.task_id):
            raise ValueError(f"invalid AppId/TaskId {record.app_id!r}/{record.task_id!r}")
        if record.state is not TaskState.QUEUED or record.fence != 0:
            raise ValueError("start_task takes a new task (state queued, never claimed)")
        if record.stream_key != stream_url_key(record.params.stream_url):
            raise ValueError("the record's stream_key is not the normalized StreamURL")
        output_leases = _checked_output_leases(record)
        lease_keys = sorted({key for keys in output_leases.values() for key in keys})
        last_output = max((_output_number(o.get("output_id")) for o in record.params.outputs), default=0)
        record = dataclasses.replace(
            record, lease_keys=lease_keys, output_leases=output_leases, last_output=last_output
        )
        name = f"{record.app_id}/{record.task_id}"
        fields: list[str] = []
        for key, value in json.loads(record.to_json()).items():
            if key not in _SERVER_TIMES:
                fields += [key, _dump(value)]
        args = [
            self.prefix,
            name,
            record.task_id,
            _dump(lease_keys),
            _dump(_custom_layout_ids(record.params)),
            *fields,
        ]
        keys = [*self._keys(record.app_id, record.task_id), self.layouts_key(record.app_id)]
        with _unavailable():
            reply = self._start(keys=keys, args=args)
        outcome = _text(reply[0])
        if outcome == "exists":
            raise TaskExistsError(f"task {record.task_id} already exists for AppId {record.app_id}")
        if outcome in ("in_use", "cooling"):
            rtmp = [
                (str(o["output_id"]), str(o["url"]), output_leases[str(o["output_id"])])
                for o in record.params.outputs
                if o.get("kind") == "rtmp"
            ]
            raise _lease_refusal(reply, rtmp, self.cooldown_seconds)
        if outcome == "no_layout":
            raise CustomLayoutMissingError(f"no layout {_text(reply[1])} for this AppId")
        return _record(reply[1])

    def get_task(self, app_id: str, task_id: str) -> TaskRecord:
        """The task's record (active, or ended less than ``ended_ttl_seconds`` ago).

        Raises:
            TaskNotFoundError: no such task for the AppId.
            StoreUnavailableError: Redis failed.
        """
        self._found(app_id, task_id)
        with _unavailable():
            flat = self.client.hgetall(self.task_key(app_id, task_id))
        if not flat:
            raise TaskNotFoundError(f"no task {task_id!r} for AppId {app_id!r}")
        return _record([item for pair in flat.items() for item in pair])

    def list_tasks(self, app_id: str) -> list[TaskRecord]:
        """The app's tasks, active and recently ended (records expire ``ended_ttl_seconds`` after
        they ended), oldest first.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            reply = self._list_app(keys=[self._index_key(app_id)], args=[f"{self.prefix}:task:{app_id}/"])
        return sorted((_record(flat) for flat in reply), key=lambda r: (r.created_at, r.task_id))

    def active_tasks(self) -> list[TaskRecord]:
        """Every active task of every app, oldest first.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            reply = self._list_active(keys=[f"{self.prefix}:active"], args=[f"{self.prefix}:task:"])
        return sorted((_record(flat) for flat in reply), key=lambda r: (r.created_at, r.app_id, r.task_id))

    def stale_tasks(self) -> list[TaskRecord]:
        """Active, claimed tasks whose last heartbeat is at least ``lease_seconds`` old (by the Redis
        server's clock): their worker died. :meth:`claim` accepts them again (for the reconciler).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        records = self.active_tasks()
        with _unavailable():
            seconds, micros = self.client.time()
        now = seconds + micros / 1e6
        return [r for r in records if r.fence > 0 and (now - r.heartbeat_at) * 1000 >= self._lease_ms]

    def request_stop(self, app_id: str, task_id: str) -> TaskRecord:
        """Ask a task to stop; idempotent.

        A task with a live worker gets ``stop_requested``, state STOPPING and the reason
        :data:`STOPPING_REASON`, its status unchanged (the push goes on until the worker, which sees
        the request in its next heartbeat's record, has ended it and calls :meth:`finish`); it stays
        STOPPING whatever its heartbeats report, and takes no parameter updates. A task without a
        live worker (never claimed, handed over, or its heartbeat is ``lease_seconds`` old) is ended
        at once like :meth:`finish` with status STOPPED_BY_USER: leases released, cooldowns set. A
        task already stopping, and an ended one, is returned unchanged.

        Returns:
            The task's record after the request.

        Raises:
            TaskNotFoundError: no such task for the AppId.
            StoreUnavailableError: Redis failed.
        """
        self._found(app_id, task_id)
        args: list[str | int] = [
            self.prefix,
            f"{app_id}/{task_id}",
            task_id,
            self._lease_ms,
            self._cooldown_ms,
            self._ttl_ms,
            _dump(STOPPING_REASON),
        ]
        with _unavailable():
            reply = self._request_stop(keys=self._keys(app_id, task_id), args=args)
        if _text(reply[0]) == "missing":
            raise TaskNotFoundError(f"no task {task_id!r} for AppId {app_id!r}")
        return _record(reply[1])

    def update_params(self, app_id: str, task_id: str, params: TaskParams) -> TaskRecord:
        """Replace an active task's parameters and bump its ``spec_version`` (the worker applies the
        new version at its next heartbeat). The custom layouts ``params`` names must exist, checked
        in the same atomic step as the write (as :meth:`start_task` does).

        The task's outputs are not changed here (:meth:`add_output`, :meth:`remove_output`):
        ``params.outputs`` is replaced by the stored ones (with the first RTMP output's URL following
        ``params.stream_url``), and the write is retried if an output was added or removed meanwhile.

        Raises:
            TaskNotFoundError: no such task, or it has ended.
            TaskStoppingError: the task is stopping (409 ``InvalidTask.Stopping``).
            CustomLayoutMissingError: a custom layout it names does not exist.
            ValueError: ``params.stream_url`` has another destination than the task's StreamURL
                (the StreamURL of a task cannot change; its query string, e.g. an auth key, may);
                ``SpecError`` (a ValueError) if it is not a valid StreamURL.
            StoreUnavailableError: Redis failed.
        """
        for _ in range(_OUTPUT_RETRIES):
            current = self.get_task(app_id, task_id)
            # Compared by today's canonical form: a record of an older version may spell its stream_key
            # differently, and the script only checks that the record still has the one read here.
            if stream_url_key(params.stream_url) != stream_url_key(current.params.stream_url):
                raise ValueError("the StreamURL of a running task cannot be changed (only its query string)")
            outputs = [dict(o) for o in current.params.outputs]
            first = next((o for o in outputs if o.get("kind") == "rtmp"), None)
            if first is not None:
                first["url"] = params.stream_url
            params = dataclasses.replace(params, outputs=tuple(outputs))
            args = [
                _dump(params.to_dict()),
                _dump(current.stream_key),
                _dump(_custom_layout_ids(params)),
                str(current.outputs_version),
                self.prefix,
                f"{app_id}/{task_id}",
            ]
            with _unavailable():
                reply = self._update_params(
                    keys=[self.task_key(app_id, task_id), self.layouts_key(app_id)], args=args
                )
            outcome = _text(reply[0])
            if outcome == "retry":
                continue
            if outcome == "missing":
                raise TaskNotFoundError(f"no active task {task_id!r} for AppId {app_id!r}")
            if outcome == "stopping":
                raise TaskStoppingError(f"task {task_id} is stopping; it takes no updates")
            if outcome == "no_layout":
                raise CustomLayoutMissingError(f"no layout {_text(reply[1])} for this AppId")
            if outcome == "url_changed":
                raise ValueError("the StreamURL of a running task cannot be changed (only its query string)")
            return _record(reply[1])
        raise StoreUnavailableError("the task's outputs kept changing; try again")

    def add_output(
        self, app_id: str, task_id: str, output: OutputSpec, lease_keys: Sequence[str] = ()
    ) -> TaskRecord:
        """Add one output to an active task, atomically with its StreamURL leases (an RTMP output's
        ``lease_keys``, :func:`rtc_mpu.spec.urls.lease_keys`: all or none), and bump ``spec_version``
        (the worker applies it at its next heartbeat). The output gets the next id
        (:func:`rtc_mpu.spec.outputs.next_output_id` over every id the task ever had: ``output``'s
        own id is ignored). Leases of a claimed task get ``lease_seconds`` TTLs (renewed by the
        heartbeats); a queued task's wait for the claim.

        Returns:
            The updated record (the new output is the last of ``params.outputs``).

        Raises:
            SpecError: ``InvalidOutput.LimitExceeded`` (no field), ``InvalidOutput.Duplicate`` (field
                ``("url",)`` for a destination the task already pushes to, including one of its
                addresses; ``("kind",)`` for a second hls/snapshot output).
            TaskNotFoundError: no such task, or it has ended.
            TaskStoppingError: the task is stopping.
            StreamURLInUseError, StreamURLCoolingDownError: the new URL is another active task's, or
                cooling down (nothing changed); ``refused`` names the output (its would-be id).
            ValueError: a lease key is not the output's destination.
            StoreUnavailableError: Redis failed.
        """
        for _ in range(_OUTPUT_RETRIES):
            current = self._changeable(app_id, task_id)
            output_id = next_output_id(current.used_output_ids())
            added = dataclasses.replace(output, output_id=output_id)
            specs = [*current.params.output_specs(), added]
            try:
                check_outputs(specs)
            except SpecError as exc:
                last = exc.field[-1] if exc.field else None
                duplicate = exc.code == "InvalidOutput.Duplicate"
                field = ("url",) if last == "url" else ("kind",) if duplicate else None
                raise SpecError(exc.code, exc.message, field) from None
            leases = {k: list(v) for k, v in current.output_leases.items()}
            if not leases:
                first = next((o for o in current.params.outputs if o.get("kind") == "rtmp"), None)
                if first is not None:
                    leases[str(first["output_id"])] = current.leases_of(str(first["output_id"]))
            take: list[str] = []
            if isinstance(added, RtmpOutput):
                take = _destination_keys(added.url, lease_keys)
                owned = {key for keys in leases.values() for key in keys}
                if owned & set(take):
                    raise SpecError(
                        "InvalidOutput.Duplicate", "the task already pushes to this destination", ("url",)
                    )
                leases[output_id] = take
            outputs = (*current.params.outputs, output_to_dict(added))
            reply = self._set_outputs(current, outputs, leases, int(output_id[1:]), take, [])
            if reply is not None:
                return reply
        raise StoreUnavailableError("the task's outputs kept changing; try again")

    def remove_output(self, app_id: str, task_id: str, output_id: str) -> TaskRecord:
        """Remove one output of an active task and bump ``spec_version``; an RTMP output's leases are
        released, each with its own cooldown (``cooldown_seconds``). A task keeps at least one RTMP
        output (its StreamURL; removing the first one makes the next RTMP output the StreamURL).

        Raises:
            OutputNotFoundError: the task has no such output (404 ``InvalidOutput.NotFound``).
            OutputRequiredError: it is the task's last RTMP output (409 ``InvalidOutput.Required``).
            TaskNotFoundError: no such task, or it has ended.
            TaskStoppingError: the task is stopping.
            StoreUnavailableError: Redis failed.
        """
        for _ in range(_OUTPUT_RETRIES):
            current = self._changeable(app_id, task_id)
            found = [o for o in current.params.outputs if o.get("output_id") == output_id]
            if not found:
                raise OutputNotFoundError(f"task {task_id} has no output {output_id!r}")
            outputs = tuple(o for o in current.params.outputs if o.get("output_id") != output_id)
            if found[0].get("kind") == "rtmp" and not any(o.get("kind") == "rtmp" for o in outputs):
                raise OutputRequiredError(
                    f"output {output_id} is the task's last rtmp output; a task keeps at least one"
                )
            release = current.leases_of(output_id)
            leases = {
                str(o["output_id"]): current.leases_of(str(o["output_id"]))
                for o in outputs
                if o.get("kind") == "rtmp"
            }
            reply = self._set_outputs(current, outputs, leases, current.last_output, [], release)
            if reply is not None:
                return reply
        raise StoreUnavailableError("the task's outputs kept changing; try again")

    def _changeable(self, app_id: str, task_id: str) -> TaskRecord:
        """The record of a task whose outputs may change (checked again by the script).

        Raises:
            TaskNotFoundError: no such task, or it has ended.
            TaskStoppingError: a stop was requested.
            StoreUnavailableError: Redis failed.
        """
        current = self.get_task(app_id, task_id)
        if not current.active:
            raise TaskNotFoundError(f"no active task {task_id!r} for AppId {app_id!r}")
        if current.stop_requested or current.state is TaskState.STOPPING:
            raise TaskStoppingError(f"task {task_id} is stopping; it takes no updates")
        return current

    def _set_outputs(
        self,
        current: TaskRecord,
        outputs: tuple[dict[str, object], ...],
        leases: dict[str, list[str]],
        last_output: int,
        take: list[str],
        release: list[str],
    ) -> TaskRecord | None:
        """Write a task's new outputs (set_outputs.lua); None if they changed since ``current`` was read.

        Raises:
            TaskNotFoundError, TaskStoppingError, StreamURLInUseError, StreamURLCoolingDownError,
            StoreUnavailableError: as :meth:`add_output`.
        """
        app_id, task_id = current.app_id, current.task_id
        rtmp = [o for o in outputs if o.get("kind") == "rtmp"]
        stream_url = str(rtmp[0]["url"]) if rtmp else ""
        params = dataclasses.replace(current.params, outputs=outputs, stream_url=stream_url)
        stream_key = stream_url_key(stream_url) if stream_url else current.stream_key
        lease_keys = sorted({key for keys in leases.values() for key in keys})
        args: list[str | int] = [
            self.prefix,
            f"{app_id}/{task_id}",
            current.outputs_version,
            _dump(params.to_dict()),
            _dump(lease_keys),
            _dump(leases),
            max(last_output, current.last_output),
            _dump(stream_key),
            _dump(take),
            _dump(release),
            self._lease_ms,
            self._cooldown_ms,
        ]
        with _unavailable():
            reply = self._set_outputs_script(keys=[self.task_key(app_id, task_id)], args=args)
        outcome = _text(reply[0])
        if outcome == "retry":
            return None
        if outcome == "missing":
            raise TaskNotFoundError(f"no active task {task_id!r} for AppId {app_id!r}")
        if outcome == "stopping":
            raise TaskStoppingError(f"task {task_id} is stopping; it takes no updates")
        if outcome in ("in_use", "cooling"):
            added = [(str(o["output_id"]), str(o["url"]), take) for o in outputs[-1:]]
            raise _lease_refusal(reply, added, self.cooldown_seconds)
        return _record(reply[1])

    def claim(self, app_id: str, task_id: str, worker: str) -> int | None:
        """Claim a task for ``worker`` without capacity accounting: :meth:`claim_on` without a node.

        Returns:
            The fencing token, or None when the claim did not succeed (see :meth:`claim_on`).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        return self.claim_on(app_id, task_id, worker).token

    def claim_on(
        self,
        app_id: str,
        task_id: str,
        worker: str,
        *,
        node: str | None = None,
        cost: float = 0.0,
        capacity: float | None = None,
    ) -> Claim:
        """Claim a task for ``worker`` on worker node ``node``, atomically with the node's capacity.

        Succeeds if the task is active, no stop was requested, it was never claimed or its last
        heartbeat is at least ``lease_seconds`` old (its worker died), and it fits the node: the
        costs of the node's live tasks plus ``cost`` are at most ``capacity``, or the node runs no
        other task (a task that costs more than a whole node still runs, on an idle one). Then: a
        new token from the global counter (tokens increase and are never reused), ``fence`` =
        token, ``worker``, ``node``, ``cost``, state STARTING, status WAITING, ``heartbeat_at`` = now,
        ``restarts`` + 1 if it had been claimed before (with a reason saying it is being taken
        over); the StreamURL leases are (re)set with a TTL of ``lease_seconds``;
        ``{p}:load:<node>`` gets the entry name -> cost, and the entry the task had on its previous
        node is removed.

        The node's load is the sum of the entries of its hash whose task is active, still claimed by
        this node and heartbeating (younger than ``lease_seconds``); the other entries are dropped by
        this claim. Entries are also removed whenever a task ends (:meth:`finish`, a stop, a lost
        StreamURL) and re-added by :meth:`heartbeat`, so a worker that could not reach Redis for a
        while counts again.

        Results other than CLAIMED: GONE (missing or ended), HELD (a live worker has it, e.g. a
        second delivery of the same message), STOPPED and URL_TAKEN (it cannot run any more and is
        now ended: a stop was requested while it had no worker, status 3 with the cooldown set; or
        another task took its StreamURL while its lease had expired, status 2), NO_CAPACITY (it does
        not fit; a never-claimed task keeps state QUEUED and gets the reason "queued: no worker has
        capacity for it (cost X.X units)").

        Args:
            app_id, task_id: the task.
            worker: this worker's name for the record (``<hostname>:<pid>``).
            node: the worker node whose capacity the task uses (Celery's node name); None: no
                capacity accounting (``cost`` and ``capacity`` are ignored).
            cost: the task's cost in units (:func:`rtc_mpu.workers.capacity.task_cost`), >= 0.
            capacity: the node's capacity in units, > 0; None: unlimited (the load is still kept).

        Raises:
            ValueError: a negative or non-finite cost, a capacity <= 0, an empty node name.
            StoreUnavailableError: Redis failed.
        """
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"a task's cost must be a finite number >= 0, got {cost!r}")
        if capacity is not None and not (math.isfinite(capacity) and capacity > 0):
            raise ValueError(f"a node's capacity must be > 0 (or None: unlimited), got {capacity!r}")
        if node == "":
            raise ValueError("the node name must not be empty")
        if not self._valid(app_id, task_id):
            return Claim(ClaimResult.GONE)
        cost = round(cost, 3)
        args: list[str | int] = [
            self.prefix,
            f"{app_id}/{task_id}",
            task_id,
            _dump(worker),
            self._lease_ms,
            self._cooldown_ms,
            self._ttl_ms,
            _dump(node),
            _dump(cost if node is not None else 0.0),
            "" if capacity is None else repr(float(capacity)),
            _dump(no_capacity_reason(cost)),
        ]
        keys = [*self._keys(app_id, task_id), f"{self.prefix}:fence"]
        if node is not None:
            keys.append(self.load_key(node))
        with _unavailable():
            reply = self._claim(keys=keys, args=args)
        result = ClaimResult(_text(reply[0]))
        if result is ClaimResult.CLAIMED:
            return Claim(result, int(reply[1]), float(_text(reply[2])))
        if result is ClaimResult.NO_CAPACITY:
            return Claim(result, load=float(_text(reply[1])), restart=int(float(_text(reply[2]))) > 0)
        return Claim(result)

    def node_load(self, node: str) -> dict[str, float]:
        """The entries of a node's load as stored: task name (``<app_id>/<task_id>``) -> cost in
        units. Entries of dead tasks stay until the node's next claim drops them (see
        :meth:`claim_on`).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            flat = self.client.hgetall(self.load_key(node))
        return {_text(name): float(_text(cost)) for name, cost in flat.items()}

    def node_capacity(self, node: str) -> float | None:
        """A node's capacity in units as its worker last reported it with a claim (:meth:`claim_on`)
        or a heartbeat (:meth:`heartbeat`, ``capacity``): 0.0 = unlimited; None = not reported within
        ``ended_ttl_seconds``.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            value = self.client.get(self.capacity_key(node))
        if value is None:
            return None
        try:
            capacity = float(_text(value))
        except ValueError:
            return None
        return capacity if math.isfinite(capacity) and capacity >= 0 else None

    def snapshot_key(self, app_id: str, task_id: str) -> str:
        """Redis key of a task's latest snapshot (a hash: ``jpeg``, ``taken_at``)."""
        return f"{self.prefix}:snapshot:{app_id}/{task_id}"

    def put_snapshot(
        self, app_id: str, task_id: str, jpeg: bytes, taken_at_unix_seconds: float, ttl_seconds: float
    ) -> None:
        """Keep ``jpeg`` as the task's latest snapshot for ``ttl_seconds`` (any API host serves it).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        key = self.snapshot_key(app_id, task_id)
        with _unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping={"jpeg": jpeg, "taken_at": repr(float(taken_at_unix_seconds))})
            pipe.pexpire(key, _ms(ttl_seconds))
            pipe.execute()

    def get_snapshot(self, app_id: str, task_id: str) -> tuple[bytes, float] | None:
        """The task's latest snapshot as ``(JPEG bytes, unix seconds taken)``, or None.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            values = self.client.hmget(self.snapshot_key(app_id, task_id), ["jpeg", "taken_at"])
        jpeg, taken_at = values[0], values[1]
        if not isinstance(jpeg, bytes) or taken_at is None:
            return None
        return jpeg, float(_text(taken_at))

    def node_loads(self) -> dict[str, float]:
        """Every worker node's load as stored: node name -> the sum of its entries' costs, in units
        (:meth:`node_load`; entries of dead tasks count until the node's next claim drops them).
        Nodes whose load hash is gone (no entries) are absent.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        prefix = self.load_key("")
        loads: dict[str, float] = {}
        with _unavailable():
            for key in self.client.scan_iter(match=f"{prefix}*", count=100):
                costs = self.client.hvals(key)
                if costs:
                    loads[_text(key)[len(prefix) :]] = sum(float(_text(cost)) for cost in costs)
        return loads

    def queue_length(self, queue: str) -> int:
        """How many messages wait in the Celery queue ``queue`` of the broker on this store's Redis
        (Celery's Redis transport keeps a queue as a list named after it, without this store's prefix).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            return int(self.client.llen(queue))

    def rescue_queued(self, idle_seconds: float) -> list[tuple[str, str]]:
        """Never-claimed tasks (state QUEUED) whose record nobody touched for ``idle_seconds``: their
        Celery message may be lost (a worker killed while holding it), so the caller enqueues them
        again. Each one's ``updated_at`` is set to now in the same atomic step, so that concurrent
        callers (every worker's reconciler) rescue a task at most once per ``idle_seconds``. A task
        refused for lack of capacity is touched at every refusal, so it is not rescued while its
        message goes round.

        Returns:
            (app_id, task_id) of each task to enqueue again.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            reply = self._rescue_queued(
                keys=[f"{self.prefix}:active"], args=[f"{self.prefix}:task:", _ms(idle_seconds)]
            )
        names = [_text(name).split("/", 1) for name in reply]
        return [(name[0], name[1]) for name in names if len(name) == 2]

    def heartbeat(
        self,
        app_id: str,
        task_id: str,
        token: int,
        *,
        status: TaskStatus | None = None,
        state: TaskState | None = None,
        reason: str | None = None,
        layout_id: int | None = None,
        users: list[str] | None = None,
        stats: TaskStats | None = None,
        capacity: float | None = None,
    ) -> TaskRecord | None:
        """Report progress and renew the StreamURL leases, if ``token`` still holds the task.

        Atomically, when the task is active and its ``fence`` equals ``token``: set the given fields
        (None = unchanged; once a stop was requested, ``state`` stays STOPPING and ``reason`` the
        stop's, whatever is given), ``heartbeat_at`` and ``updated_at`` = now, and each lease's TTL
        to ``lease_seconds`` (re-creating a lease that had expired if no other task took it), and
        the task's entry in its node's load (:meth:`claim_on`); with ``capacity`` (units, 0 =
        unlimited) and a node in the record, the node's capacity (:meth:`node_capacity`).

        Returns:
            The fresh record (read ``stop_requested`` and ``spec_version`` from it), or None: the
            task ended, another claim fenced this token out, or another task took one of its
            destinations while the leases had expired (the task is then ended with status 2). On
            None the caller must stop pushing at once and not call :meth:`finish`.

        Raises:
            ValueError: ``state`` is not STARTING, RUNNING, RETRYING or STOPPING (use :meth:`finish`
                to end a task), or ``capacity`` is negative or not finite.
            StoreUnavailableError: Redis failed.
        """
        if state is not None and state not in _HEARTBEAT_STATES:
            raise ValueError(f"a heartbeat cannot set state {state}")
        if capacity is not None and not (math.isfinite(capacity) and capacity >= 0):
            raise ValueError(f"a node's capacity must be >= 0 (0: unlimited), got {capacity!r}")
        if not self._valid(app_id, task_id) or token < 1:
            return None
        fields: list[str] = []
        for key, value in (
            ("status", None if status is None else int(status)),
            ("state", None if state is None else str(state)),
            ("reason", reason),
            ("layout_id", layout_id),
            ("users", users),
            ("stats", None if stats is None else stats.to_dict()),
        ):
            if value is not None:
                fields += [key, _dump(value)]
        args: list[str | int] = [
            self.prefix,
            f"{app_id}/{task_id}",
            task_id,
            token,
            self._lease_ms,
            self._ttl_ms,
            "" if capacity is None else repr(float(capacity)),
            *fields,
        ]
        with _unavailable():
            reply = self._heartbeat(keys=self._keys(app_id, task_id), args=args)
        return _record(reply[1]) if _text(reply[0]) == "ok" else None

    def note_restart(self, app_id: str, task_id: str, seconds: float) -> bool:
        """Whether to enqueue a restart of a stale task now: True at most once per ``seconds`` per task
        (``SET NX`` on ``{p}:restarting:<app_id>/<task_id>`` with that TTL), so the reconcilers of
        all workers, passing every few seconds, queue one message per period instead of one per pass.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            key = f"{self.prefix}:restarting:{app_id}/{task_id}"
            return bool(self.client.set(key, 1, nx=True, px=_ms(seconds)))

    def release(self, app_id: str, task_id: str, token: int, reason: str) -> TaskRecord | None:
        """Hand a running task back, atomically, if ``token`` holds it (its worker is shutting down):
        state QUEUED, status WAITING, ``reason``, no worker, ``heartbeat_at`` 0 (so any worker may
        claim it at once), its entry removed from its node's load; the StreamURL leases stay the
        task's, without a TTL, until the next claim renews them (no cooldown: the task resumes
        itself). The caller enqueues the task again. The next claim counts it in ``restarts``.
        A task whose stop was requested is ended instead (status STOPPED_BY_USER, cooldowns set), as
        :meth:`finish` would: it must not resume.

        Returns:
            The released record (ended, for a task being stopped), or None when the token no longer
            holds the task (or it ended).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        if not self._valid(app_id, task_id):
            return None
        args: list[str | int] = [
            self.prefix,
            f"{app_id}/{task_id}",
            task_id,
            token,
            _dump(reason),
            self._cooldown_ms,
            self._ttl_ms,
        ]
        with _unavailable():
            reply = self._release(keys=self._keys(app_id, task_id), args=args)
        return _record(reply[1]) if _text(reply[0]) == "ok" else None

    def finish(
        self,
        app_id: str,
        task_id: str,
        token: int | None,
        status: TaskStatus,
        reason: str,
        *,
        cooldown: bool = True,
    ) -> TaskRecord | None:
        """End a task, atomically, if ``token`` holds it (or ``token`` is None and it was never claimed).

        ``cooldown`` False ends it without the URL cooldown: for a task that never pushed (the API
        could not queue it), so that the client may retry at once.

        Sets state ENDED, ``status``, ``reason`` and ``ended_at``; deletes each of its StreamURL
        leases that still names this task, and sets that stream key's cooldown
        (``cooldown_seconds``) unless another task holds it; removes the task from the active set
        and from its node's load; the record expires ``ended_ttl_seconds`` later.

        Returns:
            The ended record, or None (nothing changed): the task is missing or already ended, or
            the token does not hold it.

        Raises:
            ValueError: ``status`` is WAITING or RUNNING (not final).
            StoreUnavailableError: Redis failed.
        """
        if status in (TaskStatus.WAITING, TaskStatus.RUNNING):
            raise ValueError(f"{status.name} is not a final status")
        if not self._valid(app_id, task_id):
            return None
        args: list[str | int] = [
            self.prefix,
            f"{app_id}/{task_id}",
            task_id,
            "" if token is None else token,
            int(status),
            _dump(reason),
            self._cooldown_ms if cooldown else 0,
            self._ttl_ms,
        ]
        with _unavailable():
            reply = self._finish(keys=self._keys(app_id, task_id), args=args)
        return _record(reply[1]) if _text(reply[0]) == "ok" else None

    # Events: the webhooks outbox (see the module docstring, "Events").

    def webhooks_key(self, app_id: str) -> str:
        """Redis key of an app's webhook endpoints."""
        return f"{self.prefix}:app:{app_id}:webhooks"

    def webhooks(self, app_id: str) -> list[WebhookEndpoint]:
        """The app's webhook endpoints (secrets in clear: for the deliverer), [] if none.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            text = self.client.get(self.webhooks_key(app_id))
        if not text:
            return []
        try:
            return [WebhookEndpoint.from_dict(item) for item in json.loads(text)]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"corrupt webhooks of AppId {app_id!r}: {exc}") from None

    def set_webhooks(self, app_id: str, endpoints: Sequence[WebhookEndpoint]) -> list[WebhookEndpoint]:
        """Replace the app's endpoints; an endpoint whose secret changed keeps signing with the old one
        too for a while (:func:`rtc_mpu.workers.events.rotate`). An empty list removes them: the
        task scripts then write no more events for the app (events already in an outbox are
        dropped at delivery, having no endpoint).

        Returns:
            The endpoints as stored.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        key = self.webhooks_key(app_id)
        with _unavailable():
            now = self.server_time()
            stored = rotate(self.webhooks(app_id), endpoints, now)
            if stored:
                self.client.set(key, _dump([e.to_dict() for e in stored]))
            else:
                self.client.delete(key)
        return stored

    def server_time(self) -> float:
        """The Redis server's clock, in unix seconds.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def emit_ping(self, app_id: str) -> str:
        """Queue a ``ping`` event for the app's endpoints (outbox ``<app_id>/``).

        Returns:
            The event's id.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        name = f"{app_id}/"
        keys = [
            self._outbox_key(name),
            f"{self.prefix}:events:seq:{name}",
            f"{self.prefix}:outbox",
            f"{self.prefix}:outbox:notify",
        ]
        with _unavailable():
            return _text(self._ping(keys=keys, args=[name, _dump(app_id)]))

    def emit_recording_ready(
        self, app_id: str, task_id: str, token: int, recording: Mapping[str, object]
    ) -> bool:
        """Queue a ``recording.ready`` event for a finished recording file of the task, if ``token``
        still holds it (the fence of :meth:`heartbeat`; a worker fenced out, or a task ended, emits
        nothing). The event's data: ``recording``'s ``output_id``, ``name`` (relative to the task's
        recordings folder), ``size_bytes``, ``duration_seconds`` and ``start_time`` (the sidecar's,
        :func:`rtc_mpu.workers.outputs.sidecar`) and ``url``, the file in the recordings API
        (:func:`rtc_mpu.spec.storage.recording_url`). Nothing is queued when the app has no webhooks.

        Returns:
            Whether ``token`` holds the task (the event was queued if the app has webhooks).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        if not self._valid(app_id, task_id) or token < 1:
            return False
        data = {
            key: recording.get(key)
            for key in ("output_id", "name", "size_bytes", "duration_seconds", "start_time")
        }
        data["url"] = recording_url(app_id, task_id, str(recording.get("name", "")))
        args: list[str | int] = [self.prefix, f"{app_id}/{task_id}", token, _dump(data)]
        with _unavailable():
            reply = self._recording_ready(keys=[self.task_key(app_id, task_id)], args=args)
        return _text(reply) == "ok"

    def _outbox_key(self, name: str) -> str:
        return f"{self.prefix}:outbox:{name}"

    def outbox_names(self) -> list[str]:
        """The outboxes (``<app_id>/<task_id>``, or ``<app_id>/`` for an app's pings) holding events.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            return sorted(_text(n) for n in self.client.smembers(f"{self.prefix}:outbox"))

    def wait_outbox(self, timeout: float) -> str | None:
        """The name of an outbox that got an event, waiting up to ``timeout`` seconds (less than the
        client's read timeout); None when none did.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            reply = self.client.blpop([f"{self.prefix}:outbox:notify"], timeout=timeout)
        return None if reply is None else _text(reply[1])

    def outbox_head(self, name: str) -> str | None:
        """The oldest undelivered event of an outbox (its JSON text,
        :class:`rtc_mpu.workers.events.OutboxEvent`), or None.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            head = self.client.lindex(self._outbox_key(name), 0)
        return None if head is None else _text(head)

    def outbox_ack(self, name: str, event_id: str) -> bool:
        """Take the event ``event_id`` off the head of its outbox (nothing if it is not the head).

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            popped = self._outbox_ack(
                keys=[self._outbox_key(name), f"{self.prefix}:outbox"], args=[name, event_id]
            )
        return bool(popped)

    def lock_outbox(self, name: str, token: str, seconds: float) -> bool:
        """Take (or renew) the right to deliver an outbox for ``seconds``: one deliverer per outbox at
        a time, so its events leave in order. False: another holder has it.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            return bool(
                self._outbox_lock(keys=[f"{self.prefix}:outbox:lock:{name}"], args=[token, _ms(seconds)])
            )

    def unlock_outbox(self, name: str, token: str) -> None:
        """Give the outbox's delivery right back, if ``token`` holds it.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            self._outbox_unlock(keys=[f"{self.prefix}:outbox:lock:{name}"], args=[token])

    def note_retry(self, name: str, seconds: float) -> bool:
        """Whether to schedule a retry of an outbox now: True at most once per ``seconds`` per outbox
        (``SET NX`` with that TTL), so that many triggers schedule one retry.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            return bool(self.client.set(f"{self.prefix}:outbox:retry:{name}", 1, nx=True, px=_ms(seconds)))

    def _deliveries_key(self, app_id: str) -> str:
        return f"{self.prefix}:app:{app_id}:deliveries"

    def delivery(self, app_id: str, event_id: str, url: str) -> Delivery | None:
        """The record of delivering an event to an endpoint, or None before the first attempt.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        with _unavailable():
            text = self.client.hget(self._deliveries_key(app_id), f"{event_id} {url}")
        return None if text is None else Delivery.from_dict(json.loads(text))

    def record_delivery(self, app_id: str, delivery: Delivery) -> None:
        """Keep a delivery's record; an app keeps its :data:`MAX_DELIVERIES` newest.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        key, field = self._deliveries_key(app_id), f"{delivery.event_id} {delivery.url}"
        order = f"{key}:order"
        with _unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, field, _dump(delivery.to_dict()))
            pipe.zadd(order, {field: self.server_time()}, nx=True)
            pipe.zrange(order, 0, -(MAX_DELIVERIES + 1))
            old = pipe.execute()[2]
            if old:
                pipe = self.client.pipeline(transaction=True)
                pipe.hdel(key, *old)
                pipe.zrem(order, *old)
                pipe.execute()

    def deliveries(self, app_id: str, limit: int = MAX_DELIVERIES) -> list[Delivery]:
        """The app's most recent deliveries, newest first.

        Raises:
            StoreUnavailableError: Redis failed.
        """
        key = self._deliveries_key(app_id)
        with _unavailable():
            found: list[Any] = list(self.client.zrevrange(f"{key}:order", 0, max(0, limit - 1)))
            fields = [_text(f) for f in found]
            values = self.client.hmget(key, fields) if fields else []
        return [Delivery.from_dict(json.loads(v)) for v in values if v is not None]
