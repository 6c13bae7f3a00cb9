"""Request signatures of Alibaba Cloud's RPC APIs, so the official SDKs can call us unchanged.

Two schemes (shared/reference/mpu-api.md, "Wire formats of the official Python SDKs"):

- **RPC signature v1** (``aliyun-python-sdk-core``): parameters ``AccessKeyId``, ``SignatureMethod=
  HMAC-SHA1``, ``SignatureVersion=1.0``, ``SignatureNonce``, ``Timestamp`` (ISO 8601 UTC) and
  ``Signature`` travel with the others (query string and form body). The string to sign is
  ``METHOD + "&" + enc("/") + "&" + enc(canonical query)`` where the canonical query is every
  parameter but ``Signature``, sorted by name, as ``enc(k)=enc(v)`` joined by ``&``; the signature is
  ``base64(HMAC-SHA1(secret + "&", string))``.
- **ACS3-HMAC-SHA256** (``alibabacloud-tea-openapi``): header ``Authorization: ACS3-HMAC-SHA256
  Credential=AK,SignedHeaders=h1;h2,Signature=hex``, with ``x-acs-date`` (ISO 8601 UTC),
  ``x-acs-signature-nonce`` and ``x-acs-content-sha256`` (hex SHA-256 of the body). The canonical
  request is ``METHOD\\nURI\\ncanonical query\\ncanonical headers\\nsigned headers\\npayload hash``
  (query: sorted ``k=enc(v)`` by ``&``; headers: ``name:trimmed value\\n`` for each signed header,
  lower-cased and sorted); the string to sign is ``"ACS3-HMAC-SHA256\\n" + hex(SHA-256(canonical
  request))`` and the signature ``hex(HMAC-SHA256(secret, string))``.

``enc`` is RFC 3986 percent-encoding (space ``%20``, ``*`` ``%2A``, ``~`` kept). Both schemes also get
a timestamp window and a single-use nonce, checked by :func:`verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

#: How far a request's timestamp may be from our clock, in seconds (the vendor uses 15 minutes).
TIMESTAMP_WINDOW = 900.0
RPC_V1 = "HMAC-SHA1"
ACS3 = "ACS3-HMAC-SHA256"


class SignatureError(Exception):
    """A request's signature is missing, malformed, wrong, expired or replayed.

    Attributes:
        code: the vendor's error code (``SignatureDoesNotMatch``, ``InvalidAccessKeyId.NotFound``,
            ``MissingParameter``, ``InvalidTimeStamp.Expired``, ``SignatureNonceUsed``,
            ``IncompleteSignature``).
        http_status: 400 for malformed requests, 403 for refused ones.
    """

    def __init__(self, code: str, message: str, http_status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class SignedRequest:
    """What a signature covers.

    Attributes:
        method: HTTP method, upper case.
        path: the request path (``/``).
        params: every query and form parameter as (name, value) pairs, in any order.
        query: the query-string parameters only (ACS3 signs those).
        headers: request headers (any case).
        body: the raw body.
    """

    method: str
    path: str
    params: Sequence[tuple[str, str]]
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Verified:
    """A verified request: who signed it, the scheme, and its nonce and timestamp."""

    access_key_id: str
    scheme: str
    nonce: str
    timestamp: datetime


def enc(value: str) -> str:
    """RFC 3986 percent-encoding as Alibaba Cloud signs it (``~`` kept, space as ``%20``)."""
    return quote(value, safe="~")


def rpc_v1_string_to_sign(method: str, params: Sequence[tuple[str, str]]) -> str:
    """The RPC v1 string to sign over ``params`` (``Signature`` excluded)."""
    pairs = sorted((k, v) for k, v in params if k != "Signature")
    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in pairs)
    return f"{method.upper()}&{enc('/')}&{enc(canonical)}"


def rpc_v1_signature(secret: str, method: str, params: Sequence[tuple[str, str]]) -> str:
    """``base64(HMAC-SHA1(secret + "&", string to sign))``."""
    digest = hmac.new(f"{secret}&".encode(), rpc_v1_string_to_sign(method, params).encode(), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode()


def acs3_canonical_request(request: SignedRequest, signed_headers: Sequence[str], payload_hash: str) -> str:
    """The ACS3 canonical request over the given (lower-case) signed headers."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = "&".join(f"{k}={enc(v)}" for k, v in sorted(request.query))
    canonical_headers = "".join(
        f"{name}:{headers.get(name, '').strip()}\n" for name in sorted(signed_headers)
    )
    return "\n".join(
        [
            request.method.upper(),
            request.path or "/",
            query,
            canonical_headers,
            ";".join(sorted(signed_headers)),
            payload_hash,
        ]
    )


