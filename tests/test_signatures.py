"""Signature verification against the official SDKs' own signing code (test dependencies from PyPI)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import pytest
from alibabacloud_tea_openapi.utils import Utils
from aliyunsdkrtc.request.v20180111.StartMPUTaskRequest import StartMPUTaskRequest

from api.signatures import ACS3, RPC_V1, SignatureError, SignedRequest, verify

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


def new_sdk_request(body: bytes = b"") -> SignedRequest:
    """A request signed by alibabacloud-tea-openapi's ACS3-HMAC-SHA256 code."""
    query = {
        "AppId": "app1",
        "TaskId": "t1",
        "UserPanes.1.Images.1.X": "0.1",
        "StreamURL": "rtmp://h/live/s?a=b c",
    }
    headers = {
        "host": "127.0.0.1:8080",
        "x-acs-action": "StartMPUTask",
        "x-acs-version": "2018-01-11",
        "x-acs-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    fake = SimpleNamespace(pathname="/", query=query, headers=headers, method="POST")
    headers["Authorization"] = Utils.get_authorization(
        fake, ACS3, headers["x-acs-content-sha256"], "AK", "SECRET"
    )
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
    assert (
        check(SignedRequest("POST", "/", acs3.params, acs3.query, acs3.headers, b"{}"))
        == "SignatureDoesNotMatch"
    )


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
