"""Client commands of `e2a`: talk to a running gateway through the SDK (`e2a_gateway.v1`).

`login` saves the gateway URL and API key in `~/.e2a/config.json`; every other command reads
them from there, with `E2A_URL`/`E2A_BASE_URL`, `E2A_API_KEY` and `E2A_AGENT_EMAIL` taking
precedence. The spellings of e2a's own CLI work too (`pending approve`, `domains register`,
`--hitl-expiration-action`, `config get api_url`), beside ours (`approve`, `domains add`,
`--hitl-expire`). Output is a table for people and JSON with `--json`. Exit codes are e2a's
CLI's (`exit_codes`): API errors print the server's message and exit 4 (key refused), 5
(refused for good) or 1 (transient); 2 is bad usage, 3 a send held for review.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import shlex
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from e2a_gateway.addresses import only_agent
from e2a_gateway.cli import exit_codes
from e2a_gateway.cli.approvals import (
    cmd_approve,
    cmd_pending_list,
    cmd_pending_show,
    cmd_reject,
)
from e2a_gateway.cli.compose import ComposeError, add_body_arguments, attachments, message_bodies
from e2a_gateway.cli.config_file import (
    E2A_KEYS,
    KEYS,
    ConfigFileError,
    canonical_key,
    config_path,
    effective,
    env_override,
    load_config,
    save_config,
    saved,
    set_saved,
)
from e2a_gateway.cli.context import (
    ClientError,
    Context,
    Handler,
    UsageError,
    checked_key,
    key_agents,
)
from e2a_gateway.cli.doctor import add_doctor_arguments, cmd_doctor
from e2a_gateway.cli.listen import add_listen_arguments, cmd_listen_with, read_forward_token
from e2a_gateway.cli.output import (
    email_json,
    print_compact_json,
    print_fields,
    print_json,
    print_table,
    terminal_text,
)
from e2a_gateway.cli.v1_commands import (
    SCAN_LEVELS,
    agent_path,
    cmd_agents_create,
    cmd_agents_get,
    cmd_keys_create,
    cmd_keys_delete,
    cmd_keys_list,
    cmd_messages_get,
    cmd_messages_lifecycle,
    cmd_messages_list,
    cmd_protection_get,
    cmd_protection_set,
    key_scope,
    message_path,
    sdk_shape,
    send_result_line,
    send_v1,
)

# The SDK (and httpx) is imported when a client command runs, not with this module: `e2a serve`
# builds the same argument parser, and the gateway starts faster without loading the SDK.
if TYPE_CHECKING:
    from e2a_gateway.v1 import InboundEmail, MessageSummary
    from e2a_gateway.v1.models import Agent, Domain

EXAMPLES = {
    "login": "example:\n  e2a login --url http://127.0.0.1:8080    (asks for the key)\n"
    "  printf '%s\\n' \"$KEY\" | e2a login --url http://127.0.0.1:8080\n"
    "--api-key KEY works too, but the key is then in the process list and the shell's history",
    "whoami": "example:\n  e2a whoami\n  e2a whoami --json | jq -r .key.name",
    "doctor": "example:\n  e2a doctor\n  e2a doctor --agent helpdesk@example.com "
    "--dkim-selector e2a --nameserver 1.1.1.1",
    "agents": "example:\n  e2a agents register helpdesk\n  e2a agents list",
    "agents register": "example:\n  e2a agents register helpdesk --mode local\n"
    "  e2a agents register --email bot@example.com --webhook-url https://example.com/hook",
    "agents list": "example:\n  e2a agents list\n  e2a agents list --json",
    "agents update": "example:\n  e2a agents update helpdesk@agents.example.com --hitl "
    "--hitl-ttl 3600 --hitl-expiration-action reject\n"
    "  e2a agents update helpdesk --no-hitl    (a slug is on the shared domain)",
    "agents delete": "example:\n  e2a agents delete helpdesk@agents.example.com",
    "domains": "example:\n  e2a domains register example.com\n  e2a domains verify example.com",
    "domains register": "example:\n  e2a domains register example.com\n"
    "  e2a domains add example.com    (the same)",
    "domains list": "example:\n  e2a domains list --json",
    "domains verify": "example:\n  e2a domains verify example.com",
    "domains delete": "example:\n  e2a domains delete example.com",
    "inbox": "example:\n  e2a inbox\n  e2a inbox --agent helpdesk@agents.example.com --all "
    "--limit 50\n  e2a inbox --all --limit 50 --token <token printed by the last page>",
    "read": "example:\n  e2a read msg_123\n  e2a read msg_123 --json | jq -r .text_body",
    "reply": "example:\n  e2a reply msg_123 --body 'Thanks, on it.'\n"
    "  generate-answer | e2a reply msg_123 --body - --cc boss@example.org "
    "--attach report.pdf",
    "send": "example:\n  e2a send --to alice@example.org --subject Hello --body 'Hi Alice'\n"
    "  e2a send --to alice@example.org --bcc audit@example.org --subject Report "
    "--html-file report.html --attach report.pdf",
    "pending": "example:\n  e2a pending\n  e2a pending approve out_123 --edit",
    "pending list": "example:\n  e2a pending list --json",
    "pending show": "example:\n  e2a pending show out_123",
    "pending approve": "example:\n  e2a pending approve out_123\n"
    "  EDITOR=nano e2a pending approve out_123 --edit",
    "pending reject": "example:\n  e2a pending reject out_123 --reason 'wrong tone'",
    "approve": "example:\n  e2a approve out_123    (the same as `e2a pending approve`)",
    "reject": "example:\n  e2a reject out_123 --reason 'wrong tone'",
    "config": "example:\n  e2a config\n  e2a config get url\n"
    "  e2a config set agent_email helpdesk@agents.example.com",
    "listen": "example:\n  e2a listen\n  e2a listen --json | jq -r .subject\n"
    "  e2a listen --forward http://127.0.0.1:3000/hook\n"
    "  e2a listen --forward https://api.openai.com/v1/responses "
    "--forward-token-file ~/.config/openai.key\n"
    "  e2a listen --once --until 10m --conversation conv_42 --json",
    "config list": "example:\n  e2a config list --json",
    "config get": "example:\n  e2a config get url\n  e2a config get api_url    (e2a's name)",
    "config set": "example:\n  e2a config set agent_email helpdesk@agents.example.com",
    "messages": "example:\n  e2a messages list --direction inbound --read-status unread",
    "messages list": "example:\n  e2a messages list --since 2026-07-01T00:00:00Z --json\n"
    "  e2a messages list | while IFS=$'\\t' read -r id from at; do …; done",
    "messages get": "example:\n  e2a messages get msg_123 --text",
    "messages lifecycle": "example:\n  e2a messages lifecycle msg_123",
    "agents create": "example:\n  e2a agents create bot@example.com --name 'Support bot'",
    "agents get": "example:\n  e2a agents get bot@example.com --json",
    "keys": "example:\n  e2a keys create --agent bot@example.com\n  e2a keys list",
    "keys create": "example:\n  e2a keys create\n"
    "  KEY=$(e2a keys create --agent bot@example.com --name ci)",
    "keys list": "example:\n  e2a keys list --json",
    "keys delete": "example:\n  e2a keys delete key_123",
    "protection": "example:\n  e2a protection get bot@example.com\n"
    "  e2a protection set bot@example.com --outbound-review on",
    "protection get": "example:\n  e2a protection get bot@example.com --json",
    "protection set": "example:\n  e2a protection set bot@example.com --outbound-review off\n"
    "  e2a protection set bot@example.com --suppress-notifications on",
}

CLIENT_COMMANDS = frozenset(
    {"login", "whoami", "doctor", "agents", "domains", "inbox", "read", "reply", "send"}
    | {"pending", "approve", "reject", "config", "listen", "messages", "keys", "protection"}
)
"""The top-level commands this module handles."""

DESCRIPTION_WIDTH = 88
"""Columns a command's description is wrapped to in its --help (the examples are not)."""

