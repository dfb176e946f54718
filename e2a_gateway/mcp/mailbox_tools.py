"""The MCP tools of an agent's mailbox as the `/v1` face keeps it, under e2a's names and
arguments: the trash (messages and agents, restorable), labels, conversations, forwarding and
a message's lifecycle.

Answers are the `/v1` views verbatim, as e2a's server returns its API's answers; lists in e2a's
MCP shape (a named array, `next_cursor` only while more remain).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from e2a_gateway.mcp.answers import listed
from e2a_gateway.mcp.bounds import bounded_row
from e2a_gateway.mcp.toolkit import (
    REPLY_TO,
    Arguments,
    AttachmentsArgument,
    Confirm,
    PageArguments,
    ToolCaller,
    ToolSpec,
    idempotency_key,
)

AGENT = "The agent; defaults to yours (E2A_AGENT_EMAIL, or the key's only agent)."
CONVERSATION_PAGE = 50
"""The messages get_conversation shows at once unless asked for another `limit`."""


class DeleteMessageArguments(Arguments):
    """Arguments of delete_message."""

    message_id: str = Field(min_length=1, description="The message to move to the trash.")
    email: str | None = Field(default=None, description=AGENT)
    confirm: Confirm = Field(description="Must be true: you confirm the deletion.")


class RestoreMessageArguments(Arguments):
    """Arguments of restore_message."""

    message_id: str = Field(min_length=1, description="The trashed message to restore.")
    email: str | None = Field(default=None, description=AGENT)


class RestoreAgentArguments(Arguments):
    """Arguments of restore_agent."""

    email: str = Field(min_length=1, description="The trashed agent's full address.")


class ConversationArguments(PageArguments):
    """Arguments of get_conversation: its messages a page at a time (`limit` default
    CONVERSATION_PAGE)."""

    conversation_id: str = Field(min_length=1, description="The conversation's id.")
    email: str | None = Field(default=None, description=AGENT)


class ListConversationsArguments(PageArguments):
    """Arguments of list_conversations."""

    since: str | None = Field(
        default=None, description="RFC 3339: only conversations last active at or after it."
    )
    until: str | None = Field(
        default=None, description="RFC 3339: only conversations last active before it."
    )
    email: str | None = Field(default=None, description=AGENT)


class LabelsArguments(Arguments):
    """Arguments of update_message_labels."""

    message_id: str = Field(min_length=1, description="The message to label.")
    add_labels: list[str] | None = Field(
        default=None, description="Labels to add ([a-z0-9:_-]+, at most 64 characters each)."
    )
    remove_labels: list[str] | None = Field(
        default=None, description="Labels to remove; one in both lists is removed."
    )
    email: str | None = Field(default=None, description=AGENT)


class ForwardArguments(Arguments):
    """Arguments of forward_message."""

    message_id: str = Field(min_length=1, description="The received message to forward.")
    to: list[str] = Field(min_length=1, description="Who to forward it to (one or more).")
    cc: list[str] | None = Field(default=None, description="Cc recipients.")
    bcc: list[str] | None = Field(default=None, description="Bcc recipients.")
    text: str | None = Field(
        default=None,
        description="A comment above the forwarded message; the original is quoted beneath.",
    )
    html: str | None = Field(default=None, description="The comment as HTML.")
    attachments: AttachmentsArgument
    conversation_id: str | None = Field(
        default=None,
        description="Bind the forward to this conversation; a forward starts a new one by default.",
    )
    reply_to: str | None = REPLY_TO
    idempotency_key: str | None = idempotency_key(
        "The message_id and recipients make a natural key."
    )
    email: str | None = Field(default=None, description=AGENT)


class LifecycleArguments(PageArguments):
    """Arguments of get_message_lifecycle."""

    message_id: str = Field(min_length=1, description="The message.")
    email: str | None = Field(default=None, description=AGENT)


def present(arguments: Arguments, *names: str) -> dict[str, Any]:
    """The arguments among `names` that were given, as the `/v1` request takes them."""
    values = {name: getattr(arguments, name) for name in names}
    return {name: value for name, value in values.items() if value is not None}


async def delete_message(caller: ToolCaller, arguments: DeleteMessageArguments) -> dict[str, Any]:
    """Move a message to the trash: `{deleted, id}`."""
    email = await caller.agent(arguments.email)
    return await caller.port.trash_message(email, arguments.message_id)


async def restore_message(caller: ToolCaller, arguments: RestoreMessageArguments) -> dict[str, Any]:
    """Bring a message back from the trash: the message as `/v1` answers it, without its raw
    MIME (attachments stay metadata; get_attachment fetches one)."""
    email = await caller.agent(arguments.email)
    restored = await caller.port.restore_message(email, arguments.message_id)
    return {name: value for name, value in restored.items() if name != "raw_message"}


async def restore_agent(caller: ToolCaller, arguments: RestoreAgentArguments) -> dict[str, Any]:
    """Bring an agent back from the trash: the agent."""
    return await caller.port.restore_agent(arguments.email)


async def get_conversation(caller: ToolCaller, arguments: ConversationArguments) -> dict[str, Any]:
    """One conversation with its participants and labels, and a page of its messages, oldest
    first (its strings and lists cut as a list row's are); `next_cursor` while more remain."""
    email = await caller.agent(arguments.email)
    query = {"limit": CONVERSATION_PAGE, **present(arguments, "cursor", "limit")}
    found = await caller.port.get_conversation(email, arguments.conversation_id, query)
    next_cursor = found.pop("next_cursor", None)
    answer: dict[str, Any] = bounded_row(found)
    if next_cursor:
        answer["next_cursor"] = next_cursor
    return answer


async def list_conversations(
    caller: ToolCaller, arguments: ListConversationsArguments
) -> dict[str, Any]:
    """One page of the agent's conversations, most recently active first."""
    email = await caller.agent(arguments.email)
    query = present(arguments, "since", "until", "cursor", "limit")
    page = await caller.port.list_conversations(email, query)
    rows = [bounded_row(item) for item in page["items"]]
    return listed("conversations", rows, page.get("next_cursor"))


async def update_message_labels(caller: ToolCaller, arguments: LabelsArguments) -> dict[str, Any]:
    """Add and remove labels on a message: `{message_id, labels}` after the change."""
    email = await caller.agent(arguments.email)
    changes = present(arguments, "add_labels", "remove_labels")
    return await caller.port.update_message_labels(email, arguments.message_id, changes)


async def forward_message(caller: ToolCaller, arguments: ForwardArguments) -> dict[str, Any]:
    """Forward a received message to new recipients: the send result (`status`, `message_id`,
    `method`, `sent_as`)."""
    email = await caller.agent(arguments.email)
    fields = present(arguments, "to", "cc", "bcc", "html", "conversation_id", "reply_to")
    fields["text"] = arguments.text or ""
    if arguments.attachments:
        fields["attachments"] = [item.model_dump() for item in arguments.attachments]
    return await caller.port.forward_message(
        email, arguments.message_id, fields, arguments.idempotency_key
    )


async def get_message_lifecycle(
    caller: ToolCaller, arguments: LifecycleArguments
) -> dict[str, Any]:
    """One page of a message's lifecycle transitions, oldest first."""
    email = await caller.agent(arguments.email)
    query = present(arguments, "cursor", "limit")
    page = await caller.port.get_message_lifecycle(email, arguments.message_id, query)
    return listed("transitions", page["items"], page.get("next_cursor"))


MAILBOX_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "delete_message",
        "Delete a message (move to trash)",
        "Move a message to the trash: it leaves lists, threads and reply targets but stays "
        "restorable with restore_message until the trash retention ends. A message held for "
        "review cannot be deleted (message_held): resolve the review first. Deleting for good "
        "is not offered here. Requires confirm: true.",
        DeleteMessageArguments,
        delete_message,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "restore_message",
        "Restore a message from trash",
        "Bring a trashed message back; answers the message without its raw MIME (attachments "
        "as metadata). A live message answers not_in_trash.",
        RestoreMessageArguments,
        restore_message,
        read_only=False,
    ),
    ToolSpec(
        "restore_agent",
        "Restore an agent from trash",
        "Bring an agent trashed within the trash window back, with its messages and settings; "
        "answers the agent. A live agent answers not_in_trash.",
        RestoreAgentArguments,
        restore_agent,
        read_only=False,
    ),
    ToolSpec(
        "get_conversation",
        "Get a single conversation with all member messages",
        "One thread: counts, participants, labels and its live messages, oldest first, "
        f"{CONVERSATION_PAGE} at a time (`limit` 1-100). Pass next_cursor back as `cursor` "
        "while it is present for the next messages. Use the conversation_id of any message.",
        ConversationArguments,
        get_conversation,
    ),
    ToolSpec(
        "list_conversations",
        "List conversations for the agent",
        "The agent's conversations (messages sharing a conversation_id), most recently active "
        "first: counts, has_unread, the latest subject and sender. Pass next_cursor back as "
        "`cursor` while it is present; read one with get_conversation.",
        ListConversationsArguments,
        list_conversations,
    ),
    ToolSpec(
        "update_message_labels",
        "Add or remove labels on a message",
        "Apply a labels delta (add_labels, remove_labels): lowercase [a-z0-9:_-]+, the e2a: "
        "prefix is the gateway's own. Answers the labels after the change.",
        LabelsArguments,
        update_message_labels,
        read_only=False,
    ),
    ToolSpec(
        "forward_message",
        "Forward a message",
        "Forward a message the agent received to new recipients: your optional comment "
        "(text/html), then a header block (From, Date, Subject, To) and the original body; "
        "the original's attachments are carried over, those in `attachments` added after "
        "them. A forward starts a new thread (no In-Reply-To); to continue the conversation "
        "use reply_to_message. Mail the agent sent cannot be forwarded (the gateway does not "
        "keep its body). The answer's status is accepted (stored and queued for sending) or "
        "pending_review (held for a person's approval): both are success, do not forward "
        "again.",
        ForwardArguments,
        forward_message,
        read_only=False,
    ),
    ToolSpec(
        "get_message_lifecycle",
        "Get message lifecycle (beta)",
        "Beta: the transitions the gateway keeps for one inbound or outbound message, oldest "
        "first (accepted, authentication, review, queued, submission), reconstructed from "
        "its state. It does not claim inbox placement. Pass next_cursor back as `cursor` "
        "while it is present.",
        LifecycleArguments,
        get_message_lifecycle,
    ),
)
