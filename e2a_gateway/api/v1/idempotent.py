"""`Idempotency-Key` on the writes e2a lists (sendMessage, replyToMessage, forwardMessage,
approveReview, createWebhook, rotateWebhookSecret, createApiKey; deleteDomain too, where
the e2a 5.8 SDKs send one), and on `/api/v1`'s send,
reply and approve (the e2a 2.x SDKs send a key on each; `send_email`, e2a's first MCP tool,
sends through the first): a retry with the same key and the same
request — its method, path and raw body, byte for byte — gets the first answer again instead of
writing twice (operations.idempotency keeps it at least 24 hours). A send's key is settled with
its message, so a retry after a crash between the two answers that message
(`idempotent_making`)."""

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
Decorated = Callable[Concatenate[Caller, P], Awaitable[Response]]
Resume = Callable[[Caller, str], Awaitable[ResponseReturnValue]]
"""The answer for what (its id) a write's first request made and never answered."""


def idempotent(handler: Handler[P]) -> Decorated[P]:
    """Decorate a write (below `requires_caller`) so it honours an Idempotency-Key."""
    return _honouring_key(handler, None)


def idempotent_making(resume: Resume) -> Callable[[Handler[P]], Decorated[P]]:
    """Decorate a write that makes one thing, a message, a webhook, an approval or a rotation
    (below `requires_caller`), so it honours an Idempotency-Key settled with what it makes: a
    retry after the first request made it and died before its answer was kept gets
    `resume`'s answer for it, never a second."""
    return lambda handler: _honouring_key(handler, resume)


def _honouring_key(handler: Handler[P], resume: Resume | None) -> Decorated[P]:
    """`handler` run once per Idempotency-Key (operations.idempotency.run_once)."""

    async def wrapper(caller: Caller, /, *args: P.args, **kwargs: P.kwargs) -> Response:
        key = request.headers.get(HEADER) or None
        raw = await request.get_data(as_text=False)
        assert isinstance(raw, bytes)
        fingerprint = f"{request.method} {request.path}\n".encode() + raw

        async def write() -> Answer:
            return await _answer(await handler(caller, *args, **kwargs))

        async def resumed(made_id: str) -> Answer:
            assert resume is not None
            return await _answer(await resume(caller, made_id))

        answer = await run_once(
            current_gateway(),
            caller,
            key,
            fingerprint,
            write,
            resume=resumed if resume is not None else None,
        )
        return Response(answer.body, status=answer.status, content_type="application/json")

    update_wrapper(wrapper, handler)
    return wrapper


async def _answer(value: ResponseReturnValue) -> Answer:
    """What a handler returned, rendered: its status and body bytes."""
    response = await current_app.make_response(value)
    assert isinstance(response, Response)
    body = await response.get_data(as_text=False)
    assert isinstance(body, bytes)
    return Answer(response.status_code, body)
