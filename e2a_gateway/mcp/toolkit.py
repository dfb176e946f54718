"""What every MCP tool is made of: its caller, its arguments model, its spec, and how a call
runs, answers and fails.

A failure is a tool error (`isError`) in e2a's two forms: the text `e2a error [code]: message`
(`(retryable)` after the code when a retry may succeed) and `structuredContent` with `code`,
`message`, `retryable` and, when the gateway answered, its HTTP `status` (and the
`retry_after_seconds` its `Retry-After` asked for). No answer takes more than
MAX_ANSWER_BYTES (e2a_gateway.mcp.bounds): an MCP client refuses a larger message. Runs under
asyncio or trio (anyio only).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

import httpx
import mcp_types as types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from e2a_gateway.addresses import is_postmaster_inbox, only_agent
from e2a_gateway.mcp.bounds import MAX_ANSWER_BYTES, fitted
from e2a_gateway.mcp.port import GatewayPort
from e2a_gateway.mcp.tiers import E2A_ANNOTATIONS
from e2a_gateway.v1 import Attachment, E2AApiError, E2AConnectionError
from e2a_gateway.web.json_bodies import unfit_value

log = logging.getLogger("e2a.mcp")

MAX_ERROR_MESSAGE_CHARS = 500
"""Longer error messages are cut: a refusal can echo what the caller sent."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
AGENT_ARGUMENTS = ("email", "agent_email")
"""The names a tool's agent argument goes by (e2a's current one first); `agent` is this
gateway's earlier one, named only by the tools that take no other."""
CHOOSING_PAGE = 10
"""Agents read a page at a time to learn whether a key has only one (`ToolCaller._agents`)."""
_agent_argument: ContextVar[tuple[str, ...]] = ContextVar("agent_argument", default=())
"""The agent argument(s) of the tool being run, for the error naming what to pass."""

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
"""Reports how far a call got (`progress`, `total`, a sentence) to the client that made it:
MCP's `notifications/progress`, sent only when the client asked for them (a progressToken)."""
_progress: ContextVar[Progress | None] = ContextVar("progress", default=None)
"""Where the tool being run reports its progress, if its transport gave it anywhere."""


async def report_progress(progress: float, total: float | None, message: str) -> None:
    """Tell the client of the call being run how far it got; nothing when it did not ask.
    A client that resets its request timeout on progress then waits past that timeout."""
    reporter = _progress.get()
    if reporter is not None:
        await reporter(progress, total, message)


