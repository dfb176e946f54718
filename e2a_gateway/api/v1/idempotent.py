"""`Idempotency-Key` on the writes e2a lists (sendMessage, replyToMessage, forwardMessage,
approveReview, createWebhook, rotateWebhookSecret, createApiKey), and on `/api/v1/send` (what
e2a's first MCP tool, `send_email`, sends through): a retry with the same key and the same
request — its method, path and raw body, byte for byte — gets the first answer again instead of
writing twice (operations.idempotency keeps it at least 24 hours)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import update_wrapper
from typing import Concatenate, ParamSpec

from quart import Response, current_app, request
from quart.typing import ResponseReturnValue

from e2a_gateway.operations.caller import Caller
from e2a_gateway.operations.idempotency import Answer, run_once
from e2a_gateway.web.context import current_gateway

HEADER = "Idempotency-Key"
P = ParamSpec("P")
Handler = Callable[Concatenate[Caller, P], Awaitable[ResponseReturnValue]]


def idempotent(handler: Handler[P]) -> Callable[Concatenate[Caller, P], Awaitable[Response]]:
    """Decorate a write (below `requires_caller`) so it honours an Idempotency-Key."""

    async def wrapper(caller: Caller, /, *args: P.args, **kwargs: P.kwargs) -> Response:
        key = request.headers.get(HEADER) or None
        raw = await request.get_data(as_text=False)
        assert isinstance(raw, bytes)
        fingerprint = f"{request.method} {request.path}\n".encode() + raw

        async def write() -> Answer:
            response = await current_app.make_response(await handler(caller, *args, **kwargs))
            assert isinstance(response, Response)
            body = await response.get_data(as_text=False)
            assert isinstance(body, bytes)
            return Answer(response.status_code, body)

        answer = await run_once(current_gateway(), caller, key, fingerprint, write)
        return Response(answer.body, status=answer.status, content_type="application/json")

    update_wrapper(wrapper, handler)
    return wrapper
