"""NUL (U+0000) in a request's path or query string, refused before any route reads them, on
every Quart face: PostgreSQL text can neither hold nor be compared with it, and nothing the
gateway stores is named with it. JSON bodies are checked as they are parsed (`json_bodies`),
the dashboard's forms before its pages read them (`refuse_nul_in_form`).
"""

from __future__ import annotations

from quart import request

from e2a_gateway.operations.errors import Invalid, NotFound

NUL = "\x00"


async def refuse_nul() -> None:
    """Before a request that found its route: a path holding NUL names nothing (NotFound, as
    an unknown id), a query parameter whose name or value holds one is Invalid
    (`invalid_request`). Each face answers the refusal in its own shape."""
    if request.routing_exception is not None:
        return  # no route: answered as such, whatever the path holds
    if NUL in request.path:
        raise NotFound("not_found", "not found: no name holds NUL (U+0000)")
    for name, value in request.args.items(multi=True):
        if NUL in name or NUL in value:
            raise Invalid(
                "invalid_request",
                f"query parameter {name!r} must not contain NUL (U+0000), in its name or value",
            )


async def refuse_nul_in_form() -> None:
    """Before a page that found its route reads a POSTed form: a field whose name or value
    holds NUL is Invalid (`invalid_request`), so nothing is made or changed with it."""
    if request.method != "POST" or request.routing_exception is not None:
        return
    for name, value in (await request.form).items(multi=True):
        if NUL in name or NUL in value:
            raise Invalid(
                "invalid_request",
                f"form field {name!r} must not contain NUL (U+0000), in its name or value",
            )
