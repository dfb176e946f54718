"""`/v1` webhook subscribers of an account: created with a `whsec_` secret shown once, listed,
changed, deleted, their secret rotated (the old one keeps signing for 24 hours), tested, and
their deliveries read. Only account keys manage them; a webhook is checked by e2a's rules, in
its order and words, when it is made and as each change leaves it. A webhook failing
chronically is turned off by e2a's auto-disable rule, and may be enabled again after a
cooldown."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, ConfigDict, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from e2a_gateway.clock import format_timestamp
from e2a_gateway.events import EVENT_TYPES, envelope
from e2a_gateway.gateway import Gateway
from e2a_gateway.ids import new_id
from e2a_gateway.operations import idempotency
from e2a_gateway.operations.agents import checked_webhook_url
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Conflict, Invalid, NotFound
from e2a_gateway.operations.rate_limits import count_poll
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.signing.credentials import new_secret_seed
from e2a_gateway.signing.webhook_signatures import webhook_secret
from e2a_gateway.storage.base import (
    CoolingDown,
    LimitReached,
    SubscriberDelivery,
    Webhook,
    WebhookChanges,
)

MAX_WEBHOOKS = 20
"""Webhooks per account (e2a's `webhook_limit_reached`)."""
ROTATION_GRACE_SECONDS = 24 * 3600.0
"""After a rotation, the previous secret signs too for this long."""
# e2a's auto-disable (internal/identity/webhooks.go: AutoDisableThreshold, AutoDisableWindow,
# reEnableCooldown).
AUTO_DISABLE_FAILED = 10
"""A webhook is turned off with at least this many deliveries failed for good (all attempts
spent; not attempts) among those made in the window, and none delivered."""
AUTO_DISABLE_WINDOW_SECONDS = 72 * 3600.0
"""The deliveries the auto-disable rule counts: those made (queued) this recently."""
REENABLE_COOLDOWN_SECONDS = 5 * 60.0
"""Enabling a webhook is refused (`webhook_cooldown`) this long after its auto-disable."""
# e2a's rules (`validateWebhookFields`); lengths count UTF-8 bytes, as its Go code does.
MAX_URL_BYTES = 2048
MAX_DESCRIPTION_BYTES = 200
MAX_FILTER_ITEMS = 50
MAX_FILTER_VALUE_BYTES = 200
MAX_LABEL_BYTES = 64
MAX_TEST_DATA_BYTES = 65_536
"""The most a test event's `data` may take as JSON: it is stored as the delivery's envelope, sent
to the receiver (again at each retry) and read with each page of the delivery log, so a 40 MiB
request body made each of these 40 MiB. A real event's `data` is metadata, a few KiB."""
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]+")
LABEL = re.compile(r"[a-z0-9:_-]+")


def _known_event_type(name: str) -> str:
    """`name` if e2a's enum has it; refused as its schema refuses (422 `invalid_request`)."""
    if name not in EVENT_TYPES:
        raise PydanticCustomError(
            "enum", 'expected value to be one of "{expected}"', {"expected": ", ".join(EVENT_TYPES)}
        )
    return name


EventType = Annotated[str, AfterValidator(_known_event_type)]
"""An event type of e2a's CreateWebhookRequest enum."""
Unstripped = Annotated[str, StringConstraints(strip_whitespace=False)]
"""Text kept as sent, so that e2a's rules judge what is stored."""


class OmitNotNull(RequestBody):
    """A request whose optional fields are left out when unset: an explicit `null` is refused
    (e2a's schemas type them as strings, lists, objects, never null)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [name for name, value in data.items() if value is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: null is not allowed; leave the field out")
        return data


class WebhookFilters(OmitNotNull):
    """Only events of these agents / conversations (empty or absent: all). `labels` is checked
    as e2a checks it, then not stored: its webhooks match everything."""

    model_config = ConfigDict(str_strip_whitespace=False)

    agent_emails: list[str] | None = None
    conversation_ids: list[str] | None = None
    labels: list[str] | None = None


class CreateWebhook(OmitNotNull):
    """POST /v1/webhooks."""

    url: str
    events: list[EventType]
    description: Unstripped | None = None
    filters: WebhookFilters | None = None


class UpdateWebhook(OmitNotNull):
    """PATCH /v1/webhooks/{id}: `url`, `events` and `filters` replace when present."""

    url: str | None = None
    events: list[EventType] | None = None
    description: Unstripped | None = None
    filters: WebhookFilters | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class IssuedWebhook:
    """A webhook with its signing secret (shown once)."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True)
