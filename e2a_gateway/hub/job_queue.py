"""The job queue as this process's workers see it: the jobs are rows in storage; this wakes the
workers of a kind as soon as a commit adds jobs of that kind.

Storage reports every committed write's announcements (`committed`, its commit observer); the
cross-replica fan-out reports other replicas' (`jobs_added`). A missed wake-up costs a poll
interval, never a job: workers also poll.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NoReturn

import trio

from e2a_gateway.storage.announcements import Announcement, JobsAdded


class JobQueue:
    """Wake-ups for the job workers, one per job kind."""

    def __init__(self) -> None:
        self._added: dict[str, trio.Event] = {}

    def committed(self, announcements: Sequence[Announcement]) -> None:
        """Storage's commit observer: wake the workers of every kind of job the write added."""
        self.jobs_added({item.kind for item in announcements if isinstance(item, JobsAdded)})

    def jobs_added(self, kinds: Collection[str] | None = None) -> None:
        """Wake the workers of `kinds` (None: of every kind) now instead of at their next poll."""
        for kind in list(self._added) if kinds is None else kinds:
            waiting = self._added.pop(kind, None)
            if waiting is not None:
                waiting.set()

    def added(self, kind: str) -> trio.Event:
        """An event set once jobs of `kind` are next added. Take it *before* looking for work,
        so jobs added while the worker is busy are not missed."""
        return self._added.setdefault(kind, trio.Event())

    async def wake_on_jobs(self, kind: str, wake: Callable[[], None]) -> NoReturn:
        """Call `wake` each time jobs of `kind` are added, until cancelled."""
        while True:
            await self.added(kind).wait()
            wake()
