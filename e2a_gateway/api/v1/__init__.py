"""e2a's current API, `/v1` (the official SDK 3.0 and later): one more face over the
operations, beside `/api/v1` (the 2.x contract, unchanged).

Its conventions are e2a's (docs/api.md, "/v1"): the error envelope with a request id on every
answer (`errors`), strict request bodies (`bodies`), cursor pages (`pages`), Idempotency-Key on
the writes e2a lists (`idempotent`), Bearer keys of account or agent scope (`auth`). Each
resource is a blueprint under the `/v1` blueprint, which renders every refusal its routes
raise; `register_v1` also answers requests for `/v1` paths that match no route.
"""

from __future__ import annotations

import logging

from quart import Blueprint, Response, request
from quart.typing import ResponseTypes
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from e2a_gateway.api.v1 import (
    account,
    agents,
    conversations,
    domains,
    events,
    messages,
    meta,
    protection,
    reviews,
    socket,
    suppressions,
    templates,
    webhooks,
)
from e2a_gateway.api.v1.errors import (
    V1Error,
    error_answer,
    http_refusal,
    refusal,
)
from e2a_gateway.api.v1.rate_headers import stamp_rate_headers
from e2a_gateway.operations.errors import OperationError
from e2a_gateway.request_ids import HEADER as REQUEST_ID_HEADER
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import current_path, current_request_id, on_handshake_refusals

log = logging.getLogger("e2a.api.v1")

PREFIX = "/v1"
RESOURCES = (
    meta,
    account,
    agents,
    domains,
    messages,
    conversations,
    protection,
    reviews,
    socket,
    events,
    webhooks,
    suppressions,
    templates,
)
"""The modules whose blueprints make up `/v1`."""

blueprint = Blueprint("v1", __name__, url_prefix=PREFIX)
for _resource in RESOURCES:
    blueprint.register_blueprint(_resource.blueprint)


def under_v1(path: str) -> bool:
    """Whether `path` is one of `/v1`'s (`/v1` itself or below, not `/v1x`)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def register_v1(app: QuartTrio) -> None:
    """Add `/v1` to `app`: its routes, its answers to paths without a route, the request id
    on every one of its answers, and e2a's `RateLimit-*` headers on those of the operations
    it limits."""
    app.url_map.converters.update(conversations.CONVERTERS)
    app.register_blueprint(blueprint)
    app.before_request(_refuse_unrouted)
    app.after_request(_stamp_request_id)
    app.after_websocket(on_handshake_refusals(_stamp_request_id))
    app.after_request(stamp_rate_headers)


@blueprint.errorhandler(V1Error)
async def _on_v1_error(error: V1Error) -> Response:
    return error_answer(error)


@blueprint.errorhandler(OperationError)
async def _on_refused(error: OperationError) -> Response:
    return error_answer(refusal(error))


@blueprint.errorhandler(HTTPException)
async def _on_http_exception(exc: HTTPException) -> Response:
    return error_answer(http_refusal(exc))


@blueprint.errorhandler(StorageUnavailable)
async def _on_storage_unavailable(exc: StorageUnavailable) -> Response:
    request_id = current_request_id()
    log.error(
        "storage unavailable (request %s): %s", request_id, exc, extra={"request_id": request_id}
    )
    message = "the database is not answering; try again shortly"
    return error_answer(V1Error(503, "internal_error", message, None, {"Retry-After": "5"}))


@blueprint.errorhandler(Exception)
async def _on_unexpected(exc: Exception) -> Response:
    request_id = current_request_id()
    log.exception(
        "unhandled error in a /v1 request handler (request %s)",
        request_id,
        extra={"request_id": request_id},
    )
    message = "internal error; the gateway log has details"
    return error_answer(V1Error(500, "internal_error", message))


async def _refuse_unrouted() -> Response | None:
    """A `/v1` request that matches no route (or not with its method) gets e2a's envelope; no
    route of ours ever ran for it."""
    if not under_v1(request.path) or request.routing_exception is None:
        return None
    if isinstance(request.routing_exception, HTTPException):
        return error_answer(http_refusal(request.routing_exception))
    return None


async def _stamp_request_id(response: ResponseTypes) -> ResponseTypes:
    """Every `/v1` answer names its request id; a WebSocket handshake's refusal too."""
    if under_v1(current_path()):
        response.headers[REQUEST_ID_HEADER] = current_request_id()
    return response
