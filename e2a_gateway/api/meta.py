"""Unauthenticated routes: health and deployment info."""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, current_app, request

from e2a_gateway.api.proxies import forwarded_by_a_proxy
from e2a_gateway.networks import is_loopback
from e2a_gateway.storage import POSTGRES_SCHEMES
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import info_view

blueprint = Blueprint("meta", __name__)

WITHHELD = (
    "the database does not answer; the reason (its address) is shown to requests from this "
    "machine and is in the gateway's log"
)
"""What a caller from another machine is told of a storage failure, for `detail`/`reason`."""


def _storage_failure(exc: StorageUnavailable) -> str:
    """Why storage failed, as the caller may see it: whole for a request from this machine (an
    operator's curl, a probe on the host), else WITHHELD. The probes answer anyone, and the
    reason names the database's host, port, user and name, or the SQLite file's path.

    A request a reverse proxy forwarded is from elsewhere even when that proxy runs on this
    machine and is not in `http.trusted_proxies` (the deployment docs/deploy.md describes):
    its connection comes from the loopback, but its headers name the proxy's client."""
    forwarded = forwarded_by_a_proxy(request.headers.keys())
    local = is_loopback(request.remote_addr or "") and not forwarded
    return str(exc) if local else WITHHELD


@blueprint.get("/api/health")
async def health() -> tuple[dict[str, Any], int]:
    """GET /api/health: 200 ok, or 503 degraded when storage does not answer (why, to
    requests from this machine: `_storage_failure`), or holds a schema a newer e2a migrated it
    to (`schema_unknown`: upgrade this replica); both say which storage backend is in use and
    whether it is up."""
    gateway = current_gateway()
    url = gateway.settings.database.url
    backend = "postgresql" if url.startswith(POSTGRES_SCHEMES) else "sqlite"
    if gateway.schema_refusal is not None:
        storage = {"backend": backend, "state": "schema_unknown", "detail": gateway.schema_refusal}
        return {"status": "degraded", "storage": storage}, 503
    try:
        await gateway.storage.ping()
    except StorageUnavailable as exc:
        storage = {"backend": backend, "state": "down", "detail": _storage_failure(exc)}
        return {"status": "degraded", "storage": storage}, 503
    return {"status": "ok", "storage": {"backend": backend, "state": "up"}}, 200


@blueprint.get("/livez")
async def liveness() -> tuple[dict[str, str], int]:
    """GET /livez, the liveness probe: 200 `alive` whenever the process answers at all. It
    asks nothing of the database, so an orchestrator restarts a replica that hangs, never
    every replica while their database is away (that is `/readyz`'s to say)."""
    return {"status": "alive"}, 200


@blueprint.get("/readyz")
async def readiness() -> tuple[dict[str, Any], int]:
    """GET /readyz, e2a's readiness probe: 200 `ready` while this replica should be sent
    traffic; 503 `not_ready` with the reason while it drains before a stop (`draining`), or
    while its database does not answer or take writes (what the storage says, as in the
    health check's `detail`), or once a newer e2a migrated the database (checked here too: it
    says to upgrade this replica)."""
    gateway = current_gateway()
    if gateway.draining:
        return {"status": "not_ready", "reason": "draining"}, 503
    if gateway.schema_watch is not None:
        await gateway.schema_watch.check()
    if gateway.schema_refusal is not None:
        return {"status": "not_ready", "reason": gateway.schema_refusal}, 503
    try:
        await gateway.storage.ping()
    except StorageUnavailable as exc:
        return {"status": "not_ready", "reason": _storage_failure(exc)}, 503
    return {"status": "ready"}, 200


@blueprint.get("/api/v1/info")
async def info() -> dict[str, Any]:
    """GET /api/v1/info: what a client needs to know before it logs in."""
    return info_view(current_gateway().settings)


@blueprint.get("/api/v1/openapi.json")
async def openapi_document() -> dict[str, Any]:
    """GET /api/v1/openapi.json (no key needed): built on first request, in a worker thread,
    then kept. The describing module and its models load only then, not at start-up."""
    built: dict[str, Any] | None = current_app.extensions.get("e2a_openapi")
    if built is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        built = await trio.to_thread.run_sync(_build_openapi, app)
        current_app.extensions["e2a_openapi"] = built
    return built


def _build_openapi(app: Any) -> dict[str, Any]:
    from e2a_gateway.api.openapi import build_document

    return build_document(app)
