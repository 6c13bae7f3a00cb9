"""RTP packetization of the ``rtc`` output (RFC 3550 headers, RFC 6184 FU-A) and RTCP feedback,
checked on bytes and by decoding what the packets carry with FFmpeg's H.264 decoder."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc_mpu.mixer.output.encoder import EncoderSettings, PacketEncoder
from rtc_mpu.mixer.output.rtp import (
    MAX_PAYLOAD_BYTES,
    RtpStream,
    h264_payloads,
    keyframe_requested,
    nal_units,
    receiver_report,
)


def depacketize(payloads: list[bytes]) -> bytes:
    """An Annex B access unit rebuilt from RTP payloads (single NAL units and FU-A), as a receiver does."""
    out = bytearray()
    for payload in payloads:
        nal_type = payload[0] & 0x1F
        if nal_type == 28:
            header = payload[1]
            if header & 0x80:
                out += b"\x00\x00\x00\x01" + bytes(((payload[0] & 0xE0) | (header & 0x1F),))
            out += payload[2:]
        else:
            out += b"\x00\x00\x00\x01" + payload
    return bytes(out)


def test_nal_units_split_on_three_and_four_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x00\x01\x65\x04\x05"
    assert [bytes(n) for n in nal_units(stream)] == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x04\x05"]
    assert [bytes(n) for n in nal_units(b"\x65\x01")] == [b"\x65\x01"], "no start code: one unit"
    assert list(nal_units(b"")) == []
    assert list(nal_units(b"\x00\x00\x01")) == []


def test_a_small_nal_unit_is_one_payload_and_a_large_one_fu_a_fragments_of_even_size() -> None:
    small = b"\x41" + bytes(100)
    assert [bytes(p) for p in h264_payloads(b"\x00\x00\x00\x01" + small)] == [small]
    large = b"\x65" + bytes(range(256)) * 20  # 5121 bytes
    payloads = [bytes(p) for p in h264_payloads(b"\x00\x00\x00\x01" + large)]
    assert len(payloads) == 5
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert max(len(p) for p in payloads) - min(len(p) for p in payloads) <= 1, "no tiny last fragment"
    assert [p[0] for p in payloads] == [0x60 | 28] * 5, "FU indicator keeps NRI, type 28"
    assert payloads[0][1] == 0x80 | 5 and payloads[-1][1] == 0x40 | 5
    assert all(p[1] == 5 for p in payloads[1:-1])
    assert depacketize(payloads) == b"\x00\x00\x00\x01" + large


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=4000), min_size=1, max_size=5), st.integers(3, 1500))
def test_payloads_rebuild_the_access_unit(bodies: list[bytes], max_payload: int) -> None:
    # NAL unit bodies must not contain start codes or end with a zero byte (H.264 emulation prevention).
    units = [b"\x61" + b.replace(b"\x00", b"\x07") for b in bodies]
    stream = b"".join(b"\x00\x00\x00\x01" + u for u in units)
    payloads = [bytes(p) for p in h264_payloads(stream, max_payload)]
    assert all(len(p) <= max_payload for p in payloads)
    assert depacketize(payloads) == stream


def test_the_payloads_of_a_real_encode_decode_to_the_picture() -> None:
    encoder = PacketEncoder(EncoderSettings(640, 360, 30, 800_000, 64_000, profile="main"))
    picture = np.zeros((360, 640, 3), np.uint8)
    picture[:, :320] = (255, 0, 0)
    picture[:, 320:] = (0, 0, 255)
    packets = []
    for index in range(5):
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        packets += encoder.encode_video(frame, index)
    packets += encoder.flush()
    templates = encoder.templates
    assert templates.video is not None
    sps_pps = bytes(templates.video.codec_context.extradata or b"")
    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for packet in packets:
        if not packet.video:
            continue
        data = sps_pps + packet.data if packet.keyframe else packet.data
        rebuilt = depacketize([bytes(p) for p in h264_payloads(data)])
        decoded += decoder.decode(av.Packet(rebuilt))
    decoded += decoder.decode(None)
    assert len(decoded) == 5
    rgb = decoded[-1].to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb[180, 100] - (255, 0, 0)).max() < 40
    assert np.abs(rgb[180, 540] - (0, 0, 255)).max() < 40


def test_rtp_headers_count_sequence_numbers_and_wrap() -> None:
    stream = RtpStream(107, 1000, 90000, sequence=0xFFFF)
    first = stream.packet(b"ab", 90000 * 3, marker=False)
    second = stream.packet(b"cd", (1 << 32) + 5, marker=True)
    v, m_pt, seq, ts, ssrc = struct.unpack("!BBHII", first[:12])
    assert (v, m_pt, seq, ts, ssrc) == (0x80, 107, 0xFFFF, 270000, 1000)
    assert first[12:] == b"ab"
    v, m_pt, seq, ts, ssrc = struct.unpack("!BBHII", second[:12])
    assert (m_pt, seq, ts) == (0x80 | 107, 0, 5), "marker bit, sequence and timestamp wrap"
    assert (stream.packets, stream.octets) == (2, 4)
    assert stream.timestamp(31, 1, 30) == 93000, "frame 31 at 30 fps in a 90 kHz clock"
    assert RtpStream(111, 1010, 48000).timestamp(1024, 1, 48000) == 1024


def test_rtp_stream_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        RtpStream(128, 1, 90000)
    with pytest.raises(ValueError):
        RtpStream(96, 1 << 32, 90000)


def test_pli_and_fir_are_found_in_compound_rtcp_and_garbage_is_not() -> None:
    rr = receiver_report(1234)
    assert struct.unpack("!BBHI", rr) == (0x80, 201, 1, 1234)
    pli = struct.pack("!BBHII", 0x81, 206, 2, 1, 1000)
    fir = struct.pack("!BBHIIII", 0x84, 206, 4, 1, 0, 1000, 0)
    nack = struct.pack("!BBHIII", 0x81, 205, 3, 1, 1000, 0)
    remb = struct.pack("!BBHIIII", 0x8F, 206, 4, 1, 0, 0x52454D42, 0)
    assert keyframe_requested(rr + pli)
    assert keyframe_requested(fir)
    assert not keyframe_requested(rr + nack + remb)
    assert not keyframe_requested(b"")
    assert not keyframe_requested(b"\x00" * 40), "not version 2"
    assert not keyframe_requested(rr[:3])


def test_the_encoder_hands_every_mixed_block_to_its_packets_once() -> None:
    """The rtc output encodes Opus from the mixed blocks the AAC packets carry (no AAC decode):
    every block reaches exactly one packet, in order, whatever the AAC encoder's delay."""
    encoder = PacketEncoder(EncoderSettings(0, 0, 30, 0, 64_000))
    blocks = []
    carried: list[av.AudioFrame] = []
    for index in range(20):
        samples = np.full((2, 1024), index / 40, np.float32)
        block = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        block.sample_rate, block.pts = 48000, index * 1024
        blocks.append(block)
        for packet in encoder.encode_audio(block):
            assert not packet.video
            carried += packet.pcm
    assert [b.pts for b in carried] == [b.pts for b in blocks[: len(carried)]]
    assert len(carried) >= 18, "at most the encoder's delay is still inside it"
