"""The commands of e2a's CLI (`@e2a/cli` 2.0.0) that need the gateway's `/v1` API: `messages
list|get|lifecycle`, `agents create|get`, `keys create|list|delete`, and `send`/`reply` with
`--reply-to`.

Each request goes through the SDK's client (its key, base URL and error handling), to the
`/v1` path. Output is e2a's CLI's: tab-separated lines for people and pipes, and with `--json`
one object per line in the shape of e2a's SDK models (camelCase keys, times as
`2026-07-01T10:00:00.000Z`). Text that came from mail goes through `terminal_text`.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any

from e2a_gateway.cli.context import Context, UsageError, key_account
from e2a_gateway.cli.output import print_compact_json, terminal_text
from e2a_gateway.clock import parse_timestamp

if TYPE_CHECKING:
    import httpx

    from e2a_gateway.v1 import E2AClient
    from e2a_gateway.v1.endpoints import Call

MAX_PAGE_SIZE = 100
"""The largest page `/v1` lists; `messages list` asks for it to drain a mailbox in few calls."""


def _object(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def v1_call(
    ctx: Context,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One `/v1` request with the configured key; its JSON object (an error raises
    `E2AApiError`, as every SDK call does)."""
    from e2a_gateway.v1.endpoints import Call

    call = Call(method, f"/v1{path}", _object, json=body, params=params, headers=headers)
    return ctx.client().api.call(call)


def key_scope(client: E2AClient) -> str | None:
    """The scope of `client`'s key (`account` or `agent`, from `GET /v1/account`), which
    `e2a login` records as e2a's CLI does; None when the gateway does not say."""
    from e2a_gateway.v1 import E2AApiError

    try:
        scope = key_account(client).get("scope")
    except E2AApiError:
        return None
    return scope if isinstance(scope, str) and scope else None


def agent_path(email: str, suffix: str = "") -> str:
    """`/agents/{email}{suffix}`, the address escaped as one path segment."""
    from e2a_gateway.v1.endpoints import path_segment

    return f"/agents/{path_segment(email)}{suffix}"


def message_path(email: str, message_id: str, suffix: str = "") -> str:
    """`/agents/{email}/messages/{id}{suffix}`, each escaped as one path segment."""
    from e2a_gateway.v1.endpoints import path_segment

    return agent_path(email, f"/messages/{path_segment(message_id)}{suffix}")


