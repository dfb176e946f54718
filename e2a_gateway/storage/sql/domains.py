"""The SQL of custom mail domains: registration, DNS verification (and when it last looked),
deletion, and the MX check.

At most one user holds a domain verified (a unique index); registrations and verifications of
one name take turns under a lock on it, so the check before each write holds until it commits.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from e2a_gateway.storage.base import AlreadyExists, Domain, InUse
from e2a_gateway.storage.rows import DOMAIN_COLUMNS, decode_domain, domain_params
from e2a_gateway.storage.sql.keyset import Position, after_newest_first
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction


def _lock_name(tx: Transaction, domain: str) -> None:
    """Serialise registrations and verifications of one domain name across users."""
    tx.lock(f"domain:{domain}")


def _domain_row(tx: Transaction, user_id: str, domain: str) -> Any:
    return tx.first(
        f"SELECT {DOMAIN_COLUMNS} FROM domains WHERE user_id = ? AND domain = ?", (user_id, domain)
    )


class DomainsSql(Runner):
    """The domains of `Directory` in SQL."""

    async def add_domain(self, domain: Domain) -> None:
        """Register a domain for its user; AlreadyExists if they have it or another user
        verified it."""

        def insert(tx: Transaction) -> None:
            _lock_name(tx, domain.domain)
            verified = f"verified = {tx.dialect.true}"
            if tx.first(
                f"SELECT 1 FROM domains WHERE domain = ? AND (user_id = ? OR {verified})",
                (domain.domain, domain.user_id),
            ):
                raise AlreadyExists(domain.domain)
            tx.execute(
                "INSERT INTO domains (user_id, domain, verification_token, verified, created_at) "
                f"VALUES (?, ?, ?, {tx.dialect.false}, ?)",
                domain_params(domain),
            )

        await self._write(insert)

    async def list_domains(self, user_id: str) -> list[Domain]:
        """The user's domains, oldest first."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {DOMAIN_COLUMNS} FROM domains WHERE user_id = ? "
                "ORDER BY created_at, domain",
                (user_id,),
            )
        )
        return [decode_domain(row) for row in rows]

    async def count_domains(self, user_id: str) -> int:
        """How many domains the user has registered, verified or not."""
        row = await self._read(
            lambda tx: tx.first("SELECT COUNT(*) FROM domains WHERE user_id = ?", (user_id,))
        )
        return int(row[0]) if row else 0

    async def domain_page(self, user_id: str, limit: int, after: Position | None) -> list[Domain]:
        """Up to `limit` of the user's domains, newest first by (created_at, domain), after
        `after`."""
        position, params = after_newest_first(after, "created_at", "domain")
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {DOMAIN_COLUMNS} FROM domains WHERE user_id = ? {position} "
                "ORDER BY created_at DESC, domain DESC LIMIT ?",
                (user_id, *params, limit),
            )
        )
        return [decode_domain(row) for row in rows]

    async def verified_among(self, user_id: str, domains: Collection[str]) -> set[str]:
        """Which of `domains` the user holds verified."""
        wanted = sorted(set(domains))
        if not wanted:
            return set()
        marks = ", ".join("?" * len(wanted))
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT domain FROM domains WHERE user_id = ? AND domain IN ({marks}) "
                f"AND verified = {tx.dialect.true}",
                (user_id, *wanted),
            )
        )
        return {domain for (domain,) in rows}

    async def get_domain(self, user_id: str, domain: str) -> Domain | None:
        """One of the user's domains."""
        row = await self._read(lambda tx: _domain_row(tx, user_id, domain))
        return decode_domain(row) if row else None

    async def mark_domain_verified(self, user_id: str, domain: str, now: str) -> Domain | None:
        """Mark verified; AlreadyExists when another user holds it verified."""

        def update(tx: Transaction) -> Domain | None:
            _lock_name(tx, domain)
            tx.execute(
                f"UPDATE domains SET verified = {tx.dialect.true}, "
                "verified_at = coalesce(verified_at, ?) WHERE user_id = ? AND domain = ?",
                (now, user_id, domain),
                conflict=AlreadyExists(domain),
            )
            row = _domain_row(tx, user_id, domain)
            return decode_domain(row) if row else None

        return await self._write(update, changes_routing=True)

    async def record_domain_check(self, user_id: str, domain: str, now: str) -> Domain | None:
        """Note the DNS look-up of the user's domain at `now`; None when not theirs."""

        def update(tx: Transaction) -> Domain | None:
            tx.execute(
                "UPDATE domains SET last_checked_at = ? WHERE user_id = ? AND domain = ?",
                (now, user_id, domain),
            )
            row = _domain_row(tx, user_id, domain)
            return decode_domain(row) if row else None

        return await self._write(update)

    async def delete_domain(self, user_id: str, domain: str) -> bool:
        """Delete the user's domain unless agents use it (InUse); False when not theirs. The
        domain's row stays locked meanwhile: an agent being added on it waits, then finds
        it gone (`add_agent` with `on_owned_domain`)."""

        def delete(tx: Transaction) -> bool:
            if not tx.first(
                f"SELECT 1 FROM domains WHERE user_id = ? AND domain = ?{tx.dialect.for_update()}",
                (user_id, domain),
            ):
                return False
            if tx.first(
                "SELECT 1 FROM agents WHERE user_id = ? AND domain = ? LIMIT 1", (user_id, domain)
            ):
                raise InUse(domain)
            tx.execute("DELETE FROM domains WHERE user_id = ? AND domain = ?", (user_id, domain))
            return True

        return await self._write(delete, changes_routing=True)

    async def is_served_domain(self, domain: str) -> bool:
        """True when a user holds `domain` verified (the gateway is its MX)."""
        row = await self._read(
            lambda tx: tx.first(
                f"SELECT 1 FROM domains WHERE domain = ? AND verified = {tx.dialect.true}",
                (domain,),
            ),
            routing=("domain", domain),
        )
        return row is not None
