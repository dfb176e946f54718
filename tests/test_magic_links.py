"""Magic-link tokens: shape from the contract, the server-only key, canonical spelling, tamper
and expiry detection."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from e2a_gateway.signing.magic_links import (
    LINK_GRACE_SECONDS,
    TokenError,
    TokenExpired,
    issue_token,
    link_key,
    verify_token,
)

pytestmark = pytest.mark.backend_independent

SERVER_KEY = "server key of this gateway, 32 bytes or more"
KEY = link_key(SERVER_KEY)
DEADLINE = 1_800_000_000


def test_token_matches_the_contract_construction() -> None:
    token = issue_token(KEY, "msg_abc", "approve", DEADLINE)
    payload = f"msg_abc|approve|{DEADLINE + LINK_GRACE_SECONDS}".encode()
    mac = hmac.new(KEY, payload, hashlib.sha256).digest()
    expected = (
        base64.urlsafe_b64encode(payload).decode().rstrip("=")
        + "."
        + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    )
    assert token == expected
    verified = verify_token(KEY, token, DEADLINE)
    assert (verified.message_id, verified.action) == ("msg_abc", "approve")


def test_expiry_is_deadline_plus_ten_minutes() -> None:
    token = issue_token(KEY, "msg_abc", "reject", DEADLINE)
    assert verify_token(KEY, token, DEADLINE + LINK_GRACE_SECONDS).action == "reject"
    with pytest.raises(TokenExpired):
        verify_token(KEY, token, DEADLINE + LINK_GRACE_SECONDS + 1)


def swap_action(token: str) -> str:
    """The same signature on a payload whose action was changed."""
    encoded, _, signature = token.partition(".")
    payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    forged = payload.replace(b"approve", b"reject")
    return base64.urlsafe_b64encode(forged).decode().rstrip("=") + "." + signature


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: swap_action(t),
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0],
        lambda t: "!!!." + t.split(".")[1],
        lambda t: "",
    ],
)
def test_tampered_tokens_are_refused(mangle: object) -> None:
    token = issue_token(KEY, "msg_abc", "approve", DEADLINE)
    with pytest.raises(TokenError):
        verify_token(KEY, mangle(token), DEADLINE)  # type: ignore[operator]


def test_other_key_is_refused() -> None:
    token = issue_token(KEY, "msg_abc", "approve", DEADLINE)
    with pytest.raises(TokenError):
        verify_token(link_key("another gateway's server key"), token, DEADLINE)


def test_the_key_is_derived_from_the_server_key_alone() -> None:
    expected = hmac.new(SERVER_KEY.encode(), b"e2a magic link\x00", hashlib.sha256).digest()
    assert link_key(SERVER_KEY) == expected
    assert link_key(SERVER_KEY) != link_key(SERVER_KEY + "x")


URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def spellings(token: str) -> list[str]:
    """Other spellings of `token` that a lenient decoder reads as the same bytes."""
    payload, _, signature = token.partition(".")
    # A 32-byte MAC takes 43 characters; the last one carries 2 unused bits: set one.
    loose_end = URLSAFE_ALPHABET[URLSAFE_ALPHABET.index(signature[-1]) ^ 1]
    standard = signature.replace("-", "+").replace("_", "/")
    return [
        f"{payload}=.{signature}",  # padding
        f"{payload}.{signature}=",
        f"{payload}.{signature} ",  # trailing characters
        f"{payload}.{signature}\n",
        f"{payload}.{signature}.",
        f" {payload}.{signature}",
        f"{payload}.{signature[:-1]}{loose_end}",  # non-zero unused bits
        f"{payload[:4]}!{payload[4:]}.{signature}",  # a character lenient decoders skip
        f"{payload}.{standard}",  # the standard alphabet's + and /
    ]


def test_only_the_canonical_spelling_is_accepted() -> None:
    token = next(  # a token whose signature has URL-safe characters to respell
        candidate
        for n in range(1000)
        if {"-", "_"}
        & set((candidate := issue_token(KEY, f"msg_{n}", "approve", DEADLINE)).split(".")[1])
    )
    for spelling in spellings(token):
        assert spelling != token
        with pytest.raises(TokenError):
            verify_token(KEY, spelling, DEADLINE)
    assert verify_token(KEY, token, DEADLINE).action == "approve"
