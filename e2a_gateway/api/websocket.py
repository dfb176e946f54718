"""WebSocket delivery for local agents: every unread message on connect, then live ones, each
frame with the message's reply text and trust map (docs/replies.md).

Checks happen before the upgrade (401 no or bad key, given as `?token=` or in an
`Authorization: Bearer` header, or two different ones, 404 not the caller's agent,
400 cloud agent, 429 too many connections for the key), and a plain GET of the same path gets
the same answers. Delivery is at-least-once: a message stays unread until the client fetches
it over REST or sends `{"type": "ack", "message_id"}`, and unread messages are sent again on
the next connection. The connection is closed as soon as its agent is deleted or its key revoked,
and at the next mail once its agent is switched to cloud (webhook) delivery.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import trio
from quart import Blueprint, Response, request, websocket
from werkzeug.datastructures import Headers

from e2a_gateway.api.errors import error_response
from e2a_gateway.hub import Ended, Listener, Subscription, TooManyListeners
from e2a_gateway.hub.access import lost_access
from e2a_gateway.hub.frames import notification_frame
from e2a_gateway.operations import messages, trust
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller, authenticate
from e2a_gateway.operations.errors import (
    Invalid,
    NotFound,
    OperationError,
    RateLimited,
    Unauthorized,
)
from e2a_gateway.storage.base import Agent
from e2a_gateway.web.context import bearer_key, current_gateway
from e2a_gateway.web.errors import status_of
from e2a_gateway.web.json_bodies import text_problem
from e2a_gateway.web.socket_counts import (
    BAD_ACKS,
    REVOKED,
    SocketEnding,
    counted_socket,
    ended_reason,
    push,
)
from e2a_gateway.web.socket_failures import internal_error_when_failing
from e2a_gateway.web.socket_reading import next_frame
from e2a_gateway.web.socket_shutdown import going_away_when_cancelled

blueprint = Blueprint("websocket", __name__)
log = logging.getLogger("e2a.ws")

DRAIN_PAGE_SIZE = 100
MAX_CLIENT_FRAME_BYTES = 4096
MAX_READING_FRAME_BYTES = 256 * 1024
"""The longest frame sent with a reading: well under what clients take in one message (the
SDK's 1 MiB), so a long message cannot make a frame that its client refuses again and again."""
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008
MAX_ACKS_NAMING_NOTHING = 100
"""How many acks naming none of its agent's live mail a connection may send (a message trashed
since it was pushed, say) before it is closed with 1008: each is a write to the database."""
ACKS_NAMING_NOTHING = "too many acks naming no message of this agent"
REMEMBERED_ACKS = 4096
"""How many of the ids it acked a connection remembers, so that an ack repeated is not
applied again."""
TURNED_CLOUD = "the agent is now a cloud agent"
"""The close reason of a connection whose agent was switched to cloud (webhook) delivery."""
_LOST: dict[Ended, OperationError] = {
    Ended.KEY_REVOKED: Unauthorized("unauthorized", "unknown or revoked API key"),
    Ended.AGENT_DELETED: NotFound.of("agent"),
}
"""The refusal for access lost between admission and subscription."""


@dataclass(frozen=True)
class _Admitted:
    """A connection that passed the checks: whose key, which agent."""

    caller: Caller
    agent: Agent

    @property
    def listener(self) -> Listener:
        caller = self.caller
        return Listener(
            self.agent.id, caller.user_id, caller.key_hash, "websocket", caller.expires_at
        )


def _presented_key(args: Any, headers: Headers) -> str:
    """The API key in `?token=` (where WebSocket clients, which often cannot set headers, put
    it) or in an `Authorization: Bearer` header; Unauthorized when neither is given, or when
    both are and name different keys (which caller the connection is for would be a guess)."""
    token = args.get("token")
    key = bearer_key(headers)
    if token and key is not None and key != token:
        raise Unauthorized(
            "unauthorized",
            "?token= and the Authorization header name different API keys: send exactly one "
            "API key, in the URL or in the header",
        )
    if token:
        return str(token)
    if key is None:
        raise Unauthorized(
            "unauthorized",
            "missing API key: connect with ?token=e2a_… in the URL "
            "or an Authorization: Bearer e2a_… header",
        )
    return key


def _too_many(limit: int) -> RateLimited:
    return RateLimited(
        "too_many_websockets",
        f"this API key already has {limit} WebSocket connections open, the most allowed "
        "(http.max_websockets_per_key); close one, or use another API key",
    )


async def _admit(args: Any, headers: Headers, email: str) -> _Admitted:
    """The caller and their local agent, or the OperationError that refuses the connection."""
    gateway = current_gateway()
    caller = await authenticate(gateway, _presented_key(args, headers))
    agent = await owned_agent(gateway, caller, email)
    if agent.agent_mode != "local":
        raise Invalid(
            "not_local_agent",
            "this agent is a cloud agent (delivered by webhook); switch it to "
            '"agent_mode": "local" to use the WebSocket',
        )
    limit = gateway.settings.http.max_websockets_per_key
    if gateway.hub.listener_count(caller.key_hash, "websocket") >= limit:
        raise _too_many(limit)
    return _Admitted(caller, agent)


@blueprint.get("/agents/<email>/ws")
async def explain_websocket(email: str) -> Response:
    """A plain GET gets the same refusals as the upgrade would, or 426 when all is well."""
    try:
        await _admit(request.args, request.headers, email)
    except OperationError as refused:
        return _refusal(refused)
    return error_response(
        426, "upgrade_required", "connect with a WebSocket client (Upgrade: websocket)"
    )


@blueprint.websocket("/agents/<email>/ws")
async def agent_socket(email: str) -> Response | None:
    """Serve one WebSocket connection of a local agent."""
    try:
        admitted = await _admit(websocket.args, websocket.headers, email)
    except OperationError as refused:
        return _refusal(refused)
    gateway = current_gateway()
    limit = gateway.settings.http.max_websockets_per_key
    try:
        # Subscribed before the upgrade (the cap is counted here, without a pause since the
        # check) and before the drain (so nothing accepted meanwhile is missed); access is
        # checked once more, so a revocation that came in between is not missed either.
        with gateway.hub.subscribe(admitted.listener, limit=limit) as subscription:
            lost = await lost_access(gateway.storage, admitted.listener, admitted.agent.email)
            if lost is not None:
                return _refusal(_LOST[lost])
            await websocket.accept()
            async with (
                counted_socket(gateway) as ending,
                going_away_when_cancelled(),
                internal_error_when_failing(),
            ):
                await _serve(admitted, subscription, ending)
    except TooManyListeners:
        return _refusal(_too_many(limit))
    return None


def _refusal(refused: OperationError) -> Response:
    """The JSON error refusing a connection (before any upgrade)."""
    return error_response(status_of(refused), refused.code, refused.message)


async def _serve(admitted: _Admitted, subscription: Subscription, ending: SocketEnding) -> None:
    """Drain the unread mail, then relay live notifications until the hub ends the
    subscription; then close, saying why. The client's acks are read all along."""
    gateway = current_gateway()
    async with trio.open_nursery() as nursery:

        async def until_client_leaves() -> None:
            await _receive_acks(admitted, ending)
            nursery.cancel_scope.cancel()  # every ack it sent is applied: the service ends

        # Read before the drain: a client acking as the backlog comes would otherwise fill the
        # receive queues, and the HTTP server, no longer reading, would miss its pongs.
        nursery.start_soon(until_client_leaves)
        subscription.drained(await _send_unread(admitted, subscription))
        async for frame in subscription:
            if await _turned_cloud(admitted):
                # Its mail goes to its webhook now; a reconnection is refused (400).
                ending.closing(REVOKED)
                await websocket.close(CLOSE_POLICY_VIOLATION, TURNED_CLOUD)
                break
            message = await messages.announced(
                gateway, admitted.caller, admitted.agent, frame["message_id"]
            )
            if message is None or subscription.sent_by_drain(message.seq):
                continue  # trashed or deleted meanwhile, or a late notice of mail the drain sent
            reading = await trust.reading_of(gateway, message)
            await push(gateway, _with_reading(frame, reading))
            gateway.metrics.delivered("websocket", "sent")
        else:
            ended = subscription.ended or Ended.BEHIND
            # Fell behind: the client reconnects and catches up from storage. Revoked: it is
            # refused when it tries.
            code = CLOSE_TRY_AGAIN_LATER if ended is Ended.BEHIND else CLOSE_POLICY_VIOLATION
            ending.closing(ended_reason(ended))
            await websocket.close(code, ended.value)
        nursery.cancel_scope.cancel()


async def _turned_cloud(admitted: _Admitted) -> bool:
    """Whether the agent has been switched to a cloud agent since the connection opened (its
    mail is the webhook's then, and the hub still tells of it, for the dashboard)."""
    agent = await current_gateway().storage.get_agent(admitted.caller.user_id, admitted.agent.email)
    return agent is not None and agent.id == admitted.agent.id and agent.agent_mode != "local"


async def _send_unread(admitted: _Admitted, subscription: Subscription) -> int:
    """Send every unread message, oldest first, page by page (stopping if access is revoked
    meanwhile); return the `seq` of the last one sent (0: none)."""
    gateway = current_gateway()
    sent = 0
    after: int | None = None
    while not subscription.revoked:
        page = await messages.unread_page(
            gateway, admitted.caller, admitted.agent, DRAIN_PAGE_SIZE, after
        )
        for message in page.messages:
            if subscription.revoked:
                break
            reading = await trust.reading_of(gateway, message)
            await push(gateway, _with_reading(notification_frame(message), reading))
            gateway.metrics.delivered("websocket", "sent")
            gateway.metrics.ws_drained.inc()
            sent = message.seq
        if page.next_after is None:
            break
        after = page.next_after
    return sent


def _with_reading(frame: dict[str, Any], reading: dict[str, Any] | None) -> str:
    """The frame's text with the message's reply text and trust map, unless that would make
    it longer than MAX_READING_FRAME_BYTES (the client then reads them with the message)."""
    if reading is not None:
        text = json.dumps({**frame, **reading})
        if len(text.encode()) <= MAX_READING_FRAME_BYTES:
            return text
    return json.dumps(frame)


async def _receive_acks(admitted: _Admitted, ending: SocketEnding) -> None:
    """Read client frames until the client has left and every frame it sent before is read:
    `ack` marks a message read, once per connection (REMEMBERED_ACKS); anything else is
    ignored, an ack whose id no database could hold or look up (NUL, a lone surrogate) too, as
    naming no message. Past MAX_ACKS_NAMING_NOTHING acks naming no message of the agent, the
    connection is closed (1008)."""
    gateway = current_gateway()
    acked: set[str] = set()
    naming_nothing = 0
    while (data := await next_frame()) is not None:
        if isinstance(data, bytes) or len(data) > MAX_CLIENT_FRAME_BYTES:
            continue
        try:
            frame = json.loads(data)
        except ValueError:
            continue
        if isinstance(frame, dict) and frame.get("type") == "ack":
            message_id = frame.get("message_id")
            if not isinstance(message_id, str) or text_problem(message_id) is not None:
                continue
            if message_id in acked:
                continue  # applied already
            if await messages.acknowledge(gateway, admitted.caller, admitted.agent, message_id):
                gateway.metrics.delivered("websocket", "acked")
                if len(acked) >= REMEMBERED_ACKS:
                    acked.clear()
                acked.add(message_id)
                continue
            naming_nothing += 1
            if naming_nothing > MAX_ACKS_NAMING_NOTHING:
                ending.closing(BAD_ACKS)
                await websocket.close(CLOSE_POLICY_VIOLATION, ACKS_NAMING_NOTHING)
                return
