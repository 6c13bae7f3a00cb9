"""A small asyncio client of Janus' HTTP API (REST requests + long poll), enough for the VideoRoom.

Janus API reference: https://janus.conf.meetecho.com/docs/rest.html. A session is created with
``{"janus": "create"}``; plugin handles with ``attach``; plugin requests are ``message``s whose
answer is either synchronous (``success`` with ``plugindata``) or an ``ack`` followed by an
``event`` with the same transaction, delivered through the session's long poll
(``GET /janus/<session>?maxev=N``). Every HTTP call has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

#: Seconds allowed for one plain request.
REQUEST_TIMEOUT = 10.0
#: Seconds Janus holds a long poll open (its own limit is 30 s); the client waits a little longer.
LONG_POLL_TIMEOUT = 40.0
#: Seconds between keepalives; Janus' default session_timeout is 60 s.
KEEPALIVE_INTERVAL = 25.0
#: Janus error code: the session does not exist (any more), e.g. after Janus restarted.
ERROR_SESSION_NOT_FOUND = 458

JsonDict = dict[str, Any]


class JanusError(RuntimeError):
    """Janus answered with an error, or a plugin reported one.

    Attributes:
        code: Janus' or the plugin's numeric error code (0 when unknown).
        reason: Janus' explanation.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusUnreachableError(JanusError):
    """Janus could not be reached (connection refused, timeout, bad HTTP status)."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, reason)


class JanusSessionLostError(JanusError):
    """The Janus session ended (Janus restarted, or the session timed out)."""


def transaction_id() -> str:
    """A random transaction id."""
    return secrets.token_hex(8)


@dataclass
class PluginEvent:
    """An asynchronous message from a plugin handle.

    Attributes:
        kind: Janus' message type: ``event``, ``webrtcup``, ``media``, ``hangup``, ``detached``...
        data: the plugin's data (``plugindata.data``) for ``event``s, else the whole message.
        jsep: an SDP offer/answer (``{"type", "sdp"}``) if the event carries one.
    """

    kind: str
    data: JsonDict
    jsep: JsonDict | None = None


@dataclass
class JanusHandle:
    """A handle attached to a plugin in a session."""

    session: JanusSession
    id: int
    events: asyncio.Queue[PluginEvent] = field(default_factory=asyncio.Queue)

    async def request(self, body: JsonDict) -> JsonDict:
        """A synchronous plugin request (``create``, ``exists``, ``listparticipants``...).

        Returns:
            The plugin's answer data.

        Raises:
            JanusError: Janus or the plugin answered with an error.
            JanusUnreachableError: no answer in time.
        """
        reply = await self.session.post({"janus": "message", "body": body}, handle=self.id)
        data = _plugin_data(reply)
        _raise_plugin_error(data)
        return data

    async def message(
        self, body: JsonDict, jsep: JsonDict | None = None, timeout: float = REQUEST_TIMEOUT
    ) -> PluginEvent:
        """An asynchronous plugin request (``join``, ``publish``, ``start``...): wait for its event.

        Raises:
            JanusError: the plugin answered with an error.
            JanusUnreachableError: no event in ``timeout`` seconds.
        """
        txn = transaction_id()
        future = self.session.expect(txn)
        payload: JsonDict = {"janus": "message", "body": body, "transaction": txn}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            reply = await self.session.post(payload, handle=self.id)
            if reply.get("janus") == "success":  # some requests answer at once
                data = _plugin_data(reply)
                _raise_plugin_error(data)
                return PluginEvent("event", data, reply.get("jsep"))
            try:
                event = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                request = body.get("request")
                raise JanusUnreachableError(f"no answer to {request!r} in {timeout:g} s") from None
        finally:
            self.session.forget(txn)
        _raise_plugin_error(event.data)
        return event

    async def detach(self) -> None:
        """Detach the handle (best effort: errors are logged, not raised)."""
        try:
            await self.session.post({"janus": "detach"}, handle=self.id)
        except JanusError as exc:
            log.debug("detach %s: %s", self.id, exc)
        self.session.handles.pop(self.id, None)


def _plugin_data(reply: JsonDict) -> JsonDict:
    plugindata = reply.get("plugindata") or {}
    data = plugindata.get("data") if isinstance(plugindata, dict) else None
    return data if isinstance(data, dict) else {}


def _raise_plugin_error(data: JsonDict) -> None:
    if "error_code" in data or "error" in data:
        raise JanusError(int(data.get("error_code", 0)), str(data.get("error", "plugin error")))


class JanusSession:
    """A Janus session over the HTTP API with its long-poll and keepalive tasks.

    Args:
        url: the HTTP API URL, e.g. ``http://127.0.0.1:8088/janus``.
        api_secret: Janus' ``api_secret``, if it has one.
        token: an auth token, if Janus uses token authentication, or a function returning the
            token to send with each request (a signed token expires: the workers mint a fresh one).
        on_lost: called once (on the event loop) when the session ends.
    """

    def __init__(
        self,
        url: str,
        *,
        api_secret: str | None = None,
        token: str | Callable[[], str | None] | None = None,
        on_lost: Callable[[Exception], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_secret = api_secret
        self._token = token
        self.on_lost = on_lost
        self.id: int | None = None
        self.handles: dict[int, JanusHandle] = {}
        self._http: aiohttp.ClientSession | None = None
        self._pending: dict[str, asyncio.Future[PluginEvent]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def connect(self) -> None:
        """Create the session and start polling.

        Raises:
            JanusUnreachableError: Janus does not answer.
            JanusError: Janus refused (e.g. a wrong api_secret).
        """
        self._http = aiohttp.ClientSession()
        try:
            reply = await self.post({"janus": "create"})
        except BaseException:
            await self._http.close()
            raise
        self.id = int(reply["data"]["id"])
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> JanusHandle:
        """Attach a handle to ``plugin``.

        Raises:
            JanusError, JanusUnreachableError: as :meth:`post`.
        """
        reply = await self.post({"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, int(reply["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    def expect(self, txn: str) -> asyncio.Future[PluginEvent]:
        """A future resolved by the event answering transaction ``txn``."""
        future: asyncio.Future[PluginEvent] = asyncio.get_running_loop().create_future()
        self._pending[txn] = future
        return future

    def forget(self, txn: str) -> None:
        """Stop waiting for transaction ``txn``."""
        self._pending.pop(txn, None)

    @property
    def token(self) -> str | None:
        """The auth token to send now (None: Janus has no token authentication)."""
        return self._token() if callable(self._token) else self._token

    def _authenticate(self, payload: JsonDict) -> JsonDict:
        payload.setdefault("transaction", transaction_id())
        if self.api_secret:
            payload["apisecret"] = self.api_secret
        if token := self.token:
            payload["token"] = token
        return payload

    async def post(
        self, payload: JsonDict, handle: int | None = None, timeout: float = REQUEST_TIMEOUT
    ) -> JsonDict:
        """POST a Janus request to the session (or one of its handles); return Janus' reply.

        Raises:
            JanusError: Janus answered ``error`` (``JanusSessionLostError`` for code 458).
            JanusUnreachableError: connection failure, timeout or a non-JSON answer.
        """
        if self._http is None:
            raise JanusUnreachableError("session not connected")
        path = self.url
        if self.id is not None and payload.get("janus") != "create":
            path += f"/{self.id}"
            if handle is not None:
                path += f"/{handle}"
        try:
            async with self._http.post(
                path, json=self._authenticate(payload), timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise JanusUnreachableError(f"{self.url}: {exc.__class__.__name__}: {exc}") from None
        return _check(reply)

    async def _poll(self) -> None:
        assert self._http is not None
        failures = 0
        while not self._closed:
            params = {"maxev": "10", "rid": transaction_id()}
            if self.api_secret:
                params["apisecret"] = self.api_secret
            if token := self.token:
                params["token"] = token
            try:
                async with self._http.get(
                    f"{self.url}/{self.id}",
                    params=params,
                    timeout=aiohttp.ClientTimeout(total=LONG_POLL_TIMEOUT),
                ) as response:
                    batch = await response.json(content_type=None)
                failures = 0
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures += 1
                if failures >= 3:
                    self._lost(JanusUnreachableError(f"long poll failed: {exc.__class__.__name__}: {exc}"))
                    return
                await asyncio.sleep(0.5 * failures)
                continue
            for message in batch if isinstance(batch, list) else [batch]:
                if message.get("janus") == "error":
                    self._lost(_error(message))
                    return
                self._dispatch(message)

    def _dispatch(self, message: JsonDict) -> None:
        kind = str(message.get("janus", ""))
        if kind == "keepalive":
            return
        data = _plugin_data(message) if kind == "event" else message
        event = PluginEvent(kind, data, message.get("jsep"))
        txn = message.get("transaction")
        future = self._pending.get(txn) if isinstance(txn, str) else None
        if future is not None and kind == "event" and not future.done():
            future.set_result(event)
            return
        handle = self.handles.get(int(message.get("sender", 0) or 0))
        if handle is not None:
            handle.events.put_nowait(event)

    async def _keepalive(self) -> None:
        while not self._closed:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            try:
                await self.post({"janus": "keepalive"})
            except JanusError as exc:
                if isinstance(exc, JanusSessionLostError):
                    self._lost(exc)
                    return
                log.warning("Janus keepalive failed: %s", exc)

    def _lost(self, exc: Exception) -> None:
        if self._closed:
            return
        self._closed = True
        log.warning("Janus session %s lost: %s", self.id, exc)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        if self.on_lost is not None:
            self.on_lost(exc)

    async def close(self) -> None:
        """Destroy the session (best effort) and stop polling. Safe to call twice."""
        was_open = not self._closed
        self._closed = True
        if was_open and self._http is not None and self.id is not None:
            with contextlib.suppress(JanusError):
                await self.post({"janus": "destroy"}, timeout=3.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


def _error(reply: JsonDict) -> JanusError:
    error = reply.get("error") or {}
    code = int(error.get("code", 0)) if isinstance(error, dict) else 0
    reason = str(error.get("reason", "unknown error")) if isinstance(error, dict) else str(error)
    if code == ERROR_SESSION_NOT_FOUND:
        return JanusSessionLostError(code, reason)
    return JanusError(code, reason)


def _check(reply: Any) -> JsonDict:
    if not isinstance(reply, dict):
        raise JanusUnreachableError(f"unexpected answer {reply!r:.200}")
    if reply.get("janus") == "error":
        raise _error(reply)
    return reply
