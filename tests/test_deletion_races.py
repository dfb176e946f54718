"""What races the deletion of an agent (for good, or to the trash) from outside: mail
arriving over real SMTP. Each message is refused (550 5.1.1 once the agent is gone, or a
4xx the sender retries, and its retry then hears 550) or stored, and then goes with its
agent or stays in the trash with it; a message acknowledged with 250 is never missing while
its agent is there, and no message row outlives its agent's."""

from __future__ import annotations

import smtplib
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import quote

import pytest
import trio

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.databases import query
from tests.delivery_support import SENDER, create_agent, mail

ROUNDS = 4
SENDERS = 6
"""SMTP clients a round, each a little later than the one before, across the deletion."""
MakeAccount = Callable[[str], Awaitable[Account]]


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
