"""The `/v1` WebSocket of an agent, as e2a has it: `Authorization: Bearer` on the handshake
(refusals — 401, 403, 404 — are HTTP answers in e2a's envelope, before any upgrade), then every
unread message and each new one as an `email.received` event envelope
(`{type, id, schema_version, created_at, data}`), metadata only: the event the events log and
the webhooks carry, with the same id and `data` (`e2a_gateway.events.received_envelope`).

One connection per agent, across replicas: a newer one replaces the older, which is closed
with 4000 `replaced` (its client must not reconnect); each claim is told to the other replicas
(`e2a_gateway.hub.sole` decides which is newer). Nothing is marked read by being pushed; the
several-listeners-with-ack WebSocket of `/api/v1` is unchanged beside it.
"""

from __future__ import annotations

import logging

import trio
from quart import Blueprint, Response, request, websocket
from werkzeug.datastructures import Headers

from e2a_gateway.api.v1.errors import V1Error, error_answer, refusal
from e2a_gateway.events import received_envelope
from e2a_gateway.hub import Ended, Listener, Subscription
from e2a_gateway.hub.access import lost_access
from e2a_gateway.hub.sole import Claim
from e2a_gateway.operations import messages
from e2a_gateway.operations.agents import owned_agent
from e2a_gateway.operations.caller import Caller, authenticate
from e2a_gateway.operations.errors import NotFound, OperationError, Unauthorized
from e2a_gateway.storage.base import Agent, StorageUnavailable
from e2a_gateway.web.context import bearer_key, current_gateway
from e2a_gateway.web.socket_counts import (
    ERROR,
    REPLACED,
    SocketEnding,
    counted_socket,
    ended_reason,
    push,
)
from e2a_gateway.web.socket_failures import internal_error_when_failing
from e2a_gateway.web.socket_reading import next_frame
from e2a_gateway.web.socket_shutdown import going_away_when_cancelled

blueprint = Blueprint("v1_socket", __name__)
log = logging.getLogger("e2a.api")

DRAIN_PAGE_SIZE = 100
CLOSE_REPLACED = 4000
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008
_LOST: dict[Ended, OperationError] = {
    Ended.KEY_REVOKED: Unauthorized("unauthorized", "unknown or revoked API key"),
    Ended.AGENT_DELETED: NotFound.of("agent"),
}


async def _admit(headers: Headers, email: str) -> tuple[Caller, Agent]:
    """The caller of the Bearer key and their agent at `email` (an agent key: its own)."""
    gateway = current_gateway()
    caller = await authenticate(gateway, bearer_key(headers))
    return caller, await owned_agent(gateway, caller, email)


@blueprint.get("/agents/<email>/ws")
async def explain_websocket(email: str) -> Response:
    """A plain GET gets the handshake's refusals, or 426 when all is well."""
    await _admit(request.headers, email)
    return error_answer(
        V1Error(426, "invalid_request", "connect with a WebSocket client (Upgrade: websocket)")
    )


@blueprint.websocket("/agents/<email>/ws")
async def agent_socket(email: str) -> Response | None:
    """Serve one agent's `/v1` WebSocket."""
    headers = websocket.headers
    try:
        caller, agent = await _admit(headers, email)
    except OperationError as refused:
        return error_answer(refusal(refused))
    gateway = current_gateway()
    listener = Listener(agent.id, caller.user_id, caller.key_hash, "websocket", caller.expires_at)
    # Subscribed before the drain, so nothing stored meanwhile is missed; access checked once
    # more, so a revocation that came in between is not missed either.
    with gateway.hub.subscribe(listener) as subscription:
        lost = await lost_access(gateway.storage, listener, agent.email)
        if lost is not None:
            return error_answer(refusal(_LOST[lost]))
        await websocket.accept()
        async with counted_socket(gateway) as ending:
            with gateway.hub.sole.claim(agent.id) as claim:
                try:
                    await gateway.storage.announce([claim.news])
                except StorageUnavailable:
                    # The other replicas cannot be told: this connection might not be the only
                    # one.
                    log.warning("/v1 WebSocket: cannot announce the claim of agent %s", agent.id)
                    ending.closing(ERROR)
                    await websocket.close(CLOSE_TRY_AGAIN_LATER, "storage unavailable; reconnect")
                    return None
                async with going_away_when_cancelled(), internal_error_when_failing():
                    await _serve(caller, agent, subscription, claim, ending)
    return None


async def _serve(
    caller: Caller, agent: Agent, subscription: Subscription, claim: Claim, ending: SocketEnding
) -> None:
    """Push events until the client leaves, a newer connection replaces this one, or the hub
    ends the subscription (then close, saying why)."""
    async with trio.open_nursery() as nursery:

        async def on_replaced() -> None:
            await claim.replaced.wait()
            ending.closing(REPLACED)
            await websocket.close(CLOSE_REPLACED, "replaced")
            nursery.cancel_scope.cancel()

        async def until_client_leaves() -> None:
            while await next_frame() is not None:
                pass  # the protocol is server to client: frames ignored
            nursery.cancel_scope.cancel()

        async def push() -> None:
            subscription.drained(await _send_unread(caller, agent, subscription))
            await _relay(caller, agent, subscription)
            ended = subscription.ended or Ended.BEHIND
            code = CLOSE_TRY_AGAIN_LATER if ended is Ended.BEHIND else CLOSE_POLICY_VIOLATION
            ending.closing(ended_reason(ended))
            await websocket.close(code, ended.value)
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_replaced)
        nursery.start_soon(until_client_leaves)
        nursery.start_soon(push)


async def _send_unread(caller: Caller, agent: Agent, subscription: Subscription) -> int:
    """Send every unread message, oldest first, page by page (stopping as soon as access is
    revoked meanwhile); the `seq` of the last one sent (0: none)."""
    gateway = current_gateway()
    sent = 0
    after: int | None = None
    while not subscription.revoked:
        page = await messages.unread_page(gateway, caller, agent, DRAIN_PAGE_SIZE, after)
        for message in page.messages:
            if subscription.revoked:
                break
            await push(gateway, received_envelope(message).decode())
            gateway.metrics.delivered("websocket", "sent")
            gateway.metrics.ws_drained.inc()
            sent = message.seq
        if page.next_after is None:
            break
        after = page.next_after
    return sent


async def _relay(caller: Caller, agent: Agent, subscription: Subscription) -> None:
    """Send each message the hub announces (the subscription skips those the drain sent)."""
    gateway = current_gateway()
    async for frame in subscription:
        message = await messages.announced(gateway, caller, agent, frame["message_id"])
        if message is None or subscription.sent_by_drain(message.seq):
            continue  # trashed or deleted meanwhile, or a late notice of mail the drain sent
        await push(gateway, received_envelope(message).decode())
        gateway.metrics.delivered("websocket", "sent")
