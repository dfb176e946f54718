"""The SQL of the job queue: work for the workers, claimed under leases, done or retried.

A job is queued in the same transaction as the message it is about, and announced so that every
replica's workers look; a claim leases jobs so that nobody else takes them until it lapses.
"""

from __future__ import annotations

from e2a.storage.sql.transaction import JobsAdded, Transaction


def add_job(tx: Transaction, kind: str, message_id: str, now: float) -> None:
    """Queue a job of `kind` for `message_id`, due at `now`, and announce it (every replica's
    workers look once the transaction commits)."""
    tx.execute(
        "INSERT INTO jobs (kind, message_id, run_at, created_at) VALUES (?, ?, ?, ?)",
        (kind, message_id, now, now),
    )
    tx.announce(JobsAdded())
