"""The newest published e2a 2.x SDK (2.5.0) reads a message's Reply-To addresses from the
`reply_to` list of what `/api/v1` answers (`get_messages`, `get_message`) and of a webhook
body (`parse_webhook`), documented as empty only when the header is absent. A message with
a Reply-To shows its addresses there, in their order; one without, an empty list.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import (
    accept,
    create_agent,
    mail,
    new_signing_secret,
    open_account,
    quiet_gateway,
)
from tests.http_receiver import HttpReceiver
from tests.test_sdk2_retries import sdk25_python
from tests.test_sdk_compat import run_sdk

pytestmark = pytest.mark.slow

__all__ = ["sdk25_python"]  # a fixture

REPLY_TO = "Reply-To: Help Desk <Desk@Example.org>, team@example.org\r\n"

READ = """
import json, sys
import e2a
from e2a.v1 import E2AClient

request = json.load(sys.stdin)
client = E2AClient(api_key=request["key"], agent_email=request["agent"], base_url=request["url"])
listed = {m.subject: m.reply_to for m in client.get_messages(status="all").messages}
read = {}
for message_id in request["ids"]:
    email = client.get_message(message_id)
    read[email.subject] = email.reply_to
print(json.dumps({"sdk": e2a.__file__, "listed": listed, "read": read}))
"""

PARSE = """
import base64, json, sys
import e2a
from e2a.v1 import E2AClient

request = json.load(sys.stdin)
parsed = {}
for body in request["bodies"]:
    email = E2AClient().parse_webhook(base64.b64decode(body), request["secret"])
    parsed[email.subject] = email.reply_to
print(json.dumps({"sdk": e2a.__file__, "parsed": parsed}))
"""


async def test_listed_and_read_messages_carry_their_reply_to(
    running: RunningGateway, make_account: Any, sdk25_python: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    ids = [
        await accept(running.gateway, [agent], mail("Answer elsewhere", extra_headers=REPLY_TO)),
        await accept(running.gateway, [agent], mail("Answer me")),
    ]
    request = {"key": owner.key, "agent": agent, "url": running.addresses.http_url, "ids": ids}

    answer = await run_sdk(sdk25_python, READ, request)

    expected = {"Answer elsewhere": ["desk@example.org", "team@example.org"], "Answer me": []}
    assert answer["listed"] == expected
    assert answer["read"] == expected


async def test_a_webhook_carries_the_reply_to_the_sdk_reads(
    tmp_path: Path, resolver: FixtureResolver, sdk25_python: Path, nursery: trio.Nursery
) -> None:
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    settings = make_settings(tmp_path, webhooks={"allow_private": True})
    async with quiet_gateway(settings, resolver) as quiet:
        gateway = quiet.gateway
        account = await open_account(gateway, quiet.http_url, "alice@example.com")
        async with account.http, WebhookConnections() as http:
            secret = await new_signing_secret(account)
            agent = await create_agent(account, "hook", receiver.url)
            await accept(gateway, [agent], mail("Answer elsewhere", extra_headers=REPLY_TO))
            await accept(gateway, [agent], mail("Answer me"))
            assert await WebhookWorker(gateway, http).deliver_due(time.time()) == 2

    bodies = [base64.b64encode(request.body).decode() for request in receiver.requests]
    answer = await run_sdk(sdk25_python, PARSE, {"bodies": bodies, "secret": secret})

    assert answer["parsed"] == {
        "Answer elsewhere": ["desk@example.org", "team@example.org"],
        "Answer me": [],
    }
