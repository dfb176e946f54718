"""The newest published e2a 2.x SDK (2.5.0, what `pip install 'e2a<3'` installs) retrying its
writes on `/api/v1` with an `idempotency_key`, as its documentation tells a script to: a repeat
of `send`, `reply` or `approve_message` with the same key answers the first call again, and
the mail goes out once; the same key with another request is refused (422).

The SDK runs in its own virtualenv (tests/venvs.py, or the one E2A_SDK25_PYTHON names), in a
subprocess in isolated mode, against a gateway that hands remote mail to a recording relay.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, make_settings
from tests.delivery_support import accept, create_agent, mail, wait_until
from tests.relay_support import Sink, relay_port, sink  # noqa: F401  (fixtures)
from tests.test_sdk_compat import run_sdk_calls
from tests.venvs import cached_venv

pytestmark = pytest.mark.slow

SDK_VERSION = "2.5.0"
SDK_PYTHON_VAR = "E2A_SDK25_PYTHON"

CALLS = """
import json, sys
import e2a
from e2a.v1 import E2AClient
from e2a.v1.api import E2AApiError

request = json.load(sys.stdin)
client = E2AClient(api_key=request["key"], agent_email=request["agent"], base_url=request["url"])
results = []
for call in request["calls"]:
    method = getattr(client, call.pop("do"))
    try:
        answer = method(*call.pop("args"), **call)
    except E2AApiError as exc:
        results.append({"raised": exc.status_code, "text": exc.message})
        continue
    answer = answer.model_dump() if hasattr(answer, "model_dump") else vars(answer)
    results.append({"answer": answer})
print(json.dumps({"sdk": e2a.__file__, "results": results}))
"""


@pytest.fixture(scope="session")
def sdk25_python() -> Path:
    """A python interpreter with e2a==2.5.0 installed, apart from this project (or the one
    named by E2A_SDK25_PYTHON)."""
    configured = os.environ.get(SDK_PYTHON_VAR)
    if configured:
        return Path(configured)
    return cached_venv(f"sdk-{SDK_VERSION}", [f"e2a=={SDK_VERSION}"])


@pytest.fixture
def settings(tmp_path: Path, relay_port: int) -> Settings:  # noqa: F811
    """The running gateway hands remote mail to the recording relay."""
    return make_settings(
        tmp_path, outbound_smtp={"host": "127.0.0.1", "port": relay_port, "tls": "none"}
    )


async def calls(
    python: Path, running: RunningGateway, account: Account, agent: str, *made: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run the SDK calls `made` (`{"do": method, "args": [...], **keywords}`) in order; per
    call, `{"answer": fields}` or `{"raised": status, "text": body}`."""
    return await run_sdk_calls(python, CALLS, running, account, agent, made)


def copies_to(sink: Sink, recipient: str) -> int:  # noqa: F811
    """How many messages the relay accepted for `recipient`."""
    return sum(recipient in recipients for _, recipients, _ in sink.received)


async def test_a_retried_reply_with_its_key_is_answered_again_and_sent_once(
    running: RunningGateway,
    make_account: Any,
    sink: Sink,  # noqa: F811
    sdk25_python: Path,
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    inbound = await accept(running.gateway, [agent], mail("Question"))
    reply = {"do": "reply", "args": [inbound, "Thanks."], "idempotency_key": f"answer-{inbound}"}

    first, retried, changed = await calls(
        sdk25_python,
        running,
        owner,
        agent,
        dict(reply),
        dict(reply),
        {**reply, "args": [inbound, "Thanks again."]},
    )

    assert first.get("answer", {}).get("status") == "sent", first
    assert retried == first
    assert changed["raised"] == 422 and '"idempotency_key_reuse"' in changed["text"], changed
    await wait_until(lambda: copies_to(sink, "alice@example.org") >= 1)
    assert copies_to(sink, "alice@example.org") == 1


async def test_a_retried_approval_with_its_key_is_answered_again(
    running: RunningGateway,
    make_account: Any,
    sink: Sink,  # noqa: F811
    sdk25_python: Path,
) -> None:
    owner: Account = await make_account("owner@example.com")
    agent = await create_agent(owner, "bot")
    held_on = {"do": "update_agent", "args": [agent], "hitl_enabled": True}
    send = {"do": "send", "args": [["dave@example.org"], "Offer", "Hello."]}
    _, held = await calls(sdk25_python, running, owner, agent, held_on, send)
    assert held.get("answer", {}).get("status") == "pending_approval", held
    message_id = held["answer"]["message_id"]
    approve = {"do": "approve_message", "args": [message_id], "idempotency_key": "review-1"}

    first, retried, changed = await calls(
        sdk25_python,
        running,
        owner,
        agent,
        dict(approve),
        dict(approve),
        {**approve, "subject": "Edited"},
    )

    assert first.get("answer", {}).get("message_id") == message_id, first
    assert first["answer"]["status"] in ("queued", "sent")
    assert retried == first
    assert changed["raised"] == 422 and '"idempotency_key_reuse"' in changed["text"], changed
    await wait_until(lambda: copies_to(sink, "dave@example.org") >= 1)
    assert copies_to(sink, "dave@example.org") == 1
