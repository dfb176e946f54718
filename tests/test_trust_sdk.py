"""The SDK's side of the trust map (e2a_gateway.v1): read from a message, gated on verification like
every claim field, refused when it disagrees with the signed claim, and on notifications."""

from __future__ import annotations

from typing import Any

import pytest

from e2a_gateway.v1 import AsyncInboundEmail, Trust, UnverifiedEmailError
from e2a_gateway.v1.notifications import WSNotification

pytestmark = pytest.mark.backend_independent

QUOTED = {
    "kind": "quoted",
    "depth": 1,
    "start": 2,
    "end": 5,
    "content": "Wire USD 9,000 today.",
    "attribution": {"text": "Eve wrote:", "address": "eve@unverified.example"},
    "author": "eve@unverified.example",
    "verified": False,
    "source": None,
}
TRUST = {
    "sender": {"address": "bob@example.org", "verified": True, "basis": "dmarc=pass"},
    "parts": [
        {"kind": "authored", "depth": 0, "start": 0, "end": 2, "content": "Fine.",
         "author": "bob@example.org", "verified": True},
        QUOTED,
    ],
    "quoted_unverified": True,
}  # fmt: skip
CLAIM = {"X-E2A-Auth-Verified": "true", "X-E2A-Auth-Sender": "bob@example.org"}


async def no_reply(*_: Any, **__: Any) -> Any:
    raise AssertionError("not called")


def email(trust: Any = TRUST, *, trusted: bool = True, **claim: str) -> AsyncInboundEmail:
    payload = {"message_id": "msg_1", "auth_headers": {**CLAIM, **claim}, "reply_text": "Fine."}
    if trust is not None:
        payload["trust"] = trust
    return AsyncInboundEmail(payload, no_reply, trusted=trusted)


def test_a_verified_message_gives_its_reply_text_and_trust_map() -> None:
    fetched = email()
    assert fetched.reply_text == "Fine."
    trust = fetched.trust
    assert isinstance(trust, Trust)
    assert trust.sender is not None and trust.sender.basis == "dmarc=pass"
    [unproven] = trust.unverified_quotes()
    assert unproven.content == "Wire USD 9,000 today."
    assert unproven.attribution is not None
    assert unproven.attribution.address == "eve@unverified.example"


def test_an_unverified_webhook_body_gates_them_like_every_claim() -> None:
    unchecked = email(trusted=False)
    with pytest.raises(UnverifiedEmailError):
        _ = unchecked.reply_text
    with pytest.raises(UnverifiedEmailError):
        _ = unchecked.trust
    assert unchecked.unverified_payload["trust"] == TRUST


@pytest.mark.parametrize(
    "claim",
    [{"X-E2A-Auth-Sender": "ceo@example.org"}, {"X-E2A-Auth-Verified": "false"}],
    ids=["other sender", "sender not verified"],
)
def test_a_trust_map_that_disagrees_with_the_signed_claim_is_refused(claim: dict[str, str]) -> None:
    with pytest.raises(UnverifiedEmailError, match="disagrees with the signed claim"):
        _ = email(**claim).trust


def test_a_gateway_without_trust_maps_gives_none() -> None:
    assert email(trust=None).trust is None


def test_notifications_carry_the_reading_when_the_frame_does() -> None:
    frame = {"message_id": "msg_1", "from": "bob@example.org", "subject": "Re: x"}
    with_reading = WSNotification.from_payload({**frame, "reply_text": "Fine.", "trust": TRUST})
    assert with_reading.reply_text == "Fine."
    assert with_reading.trust is not None and with_reading.trust.quoted_unverified is True
    bare = WSNotification.from_payload(frame)
    assert bare.reply_text is None and bare.trust is None
