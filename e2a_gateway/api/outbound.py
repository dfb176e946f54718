"""Sending mail: `/send`, replies, test mail, and the review queue (list, approve, reject).

A send answers 202 while the message is held for approval; 422 `send_failed` when it was
refused for good while the operation waited for its hand-off; else 200 `sent`, as e2a 2.x
clients expect (operations.sending says how long it waits, docs/api.md why `sent`). `/send`,
replies and approvals honour an Idempotency-Key as `/v1`'s writes do (the e2a 2.x SDKs send one
on each), so a retried send, reply or approval is made once and answered again.

A message stored as `bounced` (a state `/v1` has and the contract's `/api/v1` does not) shows
here as `failed`, its `error` saying why, and is listed with `status=failed`.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.requests import read_body
from e2a_gateway.api.v1.idempotent import idempotent_making
from e2a_gateway.operations import lifecycle, reviews, sending
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.errors import Invalid
from e2a_gateway.operations.reviews import ApproveBody, RejectBody
from e2a_gateway.operations.sending import ReplyBody, SendBody
from e2a_gateway.storage.base import OutboundMessage
from e2a_gateway.storage.vocabulary import BOUNCED, FAILED
from e2a_gateway.web.context import current_gateway
from e2a_gateway.web.views import outbound_view, submission_answer

blueprint = Blueprint("outbound", __name__)


async def stored_send(caller: Caller, message_id: str) -> tuple[dict[str, Any], int]:
    """A send's or reply's answer for the message its first request stored and never
    answered."""
    return submission_answer(await sending.stored_send(current_gateway(), caller, message_id))


@blueprint.post("/send")
@requires_caller
@idempotent_making(stored_send)
async def send(caller: Caller) -> tuple[dict[str, Any], int]:
    """POST /send: a new message from one of the caller's agents; a retry with the same
    Idempotency-Key and body answers the first send again instead of sending twice."""
    body = await read_body(SendBody)
    return submission_answer(await sending.send(current_gateway(), caller, body))


@blueprint.post("/agents/<email>/messages/<message_id>/reply")
@requires_caller
@idempotent_making(stored_send)
async def reply(caller: Caller, email: str, message_id: str) -> tuple[dict[str, Any], int]:
    """POST …/reply: answer an inbound message, threaded; a retry with the same
    Idempotency-Key and body answers the first reply again instead of sending twice."""
    body = await read_body(ReplyBody)
    return submission_answer(
        await sending.reply(current_gateway(), caller, email, message_id, body)
    )


@blueprint.post("/agents/<email>/test")
@requires_caller
async def send_test(caller: Caller, email: str) -> tuple[dict[str, Any], int]:
    """POST /agents/{email}/test: a test message from the agent to itself."""
    return submission_answer(
        await sending.send_test(current_gateway(), caller, email, new_conversation=False)
    )


@blueprint.get("/messages")
@requires_caller
async def list_outbound(caller: Caller) -> dict[str, Any]:
    """GET /messages?status=&agent=: the review queue by default; `failed` lists bounced
    mail too."""
    gateway = current_gateway()
    status = request.args.get("status", "pending_approval")
    agent = request.args.get("agent")
    if status == BOUNCED:
        states = ", ".join(state for state in lifecycle.STATES if state != BOUNCED)
        raise Invalid("invalid_request", f"status must be one of {states} (failed: bounced too)")
    messages = await reviews.outbound_messages(gateway, caller, status, agent)
    if status == FAILED:
        bounced = await reviews.outbound_messages(gateway, caller, BOUNCED, agent)
        messages = sorted([*messages, *bounced], key=_listed_order)
    return {"messages": [_seed_era_view(message) for message in messages]}


@blueprint.get("/messages/<message_id>")
@requires_caller
async def get_outbound(caller: Caller, message_id: str) -> dict[str, Any]:
    """GET /messages/{id}."""
    return _seed_era_view(await reviews.outbound_message(current_gateway(), caller, message_id))


def _seed_era_view(message: OutboundMessage) -> dict[str, Any]:
    """The Outbound object in the contract's states: `bounced` reads as `failed`."""
    view = outbound_view(message)
    if view["status"] == BOUNCED:
        view["status"] = FAILED
    return view


def _listed_order(message: OutboundMessage) -> tuple[float, float]:
    """Where storage lists a message: soonest deadline (or oldest) first."""
    first = message.approval_expires_at
    return (first if first is not None else message.created_epoch, message.created_epoch)


async def approved(caller: Caller, message_id: str) -> dict[str, Any]:
    """An approval's answer for the message its first request approved and never answered."""
    return outbound_view(await reviews.outbound_message(current_gateway(), caller, message_id))


@blueprint.post("/messages/<message_id>/approve")
@requires_caller
@idempotent_making(approved)
async def approve(caller: Caller, message_id: str) -> dict[str, Any]:
    """POST /messages/{id}/approve, optionally with edits (then `edited: true`); a retry with
    the same Idempotency-Key and body answers the first approval again instead of a 409."""
    body = await read_body(ApproveBody, allow_empty=True)
    return outbound_view(await reviews.approve(current_gateway(), caller, message_id, body))


@blueprint.post("/messages/<message_id>/reject")
@requires_caller
async def reject(caller: Caller, message_id: str) -> dict[str, Any]:
    """POST /messages/{id}/reject with an optional reason."""
    body = await read_body(RejectBody, allow_empty=True)
    return outbound_view(await reviews.reject(current_gateway(), caller, message_id, body.reason))
