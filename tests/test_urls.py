"""StreamURL validation, redaction for logs, and the lease key."""

from __future__ import annotations

from typing import Any

import pytest

from layouts import SpecError
from mixer.urls import redact_url, stream_url_key, validate_stream_url

SECRET = "S3cr3tAuthKey"


@pytest.mark.parametrize(
    "url",
    [
        "rtmp://example.com/live/stream",
        "rtmps://example.com/live/stream",
        "rtmp://push.example.com:1935/live/stream",
        "rtmps://push.example.com:443/live/stream",
        "rtmp://10.0.0.5:19350/app/stream",
        "rtmp://example.com/live/stream?auth_key=1700000000-0-0-abcdef0123",
        "rtmp://example.com/live/stream?auth=a&b=c",
        "rtmp://user:pass@example.com/live/stream",
        "rtmp://example.com/app/sub/stream",
        "rtmp://localhost:65535/live/s",
        "rtmp://example.com/live/" + "k" * 1900,
    ],
)
def test_accepts_rtmp_urls_unchanged(url: str) -> None:
    assert validate_stream_url(url) == url


def test_accepts_exactly_2048_characters() -> None:
    base = "rtmp://example.com/live/stream?k="
    url = base + "a" * (2048 - len(base))
    assert len(url) == 2048
    assert validate_stream_url(url) == url


REJECTED = [
    "file:///etc/passwd",
    "file:/tmp/out.flv",
    "concat:rtmp://example.com/live/a|rtmp://example.com/live/b",
    "tcp://example.com:1935/live/stream",
    "http://example.com/live/stream",
    "https://example.com/live/stream",
    "srt://example.com:9000/live/stream",
    "udp://example.com:1234/live/stream",
    "rtmpt://example.com/live/stream",
    "rtmp:/x",
    "rtmp:/example.com/live/stream",
    "rtmp:example.com/live/stream",
    "/tmp/out.flv",
    "example.com/live/stream",
    "rtmp:///live/stream",
    "rtmp://:1935/live/stream",
    "rtmp://user@/live/stream",
    "rtmp://example.com",
    "rtmp://example.com/",
    "rtmp://example.com/live",
    "rtmp://example.com/live/",
    "rtmp://example.com//stream",
    "rtmp://example.com/live/str eam",
    "rtmp://example.com/live/stream\n",
    "rtmp://example.com/live/\tstream",
    "rtmp://example.com/live/stream\x00",
    "rtmp://example.com/live/stream\x7f",
    " rtmp://example.com/live/stream",
    "rtmp://example.com:0/live/stream",
    "rtmp://example.com:99999/live/stream",
    "rtmp://example.com:65536/live/stream",
    "rtmp://example.com:abc/live/stream",
    "rtmp://example.com/live/" + "k" * 2030,
    "",
]


