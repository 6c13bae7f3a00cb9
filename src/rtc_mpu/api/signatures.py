"""Request signatures of Alibaba Cloud's RPC APIs, so the official SDKs can call us unchanged.

Two schemes (the vendor's MPU API, 2018-01-11, "Wire formats of the official Python SDKs"):

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

Nothing that gives a request its meaning may escape the signature (issue #11). RPC v1 signs every
parameter, and its protocol parameters (``AccessKeyId``, ``Signature``, ``SignatureNonce``, ...) may not
be given twice with different values. ACS3 requires ``x-acs-date``, ``x-acs-signature-nonce`` and
``x-acs-content-sha256``, and its ``SignedHeaders`` must cover ``host``, *every* ``x-acs-*`` header
sent (``x-acs-action``, ``x-acs-version``, the date, the nonce, the content hash, ...) and, when there
is a body, ``content-type`` (which decides whether the body is read as form parameters): otherwise 400
``IncompleteSignature`` naming the unsigned headers, before the key is even looked up. Query names are
percent-encoded in the canonical query like the values (the SDK's names need no encoding), so that
``a=b&c`` as one name cannot pass for two parameters. Which headers the RPC dialect itself believes
(``x-acs-action``, ``x-acs-version``) is :mod:`rtc_mpu.api.rpc`'s rule.
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
#: The RPC v1 parameters of the signature itself: each at most once (or repeated with the same value).
RPC_V1_PROTOCOL_PARAMS = (
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)
#: The headers an ACS3 request must send, all signed.
ACS3_REQUIRED_HEADERS = ("host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")


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
    """The ACS3 canonical request over the given (lower-case) signed headers (query names and values
    percent-encoded)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(request.query))
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


def first_conflict(pairs: Sequence[tuple[str, str]], names: Sequence[str]) -> str | None:
    """The first of ``names`` that ``pairs`` give twice with different values, or None."""
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name in names and seen.setdefault(name, value) != value:
            return name
    return None


def unsigned_headers(headers: Mapping[str, str], signed_headers: Sequence[str], body: bytes) -> list[str]:
    """The headers an ACS3 signature must cover but does not: ``host``, every ``x-acs-*`` header sent,
    and ``content-type`` when there is a body; sorted, lower case."""
    names = {name.lower() for name in headers}
    required = {"host"} | {name for name in names if name.startswith("x-acs-")}
    if body:
        required.add("content-type")
    return sorted(required - set(signed_headers))


def claimed_access_key_id(request: SignedRequest) -> str | None:
    """The AccessKeyId a request names (the ACS3 ``Credential``, else the ``AccessKeyId`` parameter),
    *not verified*, or None: for counting failed attempts per key."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    authorization = headers.get("authorization", "")
    if authorization.startswith("ACS3-"):
        try:
            return _parse_authorization(authorization)[0] or None
        except SignatureError:
            return None
    key_ids = [v for k, v in request.params if k == "AccessKeyId"]
    return key_ids[-1] if key_ids else None


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
        SignatureError: with the vendor's code: ``IncompleteSignature`` (400) for an ACS3 signature that
            leaves ``host``, an ``x-acs-*`` header or (with a body) ``content-type`` unsigned,
            ``MissingParameter`` (400) for a missing nonce, timestamp or required header,
            ``InvalidParameter`` (400) for an RPC v1 protocol parameter given twice with different
            values, ``SignatureDoesNotMatch``, ``InvalidAccessKeyId.NotFound``,
            ``InvalidTimeStamp.Format`` / ``.Expired``, ``SignatureNonceUsed``.
    """
    headers = {k.lower(): v for k, v in request.headers.items()}
    authorization = headers.get("authorization", "")
    if authorization.startswith("ACS3-"):
        key_id, signed_headers, given = _parse_authorization(authorization)
        absent = [name for name in ACS3_REQUIRED_HEADERS if not headers.get(name, "").strip()]
        if absent:
            raise SignatureError("MissingParameter", f"missing header(s) {', '.join(absent)}", 400)
        unsigned = unsigned_headers(headers, signed_headers, request.body)
        if unsigned:
            raise SignatureError(
                "IncompleteSignature",
                f"SignedHeaders must cover host, every x-acs-* header sent and, with a body, content-type; "
                f"not signed: {', '.join(unsigned)}",
                400,
            )
        scheme, nonce, stamp = ACS3, headers["x-acs-signature-nonce"], headers["x-acs-date"]
        payload = hashlib.sha256(request.body).hexdigest()
        if headers.get("x-acs-content-sha256", payload) != payload:
            raise SignatureError("SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body")
        secret = secret_of(key_id)
        if secret is None:
            raise SignatureError("InvalidAccessKeyId.NotFound", "unknown AccessKeyId")
        signed_text = acs3_canonical_request(request, signed_headers, payload)
        expected = acs3_signature(secret, signed_text)
    else:
        conflict = first_conflict(request.params, RPC_V1_PROTOCOL_PARAMS)
        if conflict is not None:
            raise SignatureError("InvalidParameter", f"{conflict} is given twice with different values", 400)
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
