"""The running gateway's shared state: settings, storage, server key and DNS resolver.

`open_gateway` opens and migrates storage and settles the server key; everything that serves
requests (SMTP, HTTP, workers) receives the same `Gateway`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from e2a.config import ConfigError, Settings
from e2a.hub import Hub
from e2a.mailauth.resolver import DnsResolver, Resolver
from e2a.storage import open_storage
from e2a.storage.base import Storage

log = logging.getLogger("e2a")

MIN_PRODUCTION_SECRET_BYTES = 32


@dataclass
class Gateway:
    """Everything a request handler or worker needs, built once at start-up."""

    settings: Settings
    storage: Storage
    server_key: str
    resolver: Resolver
    hub: Hub = field(default_factory=Hub)

    def is_shared_domain(self, domain: str) -> bool:
        """True when `domain` is the deployment's shared domain."""
        return bool(self.settings.shared_domain) and domain == self.settings.shared_domain


async def resolve_server_key(settings: Settings, storage: Storage) -> str:
    """`signing.hmac_secret`, or in development a generated one kept in the database."""
    configured = settings.signing.hmac_secret
    if configured:
        if settings.is_production and len(configured.encode()) < MIN_PRODUCTION_SECRET_BYTES:
            raise ConfigError(
                "signing.hmac_secret: must be at least 32 bytes in production — generate one "
                "with `python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        return configured
    if settings.is_production:
        raise ConfigError(
            "signing.hmac_secret: required in production — set it in the config file or "
            "E2A_SIGNING_HMAC_SECRET (at least 32 bytes)"
        )
    return await storage.server_secret(secrets.token_hex(32))


@asynccontextmanager
async def open_gateway(
    settings: Settings, resolver: Resolver | None = None
) -> AsyncIterator[Gateway]:
    """Open storage, apply migrations, settle the server key; close storage on exit."""
    storage = open_storage(settings.database.url, settings.replica_id)
    try:
        applied = await storage.migrate()
        if applied:
            log.info("database migrated to version %d", applied[-1])
        server_key = await resolve_server_key(settings, storage)
        yield Gateway(
            settings=settings,
            storage=storage,
            server_key=server_key,
            resolver=resolver or DnsResolver.from_settings(settings.dns),
        )
    finally:
        await storage.close()
