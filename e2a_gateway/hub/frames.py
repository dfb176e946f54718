"""The WebSocket notification frame: what a local agent is told about a new message."""

from __future__ import annotations

from typing import Any, Protocol


class NotifiableMessage(Protocol):
    """The fields a notification is built from (stored or just-accepted messages)."""

    @property
    def id(self) -> str: ...

    @property
    def from_addr(self) -> str: ...

    @property
    def agent_email(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def received_at(self) -> str: ...

    @property
    def conversation_id(self) -> str | None: ...


def notification_frame(message: NotifiableMessage) -> dict[str, Any]:
    """`{"message_id", "conversation_id", "from", "recipient", "subject", "received_at"}`,
    without body, to or cc, and without conversation_id when it is null."""
    frame: dict[str, Any] = {
        "message_id": message.id,
        "from": message.from_addr,
        "recipient": message.agent_email,
        "subject": message.subject,
        "received_at": message.received_at,
    }
    if message.conversation_id is not None:
        frame["conversation_id"] = message.conversation_id
    return frame
