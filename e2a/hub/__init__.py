"""In-process fan-out: WebSocket subscribers per agent, and a wake-up for the job workers."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

log = logging.getLogger("e2a.hub")

SUBSCRIBER_BUFFER = 1024


class Hub:
    """Tells live listeners about committed messages. Holds nothing that is not in storage:
    a subscriber that falls behind is dropped and catches up from storage when it reconnects."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[trio.MemorySendChannel[dict[str, Any]]]] = defaultdict(set)
        self._jobs_waiting = trio.Event()

    @contextmanager
    def subscribe(self, agent_email: str) -> Iterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        """Receive every notification for `agent_email` while the context is open."""
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        self._subscribers[agent_email].add(send)
        try:
            yield receive
        finally:
            self._subscribers[agent_email].discard(send)
            if not self._subscribers[agent_email]:
                del self._subscribers[agent_email]
            send.close()

    def subscriber_count(self, agent_email: str) -> int:
        """How many live subscriptions `agent_email` has."""
        return len(self._subscribers.get(agent_email, ()))

    def publish(self, agent_email: str, notification: dict[str, Any]) -> None:
        """Hand `notification` to every subscriber of the agent; a full subscriber is closed."""
        for channel in list(self._subscribers.get(agent_email, ())):
            try:
                channel.send_nowait(notification)
            except trio.WouldBlock:
                log.warning("subscriber of %s fell behind; closing it", agent_email)
                channel.close()
                self._subscribers[agent_email].discard(channel)
            except trio.ClosedResourceError:
                self._subscribers[agent_email].discard(channel)

    def close_subscriptions(self, agent_email: str | None = None) -> None:
        """End the subscriptions of `agent_email` (of every agent when None), as if they fell
        behind: their WebSocket clients reconnect and catch up from storage. Used when
        notifications may have been missed, e.g. after the cross-replica fan-out reconnects."""
        agents = list(self._subscribers) if agent_email is None else [agent_email]
        for agent in agents:
            for channel in self._subscribers.pop(agent, set()):
                channel.close()

    def jobs_added(self) -> None:
        """Wake the job workers now instead of at their next poll."""
        self._jobs_waiting.set()
        self._jobs_waiting = trio.Event()

    def job_signal(self) -> trio.Event:
        """An event set by the next `jobs_added`. Take it *before* looking for work, so jobs
        added while a worker is busy are not missed."""
        return self._jobs_waiting
