"""Every recipient of an outbound message that does not get it is told of in the events log,
once, by name: an `email.bounced` for a recipient the relay refused at RCPT while another was
retried, for one given up on after 24 h of retries while others got the message, and for one
refused here, beside the `email.delivered` of those who got it. Over a relay on loopback and
the gateway's `/v1/events`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent
from tests.relay_support import Sink, relay_port, sink

pytestmark = pytest.mark.slow

__all__ = ["relay_port", "sink"]  # fixtures

CAROL = "carol@example.org"
ERIN = "erin@example.org"
FRANK = "frank@example.org"
DAY = 86400.0


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def send(alice: Account, agent: str, to: list[str]) -> str:
    """Send to `to` from `agent` over `/v1`, waiting for the first hand-off; the message id."""
    answer = await alice.http.post(
        f"/v1/agents/{quote(agent, safe='')}/messages",
        params={"wait": "sent"},
        json={"to": to, "subject": "Hi", "text": "Hello"},
    )
    assert answer.status_code in (200, 202), answer.text
    return str(answer.json()["message_id"])


async def outcomes(alice: Account, message_id: str) -> list[tuple[str, str | None]]:
    """The message's events, oldest first: type and the recipient it is about (if one)."""
    answer = await alice.http.get("/v1/events", params={"message_id": message_id})
    assert answer.status_code == 200, answer.text
    items = reversed(answer.json()["items"])
    return [(item["type"], item["data"].get("delivered_to")) for item in items]


async def bounces(alice: Account, message_id: str) -> dict[str, dict[str, Any]]:
    """The `data` of each `email.bounced` of the message, by recipient."""
    answer = await alice.http.get(
        "/v1/events", params={"message_id": message_id, "type": "email.bounced"}
    )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    found = {item["data"]["delivered_to"]: item["data"] for item in items}
    assert len(found) == len(items), items  # one per recipient
    return found


async def test_a_recipient_refused_while_another_is_retried_is_told_of_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    sink.rcpt_answers[CAROL] = "550 5.1.1 no such user"
    sink.rcpt_answers[FRANK] = "451 4.3.0 try again later"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send(alice, bot, [ERIN, CAROL, FRANK])

    bounced = await bounces(alice, message_id)
    assert list(bounced) == [CAROL], bounced  # now, not once Frank is settled
    assert bounced[CAROL]["bounce_type"] == "permanent"
    assert "550 5.1.1 no such user" in bounced[CAROL]["smtp_detail"]
    suppressed = await alice.http.get("/v1/account/suppressions")
    assert CAROL in [item["address"] for item in suppressed.json()["items"]], suppressed.text

    sink.rcpt_answers.pop(FRANK)
    assert await OutboundWorker(running.gateway).deliver_due(time.time() + 3600) == 1
    seen = await outcomes(alice, message_id)
    assert seen.count(("email.bounced", CAROL)) == 1, seen
    assert ("email.delivered", ERIN) in seen and ("email.delivered", FRANK) in seen, seen
    assert [kind for kind, _ in seen].count("email.sent") == 1, seen


async def test_a_recipient_given_up_on_while_others_got_it_is_told_of(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    sink.rcpt_answers[FRANK] = "451 4.3.0 try again later"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send(alice, bot, [ERIN, FRANK])
    assert await bounces(alice, message_id) == {}  # still retried

    assert await OutboundWorker(running.gateway).deliver_due(time.time() + 2 * DAY) == 1
    bounced = await bounces(alice, message_id)
    assert list(bounced) == [FRANK], bounced
    assert bounced[FRANK]["bounce_type"] == "transient", bounced
    assert "451 4.3.0 try again later" in bounced[FRANK]["smtp_detail"], bounced
    seen = await outcomes(alice, message_id)
    assert ("email.delivered", ERIN) in seen and ("email.sent", None) in seen, seen
    suppressed = await alice.http.get("/v1/account/suppressions")
    assert suppressed.json()["items"] == [], suppressed.text  # a soft failure suppresses nobody


async def test_a_recipient_refused_here_is_told_of(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    ghost = "ghost@agents.test"  # no agent: refused here, never handed to the relay
    message_id = await send(alice, bot, [ERIN, ghost])

    bounced = await bounces(alice, message_id)
    assert list(bounced) == [ghost], bounced
    assert bounced[ghost]["bounce_type"] == "undetermined", bounced
    assert "no agent at" in bounced[ghost]["smtp_detail"], bounced
    seen = await outcomes(alice, message_id)
    assert ("email.delivered", ERIN) in seen and ("email.sent", None) in seen, seen
    suppressed = await alice.http.get("/v1/account/suppressions")
    assert suppressed.json()["items"] == [], suppressed.text


async def test_a_recipient_reached_while_another_is_retried_is_told_of_at_once(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """The relay takes Erin's copy and defers Frank's: `email.sent` and Erin's
    `email.delivered` are logged then, not once Frank is settled a day later; Frank's comes
    when the retry reaches him, and nothing is logged twice."""
    sink.rcpt_answers[FRANK] = "451 4.3.0 try again later"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send(alice, bot, [ERIN, FRANK])
    assert await outcomes(alice, message_id) == [("email.sent", None), ("email.delivered", ERIN)]

    sink.rcpt_answers.pop(FRANK)
    assert await OutboundWorker(running.gateway).deliver_due(time.time() + 3600) == 1
    assert await outcomes(alice, message_id) == [
        ("email.sent", None),
        ("email.delivered", ERIN),
        ("email.delivered", FRANK),
    ]
