"""An account with many agents: listings, counts and checks read what they show, not every
agent of the account (nor a domain look-up per agent) on each request."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from e2a_gateway.api.v1 import account as v1_account
from e2a_gateway.app import RunningGateway
from e2a_gateway.clock import utc_now
from e2a_gateway.dashboard import agents as dashboard_agents
from e2a_gateway.dashboard import review as dashboard_review
from e2a_gateway.mcp.in_process import OperationsPort
from e2a_gateway.mcp.toolkit import CHOOSING_PAGE
from e2a_gateway.mcp.tools import TOOLS_BY_NAME, ToolCaller, call_tool
from e2a_gateway.storage.base import Domain
from e2a_gateway.storage.sql.transaction import Transaction
from tests.test_dashboard import sign_in
from tests.test_storage import make_agent

DOMAIN = "many.example"
AGENTS = 12


@dataclass
class Reads:
    """The statements run while counting, and how many rows each read of `agents` gave."""

    statements: int = 0
    agent_rows: list[int] = field(default_factory=list)
    domain_rows: list[int] = field(default_factory=list)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    """Every statement the storage runs from here on, counted."""
    seen = Reads()
    original_all, original_first = Transaction.all, Transaction.first

    def counted_all(self: Transaction, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        seen.statements += 1
        rows = original_all(self, query, *args, **kwargs)
        if re.search(r"\bFROM agents\b", query):
            seen.agent_rows.append(len(rows))
        if re.search(r"\bFROM domains\b", query):
            seen.domain_rows.append(len(rows))
        return rows

    def counted_first(self: Transaction, *args: Any, **kwargs: Any) -> Any:
        seen.statements += 1
        return original_first(self, *args, **kwargs)

    monkeypatch.setattr(Transaction, "all", counted_all)
    monkeypatch.setattr(Transaction, "first", counted_first)
    yield seen


async def _many_agents(running: RunningGateway, account: Any) -> list[str]:
    """AGENTS agents of `account` on its verified DOMAIN; their addresses."""
    storage = running.gateway.storage
    user = await storage.first_user()
    assert user is not None and user.email == account.email
    await storage.add_domain(Domain(user.id, DOMAIN, "token", False, utc_now(), None))
    await storage.mark_domain_verified(user.id, DOMAIN, utc_now())
    addresses = [f"bot{i:02d}@{DOMAIN}" for i in range(AGENTS)]
    for address in addresses:
        await storage.add_agent(make_agent(user.id, address))
    return addresses


async def test_a_page_of_agents_reads_that_page_and_one_domain_query(
    running: RunningGateway, make_account: Any, reads: Reads
) -> None:
    account = await make_account("owner@example.com")
    addresses = await _many_agents(running, account)
    listed: list[str] = []
    cursor: str | None = None
    for _ in range(AGENTS):
        reads.statements, reads.agent_rows = 0, []
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        answer = (await account.http.get("/v1/agents", params=params)).json()
        assert all(item["domain_verified"] for item in answer["items"])
        listed += [item["email"] for item in answer["items"]]
        assert reads.agent_rows and max(reads.agent_rows) <= 6, reads.agent_rows
        assert reads.statements <= 6, reads.statements  # not one domain look-up per agent
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert listed == sorted(addresses, reverse=True)


async def test_domain_and_account_counts_read_no_agent_rows(
    running: RunningGateway, make_account: Any, reads: Reads
) -> None:
    account = await make_account("owner@example.com")
    await _many_agents(running, account)
    reads.agent_rows = []
    domains = (await account.http.get("/v1/domains")).json()["items"]
    one = (await account.http.get(f"/v1/domains/{DOMAIN}")).json()
    usage = (await account.http.get("/v1/account")).json()["usage"]
    assert [d["agent_count"] for d in domains if d["domain"] == DOMAIN] == [AGENTS]
    assert one["agent_count"] == AGENTS
    assert usage["agents"] == AGENTS
    assert max(reads.agent_rows, default=0) <= 1, reads.agent_rows
    storage = running.gateway.storage
    user = await storage.first_user()
    assert user is not None
    for i in range(3):
        await storage.add_domain(Domain(user.id, f"d{i}.example", "token", False, utc_now(), None))
    reads.domain_rows = []
    assert (await account.http.get("/v1/account")).json()["usage"]["domains"] == 4
    assert max(reads.domain_rows, default=0) <= 1, reads.domain_rows


async def test_a_webhook_filter_checks_only_the_agents_it_names(
    running: RunningGateway, make_account: Any, reads: Reads
) -> None:
    account = await make_account("owner@example.com")
    addresses = await _many_agents(running, account)
    reads.agent_rows = []
    made = await account.http.post(
        "/v1/webhooks",
        json={
            "url": "https://hooks.example.com/hook",
            "events": ["email.received"],
            "filters": {"agent_emails": [addresses[3]]},
        },
    )
    refused = await account.http.post(
        "/v1/webhooks",
        json={
            "url": "https://hooks.example.com/hook",
            "events": ["email.received"],
            "filters": {"agent_emails": [f"nobody@{DOMAIN}"]},
        },
    )
    assert made.status_code == 201, made.text
    assert refused.status_code == 400 and "nobody@" in refused.text
    assert max(reads.agent_rows, default=0) <= 1, reads.agent_rows


async def test_the_dashboard_lists_agents_a_page_at_a_time(
    running: RunningGateway, make_account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_agents, "AGENTS_PAGE_SIZE", 5)
    account = await make_account("owner@example.com")
    addresses = await _many_agents(running, account)
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, account.key)
        shown: list[str] = []
        path: str | None = "/agents"
        for _ in range(AGENTS):
            if path is None:
                break
            html = (await browser.get(path)).text
            on_page = re.findall(rf">(bot\d\d@{re.escape(DOMAIN)})</a></th>", html)
            assert 0 < len(on_page) <= 5
            shown += on_page
            older = re.search(r'href="(/agents\?page=[^"]+)">Older agents', html)
            path = older.group(1).replace("&amp;", "&") if older else None
        assert shown == sorted(addresses, reverse=True)
        bad = await browser.get("/agents?page=not-a-token")
        assert bad.status_code == 400


class _Row(dict[str, Any]):
    """An exported agent's row that counts how often its domain is read."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        if key == "domain":
            _Row.reads += 1
        return super().__getitem__(key)


