"""Nothing secret reaches the logs through `/v1`: a gateway run at DEBUG (every logger) through
`/v1` webhooks (a token in the URL's query, a receiver answering 500 with a secret, another
that cannot be reached), a rotated webhook secret, a new API key, a template, inbound mail
with an attachment fetched by its download link, a reply and a forward, a held send approved
through `/v1/reviews`, a managed-unsubscribe link followed and a forged one, and a `/v1`
WebSocket refused its `?token=`, never logs one of those secrets or any of that content."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from trio_websocket import HandshakeError, open_websocket_url

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, smtp_send, wait_until
from tests.http_receiver import Answer, HttpReceiver
from tests.relay_support import Sink, free_port, relay_port, sink
from tests.test_dkim_signing import write_rsa_key
from tests.test_log_scrubbing import SERVER_KEY, marker, rendered, with_attachment
from tests.test_v1_messages import hitl_on

__all__ = ["relay_port", "sink"]  # fixtures

CLIENT_LOGGERS = ("httpx", "httpcore", "mail.log", "trio-websocket")
"""The test's own HTTP, SMTP-sink and WebSocket clients log what they send and receive."""


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:
    """A known server key, debug logging, a relay, a DKIM key and a public URL (managed
    unsubscribe links need the last two)."""
    write_rsa_key(tmp_path / "dkim.pem")
    return make_settings(
        tmp_path,
        signing={"hmac_secret": SERVER_KEY},
        log={"level": "debug"},
        webhooks={"allow_private": True},
        http={"listen": "127.0.0.1:0", "public_url": "https://mail.example.com"},
        outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"},
        dkim={"selector": "e2a", "private_key_path": str(tmp_path / "dkim.pem")},
    )


def messages(agent: str, suffix: str = "") -> str:
    """The `/v1` path of `agent`'s messages."""
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


async def test_v1_secrets_and_content_never_reach_the_logs(
    running: RunningGateway,
    make_account: Any,
    nursery: trio.Nursery,
    sink: Sink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="e2a")
    private = {
        name: marker(name)
        for name in (
            "hook-query",
            "hook-answer",
            "dead-hook-query",
            "subject",
            "body",
            "attachment-name",
            "attachment-text",
            "template-text",
            "reply-text",
            "forward-text",
            "held-subject",
            "held-text",
            "ws-wrong-token",
            "forged-link",
        )
    }
    answers = iter([Answer(500, body=private["hook-answer"].encode())])
    receiver = HttpReceiver(lambda _: next(answers, Answer(200)))
    await nursery.start(receiver.serve)
    alice: Account = await make_account("alice@example.com")
    private["api-key"] = alice.key
    bot, held = await create_agent(alice, "bot"), await create_agent(alice, "held")
    await hitl_on(alice, held)
    http = alice.http

    hook = {"url": f"{receiver.url}?s={private['hook-query']}", "events": ["email.received"]}
    made = await http.post("/v1/webhooks", json=hook)
    assert made.status_code == 201, made.text
    private["webhook-secret"] = made.json()["signing_secret"]
    dead = f"http://127.0.0.1:{free_port()}/hook?s={private['dead-hook-query']}"
    made_dead = await http.post("/v1/webhooks", json={"url": dead, "events": ["email.received"]})
    assert made_dead.status_code == 201, made_dead.text
    rotated = await http.post(f"/v1/webhooks/{made.json()['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    private["rotated-secret"] = rotated.json()["signing_secret"]
    key = await http.post("/v1/account/api-keys", json={"name": "second"})
    assert key.status_code == 201, key.text
    private["second-key"] = key.json()["key"]
    template = {"name": "t", "subject": "s", "text": private["template-text"]}
    assert (await http.post("/v1/templates", json=template)).status_code == 201

    data = with_attachment(
        private["subject"],
        f"The secret word is {private['body']}.",
        f"{private['attachment-name']}.txt",
        private["attachment-text"],
    )
    await smtp_send(running.addresses.smtp_port, [bot], data)

    async def received() -> list[dict[str, Any]]:
        return (await http.get(messages(bot))).json().get("items") or []

    await wait_until(received)
    (message,) = await received()
    shown = await http.get(messages(bot, f"/{message['id']}/attachments/0"))
    link = shown.json()["download_url"].partition("/v1/attachments/")[2]
    private["download-link"] = link
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as anonymous:
        assert (await anonymous.get(f"/v1/attachments/{link}")).status_code == 200
        assert (await anonymous.get(f"/u/u1_{private['forged-link']}")).status_code == 404

    reply = {"text": private["reply-text"]}
    assert (await http.post(messages(bot, f"/{message['id']}/reply"), json=reply)).is_success
    forward = {"to": ["fwd@example.net"], "text": private["forward-text"]}
    assert (await http.post(messages(bot, f"/{message['id']}/forward"), json=forward)).is_success
    managed = {
        "to": ["carol@example.org"],
        "subject": "Hi",
        "text": "Hello",
        "unsubscribe": {"mode": "managed"},
    }
    assert (await http.post(messages(bot), json=managed)).is_success
    hold = {"to": ["dave@example.org"], "subject": private["held-subject"]}
    sent = await http.post(messages(held), json=hold | {"text": private["held-text"]})
    assert sent.status_code == 202, sent.text
    approved = await http.post(f"/v1/reviews/{sent.json()['message_id']}/approve", json={})
    assert approved.status_code == 202, approved.text

    await wait_until(lambda: len(sink.received) >= 4, seconds=30)
    (unsubscribe,) = {
        found.group(1).decode()
        for _, _, raw in sink.received
        if (found := re.search(rb"/u/(u1_[A-Za-z0-9_-]+)", raw))
    }
    private["unsubscribe-link"] = unsubscribe
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as provider:
        assert (await provider.get(f"/u/{unsubscribe}")).status_code == 200
        one_click = {"List-Unsubscribe": "One-Click"}
        assert (await provider.post(f"/u/{unsubscribe}", data=one_click)).status_code == 200

    socket = running.addresses.http_url.replace("http://", "ws://") + messages(bot)
    wrong = socket.removesuffix("/messages") + f"/ws?token={private['ws-wrong-token']}"
    with pytest.raises(HandshakeError):
        async with open_websocket_url(wrong, connect_timeout=5):
            pass

    def attempted() -> bool:  # the 500 and the refused connection are each logged
        lines = [r.getMessage() for r in caplog.records if r.name == "e2a.webhooks.v1"]
        return sum("-> pending" in line for line in lines) >= 2

    await wait_until(attempted, seconds=30)

    gateways = [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    logged = rendered(gateways)
    assert "SMTP session" in logged and "webhook delivery" in logged, logged  # logged at all
    leaked = {name: value for name, value in private.items() if value in logged}
    assert not leaked, "\n".join(
        f"{name}: {line}"
        for name, value in leaked.items()
        for line in logged.splitlines()
        if value in line
    )
    assert SERVER_KEY not in logged
