"""The REST API as an OpenAPI 3.1 document, served by `GET /api/v1/openapi.json` (meta.py).

Paths and methods come from the app's own URL map; this module only describes each route,
by endpoint name, with the pydantic models of its request and response bodies. A route under
`/api` without a description is reported by `undescribed_routes` (a test keeps it empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from quart import Quart
from werkzeug.routing import Map, Rule

from e2a_gateway import __version__
from e2a_gateway.api import schemas
from e2a_gateway.operations.agents import CreateAgent, UpdateAgent
from e2a_gateway.operations.domains import CreateDomain
from e2a_gateway.operations.feedback import SendFeedback
from e2a_gateway.operations.keys import CreateApiKey, CreateSigningSecret
from e2a_gateway.operations.lifecycle import STATES
from e2a_gateway.operations.messages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from e2a_gateway.operations.reviews import ApproveBody, RejectBody
from e2a_gateway.operations.sending import ReplyBody, SendBody

OPENAPI_VERSION = "3.1.0"
DOCUMENTED_PREFIX = "/api/"
SCHEMA_REF = "#/components/schemas/{model}"
_IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")

Security = Literal["bearer", "bearer_or_query_token", "none"]


@dataclass(frozen=True)
class Reply:
    """One documented answer: a JSON body of `model`, an HTML page, both, or no body."""

    description: str
    model: type[BaseModel] | None = None
    html: bool = False
    retry_after: bool = False


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: dict[str, Any]
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """What one route does, what it takes and what it answers.

    `errors` maps a status to the error codes it can carry; the codes every route of its kind
    shares (401 for authenticated routes, 400/413 for bodies, 404 for path parameters, 503
    for storage) are added when the document is built."""

    tag: str
    summary: str
    replies: dict[int, Reply]
    description: str = ""
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    body_optional: bool = False
    form_token: bool = False
    query: tuple[Param, ...] = ()
    security: Security = "bearer"
    uses_storage: bool = True


PATH_PARAMETERS: dict[str, tuple[str, str]] = {
    "email": (
        "An agent's address; percent-encoded (`bot%40example.com`) or plain.",
        "bot@agents.test",
    ),
    "name": ("A domain name (matched case-insensitively, IDNA).", "example.com"),
    "message_id": ("A message id as the API returned it.", "msg_0123456789abcdef01234567"),
    "secret_id": ("A signing secret's id.", "wsec_0123456789abcdef01234567"),
    "key_id": ("An API key's id.", "apk_0123456789abcdef01234567"),
}
"""Every path parameter of the API: its description and an example value."""

_SEND_REPLIES = {
    200: Reply(
        "Durably queued for delivery and not refused (`sent`, as e2a 2.x clients expect); "
        "the message's progress is on GET /messages/{id}.",
        schemas.SendResult,
    ),
    202: Reply("Held for human approval (the agent has HITL enabled).", schemas.HeldForApproval),
}
_SEND_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("invalid_from", "invalid_email", "invalid_header", "invalid_attachment"),
    422: ("send_failed",),
    429: ("rate_limited",),
}
_LINK_REPLIES = {
    200: Reply("A confirmation page, or the outcome.", html=True),
    400: Reply("The link is incomplete, malformed or not genuine.", html=True),
    404: Reply("The message no longer exists.", html=True),
    409: Reply("The message is no longer awaiting approval.", html=True),
    410: Reply("The link has expired.", html=True),
}
_LINK_QUERY = (
    Param("token", "The token from the notice email.", {"type": "string", "maxLength": 1024}),
    Param("t", "Short alias of `token`.", {"type": "string", "maxLength": 1024}),
)
_REVIEW_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("invalid_email", "invalid_header", "invalid_attachment"),
    409: ("conflict",),
}
_IDEMPOTENCY_ERRORS: dict[int, tuple[str, ...]] = {
    409: ("idempotency_in_flight",),
    422: ("idempotency_key_reuse",),
}
"""What a route taking an `Idempotency-Key` adds: the key's first request still being made,
or the key used with another request (docs/api.md)."""


def _idempotent(errors: dict[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    """`errors` of a route that takes an `Idempotency-Key`, with the key's own refusals."""
    statuses = sorted(errors.keys() | _IDEMPOTENCY_ERRORS.keys())
    return {
        status: (*errors.get(status, ()), *_IDEMPOTENCY_ERRORS.get(status, ()))
        for status in statuses
    }