INBOX_LIMIT = 20
"""How many messages `e2a inbox` lists without --limit."""

CONFIG_KEYS = (*KEYS, *E2A_KEYS, "key_scope")
"""The names `e2a config get|set` accepts: ours and e2a's CLI's (`key_scope`, the key's scope
as `e2a login` found it, can be read but not set)."""
EXAMPLES.update(
    {
        f"config {key}": f"example:\n  e2a config {key}    (`e2a config get {key}`)"
        for key in CONFIG_KEYS
    }
)


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
    commands: Any,
    name: str,
    handler: Handler | None,
    help_text: str,
    description: str,
    aliases: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand with `--json`, its example epilog and its handler."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name.split()[-1],
        aliases=list(aliases),
        help=help_text,
        description=textwrap.fill(description, DESCRIPTION_WIDTH),
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
        help="cloud: webhook delivery; local: pull over REST/WebSocket (a new agent is "
        "local unless --webhook-url is given, as in e2a's CLI)",
    )


def _addresses(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    parser.add_argument(f"--{flag}", action="append", metavar="ADDR", help=help_text)


def _idempotency_key(text: str) -> str:
    """`--idempotency-key`: 1 to 255 visible ASCII characters, as the API takes (and as an
    HTTP header can carry)."""
    if not 1 <= len(text) <= 255 or not all("!" <= char <= "~" for char in text):
        raise argparse.ArgumentTypeError(
            "must be 1 to 255 visible ASCII characters (no spaces), as the API takes"
        )
    return text


def _idempotency_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idempotency-key",
        type=_idempotency_key,
        metavar="KEY",
        help="a key of your choosing: running the same command again with it (a retry) is "
        "answered the first message again instead of sending twice",
    )


def _account_commands(commands: Any) -> None:
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
    login.add_argument(
        "--api-key",
        metavar="KEY",
        help="an API key from `e2a bootstrap` (without it, asked for or read from stdin, "
        "which keeps it out of the process list)",
    )
    login.add_argument("--agent", metavar="EMAIL", help="the default agent for later commands")

    _add(
        commands,
        "whoami",
        cmd_whoami,
        "show the gateway, the key and the agents it reaches",
        "Check the saved (or E2A_*) settings against the gateway: its URL and version, which "
        "API key this is, the key's agents and the default one.",
    )
    doctor = _add(
        commands,
        "doctor",
        cmd_doctor,
        "check the gateway, key, agent, DNS and WebSocket; say what to fix",
        "Read-only diagnostics (sends no mail, marks nothing read): the gateway answers "
        "/api/health and /api/v1/info, the key works, the agent exists, the DNS of the "
        "agent's domain (MX to the gateway's SMTP host, the verification TXT, SPF, DKIM, "
        "DMARC) and, for a local agent, its WebSocket. Each check prints ✓ or ✗ with what "
        "to fix; exit 9 when one failed, 8 for warnings only, 4 for a refused key, 1 when the "
        "gateway does not answer. Every step gives up after 5 seconds.",
    )
    _agent_option(doctor)
    add_doctor_arguments(doctor)


