"""H.264 SEI user data unregistered: build/parse round trips, then through the real encoder and muxers.

End to end, the JSON rides in the libx264 output of :class:`rtc_mpu.mixer.output.encoder.PacketEncoder`,
muxed by :class:`rtc_mpu.mixer.output.muxers.ContainerMuxer` to FLV and MP4 files (read back as AVCC
packets), and pushed over RTMP to nginx-rtmp, whose HLS segments (MPEG-TS, Annex B) carry it on to
viewers.  FFmpeg's own H.264 decoder finds it too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.logging
import numpy as np
import pytest
from av.sidedata.sidedata import SideDataContainer
from av.sidedata.sidedata import Type as SideDataType
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, SAMPLE_RATE
from rtc_mpu.mixer.audio.vad import VadReport
from rtc_mpu.mixer.output.encoder import EncoderSettings, PacketEncoder
from rtc_mpu.mixer.output.muxers import ContainerMuxer, legacy_output
from rtc_mpu.mixer.output.sei import (
    SEI_UUID,
    build_sei_nal,
    find_sei_payloads,
    insert_sei_nal,
    split_nal_units,
)
from rtc_mpu.mixer.output.sinks import sink_target
from rtc_mpu.stack.nginx_rtmp import NginxRtmp

FOREIGN_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")  # x264's own version-string SEI
WIDTH, HEIGHT, FPS, FRAMES, EVERY = 320, 180, 15, 60, 10
#: A payload that needs emulation prevention (00 00 00, 00 00 01, 00 00 02, 00 00 03, trailing 00 00).
TRICKY = b"\x00\x00\x00\x00\x00\x03\x00\x00\x01\x00\x00\x02x\x00\x00"


def annex_b_to_avcc(data: bytes) -> bytes:
    """The same NAL units with 4-byte big-endian lengths instead of start codes."""
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in split_nal_units(data))


def is_avcc(data: bytes) -> bool:
    """Whether 4-byte big-endian lengths tile ``data`` exactly."""
    pos = 0
    while pos + 4 <= len(data):
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
    return pos == len(data)


def is_annex_b(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def sei_nal(*messages: tuple[int, bytes]) -> bytes:
    """An Annex B SEI NAL unit of several ``(payloadType, payload)`` messages (payloads free of 00 00)."""
    body = b""
    for payload_type, payload in messages:
        assert b"\x00\x00" not in payload and len(payload) < 255 and payload_type < 255
        body += bytes([payload_type, len(payload)]) + payload
    return b"\x00\x00\x00\x01\x06" + body + b"\x80"


# -- build / parse -------------------------------------------------------------------------------


def test_layout_of_a_small_nal_unit() -> None:
    assert len(SEI_UUID) == 16
    nal = build_sei_nal(b'{"a":1}')
    assert nal == b"\x00\x00\x00\x01\x06\x05" + bytes([16 + 7]) + SEI_UUID + b'{"a":1}' + b"\x80"
    assert find_sei_payloads(nal) == [b'{"a":1}']


@pytest.mark.parametrize("size", [0, 1, 238, 239, 240, 254, 255, 300, 600, 5000])
def test_payload_sizes_are_ff_coded(size: int) -> None:
    payload = bytes(range(97, 123)) * (size // 26) + b"z" * (size % 26)
    nal = build_sei_nal(payload)
    total = 16 + size
    assert nal[6 : 6 + total // 255 + 1] == b"\xff" * (total // 255) + bytes([total % 255])
    assert find_sei_payloads(nal) == [payload]


@pytest.mark.parametrize(
    "payload",
    [TRICKY, b"\x00\x00\x03", b"\x00\x00\x00", b"\x00" * 50, bytes(range(256)) * 3, b"\x00\x00"],
)
def test_emulation_prevention_round_trip(payload: bytes) -> None:
    nal = build_sei_nal(payload)
    body = nal[4:]
    assert b"\x00\x00\x00" not in body and b"\x00\x00\x01" not in body and b"\x00\x00\x02" not in body
    assert len(split_nal_units(nal)) == 1  # no start code emulated inside
    assert find_sei_payloads(nal) == [payload]
    assert find_sei_payloads(annex_b_to_avcc(nal)) == [payload]


def test_emulation_prevention_bytes_are_exactly_where_the_standard_puts_them() -> None:
    nal = build_sei_nal(b"\x00\x00\x00\x00\x03")
    # RBSP payload 00 00 00 00 03 -> 00 00 03 00 00 03 03 (03 after each 00 00 followed by <= 03)
    assert nal.endswith(SEI_UUID + b"\x00\x00\x03\x00\x00\x03\x03\x80")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(min_size=16, max_size=16))
def test_any_bytes_round_trip_in_both_framings(payload: bytes, uuid: bytes) -> None:
    nal = build_sei_nal(payload, uuid=uuid)
    assert find_sei_payloads(nal, uuid=uuid) == [payload]
    assert find_sei_payloads(annex_b_to_avcc(nal), uuid=uuid) == [payload]
    if uuid != SEI_UUID:
        assert find_sei_payloads(nal) == []


def test_several_messages_and_nal_units_in_one_access_unit() -> None:
    ours, theirs = SEI_UUID, FOREIGN_UUID
    access_unit = (
        sei_nal(
            (0, b"\x93\xc7\x01"),
            (5, ours + b"first"),
            (128, b"\x80"),  # a reserved type whose first byte looks like rbsp_trailing_bits
            (5, theirs + b"x264"),
            (5, ours + b"second"),
        )
        + b"\x00\x00\x01\x09\xf0"  # AUD with a 3-byte start code
        + build_sei_nal(b"third")
        + build_sei_nal(b"foreign", uuid=theirs)
        + b"\x00\x00\x00\x01\x65\x88\x84\x00\x21\x00\x00"  # IDR slice, then trailing zero bytes
        + build_sei_nal(b"fourth")
    )
    expected = [b"first", b"second", b"third", b"fourth"]
    assert find_sei_payloads(access_unit) == expected
    assert find_sei_payloads(annex_b_to_avcc(access_unit)) == expected
    assert find_sei_payloads(access_unit, uuid=theirs) == [b"x264", b"foreign"]


def test_foreign_short_and_corrupt_messages_are_ignored() -> None:
    assert find_sei_payloads(build_sei_nal(b"hello", uuid=FOREIGN_UUID)) == []
    assert find_sei_payloads(sei_nal((5, SEI_UUID[:10]))) == []  # shorter than a UUID
    assert find_sei_payloads(sei_nal((4, SEI_UUID + b"type 4"))) == []  # registered user data
    truncated = build_sei_nal(b"0123456789")[:-6]
    assert find_sei_payloads(truncated) == []
    assert find_sei_payloads(b"") == []
    assert find_sei_payloads(b"\x00\x00\x00\x01\x65\x88") == []


def test_insert_before_the_first_slice_in_both_framings() -> None:
    buffering_period = sei_nal((0, b"\x93\xc7\x01"))
    slices = b"\x00\x00\x00\x01\x65\x88\x80" + b"\x00\x00\x00\x01\x65\x99\x80"
    access_unit = b"\x00\x00\x00\x01\x09\xf0" + buffering_period + slices
    ours = build_sei_nal(b"payload")
    out = insert_sei_nal(access_unit, ours)
    assert out == b"\x00\x00\x00\x01\x09\xf0" + buffering_period + ours + slices
    assert [nal[0] & 0x1F for nal in split_nal_units(out)] == [9, 6, 6, 5, 5]

    avcc = annex_b_to_avcc(access_unit)
    out = insert_sei_nal(avcc, ours)
    assert out == annex_b_to_avcc(b"\x00\x00\x00\x01\x09\xf0" + buffering_period + ours + slices)
    assert find_sei_payloads(out) == [b"payload"]

    # A 3-byte start code before the slice; no slice at all: appended.
    assert insert_sei_nal(b"\x00\x00\x01\x41\x9a", ours) == ours + b"\x00\x00\x01\x41\x9a"
    assert insert_sei_nal(buffering_period, ours) == buffering_period + ours
    with pytest.raises(ValueError):
        insert_sei_nal(access_unit, ours[1:])
    with pytest.raises(ValueError):
        build_sei_nal(b"x", uuid=b"short")


# -- through the encoder -------------------------------------------------------------------------


@contextmanager
def ffmpeg_warnings() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg log lines at WARNING or worse (from any thread) while the block runs."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(previous)


def payload_for(index: int) -> bytes:
    """Frame ``index``'s SEI: a voice-activity report, once raw bytes needing emulation prevention."""
    if index == 2 * EVERY:
        return TRICKY
    t = index / FPS
    levels = {"alice": -20.0 - index / 10, "bob": -45.5, "\u6797": -100.0}
    return VadReport(t=t, levels=levels, speaking=("alice", "bob"), speaker="alice").to_json()


