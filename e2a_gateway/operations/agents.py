"""Agents: register, list, read, change and delete the caller's inboxes.

Registration is counted against the caller and against the client's address; an address on
the shared domain is taken by slug, any other needs a domain the caller has verified. A
webhook URL is checked before it is stored (and again at each delivery). A deleted agent may
go to the trash first (TRASH_DAYS, its address reserved), from which it can be restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from e2a_gateway.addresses import AddressError, check_slug, normalise_address, only_agent
from e2a_gateway.clock import utc_now
from e2a_gateway.gateway import Gateway
from e2a_gateway.hub import Revocation
from e2a_gateway.operations.caller import Caller, owner_still_there
from e2a_gateway.operations.errors import Conflict, Invalid, NotFound
from e2a_gateway.operations.rate_limits import NamedLimit, count_request, counted_address
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.outbound.notice_sender import notice_sender
from e2a_gateway.rate_windows import RateLimit
from e2a_gateway.storage.base import Agent, AgentChanges, AlreadyExists, DomainNotHeld
from e2a_gateway.webhook_targets import (
    TargetRefused,
    WebhookTargetError,
    check_webhook_url,
    pinned_addresses,
)

DEFAULT_HITL_TTL_SECONDS = 604800
REGISTRATION_WINDOW_SECONDS = 3600
TRASH_DAYS = 30
"""How long a deleted agent stays in the trash (restorable, its address reserved) before the
retention sweep purges it for good."""


class CreateAgent(RequestBody):
    """POST /agents."""

    slug: str | None = None
    email: str | None = None
    name: str | None = Field(default=None, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2048)
    agent_mode: Literal["cloud", "local"] | None = None


class UpdateAgent(RequestBody):
    """PUT /agents/{email}: any subset of the settings."""

    name: str | None = Field(default=None, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2048)
    agent_mode: Literal["cloud", "local"] | None = None
    hitl_enabled: bool | None = None
    hitl_ttl_seconds: int | None = Field(default=None, ge=1, le=604800)
    hitl_expiration_action: Literal["approve", "reject"] | None = None
    approval_notifications: bool | None = None
    """Whether the owner is emailed when a message is held (an addition to e2a 2.x)."""


@dataclass(frozen=True)
class AgentEntry:
    """An agent with what every face shows beside it: whether its domain is verified."""

    agent: Agent
    domain_verified: bool


def agent_address(raw: str) -> str:
    """Normalise an address naming an agent (NotFound when it cannot be one)."""
    try:
        return normalise_address(raw)
    except AddressError:
        raise NotFound.of("agent") from None


async def owned_agent(gateway: Gateway, caller: Caller, raw_email: str) -> Agent:
    """The caller's agent at `raw_email`, or NotFound; Forbidden when the caller's key is
    bound to another agent. Every operation acting as an agent finds it here."""
    agent = await gateway.storage.get_agent(caller.user_id, agent_address(raw_email))
    if agent is None:
        raise NotFound.of("agent")
    caller.require_agent(agent)
    return agent


async def _entry(gateway: Gateway, agent: Agent) -> AgentEntry:
    """`agent` with its domain's verification state (the shared domain counts as verified)."""
    return (await _entries(gateway, [agent]))[0]


async def _entries(gateway: Gateway, agents: list[Agent]) -> list[AgentEntry]:
    """`agents` (all of one user) with their domains' verification states, read in one query
    whatever their number (the shared domain counts as verified)."""
    owned = {agent.domain for agent in agents if not gateway.is_shared_domain(agent.domain)}
    verified = (
        await gateway.storage.verified_among(agents[0].user_id, owned) if owned else set[str]()
    )
    return [
        AgentEntry(agent, gateway.is_shared_domain(agent.domain) or agent.domain in verified)
        for agent in agents
    ]


async def owned_agents(gateway: Gateway, caller: Caller) -> list[Agent]:
    """Every agent the caller may act as, as stored: all of the account's, or the one agent an
    agent key is bound to."""
    if caller.scope == "account":
        return await gateway.storage.list_agents(caller.user_id)
    return await _bound_agent(gateway, caller, trashed=False)