def test_an_export_counts_each_domain_s_agents_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(v1_account, "_export_agent", lambda row, *_: {"domain": row["domain"]})
    domains, agents = 20, 40
    head: dict[str, Any] = {
        "generated_at": utc_now(),
        "user": {},
        "domains": [
            {
                "domain": f"d{i}.example",
                "verified": True,
                "verification_token": "token",
                "created_at": utc_now(),
                "verified_at": utc_now(),
            }
            for i in range(domains)
        ],
        "agents": [_Row(email=f"a{i}@x", domain=f"d{i % domains}.example") for i in range(agents)],
        **{member: [] for member in ("api_keys", "suppressions", "webhooks", "templates")},
        "unsubscribe_links": [],
    }
    _Row.reads = 0
    view = v1_account.export_view(head, "usr_1", "agents.test", {})
    assert [d["agent_count"] for d in view["domains"]] == [agents // domains] * domains
    assert _Row.reads <= 3 * agents, _Row.reads  # not a pass over the agents per domain


async def test_a_send_naming_no_sender_reads_two_agents(
    running: RunningGateway, make_account: Any, reads: Reads
) -> None:
    account = await make_account("owner@example.com")
    await _many_agents(running, account)
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    reads.agent_rows = []
    refused = await account.http.post("/api/v1/send", json=body)
    assert refused.status_code == 400 and f"{AGENTS} agents" in refused.text, refused.text
    assert max(reads.agent_rows, default=0) <= 2, reads.agent_rows


async def test_the_only_agent_beside_a_postmaster_inbox_sends(
    running: RunningGateway, make_account: Any
) -> None:
    account = await make_account("owner@example.com")
    storage = running.gateway.storage
    user = await storage.first_user()
    assert user is not None
    await storage.add_domain(Domain(user.id, DOMAIN, "token", False, utc_now(), None))
    await storage.mark_domain_verified(user.id, DOMAIN, utc_now())
    for address in (f"postmaster@{DOMAIN}", f"bot@{DOMAIN}", f"postmaster@other.{DOMAIN}"):
        await storage.add_agent(make_agent(user.id, address))
    body = {"to": ["x@example.org"], "subject": "s", "body": "b"}
    sent = await account.http.post("/api/v1/send", json=body)
    assert "invalid_from" not in sent.text  # sent, or kept as failed for want of a relay
    message_id = re.search(r"msg_[0-9a-f]+", sent.text)
    assert message_id, sent.text
    tried = (await account.http.get(f"/api/v1/messages/{message_id.group()}")).json()
    assert tried["agent_id"] == f"bot@{DOMAIN}"


async def test_an_mcp_tool_naming_no_agent_reads_a_page_of_agents(
    running: RunningGateway, make_account: Any, reads: Reads
) -> None:
    account = await make_account("owner@example.com")
    addresses = await _many_agents(running, account)
    caller = ToolCaller(OperationsPort(running.gateway, account.key))
    reads.agent_rows = []
    result = await call_tool(TOOLS_BY_NAME["list_messages"], caller, {})
    assert result.is_error
    message = json.dumps(result.structured_content, ensure_ascii=False)
    assert addresses[-1] in message and addresses[-2] in message and "…" in message, message
    assert addresses[0] not in message
    assert max(reads.agent_rows, default=0) <= CHOOSING_PAGE + 1, reads.agent_rows


async def test_the_outbound_filter_lists_agents_only_while_they_are_few(
    running: RunningGateway,
    make_account: Any,
    reads: Reads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = await make_account("owner@example.com")
    addresses = await _many_agents(running, account)
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, account.key)
        few = (await browser.get("/outbound")).text
        assert all(f'<option value="{address}"' in few for address in addresses)
        monkeypatch.setattr(dashboard_review, "AGENT_CHOICES", 5)
        reads.agent_rows = []
        many = await browser.get("/outbound", params={"agent": addresses[0]})
        assert many.status_code == 200
        assert '<option value="bot' not in many.text
        assert f'<input id="agent" name="agent" type="email" value="{addresses[0]}"' in many.text
        assert max(reads.agent_rows, default=0) <= 6, reads.agent_rows


async def test_a_page_of_domains_reads_that_page(
    running: RunningGateway, make_account: Any, reads: Reads
) -> None:
    account = await make_account("owner@example.com")
    await _many_agents(running, account)
    storage = running.gateway.storage
    user = await storage.first_user()
    assert user is not None
    names = [f"d{i:02d}.example" for i in range(AGENTS)]
    for name in names:
        await storage.add_domain(Domain(user.id, name, "token", False, utc_now(), None))
    listed: dict[str, int] = {}
    cursor: str | None = None
    for _ in range(AGENTS + 1):
        reads.domain_rows = []
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        answer = (await account.http.get("/v1/domains", params=params)).json()
        listed |= {item["domain"]: item["agent_count"] for item in answer["items"]}
        assert max(reads.domain_rows) <= 6, reads.domain_rows
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert listed == {DOMAIN: AGENTS, **dict.fromkeys(names, 0)}


@pytest.mark.parametrize(
    "position",
    ["[" * 5000 + "]" * 5000, '["2026-01-01T00:00:00Z", "a\\u0000b"]', '["\\u0000", "a"]'],
    ids=["nested-thousands-deep", "nul-in-address", "nul-in-time"],
)
async def test_a_forged_agent_page_token_is_refused_not_a_crash(
    running: RunningGateway, make_account: Any, position: str
) -> None:
    account = await make_account("owner@example.com")
    await _many_agents(running, account)
    token = base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, account.key)
        answer = await browser.get("/agents", params={"page": token})
    assert answer.status_code == 400, answer.status_code
    assert "invalid page token" in answer.text
