"""A message sent to several recipients reports on `/v1` the worst of their delivery states
(e2a's `delivery_status` rollup, api/openapi.yaml at 220fe0a7) and a `delivery_detail` naming
those who did not get it: read by id and in a listing over HTTP, by e2a's 5.x SDK, through the
MCP tools and in the account's export, with a relay on loopback refusing or deferring one
recipient at RCPT, or a bounce report coming back for one. `/api/v1` keeps its 2.x shape."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.storage.base import BouncedRecipient
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.mcp_support import call
from tests.relay_support import Sink, relay_port, sink
from tests.sdk_v1 import run_sdk, sdk5_python, value
from tests.test_dashboard import browser, sign_in
from tests.test_mcp_names import opener
from tests.test_v1_bounces import delivery_status_notification

pytestmark = pytest.mark.slow

__all__ = ["browser", "relay_port", "sdk5_python", "sink"]  # fixtures

CAROL = "carol@example.org"
DAVE = "dave@example.org"
ERIN = "erin@example.org"
FRANK = "frank@example.org"


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


def messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def send_and_wait(alice: Account, agent: str, body: dict[str, Any]) -> str:
    """Send `body` from `agent` over `/v1`, waiting for the first hand-off; the message's id."""
    sent = await alice.http.post(messages(agent), params={"wait": "sent"}, json=body)
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "sent"
    return str(sent.json()["message_id"])


async def shown_everywhere(
    running: RunningGateway, alice: Account, agent: str, message_id: str
) -> list[dict[str, Any]]:
    """The message as `/v1` shows it by id and in its outbound listing, and as the MCP tools
    `get_message` and `list_messages` show it."""
    by_id = await alice.http.get(messages(agent, f"/{message_id}"))
    assert by_id.status_code == 200, by_id.text
    page = await alice.http.get(messages(agent), params={"direction": "outbound"})
    assert page.status_code == 200, page.text
    (listed,) = [item for item in page.json()["items"] if item["id"] == message_id]
    async with opener("http", running)(alice.key, agent) as client:
        tool = await call(client, "get_message", {"message_id": message_id})
        rows = await call(client, "list_messages", {"direction": "outbound"})
    (row,) = [item for item in rows["messages"] if item["message_id"] == message_id]
    return [by_id.json(), listed, tool, row]


async def test_a_recipient_refused_at_rcpt_makes_the_message_bounced_and_named(
    running: RunningGateway, make_account: Any, sink: Sink, sdk5_python: Path
) -> None:
    sink.rcpt_answers[CAROL] = "550 5.1.1 no such user"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = {"to": [DAVE, CAROL], "cc": [ERIN], "subject": "Hi", "text": "Hello"}
    message_id = await send_and_wait(alice, bot, body)
    assert sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts) == [DAVE, ERIN]

    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "bounced", view  # the worst: not `sent`
        detail = view["delivery_detail"]
        assert CAROL in detail and "550 5.1.1 no such user" in detail, detail
        assert DAVE not in detail and ERIN not in detail

    lifecycle = await alice.http.get(messages(bot, f"/{message_id}/lifecycle"))
    assert lifecycle.status_code == 200, lifecycle.text
    steps = [(step["stage"], step["outcome"]) for step in lifecycle.json()["items"]]
    assert ("submission", "accepted") in steps  # two got it; the third bounced, suppressed:
    assert steps[-2:] == [("delivery", "bounced"), ("suppression", "applied")]

    steps = await run_sdk(
        sdk5_python,
        running.addresses.http_url,
        {"default": alice.key},
        [{"do": "messages.get", "args": [bot, message_id]}],
    )
    seen = value(steps[0], "MessageView")
    assert seen["delivery_status"] == "bounced" and CAROL in seen["delivery_detail"]

    export = await alice.http.get("/v1/account/export")
    assert export.status_code == 200, export.text
    (exported,) = [item for item in export.json()["messages"] if item["id"] == message_id]
    assert exported["delivery_status"] == "bounced" and CAROL in exported["delivery_detail"]

    legacy = await alice.http.get(f"/api/v1/messages/{message_id}")
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["status"] == "sent"  # the 2.x contract's states, as before
    assert CAROL in legacy.json()["error"]
    (legacy_export,) = [
        item
        for item in (await alice.http.get("/api/v1/users/me/export")).json()["messages"]
        if item["id"] == message_id
    ]
    assert "delivery_status" not in legacy_export and "mailbox" not in legacy_export


