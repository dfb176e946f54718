"""The `/v1` delivery rollup of a message sent, from what the gateway keeps of it: the worst of
its recipients' states by e2a's precedence (complained > bounced > failed > delivered > deferred
> sent > sending > accepted), and the detail naming who did not get it."""

from __future__ import annotations

from typing import Any

import pytest

from e2a_gateway.outbound.rollup import delivery_state
from e2a_gateway.storage.base import FiledMessage

SENT_AT = "2026-01-02T03:04:05Z"
REFUSED = "refused: RCPT TO: 550 5.1.1 no such user"
GAVE_UP = "gave up: RCPT TO: 451 4.3.0 try again later"


def outbound(status: str, results: dict[str, str], **fields: Any) -> FiledMessage:
    """A message the agent sent to a, b and c, in `status`, its recipients' results kept."""
    return FiledMessage(
        id="msg_1",
        seq=1,
        direction="outbound",
        agent_email="bot@agents.example.com",
        envelope_from="",
        from_addr="bot@agents.example.com",
        reply_to=None,
        to=["a@example.org", "b@example.org"],
        cc=["c@example.org"],
        subject="Hi",
        conversation_id=None,
        rfc_message_id=None,
        status=status,
        delivery_status=None,
        authentication_results=results,
        created_at=SENT_AT,
        deleted_at=None,
        labels=[],
        size=None,
        **fields,
    )


@pytest.mark.parametrize(
    ("message", "rollup", "detail"),
    [
        pytest.param(
            outbound("sent", {"a": "accepted", "b": "accepted"}, sent_at=SENT_AT),
            "sent",
            None,
            id="every-recipient-taken",
        ),
        pytest.param(
            outbound(
                "sent",
                {"a": "accepted", "b": f"{GAVE_UP}"},
                sent_at=SENT_AT,
                send_error=f"b: {GAVE_UP}",
            ),
            "failed",
            f"b: {GAVE_UP}",
            id="given-up-on-beside-sent",
        ),
        pytest.param(
            outbound(
                "sent",
                {"a": "accepted", "b": GAVE_UP, "c": REFUSED},
                sent_at=SENT_AT,
                send_error=f"b: {GAVE_UP}; c: {REFUSED}",
            ),
            "bounced",
            f"b: {GAVE_UP}; c: {REFUSED}",
            id="bounced-outranks-failed",
        ),
        pytest.param(
            outbound("sent", {}, sent_at=SENT_AT, send_error="c: refused: RCPT TO: 550 no"),
            "failed",
            "c: refused: RCPT TO: 550 no",
            id="results-not-kept",
        ),
        pytest.param(
            outbound("queued", {"a": "accepted"}, send_error="b: RCPT TO: 451 later"),
            "deferred",
            "b: RCPT TO: 451 later",
            id="deferred-beside-sent",
        ),
        pytest.param(
            outbound("queued", {"a": "accepted", "c": REFUSED}, send_error="b: RCPT TO: 451 x"),
            "bounced",
            f"c: {REFUSED}; b: RCPT TO: 451 x",
            id="bounced-while-another-is-retried",
        ),
        pytest.param(
            outbound(
                "bounced",
                {"a": "bounced: smtp; 550 5.1.1 gone", "b": "accepted", "c": GAVE_UP},
                sent_at=SENT_AT,
                send_error=f"c: {GAVE_UP}",
            ),
            "bounced",
            f"c: {GAVE_UP}; a: bounced: smtp; 550 5.1.1 gone",
            id="bounce-reported-after-hand-off",
        ),
        pytest.param(
            outbound("queued", {}),
            "accepted",
            None,
            id="waiting-for-its-first-hand-off",
        ),
        pytest.param(
            outbound("bounced", {}, sent_at=SENT_AT, complained_at=SENT_AT),
            "complained",
            None,
            id="complained-outranks-bounced",
        ),
        pytest.param(
            outbound("failed", {}, send_error="cannot build the message: x"),
            "failed",
            "cannot build the message: x",
            id="failed",
        ),
        pytest.param(outbound("pending_approval", {}), "accepted", None, id="held-for-review"),
        pytest.param(
            outbound("rejected", {}), "failed", "rejected in review; not sent", id="rejected"
        ),
        pytest.param(
            outbound("expired_rejected", {}),
            "failed",
            "not approved before its approval deadline; not sent",
            id="rejected-at-expiry",
        ),
        pytest.param(
            outbound("expired_rejected", {"a": GAVE_UP}, send_error=f"a: {GAVE_UP}"),
            "failed",
            f"a: {GAVE_UP}",
            id="approved-at-expiry-then-not-sent",
        ),
    ],
)
def test_the_rollup_is_the_worst_recipient_state(
    message: FiledMessage, rollup: str | None, detail: str | None
) -> None:
    assert delivery_state(message) == (rollup, detail)
