"""An ingest's publisher in its channel: a Janus VideoRoom remote publisher (video, audio and a data
channel) fed plain RTP, as the ``rtc`` output's (:mod:`rtc_mpu.mixer.output.rtc`, which explains
remote publishers and their limits).

:meth:`IngestPublisher.add` and :meth:`IngestPublisher.remove` talk to Janus (async, on the event
loop); ``send_*`` are called from the player's thread and only write to UDP sockets. The data channel
travels as Janus expects from a remote publisher: one RTP packet per message (payload type 0: text),
which Janus hands to the subscribers that subscribed to the publisher's data stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Callable

from rtc_mpu.mixer.output.rtc import (
    ERROR_ID_EXISTS,
    H264_PAYLOAD_TYPE,
    LATCH_INTERVAL_SECONDS,
    OPUS_PAYLOAD_TYPE,
    REMOTE_SSRC_BASE,
    REMOTE_SSRC_STEP,
    SEND_BUFFER_BYTES,
    remote_publisher_request,
    remove_remote_publisher,
    room_secret,
)
from rtc_mpu.mixer.output.rtp import RtpStream, h264_payloads, keyframe_requested, receiver_report
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusSession

log = logging.getLogger(__name__)

#: VideoRoom error: a publisher with this id exists (a user, or another ingest).
USER_IN_USE = ERROR_ID_EXISTS
#: Largest data channel message sent, bytes (one RTP packet).
MAX_MESSAGE_BYTES = 1200


class UserInUseError(Exception):
    """The UserId already publishes in the channel."""


class IngestPublisher:
    """The ingest's remote publisher ``user_id`` in ``channel``.

    Args:
        channel: the channel's room and credentials.
        user_id: the publisher id (the ingest's UserId).
        video, audio: which streams it sends.
        on_keyframe_request: called (on the event loop) when a viewer asks for a keyframe.
    """

    def __init__(
        self,
        channel: ChannelConfig,
        user_id: str,
        *,
        video: bool,
        audio: bool,
        on_keyframe_request: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self.user_id = user_id
        self._on_keyframe_request = on_keyframe_request
        index = 0
        self._video: RtpStream | None = None
        self._audio: RtpStream | None = None
        if video:
            self._video = RtpStream(H264_PAYLOAD_TYPE, REMOTE_SSRC_BASE + index * REMOTE_SSRC_STEP, 90000)
            index += 1
        if audio:
            self._audio = RtpStream(OPUS_PAYLOAD_TYPE, REMOTE_SSRC_BASE + index * REMOTE_SSRC_STEP, 48000)
            index += 1
        self._data = RtpStream(0, REMOTE_SSRC_BASE + index * REMOTE_SSRC_STEP, 1000)
        self._rtp: socket.socket | None = None
        self._rtcp: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._latched_at = 0.0
        self._added = False

    async def add(self, replace: bool = False) -> None:
        """Add the publisher to the room and open the sockets. ``replace``: remove a publisher with
        the same id first (this ingest's own, left by a worker that died); without it an existing
        publisher is :class:`UserInUseError`. Janus' send errors later (``OSError`` from ``send_*``:
        its port closed) mean the publisher is gone (Janus restarted, or it was replaced).

        Raises:
            UserInUseError: the UserId publishes in the channel (and ``replace`` is False).
            JanusError, JanusUnreachableError: Janus refused (no such room: 426) or did not answer.
            OSError: Janus' host does not resolve.
        """
        channel = self.channel
        loop = self._loop = asyncio.get_running_loop()
        host = urllib.parse.urlsplit(channel.janus_url).hostname or "127.0.0.1"
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        janus_ip = str(address[0])
        iface = janus_ip if ipaddress.ip_address(janus_ip).is_loopback else None
        session = JanusSession(channel.janus_url, api_secret=channel.api_secret, token=channel.session_token)
        await session.connect()
        try:
            handle = await session.attach()
            body = remote_publisher_request(
                self.user_id,
                channel.room,
                room_secret(channel),
                video=self._video is not None,
                audio=self._audio is not None,
                iface=iface,
                data=True,
            )
            try:
                answer = await handle.request(body)
            except JanusError as exc:
                if exc.code != USER_IN_USE:
                    raise
                if not replace:
                    raise UserInUseError(f"{self.user_id!r} already publishes in the channel") from None
                await remove_remote_publisher(
                    handle_request=handle.request, channel=channel, publisher_id=self.user_id
                )
                answer = await handle.request(body)
        finally:  # the publisher belongs to the room, not to this session
            await session.close()
        self._added = True
        rtp = self._rtp = socket.socket(family, socket.SOCK_DGRAM)
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        rtp.connect((janus_ip, int(answer["port"])))
        rtcp = self._rtcp = socket.socket(family, socket.SOCK_DGRAM)
        rtcp.setblocking(False)
        rtcp.connect((janus_ip, int(answer["rtcp_port"])))
        loop.add_reader(rtcp.fileno(), self._on_rtcp)
        self._latch()
        log.info(
            "ingest publisher %s added to %s (RTP to %s:%s)",
            self.user_id,
            channel.room,
            janus_ip,
            answer["port"],
        )

    async def remove(self) -> None:
        """Remove the publisher from the room and close the sockets (best effort: errors are logged)."""
        rtcp, self._rtcp = self._rtcp, None
        rtp, self._rtp = self._rtp, None
        if rtcp is not None:
            if self._loop is not None:
                self._loop.remove_reader(rtcp.fileno())
            rtcp.close()
        if rtp is not None:
            rtp.close()
        if not self._added:
            return
        self._added = False
        channel = self.channel
        session = JanusSession(channel.janus_url, api_secret=channel.api_secret, token=channel.session_token)
        try:
            await session.connect()
            handle = await session.attach()
            await remove_remote_publisher(
                handle_request=handle.request, channel=channel, publisher_id=self.user_id
            )
        except JanusError as exc:
            log.warning("ingest publisher %s: not removed from %s: %s", self.user_id, channel.room, exc)
        finally:
            await session.close()

    # -- the player's thread -----------------------------------------------------------------------
    def send_video(self, access_unit: bytes, timestamp: int) -> None:
        """Send an H.264 access unit (Annex B) with RTP ``timestamp`` (1/90000 s).

        Raises:
            OSError: the socket is closed or Janus' port refuses (the publisher was removed).
        """
        stream, sock = self._video, self._socket()
        if stream is None:
            return
        payloads = h264_payloads(access_unit)
        last = len(payloads) - 1
        for index, payload in enumerate(payloads):
            sock.send(stream.packet(payload, timestamp, index == last))

    def send_audio(self, opus: bytes, timestamp: int) -> None:
        """Send an Opus frame with RTP ``timestamp`` (1/48000 s).

        Raises:
            OSError: as :meth:`send_video`.
        """
        stream, sock = self._audio, self._socket()
        if stream is not None:
            sock.send(stream.packet(opus, timestamp))

    def send_data(self, text: str) -> None:
        """Send a text message on the publisher's data channel (at most :data:`MAX_MESSAGE_BYTES`).

        Raises:
            OSError: as :meth:`send_video`.
            ValueError: the message is too long.
        """
        data = text.encode()
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError(f"a data channel message is at most {MAX_MESSAGE_BYTES} bytes")
        sock = self._socket()
        sock.send(self._data.packet(data, int(time.monotonic() * 1000)))

    def _socket(self) -> socket.socket:
        sock = self._rtp
        if sock is None:
            raise OSError("the ingest publisher is not in the room")
        now = time.monotonic()
        if now - self._latched_at >= LATCH_INTERVAL_SECONDS:
            self._latch()
        return sock

    def _latch(self) -> None:
        self._latched_at = time.monotonic()
        rtcp = self._rtcp
        if rtcp is not None:
            with contextlib.suppress(OSError):
                rtcp.send(receiver_report(self._data.ssrc + 1))

    # -- the event loop ------------------------------------------------------------------------------
    def _on_rtcp(self) -> None:
        rtcp = self._rtcp
        while rtcp is not None:
            try:
                data = rtcp.recv(1500)
            except OSError:  # nothing more, or ICMP unreachable for a latch packet
                return
            if keyframe_requested(data) and self._on_keyframe_request is not None:
                self._on_keyframe_request()


__all__ = ["IngestPublisher", "UserInUseError"]
