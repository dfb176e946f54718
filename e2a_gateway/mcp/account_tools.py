"""The MCP tools of the account under e2a's names and arguments: who the key is (`whoami`), its
agents, custom domains and API keys.

Destructive tools take e2a's `confirm: true`, so a model cannot delete on a guess; the list
tools answer e2a's shape (a named array, `next_cursor` only while more remain).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from e2a_gateway.addresses import AddressError, normalise_domain
from e2a_gateway.mcp.answers import listed, page_of
from e2a_gateway.mcp.toolkit import (
    Arguments,
    Confirm,
    NoArguments,
    PageArguments,
    ToolCaller,
    ToolFailure,
    ToolSpec,
)
from e2a_gateway.v1 import Agent

SCOPE = "account"
"""An account key's scope, whoami's answer when `/v1`'s account view names none."""

CONFIRM = Field(description="Must be true: you confirm this cannot be undone.")


class ListAgentsArguments(PageArguments):
    """Arguments of list_agents."""

    deleted: bool | None = Field(
        default=None,
        description="true: list the trash (agents delete_agent moved there, restorable with "
        "restore_agent) instead of the agents in service.",
    )


class AgentArguments(Arguments):
    """One agent, by address."""

    email: str = Field(min_length=1, description="The agent's address, e.g. bot@example.com.")


class CreateAgentArguments(Arguments):
    """Arguments of create_agent: e2a's first (`slug`) and current (`email`) ways to name it."""

    slug: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="The local part of a new address on the gateway's shared domain "
        "(support-bot → support-bot@<shared domain>): lowercase letters, digits, hyphens.",
    )
    email: str | None = Field(
        default=None,
        description="Or the full address, on the shared domain or a domain you verified.",
    )
    name: str | None = Field(default=None, max_length=200, description="A display name.")
    agent_mode: Literal["local", "cloud"] | None = Field(
        default=None,
        description="local (default): read mail with list_messages or wait_for_email; cloud: "
        "the gateway posts each message to webhook_url.",
    )
    webhook_url: str | None = Field(
        default=None, description="Where cloud mode posts mail (HTTPS in production)."
    )


class UpdateAgentArguments(Arguments):
    """Arguments of update_agent."""

    email: str | None = Field(default=None, description="The agent; defaults to yours.")
    name: str = Field(max_length=200, description="The new display name.")


class DeleteAgentArguments(Arguments):
    """Arguments of delete_agent: the agent is always named, never the default one guessed
    (only account keys reach this tool, and e2a requires the address of them)."""

    email: str = Field(
        min_length=1,
        description="The agent to delete (full address); never guessed, not even the "
        "default or the only agent.",
    )
    confirm: Confirm = CONFIRM


class DomainArguments(Arguments):
    """One custom domain."""

    domain: str = Field(min_length=1, description="The domain, e.g. mail.example.com.")


class DeleteDomainArguments(DomainArguments):
    """Arguments of delete_domain."""

    confirm: Confirm = CONFIRM


class DeleteApiKeyArguments(Arguments):
    """Arguments of delete_api_key."""

    id: str = Field(min_length=1, description="The key's id from list_api_keys (not the key).")
    confirm: Confirm = CONFIRM


class CreateApiKeyArguments(Arguments):
    """Arguments of create_api_key: e2a mints keys bound to one agent."""

    agent_email: str = Field(
        min_length=1, description="The agent the key is bound to (one of yours)."
    )
    name: str | None = Field(default=None, max_length=200, description="A label for the key.")
    expires_at: str | None = Field(
        default=None, description="RFC 3339: when the key stops working; absent: never."
    )


def _agent(agent: Agent) -> dict[str, Any]:
    return agent.model_dump(exclude_none=True)


async def whoami(caller: ToolCaller, _: NoArguments) -> dict[str, Any]:
    """Who the key is, as e2a's whoami answers: `/v1`'s getAccount in full (user, scope,
    plan, limits, usage; `agent_email` only for an agent key, the agent it is bound to), and
    this gateway's additions: its default agent when one is set, and the gateway itself."""
    account = dict(await caller.account())
    if account.get("scope", SCOPE) == SCOPE:
        account.pop("agent_email", None)
    info = await caller.port.get_info()
    answer = {
        **account,
        "gateway": {
            "url": caller.port.gateway_url,
            "version": info.version,
            "shared_domain": info.shared_domain,
        },
    }
    if caller.default_agent:
        answer["default_agent"] = caller.default_agent
    return answer