def _agent_commands(commands: Any) -> None:
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
    listing = _add(
        agent_commands,
        "agents list",
        cmd_agents_list,
        "list your agents",
        "List your agents; among several, the one later commands use is marked (active).",
    )
    _agent_option(listing)
    update = _add(
        agent_commands,
        "agents update",
        cmd_agents_update,
        "change an agent's settings",
        "Change only the settings given; the others keep their values.",
    )
    update.add_argument("email", help="the agent's address (a bare slug: on the shared domain)")
    _agent_settings(update)
    update.add_argument(
        "--hitl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold outbound mail for a person's approval",
    )
    update.add_argument("--hitl-ttl", type=_positive, metavar="SECONDS", help="approval window")
    update.add_argument(
        "--hitl-expiration-action",
        "--hitl-expire",
        dest="hitl_expire",
        choices=("approve", "reject"),
        help="what happens when the window ends",
    )
    update.add_argument(
        "--approval-notifications",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="email the owner when a message is held (on by default)",
    )
    delete = _add(
        agent_commands,
        "agents delete",
        cmd_agents_delete,
        "delete an agent and its messages",
        "Delete an agent and all its messages.",
    )
    delete.add_argument("email", help="the agent's address (a bare slug: on the shared domain)")
    create = _add(
        agent_commands,
        "agents create",
        cmd_agents_create,
        "create an agent (e2a's CLI's spelling): prints its address",
        "Create an agent at EMAIL (a bare name: on the shared domain) and print its address.",
    )
    create.add_argument("email", help="the agent's address (a bare name: on the shared domain)")
    create.add_argument("--name", help="display name")
    get = _add(
        agent_commands,
        "agents get",
        cmd_agents_get,
        "show one agent",
        "Show one agent: email, name, domain (verified or not) and when it was created.",
    )
    get.add_argument("email", help="the agent's address (a bare name: on the shared domain)")


def _key_commands(commands: Any) -> None:
    keys = _add(commands, "keys", None, "create, list and revoke API keys", "Manage API keys.")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = _add(
        actions,
        "keys create",
        cmd_keys_create,
        "create an API key: prints it once",
        "Create an API key, for the whole account or (--agent) bound to one agent, and print "
        "it alone on stdout: it is shown only this once.",
    )
    create.add_argument("--agent", metavar="EMAIL", help="bind the key to this agent")
    create.add_argument("--name", help="a name to recognise it by")
    _add(actions, "keys list", cmd_keys_list, "list your API keys", "List API keys (not revoked).")
    delete = _add(
        actions, "keys delete", cmd_keys_delete, "revoke an API key", "Revoke an API key for good."
    )
    delete.add_argument("id", help="the key's id (from `e2a keys list`)")


def _protection_commands(commands: Any) -> None:
    protection = _add(
        commands,
        "protection",
        None,
        "show or change an agent's protection (review holds)",
        "An agent's protection config (beta in e2a): its inbound and outbound gates, content "
        "scans (none on this gateway: always off) and holds.",
    )
    actions = protection.add_subparsers(dest="protection_command", metavar="ACTION", required=True)
    get = _add(
        actions,
        "protection get",
        cmd_protection_get,
        "show an agent's gates, scans and holds",
        "Show an agent's protection: each direction's gate (policy/action) and scan, and how "
        "holds expire.",
    )
    get.add_argument("email", help="the agent's address (a bare name: on the shared domain)")
    put = _add(
        actions,
        "protection set",
        cmd_protection_set,
        "turn review holds on or off, changing only what is given",
        "Turn an agent's review on or off, changing only what is given. On holds what the "
        "gate does not pass; as this gateway has no content scan, an open gate (which passes "
        "everyone) becomes an allowlist with no entry, so that everything is held. Off lets "
        "everything through (flagged when the gate does not pass it).",
    )
    put.add_argument("email", help="the agent's address (a bare name: on the shared domain)")
    for flag, what in (
        ("outbound-review", "hold the agent's sends for a person's review"),
        ("inbound-review", "hold mail to the agent for a person's review"),
        ("suppress-notifications", "send no notice email when a message is held"),
    ):
        put.add_argument(f"--{flag}", choices=("on", "off"), help=what)
    for direction in ("outbound", "inbound"):
        put.add_argument(
            f"--{direction}-scan",
            choices=SCAN_LEVELS,
            metavar="LEVEL",
            help="the content scan: only off here (this gateway has none)",
        )


def _domain_commands(commands: Any) -> None:
    domains = _add(
        commands, "domains", None, "register, list, verify and delete domains", "Manage domains."
    )
    domain_commands = domains.add_subparsers(
        dest="domains_command", metavar="ACTION", required=True
    )
    for name, handler, help_text, aliases in (
        (
            "register",
            cmd_domains_register,
            "add a domain; print the DNS records to create",
            ("add",),
        ),
        ("verify", cmd_domains_verify, "check the domain's TXT record", ()),
        ("delete", cmd_domains_delete, "remove a domain no agent uses", ()),
    ):
        sub = _add(
            domain_commands,
            f"domains {name}",
            handler,
            help_text,
            help_text.capitalize() + ".",
            aliases,
        )
        sub.add_argument("domain", help="the domain name, e.g. example.com")
    _add(domain_commands, "domains list", cmd_domains_list, "list your domains", "List domains.")


