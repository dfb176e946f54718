# ruff: noqa: F811 (the fixtures imported from tests.cli_support are this module's parameters)
"""`e2a listen --forward …/v1/responses`, the autoresponder, against a live gateway and a
local HTTP server standing in for the model: what it must not answer, and how it survives a
model or a reply that fails."""

from __future__ import annotations

import httpx
import pytest

from e2a_gateway.operations import sending
from tests.cli_support import (  # noqa: F401 (fixtures)
    DOMAIN,
    Account,
    Cli,
    FakeTarget,
    LiveGateway,
    account,
    cli,
    home,
    live,
    target,
    unread,
    wait_until,
)


def local_agents(cli: Cli, account: Account, *names: str) -> list[str]:
    """Register local-mode agents `<prefix>-<name>@DOMAIN`; their addresses."""
    addresses = [f"{account.prefix}-{name}@{DOMAIN}" for name in names]
    for address in addresses:
        assert cli("agents", "register", address.split("@")[0], "--mode", "local")[0] == 0
    return addresses


def send(cli: Cli, sender: str, recipient: str, subject: str, body: str = "Hello?") -> None:
    """One message between agents of the gateway (delivered locally)."""
    sent = cli.json(
        "send", "--agent", sender, "--to", recipient, "--subject", subject, "--body", body
    )
    assert sent["method"] == "local"


def replies_to(cli: Cli, human: str) -> list[str]:
    """The text of each unread message of `human` (the autoresponder's replies)."""
    found = cli.json("inbox", "--agent", human)
    return [cli.json("read", m["message_id"], "--agent", human)["text_body"].strip() for m in found]


def test_a_refused_reply_is_reported_and_listening_goes_on(
    live: LiveGateway, account: Account, cli: Cli, target: FakeTarget
) -> None:
    """The gateway refuses one reply (its recipient is suppressed): that is said on stderr,
    the next message is still answered, and the exit code tells a hand-off was missed."""
    bot, blocked, human = local_agents(cli, account, "rbot", "rblocked", "rhuman")
    response = httpx.post(
        f"{live.url}/v1/agents/{bot}/suppressions",
        headers={"Authorization": f"Bearer {account.key}"},
        json={"address": blocked},
    )
    assert response.status_code in (200, 201), response.text
    send(cli, blocked, bot, "First")
    wait_until(lambda: unread(live, account.key, bot) == 1)
    send(cli, human, bot, "Second")
    wait_until(lambda: unread(live, account.key, bot) == 2)

    code, out, err = cli("listen", "--agent", bot, "--max", "2", "--forward", target.url())
    assert code == 1, err
    assert "First" in out and "Second" in out
    assert "reply to" in err and "422" in err and "e2a: " not in err
    assert len(target.requests) == 2
    wait_until(lambda: unread(live, account.key, human) == 1)
    assert replies_to(cli, human) == ["Model says hi."]


def test_a_reply_over_the_send_limit_waits_and_is_sent(
    live: LiveGateway,
    account: Account,
    cli: Cli,
    target: FakeTarget,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More mail than the agent may answer per minute: the reply waits as the gateway's 429
    asks, then goes, instead of being lost (the message was already marked read)."""
    bot, human = local_agents(cli, account, "lbot", "lhuman")
    send(cli, human, bot, "One")
    send(cli, human, bot, "Two")
    wait_until(lambda: unread(live, account.key, bot) == 2)
    with monkeypatch.context() as patch:
        patch.setattr(sending, "SEND_RATE_WINDOW_SECONDS", 2)
        patch.setattr(live.running.gateway.settings.limits, "sends_per_agent_per_minute", 1)
        code, _, err = cli("listen", "--agent", bot, "--max", "2", "--forward", target.url())
    assert code == 0, err
    assert "waiting" in err
    wait_until(lambda: unread(live, account.key, human) == 2)
    assert replies_to(cli, human) == ["Model says hi."] * 2
