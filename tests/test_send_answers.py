"""What `/api/v1/send` and replies answer the published e2a SDK (2.2.0) when the relay is slow,
dead or refusing: accepted mail is `sent` to a 2.x client (no exception, so no second copy from
a retry), its real progress is on the message, and a refusal is an HTTP error it can read.

The relay is an aiosmtpd server on 127.0.0.1 that holds its answer to DATA until the test lets
it go, refuses chosen recipients, or is not started at all (nothing listening).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.operations.sending import SEND_WAIT_SECONDS
from e2a_gateway.workers.outbound import OutboundWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import accept, create_agent, mail, queued_jobs, wait_until
from tests.test_sdk_compat import run_sdk, sdk_python  # noqa: F401  (sdk_python is a fixture)

pytestmark = pytest.mark.slow

HOLD_SECONDS = 30.0
"""The longest the relay holds its answer to DATA."""
RELAY_TIMEOUT_SECONDS = 60
"""The gateway's `outbound_smtp.timeout_seconds`: longer than any hold."""

SEND_AND_REPLY = """
import json, sys, time
import e2a
from e2a.v1 import E2AClient
from e2a.v1.api import E2AApiError

request = json.load(sys.stdin)
client = E2AClient(api_key=request["key"], agent_email=request["agent"], base_url=request["url"])
results = []
for call in request["calls"]:
    started = time.monotonic()
    try:
        if call["kind"] == "send":
            result = client.send(call["to"], call["subject"], call["body"])
        else:
            result = client.reply(call["message_id"], call["body"])
    except E2AApiError as exc:
        results.append({"raised": exc.status_code, "text": exc.message})
        continue
    results.append({
        "status": result.status,
        "message_id": result.message_id,
        "method": result.method,
        "seconds": time.monotonic() - started,
    })
print(json.dumps({"sdk": e2a.__file__, "results": results}))
"""


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Relay:
    """A relay on 127.0.0.1:`port`, once started: it accepts every recipient but `refused`,
    and answers DATA only when `released` is set (or after HOLD_SECONDS)."""

    port: int = field(default_factory=free_port)
    released: threading.Event = field(default_factory=threading.Event)
    refused: set[str] = field(default_factory=set)
    received: list[tuple[list[str], bytes]] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.get_running_loop().run_in_executor(None, self.released.wait, HOLD_SECONDS)
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def copies_of(self, email_message_id: str) -> int:
        """How many times the message with this Message-ID was accepted."""
        header = f"Message-ID: {email_message_id}".encode()
        return sum(1 for _, raw in self.received if header in raw)


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A relay the test starts when it wants one listening."""
    relay = Relay()
    yield relay
    relay.released.set()
    if relay.controller is not None:
        relay.controller.stop()


@pytest.fixture
def settings(tmp_path: Path, relay: Relay) -> Settings:
    """The running gateway hands remote mail to `relay`."""
    return make_settings(
        tmp_path,
        outbound_smtp={
            "host": "127.0.0.1",
            "port": relay.port,
            "tls": "none",
            "timeout_seconds": RELAY_TIMEOUT_SECONDS,
        },
    )


@dataclass
class Sender:
    """An account, its local agent, and the request the SDK script runs with."""

    account: Account
    agent: str
    url: str

    async def sdk(self, python: Path, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        request = {"key": self.account.key, "agent": self.agent, "url": self.url, "calls": calls}
        answer = await run_sdk(python, SEND_AND_REPLY, request)
        results: list[dict[str, Any]] = answer["results"]
        return results

    async def message(self, message_id: str) -> dict[str, Any]:
        """The outbound message as `GET /api/v1/messages/{id}` shows it."""
        response = await self.account.http.get(f"/api/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view


@pytest.fixture
async def sender(running: RunningGateway, make_account: Any) -> Sender:
    account: Account = await make_account("owner@example.com")
    agent = await create_agent(account, "bot")
    return Sender(account, agent, running.addresses.http_url)


def send(subject: str, to: str = "dave@example.org") -> dict[str, Any]:
    return {"kind": "send", "to": [to], "subject": subject, "body": "Hello."}


async def test_a_slow_relay_answers_sent_and_delivers_each_message_once(
    running: RunningGateway,
    relay: Relay,
    sender: Sender,
    sdk_python: Path,  # noqa: F811
) -> None:
    relay.start()  # listening, but holding every answer to DATA until released
    question = await accept(running.gateway, [sender.agent], mail("Question"))
    reply = {"kind": "reply", "message_id": question, "body": "Answer."}

    results = await sender.sdk(sdk_python, [send("Slow"), reply])

    assert [r.get("status") for r in results] == ["sent", "sent"], results
    assert all(r["method"] == "smtp" for r in results)
    assert all(r["seconds"] >= SEND_WAIT_SECONDS - 0.5 for r in results)  # it did wait
    ids = [r["message_id"] for r in results]
    views = [await sender.message(message_id) for message_id in ids]
    assert [v["status"] for v in views] == ["queued", "queued"]  # the relay has not answered
    assert views[1]["to"] == ["alice@example.org"] and "error" not in views[1]

    relay.released.set()

    async def all_sent() -> bool:
        return [(await sender.message(i))["status"] for i in ids] == ["sent", "sent"]

    await wait_until(all_sent, seconds=HOLD_SECONDS)
    views = [await sender.message(message_id) for message_id in ids]
    assert all(v["sent_at"] for v in views)
    assert [relay.copies_of(v["email_message_id"]) for v in views] == [1, 1]
    assert len(relay.received) == 2
    assert (await queued_jobs(running.gateway.storage)).get("outbound", 0) == 0


async def test_a_dead_relay_answers_sent_shows_the_failure_and_delivers_once_it_answers(
    running: RunningGateway,
    relay: Relay,
    sender: Sender,
    sdk_python: Path,  # noqa: F811
) -> None:
    relay.released.set()  # nothing listens yet; once started, the relay answers at once

    (result,) = await sender.sdk(sdk_python, [send("Dead")])

    assert result.get("status") == "sent", result
    assert result["seconds"] < SEND_WAIT_SECONDS  # the first attempt's outcome ends the wait
    view = await sender.message(result["message_id"])
    assert view["status"] == "queued" and view["sent_at"] is None
    assert f"relay 127.0.0.1:{relay.port}: ConnectionRefusedError" in view["error"]

    relay.start()
    # The retry is due in 30 s or more; a worker whose clock is an hour ahead takes it now.
    assert await OutboundWorker(running.gateway).deliver_due(time.time() + 3600) == 1
    view = await sender.message(result["message_id"])
    assert view["status"] == "sent" and view["sent_at"] and "error" not in view
    assert relay.copies_of(view["email_message_id"]) == 1 and len(relay.received) == 1
    assert (await queued_jobs(running.gateway.storage)).get("outbound", 0) == 0


async def test_a_refusal_is_an_http_error_the_sdk_raises_and_nothing_is_left_queued(
    running: RunningGateway,
    relay: Relay,
    sender: Sender,
    sdk_python: Path,  # noqa: F811
) -> None:
    relay.released.set()
    relay.refused.add("nobody@example.org")
    relay.start()

    refused, invalid, accepted = await sender.sdk(
        sdk_python,
        [send("Refused", "nobody@example.org"), send("Invalid", "not an address"), send("Fine")],
    )

    assert refused["raised"] == 422, refused
    assert '"code": "send_failed"' in refused["text"]
    assert "550 5.1.1 no such user" in refused["text"]
    assert invalid["raised"] == 400 and '"code": "invalid_email"' in invalid["text"]
    assert accepted.get("status") == "sent", accepted
    direct = await sender.account.http.post(
        "/api/v1/send",
        json={"to": ["nobody@example.org"], "subject": "Again", "body": "Hello."},
    )
    assert direct.status_code == 422
    error = direct.json()["error"]
    # The relay's 550 was a hard bounce: the address is suppressed now, and the answer says so.
    assert error["code"] == "recipient_suppressed" and "nobody@example.org" in error["message"]
    # Stored as bounced, which /api/v1's states (hitl.md) do not have: there it is failed.
    failed = await sender.account.http.get("/api/v1/messages", params={"status": "failed"})
    (message,) = failed.json()["messages"]
    assert message["status"] == "failed" and "550 5.1.1 no such user" in message["error"]
    view = await sender.message(message["id"])
    assert view["status"] == "failed" and "550 5.1.1 no such user" in view["error"]
    unknown = await sender.account.http.get("/api/v1/messages", params={"status": "bounced"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "invalid_request"
    assert "bounced" not in unknown.json()["error"]["message"].split("(")[0]

    assert [rcpts for rcpts, _ in relay.received] == [["dave@example.org"]]