def _mail_commands(commands: Any) -> None:
    inbox = _add(
        commands,
        "inbox",
        cmd_inbox,
        "list an agent's inbound messages",
        "List an agent's inbound messages, oldest first (unread by default). When more are "
        "left, the token of the next page is printed on stderr.",
    )
    _agent_option(inbox)
    status = inbox.add_mutually_exclusive_group()
    inbox.set_defaults(status="unread")
    for flag in ("unread", "read", "all"):
        status.add_argument(
            f"--{flag}", dest="status", action="store_const", const=flag, help=f"{flag} messages"
        )
    inbox.add_argument(
        "--limit",
        type=_positive,
        default=INBOX_LIMIT,
        metavar="N",
        help=f"at most N (default {INBOX_LIMIT})",
    )
    inbox.add_argument("--token", help="start at this page (printed after a listing)")

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
    add_body_arguments(reply)
    reply.add_argument("--reply-all", action="store_true", help="copy the other recipients")
    _addresses(reply, "cc", "copy (repeatable)")
    _addresses(reply, "bcc", "blind copy (repeatable)")
    _reply_to_option(reply)
    _idempotency_option(reply)
    _agent_option(reply)

    send = _add(
        commands, "send", cmd_send, "send a new message", "Send a new message from an agent."
    )
    send.add_argument(
        "--to", action="append", required=True, metavar="ADDR", help="recipient (repeatable)"
    )
    _addresses(send, "cc", "copy (repeatable)")
    _addresses(send, "bcc", "blind copy (repeatable)")
    send.add_argument("--subject", required=True)
    add_body_arguments(send)
    send.add_argument(
        "--conversation-id",
        "--conversation",
        dest="conversation_id",
        metavar="ID",
        help="the thread this message belongs to",
    )
    _reply_to_option(send)
    _idempotency_option(send)
    _agent_option(send)

    messages = _add(
        commands,
        "messages",
        None,
        "list and fetch an agent's messages (e2a's CLI's scripting commands)",
        "An agent's messages, received and sent, through the gateway's /v1 API, as e2a's CLI "
        "prints them: tab-separated lines, or one JSON object per line with --json.",
    )
    actions = messages.add_subparsers(dest="messages_command", metavar="ACTION", required=True)
    listing = _add(
        actions,
        "messages list",
        cmd_messages_list,
        "list messages, oldest first: ID, FROM, CREATED per line",
        "List messages oldest first, read and unread alike (not marking them read): "
        "`ID<TAB>FROM<TAB>CREATED` per line, or NDJSON with --json.",
    )
    listing.add_argument("--direction", choices=("inbound", "outbound", "all"))
    listing.add_argument("--since", metavar="TIME", help="from this RFC 3339 time on (inclusive)")
    listing.add_argument("--conversation", "--conversation-id", dest="conversation", metavar="ID")
    listing.add_argument("--read-status", choices=("unread", "read", "all"), default="all")
    listing.add_argument("--limit", type=_positive, metavar="N", help="at most N messages")
    _agent_option(listing)
    get = _add(
        actions,
        "messages get",
        cmd_messages_get,
        "print one message as JSON (marks it read)",
        "Print one message as one line of JSON, or with --text only its text (the reply "
        "without the quoted history). Marks mail received read.",
    )
    get.add_argument("id", help="the message id")
    get.add_argument("--text", action="store_true", help="print the parsed text body only")
    _agent_option(get)
    lifecycle = _add(
        actions,
        "messages lifecycle",
        cmd_messages_lifecycle,
        "a message's lifecycle transitions (beta)",
        "Print one page of the message's lifecycle transitions as JSON (beta in e2a).",
    )
    lifecycle.add_argument("id", help="the message id")
    lifecycle.add_argument("--cursor", help="continue from a previous page")
    lifecycle.add_argument("--limit", type=int, metavar="N", help="page size, 1 to 100")
    _agent_option(lifecycle)


def _reply_to_option(parser: argparse.ArgumentParser) -> None:
    _addresses(parser, "reply-to", "where replies should go (repeatable, up to 5)")


def _approval_commands(commands: Any) -> None:
    pending = _add(
        commands,
        "pending",
        cmd_pending_list,
        "outbound mail waiting for approval: list, show, approve, reject",
        "Outbound messages held for a person's approval. Without an action: list them.",
    )
    actions = pending.add_subparsers(dest="pending_command", metavar="ACTION")
    _add(actions, "pending list", cmd_pending_list, "list held messages", "List held messages.")
    show = _add(
        actions,
        "pending show",
        cmd_pending_show,
        "show a held message with its body",
        "Show one outbound message: recipients, subject, status, expiry and body.",
    )
    show.add_argument("id", help="the outbound message id (from `e2a pending`)")
    for parent, prefix in ((actions, "pending "), (commands, "")):
        approve = _add(
            parent,
            f"{prefix}approve",
            cmd_approve,
            "approve a held message",
            "Approve it and send it. --edit opens it in $VISUAL/$EDITOR first (subject, to, "
            "cc, bcc lines, then the body); only what you change is sent as edits.",
        )
        approve.add_argument("id", help="the outbound message id (from `e2a pending`)")
        approve.add_argument("--edit", action="store_true", help="edit it before approving")
        reject = _add(
            parent,
            f"{prefix}reject",
            cmd_reject,
            "reject a held message",
            "Reject it; it is never sent.",
        )
        reject.add_argument("id", help="the outbound message id (from `e2a pending`)")
        reject.add_argument("--reason", default="", help="why (kept with the message)")