def encode(output: str) -> dict[int, bytes]:
    """FRAMES frames (and their audio) through PacketEncoder and a muxer into ``output``; the SEI
    payloads by frame."""
    settings = EncoderSettings(WIDTH, HEIGHT, FPS, video_bitrate=300_000, audio_bitrate=64_000)
    encoder = PacketEncoder(settings)
    muxer = ContainerMuxer(legacy_output(sink_target(output)), encoder.templates)
    sent: dict[int, bytes] = {}
    audio_pts = 0
    rng = np.random.default_rng(5)
    try:
        for index in range(FRAMES):
            picture = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            picture[:, : index * 4] = (200, 40, 90)
            sei = payload_for(index) if index % EVERY == 0 else None
            if sei is not None:
                sent[index] = sei
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            for packet in encoder.encode_video(frame, index, sei=sei):
                muxer.write(packet)
            while audio_pts * FPS < (index + 1) * SAMPLE_RATE:
                block = av.AudioFrame.from_ndarray(
                    np.zeros((2, BLOCK_SAMPLES), np.float32), format="fltp", layout="stereo"
                )
                block.sample_rate, block.pts, block.time_base = (
                    SAMPLE_RATE,
                    audio_pts,
                    Fraction(1, SAMPLE_RATE),
                )
                for packet in encoder.encode_audio(block):
                    muxer.write(packet)
                audio_pts += BLOCK_SAMPLES
        for packet in encoder.flush():
            muxer.write(packet)
    finally:
        muxer.close()
    assert encoder.stats.video_frames == FRAMES
    return sent


