"""In-process fan-out: live subscriptions to agents' mail (the job workers' wake-up is
`job_queue`).

A subscription is bound to the agent's internal id (never its address, which can pass to
another user), to the API key that opened it and, a dashboard stream, to its session; deleting
the agent, revoking the key, deleting the account or signing the session out ends it at once,
and so does the key's expiry, or the session's, when that time comes. The hub holds nothing
that is not in storage.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import trio

from e2a_gateway.clock import parse_timestamp
from e2a_gateway.hub.frames import NotifiableMessage, notification_frame
from e2a_gateway.hub.sole import SoleConnections
from e2a_gateway.storage.announcements import RevokedKind

log = logging.getLogger("e2a.hub")

SUBSCRIBER_BUFFER = 1024

Channel = Literal["websocket", "dashboard"]


class Ended(enum.Enum):
    """Why the hub ended a subscription; the value is what its client is told."""

    BEHIND = "too far behind; reconnect to catch up"
    AGENT_DELETED = "the agent was deleted"
    KEY_REVOKED = "the API key was revoked"
    KEY_EXPIRED = "the API key expired"
    ACCOUNT_DELETED = "the account was deleted"
    SIGNED_OUT = "the session was signed out"
    SESSION_EXPIRED = "the session expired"


_ENDED_BY: dict[RevokedKind, Ended] = {
    "agent": Ended.AGENT_DELETED,
    "key": Ended.KEY_REVOKED,
    "user": Ended.ACCOUNT_DELETED,
    "session": Ended.SIGNED_OUT,
}


@dataclass(frozen=True)
class Listener:
    """Whom a subscription serves: an agent (by id), its owner, the API key that opened it
    (by SHA-256 hash), the kind of connection, and when that key expires (RFC 3339; None:
    never); a dashboard stream also names its session (id, and when it ends: seconds since the
    epoch)."""

    agent_id: str
    user_id: str
    key_hash: str
    channel: Channel
    key_expires_at: str | None = None
    session_id: str | None = None
    session_ends_at: int | None = None


@dataclass(frozen=True)
class Revocation:
    """Access that has ended: an agent deleted (`agent`, its id), an API key revoked (`key`,
    its hash), an account deleted (`user`, its id) or a dashboard session signed out
    (`session`, its id)."""

    kind: RevokedKind
    value: str


class TooManyListeners(Exception):
    """The API key already holds `limit` subscriptions of this kind."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} per API key")
        self.limit = limit


