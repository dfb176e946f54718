"""`POST /api/feedback`: anyone may tell the gateway's operators something (no key needed),
at most `limits.feedback_per_ip_per_hour` times an hour from one address, in a body of at most
64 KiB. As e2a answers: 200 `{"status": "ok"}`."""

from __future__ import annotations

from quart import Blueprint, Response, request

from e2a_gateway.api.errors import error_response
from e2a_gateway.api.requests import json_body
from e2a_gateway.operations import feedback
from e2a_gateway.operations.caller import Caller, authenticate
from e2a_gateway.operations.errors import Invalid, Unauthorized
from e2a_gateway.operations.requests import parse_request
from e2a_gateway.web.context import bearer_key, current_gateway

blueprint = Blueprint("feedback", __name__)


@blueprint.post("/api/feedback")
async def send_feedback() -> dict[str, str] | Response:
    """POST /api/feedback `{"message", "category"?, "email"?}`: stored for the operators."""
    gateway = current_gateway()
    await feedback.count_feedback(gateway, request.remote_addr)
    raw = await _bounded_body()
    if raw is None:
        return error_response(
            413,
            "payload_too_large",
            f"feedback bodies are at most {feedback.MAX_BODY_BYTES} bytes "
            f"(a message of at most {feedback.MAX_MESSAGE_CHARACTERS} characters)",
        )
    if not raw.strip():
        raise Invalid("invalid_json", "request body is empty; send a JSON object")
    body = parse_request(feedback.SendFeedback, json_body(raw))
    await feedback.send_feedback(gateway, body, await _sender())
    return {"status": "ok"}


async def _bounded_body() -> bytes | None:
    """The request body, or None once it is longer than `feedback.MAX_BODY_BYTES` (declared
    or counted as it arrives: the rest is never read)."""
    if (request.content_length or 0) > feedback.MAX_BODY_BYTES:
        return None
    raw = bytearray()
    async for chunk in request.body:
        raw += chunk
        if len(raw) > feedback.MAX_BODY_BYTES:
            return None
    return bytes(raw)


async def _sender() -> Caller | None:
    """The account of the API key the request carried, if it is valid (it need not carry one;
    several Authorization headers are no valid key either)."""
    try:
        key = bearer_key(request.headers)
        if key is None:
            return None
        return await authenticate(current_gateway(), key)
    except Unauthorized:
        return None
