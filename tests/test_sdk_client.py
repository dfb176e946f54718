"""The SDK (`e2a_gateway.v1`) against a live gateway: sync, asyncio and trio clients, and webhooks.

The gateway runs in a background thread under `trio.run`, so the same instance serves a
synchronous client, an asyncio event loop and a trio one. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import http.server
import itertools
import json
import logging
import queue
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.clock import format_timestamp
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.operations.trust import reading_of
from e2a_gateway.signing.credentials import hash_api_key
from e2a_gateway.signing.identity import IdentityClaim, body_hash
from e2a_gateway.v1 import (
    ApprovePendingMessageRequest,
    AsyncE2AApi,
    AsyncE2AClient,
    Attachment,
    E2AApi,
    E2AApiError,
    E2AClient,
    InboundEmail,
    InvalidSignatureError,
    MessageDetail,
    MessageList,
    RegisterAgentRequest,
    RegisterDomainRequest,
    ReplyToMessageRequest,
    SendEmailRequest,
    UnverifiedEmailError,
    UpdateAgentRequest,
    WireAttachment,
    WSNotification,
)
from e2a_gateway.v1.inbound import parse_raw_email
from e2a_gateway.v1.notifications import backoff_delays, websocket_url
from e2a_gateway.workers.webhook_policy import build_request
from tests.conftest import make_settings
from tests.databases import query
from tests.delivery_support import agent_id, wait_until

SENDER = "alice@example.org"


@dataclass
class LiveGateway:
    """A gateway running in its own thread, and a way to run trio code inside it."""

    running: RunningGateway
    token: trio.lowlevel.TrioToken

    @property
    def url(self) -> str:
        """The HTTP base URL."""
        return self.running.addresses.http_url

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run an async function on the gateway's trio loop and return its result."""
        return trio.from_thread.run(function, *args, trio_token=self.token)

    def new_key(self, email: str) -> str:
        """A fresh API key for the user `email` (created when new)."""
        gateway = self.running.gateway
        _, issued, _ = self.run(bootstrap_user, gateway.storage, gateway.server_key, email)
        return str(issued.plaintext)

    def send_mail(self, recipient: str, message: EmailMessage) -> None:
        """Deliver `message` over real SMTP."""
        with smtplib.SMTP("127.0.0.1", self.running.addresses.smtp_port, timeout=10) as smtp:
            smtp.ehlo("mail.example.org")
            assert smtp.send_message(message, SENDER, [recipient]) == {}