def _listen_command(commands: Any) -> None:
    listen = _add(
        commands,
        "listen",
        cmd_listen,
        "print (or forward) new mail as it arrives",
        "Wait for mail to a local-mode agent over the WebSocket: unread messages first, then "
        "new ones, each fetched and marked read. --forward URL POSTs each message's full JSON "
        "(as GET /api/v1/agents/{email}/messages/{id} returns it, raw_message and "
        "auth_headers included, so the handler can verify it with the SDK) to URL; nothing "
        "is replied. With --forward-token TOKEN (sent as `Authorization: Bearer TOKEN`), or "
        "to a URL whose path ends in /v1/responses (as in e2a's CLI), the POST is an OpenAI "
        "Responses API request ({model, input}) instead, and the model's output text is sent "
        "back as the reply to the email; automatic mail (Auto-Submitted, bulk and list mail, "
        "bounces, the agent's own) is never answered.",
    )
    _agent_option(listen)
    add_listen_arguments(listen)


def _config_command(commands: Any) -> None:
    config = _add(
        commands,
        "config",
        cmd_config,
        "show or change the saved client settings",
        f"Show or change ~/.e2a/config.json. Keys: {', '.join(KEYS)} (e2a's CLI's api_url "
        "is url; a config file e2a's CLI wrote is read as it is). Environment variables "
        "(E2A_BASE_URL or E2A_URL, E2A_API_KEY, E2A_AGENT_EMAIL, E2A_SHARED_DOMAIN) "
        "override the file.",
    )
    actions = config.add_subparsers(dest="config_command", metavar="ACTION")
    _add(actions, "config list", cmd_config, "show every setting", "Show every setting.")
    get = _add(actions, "config get", cmd_config, "print one setting", "Print one setting.")
    get.add_argument("key", choices=CONFIG_KEYS)
    for key in CONFIG_KEYS:  # `e2a config api_key`: e2a's CLI's shorthand for `config get`
        bare = actions.add_parser(
            key,
            description=f"Print {key} (`e2a config get {key}`).",
            epilog=EXAMPLES[f"config {key}"],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        bare.set_defaults(config_command="get", key=key)
        bare.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
        )
    put = _add(actions, "config set", cmd_config, "save one setting", "Save one setting.")
    put.add_argument("key", choices=CONFIG_KEYS)
    put.add_argument("value")


def add_client_commands(commands: Any) -> None:
    """Register the client commands on the `e2a` parser's subparsers."""
    _account_commands(commands)
    _agent_commands(commands)
    _key_commands(commands)
    _protection_commands(commands)
    _domain_commands(commands)
    _mail_commands(commands)
    _approval_commands(commands)
    _listen_command(commands)
    _config_command(commands)


# Helpers


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
            ("HITL emails", agent.approval_notifications),
        ]
    )


def _print_domain(domain: Domain) -> None:
    print_fields([("Domain", domain.domain), ("Verified", domain.verified)])
    records = domain.dns_records
    if records is not None and not domain.verified:
        print(f"\nCreate these DNS records, then run `e2a domains verify {domain.domain}`:")
        rows = [
            (kind.upper(), record.host, record.value, record.priority)
            for kind, record in (("mx", records.mx), ("txt", records.txt))
            if record is not None
        ]
        print_table(("TYPE", "HOST", "VALUE", "PRIORITY"), rows, "")
    _print_dkim_record(domain)


def _print_dkim_record(domain: Domain) -> None:
    """The DKIM key record the domain lists, in full (a table would cut the key short), and
    the next key's while the gateway's key is being rotated."""
    record = domain.dns_records.dkim if domain.dns_records else None
    if record is None or not record.host or not record.value:
        return
    print(
        f"\nMail sent from {domain.domain} is DKIM-signed: publish TXT "
        f"{record.host}.{domain.domain} with this value, or it fails DKIM (verifying does not "
        "check it; `e2a doctor` does):"
    )
    print(record.value)
    upcoming = domain.dns_records.dkim_next if domain.dns_records else None
    if upcoming is None or not upcoming.host or not upcoming.value:
        return
    print(
        f"\nThe gateway's DKIM key is being rotated: publish TXT "
        f"{upcoming.host}.{domain.domain} with this value too, now, and keep the one above; "
        "mail signed with the next key fails DKIM where it is missing:"
    )
    print(upcoming.value)


def _sent(result: Any, verb: str) -> int:
    """Print what a send or reply answered, as e2a's CLI does: the message's id alone on
    stdout (`ID=$(e2a send …)`), what became of it on stderr; its exit code: 3 when held for
    review, 7 when it failed or answered a status this CLI does not know."""
    print(result.message_id)
    if result.status == "pending_approval":
        note = (
            f"{verb} {result.message_id}: held for approval until "
            f"{result.approval_expires_at} (`e2a approve {result.message_id}`)"
        )
    else:
        note = f"{verb} {result.message_id} ({result.method}, {result.status})"
    print(note, file=sys.stderr)
    return sent_exit_code(result.status, result.message_id)


def _sent_v1(ctx: Context, answer: dict[str, Any], verb: str) -> int:
    """Print what a `/v1` send or reply answered (as `_sent`, or with --json as e2a's CLI
    does: `send_result_line`); its exit code."""
    status, message_id = str(answer.get("status") or ""), str(answer.get("message_id") or "")
    if ctx.json:
        send_result_line(answer)
    else:
        print(message_id)
        print(f"{verb} {message_id} ({answer.get('method')}, {status})", file=sys.stderr)
    return sent_exit_code(status, message_id)


