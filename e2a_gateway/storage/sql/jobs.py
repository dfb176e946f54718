"""The SQL of the job queue: work for the workers, claimed under leases, done or retried.

A job is queued in the same transaction as the message it is about, and announced so that every
replica's workers look. A claim leases jobs, passing over those another replica is claiming, so
nobody else takes them until the lease lapses; a restarted process frees its own leases. Leases
are timed by the database's clock (`lease_time`), so a replica whose clock runs ahead takes no
lease another still holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from e2a_gateway.storage.announcements import JobsAdded
from e2a_gateway.storage.base import Job, JobQueueState
from e2a_gateway.storage.rows import JOB_COLUMNS, decode_job
from e2a_gateway.storage.sql.dialect import ListType
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction

UNLEASE = "UPDATE jobs SET locked_until = NULL, locked_by = NULL"
UNLEASE_DELIVERIES = (
    "UPDATE webhook_deliveries SET locked_until = NULL, locked_by = NULL "
    "WHERE locked_until IS NOT NULL"
)
"""Frees the leases of `/v1` webhook deliveries (claimed in `SubscribersSql`)."""

K = TypeVar("K", int, str)


def add_job(tx: Transaction, kind: str, message_id: str, now: float) -> int:
    """Queue a job of `kind` for `message_id`, due at `now`, and announce it (the workers of
    that kind, on every replica, look once the transaction commits); the job's id."""
    (job_id,) = tx.one(
        "INSERT INTO jobs (kind, message_id, run_at, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        (kind, message_id, now, now),
    )
    tx.announce(JobsAdded(kind))
    return int(job_id)


def lease_time(tx: Transaction, now: float) -> float:
    """The time leases (and rate-limit windows, `rate_limits`) are judged by in `tx`: the
    database's clock when several processes share it (a replica whose own clock ran ahead would
    take leases the others still hold, one running behind would keep its own too long), else
    `now`, the single writer's clock."""
    if tx.dialect.lease_clock is None:
        return now
    (clock,) = tx.one(f"SELECT {tx.dialect.lease_clock}")
    return float(clock)


def renew_lease(
    tx: Transaction, table: str, key: int | str, leased_until: float, now: float, seconds: float
) -> float | None:
    """Lease the row `key` of `table` (`jobs`, `webhook_deliveries`) for `seconds` from
    `lease_time` if it is still leased until `leased_until`: until when, or None when it has
    passed to another claim (or is gone)."""
    until = lease_time(tx, now) + seconds
    renewed = tx.execute(
        f"UPDATE {table} SET locked_until = ? WHERE id = ? AND locked_until = ?",
        (until, key, leased_until),
    ).rowcount
    return until if renewed else None


def lease(tx: Transaction, job_ids: list[int], until: float, holder: str) -> None:
    """Lease the jobs `job_ids` to `holder` until `until`."""
    if job_ids:
        tx.execute(
            "UPDATE jobs SET locked_until = ?, locked_by = ? "
            f"WHERE {tx.dialect.in_list('id', 'bigint')}",
            (until, holder, tx.dialect.list_param(job_ids)),
        )


def current_leases(
    tx: Transaction, table: str, element: ListType, ids: Iterable[K]
) -> dict[K, float]:
    """Until when each leased row of `table` (`jobs`, `webhook_deliveries`) among `ids` is
    leased, the rows locked until the commit so that no claim takes them meanwhile. A claim or
    renewal always leases until later than the lease before it, so a row leased until another
    time than a worker's lease has passed to another claim."""
    rows = tx.all(
        f"SELECT id, locked_until FROM {table} WHERE {tx.dialect.in_list('id', element)} "
        f"AND locked_until IS NOT NULL ORDER BY id{tx.dialect.for_update()}",
        (tx.dialect.list_param(sorted(set(ids))),),
    )
    return {key: float(until) for key, until in rows}


def holds_lease(tx: Transaction, job_id: int, leased_until: float | None) -> bool:
    """Whether the job `job_id` still holds the lease until `leased_until` (None: whatever it
    holds), its row locked until the commit (`current_leases`); False once the lease has passed
    to another claim, or the job is gone."""
    if leased_until is None:
        return True
    return current_leases(tx, "jobs", "bigint", [job_id]).get(job_id) == leased_until


RETRY_JOB = "UPDATE jobs SET run_at = ?, attempts = attempts + 1, locked_until = NULL WHERE id = ?"
"""Put a claimed job back, due at `run_at`, with one more attempt counted: (run_at, id)."""


def retry_job(tx: Transaction, job_id: int, retry_at: float | None) -> None:
    """Put a claimed job back, due at `retry_at`, with one more attempt counted."""
    tx.execute(RETRY_JOB, (retry_at, job_id))


