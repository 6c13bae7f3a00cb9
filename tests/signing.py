"""Helpers for tests that call the API in process: Basic auth headers, requests signed as the two SDKs
sign them (RPC v1: aliyun-python-sdk-core; ACS3: alibabacloud-tea-openapi's own signing code), and a
test client on a given store."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from alibabacloud_tea_openapi.utils import Utils
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.api.signatures import ACS3, rpc_v1_signature

#: The headers the newer SDK sends (and signs) for an RPC call without a body; ``content-type`` joins
#: them when there is one.
SDK_HEADERS = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)


def basic_auth(key: str, secret: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic auth with ``key`` and ``secret``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def utc_stamp() -> str:
    """The time now as both dialects send it: ``2018-01-11T12:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rpc_v1_common(key: str, action: str | None) -> list[tuple[str, str]]:
    """The parameters of every RPC v1 call of ``action`` (left out when None) on task t1 of app1."""
    return [
        *([("Action", action)] if action is not None else []),
        ("Version", "2018-01-11"),
        ("AppId", "app1"),
        ("TaskId", "t1"),
        ("AccessKeyId", key),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", uuid.uuid4().hex),
        ("Timestamp", utc_stamp()),
    ]


def rpc_v1_params(
    key: str, secret: str, action: str = "GetMPUTaskStatus", method: str = "GET", **extra: str
) -> dict[str, str]:
    """The parameters of an RPC v1 call of ``action`` on task t1 of app1, with ``extra`` (which may
    replace any of them), signed for ``method`` with ``key`` and ``secret``."""
    params = dict([*_rpc_v1_common(key, action), *extra.items()])
    params["Signature"] = rpc_v1_signature(secret, method, list(params.items()))
    return params


def rpc_v1_pairs(
    key: str, secret: str, action: str | None = "GetMPUTaskStatus", **extra: str
) -> list[tuple[str, str]]:
    """The same as :func:`rpc_v1_params` for GET, as pairs: ``Action`` left out when None, and ``extra``
    added after the common parameters (a name given again stays twice)."""
    params = [*_rpc_v1_common(key, action), *extra.items()]
    return [*params, ("Signature", rpc_v1_signature(secret, "GET", params))]


def acs3_headers(
    host: str = "localhost",
    action: str | None = "GetMPUTaskStatus",
    body: bytes = b"",
    content_type: str | None = None,
) -> dict[str, str]:
    """The headers the newer SDK sends for an ACS3 call of ``action`` (none when None) with ``body``,
    before its ``Authorization``: those of :data:`SDK_HEADERS`, and ``content-type`` when given."""
    headers = {
        "host": host,
        "x-acs-version": "2018-01-11",
        "x-acs-date": utc_stamp(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    if action is not None:
        headers["x-acs-action"] = action
    if content_type is not None:
        headers["content-type"] = content_type
    return headers


def acs3_authorization(
    query: dict[str, str], signed: dict[str, str], body: bytes, key: str, secret: str
) -> str:
    """The ``Authorization`` header the newer SDK's own code computes for a POST to ``/`` with ``query``
    and ``body``, signing exactly the headers ``signed`` (it signs every header it is given)."""
    fake = SimpleNamespace(pathname="/", query=query, headers=signed, method="POST")
    authorization: str = Utils.get_authorization(fake, ACS3, hashlib.sha256(body).hexdigest(), key, secret)
    return authorization


def api_client(store: Any, access_keys: str, **settings: Any) -> FlaskClient:
    """A test client of the API on ``store`` with ``MPU_ACCESS_KEYS`` ``access_keys``, enqueueing
    nothing, and ``settings`` (``MPU_*`` names) added to its config."""
    config = {
        "MPU_ACCESS_KEYS": access_keys,
        "STORE": store,
        "ENQUEUE": lambda a, t: None,
        "ENQUEUE_INGEST": lambda a, i: None,
        **settings,
    }
    return create_app(config).test_client()