async def only_sender(gateway: Gateway, caller: Caller) -> Agent | None:
    """The agent a request naming none acts as (`only_agent`): the caller's only agent, or
    the one beside postmaster inboxes; None when there is no such single agent. Reads two
    agents at most, however many the account has."""
    if caller.scope != "account":
        return next(iter(await _bound_agent(gateway, caller, trashed=False)), None)
    found = await gateway.storage.agents_postmaster_last(caller.user_id, 2)
    chosen = only_agent([agent.email for agent in found])
    return next((agent for agent in found if agent.email == chosen), None)


async def agent_count(gateway: Gateway, caller: Caller) -> int:
    """How many agents in service the caller may act as, counted in the database."""
    if caller.scope != "account":
        return len(await _bound_agent(gateway, caller, trashed=False))
    return sum((await gateway.storage.agents_per_domain(caller.user_id, with_trash=False)).values())


async def _bound_agent(gateway: Gateway, caller: Caller, *, trashed: bool) -> list[Agent]:
    """The agent an agent key is bound to, in service (or, `trashed`, in the trash), as a
    list of one; none when it is not there."""
    if caller.agent_email is None:
        return []
    agent = await gateway.storage.get_agent(caller.user_id, caller.agent_email, trashed=trashed)
    return [agent] if agent is not None and agent.id == caller.agent_id else []


async def list_agents(gateway: Gateway, caller: Caller) -> list[AgentEntry]:
    """Every agent of the caller's account, with its domain's verification state (account
    keys only)."""
    caller.require_account("list the account's agents")
    return await _entries(gateway, await owned_agents(gateway, caller))


async def get_agent(gateway: Gateway, caller: Caller, email: str) -> AgentEntry:
    """The caller's agent at `email`, or NotFound."""
    return await _entry(gateway, await owned_agent(gateway, caller, email))


async def register_agent(
    gateway: Gateway, caller: Caller, request: CreateAgent, remote_addr: str | None
) -> AgentEntry:
    """Create an agent for the caller (every attempt both limits allow counts against the
    caller and against the client's address, `remote_addr` as trusted proxies reveal it; one
    either refuses counts against neither)."""
    caller.require_account("create agents")
    limits = gateway.settings.limits
    await count_request(
        gateway,
        NamedLimit(
            RateLimit(
                f"agent_registration:user:{caller.user_id}",
                REGISTRATION_WINDOW_SECONDS,
                limits.agent_registrations_per_user_per_hour,
            ),
            "agent registrations per hour for this account",
        ),
        NamedLimit(
            RateLimit(
                f"agent_registration:ip:{counted_address(gateway, remote_addr)}",
                REGISTRATION_WINDOW_SECONDS,
                limits.agent_registrations_per_ip_per_hour,
            ),
            "agent registrations per hour from this address",
        ),
    )
    address = await _address_for(gateway, caller, request)
    mode = request.agent_mode or "cloud"
    webhook_url = await checked_webhook_url(gateway, request.webhook_url)
    if mode == "cloud" and webhook_url is None:
        raise Invalid(
            "webhook_url_required",
            'cloud agents need a webhook_url; give one or use "agent_mode": "local"',
        )
    local, _, domain = address.partition("@")
    agent = Agent(
        email=address,
        user_id=caller.user_id,
        domain=domain,
        name=local if request.name is None else request.name,
        webhook_url=webhook_url,
        agent_mode=mode,
        hitl_enabled=False,
        hitl_ttl_seconds=DEFAULT_HITL_TTL_SECONDS,
        hitl_expiration_action="reject",
        created_at=utc_now(),
    )
    try:
        with owner_still_there():
            on_owned_domain = not gateway.is_shared_domain(domain)
            await gateway.storage.add_agent(agent, on_owned_domain=on_owned_domain)
    except DomainNotHeld:  # deleted (by its owner, meanwhile) since _address_for looked
        raise _unheld_domain(domain) from None
    except AlreadyExists:
        if await gateway.storage.get_agent(caller.user_id, address, trashed=True):
            raise Conflict(
                "address_in_trash",
                f"{address} belongs to your agent in the trash; restore it "
                f"(POST /v1/agents/{address}/restore) or delete it for good first",
            ) from None
        raise Conflict("agent_exists", f"{address} is already taken; choose another") from None
    return await _entry(gateway, agent)


