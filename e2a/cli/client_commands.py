"""Client commands of `e2a`: talk to a running gateway through the SDK (`e2a.v1`).

`login` saves the gateway URL and API key in `~/.e2a/config.json`; every other command reads
them from there, with `E2A_URL`/`E2A_BASE_URL`, `E2A_API_KEY` and `E2A_AGENT_EMAIL` taking
precedence. Output is a table for people and JSON with `--json`. Exit codes: 0 success,
1 an error the user can fix (API errors print the server's message), 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from e2a.cli.config_file import (
    KEYS,
    ConfigFileError,
    config_path,
    effective,
    env_override,
    load_config,
    save_config,
)
from e2a.cli.listen import add_listen_arguments, cmd_listen_with
from e2a.cli.output import email_json, print_fields, print_json, print_table, terminal_text

# The SDK (and httpx) is imported when a client command runs, not with this module: `e2a serve`
# builds the same argument parser, and the gateway starts faster without loading the SDK.
if TYPE_CHECKING:
    from e2a.v1 import E2AClient, InboundEmail, MessageSummary
    from e2a.v1.models import Agent, Domain, PendingMessageDetail

NOT_LOGGED_IN = "Not logged in: run `e2a login` (or set E2A_API_KEY and E2A_URL)"

EXAMPLES = {
    "login": "example:\n  e2a login --url http://127.0.0.1:8080 --api-key e2a_…\n"
    '  echo "$KEY" | e2a login --url http://127.0.0.1:8080',
    "agents": "example:\n  e2a agents register support\n  e2a agents list",
    "agents register": "example:\n  e2a agents register support --mode local\n"
    "  e2a agents register --email bot@example.com --webhook-url https://example.com/hook",
    "agents list": "example:\n  e2a agents list\n  e2a agents list --json",
    "agents update": "example:\n  e2a agents update support@agents.example.com --hitl "
    "--hitl-ttl 3600 --hitl-expire reject",
    "agents delete": "example:\n  e2a agents delete support@agents.example.com",
    "domains": "example:\n  e2a domains add example.com\n  e2a domains verify example.com",
    "domains add": "example:\n  e2a domains add example.com",
    "domains list": "example:\n  e2a domains list --json",
    "domains verify": "example:\n  e2a domains verify example.com",
    "domains delete": "example:\n  e2a domains delete example.com",
    "inbox": "example:\n  e2a inbox\n  e2a inbox --agent support@agents.example.com --all "
    "--limit 50",
    "read": "example:\n  e2a read msg_123\n  e2a read msg_123 --json | jq -r .text_body",
    "reply": "example:\n  e2a reply msg_123 --body 'Thanks, on it.'\n"
    "  generate-answer | e2a reply msg_123 --body -",
    "send": "example:\n  e2a send --to alice@example.org --subject Hello --body 'Hi Alice'",
    "pending": "example:\n  e2a pending",
    "approve": "example:\n  e2a approve out_123",
    "reject": "example:\n  e2a reject out_123 --reason 'wrong tone'",
    "config": "example:\n  e2a config\n  e2a config get url\n"
    "  e2a config set agent_email support@agents.example.com",
    "listen": "example:\n  e2a listen\n  e2a listen --json | jq -r .subject\n"
    '  e2a listen --forward https://api.openai.com/v1/responses --forward-token "$OPENAI_API_KEY"',
    "config get": "example:\n  e2a config get url",
    "config set": "example:\n  e2a config set agent_email support@agents.example.com",
}

CLIENT_COMMANDS = frozenset(
    {"login", "agents", "domains", "inbox", "read", "reply", "send", "pending", "approve"}
    | {"reject", "config", "listen"}
)
"""The top-level commands this module handles."""


class ClientError(Exception):
    """An error the user can fix; printed as one line, exit code 1."""


class UsageError(Exception):
    """The command line is inconsistent in a way argparse cannot express; exit code 2."""


Handler = Callable[["Context"], None]


@dataclasses.dataclass
class Context:
    """One command's arguments, the saved settings and (lazily) an SDK client."""

    args: argparse.Namespace
    values: dict[str, str]
    _client: E2AClient | None = None

    @property
    def json(self) -> bool:
        """Whether the user asked for JSON output."""
        return bool(getattr(self.args, "json", False))

    @property
    def url(self) -> str:
        """The gateway URL (environment, then config file)."""
        url = effective("url", self.values)
        if not url:
            raise ClientError(NOT_LOGGED_IN)
        return url

    def client(self) -> E2AClient:
        """An SDK client for the configured gateway and key."""
        from e2a.v1 import E2AClient

        if self._client is None:
            key = effective("api_key", self.values)
            if not key:
                raise ClientError(NOT_LOGGED_IN)
            self._client = E2AClient(api_key=key, agent_email="", base_url=self.url)
        return self._client

    def agent(self) -> str:
        """`--agent`, else the configured agent, else the key's only agent."""
        chosen = getattr(self.args, "agent", None) or effective("agent_email", self.values)
        if chosen:
            return str(chosen)
        agents = [a.email for a in self.client().list_agents().agents if a.email]
        if len(agents) == 1:
            return agents[0]
        if not agents:
            raise ClientError("this key has no agents: run `e2a agents register <slug>`")
        raise ClientError(
            f"this key has {len(agents)} agents: pass --agent EMAIL or run "
            "`e2a config set agent_email EMAIL`"
        )

    def close(self) -> None:
        """Close the HTTP connections, if any were opened."""
        if self._client is not None:
            self._client.close()


# Parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _add(
    commands: Any, name: str, handler: Handler | None, help_text: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand with `--json`, its example epilog and its handler."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name.split()[-1],
        help=help_text,
        description=description,
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: a nested parser must not reset a `--json` given before its action name.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _agent_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--agent",
        metavar="EMAIL",
        help="the agent mailbox (default: E2A_AGENT_EMAIL, the configured agent, "
        "or the key's only agent)",
    )


def _agent_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="display name")
    parser.add_argument("--webhook-url", metavar="URL", help="where inbound mail is POSTed")
    parser.add_argument(
        "--mode",
        choices=("cloud", "local"),
        help="cloud: webhook delivery; local: pull over REST/WebSocket",
    )


def add_client_commands(commands: Any) -> None:
    """Register the client commands on the `e2a` parser's subparsers."""
    login = _add(
        commands,
        "login",
        cmd_login,
        "save the gateway URL and API key in ~/.e2a/config.json",
        "Check the API key against the gateway, discover its shared domain and save both in "
        "~/.e2a/config.json (mode 0600). Asks for what is not given; without a terminal, "
        "the key is read from stdin.",
    )
    login.add_argument("--url", help="the gateway's base URL, e.g. http://127.0.0.1:8080")
    login.add_argument("--api-key", metavar="KEY", help="an API key from `e2a bootstrap`")
    login.add_argument("--agent", metavar="EMAIL", help="the default agent for later commands")

    agents = _add(
        commands, "agents", None, "register, list, update and delete agents", "Manage agents."
    )
    agent_commands = agents.add_subparsers(dest="agents_command", metavar="ACTION", required=True)
    register = _add(
        agent_commands,
        "agents register",
        cmd_agents_register,
        "register slug@<shared domain> or an address on your domain",
        "Register an agent: `slug` becomes slug@<shared domain>; --email uses an address on "
        "a domain you verified.",
    )
    register.add_argument("slug", nargs="?", help="the local part on the shared domain")
    register.add_argument("--email", help="a full address on one of your verified domains")
    _agent_settings(register)
    _add(agent_commands, "agents list", cmd_agents_list, "list your agents", "List your agents.")
    update = _add(
        agent_commands,
        "agents update",
        cmd_agents_update,
        "change an agent's settings",
        "Change only the settings given; the others keep their values.",
    )
    update.add_argument("email", help="the agent's address")
    _agent_settings(update)
    update.add_argument(
        "--hitl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold outbound mail for a person's approval",
    )
    update.add_argument("--hitl-ttl", type=_positive, metavar="SECONDS", help="approval window")
    update.add_argument(
        "--hitl-expire", choices=("approve", "reject"), help="what happens when the window ends"
    )
    delete = _add(
        agent_commands,
        "agents delete",
        cmd_agents_delete,
        "delete an agent and its messages",
        "Delete an agent and all its messages.",
    )
    delete.add_argument("email", help="the agent's address")

    domains = _add(
        commands, "domains", None, "add, list, verify and delete domains", "Manage domains."
    )
    domain_commands = domains.add_subparsers(
        dest="domains_command", metavar="ACTION", required=True
    )
    for name, handler, help_text in (
        ("add", cmd_domains_add, "add a domain and print the DNS records to create"),
        ("verify", cmd_domains_verify, "check the domain's TXT record"),
        ("delete", cmd_domains_delete, "remove a domain no agent uses"),
    ):
        sub = _add(domain_commands, f"domains {name}", handler, help_text, help_text.capitalize())
        sub.add_argument("domain", help="the domain name, e.g. example.com")
    _add(domain_commands, "domains list", cmd_domains_list, "list your domains", "List domains.")

    inbox = _add(
        commands,
        "inbox",
        cmd_inbox,
        "list an agent's inbound messages",
        "List an agent's inbound messages, oldest first (unread by default).",
    )
    _agent_option(inbox)
    status = inbox.add_mutually_exclusive_group()
    inbox.set_defaults(status="unread")
    for flag in ("unread", "read", "all"):
        status.add_argument(
            f"--{flag}", dest="status", action="store_const", const=flag, help=f"{flag} messages"
        )
    inbox.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N (default 20)"
    )

    read = _add(
        commands,
        "read",
        cmd_read,
        "show one message (and mark it read)",
        "Show one inbound message: headers, text body and attachments. Marks it read.",
    )
    read.add_argument("id", help="the message id (from `e2a inbox`)")
    _agent_option(read)

    reply = _add(
        commands,
        "reply",
        cmd_reply,
        "reply to an inbound message",
        "Reply to an inbound message (to its Reply-To or From, subject `Re: …`, threaded).",
    )
    reply.add_argument("id", help="the message id")
    reply.add_argument("--body", required=True, help="the text body; `-` reads stdin")
    reply.add_argument("--html", metavar="HTML", help="an HTML body as well")
    reply.add_argument("--reply-all", action="store_true", help="copy the other recipients")
    _agent_option(reply)

    send = _add(
        commands, "send", cmd_send, "send a new message", "Send a new message from an agent."
    )
    send.add_argument(
        "--to", action="append", required=True, metavar="ADDR", help="recipient (repeatable)"
    )
    send.add_argument("--cc", action="append", metavar="ADDR", help="copy (repeatable)")
    send.add_argument("--subject", required=True)
    send.add_argument("--body", required=True, help="the text body; `-` reads stdin")
    send.add_argument("--html", metavar="HTML", help="an HTML body as well")
    _agent_option(send)

    _add(
        commands,
        "pending",
        cmd_pending,
        "list outbound mail waiting for approval",
        "List outbound messages held for a person's approval.",
    )
    approve = _add(
        commands, "approve", cmd_approve, "approve a held message", "Approve and send it."
    )
    approve.add_argument("id", help="the outbound message id (from `e2a pending`)")
    reject = _add(
        commands, "reject", cmd_reject, "reject a held message", "Reject it; it is never sent."
    )
    reject.add_argument("id", help="the outbound message id (from `e2a pending`)")
    reject.add_argument("--reason", default="", help="why (kept with the message)")

    listen = _add(
        commands,
        "listen",
        cmd_listen,
        "print (or forward) new mail as it arrives",
        "Wait for mail to a local-mode agent over the WebSocket: unread messages first, then "
        "new ones, each fetched and marked read. --forward POSTs each message's JSON to a URL; "
        "with --forward-token it sends an OpenAI Responses API request instead and replies to "
        "the email with the model's output text.",
    )
    _agent_option(listen)
    add_listen_arguments(listen)

    config = _add(
        commands,
        "config",
        cmd_config,
        "show or change the saved client settings",
        f"Show or change ~/.e2a/config.json. Keys: {', '.join(KEYS)}. Environment "
        "variables (E2A_URL, E2A_API_KEY, E2A_AGENT_EMAIL) override the file.",
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION")
    get = _add(config_commands, "config get", cmd_config, "print one setting", "Print one setting.")
    get.add_argument("key", choices=KEYS)
    put = _add(config_commands, "config set", cmd_config, "save one setting", "Save one setting.")
    put.add_argument("key", choices=KEYS)
    put.add_argument("value")


# Helpers


def _text(value: str) -> str:
    """A body argument: `-` means read stdin."""
    return sys.stdin.read() if value == "-" else value


def _agent_json(agent: Agent) -> dict[str, Any]:
    return agent.model_dump(mode="json", exclude_none=True)


def _print_agent(agent: Agent) -> None:
    print_fields(
        [
            ("Email", agent.email),
            ("Name", agent.name),
            ("Mode", agent.agent_mode),
            ("Webhook", agent.webhook_url),
            ("HITL", agent.hitl_enabled),
            ("HITL TTL", agent.hitl_ttl_seconds),
            ("HITL expiry", agent.hitl_expiration_action),
        ]
    )


def _print_domain(domain: Domain) -> None:
    print_fields([("Domain", domain.domain), ("Verified", domain.verified)])
    records = domain.dns_records
    if records is None or domain.verified:
        return
    print(f"\nCreate these DNS records, then run `e2a domains verify {domain.domain}`:")
    rows = [
        (kind.upper(), record.host, record.value, record.priority)
        for kind, record in (("mx", records.mx), ("txt", records.txt))
        if record is not None
    ]
    print_table(("TYPE", "HOST", "VALUE", "PRIORITY"), rows, "")


def _outbound_json(message: PendingMessageDetail) -> dict[str, Any]:
    return message.model_dump(mode="json", exclude_none=True)


def _sent(ctx: Context, result: Any, verb: str) -> None:
    if ctx.json:
        print_json(dataclasses.asdict(result))
    elif result.status == "pending_approval":
        print(
            f"{verb} {result.message_id}: held for approval until {result.approval_expires_at} "
            f"(`e2a approve {result.message_id}`)"
        )
    else:
        print(f"{verb} {result.message_id} ({result.method}, {result.status})")


# Commands


def cmd_login(ctx: Context) -> None:
    """Validate the key, discover the shared domain, save the config file."""
    from e2a.v1 import E2AApiError, E2AClient, fetch_info

    args = ctx.args
    interactive = sys.stdin.isatty()
    url = args.url or env_override("url") or ctx.values.get("url")
    if not url:
        if not interactive:
            raise UsageError("--url is required when stdin is not a terminal")
        url = input("Gateway URL [http://127.0.0.1:8080]: ").strip() or "http://127.0.0.1:8080"
    key = args.api_key
    if not key:
        key = getpass.getpass("API key: ") if interactive else sys.stdin.readline()
        key = key.strip()
    if not key:
        raise ClientError("no API key: pass --api-key KEY (create one with `e2a bootstrap`)")
    url = url.rstrip("/")
    with E2AClient(api_key=key, agent_email="", base_url=url) as client:
        try:
            agents = [a.email for a in client.list_agents().agents if a.email]
        except E2AApiError as exc:
            if exc.status_code == 401:
                raise ClientError(f"the gateway refused this API key: {exc.message}") from None
            raise
    info = fetch_info(url)
    values = dict(ctx.values)
    values.update(url=url, api_key=key)
    values.pop("agent_email", None)
    if info.shared_domain:
        values["shared_domain"] = info.shared_domain
    else:
        values.pop("shared_domain", None)
    if args.agent:
        values["agent_email"] = args.agent
    elif len(agents) == 1:
        values["agent_email"] = agents[0]
    path = save_config(values)
    if ctx.json:
        print_json(
            {
                "url": url,
                "shared_domain": info.shared_domain,
                "agent_email": values.get("agent_email"),
                "agents": agents,
                "config_path": str(path),
            }
        )
        return
    print(f"Logged in to {url} ({len(agents)} agent{'s' if len(agents) != 1 else ''}).")
    if info.shared_domain:
        print(f"Shared domain: {info.shared_domain}")
    if values.get("agent_email"):
        print(f"Default agent: {values['agent_email']}")
    print(f"Saved {path} (mode 0600).")


def cmd_agents_register(ctx: Context) -> None:
    """`agents register <slug>|--email ADDR`."""
    args = ctx.args
    if bool(args.slug) == bool(args.email):
        raise UsageError("give either a slug or --email ADDR (not both)")
    agent = ctx.client().register_agent(
        args.slug,
        email=args.email,
        name=args.name,
        webhook_url=args.webhook_url,
        agent_mode=args.mode,
    )
    if ctx.json:
        print_json(_agent_json(agent))
        return
    print(f"Registered {agent.email}")
    _print_agent(agent)


def cmd_agents_list(ctx: Context) -> None:
    """`agents list`."""
    agents = ctx.client().list_agents().agents
    if ctx.json:
        print_json([_agent_json(a) for a in agents])
        return
    print_table(
        ("EMAIL", "MODE", "HITL", "WEBHOOK", "NAME"),
        [(a.email, a.agent_mode, a.hitl_enabled, a.webhook_url, a.name) for a in agents],
        "No agents yet: run `e2a agents register <slug>`.",
    )


def cmd_agents_update(ctx: Context) -> None:
    """`agents update <email> [...]`."""
    args = ctx.args
    changes: dict[str, Any] = {
        "name": args.name,
        "webhook_url": args.webhook_url,
        "agent_mode": args.mode,
        "hitl_enabled": args.hitl,
        "hitl_ttl_seconds": args.hitl_ttl,
        "hitl_expiration_action": args.hitl_expire,
    }
    if all(value is None for value in changes.values()):
        raise UsageError("nothing to change: give at least one option (see --help)")
    agent = ctx.client().update_agent(args.email, **changes)
    if ctx.json:
        print_json(_agent_json(agent))
        return
    print(f"Updated {agent.email}")
    _print_agent(agent)


def cmd_agents_delete(ctx: Context) -> None:
    """`agents delete <email>`."""
    ctx.client().delete_agent(ctx.args.email)
    if ctx.json:
        print_json({"deleted": ctx.args.email})
    else:
        print(f"Deleted {ctx.args.email}")


def cmd_domains_add(ctx: Context) -> None:
    """`domains add <domain>`."""
    domain = ctx.client().register_domain(ctx.args.domain)
    if ctx.json:
        print_json(domain.model_dump(mode="json", exclude_none=True))
        return
    print(f"Added {domain.domain}")
    _print_domain(domain)


def cmd_domains_list(ctx: Context) -> None:
    """`domains list`."""
    domains = ctx.client().list_domains().domains
    if ctx.json:
        print_json([d.model_dump(mode="json", exclude_none=True) for d in domains])
        return
    print_table(
        ("DOMAIN", "VERIFIED", "CREATED"),
        [(d.domain, d.verified, d.created_at) for d in domains],
        "No domains yet: run `e2a domains add <domain>`.",
    )


def cmd_domains_verify(ctx: Context) -> None:
    """`domains verify <domain>`; exit 1 while the TXT record is missing."""
    domain = ctx.client().verify_domain(ctx.args.domain)
    if ctx.json:
        print_json(domain.model_dump(mode="json", exclude_none=True))
    elif domain.verified:
        print(f"Verified {domain.domain}")
    else:
        _print_domain(domain)
    if not domain.verified:
        raise ClientError(f"{domain.domain} is not verified yet: check its DNS TXT record")


def cmd_domains_delete(ctx: Context) -> None:
    """`domains delete <domain>`."""
    ctx.client().delete_domain(ctx.args.domain)
    if ctx.json:
        print_json({"deleted": ctx.args.domain})
    else:
        print(f"Deleted {ctx.args.domain}")


def cmd_inbox(ctx: Context) -> None:
    """`inbox`: up to --limit messages, following pages as needed."""
    client, agent, limit = ctx.client(), ctx.agent(), ctx.args.limit
    messages: list[MessageSummary] = []
    token: str | None = None
    while len(messages) < limit:
        page = client.get_messages(
            ctx.args.status, min(limit - len(messages), 100), token, agent_email=agent
        )
        messages.extend(page.messages)
        token = page.next_token
        if not token or not page.messages:
            break
    messages = messages[:limit]
    if ctx.json:
        print_json([dataclasses.asdict(m) for m in messages])
        return
    print_table(
        ("ID", "FROM", "SUBJECT", "STATUS", "RECEIVED"),
        [(m.message_id, m.sender, m.subject, m.status, m.created_at) for m in messages],
        f"No {'' if ctx.args.status == 'all' else ctx.args.status + ' '}messages for {agent}.",
    )


def _verification(email: InboundEmail) -> dict[str, Any]:
    """What the gateway found about the sender: verified or not, and the SPF, DKIM and DMARC
    results (`X-E2A-Auth-Verified`, `-Sender`, `-Entity-Type`, `-Domain-Check`)."""
    auth = email.auth
    results = {}
    for item in auth.domain_check.split(";"):
        method, _, result = item.strip().partition("=")
        if method and result:
            results[method] = result
    return {
        "verified": auth.verified,
        "sender": auth.sender or email.sender,
        "entity_type": auth.entity_type or None,
        "authentication_results": results,
    }


def _verification_line(verification: dict[str, Any]) -> str:
    """`yes (spf=pass, dkim=pass, dmarc=pass)` or `NO (…): the sender is not proven`."""
    results = verification["authentication_results"]
    checks = ", ".join(f"{method}={result}" for method, result in results.items())
    checks = checks or "no authentication results"
    if verification["entity_type"] == "agent":
        checks = f"an agent of this gateway; {checks}"
    if verification["verified"]:
        return f"yes ({checks})"
    return f"NO ({checks}): nothing proves it came from {verification['sender']}"


def cmd_read(ctx: Context) -> None:
    """`read <id>`: the message with the gateway's verification of its sender."""
    email = ctx.client().get_message(ctx.args.id, agent_email=ctx.agent())
    verification = _verification(email)
    if ctx.json:
        print_json({**email_json(email), "verification": verification})
        return
    fields: list[tuple[str, object]] = [
        ("From", email.sender),
        ("Verified", _verification_line(verification)),
        ("To", email.to or email.recipient),
    ]
    if email.cc:
        fields.append(("Cc", email.cc))
    fields += [("Subject", email.subject), ("Date", email.received_at), ("ID", email.message_id)]
    if email.attachments:
        fields.append(
            (
                "Attachments",
                [f"{a.filename} ({a.content_type}, {a.size} bytes)" for a in email.attachments],
            )
        )
    print_fields(fields)
    print()
    print(terminal_text(email.text_body.rstrip("\n"), multiline=True) or "(no text body)")


def cmd_reply(ctx: Context) -> None:
    """`reply <id> --body …`."""
    args = ctx.args
    result = ctx.client().reply(
        args.id,
        _text(args.body),
        html_body=args.html,
        reply_all=True if args.reply_all else None,
        agent_email=ctx.agent(),
    )
    _sent(ctx, result, "Replied")


def cmd_send(ctx: Context) -> None:
    """`send --to … --subject … --body …`."""
    args = ctx.args
    to = [addr.strip() for value in args.to for addr in value.split(",") if addr.strip()]
    cc = [addr.strip() for value in args.cc or [] for addr in value.split(",") if addr.strip()]
    result = ctx.client().send(
        to,
        args.subject,
        _text(args.body),
        html_body=args.html,
        cc=cc or None,
        agent_email=ctx.agent(),
    )
    _sent(ctx, result, "Sent")


def cmd_pending(ctx: Context) -> None:
    """`pending`: held mail of all your agents, with the agent that sends it."""
    messages = ctx.client().list_pending_messages().messages
    if ctx.json:
        print_json([_outbound_json(m) for m in messages])
        return
    print_table(
        ("ID", "FROM", "TO", "SUBJECT", "STATUS", "EXPIRES"),
        [(m.id, m.agent_id, m.to, m.subject, m.status, m.approval_expires_at) for m in messages],
        "Nothing is waiting for approval.",
    )


def cmd_approve(ctx: Context) -> None:
    """`approve <id>`."""
    message = ctx.client().approve_message(ctx.args.id)
    if ctx.json:
        print_json(_outbound_json(message))
    else:
        print(f"Approved {message.id} ({message.status})")


def cmd_reject(ctx: Context) -> None:
    """`reject <id> [--reason]`."""
    message = ctx.client().reject_message(ctx.args.id, ctx.args.reason)
    if ctx.json:
        print_json(_outbound_json(message))
    else:
        print(f"Rejected {message.id} ({message.status})")


def cmd_listen(ctx: Context) -> None:
    """`listen [--forward URL [--forward-token T]]`."""
    if ctx.args.forward_token and not ctx.args.forward:
        raise UsageError("--forward-token needs --forward URL (the Responses API endpoint)")
    agent = ctx.agent()
    key = effective("api_key", ctx.values) or ""
    cmd_listen_with(ctx.args, ctx.url, key, agent, as_json=ctx.json)


def _masked(key: str, value: str) -> str:
    return value[:8] + "…" if key == "api_key" and len(value) > 8 else value


def cmd_config(ctx: Context) -> None:
    """`config`, `config get KEY`, `config set KEY VALUE`."""
    args = ctx.args
    action = getattr(args, "config_command", None)
    if action == "set":
        values = dict(ctx.values)
        values[args.key] = args.value
        path = save_config(values)
        if ctx.json:
            print_json({args.key: _masked(args.key, args.value), "config_path": str(path)})
        else:
            print(f"Set {args.key} in {path}")
        return
    if action == "get":
        value = effective(args.key, ctx.values)
        if value is None:
            raise ClientError(f"{args.key} is not set: `e2a config set {args.key} VALUE`")
        if ctx.json:
            print_json({args.key: value})
        else:
            print(value)
        return
    rows = []
    for key in KEYS:
        value = effective(key, ctx.values)
        source = "env" if env_override(key) else ("file" if key in ctx.values else "")
        rows.append((key, _masked(key, value or ""), source))
    if ctx.json:
        print_json(
            {
                "config_path": str(config_path()),
                **{key: value or None for key, value, _ in rows},
            }
        )
        return
    print_table(("KEY", "VALUE", "SOURCE"), rows, "")
    print(f"\n{config_path()}", file=sys.stderr)


# Dispatch


def run_client_command(args: argparse.Namespace) -> int:
    """Run a parsed client command; returns the exit code (0, 1 or 2)."""
    import httpx

    from e2a.v1 import E2AApiError

    try:
        ctx = Context(args, load_config())
    except ConfigFileError as exc:
        print(f"e2a: {exc}", file=sys.stderr)
        return 1
    handler: Handler = args.handler
    try:
        handler(ctx)
    except UsageError as exc:
        print(f"e2a {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"e2a: {exc}", file=sys.stderr)
        return 1
    except E2AApiError as exc:
        code = f"{exc.status_code} {exc.code}" if exc.code else str(exc.status_code)
        print(f"e2a: {terminal_text(exc.message)} ({code})", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        url = getattr(args, "url", None) or effective("url", ctx.values)
        print(f"e2a: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()
    return 0