async def _serve(settings: Any, ready: queue.Queue[Any]) -> None:
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_gateway, settings, resolver=FixtureResolver()))
        ready.put((running, trio.lowlevel.current_trio_token(), nursery.cancel_scope))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One gateway for the module, served from a background thread."""
    settings = make_settings(tmp_path_factory.mktemp("sdk"))
    ready: queue.Queue[Any] = queue.Queue()
    thread = threading.Thread(target=trio.run, args=(_serve, settings, ready), daemon=True)
    thread.start()
    running, token, scope = ready.get(timeout=30)
    yield LiveGateway(running, token)
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(timeout=30)


def rich_mail(recipient: str, subject: str) -> EmailMessage:
    """A message with a text body, an HTML alternative and a PDF attachment."""
    message = EmailMessage()
    message["From"] = f"Alice <{SENDER}>"
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content("Plain words.\n")
    message.add_alternative("<p>Rich words.</p>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 tiny", maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    return message


def wait_for_inbox(fetch: Callable[[], MessageList], count: int = 1) -> MessageList:
    """Poll an inbox until it holds `count` messages (local delivery is asynchronous)."""
    deadline = time.monotonic() + 10
    while True:
        page = fetch()
        if len(page.messages) >= count or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def assert_rich(email: InboundEmail | Any, agent: str, subject: str) -> None:
    """The parsed fields of a `rich_mail`."""
    assert email.verified
    assert email.recipient == agent
    assert email.sender == SENDER
    assert email.subject == subject
    assert email.text_body.strip() == "Plain words."
    assert email.html_body is not None and "<p>Rich words.</p>" in email.html_body
    (attachment,) = email.attachments
    assert (attachment.filename, attachment.content_type) == ("invoice.pdf", "application/pdf")
    assert attachment.data == b"%PDF-1.4 tiny"
    assert attachment.size == len(attachment.data)


# Sync client


def test_sync_client_reads_parsed_mail_and_replies_locally(live: LiveGateway) -> None:
    with E2AClient(api_key=live.new_key("sync@example.com"), base_url=live.url) as client:
        agent = client.register_agent("sync-inbox", agent_mode="local", name="Inbox")
        peer = client.register_agent("sync-peer", agent_mode="local")
        assert agent.email == "sync-inbox@agents.test" and agent.name == "Inbox"
        assert {a.email for a in client.list_agents().agents} == {agent.email, peer.email}
        assert client.get_agent("sync-inbox@agents.test").agent_mode == "local"

        live.send_mail("sync-inbox@agents.test", rich_mail("sync-inbox@agents.test", "Invoice"))
        inbox = client.get_messages(agent_email="sync-inbox@agents.test")
        (summary,) = inbox.messages
        assert (summary.subject, summary.sender, summary.status) == ("Invoice", SENDER, "unread")
        assert inbox.next_token is None
        email = client.get_message(summary.message_id, agent_email="sync-inbox@agents.test")
        assert_rich(email, "sync-inbox@agents.test", "Invoice")
        assert client.get_messages(agent_email="sync-inbox@agents.test").messages == []
        assert len(client.get_messages("read", agent_email="sync-inbox@agents.test").messages) == 1

        sent = client.send(
            ["sync-peer@agents.test"],
            "Hello peer",
            "Body text",
            attachments=[Attachment("a.txt", "text/plain", b"attached")],
            agent_email="sync-inbox@agents.test",
        )
        assert sent.method == "local" and sent.message_id
        got = wait_for_inbox(lambda: client.get_messages(agent_email="sync-peer@agents.test"))
        (arrived,) = got.messages
        assert arrived.sender == "sync-inbox@agents.test"
        hello = client.get_message(arrived.message_id, agent_email="sync-peer@agents.test")
        assert hello.text_body.strip() == "Body text"
        assert [a.data for a in hello.attachments] == [b"attached"]

        answer = hello.reply("Thanks!")
        assert answer.method == "local"
        back = wait_for_inbox(lambda: client.get_messages(agent_email="sync-inbox@agents.test"))
        (reply,) = back.messages
        assert reply.subject == "Re: Hello peer"

        client.delete_agent("sync-peer@agents.test")
        with pytest.raises(E2AApiError) as missing:
            client.get_agent("sync-peer@agents.test")
        assert (missing.value.status_code, missing.value.code) == (404, "not_found")


WINDOWS_MAIL = (
    b"From: Dani <alice@example.org>\r\n"
    b"To: sdk-charsets@agents.test\r\n"
    b"Subject: =?iso-8859-1?q?=93Angebot=94_f=FCr_10_=80?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"\x93Offer\x94 for 10 \x80\r\n"
    b"--XX\r\n"
    b"Content-Type: text/html; charset=shift_jis\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"<p>\x87\x40\x93\xfa\x96\x7b</p>\r\n"
    b"--XX\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=windows-1252''%93Caf%E9%94.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    b"--XX\r\n"
    b'Content-Type: application/pdf; name="=?shift_jis?b?h0A=?=.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
    b"--XX--\r\n"
)


def test_the_sdk_reads_windows_charsets_as_the_rest_api_does(live: LiveGateway) -> None:
    """Outlook labels Windows-1252 `iso-8859-1`, Windows' Shift_JIS holds NEC's ①: the SDK read
    them with Python's codecs alone (C1 controls, U+FFFD), so an agent saw another subject,
    body and filenames than the REST API and the dashboard show for the same message."""
    key = live.new_key("charsets@example.com")
    with E2AClient(api_key=key, base_url=live.url) as client:
        client.register_agent("sdk-charsets", agent_mode="local")
        with smtplib.SMTP("127.0.0.1", live.running.addresses.smtp_port, timeout=10) as smtp:
            smtp.ehlo("mail.example.org")
            assert smtp.sendmail(SENDER, ["sdk-charsets@agents.test"], WINDOWS_MAIL) == {}
        (summary,) = client.get_messages(agent_email="sdk-charsets@agents.test").messages
        read = client.get_message(summary.message_id, agent_email="sdk-charsets@agents.test")
    view = httpx.get(
        f"{live.url}/api/v1/agents/sdk-charsets%40agents.test/messages/{summary.message_id}",
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert view["subject"] == read.subject == "“Angebot” für 10 €"
    assert view["text_body"] == read.text_body == "“Offer” for 10 €"
    assert view["html_body"] == read.html_body == "<p>①日本</p>"
    names = [item["filename"] for item in view["attachments"]]
    assert names == [item.filename for item in read.attachments] == ["“Café”.pdf", "①.pdf"]


def test_sync_client_approves_and_rejects_held_mail(live: LiveGateway) -> None:
    with E2AClient(api_key=live.new_key("hitl@example.com"), base_url=live.url) as client:
        client.register_agent("held", agent_mode="local")
        client.register_agent("held-peer", agent_mode="local")
        agent = client.update_agent("held@agents.test", hitl_enabled=True, hitl_ttl_seconds=600)
        assert agent.hitl_enabled is True and agent.hitl_ttl_seconds == 600
        client.agent_email = "held@agents.test"

        first = client.send(["held-peer@agents.test"], "First", "one")
        second = client.send(["held-peer@agents.test"], "Second", "two")
        assert first.status == second.status == "pending_approval"
        assert first.approval_expires_at
        pending = {m.id for m in client.list_pending_messages().messages}
        assert pending == {first.message_id, second.message_id}
        assert client.get_pending_message(first.message_id).body_text == "one"

        approved = client.approve_message(first.message_id, subject="First, edited")
        assert approved.edited is True and approved.message_id == first.message_id
        rejected = client.reject_message(second.message_id, reason="not today")
        assert (rejected.status, rejected.rejection_reason) == ("rejected", "not today")
        assert client.list_pending_messages().messages == []
        with pytest.raises(E2AApiError) as twice:
            client.approve_message(second.message_id)
        assert twice.value.status_code == 409

        got = wait_for_inbox(lambda: client.get_messages(agent_email="held-peer@agents.test"))
        assert [m.subject for m in got.messages] == ["First, edited"]


def test_sync_client_sends_once_per_idempotency_key(live: LiveGateway) -> None:
    """A repeated send with the same key answers the first one; another key sends again."""
    with E2AClient(api_key=live.new_key("once@example.com"), base_url=live.url) as client:
        client.register_agent("once", agent_mode="local")
        client.register_agent("once-peer", agent_mode="local")
        client.agent_email = "once@agents.test"
        hitl = client.update_agent("once@agents.test", hitl_enabled=True, hitl_ttl_seconds=600)
        assert hitl.hitl_enabled is True  # held: what was sent stays countable
        first = client.send(["once-peer@agents.test"], "Once", "one", idempotency_key="k-1")
        again = client.send(["once-peer@agents.test"], "Once", "one", idempotency_key="k-1")
        other = client.send(["once-peer@agents.test"], "Once", "one", idempotency_key="k-2")
        assert again.message_id == first.message_id != other.message_id
        pending = {m.id for m in client.list_pending_messages().messages}
        assert pending == {first.message_id, other.message_id}


def test_sync_client_domains_and_errors(live: LiveGateway) -> None:
    with E2AClient(api_key=live.new_key("domains@example.com"), base_url=live.url) as client:
        domain = client.register_domain("Example-Corp.test")
        assert domain.domain == "example-corp.test" and domain.verified is False
        assert str(domain.verification_token).startswith("e2a-verify=")
        assert [d.domain for d in client.list_domains().domains] == ["example-corp.test"]
        client.delete_domain("example-corp.test")
        assert client.list_domains().domains == []

        with pytest.raises(E2AApiError) as bad:
            client.register_agent("admin", agent_mode="local")
        assert bad.value.status_code == 400 and bad.value.code
        assert bad.value.message and bad.value.message in str(bad.value)

    with (
        E2AClient(api_key="e2a_" + "0" * 64, base_url=live.url) as stranger,
        pytest.raises(E2AApiError) as refused,
    ):
        stranger.list_agents()
    assert refused.value.status_code == 401


def test_client_settings_come_from_the_environment(
    live: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2A_API_KEY", live.new_key("env@example.com"))
    monkeypatch.delenv("E2A_BASE_URL", raising=False)
    monkeypatch.setenv("E2A_URL", live.url)
    monkeypatch.setenv("E2A_AGENT_EMAIL", "env-bot@agents.test")
    with E2AClient() as client:
        assert client.base_url == live.url
        client.register_agent("env-bot", agent_mode="local")
        assert client.get_messages().messages == []
    monkeypatch.setenv("E2A_BASE_URL", live.url + "/")
    assert E2AClient().base_url == live.url
    monkeypatch.delenv("E2A_API_KEY")
    with pytest.raises(ValueError, match="E2A_API_KEY"):
        E2AClient()
    monkeypatch.delenv("E2A_AGENT_EMAIL")
    with pytest.raises(ValueError, match="E2A_AGENT_EMAIL"):
        E2AClient(api_key="e2a_x").get_messages()


# Raw API (E2AApi, AsyncE2AApi): the published SDK's request and answer models


def test_raw_api_speaks_the_published_models(live: LiveGateway) -> None:
    key = live.new_key("raw@example.com")
    with E2AApi(api_key=key, base_url=live.url) as api:
        created = api.register_agent(RegisterAgentRequest(slug="raw", agent_mode="local"))
        api.register_agent(RegisterAgentRequest(slug="raw-peer", agent_mode="local"))
        assert created.email == "raw@agents.test"
        assert {a.email for a in api.list_agents().agents} == {
            "raw@agents.test",
            "raw-peer@agents.test",
        }
        updated = api.update_agent("raw@agents.test", UpdateAgentRequest(hitl_ttl_seconds=900))
        assert updated.hitl_ttl_seconds == 900 and updated.agent_mode == "local"

        live.send_mail("raw@agents.test", rich_mail("raw@agents.test", "Raw"))
        page = api.list_messages("raw@agents.test")
        (summary,) = page.messages
        assert (summary.from_, summary.subject, page.next_token) == (SENDER, "Raw", None)
        detail = api.get_message("raw@agents.test", str(summary.message_id))
        assert detail.from_ == SENDER and detail.auth_headers
        assert b"Plain words." in base64.b64decode(str(detail.raw_message))
        assert api.list_messages("raw@agents.test").messages == []

        sent = api.send_email(
            SendEmailRequest(
                from_="raw@agents.test",
                to=["raw-peer@agents.test"],
                subject="Raw send",
                body="hello",
                attachments=[
                    WireAttachment(filename="a.txt", content_type="text/plain", data="aGk=")
                ],
            )
        )
        assert (sent.status, sent.method) == ("sent", "local") and sent.message_id
        # The reply goes to a remote sender and no relay is configured: refused, 422.
        with pytest.raises(E2AApiError) as refused:
            api.reply_to_message(
                "raw@agents.test", str(summary.message_id), ReplyToMessageRequest(body="thanks")
            )
        assert (refused.value.status_code, refused.value.code) == (422, "send_failed")

        api.update_agent("raw@agents.test", UpdateAgentRequest(hitl_enabled=True))
        held = [
            api.send_email(
                SendEmailRequest(
                    from_="raw@agents.test", to=["raw-peer@agents.test"], subject=s, body="b"
                )
            )
            for s in ("Keep", "Drop")
        ]
        assert {h.status for h in held} == {"pending_approval"}
        pending = api.list_pending_messages().messages
        assert {m.id for m in pending} == {h.message_id for h in held}
        approved = api.approve_message(
            str(held[0].message_id), ApprovePendingMessageRequest(subject="Kept")
        )
        assert (approved.message_id, approved.edited) == (held[0].message_id, True)
        rejected = api.reject_message(str(held[1].message_id), "no")
        assert (rejected.status, rejected.rejection_reason) == ("rejected", "no")
        assert api.get_pending_message(str(held[1].message_id)).status == "rejected"

        domain = api.register_domain(RegisterDomainRequest(domain="raw.example"))
        assert domain.dns_records is not None and domain.dns_records.mx is not None
        assert domain.dns_records.mx.priority == 10
        assert api.verify_domain("raw.example").verified is True  # development mode
        api.delete_domain("raw.example")
        assert api.get_info().shared_domain == "agents.test"
        with pytest.raises(E2AApiError) as missing:
            api.get_agent("nobody@agents.test")
        assert missing.value.status_code == 404

    with E2AClient(api_key=key, base_url=live.url) as client:
        assert isinstance(client.api, E2AApi) and client.api.base_url == live.url
        assert len(client.api.list_agents().agents) == 2


def test_async_raw_api_under_asyncio(live: LiveGateway) -> None:
    key = live.new_key("raw-async@example.com")

    async def main() -> None:
        async with AsyncE2AApi(api_key=key, base_url=live.url) as api:
            agent = await api.register_agent(
                RegisterAgentRequest(slug="raw-async", agent_mode="local")
            )
            live.send_mail(str(agent.email), rich_mail(str(agent.email), "Async raw"))
            (summary,) = (await api.list_messages(str(agent.email))).messages
            detail = await api.get_message(str(agent.email), str(summary.message_id))
            assert (detail.subject, detail.from_) == ("Async raw", SENDER)
            await api.delete_agent(str(agent.email))
            assert (await api.list_agents()).agents == []
        async with AsyncE2AClient(api_key=key, base_url=live.url) as client:
            assert isinstance(client.api, AsyncE2AApi)

    asyncio.run(main())


# Async client, under asyncio and trio


async def exercise_async_client(live: LiveGateway, name: str, key: str, sleep: Any) -> None:
    """Register, receive over SMTP, read parsed mail, send and reply, and see errors.

    Blocking calls into the gateway's thread (SMTP) are fine here: it has its own loop."""
    async with AsyncE2AClient(key, agent_email=f"{name}@agents.test", base_url=live.url) as client:
        agent = await client.register_agent(name, agent_mode="local")
        await client.register_agent(f"{name}-peer", agent_mode="local")
        assert agent.email == f"{name}@agents.test"
        assert len((await client.list_agents()).agents) == 2

        live.send_mail(f"{name}@agents.test", rich_mail(f"{name}@agents.test", "Async"))
        (summary,) = (await client.get_messages()).messages
        email = await client.get_message(summary.message_id)
        assert_rich(email, f"{name}@agents.test", "Async")

        sent = await client.send([f"{name}-peer@agents.test"], "Ping", "ping", html_body="<b>p</b>")
        assert sent.method == "local"
        peer = f"{name}-peer@agents.test"
        for _ in range(200):
            page = await client.get_messages(agent_email=peer)
            if page.messages:
                break
            await sleep(0.05)
        ping = await client.get_message(page.messages[0].message_id, agent_email=peer)
        assert ping.html_body is not None and "<b>p</b>" in ping.html_body
        assert (await ping.reply("pong")).method == "local"

        with pytest.raises(E2AApiError) as missing:
            await client.get_message("msg_nope")
        assert (missing.value.status_code, missing.value.code) == (404, "not_found")
        await client.delete_agent(peer)


