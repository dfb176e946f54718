"""The JSON-RPC envelope of a message, checked by both transports before the MCP library sees
it.

The library drops what it cannot read without an answer (stdio), refuses it with its
validator's report under the wrong code (HTTP), and takes a request whose `id` is neither a
string nor an integer for a notification, so the call is silently never made. JSON-RPC 2.0
(section 5) answers an Invalid Request with -32600 and a null id; `invalid_request` says why
in one short sentence. A message whose strings hold a lone surrogate (JSON may escape one,
`"\\ud83d"`; the library's parser refuses it as a parse error with a null id) is refused under
its own id instead, so the client is not left waiting. Imports nothing of the SDK or the
gateway but the JSON checks every request body goes through: `e2a mcp` uses it too.
"""

from __future__ import annotations

import json

from e2a_gateway.web.json_bodies import unfit_value

PARSE_ERROR = -32700
"""JSON-RPC's code for a message that is not JSON."""
INVALID_REQUEST = -32600
"""JSON-RPC's code for JSON that is not a valid JSON-RPC message."""
INVALID_PARAMS = -32602
"""JSON-RPC's code for a request whose params cannot be taken."""


def _is_request_id(value: object) -> bool:
    """Whether `value` may be a request's id: MCP allows a string or an integer, never null."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def invalid_request(message: object) -> str | None:
    """Why `message` (parsed JSON, a batch already refused) is not a JSON-RPC 2.0 request,
    notification or response; None when it is one."""
    if not isinstance(message, dict):
        return "a JSON-RPC message must be a JSON object"
    if message.get("jsonrpc") != "2.0":
        return 'a JSON-RPC message must carry "jsonrpc": "2.0"'
    if "method" in message:
        if not isinstance(message["method"], str):
            return 'a JSON-RPC "method" must be a string'
        if "id" in message and not _is_request_id(message["id"]):
            return 'a JSON-RPC request\'s "id" must be a string or an integer'
        if message.get("params") is not None and not isinstance(message["params"], dict):
            return 'MCP "params" must be a JSON object'
        return None
    if "id" not in message or ("result" not in message and "error" not in message):
        return (
            'a JSON-RPC message needs a "method" (a request or notification), or an "id" and a '
            '"result" or "error" (a response)'
        )
    return None


def not_unicode(text: str | bytes) -> tuple[str | int | None, str] | None:
    """For JSON that the MCP library cannot read because a string (or key) in it holds a lone
    surrogate: the request's id (None when there is none to answer under: a notification, a
    response, no message at all) and why its params are refused, naming where. None when
    `text` is not JSON at all, or holds no lone surrogate."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    found = unfit_value(message)
    if found is None or "surrogate" not in found[1]:
        return None
    where, problem = found
    request_id = message.get("id") if isinstance(message, dict) else None
    answerable = isinstance(message, dict) and "method" in message and _is_request_id(request_id)
    return (request_id if answerable else None), f"Invalid params: {where.lstrip('.')} {problem}"
