"""Channel tokens as plain data (:mod:`rtc_mpu.spec.tokens`): minting and verifying, Janus' signature
scheme computed independently, forged, foreign and expired tokens, malformed input of any shape
(never anything but TokenError), the ids a token may carry, and what a verified token allows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtc_mpu.spec import tokens
from rtc_mpu.spec.tokens import (
    PLUGIN,
    REALM,
    SIGNATURES,
    Claims,
    Role,
    TokenError,
    check_id,
    check_secret,
    mint_service_token,
    mint_token,
    read_claims,
    verify_token,
)

SECRET = "unit-token-secret-0123456789"
OTHER = "another-secret-0123456789ab"
#: A fixed "now", Unix seconds (2027-01-15).
NOW = 1_800_000_000
#: Characters no id in a token may hold: controls, bidi controls, separators, surrogates,
#: noncharacters (:mod:`rtc_mpu.spec.text_rules`), whitespace and the token's own separators.
REFUSED = [
    "\x00",
    "\t",
    "\n",
    "\r",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u061c",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ud800",
    "\uffff",
    " ",
    "\u00a0",
    "\u3000",
    ",",
    ":",
]


def token_for(
    role: Role = Role.PUBLISH,
    expires_at: int = NOW + 60,
    scheme: str = "sha1",
    secret: str = SECRET,
    channel: str = "room1",
) -> str:
    return mint_token(secret, "app1", channel, "alice", role, expires_at, scheme)


def janus_signature(secret: str, data: str) -> str:
    """Janus 1.1's check (src/auth.c, janus_auth_check_signature): base64 of HMAC-SHA1 of the part
    before the last ':'."""
    return base64.b64encode(hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()).decode()


def signed(data: str, secret: str = SECRET) -> str:
    """``data`` signed as Janus 1.1 signs: whatever it holds."""
    return f"{data}:{janus_signature(secret, data)}"


def claims_field(raw: bytes) -> str:
    return tokens.CLAIMS_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- round trip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SIGNATURES)
@pytest.mark.parametrize("role", [Role.PUBLISH, Role.SUBSCRIBE])
def test_a_minted_token_verifies_to_its_claims(scheme: str, role: Role) -> None:
    token = token_for(role, scheme=scheme)
    claims = verify_token(SECRET, token, NOW, scheme)
    room = tokens.room_name("app1", "room1")
    assert claims == Claims("app1", "room1", "alice", role, NOW + 60, tokens.room_pin(SECRET, room))
    assert claims.room == "app1:room1" == room
    assert read_claims(token) == claims  # what a client reads from its own token, unverified
    assert claims.expires_at_iso == "2027-01-15T08:01:00Z"


def test_the_token_has_janus_signed_token_format() -> None:
    token = token_for()
    data, _, signature = token.rpartition(":")
    expiry, realm, plugin, ours = data.split(",")
    assert (int(expiry), realm, plugin) == (NOW + 60, REALM, PLUGIN)
    assert ours.startswith("mpu1.")
    assert signature == janus_signature(SECRET, data), "Janus 1.1 would refuse it"
    later = mint_token(SECRET, "app1", "room1", "alice", Role.PUBLISH, NOW + 60, "sha256url")
    data = later.rpartition(":")[0]
    digest = hmac.new(SECRET.encode(), data.encode(), hashlib.sha256).digest()
    assert later.endswith(":" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def test_the_claims_are_readable_not_secret() -> None:
    claims_part = token_for().split(",")[3].rpartition(":")[0].removeprefix("mpu1.")
    raw = json.loads(base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4)))
    assert raw == {
        "a": "app1",
        "c": "room1",
        "u": "alice",
        "r": "publish",
        "p": tokens.room_pin(SECRET, "app1:room1"),
    }


def test_service_tokens_are_for_every_channel_and_a_day() -> None:
    service = verify_token(SECRET, mint_service_token(SECRET, NOW + 0.9), NOW)
    assert service.role is Role.SERVICE and service.expires_at == NOW + tokens.SERVICE_TTL_SECONDS
    assert service.room_pin == ""
    assert service.allows("app1", "room1") and service.allows("other", "x")


def test_a_token_allows_its_own_channel_only() -> None:
    for role in (Role.PUBLISH, Role.SUBSCRIBE):
        claims = verify_token(SECRET, token_for(role), NOW)
        assert claims.allows("app1", "room1")
        assert not claims.allows("app1", "room2")
        assert not claims.allows("app2", "room1")
        assert not claims.allows("app1:room1", "")


# -- refused tokens ---------------------------------------------------------------------------------


def refused_code(token: object, secret: str = SECRET, now: float = NOW, scheme: str = "sha1") -> str:
    with pytest.raises(TokenError) as caught:
        verify_token(secret, token, now, scheme)
    return caught.value.code


def test_a_forged_signature_is_refused() -> None:
    token = token_for()
    data, _, signature = token.rpartition(":")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert refused_code(f"{data}:{flipped}") == "InvalidToken"
    assert refused_code(data + ":") == "InvalidToken"
    # the claims or the expiry changed under the original signature
    other_user = mint_token(SECRET, "app1", "room1", "mallory", Role.PUBLISH, NOW + 60).rpartition(":")[0]
    assert refused_code(f"{other_user}:{signature}") == "InvalidToken"
    longer = data.replace(str(NOW + 60), str(NOW + 86400), 1)
    assert refused_code(f"{longer}:{signature}") == "InvalidToken"
    as_service = mint_token(SECRET, "*", "*", "*", Role.SERVICE, NOW + 60).rpartition(":")[0]
    assert refused_code(f"{as_service}:{signature}") == "InvalidToken"


def test_a_token_of_another_secret_or_scheme_is_refused() -> None:
    assert refused_code(token_for(secret=OTHER)) == "InvalidToken"
    assert refused_code(token_for(), secret=OTHER) == "InvalidToken"
    assert refused_code(token_for(scheme="sha256url")) == "InvalidToken"
    assert refused_code(token_for(), scheme="sha256url") == "InvalidToken"


def test_an_expired_token_is_refused_as_expired() -> None:
    token = token_for(expires_at=NOW)
    assert verify_token(SECRET, token, NOW).expires_at == NOW  # valid up to its expiry second
    with pytest.raises(TokenError) as caught:
        verify_token(SECRET, token, NOW + 1)
    assert caught.value.code == "TokenExpired"
    assert "2027-01-15T08:00:00Z" in caught.value.message
    assert refused_code(token_for(expires_at=NOW - 86400)) == "TokenExpired"
    # a forged token is refused as forged, not as expired: nothing is read before the signature
    forged = token_for(expires_at=NOW - 5, secret=OTHER)
    assert refused_code(forged) == "InvalidToken"


@pytest.mark.parametrize(
    "token",
    [
        None,
        5,
        b"bytes",
        ["a"],
        "",
        ":",
        "no-colon",
        "1,janus,janus.plugin.videoroom,mpu1.e30:sig",
        "x" * 5000,
        "1" + ":" * 3000,
    ],
)
def test_malformed_tokens_are_refused(token: object) -> None:
    assert refused_code(token) == "InvalidToken"


@given(st.text(max_size=400))
def test_any_string_is_refused_or_valid_never_a_crash(text: str) -> None:
    try:
        verify_token(SECRET, text, NOW)
    except TokenError as exc:
        assert exc.code in ("InvalidToken", "TokenExpired")
    try:
        read_claims(text)
    except TokenError as exc:
        assert exc.code == "InvalidToken"


@given(st.text(max_size=40), st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
def test_validly_signed_garbage_is_refused_never_a_crash(expiry: str, raw: bytes) -> None:
    """Only the secret's holder can sign, but a bug of ours could: the parser still never crashes."""
    token = signed(f"{expiry},{REALM},{PLUGIN},{claims_field(raw)}")
    try:
        claims = verify_token(SECRET, token, NOW)
    except TokenError as exc:
        assert exc.code in ("InvalidToken", "TokenExpired")
    else:
        assert isinstance(claims, Claims) and claims.expires_at >= NOW


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "a": st.none() | st.integers() | st.text(max_size=8),
            "c": st.lists(st.integers(), max_size=2) | st.text(max_size=8),
            "u": st.dictionaries(st.text(max_size=2), st.integers(), max_size=2) | st.text(max_size=8),
            "r": st.sampled_from(["publish", "subscribe", "service", "admin", "", "PUBLISH"]) | st.integers(),
            "p": st.none() | st.text(max_size=8),
        },
    )
)
def test_signed_claims_of_any_shape_are_refused_or_read(raw: dict[str, Any]) -> None:
    token = signed(f"{NOW + 5},{REALM},{PLUGIN},{claims_field(json.dumps(raw).encode())}")
    try:
        claims = verify_token(SECRET, token, NOW)
    except TokenError as exc:
        assert exc.code == "InvalidToken"
        assert not {"a", "c", "u", "r"} <= raw.keys() or raw["r"] not in ("publish", "subscribe", "service")
    else:
        assert claims.role in Role


