"""JSON documents too large to hold, sent as they are read: a document's members are written
one by one, and a member read a page at a time (an async generator of lists) as one array.

The answer is started only once its first bytes are ready, so a failure before them (the
database down, a refusal) is the usual JSON error; one after them cuts the body short (the
client is left with no complete document) and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from typing import Any

from quart import Response

log = logging.getLogger("e2a.http")

STREAM_SECONDS = 900.0
"""How long a streamed answer may take to send, in place of the app's `RESPONSE_TIMEOUT`
(60 s, which bounds every other answer): a large export to a slow client, or on slow
hardware, takes longer, and is cut once this passes (it holds a database snapshot meanwhile)."""

Dumps = Callable[[Any], str]
"""Writes one JSON value (the app's JSON provider's `dumps`)."""


async def json_document(
    members: AsyncGenerator[tuple[str, Any], None], dumps: Dumps
) -> AsyncGenerator[bytes, None]:
    """The object of `members` (name, value) as UTF-8 chunks: a value that is an async
    generator of lists (pages) is written as one array of their items, page by page. Closing
    the chunks closes `members` and the pages being read."""
    separator = "{"
    async with aclosing(members):
        async for name, value in members:
            yield f"{separator}{dumps(name)}:".encode()
            separator = ","
            if isinstance(value, AsyncGenerator):
                async with aclosing(value):
                    opening = "["
                    async for page in value:
                        if page:
                            yield (opening + ",".join(dumps(item) for item in page)).encode()
                            opening = ","
                yield b"[]" if opening == "[" else b"]"
            else:
                yield dumps(value).encode()
    yield b"{}" if separator == "{" else b"}"


async def streamed_response(
    chunks: AsyncGenerator[bytes, None], headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A 200 `application/json` answer of `chunks`, sent as they come (chunked), within
    STREAM_SECONDS. Its first chunk is read here: what fails before it raises, as any view's
    failure does."""
    first = await chunks.__anext__()
    response = Response(_Body(first, chunks), status=200, content_type="application/json")
    response.timeout = STREAM_SECONDS
    for name, value in headers:
        response.headers[name] = value
    return response


class _Body:
    """The body of a streamed answer: `first`, then the rest of `chunks`; closing it closes
    `chunks` (the server does, however the answer ends: a client gone, a timeout), and a
    failure after the first chunk is logged before it cuts the body short."""

    def __init__(self, first: bytes, chunks: AsyncGenerator[bytes, None]) -> None:
        self._first: bytes | None = first
        self._chunks = chunks
        self._sent = 0

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            chunk, self._first = self._first, None
        else:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                raise
            except Exception as exc:
                log.error("a streamed answer was cut short after %d bytes: %s", self._sent, exc)
                raise
        self._sent += len(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the chunks' source (their snapshot, their connection)."""
        await self._chunks.aclose()
