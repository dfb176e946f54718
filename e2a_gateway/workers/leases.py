"""The lease a worker holds on a job it hands to the relay (an outbound send, an approval notice
or answer), and its renewal while the hand-off goes on.

A hand-off takes as long as it takes (each step of it has its own bound: a large message over a
slow link goes on for many minutes), so no lease is made to cover it: the lease is short, so
that the jobs of a replica that dies are taken over soon, and renewed every third of it while
the hand-off goes on, so that no other replica takes the job and mails it again meanwhile.

The webhook workers hold their leases as `HeldLease` too, but keep them otherwise: a POST is
bounded by its timeout, so their lease is made to outlast it and is renewed, when worn down,
only as the POST starts (`webhooks.HostPacedWorker`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from e2a_gateway.storage.base import JobQueueStore, StorageUnavailable

log = logging.getLogger("e2a.workers")

JOB_LEASE_SECONDS = 120.0
"""How long a claim or a renewal leases a job handed to the relay: the most a replica that
died holds its jobs from the others. Renewed every third of it during a hand-off, so a renewal
has two thirds of it (80 s) to be made: the event loop busy or the database slow for that long
before a renewal is made lets another replica take the job."""

RENEWALS_PER_LEASE = 3
"""A held lease is renewed this many times per its length while a hand-off goes on."""


@dataclass
class HeldLease:
    """The lease a worker holds on a job (or a `/v1` webhook delivery): until `until` as
    storage holds it (the claim's, or as renewed since), which ends no sooner than `ends` on
    the worker's clock (the clock read before the claim or renewal, plus the lease's seconds:
    storage times leases by the database's clock, which may differ from the worker's)."""

    until: float
    ends: float


@dataclass
class KeptLease:
    """What became of a lease kept during a hand-off (`lease_kept`)."""

    lost: bool = False
    """Whether it passed to another claim, or ran out unrenewed on the worker's clock (the
    database failing every renewal): the job is that claim's now, and the hand-off should hand
    on nothing more it can stop."""


@asynccontextmanager
async def lease_kept(
    storage: JobQueueStore,
    job_id: int,
    current: Callable[[], HeldLease | None],
    seconds: float,
    clock: Callable[[], float],
    what: str,
) -> AsyncIterator[KeptLease]:
    """Renew the lease held on job `job_id` every third of its `seconds` while the block runs
    (`current()` answers the lease held now, updated in place by each renewal; None: the job is
    not held any more, and nothing is renewed). The KeptLease yielded says once the lease is
    lost (logged, naming `what`). A renewal is never cut short: one the database made must be
    known, or the work's outcome, written under the lease, would not be recorded."""
    kept = KeptLease()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_keep, storage, job_id, current, seconds, clock, what, kept)
        yield kept
        nursery.cancel_scope.cancel()


async def _keep(
    storage: JobQueueStore,
    job_id: int,
    current: Callable[[], HeldLease | None],
    seconds: float,
    clock: Callable[[], float],
    what: str,
    kept: KeptLease,
) -> None:
    """`lease_kept`'s renewals, until cancelled or the lease is lost."""
    while True:
        await trio.sleep(seconds / RENEWALS_PER_LEASE)
        held = current()
        if held is None:
            return
        now = clock()
        try:
            with trio.CancelScope(shield=True):
                until = await storage.renew_job_lease(job_id, held.until, now, seconds)
        except StorageUnavailable as exc:
            log.warning("%s: lease not renewed (%s)", what, exc)
            if held.ends <= clock():
                log.warning("%s: its lease ran out unrenewed during the hand-off", what)
                kept.lost = True
                return
            continue
        if until is not None:
            held.until, held.ends = until, now + seconds
        elif current() is held:  # not claimed again by this worker meanwhile
            log.warning("%s: its lease passed to another claim during the hand-off", what)
            kept.lost = True
            return