class JobsSql(Runner):
    """`JobQueueStore` in SQL (webhook jobs have their own claim, in `WebhooksSql`)."""

    async def release_leases(self) -> None:
        """At start-up, free the leases a previous run of this process held on jobs and on
        `/v1` webhook deliveries, and on stopping, once its workers have, those it still holds:
        every lease under a single writer (this process alone works the queues), else those
        stamped with this replica's name, and only those (other replicas may hold live leases
        on this database).

        A crashed replica that does not come back holds its work until the leases expire; then
        any replica claims it."""

        def release(tx: Transaction) -> None:
            if self.dialect.single_writer:
                tx.execute(UNLEASE)
                tx.execute(UNLEASE_DELIVERIES)
            else:
                tx.execute(f"{UNLEASE} WHERE locked_by = ?", (self.holder,))
                tx.execute(f"{UNLEASE_DELIVERIES} AND locked_by = ?", (self.holder,))

        if self.dialect.single_writer or self.holder:
            await self._write(release)

    async def claim_jobs(
        self, kind: str, now: float, limit: int, lease_seconds: float
    ) -> list[Job]:
        """Lease due jobs of `kind` (outbound sends, approval notices), oldest first; jobs
        another replica is claiming are passed over, not waited for."""

        def claim(tx: Transaction) -> list[Job]:
            leased_at = lease_time(tx, now)
            rows = tx.all(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE kind = ? AND run_at <= ? "
                "AND (locked_until IS NULL OR locked_until < ?) "
                f"ORDER BY run_at, id LIMIT ?{tx.dialect.skip_locked()}",
                (kind, now, leased_at, limit),
            )
            until = leased_at + lease_seconds
            lease(tx, [row[0] for row in rows], until, self.holder)
            return [decode_job(row, until) for row in rows]

        return await self._write(claim, durable=False)

    async def renew_job_lease(
        self, job_id: int, leased_until: float, now: float, lease_seconds: float
    ) -> float | None:
        """Lease the job for `lease_seconds` more if it is still leased until `leased_until`
        (`renew_lease`)."""
        return await self._write(
            lambda tx: renew_lease(tx, "jobs", job_id, leased_until, now, lease_seconds),
            durable=False,
        )

    async def job_lease_held(self, job_id: int, leased_until: float) -> bool:
        """Whether the job is still leased until `leased_until` (one read)."""
        row = await self._read(
            lambda tx: tx.first(
                "SELECT 1 FROM jobs WHERE id = ? AND locked_until = ?", (job_id, leased_until)
            )
        )
        return row is not None

    async def finish_job(
        self, job_id: int, retry_at: float | None, leased_until: float | None = None
    ) -> bool:
        """Drop a done job, or put it back due at `retry_at` with one more attempt counted;
        given `leased_until`, only while the job still holds that lease (`holds_lease`).
        Whether it was done."""

        def finish(tx: Transaction) -> bool:
            if not holds_lease(tx, job_id, leased_until):
                return False
            if retry_at is None:
                tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            else:
                retry_job(tx, job_id, retry_at)
            return True

        return await self._write(finish)

    async def postpone_job(self, job_id: int, run_at: float, leased_until: float) -> bool:
        """Put a claimed job back due at `run_at` without counting an attempt (it was not
        tried), only while it still holds the lease `leased_until`; whether it was."""

        def postpone(tx: Transaction) -> bool:
            if not holds_lease(tx, job_id, leased_until):
                return False
            tx.execute(
                "UPDATE jobs SET run_at = ?, locked_until = NULL WHERE id = ?", (run_at, job_id)
            )
            return True

        return await self._write(postpone)

    async def release_jobs(self, jobs: Sequence[Job]) -> None:
        """Give claimed jobs back as they were (lease dropped, no attempt counted), each only
        while it still holds the lease it was claimed under: one whose lease ran out and passed
        to another claim stays with that claim."""
        await self._write(
            lambda tx: tx.executemany(
                "UPDATE jobs SET locked_until = NULL WHERE id = ? AND locked_until = ?",
                [(job.id, job.leased_until) for job in jobs],
            ),
            durable=False,
        )

    async def job_queue_states(self, now: float) -> list[JobQueueState]:
        """Jobs per kind and state at `now` (leased, by `lease_time`: `running`; else due:
        `available`; else tried before: `retryable`; else `scheduled`), with each group's
        earliest `run_at`."""
        rows = await self._read(
            lambda tx: tx.all(
                "SELECT kind, CASE WHEN locked_until IS NOT NULL AND locked_until >= ? "
                "THEN 'running' WHEN run_at <= ? THEN 'available' "
                "WHEN attempts > 0 THEN 'retryable' ELSE 'scheduled' END AS state, "
                "count(*), min(run_at) FROM jobs GROUP BY kind, state ORDER BY kind, state",
                (lease_time(tx, now), now),
            )
        )
        return [
            JobQueueState(str(kind), state, int(count), float(earliest))
            for kind, state, count, earliest in rows
        ]