async def change_agent(
    gateway: Gateway, caller: Caller, email: str, request: UpdateAgent
) -> AgentEntry:
    """Apply the settings in `request` to the caller's agent at `email`."""
    caller.require_account("change agents")
    current = await owned_agent(gateway, caller, email)
    webhook_url = await checked_webhook_url(gateway, request.webhook_url)
    mode = request.agent_mode or current.agent_mode
    if mode == "cloud" and not (webhook_url or current.webhook_url):
        raise Invalid(
            "webhook_url_required",
            "switching to cloud needs a webhook_url in the same request",
        )
    changes = AgentChanges(
        name=request.name,
        webhook_url=webhook_url,
        agent_mode=request.agent_mode,
        hitl_enabled=request.hitl_enabled,
        hitl_ttl_seconds=request.hitl_ttl_seconds,
        hitl_expiration_action=request.hitl_expiration_action,
        approval_notifications=request.approval_notifications,
        **_outbound_gate_for(current, request.hitl_enabled),
    )
    updated = await gateway.storage.update_agent(caller.user_id, current.email, changes)
    if updated is None:
        raise NotFound.of("agent")
    return await _entry(gateway, updated)


def _outbound_gate_for(current: Agent, hitl_enabled: bool | None) -> dict[str, Any]:
    """The outbound gate `hitl_enabled` (`/api/v1`'s word for it) sets: on, an allowlist with
    no entry and action `review` (every send waits); off, an open gate where the gate held every
    send (one that holds only some sends, an allowlist with entries or the domain policy, is
    left as it is)."""
    if hitl_enabled is True:
        return {
            "outbound_gate_policy": "allowlist",
            "outbound_gate_allowlist": (),
            "outbound_gate_action": "review",
        }
    if hitl_enabled is False and current.hitl_enabled:
        return {
            "outbound_gate_policy": "open",
            "outbound_gate_allowlist": (),
            "outbound_gate_action": "flag",
        }
    return {}


async def remove_agent(gateway: Gateway, caller: Caller, email: str) -> int:
    """Delete the caller's agent at `email` (in service or in the trash) for good with its
    messages, and close its live connections (WebSocket, dashboard streams); how many messages
    went with it (counted just before). NotFound when it is not theirs."""
    caller.require_account("delete agents")
    address = agent_address(email)
    messages = await gateway.storage.count_agent_messages(caller.user_id, address)
    agent_id = await gateway.storage.delete_agent(caller.user_id, address)
    if agent_id is None:
        raise NotFound.of("agent")
    gateway.hub.revoke(Revocation("agent", agent_id))
    return messages


async def agent_page(
    gateway: Gateway,
    caller: Caller,
    limit: int,
    after: tuple[str, str] | None,
    *,
    trashed: bool,
) -> list[AgentEntry]:
    """Up to `limit` of the agents the caller may see, in service (or, `trashed`, in the
    trash), newest first by (created_at, email), after `after`: the account's, or only the
    agent an agent key is bound to. Reads only that page, however many agents there are."""
    if caller.scope == "account":
        agents = await gateway.storage.agent_page(caller.user_id, limit, after, trashed=trashed)
    else:
        agents = [
            agent
            for agent in await _bound_agent(gateway, caller, trashed=trashed)
            if after is None or (agent.created_at, agent.email) < after
        ][:limit]
    return await _entries(gateway, agents)


async def trash_agent(gateway: Gateway, caller: Caller, email: str) -> Agent:
    """Move the caller's agent at `email` to the trash: it keeps its address and messages for
    TRASH_DAYS, receives no mail, and its keys and live connections stop working until it is
    restored. The trashed agent; NotFound when there is no such agent in service."""
    caller.require_account("delete agents")
    address = agent_address(email)
    trashed = await gateway.storage.trash_agent(caller.user_id, address, utc_now())
    if trashed is None:
        raise NotFound.of("agent")
    gateway.hub.revoke(Revocation("agent", trashed.id))
    return trashed


