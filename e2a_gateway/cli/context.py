"""What every client command works with: its arguments, the saved settings, an SDK client,
and the errors that end it (exit 1 for errors the user can fix, 2 for bad usage).

The SDK (and httpx) is imported when a command first needs a client, not with this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from e2a_gateway.addresses import only_agent
from e2a_gateway.cli import exit_codes
from e2a_gateway.cli.config_file import config_path, effective, env_override, saved
from e2a_gateway.key_text import unsendable_key

if TYPE_CHECKING:
    import httpx

    from e2a_gateway.v1 import E2AClient

NOT_LOGGED_IN = "Not logged in: run `e2a login` (or set E2A_API_KEY and E2A_URL)"
NO_URL = (
    "no gateway URL: ~/.e2a/config.json has an API key but no api_url (e2a's CLI leaves it "
    "out for its hosted service): run `e2a config set api_url URL` or set E2A_URL"
)


class ClientError(Exception):
    """An error the user can fix; printed as one line, exit code 1 (or the one given)."""

    def __init__(self, message: str, exit_code: int = exit_codes.ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def checked_key(key: str, source: str) -> str:
    """`key` when an HTTP header can carry it (visible ASCII, as every e2a key is); else a
    ClientError with the exit code of a refused key, which names `source` (where the key came
    from) and never quotes the key."""
    problem = unsendable_key(key, source)
    if problem is not None:
        raise ClientError(problem, exit_codes.AUTH)
    return key


def key_source() -> str:
    """Where the key in use comes from, as a message names it."""
    return "in E2A_API_KEY" if env_override("api_key") else f"saved in {config_path()}"


CLI_TIMEOUT_SECONDS = 10.0
"""How long a command waits for each answer (the SDK's default is 30 s). The SDK's two retries
stay (a send that timed out is made again under the same Idempotency-Key, so it goes out once),
so a gateway that takes connections and never answers fails a command in about 32 s, not 90."""


class UsageError(Exception):
    """The command line is inconsistent in a way argparse cannot express; exit code 2."""


@dataclasses.dataclass
class Context:
    """One command's arguments, the saved settings and (lazily) an SDK client."""

    args: argparse.Namespace
    values: dict[str, str]
    _client: E2AClient | None = None
    _account: dict[str, Any] | None = None

    @property
    def json(self) -> bool:
        """Whether the user asked for JSON output."""
        return bool(getattr(self.args, "json", False))

    @property
    def text(self) -> bool:
        """Whether the user asked for the text alone (`--text`); UsageError when `--json`
        asks for JSON as well, as e2a's CLI refuses `messages get --text --json`."""
        text = bool(getattr(self.args, "text", False))
        if text and self.json:
            raise UsageError("--text and --json are mutually exclusive")
        return text

    @property
    def url(self) -> str:
        """The gateway URL (environment, then config file)."""
        url = effective("url", self.values)
        if not url:
            raise ClientError(NO_URL if saved("api_key", self.values) else NOT_LOGGED_IN)
        return url.rstrip("/")

    @property
    def key(self) -> str:
        """The API key (environment, then config file)."""
        key = effective("api_key", self.values)
        if not key:
            raise ClientError(NOT_LOGGED_IN)
        return checked_key(key, key_source())

    def client(self) -> E2AClient:
        """An SDK client for the configured gateway and key."""
        from e2a_gateway.v1 import E2AClient

        if self._client is None:
            self._client = E2AClient(
                api_key=self.key, agent_email="", base_url=self.url, timeout=CLI_TIMEOUT_SECONDS
            )
        return self._client

    def account(self) -> dict[str, Any]:
        """`GET /v1/account` with the key (`key_account`), asked once per command."""
        if self._account is None:
            self._account = key_account(self.client())
        return self._account

    def bound_agent(self) -> str | None:
        """The agent the key is bound to, None for an account key; a key `e2a login` saved
        as an account key is not asked about."""
        if not env_override("api_key") and saved("key_scope", self.values) == "account":
            return None
        bound = self.account().get("agent_email")
        return str(bound) if bound else None

    def default_agent(self) -> str | None:
        """The agent a command acts as without `--agent`: E2A_AGENT_EMAIL or the saved
        `agent_email`, unless the key is bound to another agent: an agent key may act as its
        agent only, so that one, stderr saying which setting is set aside and how to change
        it. None when no agent is configured."""
        configured = effective("agent_email", self.values)
        if not configured:
            return None
        chosen = self.address(configured)
        bound = self.bound_agent()
        if bound is None or bound.lower() == chosen.lower():
            return chosen
        where = "E2A_AGENT_EMAIL" if env_override("agent_email") else f"{config_path()}"
        print(
            f"e2a: this API key ({key_source()}) is bound to {bound}: acting as it, not as "
            f"agent_email {chosen} (from {where}); `e2a config set agent_email {bound}` "
            "(or unsetting E2A_AGENT_EMAIL) stops this note",
            file=sys.stderr,
        )
        return bound

    def agent(self) -> str:
        """`--agent`, else the default agent (`default_agent`), else the key's only agent (an
        agent key's is the agent it is bound to)."""
        chosen = getattr(self.args, "agent", None)
        if chosen:
            return self.address(str(chosen))
        if default := self.default_agent():
            return default
        agents = key_agents(self.client())
        only = only_agent(agents)
        if only is not None:
            return only
        if not agents:
            raise ClientError("this key has no agents: run `e2a agents register <slug>`")
        raise ClientError(
            f"this key has {len(agents)} agents: pass --agent EMAIL or run "
            "`e2a config set agent_email EMAIL`"
        )

    def address(self, email_or_slug: str) -> str:
        """An agent's address; a bare slug (as e2a's CLI allows) is on the shared domain."""
        if "@" in email_or_slug:
            return email_or_slug
        from e2a_gateway.v1 import fetch_info

        domain = effective("shared_domain", self.values) or fetch_info(self.url).shared_domain
        if not domain:
            raise ClientError(
                f"{email_or_slug!r} is not an address and this gateway has no shared domain: "
                "give the agent's full address"
            )
        return f"{email_or_slug}@{domain}"

    def close(self) -> None:
        """Close the HTTP connections, if any were opened."""
        if self._client is not None:
            self._client.close()


def key_account(client: E2AClient) -> dict[str, Any]:
    """`GET /v1/account` with `client`'s key: its `scope` and, for an agent key, the
    `agent_email` it is bound to (an error raises `E2AApiError`)."""
    from e2a_gateway.v1.endpoints import Call

    def answer(response: httpx.Response) -> dict[str, Any]:
        body = response.json()
        return body if isinstance(body, dict) else {}

    return client.api.call(Call("GET", "/v1/account", answer))


def key_agents(client: E2AClient) -> list[str]:
    """The agents `client`'s key reaches: the account's, or, for an agent key (which may not
    list them), the one it is bound to."""
    from e2a_gateway.v1 import E2AApiError

    try:
        return [agent.email for agent in client.list_agents().agents if agent.email]
    except E2AApiError as exc:
        if exc.status_code != 403:
            raise
        bound = key_account(client).get("agent_email")
        if not bound:
            raise
        return [str(bound)]


Handler = Callable[[Context], "int | None"]
"""A command: runs with its context; returns its exit code (None is 0)."""
