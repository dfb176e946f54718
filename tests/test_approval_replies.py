"""Approving by replying to the notice, end to end: the notice from the approval worker through
an aiosmtpd relay on 127.0.0.1 (test only), the reviewer's reply over real SMTP to the gateway,
DNS from zone fixtures giving the reviewer's domain SPF and DMARC, and the outcome read back over
the REST API and from the database."""

from __future__ import annotations

import email
import email.policy
import logging
import smtplib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.inbound.approval_replies import MAX_ANSWERS
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.magic_links import issue_token, link_key
from e2a_gateway.signing.reply_tokens import generate_reply_token
from e2a_gateway.workers.approvals import ApprovalWorker
from tests.conftest import agent_path, make_settings
from tests.databases import query
from tests.delivery_support import (
    agent_scoped_client,
    create_agent,
    deadline_passed,
    expiry_sweeps_paused,
    smtp_send,
    wait_until,
)
from tests.test_approvals import (
    OWNER,
    MakeAccount,
    Owner,
    Sink,
    add_pending,
    hitl_owner,
    relay_port,
    sink,
)
from tests.test_dashboard import session_csrf, sign_in

__all__ = ["relay_port", "sink"]  # fixtures

ZONE = {
    "example.com": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
    "elsewhere.example": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
}
"""The reviewer's domain passes SPF (hence DMARC, aligned) from 127.0.0.1; so does another."""


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver.from_zone(ZONE)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, relay_port: int, request: pytest.FixtureRequest) -> Settings:
    """Relaying through the sink; served over plain HTTP, so the dashboard's session cookie
    is not Secure and the test's browser sends it. `smtp.hostname` is `mx.agents.test`, or
    the test's indirect parameter."""
    return make_settings(
        tmp_path,
        smtp={"listen": "127.0.0.1:0", "hostname": getattr(request, "param", "mx.agents.test")},
        http={"listen": "127.0.0.1:0", "public_url": "http://e2a.example"},
        outbound_smtp={
            "host": "127.0.0.1",
            "port": relay_port,
            "tls": "none",
            "timeout_seconds": 10,
        },
    )


@pytest.fixture
async def owner(running: RunningGateway, make_account: MakeAccount) -> Owner:
    return await hitl_owner(running.gateway, await make_account(OWNER))


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def mails_to_owner(sink: Sink, subject_start: str) -> list[EmailMessage]:
    found = [parsed(data) for _, rcpts, data in sink.received if rcpts == [OWNER]]
    return [m for m in found if str(m["Subject"]).startswith(subject_start)]


def answers(sink: Sink) -> list[EmailMessage]:
    """The gateway's answers about replies it did not act on (to the owner only)."""
    every = [parsed(data) for _, _, data in sink.received]
    answered = [m for m in every if str(m["Subject"]).startswith("Not done:")]
    assert all(str(m["To"]) == OWNER for m in answered)
    assert all(rcpts == [OWNER] for _, rcpts, data in sink.received if b"Not done:" in data)
    return answered


async def notice_for(sink: Sink, message_id: str) -> EmailMessage:
    def found() -> list[EmailMessage]:
        return [m for m in mails_to_owner(sink, "Approval needed") if message_id in m.get_content()]

    await wait_until(lambda: bool(found()))
    return found()[0]


def reply(
    notice: EmailMessage,
    first_line: str,
    *,
    from_addr: str = OWNER,
    threaded: bool = True,
    extra: str = "",
) -> bytes:
    """A Gmail-style reply to `notice`, its new text starting with `first_line`."""
    quoted = "".join(f"> {line}\n" for line in notice.get_content().splitlines())
    headers = [
        f"From: Owner <{from_addr}>",
        f"To: {notice['Reply-To']}",
        f"Subject: Re: {notice['Subject']}",
        f"Message-ID: <reply-{time.time_ns()}@example.com>",
    ]
    if threaded:
        headers += [f"In-Reply-To: {notice['Message-ID']}", f"References: {notice['Message-ID']}"]
    body = (
        f"{first_line}\n\nOn Mon, Dec 1, 2026 at 10:00 AM e2a <{notice['From']}> wrote:\n\n{quoted}"
    )
    text = "\r\n".join(headers) + "\r\n" + extra + "\r\n" + body.replace("\n", "\r\n")
    return text.encode()