def sent_exit_code(status: str, message_id: str) -> int:
    """The exit code of a send that answered `status` (a `/api/v1` or a `/v1` status): 0 sent
    or accepted, 3 held for review (stderr says it did not go out), 7 failed or unknown."""
    if status in ("sent", "accepted"):
        return exit_codes.OK
    if status in ("pending_approval", "pending_review"):
        print(
            f"e2a: {message_id} is held for review and did NOT go out yet (exit 3)",
            file=sys.stderr,
        )
        return exit_codes.HELD
    print(
        f"e2a: {message_id} answered status {terminal_text(status)!r}, not sent: do not retry, "
        f"look at the message (`e2a pending show {message_id}`)",
        file=sys.stderr,
    )
    return exit_codes.SEND_OUTCOME


# Commands


def cmd_login(ctx: Context) -> None:
    """Validate the key, discover the shared domain, save the config file."""
    from e2a_gateway.v1 import E2AApiError, E2AClient, E2AConnectionError, fetch_info

    args = ctx.args
    interactive = sys.stdin.isatty()
    url = args.url or effective("url", ctx.values)
    if not url:
        if not interactive:
            raise UsageError("--url is required when stdin is not a terminal")
        url = input("Gateway URL [http://127.0.0.1:8080]: ").strip() or "http://127.0.0.1:8080"
    key, source = args.api_key, "given with --api-key"
    if not key:
        key = getpass.getpass("API key: ") if interactive else sys.stdin.readline()
        key, source = key.strip(), "typed" if interactive else "read from stdin"
    if not key:
        raise ClientError("no API key: pass --api-key KEY (create one with `e2a bootstrap`)")
    checked_key(key, source)
    url = url.rstrip("/")
    _check_url(url)
    try:
        info = fetch_info(url)
    except E2AConnectionError:
        raise  # said as `cannot reach the gateway` by run_client_command
    except E2AApiError as exc:
        if exc.code == "redirected":  # names where to: an http:// URL of an https gateway
            raise ClientError(exc.message) from None
        status = f"{exc.status_code}, not JSON" if exc.code == "invalid_answer" else exc.status_code
        raise ClientError(
            f"{url} does not answer as an e2a gateway (GET /api/v1/info: {status}); check --url"
        ) from None
    with E2AClient(api_key=key, agent_email="", base_url=url) as client:
        try:
            agents = key_agents(client)
        except E2AApiError as exc:
            if exc.status_code == 401:
                raise ClientError(
                    f"the gateway refused this API key: {exc.message}", exit_codes.AUTH
                ) from None
            raise
        scope = key_scope(client)
    values = dict(ctx.values)
    set_saved(values, "url", url)
    set_saved(values, "api_key", key)
    values.pop("agent_email", None)
    values.pop("key_scope", None)
    if scope:
        values["key_scope"] = scope
    if info.shared_domain:
        values["shared_domain"] = info.shared_domain
    else:
        values.pop("shared_domain", None)
    if args.agent:
        values["agent_email"] = args.agent
    elif (only := only_agent(agents)) is not None:
        values["agent_email"] = only
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
        agent_mode=args.mode or ("cloud" if args.webhook_url else "local"),
    )
    if ctx.json:
        print_json(_agent_json(agent))
        return
    print(f"Registered {agent.email}")
    _print_agent(agent)


def cmd_agents_list(ctx: Context) -> None:
    """`agents list [--agent EMAIL]`: among several agents, the one later commands use
    (`--agent`, else the configured one, else `only_agent`) is marked `(active)`, as in e2a's
    CLI."""
    agents = ctx.client().list_agents().agents
    if ctx.json:
        print_json([_agent_json(a) for a in agents])
        return
    chosen = ctx.args.agent or ctx.default_agent()
    addresses = [a.email for a in agents if a.email]
    active = ctx.address(str(chosen)) if chosen else only_agent(addresses)

    def shown(email: str | None) -> str | None:
        return f"{email} (active)" if email == active and len(addresses) > 1 else email

    print_table(
        ("EMAIL", "MODE", "HITL", "WEBHOOK", "NAME"),
        [(shown(a.email), a.agent_mode, a.hitl_enabled, a.webhook_url, a.name) for a in agents],
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
        "approval_notifications": args.approval_notifications,
    }
    if all(value is None for value in changes.values()):
        raise UsageError("nothing to change: give at least one option (see --help)")
    agent = ctx.client().update_agent(ctx.address(args.email), **changes)
    if ctx.json:
        print_json(_agent_json(agent))
        return
    print(f"Updated {agent.email}")
    _print_agent(agent)


def cmd_agents_delete(ctx: Context) -> None:
    """`agents delete <email>`."""
    email = ctx.address(ctx.args.email)
    ctx.client().delete_agent(email)
    if ctx.json:
        print_json({"deleted": email})
    else:
        print(f"Deleted {email}")


def cmd_domains_register(ctx: Context) -> None:
    """`domains register <domain>` (also `domains add`)."""
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
        "No domains yet: run `e2a domains register <domain>`.",
    )


