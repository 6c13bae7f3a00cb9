"""Signature verification against the official SDKs' own signing code (test dependencies from PyPI), and
(issue #11) that nothing of a request's meaning escapes the signature: an ACS3 signature must cover
host, every x-acs-* header and, with a body, content-type; RPC v1 protocol parameters are not given twice.
The same through the real app: tests/test_signed_headers.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from aliyunsdkrtc.request.v20180111.StartMPUTaskRequest import StartMPUTaskRequest

from rtc_mpu.api.signatures import (
    ACS3,
    RPC_V1,
    SignatureError,
    SignedRequest,
    claimed_access_key_id,
    first_conflict,
    unsigned_headers,
    verify,
)
from tests.signing import SDK_HEADERS, acs3_authorization, acs3_headers

KEYS = {"AK": "SECRET"}


def old_sdk_request() -> SignedRequest:
    """A StartMPUTask as aliyun-python-sdk-core signs it (RPC v1, every parameter in the query)."""
    request = StartMPUTaskRequest()
    request.set_AppId("app1")
    request.set_ChannelId("ch 1")
    request.set_TaskId("t1")
    request.set_StreamURL("rtmp://h/live/s?auth=a*b~c")
    request.set_LayoutIdss([1, 2])
    request.add_query_param("TaskProfile", "2IN_720P")
    request.set_UserPaness([{"PaneId": 0, "UserId": "u1", "Images": [{"Url": "http://x/y.png", "X": 0.1}]}])
    url = request.get_url("cn-hangzhou", "AK", "SECRET")
    params = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    return SignedRequest("POST", "/", params, params, {"Host": "127.0.0.1:8080"})


def new_sdk_request(
    body: bytes = b"", content_type: str | None = None, leave_out: str | None = None
) -> SignedRequest:
    """A request signed by alibabacloud-tea-openapi's ACS3-HMAC-SHA256 code, with ``content_type`` when
    given, and the header ``leave_out`` sent but not signed (the SDK signs every header it is given)."""
    query = {
        "AppId": "app1",
        "TaskId": "t1",
        "UserPanes.1.Images.1.X": "0.1",
        "StreamURL": "rtmp://h/live/s?a=b c",
    }
    headers = acs3_headers("127.0.0.1:8080", "StartMPUTask", body, content_type)
    signed = {k: v for k, v in headers.items() if k != leave_out}
    headers["Authorization"] = acs3_authorization(query, signed, body, "AK", "SECRET")
    return SignedRequest("POST", "/", list(query.items()), list(query.items()), headers, body)


def check(request: SignedRequest, **kwargs: object) -> str:
    try:
        verify(request, KEYS.get, **kwargs)  # type: ignore[arg-type]
    except SignatureError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize("make", [old_sdk_request, new_sdk_request])
def test_both_sdks_signatures_verify(make: object) -> None:
    request = make()  # type: ignore[operator]
    verified = verify(request, KEYS.get)
    assert verified.access_key_id == "AK" and verified.scheme in (RPC_V1, ACS3)


def test_a_tampered_parameter_or_a_wrong_secret_is_refused() -> None:
    request = old_sdk_request()
    tampered = [(k, "other" if k == "TaskId" else v) for k, v in request.params]
    assert check(SignedRequest("POST", "/", tampered, tampered, {})) == "SignatureDoesNotMatch"
    assert verify(request, {"AK": "SECRET"}.get).access_key_id == "AK"
    with pytest.raises(SignatureError) as info:
        verify(request, {"AK": "WRONG"}.get)
    assert info.value.code == "SignatureDoesNotMatch"
    assert check(request.__class__("GET", "/", request.params, request.query, {})) == "SignatureDoesNotMatch"
    acs3 = new_sdk_request()
    changed = SignedRequest("POST", "/", acs3.params, [("AppId", "app2"), *acs3.query[1:]], acs3.headers)
    assert check(changed) == "SignatureDoesNotMatch"
    # A body added to a request signed without one: content-type is not signed, so refused for that...
    assert (
        check(SignedRequest("POST", "/", acs3.params, acs3.query, acs3.headers, b"{}"))
        == "IncompleteSignature"
    )
    # ...and a body changed under a signed content-type does not match its signed hash.
    form = new_sdk_request(b"ChannelId=c1", "application/x-www-form-urlencoded")
    assert check(form) == "ok"
    changed_body = SignedRequest("POST", "/", form.params, form.query, form.headers, b"ChannelId=c2")
    assert check(changed_body) == "SignatureDoesNotMatch"


def test_unknown_keys_missing_parts_expired_timestamps_and_replays() -> None:
    request = old_sdk_request()
    assert check(request.__class__("POST", "/", request.params, request.query, {}), now=None) == "ok"
    unknown = [(k, "NOPE" if k == "AccessKeyId" else v) for k, v in request.params]
    assert check(SignedRequest("POST", "/", unknown, unknown, {})) == "InvalidAccessKeyId.NotFound"
    bare = [(k, v) for k, v in request.params if k != "Signature"]
    assert check(SignedRequest("POST", "/", bare, bare, {})) == "MissingParameter"
    later = datetime.now(UTC) + timedelta(minutes=20)
    assert check(request, now=later) == "InvalidTimeStamp.Expired"
    assert check(new_sdk_request(), now=later) == "InvalidTimeStamp.Expired"
    seen: set[tuple[str, str]] = set()

    def use_nonce(key: str, nonce: str) -> bool:
        fresh = (key, nonce) not in seen
        seen.add((key, nonce))
        return fresh

    assert check(request, use_nonce=use_nonce) == "ok"
    assert check(request, use_nonce=use_nonce) == "SignatureNonceUsed"


# -- issue #11: what an ACS3 signature must cover ------------------------------------------------------


def error_of(request: SignedRequest) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(request, KEYS.get)
    return caught.value


@pytest.mark.parametrize("header", [*SDK_HEADERS, "content-type"])
def test_a_header_left_out_of_signed_headers_is_refused_and_named(header: str) -> None:
    body = b"ChannelId=c1"
    assert check(new_sdk_request(body, "application/x-www-form-urlencoded")) == "ok"
    error = error_of(new_sdk_request(body, "application/x-www-form-urlencoded", leave_out=header))
    assert (error.code, error.http_status) == ("IncompleteSignature", 400)
    assert f"not signed: {header}" in error.message


def test_any_other_x_acs_header_must_be_signed_too() -> None:
    request = new_sdk_request()
    extra = {**request.headers, "X-Acs-Anything": "1"}  # any case
    error = error_of(SignedRequest("POST", "/", request.params, request.query, extra))
    assert error.code == "IncompleteSignature" and "x-acs-anything" in error.message
    assert unsigned_headers({"Host": "h", "x-acs-a": "1"}, ["host"], b"") == ["x-acs-a"]
    assert unsigned_headers({"Host": "h"}, ["host"], b"x") == ["content-type"]  # even when absent
    assert unsigned_headers({"Host": "h", "Content-Type": "text/plain"}, ["host"], b"") == []


@pytest.mark.parametrize("header", ["host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"])
def test_the_nonce_date_content_hash_and_host_are_required(header: str) -> None:
    request = new_sdk_request()
    headers = {k: v for k, v in request.headers.items() if k != header}
    error = error_of(SignedRequest("POST", "/", request.params, request.query, headers))
    assert (error.code, error.http_status) == ("MissingParameter", 400) and header in error.message
    blank = {**request.headers, header: " "}
    assert (
        error_of(SignedRequest("POST", "/", request.params, request.query, blank)).code == "MissingParameter"
    )


def test_an_acs3_replay_with_a_new_nonce_or_a_changed_action_does_not_verify() -> None:
    request = new_sdk_request()
    for header, value in (("x-acs-signature-nonce", uuid.uuid4().hex), ("x-acs-action", "StopMPUTask")):
        changed = {**request.headers, header: value}
        assert (
            check(SignedRequest("POST", "/", request.params, request.query, changed))
            == "SignatureDoesNotMatch"
        )


def test_query_names_are_encoded_so_two_parameters_cannot_pass_for_one() -> None:
    request = new_sdk_request()
    query = dict(request.query)
    # Signed: AppId=app1 and StreamURL=...; sent: one parameter named "AppId=app1&StreamURL".
    merged = [
        ("AppId=app1&StreamURL", query["StreamURL"]),
        ("TaskId", "t1"),
        ("UserPanes.1.Images.1.X", "0.1"),
    ]
    assert check(SignedRequest("POST", "/", merged, merged, request.headers)) == "SignatureDoesNotMatch"


def test_rpc_v1_protocol_parameters_given_twice_are_refused() -> None:
    request = old_sdk_request()
    for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
        twice = [*request.params, (name, "other")]
        error = error_of(SignedRequest("POST", "/", twice, twice, {}))
        assert (error.code, error.http_status) == ("InvalidParameter", 400) and name in error.message
    same = [*request.params, ("SignatureNonce", dict(request.params)["SignatureNonce"])]
    assert check(SignedRequest("POST", "/", same, same, {})) == "SignatureDoesNotMatch"  # signed without it
    assert first_conflict([("A", "1"), ("B", "2"), ("A", "1")], ["A"]) is None
    assert first_conflict([("A", "1"), ("B", "2"), ("B", "3")], ["A", "B"]) == "B"


def test_the_claimed_access_key_id_is_read_without_verifying() -> None:
    assert claimed_access_key_id(old_sdk_request()) == "AK"
    assert claimed_access_key_id(new_sdk_request()) == "AK"
    assert (
        claimed_access_key_id(SignedRequest("GET", "/", [], [], {"Authorization": "ACS3-HMAC-SHA256 x"}))
        is None
    )
    assert claimed_access_key_id(SignedRequest("GET", "/", [("A", "1")], [], {})) is None
