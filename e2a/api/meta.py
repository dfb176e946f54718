"""Unauthenticated routes: health and deployment info."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from e2a import __version__
from e2a.api.auth import gateway
from e2a.storage import POSTGRES_SCHEMES
from e2a.storage.base import StorageUnavailable

blueprint = Blueprint("meta", __name__)


@blueprint.get("/api/health")
async def health() -> tuple[dict[str, Any], int]:
    """GET /api/health: 200 ok, or 503 degraded when storage does not answer; both say which
    storage backend is in use and whether it is up."""
    url = gateway().settings.database.url
    backend = "postgresql" if url.startswith(POSTGRES_SCHEMES) else "sqlite"
    try:
        await gateway().storage.ping()
    except StorageUnavailable as exc:
        storage = {"backend": backend, "state": "down", "detail": str(exc)}
        return {"status": "degraded", "storage": storage}, 503
    return {"status": "ok", "storage": {"backend": backend, "state": "up"}}, 200


@blueprint.get("/api/v1/info")
async def info() -> dict[str, Any]:
    """GET /api/v1/info: what a client needs to know before it logs in."""
    settings = gateway().settings
    return {
        "shared_domain": settings.shared_domain,
        "slug_registration_enabled": bool(settings.shared_domain),
        "public_url": settings.http.public_url,
        "version": __version__,
    }
