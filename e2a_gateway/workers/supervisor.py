"""Keep long-running tasks alive: a crash is logged with context and the task restarts with backoff.

A task that returns normally is finished and not restarted. Cancellation (shutdown) passes
straight through, also when a task's nursery fails and is cancelled at the same moment (its
group of errors holds both): the failure is logged and only the cancellation goes on.
Backoff doubles from `first_delay` to `max_delay` and starts again from `first_delay` once a
run has stayed up for `max_delay`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("e2a.workers")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    first_delay: float = 1.0,
    max_delay: float = 60.0,
) -> None:
    """Run `run()` until it returns, restarting it after each exception with backoff."""
    delay = first_delay
    while True:
        started = trio.current_time()
        try:
            await run()
        except Exception:
            if trio.current_time() - started >= max_delay:
                delay = first_delay
            log.exception("%s crashed; restarting in %.1f s", name, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, max_delay)
        except BaseExceptionGroup as group:  # holds more than errors: a cancellation too
            cancelled, crashed = group.split(trio.Cancelled)
            if cancelled is None or crashed is None:
                raise
            log.error("%s crashed while stopping", name, exc_info=crashed)
            raise cancelled from None
        else:
            log.info("%s finished", name)
            return
