"""Webhook delivery: each outbox's events POSTed, signed, in order, at least once, to the app's endpoints.

Run by the events worker (:mod:`rtc_mpu.workers.events_app`, ``mpu events``), never in a mix slot.
One deliverer per outbox at a time (:meth:`~rtc_mpu.workers.store.TaskStore.lock_outbox`) takes its
head event and POSTs it to each endpoint that has not got it yet; when every endpoint got it (2xx) or
gave up, the event leaves the outbox and the next one goes. An endpoint that fails (timeout,
connection refused, a non-2xx answer, a redirect: redirects are never followed, so one to a private
address goes nowhere) is tried again after 1 s, 2 s, 4 s ... at most 60 s apart
(:func:`~rtc_mpu.workers.events.backoff`), and given up ``MPU_WEBHOOK_GIVE_UP_SECONDS`` (default
3600) after the event was made (or its first attempt, if earlier by this host's clock), so that the
events queued behind one given up are given up at their first failure, not an hour each; every
attempt is recorded (``GET .../webhooks/deliveries``). An
endpoint that is down holds back the later events of the same task (order), not other tasks'.

HTTP: the standard library, the host resolved once (2 s limit) and every address checked against
the address rules of overlay images (no private, loopback or link-local address unless
``MPU_ALLOW_PRIVATE_URLS=1``), the connection made to the checked address (no second lookup to
rebind), TLS verified against the URL's host name, ``MPU_WEBHOOK_TIMEOUT`` seconds (default 10) per
connect and per read, at most 64 KiB of the answer read.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from rtc_mpu.spec.urls import (
    RESOLVE_TIMEOUT,
    _resolve_within,
    allow_private_urls,
    is_public_address,
    system_resolve,
)
from rtc_mpu.workers.events import (
    DEFAULT_GIVE_UP_SECONDS,
    SIGNATURE_HEADER,
    Delivery,
    OutboxEvent,
    WebhookEndpoint,
    backoff,
    event_body,
    sign,
)
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

log = logging.getLogger(__name__)

#: Default of ``MPU_WEBHOOK_TIMEOUT``, seconds per connect and per read.
DEFAULT_TIMEOUT = 10.0
#: Most bytes of an answer read.
MAX_ANSWER = 65536
#: User-Agent of the deliveries.
USER_AGENT = "rtc-mpu-webhooks/1"


@dataclass(frozen=True)
class DeliverySettings:
    """How deliveries are made (``MPU_WEBHOOK_*``, ``MPU_ALLOW_PRIVATE_URLS``)."""

    timeout: float = DEFAULT_TIMEOUT
    give_up_seconds: float = DEFAULT_GIVE_UP_SECONDS
    allow_private: bool = False

    @classmethod
    def from_env(cls) -> DeliverySettings:
        """From the environment.

        Raises:
            ValueError: a malformed or non-positive number (the message names the variable).
        """

        def number(name: str, default: float) -> float:
            text = os.environ.get(name) or ""
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {text!r}")
            return value

        return cls(
            timeout=number("MPU_WEBHOOK_TIMEOUT", DEFAULT_TIMEOUT),
            give_up_seconds=number("MPU_WEBHOOK_GIVE_UP_SECONDS", DEFAULT_GIVE_UP_SECONDS),
            allow_private=allow_private_urls(),
        )


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address already checked (the Host header keeps the URL's name)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to an address already checked, the certificate checked for the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


Resolver = Callable[[str, int], list[str]]


def _shown(url: str) -> str:
    """A URL for logs: no query (it may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def post(
    url: str,
    body: bytes,
    signature: str,
    settings: DeliverySettings,
    resolve: Resolver = system_resolve,
) -> tuple[int | None, str | None]:
    """POST ``body`` to ``url`` once.

    Returns:
        (HTTP status or None when there was no answer, error or None when it was a 2xx).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    try:
        addresses = _resolve_within(resolve, host, port, RESOLVE_TIMEOUT)
    except (OSError, UnicodeError, ValueError) as exc:
        return None, f"{host} does not resolve ({exc.__class__.__name__})"
    allowed = [a for a in addresses if settings.allow_private or is_public_address(a)]
    if not allowed:
        return None, f"{host} resolves to no public address (MPU_ALLOW_PRIVATE_URLS=1 allows private ones)"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature,
    }
    error = "no address answered"
    for address in allowed[:3]:
        connection: http.client.HTTPConnection = (
            _PinnedHTTPS(host, port, address, settings.timeout)
            if tls
            else _PinnedHTTP(host, port, address, settings.timeout)
        )
        try:
            connection.request("POST", target, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read(MAX_ANSWER)
            status = answer.status
        except (OSError, http.client.HTTPException) as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:200]
            continue
        finally:
            connection.close()
        if 200 <= status < 300:
            return status, None
        if 300 <= status < 400:
            return status, "redirects are not followed"
        return status, f"answered {status}"
    return None, error


def deliver_head(
    store: TaskStoreProtocol,
    name: str,
    settings: DeliverySettings,
    *,
    send: Callable[[str, bytes, str, DeliverySettings], tuple[int | None, str | None]] | None = None,
    now: Callable[[], float] = time.time,
) -> float | None:
    """Deliver the outbox ``name``'s events, oldest first, until it is empty or an endpoint must wait.

    Returns:
        None: the outbox is empty; else the seconds until the next attempt is due.
    """
    sender = send or (lambda url, body, sig, s: post(url, body, sig, s))
    app_id = name.rpartition("/")[0]
    while True:
        head = store.outbox_head(name)
        if head is None:
            return None
        try:
            event = OutboxEvent.from_json(head)
            body = event_body(event)
        except (ValueError, KeyError, TypeError) as exc:  # never blocks the outbox for good
            log.error("outbox %s: dropping an unreadable event: %s", name, exc)
            event_id = head[7 : head.find('"', 7)] if head.startswith('{"id":"') else ""
            if not store.outbox_ack(name, event_id):
                return None
            continue
        endpoints = store.webhooks(app_id)
        wait = _attempt_all(store, app_id, name, event, body, endpoints, settings, sender, now)
        if wait is not None:
            return wait
        store.outbox_ack(name, event.id)


def _attempt_all(
    store: TaskStoreProtocol,
    app_id: str,
    name: str,
    event: OutboxEvent,
    body: bytes,
    endpoints: list[WebhookEndpoint],
    settings: DeliverySettings,
    sender: Callable[[str, bytes, str, DeliverySettings], tuple[int | None, str | None]],
    now: Callable[[], float],
) -> float | None:
    """One round over the endpoints that have not got ``event``; the shortest wait, or None when all
    got it or gave up."""
    waits: list[float] = []
    task_id = name.rpartition("/")[2] or None
    for endpoint in endpoints:
        record = store.delivery(app_id, event.id, endpoint.url) or Delivery(
            event.id, event.type, endpoint.url, task_id=task_id, sequence=event.sequence
        )
        if record.done:
            continue
        moment = now()
        if record.next_attempt_at > moment:
            waits.append(record.next_attempt_at - moment)
            continue
        stamp = int(moment)
        status, error = sender(endpoint.url, body, sign(endpoint.secrets(moment), body, stamp), settings)
        moment = now()
        record.attempts += 1
        record.last_status, record.last_error = status, error
        record.last_attempt_at = moment
        if record.first_attempt_at is None:
            record.first_attempt_at = moment
        if error is None:
            record.delivered_at = moment
        elif moment - min(record.first_attempt_at, event.at) >= settings.give_up_seconds:
            record.given_up_at = moment
            log.warning(
                "webhook %s of %s to %s given up after %d attempts: %s",
                event.id,
                name,
                _shown(endpoint.url),
                record.attempts,
                error,
            )
        else:
            delay = backoff(record.attempts)
            record.next_attempt_at = moment + delay
            waits.append(delay)
        store.record_delivery(app_id, record)
    return min(waits) if waits else None