def cmd_domains_verify(ctx: Context) -> None:
    """`domains verify <domain>`; exit 1 while the TXT record is missing."""
    domain = ctx.client().verify_domain(ctx.args.domain)
    if ctx.json:
        print_json(domain.model_dump(mode="json", exclude_none=True))
    elif domain.verified:
        print(f"Verified {domain.domain}")
        _print_dkim_record(domain)
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
    """`inbox`: up to --limit messages from --token on, following pages as needed; the token
    of the next page goes to stderr."""
    client, agent, limit = ctx.client(), ctx.agent(), ctx.args.limit
    messages: list[MessageSummary] = []
    token: str | None = ctx.args.token
    while len(messages) < limit:
        page = client.get_messages(
            ctx.args.status, min(limit - len(messages), 100), token, agent_email=agent
        )
        messages.extend(page.messages)
        token = page.next_token
        if not token or not page.messages:
            break
    if ctx.json:
        print_json([dataclasses.asdict(m) for m in messages])
    else:
        print_table(
            ("ID", "FROM", "SUBJECT", "STATUS", "RECEIVED"),
            [(m.message_id, m.sender, m.subject, m.status, m.created_at) for m in messages],
            f"No {'' if ctx.args.status == 'all' else ctx.args.status + ' '}messages for {agent}.",
        )
    if token and messages:
        print(f"Next page: {_next_page_command(ctx, agent, token)}", file=sys.stderr)


def _next_page_command(ctx: Context, agent: str, token: str) -> str:
    """The `e2a inbox` command that lists the next page: the same agent, status and limit as
    this one, for a token only means something in the listing that gave it (run with another
    status or agent, it would skip messages)."""
    words = ["e2a", "inbox", "--agent", agent]
    if ctx.args.status != "unread":
        words.append(f"--{ctx.args.status}")
    if ctx.args.limit != INBOX_LIMIT:
        words += ["--limit", str(ctx.args.limit)]
    return shlex.join([*words, "--token", token])


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