def pages(ctx: Context, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Every item of a `/v1` listing, following `next_cursor`."""
    cursor: str | None = None
    while True:
        query = params if cursor is None else {**params, "cursor": cursor}
        page = v1_call(ctx, "GET", path, params=query)
        yield from page.get("items") or []
        cursor = page.get("next_cursor")
        if not cursor:
            return


_SNAKE = re.compile(r"_([a-z0-9])")


def js_time(text: str) -> str:
    """An RFC 3339 time as JavaScript's `Date.toISOString()` writes it (UTC, milliseconds)."""
    instant = parse_timestamp(text).astimezone(UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def sdk_shape(value: Any, key: str = "") -> Any:
    """A `/v1` answer as e2a's SDK models print as JSON: camelCase keys, and times (`…_at`
    fields) in `Date.toISOString()`'s form."""
    if isinstance(value, dict):
        return {_SNAKE.sub(lambda m: m[1].upper(), k): sdk_shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [sdk_shape(item) for item in value]
    if isinstance(value, str) and key.endswith("_at"):
        try:
            return js_time(value)
        except ValueError:
            return value
    return value


def print_line(value: dict[str, Any]) -> None:
    """One compact JSON object per line (NDJSON), in the SDK's shape."""
    print_compact_json(sdk_shape(value))


def _tsv(*fields: object) -> None:
    print("\t".join(terminal_text(str(field)) if field is not None else "" for field in fields))


# messages


def cmd_messages_list(ctx: Context) -> None:
    """`messages list`: oldest first, read and unread alike unless `--read-status` says
    otherwise; `ID<TAB>FROM<TAB>CREATED` per line, or NDJSON with `--json`."""
    args = ctx.args
    params = {"sort": "asc", "read_status": args.read_status or "all"}
    if args.direction:
        params["direction"] = args.direction
    if args.since:
        params["since"] = args.since
    if args.conversation:
        params["conversation_id"] = args.conversation
    params["limit"] = str(min(args.limit or MAX_PAGE_SIZE, MAX_PAGE_SIZE))
    agent = ctx.agent()
    for count, message in enumerate(pages(ctx, agent_path(agent, "/messages"), params), 1):
        if ctx.json:
            print_line(message)
        else:
            created = message.get("created_at")
            _tsv(message.get("id"), message.get("header_from") or "", created and js_time(created))
        if args.limit is not None and count >= args.limit:
            return


def get_message_call(agent: str, message_id: str) -> Call[dict[str, Any]]:
    """`GET /v1/agents/{email}/messages/{id}` (getMessage, which marks mail received read), for
    the SDK's sync or async client."""
    from e2a_gateway.v1.endpoints import Call

    return Call("GET", f"/v1{message_path(agent, message_id)}", _object)


def message_text(message: dict[str, Any]) -> str:
    """What `--text` prints of a `/v1` message: what the sender wrote (`reply_text`, without
    quoted history and signature) for mail received, else its parsed or body text; stripped
    and terminal-safe. An empty `reply_text` (a reply that only quotes) prints empty, as
    e2a's CLI prints an empty parsed text."""
    text = message.get("reply_text")
    if not isinstance(text, str):
        parsed, body = message.get("parsed") or {}, message.get("body") or {}
        text = parsed.get("text") if parsed.get("text") is not None else body.get("text")
    return terminal_text((text or "").strip(), multiline=True)


def cmd_messages_get(ctx: Context) -> None:
    """`messages get <id> [--text]`: the message as JSON (one line), or its text only."""
    text = ctx.text
    message = ctx.client().api.call(get_message_call(ctx.agent(), ctx.args.id))
    if text:
        print(message_text(message))
        return
    print_line(message)


def cmd_messages_lifecycle(ctx: Context) -> None:
    """`messages lifecycle <id>` (beta in e2a): one page of the message's transitions."""
    params = {}
    if ctx.args.cursor:
        params["cursor"] = ctx.args.cursor
    if ctx.args.limit is not None:
        if not 1 <= ctx.args.limit <= 100:
            raise UsageError("--limit must be 1 to 100")
        params["limit"] = str(ctx.args.limit)
    path = message_path(ctx.agent(), ctx.args.id, "/lifecycle")
    print_line(v1_call(ctx, "GET", path, params=params))


# agents


def cmd_agents_create(ctx: Context) -> None:
    """`agents create <email> [--name N]`: prints the address (a bare name is on the shared
    domain), or the agent as JSON."""
    body = {"email": ctx.address(ctx.args.email)}
    if ctx.args.name:
        body["name"] = ctx.args.name
    agent = v1_call(ctx, "POST", "/agents", body=body)
    if ctx.json:
        print_line(agent)
    else:
        print(agent.get("email"))


def cmd_agents_get(ctx: Context) -> None:
    """`agents get <email>`: email, name, domain (verified or not) and creation time."""
    agent = v1_call(ctx, "GET", agent_path(ctx.address(ctx.args.email)))
    if ctx.json:
        print_line(agent)
        return
    verified = "verified" if agent.get("domain_verified") else "unverified"
    print(f"email:    {terminal_text(str(agent.get('email')))}")
    if agent.get("name"):
        print(f"name:     {terminal_text(str(agent['name']))}")
    print(f"domain:   {terminal_text(str(agent.get('domain')))} ({verified})")
    if agent.get("created_at"):
        print(f"created:  {js_time(agent['created_at'])}")


# keys


def cmd_keys_create(ctx: Context) -> None:
    """`keys create [--agent EMAIL] [--name N]`: the new key alone on stdout (shown once),
    what it is on stderr."""
    agent = ctx.address(ctx.args.agent) if ctx.args.agent else None
    scope = "agent key" if agent else "account key"
    body: dict[str, Any] = {"name": ctx.args.name or f"{scope} @{socket.gethostname()}"}
    if agent:
        body.update(scope="agent", agent_email=agent)
    created = v1_call(ctx, "POST", "/account/api-keys", body=body)
    if ctx.json:
        print_line(created)
        return
    print(created.get("key"))
    bound = f"agent-scoped: {agent}" if agent else "account-scoped"
    print(f"Key {created.get('id')} created ({bound}). Shown once — store it now.", file=sys.stderr)


def cmd_keys_list(ctx: Context) -> None:
    """`keys list`: `ID<TAB>PREFIX<TAB>SCOPE<TAB>AGENT<TAB>NAME` per key."""
    for key in pages(ctx, "/account/api-keys", {"limit": str(MAX_PAGE_SIZE)}):
        if ctx.json:
            print_line(key)
        else:
            _tsv(
                key.get("id"),
                key.get("key_prefix"),
                key.get("scope"),
                key.get("agent_email") or "",
                key.get("name") or "",
            )


def cmd_keys_delete(ctx: Context) -> None:
    """`keys delete <id>`: revoke it; prints `revoked <id>`, or the answer as JSON."""
    from e2a_gateway.v1.endpoints import path_segment

    path = f"/account/api-keys/{path_segment(ctx.args.id)}"
    answer = v1_call(ctx, "DELETE", path, params={"confirm": "DELETE"})
    if ctx.json:
        print_line(answer)
        return
    print(f"revoked {terminal_text(str(answer.get('id') or ctx.args.id))}")


# send and reply through `/v1`: with --reply-to (a field of `/v1` only) or --json (its answer)


SEND_RESULT_FIELDS = (
    "approval_expires_at",
    "edited",
    "message_id",
    "method",
    "provider_message_id",
    "sent_as",
    "status",
)
"""SendResultView's fields in the order e2a's SDK model holds them, which is the order its
CLI prints them in with `--json` (fields the SDK does not know are left out)."""


def send_result_line(answer: dict[str, Any]) -> None:
    """A `/v1` SendResultView as `send`/`reply --json` of e2a's CLI prints it: one compact
    line in the SDK's shape (`{"messageId":…,"method":…,"sentAs":…,"status":…}`)."""
    print_line({field: answer[field] for field in SEND_RESULT_FIELDS if field in answer})


def send_v1(ctx: Context, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`POST` a send or reply to the `/v1` `path` (under the agent), with the command's
    `--idempotency-key`; its SendResultView (`status`, `message_id`, `method`)."""
    body = {name: value for name, value in fields.items() if value}
    key = ctx.args.idempotency_key
    headers = {"Idempotency-Key": key} if key else None
    return v1_call(ctx, "POST", path, body=body, headers=headers)


# protection (beta in e2a)

SCAN_LEVELS = ("off", "low", "medium", "high")
"""The content scan's sensitivities in e2a; this gateway has no content scan: `off` only."""


def _protection_summary(config: dict[str, Any]) -> str:
    """e2a's CLI's three lines: each direction's gate (policy/action) and scan, then holds."""

    def direction(name: str) -> str:
        gate, scan = config[name].get("gate") or {}, config[name].get("scan") or {}
        policy, action = gate.get("policy") or "open", gate.get("action") or "flag"
        return f"gate={policy}/{action} scan={scan.get('sensitivity') or 'off'}"

    holds = config.get("holds") or {}
    notifications = "suppressed" if holds.get("suppress_notifications") else "enabled"
    return terminal_text(
        f"outbound: {direction('outbound')}\ninbound:  {direction('inbound')}\n"
        f"holds:    ttl={holds.get('ttl_seconds') or 604800}s "
        f"on_expiry={holds.get('on_expiry') or 'reject'} notifications={notifications}",
        multiline=True,
    )


def _print_protection(ctx: Context, config: dict[str, Any]) -> None:
    if ctx.json:
        print_line(config)
    else:
        print(_protection_summary(config))


def cmd_protection_get(ctx: Context) -> None:
    """`protection get <email>`: the agent's gates, scans and holds."""
    _print_protection(
        ctx, v1_call(ctx, "GET", agent_path(ctx.address(ctx.args.email), "/protection"))
    )


def _set_review(config: dict[str, Any], name: str, on: bool) -> str | None:
    """Turn `name`'s (`inbound` or `outbound`) review on or off, as e2a's CLI does, for a
    gateway without a content scan; what to tell the user about it, if anything.

    e2a's CLI turns review on by holding what the gate does not pass and turning a scan on at
    `medium`, which holds what an open gate lets through. Here, where the scan stays off, an
    open gate would hold nothing: it becomes an allowlist with no entry, which holds everything
    (for outbound mail, `agents update --hitl`'s gate). Off, it lets everything through: the
    action becomes `flag`, and an allowlist with no entry (which would flag every message) is
    opened again."""
    gate = config[name].setdefault("gate", {})
    config[name]["scan"] = {"sensitivity": "off"}
    what = "send" if name == "outbound" else "message received"
    if not on:
        gate["action"] = "flag"
        if gate.get("policy") == "allowlist" and not gate.get("allowlist"):
            gate["policy"], gate["allowlist"] = "open", []
        return None
    gate["action"] = "review"
    if (gate.get("policy") or "open") == "open":
        gate["policy"], gate["allowlist"] = "allowlist", []
        return (
            f"{name} review on: this gateway has no content scan (scan stays off), and an open "
            f"gate holds nothing, so the gate is now an allowlist with no entry: every {what} "
            "is held for review"
        )
    return (
        f"{name} review on: this gateway has no content scan (scan stays off): a {what} is "
        f"held when the {gate.get('policy')} gate does not pass it"
    )


def cmd_protection_set(ctx: Context) -> None:
    """`protection set <email> [--outbound-review on|off] [--inbound-review on|off]
    [--suppress-notifications on|off]`: change only those, read first and written whole."""
    args = ctx.args
    for name in ("outbound", "inbound"):
        level = getattr(args, f"{name}_scan")
        if level not in (None, "off"):
            raise UsageError(
                f"this gateway has no content scan: --{name}-scan takes only off (to hold mail "
                f"for a person, use --{name}-review on)"
            )
    reviews = {"outbound": args.outbound_review, "inbound": args.inbound_review}
    if all(v is None for v in (*reviews.values(), args.suppress_notifications)):
        raise UsageError(
            "nothing to change: give --outbound-review, --inbound-review or "
            "--suppress-notifications (on or off)"
        )
    path = agent_path(ctx.address(args.email), "/protection")
    # Read first, and write only after a read that worked: the PUT replaces the whole config.
    config = v1_call(ctx, "GET", path)
    notes = [_set_review(config, name, mode == "on") for name, mode in reviews.items() if mode]
    if args.suppress_notifications is not None:
        config.setdefault("holds", {})["suppress_notifications"] = (
            args.suppress_notifications == "on"
        )
    _print_protection(ctx, v1_call(ctx, "PUT", path, body=config))
    for note in notes:
        if note:
            print(f"e2a: {note}", file=sys.stderr)
