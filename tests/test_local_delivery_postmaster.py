"""An agent's mail to its own deployment's operator — postmaster or abuse at the shared domain
or at `smtp.hostname` — is delivered locally to the agent that takes postmaster mail, as the
SMTP listener delivers it: never handed to the relay, and delivered without one. The same
mailboxes at a user's verified domain are that user's, and go to the relay. Over a real
gateway, database and loopback relay."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, open_account, wait_until
from tests.relay_support import Sink, relay_port, sink
from tests.test_postmaster import first_account, verified_domain

__all__ = ["relay_port", "sink"]  # fixtures

INBOX = "postmaster@agents.test"


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


async def inbox(account: Account, agent: str) -> list[dict[str, Any]]:
    response = await account.http.get(agent_path(agent, "/messages?status=all"))
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


async def test_postmaster_and_abuse_reach_the_postmaster_inbox_not_the_relay(
    running: RunningGateway, make_account: Any, resolver: FixtureResolver, sink: Sink
) -> None:
    operator = await first_account(running, make_account, "operator@example.com")
    alice: Account = await make_account("alice@example.com")
    await verified_domain(alice, resolver, "corp.example")
    writer = await create_agent(alice, "writer")

    sent = await alice.http.post(
        "/api/v1/send",
        json={
            "from": writer,
            "to": ["postmaster@agents.test", "Abuse@Agents.Test"],
            "subject": "A complaint",
            "body": "Someone spams me.",
        },
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "sent" and sent.json()["method"] == "local", sent.text
    other = await alice.http.post(
        f"/v1/agents/{writer}/messages",
        json={
            "to": ["abuse@corp.example", "postmaster@mx.agents.test"],
            "subject": "Another",
            "text": "Hi.",
        },
    )
    assert other.status_code == 202, other.text

    async def both_arrived() -> bool:
        return len(await inbox(operator, INBOX)) == 2 and bool(sink.received)

    await wait_until(both_arrived)
    received = await inbox(operator, INBOX)
    # abuse@ a user's verified domain is that user's abuse desk, wherever its MX points
    assert [rcpts for _, rcpts, _ in sink.received] == [["abuse@corp.example"]]
    assert sorted(item["subject"] for item in received) == ["A complaint", "Another"]
    complaint = next(item for item in received if item["subject"] == "A complaint")
    assert complaint["from"] == writer
    full = await operator.http.get(agent_path(INBOX, f"/messages/{complaint['message_id']}"))
    claims = full.json()["auth_headers"]  # the gateway vouches for its own agent
    assert claims["X-E2A-Auth-Sender"] == writer
    assert claims["X-E2A-Auth-Entity-Type"] == "agent"
    assert claims["X-E2A-Auth-Verified"] == "true"
    view = (await alice.http.get(f"/api/v1/messages/{sent.json()['message_id']}")).json()
    assert view["status"] == "sent" and "error" not in view, view
    assert view["method"] == "local", view
    view = (await alice.http.get(f"/api/v1/messages/{other.json()['message_id']}")).json()
    assert view["method"] == "smtp", view  # partly relayed


async def test_without_a_relay_mail_to_abuse_is_delivered_to_deliver_to(
    tmp_path: Path, resolver: FixtureResolver, nursery: trio.Nursery
) -> None:
    settings = make_settings(tmp_path, postmaster={"deliver_to": "ops@agents.test"})
    running: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    gateway, url = running.gateway, running.addresses.http_url
    operator = await open_account(gateway, url, "operator@example.com")
    async with operator.http:
        ops = await create_agent(operator, "ops")
        writer = await create_agent(operator, "writer")
        sent = await operator.http.post(
            "/api/v1/send",
            json={"from": writer, "to": ["abuse@agents.test"], "subject": "Spam", "body": "!"},
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["status"] == "sent", sent.text
        assert [item["subject"] for item in await inbox(operator, ops)] == ["Spam"]
        assert (await operator.http.get(agent_path(INBOX))).status_code == 404  # not made