async def list_agents(caller: ToolCaller, arguments: ListAgentsArguments) -> dict[str, Any]:
    """One page of the caller's agents (or of their trash), newest first, as `/v1`'s
    listAgents answers it (AgentView, `registered_domain` included); and their default
    agent."""
    query = {"cursor": arguments.cursor, "limit": arguments.limit, "deleted": arguments.deleted}
    page = await caller.port.list_agent_page(
        {name: value for name, value in query.items() if value is not None}
    )
    return {
        **listed("agents", page["items"], page.get("next_cursor")),
        "default_agent": caller.default_agent or None,
    }


async def get_agent(caller: ToolCaller, arguments: AgentArguments) -> dict[str, Any]:
    """One of the caller's agents."""
    return _agent(await caller.port.get_agent(arguments.email))


async def create_agent(caller: ToolCaller, arguments: CreateAgentArguments) -> dict[str, Any]:
    """A new agent, local unless cloud mode is asked for."""
    if arguments.slug is None and arguments.email is None:
        raise ToolFailure("pass slug (an address on the shared domain) or email")
    if arguments.slug is not None and arguments.email is not None:
        raise ToolFailure("pass slug or email, not both")
    agent = await caller.port.register_agent(
        arguments.slug,
        email=arguments.email,
        name=arguments.name,
        webhook_url=arguments.webhook_url,
        agent_mode=arguments.agent_mode or "local",
    )
    return _agent(agent)


async def update_agent(caller: ToolCaller, arguments: UpdateAgentArguments) -> dict[str, Any]:
    """Rename an agent."""
    email = await caller.agent(arguments.email)
    return _agent(await caller.port.update_agent(email, name=arguments.name))


async def delete_agent(caller: ToolCaller, arguments: DeleteAgentArguments) -> dict[str, Any]:
    """Move an agent and its messages to the trash, as e2a's delete_agent does: `/v1`'s
    receipt `{deleted, email, messages_deleted}`; restore_agent brings it back."""
    return await caller.port.trash_agent(arguments.email)


async def create_api_key(caller: ToolCaller, arguments: CreateApiKeyArguments) -> dict[str, Any]:
    """A new key bound to one agent; the key itself is in this answer only."""
    fields = {"scope": "agent", "agent_email": arguments.agent_email}
    if arguments.name is not None:
        fields["name"] = arguments.name
    if arguments.expires_at is not None:
        fields["expires_at"] = arguments.expires_at
    return await caller.port.create_api_key(fields)


async def list_domains(caller: ToolCaller, arguments: PageArguments) -> dict[str, Any]:
    """One page of the caller's custom domains."""
    found = (await caller.port.list_domains()).domains
    domains = [domain.model_dump(exclude_none=True) for domain in found]
    shown, following = page_of(domains, arguments.cursor, arguments.limit)
    return listed("domains", shown, following)


async def get_domain(caller: ToolCaller, arguments: DomainArguments) -> dict[str, Any]:
    """One of the caller's custom domains, however spelled (Unicode or A-labels, any case,
    one trailing dot): domains are listed as A-labels."""
    wanted = arguments.domain.strip()
    try:
        stored = normalise_domain(wanted)
    except AddressError:
        stored = None
    for domain in (await caller.port.list_domains()).domains:
        if domain.domain == stored:
            return domain.model_dump(exclude_none=True)
    raise ToolFailure(
        f"domain {wanted} not found: list_domains shows yours; register_domain adds one",
        "not_found",
    )


async def register_domain(caller: ToolCaller, arguments: DomainArguments) -> dict[str, Any]:
    """Add a custom domain; the answer names the DNS records to publish."""
    return (await caller.port.register_domain(arguments.domain)).model_dump(exclude_none=True)


async def verify_domain(caller: ToolCaller, arguments: DomainArguments) -> dict[str, Any]:
    """Check a domain's DNS records now."""
    return (await caller.port.verify_domain(arguments.domain)).model_dump(exclude_none=True)


async def delete_domain(caller: ToolCaller, arguments: DeleteDomainArguments) -> dict[str, Any]:
    """Remove a domain no agent uses."""
    await caller.port.delete_domain(arguments.domain)
    return {"deleted": True, "domain": arguments.domain}


async def list_api_keys(caller: ToolCaller, arguments: PageArguments) -> dict[str, Any]:
    """One page of the caller's API keys not revoked (expired ones too), newest first, as e2a's
    tool answers them: `/v1`'s key views (prefix, scope, an agent key's agent, expiry; never
    the key)."""
    query = {"cursor": arguments.cursor, "limit": arguments.limit}
    page = await caller.port.list_api_keys(
        {name: value for name, value in query.items() if value is not None}
    )
    return listed("api_keys", page["items"], page.get("next_cursor"))


async def delete_api_key(caller: ToolCaller, arguments: DeleteApiKeyArguments) -> dict[str, Any]:
    """Revoke an API key for good."""
    await caller.port.delete_api_key(arguments.id)
    return {"deleted": True, "id": arguments.id}


