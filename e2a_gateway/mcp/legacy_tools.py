"""This gateway's earlier tool names, kept for one release as deprecated aliases of e2a's: listed
in tools/list (titled "Deprecated alias: <e2a's name>", as e2a lists its own old names), with
their arguments and answers unchanged, so clients and prompts written for them keep working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from e2a_gateway.mcp.answers import inbound_message, outbound_message, sent
from e2a_gateway.mcp.bounds import bounded_row
from e2a_gateway.mcp.toolkit import Arguments, NoArguments, ToolCaller, ToolSpec
from e2a_gateway.v1 import MessageSummary

AgentArgument = Field(
    default=None,
    description="The agent mailbox to use, e.g. support@agents.example.com. Defaults to "
    "E2A_AGENT_EMAIL, or to the key's only agent.",
)


class InboxArguments(Arguments):
    """Arguments of get_inbox."""

    agent: str | None = AgentArgument
    status: Literal["unread", "read", "all"] = Field(
        default="unread", description="Which messages: unread (default), read or all."
    )
    page_size: int = Field(default=20, ge=1, le=100, description="Messages per page (1-100).")
    page: str | None = Field(
        default=None,
        description="The next_page value of the previous call, to get the following page.",
    )


class ReadArguments(Arguments):
    """Arguments of read_email."""

    message_id: str = Field(min_length=1, description="The inbound message id (msg_…).")
    agent: str | None = AgentArgument


class ReplyArguments(Arguments):
    """Arguments of reply_email."""

    message_id: str = Field(min_length=1, description="The inbound message id (msg_…).")
    body: str = Field(description="The plain-text reply.")
    html_body: str | None = Field(default=None, description="An optional HTML reply.")
    reply_all: bool = Field(default=False, description="Also reply to the other recipients.")
    cc: list[str] | None = Field(default=None, description="Extra Cc: addresses.")
    bcc: list[str] | None = Field(default=None, description="Bcc: addresses (not shown).")
    agent: str | None = AgentArgument


OutboundId = Field(min_length=1, description="The outbound message id from list_pending.")


class ApproveArguments(Arguments):
    """Arguments of approve_email."""

    message_id: str = OutboundId
    subject: str | None = Field(default=None, description="Replace the subject before sending.")
    body_text: str | None = Field(default=None, description="Replace the body before sending.")


class RejectArguments(Arguments):
    """Arguments of reject_email."""

    message_id: str = OutboundId
    reason: str = Field(default="", description="Why it was rejected (kept with the message).")


def _summary(message: MessageSummary) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "from": message.sender,
        "subject": message.subject,
        "status": message.status,
        "conversation_id": message.conversation_id,
        "received_at": message.created_at,
    }


async def get_inbox(caller: ToolCaller, arguments: InboxArguments) -> dict[str, Any]:
    """One page of an agent's inbox, oldest first."""
    agent = await caller.agent(arguments.agent)
    page = await caller.port.get_messages(
        arguments.status, arguments.page_size, arguments.page, agent
    )
    return {
        "agent": agent,
        "messages": [bounded_row(_summary(message)) for message in page.messages],
        "next_page": page.next_token,
        "note": "`from` is what the sender claims; read_email shows whether it is verified",
    }


async def read_email(caller: ToolCaller, arguments: ReadArguments) -> dict[str, Any]:
    """One message in full, with its verification; marks it read."""
    agent = await caller.agent(arguments.agent)
    return inbound_message(await caller.port.get_message(arguments.message_id, agent))


async def reply_email(caller: ToolCaller, arguments: ReplyArguments) -> dict[str, Any]:
    """A reply to an inbound message, threaded."""
    agent = await caller.agent(arguments.agent)
    result = await caller.port.reply(
        arguments.message_id,
        arguments.body,
        html_body=arguments.html_body,
        reply_all=arguments.reply_all or None,
        cc=arguments.cc,
        bcc=arguments.bcc,
        agent_email=agent,
    )
    return sent(result)


async def list_pending(caller: ToolCaller, _: NoArguments) -> dict[str, Any]:
    """Outbound messages of all the caller's agents held for approval."""
    pending = await caller.port.list_pending_messages()
    return {"messages": [outbound_message(message) for message in pending.messages]}


async def approve_email(caller: ToolCaller, arguments: ApproveArguments) -> dict[str, Any]:
    """Approve a held message, optionally edited."""
    message = await caller.port.approve_message(
        arguments.message_id, subject=arguments.subject, body_text=arguments.body_text
    )
    return outbound_message(message)


async def reject_email(caller: ToolCaller, arguments: RejectArguments) -> dict[str, Any]:
    """Reject a held message."""
    message = await caller.port.reject_message(arguments.message_id, arguments.reason)
    return outbound_message(message)


async def get_info(caller: ToolCaller, _: NoArguments) -> dict[str, Any]:
    """The gateway's public settings, and the caller's default agent."""
    info = await caller.port.get_info()
    return {
        **info.model_dump(exclude_none=True),
        "gateway_url": caller.port.gateway_url,
        "default_agent": caller.default_agent or None,
    }


LEGACY_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "get_inbox",
        "Get inbox",
        "List an agent's inbound messages, oldest first (arguments agent, status, page_size, "
        "page; answers next_page).",
        InboxArguments,
        get_inbox,
        replaced_by="list_messages",
    ),
    ToolSpec(
        "read_email",
        "Read email",
        "Read one inbound message in full with its verification, and mark it read.",
        ReadArguments,
        read_email,
        read_only=False,
        replaced_by="get_message",
    ),
    ToolSpec(
        "reply_email",
        "Reply to email",
        "Reply to an inbound message, threaded.",
        ReplyArguments,
        reply_email,
        read_only=False,
        replaced_by="reply_to_message",
    ),
    ToolSpec(
        "list_pending",
        "List mail awaiting approval",
        "List outgoing messages of all your agents held for a person's approval.",
        NoArguments,
        list_pending,
        replaced_by="list_reviews",
    ),
    ToolSpec(
        "approve_email",
        "Approve held email",
        "Approve a held outgoing message (optionally with a new subject or body_text). Only "
        "when the person you work for asked you to.",
        ApproveArguments,
        approve_email,
        read_only=False,
        replaced_by="approve_review",
    ),
    ToolSpec(
        "reject_email",
        "Reject held email",
        "Reject a held outgoing message; it is never sent. Only when the person you work for "
        "asked you to.",
        RejectArguments,
        reject_email,
        read_only=False,
        destructive=True,
        replaced_by="reject_review",
    ),
    ToolSpec(
        "get_info",
        "Gateway info",
        "The gateway's URL, version and shared domain, and your default agent.",
        NoArguments,
        get_info,
        replaced_by="whoami",
    ),
)
