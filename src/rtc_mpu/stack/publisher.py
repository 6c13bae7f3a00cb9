"""Demo participants: aiortc publishers into a Janus VideoRoom room, each with its own colour,
moving bar, label and tone, or publishing a real media file.

Every synthetic picture also carries its capture time, burned in as a row of black/white blocks
(:func:`stamp_capture_time` / :func:`read_capture_time`), so a subscriber can measure the delay from
capture to delivery.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame
from av.packet import Packet
from PIL import Image, ImageDraw, ImageFont

from rtc_mpu.mixer.sources.janus import ERROR_ROOM_EXISTS, rtc_configuration
from rtc_mpu.mixer.sources.janus_http import JanusError, JanusHandle, JanusSession
from rtc_mpu.spec.tokens import read_claims
from rtc_mpu.stack.demo_media import COLORS, TONES

log = logging.getLogger(__name__)

#: RTP clock rate of video, Hz (RFC 3551).
VIDEO_CLOCK_RATE = 90000
#: Audio frame duration sent by the tone track, seconds (Opus' usual 20 ms).
AUDIO_PTIME = 0.020
#: Audio sample rate of the tone track, Hz.
AUDIO_RATE = 48000
#: Per-publisher bitrate cap (REMB) of rooms created by the demo publisher, bit/s (docs/architecture.md:
#: a 128 kbit/s cap drives browsers down to 320x240 at 7-10 fps).
ROOM_BITRATE = 1_500_000
#: Most publishers in a room created by the demo publisher.
ROOM_PUBLISHERS = 16
#: Capture-time stamp: 32 bits, each a block of this many pixels, in the picture's bottom rows.
STAMP_BITS = 32
STAMP_BLOCK = 8

Picture = npt.NDArray[np.uint8]


def stamp_capture_time(picture: Picture, ms: int) -> None:
    """Burn ``ms`` (milliseconds, modulo 2**32) into the bottom ``STAMP_BLOCK`` rows of an RGB picture.

    Needs a picture at least ``STAMP_BITS * STAMP_BLOCK`` (256) pixels wide.
    """
    row = picture[-STAMP_BLOCK:]
    for bit in range(STAMP_BITS):
        value = 255 if (ms >> (STAMP_BITS - 1 - bit)) & 1 else 0
        row[:, bit * STAMP_BLOCK : (bit + 1) * STAMP_BLOCK] = value


def read_capture_time(picture: Picture) -> int:
    """Read the stamp written by :func:`stamp_capture_time` from an RGB picture (ms modulo 2**32)."""
    row = picture[-STAMP_BLOCK + 2 : -2].astype(np.float32).mean(axis=(0, 2))
    value = 0
    for bit in range(STAMP_BITS):
        block = row[bit * STAMP_BLOCK + 2 : (bit + 1) * STAMP_BLOCK - 2].mean()
        value = (value << 1) | int(block > 127)
    return value


def wall_ms() -> int:
    """Wall-clock time in milliseconds modulo 2**32 (the capture-time stamp's unit)."""
    return int(time.time() * 1000) & 0xFFFFFFFF


class SyntheticVideoTrack(MediaStreamTrack):
    """A colour picture with a moving bar, a label and the capture time, at a fixed frame rate.

    Args:
        label: text drawn on the picture (the user id).
        color: 8-bit (R, G, B) background.
        width, height: picture size in pixels.
        fps: frames per second.
        stamp_time: burn the capture time into the bottom rows (for delay measurements; needs a
            picture at least 256 pixels wide).
    """

    kind = "video"

    def __init__(
        self,
        label: str,
        color: tuple[int, int, int],
        width: int = 320,
        height: int = 180,
        fps: int = 15,
        stamp_time: bool = False,
    ):
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.stamp_time = stamp_time and width >= STAMP_BITS * STAMP_BLOCK
        image = Image.new("RGB", (width, height), color)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=max(12, height // 8))
        draw.text((8, 6), label, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        self._base: Picture = np.asarray(image, dtype=np.uint8).copy()
        self._start: float | None = None
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        """The next picture, paced at ``fps``; pts in 1/90000 s."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._index / self.fps
        await asyncio.sleep(max(0.0, due - loop.time()))
        picture = self._base.copy()
        bar = max(self.width // 20, 4)
        x = int((self._index % (2 * self.fps)) / (2 * self.fps) * (self.width - bar))
        picture[self.height // 4 : self.height * 3 // 4, x : x + bar] = 255
        if self.stamp_time:
            stamp_capture_time(picture, wall_ms())
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = round(self._index * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self._index += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A sine tone in 20 ms frames of 48 kHz mono s16.

    Args:
        frequency: tone frequency in Hz.
        amplitude: peak as a fraction of full scale.
    """

    kind = "audio"

    def __init__(self, frequency: float, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._start: float | None = None
        self._sent = 0

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of tone, paced in real time; pts in 1/48000 s."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        samples = int(AUDIO_RATE * AUDIO_PTIME)
        due = self._start + self._sent / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - loop.time()))
        t = np.arange(self._sent, self._sent + samples, dtype=np.float64) / AUDIO_RATE
        tone = (self.amplitude * 32767 * np.sin(2 * np.pi * self.frequency * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._sent += samples
        return frame


async def ensure_room(handle: JanusHandle, room: str, pin: str | None = None) -> None:
    """Create VideoRoom room ``room`` (string id) unless it exists.

    Raises:
        JanusError: Janus refused to create it.
    """
    exists = await handle.request({"request": "exists", "room": room})
    if exists.get("exists"):
        return
    body = {
        "request": "create",
        "room": room,
        "permanent": False,
        "description": f"rtc-mpu channel {room}",
        "publishers": ROOM_PUBLISHERS,
        "bitrate": ROOM_BITRATE,
        "audiocodec": "opus",
        "videocodec": "vp8,h264",
        "notify_joining": True,
    }
    if pin:
        body["pin"] = pin
    try:
        await handle.request(body)
    except JanusError as exc:
        if exc.code != ERROR_ROOM_EXISTS:  # created by another publisher meanwhile
            raise


@dataclass
class Publisher:
    """One participant publishing audio and/or video into a room.

    Attributes:
        janus_url: Janus' HTTP API.
        room: the room id (see :func:`rtc_mpu.mixer.sources.janus.room_name`).
        user_id: the publisher id (the UserId; ``<UserId>.screen`` for a screen share).
        tracks: what to publish.
        api_secret, pin: Janus' API secret and the room's PIN, if any.
        ice_servers: STUN/TURN URLs for aiortc (none by default).
        token: a publish token from ``POST /v1/apps/{app_id}/tokens`` when Janus requires tokens
            (the stack's default): sent with every request and with the join; the room's PIN is
            read from it, and the room is not created here (the API created it).
    """

    janus_url: str
    room: str
    user_id: str
    tracks: Sequence[MediaStreamTrack]
    api_secret: str | None = None
    pin: str | None = None
    ice_servers: tuple[str, ...] = ()
    token: str | None = None
    _session: JanusSession | None = field(default=None, init=False)
    _pc: RTCPeerConnection | None = field(default=None, init=False)

    async def start(self) -> None:
        """Create the room if needed, join as a publisher and publish the tracks.

        Raises:
            JanusError: Janus refused (or JanusUnreachableError: it did not answer).
        """
        session = self._session = JanusSession(self.janus_url, api_secret=self.api_secret, token=self.token)
        await session.connect()
        handle = await session.attach()
        pin = self.pin
        join = {
            "request": "join",
            "ptype": "publisher",
            "room": self.room,
            "id": self.user_id,
            "display": self.user_id,
        }
        if self.token:
            pin = pin or read_claims(self.token).room_pin
            join["token"] = self.token
        else:
            await ensure_room(handle, self.room, self.pin)
        if pin:
            join["pin"] = pin
        await handle.message(join)
        pc = self._pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        for track in self.tracks:
            pc.addTrack(track)
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription
        kinds = {track.kind for track in self.tracks}
        event = await handle.message(
            {"request": "publish", "audio": "audio" in kinds, "video": "video" in kinds},
            jsep={"type": offer.type, "sdp": offer.sdp},
        )
        if not event.jsep:
            raise JanusError(0, "Janus sent no answer to the publish offer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=event.jsep["sdp"], type=event.jsep["type"]))
        log.info("%s publishing %s into %s", self.user_id, sorted(kinds), self.room)

    async def stop(self) -> None:
        """Stop publishing and leave (destroying the session makes Janus announce it). Idempotent."""
        for track in self.tracks:
            track.stop()
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def synthetic_tracks(
    index: int,
    label: str,
    width: int = 320,
    height: int = 180,
    fps: int = 15,
    audio: bool = True,
    stamp_time: bool = False,
) -> list[MediaStreamTrack]:
    """The demo tracks of user number ``index`` (0-based): its colour and label, and its tone."""
    tracks: list[MediaStreamTrack] = [
        SyntheticVideoTrack(label, COLORS[index % len(COLORS)], width, height, fps, stamp_time)
    ]
    if audio:
        tracks.append(ToneAudioTrack(TONES[index % len(TONES)]))
    return tracks


class RestampedTrack(MediaStreamTrack):
    """Re-stamps another track's frames with increasing pts (video: wall clock in 1/90000 s; audio:
    samples sent, in 1/sample-rate s). aiortc's MediaPlayer restarts pts at 0 when it loops a file,
    which its encoders refuse; this keeps a looped file publishing."""

    def __init__(self, track: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = track.kind
        self._track = track
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> Frame | Packet[Any]:
        """The wrapped track's next frame with a new pts. Raises MediaStreamError at its end."""
        frame = await self._track.recv()
        if isinstance(frame, av.AudioFrame):
            frame.pts, frame.time_base = self._samples, fractions.Fraction(1, frame.sample_rate)
            self._samples += frame.samples
        elif isinstance(frame, av.VideoFrame):
            now = asyncio.get_running_loop().time()
            if self._start is None:
                self._start = now
            frame.pts = round((now - self._start) * VIDEO_CLOCK_RATE)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        return frame

    def stop(self) -> None:
        """Stop this track and the wrapped one."""
        super().stop()
        self._track.stop()


def file_tracks(path: str, loop: bool = True) -> list[MediaStreamTrack]:
    """The audio and video tracks of a media file (aiortc's MediaPlayer decodes it in real time),
    looped with increasing pts.

    Raises:
        av.error.FFmpegError, OSError: the file cannot be opened.
    """
    player = MediaPlayer(path, loop=loop)
    return [RestampedTrack(t) for t in (player.audio, player.video) if t is not None]
