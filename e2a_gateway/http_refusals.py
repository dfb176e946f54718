"""The JSON error answering a request refused below the apps — by the HTTP server (framing it
cannot trust, an app that ended without an answer) or by the request body bounds — in the shape
of the face the request was for: e2a's envelope with a request id under `/v1`, the 2.x shape
with an `X-Request-Id` header under `/api/v1`, the bare shape elsewhere. `refusal_answer` is
pure; `send_refusal` sends its answer as an ASGI response."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from hypercorn.typing import ASGISendCallable, HTTPScope

from e2a_gateway.request_ids import HEADER as REQUEST_ID_HEADER
from e2a_gateway.request_ids import request_id_for

Headers = list[tuple[bytes, bytes]]


def refusal_answer(
    path: str,
    request_headers: Iterable[tuple[bytes, bytes]],
    code: str,
    message: str,
    details: Mapping[str, object] | None = None,
) -> tuple[Headers, bytes]:
    """The headers (JSON content type and length, `Connection: close`, the request id where
    the face has one) and the body refusing the request for `path` with `request_headers`;
    `details` are sent under `/v1` only, as e2a's envelope has them."""
    error: dict[str, object] = {"code": code, "message": message}
    extra: Headers = []
    if _under(path, "/v1") or _under(path, "/api/v1"):
        request_id = request_id_for(asgi_header(request_headers, b"x-request-id"))
        extra.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
        if _under(path, "/v1"):
            error["request_id"] = request_id
            if details is not None:
                error["details"] = dict(details)
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    return headers, body


async def send_refusal(
    send: ASGISendCallable,
    scope: HTTPScope,
    status: int,
    code: str,
    message: str,
    details: Mapping[str, object] | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer the request `scope` with `status` and the error `code` (`refusal_answer`'s
    headers and body, and `extra_headers`), closing the connection after it."""
    headers, body = refusal_answer(scope["path"], scope["headers"], code, message, details)
    await send(
        {"type": "http.response.start", "status": status, "headers": [*headers, *extra_headers]}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def asgi_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of header `name` (lowercase) among an ASGI scope's `headers`, as text (the
    first when it is given more than once), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
