"""A WebRTC viewer of one publisher of a channel (a task's ``<task_id>.mix``): subscribes through
Janus' VideoRoom with aiortc and hands every decoded frame to a callback, with its arrival time.

Used by the tests and ``bench/rtc_delay.py``; an operator can use it to check a task's ``rtc``
output without a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtc_mpu.mixer.sources.codecs import accept_unlabelled_h264
from rtc_mpu.mixer.sources.janus import rtc_configuration
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusSession, JsonDict

#: Called with each decoded frame (video or audio) and ``time.monotonic()`` seconds when it arrived.
FrameCallback = Callable[[av.VideoFrame | av.AudioFrame, float], None]


@dataclass
class Viewer:
    """Subscribes to ``feed`` in ``room``.

    Attributes:
        janus_url: Janus' HTTP API.
        room: the room id (``<AppId>:<ChannelId>``).
        feed: the publisher id to watch (``<task_id>.mix``).
        on_frame: told of every decoded frame.
        token: a Janus token (a subscribe token), if Janus requires one.
        pin: the room's PIN, if it has one.
        on_message: told of every data channel message the publisher sends (text or bytes) with
            ``time.time()`` seconds when it arrived (an ingest's progress), or None.
    """

    janus_url: str
    room: str
    feed: str
    on_frame: FrameCallback
    token: str | None = None
    pin: str | None = None
    on_message: Callable[[str | bytes, float], None] | None = None
    _session: JanusSession | None = field(default=None, init=False)
    _pc: RTCPeerConnection | None = field(default=None, init=False)
    _readers: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    async def start(self, timeout_seconds: float = 10.0) -> None:
        """Join as a subscriber of ``feed`` and start receiving.

        Raises:
            JanusError: Janus refused (no such feed, wrong PIN or token), or JanusUnreachableError.
        """
        accept_unlabelled_h264()  # how Janus offers a task's mix
        session = self._session = JanusSession(self.janus_url, token=self.token)
        await session.connect()
        handle = await session.attach()
        body: JsonDict = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.room,
            "streams": [{"feed": self.feed}],
        }
        if self.pin:
            body["pin"] = self.pin
        event = await handle.message(body, timeout=timeout_seconds)
        if not event.jsep:
            raise JanusError(0, f"no offer for {self.feed}")
        pc = self._pc = RTCPeerConnection(rtc_configuration(()))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.create_task(self._read(track)))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                if self.on_message is not None:
                    self.on_message(message, time.time())

        await pc.setRemoteDescription(RTCSessionDescription(sdp=event.jsep["sdp"], type=event.jsep["type"]))
        if self.on_message is not None and "m=application" in event.jsep["sdp"]:
            # Janus 1.1 relays a publisher's data to a subscriber only once the subscriber's data
            # channel has carried something (its SCTP "sender dry" event): open one.
            pc.createDataChannel("JanusDataChannel")
        await pc.setLocalDescription(await pc.createAnswer())
        local = pc.localDescription
        await handle.message({"request": "start"}, jsep={"type": local.type, "sdp": local.sdp})

    @property
    def remote_sdp(self) -> str:
        """The offer Janus made (which codecs and profiles the viewer gets)."""
        description = self._pc.remoteDescription if self._pc is not None else None
        return description.sdp if description is not None else ""

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            self.on_frame(frame, time.monotonic())

    async def stop(self) -> None:
        """Leave and close. Idempotent."""
        for reader in self._readers:
            reader.cancel()
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
