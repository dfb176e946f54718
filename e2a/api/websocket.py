"""WebSocket delivery for local agents: every unread message on connect, then live ones.

Checks happen before the upgrade (401 bad key, 404 not the caller's agent, 400 cloud agent),
and a plain GET of the same path gets the same answers. Delivery is at-least-once: a message
stays unread until the client fetches it over REST or sends `{"type": "ack", "message_id"}`,
and unread messages are sent again on the next connection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from quart import Blueprint, Response, request, websocket
from werkzeug.datastructures import Headers

from e2a.api.agents import owned_agent
from e2a.api.auth import authenticate, bearer_key, gateway
from e2a.api.errors import ApiError, error_response
from e2a.hub.frames import notification_frame
from e2a.storage.base import Agent, User

blueprint = Blueprint("websocket", __name__)
log = logging.getLogger("e2a.ws")

DRAIN_PAGE_SIZE = 100
MAX_CLIENT_FRAME_BYTES = 4096


def _presented_key(args: Any, headers: Headers) -> str | None:
    """`?token=` (what browsers and the SDK use for WebSockets), else the Bearer header."""
    token = args.get("token")
    return str(token) if token else bearer_key(headers)


async def _admit(args: Any, headers: Headers, email: str) -> tuple[User, Agent]:
    """The caller and their local agent, or the ApiError that refuses the connection."""
    user = await authenticate(_presented_key(args, headers))
    agent = await owned_agent(user, email)
    if agent.agent_mode != "local":
        raise ApiError(
            400,
            "not_local_agent",
            "this agent is a cloud agent (delivered by webhook); switch it to "
            '"agent_mode": "local" to use the WebSocket',
        )
    return user, agent


@blueprint.get("/agents/<email>/ws")
async def explain_websocket(email: str) -> Response:
    """A plain GET gets the same refusals as the upgrade would, or 426 when all is well."""
    try:
        await _admit(request.args, request.headers, email)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    return error_response(
        426, "upgrade_required", "connect with a WebSocket client (Upgrade: websocket)"
    )


@blueprint.websocket("/agents/<email>/ws")
async def agent_socket(email: str) -> Response | None:
    """Serve one WebSocket connection of a local agent."""
    try:
        user, agent = await _admit(websocket.args, websocket.headers, email)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    await websocket.accept()
    hub = gateway().hub
    with hub.subscribe(agent.email) as live:
        drained = await _send_unread(user, agent)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive_acks, user, agent)
            async for frame in live:
                if frame["message_id"] in drained:
                    continue
                await websocket.send(json.dumps(frame))
                gateway().metrics.delivered("websocket", "sent")
            # The hub closed our subscription because we fell behind: the client reconnects
            # and catches up from storage.
            await websocket.close(1013, "too far behind; reconnect to catch up")
            nursery.cancel_scope.cancel()
    return None


async def _send_unread(user: User, agent: Agent) -> set[str]:
    """Send every unread message, oldest first, page by page; return their ids."""
    sent: set[str] = set()
    after: int | None = None
    while True:
        page = await gateway().storage.list_inbound(
            user.id, agent.email, "unread", DRAIN_PAGE_SIZE, after
        )
        for message in page.messages:
            await websocket.send(json.dumps(notification_frame(message)))
            gateway().metrics.delivered("websocket", "sent")
            sent.add(message.id)
        if page.next_after is None:
            return sent
        after = page.next_after


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
