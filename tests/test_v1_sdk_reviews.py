"""The official SDK `e2a==5.8.1` against the gateway's protection config, review queue and agent
WebSocket: its typed models parse every answer, its typed errors every refusal, and its
`listen()` hears mail sent over real SMTP, until a newer listener replaces it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.conftest import Account
from tests.delivery_support import create_agent
from tests.sdk_v1 import SDK_SECONDS, error, run_sdk, sdk5_python, value
from tests.test_v1_reviews import BOT, ZONE, agent_key, draft, letter, send

pytestmark = pytest.mark.slow

__all__ = ["sdk5_python"]  # a fixture


@pytest.fixture
def resolver() -> FixtureResolver:
    return FixtureResolver(ZONE)


PROTECTION = {
    "inbound": {
        "gate": {"policy": "allowlist", "allowlist": ["friend@example.org"], "action": "review"},
        "scan": {"sensitivity": "off"},
    },
    "outbound": {
        "gate": {"policy": "allowlist", "allowlist": [], "action": "review"},
        "scan": {"sensitivity": "off"},
    },
    "holds": {"ttl_seconds": 86400, "on_expiry": "reject", "suppress_notifications": False},
}


async def test_protection_and_reviews_through_the_sdk(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    await create_agent(owner, "bot")
    url = running.addresses.http_url
    configured = await run_sdk(
        sdk5_python,
        url,
        {"default": owner.key},
        [
            {"do": "agents.get_protection", "args": [BOT]},
            {"do": "agents.replace_protection", "args": [BOT, PROTECTION]},
            {
                "do": "agents.replace_protection",
                "args": [
                    BOT,
                    {**PROTECTION, "outbound": {"gate": {}, "scan": {"sensitivity": "high"}}},
                ],
            },
        ],
    )
    assert value(configured[0], "ProtectionConfigView")["outbound"]["gate"]["action"] == "flag"
    replaced = value(configured[1], "ProtectionConfigView")
    assert replaced["inbound"]["gate"]["allowlist"] == ["friend@example.org"]
    assert replaced["outbound"]["gate"]["action"] == "review"
    error(configured[2], "E2AServerError", "not_implemented", 501)  # refused, not ignored

    first = await draft(owner, BOT, "First draft")
    second = await draft(owner, BOT, "Second draft")
    await send(running, "alice@example.org", letter("alice@example.org", "Held inbound"))
    bound = await agent_key(owner, BOT)
    steps = [
        {"do": "reviews.list", "as": "queue"},
        {"do": "reviews.get", "args": [first]},
        {
            "do": "reviews.approve",
            "args": [first, {"subject": "Edited", "text": "Approved text."}],
            "kwargs": {"idempotency_key": "approve-first"},
        },
        {
            "do": "reviews.approve",
            "args": [first, {"subject": "Edited", "text": "Approved text."}],
            "kwargs": {"idempotency_key": "approve-first"},
        },
        {"do": "reviews.reject", "args": [second, {"reason": "Not now."}]},
        {"do": "reviews.get", "args": ["${queue.0.id}"]},
        {"do": "reviews.approve", "args": ["${queue.0.id}"]},
        {"do": "reviews.reject", "args": ["${queue.0.id}"]},
        {"do": "reviews.list"},
        {"do": "reviews.list", "key": "bot"},
        {"do": "reviews.approve", "args": [second], "key": "bot"},
        {"do": "agents.get_protection", "args": [BOT], "key": "bot"},
    ]
    done = await run_sdk(sdk5_python, url, {"default": owner.key, "bot": bound}, steps)
    queue = value(done[0], ["ReviewView"] * 3)
    assert [item["subject"] for item in queue] == ["Held inbound", "Second draft", "First draft"]
    assert queue[0]["direction"] == "inbound" and queue[0]["verified_domain"] == "example.org"
    assert value(done[1], "MessageView")["body"]["text"] == "Draft."
    approved = value(done[2], "SendResultView")
    assert approved == {"status": "accepted", "message_id": first, "edited": True}
    assert value(done[3], "SendResultView") == approved  # replayed, not sent twice
    rejected = value(done[4], "RejectResultView")
    assert rejected == {
        "status": "review_rejected",
        "message_id": second,
        "rejection_reason": "Not now.",
    }
    held = value(done[5], "MessageView")
    assert held["direction"] == "inbound" and held["authentication"]["dmarc"]["status"] == "pass"
    released = value(done[6], "SendResultView")
    assert released["status"] == "review_approved"
    error(done[7], "E2AConflictError", "message_not_pending", 409)
    assert value(done[8]) == []
    for refused in done[9:]:
        error(refused, "E2APermissionError", "forbidden", 403)


LISTENER = r"""
import asyncio, json, sys
from e2a.v1 import AsyncE2AClient, E2AError

base_url, key, email = sys.argv[1:4]

def say(**line):
    print(json.dumps(line), flush=True)

async def main():
    client = AsyncE2AClient(api_key=key, base_url=base_url, max_retries=0)
    first = client.listen(email).__aiter__()
    for _ in range(2):
        event = await first.__anext__()
        say(listener="first", type=event.type, id=event.id, data=event.data)
    second = client.listen(email).__aiter__()
    event = await second.__anext__()
    say(listener="second", type=event.type, id=event.id, data=event.data)
    try:
        await first.__anext__()
    except E2AError as exc:
        say(listener="first", error=type(exc).__name__, code=exc.code)
    await client.aclose()

asyncio.run(main())
"""


async def test_listen_hears_mail_sent_over_smtp_until_replaced(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    await create_agent(owner, "bot")
    await send(running, "alice@example.org", letter("alice@example.org", "Before listening"))
    lines: list[dict[str, Any]] = []
    process = await trio.lowlevel.open_process(
        [str(sdk5_python), "-I", "-c", LISTENER, running.addresses.http_url, owner.key, BOT],
        stdout=subprocess.PIPE,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(SDK_SECONDS):
            async for chunk in process.stdout:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    lines.append(json.loads(line))
                    if len(lines) == 1:  # the first listener is connected: mail it live
                        live = letter("alice@example.org", "While listening")
                        await send(running, "alice@example.org", live)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    drained, live_event, replacement, replaced = lines
    assert drained["listener"] == "first" and drained["type"] == "email.received"
    assert drained["data"]["subject"] == "Before listening"
    assert drained["data"]["verified_domain"] == "example.org"
    assert live_event["data"]["subject"] == "While listening"
    assert live_event["data"]["delivered_to"] == BOT
    assert replacement["listener"] == "second" and replacement["id"] == drained["id"]
    assert replaced == {
        "listener": "first",
        "error": "E2AConnectionReplacedError",
        "code": "ws_replaced",
    }
