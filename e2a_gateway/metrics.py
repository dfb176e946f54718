"""The gateway's Prometheus metrics: counters the SMTP listener, the HTTP app and the workers
move, and gauges read from storage when `/metrics` is scraped.

Each gateway has a registry of its own (not the process-wide default), so several gateways in
one process (tests, replicas) count separately. Labels carry routes, reasons and outcomes —
never addresses, message ids, bodies or keys.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from e2a_gateway.storage.base import JobQueueState, JobState, jobs_per_kind
from e2a_gateway.storage.vocabulary import JOB_KINDS

# No `*_created` series: they double the output and Prometheus does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of `Metrics.render()`: the Prometheus text format, version 0.0.4, which
`generate_latest` writes. Not prometheus_client's `CONTENT_TYPE_LATEST`, which names whatever
version the installed library thinks newest (1.0.0 in recent releases, which tells a scraper
to expect UTF-8 metric names and escaping this output never uses)."""

SMTP_REJECTION_REASONS = (
    "unknown_user",
    "relay_denied",
    "recipient_check_failed",
    "not_stored",
    "message_refused",
    "memory_limit",
    "connection_limit",
)
"""Why the SMTP listener refused mail: a recipient that is not an agent (550 5.1.1), a domain
this gateway does not serve (550 5.7.1), a recipient check that failed (451), a message that
could not be committed (451), a message read to its end and refused for what it holds (552
too big, 550 5.6.11 bare line endings, 500 5.5.2 a line too long, a header limit), a message
the memory for messages being received had no room for (452 4.3.1,
`smtp.max_message_memory_bytes`), a connection over `smtp.max_sessions[_per_ip]` (421)."""

SMTP_PROXY_HEADER_OUTCOMES = ("read", "none", "malformed", "cut_short", "timeout", "over_limit")
"""What became of the PROXY header of a connection from `smtp.proxy_trusted_cidrs`: read, none
sent (SMTP first, or silence), malformed, cut short by the connection's end or by the clock,
or not read at all (a flood: `smtp.max_sessions` connections were waiting for theirs)."""

HTTP_CONNECTION_LIMITS = ("max_connections", "max_connections_per_ip")
"""The limits an HTTP connection is closed unserved for: `http.max_connections` (the whole
listener) and `http.max_connections_per_ip` (one client network)."""

DELIVERY_OUTCOMES = {
    "webhook": ("delivered", "retrying", "failed"),
    "websocket": ("sent", "acked"),
}
"""Delivery outcomes per channel: a webhook attempt ends delivered, retrying or failed; a
WebSocket frame is sent, and the client may ack it."""

RETENTION_KINDS = (
    "messages",
    "webhook_attempts",
    "idempotency_keys",
    "trashed_messages",
    "feedback",
    "events",
    "trashed_agents",
    "webhook_deliveries",
    "dashboard_signouts",
)
WEBSOCKET_END_REASONS = (
    "client_close",
    "replaced",
    "ping_timeout",
    "behind",
    "revoked",
    "error",
    "shutdown",
)
"""Why an agent's WebSocket ended: the client left, a newer `/v1` connection replaced it
(4000), it left a ping unanswered (1001), it fell too far behind (1013), its key, agent or
account went or its agent became a cloud agent (1008), something failed, or the gateway
stopped (1001). e2a's reasons, and `behind` and `revoked`, which e2a's list has not."""

JOB_STATES: tuple[JobState, ...] = get_args(JobState)
"""The states `e2a_queue_depth` reports for every kind of job, 0 included."""

E2A_SMTP_OUTCOMES = {
    "unknown_user": "rejected_unknown_recipient",
    "relay_denied": "rejected_unverified_domain",
    "recipient_check_failed": "tempfail",
    "not_stored": "tempfail",
    "memory_limit": "tempfail",
}
"""e2a's `e2a_smtp_inbound_total` outcome of each SMTP refusal counted here (a refused
connection has none); `accepted` counts the 250s. A recipient check that failed (451 to RCPT)
is a `tempfail` like a commit that failed, and like a message the memory for messages had no
room for (452 4.3.1): all are the gateway's failures, which e2a's acceptance SLI counts
against it."""