class ToolFailure(Exception):
    """A tool cannot do what was asked: a snake_case `code` (e2a's vocabulary) and a message
    telling the model what to do instead. Raised by the tools themselves, before or without
    a request to the gateway."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class ToolCaller:
    """Who calls a tool: the gateway as their API key reaches it, and their default agent."""

    port: GatewayPort
    default_agent: str = ""
    _account: dict[str, Any] | None = field(default=None, init=False, repr=False)

    async def account(self) -> dict[str, Any]:
        """Who the key speaks for (`/v1`'s AccountView), asked once per caller: a key's scope
        and bound agent never change."""
        if self._account is None:
            self._account = await self.port.get_account()
        return self._account

    async def scope(self) -> str:
        """The key's scope: `account`, or `agent` for a key bound to one agent."""
        return str((await self.account()).get("scope") or "account")

    async def bound_agent(self) -> str | None:
        """The agent the key is bound to, for an agent key; None for an account key."""
        found = await self.account()
        if found.get("scope", "account") == "account":
            return None
        return str(found.get("agent_email") or "") or None

    async def agent(self, chosen: str | None) -> str:
        """`chosen`, else the default agent, else the agent the key is bound to, else the
        key's only agent."""
        if chosen:
            return chosen
        if self.default_agent:
            return self.default_agent
        bound = await self.bound_agent()
        if bound:
            return bound
        agents, more = await self._agents()
        only = only_agent(agents)
        if only is not None:
            return only
        if not agents:
            raise ToolFailure(
                "this API key has no agents yet: create one first (create_agent, or "
                "`e2a agents register <slug> --mode local`)"
            )
        names = _agent_argument.get()
        choose = f"pass {' or '.join(names)} (one of them), " if names else ""
        among = ", ".join(agents) + (", …" if more else "")
        raise ToolFailure(
            f"this API key has several agents ({among}): {choose}set "
            "E2A_AGENT_EMAIL (the X-E2A-Agent-Email header), or use an agent-scoped key, which "
            "resolves the agent for you; list_agents shows your agents"
        )

    async def known_agent(self) -> str | None:
        """The default agent, else the agent the key is bound to, else the key's only agent,
        else None."""
        if self.default_agent:
            return self.default_agent
        bound = await self.bound_agent()
        if bound:
            return bound
        return only_agent((await self._agents())[0])

    async def _agents(self) -> tuple[list[str], bool]:
        """The key's agents, newest first, as far as it takes to learn whether one is the only
        sender (`only_agent`): all of them while at most one is no postmaster inbox, else up
        to the second that is none; and whether more were left unread. An account of
        thousands of agents costs a page of CHOOSING_PAGE, not all of them."""
        seen: list[str] = []
        senders = 0
        cursor: str | None = None
        while True:
            query: dict[str, Any] = {"limit": CHOOSING_PAGE}
            if cursor:
                query["cursor"] = cursor
            page = await self.port.list_agent_page(query)
            items = [str(item["email"]) for item in page["items"]]
            cursor = page.get("next_cursor")
            for place, address in enumerate(items, 1):
                seen.append(address)
                senders += not is_postmaster_inbox(address)
                if senders == 2:
                    return seen, place < len(items) or bool(cursor)
            if not cursor:
                return seen, False


def either(arguments: BaseModel, *names: str) -> Any:
    """The one value given among `names` (synonyms: e2a's name in one release, another's in
    the next); None when none is; a ToolFailure when two disagree."""
    given = {name: getattr(arguments, name) for name in names}
    given = {name: value for name, value in given.items() if value is not None}
    if len(set(map(repr, given.values()))) > 1:
        raise ToolFailure(f"pass only one of {' and '.join(given)}: they mean the same")
    return next(iter(given.values()), None)


# Arguments. One pydantic model per tool validates the call and is the source of its schema.


class Arguments(BaseModel):
    """A tool's arguments: unknown names are refused, and each value must be of the JSON type
    its schema declares, as e2a's schemas check them (`"5"` is no integer, `1` no boolean);
    a number without a fraction (`5.0`) is an integer, as in JSON Schema."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            name: int(value) if isinstance(value, float) and value.is_integer() else value
            for name, value in data.items()
        }


def _boolean(value: Any) -> Any:
    # pydantic takes 1 for the literal True, even in strict mode.
    if not isinstance(value, bool):
        raise ValueError("Input should be true, a JSON boolean")
    return value


Confirm = Annotated[Literal[True], BeforeValidator(_boolean)]
"""e2a's `confirm: true` of a destructive tool: only the JSON `true` confirms."""


class NoArguments(Arguments):
    """No arguments."""


class PageArguments(Arguments):
    """A page of a list: e2a's `cursor` and `limit`."""

    cursor: str | None = Field(
        default=None,
        description="The next_cursor of the previous answer; absent there means the last page.",
    )
    limit: int | None = Field(default=None, ge=1, le=100, description="Items per page, 1-100.")


MIME_TYPE = re.compile(r"^[a-zA-Z][a-zA-Z0-9.+-]*/[a-zA-Z0-9.+-]+$")


class AttachmentArgument(Arguments):
    """One file to attach, as every e2a client sends it."""

    filename: str = Field(min_length=1, max_length=255, description="The file's name.")
    content_type: str = Field(
        pattern=MIME_TYPE.pattern, description="Its MIME type, e.g. application/pdf."
    )
    data: str = Field(
        min_length=1,
        description="The content, standard base64 (RFC 4648 section 4, padded). Pass base64 "
        "another tool returned verbatim; do not encode text yourself.",
    )

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "not standard base64 (A-Z a-z 0-9 + /, padded with =, no spaces): pass the "
                "value another tool returned verbatim"
            ) from None
        return value

    def attachment(self) -> Attachment:
        """The SDK's form: the bytes decoded."""
        return Attachment(self.filename, self.content_type, base64.b64decode(self.data))


AttachmentsArgument = Annotated[
    list[AttachmentArgument] | None,
    Field(default=None, max_length=50, description="Files to attach (at most 50)."),
]


def idempotency_key(natural: str) -> Any:
    """The `idempotency_key` argument of a tool that sends, as `/v1`'s Idempotency-Key takes
    it; `natural` says what makes a good key for this tool."""
    return Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        description="Makes a retry safe: a repeat with the same key and arguments answers the "
        f"first call again instead of sending twice (kept at least 24 hours). {natural} "
        "Visible ASCII, at most 255.",
    )