def acs3_signature(secret: str, canonical_request: str) -> str:
    """``hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\\n" + hex(SHA-256(canonical request))))``."""
    string_to_sign = f"{ACS3}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise SignatureError(
            "InvalidTimeStamp.Format", f"timestamp {text!r} is not YYYY-MM-DDThh:mm:ssZ", 400
        ) from None
    return parsed.replace(tzinfo=UTC)


def _parse_authorization(value: str) -> tuple[str, list[str], str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ACS3:
        raise SignatureError("IncompleteSignature", f"unsupported signature scheme {scheme!r}", 400)
    fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
    try:
        return (
            fields["Credential"],
            [h for h in fields["SignedHeaders"].lower().split(";") if h],
            fields["Signature"],
        )
    except KeyError as exc:
        raise SignatureError("IncompleteSignature", f"Authorization lacks {exc.args[0]}", 400) from None


def verify(
    request: SignedRequest,
    secret_of: Callable[[str], str | None],
    *,
    now: datetime | None = None,
    window: float = TIMESTAMP_WINDOW,
    use_nonce: Callable[[str, str], bool] | None = None,
) -> Verified:
    """Check a request's signature (either scheme), timestamp and nonce.

    Args:
        request: what was received.
        secret_of: the secret of an AccessKeyId, or None for an unknown key.
        now: the current time (default: the clock).
        window: seconds a timestamp may differ from ``now``.
        use_nonce: ``(access_key_id, nonce) -> bool``: records the nonce and returns False if it
            was already used (replay); None skips the check.

    Raises:
        SignatureError: with the vendor's code.
    """
    headers = {k.lower(): v for k, v in request.headers.items()}
    authorization = headers.get("authorization", "")
    if authorization.startswith("ACS3-"):
        key_id, signed_headers, given = _parse_authorization(authorization)
        scheme, nonce, stamp = ACS3, headers.get("x-acs-signature-nonce", ""), headers.get("x-acs-date", "")
        if "host" not in signed_headers or "x-acs-date" not in signed_headers:
            raise SignatureError("IncompleteSignature", "host and x-acs-date must be signed", 400)
        payload = hashlib.sha256(request.body).hexdigest()
        if headers.get("x-acs-content-sha256", payload) != payload:
            raise SignatureError("SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body")
        secret = secret_of(key_id)
        if secret is None:
            raise SignatureError("InvalidAccessKeyId.NotFound", "unknown AccessKeyId")
        signed_text = acs3_canonical_request(request, signed_headers, payload)
        expected = acs3_signature(secret, signed_text)
    else:
        params = dict(request.params)
        missing = [
            k for k in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp") if not params.get(k)
        ]
        if missing:
            raise SignatureError(
                "MissingParameter", f"missing {', '.join(missing)} (or an ACS3 Authorization)", 400
            )
        if params.get("SignatureMethod", RPC_V1) != RPC_V1:
            raise SignatureError("IncompleteSignature", "only SignatureMethod=HMAC-SHA1 is supported", 400)
        key_id, given = params["AccessKeyId"], params["Signature"]
        scheme, nonce, stamp = RPC_V1, params["SignatureNonce"], params["Timestamp"]
        secret = secret_of(key_id)
        if secret is None:
            raise SignatureError("InvalidAccessKeyId.NotFound", "unknown AccessKeyId")
        signed_text = rpc_v1_string_to_sign(request.method, request.params)
        expected = rpc_v1_signature(secret, request.method, request.params)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        # The vendor quotes its string to sign after a colon (the old SDK splits the message there);
        # we give its SHA-256 only, as the text would repeat the StreamURL with its stream key.
        digest = hashlib.sha256(signed_text.encode()).hexdigest()
        raise SignatureError(
            "SignatureDoesNotMatch",
            f"the signature does not match our calculation; SHA-256 of the server's string to sign: {digest}",
        )
    when = _timestamp(stamp)
    current = now or datetime.now(UTC)
    if abs((current - when).total_seconds()) > window:
        raise SignatureError(
            "InvalidTimeStamp.Expired", f"timestamp {stamp} is outside the {window:g} s window"
        )
    if not nonce:
        raise SignatureError("MissingParameter", "a signature nonce is required", 400)
    if use_nonce is not None and not use_nonce(key_id, nonce):
        raise SignatureError("SignatureNonceUsed", "this SignatureNonce was already used")
    return Verified(key_id, scheme, nonce, when)
