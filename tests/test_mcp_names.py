"""e2a's MCP tool names and arguments, as an MCP client sees them over both transports (`/mcp`
in-process and `e2a mcp` on stdio against a live gateway), with the official `mcp` client.

The oracle is e2a's own list of names (`tests/data/e2a/tool-names.v1.json`, vendored with its
licence): every name is served. The argument names are e2a's,
as its first server (commit 15323fcb) and its current one (220fe0a7) declare them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from e2a_gateway.app import RunningGateway
from e2a_gateway.mcp.tools import TOOLS, TOOLS_BY_NAME
from tests.conftest import Account, agent_path
from tests.delivery_support import create_agent, mail, smtp_send, wait_until
from tests.mcp_support import call, failure, mcp_client, stdio_client

REFERENCE = Path(__file__).parent / "data" / "e2a" / "tool-names.v1.json"
E2A_NAMES: list[str] = json.loads(REFERENCE.read_text())

FIRST_SERVER: dict[str, set[str]] = {
    "send_email": {
        "to", "subject", "body", "html_body", "cc", "bcc", "conversation_id", "agent_email",
        "attachments",
    },
    "reply_to_message": {
        "message_id", "body", "html_body", "reply_all", "cc", "bcc", "conversation_id",
        "agent_email", "attachments",
    },
    "list_messages": {"status", "page_size", "token", "agent_email"},
    "get_message": {"message_id", "agent_email"},
    "list_agents": set(),
    "whoami": set(),
    "create_agent": {"slug", "name", "agent_mode", "webhook_url"},
    "list_pending_messages": set(),
    "get_pending_message": {"message_id"},
    "approve_pending_message": {
        "message_id", "subject", "body_text", "body_html", "to", "cc", "bcc",
    },
    "reject_pending_message": {"message_id", "reason"},
}  # fmt: skip
"""The 11 tools of e2a's first MCP server and their arguments (attachments on send and reply
as its later servers take them). Every one must be served, taking every one of these."""

CURRENT_SERVER: dict[str, set[str]] = {
    "whoami": set(),
    "list_agents": {"cursor", "limit", "deleted"},
    "get_agent": {"email"},
    "create_agent": {"email", "name"},
    "update_agent": {"email", "name"},
    "delete_agent": {"email", "confirm"},
    "list_domains": {"cursor", "limit"},
    "get_domain": {"domain"},
    "register_domain": {"domain"},
    "verify_domain": {"domain"},
    "delete_domain": {"domain", "confirm"},
    "list_api_keys": {"cursor", "limit"},
    "delete_api_key": {"id", "confirm"},
    "send_message": {
        "to", "subject", "text", "html", "template_id", "template_alias", "template_data", "cc",
        "bcc", "attachments", "conversation_id", "reply_to", "idempotency_key", "email",
    },
    "send_email": {
        "to", "subject", "body", "html_body", "cc", "bcc", "attachments", "conversation_id",
        "idempotency_key", "agent_email",
    },
    "reply_to_message": {
        "message_id", "text", "html", "reply_all", "cc", "bcc", "attachments", "conversation_id",
        "reply_to", "idempotency_key", "email",
    },
    "list_messages": {
        "direction", "read_status", "cursor", "limit", "sort", "from_", "subject_contains",
        "conversation_id", "since", "until", "labels", "deleted", "email",
    },
    "get_message": {"message_id", "email"},
    "get_attachment": {"message_id", "attachment_index", "inline", "email"},
    "get_attachment_data": {"message_id", "attachment_index", "agent_email"},
    "list_reviews": {"cursor", "limit"},
    "get_review": {"message_id"},
    "approve_review": {
        "message_id", "subject", "text", "html", "to", "cc", "bcc", "attachments",
        "idempotency_key",
    },
    "reject_review": {"message_id", "reason"},
    "list_pending_messages": set(),
    "get_pending_message": {"message_id"},
    "approve_pending_message": {
        "message_id", "subject", "body_text", "body_html", "to", "cc", "bcc", "attachments",
        "idempotency_key",
    },
    "reject_pending_message": {"message_id", "reason"},
    "approve_message": {
        "message_id", "subject", "text", "html", "to", "cc", "bcc", "attachments",
        "idempotency_key",
    },
    "reject_message": {"message_id", "reason"},
    "delete_message": {"message_id", "email", "confirm"},
    "restore_message": {"message_id", "email"},
    "restore_agent": {"email"},
    "get_conversation": {"conversation_id", "email"},
    "list_conversations": {"cursor", "limit", "since", "until", "email"},
    "update_message_labels": {"message_id", "add_labels", "remove_labels", "email"},
    "forward_message": {
        "message_id", "to", "cc", "bcc", "text", "html", "attachments", "conversation_id",
        "reply_to", "idempotency_key", "email",
    },
    "get_message_lifecycle": {"message_id", "email", "cursor", "limit"},
    "list_events": {
        "type", "agent_email", "conversation_id", "message_id", "since", "until", "cursor",
        "limit",
    },
    "get_event": {"event_id"},
    "redeliver_event": {"event_id", "webhook_id"},
    "list_webhooks": {"cursor", "limit"},
    "get_webhook": {"id"},
    "create_webhook": {"url", "events", "description", "filters"},
    "update_webhook": {"id", "url", "events", "filters", "description", "enabled"},
    "delete_webhook": {"id", "confirm"},
    "rotate_webhook_secret": {"id"},
    "test_webhook": {"id", "type"},
    "list_webhook_deliveries": {"id", "status", "cursor", "limit"},
    "list_templates": {"cursor", "limit"},
    "get_template": {"id"},
    "create_template": {"name", "alias", "subject", "text", "html", "from_starter"},
    "update_template": {"id", "name", "alias", "subject", "text", "html"},
    "delete_template": {"id", "confirm"},
    "validate_template": {"subject", "text", "html", "test_data"},
    "list_starter_templates": {"cursor", "limit"},
    "get_starter_template": {"alias"},
    "create_api_key": {"agent_email", "name", "expires_at"},
    "get_protection": {"email"},
    "update_protection": {
        "email", "inbound_gate_policy", "inbound_gate_allowlist", "inbound_gate_action",
        "inbound_scan_sensitivity", "outbound_gate_policy", "outbound_gate_allowlist",
        "outbound_gate_action", "outbound_scan_sensitivity", "holds_ttl_seconds",
        "holds_on_expiry", "holds_suppress_notifications",
    },
}  # fmt: skip
"""The arguments e2a's current server declares for each name of its list: each is taken."""

