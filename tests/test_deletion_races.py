"""What races the deletion of an agent (for good, or to the trash) from outside.

Mail arriving over real SMTP: each message is refused (550 5.1.1 once the agent is gone, or
a 4xx the sender retries, and its retry then hears 550) or stored, and then goes with its
agent or stays in the trash with it; a message acknowledged with 250 is never missing while
its agent is there, and no message row outlives its agent's.

A `wait_for_email` over `/mcp` waiting while its agent is deleted or its key revoked: it
ends within a poll or two with the error a request would get then, not at its timeout, and
hands out no mail once the deletion has answered. (The WebSocket's end is
tests/test_websocket.py's.)

A send waiting for its first hand-off (`?wait=sent` on `/v1`, `/api/v1/send`) while its agent
is deleted for good: it ends at once, its message gone with the agent, not at its 15 s."""

from __future__ import annotations

import smtplib
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.mcp.mail_tools import POLL_INTERVAL_SECONDS
from tests.conftest import Account
from tests.databases import query
from tests.delivery_support import SENDER, create_agent, mail, smtp_send
from tests.mcp_support import mcp_client
from tests.relay_support import StallingRelay, relay_on_loopback
from tests.test_approvals import relay_settings

ROUNDS = 4
SENDERS = 6
"""SMTP clients a round, each a little later than the one before, across the deletion."""
MakeAccount = Callable[[str], Awaitable[Account]]


@pytest.fixture
def relay() -> Iterator[StallingRelay]:
    """A relay that holds every hand-off at RCPT until the test ends."""
    relay = StallingRelay()
    yield relay
    relay.stalled.set()


@pytest.fixture
def settings(tmp_path: Path, relay: StallingRelay) -> Iterator[Settings]:
    """The running gateway hands its mail to `relay`, on 127.0.0.1."""
    with relay_on_loopback(relay) as port:
        yield relay_settings(tmp_path, port)


def send_one(port: int, recipient: str, delay: float) -> tuple[str, int, str]:
    """One SMTP transaction to `recipient`, waiting `delay` seconds between RCPT and DATA:
    the stage that ended it (`rcpt` or `data`), its reply code and text."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        client.mail(SENDER)
        code, text = client.rcpt(recipient)
        if code != 250:
            return "rcpt", code, text.decode()
        trio.from_thread.run(trio.sleep, delay)
        code, text = client.data(mail("During the deletion"))
        return "data", code, text.decode()


async def senders_and_deletion(
    running: RunningGateway, account: Account, agent: str, permanent: bool
) -> tuple[list[tuple[str, int, str]], int]:
    """SENDERS transactions to `agent` while it is deleted: their outcomes, and the
    deletion's status code."""
    port = running.addresses.smtp_port
    outcomes: list[tuple[str, int, str]] = []
    deleted: list[int] = []

    async def sender(index: int) -> None:
        await trio.sleep(index * 0.004)
        outcome = await trio.to_thread.run_sync(send_one, port, agent, index * 0.003)
        outcomes.append(outcome)

    async def delete() -> None:
        await trio.sleep(0.01)
        params = {"confirm": "DELETE", "permanent": str(permanent).lower()}
        answer = await account.http.delete(f"/v1/agents/{quote(agent, safe='')}", params=params)
        deleted.append(answer.status_code)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for index in range(SENDERS):
                nursery.start_soon(sender, index)
            nursery.start_soon(delete)
    return outcomes, deleted[0]


def orphans(database_url: str) -> list[tuple[str, str]]:
    """Messages (id, agent address) whose agent row is gone."""
    return [
        (str(row[0]), str(row[1]))
        for row in query(
            database_url,
            "SELECT m.id, m.agent_email FROM messages m "
            "LEFT JOIN agents a ON a.email = m.agent_email WHERE a.id IS NULL",
        )
    ]


@pytest.mark.parametrize("permanent", [True, False])
async def test_mail_arriving_while_its_agent_is_deleted_is_refused_or_goes_with_it(
    running: RunningGateway, make_account: MakeAccount, permanent: bool
) -> None:
    account = await make_account("owner@example.com")
    url = running.gateway.settings.database.url
    for round_ in range(ROUNDS):
        agent = await create_agent(account, f"leaving{round_}")
        outcomes, deleted = await senders_and_deletion(running, account, agent, permanent)
        assert deleted == 200
        accepted = []
        for stage, code, text in outcomes:
            if code == 250:
                assert stage == "data", (stage, code, text)
                accepted.append(text.rsplit(" ", 1)[-1])
            elif stage == "rcpt" and code == 550:
                assert text.startswith("5.1.1"), text
            else:
                assert 400 <= code < 500, (stage, code, text)
        stored = {
            str(row[0])
            for row in query(url, "SELECT id FROM messages WHERE agent_email = ?", (agent,))
        }
        if permanent:
            assert stored == set(), stored
        else:  # in the trash with its agent, every message its sender heard 250 for
            assert set(accepted) <= stored, (accepted, stored, outcomes)
        assert orphans(url) == []
        # the sender's retry of a refused message: the address is no more, 550 now
        retried = await trio.to_thread.run_sync(
            partial(send_one, running.addresses.smtp_port, agent, 0)
        )
        assert retried[:2] == ("rcpt", 550), retried


