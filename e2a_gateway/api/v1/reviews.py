"""The review queue on `/v1` (beta in e2a): outbound drafts and inbound holds of the account,
listed, read, approved (with edits, for outbound) and rejected. Account keys only; the magic
links of the notice email answer at `/v1/approve` and `/v1/reject` as well (`t=`)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from e2a_gateway.api import approvals
from e2a_gateway.api.auth import requires_caller
from e2a_gateway.api.v1.bodies import read_json, read_query
from e2a_gateway.api.v1.idempotent import idempotent_making
from e2a_gateway.api.v1.pages import PageQuery, keyset_page
from e2a_gateway.api.v1.review_views import (
    approval_view,
    reject_result_view,
    review_detail_view,
    review_item_view,
    send_result_view,
)
from e2a_gateway.gateway import Gateway
from e2a_gateway.operations import review_queue
from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.review_queue import ApproveReview, RejectReview
from e2a_gateway.storage.base import HeldMessage
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("v1_reviews", __name__)
blueprint.register_blueprint(approvals.blueprint, name="v1_magic_links")


@blueprint.get("/reviews")
@requires_caller
async def list_reviews(caller: Caller) -> dict[str, Any]:
    """listReviews: the messages waiting for review, newest first."""
    return await review_listing(current_gateway(), caller, read_query(PageQuery))


@blueprint.get("/reviews/<message_id>")
@requires_caller
async def get_review(caller: Caller, message_id: str) -> dict[str, Any]:
    """getReview: one reviewed message in full."""
    message = await review_queue.review_detail(current_gateway(), caller, message_id)
    return await review_detail_view(message)


async def approved_review(caller: Caller, message_id: str) -> tuple[dict[str, Any], int]:
    """approveReview's answer for the approval its first request made and never answered."""
    outbound = await review_queue.approved(current_gateway(), caller, message_id)
    return approval_view(message_id, outbound)


@blueprint.post("/reviews/<message_id>/approve")
@requires_caller
@idempotent_making(approved_review)
async def approve_review(caller: Caller, message_id: str) -> tuple[dict[str, Any], int]:
    """approveReview: send the outbound draft (202 accepted) or deliver the inbound hold
    (200 review_approved)."""
    body = await read_json(ApproveReview, allow_empty=True)
    resolved = await review_queue.approve(current_gateway(), caller, message_id, body)
    return send_result_view(resolved)


@blueprint.post("/reviews/<message_id>/reject")
@requires_caller
async def reject_review(caller: Caller, message_id: str) -> dict[str, Any]:
    """rejectReview: the outbound draft is never sent, the inbound hold never delivered."""
    body = await read_json(RejectReview, allow_empty=True)
    resolved = await review_queue.reject(current_gateway(), caller, message_id, body)
    return reject_result_view(resolved)


async def review_listing(gateway: Gateway, caller: Caller, query: PageQuery) -> dict[str, Any]:
    """One page of the account's review queue as listReviews answers it (also the MCP tools')."""

    async def fetch(limit: int, after: tuple[Any, ...] | None) -> list[HeldMessage]:
        position = after[0] if after and isinstance(after[0], int) else None
        return await review_queue.queue_page(gateway, caller, limit, position)

    return await keyset_page("reviews", query, fetch, _position, review_item_view, gateway)


def _position(item: HeldMessage) -> tuple[int]:
    return (item.seq,)