def _list(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated addresses as one list."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def cmd_reply(ctx: Context) -> int:
    """`reply <id> --body …`."""
    args = ctx.args
    bodies = message_bodies(args)
    if args.reply_to or ctx.json:
        path = message_path(ctx.agent(), args.id, "/reply")
        fields = {
            "text": bodies.text,
            "html": bodies.html,
            "reply_all": args.reply_all,
            "cc": _list(args.cc),
            "bcc": _list(args.bcc),
            "reply_to": _list(args.reply_to),
            "attachments": [a.to_wire() for a in attachments(args) or []],
        }
        return _sent_v1(ctx, send_v1(ctx, path, fields), "Replied")
    result = ctx.client().reply(
        args.id,
        bodies.text,
        html_body=bodies.html,
        reply_all=True if args.reply_all else None,
        cc=_list(args.cc) or None,
        bcc=_list(args.bcc) or None,
        attachments=attachments(args),
        agent_email=ctx.agent(),
        idempotency_key=args.idempotency_key,
    )
    return _sent(result, "Replied")


def cmd_send(ctx: Context) -> int:
    """`send --to … --subject … --body …`."""
    args = ctx.args
    bodies = message_bodies(args)
    if args.reply_to or ctx.json:
        fields = {
            "to": _list(args.to),
            "subject": args.subject,
            "text": bodies.text,
            "html": bodies.html,
            "cc": _list(args.cc),
            "bcc": _list(args.bcc),
            "reply_to": _list(args.reply_to),
            "conversation_id": args.conversation_id,
            "attachments": [a.to_wire() for a in attachments(args) or []],
        }
        answer = send_v1(ctx, agent_path(ctx.agent(), "/messages"), fields)
        return _sent_v1(ctx, answer, "Sent")
    result = ctx.client().send(
        _list(args.to),
        args.subject,
        bodies.text,
        html_body=bodies.html,
        cc=_list(args.cc) or None,
        bcc=_list(args.bcc) or None,
        conversation_id=args.conversation_id,
        attachments=attachments(args),
        agent_email=ctx.agent(),
        idempotency_key=args.idempotency_key,
    )
    return _sent(result, "Sent")


def cmd_listen(ctx: Context) -> int:
    """`listen [--forward URL [--forward-token T | --forward-token-file F]] [--once] …`."""
    if (ctx.args.forward_token or ctx.args.forward_token_file) and not ctx.args.forward:
        raise UsageError("--forward-token needs --forward URL (it is that POST's bearer token)")
    read_forward_token(ctx.args)
    if ctx.text and not ctx.args.once:
        raise UsageError("--text requires --once (it prints the one message listen waits for)")
    agent = ctx.agent()
    return cmd_listen_with(ctx.args, ctx.url, ctx.key, agent, as_json=ctx.json)


def cmd_whoami(ctx: Context) -> None:
    """`whoami`: the gateway, this key (its scope, and the agent an agent key is bound to), its
    agents and the default agent. With `--json`, e2a's AccountView followed by these."""
    from e2a_gateway.v1 import fetch_info

    client, key = ctx.client(), ctx.key
    info = fetch_info(ctx.url)
    account = ctx.account()
    bound = account.get("agent_email")
    mine = None
    if bound:  # an agent key may list neither keys nor agents (403): its agent is known
        agents = [str(bound)]
    else:
        keys = client.api.list_api_keys().api_keys
        mine = next((k for k in keys if k.key_prefix and key.startswith(k.key_prefix)), None)
        agents = [agent.email for agent in client.list_agents().agents if agent.email]
    default = ctx.default_agent() or (str(bound) if bound else None)
    if default is None:
        default = only_agent(agents)
    if ctx.json:
        # e2a's CLI prints the AccountView alone; the gateway's keys follow it, none of them
        # one of its names (its agentEmail is the key's bound agent, agent_email the default).
        ours = {
            "url": ctx.url,
            "version": info.version,
            "shared_domain": info.shared_domain or None,
            "key": mine.model_dump(mode="json", exclude_none=True) if mine else None,
            "agents": agents,
            "agent_email": default,
        }
        print_compact_json(sdk_shape(account) | ours)
        return
    named = f"{mine.name} ({mine.id}, {mine.key_prefix}…)" if mine else f"{key[:12]}…"
    scope = f"{account.get('scope')}" + (f", bound to {bound}" if bound else "")
    print_fields(
        [
            ("Gateway", f"{ctx.url} (e2a {info.version})"),
            ("Shared domain", info.shared_domain or "none"),
            ("Key", f"{named} ({scope})"),
            ("Agents", agents or "none yet"),
            ("Default agent", default or "none: pass --agent or `e2a config set agent_email`"),
        ]
    )


def _masked(key: str, value: str) -> str:
    return value[:8] + "…" if key == "api_key" and len(value) > 8 else value


def _check_url(url: str) -> None:
    """Refuse a gateway URL that names no scheme: every later command would fail on it."""
    if not url.lower().startswith(("http://", "https://")):
        raise UsageError(
            f"{url!r} is no gateway URL: give its scheme, such as http://{url.strip('/')}"
        )


def cmd_config(ctx: Context) -> None:
    """`config [list]`, `config get KEY`, `config set KEY VALUE` (KEY ours or e2a's)."""
    args = ctx.args
    action = getattr(args, "config_command", None)
    if action == "set":
        if args.key == "key_scope":
            raise UsageError("key_scope is not set by hand: `e2a login` records the key's scope")
        if canonical_key(args.key) == "url":
            _check_url(args.value)
        values = dict(ctx.values)
        set_saved(values, args.key, args.value)
        if canonical_key(args.key) == "api_key":
            values.pop("key_scope", None)  # that of the previous key
        path = save_config(values)
        if ctx.json:
            print_json(
                {args.key: _masked(canonical_key(args.key), args.value), "config_path": str(path)}
            )
        else:
            print(f"Set {args.key} in {path}")
        if env_override(args.key):
            print(
                f"Note: an environment variable overrides {args.key} until it is unset.",
                file=sys.stderr,
            )
        return
    if action == "get":
        # Unset, stdout stays empty and the exit code 0, as in e2a's CLI; stderr says how.
        value = effective(args.key, ctx.values) or None
        if value is None and args.key == "key_scope":
            print("key_scope is not known: `e2a login` records the key's scope", file=sys.stderr)
        elif value is None:
            print(f"{args.key} is not set: `e2a config set {args.key} VALUE`", file=sys.stderr)
        if ctx.json:
            print_json({args.key: value})
        elif value is not None:
            print(value)
        return
    rows = []
    for key in KEYS:
        value = effective(key, ctx.values)
        source = "env" if env_override(key) else ("file" if saved(key, ctx.values) else "")
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


def _key_hint() -> str:
    """What to do about a key the gateway refused: where it came from, and `e2a login`."""
    if env_override("api_key"):
        return ": the key in E2A_API_KEY is refused; set a valid one or unset it and `e2a login`"
    return f": the key saved in {config_path()} is refused; run `e2a login` with a valid key"


def _valid_url(url: str | None) -> bool:
    """Whether `url` is one httpx can send requests to."""
    import httpx

    try:
        httpx.URL(url or "")
    except httpx.InvalidURL:
        return False
    return bool(url)


def run_client_command(args: argparse.Namespace) -> int:
    """Run a parsed client command; returns the exit code."""
    import httpx

    from e2a_gateway.v1 import E2AApiError, E2AConnectionError

    try:
        ctx = Context(args, load_config())
    except ConfigFileError as exc:
        print(f"e2a: {exc}", file=sys.stderr)
        return 1
    handler: Handler = args.handler
    try:
        return handler(ctx) or 0
    except (UsageError, ComposeError) as exc:
        print(f"e2a {args.command}: error: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except ConfigFileError as exc:
        print(f"e2a: {exc}", file=sys.stderr)
        return exit_codes.ERROR
    except ClientError as exc:
        print(f"e2a: {exc}", file=sys.stderr)
        return exc.exit_code
    except E2AConnectionError as exc:  # no answer: a retry may help
        url = getattr(args, "url", None) or effective("url", ctx.values)
        print(f"e2a: cannot reach the gateway at {url}: {exc.__cause__}", file=sys.stderr)
        return exit_codes.ERROR
    except E2AApiError as exc:
        code = f"{exc.status_code} {exc.code}" if exc.code else str(exc.status_code)
        hint = _key_hint() if exc.status_code == 401 else ""
        print(f"e2a: {terminal_text(exc.message)} ({code}){hint}", file=sys.stderr)
        if exc.code in ("redirected", "invalid_answer"):  # not the gateway answering
            return exit_codes.ERROR
        return exit_codes.for_api_status(exc.status_code)
    except httpx.HTTPError as exc:
        url = getattr(args, "url", None) or effective("url", ctx.values)
        print(f"e2a: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return exit_codes.ERROR
    except httpx.InvalidURL as exc:  # not an HTTPError: raised before any request is made
        url = getattr(args, "url", None) or effective("url", ctx.values)
        if _valid_url(url):  # so an argument made the request's URL invalid
            print(
                f"e2a {args.command}: error: an argument cannot be part of a URL ({exc}): "
                "check the ids and addresses given",
                file=sys.stderr,
            )
            return exit_codes.USAGE
        print(
            f"e2a: the gateway URL {url!r} is not valid ({exc}): give one such as "
            "http://127.0.0.1:8080 (--url, E2A_URL or `e2a config set url URL`)",
            file=sys.stderr,
        )
        return 1
    finally:
        ctx.close()