WAIT_SECONDS = 120
"""The timeout the waits ask for: far beyond what the test allows them."""
ENDED_WITHIN = POLL_INTERVAL_SECONDS + 3


async def end_access(
    running: RunningGateway, account: Account, agent: str, key_id: str, ending: str
) -> float:
    """End the MCP caller's access as `ending` says: its agent deleted for good or to the
    trash, or its key revoked; when that answered."""
    if ending == "revoke":
        answer = await account.http.delete(f"/api/v1/users/me/api-keys/{key_id}")
        assert answer.status_code == 204, answer.text
    else:
        params = {"confirm": "DELETE", "permanent": str(ending == "delete").lower()}
        answer = await account.http.delete(f"/v1/agents/{quote(agent, safe='')}", params=params)
        assert answer.status_code == 200, answer.text
    return trio.current_time()


@pytest.mark.parametrize("ending", ["delete", "trash", "revoke"])
async def test_a_wait_for_email_ends_promptly_when_its_agent_or_key_does(
    running: RunningGateway, make_account: MakeAccount, ending: str
) -> None:
    """Round 0 ends the access before the wait's first poll; round 1 between two polls, just
    after mail arrived (which the wait must not hand out then)."""
    account = await make_account("waiter@example.com")
    for round_ in range(2):
        agent = await create_agent(account, f"waiting{round_}")
        created = await account.http.post("/api/v1/users/me/api-keys", json={"name": "mcp"})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        ended: list[float] = []

        async def later(
            delay: float, mail_first: bool, agent: str, key_id: str, ended: list[float]
        ) -> None:
            await trio.sleep(delay)
            if mail_first:
                await smtp_send(running.addresses.smtp_port, [agent], mail("Last words"))
            ended.append(await end_access(running, account, agent, key_id, ending))

        async with mcp_client(running, key, agent=agent) as client:
            with trio.fail_after(ENDED_WITHIN + 5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        later, 0.3 + round_ * 0.7, bool(round_), agent, key_id, ended
                    )
                    result = await client.call_tool(
                        "wait_for_email", {"timeout_seconds": WAIT_SECONDS}
                    )
                    answered = trio.current_time()
        error = result.structured_content
        assert answered - ended[0] < ENDED_WITHIN, (answered - ended[0], error)
        assert result.is_error and error is not None, error
        assert error["status"] == (401 if ending == "revoke" else 404), error


@pytest.mark.parametrize("face", ["/v1", "/api/v1"])
async def test_a_send_waiting_for_its_hand_off_ends_when_its_agent_is_deleted(
    running: RunningGateway, make_account: MakeAccount, relay: StallingRelay, face: str
) -> None:
    account = await make_account("sender@example.com")
    agent = await create_agent(account, "sending")
    if face == "/v1":
        path = f"/v1/agents/{quote(agent, safe='')}/messages"
        body = {"to": ["bob@example.org"], "subject": "Hi", "text": "Hello"}
        params = {"wait": "sent"}
    else:
        path, params = "/api/v1/send", {}
        body = {"from": agent, "to": ["bob@example.org"], "subject": "Hi", "body": "Hello"}
    deleted_at: list[float] = []

    async def delete_once_handed_on() -> None:
        await trio.to_thread.run_sync(relay.rcpt_seen.wait, 10)
        params = {"confirm": "DELETE", "permanent": "true"}
        deleted = await account.http.delete(f"/v1/agents/{quote(agent, safe='')}", params=params)
        assert deleted.status_code == 200, deleted.text
        deleted_at.append(trio.current_time())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delete_once_handed_on)
            answer = await account.http.post(path, json=body, params=params, timeout=30)
            answered = trio.current_time()
    relay.stalled.set()  # the attempt under way ends, and the gateway stops without waiting
    assert answered - deleted_at[0] < 2, answered - deleted_at[0]
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["code"] == "not_found" and "deleted" in error["message"], error
