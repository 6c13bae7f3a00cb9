"""The ingest request rules (rtc_mpu.spec.ingest): ids, URLs, numbers, controls."""

from __future__ import annotations

import pytest

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.ingest import Control, IngestSpec, IngestState, parse_control, parse_ingest

BASE = {
    "ingest_id": "film-1",
    "channel_id": "room1",
    "user_id": "movie",
    "url": "https://cdn.example.com/a.mp4",
}


def test_a_full_request_parses_with_defaults() -> None:
    assert parse_ingest(BASE) == IngestSpec("film-1", "room1", "movie", "https://cdn.example.com/a.mp4")
    spec = parse_ingest({**BASE, "url": "media:talk.mp4", "loop": True, "start_at": 12.5, "volume": 150})
    assert (spec.url, spec.loop, spec.start_at_seconds, spec.volume_percent) == (
        "media:talk.mp4",
        True,
        12.5,
        150,
    )
    for url in (
        "http://a.example.com/x.m3u8",
        "rtmp://a.example.com/live/k",
        "rtmps://a.example.com:443/l/k",
    ):
        assert parse_ingest({**BASE, "url": url}).url == url


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"ingest_id": "a b"}, "ingest_id", "InvalidIngest.Id"),
        ({"ingest_id": "x" * 56}, "ingest_id", "InvalidIngest.Id"),
        ({"ingest_id": 5}, "ingest_id", "InvalidIngest.Id"),
        ({"channel_id": "a:b"}, "channel_id", "InvalidParameter"),
        ({"channel_id": "\u202eroom"}, "channel_id", "InvalidParameter"),
        ({"user_id": "t1.mix"}, "user_id", "InvalidParameter"),
        ({"user_id": ""}, "user_id", "InvalidParameter"),
        ({"url": "file:///etc/passwd"}, "url", "InvalidIngest.Url"),
        ({"url": "concat:a.mp4|b.mp4"}, "url", "InvalidIngest.Url"),
        ({"url": "subfile,,start,0,end,0,,:x.mp4"}, "url", "InvalidIngest.Url"),
        ({"url": "http:///nohost"}, "url", "InvalidIngest.Url"),
        ({"url": "http://a.example.com/x y.mp4"}, "url", "InvalidIngest.Url"),
        ({"url": "http://a.example.com/\u2028.mp4"}, "url", "InvalidIngest.Url"),
        ({"url": "http://[::1/x"}, "url", "InvalidIngest.Url"),
        ({"url": "media:../secret.mp4"}, "url", "InvalidIngest.Url"),
        ({"url": "media:.hidden"}, "url", "InvalidIngest.Url"),
        ({"url": "media:a/b.mp4"}, "url", "InvalidIngest.Url"),
        ({"url": "https://a.example.com/" + "x" * 2100}, "url", "InvalidIngest.Url"),
        ({"loop": "yes"}, "loop", "InvalidParameter"),
        ({"start_at": -1}, "start_at", "InvalidParameter"),
        ({"start_at": float("nan")}, "start_at", "InvalidParameter"),
        ({"start_at": True}, "start_at", "InvalidParameter"),
        ({"volume": 201}, "volume", "InvalidParameter"),
        ({"volume": 50.5}, "volume", "InvalidParameter"),
        ({"extra": 1}, "extra", "InvalidParameter"),
    ],
)
def test_bad_requests_name_their_field(change: dict[str, object], field: str, code: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_ingest({**BASE, **change})
    assert (caught.value.field, caught.value.code) == ((field,), code)


def test_a_missing_field_is_named() -> None:
    for name in ("ingest_id", "channel_id", "user_id", "url"):
        body = {k: v for k, v in BASE.items() if k != name}
        with pytest.raises(SpecError) as caught:
            parse_ingest(body)
        assert (caught.value.field, caught.value.code) == ((name,), "MissingParameter")


def test_controls() -> None:
    assert parse_control({"state": "paused"}) == Control(IngestState.PAUSED)
    assert parse_control({"position_seconds": 30, "volume": 0}) == Control(None, 30.0, 0)
    for body, field in (
        ({}, "state"),
        ({"state": "ended"}, "state"),
        ({"position_seconds": -3}, "position_seconds"),
        ({"volume": 300}, "volume"),
        ({"speed": 2}, "speed"),
    ):
        with pytest.raises(SpecError) as caught:
            parse_control(body)
        assert caught.value.field == (field,)
    assert IngestState.PAUSED.active and not IngestState.FAILED.active