class Subscription:
    """One listener's stream of notifications, until the hub ends it or the listener leaves.

    After falling behind, the notifications already buffered are still handed out; once
    access is revoked, nothing more is. Whether a notice is of mail a drain of unread mail
    sent already is for its reader to ask (`drained`, `sent_by_drain`)."""

    def __init__(
        self, listener: Listener, receive: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> None:
        self.listener = listener
        self.ended: Ended | None = None
        """Why the hub ended it; None while it is live."""
        self._receive = receive
        key_deadline = _deadline_of(listener.key_expires_at)
        session_deadline = _deadline_at(listener.session_ends_at)
        self._expires = min(key_deadline, session_deadline)
        self._expiry = (
            Ended.KEY_EXPIRED if key_deadline <= session_deadline else Ended.SESSION_EXPIRED
        )
        self._drained_through = 0

    def drained(self, through_seq: int) -> None:
        """A drain of the agent's unread mail just ended, the last message it sent numbered
        `through_seq` in the agent's mail (its `seq`; 0 when it sent none)."""
        self._drained_through = through_seq

    def sent_by_drain(self, seq: int) -> bool:
        """Whether the notice of the message numbered `seq` in its agent's mail is of one the
        drain covered, however late the notice comes: an agent's mail commits in the order it
        is numbered (a held message released takes the next number), and every notice is
        published after its commit, so mail numbered up to the drain's last message was
        committed before the drain read it (sent then, or already read); later numbers are
        mail the drain never saw. Nothing is kept per message: a connection that drained a
        large backlog holds no ids."""
        return seq <= self._drained_through

    @property
    def revoked(self) -> bool:
        """True once the access it depended on ended (agent, key, account or session gone, or
        the key or session past its expiry)."""
        self._note_expiry()
        return self.ended not in (None, Ended.BEHIND)

    def _note_expiry(self) -> None:
        """Mark the subscription ended once its key, or its session, is past its expiry."""
        if self.ended is None and trio.current_time() >= self._expires:
            self.ended = self._expiry

    async def receive(self) -> dict[str, Any] | None:
        """The next notification, or None once the subscription has ended."""
        if self.revoked:
            return None
        with trio.move_on_at(self._expires):
            try:
                frame = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return None
            return None if self.revoked else frame
        self._note_expiry()
        return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        frame = await self.receive()
        if frame is None:
            raise StopAsyncIteration
        return frame


def _deadline_of(expires_at: str | None) -> float:
    """The trio clock's reading when a key expiring at `expires_at` (RFC 3339) stops working;
    infinity for a key that never expires."""
    if expires_at is None:
        return math.inf
    return _deadline_at(parse_timestamp(expires_at).timestamp())


def _deadline_at(epoch: float | None) -> float:
    """The trio clock's reading at `epoch` (seconds since the epoch; None: never)."""
    if epoch is None:
        return math.inf
    return trio.current_time() + max(epoch - time.time(), 0.0)


class Hub:
    """Tells live listeners about committed messages. A subscriber that falls behind is dropped
    and catches up from storage when it reconnects."""

    def __init__(self) -> None:
        self._senders: dict[Subscription, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._by_agent: dict[str, set[Subscription]] = {}
        self._per_key: Counter[tuple[str, Channel]] = Counter()
        self.sole = SoleConnections()
        """`/v1` WebSockets: one per agent, a newer one replacing the older."""

    def listener_count(self, key_hash: str, channel: Channel) -> int:
        """How many subscriptions of `channel` the API key with `key_hash` holds open."""
        return self._per_key[(key_hash, channel)]

    @contextmanager
    def subscribe(self, listener: Listener, *, limit: int | None = None) -> Iterator[Subscription]:
        """Receive every notification for `listener.agent_id` while the context is open.
        TooManyListeners when the key already holds `limit` subscriptions of its channel."""
        slot = (listener.key_hash, listener.channel)
        if limit is not None and self._per_key[slot] >= limit:
            raise TooManyListeners(limit)
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        subscription = Subscription(listener, receive)
        self._senders[subscription] = send
        self._by_agent.setdefault(listener.agent_id, set()).add(subscription)
        self._per_key[slot] += 1
        try:
            yield subscription
        finally:
            del self._senders[subscription]
            agent_subscriptions = self._by_agent[listener.agent_id]
            agent_subscriptions.discard(subscription)
            if not agent_subscriptions:
                del self._by_agent[listener.agent_id]
            self._per_key[slot] -= 1
            if not self._per_key[slot]:
                del self._per_key[slot]
            send.close()
            receive.close()

    def subscriber_count(self, agent_id: str) -> int:
        """How many live subscriptions the agent `agent_id` has."""
        return sum(1 for sub in self._by_agent.get(agent_id, ()) if sub.ended is None)

    def publish(self, agent_id: str, notification: dict[str, Any]) -> None:
        """Hand `notification` to every live subscriber of the agent; a full one is ended."""
        for subscription in list(self._by_agent.get(agent_id, ())):
            if subscription.ended is not None:
                continue
            try:
                self._senders[subscription].send_nowait(notification)
            except trio.WouldBlock:
                log.warning("a subscriber of agent %s fell behind; closing it", agent_id)
                self._end(subscription, Ended.BEHIND)

    def publish_message(self, agent_id: str, message: NotifiableMessage) -> None:
        """Tell the live subscribers of the agent `agent_id` of `message`, just committed for it
        (`publish` of its notification frame, built only when someone listens)."""
        if agent_id in self._by_agent and self.subscriber_count(agent_id):
            self.publish(agent_id, notification_frame(message))

    def close_subscriptions(self, agent_id: str | None = None) -> None:
        """End the subscriptions of the agent `agent_id` (of every agent when None), as if they
        fell behind: their WebSocket clients reconnect and catch up from storage. Used when
        notifications may have been missed, e.g. after the cross-replica fan-out reconnects."""
        if agent_id is None:
            chosen: Iterable[Subscription] = list(self._senders)
        else:
            chosen = list(self._by_agent.get(agent_id, ()))
        for subscription in chosen:
            self._end(subscription, Ended.BEHIND)

    def revoke(self, revocation: Revocation) -> None:
        """End, at once, every subscription that depended on the access that ended: the
        deleted agent's, the revoked key's, the signed-out session's, or every one of the
        deleted account."""
        if revocation.kind == "agent":
            chosen = list(self._by_agent.get(revocation.value, ()))
        elif revocation.kind == "key":
            chosen = [sub for sub in self._senders if sub.listener.key_hash == revocation.value]
        elif revocation.kind == "session":
            chosen = [sub for sub in self._senders if sub.listener.session_id == revocation.value]
        else:
            chosen = [sub for sub in self._senders if sub.listener.user_id == revocation.value]
        for subscription in chosen:
            self._end(subscription, _ENDED_BY[revocation.kind])

    def _end(self, subscription: Subscription, reason: Ended) -> None:
        """Mark `subscription` ended and close it. The first reason stays, except that a
        revocation overrides falling behind (buffered frames are then not handed out)."""
        if subscription.ended in (None, Ended.BEHIND):
            subscription.ended = reason
        self._senders[subscription].close()
