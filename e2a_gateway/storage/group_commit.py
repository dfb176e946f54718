"""Group commit: several callers' writes in one storage transaction.

Every caller waits for the commit that holds its own item, so "stored" still means "on disk";
but one transaction (one fsync) serves everyone who arrived while the previous one ran.
`GroupCommit` is the mechanism; `GroupCommitter` applies it to inbound mail (several SMTP
sessions' messages per transaction) and the webhook worker to its attempt records. It keeps
nothing of its own beyond what is being committed, and must never report an item stored that
was not, nor fail one that was.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from e2a_gateway.storage.base import Mailboxes, StorageUnavailable
from e2a_gateway.storage.new_inbound import NewInboundMessage

__all__ = ["BatchObserver", "GroupCommit", "GroupCommitter"]

log = logging.getLogger("e2a.storage")

T = TypeVar("T")

BatchObserver = Callable[[int, int, float], None]
"""Hears each batch once its outcome is known: how many callers' items it held, the count
(`weigh`'s first figure) of those that were stored, and the seconds from taking the batch to
knowing the outcome (fallback commits included)."""


@dataclasses.dataclass(eq=False)
class _Ticket(Generic[T]):
    """One caller's item, waiting for a commit, and how that commit went."""

    item: T
    count: int
    size: int
    done: bool = False
    error: Exception | None = None

    def settle(self, error: Exception | None = None) -> None:
        self.done = True
        self.error = error


class GroupCommit(Generic[T]):
    """Commits callers' items together with `commit(items)`, one transaction for all.

    There is no background task: the first caller to find no commit running becomes the
    leader, takes everything queued (up to the batch limits) and commits it in one
    transaction, shielded from cancellation so that nobody hears "failed" about items that
    were in fact stored. Callers that arrive meanwhile queue up; when the commit ends one of
    them leads the next batch. If a batch fails, each caller's item is committed on its own,
    so that one bad item cannot fail the others. `weigh(item)` gives an item's (count, bytes)
    for the batch limits; `what` names the items in logs; `observe` hears each batch's size
    and time (`BatchObserver`).
    """

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[None]],
        *,
        what: str,
        weigh: Callable[[T], tuple[int, int]] = lambda _: (1, 0),
        max_batch_items: int = 512,
        max_batch_bytes: int = 64 * 1024 * 1024,
        commit_timeout: float = 60.0,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch_items < 1 or max_batch_bytes < 1 or not commit_timeout > 0:
            raise ValueError("batch limits and commit_timeout must be positive")
        self._commit_items = commit
        self._what = what
        self._weigh = weigh
        self._max_batch_items = max_batch_items
        self._max_batch_bytes = max_batch_bytes
        self._commit_timeout = commit_timeout
        self._observe = observe
        self._queue: collections.deque[_Ticket[T]] = collections.deque()
        self._committing = False
        self._batch_ended = trio.Event()
        self.batches = 0
        """Transactions attempted so far (for tests and benchmarks)."""

    async def submit(self, item: T) -> None:
        """Commit `item`, perhaps with other callers' items; return once it is committed.

        Raises what `commit` raised when it could not be committed (nothing of it is stored
        then), or `StorageUnavailable` when the commit took longer than `commit_timeout` (the
        outcome is then unknown).
        """
        ticket = _Ticket(item, *self._weigh(item))
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
        began = trio.current_time()
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = began + self._commit_timeout
                await self._commit(batch)
            for ticket in batch:
                if not ticket.done:
                    ticket.settle(
                        StorageUnavailable(f"commit did not finish in {self._commit_timeout} s")
                    )
            self._report(batch, trio.current_time() - began)
        finally:
            self._committing = False
            ended, self._batch_ended = self._batch_ended, trio.Event()
            ended.set()

    def _report(self, batch: list[_Ticket[T]], seconds: float) -> None:
        """Tell the observer, if any, about a settled batch; its failure is logged, never raised
        to a caller whose item is stored."""
        if self._observe is None:
            return
        stored = sum(ticket.count for ticket in batch if ticket.error is None)
        try:
            self._observe(len(batch), stored, seconds)
        except Exception:
            log.exception("observing a group commit of %s failed", self._what)

    def _take_batch(self) -> list[_Ticket[T]]:
        """The oldest queued tickets within the batch limits (always at least one)."""
        batch = [self._queue.popleft()]
        count, size = batch[0].count, batch[0].size
        while self._queue:
            following = self._queue[0]
            count += following.count
            size += following.size
            if count > self._max_batch_items or size > self._max_batch_bytes:
                break
            batch.append(self._queue.popleft())
        return batch

    async def _commit(self, batch: list[_Ticket[T]]) -> None:
        self.batches += 1
        if len(batch) == 1:
            await self._commit_alone(batch[0])
            return
        try:
            await self._commit_items([ticket.item for ticket in batch])
        except Exception as error:
            log.warning(
                "group commit of %d %s failed (%s); committing each on its own",
                len(batch),
                self._what,
                error,
            )
        else:
            for ticket in batch:
                ticket.settle()
            return
        for ticket in batch:
            self.batches += 1
            await self._commit_alone(ticket)

    async def _commit_alone(self, ticket: _Ticket[T]) -> None:
        try:
            await self._commit_items([ticket.item])
        except Exception as error:
            ticket.settle(error)
        else:
            ticket.settle()


@dataclasses.dataclass(frozen=True)
class _Arrival:
    """One SMTP session's messages (one DATA) and when they arrived."""

    messages: list[NewInboundMessage]
    now: float


class GroupCommitter:
    """Group commit of inbound mail; a drop-in for `Storage.store_inbound`.

    Every session's messages go into the next transaction together with those of every other
    session that finished DATA meanwhile (see `GroupCommit`); a batch stays within
    `max_batch_messages` and `max_batch_bytes` of raw message (each DATA counted once, as it
    is stored once however many agents it goes to). `observe` hears each transaction's
    sessions' DATAs, the messages (one per agent) stored, and its seconds.
    """

    def __init__(
        self,
        store: Mailboxes,
        *,
        max_batch_messages: int = 512,
        max_batch_bytes: int = 64 * 1024 * 1024,
        commit_timeout: float = 60.0,
        observe: BatchObserver | None = None,
    ) -> None:
        self._store = store
        self._group = GroupCommit(
            self._store_arrivals,
            what="sessions' messages",
            weigh=_weigh_arrival,
            max_batch_items=max_batch_messages,
            max_batch_bytes=max_batch_bytes,
            commit_timeout=commit_timeout,
            observe=observe,
        )

    @property
    def batches(self) -> int:
        """Transactions attempted so far (for tests and benchmarks)."""
        return self._group.batches

    async def store_inbound(self, messages: list[NewInboundMessage], now: float) -> None:
        """Commit `messages` atomically, perhaps with other callers' messages; return once done.

        Raises what the store raised when they could not be committed (nothing of them is
        stored then), or `StorageUnavailable` when the commit took longer than
        `commit_timeout` (the outcome is then unknown).
        """
        await self._group.submit(_Arrival(messages, now))

    async def _store_arrivals(self, arrivals: list[_Arrival]) -> None:
        messages = [message for arrival in arrivals for message in arrival.messages]
        await self._store.store_inbound(messages, max(arrival.now for arrival in arrivals))


def _weigh_arrival(arrival: _Arrival) -> tuple[int, int]:
    """Messages, and bytes of raw message: a message's recipients share one copy of it."""
    distinct = {id(message.raw_message): message.raw_message for message in arrival.messages}
    return len(arrival.messages), sum(len(raw) for raw in distinct.values())
