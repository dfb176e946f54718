"""The grace a stopping worker gives its hand-offs to the relay in flight: cut short, one the relay
already holds would be handed to it again after the restart, and its recipient would get it twice.

It shields work from the worker's cancellation until `seconds` after the stop; it must not
delay a stop when nothing is in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio

log = logging.getLogger("e2a.workers")


class StopGrace:
    """Work run under `shielded()` goes on for up to `seconds` after `stop()` (or after the
    task running `stop_when_cancelled` is cancelled); `what` names it in the log."""

    def __init__(self, seconds: float, what: str) -> None:
        self._seconds = seconds
        self._what = what
        self._scopes: set[trio.CancelScope] = set()
        self._deadline: float | None = None

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Run the block shielded from cancellation until the grace period after the stop
        ends (at once cancelled, should it begin after that)."""
        scope = trio.CancelScope(shield=True)
        if self._deadline is not None:
            scope.deadline = self._deadline
        self._scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._scopes.discard(scope)

    @property
    def stopping(self) -> bool:
        """Whether the grace period has begun: work under way should start nothing new."""
        return self._deadline is not None

    def stop(self) -> None:
        """Start the grace period: what runs shielded now, or starts later, is cancelled once it
        has passed."""
        self._deadline = trio.current_time() + self._seconds
        if self._scopes:
            log.info(
                "letting %d %s in flight finish (at most %g s)",
                len(self._scopes),
                self._what,
                self._seconds,
            )
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, self._deadline)

    async def stop_when_cancelled(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Begin a run: the grace period an earlier one's end began is over (a supervisor runs
        a crashed worker again, and must not find it stopping); then wait until cancelled, and
        `stop()`. Start it with `nursery.start`, beside the work, in the worker's nursery."""
        self._deadline = None
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.stop()
