"""`GET /selftest`, e2a's deep probe: is the database reachable, is every migration of this
code applied, does the SMTP listener answer — in the IETF health+json shape
(draft-inadarei-api-health-check) e2a answers in.

It reveals how the deployment stands, so it asks for `operators.selftest_secret` as a bearer
token when one is set (e2a's `E2A_INTERNAL_API_SECRET`); without one it is open in
development and refused in production, as e2a's is. Each check is bounded by CHECK_SECONDS
and they run side by side.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable

import trio
from quart import Blueprint, Response

from e2a_gateway.api.operator_tokens import token_refusal
from e2a_gateway.gateway import Gateway
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.web.context import current_gateway

blueprint = Blueprint("selftest", __name__)

CHECK_SECONDS = 3.0
"""How long one check may take before it fails as timed out."""
HEALTH_JSON = "application/health+json"
_GREETING_BYTES = 4096
"""The most of the SMTP greeting read (it is one short line)."""

Check = Callable[[Gateway], Awaitable[None]]
"""A check: returns when it passes, raises CheckFailed (or StorageUnavailable) saying why not."""


class CheckFailed(Exception):
    """A check did not pass; the message says why."""


@blueprint.get("/selftest")
async def selftest() -> Response:
    """GET /selftest: 200 `pass` when every check passes, else 503 `fail`; each check under
    `checks` (`database:reachable`, `migrations:applied`, `smtp:listening`) as a list of one
    `{"status"}`, with `output` saying why when it failed."""
    gateway = current_gateway()
    secret = gateway.settings.operators.selftest_secret
    if secret:
        refusal = token_refusal(secret, "GET /selftest", "operators.selftest_secret")
        if refusal is not None:
            return refusal
    elif gateway.settings.is_production:
        reason = "selftest requires operators.selftest_secret (E2A_INTERNAL_API_SECRET)"
        body = json.dumps({"status": "not_ready", "reason": reason})
        return Response(body, status=503, content_type="application/json")
    results = await run_checks(gateway)
    passed = all(status == "pass" for status, _ in results.values())
    checks = {
        name: [{"status": status} | ({"output": output} if output else {})]
        for name, (status, output) in results.items()
    }
    body = json.dumps({"status": "pass" if passed else "fail", "checks": checks})
    return Response(body, status=200 if passed else 503, content_type=HEALTH_JSON)


async def run_checks(gateway: Gateway) -> dict[str, tuple[str, str | None]]:
    """Every check at once, each bounded by CHECK_SECONDS: its status (`pass` or `fail`) and,
    when it failed, why."""
    checks: dict[str, Check] = {
        "database:reachable": _database_reachable,
        "migrations:applied": _migrations_applied,
        "smtp:listening": _smtp_listening,
    }
    results: dict[str, tuple[str, str | None]] = {}

    async def run(name: str, check: Check) -> None:
        try:
            with trio.fail_after(CHECK_SECONDS):
                await check(gateway)
        except trio.TooSlowError:
            results[name] = ("fail", f"no answer within {CHECK_SECONDS:g} s")
        except (CheckFailed, StorageUnavailable) as exc:
            results[name] = ("fail", str(exc))
        else:
            results[name] = ("pass", None)

    async with trio.open_nursery() as nursery:
        for name, check in checks.items():
            nursery.start_soon(run, name, check)
    return {name: results[name] for name in checks}


async def _database_reachable(gateway: Gateway) -> None:
    await gateway.storage.ping()


async def _migrations_applied(gateway: Gateway) -> None:
    pending = await gateway.storage.pending_migrations()
    if pending:
        listed = ", ".join(str(version) for version in pending)
        raise CheckFailed(f"migrations not applied: {listed} (run `e2a migrate`)")


async def _smtp_listening(gateway: Gateway) -> None:
    """Connect to this process's SMTP listener, read its 220 greeting, say QUIT."""
    if gateway.smtp_address is None:
        raise CheckFailed("the SMTP listener is not bound yet")
    host, port = gateway.smtp_address
    try:
        stream = await trio.open_tcp_stream(_reachable_host(host), port)
    except OSError as exc:
        raise CheckFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    async with stream:
        greeting = b""
        while b"\n" not in greeting and len(greeting) < _GREETING_BYTES:
            data = await stream.receive_some(_GREETING_BYTES)
            if not data:
                break
            greeting += data
        if not greeting.startswith(b"220"):
            line = greeting.split(b"\r\n", 1)[0].decode("ascii", "replace")[:200]
            raise CheckFailed(f"{host}:{port} did not greet with 220: {line!r}")
        # It greeted: a listener that hangs up before QUIT still listens.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(b"QUIT\r\n")


def _reachable_host(host: str) -> str:
    """The address to connect to for a listener bound to `host`: loopback for a wildcard."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host
