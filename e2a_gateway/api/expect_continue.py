"""`Expect: 100-continue` in the Quart app: the body of such a request is received only once a
handler reads it, so `100 Continue` (sent by the HTTP server on that first read) comes after
the checks before it — API key, rate limit, declared size. Quart-Trio would receive it at once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import trio
from quart.wrappers import Request
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.datastructures import Headers

from e2a_gateway.web.forms import BoundedFormParser


def expects_continue(headers: Headers, http_version: str) -> bool:
    """Whether the client waits for `100 Continue` before it sends the body (HTTP/1.1 only,
    as h11 decides)."""
    if http_version not in ("1.1", "2", "3"):
        return False
    tokens = ",".join(headers.getlist("Expect")).lower().split(",")
    return "100-continue" in (token.strip() for token in tokens)


class ContinueBody(TrioBody):
    """A request body that records when a handler first reads it."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.wanted = trio.Event()

    def _want(self) -> None:
        # A body refused for its declared size is never wanted: the answer is 413 without it.
        if self._must_raise is None:
            self.wanted.set()

    def __await__(self) -> Generator[Any, None, Any]:
        self._want()
        return super().__await__()

    async def __anext__(self) -> bytes:
        self._want()
        return await super().__anext__()


class ContinueRequest(TrioRequest):
    """Quart-Trio's request with a `ContinueBody`, whose forms are bounded in fields
    (`e2a_gateway.web.forms`)."""

    body_class = ContinueBody
    form_data_parser_class = BoundedFormParser  # a form's fields are counted first

    @property
    def awaits_continue(self) -> bool:
        """The client is still waiting to be told to send its body: nobody has read it."""
        return (
            isinstance(self.body, ContinueBody)
            and expects_continue(self.headers, self.http_version)
            and not self.body.wanted.is_set()
        )


class ContinueHTTPConnection(TrioASGIHTTPConnection):
    """Quart-Trio's HTTP connection, receiving the body of an `Expect: 100-continue` request
    only once it is wanted (the handler may answer without it, and the client never sends it)."""

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: Any
    ) -> None:
        if isinstance(request, ContinueRequest) and request.awaits_continue:
            assert isinstance(request.body, ContinueBody)
            await request.body.wanted.wait()
        await super().handle_messages(nursery, request, receive)
