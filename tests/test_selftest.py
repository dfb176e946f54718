"""`GET /selftest`, e2a's deep probe, over real HTTP against a running gateway: the database,
the migrations and the SMTP listener, in health+json; a bearer secret when one is set, open in
development without one, refused in production without one; a failing check says why."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from e2a_gateway.api import selftest
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.storage.migrations import load_migrations
from tests.conftest import make_settings
from tests.databases import query
from tests.test_production_mode import production_settings

SECRET = "3c9a71e05b2d48f6a1e7c3d95b0f2a6e8d4c1b7f9e3a5d2c6b8f0e4a7d1c3b5e"
CHECKS = ["database:reachable", "migrations:applied", "smtp:listening"]


async def start(nursery: trio.Nursery, settings: Any) -> RunningGateway:
    running: RunningGateway = await nursery.start(
        partial(run_gateway, settings, resolver=FixtureResolver())
    )
    return running


async def get_selftest(running: RunningGateway, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as http:
        return await http.get("/selftest", headers=headers)


def statuses(answer: httpx.Response) -> dict[str, str]:
    """Each check's status, from a health+json answer."""
    assert answer.headers["content-type"] == "application/health+json"
    checks = answer.json()["checks"]
    assert sorted(checks) == CHECKS
    return {name: entries[0]["status"] for name, entries in checks.items()}


async def test_every_check_passes_on_a_running_gateway(running: RunningGateway) -> None:
    answer = await get_selftest(running)  # development, no secret set: open
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "pass"
    assert statuses(answer) == dict.fromkeys(CHECKS, "pass")
    assert all("output" not in entries[0] for entries in answer.json()["checks"].values())


async def test_a_set_secret_is_asked_for_as_a_bearer_token(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    running = await start(nursery, make_settings(tmp_path, operators={"selftest_secret": SECRET}))
    for headers in (
        {},
        {"Authorization": f"Bearer {SECRET[:-1]}"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": SECRET},
    ):
        refused = await get_selftest(running, **headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["error"]["code"] == "unauthorized"
        assert "operators.selftest_secret" in refused.json()["error"]["message"]
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="e2a"'
        assert SECRET not in refused.text
    answer = await get_selftest(running, Authorization=f"Bearer {SECRET}")
    assert answer.status_code == 200 and answer.json()["status"] == "pass", answer.text


async def test_production_refuses_it_without_a_secret_and_serves_it_with_one(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    for folder in ("without", "with"):
        (tmp_path / folder).mkdir()
    without = await start(nursery, production_settings(tmp_path / "without"))
    refused = await get_selftest(without)
    assert refused.status_code == 503
    assert refused.json()["status"] == "not_ready"
    assert "E2A_INTERNAL_API_SECRET" in refused.json()["reason"]
    assert "checks" not in refused.json()  # nothing of the deployment is told

    with_secret = production_settings(tmp_path / "with", operators={"selftest_secret": SECRET})
    served = await start(nursery, with_secret)
    assert (await get_selftest(served)).status_code == 401
    answer = await get_selftest(served, Authorization=f"Bearer {SECRET}")
    assert answer.status_code == 200 and answer.json()["status"] == "pass", answer.text


async def test_a_migration_not_recorded_fails_its_check_and_says_which(
    running: RunningGateway,
) -> None:
    database = running.gateway.settings.database.url
    latest = load_migrations("postgres" if database.startswith("postgres") else "sqlite")[-1]
    query(database, "DELETE FROM schema_migrations WHERE version = ?", (latest.version,))
    answer = await get_selftest(running)
    assert answer.status_code == 503
    assert answer.json()["status"] == "fail"
    assert statuses(answer) == {
        "database:reachable": "pass",
        "migrations:applied": "fail",
        "smtp:listening": "pass",
    }
    output = answer.json()["checks"]["migrations:applied"][0]["output"]
    assert output == f"migrations not applied: {latest.version} (run `e2a migrate`)"


async def test_an_smtp_listener_that_is_gone_fails_its_check(running: RunningGateway) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # a port nothing listens on
    running.gateway.smtp_address = ("127.0.0.1", port)
    answer = await get_selftest(running)
    assert answer.status_code == 503
    assert statuses(answer)["smtp:listening"] == "fail"
    assert statuses(answer)["database:reachable"] == "pass"
    output = answer.json()["checks"]["smtp:listening"][0]["output"]
    assert output.startswith(f"cannot connect to 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("greeting", "expected"),
    [
        (b"554 5.3.2 not now\r\n", "did not greet with 220: '554 5.3.2 not now'"),
        (None, "no answer within 0.3 s"),
    ],
    ids=["a refusing greeting", "no greeting at all"],
)
async def test_a_listener_that_does_not_greet_with_220_fails_its_check(
    running: RunningGateway,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    greeting: bytes | None,
    expected: str,
) -> None:
    monkeypatch.setattr(selftest, "CHECK_SECONDS", 0.3)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def answer_badly(stream: trio.SocketStream) -> None:
        async with stream:
            if greeting is not None:
                await stream.send_all(greeting)
            with trio.move_on_after(5):
                await stream.receive_some(1024)

    nursery.start_soon(partial(trio.serve_listeners, answer_badly, listeners))
    running.gateway.smtp_address = ("127.0.0.1", port)
    answer = await get_selftest(running)
    assert answer.status_code == 503
    assert statuses(answer)["smtp:listening"] == "fail"
    assert answer.json()["checks"]["smtp:listening"][0]["output"].endswith(expected)