REPLY_TO = Field(
    default=None,
    description="The Reply-To: where replies to this message go, one address, optionally with "
    "a display name, e.g. Support <support@example.com> (a name with a comma in double quotes: "
    '"Doe, Jane" <jane@example.com>). The agent\'s own address by default.',
)


def attachments(items: list[AttachmentArgument] | None) -> list[Attachment] | None:
    """The SDK attachments of an `attachments` argument."""
    return [item.attachment() for item in items] if items else None


A = TypeVar("A", bound=Arguments)


@dataclass(frozen=True)
class ToolSpec(Generic[A]):
    """One tool: its name, what it is for, its arguments model and what runs it.

    Its MCP annotation hints are e2a's for the tool (tiers.E2A_ANNOTATIONS), else those of the
    tool it is an alias of, else the flags': `read_only` changes nothing (reading a message
    marks it read, so wait_for_email is not), `destructive` cannot be undone. `replaced_by`
    marks a deprecated alias, listed with that title.
    """

    name: str
    title: str
    description: str
    arguments: type[A]
    run: Callable[[ToolCaller, A], Awaitable[dict[str, Any]]]
    read_only: bool = True
    destructive: bool = False
    replaced_by: str | None = None

    def definition(self) -> types.Tool:
        """The tool as `tools/list` describes it."""
        title, description = self.title, self.description
        if self.replaced_by:
            title = f"Deprecated alias: {self.replaced_by}"
            description = f"DEPRECATED: use {self.replaced_by}. {description}"
        return types.Tool(
            name=self.name,
            title=title,
            description=description,
            input_schema=input_schema(self.arguments),
            annotations=types.ToolAnnotations.model_validate(self.hints()),
        )

    def hints(self) -> dict[str, bool]:
        """The annotation hints, in MCP's names: only those e2a sets for the tool (the rest
        take MCP's defaults, as they do on e2a's server)."""
        found = E2A_ANNOTATIONS.get(self.name)
        if found is None and self.replaced_by:
            found = E2A_ANNOTATIONS.get(self.replaced_by)
        if found is not None:
            return dict(found)
        if self.read_only:
            return {"readOnlyHint": True}
        return {"readOnlyHint": False, "destructiveHint": self.destructive}


