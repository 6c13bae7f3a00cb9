"""StreamURL validation, redaction for logs, and the lease key."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.urls import (
    RESOLVE_TIMEOUT,
    lease_keys,
    redact_url,
    stream_url_key,
    system_resolve,
    validate_stream_url,
)

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
    assert info.value.field == ("stream_url",)


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


# -- issue 11, D4: every parse failure is InvalidStreamURL.Malformed, never another exception -------

MALFORMED = [
    "rtmp://[::1/live/x",  # the reproduction: urlsplit's "Invalid IPv6 URL" ValueError
    "rtmp://[::1]x/live/s",
    "rtmp://a]b/live/s",
    "rtmp://[]/live/s",
    "rtmp://[not-an-address]/live/s",
    "rtmp://[fe80::1%25eth0]/live/s",
    "rtmp://::1/live/s",
    "rtmp://example.com:/live/s",
    "rtmp://[::1]:/live/s",
    "rtmp://example.com:+80/live/s",
    "rtmp://example.com:0x50/live/s",
    "rtmp://example.com:1935:1935/live/s",
    "rtmp://example.com:123456/live/s",
    "rtmp://256.1.1.1/live/s",
    "rtmp://08.0.0.1/live/s",
    "rtmp://0x/live/s",
    "rtmp://1.2.3.4.5/live/s",
    "rtmp://4294967296/live/s",
    "rtmp://127.16777216/live/s",
    "rtmp://example..com/live/s",
    "rtmp://.example.com/live/s",
    "rtmp://exa%6dple.com/live/s",
    "rtmp://exämple.com/live/s",
    "rtmp://" + "a" * 64 + ".com/live/s",
    "rtmp://" + "a." * 127 + "com/live/s",
    "rtmp://.:1935/live/s",
    "rtmp://user@:1935/live/s",
    "rtmp://ex\ud800ample.com/live/s",
    "rtmp://example.com/live/s\udfff",
    "rtmp://example.com/live/s\u202e",
    "rtmp://example.com/live/\u200bs",
    "rtmp://example.com/live/s\u00a0",
    "rtmp://example.com/live/s\u2028",
    "rtmp://example.com/live/s\u3000x",
    "rtmp://example.com/live/s\x85",
    "rtmp://example.com/live/\ufeffs",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_every_parse_failure_is_malformed(url: str) -> None:
    for check in (validate_stream_url, stream_url_key, lease_keys):
        with pytest.raises(SpecError) as info:
            check(url)
        assert (info.value.code, info.value.field) == ("InvalidStreamURL.Malformed", ("stream_url",)), check
        assert SECRET not in str(info.value)
    redact_url(url)  # never raises either


@given(
    st.lists(
        st.sampled_from(
            ["[", "]", ":", "@", "/", ".", "%", "?", "#", "0x", "::", "1", "7f", "h", "live", "s"]
        )
        | st.characters(exclude_categories=()),
        max_size=30,
    )
)
@settings(max_examples=400, deadline=None)
def test_any_string_is_accepted_or_malformed(pieces: list[str]) -> None:
    for prefix in ("rtmp://", "rtmps://", "rtmp://[", "rtmp://h:", ""):
        url = prefix + "".join(pieces)
        try:
            validate_stream_url(url)
        except SpecError as exc:
            assert exc.code == "InvalidStreamURL.Malformed"
        else:  # accepted: so is its canonical form, which has a key of its own and parses again
            key = stream_url_key(url)
            assert stream_url_key(key) == key
        redact_url(url)


# -- issue 11, D8: one key per destination, however it is spelled ---------------------------------

SAME_DESTINATION = [
    # IP literal forms (as inet_aton and so FFmpeg's getaddrinfo read them)
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://2130706433:1935/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://0x7f000001/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://0X7F000001/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://0177.0.0.1/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://0177.0.0.01/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://127.1/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://127.0.1/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://0x7f.1/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://[::ffff:127.0.0.1]/live/x"),
    ("rtmp://127.0.0.1:1935/live/x", "rtmp://[::FFFF:7f00:1]:1935/live/x"),
    ("rtmp://10.0.0.5/live/x", "rtmp://167772165/live/x"),
    # IPv6 zero compression and case
    ("rtmp://[::1]/live/x", "rtmp://[0:0:0:0:0:0:0:1]:1935/live/x"),
    ("rtmp://[2001:db8::1]/live/x", "rtmp://[2001:DB8:0:0::0001]/live/x"),
    # case, trailing dot, default ports, user info, slashes, query, fragment
    ("rtmp://example.com/live/x", "RTMP://EXAMPLE.COM./live/x/"),
    ("rtmp://example.com/live/x", "rtmp://user:pw@Example.Com.:1935//live//x?auth=1#f"),
    ("rtmps://example.com/live/x", "rtmps://example.com:443/live/x"),
    ("rtmp://localhost/live/x", "rtmp://LOCALHOST.:1935/live/x"),
]


@pytest.mark.parametrize(("a", "b"), SAME_DESTINATION)
def test_spellings_of_one_destination_share_a_key(a: str, b: str) -> None:
    assert stream_url_key(a) == stream_url_key(b)
    assert validate_stream_url(b).lower() == b.lower()  # FFmpeg still gets the URL as given


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("rtmp://0x7f000001/live/x", "rtmp://127.0.0.1:1935/live/x"),
        ("rtmp://[::ffff:127.0.0.1]/live/x", "rtmp://127.0.0.1:1935/live/x"),
        ("rtmp://[0::1]/live/x", "rtmp://[::1]:1935/live/x"),
        ("rtmps://[2001:DB8::1]:8443/app/s", "rtmps://[2001:db8::1]:8443/app/s"),
        ("rtmp://Push.Example.COM./live/x", "rtmp://push.example.com:1935/live/x"),
    ],
)
def test_canonical_keys(url: str, key: str) -> None:
    assert stream_url_key(url) == key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("rtmp://127.0.0.1/live/x", "rtmp://127.0.0.2/live/x"),
        ("rtmp://127.0.0.1/live/x", "rtmp://127.0.0.1:1936/live/x"),
        ("rtmp://127.0.0.1/live/x", "rtmps://127.0.0.1:1935/live/x"),
        ("rtmp://[::1]/live/x", "rtmp://127.0.0.1/live/x"),
        ("rtmp://[::1]/live/x", "rtmp://[::2]/live/x"),
    ],
)
def test_different_destinations_keep_different_keys(a: str, b: str) -> None:
    assert stream_url_key(a) != stream_url_key(b)


def test_redact_url_of_ipv6_keeps_its_brackets() -> None:
    assert redact_url("rtmp://[::1]:1935/live/secretkey") == "rtmp://[::1]:1935/live/sec***"


class Resolver:
    """A fake resolver: a table of names, and the calls it got."""

    def __init__(self, table: dict[str, list[str]], delay: float = 0.0) -> None:
        self.table, self.delay = table, delay
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        time.sleep(self.delay)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


def test_lease_keys_of_a_name_are_its_key_and_one_per_address() -> None:
    resolve = Resolver({"push.example.com": ["10.0.0.7", "::ffff:10.0.0.8", "2001:DB8::5", "10.0.0.7"]})
    assert lease_keys("rtmp://Push.Example.com./live/x?auth=1", resolve) == [
        "rtmp://10.0.0.7:1935/live/x",
        "rtmp://10.0.0.8:1935/live/x",
        "rtmp://[2001:db8::5]:1935/live/x",
        "rtmp://push.example.com:1935/live/x",
    ]
    assert resolve.calls == [("push.example.com", 1935)]  # the canonical name, the default port


def test_lease_keys_of_an_address_resolve_nothing() -> None:
    resolve = Resolver({})
    assert lease_keys("rtmp://0x7f000001:1936/live/x", resolve) == ["rtmp://127.0.0.1:1936/live/x"]
    assert lease_keys("rtmp://[::ffff:10.1.2.3]/live/x", resolve) == ["rtmp://10.1.2.3:1935/live/x"]
    assert resolve.calls == []


def test_localhost_and_127_0_0_1_share_a_lease_key() -> None:
    """The reproduction of D8: both spellings lead to 127.0.0.1 (the real resolver, /etc/hosts)."""
    by_name = set(lease_keys("rtmp://localhost:1935/live/x", system_resolve))
    assert "rtmp://127.0.0.1:1935/live/x" in by_name
    assert by_name & set(lease_keys("rtmp://127.0.0.1:1935/live/x"))


@pytest.mark.parametrize(
    ("table", "text"),
    [
        ({}, "does not resolve"),
        ({"push.example.com": []}, "has no IP address"),
        ({"push.example.com": ["not an address"]}, "has no IP address"),
    ],
)
def test_a_name_that_does_not_resolve_is_unresolvable(table: dict[str, list[str]], text: str) -> None:
    with pytest.raises(SpecError) as info:
        lease_keys(f"rtmp://push.example.com/live/x?auth={SECRET}", Resolver(table))
    assert (info.value.code, info.value.field) == ("InvalidStreamURL.Unresolvable", ("stream_url",))
    assert text in info.value.message and "push.example.com" in info.value.message
    assert SECRET not in str(info.value) and "/live/x" not in str(info.value)


def test_a_slow_resolver_is_not_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        lease_keys(
            "rtmp://slow.example.com/live/x", Resolver({"slow.example.com": ["10.0.0.1"]}, 5.0), timeout=0.2
        )
    assert time.monotonic() - started < 1.0
    assert info.value.code == "InvalidStreamURL.Unresolvable" and "within 0.2 s" in info.value.message


def test_the_default_timeout_is_2_s() -> None:
    assert RESOLVE_TIMEOUT == 2.0
