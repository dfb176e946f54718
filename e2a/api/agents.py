"""Agents: register, list, read, update and delete the caller's inboxes."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, request

from e2a.addresses import AddressError, check_slug, normalise_address
from e2a.api.auth import gateway, requires_user
from e2a.api.errors import ApiError, not_found
from e2a.api.requests import CreateAgent, UpdateAgent, read_body
from e2a.api.views import agent_view
from e2a.clock import utc_now
from e2a.hub import Revocation
from e2a.storage.base import Agent, AgentChanges, AlreadyExists, User
from e2a.webhook_targets import (
    TargetRefused,
    WebhookTargetError,
    check_webhook_url,
    pinned_address,
)

blueprint = Blueprint("agents", __name__)

DEFAULT_HITL_TTL_SECONDS = 604800
REGISTRATION_WINDOW_SECONDS = 3600


def agent_address(raw: str) -> str:
    """Normalise an address taken from a URL path (404 when it cannot be an agent)."""
    try:
        return normalise_address(raw)
    except AddressError:
        raise not_found("agent") from None


async def owned_agent(user: User, raw_email: str) -> Agent:
    """The caller's agent at `raw_email`, or 404."""
    agent = await gateway().storage.get_agent(user.id, agent_address(raw_email))
    if agent is None:
        raise not_found("agent")
    return agent


async def enforce_rate_limit(key: str, window_seconds: int, limit: int, what: str) -> None:
    """Count this request against `key` in the database (so every replica shares the count);
    429 `rate_limited` with `Retry-After` (whole seconds, at least 1) once over `limit`.

    `what` completes "{limit} {what}", e.g. "agent registrations per hour from this address"."""
    wait = await gateway().storage.hit_rate_limit(key, window_seconds, limit, time.time())
    if wait is None:
        return
    retry_after = max(1, math.ceil(wait))
    raise ApiError(
        429,
        "rate_limited",
        f"rate limit reached: {limit} {what}; retry in {retry_after} seconds",
        {"Retry-After": str(retry_after)},
    )


async def _domain_verified(agent: Agent) -> bool:
    if gateway().is_shared_domain(agent.domain):
        return True
    domain = await gateway().storage.get_domain(agent.user_id, agent.domain)
    return domain is not None and domain.verified


async def render_agent(agent: Agent) -> dict[str, Any]:
    """The Agent object with its domain's verification state."""
    return agent_view(agent, await _domain_verified(agent))


async def _checked_webhook_url(url: str) -> str:
    """The URL, normalised, if it may be a webhook target: its text, and every address its host
    resolves to now (a host that does not resolve yet is accepted; it is checked again at each
    delivery)."""
    settings = gateway().settings
    allow_private = settings.webhooks.allow_private
    try:
        url = check_webhook_url(
            url, require_https=settings.is_production, allow_private=allow_private
        )
        await pinned_address(gateway().resolver, urlsplit(url), allow_private)
    except (WebhookTargetError, TargetRefused) as exc:
        raise ApiError(400, "invalid_webhook_url", str(exc)) from None
    except ConnectionError:
        pass
    return url


async def _address_for(user: User, body: CreateAgent) -> str:
    """The address a registration asks for: slug on the shared domain, or a custom address."""
    shared_domain = gateway().settings.shared_domain
    if body.slug is not None and body.email is not None:
        raise ApiError(400, "invalid_request", "give either 'slug' or 'email', not both")
    if body.slug is not None:
        if not shared_domain:
            raise ApiError(
                400,
                "slug_registration_disabled",
                "this deployment has no shared domain; register with 'email' on a domain "
                "you have verified",
            )
        try:
            return f"{check_slug(body.slug)}@{shared_domain}"
        except AddressError as exc:
            code = "reserved_slug" if "reserved" in str(exc) else "invalid_slug"
            raise ApiError(400, code, str(exc)) from None
    if body.email is None:
        raise ApiError(400, "invalid_request", "missing required field 'slug' or 'email'")
    try:
        address = normalise_address(body.email)
    except AddressError as exc:
        raise ApiError(400, "invalid_email", str(exc)) from None
    local, _, domain = address.partition("@")
    if gateway().is_shared_domain(domain):
        return await _address_for(user, CreateAgent(slug=local))
    owned = await gateway().storage.get_domain(user.id, domain)
    if owned is None or not owned.verified:
        raise ApiError(
            400,
            "domain_not_verified",
            f"add and verify {domain} first (POST /api/v1/domains, then "
            f"POST /api/v1/domains/{domain}/verify)",
        )
    return address


