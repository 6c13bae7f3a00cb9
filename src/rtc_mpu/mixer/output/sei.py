"""H.264 SEI "user data unregistered" messages carrying our JSON payload (voice activity, see
rtc_mpu.mixer.audio.vad).

ITU-T H.264 section 7.3.2.3 (sei_rbsp), 7.3.2.3.1 (sei_message), D.1.6 / D.2.6
(user_data_unregistered: a 16-byte UUID, then free-form bytes).  One SEI NAL unit built here is::

    00 00 00 01                      Annex B start code
    06                               nal_unit_header: forbidden_zero_bit 0, nal_ref_idc 0, type 6 (SEI)
    05                               payloadType 5 (user_data_unregistered), 0xFF-coded
    FF .. FF nn                      payloadSize = 16 + len(payload) in bytes, 0xFF-coded
    <16-byte UUID> <payload>         uuid_iso_iec_11578, user_data_payload_byte
    80                               rbsp_trailing_bits (stop bit + alignment)

with emulation prevention (7.4.1): after the NAL header an ``03`` is inserted after every ``00 00``
that is followed by a byte ``00`` .. ``03``, so the payload may hold any bytes.

Access units come in two framings: **Annex B** (start codes ``00 00 01`` / ``00 00 00 01``, what
libx264 emits and what MPEG-TS / raw .h264 carry) and **AVCC** (every NAL unit preceded by its
4-byte big-endian length, what FLV and MP4 store and what their demuxers return).
:func:`find_sei_payloads` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = [
    "NAL_TYPE_SEI",
    "SEI_TYPE_USER_DATA_UNREGISTERED",
    "SEI_UUID",
    "build_sei_nal",
    "find_sei_payloads",
    "insert_sei_nal",
    "split_nal_units",
    "with_fields",
]

SEI_UUID: Final[bytes] = bytes.fromhex("c6708a21bc635820a9680e090edd2445")
"""Our 16-byte uuid_iso_iec_11578, ``c6708a21-bc63-5820-a968-0e090edd2445``: a fixed constant, made once as
``uuid.uuid5(uuid.NAMESPACE_URL, "https://rtc-mpu.invalid/sei/voice-activity")`` (``.invalid``: a name,
not a real host).

