"""The running gateway's shared state: settings, storage, server key and DNS resolver.

`open_gateway` opens and migrates storage (whose commits wake the job workers and make this
process forget what it kept of erased mail) and settles the server key; everything that serves
requests (SMTP, HTTP, workers) receives the same `Gateway`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING

import trio
from cachetools import TTLCache

from e2a_gateway import kept_bodies
from e2a_gateway.config import Settings
from e2a_gateway.hub import Hub
from e2a_gateway.hub.job_queue import JobQueue
from e2a_gateway.local_rate_counts import LocalRateCounts
from e2a_gateway.mailauth.dns_answers import Resolver
from e2a_gateway.mailauth.resolver import DnsResolver
from e2a_gateway.metrics import Metrics
from e2a_gateway.outbound.dkim_signing import DkimKeyRecord, DkimSigner
from e2a_gateway.production import check_signing_secret
from e2a_gateway.storage import open_storage
from e2a_gateway.storage.announcements import Announcement, MailErased
from e2a_gateway.storage.base import Lifecycle, Storage, StorageUnavailable

if TYPE_CHECKING:
    from e2a_gateway.schema_watch import SchemaWatch

log = logging.getLogger("e2a")

CLOSE_SECONDS = 10.0
"""How long closing storage at a stop may take (a write still in its thread finishes first)."""
KEY_USE_SECONDS = 60.0
"""How stale an API key's `last_used_at` may be (written at most this often per process)."""
KEY_USE_KEYS = 10_000


@dataclass
class Gateway:
    """Everything a request handler or worker needs, built once at start-up."""

    settings: Settings
    storage: Storage
    server_key: str
    resolver: Resolver
    jobs: JobQueue
    """Wakes this process's job workers; storage reports its commits to it."""
    hub: Hub = field(default_factory=Hub)
    metrics: Metrics = field(default_factory=Metrics)
    local_counts: LocalRateCounts = field(default_factory=LocalRateCounts)
    """Request counts this process keeps in memory (message polls)."""
    key_uses: TTLCache[str, bool] = field(
        default_factory=lambda: TTLCache(maxsize=KEY_USE_KEYS, ttl=KEY_USE_SECONDS)
    )
    """The keys whose use this process recorded in the last KEY_USE_SECONDS: a key's
    `last_used_at` is written at most that often per process, not on every request."""
    exports_running: int = 0
    """Account exports this process is sending now (at most `http.max_concurrent_exports`)."""
    smtp_address: tuple[str, int] | None = None
    """Where this process's SMTP listener is bound (host, port), once it is: what
    `GET /selftest` connects to."""
    draining: bool = False
    """Set when a stop was asked for and `http.drain_seconds` runs: `GET /readyz` answers 503
    while everything else is still served."""
    schema_watch: SchemaWatch | None = None
    """What checks the schema (PostgreSQL only: on SQLite nothing migrates the file while a
    gateway holds it)."""
    stopping: bool = False
    """Set once the gateway has begun to stop (a signal, or its nursery cancelled): what tells
    a WebSocket ended by the stop from one whose client left (`e2a_gateway.web.socket_counts`)."""

    @property
    def schema_refusal(self) -> str | None:
        """Set, for good, once the database holds schema versions this e2a does not know (a
        newer one migrated it while this replica ran): why this replica takes no more work,
        and what to do (`e2a_gateway.schema_watch`). `GET /readyz` answers 503 with it."""
        return None if self.schema_watch is None else self.schema_watch.refusal

    @cached_property
    def dkim_signer(self) -> DkimSigner | None:
        """The signer of outbound mail when `dkim.selector` and `dkim.private_key_path` are set
        (loaded on first use; DkimKeyError when the key cannot sign), else None."""
        return dkim_signing_key(self.settings)

    @cached_property
    def dkim_next_key(self) -> DkimSigner | None:
        """The key of the next rotation (`dkim_next_key`), else None. Only its record is
        shown: nothing is signed with it until the operator makes it `dkim.private_key_path`."""
        return dkim_next_key(self.settings)

    def adopt_dkim_keys(self, signer: DkimSigner | None, next_key: DkimSigner | None) -> None:
        """Use the signing key and the next one loaded before the gateway was (`run_gateway`
        loads them before it opens the database, so that a bad key stops the start before
        anything is migrated)."""
        self.dkim_signer = signer
        self.dkim_next_key = next_key

    def dkim_record(self, domain: str) -> DkimKeyRecord | None:
        """The DKIM key record `domain` must publish for the mail its agents send to verify;
        None when outbound mail is not signed."""
        signer = self.dkim_signer
        return signer.key_record(domain) if signer is not None else None

    def dkim_next_record(self, domain: str) -> DkimKeyRecord | None:
        """The record `domain` must publish before the next key signs its mail (the next
        rotation, `dkim.next_selector`); None when no rotation is under way."""
        key = self.dkim_next_key
        return key.key_record(domain) if key is not None else None

    def is_shared_domain(self, domain: str) -> bool:
        """True when `domain` is the deployment's shared domain."""
        return bool(self.settings.shared_domain) and domain == self.settings.shared_domain


