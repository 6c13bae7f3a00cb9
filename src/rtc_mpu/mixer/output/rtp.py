"""RTP packets from encoded media, and the RTCP feedback that asks for a keyframe.

The ``rtc`` output hands the task's H.264 and an Opus encode of its audio to Janus as plain RTP
(:mod:`rtc_mpu.mixer.output.rtc`); these are the few pieces of RFC 3550 / RFC 6184 / RFC 7587 /
RFC 4585 that needs, kept free of I/O so they can be tested on bytes.

- :class:`RtpStream`: one stream's RTP header state (payload type, SSRC, sequence number).
- :func:`h264_payloads`: an H.264 access unit (Annex B byte stream) cut into RTP payloads:
  a NAL unit that fits is sent alone (RFC 6184 5.6), a larger one as FU-A fragments (5.8).
- :func:`keyframe_requested`: whether an RTCP compound packet carries a PLI (RFC 4585 6.3.1) or a
  FIR (RFC 5104 4.3.1).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

#: Largest RTP payload sent, bytes: 1200 keeps a packet (with IP, UDP and RTP headers) under any
#: path MTU WebRTC meets (the value libwebrtc and aiortc use).
MAX_PAYLOAD_BYTES = 1200
#: The RTP header written here: version 2, no padding, no extension, no CSRC (RFC 3550 5.1).
RTP_HEADER = struct.Struct("!BBHII")
RTP_VERSION_BITS = 0x80
#: H.264 NAL unit types (RFC 6184 5.2 / H.264 Table 7-1).
NAL_FU_A = 28
NAL_IDR = 5
#: RTCP packet types and feedback formats (RFC 4585 6.1, RFC 5104 4.3.1).
RTCP_RTPFB = 205
RTCP_PSFB = 206
PSFB_PLI = 1
PSFB_FIR = 4
RTCP_RR = 201


class RtpStream:
    """The header state of one outgoing RTP stream.

    Args:
        payload_type: the RTP payload type (0-127).
        ssrc: the stream's SSRC (32 bits).
        clock_rate: the RTP clock in Hz (90000 for video, 48000 for Opus).
        sequence: the first sequence number (random if None, RFC 3550 5.1).

    Raises:
        ValueError: payload type or SSRC out of range.
    """

    def __init__(self, payload_type: int, ssrc: int, clock_rate: int, sequence: int | None = None) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} is not 0-127")
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {ssrc} is not 32 bits")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.sequence = random.randrange(1 << 16) if sequence is None else sequence & 0xFFFF
        #: Packets and payload bytes sent so far (for an RTCP sender report).
        self.packets = 0
        self.octets = 0

    def packet(self, payload: bytes | memoryview, timestamp: int, marker: bool = False) -> bytes:
        """One RTP packet: the 12-byte header then ``payload``.

        Args:
            payload: the RTP payload.
            timestamp: in units of ``clock_rate`` (taken modulo 2**32).
            marker: the M bit (the last packet of a video frame).
        """
        header = RTP_HEADER.pack(
            RTP_VERSION_BITS,
            (0x80 if marker else 0) | self.payload_type,
            self.sequence,
            timestamp & 0xFFFFFFFF,
            self.ssrc,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return header + payload

    def timestamp(self, pts: int, time_base_num: int, time_base_den: int) -> int:
        """``pts`` (in ``time_base_num/time_base_den`` seconds) in this stream's clock, rounded."""
        return (pts * time_base_num * self.clock_rate + time_base_den // 2) // time_base_den


def nal_units(access_unit: bytes) -> Iterator[memoryview]:
    """The NAL units of an Annex B byte stream (start codes ``00 00 01`` / ``00 00 00 01``
    removed; bytes before the first start code, if any, are one NAL unit too). Empty units are
    skipped. The views share ``access_unit``'s memory."""
    view = memoryview(access_unit)
    find = access_unit.find
    start = 0
    end = len(access_unit)
    position = find(b"\x00\x00\x01", 0)
    if position < 0:
        if end:
            yield view
        return
    if position > 0:
        head = position - 1 if access_unit[position - 1] == 0 else position
        if head > 0:
            yield view[:head]
    start = position + 3
    while start < end:
        position = find(b"\x00\x00\x01", start)
        if position < 0:
            yield view[start:end]
            return
        stop = position
        while stop > start and access_unit[stop - 1] == 0:  # 4-byte start codes, trailing zeros
            stop -= 1
        if stop > start:
            yield view[start:stop]
        start = position + 3


def h264_payloads(access_unit: bytes, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> list[bytes | memoryview]:
    """RTP payloads (packetization-mode 1, RFC 6184) of one H.264 access unit in Annex B format:
    each NAL unit that fits is one payload, a larger one is cut into FU-A fragments. The caller
    sets the marker bit on the last payload.

    Raises:
        ValueError: ``max_payload_bytes`` leaves no room for an FU-A fragment (< 3).
    """
    if max_payload_bytes < 3:
        raise ValueError("max_payload_bytes must be at least 3")
    payloads: list[bytes | memoryview] = []
    room = max_payload_bytes - 2  # FU indicator and FU header
    for nal in nal_units(access_unit):
        if len(nal) <= max_payload_bytes:
            payloads.append(nal)
            continue
        header = nal[0]
        indicator = bytes(((header & 0xE0) | NAL_FU_A,))
        nal_type = header & 0x1F
        body = nal[1:]
        count = (len(body) + room - 1) // room
        # Even fragments: no tiny last packet (as libwebrtc does).
        size = (len(body) + count - 1) // count
        for index in range(count):
            chunk = body[index * size : (index + 1) * size]
            fu_header = nal_type | (0x80 if index == 0 else 0) | (0x40 if index == count - 1 else 0)
            payloads.append(indicator + bytes((fu_header,)) + chunk)
    return payloads


def keyframe_requested(data: bytes) -> bool:
    """Whether the RTCP compound packet ``data`` holds a PLI or a FIR (a malformed one: False)."""
    offset = 0
    size = len(data)
    while offset + 4 <= size:
        first, packet_type, length_words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            return False
        if packet_type == RTCP_PSFB and (first & 0x1F) in (PSFB_PLI, PSFB_FIR):
            return True
        offset += 4 * (length_words + 1)
    return False


def receiver_report(ssrc: int) -> bytes:
    """An empty RTCP receiver report from ``ssrc`` (RFC 3550 6.4.2): 8 bytes, no report blocks.
    Sent to latch a server's RTCP feedback to our address."""
    return struct.pack("!BBHI", RTP_VERSION_BITS, RTCP_RR, 1, ssrc)


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "RtpStream",
    "h264_payloads",
    "keyframe_requested",
    "nal_units",
    "receiver_report",
]
