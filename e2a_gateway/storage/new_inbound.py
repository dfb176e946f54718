"""The record of an accepted inbound message for one agent, as storage takes it.

Its own module because both the storage interface (`base`) and what a commit announces
(`announcements`) speak of it, and neither should import the other to do so.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2a_gateway.attachments import Attachment


@dataclass(frozen=True)
class NewInboundMessage:
    """An accepted inbound message for one recipient agent, ready to be stored."""

    id: str
    agent_email: str
    envelope_from: str
    from_addr: str
    reply_to: str | None
    to: list[str]
    cc: list[str]
    subject: str
    conversation_id: str | None
    rfc_message_id: str | None
    raw_message: bytes
    auth_headers: dict[str, str]
    authentication_results: dict[str, str]
    received_at: str
    client_ip: str = ""
    helo: str = ""
    hold_expires_at: float | None = None
    """Set when the agent's inbound gate holds the message for review: stored, not delivered,
    until it is approved, rejected, or this epoch passes (the agent's expiration action)."""
    flag_reason: str | None = None
    """Why the agent's inbound gate flagged the message (delivered, annotated), held it or
    blocked it."""
    attachments: tuple[Attachment, ...] = ()
    """Its attachments' metadata, worked out once for every agent's copy."""
    blocked: bool = False
    """Set when the agent's inbound gate blocks the message: accepted, then kept quarantined
    (as a review rejected without a human), never delivered: e2a's accept-then-quarantine."""
    raw_digest: str | None = None
    """The SHA-256 (lowercase hex) of `raw_message` when it was worked out already (the body
    hash the copy is signed with), so storage need not digest the bytes again."""

    @property
    def delivered(self) -> bool:
        """Whether the message reaches its agent now (neither held for review nor blocked)."""
        return self.hold_expires_at is None and not self.blocked