E2A_WEBHOOK_OUTCOMES = {
    "delivered": "delivered",
    "pending": "retryable_failure",
    "failed": "exhausted",
}
"""e2a's `e2a_webhook_attempts_total` outcome of a `/v1` webhook attempt, by what became of its
delivery: delivered, waiting for a retry, or failed for good."""

E2A_OUTBOUND_OUTCOMES = (
    "sent",
    "failed_provider",
    "failed_local_retries",
    "failed_cancelled",
    "failed_invalid",
)
"""e2a's `e2a_outbound_terminal_total` outcomes this gateway reaches (it refuses suppressed
recipients when the message is sent, so never `failed_suppressed`), with `failed_invalid`
for a stored message that cannot be built."""

_ROUTE_PARAMETER = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")

HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTBOUND_SECONDS_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Buckets for an outbound send's wait for a worker and its hand-off to the relay."""
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0)
"""Buckets for a group commit of inbound mail: a few milliseconds for an fsync, up to its
60 s `commit_timeout`."""
COMMIT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Buckets for the SMTP transactions in one group commit (at most 512 messages per batch)."""
E2A_ATTEMPT_OUTCOMES = {
    "sent": "success",
    "retry": "temporary_failure",
    "failed": "permanent_failure",
}
"""e2a's `e2a_outbound_attempts_total` outcome of a hand-off attempt, by what it made of the
message: sent, to be tried again, or failed for good."""
UNMATCHED_ROUTE = "unmatched"
"""The route label of requests that matched no route (404s), so raw paths never become labels."""
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
"""The methods of HTTP (RFC 9110 section 9, RFC 5789) that label requests by name."""
OTHER_METHOD = "OTHER"
"""The method label of every other method a client names, so made-up ones never become
labels (each would be a series kept until the gateway stops)."""


PER_REPLICA = " (per replica)"
"""The end of the HELP of a metric this replica keeps alone (its SMTP acceptor processes
included): with several replicas, sum them."""
SHARED = " (shared: read from the database, the same on every replica)"
"""The end of the HELP of a gauge read from the database at each scrape: every replica reports
the same value, so take one (`max`), not their sum."""


class Metrics:
    """Every metric of one gateway, in its own registry. Also the SMTP listener's observer
    (`e2a_gateway.smtp.server.SmtpObserver`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.smtp_sessions = Counter(
            "e2a_smtp_sessions",
            "SMTP connections served since start" + PER_REPLICA,
            registry=registry,
        )
        self.smtp_sessions_active = Gauge(
            "e2a_smtp_sessions_active",
            "SMTP connections being served now" + PER_REPLICA,
            registry=registry,
        )
        self.smtp_accepted = Counter(
            "e2a_smtp_messages_accepted",
            "Messages committed after DATA (one per SMTP transaction)" + PER_REPLICA,
            registry=registry,
        )
        self.smtp_rejected = Counter(
            "e2a_smtp_rejected",
            "Recipients, messages and connections the SMTP listener refused, by reason"
            + PER_REPLICA,
            ["reason"],
            registry=registry,
        )
        self.smtp_proxy_headers = Counter(
            "e2a_smtp_proxy_headers",
            "Connections from smtp.proxy_trusted_cidrs by what became of their PROXY header "
            "(read, none, malformed, cut_short, timeout, over_limit)" + PER_REPLICA,
            ["outcome"],
            registry=registry,
        )
        self.deliveries = Counter(
            "e2a_deliveries",
            "Delivery results by channel (webhook, webhook_v1, websocket) and outcome"
            + PER_REPLICA,
            ["channel", "outcome"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "e2a_queue_jobs",
            "Jobs waiting or in progress, by kind" + SHARED,
            ["kind"],
            registry=registry,
        )
        self.e2a_queue_depth = Gauge(
            "e2a_queue_depth",
            "Jobs per kind and state: available (due), running (leased), retryable, scheduled "
            "(e2a's name)" + SHARED,
            ["queue", "state"],
            registry=registry,
        )
        self.queue_oldest_age = Gauge(
            "e2a_queue_oldest_age_seconds",
            "Seconds the longest-waiting due job of each kind has waited for a worker, 0 when "
            "none waits (e2a's name)" + SHARED,
            ["queue"],
            registry=registry,
        )
        self.storage_up = Gauge(
            "e2a_storage_up",
            "1 when storage answered and took writes at scrape time (as /api/health says), else 0"
            + PER_REPLICA,
            registry=registry,
        )
        self.retention_deleted = Counter(
            "e2a_retention_deleted",
            "Rows the retention sweep deleted, by kind (messages, webhook_attempts, "
            "idempotency_keys, trashed_messages, feedback, events, trashed_agents, "
            "webhook_deliveries, dashboard_signouts)" + PER_REPLICA,
            ["kind"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "e2a_http_request_duration_seconds",
            "HTTP request latency by method and route template" + PER_REPLICA,
            ["method", "route"],
            buckets=HTTP_LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_responses = Counter(
            "e2a_http_responses",
            "HTTP responses by method, route template and status code" + PER_REPLICA,
            ["method", "route", "status"],
            registry=registry,
        )
        # e2a's own names, so its SLO queries and dashboards read this gateway too.
        self.e2a_http_requests = Counter(
            "e2a_http_requests",
            "HTTP requests by method, e2a route pattern (/legacy outside /v1) and status class"
            + PER_REPLICA,
            ["method", "route", "status_class"],
            registry=registry,
        )
        self.http_connections_refused = Counter(
            "e2a_http_connections_refused",
            "HTTP connections closed unserved for a connection limit, by limit" + PER_REPLICA,
            ["limit"],
            registry=registry,
        )
        self.e2a_smtp_inbound = Counter(
            "e2a_smtp_inbound",
            "SMTP intake decisions, as e2a names them (one per 250 or 451 after DATA, one per "
            "refused RCPT)" + PER_REPLICA,
            ["outcome"],
            registry=registry,
        )
        self.e2a_webhook_attempts = Counter(
            "e2a_webhook_attempts",
            "/v1 webhook delivery attempts by outcome and the endpoint's status class"
            + PER_REPLICA,
            ["outcome", "status_class"],
            registry=registry,
        )
        self.e2a_webhook_attempt_duration = Histogram(
            "e2a_webhook_attempt_duration_seconds",
            "/v1 webhook delivery attempt duration" + PER_REPLICA,
            buckets=HTTP_LATENCY_BUCKETS,
            registry=registry,
        )
        self.e2a_outbound_queue_wait = Histogram(
            "e2a_outbound_queue_wait_seconds",
            "Seconds each outbound attempt waited for a worker after it fell due" + PER_REPLICA,
            buckets=OUTBOUND_SECONDS_BUCKETS,
            registry=registry,
        )
        self.e2a_outbound_attempts = Counter(
            "e2a_outbound_attempts",
            "Outbound hand-off attempts by outcome (success, temporary_failure, permanent_failure)"
            + PER_REPLICA,
            ["outcome"],
            registry=registry,
        )
        self.e2a_outbound_attempt_duration = Histogram(
            "e2a_outbound_attempt_duration_seconds",
            "Outbound hand-off attempt duration (local delivery and the relay)" + PER_REPLICA,
            buckets=OUTBOUND_SECONDS_BUCKETS,
            registry=registry,
        )
        self.e2a_outbound_terminal = Counter(
            "e2a_outbound_terminal",
            "Outbound messages settled for good, once each, by outcome" + PER_REPLICA,
            ["outcome"],
            registry=registry,
        )
        self.relay_connections = Counter(
            "e2a_outbound_relay_connections",
            "Connections opened to the outbound relay (kept ones carry several messages)"
            + PER_REPLICA,
            registry=registry,
        )
        self.inbound_commit_seconds = Histogram(
            "e2a_inbound_commit_seconds",
            "Seconds each group commit of inbound mail took, from taking its batch to knowing "
            "the outcome; the rate of its sum is the share of time the commit was busy"
            + PER_REPLICA,
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.inbound_commit_transactions = Histogram(
            "e2a_inbound_commit_transactions",
            "SMTP transactions (DATAs, from every session and acceptor process) in each group "
            "commit of inbound mail" + PER_REPLICA,
            buckets=COMMIT_BATCH_BUCKETS,
            registry=registry,
        )
        self.inbound_messages_stored = Counter(
            "e2a_inbound_messages_stored",
            "Inbound messages the group commit stored, one per recipient agent" + PER_REPLICA,
            registry=registry,
        )
        self.ws_connections_active = Gauge(
            "e2a_ws_connections_active",
            "Agents' WebSocket connections open now (/api/v1 and /v1)" + PER_REPLICA,
            registry=registry,
        )
        self.ws_connects = Counter(
            "e2a_ws_connects",
            "Agents' WebSocket connections accepted" + PER_REPLICA,
            registry=registry,
        )
        self.ws_disconnects = Counter(
            "e2a_ws_disconnects",
            "Agents' WebSocket connections ended, by reason" + PER_REPLICA,
            ["reason"],
            registry=registry,
        )
        self.ws_drained = Counter(
            "e2a_ws_drained_messages",
            "Unread messages pushed to a WebSocket as it connected" + PER_REPLICA,
            registry=registry,
        )
        self.ws_send_failures = Counter(
            "e2a_ws_send_failures",
            "Pushes to an open WebSocket that failed" + PER_REPLICA,
            registry=registry,
        )
        self.tls_certificate_expiry = Gauge(
            "e2a_tls_certificate_expiry_timestamp_seconds",
            "When the certificate a listener offers expires (its notAfter), as Unix time, by "
            "listener (smtp: STARTTLS, smtp.tls_cert); no series without a certificate"
            + PER_REPLICA,
            ["listener"],
            registry=registry,
        )
        for reason in SMTP_REJECTION_REASONS:
            self.smtp_rejected.labels(reason)
        for outcome in SMTP_PROXY_HEADER_OUTCOMES:
            self.smtp_proxy_headers.labels(outcome)
        for limit in HTTP_CONNECTION_LIMITS:
            self.http_connections_refused.labels(limit)
        for channel, outcomes in DELIVERY_OUTCOMES.items():
            for outcome in outcomes:
                self.deliveries.labels(channel, outcome)
        for kind in RETENTION_KINDS:
            self.retention_deleted.labels(kind)
        for reason in WEBSOCKET_END_REASONS:
            self.ws_disconnects.labels(reason)
        for outcome in ("accepted", *sorted(set(E2A_SMTP_OUTCOMES.values()))):
            self.e2a_smtp_inbound.labels(outcome)
        for outcome in E2A_OUTBOUND_OUTCOMES:
            self.e2a_outbound_terminal.labels(outcome)
        for outcome in E2A_ATTEMPT_OUTCOMES.values():
            self.e2a_outbound_attempts.labels(outcome)

    # -- SmtpObserver ------------------------------------------------------------------------

    def session_started(self) -> None:
        """An SMTP connection is being served."""
        self.smtp_sessions.inc()
        self.smtp_sessions_active.inc()

    def session_ended(self) -> None:
        """An SMTP connection that was served has closed."""
        self.smtp_sessions_active.dec()

    def message_accepted(self) -> None:
        """A message was committed and the client told 250."""
        self.smtp_accepted.inc()
        self.e2a_smtp_inbound.labels("accepted").inc()

    def mail_rejected(self, reason: str) -> None:
        """A recipient, message or connection was refused for `reason`."""
        self.smtp_rejected.labels(reason).inc()
        if (outcome := E2A_SMTP_OUTCOMES.get(reason)) is not None:
            self.e2a_smtp_inbound.labels(outcome).inc()

    def proxy_header(self, outcome: str) -> None:
        """A trusted load balancer's connection was read for its PROXY header, with `outcome`
        (one of SMTP_PROXY_HEADER_OUTCOMES)."""
        self.smtp_proxy_headers.labels(outcome).inc()

    # -- the rest of the gateway ---------------------------------------------------------------

    def inbound_committed(self, transactions: int, stored: int, seconds: float) -> None:
        """One group commit of inbound mail (`e2a_gateway.storage.group_commit.BatchObserver`):
        the SMTP transactions it held, the messages (one per agent) it stored, its seconds."""
        self.inbound_commit_seconds.observe(seconds)
        self.inbound_commit_transactions.observe(transactions)
        self.inbound_messages_stored.inc(stored)

    def delivered(self, channel: str, outcome: str) -> None:
        """One delivery result on `channel` (webhook, websocket)."""
        self.deliveries.labels(channel, outcome).inc()

    def socket_opened(self) -> None:
        """An agent's WebSocket was accepted."""
        self.ws_connects.inc()
        self.ws_connections_active.inc()

    def socket_closed(self, reason: str) -> None:
        """An accepted WebSocket ended for `reason` (one of WEBSOCKET_END_REASONS)."""
        self.ws_connections_active.dec()
        self.ws_disconnects.labels(reason).inc()

    def request_served(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request on `route` (a template such as `/api/v1/agents/<email>`); a method
        outside HTTP_METHODS is counted as OTHER_METHOD."""
        method = method if method in HTTP_METHODS else OTHER_METHOD
        self.http_latency.labels(method, route).observe(seconds)
        self.http_responses.labels(method, route, str(status)).inc()
        self.e2a_http_requests.labels(method, e2a_route(route), f"{status // 100}xx").inc()

    def http_connection_refused(self, limit: str) -> None:
        """An HTTP connection was closed unserved for `limit` (one of HTTP_CONNECTION_LIMITS)."""
        self.http_connections_refused.labels(limit).inc()

    def webhook_attempted(self, status: str, status_code: int | None, seconds: float) -> None:
        """One `/v1` webhook attempt whose delivery is now `status` (delivered, pending or
        failed), answered `status_code` (None: no HTTP answer)."""
        self.delivered("webhook_v1", status)
        status_class = "none" if status_code is None else f"{status_code // 100}xx"
        self.e2a_webhook_attempts.labels(E2A_WEBHOOK_OUTCOMES[status], status_class).inc()
        self.e2a_webhook_attempt_duration.observe(seconds)

    def outbound_attempted(self, outcome: str, waited: float, seconds: float) -> None:
        """An outbound hand-off attempt that left the message `outcome` (sent, retry, failed),
        after waiting `waited` seconds for a worker and taking `seconds`."""
        self.e2a_outbound_attempts.labels(E2A_ATTEMPT_OUTCOMES[outcome]).inc()
        self.e2a_outbound_queue_wait.observe(max(waited, 0.0))
        self.e2a_outbound_attempt_duration.observe(seconds)

    def relay_connection_opened(self) -> None:
        """The send worker opened a connection to the relay."""
        self.relay_connections.inc()

    def certificate_served(self, listener: str, not_after: float) -> None:
        """`listener` (smtp) offers a TLS certificate that expires at Unix time `not_after`."""
        self.tls_certificate_expiry.labels(listener).set(not_after)

    def outbound_settled(self, outcome: str) -> None:
        """An outbound message reached its final outcome (one of E2A_OUTBOUND_OUTCOMES)."""
        self.e2a_outbound_terminal.labels(outcome).inc()

    def render(self, queues: QueueReading | None, *, storage_up: bool) -> bytes:
        """The metrics in Prometheus text format; `queues` is what storage said of the job
        queues just now, or None when it did not answer; `storage_up` is whether storage passed
        the health check just now (it answers and takes writes: `Storage.ping`)."""
        self.storage_up.set(1 if storage_up else 0)
        if queues is not None:
            depths = jobs_per_kind(queues.states)
            found = {(state.kind, state.state): state for state in queues.states}
            for kind in sorted({*JOB_KINDS, *depths}):
                self.queue_depth.labels(kind).set(depths.get(kind, 0))
                for name in JOB_STATES:
                    state = found.get((kind, name))
                    self.e2a_queue_depth.labels(kind, name).set(state.count if state else 0)
                available = found.get((kind, "available"))
                waited = queues.now - available.earliest_run_at if available else 0.0
                self.queue_oldest_age.labels(kind).set(max(waited, 0.0))
        return generate_latest(self.registry)


@dataclass(frozen=True)
class QueueReading:
    """The job queues as storage saw them at `now`."""

    now: float
    states: list[JobQueueState]


@functools.lru_cache(maxsize=512)  # route templates: a small, fixed set
def e2a_route(route: str) -> str:
    """The route label e2a gives a request: the `/v1` pattern with `{name}` parameters
    (`/v1/agents/{email}`), and `/legacy` for everything outside `/v1`, as e2a files the
    requests its seed-era mux serves."""
    if route != "/v1" and not route.startswith("/v1/"):
        return "/legacy"
    return _ROUTE_PARAMETER.sub(r"{\1}", route)
