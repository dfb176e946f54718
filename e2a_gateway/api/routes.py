"""The REST face in one piece: every blueprint of `/api/v1` (with health, info, metrics and the
self-test), the request id (`X-Request-Id`) on each of its answers, and the JSON errors
`{"error": {"code", "message"}}` for every answer no other face renders itself (a refused
operation, an unknown route, storage down, a bug; the log line about it names the request id)."""

from __future__ import annotations

import logging

from quart import Response
from quart.typing import ResponseTypes
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from e2a_gateway.api import (
    account,
    agents,
    approvals,
    dead_letters,
    domains,
    feedback,
    messages,
    meta,
    observability,
    outbound,
    selftest,
    websocket,
)
from e2a_gateway.api.errors import error_response, http_exception_response
from e2a_gateway.operations.errors import OperationError
from e2a_gateway.request_ids import HEADER as REQUEST_ID_HEADER
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import current_path, current_request_id, on_handshake_refusals
from e2a_gateway.web.errors import headers_of, status_of

log = logging.getLogger("e2a.api")

API_PREFIX = "/api/v1"


def register_api(app: QuartTrio) -> None:
    """Add the REST routes to `app`, and make JSON its errors' default shape."""
    app.register_blueprint(meta.blueprint)
    app.register_blueprint(feedback.blueprint)
    app.register_blueprint(observability.blueprint)
    app.register_blueprint(selftest.blueprint)
    observability.time_requests(app)
    for module in (
        agents,
        domains,
        messages,
        dead_letters,
        account,
        websocket,
        outbound,
        approvals,
    ):
        app.register_blueprint(module.blueprint, url_prefix=API_PREFIX)

    async def stamp_request_id(response: ResponseTypes) -> ResponseTypes:
        """Every `/api/v1` answer names its request id, as `/v1`'s do; a WebSocket
        handshake's refusal too."""
        path = current_path()
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            response.headers[REQUEST_ID_HEADER] = current_request_id()
        return response

    app.after_request(stamp_request_id)
    app.after_websocket(on_handshake_refusals(stamp_request_id))

    @app.errorhandler(OperationError)
    async def on_refused(exc: OperationError) -> Response:
        return error_response(status_of(exc), exc.code, exc.message, headers_of(exc))

    @app.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        return http_exception_response(exc)

    @app.errorhandler(StorageUnavailable)
    async def on_storage_unavailable(exc: StorageUnavailable) -> Response:
        request_id = current_request_id()
        log.error(
            "storage unavailable (request %s): %s",
            request_id,
            exc,
            extra={"request_id": request_id},
        )
        return error_response(
            503,
            "storage_unavailable",
            "the database is not answering; try again shortly",
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        request_id = current_request_id()
        log.exception(
            "unhandled error in request handler (request %s)",
            request_id,
            extra={"request_id": request_id},
        )
        return error_response(500, "internal_error", "internal error; the gateway log has details")
