"""Shared fixtures: settings on a temp database, a running gateway, users with API keys."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.config import Settings
from e2a_gateway.mailauth.resolver import FixtureResolver
from tests.databases import (
    INDEPENDENT_MARK,
    databases_made,
    drop_gateway_databases,
    drop_template,
    gateway_backend,
    gateway_database_url,
    running_test,
)

SHARED_DOMAIN = "agents.test"


TEST_LIMITS = {
    "agent_registrations_per_ip_per_hour": 100000,
    "agent_registrations_per_user_per_hour": 100000,
    "message_polls_per_user_per_minute": 100000,
}
"""Generous request limits for gateways under test (the suite makes many agents and polls)."""


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a gateway on loopback, OS-chosen ports and a fresh database: a SQLite file
    in `tmp_path`, or a new PostgreSQL database under `E2A_TEST_BACKEND=postgres`."""
    values: dict[str, object] = {
        "shared_domain": SHARED_DOMAIN,
        "smtp": {"listen": "127.0.0.1:0", "hostname": "mx.agents.test"},
        "http": {"listen": "127.0.0.1:0"},
        # Every test client is 127.0.0.1: the production defaults (20 registrations per IP per
        # hour) would throttle the suite. tests/test_rate_limits.py lowers them where it counts.
        "limits": TEST_LIMITS,
    }
    values.update(overrides)
    if "database" not in values:
        values["database"] = {"url": gateway_database_url(tmp_path)}
    return Settings.model_validate(values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default test settings."""
    return make_settings(tmp_path)


@pytest.fixture
def resolver() -> FixtureResolver:
    """The DNS seen by the gateway under test (empty unless a test adds records)."""
    return FixtureResolver()


@pytest.fixture
async def running(
    settings: Settings, resolver: FixtureResolver, nursery: trio.Nursery
) -> RunningGateway:
    """A gateway serving SMTP and HTTP in this test's nursery (cancelled at the end)."""
    started: RunningGateway = await nursery.start(partial(run_gateway, settings, resolver=resolver))
    return started


@dataclass
class Account:
    """A user of the running gateway with an API client bound to its key."""

    email: str
    key: str
    http: httpx.AsyncClient


@pytest.fixture
async def make_account(running: RunningGateway) -> AsyncIterator[object]:
    """Factory: `await make_account("alice@example.com")` → Account with a live HTTP client."""
    clients: list[httpx.AsyncClient] = []

    async def create(email: str) -> Account:
        gateway = running.gateway
        _, issued, _ = await bootstrap_user(gateway.storage, gateway.server_key, email)
        http = httpx.AsyncClient(
            base_url=running.addresses.http_url,
            headers={"Authorization": f"Bearer {issued.plaintext}"},
            timeout=10,
        )
        clients.append(http)
        return Account(email, issued.plaintext, http)

    yield create
    for client in clients:
        await client.aclose()


@pytest.fixture
async def anonymous(running: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client without credentials."""
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as client:
        yield client


def agent_path(address: str, suffix: str = "") -> str:
    """`/api/v1/agents/<percent-encoded address><suffix>`."""
    return f"/api/v1/agents/{quote(address, safe='')}{suffix}"


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--backend-dependent-only`, for the pass on PostgreSQL after a whole one on SQLite."""
    parser.addoption(
        "--backend-dependent-only",
        action="store_true",
        help=f"leave out the modules marked {INDEPENDENT_MARK} (they start no gateway on the "
        "suite's backend, so a pass on another backend would run them unchanged)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the mark of modules whose tests start no gateway on the suite's backend."""
    config.addinivalue_line(
        "markers",
        f"{INDEPENDENT_MARK}: the module starts no gateway on the suite's backend "
        "(E2A_TEST_BACKEND); checked as it runs",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `--backend-dependent-only`, deselect the tests of modules marked independent."""
    if not config.getoption("--backend-dependent-only"):
        return
    kept, left = [], []
    for item in items:
        (left if item.get_closest_marker(INDEPENDENT_MARK) else kept).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Let tests/databases.py fail a test marked independent that starts a gateway on the
    suite's backend (its setup and teardown included)."""
    running_test(item.nodeid if item.get_closest_marker(INDEPENDENT_MARK) else None)
    try:
        return (yield)
    finally:
        running_test(None)


def pytest_report_header() -> str:
    """Say which database the gateways under test use."""
    return f"gateways under test store on: {gateway_backend()}"


@pytest.fixture(autouse=True)
def _gateway_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases a test's gateways used, once everything else of the test
    (its gateways included) has stopped; those of module-scoped gateways live on."""
    made_before = databases_made()
    yield
    drop_gateway_databases(keep=made_before)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Put the root logger's handlers and the levels back after a test that ran a command
    in-process (`main(["migrate"])` sets up logging as `e2a` does): its handler writes to that
    test's captured stderr, closed once the test ends, and a gateway served from a thread for
    later tests would log into it ("Logging error ... I/O operation on closed file")."""
    root, ours = logging.getLogger(), logging.getLogger("e2a")
    handlers, levels = root.handlers[:], (root.level, ours.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


@pytest.fixture(autouse=True, scope="session")
def _every_gateway_database() -> Iterator[None]:
    """Drop what is left (module-scoped gateways' databases, the template) when the run ends."""
    yield
    drop_gateway_databases()
    drop_template()
