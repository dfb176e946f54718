"""What a committed write announces: jobs added, access ended, a message stored.

A unit of work announces as it goes (`Transaction.announce`); only once it has committed does
storage hand the announcements to this process's observers and, with PostgreSQL, to the other
replicas (`notify_payloads`). Plain data: nothing here knows who listens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from e2a_gateway.storage.base import NewInboundMessage

RevokedKind = Literal["agent", "key", "user"]


@dataclass(frozen=True)
class JobsAdded:
    """Jobs of `kind` were queued, due now: the workers of that kind should look for work."""

    kind: str


@dataclass(frozen=True)
class AccessEnded:
    """An agent was deleted (`value` its id), an API key revoked (its hash) or an account
    deleted (its id): live subscriptions that depended on it end on every replica."""

    kind: RevokedKind
    value: str


@dataclass(frozen=True)
class MessageStored:
    """A message was stored for the local agent `agent_id`: its live subscribers, on whichever
    replica, should hear of it."""

    agent_id: str
    message: NewInboundMessage


Announcement = JobsAdded | AccessEnded | MessageStored

CommitObserver = Callable[[Sequence[Announcement]], None]
"""Called, on the event loop, with what one write announced, once that write has committed."""
