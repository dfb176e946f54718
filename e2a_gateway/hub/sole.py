"""One live connection per agent, as e2a's `/v1` WebSocket has it: a newer connection for an
agent replaces the older one, which is told so and must not reconnect. In-process: each
replica keeps its own (a client reaches one replica per connection)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class Claim:
    """An agent's connection slot while one connection holds it; `replaced` fires when a newer
    connection takes it."""

    def __init__(self) -> None:
        self.replaced = trio.Event()


class SoleConnections:
    """Which connection holds each agent's slot (by the agent's id)."""

    def __init__(self) -> None:
        self._holders: dict[str, Claim] = {}

    @contextmanager
    def claim(self, agent_id: str) -> Iterator[Claim]:
        """Hold the agent's slot while the context is open; the previous holder is replaced."""
        claim = Claim()
        previous = self._holders.get(agent_id)
        if previous is not None:
            previous.replaced.set()
        self._holders[agent_id] = claim
        try:
            yield claim
        finally:
            if self._holders.get(agent_id) is claim:
                del self._holders[agent_id]
