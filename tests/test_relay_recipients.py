"""A message to several people beyond the gateway, as the relay sees it: an aiosmtpd sink on
127.0.0.1 counting transactions (MAIL FROM) and recipients, the send worker on a fake clock.

Each remote recipient is handed off in a transaction of their own with their own return path
(outbound.md: a report any recipient forges to the return path their copy shows can then be
about them alone), over one connection; a refusal (5xx), a deferral (4xx) or a 452 at one
recipient's RCPT touches that recipient only, and a retry hands off nobody already accepted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.outbound.return_path import parse_return_path, return_path_key
from tests.relay_support import Sink, relay_on_loopback
from tests.test_outbound_worker import (
    NOW,
    Setup,
    open_setup,
    parsed,
    queue,
    relay_port,
    relay_settings,
    setup,
    stored,
    views,
)

__all__ = ["relay_port", "setup"]  # fixtures

TO = ["ann@example.org", "bob@example.org", "cy@example.net"]
CC = ["dee@example.com", "eve@example.com"]
BCC = ["fay@example.net"]
EVERYONE = [*TO, *CC, *BCC]
TOO_MANY = "452 4.5.3 Too many recipients"


@dataclass
class CountingSink(Sink):
    """A `Sink` that also records every transaction begun (MAIL FROM) and refuses, as RFC 5321
    section 4.5.3.1.10 has a relay do, each RCPT past `rcpt_limit` in one transaction with
    TOO_MANY."""

    rcpt_limit: int | None = None
    mail_froms: list[str] = field(default_factory=list)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.mail_froms.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_limit is not None and len(envelope.rcpt_tos) >= self.rcpt_limit:
            return TOO_MANY
        return await super().handle_RCPT(server, session, envelope, address, options)

    def copies(self) -> dict[str, int]:
        """How many copies the relay took for each recipient."""
        counted: dict[str, int] = {}
        for _, recipients, _ in self.received:
            for recipient in recipients:
                counted[recipient] = counted.get(recipient, 0) + 1
        return counted


@pytest.fixture
def sink() -> Iterator[CountingSink]:
    yield CountingSink()


async def queue_to_six(setup: Setup) -> str:
    """Queue a message with three To, two Cc and one Bcc, all beyond the gateway; its id."""
    message = await queue(setup, to=TO, cc=CC, bcc=BCC)
    return message.id


async def bounced_addresses(setup: Setup) -> list[str]:
    listed = await setup.account.http.get("/v1/events", params={"type": "email.bounced"})
    assert listed.status_code == 200, listed.text
    return sorted(event["data"]["delivered_to"] for event in listed.json()["items"])


async def test_six_recipients_are_six_transactions_each_with_its_own_return_path(
    setup: Setup, sink: CountingSink
) -> None:
    message_id = await queue_to_six(setup)
    await setup.worker.deliver_due(NOW)

    assert len(sink.mail_froms) == 6  # a transaction per recipient …
    assert setup.worker.relay_connections_opened == 1  # … one after another on one connection
    assert sink.copies() == dict.fromkeys(EVERYONE, 1)
    key = return_path_key(setup.gateway.server_key)
    for mail_from, recipients, _ in sink.received:
        path = parse_return_path(mail_from, key)
        assert path is not None and path.message_id == message_id
        assert [path.recipient_among(EVERYONE)] == recipients  # the return path is theirs alone
    assert len(set(sink.mail_froms)) == 6
    (raw,) = {raw for _, _, raw in sink.received}  # every copy the same bytes
    headers = parsed(raw)
    assert headers["To"] == ", ".join(TO) and headers["Cc"] == ", ".join(CC)
    assert "Bcc" not in headers and BCC[0].encode() not in raw  # the Bcc in no copy
    assert (await stored(setup, message_id)).status == "sent"


async def test_a_recipient_refused_for_good_fails_alone(setup: Setup, sink: CountingSink) -> None:
    sink.rcpt_answers[CC[0]] = "550 5.1.1 no such user"
    message_id = await queue_to_six(setup)
    await setup.worker.deliver_due(NOW)

    assert sink.copies() == {rcpt: 1 for rcpt in EVERYONE if rcpt != CC[0]}
    after = await stored(setup, message_id)
    assert after.status == "sent"
    assert after.send_error == f"{CC[0]}: refused: RCPT TO: 550 5.1.1 no such user"
    assert await bounced_addresses(setup) == [CC[0]]
    suppressed = await setup.gateway.storage.suppressed_among(after.user_id, setup.sender, EVERYONE)
    assert suppressed == [CC[0]]
    v1 = await setup.account.http.get(f"/v1/agents/{setup.sender}/messages/{message_id}")
    assert v1.json()["delivery_status"] == "bounced"
    assert CC[0] in v1.json()["delivery_detail"] and TO[0] not in v1.json()["delivery_detail"]
    assert await setup.worker.deliver_due(NOW + 86400) == 0  # settled: nobody is sent it again


@pytest.mark.parametrize("answer", ["450 4.2.1 mailbox busy", TOO_MANY])
async def test_a_recipient_deferred_is_retried_alone_and_nobody_gets_it_twice(
    setup: Setup, sink: CountingSink, answer: str
) -> None:
    sink.rcpt_answers[BCC[0]] = answer
    message_id = await queue_to_six(setup)
    await setup.worker.deliver_due(NOW)

    assert sink.copies() == {rcpt: 1 for rcpt in EVERYONE if rcpt != BCC[0]}
    waiting = await stored(setup, message_id)
    assert waiting.status == "queued"
    assert waiting.send_error == f"{BCC[0]}: RCPT TO: {answer}"
    assert await views(setup, message_id) == ("queued", "queued", "deferred")

    sink.rcpt_answers.clear()
    sink.mail_froms.clear()
    assert await setup.worker.deliver_due(NOW + 30) == 1
    assert len(sink.mail_froms) == 1  # the retry is one transaction, the deferred recipient's
    assert sink.copies() == dict.fromkeys(EVERYONE, 1)
    assert await views(setup, message_id) == ("sent", "sent", "sent")
    assert await bounced_addresses(setup) == []


async def test_a_relay_limiting_recipients_per_transaction_gets_everyone_at_once(
    setup: Setup, sink: CountingSink
) -> None:
    sink.rcpt_limit = 1  # each transaction has one recipient: the limit is never reached
    message_id = await queue_to_six(setup)
    await setup.worker.deliver_due(NOW)

    assert sink.copies() == dict.fromkeys(EVERYONE, 1)
    assert (await stored(setup, message_id)).status == "sent"


@dataclass
class ClosingSink(CountingSink):
    """A relay taking at most `per_connection` transactions on a connection: past them it
    answers MAIL FROM with 421, as Exim's `smtp_accept_max_per_connection` has it."""

    per_connection: int = 3

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        taken = getattr(session, "transactions", 0)
        if taken >= self.per_connection:
            return "421 4.7.0 too many messages in this connection"
        session.transactions = taken + 1
        return await super().handle_MAIL(server, session, envelope, address, options)


async def test_a_relay_ending_the_connection_after_some_transactions_gets_the_rest_on_another(
    tmp_path: Path,
) -> None:
    closing = ClosingSink()
    with relay_on_loopback(closing) as port:
        async with open_setup(relay_settings(tmp_path, port)) as opened:
            message_id = await queue_to_six(opened)
            await opened.worker.deliver_due(NOW)
            assert closing.copies() == dict.fromkeys(EVERYONE, 1)
            assert opened.worker.relay_connections_opened == 2
            assert (await stored(opened, message_id)).status == "sent"