def _link_page(action: str, acts: bool) -> Operation:
    if acts:
        return Operation(
            "approvals",
            f"{action.capitalize()} a held message from its magic link",
            _LINK_REPLIES,
            description=f"Performs the {action} once, through the same transition as the REST "
            "review; the token comes from the form field or the query.",
            query=_LINK_QUERY,
            form_token=True,
            security="none",
        )
    return Operation(
        "approvals",
        f"Confirmation page for the {action} link in a notice email",
        _LINK_REPLIES,
        description="Shows what the link would do and a form to do it; never acts (mail "
        "scanners prefetch links).",
        query=_LINK_QUERY,
        security="none",
    )


OPERATIONS: dict[str, Operation] = {
    "meta.health": Operation(
        "meta",
        "Health of the gateway and its storage",
        {
            200: Reply("Serving; storage answers.", schemas.Health),
            503: Reply("Storage does not answer.", schemas.HealthDegraded),
        },
        security="none",
        uses_storage=False,
    ),
    "meta.info": Operation(
        "meta",
        "What a client needs to know before it logs in",
        {200: Reply("Deployment information.", schemas.Info)},
        security="none",
        uses_storage=False,
    ),
    "meta.openapi_document": Operation(
        "meta",
        "This document",
        {200: Reply("The OpenAPI 3.1 document of the REST API.", schemas.OpenApiDocument)},
        security="none",
        uses_storage=False,
    ),
    "feedback.send_feedback": Operation(
        "meta",
        "Send feedback to the gateway's operators",
        {200: Reply("Stored; operators read it on the dashboard.", schemas.FeedbackAccepted)},
        description="No key needed (a valid one fills in `email` when it is left out). At "
        "most `limits.feedback_per_ip_per_hour` (10) requests an hour per client address, "
        "malformed ones included; a body of at most 64 KiB, a message of at most 5000 "
        "characters.",
        errors={429: ("rate_limited",)},
        body=SendFeedback,
        security="none",
    ),
    "agents.list_agents": Operation(
        "agents", "List the caller's agents", {200: Reply("The agents.", schemas.AgentList)}
    ),
    "agents.create_agent": Operation(
        "agents",
        "Register an agent",
        {201: Reply("The new agent.", schemas.Agent)},
        description="`slug` registers `slug@<shared domain>`; `email` needs a domain the caller "
        "has verified. Cloud agents (the default) need a `webhook_url`.",
        errors={
            400: (
                "invalid_slug",
                "reserved_slug",
                "invalid_email",
                "slug_registration_disabled",
                "domain_not_registered",
                "domain_not_verified",
                "webhook_url_required",
                "invalid_webhook_url",
            ),
            409: ("agent_exists",),
            429: ("rate_limited",),
        },
        body=CreateAgent,
    ),
    "agents.get_agent": Operation(
        "agents", "Read an agent", {200: Reply("The agent.", schemas.Agent)}
    ),
    "agents.update_agent": Operation(
        "agents",
        "Change any subset of an agent's settings",
        {200: Reply("The updated agent.", schemas.Agent)},
        errors={400: ("webhook_url_required", "invalid_webhook_url")},
        body=UpdateAgent,
    ),
    "agents.delete_agent": Operation(
        "agents",
        "Delete an agent and its messages",
        {200: Reply("Deleted.", schemas.AgentDeleted)},
    ),
    "outbound.send_test": Operation(
        "sending",
        "Send a test message from the agent to itself",
        _SEND_REPLIES,
        errors={422: ("send_failed",), 429: ("rate_limited",)},
    ),
    "dead_letters.list_dead_letters": Operation(
        "inbox",
        "List an agent's dead letters (webhook deliveries that ran out of retries)",
        {200: Reply("One page, oldest first; `next_token` goes on.", schemas.DeadLetterPage)},
        errors={400: ("invalid_request", "invalid_token")},
        query=(
            Param(
                "page_size",
                "Dead letters per page.",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            ),
            Param("token", "`next_token` of the previous page.", {"type": "string"}),
        ),
    ),
    "dead_letters.redeliver_dead_letter": Operation(
        "inbox",
        "Redeliver one dead letter",
        {202: Reply("A new delivery is queued, signed afresh.", schemas.Redelivered)},
        description="404 when the message is no dead letter of this agent (another user's, "
        "delivered, or already queued again).",
        errors={400: ("not_cloud_agent",)},
    ),
    "dead_letters.redeliver_all_dead_letters": Operation(
        "inbox",
        "Redeliver every dead letter of an agent",
        {202: Reply("The dead letters queued again.", schemas.RedeliveredAll)},
        errors={400: ("not_cloud_agent",)},
    ),
    "messages.list_messages": Operation(
        "inbox",
        "List an agent's inbound messages, oldest first",
        {200: Reply("One page; `next_token` fetches the next.", schemas.InboundMessagePage)},
        description="The filters and `sort` are those the e2a 2.x SDK's `get_messages` sends; "
        "a page token continues only the listing (filters, order) that made it.",
        errors={
            400: ("invalid_request", "invalid_token", "invalid_filter"),
            429: ("rate_limited",),
        },
        query=(
            Param(
                "status",
                "Which messages.",
                {"type": "string", "enum": ["unread", "read", "all"], "default": "unread"},
            ),
            Param(
                "sort",
                "Oldest (`asc`) or newest (`desc`) first.",
                {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
            ),
            Param(
                "from",
                "Only mail whose From address holds this text, whatever the case.",
                {"type": "string"},
            ),
            Param(
                "subject_contains",
                "Only mail whose subject holds this text, whatever the case.",
                {"type": "string"},
            ),
            Param("conversation_id", "Only mail of this conversation.", {"type": "string"}),
            Param(
                "since",
                "Only mail received at or after this RFC 3339 time (empty: any).",
                {"type": "string"},
            ),
            Param(
                "until",
                "Only mail received before this RFC 3339 time (empty: any).",
                {"type": "string"},
            ),
            Param(
                "page_size",
                "Messages per page.",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            ),
            Param("token", "`next_token` of the previous page.", {"type": "string"}),
        ),
    ),
    "messages.get_message": Operation(
        "inbox",
        "Read one inbound message in full (marks it read)",
        {200: Reply("The message.", schemas.InboundMessage)},
        errors={400: ("invalid_request",), 429: ("rate_limited",)},
        query=(
            Param(
                "mark_read",
                "`false` leaves the message unread (to mark it read once it is handled).",
                {"type": "boolean", "default": True},
            ),
        ),
    ),
    "outbound.reply": Operation(
        "sending",
        "Reply to an inbound message, threaded",
        _SEND_REPLIES,
        description="Goes to the original's Reply-To, else its From, with `Re:` subject and "
        "threading headers.",
        errors=_idempotent(_SEND_ERRORS),
        body=ReplyBody,
    ),
    "websocket.explain_websocket": Operation(
        "inbox",
        "WebSocket delivery for local agents",
        {},
        description="Connect with a WebSocket client (`Upgrade: websocket`, answered with 101) "
        "and the API key as `?token=` or in an `Authorization: Bearer` header (`?token=` wins "
        "when both are given) "
        "to receive every unread message and then live ones. A plain GET gets the refusals "
        "the upgrade would get, or 426 when the upgrade would succeed. An API key holds at "
        "most `http.max_websockets_per_key` connections (default 20). A connection is closed "
        "(code 1008) when its agent is deleted or its key revoked.",
        errors={
            400: ("not_local_agent",),
            426: ("upgrade_required",),
            429: ("too_many_websockets",),
        },
        security="bearer_or_query_token",
    ),
    "outbound.send": Operation(
        "sending",
        "Send a message from one of the caller's agents",
        _SEND_REPLIES,
        description="`from` may be left out when the caller has exactly one agent. A line "
        "break (CR, LF, NEL, U+2028, U+2029) or other control character in any header value "
        "is refused.",
        errors=_idempotent(_SEND_ERRORS),
        body=SendBody,
    ),
    "outbound.list_outbound": Operation(
        "review",
        "List outbound messages (the review queue by default)",
        {200: Reply("The messages, soonest-expiring first.", schemas.OutboundMessageList)},
        errors={400: ("invalid_request",), 404: ("not_found",)},
        query=(
            Param(
                "status",
                "Outbound status to list.",
                {
                    "type": "string",
                    "enum": list(STATES),
                    "default": "pending_approval",
                },
            ),
            Param(
                "agent",
                "Only this agent's messages (404 when not the caller's).",
                {"type": "string"},
            ),
        ),
    ),
    "outbound.get_outbound": Operation(
        "review",
        "Read an outbound message",
        {200: Reply("The message.", schemas.OutboundMessage)},
    ),
    "outbound.approve": Operation(
        "review",
        "Approve a held message, optionally with edits",
        {200: Reply("The approved message (`edited` when changed).", schemas.OutboundMessage)},
        errors=_idempotent(_REVIEW_ERRORS),
        body=ApproveBody,
        body_optional=True,
    ),
    "outbound.reject": Operation(
        "review",
        "Reject a held message",
        {200: Reply("The rejected message.", schemas.OutboundMessage)},
        errors=_REVIEW_ERRORS,
        body=RejectBody,
        body_optional=True,
    ),
    "approvals.approve_page": _link_page("approve", acts=False),
    "approvals.approve_message": _link_page("approve", acts=True),
    "approvals.reject_page": _link_page("reject", acts=False),
    "approvals.reject_message": _link_page("reject", acts=True),
    "domains.list_domains": Operation(
        "domains", "List the caller's domains", {200: Reply("The domains.", schemas.DomainList)}
    ),
    "domains.create_domain": Operation(
        "domains",
        "Register a custom domain",
        {201: Reply("The domain and the DNS records to publish.", schemas.Domain)},
        errors={400: ("invalid_domain", "domain_reserved"), 409: ("domain_exists",)},
        body=CreateDomain,
    ),
    "domains.verify_domain": Operation(
        "domains",
        "Verify a domain by its TXT record",
        {200: Reply("The verified domain.", schemas.Domain)},
        errors={
            409: ("domain_exists",),
            412: ("verification_record_missing",),
            503: ("dns_unavailable",),
        },
    ),
    "domains.delete_domain": Operation(
        "domains",
        "Delete a domain",
        {204: Reply("Deleted.")},
        errors={409: ("domain_in_use",)},
    ),
    "account.list_signing_secrets": Operation(
        "account",
        "List webhook signing secrets, newest first",
        {200: Reply("The secrets' metadata.", schemas.SigningSecretList)},
    ),
    "account.create_signing_secret": Operation(
        "account",
        "Create a webhook signing secret",
        {201: Reply("The secret, shown this once.", schemas.NewSigningSecret)},
        errors={400: ("signing_secret_limit",)},
        body=CreateSigningSecret,
        body_optional=True,
    ),
    "account.delete_signing_secret": Operation(
        "account",
        "Delete a signing secret (never the last one)",
        {204: Reply("Deleted.")},
        errors={400: ("last_signing_secret",)},
    ),
    "account.list_api_keys": Operation(
        "account",
        "List the API keys not revoked (prefixes only)",
        {200: Reply("The keys' metadata.", schemas.ApiKeyList)},
    ),
    "account.create_api_key": Operation(
        "account",
        "Create an API key",
        {201: Reply("The key, shown this once.", schemas.NewApiKey)},
        body=CreateApiKey,
        body_optional=True,
    ),
    "account.revoke_api_key": Operation(
        "account",
        "Revoke an API key (it answers 401 from then on)",
        {204: Reply("Revoked.")},
    ),
    "account.export_user": Operation(
        "account",
        "Export everything stored about the caller",
        {200: Reply("The export; never hashes, secrets or message bodies.", schemas.UserExport)},
        description="Streamed from one database snapshot. The gateway sends at most "
        "`http.max_concurrent_exports` exports at once (default 2, whoever asks); beyond "
        "them the request is refused with 429 and `Retry-After`.",
        errors={429: ("too_many_exports",)},
    ),
    "account.delete_user": Operation(
        "account",
        "Erase the caller and everything they own",
        {200: Reply("Rows deleted per table, in one transaction.", schemas.UserDeleted)},
        errors={400: ("confirmation_required",)},
        query=(
            Param(
                "confirm",
                "Must be exactly `DELETE`.",
                {"type": "string", "enum": ["DELETE"]},
                required=True,
            ),
        ),
    ),
}
"""Every route under /api, by its Quart endpoint name."""


@dataclass(frozen=True)
class Route:
    """One method of one URL rule of the app."""

    rule: Rule
    method: str

    @property
    def path(self) -> str:
        """The rule as an OpenAPI path template (`<email>` becomes `{email}`)."""
        return _RULE_ARGUMENT.sub(r"{\1}", self.rule.rule)

    @property
    def path_parameters(self) -> list[str]:
        """Names of the path parameters, in order."""
        return _RULE_ARGUMENT.findall(self.rule.rule)


def api_routes(url_map: Map) -> list[Route]:
    """Every HTTP route under /api (WebSocket rules are described by their GET twin)."""
    return [
        Route(rule, method)
        for rule in url_map.iter_rules()
        if rule.rule.startswith(DOCUMENTED_PREFIX) and not getattr(rule, "websocket", False)
        for method in sorted((rule.methods or set()) - _IMPLICIT_METHODS)
    ]


def undescribed_routes(url_map: Map) -> list[str]:
    """Routes under /api that OPERATIONS or PATH_PARAMETERS do not describe (should be none)."""
    missing = []
    for route in api_routes(url_map):
        if route.rule.endpoint not in OPERATIONS:
            missing.append(f"{route.method} {route.path} (endpoint {route.rule.endpoint})")
        missing.extend(
            f"path parameter {name} of {route.path}"
            for name in route.path_parameters
            if name not in PATH_PARAMETERS
        )
    return missing


def _models() -> list[type[BaseModel]]:
    bodies = [op.body for op in OPERATIONS.values() if op.body is not None]
    answers = [
        reply.model
        for op in OPERATIONS.values()
        for reply in op.replies.values()
        if reply.model is not None
    ]
    return list(dict.fromkeys([*bodies, *answers, schemas.ErrorBody]))


def _component_schemas() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """References to each model and the component schemas they point into."""
    inputs = {op.body for op in OPERATIONS.values() if op.body is not None}
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation" if model in inputs else "serialization") for model in _models()
    ]
    keys, definitions = models_json_schema(modes, ref_template=SCHEMA_REF)
    refs = {model: dict(keys[(model, mode)]) for model, mode in modes}
    return refs, dict(definitions.get("$defs", {}))


