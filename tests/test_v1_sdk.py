"""The official SDK of e2a's current API (`e2a==5.8.1`) works against the gateway unchanged:
each call parses into the SDK's own typed models, and each refusal into its typed errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.delivery_support import create_agent
from tests.sdk_v1 import error, run_sdk, sdk5_python, value

pytestmark = pytest.mark.slow

__all__ = ["sdk5_python"]  # a fixture


async def test_info_and_api_keys_with_scopes(
    running: RunningGateway, make_account: Any, sdk5_python: Path
) -> None:
    alice: Account = await make_account("alice@example.com")
    bot = await create_agent(alice, "bot")
    other = await create_agent(alice, "other")
    url = running.addresses.http_url
    made = await run_sdk(
        sdk5_python,
        url,
        {"default": alice.key},
        [
            {"do": "info"},
            {"do": "account.api_keys.create", "args": [{"name": "ci"}], "as": "ci"},
            {
                "do": "account.api_keys.create",
                "args": [{"name": "bot", "scope": "agent", "agent_email": bot}],
                "kwargs": {"idempotency_key": "bot-key-1"},
                "as": "bot",
            },
            {
                "do": "account.api_keys.create",
                "args": [{"name": "bot", "scope": "agent", "agent_email": bot}],
                "kwargs": {"idempotency_key": "bot-key-1"},
            },
            {
                "do": "account.api_keys.create",
                "args": [{"name": "other body", "scope": "agent", "agent_email": bot}],
                "kwargs": {"idempotency_key": "bot-key-1"},
            },
            {"do": "account.api_keys.list"},
            {"do": "account.api_keys.list", "kwargs": {"limit": 1}, "limit": 2},
            {"do": "account.api_keys.delete", "args": ["${ci.id}"]},
            {"do": "account.api_keys.delete", "args": ["${ci.id}"]},
        ],
    )
    info = value(made[0], "DeploymentInfoView")
    assert info["version"] == "1.0.0" and info["shared_domain"] == "agents.test"
    assert info["slug_registration_enabled"] is True
    ci = value(made[1], "CreateAPIKeyResponse")
    assert ci["scope"] == "account" and ci["key"].startswith("e2a_") and "agent_email" not in ci
    bound = value(made[2], "CreateAPIKeyResponse")
    assert (bound["scope"], bound["agent_email"]) == ("agent", bot)
    assert value(made[3], "CreateAPIKeyResponse") == bound  # replayed: the same key again
    error(made[4], "E2AIdempotencyError", "idempotency_key_reuse", 422)
    listed = value(made[5], ["APIKeyView"] * 3)
    assert {key["name"] for key in listed} == {"bootstrap", "ci", "bot"}
    assert all("key" not in key for key in listed)
    assert len(value(made[6])) == 2  # pages of one, walked by the SDK's pager
    assert value(made[7], "DeleteApiKeyResult") == {"deleted": True, "id": ci["id"]}
    error(made[8], "E2ANotFoundError", "not_found", 404)

    agent_steps = await run_sdk(
        sdk5_python,
        url,
        {"default": bound["key"], "revoked": ci["key"]},
        [
            {"do": "account.api_keys.list"},
            {"do": "account.api_keys.create", "args": [{"name": "wider"}]},
            {"do": "info", "key": "revoked"},
            {"do": "account.api_keys.list", "key": "revoked"},
        ],
    )
    refused = error(agent_steps[0], "E2APermissionError", "forbidden", 403)
    assert bot in refused["message"] and other not in refused["message"]
    error(agent_steps[1], "E2APermissionError", "forbidden", 403)
    value(agent_steps[2], "DeploymentInfoView")  # no key needed
    error(agent_steps[3], "E2AAuthError", "unauthorized", 401)
