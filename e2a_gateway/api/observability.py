"""`GET /metrics` in Prometheus text format (when `metrics.enabled`) and the request timing
behind its HTTP latency histograms.

Requests are labelled by their route template (`/api/v1/agents/<email>`), never by the raw
path, so addresses and ids do not become label values.
"""

from __future__ import annotations

import time

from quart import Blueprint, Response, g, request
from quart_trio import QuartTrio

from e2a_gateway.api.operator_tokens import token_refusal
from e2a_gateway.metrics import CONTENT_TYPE, UNMATCHED_ROUTE, QueueReading
from e2a_gateway.operations.errors import NotFound
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("observability", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    """GET /metrics: every counter, histogram and gauge (with `metrics.token` set, only for a
    request bearing it); the queues' depth and lag are read
    from storage now, and storage is up when it passes the health check's `ping` (a full disk
    answers reads, so the queues are shown, but it is down)."""
    gateway = current_gateway()
    settings = gateway.settings.metrics
    if not settings.enabled:
        raise NotFound("not_found", "metrics are off; set metrics.enabled = true to serve /metrics")
    if settings.token:
        refusal = token_refusal(settings.token, "GET /metrics", "metrics.token")
        if refusal is not None:
            return refusal
    now = time.time()
    queues: QueueReading | None
    try:
        queues = QueueReading(now, await gateway.storage.job_queue_states(now))
    except StorageUnavailable:
        queues = None
    up = queues is not None
    if up:
        try:
            await gateway.storage.ping()
        except StorageUnavailable:
            up = False
    return Response(gateway.metrics.render(queues, storage_up=up), content_type=CONTENT_TYPE)


def time_requests(app: QuartTrio) -> None:
    """Record every HTTP request's latency and status in the gateway's metrics."""

    @app.before_request
    async def start_clock() -> None:
        g.e2a_started = time.perf_counter()

    @app.after_request
    async def stop_clock(response: Response) -> Response:
        started = g.get("e2a_started")
        if started is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else UNMATCHED_ROUTE
            current_gateway().metrics.request_served(
                request.method, route, response.status_code, time.perf_counter() - started
            )
        return response
