"""postmaster (RFC 5321 section 4.5.1), over real SMTP with smtplib.

`RCPT TO:<postmaster>` and `postmaster@` every domain the gateway serves are accepted and
delivered — to the agent at that address, to `postmaster.deliver_to`, or to the postmaster
inbox of the first user — and never refused for want of a mailbox; postmaster at a domain the
gateway does not serve is still relay-denied.
"""

from __future__ import annotations

import smtplib
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import ConfigError, load_settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account, agent_path, make_settings
from tests.databases import query
from tests.delivery_support import create_agent, open_account

SENDER = "mailer-daemon@example.org"
INBOX = "postmaster@agents.test"


def message(subject: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: postmaster\r\nSubject: {subject}\r\n\r\nA bounce.\r\n").encode()


def transaction(port: int, recipients: list[str], subject: str) -> dict[str, Any]:
    """One mail transaction: each RCPT's reply, then DATA's (when a recipient was taken)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        assert client.mail(SENDER)[0] == 250
        replies = {rcpt: client.rcpt(rcpt) for rcpt in recipients}
        data = client.data(message(subject)) if any(r[0] == 250 for r in replies.values()) else None
    return {
        "rcpt": {rcpt: (code, text.decode()) for rcpt, (code, text) in replies.items()},
        "data": data,
    }


async def send(running: RunningGateway, recipients: list[str], subject: str) -> dict[str, Any]:
    port = running.addresses.smtp_port
    return await trio.to_thread.run_sync(transaction, port, recipients, subject)


async def subjects(account: Account, agent: str) -> list[str]:
    response = await account.http.get(agent_path(agent, "/messages?status=all"))
    assert response.status_code == 200, response.text
    return [item["subject"] for item in response.json()["messages"]]


async def verified_domain(account: Account, resolver: FixtureResolver, domain: str) -> None:
    created = await account.http.post("/api/v1/domains", json={"domain": domain})
    assert created.status_code == 201, created.text
    resolver.set_txt(domain, [created.json()["verification_token"]])
    verified = await account.http.post(f"/api/v1/domains/{domain}/verify")
    assert verified.status_code == 200, verified.text


async def first_account(running: RunningGateway, make_account: Any, email: str) -> Account:
    """An account created a second before any other (users are ordered by creation time)."""
    await running.gateway.storage.ensure_user("usr_first", email, "2020-01-01T00:00:00Z")
    account: Account = await make_account(email)
    return account


async def test_both_forms_reach_the_first_users_postmaster_inbox(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver
) -> None:
    other: Account = await make_account("other@example.com")
    operator = await first_account(running, make_account, "operator@example.com")
    await verified_domain(other, resolver, "corp.example")

    bare = await send(running, ["<postmaster>"], "bare")
    assert bare["rcpt"]["<postmaster>"][0] == 250
    assert bare["data"][0] == 250
    for address in (
        "PostMaster@Agents.Test",
        "postmaster@mx.agents.test",
        "postmaster@corp.example",
    ):
        sent = await send(running, [address], address)
        assert sent["rcpt"][address][0] == 250, sent
        assert sent["data"][0] == 250, sent
    both = await send(running, ["<postmaster>", "postmaster@agents.test"], "both forms at once")
    assert both["data"][0] == 250

    assert await subjects(operator, INBOX) == [
        "bare",
        "PostMaster@Agents.Test",
        "postmaster@mx.agents.test",
        "postmaster@corp.example",
        "both forms at once",  # one copy for one inbox
    ]
    inbox = (await operator.http.get(agent_path(INBOX))).json()
    assert inbox["agent_mode"] == "local"
    # The inbox is the first user's: the others do not see it.
    assert (await other.http.get(agent_path(INBOX))).status_code == 404


async def test_abuse_on_every_served_domain_reaches_the_postmaster_inbox(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver
) -> None:
    """Complaints about an agent's mail go to abuse@ (RFC 2142), a name no agent may take:
    on every domain the gateway serves it reaches the operator as postmaster mail does;
    abuse@ elsewhere is still relay-denied."""
    operator = await first_account(running, make_account, "operator@example.com")
    await verified_domain(operator, resolver, "corp.example")
    for address in ("abuse@agents.test", "Abuse@Corp.Example", "abuse@mx.agents.test"):
        sent = await send(running, [address], address)
        assert sent["rcpt"][address][0] == 250, sent
        assert sent["data"][0] == 250, sent
    assert await subjects(operator, INBOX) == [
        "abuse@agents.test",
        "Abuse@Corp.Example",
        "abuse@mx.agents.test",
    ]
    refused = await send(running, ["abuse@unknown.example"], "relay")
    assert refused["rcpt"]["abuse@unknown.example"][0] == 550


async def test_the_postmaster_inbox_leaves_the_operators_one_agent_the_default_sender(
    running: RunningGateway, make_account: Any
) -> None:
    """The postmaster inbox the first mail to postmaster makes in the operator's account is no
    agent of theirs to send from: a send naming no `from` still comes from their one agent."""
    operator = await first_account(running, make_account, "operator@example.com")
    created = await operator.http.post(
        "/api/v1/agents", json={"slug": "desk", "agent_mode": "local"}
    )
    assert created.status_code == 201, created.text
    held = await operator.http.put(
        agent_path("desk@agents.test"), json={"hitl_enabled": True, "hitl_ttl_seconds": 3600}
    )
    assert held.status_code == 200, held.text
    assert (await send(running, ["postmaster@agents.test"], "a report"))["data"][0] == 250
    assert await subjects(operator, INBOX) == ["a report"]

    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    sent = await operator.http.post("/api/v1/send", json=body)
    assert sent.status_code == 202, sent.text
    (pending,) = (await operator.http.get("/api/v1/messages")).json()["messages"]
    assert pending["agent_id"] == "desk@agents.test"


async def test_postmaster_of_a_foreign_domain_is_relay_denied(
    running: RunningGateway, make_account: Any
) -> None:
    await make_account("operator@example.com")
    refused = await send(running, ["postmaster@unknown.example"], "relay")
    code, text = refused["rcpt"]["postmaster@unknown.example"]
    assert (code, text.split()[0]) == (550, "5.7.1")
    assert refused["data"] is None


async def test_an_agent_at_the_address_gets_its_own_postmaster_mail(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver
) -> None:
    operator = await first_account(running, make_account, "operator@example.com")
    owner: Account = await make_account("owner@example.com")
    await verified_domain(owner, resolver, "corp.example")
    registered = await owner.http.post(
        "/api/v1/agents", json={"email": "postmaster@corp.example", "agent_mode": "local"}
    )
    assert registered.status_code == 201, registered.text

    assert (await send(running, ["postmaster@corp.example"], "for corp"))["data"][0] == 250
    assert await subjects(owner, "postmaster@corp.example") == ["for corp"]
    assert (await operator.http.get(agent_path(INBOX))).status_code == 404  # never created


async def test_deliver_to_names_the_agent_and_a_missing_one_falls_back_to_the_inbox(
    tmp_path: Path, resolver: FixtureResolver, nursery: trio.Nursery
) -> None:
    settings = make_settings(tmp_path, postmaster={"deliver_to": "Ops@Agents.Test"})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    gateway, url = running.gateway, running.addresses.http_url
    operator = await open_account(gateway, url, "operator@example.com")
    async with operator.http:
        assert (await send(running, ["<postmaster>"], "before ops exists"))["data"][0] == 250
        ops = await create_agent(operator, "ops")
        assert (await send(running, ["<postmaster>"], "for ops"))["data"][0] == 250

        assert await subjects(operator, ops) == ["for ops"]
        assert await subjects(operator, INBOX) == ["before ops exists"]


def test_deliver_to_must_be_an_address(tmp_path: Path) -> None:
    config = tmp_path / "e2a.toml"
    config.write_text('[postmaster]\ndeliver_to = "not an address"\n')
    with pytest.raises(ConfigError, match=r"postmaster\.deliver_to"):
        load_settings(config, environ={})


async def test_before_any_user_exists_postmaster_mail_is_deferred_not_refused(
    tmp_path: Path, resolver: FixtureResolver, nursery: trio.Nursery
) -> None:
    running: RunningGateway = await nursery.start(
        partial(run_gateway, make_settings(tmp_path), resolver=resolver)
    )
    early = await send(running, ["<postmaster>"], "too early")
    assert early["rcpt"]["<postmaster>"][0] == 250
    code, text = early["data"]
    assert (code, text.decode().split()[0]) == (451, "4.3.0")

    gateway = running.gateway
    user, _, _ = await bootstrap_user(gateway.storage, gateway.server_key, "first@example.com")
    assert (await send(running, ["<postmaster>"], "retried"))["data"][0] == 250
    page = await gateway.storage.list_inbound(user.id, INBOX, "all", 10, None)
    assert [stored.subject for stored in page.messages] == ["retried"]


@pytest.mark.parametrize("hostname", ["mailhost", "MX.Agents.Test."])
async def test_postmaster_at_a_host_name_of_one_label_or_with_a_root_dot_is_delivered(
    tmp_path: Path, nursery: trio.Nursery, hostname: str
) -> None:
    """A test machine's host name (`socket.getfqdn()` may say `localhost`), or one written with
    the root's dot: postmaster there is accepted and delivered, not deferred at DATA."""
    settings = make_settings(tmp_path, smtp={"listen": "127.0.0.1:0", "hostname": hostname})
    assert settings.smtp.hostname == hostname.removesuffix(".")
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    await bootstrap_user(running.gateway.storage, running.gateway.server_key, "op@example.com")
    recipients = ["<postmaster>", f"postmaster@{hostname.removesuffix('.').lower()}"]
    for recipient in recipients:
        sent = await send(running, [recipient], recipient)
        assert sent["rcpt"][recipient][0] == 250, sent
        assert sent["data"] is not None and sent["data"][0] == 250, sent
    stored = query(
        settings.database.url,
        "SELECT subject FROM messages_with_content WHERE agent_email = ? ORDER BY seq",
        (INBOX,),
    )
    assert [row[0] for row in stored] == recipients


async def test_bare_postmaster_is_delivered_on_a_host_name_that_is_no_dns_name(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A host name with an underscore (as containers and hosts are sometimes named) is no
    domain name, but `RCPT TO:<postmaster>` names the postmaster there all the same: accepted
    and delivered (RFC 5321 section 4.5.1), never relay-denied."""
    settings = make_settings(tmp_path, smtp={"listen": "127.0.0.1:0", "hostname": "mail_1.local"})
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    await bootstrap_user(running.gateway.storage, running.gateway.server_key, "op@example.com")
    sent = await send(running, ["<postmaster>"], "bare")
    assert sent["rcpt"]["<postmaster>"][0] == 250, sent
    assert sent["data"] is not None and sent["data"][0] == 250, sent
    stored = query(
        settings.database.url,
        "SELECT subject FROM messages_with_content WHERE agent_email = ? ORDER BY seq",
        (INBOX,),
    )
    assert [row[0] for row in stored] == ["bare"]