@pytest.mark.parametrize("url", REJECTED)
def test_refuses(url: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_stream_url(url)
    assert info.value.code == "InvalidStreamURL.Malformed"
    assert info.value.field == "StreamURL"


@pytest.mark.parametrize("url", REJECTED)
def test_error_message_never_contains_the_query(url: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_stream_url(f"{url}?auth={SECRET}")
    assert SECRET not in info.value.message
    assert SECRET not in str(info.value)


def test_too_long_query_is_not_repeated() -> None:
    url = f"rtmp://example.com/live/stream?auth={SECRET}&pad=" + "x" * 2048
    with pytest.raises(SpecError) as info:
        validate_stream_url(url)
    assert info.value.code == "InvalidStreamURL.Malformed"
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("bad", [None, 7, b"rtmp://example.com/live/s"])
def test_refuses_non_strings(bad: Any) -> None:
    with pytest.raises(SpecError) as info:
        validate_stream_url(bad)
    assert info.value.code == "InvalidStreamURL.Malformed"


def test_upper_case_scheme_is_rejected_or_normalized_for_ffmpeg() -> None:
    assert validate_stream_url("RTMP://example.com/live/stream") == "rtmp://example.com/live/stream"


# --- redact_url -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "rtmp://user:pw@host.example.com:1935/live/secretkey?auth=x",
            "rtmp://host.example.com:1935/live/sec***",
        ),
        ("rtmp://example.com/live/secretkey", "rtmp://example.com/live/sec***"),
        ("rtmps://example.com:443/app/streamname?auth_key=abc", "rtmps://example.com:443/app/str***"),
        ("rtmp://example.com/app/sub/streamname", "rtmp://example.com/app/sub/str***"),
        ("rtmp://example.com/live/secretkey#frag", "rtmp://example.com/live/sec***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_hides_credentials_query_and_stream_name() -> None:
    redacted = redact_url(f"rtmp://alice:hunter2@example.com/live/streamkey123?auth={SECRET}")
    for hidden in ("alice", "hunter2", SECRET, "auth", "?", "streamkey123", "key123"):
        assert hidden not in redacted
    assert redacted.endswith("/live/str***")


def test_redact_url_of_an_invalid_port_does_not_raise() -> None:
    redacted = redact_url(f"rtmp://example.com:99999/live/stream?auth={SECRET}")
    assert SECRET not in redacted
    assert "stream" not in redacted


def test_redact_url_hides_the_stream_name_before_a_trailing_slash() -> None:
    url = "rtmp://example.com/live/secretkey/"
    assert validate_stream_url(url) == url
    assert "secretkey" not in redact_url(url)


# --- stream_url_key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("rtmp://example.com/live/stream", "rtmp://example.com:1935/live/stream"),
        ("rtmp://Example.COM/live/stream", "rtmp://example.com:1935/live/stream"),
        ("RTMP://example.com/live/stream", "rtmp://example.com:1935/live/stream"),
        ("rtmp://example.com:1935/live/stream", "rtmp://example.com:1935/live/stream"),
        ("rtmps://example.com/live/stream", "rtmps://example.com:443/live/stream"),
        ("rtmps://example.com:443/live/stream", "rtmps://example.com:443/live/stream"),
        ("rtmp://example.com:1936/live/stream", "rtmp://example.com:1936/live/stream"),
        ("rtmp://example.com//live///stream", "rtmp://example.com:1935/live/stream"),
        ("rtmp://example.com/live/stream?auth=abc", "rtmp://example.com:1935/live/stream"),
        ("rtmp://user:pw@example.com/live/stream", "rtmp://example.com:1935/live/stream"),
        ("rtmp://example.com/live/Stream", "rtmp://example.com:1935/live/Stream"),
    ],
)
def test_stream_url_key(url: str, key: str) -> None:
    assert stream_url_key(url) == key


def test_urls_differing_only_in_the_query_share_a_key() -> None:
    first = stream_url_key("rtmp://push.example.com/live/room1?auth_key=1700000000-0-0-aaaa")
    second = stream_url_key("rtmp://push.example.com/live/room1?auth_key=1700000600-0-0-bbbb")
    assert first == second
    assert "auth" not in first


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("rtmp://example.com/live/room1", "rtmp://example.com/live/room2"),
        ("rtmp://example.com/live/room1", "rtmp://example.com/other/room1"),
        ("rtmp://example.com/live/room1", "rtmp://example.org/live/room1"),
        ("rtmp://example.com/live/room1", "rtmp://example.com:1936/live/room1"),
        ("rtmp://example.com/live/room1", "rtmps://example.com/live/room1"),
        ("rtmp://example.com/live/room1", "rtmp://example.com/live/Room1"),
    ],
)
def test_different_streams_have_different_keys(a: str, b: str) -> None:
    assert stream_url_key(a) != stream_url_key(b)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "rtmp://example.com/live", "rtmp://h:0/a/b"])
def test_stream_url_key_validates(url: str) -> None:
    with pytest.raises(SpecError) as info:
        stream_url_key(url)
    assert info.value.code == "InvalidStreamURL.Malformed"