def _error_reply(codes: tuple[str, ...]) -> str:
    listed = ", ".join(f"`{code}`" for code in codes)
    return f"Error ({listed})." if listed else "Error."


def _all_errors(operation: Operation, route: Route) -> dict[int, tuple[str, ...]]:
    """The operation's own error codes plus those every route of its kind shares."""
    shared: dict[int, tuple[str, ...]] = {}
    if operation.body is not None or operation.form_token:
        shared[400] = ("invalid_json", "invalid_request") if operation.body else ()
        shared[413] = ("payload_too_large",)
        shared[415] = ("unsupported_media_type",)
    if operation.security != "none":
        shared[401] = ("unauthorized",)
    if route.path_parameters:
        shared[404] = ("not_found",)
    if operation.uses_storage:
        shared[503] = ("storage_unavailable",)
    merged = dict(shared)
    for status, codes in operation.errors.items():
        merged[status] = tuple(dict.fromkeys([*shared.get(status, ()), *codes]))
    return merged


_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 1},
}


def _response(reply: Reply, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if reply.model is not None:
        content["application/json"] = {"schema": refs[reply.model]}
    if reply.html:
        content["text/html"] = {"schema": {"type": "string"}}
    response: dict[str, Any] = {"description": reply.description}
    if content:
        response["content"] = content
    if reply.retry_after:
        response["headers"] = {"Retry-After": _RETRY_AFTER}
    return response


def _replies(operation: Operation, route: Route) -> dict[int, Reply]:
    replies = dict(operation.replies)
    for status, codes in _all_errors(operation, route).items():
        retry_after = status in (429, 503)
        existing = replies.get(status)
        if existing is None:
            replies[status] = Reply(_error_reply(codes), schemas.ErrorBody, retry_after=retry_after)
        elif existing.model is None:
            description = f"{existing.description} {_error_reply(codes)}"
            replies[status] = Reply(description, schemas.ErrorBody, existing.html, retry_after)
    return dict(sorted(replies.items()))


def _parameters(operation: Operation, route: Route) -> list[dict[str, Any]]:
    parameters = []
    for name in route.path_parameters:
        description, example = PATH_PARAMETERS[name]
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": description,
                "schema": {"type": "string", "minLength": 1},
                "example": example,
            }
        )
    for param in operation.query:
        parameters.append(
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": param.schema,
            }
        )
    return parameters


