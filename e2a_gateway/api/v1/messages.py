"""An agent's messages on `/v1` (`/v1/agents/{email}/messages…`): the filtered listing of
mail received and sent, one message in full, attachments (with short-lived download links),
labels, the trash, the (beta) lifecycle, and send / reply / forward with `?wait=sent` and
Idempotency-Key. Every use case is an operation (operations.mailbox, operations.sending).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from functools import update_wrapper
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ConfigDict, Field
from quart import Blueprint, Response, request
from quart.typing import ResponseReturnValue

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import QueryParams, read_json, read_query
from e2a_gateway.api.v1.errors import V1Error, invalid
from e2a_gateway.api.v1.idempotent import idempotent_making
from e2a_gateway.api.v1.message_views import (
    attachment_view,
    lifecycle_position,
    lifecycle_transitions,
    message_summary_view,
    message_view,
    send_result_view,
    update_result_view,
    webhook_error,
)
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.parsed_view import reading_parts, split_off_loop
from e2a_gateway.api.v1.rate_headers import rate_limited
from e2a_gateway.attachments import Attachment
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import mailbox, sending, trust
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import NotFound
from e2a_gateway.operations.mailbox import INLINE_ATTACHMENT_BYTES
from e2a_gateway.operations.requests import RequestBody
from e2a_gateway.operations.sending import (
    ForwardMessageBody,
    ReplyMessageBody,
    SendMessageBody,
)
from e2a_gateway.storage.base import FiledMessage
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_messages", __name__)

DOWNLOAD_SECONDS = 15 * 60
"""How long an attachment's download link works."""
MESSAGES = "/agents/<email>/messages"
ONE_MESSAGE = MESSAGES + "/<message_id>"


