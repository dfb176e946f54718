"""Magic-link tokens: shape from the contract, tamper and expiry detection."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from e2a.signing.magic_links import (
    LINK_GRACE_SECONDS,
    TokenError,
    TokenExpired,
    issue_token,
    peek_message_id,
    verify_token,
)

SECRET = "0f" * 32
DEADLINE = 1_800_000_000


def test_token_matches_the_contract_construction() -> None:
    token = issue_token(SECRET, "msg_abc", "approve", DEADLINE)
    payload = f"msg_abc|approve|{DEADLINE + LINK_GRACE_SECONDS}".encode()
    mac = hmac.new(SECRET.encode(), payload, hashlib.sha256).digest()
    expected = (
        base64.urlsafe_b64encode(payload).decode().rstrip("=")
        + "."
        + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    )
    assert token == expected
    assert peek_message_id(token) == "msg_abc"
    verified = verify_token(SECRET, token, DEADLINE)
    assert (verified.message_id, verified.action) == ("msg_abc", "approve")


def test_expiry_is_deadline_plus_ten_minutes() -> None:
    token = issue_token(SECRET, "msg_abc", "reject", DEADLINE)
    assert verify_token(SECRET, token, DEADLINE + LINK_GRACE_SECONDS).action == "reject"
    with pytest.raises(TokenExpired):
        verify_token(SECRET, token, DEADLINE + LINK_GRACE_SECONDS + 1)


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
    token = issue_token(SECRET, "msg_abc", "approve", DEADLINE)
    with pytest.raises(TokenError):
        verify_token(SECRET, mangle(token), DEADLINE)  # type: ignore[operator]


def test_other_secret_is_refused() -> None:
    token = issue_token(SECRET, "msg_abc", "approve", DEADLINE)
    with pytest.raises(TokenError):
        verify_token("1f" * 32, token, DEADLINE)