class WebhookFields:
    """What e2a validates of a webhook, together: a new one, or one as a PATCH leaves it."""

    url: str
    events: list[str]
    description: str
    agent_emails: list[str]
    conversation_ids: list[str]
    labels: list[str]

    @classmethod
    def requested(cls, request: CreateWebhook) -> WebhookFields:
        """The fields of a new webhook."""
        filters = request.filters or WebhookFilters()
        return cls(
            url=request.url,
            events=request.events,
            description=request.description or "",
            agent_emails=filters.agent_emails or [],
            conversation_ids=filters.conversation_ids or [],
            labels=filters.labels or [],
        )

    @classmethod
    def patched(cls, current: Webhook, request: UpdateWebhook) -> WebhookFields:
        """The fields of `current` once `request` is applied (`filters` replace wholesale)."""
        filters = request.filters
        return cls(
            url=current.url if request.url is None else request.url,
            events=current.events if request.events is None else request.events,
            description=current.description if request.description is None else request.description,
            agent_emails=current.agent_emails if filters is None else filters.agent_emails or [],
            conversation_ids=current.conversation_ids
            if filters is None
            else filters.conversation_ids or [],
            labels=[] if filters is None else filters.labels or [],
        )


def _quoted(text: str) -> str:
    """`text` in double quotes, as Go's `%q` shows it in e2a's messages."""
    return json.dumps(text, ensure_ascii=False)


def _address(address: str) -> str:
    """An agent's address as e2a compares it (trimmed, lower case)."""
    return address.strip().lower()


def _too_long(text: str, limit: int) -> bool:
    return len(text.encode()) > limit


def _check_description(description: str) -> None:
    """e2a's rules for a description: at most 200 bytes, one line."""
    if _too_long(description, MAX_DESCRIPTION_BYTES):
        raise Invalid("invalid_request", "description too long (max 200 chars)")
    if "\r" in description or "\n" in description:
        raise Invalid("invalid_request", "description must not contain CR or LF")


def _check_filter_sizes(fields: WebhookFields) -> None:
    """At most 50 items in each filter list."""
    for name, items in (
        ("agent_emails", fields.agent_emails),
        ("conversation_ids", fields.conversation_ids),
        ("labels", fields.labels),
    ):
        if len(items) > MAX_FILTER_ITEMS:
            raise Invalid("invalid_request", f"filters.{name} exceeds cap of {MAX_FILTER_ITEMS}")


def _check_filter_values(name: str, values: list[str], limit: int) -> None:
    """Each item of filter list `name` is 1 to `limit` bytes."""
    if any(not value or _too_long(value, limit) for value in values):
        raise Invalid(
            "invalid_request",
            f"filters.{name} contains empty entry or one over {limit} chars",
        )


def _check_conversation_ids(conversation_ids: list[str]) -> None:
    """Conversation ids of 1 to 200 characters of [A-Za-z0-9_-]."""
    _check_filter_values("conversation_ids", conversation_ids, MAX_FILTER_VALUE_BYTES)
    for value in conversation_ids:
        if not CONVERSATION_ID.fullmatch(value):
            raise Invalid(
                "invalid_request", f"filters.conversation_ids[{_quoted(value)}]: invalid character"
            )


def _check_labels(labels: list[str]) -> None:
    """Labels of 1 to 64 characters of [a-z0-9:_-]."""
    _check_filter_values("labels", labels, MAX_LABEL_BYTES)
    for value in labels:
        if not LABEL.fullmatch(value):
            raise Invalid(
                "invalid_request",
                f"filters.labels[{_quoted(value)}]: invalid character "
                "(expected [a-z0-9:_-]+, lowercase)",
            )


async def _check_agents_owned(gateway: Gateway, caller: Caller, agent_emails: list[str]) -> None:
    """Every agent named (at most MAX_FILTER_ITEMS) is one of the caller's in service, each
    looked up by its address: the account's other agents are never read."""
    for address in agent_emails:
        if await gateway.storage.get_agent(caller.user_id, _address(address)) is None:
            raise Invalid(
                "invalid_request",
                f"filters.agent_emails references an agent you don't own: {_quoted(address)}",
            )


async def _url(gateway: Gateway, url: str) -> str:
    checked = await checked_webhook_url(gateway, url)
    if checked is None:
        raise Invalid("invalid_webhook_url", "url: give the https URL of your receiver")
    return checked