@blueprint.get("/agents")
@requires_user
async def list_agents(user: User) -> dict[str, Any]:
    """GET /agents."""
    agents = await gateway().storage.list_agents(user.id)
    return {"agents": [await render_agent(agent) for agent in agents]}


async def register_agent(user: User, body: CreateAgent, remote_addr: str | None) -> Agent:
    """Create an agent for `user` as POST /agents does (every attempt counts against the user
    and against the client's address, as `http.trusted_proxies` reveal it); ApiError says what
    is wrong."""
    limits = gateway().settings.limits
    await enforce_rate_limit(
        f"agent_registration:user:{user.id}",
        REGISTRATION_WINDOW_SECONDS,
        limits.agent_registrations_per_user_per_hour,
        "agent registrations per hour for this account",
    )
    await enforce_rate_limit(
        f"agent_registration:ip:{remote_addr}",
        REGISTRATION_WINDOW_SECONDS,
        limits.agent_registrations_per_ip_per_hour,
        "agent registrations per hour from this address",
    )
    address = await _address_for(user, body)
    mode = body.agent_mode or "cloud"
    webhook_url = await _checked_webhook_url(body.webhook_url) if body.webhook_url else None
    if mode == "cloud" and webhook_url is None:
        raise ApiError(
            400,
            "webhook_url_required",
            'cloud agents need a webhook_url; give one or use "agent_mode": "local"',
        )
    local, _, domain = address.partition("@")
    agent = Agent(
        email=address,
        user_id=user.id,
        domain=domain,
        name=body.name or local,
        webhook_url=webhook_url,
        agent_mode=mode,
        hitl_enabled=False,
        hitl_ttl_seconds=DEFAULT_HITL_TTL_SECONDS,
        hitl_expiration_action="reject",
        created_at=utc_now(),
    )
    try:
        await gateway().storage.add_agent(agent)
    except AlreadyExists:
        raise ApiError(409, "agent_exists", f"{address} is already taken; choose another") from None
    return agent


async def change_agent(user: User, email: str, body: UpdateAgent) -> Agent:
    """Apply the settings in `body` to the caller's agent at `email`, as PUT does."""
    current = await owned_agent(user, email)
    webhook_url = await _checked_webhook_url(body.webhook_url) if body.webhook_url else None
    mode = body.agent_mode or current.agent_mode
    if mode == "cloud" and not (webhook_url or current.webhook_url):
        raise ApiError(
            400,
            "webhook_url_required",
            "switching to cloud needs a webhook_url in the same request",
        )
    changes = AgentChanges(
        name=body.name,
        webhook_url=webhook_url,
        agent_mode=body.agent_mode,
        hitl_enabled=body.hitl_enabled,
        hitl_ttl_seconds=body.hitl_ttl_seconds,
        hitl_expiration_action=body.hitl_expiration_action,
    )
    updated = await gateway().storage.update_agent(user.id, current.email, changes)
    if updated is None:
        raise not_found("agent")
    return updated


async def remove_agent(user: User, email: str) -> None:
    """Delete the caller's agent at `email` and its messages, and close its live connections
    (WebSocket, dashboard streams); 404 when it is not theirs."""
    agent_id = await gateway().storage.delete_agent(user.id, agent_address(email))
    if agent_id is None:
        raise not_found("agent")
    gateway().hub.revoke(Revocation("agent", agent_id))


@blueprint.post("/agents")
@requires_user
async def create_agent(user: User) -> tuple[dict[str, Any], int]:
    """POST /agents."""
    agent = await register_agent(user, await read_body(CreateAgent), request.remote_addr)
    return await render_agent(agent), 201


@blueprint.get("/agents/<email>")
@requires_user
async def get_agent(user: User, email: str) -> dict[str, Any]:
    """GET /agents/{email}."""
    return await render_agent(await owned_agent(user, email))


@blueprint.put("/agents/<email>")
@requires_user
async def update_agent(user: User, email: str) -> dict[str, Any]:
    """PUT /agents/{email}: apply any subset of the settings."""
    body = await read_body(UpdateAgent)
    return await render_agent(await change_agent(user, email, body))


@blueprint.delete("/agents/<email>")
@requires_user
async def delete_agent(user: User, email: str) -> dict[str, Any]:
    """DELETE /agents/{email}: the agent and its messages."""
    await remove_agent(user, email)
    return {"status": "deleted"}