@pytest.mark.parametrize("container_format", ["flv", "mp4"])
def test_libx264_packets_are_annex_b_and_the_muxers_store_avcc(tmp_path: Path, container_format: str) -> None:
    """What PacketEncoder relies on: the encoder hands Annex B to the muxer even with GLOBAL_HEADER."""
    path = tmp_path / f"probe.{container_format}"
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"tune": "zerolatency", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8), format="rgb24")
        frame.pts, frame.time_base = 0, Fraction(1, FPS)
        packets = stream.encode(frame) + stream.encode(None)
        extradata = stream.codec_context.extradata
        assert extradata is not None and is_annex_b(extradata)  # SPS/PPS out of band, still Annex B
        assert packets and all(is_annex_b(bytes(p)) for p in packets)
        container.mux(packets)
    with av.open(str(path)) as container:
        stored = [bytes(p) for p in container.demux(video=0) if p.size]
    assert stored and all(is_avcc(data) and not is_annex_b(data) for data in stored)


@pytest.mark.parametrize("suffix", ["flv", "mp4"])
def test_sei_survives_the_encoder_and_the_muxer(tmp_path: Path, suffix: str) -> None:
    output = tmp_path / f"sei.{suffix}"
    with ffmpeg_warnings() as logs:
        sent = encode(str(output))
    assert logs == []
    assert sorted(sent) == list(range(0, FRAMES, EVERY))
    assert json.loads(sent[0])["speaker"] == "alice"

    with ffmpeg_warnings() as logs, av.open(str(output)) as container:
        stream = container.streams.video[0]
        found: dict[int, list[bytes]] = {}
        decoded: dict[int, list[bytes]] = {}
        frames = first_pts = 0
        for ordinal, packet in enumerate(p for p in container.demux(stream) if p.size):
            data = bytes(packet)
            assert is_avcc(data)
            assert packet.pts is not None
            # The n-th packet is frame n (no B-frames), at pts n / fps after the first one (the muxer
            # shifts everything by the AAC priming delay; FLV rounds to milliseconds, MP4 is exact).
            first_pts = packet.pts if ordinal == 0 else first_pts
            elapsed = (packet.pts - first_pts) * packet.time_base
            if suffix == "mp4":
                assert elapsed == Fraction(ordinal, FPS)
            else:
                assert abs(elapsed - Fraction(ordinal, FPS)) <= Fraction(1, 1000)
            if payloads := find_sei_payloads(data):
                found[ordinal] = payloads
            # x264's own version SEI (another UUID) is in the first frame, and never mistaken for ours.
            foreign = find_sei_payloads(data, uuid=FOREIGN_UUID)
            assert bool(foreign) == (ordinal == 0)
            assert all(payload.startswith(b"x264 - core") for payload in foreign)
            for frame in packet.decode():
                frames += 1
                container_of_sides = cast(SideDataContainer, frame.side_data)  # the stub says TypedDict
                sides = [container_of_sides[i] for i in range(len(container_of_sides))]
                ours = [
                    bytes(side)[16:]
                    for side in sides
                    if side.type == SideDataType.SEI_UNREGISTERED and bytes(side)[:16] == SEI_UUID
                ]
                if ours:
                    assert frame.pts is not None and frame.time_base is not None
                    decoded[round((frame.pts - first_pts) * frame.time_base * FPS)] = ours
        frames += len(stream.decode(None))
    assert logs == []
    assert frames == FRAMES
    expected = {index: [payload] for index, payload in sent.items()}
    assert found == expected
    assert decoded == expected  # FFmpeg's H.264 decoder reads the same messages


