"""An agent's mailbox as e2a's current API (`/v1`) sees it: inbound and outbound mail in one
filtered listing, one message opened (which marks it read), its attachments, labels, the trash,
and conversations built from the `conversation_id` each message keeps.

Listing and opening count as polls, as on `/api/v1`; every storage query is scoped by the
caller's account and the agent, found through `owned_agent` (which holds an agent key to its
own agent).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import trio

from e2a_gateway.addresses import domain_as_a_labels
from e2a_gateway.attachments import Attachment
from e2a_gateway.clock import format_timestamp, parse_timestamp
from e2a_gateway.gateway import Gateway
from e2a_gateway.inbound.parse import ParsedBody, attachment_data, kept_body, parse_body
from e2a_gateway.operations import lifecycle
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.drafts import draft_attachment
from e2a_gateway.operations.errors import Conflict, Invalid, NotFound
from e2a_gateway.operations.rate_limits import count_poll
from e2a_gateway.storage.base import (
    Agent,
    ConversationSummary,
    FiledMessage,
    LabelsRefused,
    MessageDirection,
    MessageFilters,
    OutboundMessage,
    StatusFilter,
)
from e2a_gateway.storage.vocabulary import PENDING_APPROVAL, READ

MAX_LABELS_PER_MESSAGE = 100
MAX_LABELS_PER_CHANGE = 50
MAX_LABEL_FILTERS = 50
LABEL = re.compile(r"[a-z0-9:_-]{1,64}")
RESERVED_LABEL_PREFIX = "e2a:"
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)
"""What e2a trims off a label (Go's `unicode.IsSpace`)."""
MAX_FILTER_BYTES = 200
"""e2a's bound on the `from` and `subject_contains` filters, in UTF-8 bytes."""
MAX_CONVERSATION_ID_CHARS = 200
"""e2a's bound on a conversation id, which a filter by one shares."""
TRASH_KEPT_SECONDS = 30 * 86_400
"""How long a message stays in the trash, restorable, before the retention sweep deletes it."""
INLINE_ATTACHMENT_BYTES = 256 * 1024
"""e2a's cap on an attachment returned inline (base64 in the answer)."""

Direction = Literal["inbound", "outbound", "all"]


@dataclass(frozen=True)
class OpenedMessage:
    """A message as one read of it shows: its listing entry, and the full record it comes
    from (the raw bytes of mail received; the stored draft of mail sent, whose body goes once
    it is handed on)."""

    filed: FiledMessage
    raw: bytes | None
    outbound: OutboundMessage | None


def listing_filters(
    *,
    direction: Direction | None,
    read_status: StatusFilter | None,
    newest_first: bool,
    from_text: str | None,
    subject_text: str | None,
    conversation_id: str | None,
    labels: list[str],
    since: str | None,
    until: str | None,
    deleted: bool,
) -> MessageFilters:
    """The filters of a listing, with e2a's defaults: inbound and unread, or everything in
    the trash. Invalid `invalid_filter`, in e2a's order, for a read state asked of mail sent,
    a `from` or `subject_contains` over MAX_FILTER_BYTES, a bad conversation id, label or time,
    or `since` not before `until`. `labels` are counted as split on commas (at most
    MAX_LABEL_FILTERS)."""
    if direction is None:
        direction = "all" if deleted else "inbound"
    if read_status is None:
        read_status = "unread" if direction == "inbound" and not deleted else "all"
    if direction == "outbound" and read_status != "all":
        raise Invalid(
            "invalid_filter",
            "read_status applies to inbound messages only — pass read_status=all (or leave it "
            "out) with direction=outbound",
        )
    directions: tuple[MessageDirection, ...] = (
        ("inbound", "outbound") if direction == "all" else (direction,)
    )
    for name, text in (("from", from_text), ("subject_contains", subject_text)):
        if text is not None and len(text.encode("utf-8", "surrogatepass")) > MAX_FILTER_BYTES:
            raise Invalid(
                "invalid_filter", f"{name} filter too long (max {MAX_FILTER_BYTES} bytes)"
            )
    _checked_conversation_id(conversation_id)
    if len(labels) > MAX_LABEL_FILTERS:
        raise Invalid("invalid_filter", f"filter by at most {MAX_LABEL_FILTERS} labels")
    wanted = [_filter_label(label) for label in labels]
    start, end = time_window(since, until)
    return MessageFilters(
        directions=directions,
        read_status=read_status,
        from_text=domain_as_a_labels(from_text) if from_text else None,
        subject_text=subject_text or None,
        conversation_id=conversation_id or None,
        labels=tuple(dict.fromkeys(wanted)),
        since=start,
        until=end,
        deleted=deleted,
        newest_first=newest_first,
    )


def time_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """`since` and `until` of a listing as stored times are written (`instant`); Invalid
    `invalid_filter` for a bad time, or `since` not before `until`."""
    start = filter_time("since", since, "invalid_filter")
    end = filter_time("until", until, "invalid_filter")
    if start is not None and end is not None and start >= end:
        raise Invalid("invalid_filter", "since must be earlier than until")
    return instant("since", since), instant("until", until)


_PLUS_AS_SPACE = re.compile(r".+ [0-9]{2}:[0-9]{2}")
"""A time whose offset's `+` was decoded as a space (`2026-01-31T12:00:00 02:00`)."""


def filter_time(name: str, text: str | None, code: str = "invalid_request") -> datetime | None:
    """The time a listing filter `name` gives (None when absent or empty): an RFC 3339 time
    with its UTC offset, Invalid (`code`) naming `name` otherwise — saying, for an offset whose
    `+` a query string written by hand turned into a space, how to write it."""
    if text is None or text == "":
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        hint = ""
        if _PLUS_AS_SPACE.fullmatch(text):
            hint = " (a + in a URL's query string is read as a space: write it as %2B)"
        raise Invalid(
            code,
            f"{name} must be an RFC 3339 time with a UTC offset, e.g. 2026-01-31T12:00:00Z" + hint,
        ) from None


def instant(name: str, text: str | None) -> str | None:
    """An RFC 3339 time as stored times are written (UTC, whole seconds, rounded up so that
    `>=` and `<` against stored times keep their meaning; years 0001-9999, four digits, so
    that they compare as text); Invalid naming `name` otherwise."""
    moment = filter_time(name, text)
    if moment is None:
        return None
    try:
        utc = moment.astimezone(UTC)
        if utc.microsecond:
            utc = utc.replace(microsecond=0) + timedelta(seconds=1)
    except OverflowError:  # an offset takes it past year 1 or 9999
        utc = datetime.min if moment.year < 5000 else datetime.max.replace(microsecond=0)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


async def message_page(
    gateway: Gateway,
    caller: Caller,
    email: str,
    filters: MessageFilters,
    limit: int,
    after_seq: int | None,
) -> list[FiledMessage]:
    """Up to `limit` messages of the caller's agent at `email` matching `filters`, after the
    position `after_seq` (one poll)."""
    count_poll(gateway, caller)
    agent = await owned_agent(gateway, caller, email)
    return await gateway.storage.filed_page(caller.user_id, agent.email, filters, limit, after_seq)


async def open_message(
    gateway: Gateway, caller: Caller, email: str, message_id: str, *, mark_read: bool = True
) -> OpenedMessage:
    """One message of the caller's agent at `email`, in the trash or not; mail received is
    marked read unless not `mark_read` (one poll). NotFound when it is not the agent's."""
    count_poll(gateway, caller)
    agent, filed = await _agents_message(gateway, caller, email, message_id, mark_read=mark_read)
    storage = gateway.storage
    if filed.direction == "outbound":
        return OpenedMessage(filed, None, await storage.get_outbound(caller.user_id, filed.id))
    inbound = await storage.read_inbound(
        caller.user_id, agent.email, filed.id, trashed_too=True, mark_read=mark_read
    )
    return OpenedMessage(filed, inbound.raw_message if inbound else b"", None)


async def filed_as_it_is(
    gateway: Gateway, caller: Caller, email: str, message_id: str
) -> FiledMessage:
    """One message of the caller's agent at `email`, in the trash or not, left as it is: not
    marked read, and not a poll (e2a's lifecycle reads neither). NotFound when it is not the
    agent's."""
    _, filed = await _agents_message(gateway, caller, email, message_id, mark_read=False)
    return filed


async def _agents_message(
    gateway: Gateway, caller: Caller, email: str, message_id: str, *, mark_read: bool
) -> tuple[Agent, FiledMessage]:
    """The caller's agent at `email` and its message `message_id`, in the trash or not (mail
    received marked read when `mark_read`); NotFound when either is not the caller's."""
    message_id = _named(message_id)
    agent = await owned_agent(gateway, caller, email)
    filed = await gateway.storage.filed_message(
        caller.user_id, agent.email, message_id, mark_read=mark_read
    )
    if filed is None:
        raise NotFound.of("message")
    return agent, filed


async def parsed_body(raw: bytes) -> ParsedBody:
    """`parse_body(raw)`: what it kept, at once, else parsed in a worker thread (mail not read
    lately is parsed again, and thousands of parts take seconds, not on the event loop)."""
    kept = kept_body(raw)
    if kept is not None:
        return kept
    return await trio.to_thread.run_sync(parse_body, raw)


async def attachment(
    gateway: Gateway, caller: Caller, email: str, message_id: str, index: int
) -> tuple[Attachment, bytes]:
    """Attachment `index` (0-based, in the order the message view lists them) of a message of
    the caller's agent, with its decoded bytes: of mail received, from its raw bytes; of mail
    being sent, from its draft while that keeps them. NotFound (`attachment_not_found`)
    otherwise."""
    opened = await open_message(gateway, caller, email, message_id)
    found = None
    if opened.raw:  # parsing mail of thousands of parts takes seconds: not on the event loop
        found = await trio.to_thread.run_sync(attachment_data, opened.raw, index)
    elif opened.outbound is not None:  # up to 25 MiB of base64: not on the event loop either
        found = await trio.to_thread.run_sync(draft_attachment, opened.outbound, index)
    if found is None:
        raise NotFound(
            "attachment_not_found",
            f"message {message_id} has no attachment {index} (indexes start at 0; "
            "the message's attachments[] lists them)",
        )
    return found


async def change_labels(
    gateway: Gateway,
    caller: Caller,
    email: str,
    message_id: str,
    add: list[str],
    remove: list[str],
) -> list[str]:
    """Add then remove labels on a message of the caller's agent; its labels after."""
    for name, labels in (("add_labels", add), ("remove_labels", remove)):
        if len(labels) > MAX_LABELS_PER_CHANGE:
            raise Invalid("invalid_request", f"{name} takes at most {MAX_LABELS_PER_CHANGE}")
    adding = list(dict.fromkeys(_checked_label(label, settable=True) for label in add))
    removing = list(dict.fromkeys(_checked_label(label, settable=True) for label in remove))
    message_id = _named(message_id)
    agent = await owned_agent(gateway, caller, email)
    try:
        after = await gateway.storage.change_labels(
            caller.user_id, agent.email, message_id, adding, removing, MAX_LABELS_PER_MESSAGE
        )
    except LabelsRefused:
        raise Invalid(
            "invalid_request",
            f"a message carries at most {MAX_LABELS_PER_MESSAGE} labels; remove some first",
        ) from None
    if after is None:
        raise NotFound.of("message")
    return after


async def trash(gateway: Gateway, caller: Caller, email: str, message_id: str) -> None:
    """Move a message of the caller's agent to the trash (again: nothing changes). Mail held
    for review, or still to be handed on, stays: Conflict."""
    message_id = _named(message_id)
    agent = await owned_agent(gateway, caller, email)
    now = format_timestamp(time.time())
    before = await gateway.storage.trash_message(caller.user_id, agent.email, message_id, now)
    if before is None:
        raise NotFound.of("message")
    if before.deleted_at is not None or before.direction == "inbound":
        return
    if before.status == PENDING_APPROVAL:
        raise Conflict(
            "message_held",
            f"message {message_id} is held for review; approve or reject it first",
        )
    if before.sent_at is None and before.status in lifecycle.AWAITING_HAND_OFF:
        if before.scheduled_at is not None:  # scheduled, not yet being sent: trashed with its job
            after = await gateway.storage.filed_message(
                caller.user_id, agent.email, message_id, mark_read=False
            )
            if after is not None and after.deleted_at is not None:
                return
        raise Conflict(
            "send_in_progress",
            f"message {message_id} is still being sent; delete it once it is sent or failed",
        )


async def purge(gateway: Gateway, caller: Caller, email: str, message_id: str) -> None:
    """Delete for good a message of the caller's agent that is in the trash (account keys
    only); Conflict (`not_in_trash`) for a live one."""
    caller.require_account("delete messages permanently")
    message_id = _named(message_id)
    agent = await owned_agent(gateway, caller, email)
    if await gateway.storage.purge_message(caller.user_id, agent.email, message_id):
        return
    filed = await gateway.storage.filed_message(
        caller.user_id, agent.email, message_id, mark_read=False
    )
    if filed is None:
        raise NotFound.of("message")
    raise Conflict(
        "not_in_trash",
        f"message {message_id} is not in the trash; delete it (without permanent) first",
    )


async def restore(gateway: Gateway, caller: Caller, email: str, message_id: str) -> OpenedMessage:
    """Bring a message of the caller's agent back from the trash; the message, live, and for
    mail received marked read (e2a's restoreMessage answers it as getMessage reads it)."""
    message_id = _named(message_id)
    agent = await owned_agent(gateway, caller, email)
    before = await gateway.storage.restore_message(caller.user_id, agent.email, message_id)
    if before is None:
        raise NotFound.of("message")
    if before.deleted_at is None:
        raise Conflict("not_in_trash", f"message {message_id} is not in the trash")
    filed = replace(before, deleted_at=None)
    if filed.scheduled_at is not None:  # re-armed, or failed as canceled past its time
        filed = (
            await gateway.storage.filed_message(
                caller.user_id, agent.email, message_id, mark_read=False
            )
            or filed
        )
    if filed.direction == "outbound":
        outbound = await gateway.storage.get_outbound(caller.user_id, message_id)
        return OpenedMessage(filed, None, outbound)
    inbound = await gateway.storage.read_inbound(
        caller.user_id, agent.email, message_id, mark_read=True
    )
    return OpenedMessage(replace(filed, status=READ), inbound.raw_message if inbound else b"", None)


async def conversation_page(
    gateway: Gateway,
    caller: Caller,
    email: str,
    since: str | None,
    until: str | None,
    limit: int,
    before_seq: int | None,
) -> list[ConversationSummary]:
    """Conversations of the caller's agent at `email`, most recently active first (one
    poll)."""
    count_poll(gateway, caller)
    agent = await owned_agent(gateway, caller, email)
    start, end = time_window(since, until)
    return await gateway.storage.conversation_page(
        caller.user_id, agent.email, start, end, limit, before_seq
    )


async def conversation(
    gateway: Gateway, caller: Caller, email: str, conversation_id: str
) -> tuple[ConversationSummary, list[FiledMessage]]:
    """One conversation of the caller's agent and every message of it, oldest first (one
    poll), as e2a lists them."""
    count_poll(gateway, caller)
    conversation_id = _named(conversation_id, "conversation")
    agent = await owned_agent(gateway, caller, email)
    _checked_conversation_id(conversation_id, "invalid_request")
    found = await gateway.storage.conversation(caller.user_id, agent.email, conversation_id)
    if found is None:
        raise NotFound.of("conversation")
    return found


def _checked_label(label: str, *, settable: bool = False, code: str = "invalid_request") -> str:
    """`label` as e2a spells labels: trimmed and lowercased, then `[a-z0-9:_-]`, 1-64
    characters (Invalid with `code` otherwise); a label to set must not use the reserved `e2a:`
    prefix."""
    label = label.strip(GO_SPACE).lower()
    if not LABEL.fullmatch(label):
        raise Invalid(
            code,
            f"label {label[:70]!r} must be 1-64 characters of a-z, 0-9, ':', '_', '-' "
            "(letters are lowercased)",
        )
    if settable and label.startswith(RESERVED_LABEL_PREFIX):
        raise Invalid(code, f"labels starting {RESERVED_LABEL_PREFIX!r} are reserved by e2a")
    return label


def _filter_label(label: str) -> str:
    """A label to filter by, as `_checked_label` spells it (`e2a:` ones included); Invalid
    `invalid_filter` otherwise."""
    return _checked_label(label, code="invalid_filter")


def _checked_conversation_id(conversation_id: str | None, code: str = "invalid_filter") -> None:
    """Invalid with `code` for a conversation id no message can have: over
    MAX_CONVERSATION_ID_CHARS characters, or holding CR or LF (e2a's validateConversationID)."""
    if conversation_id is None:
        return
    if len(conversation_id) > MAX_CONVERSATION_ID_CHARS:
        raise Invalid(
            code,
            f"conversation_id too long — {len(conversation_id)} characters, "
            f"max {MAX_CONVERSATION_ID_CHARS}",
        )
    if "\r" in conversation_id or "\n" in conversation_id:
        raise Invalid(code, "conversation_id must not contain CR or LF")


def _named(message_id: str, what: str = "message") -> str:
    """An id from a path; one holding a NUL names nothing (NotFound), so it never reaches a
    database that cannot compare it."""
    if "\x00" in message_id:
        raise NotFound.of(what)
    return message_id