ACCOUNT_TOOLS: tuple[ToolSpec[Any], ...] = (
    ToolSpec(
        "whoami",
        "Who am I",
        "Use first to learn who you are: the authenticated user (id, email), the key's scope "
        "(account: the whole account; agent: only the agent in agent_email, the one the key "
        "is bound to — agent_email is present for agent keys only), the plan, its limits and "
        "usage; also the default agent when one is set (E2A_AGENT_EMAIL or the "
        "X-E2A-Agent-Email header) and the gateway (URL, version, shared domain). This is "
        "identity, not an agent: an account key's agents are listed by list_agents.",
        NoArguments,
        whoami,
    ),
    ToolSpec(
        "list_agents",
        "List agents",
        "List the agent mailboxes this account owns, newest first (address, name, domain, "
        "registered_domain, created_at), and which one is the default; deleted: true lists "
        "the trash instead (restore_agent brings one back). Account keys only. Pass "
        "next_cursor back as `cursor` while it is present.",
        ListAgentsArguments,
        list_agents,
    ),
    ToolSpec(
        "get_agent",
        "Get an agent",
        "One of your agents by its address: name, delivery mode, webhook, approval settings.",
        AgentArguments,
        get_agent,
    ),
    ToolSpec(
        "create_agent",
        "Create an agent",
        "Create a new agent mailbox: `slug` for an address on the gateway's shared domain, or "
        "`email` on a domain you verified (register_domain, verify_domain). It is a local "
        "agent (read mail with list_messages or wait_for_email) unless agent_mode is cloud "
        "with a webhook_url; a webhook handler must verify each delivery's signature.",
        CreateAgentArguments,
        create_agent,
        read_only=False,
    ),
    ToolSpec(
        "update_agent",
        "Rename an agent",
        "Change an agent's display name (its identity is its address).",
        UpdateAgentArguments,
        update_agent,
        read_only=False,
    ),
    ToolSpec(
        "delete_agent",
        "Delete an agent (DESTRUCTIVE)",
        "Move an agent to the trash with its messages and settings: it stops receiving mail, "
        "its agent keys stop working and it leaves list_agents, but restore_agent brings it "
        "back within the trash window (30 days; then it is purged). Its address stays taken "
        "meanwhile. Requires confirm: true.",
        DeleteAgentArguments,
        delete_agent,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "list_domains",
        "List domains",
        "List your custom mail domains with whether each is verified and the DNS records it "
        "needs. Pass next_cursor back as `cursor` while it is present.",
        PageArguments,
        list_domains,
    ),
    ToolSpec(
        "get_domain",
        "Get a domain",
        "One of your custom domains: verified or not, and the DNS records to publish.",
        DomainArguments,
        get_domain,
    ),
    ToolSpec(
        "register_domain",
        "Register a custom domain",
        "Step 1 of a custom domain: register it and get the DNS records (MX, TXT, and the "
        "DKIM key TXT when the gateway signs mail) to publish, verbatim. Step 2 is "
        "verify_domain, once they are published and have propagated.",
        DomainArguments,
        register_domain,
        read_only=False,
    ),
    ToolSpec(
        "verify_domain",
        "Verify a custom domain",
        "Check a registered domain's DNS records now; on success it is verified and agents "
        "can be created on it. Let the user say when the records are published; do not poll.",
        DomainArguments,
        verify_domain,
        read_only=False,
    ),
    ToolSpec(
        "delete_domain",
        "Delete a custom domain (DESTRUCTIVE)",
        "Remove a custom domain; refused while an agent uses it, trashed agents included. "
        "Requires confirm: true.",
        DeleteDomainArguments,
        delete_domain,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "list_api_keys",
        "List API keys",
        "List your API keys, newest first: id, name, the key's first characters "
        "(key_prefix), scope (account, or agent: bound to the agent in agent_email), when "
        "created, last used and when it expires (expires_at in the past: expired, it no longer "
        "works); never the key itself. Revoked keys are not listed. Pass next_cursor back as "
        "`cursor` while it is present.",
        PageArguments,
        list_api_keys,
    ),
    ToolSpec(
        "delete_api_key",
        "Revoke an API key (DESTRUCTIVE)",
        "Revoke an API key for good: every request with it fails from now on, this session's "
        "too if it is the key in use. Requires confirm: true; the id comes from list_api_keys.",
        DeleteApiKeyArguments,
        delete_api_key,
        read_only=False,
        destructive=True,
    ),
    ToolSpec(
        "create_api_key",
        "Create an agent-scoped API key",
        "A new API key bound to one of your agents: it reaches that agent's mail only, never "
        "the account (reviews, keys, domains). The key is in this answer only: hand it over "
        "now. Account keys only.",
        CreateApiKeyArguments,
        create_api_key,
        read_only=False,
    ),
)