def test_sei_reaches_hls_viewers_through_rtmp(nginx_rtmp: NginxRtmp) -> None:
    """Pushed over RTMP (FLV), remuxed by nginx-rtmp into HLS MPEG-TS segments (Annex B with AUDs)."""
    with ffmpeg_warnings() as logs:
        sent = encode(nginx_rtmp.rtmp_url("sei"))
    assert logs == []
    playlist = nginx_rtmp.hls_dir / "sei.m3u8"
    deadline = time.monotonic() + 5
    segments: list[str] = []
    while time.monotonic() < deadline:
        if playlist.exists():
            segments = [line for line in playlist.read_text().splitlines() if line.endswith(".ts")]
            if len(segments) * 2 >= FRAMES // FPS:  # 2 s fragments, the last one closed
                break
        time.sleep(0.05)
    found: dict[int, list[bytes]] = {}
    ordinal = 0
    for segment in segments:
        with av.open(str(nginx_rtmp.hls_dir / segment)) as container:
            for packet in container.demux(video=0):
                if not packet.size:
                    continue
                data = bytes(packet)
                assert is_annex_b(data)
                if payloads := find_sei_payloads(data):
                    found[ordinal] = payloads
                ordinal += 1
    assert ordinal == FRAMES
    assert found == {index: [payload] for index, payload in sent.items()}


def test_extra_fields_join_the_voice_activity_envelope() -> None:
    from rtc_mpu.mixer.output.sei import with_fields

    vad = b'{"ts":1000,"speaker":null,"speaking":[],"levels":{}}'
    assert with_fields(vad, {}) is vad
    ingest = [
        {"ingest_id": "film", "user_id": "movie", "state": "playing", "position_ms": 31500, "sent_at": 1}
    ]
    merged = with_fields(vad, {"ingest": ingest, "ts": 5})
    assert merged == (
        b'{"ts":1000,"speaker":null,"speaking":[],"levels":{},"ingest":[{"ingest_id":"film",'
        b'"user_id":"movie","state":"playing","position_ms":31500,"sent_at":1}]}'
    ), "appended after the envelope's keys, which it never replaces"
    with pytest.raises(ValueError):
        with_fields(b"[]", {"ingest": []})
    with pytest.raises(ValueError):
        with_fields(vad, {"x": float("nan")})