Players look for this UUID to find the voice-activity JSON; never change it.
"""

NAL_TYPE_SEI: Final[int] = 6
"""nal_unit_type of an SEI NAL unit (H.264 table 7-1)."""

SEI_TYPE_USER_DATA_UNREGISTERED: Final[int] = 5
"""payloadType of user_data_unregistered (H.264 annex D.1)."""

_START_CODE: Final[bytes] = b"\x00\x00\x00\x01"
_UUID_SIZE: Final[int] = 16
_AVCC_LENGTH_SIZE: Final[int] = 4
# NAL unit types that may legitimately be a lone header byte: end of sequence (10), end of stream (11).
_ONE_BYTE_NAL_TYPES: Final = frozenset({10, 11})
# Coded slices (VCL NAL units): non-IDR, partitions A/B/C, IDR (table 7-1).
_VCL_NAL_TYPES: Final = frozenset({1, 2, 3, 4, 5})


def _ff_coded(value: int) -> bytes:
    """``value`` as SEI payloadType/payloadSize bytes: ``value // 255`` bytes 0xFF, then ``value % 255``."""
    return b"\xff" * (value // 255) + bytes([value % 255])


def _add_emulation_prevention(rbsp: bytes) -> bytes:
    """Insert ``03`` after every ``00 00`` followed by ``00`` .. ``03`` (H.264 7.4.1)."""
    if b"\x00\x00" not in rbsp:
        return rbsp
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _remove_emulation_prevention(nal: bytes) -> bytes:
    """Drop the ``03`` of every ``00 00 03`` (the NAL unit's payload bytes to its RBSP)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def build_sei_nal(payload: bytes, uuid: bytes = SEI_UUID) -> bytes:
    """One Annex B SEI NAL unit (with its 4-byte start code) holding one user_data_unregistered message.

    Args:
        payload: user_data_payload_byte values, any bytes (ours: UTF-8 JSON, see
            :meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`).
        uuid: the 16-byte uuid_iso_iec_11578 (default :data:`SEI_UUID`).

    Returns:
        ``00 00 00 01 06 05 <payloadSize> <uuid> <payload> 80``, emulation prevention applied after
        the NAL header byte.

    Raises:
        ValueError: if ``uuid`` is not 16 bytes.
    """
    if len(uuid) != _UUID_SIZE:
        raise ValueError(f"SEI uuid must be {_UUID_SIZE} bytes, got {len(uuid)}")
    rbsp = (
        _ff_coded(SEI_TYPE_USER_DATA_UNREGISTERED)
        + _ff_coded(_UUID_SIZE + len(payload))
        + bytes(uuid)
        + bytes(payload)
        + b"\x80"
    )
    return _START_CODE + bytes([NAL_TYPE_SEI]) + _add_emulation_prevention(rbsp)


def _is_avcc(data: bytes) -> bool:
    """Whether ``data`` is exactly a sequence of 4-byte-length-prefixed, well-formed NAL units.

    A NAL unit here is non-empty, has forbidden_zero_bit 0, and is a lone header byte only for the
    end-of-sequence/stream types, so Annex B data (which starts ``00 00 00 01 <header> ...`` or
    ``00 00 01 ...``) is not mistaken for AVCC.
    """
    pos, end = 0, len(data)
    if end == 0:
        return False
    while pos < end:
        if pos + _AVCC_LENGTH_SIZE > end:
            return False
        size = int.from_bytes(data[pos : pos + _AVCC_LENGTH_SIZE], "big")
        pos += _AVCC_LENGTH_SIZE
        if size == 0 or pos + size > end or data[pos] & 0x80:
            return False
        if size == 1 and data[pos] & 0x1F not in _ONE_BYTE_NAL_TYPES:
            return False
        pos += size
    return True


def _split_annex_b(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` offsets of the NAL units between start codes (trailing zero bytes dropped)."""
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        pos = data.find(b"\x00\x00\x01", start)
        end = len(data) if pos < 0 else pos
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            yield start, end


def _split_avcc(data: bytes) -> Iterator[tuple[int, int]]:
    pos = 0
    while pos + _AVCC_LENGTH_SIZE <= len(data):
        size = int.from_bytes(data[pos : pos + _AVCC_LENGTH_SIZE], "big")
        pos += _AVCC_LENGTH_SIZE
        yield pos, min(pos + size, len(data))
        pos += size


def _nal_spans(data: bytes) -> tuple[bool, list[tuple[int, int]]]:
    """Whether ``data`` is AVCC, and the ``(start, end)`` offsets of its NAL units (header included)."""
    avcc = _is_avcc(data)
    return avcc, list(_split_avcc(data) if avcc else _split_annex_b(data))


def split_nal_units(data: bytes) -> list[bytes]:
    """The NAL units (header byte first, emulation prevention still in) of Annex B or AVCC ``data``.

    AVCC is recognised when 4-byte big-endian lengths tile ``data`` exactly with well-formed NAL
    units; anything else is read as Annex B (bytes before the first start code are ignored).
    """
    return [data[start:end] for start, end in _nal_spans(data)[1]]


def _read_ff_coded(rbsp: bytes, pos: int) -> tuple[int, int]:
    """An 0xFF-coded value at ``pos`` and the position after it; ``(-1, pos)`` if truncated."""
    value = 0
    while pos < len(rbsp):
        byte = rbsp[pos]
        pos += 1
        value += byte
        if byte != 0xFF:
            return value, pos
    return -1, pos


def _sei_messages(rbsp: bytes) -> Iterator[tuple[int, bytes]]:
    """``(payloadType, payload bytes)`` of every sei_message in an SEI RBSP (after the NAL header)."""
    pos = 0
    # more_rbsp_data(): stop at the end or where only rbsp_trailing_bits (0x80, zero bytes) remain.
    while pos < len(rbsp) and rbsp[pos:].rstrip(b"\x00") != b"\x80":
        payload_type, pos = _read_ff_coded(rbsp, pos)
        payload_size, pos = _read_ff_coded(rbsp, pos)
        if payload_type < 0 or payload_size < 0 or pos + payload_size > len(rbsp):
            return  # truncated or corrupt: keep what was read so far
        yield payload_type, rbsp[pos : pos + payload_size]
        pos += payload_size


def find_sei_payloads(data: bytes, uuid: bytes = SEI_UUID) -> list[bytes]:
    """The user_data_payload_bytes of every user_data_unregistered SEI message with ``uuid`` in ``data``.

    Args:
        data: one access unit (or any run of NAL units), Annex B or AVCC with 4-byte lengths (what
            FFmpeg's FLV / MP4 demuxers return in ``bytes(packet)``); detected automatically.
        uuid: the 16-byte UUID to match (default :data:`SEI_UUID`); messages with other UUIDs (such as
            x264's own version string) are ignored.

    Returns:
        The payloads (UUID stripped) in stream order; several SEI NAL units, and several messages per
        NAL unit, are all read.  Corrupt or truncated messages end the walk of their NAL unit.
    """
    data = bytes(data)
    uuid = bytes(uuid)
    found: list[bytes] = []
    for nal in split_nal_units(data):
        if nal[0] & 0x1F != NAL_TYPE_SEI:
            continue
        for payload_type, message in _sei_messages(_remove_emulation_prevention(nal[1:])):
            if (
                payload_type == SEI_TYPE_USER_DATA_UNREGISTERED
                and len(message) >= _UUID_SIZE
                and message[:_UUID_SIZE] == uuid
            ):
                found.append(message[_UUID_SIZE:])
    return found


def insert_sei_nal(access_unit: bytes, sei_nal: bytes) -> bytes:
    """``access_unit`` with an Annex B SEI NAL unit (:func:`build_sei_nal`) placed before its first slice.

    The SEI goes after everything that precedes the first VCL NAL unit (access unit delimiter, SPS,
    PPS, the encoder's own SEI such as x264's buffering period, which H.264 7.4.1.2.3 requires to be
    the first SEI message of the access unit) and before the first coded slice, as 7.4.1.2.3 orders
    them.  The framing of ``access_unit`` is kept: for AVCC the start code is replaced by a 4-byte
    length.  Without any slice the SEI is appended.

    Args:
        access_unit: one coded picture's bytes, Annex B or AVCC (4-byte lengths).
        sei_nal: an Annex B NAL unit starting with ``00 00 00 01``.

    Raises:
        ValueError: if ``sei_nal`` does not start with a 4-byte start code.
    """
    if not sei_nal.startswith(_START_CODE):
        raise ValueError("sei_nal must start with the 4-byte start code 00 00 00 01")
    access_unit = bytes(access_unit)
    avcc, spans = _nal_spans(access_unit)
    nal = sei_nal[len(_START_CODE) :]
    if avcc:
        insert = len(nal).to_bytes(_AVCC_LENGTH_SIZE, "big") + nal
        header = _AVCC_LENGTH_SIZE
    else:
        insert = sei_nal
        header = 3  # the start code's 00 00 01; a leading zero byte (4-byte code) is kept before it
    for start, _end in spans:
        if access_unit[start] & 0x1F in _VCL_NAL_TYPES:
            at = start - header
            if not avcc and at > 0 and access_unit[at - 1] == 0:
                at -= 1  # insert before the zero_byte of a 4-byte start code
            return access_unit[:at] + insert + access_unit[at:]
    return access_unit + insert


def with_fields(payload: bytes, fields: Mapping[str, Any]) -> bytes:
    """The JSON ``payload`` (a voice-activity SEI document,
    :meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`) with ``fields`` added after its own keys, in
    the same compact UTF-8 form: one envelope for everything a frame's SEI says (``"ingest"``: the
    channel's ingests' progress, issue 19). A key already in the document is not replaced. Without
    ``fields``, ``payload`` itself.

    Raises:
        ValueError: ``payload`` is not a JSON object, or a field is not JSON (NaN included).
    """
    if not fields:
        return payload
    document = json.loads(payload)
    if not isinstance(document, dict):
        raise ValueError("the SEI payload is not a JSON object")
    for key, value in fields.items():
        document.setdefault(key, value)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
