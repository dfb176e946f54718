"""`/mcp` on the gateway's HTTP port: the MCP streamable-HTTP transport behind an API key.

Before the MCP library sees a request, the endpoint refuses a foreign `Origin` (403), a missing
or bad key (401, checked by the caller's own operation), a JSON-RPC batch and JSON that is not
a JSON-RPC message (400), each with a JSON-RPC error an MCP client shows. Like e2a's `/mcp`,
the endpoint is stateless: no session, each request stands alone (a `tools/call` needs no
`initialize` before it), its key checked again by every tool; GET and DELETE answer 405.
Tools call the gateway's operations in-process (`in_process.OperationsPort`) for the key's
owner, the very operations the REST API runs, so ownership is decided where it is for every
other client.

The MCP library is loaded on the first authenticated request, not at start: it is the largest
part of the gateway's imports (about 25 MB and 40% of start-up), and many deployments never
use `/mcp`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pydantic_core
from werkzeug.datastructures import Headers

from e2a_gateway.gateway import Gateway
from e2a_gateway.http_refusals import asgi_header
from e2a_gateway.mcp.envelope import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    invalid_request,
    not_unicode,
)
from e2a_gateway.operations.caller import authenticate
from e2a_gateway.operations.errors import Unauthorized
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import bearer_key
from e2a_gateway.web.errors import status_of
from e2a_gateway.web.json_bodies import NotAJsonObject, within_item_bound

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus
    from mcp.server import ServerRequestContext
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.types import Message, Receive, Scope, Send

    from e2a_gateway.mcp.toolkit import ToolCaller

log = logging.getLogger("e2a.mcp")

MOUNT_PATH = "/mcp"
AGENT_HEADER = "X-E2A-Agent-Email"
"""Optional request header naming the default agent (the remote twin of E2A_AGENT_EMAIL)."""

_MCP_MODULES = (
    "mcp.server.auth.middleware.bearer_auth",
    "mcp.server.auth.provider",
    "mcp.server.streamable_http_manager",
    "e2a_gateway.mcp.server",
    "e2a_gateway.mcp.in_process",
)
"""What the first MCP request loads (in a thread)."""

SERVER_ERROR = -32000
"""JSON-RPC's implementation-defined server error: what the endpoint's refusals carry."""
BATCHES_REFUSED = "JSON-RPC batches are not supported: send one message per request"
"""Why a JSON array (a batch) is refused: the streamable-HTTP transport takes one message."""


def _api_key(ctx: ServerRequestContext[Any, Any]) -> tuple[str, str, str | None]:
    """The caller's API key, default agent and address (trusted proxies already applied), as
    `McpEndpoint` left them on the request."""
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from starlette.requests import Request

    request = ctx.request
    if not isinstance(request, Request) or not isinstance(
        request.scope.get("user"), AuthenticatedUser
    ):
        raise RuntimeError("an MCP request reached the tools without passing authentication")
    user: AuthenticatedUser = request.scope["user"]
    address = request.client.host if request.client else None
    return user.access_token.token, request.headers.get(AGENT_HEADER, "").strip(), address


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    rpc_code: int = SERVER_ERROR,
    request_id: str | int | None = None,
) -> None:
    """Answer with a JSON-RPC error, without an id unless `request_id` is given (what the
    streamable-HTTP spec allows on an HTTP error, and what MCP clients show), e2a's error code
    in its `data`."""
    error = {"code": rpc_code, "message": message, "data": {"code": code}}
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [
        (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _bearer_challenge(error: Unauthorized, sent: bool) -> str:
    """`WWW-Authenticate` for a refused key (RFC 6750 section 3): the realm, and for a key that
    was sent, why it was refused. No `resource_metadata`: e2a keys are not OAuth tokens, and
    an MCP client that finds one starts an OAuth flow the gateway does not offer."""
    if not sent:
        return 'Bearer realm="e2a"'
    description = error.message.replace('"', "'").replace("\\", "/")
    if not description.isascii():
        return 'Bearer realm="e2a", error="invalid_token"'
    return f'Bearer realm="e2a", error="invalid_token", error_description="{description}"'


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client left first. A body past
    `http.max_request_bytes` reads as the client leaving: `BodyLimit`, in front, then answers
    its 413 itself."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _not_a_message(body: bytes) -> tuple[int, str, str | int | None] | None:
    """Why `body` holds no JSON-RPC message the endpoint takes, as the JSON-RPC error code,
    message and the id to answer under; None when it holds one, or is not JSON at all (the
    MCP library answers that with its parse error)."""
    try:
        message = pydantic_core.from_json(body)
    except ValueError:
        unreadable = not_unicode(body)
        return None if unreadable is None else (INVALID_PARAMS, unreadable[1], unreadable[0])
    reason = BATCHES_REFUSED if isinstance(message, list) else invalid_request(message)
    return None if reason is None else (INVALID_REQUEST, reason, None)


RequestKey = tuple[str, str | int]
"""A request in flight on `/mcp`: the API key it came with and its JSON-RPC id."""


def _cancelled_request(key: str, body: bytes) -> RequestKey | None:
    """The request `body` cancels, when it is MCP's `notifications/cancelled`."""
    try:
        message = pydantic_core.from_json(body)
    except ValueError:  # not JSON: the MCP library answers its parse error
        return None
    if not isinstance(message, dict) or message.get("method") != "notifications/cancelled":
        return None
    params = message.get("params")
    if not isinstance(params, dict):
        return None
    request_id = params.get("requestId")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        return None
    return key, request_id