async def checked_fields(gateway: Gateway, caller: Caller, fields: WebhookFields) -> str:
    """e2a's `validateWebhookFields`, rule by rule in its order; the URL normalised."""
    # Before the URL's form (e2a checks it first), as that check refuses a long URL itself.
    if _too_long(fields.url, MAX_URL_BYTES):
        raise Invalid("invalid_request", "url too long (max 2048 chars)")
    url = await _url(gateway, fields.url)
    if not fields.events:
        raise Invalid("invalid_request", "events must be a non-empty array")
    _check_description(fields.description)
    _check_filter_sizes(fields)
    _check_filter_values("agent_emails", fields.agent_emails, MAX_FILTER_VALUE_BYTES)
    await _check_agents_owned(gateway, caller, fields.agent_emails)
    _check_conversation_ids(fields.conversation_ids)
    _check_labels(fields.labels)
    return url


async def create_webhook(gateway: Gateway, caller: Caller, request: CreateWebhook) -> IssuedWebhook:
    """A new webhook of the caller's account, and its secret."""
    caller.require_account("manage webhooks")
    fields = WebhookFields.requested(request)
    webhook = Webhook(
        id=new_id("wh"),
        user_id=caller.user_id,
        url=await checked_fields(gateway, caller, fields),
        description=fields.description,
        events=list(dict.fromkeys(fields.events)),
        agent_emails=[_address(address) for address in fields.agent_emails],
        conversation_ids=fields.conversation_ids,
        enabled=True,
        seed=new_secret_seed(),
        created_at=format_timestamp(time.time()),
    )
    try:
        await gateway.storage.add_webhook(webhook, MAX_WEBHOOKS, idempotency.held_key())
    except LimitReached:
        raise Invalid(
            "webhook_limit_reached",
            f"an account has at most {MAX_WEBHOOKS} webhooks; delete one first",
        ) from None
    return IssuedWebhook(webhook, webhook_secret(gateway.server_key, webhook.seed))


async def made_webhook(gateway: Gateway, caller: Caller, webhook_id: str) -> IssuedWebhook:
    """The caller's webhook `webhook_id` with its signing secret, for a createWebhook retried
    after its first request made it and died before it answered; NotFound when it is gone."""
    webhook = await get_webhook(gateway, caller, webhook_id)
    return IssuedWebhook(webhook, webhook_secret(gateway.server_key, webhook.seed))


async def webhook_page(
    gateway: Gateway, caller: Caller, limit: int, after_seq: int | None
) -> list[Webhook]:
    """The caller's webhooks, newest first, as e2a lists them (one poll, as e2a counts its
    reads)."""
    count_poll(gateway, caller)
    caller.require_account("manage webhooks")
    return await gateway.storage.webhook_page(caller.user_id, limit, after_seq)


async def read_webhook(gateway: Gateway, caller: Caller, webhook_id: str) -> Webhook:
    """One of the caller's webhooks, asked for by the caller (one poll, as e2a counts its
    reads)."""
    count_poll(gateway, caller)
    return await get_webhook(gateway, caller, webhook_id)


async def get_webhook(gateway: Gateway, caller: Caller, webhook_id: str) -> Webhook:
    """One of the caller's webhooks."""
    caller.require_account("manage webhooks")
    found = await gateway.storage.get_webhook(caller.user_id, webhook_id)
    if found is None:
        raise NotFound.of("webhook")
    return found


async def update_webhook(
    gateway: Gateway, caller: Caller, webhook_id: str, request: UpdateWebhook, now: float
) -> Webhook:
    """Change one of the caller's webhooks; the webhook as the change leaves it must pass the
    rules of a new one. Enabling it within the cooldown of an auto-disable is refused with
    nothing changed (409 `webhook_cooldown`, after the rules, as e2a's store checks it);
    enabling clears `auto_disabled_at`."""
    caller.require_account("manage webhooks")
    if request.events is not None and not request.events:
        raise Invalid(
            "invalid_request", "events must not be empty (DELETE the webhook to remove it)"
        )
    current = await get_webhook(gateway, caller, webhook_id)
    after = WebhookFields.patched(current, request)
    url = await checked_fields(gateway, caller, after)
    replaced = request.filters is not None
    changes = WebhookChanges(
        url=None if request.url is None else url,
        description=request.description,
        events=None if request.events is None else list(dict.fromkeys(request.events)),
        agent_emails=[_address(item) for item in after.agent_emails] if replaced else None,
        conversation_ids=after.conversation_ids if replaced else None,
        enabled=request.enabled,
    )
    try:
        updated = await gateway.storage.update_webhook(
            caller.user_id, webhook_id, changes, now - REENABLE_COOLDOWN_SECONDS
        )
    except CoolingDown:
        raise Conflict(
            "webhook_cooldown",
            "webhook was auto-disabled within the last 5 minutes; wait before re-enabling",
        ) from None
    if updated is None:
        raise NotFound.of("webhook")
    return updated