class StrictQuery(QueryParams):
    """A query string that refuses parameters it does not name (422), never ignoring a
    filter it would not apply."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ListMessagesQuery(StrictQuery, PageQuery):
    """listMessages' filters, cursor and limit; their bounds are e2a's, checked by
    `mailbox.listing_filters` (400 `invalid_filter`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    direction: Literal["inbound", "outbound", "all"] | None = None
    read_status: Literal["unread", "read", "all"] | None = None
    sort: Literal["asc", "desc"] = "desc"
    from_: str | None = Field(default=None, alias="from")
    subject_contains: str | None = None
    conversation_id: str | None = None
    labels: list[str] = Field(default_factory=list)
    since: str | None = None
    until: str | None = None
    deleted: bool = False


class WaitQuery(StrictQuery):
    """`?wait=sent` on a send, reply or forward."""

    wait: Literal["sent"] | None = None


def waits_for_handoff(
    route: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[ResponseReturnValue]]:
    """`?wait=sent` on a send, reply or forward (above `idempotent`): the write answers once it
    is stored, and that answer is what its Idempotency-Key keeps; the wait for the first
    hand-off comes after, here. A client that leaves while it waits and retries with its key
    gets the message it sent (and waits for it again), never a second copy: e2a settles the key
    with the message in the same way."""

    async def wrapper(caller: Caller, /, *args: Any, **kwargs: Any) -> ResponseReturnValue:
        wait = read_query(WaitQuery).wait == "sent"
        response = await route(caller, *args, **kwargs)
        if not wait or response.status_code != 202:
            return response
        answered = json.loads(await response.get_data(as_text=True))
        if answered.get("status") != "accepted":
            return response  # held for review: nothing to wait for
        gateway = current_gateway()
        stored = await sending.stored_submission(gateway, caller, answered["message_id"])
        return send_result_view(await sending.await_handoff(gateway, stored))

    update_wrapper(wrapper, route)
    return wrapper


async def stored_send_result(caller: Caller, message_id: str) -> tuple[dict[str, Any], int]:
    """A send's, reply's or forward's answer for the message its first request stored and
    never answered (`idempotent_making`): the message as it stands."""
    return send_result_view(await sending.stored_submission(current_gateway(), caller, message_id))


class DeleteQuery(StrictQuery):
    """deleteMessage: `?permanent=true&confirm=DELETE` deletes a trashed message for good."""

    permanent: bool = False
    confirm: str | None = None


class AttachmentQuery(StrictQuery):
    """getAttachment: `?inline=true` for the bytes in the answer."""

    inline: bool = False


class LifecycleQuery(StrictQuery, PageQuery):
    """getMessageLifecycle: cursor and limit (1-100, default 50)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    limit: int = Field(default=50, ge=1, le=100)


class NoQuery(StrictQuery):
    """An operation without query parameters."""


class UpdateMessageBody(RequestBody):
    """updateMessage: a labels delta."""

    add_labels: list[str] = Field(default_factory=list)
    remove_labels: list[str] = Field(default_factory=list)


@blueprint.get(MESSAGES)
@rate_limited
@requires_caller
async def list_messages(caller: Caller, email: str) -> dict[str, Any]:
    """listMessages: the agent's mail received and sent, filtered, newest first by default."""
    query = read_query(ListMessagesQuery)
    return await message_listing(current_gateway(), caller, email, query)


async def message_listing(
    gateway: Gateway, caller: Caller, email: str, query: ListMessagesQuery
) -> dict[str, Any]:
    """One page of an agent's messages (listMessages' answer), for `/v1` and the MCP tools."""
    labels = [label for value in query.labels if value for label in value.split(",")]
    filters = mailbox.listing_filters(
        direction=query.direction,
        read_status=query.read_status,
        newest_first=query.sort == "desc",
        from_text=query.from_,
        subject_text=query.subject_contains,
        conversation_id=query.conversation_id,
        labels=labels,
        since=query.since,
        until=query.until,
        deleted=query.deleted,
    )
    view = "messages " + _digest(f"{email.lower()} {filters!r}")

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[FiledMessage]:
        seq = _position(after)
        return await mailbox.message_page(gateway, caller, email, filters, limit, seq)

    return await keyset_page(
        view, query, fetch, lambda row: (row.seq,), message_summary_view, gateway
    )


@blueprint.post(MESSAGES)
@requires_caller
@waits_for_handoff
@idempotent_making(stored_send_result)
async def send_message(caller: Caller, email: str) -> tuple[dict[str, Any], int]:
    """sendMessage: a new message from the agent in the path."""
    body = await read_json(SendMessageBody, numbers_as_written="template_data")
    return send_result_view(await sending.send_message(current_gateway(), caller, email, body))


@blueprint.get(ONE_MESSAGE)
@rate_limited
@requires_caller
async def get_message(caller: Caller, email: str, message_id: str) -> dict[str, Any]:
    """getMessage: one message in full (marks mail received read), trashed or not."""
    read_query(NoQuery)
    gateway = current_gateway()
    opened = await mailbox.open_message(
        gateway, caller, email, message_id, mark_read=request.method != "HEAD"
    )
    return await message_with_reading(gateway, caller, opened)


@blueprint.patch(ONE_MESSAGE)
@requires_caller
async def update_message(caller: Caller, email: str, message_id: str) -> dict[str, Any]:
    """updateMessage: add and remove labels; the labels after."""
    read_query(NoQuery)
    body = await read_json(UpdateMessageBody)
    labels = await mailbox.change_labels(
        current_gateway(), caller, email, message_id, body.add_labels, body.remove_labels
    )
    return update_result_view(message_id, labels)


@blueprint.delete(ONE_MESSAGE)
@requires_caller
async def delete_message(caller: Caller, email: str, message_id: str) -> dict[str, Any]:
    """deleteMessage: to the trash; with `permanent=true&confirm=DELETE`, out of it for good."""
    query = read_query(DeleteQuery)
    gateway = current_gateway()
    if query.permanent:
        if query.confirm != "DELETE":
            raise invalid(
                422,
                "deleting a message for good needs confirm=DELETE",
                ("query.confirm", "must be DELETE when permanent=true"),
            )
        await mailbox.purge(gateway, caller, email, message_id)
    else:
        await mailbox.trash(gateway, caller, email, message_id)
    return {"deleted": True, "id": message_id}


@blueprint.post(ONE_MESSAGE + "/restore")
@requires_caller
async def restore_message(caller: Caller, email: str, message_id: str) -> dict[str, Any]:
    """restoreMessage: back from the trash; the message."""
    read_query(NoQuery)
    gateway = current_gateway()
    opened = await mailbox.restore(gateway, caller, email, message_id)
    return await message_with_reading(gateway, caller, opened)


@blueprint.get(ONE_MESSAGE + "/attachments/<int(signed=True):index>")
@requires_caller
async def get_attachment(caller: Caller, email: str, message_id: str, index: int) -> dict[str, Any]:
    """getAttachment: metadata and a short-lived download link; the bytes too with
    `inline=true`, up to e2a's inline cap."""
    query = read_query(AttachmentQuery)
    return await attachment_answer(
        current_gateway(), caller, email, message_id, index, inline=query.inline
    )


async def attachment_answer(
    gateway: Gateway,
    caller: Caller,
    email: str,
    message_id: str,
    index: int,
    *,
    inline: bool,
) -> dict[str, Any]:
    """getAttachment's answer (AttachmentView), for `/v1` and the MCP tools alike: a download
    link good for DOWNLOAD_SECONDS, and the bytes when `inline` (up to e2a's inline cap)."""
    if index < 0:
        raise invalid(422, "index starts at 0", ("path.index", "must be 0 or more"))
    meta, data = await mailbox.attachment(gateway, caller, email, message_id, index)
    if inline and meta.size > INLINE_ATTACHMENT_BYTES:
        raise V1Error(
            413,
            "attachment_too_large",
            f"attachment {index} is {meta.size} bytes, over the inline cap of "
            f"{INLINE_ATTACHMENT_BYTES}; fetch it from download_url instead",
            {"size_bytes": meta.size, "max_bytes": INLINE_ATTACHMENT_BYTES},
        )
    expires = time.time() + DOWNLOAD_SECONDS
    url = attachment_download_url(gateway, caller, email, message_id, index, expires)
    return attachment_view(index, meta, url, expires, data if inline else None)


@blueprint.get("/attachments/<token>")
async def download_attachment(token: str) -> Response:
    """The bytes of an attachment, from a link getAttachment handed out (the link is the
    credential, for DOWNLOAD_SECONDS)."""
    gateway = current_gateway()
    claim = _read_download_token(gateway, token)
    user = await gateway.storage.get_user(claim["u"])
    if user is None:
        raise NotFound.of("attachment")
    caller = Caller(user, key_hash="", scope="account")
    meta, data = await mailbox.attachment(gateway, caller, claim["a"], claim["m"], claim["i"])
    return Response(
        data,
        content_type=meta.content_type,
        headers={
            "Content-Disposition": _disposition(meta),
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@blueprint.post(ONE_MESSAGE + "/reply")
@requires_caller
@waits_for_handoff
@idempotent_making(stored_send_result)
async def reply_to_message(
    caller: Caller, email: str, message_id: str
) -> tuple[dict[str, Any], int]:
    """replyToMessage: an answer threaded onto the message."""
    body = await read_json(ReplyMessageBody)
    submission = await sending.reply_to_message(current_gateway(), caller, email, message_id, body)
    return send_result_view(submission)


@blueprint.post(ONE_MESSAGE + "/forward")
@requires_caller
@waits_for_handoff
@idempotent_making(stored_send_result)
async def forward_message(
    caller: Caller, email: str, message_id: str
) -> tuple[dict[str, Any], int]:
    """forwardMessage: the message, quoted with its attachments, to new recipients."""
    body = await read_json(ForwardMessageBody)
    submission = await sending.forward_message(current_gateway(), caller, email, message_id, body)
    return send_result_view(submission)


@blueprint.get(ONE_MESSAGE + "/lifecycle")
@requires_caller
async def get_message_lifecycle(caller: Caller, email: str, message_id: str) -> dict[str, Any]:
    """getMessageLifecycle (beta): the message's transitions, reconstructed from its state."""
    query = read_query(LifecycleQuery)
    return await lifecycle_listing(current_gateway(), caller, email, message_id, query)


async def lifecycle_listing(
    gateway: Gateway, caller: Caller, email: str, message_id: str, query: LifecycleQuery
) -> dict[str, Any]:
    """One page of the message's transitions (getMessageLifecycle's answer), for `/v1` and
    the MCP tools alike."""
    filed = await mailbox.filed_as_it_is(gateway, caller, email, message_id)
    suppressions = []
    if filed.direction == "outbound":
        recipients = dict.fromkeys(a.lower() for a in [*filed.to, *filed.cc, *filed.bcc])
        suppressions = await gateway.storage.suppressions_from(
            caller.user_id, filed.id, list(recipients)
        )
    transitions = lifecycle_transitions(filed, suppressions)

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[dict[str, Any]]:
        start = _lifecycle_position(after)
        later = [step for step in transitions if start is None or lifecycle_position(step) > start]
        return later[:limit]

    return await keyset_page(
        f"lifecycle {message_id}", query, fetch, lifecycle_position, lambda step: step, gateway
    )


async def message_with_reading(
    gateway: Gateway, caller: Caller, opened: mailbox.OpenedMessage
) -> dict[str, Any]:
    """The message view, with `reply_text` and `trust` for mail received (docs/replies.md);
    `parsed` made from the split the reading kept (mail sent, or received and deleted since it
    was opened: split now)."""
    body = await mailbox.parsed_body(opened.raw) if opened.raw is not None else None
    reading = await trust.reading_of_filed(gateway, caller.user_id, opened.filed)
    if reading is not None:
        parts = reading_parts(reading)
    elif body is not None:
        parts = await split_off_loop(body.text, body.html)
    else:
        draft = opened.outbound
        parts = await split_off_loop(draft.body_text, draft.body_html) if draft else []
    view = message_view(opened, gateway.settings.smtp.hostname, body, parts)
    if reading is not None:
        view.update(reading)
    if opened.filed.delivery_status in ("retrying", "failed") and opened.raw is not None:
        attempts = await gateway.storage.webhook_attempts(caller.user_id, opened.filed.id)
        error = webhook_error(attempts)
        if error is not None:
            view["webhook_error"] = error
    return view


def _position(after: tuple[Any, ...] | None) -> int | None:
    """The one integer of a cursor's position; None on the first page."""
    if after is None:
        return None
    if len(after) != 1 or not isinstance(after[0], int) or isinstance(after[0], bool):
        raise V1Error(400, "invalid_cursor", "this cursor does not belong to this listing")
    return after[0]


def _lifecycle_position(after: tuple[Any, ...] | None) -> tuple[str, str] | None:
    """The `(occurred_at, id)` a lifecycle cursor continues after; None on the first page."""
    if after is None:
        return None
    if len(after) != 2 or not all(isinstance(part, str) for part in after):
        raise V1Error(400, "invalid_cursor", "this cursor does not belong to this listing")
    return (after[0], after[1])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _download_key(gateway: Gateway) -> bytes:
    return hmac.new(gateway.server_key.encode(), b"e2a v1 attachment link", hashlib.sha256).digest()


def attachment_download_url(
    gateway: Gateway, caller: Caller, email: str, message_id: str, index: int, expires: float
) -> str:
    """A link to the bytes of one attachment, for this caller's account, until `expires`."""
    claim = {"u": caller.user_id, "a": email, "m": message_id, "i": index, "e": int(expires)}
    payload = base64.urlsafe_b64encode(json.dumps(claim).encode()).decode().rstrip("=")
    mac = hmac.new(_download_key(gateway), payload.encode(), hashlib.sha256).digest()
    token = f"{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    return f"{gateway.settings.http.public_url.rstrip('/')}/v1/attachments/{token}"


def _read_download_token(gateway: Gateway, token: str) -> dict[str, Any]:
    """The claim of a download link this gateway made and that has not expired."""
    payload, _, mac = token.partition(".")
    expected = hmac.new(_download_key(gateway), payload.encode(), hashlib.sha256).digest()
    try:
        given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        genuine = hmac.compare_digest(given, expected)
        claim = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        genuine, claim = False, None
    if not genuine or not isinstance(claim, dict) or claim["e"] < time.time():
        raise V1Error(  # e2a's answer to a forged or expired link alike
            403,
            "forbidden",
            "invalid or expired download link; ask getAttachment for a new one",
        )
    return claim


def _disposition(meta: Attachment) -> str:
    """`attachment` with the file's name: an ASCII stand-in in `filename` (a header's value is
    Latin-1, and a quote or backslash there is read differently by each browser), and the name
    itself, UTF-8 and percent-encoded, in `filename*` (RFC 6266) when it is not that."""
    name = "".join(ch for ch in meta.filename or "" if ch.isprintable())
    if not name:
        return "attachment"
    fallback = "".join("_" if ord(ch) > 127 or ch in '"\\' else ch for ch in name)
    if fallback == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
