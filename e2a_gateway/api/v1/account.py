"""The caller's account on `/v1`: who is calling (`GET /v1/account`), the data rights (export,
delete with `?confirm=DELETE`), and its API keys (account or agent scope)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

from quart import Blueprint, Response, current_app

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import QueryParams, read_json, read_query
from e2a_gateway.api.v1.idempotent import idempotent
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.views import api_key_view, present
from e2a_gateway.clock import format_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import account, keys
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.keys import CreateScopedApiKey
from e2a_gateway.outbound.rollup import rollup
from e2a_gateway.rfc5322 import address_list
from e2a_gateway.storage.base import ApiKey, ExportedMessage, MessageCounts
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.streamed_json import json_document, streamed_response

blueprint = Blueprint("v1_account", __name__)


class Confirmation(QueryParams):
    """`?confirm=DELETE`, which every irreversible delete requires."""

    confirm: Literal["DELETE"]


@blueprint.get("/account/api-keys")
@requires_caller
async def list_api_keys(caller: Caller) -> dict[str, Any]:
    """listApiKeys: the keys not revoked, expired ones too (as e2a lists them), newest first
    (metadata only)."""
    query = read_query(PageQuery)
    gateway = current_gateway()

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[ApiKey]:
        return await keys.api_key_page(gateway, caller, limit, after)

    return await keyset_page("api-keys", query, fetch, _position, api_key_view)


@blueprint.post("/account/api-keys")
@requires_caller
@idempotent
async def create_api_key(caller: Caller) -> tuple[dict[str, Any], int]:
    """createApiKey: a new account key, or one bound to an agent; the key is in this answer
    only (and in its replays to the same Idempotency-Key)."""
    body = await read_json(CreateScopedApiKey)
    issued = await keys.new_scoped_api_key(current_gateway(), caller, body)
    return {**api_key_view(issued.key), "key": issued.plaintext}, 201


@blueprint.delete("/account/api-keys/<key_id>")
@requires_caller
async def delete_api_key(caller: Caller, key_id: str) -> dict[str, Any]:
    """deleteApiKey: revoke the key; it is refused from now on."""
    read_query(Confirmation)
    await keys.revoke_api_key(current_gateway(), caller, key_id)
    return {"deleted": True, "id": key_id}


def _position(key: ApiKey) -> tuple[str, str]:
    return key.created_at, key.id


@blueprint.get("/account")
@requires_caller
async def get_account(caller: Caller) -> dict[str, Any]:
    """getAccount: who the key speaks for (the user, the key's scope and bound agent), the
    account's caps (e2a's self-hosted defaults: none is enforced) and what it uses."""
    return await account_view(current_gateway(), caller)


async def account_view(gateway: Gateway, caller: Caller) -> dict[str, Any]:
    """AccountView of the caller (getAccount's answer), for `/v1` and the MCP tools alike."""
    return present(
        user={"id": caller.user_id, "email": caller.user.email},
        scope=caller.scope,
        agent_email=caller.agent_email,
        plan_code=SELF_HOSTED_PLAN,
        limits=dict(account.SELF_HOSTED_LIMITS),
        usage=await account.account_usage(gateway, caller),
        upgrade_url="",
    )


@blueprint.get("/account/export")
@requires_caller
async def export_account(caller: Caller) -> Response:
    """exportAccount: everything stored about the account (account keys only), in e2a's
    export envelope; the records keep what `/api/v1`'s export shows under e2a's names. Offered
    as a download named as e2a names it, `e2a-export-<user id>.json`, and sent as it is read
    from one snapshot (web.streamed_json)."""
    gateway = current_gateway()

    async def members() -> AsyncGenerator[tuple[str, Any], None]:
        async with account.export_account(gateway, caller) as exported:
            since = format_timestamp(time.time() - WEEK_SECONDS)
            counts = await exported.source.message_counts(since)
            view = export_view(
                exported.head, caller.user_id, gateway.settings.shared_domain, counts
            )
            for name in HEAD_MEMBERS:
                yield name, view[name]
            yield "messages", _exported_messages(exported.source.messages())
            for name in RECORD_MEMBERS:
                yield name, view[name]
            yield "events", exported.source.events()
            yield "protection_events", []

    disposition = f'attachment; filename="e2a-export-{caller.user_id}.json"'
    chunks = json_document(members(), current_app.json.dumps)
    return await streamed_response(chunks, [("Content-Disposition", disposition)])


@blueprint.delete("/account")
@requires_caller
async def delete_account(caller: Caller) -> dict[str, Any]:
    """deleteAccount: erase the account and all it owns (`?confirm=DELETE`, else 422); the
    rows deleted per table."""
    read_query(Confirmation)
    deleted = await account.delete_account(current_gateway(), caller)
    receipt = {f"{table}_deleted": count for table, count in deleted.items()}
    receipt.pop("users_deleted", None)
    for table in RECEIPT_TABLES:
        receipt.setdefault(f"{table}_deleted", 0)
    return {**receipt, "deleted": True, "user_deleted": deleted.get("users", 0) > 0}


SELF_HOSTED_PLAN = "self_hosted"
RECEIPT_TABLES = (
    "usage_events",
    "usage_summaries",
    "sessions",
    "agent_suppressions",
    "agent_unsubscribe_tokens",
    "messages",
    "agents",
    "domains",
    "api_keys",
)
"""Tables of e2a's deletion receipt (those the gateway does not keep count 0)."""
EXPORT_SCHEMA_VERSION = "4"
WEEK_SECONDS = 7 * 86_400
OFF_SCAN_REVIEW, OFF_SCAN_BLOCK = 0.5, 0.9
"""The thresholds e2a's AgentIdentity shows for a scan that is `off` (its sensitivity band
`off` keeps the historical pair; nothing is scanned)."""


HEAD_MEMBERS = (
    "schema_version",
    "generated_at",
    "user",
    "agents",
    "domains",
    "api_keys",
    "signing_secrets",
)
RECORD_MEMBERS = ("suppressions", "webhooks", "templates", "unsubscribe_links")
"""The members of the `/v1` export before its messages, and between them and its events."""


def export_view(
    head: dict[str, Any], user_id: str, shared_domain: str, counts: dict[str, MessageCounts]
) -> dict[str, Any]:
    """UserExport's members other than its messages and events: the gateway's export head
    (operations.account) under e2a's names and shapes, each agent with its `counts` of mail
    (by address). Suppressions are e2a's SuppressionExportEntry (`agent_email` only on an
    agent's own); `webhooks` (never a secret) and `templates` (as TemplateView) are records
    of the account e2a's envelope leaves room for."""
    user = head.get("user") or {}
    domain_rows = head["domains"]
    verified = {row["domain"] for row in domain_rows if row["verified"]} | {shared_domain}
    agent_rows = head["agents"]
    per_domain = Counter(row["domain"] for row in agent_rows)
    return {
        **head,
        "schema_version": EXPORT_SCHEMA_VERSION,
        "user": {
            "id": user.get("id", user_id),
            "email": user.get("email", ""),
            "name": user.get("email", ""),
            "created_at": user.get("created_at", head["generated_at"]),
        },
        "agents": [
            _export_agent(
                row, user_id, row["domain"] in verified, counts.get(row["email"], _NO_MESSAGES)
            )
            for row in agent_rows
        ],
        "domains": [
            present(
                domain=row["domain"],
                verified=row["verified"],
                verification_token=row["verification_token"],
                created_at=row["created_at"],
                verified_at=row["verified_at"],
                primary=False,
                agent_count=per_domain[row["domain"]],
                sending_status="none",
            )
            for row in domain_rows
        ],
        "api_keys": [present(**key) for key in head["api_keys"]],
        "suppressions": [present(**entry) for entry in head["suppressions"]],
        "webhooks": [present(**webhook) for webhook in head["webhooks"]],
        "templates": [present(**template) for template in head["templates"]],
        "unsubscribe_links": head["unsubscribe_links"],
    }


_NO_MESSAGES = MessageCounts()


async def _exported_messages(
    pages: AsyncGenerator[list[ExportedMessage], None],
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The pages of an export's messages, each message as e2a's Message."""
    async with aclosing(pages):
        async for page in pages:
            yield [_export_message(message, filed) for message, filed in page]


def _export_agent(
    row: dict[str, Any], user_id: str, domain_verified: bool, counts: MessageCounts
) -> dict[str, Any]:
    """AgentIdentity of an exported agent: its settings in e2a's protection terms, the gates
    as getAgentProtection shows them."""
    gate = row["inbound_gate"]
    return present(
        email=row["email"],
        name=row["name"],
        domain=row["domain"],
        registered_domain=row["domain"],
        domain_verified=domain_verified,
        public=False,
        created_at=row["created_at"],
        deleted_at=row.get("deleted_at"),
        user_id=user_id,
        ttl_seconds=row["hitl_ttl_seconds"],
        on_expiry=row["hitl_expiration_action"],
        suppress_notifications=not row["approval_notifications"],
        inbound_7d=counts.inbound_since,
        outbound_7d=counts.outbound_since,
        pending_count=counts.pending,
        inbound_policy=gate["policy"],
        inbound_policy_action=gate["action"],
        inbound_allowlist=gate["allowlist"],
        outbound_policy=row["outbound_gate"]["policy"],
        outbound_policy_action=row["outbound_gate"]["action"],
        outbound_allowlist=row["outbound_gate"]["allowlist"],
        inbound_scan="off",
        outbound_scan="off",
        inbound_scan_review_threshold=OFF_SCAN_REVIEW,
        inbound_scan_block_threshold=OFF_SCAN_BLOCK,
        outbound_scan_review_threshold=OFF_SCAN_REVIEW,
        outbound_scan_block_threshold=OFF_SCAN_BLOCK,
        inbound_scan_sensitivity="off",
        outbound_scan_sensitivity="off",
    )


def _export_message(message: dict[str, Any], filed: dict[str, Any]) -> dict[str, Any]:
    """Message of an exported message: its envelope and state, the labels put on it and when
    it went to the trash (`filed`, as getMessage shows them), and for mail sent its delivery
    rollup as getMessage reads it; never its body."""
    inbound = message["direction"] == "inbound"
    reply_to = message.get("reply_to")
    delivery = filed.get("delivery") or {}
    delivery_status, delivery_detail = rollup(
        message.get("status") or "",
        sent_at=delivery.get("sent_at"),
        send_error=message.get("send_error"),
        complained_at=delivery.get("complained_at"),
        results=delivery.get("results") or {},
    )
    return {
        **present(
            id=message["id"],
            agent_email=message["agent_email"],
            direction=message["direction"],
            delivered_to=message["agent_email"],
            subject=message.get("subject") or "",
            created_at=message["created_at"],
            to=message.get("to"),
            cc=message.get("cc"),
            bcc=message.get("bcc"),
            reply_to=(address_list(reply_to) if inbound else [reply_to])
            if isinstance(reply_to, str)
            else None,
            conversation_id=message.get("conversation_id"),
            email_message_id=message.get("rfc_message_id"),
            status=message.get("status"),
            delivery_status=message.get("delivery_status") if inbound else delivery_status,
            delivery_detail=None if inbound else delivery_detail,
            size_bytes=message.get("size_bytes"),
            deleted_at=filed.get("deleted_at"),
        ),
        "labels": filed.get("labels", []),
        "header_from": message.get("from") if inbound else None,
        "envelope_from": None,
        "verified_domain": None,
        "authentication": None,
        "expires_at": None,
    }