def dkim_signing_key(settings: Settings) -> DkimSigner | None:
    """The signer of outbound mail when `dkim.selector` and `dkim.private_key_path` are set
    (DkimKeyError when the key cannot sign), else None."""
    dkim = settings.dkim
    if not (dkim.selector and dkim.private_key_path):
        return None
    return DkimSigner(dkim.selector, dkim.private_key_path)


def dkim_next_key(settings: Settings) -> DkimSigner | None:
    """The key of the next rotation when `dkim.next_selector` and `dkim.next_private_key_path`
    are set (checked as the signing key is: DkimKeyError naming `dkim.next_private_key_path`),
    else None."""
    dkim = settings.dkim
    if not (dkim.next_selector and dkim.next_private_key_path):
        return None
    return DkimSigner(
        dkim.next_selector, dkim.next_private_key_path, setting="dkim.next_private_key_path"
    )


async def resolve_server_key(settings: Settings, storage: Lifecycle) -> str:
    """`signing.hmac_secret`, or in development a generated one kept in the database (in
    production `open_gateway` has refused a missing or weak secret already)."""
    configured = settings.signing.hmac_secret
    if configured:
        return configured
    return await storage.server_secret(secrets.token_hex(32))


def heard_commit(jobs: JobQueue, announcements: Sequence[Announcement]) -> None:
    """Storage's commit observer: wake the job workers (`JobQueue.committed`) and forget the
    parsed bodies kept of erased mail (`MailErased`)."""
    jobs.committed(announcements)
    for erased in announcements:
        if isinstance(erased, MailErased):
            kept_bodies.forget(bytes.fromhex(digest) for digest in erased.raw_digests)


@asynccontextmanager
async def open_gateway(
    settings: Settings, resolver: Resolver | None = None
) -> AsyncIterator[Gateway]:
    """Open storage, apply migrations, settle the server key; close storage on exit. In
    production a missing or weak `signing.hmac_secret` is refused before storage is opened; a
    database a newer e2a migrated is refused (StorageUnavailable) before anything is written."""
    check_signing_secret(settings)
    jobs = JobQueue()
    storage = open_storage(
        settings.database.url,
        settings.replica_id,
        partial(heard_commit, jobs),
        pooled=settings.database.pooled,
        listen_url=settings.database.listen_url,
        silent_server_seconds=settings.database.silent_server_seconds,
    )
    try:
        applied = await storage.migrate()
        if applied:
            log.info("database migrated to version %d", applied[-1])
        if newer := await storage.unknown_migrations():
            raise StorageUnavailable(
                "database.url: the database was migrated by a newer e2a (schema versions "
                f"{', '.join(map(str, newer))} are unknown to this one), which this version "
                "would misread and could damage: run the newer e2a, or restore the backup "
                "taken before the upgrade (docs/deploy.md, Upgrades)"
            )
        server_key = await resolve_server_key(settings, storage)
        yield Gateway(
            settings=settings,
            storage=storage,
            server_key=server_key,
            resolver=resolver or DnsResolver.from_settings(settings.dns),
            jobs=jobs,
        )
    finally:
        # Shielded: a stop cancels the nursery this runs in, and a cancelled close would
        # leave SQLite's write-ahead log beside the file (its last connection checkpoints it
        # into the file and removes it) and PostgreSQL's sessions to time out.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_SECONDS):
            await storage.close()
