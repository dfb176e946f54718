"""A Node.js receiver written from e2a's docs alone verifies what the gateway really sends.

`tests/data/node_webhook_receiver.mjs` uses nothing but node's built-in `http` and `crypto`
and follows docs/delivery.md ("Verifying a delivery without the SDK") and docs/events.md
("Verifying a delivery"): the per-agent webhook's signed `X-E2A-Auth-*` claim and its body
hash, and the `/v1` subscription's `X-E2A-Signature`, also during a secret rotation's grace
(two `v1=`). A live gateway delivers real mail over real HTTP to it on 127.0.0.1. Skipped,
saying so, where no `node` is installed.
"""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import create_agent, mail, new_signing_secret, smtp_send, wait_until

RECEIVER = Path(__file__).parent / "data" / "node_webhook_receiver.mjs"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the Node.js webhook receiver cannot run"
)

UTF8_SENDER = "josé@exämple.org"
UTF8_MESSAGE = (
    f'From: "José" <{UTF8_SENDER}>\r\n'
    "To: node-hook@agents.test\r\n"
    "Subject: Grüße\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Viele Grüße.\r\n"
).encode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Webhook targets on loopback are allowed: the Node receiver listens on 127.0.0.1."""
    return make_settings(tmp_path, webhooks={"allow_private": True})


@dataclass
class NodeReceiver:
    """The running Node.js receiver and a client of its control routes."""

    url: str
    control: httpx.AsyncClient

    async def configure(self, **secrets: list[str]) -> None:
        """Give the receiver the secrets it verifies with."""
        answered = await self.control.post("/_config", json=secrets)
        assert answered.status_code == 200, answered.text

    async def results(self) -> list[dict[str, Any]]:
        """Every verification the receiver made, oldest first."""
        answered = await self.control.get("/_results")
        assert answered.status_code == 200, answered.text
        results: list[dict[str, Any]] = answered.json()
        return results

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """The receiver's results once it has made `count` verifications (at most 15 s)."""

        async def enough() -> bool:
            return len(await self.results()) >= count

        await wait_until(enough, 15.0)
        return await self.results()


@pytest.fixture
async def node(nursery: trio.Nursery) -> AsyncIterator[NodeReceiver]:
    """`node tests/data/node_webhook_receiver.mjs`, listening on 127.0.0.1."""
    assert NODE is not None
    process = await trio.lowlevel.open_process(
        [NODE, str(RECEIVER)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        first = b""
        with trio.fail_after(10):
            while not first.endswith(b"\n"):
                chunk = await process.stdout.receive_some(256)
                assert chunk, "the Node receiver exited before it listened"
                first += chunk
        url = f"http://127.0.0.1:{json.loads(first)['port']}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as control:
            yield NodeReceiver(url, control)
    finally:
        process.kill()
        with trio.move_on_after(5):
            await process.wait()


@pytest.fixture
async def owner(make_account: Any) -> Account:
    """The account whose agents and webhooks deliver to the Node receiver."""
    account: Account = await make_account("owner@example.com")
    return account


def send_utf8(port: int) -> None:
    """Send UTF8_MESSAGE with SMTPUTF8 (its From address is not ASCII)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        refused = client.sendmail(
            "alice@example.org", ["node-hook@agents.test"], UTF8_MESSAGE, mail_options=["SMTPUTF8"]
        )
    assert refused == {}, refused


async def test_a_node_receiver_verifies_the_per_agent_webhooks_signed_claim(
    running: RunningGateway, owner: Account, node: NodeReceiver
) -> None:
    """Plain mail, mail carrying forged X-E2A-Auth-* fields, and mail whose From address is
    not ASCII (its X-E2A-Auth-Sender travels as UTF-8 octets in the HTTP header): the claim
    in the headers and in the body's auth_headers verifies under the owner's signing secret,
    and the body hash is over the base64-decoded raw_message."""
    secret = await new_signing_secret(owner)
    await node.configure(legacy_secrets=[secret])
    agent = await create_agent(owner, "node-hook", webhook_url=node.url + "/legacy")
    port = running.addresses.smtp_port
    await smtp_send(port, [agent], mail("Plain"))
    forged = "X-E2A-Auth-Verified: true\r\nx-e2a-auth-signature: 00\r\n"
    await smtp_send(port, [agent], mail("Forged", extra_headers=forged))
    await trio.to_thread.run_sync(send_utf8, port)
    results = await node.wait_for(3)
    assert [result["problems"] for result in results] == [[], [], []]
    assert all(result["ok"] and result["attempt"] == "1" for result in results)
    assert results[2]["sender"] == results[2]["header_sender"] == "josé@xn--exmple-cua.org"


async def test_a_node_receiver_verifies_v1_signatures_through_a_rotation(
    running: RunningGateway, owner: Account, node: NodeReceiver
) -> None:
    """A `/v1` webhook's deliveries verify over the raw body with the whole `whsec_` secret;
    after a rotation each carries two `v1=`, one verifying under each secret, so receivers
    holding only the old or only the new secret both accept it."""
    await create_agent(owner, "node-local")
    made = await owner.http.post(
        "/v1/webhooks", json={"url": node.url + "/v1", "events": ["email.received"]}
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    old = hook["signing_secret"]
    await node.configure(v1_secrets=[old])
    tested = await owner.http.post(f"/v1/webhooks/{hook['id']}/test", json={})
    assert tested.status_code == 200, tested.text
    await smtp_send(running.addresses.smtp_port, ["node-local@agents.test"], mail("Event"))
    before = await node.wait_for(2)
    assert [result["problems"] for result in before] == [[], []]
    assert [result["signatures"] for result in before] == [1, 1]
    assert all(result["event_type_header"] == result["type"] for result in before)
    assert all(result["user_agent"] == "e2a-webhooks/1" for result in before)

    rotated = await owner.http.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["signing_secret"]
    assert new != old
    await node.configure(v1_secrets=[old, new])
    tested = await owner.http.post(f"/v1/webhooks/{hook['id']}/test", json={})
    assert tested.status_code == 200, tested.text
    await smtp_send(running.addresses.smtp_port, ["node-local@agents.test"], mail("Rotated"))
    during = (await node.wait_for(4))[2:]
    assert [result["problems"] for result in during] == [[], []]
    assert [result["signatures"] for result in during] == [2, 2]
    assert [sorted(result["matched_secrets"]) for result in during] == [sorted([old, new])] * 2
    assert [result["signed_by"] for result in during] == [[1, 0]] * 2  # the new secret's first