@pytest.mark.parametrize(
    "raw",
    [b"[" * 5000, b'{"a":' * 3000, b"null", b"[]", b'"text"', b"5", b"\xff\xfe", b'{"a":"x"}'],
)
def test_signed_claims_that_are_not_an_object_of_strings_are_refused(raw: bytes) -> None:
    """``[[[[...`` deeper than Python's recursion limit once escaped as RecursionError."""
    token = signed(f"{NOW + 5},{REALM},{PLUGIN},{claims_field(raw)}")
    assert refused_code(token) == "InvalidToken"
    with pytest.raises(TokenError):
        read_claims(token)


@pytest.mark.parametrize(
    "expiry", ["", " 1800000060", "1800000060 ", "1_800_000_060", "١٨٠٠٠٠٠٠٦٠", "1e9", "-5", "+5"]
)
def test_the_expiry_field_is_ascii_digits(expiry: str) -> None:
    """``int()`` reads " 5", "5_0" and Arabic-Indic digits; a token's expiry is plain digits."""
    good = token_for().split(",", 1)[1].rpartition(":")[0]
    assert refused_code(signed(f"{expiry},{good}")) == "InvalidToken"


@pytest.mark.parametrize(
    "fields",
    [
        ["1800000060", "other", PLUGIN],
        ["1800000060", REALM, "janus.plugin.streaming"],
        ["1800000060", REALM, PLUGIN, "x", "y"],
        ["1800000060", REALM],
    ],
)
def test_a_signed_token_of_another_kind_is_refused(fields: list[str]) -> None:
    claims = claims_field(b'{"a":"app1","c":"room1","u":"alice","r":"publish"}')
    data = ",".join([*fields[:3], claims, *fields[3:]]) if len(fields) >= 3 else ",".join(fields)
    assert refused_code(signed(data)) == "InvalidToken"
    assert refused_code(signed(",".join(fields))) == "InvalidToken"


