"""The gateway's HTTP app: the faces' routes (REST `/api/v1` and `/v1`, the public pages of
managed-unsubscribe links at `/u/`, the dashboard at `/`) in
one Quart-Trio app bound to the gateway, and the guards every HTTP request passes first.

This is the one place that knows every Quart face; the faces know operations and `e2a_gateway.web`,
never each other. MCP (`/mcp`) is mounted in front of this app by `e2a_gateway.app`.
"""

from __future__ import annotations

from hypercorn.typing import ASGIFramework
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from e2a_gateway import unsubscribe_links
from e2a_gateway.api.body_limit import BodyLimit
from e2a_gateway.api.content_coding import IdentityBodiesOnly
from e2a_gateway.api.expect_continue import ContinueHTTPConnection, ContinueRequest
from e2a_gateway.api.proxies import TrustedProxies
from e2a_gateway.api.routes import register_api
from e2a_gateway.api.v1 import register_v1
from e2a_gateway.config import HttpSettings
from e2a_gateway.dashboard import blueprint as dashboard_blueprint
from e2a_gateway.gateway import Gateway
from e2a_gateway.web.context import bind_gateway
from e2a_gateway.web.json_provider import OrjsonProvider
from e2a_gateway.web.request_text import refuse_nul
from e2a_gateway.web.routing import DeferredBuildRule
from e2a_gateway.web.socket_reading import ReadToTheEndConnection


def guard_requests(app: ASGIFramework, settings: HttpSettings) -> ASGIFramework:
    """`app` behind what every HTTP request passes before any route: the client's address
    taken from trusted proxies (`http.trusted_proxies`), no body with a content coding, and
    the bound on the body (`http.max_request_bytes`) and on the time it takes to arrive
    (`http.request_body_seconds`)."""
    bounded = BodyLimit(app, settings.max_request_bytes, settings.request_body_seconds)
    return TrustedProxies(IdentityBodiesOnly(bounded), settings.trusted_networks)


def _announces_body(headers: Headers) -> bool:
    """Whether an HTTP/1 request's headers say a body follows (RFC 9112 §6.3)."""
    return "Transfer-Encoding" in headers or headers.get("Content-Length", "0") != "0"


def create_app(gateway: Gateway) -> QuartTrio:
    """Build the app serving `gateway`."""
    app = QuartTrio("e2a")
    app.url_rule_class = DeferredBuildRule  # before any route is added
    # No redirects made by the router: it would build their Location from the request's Host
    # header (`//` merged, a slash added). A path that is not a route is a plain 404.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.json = OrjsonProvider(app)
    app.request_class = ContinueRequest
    app.asgi_http_class = ContinueHTTPConnection
    app.asgi_websocket_class = ReadToTheEndConnection  # a client's last acks count
    bind_gateway(app, gateway)
    app.config["MAX_CONTENT_LENGTH"] = gateway.settings.http.max_request_bytes
    app.config["BODY_TIMEOUT"] = gateway.settings.http.request_body_seconds  # BodyLimit's
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    register_api(app)
    register_v1(app)  # e2a's current API at /v1, beside /api/v1
    app.register_blueprint(unsubscribe_links.blueprint)  # public /u/{token}, no key nor session
    app.register_blueprint(dashboard_blueprint)  # the web UI at /, after the API routes
    app.before_request(refuse_nul)

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
        if request.http_version in ("1.0", "1.1") and not _announces_body(request.headers):
            return response  # HTTP/1 without Content-Length or Transfer-Encoding: no body
        try:
            await request.get_data()  # bounded by MAX_CONTENT_LENGTH
        except HTTPException:
            response.headers["Connection"] = "close"  # too large to read: do not reuse
        return response

    return app
