"""Rounds of periodic work that the database may fail: a round it fails (a lost connection, a
lock wait cancelled, a database that takes no writes) is said once in the log, as a warning
without a traceback, and the work is made again at its next tick. Ending the worker instead
would have its supervisor log a crash and restart it after a backoff, and would cut short the
work in flight beside the round."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from e2a_gateway.storage.base import StorageError

T = TypeVar("T")


class Rounds:
    """The rounds of one worker, named by what they do: a kind of round the database fails is
    said once in `log`, until a round of that kind works again (said too)."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._failing: set[str] = set()
        """The kinds of round whose last try the database failed."""

    async def run(self, what: str, work: Awaitable[T]) -> T | None:
        """Await one round of `what`; None when the database failed it."""
        try:
            result = await work
        except StorageError as exc:
            if what not in self._failing:
                self._log.warning("%s: the database failed (%s); trying again", what, exc)
                self._failing.add(what)
            return None
        if what in self._failing:
            self._log.info("%s: the database answers again", what)
            self._failing.discard(what)
        return result
