"""Addresses the gateway sends its own mail from are no agent's: with `smtp.hostname` on the
shared domain and no `outbound_smtp.from_domain`, approval notices come from `e2a@<shared
domain>`, and their bounces (which quote the notice, its approve and reject links included)
return there; an agent registered at that address would read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.config import Settings
from tests.conftest import SHARED_DOMAIN, Account, make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A gateway whose SMTP host name is its shared domain."""
    return make_settings(tmp_path, smtp={"listen": "127.0.0.1:0", "hostname": SHARED_DOMAIN})


async def test_the_approval_notice_sender_is_no_agents_address(make_account: Any) -> None:
    alice: Account = await make_account("alice@example.com")
    for path, body in (
        ("/api/v1/agents", {"slug": "e2a", "agent_mode": "local"}),
        ("/api/v1/agents", {"email": f"E2A@{SHARED_DOMAIN}", "agent_mode": "local"}),
        ("/v1/agents", {"email": "e2a"}),
        ("/v1/agents", {"email": f"e2a@{SHARED_DOMAIN}"}),
    ):
        refused = await alice.http.post(path, json=body)
        assert refused.status_code == 400, refused.text
        assert "reserved" in refused.json()["error"]["message"]
    assert (await alice.http.get("/v1/agents")).json()["items"] == []
    made = await alice.http.post("/v1/agents", json={"email": "e2a-bot"})
    assert made.status_code == 201, made.text
