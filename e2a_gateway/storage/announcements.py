"""What a committed write announces (jobs added, access ended, a message stored), and news told
to the other replicas on its own (a `/v1` WebSocket claimed).

A unit of work announces as it goes (`Transaction.announce`); only once it has committed does
storage hand the announcements to this process's observers and, with PostgreSQL, to the other
replicas (`notify_payloads`); `Storage.announce` tells the other replicas without a write.
Plain data: nothing here knows who listens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from e2a_gateway.storage.new_inbound import NewInboundMessage

RevokedKind = Literal["agent", "key", "user", "session"]


@dataclass(frozen=True)
class JobsAdded:
    """Jobs of `kind` were queued, due now: the workers of that kind should look for work."""

    kind: str


@dataclass(frozen=True)
class AccessEnded:
    """An agent was deleted (`value` its id), an API key revoked (its hash), an account
    deleted (its id) or a dashboard session signed out (its id): live subscriptions that
    depended on it end on every replica."""

    kind: RevokedKind
    value: str


@dataclass(frozen=True)
class MessageStored:
    """A message was stored for the local agent `agent_id`: its live subscribers, on whichever
    replica, should hear of it."""

    agent_id: str
    message: NewInboundMessage


@dataclass(frozen=True)
class MailErased:
    """Mail was erased with its account or agent: `raw_digests` are the digests (`raw_digest`)
    of the raw messages it held, so this process forgets what it kept of them (their parsed
    bodies). Told to this process alone: another replica's kept bodies of erased mail are
    reachable by no request (the rows are gone), and age out as it reads other mail."""

    raw_digests: tuple[str, ...]


@dataclass(frozen=True)
class SocketClaimed:
    """A `/v1` WebSocket took the agent `agent_id`'s connection slot on some replica. Claims are
    ordered by (`claimed_at`, `claim_id`): the greatest is the one connection left open, on
    every replica alike (`e2a_gateway.hub.sole`). `claimed_at` is in nanoseconds since the
    epoch, on the claiming replica's claim clock; `claim_id` is random, unique per claim."""

    agent_id: str
    claimed_at: int
    claim_id: str


Announcement = JobsAdded | AccessEnded | MessageStored | MailErased | SocketClaimed

CommitObserver = Callable[[Sequence[Announcement]], None]
"""Called, on the event loop, with what one write announced, once that write has committed."""