_SECURITY: dict[Security, list[dict[str, list[str]]]] = {
    "bearer": [{"bearerAuth": []}],
    "bearer_or_query_token": [{"bearerAuth": []}, {"queryToken": []}],
    "none": [],
}


def _operation(
    operation: Operation, route: Route, refs: dict[type[BaseModel], dict[str, Any]]
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": route.rule.endpoint.replace(".", "_"),
        "tags": [operation.tag],
        "summary": operation.summary,
        "security": _SECURITY[operation.security],
        "responses": {
            str(status): _response(reply, refs)
            for status, reply in _replies(operation, route).items()
        },
    }
    if operation.description:
        document["description"] = operation.description
    parameters = _parameters(operation, route)
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": refs[operation.body]}},
        }
    elif operation.form_token:
        document["requestBody"] = {
            "required": False,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"token": {"type": "string", "maxLength": 1024}},
                    }
                }
            },
        }
    return document


def build_document(app: Quart) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `app`'s routes under /api."""
    refs, components = _component_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes(app.url_map):
        operation = OPERATIONS.get(route.rule.endpoint)
        if operation is not None and all(name in PATH_PARAMETERS for name in route.path_parameters):
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(
                operation, route, refs
            )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "e2a REST API",
            "version": __version__,
            "description": "Email gateway for AI agents. Errors are JSON "
            '`{"error": {"code", "message"}}`; request bodies are JSON objects and unknown '
            "fields are refused.",
        },
        "security": _SECURITY["bearer"],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer e2a_<64 hex>`.",
                },
                "queryToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The API key as `?token=` (the agents' WebSocket).",
                },
            },
        },
    }
