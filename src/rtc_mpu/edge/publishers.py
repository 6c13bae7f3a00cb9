"""The Janus side of WHIP: one Janus session per publisher, held for as long as it publishes.

Each accepted WHIP ``POST`` becomes a :class:`Resource`: a Janus session (long poll and keepalives:
:class:`rtc_mpu.mixer.sources.janus_http.JanusSession`) with one VideoRoom handle joined as a
publisher (id and display name = the token's UserId, the token in the join body: the room's
``allowed`` list binds it to the room) and publishing the client's offer. The session authenticates
with service tokens the edge mints from the shared secret, so an established publisher is not cut
when its (join) token expires, as with the vendors' join tokens.

A resource ends, and its Janus session is destroyed (which makes the VideoRoom announce the
publisher's departure), on the first of:

* ``DELETE`` of its URL (:meth:`Publishers.remove`);
* Janus reports the PeerConnection gone (``hangup``: DTLS alert, ICE failure, the publisher
  kicked), the handle ``detached``, or the room ``destroyed``;
* the Janus session is lost (Janus restarted, the session timed out);
* the client never completes ICE/DTLS (no ``webrtcup``) within ``connect_timeout`` seconds;
* no media at all from the client (Janus' ``media`` events: every section ``receiving: false``)
  for ``media_timeout`` seconds: a client that vanished without a word (Janus 1.1 has no ICE
  consent freshness, so it would keep the publisher forever);
* the edge shuts down (:meth:`Publishers.close_all`).

Failures while setting a resource up destroy the session at once: nothing is left in Janus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rtc_mpu.edge.sdp import Offer, TrickleFragment, check_answer
from rtc_mpu.edge.settings import EdgeSettings
from rtc_mpu.mixer.sources.janus_http import (
    JanusError,
    JanusHandle,
    JanusSession,
    JanusSessionLostError,
    JanusUnreachableError,
    PluginEvent,
)
from rtc_mpu.spec.tokens import Claims, mint_service_token, room_name, room_pin

log = logging.getLogger(__name__)

#: Seconds allowed to destroy a session on teardown.
TEARDOWN_TIMEOUT = 3.0


def new_resource_id() -> str:
    """An unguessable resource id (192 random bits, base64url): the resource URL is its capability."""
    return secrets.token_urlsafe(24)


@dataclass
class Resource:
    """One WHIP publisher.

    Attributes:
        id: the resource id (the last segment of its URL).
        app_id, channel_id, user_id: whose it is (from the token).
        offer: the client's checked offer (its media sections and ICE credentials).
        etag: the resource's entity tag (sent as ``ETag``; ``If-Match`` of a ``PATCH`` must match).
        session, handle: its Janus session and VideoRoom publisher handle.
        created: when it was created (``time.monotonic()``).
        connected: whether Janus reported ``webrtcup`` (ICE and DTLS done).
    """

    id: str
    app_id: str
    channel_id: str
    user_id: str
    offer: Offer
    session: JanusSession
    handle: JanusHandle
    etag: str = field(default_factory=lambda: f'"{secrets.token_hex(8)}"')
    created: float = field(default_factory=time.monotonic)
    connected: bool = False
    watcher: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        """How logs name it: the user, the channel and the first characters of its id."""
        return f"{self.user_id} in {self.app_id}/{self.channel_id} ({self.id[:6]}…)"


class EdgeBusyError(RuntimeError):
    """The edge holds its maximum number of publishers (``MPU_EDGE_MAX_SESSIONS``)."""


class Publishers:
    """The edge's WHIP publishers by resource id.

    Args:
        settings: Janus' URL, the secret, the timeouts and the limit.
        session_factory: makes a Janus session (tests may wrap it); default :class:`JanusSession`.
    """

    def __init__(
        self, settings: EdgeSettings, session_factory: Callable[..., JanusSession] = JanusSession
    ) -> None:
        self.settings = settings
        self.resources: dict[str, Resource] = {}
        self._session_factory = session_factory
        self._pending = 0
        self._removals: set[asyncio.Task[bool]] = set()

    def _service_token(self) -> str:
        return mint_service_token(self.settings.token_secret, time.time(), self.settings.token_signature)

    def get(self, resource_id: str, app_id: str, channel_id: str) -> Resource | None:
        """The resource with this id in this channel, or None."""
        resource = self.resources.get(resource_id)
        if resource is None or (resource.app_id, resource.channel_id) != (app_id, channel_id):
            return None
        return resource

    async def publish(self, claims: Claims, token: str, offer_sdp: str, offer: Offer) -> tuple[Resource, str]:
        """Join the token's channel as its user and publish ``offer_sdp``.

        Args:
            claims: the verified claims of ``token`` (a publish token of the channel).
            token: the client's token, sent in the join (the room's ``allowed`` list).
            offer_sdp, offer: the client's offer and what :func:`rtc_mpu.edge.sdp.check_offer` made
                of it.

        Returns:
            The new resource and Janus' SDP answer.

        Raises:
            EdgeBusyError: the edge holds ``max_resources`` publishers already.
            JanusUnreachableError: Janus did not answer (or not within ``janus_timeout`` seconds).
            JanusError: Janus or the VideoRoom refused (``code``: 426 no such room, 432 too many
                publishers, 433 token not allowed in the room, 436 UserId already publishing,
                465 invalid SDP...).
            SdpError: Janus' answer refused a section the client sends (``InvalidSdp.Codec``).
        """
        if len(self.resources) + self._pending >= self.settings.max_resources:
            raise EdgeBusyError(f"the edge holds {self.settings.max_resources} publishers already")
        resource_id = new_resource_id()
        room = room_name(claims.app_id, claims.channel_id)
        session = self._session_factory(
            self.settings.janus_url,
            api_secret=self.settings.janus_api_secret,
            token=self._service_token,
            on_lost=lambda exc: self._on_lost(resource_id, exc),
        )
        self._pending += 1
        try:
            try:
                async with asyncio.timeout(self.settings.janus_timeout):
                    await session.connect()
                    handle = await session.attach()
                    await handle.message(
                        {
                            "request": "join",
                            "ptype": "publisher",
                            "room": room,
                            "id": claims.user_id,
                            "display": claims.user_id,
                            "pin": room_pin(self.settings.token_secret, room),
                            "token": token,
                        }
                    )
                    kinds = offer.kinds
                    event = await handle.message(
                        {"request": "publish", "audio": "audio" in kinds, "video": "video" in kinds},
                        jsep={"type": "offer", "sdp": offer_sdp},
                    )
            except TimeoutError:
                raise JanusUnreachableError(
                    f"Janus did not complete the join in {self.settings.janus_timeout:g} s"
                ) from None
            if not event.jsep or event.jsep.get("type") != "answer" or not event.jsep.get("sdp"):
                raise JanusError(0, "Janus sent no answer to the offer")
            answer = str(event.jsep["sdp"])
            check_answer(offer, answer)
        except BaseException:
            await self._destroy(session)
            raise
        finally:
            self._pending -= 1
        resource = Resource(
            resource_id, claims.app_id, claims.channel_id, claims.user_id, offer, session, handle
        )
        self.resources[resource_id] = resource
        resource.watcher = asyncio.create_task(self._watch(resource), name=f"whip-{resource_id[:6]}")
        log.info("WHIP publisher %s joined", resource.label)
        return resource, answer

    async def trickle(self, resource: Resource, fragment: TrickleFragment) -> None:
        """Hand a PATCH's candidates (and its end of candidates) to Janus.

        Raises:
            JanusSessionLostError: the Janus session is gone (the resource is removed).
            JanusError, JanusUnreachableError: Janus refused or did not answer.
        """
        try:
            await self._trickle(resource, fragment)
        except JanusSessionLostError as exc:
            await self.remove(resource.id, f"Janus session lost ({exc})")
            raise

    async def _trickle(self, resource: Resource, fragment: TrickleFragment) -> None:
        mids = [section.mid for section in resource.offer.sections]
        candidates = []
        for mid, candidate in fragment.candidates:
            index = mids.index(mid) if mid in mids else 0
            candidates.append({"candidate": candidate, "sdpMid": mid or mids[0], "sdpMLineIndex": index})
        timeout = self.settings.janus_timeout
        if candidates:
            await resource.session.post(
                {"janus": "trickle", "candidates": candidates}, handle=resource.handle.id, timeout=timeout
            )
        if fragment.end_of_candidates:
            await resource.session.post(
                {"janus": "trickle", "candidate": {"completed": True}},
                handle=resource.handle.id,
                timeout=timeout,
            )

    async def remove(self, resource_id: str, reason: str) -> bool:
        """End a resource: stop watching it and destroy its Janus session (the publisher leaves).

        Returns:
            False if there was no such resource (already removed).
        """
        resource = self.resources.pop(resource_id, None)
        if resource is None:
            return False
        log.info("WHIP publisher %s ends: %s", resource.label, reason)
        watcher = resource.watcher
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self._destroy(resource.session)
        return True

    async def close_all(self) -> None:
        """Remove every resource (the edge shuts down)."""
        await asyncio.gather(*(self.remove(rid, "the edge shuts down") for rid in list(self.resources)))

    async def _destroy(self, session: JanusSession) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(session.close()), TEARDOWN_TIMEOUT + 1)
        except (TimeoutError, JanusError) as exc:
            log.warning("destroying a Janus session failed: %s", exc)

    def _on_lost(self, resource_id: str, exc: Exception) -> None:
        if resource_id in self.resources:
            task = asyncio.get_running_loop().create_task(
                self.remove(resource_id, f"Janus session lost ({exc})")
            )
            self._removals.add(task)  # a reference until it is done
            task.add_done_callback(self._removals.discard)

    async def _watch(self, resource: Resource) -> None:
        """Follow the handle's events until the resource must end (see the module docstring)."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        connect_deadline = loop.time() + settings.connect_timeout
        receiving = {s.mid or s.kind: True for s in resource.offer.sections if s.sends}
        quiet_since: float | None = None
        reason = ""
        while not reason:
            if not resource.connected:
                wait: float | None = connect_deadline - loop.time()
            elif quiet_since is not None:
                wait = quiet_since + settings.media_timeout - loop.time()
            else:
                wait = None
            try:
                event = await asyncio.wait_for(resource.handle.events.get(), wait)
            except TimeoutError:
                reason = (
                    f"no media for {settings.media_timeout:g} s"
                    if resource.connected
                    else f"ICE/DTLS not completed within {settings.connect_timeout:g} s"
                )
                continue
            reason = self._reason_to_end(event)
            if event.kind == "webrtcup":
                resource.connected = True
            elif event.kind == "media":
                key = str(event.data.get("mid") or event.data.get("type") or "")
                receiving[key] = bool(event.data.get("receiving"))
                if any(receiving.values()):
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = loop.time()
        await self.remove(resource.id, reason)

    @staticmethod
    def _reason_to_end(event: PluginEvent) -> str:
        if event.kind == "hangup":
            return f"Janus hung up ({event.data.get('reason', 'no reason')})"
        if event.kind == "detached":
            return "the Janus handle was detached"
        if event.kind == "event" and event.data.get("videoroom") == "destroyed":
            return "the room was destroyed"
        return ""