async def disable_failing_webhooks(gateway: Gateway, now: float) -> list[Webhook]:
    """e2a's auto-disable, across every account: turn off each enabled webhook with at least
    AUTO_DISABLE_FAILED deliveries made in the AUTO_DISABLE_WINDOW_SECONDS before `now` that
    failed for good and none delivered, marking it auto-disabled at `now`; those turned off.
    Its waiting deliveries stay waiting (the worker claims none of a disabled webhook) until
    it is enabled again; no event is logged for it, as in e2a."""
    return await gateway.storage.disable_failing_webhooks(
        now, now - AUTO_DISABLE_WINDOW_SECONDS, AUTO_DISABLE_FAILED
    )


async def delete_webhook(gateway: Gateway, caller: Caller, webhook_id: str) -> None:
    """Delete one of the caller's webhooks and its deliveries."""
    caller.require_account("manage webhooks")
    if not await gateway.storage.delete_webhook(caller.user_id, webhook_id):
        raise NotFound.of("webhook")


async def rotate_secret(
    gateway: Gateway, caller: Caller, webhook_id: str, now: float
) -> tuple[str, float]:
    """A new secret for the webhook (shown once) and when the previous one stops signing."""
    caller.require_account("manage webhooks")
    seed = new_secret_seed()
    until = now + ROTATION_GRACE_SECONDS
    held = idempotency.held_key()
    rotated = await gateway.storage.rotate_webhook_seed(
        caller.user_id, webhook_id, seed, until, held
    )
    if rotated is None:
        raise NotFound.of("webhook")
    return webhook_secret(gateway.server_key, seed), until


async def rotated_secret(gateway: Gateway, caller: Caller, webhook_id: str) -> tuple[str, float]:
    """The webhook's secret and when the previous one stops signing, for a rotation retried
    after its first request rotated it and died before it answered; NotFound when it is gone."""
    webhook = await get_webhook(gateway, caller, webhook_id)
    assert webhook.previous_until is not None  # rotated
    return webhook_secret(gateway.server_key, webhook.seed), webhook.previous_until


async def test_webhook(
    gateway: Gateway,
    caller: Caller,
    webhook_id: str,
    event_type: str | None,
    data: dict[str, object] | None,
    now: float,
) -> str:
    """Queue a synthetic event (not logged) to the webhook, which must be enabled; the
    delivery's id."""
    webhook = await get_webhook(gateway, caller, webhook_id)
    if not webhook.enabled:
        raise Conflict("webhook_disabled", "webhook is disabled")
    chosen = event_type or "email.received"
    if chosen not in EVENT_TYPES:
        raise Invalid("invalid_event_type", f"unknown event type {_quoted(chosen)}")
    payload = data if data is not None else {"test": True}
    size = len(orjson.dumps(payload))
    if size > MAX_TEST_DATA_BYTES:
        raise Invalid(
            "payload_too_large",
            f"a test event's data is at most {MAX_TEST_DATA_BYTES} bytes as JSON; this one is "
            f"{size}: a real event's data is metadata, a few KiB",
            {"scope": "test_data", "actual_bytes": size, "max_bytes": MAX_TEST_DATA_BYTES},
        )
    event_id = new_id("evt")
    body = envelope(chosen, event_id, now, payload)
    delivery_id = await gateway.storage.add_test_delivery(
        caller.user_id, webhook_id, event_id, chosen, body, now
    )
    if delivery_id is None:
        raise NotFound.of("webhook")
    return delivery_id


async def delivery_page(
    gateway: Gateway,
    caller: Caller,
    webhook_id: str,
    status: str | None,
    limit: int,
    before_seq: int | None,
) -> list[SubscriberDelivery]:
    """The webhook's deliveries, newest first (one poll, as e2a counts its reads)."""
    count_poll(gateway, caller)
    caller.require_account("manage webhooks")
    found = await gateway.storage.delivery_page(
        caller.user_id, webhook_id, status, limit, before_seq
    )
    if found is None:
        raise NotFound.of("webhook")
    return found