def _clean_schema(node: Any) -> Any:
    """Drop pydantic's `title`s and collapse `X | None` to `X` (absence means none)."""
    if isinstance(node, list):
        return [_clean_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    cleaned = {key: _clean_schema(value) for key, value in node.items() if key != "title"}
    variants = cleaned.get("anyOf")
    if isinstance(variants, list):
        kept = [variant for variant in variants if variant != {"type": "null"}]
        if len(kept) == 1:
            del cleaned["anyOf"]
            cleaned = {**kept[0], **cleaned}
    if cleaned.get("default", ...) is None:
        del cleaned["default"]
    return cleaned


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    """`node` with each `{"$ref": "#/$defs/X"}` replaced by X itself: many clients turn tool
    schemas into function declarations that cannot follow references."""
    if isinstance(node, list):
        return [_inline_refs(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        found = definitions[reference.removeprefix("#/$defs/")]
        rest = {key: value for key, value in node.items() if key != "$ref"}
        return {**_inline_refs(found, definitions), **rest}
    return {key: _inline_refs(value, definitions) for key, value in node.items()}


_schemas: dict[type[BaseModel], dict[str, Any]] = {}


def input_schema(arguments: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments model, as clients read it (made once)."""
    schema = _schemas.get(arguments)
    if schema is None:
        schema = _clean_schema(arguments.model_json_schema())
        schema = _inline_refs(schema, schema.pop("$defs", {}))
        schema.pop("description", None)
        schema.setdefault("properties", {})
        _schemas[arguments] = schema
    return schema


# Answers and errors.


def _one_line(message: str) -> str:
    text = _CONTROL.sub(" ", message).strip()
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        return text[:MAX_ERROR_MESSAGE_CHARS] + "…"
    return text


def tool_error(
    code: str,
    message: str,
    *,
    retryable: bool = False,
    status: int | None = None,
    retry_after: float | None = None,
) -> types.CallToolResult:
    """A failed call, as e2a's MCP server answers one: text and structured content (with
    `retry_after_seconds`, whole and at least 1, when the gateway said how long to wait)."""
    message = _one_line(message)
    structured: dict[str, Any] = {"code": code, "message": message, "retryable": retryable}
    if status is not None:
        structured["status"] = status
    if retry_after is not None:
        structured["retry_after_seconds"] = max(1, math.ceil(retry_after))
    text = f"e2a error [{code}]{' (retryable)' if retryable else ''}: {message}"
    return types.CallToolResult(
        content=[types.TextContent(text=text)], structured_content=structured, is_error=True
    )


def _rendered(answer: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(answer, ensure_ascii=False, indent=1)
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=answer)


def _encoded_size(result: types.CallToolResult) -> int:
    """How many bytes `result` takes as the transports send it (JSON, UTF-8)."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


def _result(name: str, answer: dict[str, Any]) -> types.CallToolResult:
    """A successful call's answer, as text and structured content, within MAX_ANSWER_BYTES:
    a larger one has its longest strings cut (CUT_MARK), or, when that is not enough (too
    many items), is refused with a tool error saying to ask for fewer."""
    result = _rendered(answer)
    size = _encoded_size(result)
    if size <= MAX_ANSWER_BYTES:
        return result
    shrunk = fitted(answer, lambda smaller: _encoded_size(_rendered(smaller)))
    if shrunk is not None:
        return _rendered(shrunk)
    return tool_error(
        "answer_too_large",
        f"{name}: the answer would take {size:,} bytes, more than the {MAX_ANSWER_BYTES:,} "
        "an MCP answer may: ask for fewer items at once (a smaller limit or page_size; "
        "list_reviews pages the review queue, list_messages with conversation_id a "
        "conversation), or read them one by one",
    )


def _invalid_arguments(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return f"invalid arguments for {name}: " + "; ".join(problems)


async def call_tool(
    tool: ToolSpec[Any],
    caller: ToolCaller,
    arguments: dict[str, Any],
    progress: Progress | None = None,
) -> types.CallToolResult:
    """Run `tool` for `caller`; every failure becomes a tool error, never a traceback. An
    argument no store can keep (NUL, a lone surrogate, an out-of-range number) is refused as
    the REST API refuses it in a body. A long tool reports to `progress`, when given."""
    unfit = unfit_value(arguments)
    if unfit is not None:
        where, problem = unfit
        return tool_error(
            "invalid_request", f"invalid arguments for {tool.name}: {where.lstrip('.')}: {problem}"
        )
    try:
        parsed = tool.arguments.model_validate(arguments)
    except ValidationError as exc:
        return tool_error("invalid_request", _invalid_arguments(tool.name, exc))
    fields = tool.arguments.model_fields
    taken = tuple(name for name in AGENT_ARGUMENTS if name in fields)
    names = _agent_argument.set(taken or (("agent",) if "agent" in fields else ()))
    reporter = _progress.set(progress)
    try:
        return _result(tool.name, await tool.run(caller, parsed))
    except ToolFailure as exc:
        return tool_error(exc.code, f"{tool.name}: {exc.message}")
    except E2AConnectionError as exc:
        return tool_error(
            "gateway_unreachable",
            f"cannot reach the e2a gateway at {caller.port.gateway_url}: "
            f"{exc.__cause__ or type(exc.__cause__).__name__}",
            retryable=exc.retryable,
            status=0,
        )
    except E2AApiError as exc:
        # The refusal's code and message as the REST API answers it, and its status.
        return tool_error(
            exc.code or "error",
            exc.message,
            retryable=exc.retryable,
            status=exc.status_code,
            retry_after=exc.retry_after,
        )
    except httpx.InvalidURL as exc:  # the gateway's URL was checked at start: an argument's
        return tool_error(
            "invalid_request",
            f"{tool.name}: an argument cannot be part of a URL ({exc}): check the ids and "
            "addresses given",
        )
    except httpx.HTTPError as exc:
        return tool_error(
            "gateway_unreachable",
            f"cannot reach the e2a gateway at {caller.port.gateway_url}: "
            f"{exc or type(exc).__name__}",
            retryable=True,
            status=0,
        )
    except Exception:
        log.exception("MCP tool %s failed", tool.name)
        return tool_error(
            "internal_error", f"{tool.name}: internal error in the e2a MCP server; see its log"
        )
    finally:
        _progress.reset(reporter)
        _agent_argument.reset(names)
