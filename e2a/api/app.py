"""The Quart-Trio application: every HTTP route of the gateway and its JSON error handling."""

from __future__ import annotations

import logging

from hypercorn.typing import ASGIFramework
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from e2a.api import (
    account,
    agents,
    approvals,
    domains,
    messages,
    meta,
    observability,
    outbound,
    websocket,
)
from e2a.api.body_limit import BodyLimit
from e2a.api.errors import error_response, http_exception_response
from e2a.api.expect_continue import ContinueHTTPConnection, ContinueRequest
from e2a.api.proxies import TrustedProxies
from e2a.config import HttpSettings
from e2a.dashboard import blueprint as dashboard_blueprint
from e2a.gateway import Gateway
from e2a.operations.errors import OperationError
from e2a.storage.base import StorageUnavailable
from e2a.web.context import bind_gateway
from e2a.web.errors import headers_of, status_of

log = logging.getLogger("e2a.api")


def guard_requests(app: ASGIFramework, settings: HttpSettings) -> ASGIFramework:
    """`app` behind what every HTTP request passes before any route: the client's address
    taken from trusted proxies (`http.trusted_proxies`), and the bound on the body
    (`http.max_request_bytes`)."""
    return TrustedProxies(BodyLimit(app, settings.max_request_bytes), settings.trusted_networks)


def create_app(gateway: Gateway) -> QuartTrio:
    """Build the app serving `gateway`."""
    app = QuartTrio("e2a")
    # No redirects made by the router: it would build their Location from the request's Host
    # header (`//` merged, a slash added). A path that is not a route is a plain 404.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.request_class = ContinueRequest
    app.asgi_http_class = ContinueHTTPConnection
    bind_gateway(app, gateway)
    app.config["MAX_CONTENT_LENGTH"] = gateway.settings.http.max_request_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    app.register_blueprint(meta.blueprint)
    app.register_blueprint(observability.blueprint)
    observability.time_requests(app)
    for module in (agents, domains, messages, account, websocket, outbound, approvals):
        app.register_blueprint(module.blueprint, url_prefix="/api/v1")
    app.register_blueprint(dashboard_blueprint)  # the web UI at /, after the API routes

    @app.after_request
    async def finish_reading_body(response: Response) -> Response:
        """Receive the rest of the request body before answering. Under hypercorn, an answer
        that completes before the body has arrived (a 401, 404 or 405 that never looked at it,
        an automatic OPTIONS) can leave the next request on the keep-alive connection hanging.
        A client waiting for `100 Continue` is not asked for a body nobody read: the
        connection closes after the answer instead."""
        if isinstance(request, ContinueRequest) and request.awaits_continue:
            response.headers["Connection"] = "close"
            return response
        try:
            await request.get_data()  # bounded by MAX_CONTENT_LENGTH
        except HTTPException:
            response.headers["Connection"] = "close"  # too large to read: do not reuse
        return response

    @app.errorhandler(OperationError)
    async def on_refused(exc: OperationError) -> Response:
        return error_response(status_of(exc), exc.code, exc.message, headers_of(exc))

    @app.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        return http_exception_response(exc)

    @app.errorhandler(StorageUnavailable)
    async def on_storage_unavailable(exc: StorageUnavailable) -> Response:
        log.error("storage unavailable: %s", exc)
        return error_response(
            503,
            "storage_unavailable",
            "the database is not answering; try again shortly",
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in request handler")
        return error_response(500, "internal_error", "internal error; the gateway log has details")

    return app
