"""Human-in-the-loop end to end: notice emails through an aiosmtpd sink on 127.0.0.1 (test
only), magic-link pages over real HTTP, and expiry driven with a fake clock."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import html
import logging
import re
import string
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import new_id
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.credentials import derive_signing_secret, hash_api_key
from e2a_gateway.signing.magic_links import LINK_GRACE_SECONDS, Action, issue_token, link_key
from e2a_gateway.storage.base import (
    AgentChanges,
    ApprovalAnswer,
    Job,
    NotPending,
    OutboundMessage,
    ReplyToken,
    StorageUnavailable,
)
from e2a_gateway.workers.approvals import MAX_NOTICES_IN_FLIGHT, ApprovalWorker
from e2a_gateway.workers.leases import JOB_LEASE_SECONDS
from tests.conftest import TEST_LIMITS, Account, agent_path, make_settings
from tests.databases import age_rate_limits, query, run_out_leases, table_locked
from tests.delivery_support import (
    create_agent,
    deadline_passed,
    expiry_sweeps_paused,
    open_account,
    quiet_gateway,
    wait_until,
)
from tests.relay_support import ClockedSink, free_port, relay_on_loopback
from tests.relay_support import Sink as RelaySink

PUBLIC_URL = "https://e2a.example"
OWNER = "owner@example.com"
BODY = "TOP SECRET DRAFT BODY"
SUBJECT = "Quarterly <b>numbers</b> & plans"

MakeAccount = Callable[[str], Awaitable[Account]]


@dataclass
class Sink:
    """Records every message the relay accepted."""

    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    """Recipients the relay refuses for good (550)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 OK"

    def notices(self) -> list[EmailMessage]:
        """The accepted mails addressed to the owner, parsed."""
        return [
            email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
            for _, recipients, data in self.received
            if OWNER in recipients
        ]


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def relay_port(sink: Sink) -> Iterator[int]:
    with relay_on_loopback(sink) as port:
        yield port


def relay_settings(tmp_path: Path, port: int) -> Settings:
    return make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "public_url": PUBLIC_URL},
        outbound_smtp={"host": "127.0.0.1", "port": port, "tls": "none", "timeout_seconds": 10},
    )


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    """The running gateway relays through the sink and links to PUBLIC_URL."""
    return relay_settings(tmp_path, relay_port)


@dataclass
class Owner:
    """An account with one HITL agent, as storage knows them."""

    account: Account
    user_id: str
    agent: str


async def hitl_owner(
    gateway: Gateway, account: Account, slug: str = "bot", expiration: str = "reject"
) -> Owner:
    """Give `account` a HITL agent with the given expiration action."""
    user = await gateway.storage.user_for_key_hash(hash_api_key(account.key))
    assert user is not None
    agent = await create_agent(account, slug)
    await gateway.storage.update_agent(
        user.id,
        agent,
        AgentChanges(hitl_enabled=True, hitl_expiration_action=expiration),  # type: ignore[arg-type]
    )
    return Owner(account, user.id, agent)


async def add_pending(
    gateway: Gateway, owner: Owner, deadline: float, subject: str = SUBJECT
) -> OutboundMessage:
    """Store a message awaiting approval (with its notice job, whose commit wakes the
    approval worker)."""
    message_id = new_id("msg")
    message = OutboundMessage(
        id=message_id,
        user_id=owner.user_id,
        agent_email=owner.agent,
        kind="send",
        to=["alice@example.org"],
        cc=["carol@example.org"],
        bcc=["hidden@example.org"],
        subject=subject,
        body_text=BODY,
        body_html=f"<p>{BODY}</p>",
        attachments=[{"filename": "a.txt", "content_type": "text/plain", "data": "aGk="}],
        conversation_id=None,
        in_reply_to=None,
        references=[],
        email_message_id=f"<{message_id}@agents.test>",
        status="pending_approval",
        approval_expires_at=deadline,
        created_at="2026-01-01T00:00:00Z",
        created_epoch=time.time(),
    )
    await gateway.storage.add_outbound(message)
    return message


async def token_for(
    gateway: Gateway, owner: Owner, message_id: str, action: Action, deadline: float
) -> str:
    """A magic-link token signed as the notice would sign it."""
    return issue_token(link_key(gateway.server_key), message_id, action, int(deadline))


def stored_row(settings: Settings, message_id: str) -> tuple[Any, ...]:
    """(status, body_text, body_html, attachments_json) straight from the database."""
    (row,) = query(
        settings.database.url,
        "SELECT status, body_text, body_html, attachments_json FROM messages WHERE id = ?",
        (message_id,),
    )
    return row


def job_kinds(settings: Settings, message_id: str) -> list[str]:
    rows = query(settings.database.url, "SELECT kind FROM jobs WHERE message_id = ?", (message_id,))
    return sorted(row[0] for row in rows)


def assert_page_headers(response: httpx.Response) -> None:
    """The magic-link pages' security headers are on `response`: never cached, framed,
    referred or sniffed as another type; a policy that allows no script, no `<base>` and
    forms to this origin alone."""
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert response.headers["content-type"].startswith("text/html"), where
    assert response.headers["cache-control"] == "no-store", where
    assert response.headers["x-frame-options"] == "DENY", where
    assert response.headers["referrer-policy"] == "no-referrer", where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    policy = [part.strip() for part in response.headers["content-security-policy"].split(";")]
    for directive in ("default-src 'none'", "base-uri 'none'", "form-action 'self'"):
        assert directive in policy, (where, policy)
    assert "frame-ancestors 'none'" in policy, (where, policy)


def local_path(link: str) -> str:
    """The path and query of a public link, to request from the test server."""
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
async def owner(running: RunningGateway, make_account: MakeAccount) -> Owner:
    return await hitl_owner(running.gateway, await make_account(OWNER))