def _send(port: int, mail_from: str, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.com")
        assert client.sendmail(mail_from, [rcpt], data) == {}


async def send_reply(
    running: RunningGateway, notice: EmailMessage, data: bytes, mail_from: str = OWNER
) -> None:
    """Send over real SMTP to the notice's Reply-To; returns once the gateway said 250."""
    port = running.addresses.smtp_port
    await trio.to_thread.run_sync(_send, port, mail_from, str(notice["Reply-To"]), data)


def row(settings: Settings, message_id: str) -> tuple[object, ...]:
    (found,) = query(
        settings.database.url,
        "SELECT status, reviewed_by, review_method, rejection_reason FROM messages WHERE id = ?",
        (message_id,),
    )
    return tuple(found)


def waiting_answers(settings: Settings) -> int:
    ((count,),) = query(settings.database.url, "SELECT count(*) FROM approval_answers", ())
    return int(count)


async def test_the_notice_names_a_reply_address_and_its_token_is_stored_hashed(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    message = await add_pending(running.gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    local, _, host = str(notice["Reply-To"]).partition("@")
    assert host == "mx.agents.test" and local.startswith("approvals+")
    token = local.removeprefix("approvals+")
    assert "reply to this email" in notice.get_content()
    assert notice["Auto-Submitted"] == "auto-generated"
    rows = query(
        running.gateway.settings.database.url,
        "SELECT token_hash, message_id, reviewer, notice_message_id FROM approval_reply_tokens",
        (),
    )
    [(token_hash, message_id, reviewer, notice_id)] = rows
    assert token not in token_hash and len(token_hash) == 64
    assert (message_id, reviewer, notice_id) == (message.id, OWNER, notice["Message-ID"])


@pytest.mark.parametrize("settings", ["localhost"], indirect=True)
async def test_a_gateway_named_without_a_dot_mails_the_notice_with_its_links_and_no_reply_address(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """`smtp.hostname` defaults to the machine's name, often one label (`localhost`, `vm`):
    no reply could reach `approvals+…@localhost`, but the magic links work all the same."""
    message = await add_pending(running.gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    text = notice.get_content()
    assert notice["Reply-To"] is None
    assert "reply to this email" not in text
    assert "http://e2a.example/api/v1/approve?token=" in text
    assert "http://e2a.example/api/v1/reject?token=" in text
    tokens = query(
        running.gateway.settings.database.url, "SELECT count(*) FROM approval_reply_tokens", ()
    )
    assert [tuple(found) for found in tokens] == [(0,)]


async def test_approve_by_reply(
    running: RunningGateway, owner: Owner, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="e2a")
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, reply(notice, "Approve"))
    # Committed before the 250: no waiting.
    assert row(gateway.settings, message.id)[:3] in {
        ("queued", OWNER, "reply"),
        ("sent", OWNER, "reply"),
    }
    view = (await owner.account.http.get(f"/api/v1/messages/{message.id}")).json()
    assert view["reviewed_by"] == OWNER and view["review_method"] == "reply"
    assert view["reviewed_at"]
    # The approved message goes out to its recipients; the reviewer gets no complaint.
    await wait_until(lambda: any("alice@example.org" in r for _, r, _ in sink.received))
    assert answers(sink) == []
    # The session's log line names the reply address, never its token (a secret).
    token = str(notice["Reply-To"]).partition("+")[2].partition("@")[0]
    await wait_until(lambda: "to=<approvals+…@mx.agents.test>" in caplog.text)
    assert token not in caplog.text


async def test_reject_with_a_reason_by_reply(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, reply(notice, "reject: too pushy for a first mail"))
    assert row(gateway.settings, message.id) == (
        "rejected",
        OWNER,
        "reply",
        "too pushy for a first mail",
    )
    view = (await owner.account.http.get(f"/api/v1/messages/{message.id}")).json()
    assert view["status"] == "rejected" and view["review_method"] == "reply"
    assert view["rejection_reason"] == "too pushy for a first mail"
    assert "body_text" not in view
    # The dashboard's outbound history says who decided and how.
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, owner.account.key)
        history = (await browser.get("/outbound")).text
    assert f"Decided by {OWNER} (by reply to the notice)" in history


async def refused_reply(
    running: RunningGateway, owner: Owner, sink: Sink, data_for: object, **send: str
) -> tuple[str, EmailMessage]:
    """Send the reply `data_for(notice)` builds; check it changed nothing and that the
    reviewer alone was told why. The message id and the answer."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    before = len(answers(sink))
    await send_reply(running, notice, data_for(notice), **send)  # type: ignore[operator]
    # The answer's job was committed before the 250 (it may be handed on already).
    assert waiting_answers(gateway.settings) + len(answers(sink)) > before
    assert row(gateway.settings, message.id)[:3] == ("pending_approval", None, None)
    await wait_until(lambda: len(answers(sink)) > before)
    answer = answers(sink)[-1]
    assert answer["Auto-Submitted"] == "auto-replied"
    assert message.id in answer.get_content()
    return message.id, answer


async def test_a_reply_from_another_address_is_refused(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    _, answer = await refused_reply(
        running,
        owner,
        sink,
        lambda notice: reply(notice, "approve", from_addr="mallory@example.com"),
        mail_from="mallory@example.com",
    )
    text = answer.get_content()
    assert "came from mallory@example.com, not from owner@example.com" in text


async def test_a_reply_without_dmarc_pass_is_refused(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    # SPF passes for the envelope's domain, which is not the From's: DMARC fails.
    _, answer = await refused_reply(
        running,
        owner,
        sink,
        lambda notice: reply(notice, "approve"),
        mail_from="bounces@elsewhere.example",
    )
    assert "DMARC did not pass for example.com (result: fail)" in answer.get_content()


async def test_a_reply_whose_dmarc_check_met_a_dns_error_is_deferred_then_acted_on(
    running: RunningGateway, owner: Owner, sink: Sink, resolver: FixtureResolver
) -> None:
    """The reviewer's DMARC record could not be fetched (SERVFAIL, a timeout): dmarc=temperror
    says nothing against the reply, and a retry may pass. It was refused for good, the reviewer
    told to have SPF, DKIM and DMARC published. It is deferred (451 4.7.0), nothing stored or
    mailed, and the sender's retry once DNS answers approves the message."""
    gateway = running.gateway
    port = running.addresses.smtp_port
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    data = reply(notice, "approve")
    rcpts = [str(notice["Reply-To"])]
    resolver.failing_lookups.add(("_dmarc.example.com", "TXT"))
    assert await trio.to_thread.run_sync(_data_answer, port, rcpts, data) == 451
    assert row(gateway.settings, message.id)[:3] == ("pending_approval", None, None)
    assert waiting_answers(gateway.settings) == 0 and answers(sink) == []
    resolver.failing_lookups.clear()
    assert await trio.to_thread.run_sync(_data_answer, port, rcpts, data) == 250
    assert row(gateway.settings, message.id)[1:3] == (OWNER, "reply")
    assert waiting_answers(gateway.settings) == 0 and answers(sink) == []


async def test_a_reply_that_does_not_answer_the_notice_is_refused(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    _, answer = await refused_reply(
        running, owner, sink, lambda notice: reply(notice, "approve", threaded=False)
    )
    assert "In-Reply-To" in answer.get_content()


async def test_a_reply_without_a_command_is_refused(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    _, answer = await refused_reply(
        running, owner, sink, lambda notice: reply(notice, "Looks fine to me, thanks")
    )
    assert "first line was not a command" in answer.get_content()


async def test_a_forged_token_is_refused_at_rcpt_and_nothing_is_mailed(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    data = reply(notice, "approve")

    def try_rcpt(address: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", running.addresses.smtp_port, timeout=10) as client:
            client.ehlo("mail.example.com")
            client.mail(OWNER)
            return client.rcpt(address)

    for address in (
        f"approvals+{generate_reply_token().plaintext}@mx.agents.test",
        "approvals+not-a-token@mx.agents.test",
        "approvals+@mx.agents.test",
    ):
        code, text = await trio.to_thread.run_sync(try_rcpt, address)
        assert code == 550, (address, text)
    # A genuine token at another host is not ours to take: never a relay.
    token = str(notice["Reply-To"]).partition("@")[0]
    code, _ = await trio.to_thread.run_sync(try_rcpt, f"{token}@example.net")
    assert code == 550
    assert data  # the real reply was never sent
    assert row(gateway.settings, message.id)[0] == "pending_approval"
    assert waiting_answers(gateway.settings) == 0 and answers(sink) == []


async def test_a_second_reply_is_told_the_message_was_already_decided(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, reply(notice, "approve"))
    assert row(gateway.settings, message.id)[2] == "reply"
    await send_reply(running, notice, reply(notice, "reject: changed my mind"))
    await wait_until(lambda: bool(answers(sink)))
    [answer] = answers(sink)
    assert "already decided" in answer.get_content()
    assert f"by {OWNER} (reply)" in answer.get_content()
    status, _, method, reason = row(gateway.settings, message.id)
    assert status in {"queued", "sent"} and method == "reply" and reason is None


@contextmanager
def inbound_mail_fails(database_url: str) -> Iterator[None]:
    """Fail every insert of inbound mail while the block runs, as a failing disk would (451;
    a full one is answered 452: tests/test_disk_full.py): a trigger on `messages` (an
    approval's review, which inserts no inbound mail, still commits)."""
    if database_url.startswith("sqlite:///"):
        make = [
            "CREATE TRIGGER inbound_fails BEFORE INSERT ON messages "
            "WHEN NEW.direction = 'inbound' BEGIN SELECT RAISE(ABORT, 'I/O error'); END"
        ]
        drop = ["DROP TRIGGER inbound_fails"]
    else:
        make = [
            "CREATE FUNCTION inbound_fails() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'I/O error' USING ERRCODE = 'io_error'; END $$",
            "CREATE TRIGGER inbound_fails BEFORE INSERT ON messages FOR EACH ROW "
            "WHEN (NEW.direction = 'inbound') EXECUTE FUNCTION inbound_fails()",
        ]
        drop = ["DROP TRIGGER inbound_fails ON messages", "DROP FUNCTION inbound_fails()"]
    for statement in make:
        query(database_url, statement)
    try:
        yield
    finally:
        for statement in drop:
            query(database_url, statement)


def _data_answer(port: int, rcpts: list[str], data: bytes) -> int:
    """The reply code to DATA of `data` from the owner to `rcpts`."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.com")
        try:
            client.sendmail(OWNER, rcpts, data)
        except smtplib.SMTPDataError as refused:
            return int(refused.smtp_code)
        return 250


async def test_a_reply_also_to_an_agent_retried_after_451_is_neither_acted_on_again_nor_answered(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """The reply's approval commits before the agent's copy; when the copy fails (451), the
    sender's retry of the same reply finds its own approval done and stores the copy only."""
    gateway = running.gateway
    url = gateway.settings.database.url
    port = running.addresses.smtp_port
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    data = reply(notice, "approve")
    rcpts = [str(notice["Reply-To"]), owner.agent]
    with inbound_mail_fails(url):
        assert await trio.to_thread.run_sync(_data_answer, port, rcpts, data) == 451
    assert row(gateway.settings, message.id)[1:3] == (OWNER, "reply")
    assert await trio.to_thread.run_sync(_data_answer, port, rcpts, data) == 250
    assert waiting_answers(gateway.settings) == 0  # committed before the 250
    copies = query(
        url,
        "SELECT count(*) FROM messages_with_content WHERE agent_email = ? "
        "AND direction = 'inbound' AND subject LIKE ?",
        (owner.agent, "Re: %"),
    )
    assert copies == [(1,)]
    await wait_until(lambda: any("alice@example.org" in r for _, r, _ in sink.received))
    assert answers(sink) == []


async def test_automatic_replies_are_neither_acted_on_nor_answered(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    data = reply(notice, "approve", extra="Auto-Submitted: auto-replied\r\n")
    await send_reply(running, notice, data)
    assert row(gateway.settings, message.id)[0] == "pending_approval"
    assert waiting_answers(gateway.settings) == 0


AUTOMATIC_REPLIES = [
    ("X-Autoreply: yes\r\n", OWNER),
    ("X-Autorespond: yes\r\n", OWNER),
    ("X-Autoresponder: vacation\r\n", OWNER),
    ("X-Autogenerated: Reply\r\n", OWNER),
    ("Auto-Submitted: auto-generated (out of office)\r\n", OWNER),
    ("Precedence: bulk\r\n", OWNER),
    ("Precedence: junk\r\n", OWNER),
    ("Precedence: auto_reply\r\n", OWNER),
    ("X-Apple-Action: vacation\r\n", OWNER),
    ("List-Id: <owners.example.com>\r\n", OWNER),
    ("", ""),  # the null sender: a bounce, or a responder that uses it (RFC 3834 section 3.3)
]


@pytest.mark.parametrize(("extra", "mail_from"), AUTOMATIC_REPLIES)
async def test_an_out_of_office_reply_by_any_marker_is_neither_acted_on_nor_answered(
    running: RunningGateway, owner: Owner, sink: Sink, extra: str, mail_from: str
) -> None:
    """A vacation responder that marks its reply in any of the common ways (not only
    RFC 3834's Auto-Submitted) gets no "did nothing" answer, which it could answer in turn,
    and changes nothing: its text is never read as a command."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    data = reply(notice, "I am out of the office until Monday.", extra=extra)
    await send_reply(running, notice, data, mail_from=mail_from)
    approving = reply(notice, "approve", extra=extra)
    await send_reply(running, notice, approving, mail_from=mail_from)
    assert row(gateway.settings, message.id)[:3] == ("pending_approval", None, None)
    assert waiting_answers(gateway.settings) == 0
    assert answers(sink) == []


async def test_a_reply_that_only_asks_for_no_automatic_answer_is_acted_on(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """`X-Auto-Response-Suppress` (which Outlook can set on a person's mail) asks responders
    not to answer; it does not make the reviewer's `approve` automatic mail."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    extra = "X-Auto-Response-Suppress: All\r\n"
    await send_reply(running, notice, reply(notice, "approve", extra=extra))
    assert row(gateway.settings, message.id)[2] == "reply"


async def test_a_notice_gets_at_most_a_few_answers(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    for _ in range(MAX_ANSWERS + 2):
        await send_reply(running, notice, reply(notice, "hello?"))
    await wait_until(lambda: len(answers(sink)) == MAX_ANSWERS)
    await wait_until(lambda: waiting_answers(gateway.settings) == 0)
    assert len(answers(sink)) == MAX_ANSWERS
    assert row(gateway.settings, message.id)[0] == "pending_approval"


async def test_every_way_of_reviewing_records_who_and_how(
    running: RunningGateway, owner: Owner, sink: Sink, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    http = owner.account.http
    by_api = await add_pending(gateway, owner, time.time() + 3600)
    assert (await http.post(f"/api/v1/messages/{by_api.id}/approve", json={})).status_code == 200
    by_link = await add_pending(gateway, owner, time.time() + 3600)
    token = issue_token(link_key(gateway.server_key), by_link.id, "reject", int(time.time() + 3600))
    assert (await anonymous.post("/api/v1/reject", data={"token": token})).status_code == 200
    on_dashboard = await add_pending(gateway, owner, time.time() + 3600)
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, owner.account.key)
        csrf = await session_csrf(browser)
        path = f"/approvals/{on_dashboard.id}/reject"
        assert (await browser.post(path, data={"csrf_token": csrf})).status_code == 303
    by_expiry = await add_pending(gateway, owner, time.time() - 1)

    async def expired() -> bool:
        # expiry skips a row the gateway's own worker holds locked (its notice): try again
        await ApprovalWorker(gateway).expire_due(time.time())
        return row(gateway.settings, by_expiry.id)[0] != "pending_approval"

    await wait_until(expired)
    assert row(gateway.settings, by_api.id)[1:3] == (OWNER, "api")
    assert row(gateway.settings, by_link.id)[1:3] == (None, "link")
    assert row(gateway.settings, on_dashboard.id)[1:3] == (OWNER, "dashboard")
    assert row(gateway.settings, by_expiry.id)[1:3] == (None, "expiry")


async def test_a_reply_the_gateway_cannot_act_on_yet_or_any_more_says_why(
    running: RunningGateway, owner: Owner, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply past the review deadline (before the sweep), or while the agent is in the
    trash, is not told the message "was already decided (pending_approval)": it is told the
    deadline passed, or that the agent must be restored first (its token stays unspent)."""
    gateway = running.gateway
    database = gateway.settings.database.url
    late = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, late.id)
    # the deadline passes before the expiry sweep (every 15 s) comes, and stays so while the
    # reply is answered
    deadline = expiry_sweeps_paused(monkeypatch)
    query(database, "UPDATE messages SET approval_expires_at = ? WHERE id = ?", (deadline, late.id))
    await deadline_passed(deadline)
    await send_reply(running, notice, reply(notice, "approve"))
    await wait_until(lambda: bool(answers(sink)))
    text = answers(sink)[-1].get_content()
    assert "review deadline had passed" in text and "discarded" in text, text
    assert "already decided" not in text
    assert row(gateway.settings, late.id)[:3] == ("pending_approval", None, None)

    held = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, held.id)
    trashed = await owner.account.http.delete(
        f"/v1/agents/{owner.agent}", params={"confirm": "DELETE"}
    )
    assert trashed.status_code == 200, trashed.text
    await send_reply(running, notice, reply(notice, "reject"))
    await wait_until(lambda: len(answers(sink)) == 2)
    text = answers(sink)[-1].get_content()
    assert "in the trash" in text and "restore" in text and "already decided" not in text, text
    restored = await owner.account.http.post(f"/v1/agents/{owner.agent}/restore")
    assert restored.status_code == 200, restored.text
    await send_reply(running, notice, reply(notice, "reject"))
    assert row(gateway.settings, held.id)[:3] == ("rejected", OWNER, "reply")


async def test_an_agent_holding_the_notice_cannot_approve_by_replying_through_the_gateway(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """A notice that reached agents' inboxes (forwarded, say): the held agent's own reply is
    held like all its mail, and another agent's reply, sent through the gateway and back over
    SMTP as the relay delivers it, comes from the agent's address, not the reviewer's."""
    gateway = running.gateway
    port = running.addresses.smtp_port
    helper = await create_agent(owner.account, "helper")
    gated = await owner.account.http.put(agent_path(owner.agent), json={"hitl_enabled": True})
    assert gated.status_code == 200, gated.text  # its outbound gate holds every send
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    [raw] = [data for _, rcpts, data in sink.received if rcpts == [OWNER]]
    await smtp_send(port, [owner.agent, helper], raw, sender="e2a@mx.agents.test")
    reply_address = str(notice["Reply-To"])

    async def reply_as(agent: str) -> httpx.Response:
        async with agent_scoped_client(owner.account, agent) as client:
            inbox = (await client.get(f"/api/v1/agents/{agent}/messages")).json()["messages"]
            [received] = [m for m in inbox if m["subject"].startswith("Approval needed")]
            path = f"/api/v1/agents/{agent}/messages/{received['message_id']}/reply"
            return await client.post(path, json={"body": "approve"})

    held = await reply_as(owner.agent)
    assert held.status_code == 202 and held.json()["status"] == "pending_approval", held.text
    sent = await reply_as(helper)
    assert sent.status_code == 200, sent.text
    await wait_until(lambda: any(rcpts == [reply_address] for _, rcpts, _ in sink.received))
    [(mail_from, _, data)] = [m for m in sink.received if m[1] == [reply_address]]
    assert f"In-Reply-To: {notice['Message-ID']}".encode() in data
    await send_reply(running, notice, data, mail_from=mail_from)
    assert row(gateway.settings, message.id)[:3] == ("pending_approval", None, None)
    await wait_until(lambda: bool(answers(sink)))
    assert f"came from {helper}, not from {OWNER}" in answers(sink)[-1].get_content()


async def test_a_reason_holding_nul_is_kept_with_a_replacement_character(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """A NUL in the reason of a `reject:` reply reads as U+FFFD, as in header text: the
    rejection is recorded, with its reason, on PostgreSQL (whose text cannot hold NUL) as on
    SQLite."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, reply(notice, "reject: too\x00pushy"))
    assert row(gateway.settings, message.id) == ("rejected", OWNER, "reply", "too\ufffdpushy")


async def test_a_reply_naming_a_second_author_beside_the_reviewer_is_refused(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """A second From field (or address) makes the author ambiguous: DMARC cannot vouch for the
    reviewer, so the reply does not act, whichever author a reader would show."""
    _, answer = await refused_reply(
        running,
        owner,
        sink,
        lambda notice: reply(notice, "approve", extra="From: Mallory <mallory@example.com>\r\n"),
    )
    assert "DMARC did not pass for example.com (result: permerror)" in answer.get_content()


async def test_approve_in_the_quoted_text_of_a_rejecting_reply_is_not_read(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    await send_reply(running, notice, reply(notice, "reject: not yet\n\n> approve\n>\n> approve"))
    assert row(gateway.settings, message.id) == ("rejected", OWNER, "reply", "not yet")


async def test_two_replies_racing_decide_the_message_once(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """The reviewer answers from two devices at once, approve and reject: one acts, the other
    is told the message was already decided, and the message is sent at most once."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    async with trio.open_nursery() as nursery:
        for first_line in ("approve", "reject: from the phone", "approve"):
            nursery.start_soon(send_reply, running, notice, reply(notice, first_line))
    status, reviewed_by, method, _ = row(gateway.settings, message.id)
    assert (reviewed_by, method) == (OWNER, "reply") and status != "pending_approval"
    await wait_until(lambda: len(answers(sink)) == 2)
    assert all("already decided" in answer.get_content() for answer in answers(sink))
    (outbound,) = query(
        gateway.settings.database.url,
        "SELECT count(*) FROM jobs WHERE message_id = ? AND kind = 'outbound'",
        (message.id,),
    )
    assert outbound[0] <= 1


async def test_a_reason_wrapped_by_a_format_flowed_client_is_read_whole(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """Thunderbird and Apple Mail send plain text as format=flowed (RFC 3676): a long first
    line is wrapped at a trailing space, which the reader joins again. The reason is that
    whole line, not its first 70 characters."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    reason = (
        "not until legal has looked at it, the numbers in the second paragraph are wrong "
        "and the tone is too pushy"
    )
    wrapped = (
        "reject: not until legal has looked at it, the numbers in the second \n"
        "paragraph are wrong and the tone is too pushy\n"
        "\n"
        "Jane\n"
    )
    data = reply(
        notice,
        wrapped,
        extra="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n",
    )
    await send_reply(running, notice, data)
    assert row(gateway.settings, message.id) == ("rejected", OWNER, "reply", reason)


async def test_a_delsp_flowed_reason_loses_only_the_wrapping_spaces(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """With DelSp=yes (Apple Mail) the space before each soft break is the wrapper's, not the
    writer's: the joined reason reads as written."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    notice = await notice_for(sink, message.id)
    data = reply(
        notice,
        "Reject: the recipients are the wrong people for this quarter's num \nbers\n\n"
        "Sent from my iPhone\n",
        extra="MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\r\n",
    )
    await send_reply(running, notice, data)
    expected = "the recipients are the wrong people for this quarter's numbers"
    assert row(gateway.settings, message.id) == ("rejected", OWNER, "reply", expected)


async def test_the_reviewer_sees_where_answers_to_a_held_message_would_go(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """A held message's Reply-To (the agent's choice) is named in the notice, on the link's
    confirmation page and in the dashboard's queue, as its recipients are: approving mail to
    alice whose answers go to a stranger is not approving mail to alice. The addresses are
    shown, never the display names the agent wrote beside them."""
    held = await owner.account.http.put(agent_path(owner.agent), json={"hitl_enabled": True})
    assert held.status_code == 200, held.text
    sent = await owner.account.http.post(
        f"/v1/agents/{owner.agent}/messages",
        json={
            "to": ["alice@example.org"],
            "subject": "Your invoice",
            "text": "Please answer with your card number.",
            "reply_to": ['"alice@example.org" <collector@evil.example>', "desk@example.org"],
        },
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    text = (await notice_for(sink, message_id)).get_content()
    assert "Reply-To: collector@evil.example, desk@example.org" in text.splitlines()
    shown = "<dt>Reply-To</dt><dd>collector@evil.example, desk@example.org</dd>"
    token = text.partition("/api/v1/approve?token=")[2].split()[0]
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        page = await browser.get("/api/v1/approve", params={"token": token})
        assert page.status_code == 200
        assert shown in page.text
        await sign_in(browser, owner.account.key)
        queue = (await browser.get("/approvals")).text
        review = (await browser.get(f"/approvals/{message_id}")).text
    assert message_id in queue and shown in queue
    assert (
        "Answers go to (Reply-To) <strong>collector@evil.example, desk@example.org</strong>"
        in review
    )