async def restore_agent(gateway: Gateway, caller: Caller, email: str) -> AgentEntry:
    """Bring the caller's agent at `email` back from the trash; Conflict when it is in service,
    NotFound when there is no such agent."""
    caller.require_account("restore agents")
    address = agent_address(email)
    restored = await gateway.storage.restore_agent(caller.user_id, address)
    if restored is None:
        if await gateway.storage.get_agent(caller.user_id, address):
            raise Conflict("not_in_trash", f"{address} is not in the trash; nothing to restore")
        raise NotFound.of("agent")
    return await _entry(gateway, restored)


async def checked_webhook_url(gateway: Gateway, url: str | None) -> str | None:
    """The URL, normalised, if it may be a webhook target: its text, and every address its host
    resolves to now (a host that does not resolve yet is accepted; it is checked again at each
    delivery). None stays None."""
    if not url:
        return None
    settings = gateway.settings
    allow_private = settings.webhooks.allow_private
    try:
        url = check_webhook_url(
            url, require_https=settings.is_production, allow_private=allow_private
        )
        await pinned_addresses(gateway.resolver, urlsplit(url), allow_private)
    except (WebhookTargetError, TargetRefused) as exc:
        raise Invalid("invalid_webhook_url", str(exc)) from None
    except ConnectionError:
        pass
    return url


async def _address_for(gateway: Gateway, caller: Caller, request: CreateAgent) -> str:
    """The address a registration asks for: slug on the shared domain, or a custom address."""
    shared_domain = gateway.settings.shared_domain
    if request.slug is not None and request.email is not None:
        raise Invalid("invalid_request", "give either 'slug' or 'email', not both")
    if request.slug is not None:
        if not shared_domain:
            raise Invalid(
                "slug_registration_disabled",
                "this deployment has no shared domain; register with 'email' on a domain "
                "you have verified",
            )
        try:
            address = f"{check_slug(request.slug)}@{shared_domain}"
        except AddressError as exc:
            code = "reserved_slug" if "reserved" in str(exc) else "invalid_slug"
            raise Invalid(code, str(exc)) from None
        if _sends_as_gateway(gateway, address):
            raise Invalid(
                "reserved_slug",
                f"slug {request.slug!r} is reserved: the gateway sends its approval notices "
                f"from {address}; choose another",
            )
        return address
    if request.email is None:
        raise Invalid("invalid_request", "missing required field 'slug' or 'email'")
    try:
        address = normalise_address(request.email)
    except AddressError as exc:
        raise Invalid("invalid_email", str(exc)) from None
    local, _, domain = address.partition("@")
    if "/" in local:
        raise Invalid(
            "invalid_email",
            f"{address!r}: an agent's address may not hold '/': the API names an agent by its "
            "address in request paths, where a '/' splits the path",
        )
    if gateway.is_shared_domain(domain):
        return await _address_for(gateway, caller, CreateAgent(slug=local))
    owned = await gateway.storage.get_domain(caller.user_id, domain)
    if owned is None:
        raise _unheld_domain(domain)
    if not owned.verified and await gateway.storage.is_served_domain(domain):
        raise Invalid(
            "domain_not_verified",
            f"{domain} is verified by another account: your registration of it can never be "
            f"verified; delete it (DELETE /v1/domains/{domain}?confirm=DELETE)",
        )
    if not owned.verified:
        raise Invalid(
            "domain_not_verified",
            f"verify {domain} first: publish its records, then POST /v1/domains/{domain}/verify "
            f"(or /api/v1/domains/{domain}/verify)",
        )
    return address


def _sends_as_gateway(gateway: Gateway, address: str) -> bool:
    """Whether `address` is the one the gateway sends approval notices from (`notice_sender`),
    which their bounces return to: an agent there would read the notices' approve and reject
    links."""
    try:
        return address == normalise_address(notice_sender(gateway.settings))
    except AddressError:
        return False


def _unheld_domain(domain: str) -> Invalid:
    """The refusal of an address on a domain the caller has not registered."""
    return Invalid(
        "domain_not_registered",
        f"register and verify {domain} first (POST /api/v1/domains, then "
        f"POST /api/v1/domains/{domain}/verify)",
    )
