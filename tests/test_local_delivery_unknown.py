"""Mail an agent sends to the address of an agent in the trash (trashed since the send), or to
an address on the shared domain where no agent ever was, is refused by the send worker as the
SMTP listener would refuse it: never handed to the relay, which would only bring it back here
as a bounce (and the bounce would suppress the address for the sender's account, so mail to the
agent restored from the trash would be refused). Other addresses on a custom domain still go to
the relay: its MX may deliver them elsewhere. Over a real gateway, database and loopback
relay."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import QuietGateway, create_agent, open_account, quiet_gateway
from tests.relay_support import Sink, relay_port, sink

__all__ = ["relay_port", "sink"]  # fixtures


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver({})


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none", "timeout_seconds": 10}
    return make_settings(tmp_path, outbound_smtp=relay)


@pytest.fixture
async def quiet(settings: Settings, resolver: FixtureResolver) -> AsyncIterator[QuietGateway]:
    async with quiet_gateway(settings, resolver) as opened:
        yield opened


async def account(quiet: QuietGateway, email: str) -> Account:
    return await open_account(quiet.gateway, quiet.http_url, email)


async def send(account: Account, sender: str, to: list[str]) -> str:
    sent = await account.http.post(
        f"/v1/agents/{quote(sender, safe='')}/messages",
        json={"to": to, "subject": "Hello", "text": "Hi."},
    )
    assert sent.status_code == 202, sent.text
    return str(sent.json()["message_id"])


async def test_mail_to_an_agent_trashed_since_the_send_is_refused_not_relayed(
    quiet: QuietGateway, sink: Sink
) -> None:
    alice = await account(quiet, "alice@example.com")
    bob = await account(quiet, "bob@example.net")
    async with alice.http, bob.http:
        writer = await create_agent(alice, "writer")
        reader = await create_agent(bob, "reader")
        sent = await send(alice, writer, [reader, "carol@example.org"])
        trashed = await bob.http.delete(f"/v1/agents/{reader}", params={"confirm": "DELETE"})
        assert trashed.status_code == 200, trashed.text

        assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
        assert [rcpts for _, rcpts, _ in sink.received] == [["carol@example.org"]]
        view = (await alice.http.get(f"/api/v1/messages/{sent}")).json()
        assert view["status"] == "sent", view  # carol got it
        assert view["error"].startswith(f"{reader}: refused: ")
        assert "no agent" in view["error"] and "outbound_smtp" not in view["error"]

        # Nothing suppresses the address: once restored, the agent is reached again.
        restored = await bob.http.post(f"/v1/agents/{reader}/restore")
        assert restored.status_code == 200, restored.text
        again = await send(alice, writer, [reader])
        assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
        view = (await alice.http.get(f"/api/v1/messages/{again}")).json()
        assert view["status"] == "sent" and "error" not in view, view
        assert len(sink.received) == 1


async def test_mail_to_an_address_no_agent_ever_had_here_fails_saying_so(
    quiet: QuietGateway, sink: Sink
) -> None:
    alice = await account(quiet, "alice@example.com")
    async with alice.http:
        writer = await create_agent(alice, "writer")
        sent = await send(alice, writer, ["nobody@agents.test"])
        assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
        assert sink.received == []
        view = (await alice.http.get(f"/api/v1/messages/{sent}")).json()
        assert view["status"] == "failed", view
        assert view["error"] == (
            "nobody@agents.test: refused: no agent at nobody@agents.test on this gateway "
            "(deleted, in the trash, or never registered)"
        )


async def test_postmaster_here_is_delivered_not_refused(quiet: QuietGateway, sink: Sink) -> None:
    alice = await account(quiet, "alice@example.com")
    async with alice.http:
        writer = await create_agent(alice, "writer")
        sent = await send(alice, writer, ["postmaster@agents.test"])
        assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
        assert sink.received == []  # the postmaster inbox is here (test_local_delivery_postmaster)
        view = (await alice.http.get(f"/api/v1/messages/{sent}")).json()
        assert view["status"] == "sent" and "error" not in view, view


async def test_a_custom_domain_refuses_only_its_trashed_agents(
    quiet: QuietGateway, sink: Sink
) -> None:
    alice = await account(quiet, "alice@example.com")
    bob = await account(quiet, "bob@example.net")
    async with alice.http, bob.http:
        writer = await create_agent(alice, "writer")
        registered = await bob.http.post("/v1/domains", json={"domain": "corp.example"})
        assert registered.status_code == 201, registered.text
        verified = await bob.http.post("/v1/domains/corp.example/verify")
        assert verified.json()["verified"] is True, verified.text
        made = await bob.http.post("/v1/agents", json={"email": "helper@corp.example"})
        assert made.status_code == 201, made.text
        trashed = await bob.http.delete(
            "/v1/agents/helper@corp.example", params={"confirm": "DELETE"}
        )
        assert trashed.status_code == 200, trashed.text

        sent = await send(alice, writer, ["helper@corp.example", "human@corp.example"])
        assert await OutboundWorker(quiet.gateway).deliver_due(time.time()) == 1
        assert [rcpts for _, rcpts, _ in sink.received] == [["human@corp.example"]]
        view = (await alice.http.get(f"/api/v1/messages/{sent}")).json()
        assert view["status"] == "sent", view
        assert view["error"] == (
            "helper@corp.example: refused: no agent at helper@corp.example on this gateway "
            "(deleted, in the trash, or never registered)"
        )