# -- ids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", REFUSED)
def test_ids_with_controls_bidi_whitespace_commas_or_colons_are_refused(char: str) -> None:
    for value in (char, f"a{char}", f"a{char}b"):
        with pytest.raises(ValueError, match="UserId"):
            check_id(value, "UserId")
        for app, channel, user in ((value, "c", "u"), ("a", value, "u"), ("a", "c", value)):
            with pytest.raises(ValueError):
                mint_token(SECRET, app, channel, user, Role.PUBLISH, NOW + 60)


@pytest.mark.parametrize("value", ["", "x" * 65, None, 5, b"alice", ["alice"]])
def test_ids_must_be_strings_of_1_to_64_characters(value: object) -> None:
    with pytest.raises(ValueError, match=r"ChannelId must be a string of 1\.\.64 characters"):
        check_id(value, "ChannelId")


@pytest.mark.parametrize("value", ["alice", "x" * 64, "é中\U0001f600", "user.screen", "a-b_c.d/e", "*"])
def test_ordinary_ids_are_accepted(value: str) -> None:
    assert check_id(value, "UserId") == value
    assert (
        verify_token(SECRET, mint_token(SECRET, "app1", "room1", value, Role.PUBLISH, NOW), NOW).user_id
        == value
    )


@given(st.text(min_size=1, max_size=64))
def test_an_id_check_id_accepts_round_trips(value: str) -> None:
    try:
        check_id(value, "UserId")
    except ValueError:
        return
    token = mint_token(SECRET, "app1", value, value, Role.SUBSCRIBE, NOW)
    claims = verify_token(SECRET, token, NOW)
    assert (claims.channel_id, claims.user_id) == (value, value)
    assert claims.allows("app1", value)


# -- secrets, rooms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", ["", "short", "x" * 15, "x" * 257, "has space-0123456789", "é" * 20, "a/b+c=0123456789abc"]
)
def test_malformed_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="MPU_TOKEN_SECRET"):
        check_secret(secret)


def test_an_empty_secret_mints_nothing() -> None:
    with pytest.raises(ValueError):
        mint_token("", "app1", "room1", "alice", Role.PUBLISH, NOW)
    with pytest.raises(ValueError):
        mint_token(SECRET, "app1", "room1", "alice", Role.PUBLISH, NOW, "md5")


def test_room_credentials_derive_from_the_secret_and_the_room() -> None:
    values = [
        tokens.room_pin(SECRET, "app1:room1"),
        tokens.room_secret(SECRET, "app1:room1"),
        tokens.room_pin(SECRET, "app1:room2"),
        tokens.room_pin(OTHER, "app1:room1"),
        tokens.admin_key(SECRET),
        tokens.admin_key(OTHER),
    ]
    assert len(set(values)) == len(values)
    assert tokens.room_pin(SECRET, "app1:room1") == values[0]  # stable
    assert all(len(v) == 24 and v.isalnum() for v in values)
