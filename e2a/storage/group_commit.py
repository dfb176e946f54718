"""Group commit for inbound mail: several SMTP sessions' messages in one storage transaction.

Every caller waits for the commit that holds its own messages, so "stored" still means "on
disk"; but one transaction (one fsync) serves everyone who arrived while the previous one ran.
It works over any backend's `store_inbound`, keeps no messages of its own beyond those being
committed, and must never report a message stored that was not, nor fail one that was.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Protocol

import trio

from e2a.storage.base import NewInboundMessage, StorageUnavailable

__all__ = ["GroupCommitter", "InboundStore"]

log = logging.getLogger("e2a.storage")


class InboundStore(Protocol):
    """The part of `Storage` that group commit builds on."""

    async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
        """Commit `messages` (and their jobs) in one transaction, or raise and commit none."""
        ...


@dataclasses.dataclass(eq=False)
class _Ticket:
    """One caller's messages, waiting for a commit, and how that commit went."""

    messages: list[NewInboundMessage]
    now: float
    size: int
    done: bool = False
    error: Exception | None = None

    def settle(self, error: Exception | None = None) -> None:
        self.done = True
        self.error = error


class GroupCommitter:
    """Commits callers' messages together; a drop-in for `Storage.store_inbound`.

    There is no background task: the first caller to find no commit running becomes the
    leader, takes everything queued (up to the batch limits) and commits it in one
    transaction, shielded from cancellation so that nobody hears "failed" about messages that
    were in fact stored. Callers that arrive meanwhile queue up; when the commit ends one of
    them leads the next batch. If a batch fails, each caller's messages are committed on their
    own, so that one bad message cannot fail the others.
    """

    def __init__(
        self,
        store: InboundStore,
        *,
        max_batch_messages: int = 512,
        max_batch_bytes: int = 64 * 1024 * 1024,
        commit_timeout: float = 60.0,
    ) -> None:
        if max_batch_messages < 1 or max_batch_bytes < 1 or not commit_timeout > 0:
            raise ValueError("batch limits and commit_timeout must be positive")
        self._store = store
        self._max_batch_messages = max_batch_messages
        self._max_batch_bytes = max_batch_bytes
        self._commit_timeout = commit_timeout
        self._queue: collections.deque[_Ticket] = collections.deque()
        self._committing = False
        self._batch_ended = trio.Event()
        self.batches = 0
        """Transactions attempted so far (for tests and benchmarks)."""

    async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
        """Commit `messages` atomically, perhaps with other callers' messages; return once done.

        Raises what the store raised when they could not be committed (nothing of them is
        stored then), or `StorageUnavailable` when the commit took longer than
        `commit_timeout` (the outcome is then unknown).
        """
        size = sum(len(message.raw_message) for message in messages)
        ticket = _Ticket(messages, now, size)
        self._queue.append(ticket)
        try:
            while not ticket.done:
                if self._committing:
                    await self._batch_ended.wait()
                else:
                    await self._lead_batch()
        except BaseException:
            if not ticket.done and ticket in self._queue:
                self._queue.remove(ticket)  # never taken into a batch: nothing was stored
            raise
        if ticket.error is not None:
            raise ticket.error

    async def _lead_batch(self) -> None:
        self._committing = True
        batch = self._take_batch()
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._commit_timeout
                await self._commit(batch)
            for ticket in batch:
                if not ticket.done:
                    ticket.settle(
                        StorageUnavailable(f"commit did not finish in {self._commit_timeout} s")
                    )
        finally:
            self._committing = False
            ended, self._batch_ended = self._batch_ended, trio.Event()
            ended.set()

    def _take_batch(self) -> list[_Ticket]:
        """The oldest queued tickets within the batch limits (always at least one)."""
        batch = [self._queue.popleft()]
        count, size = len(batch[0].messages), batch[0].size
        while self._queue:
            following = self._queue[0]
            count += len(following.messages)
            size += following.size
            if count > self._max_batch_messages or size > self._max_batch_bytes:
                break
            batch.append(self._queue.popleft())
        return batch

    async def _commit(self, batch: list[_Ticket]) -> None:
        self.batches += 1
        if len(batch) == 1:
            await self._commit_alone(batch[0])
            return
        messages = [message for ticket in batch for message in ticket.messages]
        try:
            await self._store.store_inbound(messages, max(ticket.now for ticket in batch))
        except Exception as error:
            log.warning(
                "group commit of %d messages from %d sessions failed (%s); "
                "committing each session's messages on their own",
                len(messages),
                len(batch),
                error,
            )
        else:
            for ticket in batch:
                ticket.settle()
            return
        for ticket in batch:
            self.batches += 1
            await self._commit_alone(ticket)

    async def _commit_alone(self, ticket: _Ticket) -> None:
        try:
            await self._store.store_inbound(ticket.messages, ticket.now)
        except Exception as error:
            ticket.settle(error)
        else:
            ticket.settle()
