"""The round loop shared by the workers that claim due jobs: look, start what was claimed, and
wait for a wake-up (jobs committed or a slot freed) or the poll interval when idle. A look the
database fails is tried again at the next round; the attempts in flight go on meanwhile."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

import trio

from e2a_gateway.gateway import Gateway
from e2a_gateway.storage.base import StorageUnavailable

log = logging.getLogger("e2a.workers")


class ClaimLoop(ABC):
    """A worker that claims due jobs of `job_kind` in rounds, at most `max_in_flight` at once.

    Subclasses say how many attempts are in flight and how to claim and start them
    (`_dispatch`); `run()` loops until cancelled."""

    job_kind: str
    max_in_flight: int

    def __init__(self, gateway: Gateway, clock: Callable[[], float], poll_seconds: float) -> None:
        self._gateway = gateway
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._wake = trio.Event()
        self._unavailable = False
        """Whether the last look failed for storage (said once, until a look works)."""

    @abstractmethod
    def _in_flight(self) -> int:
        """How many attempts are running or waiting for a slot."""

    @abstractmethod
    async def _dispatch(self, nursery: trio.Nursery, now: float, limit: int) -> int:
        """Claim up to `limit` jobs due at `now`, start an attempt for each in `nursery` and
        return how many were claimed."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Work on due jobs until cancelled, waking early when jobs are committed or a slot
        frees up; report started once the first look at the queue is done."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._gateway.jobs.wake_on_jobs, self.job_kind, self._wake_up)
            idle = await self._look(nursery)
            task_status.started()
            while True:
                if idle:
                    with trio.move_on_after(self._poll_seconds):
                        await self._wake.wait()
                idle = await self._look(nursery)

    async def _look(self, nursery: trio.Nursery) -> bool:
        """Claim what is due and has room; True when nothing was or no slot is left, storage
        failed the look, or this replica refuses the database's schema, so the worker should
        wait. The wake-up is armed first: work arriving
        meanwhile is not missed."""
        self._wake = trio.Event()
        if self._gateway.schema_refusal is not None:
            return True  # a newer e2a migrated the database: claim nothing (schema_watch)
        free = self.max_in_flight - self._in_flight()
        try:
            claimed = await self._dispatch(nursery, self._clock(), free) if free > 0 else 0
        except StorageUnavailable as exc:
            # Not a crash: that would cancel the attempts in flight, to be made again after
            # their leases (a POST or a send twice). Look again after the poll interval.
            if not self._unavailable:
                log.warning(
                    "%s jobs: cannot look at the queue (%s); trying again", self.job_kind, exc
                )
            self._unavailable = True
            return True
        if self._unavailable:
            log.info("%s jobs: looking at the queue again", self.job_kind)
            self._unavailable = False
        return claimed == 0 or self._in_flight() >= self.max_in_flight

    def _wake_up(self) -> None:
        """Look at the queue again now (jobs were added, or a slot is free)."""
        self._wake.set()