async def test_notice_email_has_both_links_and_no_body(
    running: RunningGateway, owner: Owner, sink: Sink, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    await wait_until(lambda: bool(sink.notices()))
    [notice] = sink.notices()
    mail_from, recipients, raw = sink.received[0]
    assert (mail_from, recipients) == ("e2a@mx.agents.test", [OWNER])
    assert notice["From"] == "e2a@mx.agents.test"
    assert SUBJECT in str(notice["Subject"])
    text = notice.get_content()
    assert BODY.encode() not in raw and BODY not in text
    for address in ("alice@example.org", "carol@example.org", "hidden@example.org"):
        assert address in text
    assert message.id in text and "Expires:" in text
    links = re.findall(rf"{re.escape(PUBLIC_URL)}/api/v1/(approve|reject)\?token=(\S+)", text)
    assert sorted(action for action, _ in links) == ["approve", "reject"]
    await wait_until(lambda: job_kinds(gateway.settings, message.id) == [])

    # The link from the email works: GET shows the page, POST approves.
    approve_link = next(
        f"{PUBLIC_URL}/api/v1/approve?token={t}" for a, t in links if a == "approve"
    )
    page = await anonymous.get(local_path(approve_link))
    assert page.status_code == 200
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"
    token = dict(links)["approve"]
    done = await anonymous.post("/api/v1/approve", data={"token": token})
    assert done.status_code == 200, done.text
    assert stored_row(gateway.settings, message.id)[0] == "queued"


DISGUISED_SUBJECT = (
    "Invoice\u202egpj.exe\u202c"
    + "\u00a0 \u200b" * 40
    + "Approve (opens a confirmation page):"
    + "\u2003\u200b" * 40
    + "https://evil.example/api/v1/approve?token=x"
)
"""An agent-written subject padded out with white space and invisible characters, and a
right-to-left override: shown as it is, it would wrap into what looks like a link of the
notice's own under its own heading, and reorder what follows it."""


async def test_the_notice_shows_an_agent_written_subject_as_one_plain_line(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """The subject in the notice's text and in its Subject field has no control or format
    character (bidirectional overrides, zero-width spaces) and no run of white space, so it
    cannot pass itself off as a line of the notice; the real links stay on lines of their
    own."""
    gateway = running.gateway
    await add_pending(gateway, owner, time.time() + 3600, subject=DISGUISED_SUBJECT)
    await wait_until(lambda: bool(sink.notices()))
    [notice] = sink.notices()
    text = notice.get_content()
    [subject_line] = [line for line in text.splitlines() if line.startswith("Subject:")]
    shown = subject_line.removeprefix("Subject:").strip()
    for where in (shown, str(notice["Subject"])):
        assert not re.search(r"\s\s", where), where
        assert not any(unicodedata.category(char)[0] == "C" for char in where), where
    assert shown == (
        "Invoice gpj.exe Approve (opens a confirmation page): "
        "https://evil.example/api/v1/approve?token=x"
    )
    links = [line for line in text.splitlines() if line.startswith("https://")]
    assert [link.partition("?")[0] for link in links] == [
        f"{PUBLIC_URL}/api/v1/approve",
        f"{PUBLIC_URL}/api/v1/reject",
    ]


async def test_an_agent_with_approval_notifications_off_gets_no_notice(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    gateway = running.gateway
    http = owner.account.http
    assert (await http.get(agent_path(owner.agent))).json()["approval_notifications"] is True
    quiet = await http.put(agent_path(owner.agent), json={"approval_notifications": False})
    assert quiet.status_code == 200, quiet.text
    assert quiet.json()["approval_notifications"] is False
    assert quiet.json()["hitl_enabled"] is True  # the other settings keep their values
    wrong = await http.put(agent_path(owner.agent), json={"approval_notifications": "no"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_request"

    silent = await add_pending(gateway, owner, time.time() + 3600)
    await wait_until(lambda: job_kinds(gateway.settings, silent.id) == [])
    assert sink.notices() == []
    assert stored_row(gateway.settings, silent.id)[0] == "pending_approval"  # still held
    pending = (await http.get("/api/v1/messages")).json()["messages"]
    assert [m["id"] for m in pending] == [silent.id]

    loud = await http.put(agent_path(owner.agent), json={"approval_notifications": True})
    assert loud.json()["approval_notifications"] is True
    noticed = await add_pending(gateway, owner, time.time() + 3600)
    await wait_until(lambda: bool(sink.notices()))
    [notice] = sink.notices()
    assert noticed.id in notice.get_content() and silent.id not in notice.get_content()


async def verified_domain(running: RunningGateway, account: Account, domain: str) -> None:
    """Make `domain` a verified domain of `account` (its TXT record in the fixture DNS)."""
    created = await account.http.post("/api/v1/domains", json={"domain": domain})
    assert created.status_code == 201, created.text
    resolver = running.gateway.resolver
    assert isinstance(resolver, FixtureResolver)
    resolver.set_txt(domain, [created.json()["verification_token"]])
    verified = await account.http.post(f"/api/v1/domains/{domain}/verify")
    assert verified.status_code == 200 and verified.json()["verified"] is True, verified.text


@pytest.mark.parametrize(
    ("address", "inbox"),
    [
        ("bot@agents.test", "bot"),  # the held agent's own inbox: it would approve itself
        ("desk@corp.example", "desk@corp.example"),  # another agent of the account
        ("desk+review@corp.example", "desk@corp.example"),  # its subaddress reaches that agent
        ("nobody@agents.test", None),  # the shared domain: any agent may take it later
        ("postmaster@corp.example", None),  # the postmaster inbox, an agent too
        ("Abuse@corp.example", None),  # abuse reaches the postmaster inbox as well
        ("approvals@mx.agents.test", None),  # the gateway's own host name
    ],
)
async def test_no_notice_goes_to_an_address_this_gateway_serves(
    running: RunningGateway,
    make_account: MakeAccount,
    sink: Sink,
    caplog: pytest.LogCaptureFixture,
    address: str,
    inbox: str | None,
) -> None:
    """The notice's links and reply address approve: mailed to an address whose mail comes back
    here, they would land in an agent's inbox, and the agent could approve held mail — its own
    included. Such a notice is not sent; the message stays held for review over the API."""
    gateway = running.gateway
    account = await make_account(address)
    await verified_domain(running, account, "corp.example")
    owner = await hitl_owner(gateway, account)
    if inbox == "desk@corp.example":
        made = await account.http.post(
            "/api/v1/agents", json={"email": inbox, "agent_mode": "local"}
        )
        assert made.status_code == 201, made.text
    message = await add_pending(gateway, owner, time.time() + 3600)
    await wait_until(lambda: job_kinds(gateway.settings, message.id) == [])
    assert sink.received == []
    assert f"approval notice for {message.id} not sent" in caplog.text
    assert address in caplog.text
    assert query(gateway.settings.database.url, "SELECT * FROM approval_reply_tokens", ()) == []
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"
    approved = await account.http.post(f"/api/v1/messages/{message.id}/approve")
    assert approved.status_code == 200, approved.text


async def test_a_notice_goes_to_a_human_on_a_domain_the_gateway_also_serves(
    running: RunningGateway, make_account: MakeAccount, sink: Sink
) -> None:
    """A verified domain may keep its people's mail elsewhere: an address of it that is no
    agent's (nor postmaster) gets its notices."""
    gateway = running.gateway
    account = await make_account("human@corp.example")
    await verified_domain(running, account, "corp.example")
    owner = await hitl_owner(gateway, account)
    message = await add_pending(gateway, owner, time.time() + 3600)
    await wait_until(lambda: bool(sink.received))
    [(_, recipients, data)] = sink.received
    assert recipients == ["human@corp.example"] and message.id.encode() in data


async def test_get_shows_a_page_and_never_acts(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    for params in ({"token": token}, {"t": token}):
        response = await anonymous.get("/api/v1/approve", params=params)
        assert response.status_code == 200
        assert_page_headers(response)
        page = response.text
        assert "Quarterly &lt;b&gt;numbers&lt;/b&gt; &amp; plans" in page
        assert "<b>numbers</b>" not in page
        assert "alice@example.org" in page and BODY not in page
        assert "<form method=post>" in page and token in page
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"
    assert "outbound" not in job_kinds(gateway.settings, message.id)


async def test_the_confirmation_page_shows_a_reordering_subject_in_its_real_order(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    """An agent-written subject holding a right-to-left override (`Invoice‮gpj.exe`, which
    reads as `Invoiceexe.jpg`) shows its bidirectional controls as U+FFFD on the page that
    approves it."""
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline, subject="Invoice\u202egpj.exe\u202c")
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    page = await anonymous.get("/api/v1/approve", params={"token": token})
    assert page.status_code == 200
    assert "<dd>Invoice\ufffdgpj.exe\ufffd</dd>" in page.text, ascii(page.text)


@pytest.mark.parametrize("path", ["/api/v1/approve", "/api/v1/approve/", "/v1/approve/"])
async def test_the_confirmation_form_acts_wherever_the_page_was_opened(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient, path: str
) -> None:
    """The router takes a link with a trailing slash too (a link rewriter may add one); the
    confirmation's button must then still reach the action, as a browser resolves its form —
    also behind a proxy that serves the gateway under a path of `http.public_url`."""
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    page = await anonymous.get(path, params={"t": token})
    assert page.status_code == 200
    (form,) = re.findall(r"<form method=post[^>]*>", page.text)
    action = html.unescape(re.findall(r'action="([^"]*)"', form)[0]) if "action=" in form else ""
    behind_a_proxy = urljoin(f"https://example.com/e2a{path}?t={token}", action)
    assert urlsplit(behind_a_proxy).path == f"/e2a{path}", behind_a_proxy
    target = urljoin(str(page.url), action)
    done = await anonymous.post(target, data={"token": token})
    assert done.status_code == 200 and "Approved" in done.text, target
    assert stored_row(gateway.settings, message.id)[0] == "queued"


SENT_ON = ("sent", "failed")
"""What an approved message becomes once the send worker has taken it."""


async def test_post_approves_once_then_409(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    response = await anonymous.post("/api/v1/approve", params={"t": token})
    assert response.status_code == 200 and "Approved" in response.text
    assert_page_headers(response)
    status, body_text, _, _ = stored_row(gateway.settings, message.id)
    if status == "queued":  # the running gateway's send worker has not taken it yet
        assert body_text == BODY and "outbound" in job_kinds(gateway.settings, message.id)
    else:  # it has already: handed on, or given up on (no relay in these tests)
        assert status in SENT_ON, status
    again = await anonymous.post("/api/v1/approve", data={"token": token})
    assert again.status_code == 409
    assert any(state in again.text for state in ("queued", *SENT_ON)), again.text
    assert_page_headers(again)
    shown = await anonymous.get("/api/v1/approve", params={"token": token})
    assert shown.status_code == 409


async def test_post_rejects_and_scrubs_the_body(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "reject", deadline)
    confirm = await anonymous.get("/api/v1/reject", params={"token": token})
    assert confirm.status_code == 200 and "Reject this message?" in confirm.text
    assert_page_headers(confirm)
    response = await anonymous.post("/api/v1/reject", data={"token": token})
    assert response.status_code == 200 and "Rejected" in response.text
    assert_page_headers(response)
    assert stored_row(gateway.settings, message.id) == ("rejected", None, None, None)
    assert "outbound" not in job_kinds(gateway.settings, message.id)
    reused = await anonymous.post("/api/v1/reject", data={"token": token})
    assert reused.status_code == 409
    approve = await token_for(gateway, owner, message.id, "approve", deadline)
    late = await anonymous.post("/api/v1/approve", data={"token": approve})
    assert late.status_code == 409
    assert stored_row(gateway.settings, message.id)[0] == "rejected"


async def test_expired_token_gets_410(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    # A deadline an hour ago: the link's grace of 10 minutes is over too.
    token = await token_for(gateway, owner, message.id, "approve", time.time() - 3600)
    for method in ("GET", "POST"):
        response = await anonymous.request(method, "/api/v1/approve", params={"token": token})
        assert response.status_code == 410, method
        assert_page_headers(response)
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"


async def test_bad_tokens_get_400(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    payload, _, signature = token.partition(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    reject_token = await token_for(gateway, owner, message.id, "reject", deadline)
    for bad in (
        f"{payload}.{flipped}",
        payload,
        "not-a-token",
        "%%%.***",
        reject_token,  # a reject token on the approve link
        "",
        f"{token}\x00",  # refused before the page runs (`refuse_nul`), as a page too
    ):
        for method in ("GET", "POST"):
            response = await anonymous.request(method, "/api/v1/approve", params={"token": bad})
            assert response.status_code == 400, (method, bad)
            assert_page_headers(response)
    missing = await anonymous.post("/api/v1/approve")
    assert missing.status_code == 400
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"


def forged_with(secret: str, message_id: str, action: Action, deadline: float) -> str:
    """A token made as magic links once were: HMAC-SHA256 keyed by a signing secret, which
    every webhook receiver of the owner holds."""
    payload = f"{message_id}|{action}|{int(deadline) + LINK_GRACE_SECONDS}".encode()
    mac = hmac.new(secret.encode("ascii"), payload, hashlib.sha256).digest()
    return ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=") for part in (payload, mac))


async def test_a_webhook_receiver_cannot_approve_with_the_signing_secret(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    """The signing secret signs deliveries, so every receiver of the owner's webhooks holds
    it; a link forged with it is refused and the message stays held."""
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    created = await owner.account.http.post(
        "/api/v1/users/me/signing-secrets", json={"name": "receiver"}
    )
    assert created.status_code == 201, created.text
    for secret in (created.json()["secret"], await newest_secret(gateway, owner)):
        forged = forged_with(secret, message.id, "approve", deadline)
        for method in ("GET", "POST"):
            response = await anonymous.request(method, "/api/v1/approve", params={"token": forged})
            assert response.status_code == 400, (method, response.text)
            assert_page_headers(response)
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"
    assert "outbound" not in job_kinds(gateway.settings, message.id)


async def newest_secret(gateway: Gateway, owner: Owner) -> str:
    """The owner's newest signing secret, as a receiver of their webhooks holds it."""
    seed = await gateway.storage.newest_signing_seed(owner.user_id)
    assert seed is not None
    return derive_signing_secret(gateway.server_key, seed)


async def test_only_canonical_tokens_are_accepted(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    """Padding, trailing characters, characters a lenient decoder skips, the standard alphabet
    and non-zero unused bits spell the same bytes; each is refused, then the genuine link
    still works."""
    gateway = running.gateway
    deadline = time.time() + 3600
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    payload, _, signature = token.partition(".")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    loose_end = alphabet[alphabet.index(signature[-1]) ^ 1]
    spellings = [
        f"{payload}=.{signature}",
        f"{payload}.{signature}=",
        f"{payload}.{signature} ",
        f"{payload}.{signature}\n",
        f"{payload}.{signature}.x",
        f"{payload}.{signature[:-1]}{loose_end}",
        f"{payload[:4]}*{payload[4:]}.{signature}",
    ]
    standard = token.replace("-", "+").replace("_", "/")
    if standard != token:
        spellings.append(standard)
    for spelling in spellings:
        get = await anonymous.get("/api/v1/approve", params={"token": spelling})
        post = await anonymous.post("/api/v1/approve", data={"token": spelling})
        assert (get.status_code, post.status_code) == (400, 400), spelling
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"
    done = await anonymous.post("/api/v1/approve", data={"token": token})
    assert done.status_code == 200, done.text
    assert stored_row(gateway.settings, message.id)[0] == "queued"


async def test_unknown_message_gets_404(
    running: RunningGateway, owner: Owner, anonymous: httpx.AsyncClient
) -> None:
    token = await token_for(running.gateway, owner, "msg_gone", "reject", time.time() + 60)
    for method in ("GET", "POST"):
        response = await anonymous.request(method, "/api/v1/reject", params={"token": token})
        assert response.status_code == 404
        assert_page_headers(response)


async def test_ttl_expiry_applies_each_agents_action(
    running: RunningGateway, make_account: MakeAccount
) -> None:
    gateway = running.gateway
    account = await make_account(OWNER)
    keen = await hitl_owner(gateway, account, "keen", expiration="approve")
    wary = await hitl_owner(gateway, account, "wary", expiration="reject")
    deadline = time.time() + 10_000  # far enough that the gateway's own worker leaves it
    sent_anyway = await add_pending(gateway, keen, deadline)
    dropped = await add_pending(gateway, wary, deadline)
    # the gateway's own worker handles each draft's notice with the message row locked, and
    # expiry skips locked rows (another replica's): expire only once both notices are done
    await wait_until(
        lambda: all(
            "approval_notice" not in job_kinds(gateway.settings, draft.id)
            for draft in (sent_anyway, dropped)
        )
    )
    worker = ApprovalWorker(gateway, clock=lambda: deadline + 30)

    assert await worker.expire_due(deadline - 1) == []
    assert stored_row(gateway.settings, sent_anyway.id)[0] == "pending_approval"

    signal = gateway.jobs.added("outbound")
    expired = await worker.expire_due(deadline + 30)
    assert {m.id: m.status for m in expired} == {
        sent_anyway.id: "expired_approved",
        dropped.id: "expired_rejected",
    }
    assert signal.is_set()  # the send worker was woken
    status, body_text, _, _ = stored_row(gateway.settings, sent_anyway.id)
    assert (status, body_text) == ("expired_approved", BODY)
    assert "outbound" in job_kinds(gateway.settings, sent_anyway.id)
    assert stored_row(gateway.settings, dropped.id) == ("expired_rejected", None, None, None)
    assert "outbound" not in job_kinds(gateway.settings, dropped.id)
    assert await worker.expire_due(deadline + 60) == []


async def test_an_auto_approval_handed_on_stays_expired_approved(
    running: RunningGateway, make_account: MakeAccount, sink: Sink
) -> None:
    gateway = running.gateway
    account = await make_account(OWNER)
    keen = await hitl_owner(gateway, account, "keen", expiration="approve")
    message = await add_pending(gateway, keen, time.time() - 1)
    await ApprovalWorker(gateway).expire_due(time.time())  # or the gateway's own worker does

    def delivered() -> list[str]:  # a transaction per recipient
        return sorted(rcpt for _, rcpts, _ in sink.received for rcpt in rcpts if rcpt != OWNER)

    await wait_until(lambda: len(delivered()) == 3 and not job_kinds(gateway.settings, message.id))
    assert delivered() == ["alice@example.org", "carol@example.org", "hidden@example.org"]
    view = (await account.http.get(f"/api/v1/messages/{message.id}")).json()
    assert view["status"] == "expired_approved"
    assert view["method"] == "smtp" and view["sent_at"].endswith("Z")
    assert "body_text" not in view and "error" not in view
    assert stored_row(gateway.settings, message.id) == ("expired_approved", None, None, None)
    listed = (await account.http.get("/api/v1/messages?status=expired_approved")).json()
    assert [m["id"] for m in listed["messages"]] == [message.id]
    assert (await account.http.get("/api/v1/messages?status=sent")).json()["messages"] == []


async def test_an_auto_approval_that_cannot_be_sent_ends_expired_rejected(
    running: RunningGateway, make_account: MakeAccount, sink: Sink
) -> None:
    gateway = running.gateway
    account = await make_account(OWNER)
    keen = await hitl_owner(gateway, account, "keen", expiration="approve")
    sink.refused |= {"alice@example.org", "carol@example.org", "hidden@example.org"}
    message = await add_pending(gateway, keen, time.time() - 1)
    await ApprovalWorker(gateway).expire_due(time.time())  # or the gateway's own worker does

    await wait_until(lambda: stored_row(gateway.settings, message.id)[0] != "expired_approved")
    view = (await account.http.get(f"/api/v1/messages/{message.id}")).json()
    assert view["status"] == "expired_rejected" and view["sent_at"] is None
    assert "550 5.1.1 no such user" in view["error"]
    assert view["rejection_reason"].startswith("approved at expiry, but sending failed: ")
    assert "550 5.1.1 no such user" in view["rejection_reason"]
    assert stored_row(gateway.settings, message.id) == ("expired_rejected", None, None, None)
    assert [rcpts for _, rcpts, _ in sink.received if OWNER not in rcpts] == []
    # /v1: the review's outcome, and a delivery that was tried: refused at RCPT for everyone
    shown = await account.http.get(f"/v1/agents/{keen.agent}/messages/{message.id}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["review_status"] == "review_expired_rejected"
    assert shown.json()["delivery_status"] == "bounced"
    assert "carol@example.org: refused: RCPT TO: 550" in shown.json()["delivery_detail"]


async def race_approvals(
    gateway: Gateway, owner: Owner, anonymous: httpx.AsyncClient, message_id: str, token: str
) -> list[str]:
    """Approve by magic link and by the storage review at once; each side's verdict."""
    results: list[str] = []

    async def by_link() -> None:
        response = await anonymous.post("/api/v1/approve", data={"token": token})
        assert response.status_code in (200, 409)
        results.append("ok" if response.status_code == 200 else "conflict")

    async def by_api() -> None:
        try:
            await gateway.storage.review_outbound(
                owner.user_id, message_id, True, None, None, time.time()
            )
        except NotPending:
            results.append("conflict")
        else:
            results.append("ok")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(by_link)
        nursery.start_soon(by_api)
    return results


async def test_racing_approvals_succeed_once(settings: Settings, resolver: FixtureResolver) -> None:
    """Approval by link and by the API at the same moment: one wins, one is told it lost, and
    exactly one send job exists. On a gateway without workers, so nothing moves the message on
    while the test reads it."""
    async with quiet_gateway(settings, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, OWNER)
        async with account.http, httpx.AsyncClient(base_url=quiet.http_url) as anonymous:
            owner = await hitl_owner(quiet.gateway, account)
            deadline = time.time() + 3600
            for _ in range(5):
                message = await add_pending(quiet.gateway, owner, deadline)
                token = await token_for(quiet.gateway, owner, message.id, "approve", deadline)
                results = await race_approvals(quiet.gateway, owner, anonymous, message.id, token)
                assert sorted(results) == ["conflict", "ok"]
                assert stored_row(settings, message.id)[0] == "queued"
                assert job_kinds(settings, message.id).count("outbound") == 1


async def test_notice_retries_while_the_relay_is_down_and_drops_without_relay(
    tmp_path: Path, resolver: Any, sink: Sink
) -> None:
    down = relay_settings(tmp_path, free_port())
    async with quiet_gateway(down, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, OWNER)
        try:
            owner = await hitl_owner(quiet.gateway, account)
            message = await add_pending(quiet.gateway, owner, time.time() + 3600)
            now = time.time()
            worker = ApprovalWorker(quiet.gateway, clock=lambda: now)
            assert await worker.send_due_notices(now) == 1
            ((run_at, attempts),) = query(
                down.database.url,
                "SELECT run_at, attempts FROM jobs WHERE message_id = ?",
                (message.id,),
            )
            assert (run_at, attempts) == (pytest.approx(now + 30), 1)
            assert await worker.send_due_notices(now + 10) == 0  # not due yet

            # Without a relay at all the notice is dropped (review over the API instead).
            quiet.gateway.settings = make_settings(tmp_path)
            assert await worker.send_due_notices(now + 31) == 1
            assert job_kinds(down, message.id) == []
        finally:
            await account.http.aclose()
    assert sink.received == []


async def test_a_notice_deferred_after_a_slow_hand_off_is_retried_30_s_after_it_ended(
    tmp_path: Path, resolver: Any
) -> None:
    """The relay takes 400 s to defer the notice: the retry is due 30 s after the hand-off
    ended, not at once because 30 s after the claim have long passed."""
    clock = [time.time()]
    relay = ClockedSink(clock, 400)
    relay.rcpt_answers[OWNER] = "450 4.2.1 mailbox busy"
    with relay_on_loopback(relay) as port:
        configured = relay_settings(tmp_path, port)
        async with quiet_gateway(configured, resolver) as quiet:
            account = await open_account(quiet.gateway, quiet.http_url, OWNER)
            async with account.http:
                owner = await hitl_owner(quiet.gateway, account)
                message = await add_pending(quiet.gateway, owner, time.time() + 7200)
                now = clock[0] = time.time()
                worker = ApprovalWorker(quiet.gateway, clock=lambda: clock[0])
                assert await worker.send_due_notices(now) == 1
                ((run_at,),) = query(
                    configured.database.url,
                    "SELECT run_at FROM jobs WHERE message_id = ?",
                    (message.id,),
                )
                assert run_at >= now + 400 + 30 * 0.8


async def test_a_notice_is_abandoned_once_its_retry_would_come_after_the_deadline(
    tmp_path: Path, resolver: Any
) -> None:
    down = relay_settings(tmp_path, free_port())
    async with quiet_gateway(down, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, OWNER)
        async with account.http:
            owner = await hitl_owner(quiet.gateway, account)
            message = await add_pending(quiet.gateway, owner, time.time() + 75)
            now = time.time()
            worker = ApprovalWorker(quiet.gateway, clock=lambda: now)
            assert await worker.send_due_notices(now) == 1  # deferred: again at +30
            assert job_kinds(down, message.id) == ["approval_notice"]
            assert await worker.send_due_notices(now + 30) == 1  # +90 is past the deadline
            assert job_kinds(down, message.id) == []


async def test_notice_for_a_resolved_message_is_not_sent(
    tmp_path: Path, resolver: Any, sink: Sink, relay_port: int
) -> None:
    configured = relay_settings(tmp_path, relay_port)
    async with quiet_gateway(configured, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, OWNER)
        try:
            owner = await hitl_owner(quiet.gateway, account)
            message = await add_pending(quiet.gateway, owner, time.time() + 3600)
            now = time.time()
            await quiet.gateway.storage.review_outbound(None, message.id, False, None, None, now)
            worker = ApprovalWorker(quiet.gateway, clock=lambda: now)
            assert await worker.send_due_notices(now) == 1
            assert job_kinds(configured, message.id) == []
        finally:
            await account.http.aclose()
    assert sink.received == []


@dataclass
class SlowSink(Sink):
    """Has each message once its DATA is in (`data_arrived`), and answers `answer_seconds`
    later."""

    answer_seconds: float = 0.5
    data_arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        self.data_arrived.set()
        await asyncio.sleep(self.answer_seconds)
        return answer


async def test_a_stopping_worker_lets_the_notice_in_flight_finish(
    tmp_path: Path, resolver: Any
) -> None:
    """Cancelled while the relay holds a notice it has not yet answered for, the worker waits
    for the answer and drops the notice's job, so a restart does not mail the owner twice."""
    sink = SlowSink()
    with relay_on_loopback(sink) as port:
        settings = relay_settings(tmp_path, port)
        async with quiet_gateway(settings, resolver) as quiet:
            account = await open_account(quiet.gateway, quiet.http_url, OWNER)
            try:
                owner = await hitl_owner(quiet.gateway, account)
                worker = ApprovalWorker(quiet.gateway)
                async with trio.open_nursery() as nursery:
                    await nursery.start(worker.run)
                    message = await add_pending(quiet.gateway, owner, time.time() + 3600)
                    assert await trio.to_thread.run_sync(sink.data_arrived.wait, 10)
                    nursery.cancel_scope.cancel()
            finally:
                await account.http.aclose()
    assert len(sink.notices()) == 1
    assert job_kinds(settings, message.id) == []


@dataclass
class HeldSink(Sink):
    """Has each message once its DATA is in (`data_arrived`), and answers once `go` is set."""

    data_arrived: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        self.data_arrived.set()
        await asyncio.to_thread(self.go.wait, 60)
        return answer


@dataclass
class GatedSink(Sink):
    """Holds its n-th message, once its DATA is in, until `gates[n]` is set (a relay slow to
    answer it); answers those beyond the gates at once."""

    gates: list[threading.Event] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        arrived = len(self.received) - 1
        if arrived < len(self.gates):
            await asyncio.to_thread(self.gates[arrived].wait, 60)
        return answer


HOLD_SECONDS = 30
"""How long a hand-off may take in the tests whose relay holds it (it must not time out)."""


@asynccontextmanager
async def relayed_gateway(
    tmp_path: Path, resolver: Any, sink: Any, reply_seconds: float = HOLD_SECONDS
) -> AsyncIterator[tuple[Settings, Gateway, Owner]]:
    """A quiet gateway handing its mail to `sink` on 127.0.0.1 waiting `reply_seconds` for
    each reply (`outbound_smtp.timeout_seconds`), and an account's agent that asks for review:
    its settings, the gateway and the agent's owner."""
    with relay_on_loopback(sink) as port:
        settings = relay_settings(tmp_path, port)
        settings.outbound_smtp.timeout_seconds = reply_seconds
        async with quiet_gateway(settings, resolver) as quiet:
            account = await open_account(quiet.gateway, quiet.http_url, OWNER)
            async with account.http:
                yield settings, quiet.gateway, await hitl_owner(quiet.gateway, account)


async def test_a_notice_taken_by_another_claim_while_it_waited_is_not_mailed_twice(
    tmp_path: Path, resolver: Any
) -> None:
    """A round claims more notices than it hands off at once; one waits for a slot behind a
    relay slow to answer until its lease runs out, and another replica's claim mails it. The
    waiting round then neither mails the reviewer that notice again nor touches its job."""
    go = threading.Event()
    sink = GatedSink(gates=[go] * MAX_NOTICES_IN_FLIGHT)
    async with relayed_gateway(tmp_path, resolver, sink) as (settings, gateway, owner):
        lease = JOB_LEASE_SECONDS
        url = settings.database.url
        deadline = time.time() + 3600
        messages = [
            await add_pending(gateway, owner, deadline) for _ in range(MAX_NOTICES_IN_FLIGHT + 1)
        ]
        now = time.time()
        first = ApprovalWorker(gateway, clock=lambda: now)
        second = ApprovalWorker(gateway, clock=lambda: now + 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.send_due_notices, now)
            await wait_until(lambda: len(sink.received) == MAX_NOTICES_IN_FLIGHT)
            prepared = {
                message_id
                for (message_id,) in query(url, "SELECT message_id FROM approval_reply_tokens")
            }
            (waiting,) = [m.id for m in messages if m.id not in prepared]
            # The waiting notice's lease runs out (on the clock leases are judged by).
            query(
                url,
                "UPDATE jobs SET locked_until = locked_until - ? WHERE message_id = ?",
                (lease + 1, waiting),
            )
            assert await second.send_due_notices(now + 1) == 1
            assert job_kinds(settings, waiting) == []
            go.set()
    assert len(sink.notices()) == MAX_NOTICES_IN_FLIGHT + 1
    assert all(job_kinds(settings, message.id) == [] for message in messages)


async def test_an_answer_taken_by_another_claim_while_it_waited_is_not_mailed_twice(
    tmp_path: Path, resolver: Any
) -> None:
    """A held message's two answers to replies go one after the other; the second waits behind
    a relay slow to answer the first until its lease runs out, and another replica's claim
    hands it to the relay. The waiting round then does not mail the reviewer that answer again,
    nor drop it before the other claim has handed it on."""
    first_answered, second_answered = threading.Event(), threading.Event()
    sink = GatedSink(gates=[first_answered, second_answered])
    async with relayed_gateway(tmp_path, resolver, sink) as (settings, gateway, owner):
        lease = JOB_LEASE_SECONDS
        url = settings.database.url
        message = await add_pending(gateway, owner, time.time() + 3600)
        now = time.time()
        token = ReplyToken("token", message.id, OWNER, "<notice@x>", now)
        await gateway.storage.add_reply_token(token)
        for text in ("first", "second"):
            data = f"From: e2a@x\r\nTo: {OWNER}\r\nSubject: {text}\r\n\r\n.\r\n"
            answer = ApprovalAnswer(message.id, "e2a@x", OWNER, data.encode())
            assert await gateway.storage.add_approval_answer(answer, "token", 5, now)
        first = ApprovalWorker(gateway, clock=lambda: now)
        second = ApprovalWorker(gateway, clock=lambda: now + 1)
        first_done = trio.Event()

        async def first_round() -> None:
            await first.send_due_answers(now)
            first_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_round)
            await wait_until(lambda: len(sink.received) == 1)
            ((waiting,),) = query(url, "SELECT max(id) FROM jobs WHERE kind = 'approval_answer'")
            query(  # its lease runs out (on the clock leases are judged by)
                url,
                "UPDATE jobs SET locked_until = locked_until - ? WHERE id = ?",
                (lease + 1, waiting),
            )
            nursery.start_soon(second.send_due_answers, now + 1)
            await wait_until(lambda: len(sink.received) == 2)
            first_answered.set()
            await first_done.wait()
            second_answered.set()
    assert sorted(str(mail["Subject"]) for mail in sink.notices()) == ["first", "second"]
    assert job_kinds(settings, message.id) == ["approval_notice"]


async def test_a_notice_whose_hand_off_outlasts_its_lease_keeps_it_and_is_mailed_once(
    tmp_path: Path, resolver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay holds the end of a notice's data for 2 s (a slow link); the notice's lease is
    1 s. The lease is renewed while the hand-off goes on, so another replica looking for due
    notices all the while claims nothing, and the reviewer gets one notice."""
    monkeypatch.setattr("e2a_gateway.workers.approvals.JOB_LEASE_SECONDS", 1.0)
    sink = HeldSink()
    async with relayed_gateway(tmp_path, resolver, sink) as (settings, gateway, owner):
        worker = ApprovalWorker(gateway)  # on the real clock
        message = await add_pending(gateway, owner, time.time() + 3600)
        taken: list[Job] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.send_due_notices, time.time())
            assert await trio.to_thread.run_sync(sink.data_arrived.wait, 10)
            with trio.move_on_after(2):  # another replica, looking all the while
                while True:
                    taken += await gateway.storage.claim_jobs(
                        "approval_notice", time.time(), 10, 1.0
                    )
                    await trio.sleep(0.1)
            sink.go.set()
        assert taken == []
        assert job_kinds(settings, message.id) == []
    assert len(sink.notices()) == 1


async def test_a_notice_claimed_by_a_replica_that_died_is_taken_over_within_two_minutes(
    tmp_path: Path, resolver: Any, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `outbound_smtp.timeout_seconds` at its default (300 s), a replica claims a notice
    and is gone before mailing it (its database failed it: nothing renews or finishes the job,
    as after a crash). Another replica takes the job over once its lease of 2 minutes has run
    out, not before, and the reviewer gets one notice."""
    async with relayed_gateway(tmp_path, resolver, sink, reply_seconds=300) as (
        settings,
        gateway,
        owner,
    ):
        storage = gateway.storage
        message = await add_pending(gateway, owner, time.time() + 3600)
        now = time.time()

        async def gone(*args: Any, **kwargs: Any) -> None:
            raise StorageUnavailable("connection lost")

        monkeypatch.setattr(storage, "get_outbound", gone)
        assert await ApprovalWorker(gateway, clock=lambda: now).send_due_notices(now) == 1
        monkeypatch.undo()
        other = ApprovalWorker(gateway)
        run_out_leases(settings.database.url, 110)
        assert await other.send_due_notices(now + 110) == 0
        run_out_leases(settings.database.url, 11)
        assert await other.send_due_notices(now + 121) == 1
        assert job_kinds(settings, message.id) == []
    assert len(sink.notices()) == 1


async def test_a_sweep_the_database_fails_is_made_again_and_spares_the_notices_in_flight(
    tmp_path: Path, resolver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The expiry sweep fails while the relay holds a notice: the failure is logged (without
    the message's subject or body), the notice is handed off once and its job dropped, and the
    next sweep expires what the failed one could not."""
    sink = HeldSink()
    with relay_on_loopback(sink) as port:
        settings = relay_settings(tmp_path, port)
        # the relay holds the notice past SQLite's busy timeout (10 s), and must not time out
        settings.outbound_smtp.timeout_seconds = 30
        async with quiet_gateway(settings, resolver) as quiet:
            gateway = quiet.gateway
            account = await open_account(gateway, quiet.http_url, OWNER)
            async with account.http:
                owner = await hitl_owner(gateway, account)
                silent = await hitl_owner(gateway, account, "silent")
                changes = AgentChanges(approval_notifications=False)
                await gateway.storage.update_agent(silent.user_id, silent.agent, changes)
                start = time.time() + 30  # the jobs added from now on are due
                clock = [start]
                overdue = await add_pending(gateway, silent, start + 60)
                worker = ApprovalWorker(gateway, clock=lambda: clock[0], expiry_seconds=0.1)
                with caplog.at_level(logging.INFO, logger="e2a"):
                    async with trio.open_nursery() as nursery:
                        await nursery.start(worker.run)
                        notified = await add_pending(gateway, owner, start + 3600)
                        assert await trio.to_thread.run_sync(sink.data_arrived.wait, 10)
                        with table_locked(settings.database.url, "messages"):
                            clock[0] = start + 120  # `overdue` is due from now on
                            await wait_until(
                                lambda: "approval expiry: the database failed" in caplog.text,
                                seconds=30,  # SQLite's busy timeout is 10 s
                            )
                        sink.go.set()
                        await wait_until(
                            lambda: (
                                stored_row(settings, overdue.id)[0] == "expired_rejected"
                                and job_kinds(settings, notified.id) == []
                            )
                        )
                        nursery.cancel_scope.cancel()
    assert len(sink.notices()) == 1
    assert "crashed" not in caplog.text
    assert SUBJECT not in caplog.text and BODY not in caplog.text


async def test_a_link_past_the_review_deadline_says_the_expiry_action_decides(
    running: RunningGateway,
    owner: Owner,
    anonymous: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the deadline and the expiry sweep the message is still stored as pending, but
    no review is taken any more: the link says so, instead of offering a button that cannot
    work and then calling the message "pending approval" and "no longer awaiting approval"."""
    gateway = running.gateway
    # the deadline passes before the sweep (every 15 s, and one at the gateway's start) comes
    deadline = expiry_sweeps_paused(monkeypatch)
    message = await add_pending(gateway, owner, deadline)
    token = await token_for(gateway, owner, message.id, "approve", deadline)
    await deadline_passed(deadline)
    for method in ("GET", "POST"):
        response = await anonymous.request(method, "/api/v1/approve", params={"token": token})
        assert response.status_code == 409, (method, response.text)
        assert_page_headers(response)
        page = response.text
        assert "review deadline has passed" in page and "it will be discarded" in page, page
        assert "pending approval" not in page and "<form" not in page
    assert stored_row(gateway.settings, message.id)[0] == "pending_approval"
    assert "outbound" not in job_kinds(gateway.settings, message.id)


async def test_an_approval_that_empties_the_html_sends_the_edited_text_alone(
    running: RunningGateway, owner: Owner, sink: Sink
) -> None:
    """A reviewer who corrects the text and empties the HTML (`body_html: ""`) sends the
    correction alone: an empty HTML part beside it is what mail clients would show, a blank
    message."""
    gateway = running.gateway
    message = await add_pending(gateway, owner, time.time() + 3600)
    edits = {"body_text": "Corrected figures", "body_html": ""}
    approved = await owner.account.http.post(f"/api/v1/messages/{message.id}/approve", json=edits)
    assert approved.status_code == 200, approved.text

    def sent() -> list[bytes]:
        return [data for _, rcpts, data in sink.received if "alice@example.org" in rcpts]

    await wait_until(lambda: bool(sent()))
    (raw,) = sent()
    mail = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    types = [part.get_content_type() for part in mail.walk()]
    assert "text/html" not in types, types
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().strip() == "Corrected figures"


async def test_a_flood_of_held_mail_mails_the_reviewer_at_most_the_hourly_notices(
    tmp_path: Path, resolver: Any, sink: Sink, relay_port: int
) -> None:
    """An agent holding mail by the hundred does not mail its reviewer a notice for each: at
    most `limits.approval_notices_per_user_per_hour` an hour; the others wait for room in the
    window, and one whose deadline comes before that room is not mailed at all (the message
    stays in the review queue)."""
    limits = {**TEST_LIMITS, "approval_notices_per_user_per_hour": 3}
    configured = make_settings(
        tmp_path,
        http={"listen": "127.0.0.1:0", "public_url": PUBLIC_URL},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
        limits=limits,
    )
    async with quiet_gateway(configured, resolver) as quiet:
        account = await open_account(quiet.gateway, quiet.http_url, OWNER)
        async with account.http:
            owner = await hitl_owner(quiet.gateway, account)
            held = [await add_pending(quiet.gateway, owner, time.time() + 86400) for _ in range(6)]
            now = time.time()
            worker = ApprovalWorker(quiet.gateway, clock=lambda: now)
            assert await worker.send_due_notices(now) == 6
            assert len(sink.notices()) == 3
            waiting = [m.id for m in held if job_kinds(configured, m.id) == ["approval_notice"]]
            assert len(waiting) == 3  # kept for when the window has room, no attempt counted
            attempts = query(configured.database.url, "SELECT attempts FROM jobs", ())
            assert sorted(row[0] for row in attempts) == [0, 0, 0]
            assert await worker.send_due_notices(now + 60) == 0  # not before then
            later = now + 3600 + 1
            age_rate_limits(configured.database.url, 3601)  # the database's clock, on PostgreSQL
            run_out_leases(configured.database.url, 3601)
            assert await worker.send_due_notices(later) == 3
            assert len(sink.notices()) == 6
            assert all(job_kinds(configured, m.id) == [] for m in held)

            soon = await add_pending(quiet.gateway, owner, later + 600)
            assert await worker.send_due_notices(later + 2) == 1
            assert len(sink.notices()) == 6  # the window's room comes after its deadline
            assert job_kinds(configured, soon.id) == []
            assert stored_row(configured, soon.id)[0] == "pending_approval"


async def test_a_notice_the_relay_deferred_is_counted_once_against_the_hourly_notices(
    tmp_path: Path, resolver: Any
) -> None:
    """The hourly limit counts notices, not attempts: a notice the relay deferred is not
    counted again at its retry, so a relay outage does not use up the reviewer's hour."""
    relay = RelaySink(rcpt_answers={OWNER: "451 4.3.0 try again later"})
    with relay_on_loopback(relay) as port:
        limits = {**TEST_LIMITS, "approval_notices_per_user_per_hour": 1}
        configured = make_settings(
            tmp_path,
            http={"listen": "127.0.0.1:0", "public_url": PUBLIC_URL},
            outbound_smtp={"host": "127.0.0.1", "port": port, "tls": "none"},
            limits=limits,
        )
        async with quiet_gateway(configured, resolver) as quiet:
            account = await open_account(quiet.gateway, quiet.http_url, OWNER)
            async with account.http:
                owner = await hitl_owner(quiet.gateway, account)
                message = await add_pending(quiet.gateway, owner, time.time() + 86400)
                now = time.time()
                worker = ApprovalWorker(quiet.gateway, clock=lambda: now)
                assert await worker.send_due_notices(now) == 1  # deferred by the relay
                relay.rcpt_answers.clear()
                run_out_leases(configured.database.url, 60)
                assert await worker.send_due_notices(now + 60) == 1  # its retry
                assert [rcpts for _, rcpts, _ in relay.received] == [[OWNER]]
                assert job_kinds(configured, message.id) == []
