"""WebSocket delivery for local agents: every unread message on connect, then live ones.

Checks happen before the upgrade (401 bad key, 404 not the caller's agent, 400 cloud agent,
429 too many connections for the key), and a plain GET of the same path gets the same
answers. Delivery is at-least-once: a message stays unread until the client fetches it over
REST or sends `{"type": "ack", "message_id"}`, and unread messages are sent again on the next
connection. The connection is closed as soon as its agent is deleted or its key revoked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import trio
from quart import Blueprint, Response, request, websocket
from werkzeug.datastructures import Headers

from e2a.api.agents import owned_agent
from e2a.api.auth import gateway
from e2a.api.errors import ApiError, error_response, not_found
from e2a.hub import Ended, Listener, Subscription, TooManyListeners
from e2a.hub.access import lost_access
from e2a.hub.frames import notification_frame
from e2a.operations.caller import authenticate
from e2a.operations.errors import OperationError
from e2a.storage.base import Agent, User
from e2a.web.context import bearer_key
from e2a.web.errors import status_of

blueprint = Blueprint("websocket", __name__)
log = logging.getLogger("e2a.ws")

DRAIN_PAGE_SIZE = 100
MAX_CLIENT_FRAME_BYTES = 4096
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008
_LOST = {
    Ended.KEY_REVOKED: ApiError(401, "unauthorized", "unknown or revoked API key"),
    Ended.AGENT_DELETED: not_found("agent"),
}
"""The refusal for access lost between admission and subscription."""


@dataclass(frozen=True)
class _Admitted:
    """A connection that passed the checks: whose key, which agent."""

    user: User
    agent: Agent
    key_hash: str

    @property
    def listener(self) -> Listener:
        return Listener(self.agent.id, self.user.id, self.key_hash, "websocket")


def _presented_key(args: Any, headers: Headers) -> str | None:
    """`?token=` (what browsers and the SDK use for WebSockets), else the Bearer header."""
    token = args.get("token")
    return str(token) if token else bearer_key(headers)


def _too_many(limit: int) -> ApiError:
    return ApiError(
        429,
        "too_many_websockets",
        f"this API key already has {limit} WebSocket connections open, the most allowed "
        "(http.max_websockets_per_key); close one, or use another API key",
    )


async def _admit(args: Any, headers: Headers, email: str) -> _Admitted:
    """The caller and their local agent, or the ApiError that refuses the connection."""
    key = _presented_key(args, headers)
    caller = await authenticate(gateway(), key)
    agent = await owned_agent(caller.user, email)
    if agent.agent_mode != "local":
        raise ApiError(
            400,
            "not_local_agent",
            "this agent is a cloud agent (delivered by webhook); switch it to "
            '"agent_mode": "local" to use the WebSocket',
        )
    admitted = _Admitted(caller.user, agent, caller.key_hash)
    limit = gateway().settings.http.max_websockets_per_key
    if gateway().hub.listener_count(admitted.key_hash, "websocket") >= limit:
        raise _too_many(limit)
    return admitted


@blueprint.get("/agents/<email>/ws")
async def explain_websocket(email: str) -> Response:
    """A plain GET gets the same refusals as the upgrade would, or 426 when all is well."""
    try:
        await _admit(request.args, request.headers, email)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except OperationError as refused:
        return error_response(status_of(refused), refused.code, refused.message)
    return error_response(
        426, "upgrade_required", "connect with a WebSocket client (Upgrade: websocket)"
    )


@blueprint.websocket("/agents/<email>/ws")
async def agent_socket(email: str) -> Response | None:
    """Serve one WebSocket connection of a local agent."""
    try:
        admitted = await _admit(websocket.args, websocket.headers, email)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except OperationError as refused:
        return error_response(status_of(refused), refused.code, refused.message)
    limit = gateway().settings.http.max_websockets_per_key
    try:
        # Subscribed before the upgrade (the cap is counted here, without a pause since the
        # check) and before the drain (so nothing accepted meanwhile is missed); access is
        # checked once more, so a revocation that came in between is not missed either.
        with gateway().hub.subscribe(admitted.listener, limit=limit) as subscription:
            lost = await lost_access(gateway().storage, admitted.listener, admitted.agent.email)
            if lost is not None:
                refusal = _LOST[lost]
                return error_response(refusal.status, refusal.code, refusal.message)
            await websocket.accept()
            await _serve(admitted, subscription)
    except TooManyListeners:
        refusal = _too_many(limit)
        return error_response(refusal.status, refusal.code, refusal.message)
    return None


async def _serve(admitted: _Admitted, subscription: Subscription) -> None:
    """Drain the unread mail, then relay live notifications until the hub ends the
    subscription; then close, saying why."""
    drained = await _send_unread(admitted, subscription)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_receive_acks, admitted.user, admitted.agent)
        async for frame in subscription:
            if frame["message_id"] in drained:
                continue
            await websocket.send(json.dumps(frame))
            gateway().metrics.delivered("websocket", "sent")
        ended = subscription.ended or Ended.BEHIND
        # Fell behind: the client reconnects and catches up from storage. Revoked: it is
        # refused when it tries.
        code = CLOSE_TRY_AGAIN_LATER if ended is Ended.BEHIND else CLOSE_POLICY_VIOLATION
        await websocket.close(code, ended.value)
        nursery.cancel_scope.cancel()


async def _send_unread(admitted: _Admitted, subscription: Subscription) -> set[str]:
    """Send every unread message, oldest first, page by page (stopping if access is revoked
    meanwhile); return their ids."""
    sent: set[str] = set()
    after: int | None = None
    while not subscription.revoked:
        page = await gateway().storage.list_inbound(
            admitted.user.id, admitted.agent.email, "unread", DRAIN_PAGE_SIZE, after
        )
        for message in page.messages:
            if subscription.revoked:
                break
            await websocket.send(json.dumps(notification_frame(message)))
            gateway().metrics.delivered("websocket", "sent")
            sent.add(message.id)
        if page.next_after is None:
            break
        after = page.next_after
    return sent


async def _receive_acks(user: User, agent: Agent) -> None:
    """Read client frames: `ack` marks a message read; anything else is ignored."""
    while True:
        data = await websocket.receive()
        if isinstance(data, bytes) or len(data) > MAX_CLIENT_FRAME_BYTES:
            continue
        try:
            frame = json.loads(data)
        except ValueError:
            continue
        if isinstance(frame, dict) and frame.get("type") == "ack":
            message_id = frame.get("message_id")
            if isinstance(message_id, str) and await gateway().storage.mark_read(
                user.id, agent.email, message_id
            ):
                gateway().metrics.delivered("websocket", "acked")