async def test_a_deferred_recipient_beside_a_sent_one_makes_the_message_deferred(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    sink.rcpt_answers[FRANK] = "451 4.3.0 try again later"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send_and_wait(
        alice, bot, {"to": [ERIN, FRANK], "subject": "Hi", "text": "Hello"}
    )
    assert [rcpt for _, rcpts, _ in sink.received for rcpt in rcpts] == [ERIN]

    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "deferred", view
        detail = view["delivery_detail"]
        assert FRANK in detail and "451 4.3.0 try again later" in detail, detail
        assert ERIN not in detail


async def test_every_recipient_taken_reads_sent_without_detail(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send_and_wait(
        alice, bot, {"to": [ERIN], "cc": [FRANK], "subject": "Hi", "text": "Hello"}
    )
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "sent", view
        assert "delivery_detail" not in view


async def report_bounce(running: RunningGateway, sink: Sink, recipient: str) -> None:
    """A permanent bounce report for `recipient`, sent over SMTP to its copy's return path."""
    return_path, _ = sink.copy_to(recipient)
    report = delivery_status_notification(return_path, recipient)
    await smtp_send(running.addresses.smtp_port, [return_path], report, sender="")


async def test_a_bounce_report_for_one_recipient_names_it(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send_and_wait(
        alice, bot, {"to": [ERIN, DAVE], "subject": "Hi", "text": "Hello"}
    )
    await report_bounce(running, sink, ERIN)
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "bounced", view
        detail = view["delivery_detail"]
        assert ERIN in detail and "550 5.1.1 no such user" in detail, detail
        assert DAVE not in detail


async def test_a_bounce_report_does_not_stop_the_retries_of_another_recipient(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Erin's copy is taken and reported bounced while Frank's is deferred: Frank still gets
    the message when it is retried, and the message ends `bounced`, naming Erin alone."""
    sink.rcpt_answers[FRANK] = "451 4.3.0 try again later"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send_and_wait(
        alice, bot, {"to": [ERIN, FRANK], "subject": "Hi", "text": "Hello"}
    )
    await report_bounce(running, sink, ERIN)
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "bounced", view  # outranks Frank's `deferred`
        assert ERIN in view["delivery_detail"] and FRANK in view["delivery_detail"]

    sink.rcpt_answers.clear()
    assert await OutboundWorker(running.gateway).deliver_due(time.time() + 3600) == 1
    assert [rcpt for _, rcpts, _ in sink.received for rcpt in rcpts] == [ERIN, FRANK]
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "bounced", view
        assert ERIN in view["delivery_detail"] and FRANK not in view["delivery_detail"]
    legacy = await alice.http.get(f"/api/v1/messages/{message_id}")
    assert legacy.json()["status"] == "failed"  # bounced, in the 2.x contract's words


@dataclass
class HeldSink(Sink):
    """A relay that takes the copy, then holds its answer to the end of DATA until `release`
    is set: the moment between the relay accepting mail and the sender hearing so."""

    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        released = await asyncio.to_thread(self.release.wait, 10)
        return "250 OK" if released else "451 4.3.0 not released"


@pytest.mark.parametrize("sink", [HeldSink()])
async def test_a_bounce_reported_before_the_attempt_is_saved_is_kept(
    running: RunningGateway, make_account: Any, sink: HeldSink
) -> None:
    """Erin's bounce report is recorded after the relay took her copy but before the send
    worker heard the relay's 250 and saved the attempt: the saved attempt does not write
    `accepted` over it, and the message reads `bounced`, naming her."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sent = await alice.http.post(
        messages(bot), json={"to": [ERIN, DAVE], "subject": "Hi", "text": "Hello"}
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    await wait_until(lambda: len(sink.received) == 1)
    report = BouncedRecipient(ERIN, "permanent", "550 5.1.1 no such user")
    assert await running.gateway.storage.record_bounce(message_id, [report], time.time())
    sink.release.set()

    async def settled() -> bool:
        stored = await running.gateway.storage.get_outbound(None, message_id)
        return stored is not None and stored.sent_at is not None

    await wait_until(settled)
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["delivery_status"] == "bounced", view
        assert ERIN in view["delivery_detail"] and DAVE not in view["delivery_detail"]
    results = await running.gateway.storage.recipient_results(message_id)
    assert results == {ERIN: "bounced: 550 5.1.1 no such user", DAVE: "accepted"}


async def test_a_bounce_reported_after_a_clean_hand_off_is_named_on_api_v1_and_the_dashboard(
    running: RunningGateway, make_account: Any, sink: Sink, browser: Any
) -> None:
    """The relay took the message for both; a report then bounces Erin's copy: `/api/v1`'s
    `error` and the dashboard's Outbound page name her and the report's diagnostic, as `/v1`
    does, and leave Dave out."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    message_id = await send_and_wait(
        alice, bot, {"to": [ERIN, DAVE], "subject": "Quarterly plan", "text": "Hello"}
    )
    await report_bounce(running, sink, ERIN)

    legacy = await alice.http.get(f"/api/v1/messages/{message_id}")
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["status"] == "failed"  # bounced, in the 2.x contract's words
    error = legacy.json()["error"]
    assert isinstance(error, str)
    assert f"{ERIN}: bounced: " in error and "550 5.1.1 no such user" in error, error
    assert DAVE not in error
    listed = await alice.http.get("/api/v1/messages", params={"status": "failed"})
    assert listed.status_code == 200, listed.text
    (item,) = [m for m in listed.json()["messages"] if m["id"] == message_id]
    assert item["error"] == error

    client = browser()
    assert (await sign_in(client, alice.key)).status_code == 303
    page = await client.get("/outbound")
    assert page.status_code == 200
    row = page.text[page.text.index("Quarterly plan") :]
    row = row[: row.index("</tr>")]
    assert "bounced" in row and ERIN in row and "550 5.1.1 no such user" in row, row
    assert DAVE not in row.split("<br>", 1)[-1]


async def test_held_mail_reads_accepted_and_mail_a_review_stopped_reads_failed(
    running: RunningGateway, make_account: Any
) -> None:
    """As e2a's async-send contract (§1.3, §3.1) has it: held for review, a message's
    `delivery_status` is `accepted` (the hold shows in `review_status`); rejected by a reviewer
    or at its approval deadline it is never sent, and reads `failed` with why, never a
    permanent `accepted`."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    turned_on = await alice.http.put(
        f"/api/v1/agents/{quote(bot, safe='')}", json={"hitl_enabled": True}
    )
    assert turned_on.status_code == 200, turned_on.text
    held = []
    for subject in ("first", "second", "third"):
        answer = await alice.http.post(
            messages(bot), json={"to": [ERIN], "subject": subject, "text": "Draft."}
        )
        assert answer.json()["status"] == "pending_review", answer.text
        held.append(answer.json()["message_id"])
    pending, rejected, expired = held

    for view in await shown_everywhere(running, alice, bot, pending):
        assert view["review_status"] == "pending_review", view
        assert view["delivery_status"] == "accepted", view
        assert "delivery_detail" not in view

    refused = await alice.http.post(f"/v1/reviews/{rejected}/reject", json={"reason": "No."})
    assert refused.status_code == 200, refused.text
    for view in await shown_everywhere(running, alice, bot, rejected):
        assert view["review_status"] == "review_rejected", view
        assert view["delivery_status"] == "failed", view
        assert "rejected" in view["delivery_detail"], view

    async def exported() -> dict[str, dict[str, Any]]:
        export = await alice.http.get("/v1/account/export")
        assert export.status_code == 200, export.text
        return {item["id"]: item for item in export.json()["messages"]}

    before = await exported()
    assert before[pending]["delivery_status"] == "accepted"
    assert before[rejected]["delivery_status"] == "failed"

    await running.gateway.storage.expire_outbound(time.time() + 30 * 86400)  # both still held
    for message_id in (pending, expired):
        for view in await shown_everywhere(running, alice, bot, message_id):
            assert view["review_status"] == "review_expired_rejected", view
            assert view["delivery_status"] == "failed", view
            assert "deadline" in view["delivery_detail"], view
    assert (await exported())[expired]["delivery_status"] == "failed"


async def test_mail_approved_at_its_deadline_keeps_its_review_status_once_it_bounces(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """A held message its agent approves when the approval deadline passes is handed on, and a
    permanent bounce report then comes back for one recipient: it reads `bounced` with the
    recipient named, and its `review_status` stays `review_expired_approved` (no human approved
    it), by id, in listings, through the MCP tools and in the review's own view."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    turned_on = await alice.http.put(
        f"/api/v1/agents/{quote(bot, safe='')}",
        json={"hitl_enabled": True, "hitl_expiration_action": "approve"},
    )
    assert turned_on.status_code == 200, turned_on.text
    held = await alice.http.post(
        messages(bot), json={"to": [ERIN, DAVE], "subject": "Hi", "text": "Hello"}
    )
    assert held.json()["status"] == "pending_review", held.text
    message_id = held.json()["message_id"]
    later = time.time() + 30 * 86400
    assert [m.id for m in await running.gateway.storage.expire_outbound(later)] == [message_id]
    assert await OutboundWorker(running.gateway).deliver_due(later) == 1
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["review_status"] == "review_expired_approved", view
        assert view["delivery_status"] == "sent", view

    await report_bounce(running, sink, ERIN)
    for view in await shown_everywhere(running, alice, bot, message_id):
        assert view["review_status"] == "review_expired_approved", view
        assert view["delivery_status"] == "bounced", view
        assert ERIN in view["delivery_detail"] and DAVE not in view["delivery_detail"]
    review = await alice.http.get(f"/v1/reviews/{message_id}")
    assert review.status_code == 200, review.text
    assert review.json()["review_status"] == "review_expired_approved", review.text


async def test_the_lifecycle_of_mail_approved_at_its_deadline_says_so_once_it_bounces(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """The reconstructed lifecycle of a message approved at its deadline, handed on, then
    bounced for a recipient names its review `review.expired_approved`, not a person's
    `review.approved`."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    turned_on = await alice.http.put(
        f"/api/v1/agents/{quote(bot, safe='')}",
        json={"hitl_enabled": True, "hitl_expiration_action": "approve"},
    )
    assert turned_on.status_code == 200, turned_on.text
    held = await alice.http.post(
        messages(bot), json={"to": [ERIN, DAVE], "subject": "Hi", "text": "Hello"}
    )
    message_id = held.json()["message_id"]
    later = time.time() + 30 * 86400
    assert [m.id for m in await running.gateway.storage.expire_outbound(later)] == [message_id]
    assert await OutboundWorker(running.gateway).deliver_due(later) == 1
    await report_bounce(running, sink, ERIN)

    lifecycle = await alice.http.get(messages(bot, f"/{message_id}/lifecycle"))
    assert lifecycle.status_code == 200, lifecycle.text
    steps = [(step["stage"], step["reason_code"]) for step in lifecycle.json()["items"]]
    assert ("review", "review.expired_approved") in steps, steps
    assert ("review", "review.approved") not in steps, steps
    assert ("delivery", "delivery.permanent_bounce") in steps, steps


async def lifecycle_of(alice: Account, agent: str, message_id: str) -> list[tuple[Any, ...]]:
    """The message's `/v1` lifecycle: (stage, outcome, reason_code, recipient) per step."""
    lifecycle = await alice.http.get(messages(agent, f"/{message_id}/lifecycle"))
    assert lifecycle.status_code == 200, lifecycle.text
    return [
        (step["stage"], step["outcome"], step["reason_code"], step.get("recipient"))
        for step in lifecycle.json()["items"]
    ]


async def test_the_lifecycle_shows_a_suppression_only_for_the_address_it_suppressed(
    running: RunningGateway, make_account: Any, sink: Sink
) -> None:
    """Mailbox full (552 5.2.2) and a DMARC refusal (5.7.26) bounce the recipient but say
    nothing bad of the address: e2a suppresses neither, and its lifecycle says no suppression
    was applied to them. The unknown user (550 5.1.1) is suppressed, and says so."""
    sink.rcpt_answers[CAROL] = "552 5.2.2 mailbox full"
    sink.rcpt_answers[DAVE] = "550 5.1.1 no such user"
    sink.rcpt_answers[FRANK] = "550 5.7.26 unauthenticated mail is refused by DMARC policy"
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    body = {"to": [CAROL, DAVE, ERIN, FRANK], "subject": "Hi", "text": "Hello"}
    message_id = await send_and_wait(alice, bot, body)

    suppressed = (await alice.http.get("/v1/account/suppressions")).json()["items"]
    assert [item["address"] for item in suppressed] == [DAVE]
    steps = await lifecycle_of(alice, bot, message_id)
    assert ("submission", "accepted", "submission.upstream_accepted", None) in steps, steps
    applied = [step for step in steps if step[0] == "suppression"]
    assert applied == [("suppression", "applied", "suppression.hard_bounce_applied", DAVE)]
    bounced = {step[3]: step[2] for step in steps if step[0] == "delivery"}
    assert bounced == {  # as each recipient's `email.bounced` types it
        CAROL: "delivery.transient_bounce",
        DAVE: "delivery.permanent_bounce",
        FRANK: "delivery.transient_bounce",
    }, steps


@pytest.mark.parametrize(
    ("refusal", "suppressed"),
    [("552 5.2.2 mailbox full", False), ("550 5.1.1 no such user", True)],
)
async def test_mail_nobody_got_shows_its_refused_hand_off_whether_bounced_or_failed(
    running: RunningGateway, make_account: Any, sink: Sink, refusal: str, suppressed: bool
) -> None:
    """A message the relay refused for its only recipient at RCPT (`bounced`) shows the hand-off
    refused, as one refused at DATA (`failed`) does, then the bounce; a suppression only when
    the refusal suppressed the address."""
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    sink.answer = "554 5.6.0 message refused"
    failed = await alice.http.post(
        messages(bot), params={"wait": "sent"}, json={"to": [ERIN], "subject": "Hi", "text": "x"}
    )
    assert failed.json()["status"] == "failed", failed.text
    sink.answer = "250 OK"
    sink.rcpt_answers[CAROL] = refusal
    bounced = await alice.http.post(
        messages(bot), params={"wait": "sent"}, json={"to": [CAROL], "subject": "Hi", "text": "x"}
    )
    assert bounced.status_code == 200, bounced.text
    bounced_id = bounced.json()["message_id"]
    viewed = await alice.http.get(messages(bot, f"/{bounced_id}"))
    assert viewed.json()["delivery_status"] == "bounced", viewed.text

    refused = ("submission", "failed", "submission.provider_rejected", None)
    failed_steps = await lifecycle_of(alice, bot, failed.json()["message_id"])
    assert failed_steps[-1] == refused, failed_steps
    steps = await lifecycle_of(alice, bot, bounced_id)
    kind = "permanent" if suppressed else "transient"
    expected = [refused, ("delivery", "bounced", f"delivery.{kind}_bounce", CAROL)]
    if suppressed:
        expected.append(("suppression", "applied", "suppression.hard_bounce_applied", CAROL))
    assert steps[-len(expected) :] == expected, steps