def test_async_client_under_asyncio(live: LiveGateway) -> None:
    key = live.new_key("asyncio@example.com")
    asyncio.run(exercise_async_client(live, "on-asyncio", key, asyncio.sleep))


def test_async_client_under_trio(live: LiveGateway) -> None:
    key = live.new_key("trio@example.com")
    trio.run(exercise_async_client, live, "on-trio", key, trio.sleep)


# Notifications


async def listen_for_mail(live: LiveGateway, key: str, name: str) -> None:
    """Unread mail first, then live mail; acks mark messages read; a connection the server
    closes is reopened, and a message handled before it closed, whose ack was lost with it, is
    acknowledged then rather than handed over again; refusals raise.

    Runs under asyncio and trio alike (anyio only)."""
    agent = f"{name}@agents.test"
    async with AsyncE2AClient(key, agent_email=agent, base_url=live.url) as client:
        await client.register_agent(name, agent_mode="local")
        for subject in ("Waiting 1", "Waiting 2"):
            live.send_mail(agent, rich_mail(agent, subject))
        seen: list[WSNotification] = []
        with anyio.fail_after(20):
            async with aclosing(client.listen(ack=True)) as stream:
                async for notification in stream:
                    seen.append(notification)
                    if len(seen) == 2:
                        live.send_mail(agent, rich_mail(agent, "Live"))
                    if len(seen) == 3:
                        # "Live" is not acked yet (that happens on the next step, when its ack
                        # meets the closed connection): the next connection sends it again,
                        # and listen acknowledges it there instead of handing it over twice.
                        await anyio.to_thread.run_sync(live.run, drop_websockets, live, agent)
                        live.send_mail(agent, rich_mail(agent, "After"))
                    if len(seen) == 4:  # the connection still open: the ack of "Live" is read
                        for _ in range(200):
                            unread = (await client.get_messages()).messages
                            if "Live" not in [m.subject for m in unread]:
                                break
                            await anyio.sleep(0.05)
                        break
        assert [n.subject for n in seen] == ["Waiting 1", "Waiting 2", "Live", "After"]
        assert {n.from_ for n in seen} == {SENDER} and {n.recipient for n in seen} == {agent}
        unread = (await client.get_messages()).messages
        assert [m.subject for m in unread] == ["After"]  # the last one was never acked

        with anyio.fail_after(10):
            async with aclosing(client.listen(agent_email="nobody@agents.test")) as refused:
                with pytest.raises(E2AApiError) as missing:
                    await refused.__anext__()
        assert missing.value.status_code == 404


