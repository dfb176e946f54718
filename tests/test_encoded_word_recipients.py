"""A recipient the `email` package would rewrite when writing the message is refused: an RFC
2047 encoded word as an address's local part (`=?utf-8?q?bob?=@example.com`) is decoded in the
header (`To: bob@example.com`) while the envelope goes to the literal address, so the
recipient's reply-all would reach another mailbox. Every face that takes recipients refuses it
with a 400 naming the field, over real HTTP, and stores nothing."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.outbound.mime import address_as_written
from tests.conftest import Account
from tests.databases import query
from tests.delivery_support import accept, create_agent, mail

ENCODED = "=?utf-8?q?bob?=@example.com"
TEXT = {"subject": "s", "text": "Hi."}


def v1_messages(agent: str, suffix: str = "") -> str:
    return f"/v1/agents/{quote(agent, safe='')}/messages{suffix}"


CASES = [
    ("/api/v1/send", "to", {"to": [ENCODED], "subject": "s", "body": "Hi."}),
    (
        "/api/v1/send",
        "cc",
        {"to": ["carol@example.org"], "cc": [ENCODED], "subject": "s", "body": "b"},
    ),
    (
        "/api/v1/send",
        "bcc",
        {"to": ["carol@example.org"], "bcc": [ENCODED], "subject": "s", "body": "b"},
    ),
    ("send", "to", {"to": [ENCODED], **TEXT}),
    ("send", "cc", {"to": ["carol@example.org"], "cc": [ENCODED], **TEXT}),
    ("send", "bcc", {"to": ["carol@example.org"], "bcc": [ENCODED], **TEXT}),
    ("send", "reply_to", {"to": ["carol@example.org"], "reply_to": f"Bob <{ENCODED}>", **TEXT}),
    ("send", "reply_to[0]", {"to": ["carol@example.org"], "reply_to": [ENCODED], **TEXT}),
    ("reply", "cc", {"text": "Hi.", "cc": [ENCODED]}),
    ("reply", "bcc", {"text": "Hi.", "bcc": [ENCODED]}),
    ("reply", "reply_to", {"text": "Hi.", "reply_to": ENCODED}),
    ("forward", "to", {"to": [ENCODED], "text": "FYI"}),
    ("forward", "cc", {"to": ["carol@example.org"], "cc": [ENCODED], "text": "FYI"}),
    ("forward", "bcc", {"to": ["carol@example.org"], "bcc": [ENCODED], "text": "FYI"}),
    ("forward", "reply_to", {"to": ["carol@example.org"], "reply_to": ENCODED, "text": "FYI"}),
]


@pytest.mark.parametrize(("face", "field", "body"), CASES, ids=lambda x: str(x)[:20])
async def test_an_encoded_word_address_is_refused_naming_its_field(
    running: RunningGateway, make_account: Any, face: str, field: str, body: dict[str, Any]
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    inbound = await accept(running.gateway, [bot], mail("Hello"))
    path = {
        "/api/v1/send": "/api/v1/send",
        "send": v1_messages(bot),
        "reply": v1_messages(bot, f"/{inbound}/reply"),
        "forward": v1_messages(bot, f"/{inbound}/forward"),
    }[face]
    if face == "/api/v1/send":
        body = {"from": bot, **body}
    refused = await alice.http.post(path, json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["message"].startswith(f"{field}: "), error
    assert "'bob@example.com'" in error["message"], error
    database = running.gateway.settings.database.url
    assert query(database, "SELECT id FROM messages WHERE direction = 'outbound'") == []


@pytest.mark.parametrize(
    ("address", "written"),
    [
        ("bob@example.com", "bob@example.com"),
        ("a=?b@example.com", "a=?b@example.com"),
        ("x.=?utf-8?q?bob?=@example.com", "x.=?utf-8?q?bob?=@example.com"),
        (ENCODED, "bob@example.com"),
        ("=?utf-8?b?Ym9i?=@example.com", "bob@example.com"),
        ("=?utf-8?q?b=40o?=@example.com", "b@o@example.com"),
        ("a" * 64 + "@" + "b" * 60 + ".example.com", "a" * 64 + "@" + "b" * 60 + ".example.com"),
    ],
)
def test_an_address_is_written_as_the_email_package_writes_it(address: str, written: str) -> None:
    assert address_as_written(address) == written