class InFlight:
    """The requests `/mcp` is answering, so a client's `notifications/cancelled` stops the one
    it names. Stateless, the endpoint has no session to route that notification through: it
    comes on a POST of its own, and the MCP library would only acknowledge it while the
    cancelled call (a `wait_for_email`) ran on, took the mail that arrived and answered no
    one. A request is named by its key and id, so one client cannot cancel another's call;
    two calls in flight under one key and id (two clients of a key numbering alike) are both
    left running, as it cannot be told which was meant."""

    def __init__(self) -> None:
        self._running: dict[RequestKey, list[anyio.CancelScope]] = {}

    @contextmanager
    def answering(self, request: RequestKey) -> Iterator[anyio.CancelScope]:
        """A cancel scope around answering `request`, cancelled by `cancel(request)`."""
        scope = anyio.CancelScope()
        scopes = self._running.setdefault(request, [])
        scopes.append(scope)
        try:
            with scope:
                yield scope
        finally:
            scopes.remove(scope)
            if not scopes:
                del self._running[request]

    def cancel(self, request: RequestKey) -> None:
        """Stop answering `request`, when it is in flight alone under its key and id."""
        scopes = self._running.get(request, [])
        if len(scopes) == 1:
            scopes[0].cancel()


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` that first hands out `body`, already received whole."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class McpEndpoint:
    """The ASGI app mounted at `/mcp`: origin, Bearer API key, then the MCP session manager."""

    def __init__(self, gateway: Gateway) -> None:
        http = gateway.settings.http
        self._allowed_origins = frozenset([http.public_origin, *http.cors_allowed_origins])
        self._gateway = gateway
        self._sessions: StreamableHTTPSessionManager | None = None
        self._tasks: TaskGroup | None = None
        self._starting = anyio.Lock()
        self._in_flight = InFlight()

    @asynccontextmanager
    async def _open_caller(self, ctx: ServerRequestContext[Any, Any]) -> AsyncIterator[ToolCaller]:
        from mcp.shared.exceptions import MCPError

        from e2a_gateway.mcp.in_process import OperationsPort
        from e2a_gateway.mcp.toolkit import ToolCaller

        api_key, default_agent, address = _api_key(ctx)
        if ctx.request_id is None:
            yield ToolCaller(OperationsPort(self._gateway, api_key, address), default_agent)
            return
        with self._in_flight.answering((api_key, ctx.request_id)) as answering:
            yield ToolCaller(OperationsPort(self._gateway, api_key, address), default_agent)
        if answering.cancelled_caught:
            # The client no longer waits for an answer; this one is for the log's sake.
            raise MCPError(SERVER_ERROR, "the client cancelled this request")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve until the block ends; the MCP library's request manager (each request a task)
        runs in here from the first request on, and stops with the block."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()

    async def _session_manager(self) -> StreamableHTTPSessionManager:
        """The session manager, started on first use inside `running()`."""
        async with self._starting:
            if self._sessions is None:
                if self._tasks is None:
                    raise RuntimeError("McpEndpoint used outside its running() block")
                # Importing the MCP library is CPU work: keep it off the event loop.
                await anyio.to_thread.run_sync(_import_mcp)
                self._sessions = await self._tasks.start(self._run_sessions)
            return self._sessions

    async def _run_sessions(self, *, task_status: TaskStatus[StreamableHTTPSessionManager]) -> None:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        from e2a_gateway.mcp.server import build_server

        # Stateless, as e2a's /mcp is (http-server.ts): every request is answered on its own,
        # nothing the tools do needs a session (no server-to-client requests). The body bound
        # is the gateway's (`BodyLimit`, in front, answers past it), not the library's 4 MiB.
        sessions = StreamableHTTPSessionManager(
            app=build_server(self._open_caller),
            stateless=True,
            max_request_body_size=self._gateway.settings.http.max_request_bytes,
        )
        async with sessions.run():
            task_status.started(sessions)
            await anyio.sleep_forever()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"].rstrip("/") != MOUNT_PATH:
            await _send_error(send, 404, "not_found", f"no such endpoint; MCP is at {MOUNT_PATH}")
            return
        origin = asgi_header(scope["headers"], b"origin")
        if origin is not None and origin not in self._allowed_origins:
            # The streamable-HTTP spec's defence against DNS rebinding: a page on another
            # origin (a rebound name included) must not reach the endpoint.
            await _send_error(
                send,
                403,
                "forbidden_origin",
                f"origin {origin} may not use {MOUNT_PATH}: add it to http.cors_allowed_origins",
            )
            return
        if scope["method"] in ("GET", "DELETE"):
            # Stateless, as e2a's /mcp: no stream to open (GET), no session to end (DELETE).
            await _send_error(
                send,
                405,
                "method_not_allowed",
                "Method not allowed: the e2a MCP server is stateless",
                {"Allow": "POST"},
            )
            return
        user = await self._authenticate(scope, send)
        if user is None:
            return
        key, user_id = user
        if scope["method"] == "POST":
            # The library would take a request whose id is not a string or an integer for a
            # notification (202, the call never made) and refuse other envelopes with its
            # validator's report: the whole body is read and checked here first.
            body = await _read_body(receive)
            if body is None:
                return
            try:
                within_item_bound(body, max_depth=None)  # the library refuses deep nesting
            except NotAJsonObject as exc:
                await _send_error(send, 400, "invalid_json", str(exc), rpc_code=PARSE_ERROR)
                return
            refused = _not_a_message(body)
            if refused is not None:
                rpc_code, why, request_id = refused
                await _send_error(
                    send, 400, "invalid_request", why, rpc_code=rpc_code, request_id=request_id
                )
                return
            receive = _replaying(body, receive)
            cancelled = _cancelled_request(key, body)
            if cancelled is not None:
                self._in_flight.cancel(cancelled)
        sessions = await self._session_manager()
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        # The tools read the key from the request's principal (a session is never opened).
        token = AccessToken(token=key, client_id=user_id, scopes=[])
        await sessions.handle_request({**scope, "user": AuthenticatedUser(token)}, receive, send)

    async def _authenticate(self, scope: Scope, send: Send) -> tuple[str, str] | None:
        """The request's API key and its owner's id, or None once refused (401, or 503 when
        the database does not answer)."""
        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
        key = None
        try:
            key = bearer_key(headers)
            caller = await authenticate(self._gateway, key)
        except Unauthorized as refused:
            sent = key is not None or len(headers.getlist("Authorization")) > 1
            challenge = {"WWW-Authenticate": _bearer_challenge(refused, sent)}
            await _send_error(send, status_of(refused), refused.code, refused.message, challenge)
            return None
        except StorageUnavailable as exc:
            log.error("storage unavailable: %s", exc)
            await _send_error(
                send,
                503,
                "storage_unavailable",
                "the database is not answering; try again shortly",
                {"Retry-After": "5"},
            )
            return None
        assert key is not None
        return key, caller.user_id


def _import_mcp() -> None:
    """Load the MCP library and e2a's tools on it (cached in sys.modules afterwards)."""
    for name in _MCP_MODULES:
        importlib.import_module(name)
