"""The record of an accepted inbound message for one agent, as storage takes it.

Its own module because both the storage interface (`base`) and what a commit announces
(`announcements`) speak of it, and neither should import the other to do so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from e2a_gateway.attachments import Attachment

COPY_OWN_FIELDS = frozenset(
    {
        "id",
        "agent_email",
        "conversation_id",
        "auth_headers",
        "hold_expires_at",
        "flag_reason",
        "blocked",
    }
)
"""The fields in which the copies of one message for several agents differ."""


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

    @cached_property
    def content_key(self) -> tuple[Any, ...]:
        """What the copies of this message for other agents share (all but COPY_OWN_FIELDS),
        as a key by value: storage keeps one content row for messages with equal keys, and
        folds their `email.received` events into one row per account. Worked out once, and
        handed on by `copy_for` to the copies, which hold the same key object."""
        return (
            self.raw_message,
            self.received_at,
            self.envelope_from,
            self.from_addr,
            self.reply_to,
            self.subject,
            self.rfc_message_id,
            self.client_ip,
            self.helo,
            tuple(self.to),
            tuple(self.cc),
            tuple(self.authentication_results.items()),
            self.attachments,
        )

    def copy_for(self, **own: Any) -> NewInboundMessage:
        """This message as another agent's copy: `own` gives the fields of COPY_OWN_FIELDS
        that differ, the rest are this message's (its `content_key` too); TypeError for any
        other field. Made without the frozen dataclass's `__init__`, which sets each of its 21
        fields through `object.__setattr__`: about 2 us a copy, against 0.7."""
        if not own.keys() <= COPY_OWN_FIELDS:
            raise TypeError(f"not a copy's own field: {sorted(own.keys() - COPY_OWN_FIELDS)}")
        self.content_key  # worked out before the copy takes this message's fields  # noqa: B018
        copy = object.__new__(NewInboundMessage)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(own)
        return copy


T = TypeVar("T")


class ByContent(Generic[T]):
    """A value kept per content (equal `content_key`s), made by `new` when a message of that
    content is first met. A key is hashed once per key object: the copies `copy_for` made share
    their first copy's, so fifty copies cost one hash, not fifty of a 13-field tuple."""

    def __init__(self, new: Callable[[], T]) -> None:
        self._new = new
        self._by_key: dict[tuple[Any, ...], T] = {}
        self._by_key_object: dict[int, T] = {}
        """By `id` of the key object; the keys in `_by_key` keep those objects alive."""

    def of(self, message: NewInboundMessage) -> T:
        """The value kept for `message`'s content."""
        key = message.content_key
        value = self._by_key_object.get(id(key))
        if value is None:
            value = self._by_key.get(key)
            if value is None:
                value = self._by_key[key] = self._new()
            self._by_key_object[id(key)] = value
        return value

    def values(self) -> list[T]:
        """Every value kept, in the order its content was first met."""
        return list(self._by_key.values())