async def drop_websockets(live: LiveGateway, agent: str) -> None:
    """Have the gateway close the agent's WebSockets (as when a client falls behind), once the
    acks already sent have marked their messages read (only "Live" is still unread)."""
    gateway = live.running.gateway
    hub = gateway.hub
    subscribed = await agent_id(gateway, agent)
    await wait_until(lambda: hub.subscriber_count(subscribed) > 0)
    unread = "SELECT subject FROM messages WHERE agent_email = ? AND status = 'unread'"
    await wait_until(lambda: query(gateway.settings.database.url, unread, (agent,)) == [("Live",)])
    hub.close_subscriptions(subscribed)


def test_listen_under_trio(live: LiveGateway) -> None:
    trio.run(listen_for_mail, live, live.new_key("listen-trio@example.com"), "ear-trio")


def test_listen_under_asyncio(live: LiveGateway) -> None:
    key = live.new_key("listen-asyncio@example.com")
    asyncio.run(listen_for_mail(live, key, "ear-asyncio"))


def test_listen_keeps_the_api_key_out_of_the_url_and_the_logs(
    live: LiveGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The key goes in an `Authorization: Bearer` header of the handshake: in the URL,
    httpx's INFO log line of every (re)connection, and any reverse proxy's access log, would
    record it."""
    key = live.new_key("listen-quiet@example.com")
    agent = "ear-quiet@agents.test"
    with E2AClient(api_key=key, base_url=live.url) as sync:
        sync.register_agent(agent.split("@")[0], agent_mode="local")
    live.send_mail(agent, rich_mail(agent, "Hush"))

    async def main() -> list[str]:
        subjects = []
        with anyio.fail_after(20):
            async with (
                AsyncE2AClient(key, agent_email=agent, base_url=live.url) as client,
                aclosing(client.listen()) as stream,
            ):
                async for notification in stream:
                    subjects.append(notification.subject)
                    break
        return subjects

    with caplog.at_level(logging.DEBUG):
        assert trio.run(main) == ["Hush"]
    handshakes = [r.getMessage() for r in caplog.records if "/ws" in r.getMessage()]
    assert handshakes, "httpx logs the handshake"
    assert all(key not in line and "token=" not in line for line in handshakes)
    assert websocket_url("https://mail.example.com/", "bot@example.com") == (
        "wss://mail.example.com/api/v1/agents/bot%40example.com/ws"
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_listen_loop_can_be_left_with_break(live: LiveGateway, backend: str) -> None:
    """The published SDK's users write `async for …: break` without aclosing; the generator
    is then closed by the event loop in another task, which must not disturb the caller."""
    key = live.new_key(f"listen-break-{backend}@example.com")
    agent = f"ear-break-{backend}@agents.test"
    with E2AClient(api_key=key, base_url=live.url) as sync:
        sync.register_agent(agent.split("@")[0], agent_mode="local")
    live.send_mail(agent, rich_mail(agent, "Only"))

    async def main() -> list[str]:
        subjects = []
        with anyio.fail_after(20):
            client = AsyncE2AClient(key, agent_email=agent, base_url=live.url)
            async for notification in client.listen():
                subjects.append(notification.subject)
                break
            gc.collect()  # finalizes the abandoned generator
            await anyio.sleep(0.2)  # a leaked cancel scope would cancel this sleep
            await client.close()
        return subjects

    assert anyio.run(main, backend=backend) == ["Only"]


def test_reconnect_backoff_is_jittered_and_capped() -> None:
    for _ in range(20):
        delays = list(itertools.islice(backoff_delays(10), 6))
        for delay, ceiling in zip(delays, [1, 2, 4, 8, 10, 10], strict=True):
            assert ceiling / 2 <= delay <= ceiling


# Webhooks


def new_signing_secret(live: LiveGateway, key: str) -> str:
    """Create a signing secret (deliveries are signed with the newest) and return it."""
    response = httpx.post(
        f"{live.url}/api/v1/users/me/signing-secrets",
        headers={"Authorization": f"Bearer {key}"},
        json={"name": "sdk-test"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def signed_body(live: LiveGateway, key: str, agent: str, message_id: str, **sign: Any) -> bytes:
    """The webhook body the gateway would POST for `message_id`, signed at `sign["now"]`."""

    async def load() -> Any:
        storage = live.running.gateway.storage
        user = await storage.user_for_key_hash(hash_api_key(key))
        assert user is not None
        message = await storage.read_inbound(user.id, agent, message_id)
        assert message is not None
        return message, await reading_of(live.running.gateway, message)

    message, reading = live.run(load)
    return build_request(message, reading, sign["secret"], 1, sign["now"]).body


def test_parse_webhook_accepts_gateway_bodies_and_refuses_forgeries(live: LiveGateway) -> None:
    key = live.new_key("hooks@example.com")
    with E2AClient(api_key=key, base_url=live.url) as client:
        client.register_agent("hooks", agent_mode="local")
        secret = new_signing_secret(live, key)
        live.send_mail("hooks@agents.test", rich_mail("hooks@agents.test", "Signed"))
        (summary,) = client.get_messages(agent_email="hooks@agents.test").messages
        sign = partial(signed_body, live, key, "hooks@agents.test", summary.message_id)
        now = time.time()
        genuine = sign(secret=secret, now=now)

        email = client.parse_webhook(genuine, secret)
        assert_rich(email, "hooks@agents.test", "Signed")
        assert email.auth.message_id == summary.message_id
        assert client.parse_webhook(json.loads(genuine), secret).verified

        payload = json.loads(genuine)
        raw = base64.b64decode(payload["raw_message"])
        forged_raw = base64.b64encode(raw.replace(b"Plain words", b"Other words")).decode()
        forged_claim = {**payload["auth_headers"], "X-E2A-Auth-Sender": "ceo@example.org"}
        hash_hex = payload["auth_headers"]["X-E2A-Auth-Body-Hash"]
        non_ascii_hash = {**payload["auth_headers"], "X-E2A-Auth-Body-Hash": hash_hex[:-1] + "é"}
        non_ascii_signature = {**payload["auth_headers"], "X-E2A-Auth-Signature": "é" * 64}
        refused: dict[str, bytes | str] = {
            "forged body": json.dumps({**payload, "raw_message": forged_raw}),
            "forged claim": json.dumps({**payload, "auth_headers": forged_claim}),
            "non-ASCII body hash": json.dumps({**payload, "auth_headers": non_ascii_hash}),
            "non-ASCII signature": json.dumps({**payload, "auth_headers": non_ascii_signature}),
            "headers not an object": json.dumps({**payload, "auth_headers": [forged_claim]}),
            "another message's id": json.dumps({**payload, "message_id": "msg_other"}),
            "six minutes old": sign(secret=secret, now=now - 360),
            "a minute ahead": sign(secret=secret, now=now + 60),
        }
        for name, body in refused.items():
            with pytest.raises(InvalidSignatureError):
                client.parse_webhook(body, secret)
                pytest.fail(f"accepted: {name}")
        with pytest.raises(PermissionError):
            client.parse_webhook(genuine, "0" * 64)
        assert client.parse_webhook(sign(secret=secret, now=now - 240), secret).verified
        assert client.parse_webhook(sign(secret=secret, now=now + 20), secret).verified

        # The claim `e2a listen --forward` passes on was signed when the message was accepted,
        # maybe hours before: max_age=None takes it at any age, and refuses the rest as before.
        hours_old = sign(secret=secret, now=now - 7200)
        async_client = AsyncE2AClient(api_key=key)
        for parse in (client.parse_webhook, async_client.parse_webhook):
            assert parse(hours_old, secret, max_age=None).verified
            for name in ("forged body", "forged claim", "a minute ahead"):
                with pytest.raises(InvalidSignatureError):
                    parse(refused[name], secret, max_age=None)
                    pytest.fail(f"accepted at any age: {name}")
            with pytest.raises(InvalidSignatureError):
                parse(hours_old, secret, max_age=3600)


def test_parse_webhook_refuses_a_body_that_is_no_json_object_as_unsigned() -> None:
    """Anyone can POST to a webhook URL: a body that is not a JSON object cannot be verified,
    and raises the documented InvalidSignatureError (a 401), not a decoding error (a 500)."""
    key = "e2a_" + "0" * 64
    clients = (E2AClient(api_key=key), AsyncE2AClient(api_key=key))
    for body in (b"not json", b"\xff\xfe", "[1, 2]", b'"text"', b"null"):
        for client in clients:
            with pytest.raises(InvalidSignatureError, match="JSON object"):
                client.parse_webhook(body, "ab" * 32)


def webhook_body_for(raw: bytes, sender: str, claimed_from: str) -> bytes:
    """A body as the gateway signs it now for `raw` from `sender`, whose `from` says
    `claimed_from`."""
    claim = IdentityClaim(
        verified=True,
        sender=sender,
        entity_type="human",
        domain_check="spf=pass; dkim=pass; dmarc=pass",
        delegation="",
        timestamp=format_timestamp(time.time()),
        message_id="msg_0123456789abcdef01234567",
        body_hash=body_hash(raw),
    )
    payload = {
        "message_id": claim.message_id,
        "from": claimed_from,
        "recipient": "bot@agents.test",
        "raw_message": base64.b64encode(raw).decode(),
        "auth_headers": claim.signed_headers("ab" * 32),
    }
    return json.dumps(payload).encode()


def test_a_verified_webhooks_sender_is_the_one_its_signed_bytes_name() -> None:
    """`from` is outside the signature: a body whose `from` names neither the signed From
    nor a Reply-To of the signed bytes (a genuine delivery with `from` changed) verifies, but
    its sender is refused rather than handed out next to `is_verified`."""
    client = E2AClient(api_key="e2a_" + "0" * 64)
    plain = b"From: Alice <Alice@Example.org>\r\nSubject: hi\r\n\r\nbody\r\n"
    replying = (
        b"From: alice@example.org\r\nReply-To: Desk <Desk@Example.org>, b@example.org\r\n"
        b"Subject: hi\r\n\r\nbody\r\n"
    )
    genuine = {
        plain: "alice@example.org",
        replying: "desk@example.org",
    }
    for raw, sender in genuine.items():
        email = client.parse_webhook(webhook_body_for(raw, "alice@example.org", sender), "ab" * 32)
        assert email.sender == sender and email.is_verified
    for raw in (plain, replying):
        forged = webhook_body_for(raw, "alice@example.org", "ceo@example.com")
        email = client.parse_webhook(forged, "ab" * 32)
        assert email.verified and email.subject == "hi"
        with pytest.raises(UnverifiedEmailError, match="sender"):
            _ = email.sender


def test_unverified_fields_are_gated(live: LiveGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    key = live.new_key("gate@example.com")
    with E2AClient(api_key=key, base_url=live.url) as client:
        client.register_agent("gate", agent_mode="local")
        secret = new_signing_secret(live, key)
        live.send_mail("gate@agents.test", rich_mail("gate@agents.test", "Gated"))
        (summary,) = client.get_messages(agent_email="gate@agents.test").messages
        body = signed_body(
            live, key, "gate@agents.test", summary.message_id, secret=secret, now=time.time()
        )
        email = InboundEmail(json.loads(body), client.reply)
        assert not email.verified
        assert email.unverified_payload["subject"] == "Gated"
        with pytest.raises(UnverifiedEmailError):
            _ = email.sender
        assert email.verify_signature("f" * 64) is False
        with pytest.raises(UnverifiedEmailError):
            _ = email.text_body
        monkeypatch.delenv("E2A_WEBHOOK_SECRET", raising=False)
        monkeypatch.delenv("E2A_HMAC_SECRET", raising=False)
        with pytest.raises(ValueError, match="E2A_WEBHOOK_SECRET"):
            email.verify_signature()
        monkeypatch.setenv("E2A_WEBHOOK_SECRET", secret)
        assert email.verify_signature() is True
        assert email.sender == SENDER
        assert client.parse_webhook(body).subject == "Gated"
        detail = MessageDetail.model_validate_json(body)
        assert client.parse_webhook(detail).subject == "Gated"

        with pytest.warns(DeprecationWarning, match="parse_webhook"):
            legacy = client.parse(body)
        assert not legacy.verified
        with pytest.raises(UnverifiedEmailError):
            _ = legacy.subject
        assert legacy.verify_signature(secret) and legacy.subject == "Gated"
        with pytest.warns(DeprecationWarning, match="AsyncE2AClient.parse"):
            assert not AsyncE2AClient(key, base_url=live.url).parse(body).verified


def test_a_message_the_stdlibs_mime_parser_gives_up_on_is_read_without_its_body() -> None:
    """The stdlib reads a comment inside a comment by recursion: a Content-Type or
    Content-Disposition nesting a few thousand (8 KB, within every header limit of the
    gateway) must not make the SDK raise on mail any sender can write: it reads as empty (the
    gateway reads no body of it either; the webhook's fields still name its subject)."""
    deep = "(" * 3000 + ")" * 3000
    for field in (f"Content-Type: text/plain {deep}", f"Content-Disposition: inline {deep}"):
        raw = f"From: a@b.example\r\nSubject: hi\r\n{field}\r\n\r\nbody\r\n".encode()
        parsed = parse_raw_email(raw)
        assert (parsed.subject, parsed.text_body, parsed.html_body) == ("", "", None)
        assert parsed.attachments == []
    for field in ("Content-Type: text/plain; charset*", "Content-Disposition: inline; name*"):
        raw = f"From: a@b.example\r\nSubject: hi\r\n{field}\r\n\r\nbody\r\n".encode()
        parsed = parse_raw_email(raw)  # the stdlib's parameter parser raised IndexError
        assert (parsed.subject, parsed.text_body, parsed.html_body) == ("", "", None)
    plain = parse_raw_email(b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n")
    assert (plain.subject, plain.text_body.strip()) == ("hi", "body")


def test_api_errors_keep_status_code_and_message() -> None:
    request = httpx.Request("GET", "https://e2a.test/api/v1/agents")
    body = {"error": {"code": "rate_limited", "message": "slow down"}}
    limited = httpx.Response(429, json=body, headers={"Retry-After": "7"}, request=request)
    json_error = E2AApiError.from_response(limited)
    assert (json_error.status_code, json_error.code, json_error.message) == (
        429,
        "rate_limited",
        "slow down",
    )
    assert json_error.retry_after == 7
    plain = E2AApiError.from_response(httpx.Response(502, text="Bad gateway\n", request=request))
    assert (plain.status_code, plain.code, plain.message) == (502, None, "Bad gateway")
    assert plain.retry_after is None
    dated = {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}
    later = httpx.Response(503, text="down", headers=dated, request=request)
    assert E2AApiError.from_response(later).retry_after is None


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A web server in front of the gateway's address: it redirects every request to https
    (`redirect`), or answers every request with its own 502 error page."""

    redirect = True
    page = (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )

    def _answer(self) -> None:
        if self.redirect:
            self.send_response(308)
            self.send_header("Location", f"https://gateway.example{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def proxy(redirect: bool) -> Iterator[str]:
    """A `_Proxy` on loopback; yields its URL."""
    handler = type("Handler", (_Proxy,), {"redirect": redirect})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_an_error_not_a_success() -> None:
    """A base URL that redirects (http:// in front of an https-only proxy): every call raises,
    deletes included, saying where to point the client; nothing is reported done."""
    with proxy(redirect=True) as url, E2AClient(api_key="e2a_x", base_url=url) as client:
        for attempt in (
            lambda: client.delete_agent("bot@agents.example"),
            lambda: client.delete_domain("example.com"),
            lambda: client.api.delete_api_key("key_1"),
            client.list_agents,
        ):
            with pytest.raises(E2AApiError) as raised:
                attempt()
            assert (raised.value.status_code, raised.value.code) == (308, "redirected")
            assert "https://gateway.example/api/v1/" in raised.value.message

        async def delete_async() -> None:
            async with AsyncE2AClient(api_key="e2a_x", base_url=url) as client:
                await client.delete_agent("bot@agents.example")

        with pytest.raises(E2AApiError) as raised:
            trio.run(delete_async)
        assert (raised.value.status_code, raised.value.code) == (308, "redirected")


def test_an_error_page_of_a_proxy_is_summed_up_not_shown() -> None:
    """A proxy's 502 page in front of the gateway: the error says what answered, in one
    sentence, without the page's HTML."""
    with (
        proxy(redirect=False) as url,
        E2AClient(api_key="e2a_x", base_url=url) as client,
        pytest.raises(E2AApiError) as raised,
    ):
        client.get_messages(agent_email="bot@agents.example")
    error = raised.value
    assert (error.status_code, error.code) == (502, None)
    assert "<" not in error.message and "\n" not in error.message, error.message
    assert error.message == (
        "HTTP 502 Bad Gateway: an HTML page, not the e2a API's JSON error "
        "(a proxy or another web server answered for the gateway)"
    )


# Packaging

ISOLATION_CHECK = """
import contextlib, io, sys
for name in ("trio", "quart", "quart_trio", "hypercorn", "dkim", "spf", "dns", "nacl", "psycopg"):
    sys.modules[name] = None  # importing any of these now fails
import e2a_gateway.v1
ours = (m for m in sys.modules if m.startswith("e2a_gateway."))
loaded = sorted(m for m in ours if not m.startswith("e2a_gateway.v1"))
# Mail is read as the gateway reads it: with the pure, standard-library-only modules it uses.
shared = [
    "e2a_gateway.bidi",
    "e2a_gateway.charsets",
    "e2a_gateway.email_policies",
    "e2a_gateway.mime_bounds",
    "e2a_gateway.mime_parse",
    "e2a_gateway.rfc5322",
    "e2a_gateway.utf8_cuts",
]
assert loaded == shared, loaded
from e2a_gateway.cli.main import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    assert main(["serve"]) == 1
assert "pip install '.[server]'" in err.getvalue(), err.getvalue()
print("ok")
"""


def test_sdk_and_cli_import_without_the_server_dependencies() -> None:
    """Without the server extra, the SDK and the CLI load and `serve` explains what to
    install (tests/test_sdk_packaging.py checks the same in a real base-only install)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", ISOLATION_CHECK],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