OURS = {"wait_for_email", "get_inbox", "read_email", "reply_email", "list_pending"} | {
    "approve_email",
    "reject_email",
    "get_info",
}
"""This gateway's own tool and its earlier names (deprecated aliases for one release)."""


def test_every_e2a_name_is_served() -> None:
    assert len(E2A_NAMES) == len(set(E2A_NAMES)) == 60
    served = {tool.name for tool in TOOLS} & set(E2A_NAMES)
    assert served == set(CURRENT_SERVER) == set(E2A_NAMES)
    assert set(FIRST_SERVER) <= served
    assert {tool.name for tool in TOOLS} - set(E2A_NAMES) == OURS


@asynccontextmanager
async def _client(
    transport: str, running: RunningGateway, key: str, agent: str
) -> AsyncIterator[Client]:
    if transport == "http":
        async with mcp_client(running, key, agent=agent) as client:
            yield client
    else:
        async with stdio_client(running.addresses.http_url, key, agent=agent) as client:
            yield client


TRANSPORTS = [pytest.param("http", id="mcp-http"), pytest.param("stdio", id="e2a-mcp-stdio")]


def opener(
    transport: str, running: RunningGateway
) -> Any:  # a function of (key, agent) opening a client
    def open_client(key: str, agent: str = "") -> AbstractAsyncContextManager[Client]:
        return _client(transport, running, key, agent)

    return open_client


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tools_list_has_e2a_names_with_e2a_arguments(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    account: Account = await make_account(f"names-{transport}@example.com")
    async with opener(transport, running)(account.key) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == {tool.name for tool in TOOLS}
    for name, arguments in FIRST_SERVER.items():
        taken = set(listed[name].input_schema["properties"])
        assert arguments <= taken, (name, arguments - taken)
    for name, arguments in CURRENT_SERVER.items():
        taken = set(listed[name].input_schema["properties"])
        assert arguments <= taken, (name, arguments - taken)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_first_eleven_with_e2a_arguments(
    transport: str, running: RunningGateway, make_account: Any
) -> None:
    """Each of e2a's first 11 tools, called with its own argument names."""
    account: Account = await make_account(f"eleven-{transport}@example.com")
    support = await create_agent(account, f"eleven-{transport}")
    await smtp_send(running.addresses.smtp_port, [support], mail("First", body="One."))
    await smtp_send(running.addresses.smtp_port, [support], mail("Second", body="Two."))
    report = {"filename": "notes.txt", "content_type": "text/plain", "data": "bm90ZXMK"}
    async with opener(transport, running)(account.key, support) as client:
        me = await call(client, "whoami")  # e2a's current whoami: the account, not an agent
        assert me["scope"] == "account" and "agent_email" not in me
        assert me["default_agent"] == support

        sales = await call(
            client,
            "create_agent",
            {"slug": f"eleven-sales-{transport}", "name": "Sales", "agent_mode": "local"},
        )
        assert sales["email"] == f"eleven-sales-{transport}@agents.test"
        assert sales["name"] == "Sales" and sales["agent_mode"] == "local"
        agents = await call(client, "list_agents")
        assert {agent["email"] for agent in agents["agents"]} == {support, sales["email"]}

        first = await call(
            client, "list_messages", {"agent_email": support, "status": "unread", "page_size": 1}
        )
        assert [m["subject"] for m in first["messages"]] == ["First"]
        assert first["next_token"]
        second = await call(
            client,
            "list_messages",
            {
                "agent_email": support,
                "status": "unread",
                "page_size": 1,
                "token": first["next_token"],
            },
        )
        assert [m["subject"] for m in second["messages"]] == ["Second"]
        message = await call(
            client,
            "get_message",
            {"message_id": first["messages"][0]["message_id"], "agent_email": support},
        )
        assert message["subject"] == "First" and message["text"].strip() == "One."
        assert message["verified_domain"] is None  # nothing vouches for alice@example.org

        handover = {
            "to": [sales["email"]],
            "subject": "Handover",
            "body": "Yours now.",
            "html_body": "<p>Yours now.</p>",
            "cc": [support],
            "bcc": [],
            "conversation_id": "conv-eleven",
            "attachments": [report],
            "agent_email": support,
        }
        sent = await call(client, "send_email", handover)
        assert sent["status"] == "sent" and sent["method"] == "local"
        [arrived] = (await call(client, "list_messages", {"agent_email": sales["email"]}))[
            "messages"
        ]
        assert arrived["conversation_id"] == "conv-eleven"
        arrived_id = arrived["message_id"]
        got = await call(
            client, "get_message", {"message_id": arrived_id, "agent_email": sales["email"]}
        )
        assert got["html"].strip() == "<p>Yours now.</p>" and got["cc"] == [support]
        assert got["attachments"][0]["filename"] == "notes.txt"
        assert got["header_from"] == support and "verified_domain" in got

        reply = await call(
            client,
            "reply_to_message",
            {
                "message_id": arrived_id,
                "body": "Thanks.",
                "html_body": "<p>Thanks.</p>",
                "reply_all": True,
                "cc": [],
                "bcc": [],
                "attachments": [report],
                "agent_email": sales["email"],
            },
        )
        assert reply["status"] == "accepted" and reply["method"] == "loopback"

        async def reply_arrived() -> bool:
            unread = await call(client, "list_messages", {"status": "unread"})
            return len(unread["messages"]) == 3

        await wait_until(reply_arrived)
        answer = await call(client, "list_messages", {"status": "unread"})
        # (support was on Cc: of its own handover)
        assert [m["subject"] for m in answer["messages"]] == ["Second", "Handover", "Re: Handover"]

        # Approval: held mail listed, read, approved with every override, and rejected.
        held_agent = await account.http.put(agent_path(support), json={"hitl_enabled": True})
        assert held_agent.status_code == 200, held_agent.text
        drafts = [
            await call(
                client,
                "send_email",
                {"to": [sales["email"]], "subject": subject, "body": "Draft."},
            )
            for subject in ("Offer", "Oops")
        ]
        assert {draft["status"] for draft in drafts} == {"pending_approval"}
        pending = await call(client, "list_pending_messages")
        assert [m["subject"] for m in pending["messages"]] == ["Oops", "Offer"]  # newest first
        detail = await call(client, "get_pending_message", {"message_id": drafts[0]["message_id"]})
        assert detail["text"] == "Draft." and detail["review_status"] == "pending_review"
        approved = await call(
            client,
            "approve_pending_message",
            {
                "message_id": drafts[0]["message_id"],
                "subject": "Offer (edited)",
                "body_text": "Edited.",
                "body_html": "<p>Edited.</p>",
                "to": [sales["email"]],
                "cc": [support],
                "bcc": [],
                "attachments": [],
            },
        )
        assert approved["status"] == "accepted" and approved["edited"] is True
        assert approved["message_id"] == drafts[0]["message_id"]
        detail = await call(client, "get_pending_message", {"message_id": drafts[0]["message_id"]})
        assert detail["subject"] == "Offer (edited)"  # the body goes once sent
        assert detail["cc"] == [support] and detail["review_status"] == "sent"
        rejected = await call(
            client,
            "reject_pending_message",
            {"message_id": drafts[1]["message_id"], "reason": "wrong recipient"},
        )
        assert rejected == {
            "status": "review_rejected",
            "message_id": drafts[1]["message_id"],
            "rejection_reason": "wrong recipient",
        }
        assert (await call(client, "list_pending_messages"))["messages"] == []
        again = await failure(
            client, "approve_pending_message", {"message_id": drafts[1]["message_id"]}
        )
        assert again["status"] == 409 and again["code"] == "message_not_pending"
        offer = await call(client, "wait_for_email", {"agent_email": sales["email"]})
        assert offer["message"]["subject"] == "Offer (edited)"
        assert offer["message"]["text_body"].strip() == "Edited."


def test_an_attachment_argument_must_be_base64() -> None:
    arguments = TOOLS_BY_NAME["send_message"].arguments
    bad = {"filename": "a.txt", "content_type": "text/plain", "data": "not base64!"}
    with pytest.raises(ValueError, match="not standard base64"):
        arguments.model_validate(
            {"to": ["a@b.c"], "subject": "s", "text": "t", "attachments": [bad]}
        )
    good = bad | {"data": base64.b64encode(b"a").decode()}
    arguments.model_validate({"to": ["a@b.c"], "subject": "s", "text": "t", "attachments": [good]})
