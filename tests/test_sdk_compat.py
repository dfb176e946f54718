"""The published e2a SDK (2.2.0) accepts what the gateway delivers, and refuses forgeries.

The SDK's package is also called `e2a`, so it lives in its own virtualenv and runs in a
subprocess in isolated mode (`-I`): it can neither shadow our package nor be shadowed by it.
The virtualenv is built once under the user's cache directory (tests/venvs.py), or named by
E2A_SDK_PYTHON; without a package index the tests are skipped with the command that builds it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.signing.credentials import derive_signing_secret, hash_api_key
from e2a_gateway.workers.webhook_connections import WebhookConnections
from e2a_gateway.workers.webhooks import WebhookWorker
from tests.conftest import Account, make_settings
from tests.delivery_support import (
    accept,
    agent_id,
    create_agent,
    mail,
    new_signing_secret,
    open_account,
    quiet_gateway,
    store_with_conversation,
    wait_until,
)
from tests.http_receiver import HttpReceiver
from tests.venvs import cached_venv

pytestmark = pytest.mark.slow

SDK_VERSION = "2.2.0"
SDK_PYTHON_VAR = "E2A_SDK_PYTHON"
SDK_SECONDS = 60
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """A python interpreter with e2a[ws]==2.2.0 installed, apart from this project (or the
    one named by E2A_SDK_PYTHON)."""
    configured = os.environ.get(SDK_PYTHON_VAR)
    if configured:
        return Path(configured)
    return cached_venv(f"sdk-{SDK_VERSION}", [f"e2a[ws]=={SDK_VERSION}"])


async def run_sdk(python: Path, script: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run `script` with the SDK's python in isolated mode, `request` as JSON on stdin; return
    the JSON it prints. It must have imported the SDK, not our package."""
    with trio.fail_after(SDK_SECONDS):
        done = await trio.run_process(
            [str(python), "-I", "-c", script],
            stdin=json.dumps(request).encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd="/",
            # A webhook receiver has its API key in the environment, as the SDK expects.
            env={"E2A_API_KEY": "e2a_" + "0" * 64},
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    answer: dict[str, Any] = json.loads(done.stdout)
    assert str(python.parent.parent) in answer["sdk"] or os.environ.get(SDK_PYTHON_VAR)
    assert "/work/" not in answer["sdk"] or os.environ.get(SDK_PYTHON_VAR)
    return answer


async def run_sdk_calls(
    python: Path,
    script: str,
    running: RunningGateway,
    account: Account,
    agent: str,
    made: tuple[dict[str, Any], ...],
) -> list[dict[str, Any]]:
    """Run `script` (`run_sdk`) on the SDK calls `made`, as `account` acting for `agent` at
    the running gateway; the `results` it prints, one per call."""
    request = {
        "key": account.key,
        "agent": agent,
        "url": running.addresses.http_url,
        "calls": list(made),
    }
    results: list[dict[str, Any]] = (await run_sdk(python, script, request))["results"]
    return results


PARSE_WEBHOOKS = """
import base64, json, sys
import e2a
from e2a.v1 import E2AClient

request = json.load(sys.stdin)
results = []
for case in request["cases"]:
    body = base64.b64decode(case["body"])
    try:
        email = E2AClient().parse_webhook(body, case["secret"])
    except PermissionError as exc:
        results.append({"accepted": False, "error": str(exc)})
        continue
    results.append({
        "accepted": True,
        "message_id": email.message_id,
        "conversation_id": email.conversation_id,
        "sender": email.sender,
        "recipient": email.recipient,
        "to": email.to,
        "subject": email.subject,
        "text_body": email.text_body,
        "is_verified": email.is_verified,
    })
print(json.dumps({"sdk": e2a.__file__, "results": results}))
"""


def _case(body: bytes, secret: str) -> dict[str, str]:
    return {"body": base64.b64encode(body).decode(), "secret": secret}


def _forge(payload: dict[str, Any], change: dict[str, Any]) -> bytes:
    return json.dumps({**payload, **change}).encode()


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> HttpReceiver:
    started = HttpReceiver()
    await nursery.start(started.serve)
    return started


async def test_parse_webhook_accepts_deliveries_and_refuses_forgeries(
    tmp_path: Path, resolver: FixtureResolver, receiver: HttpReceiver, sdk_python: Path
) -> None:
    settings = make_settings(tmp_path, webhooks={"allow_private": True})
    async with quiet_gateway(settings, resolver) as quiet:
        gateway = quiet.gateway
        account = await open_account(gateway, quiet.http_url, "alice@example.com")
        async with account.http, WebhookConnections() as http:
            user = await gateway.storage.user_for_key_hash(hash_api_key(account.key))
            assert user is not None
            (bootstrap_secret,) = await gateway.storage.list_signing_secrets(user.id)
            old_secret = derive_signing_secret(gateway.server_key, bootstrap_secret.seed)
            secret = await new_signing_secret(account)
            agent = await create_agent(account, "sdk", receiver.url)

            await accept(gateway, [agent], mail("Stale", body="Six minutes ago."))
            six_minutes_ago = WebhookWorker(gateway, http, clock=lambda: time.time() - 360)
            assert await six_minutes_ago.deliver_due(time.time()) == 1
            await accept(gateway, [agent], mail("Invoice", body="Pay 100 EUR."))
            await accept(gateway, [agent], mail("Other", body="Something else."))
            assert await WebhookWorker(gateway, http).deliver_due(time.time()) == 2

    bodies = {json.loads(request.body)["subject"]: request.body for request in receiver.requests}
    stale, invoice, other = (json.loads(bodies[name]) for name in ("Stale", "Invoice", "Other"))
    genuine = bodies["Invoice"]
    raw = base64.b64decode(invoice["raw_message"])
    assert b"Pay 100" in raw
    forged_raw = base64.b64encode(raw.replace(b"Pay 100", b"Pay 900")).decode()
    forged_sender = {**invoice["auth_headers"], "X-E2A-Auth-Sender": "ceo@example.org"}
    cases = {
        "genuine": _case(genuine, secret),
        "other genuine": _case(bodies["Other"], secret),
        "forged body": _case(_forge(invoice, {"raw_message": forged_raw}), secret),
        "forged claim": _case(_forge(invoice, {"auth_headers": forged_sender}), secret),
        "swapped body": _case(_forge(invoice, {"raw_message": other["raw_message"]}), secret),
        "swapped headers": _case(_forge(invoice, {"auth_headers": other["auth_headers"]}), secret),
        "replayed old signature": _case(json.dumps(stale).encode(), secret),
        "wrong secret": _case(genuine, "0" * 64),
        "rotated-out secret": _case(genuine, old_secret),
    }
    answer = await run_sdk(sdk_python, PARSE_WEBHOOKS, {"cases": list(cases.values())})
    verdicts = dict(zip(cases, answer["results"], strict=True))

    accepted = {name for name, verdict in verdicts.items() if verdict["accepted"]}
    assert accepted == {"genuine", "other genuine"}
    email = verdicts["genuine"]
    assert email["message_id"] == invoice["message_id"]
    assert email["sender"] == "alice@example.org"
    assert email["recipient"] == agent
    assert email["subject"] == "Invoice"
    assert email["text_body"].strip() == "Pay 100 EUR."
    assert email["conversation_id"] is None
    assert verdicts["other genuine"]["subject"] == "Other"


LISTEN = """
import asyncio, json, sys
import e2a
from e2a.v1 import AsyncE2AClient

request = json.load(sys.stdin)

async def main():
    client = AsyncE2AClient(api_key=request["key"], base_url=request["url"])
    notes = []
    async for note in client.listen(request["agent"], reconnect=False):
        notes.append({
            "message_id": note.message_id,
            "from": note.from_,
            "recipient": note.recipient,
            "subject": note.subject,
            "received_at": note.received_at,
            "conversation_id": note.conversation_id,
        })
        print("got", note.message_id, file=sys.stderr, flush=True)
        if len(notes) == request["count"]:
            break
    return notes

notes = asyncio.run(asyncio.wait_for(main(), 30))
print(json.dumps({"sdk": e2a.__file__, "notifications": notes}))
"""


async def test_listen_accepts_the_websocket_frames(
    running: RunningGateway, make_account: Any, sdk_python: Path, nursery: trio.Nursery
) -> None:
    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "listener")
    gateway = running.gateway
    plain = await accept(gateway, [agent], mail("First"))
    threaded = await store_with_conversation(gateway, agent, "conv-42")
    request = {"url": running.addresses.http_url, "key": alice.key, "agent": agent, "count": 3}
    answers: list[dict[str, Any]] = []

    async def listen() -> None:
        answers.append(await run_sdk(sdk_python, LISTEN, request))

    async with trio.open_nursery() as listening:
        listening.start_soon(listen)
        subscribed = await agent_id(gateway, agent)
        await wait_until(lambda: gateway.hub.subscriber_count(subscribed) == 1, SDK_SECONDS)
        live = await accept(gateway, [agent], mail("Live"))

    (answer,) = answers
    notes = answer["notifications"]
    assert [note["message_id"] for note in notes] == [plain, threaded, live]
    assert [note["subject"] for note in notes] == ["First", "Threaded", "Live"]
    assert [note["conversation_id"] for note in notes] == [None, "conv-42", None]
    assert {note["from"] for note in notes} == {"alice@example.org"}
    assert {note["recipient"] for note in notes} == {agent}
    assert all(note["received_at"].endswith("Z") for note in notes)


DESCRIBE_SURFACE = """
import dataclasses, importlib, inspect, json, sys, types

HELPERS = {"BaseModel", "ConfigDict", "Field", "Literal", "annotations"}
DUNDERS = {"__init__", "__enter__", "__exit__", "__aenter__", "__aexit__"}

def params(function):
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    return [[p.name, p.kind.name, p.default is not inspect.Parameter.empty]
            for p in parameters if p.name != "self"]

def describe(obj):
    if not inspect.isclass(obj):
        return {"kind": "function", "params": params(obj)}
    members = {}
    for name in dir(obj):
        if name.startswith("_") and name not in DUNDERS:
            continue
        if issubclass(obj, BaseException) and hasattr(BaseException, name) and name != "__init__":
            continue
        raw = inspect.getattr_static(obj, name)
        if isinstance(raw, (classmethod, staticmethod)) or inspect.isfunction(raw):
            members[name] = params(getattr(obj, name))
        else:
            members[name] = None
    fields = sorted(getattr(obj, "model_fields", {}))
    if dataclasses.is_dataclass(obj):
        fields = sorted(f.name for f in dataclasses.fields(obj))
    return {"kind": "class", "members": members, "fields": fields}

package = sys.argv[1] if len(sys.argv) > 1 else "e2a"  # ours is e2a_gateway
surface = {"sdk": importlib.import_module(package).__file__}
for suffix in ("", ".v1"):
    module = importlib.import_module(package + suffix)
    names = set(module.__all__)
    if suffix == ".v1":  # the published e2a.v1 also star-imports its models
        names |= {n for n in dir(module) if not n.startswith("_") and n not in HELPERS
                  and not isinstance(getattr(module, n), types.ModuleType)}
    surface["e2a" + suffix] = {n: describe(getattr(module, n)) for n in sorted(names)}
print(json.dumps(surface))
"""

NOT_OFFERED = {
    # The hosted service's account export and deletion formats: this gateway's
    # GET /users/me/export and DELETE /users/me answer differently (contract rest.md), and
    # no SDK method returns them.
    "APIKeyExportEntry",
    "DeleteUserDataResult",
    "UsageEventEntry",
    "UserExport",
    "UserExportUser",
}
BUILT_BY_THE_SDK = {"InboundEmail.__init__", "AsyncInboundEmail.__init__"}


def surface_mismatches(published: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What code written for the published SDK would find missing or incompatible in ours."""
    problems: list[str] = []
    for module in ("e2a", "e2a.v1"):
        for name, theirs in published[module].items():
            if name in NOT_OFFERED:
                continue
            mine = ours[module].get(name)
            if mine is None or mine["kind"] != theirs["kind"]:
                problems.append(f"{module}.{name}: missing")
                continue
            if theirs["kind"] == "function":
                problems += call_mismatches(f"{module}.{name}", theirs["params"], mine["params"])
                continue
            for field in set(theirs["fields"]) - set(mine["fields"]) - set(mine["members"]):
                problems.append(f"{module}.{name}.{field}: missing field")
            for member, signature in theirs["members"].items():
                label = f"{module}.{name}.{member}"
                if f"{name}.{member}" in BUILT_BY_THE_SDK:
                    continue
                if member not in mine["members"]:
                    problems.append(f"{label}: missing")
                elif signature is not None:
                    problems += call_mismatches(label, signature, mine["members"][member])
    return problems


def call_mismatches(label: str, theirs: list[Any], mine: list[Any] | None) -> list[str]:
    """A call valid for the published signature must be valid for ours, and mean the same."""
    if mine is None:
        return [f"{label}: not callable"]
    named = {name: (kind, default) for name, kind, default in mine}
    problems = [
        f"{label}({name}): missing parameter"
        for name, kind, _ in theirs
        if kind not in ("VAR_POSITIONAL", "VAR_KEYWORD") and name not in named
    ]
    positional = [name for name, kind, _ in theirs if kind == "POSITIONAL_OR_KEYWORD"]
    my_positional = [name for name, kind, _ in mine if kind == "POSITIONAL_OR_KEYWORD"]
    if my_positional[: len(positional)] != positional:
        problems.append(f"{label}: positional order {my_positional} != {positional}")
    optional = {name for name, _, default in theirs if default}
    problems += [
        f"{label}({name}): required here, optional there"
        for name, kind, default in mine
        if not default and name in optional
    ]
    known = {name for name, _, _ in theirs}
    problems += [
        f"{label}({name}): a new required parameter"
        for name, kind, default in mine
        if not default and name not in known and kind not in ("VAR_POSITIONAL", "VAR_KEYWORD")
    ]
    return problems


async def test_our_sdk_offers_every_name_of_the_published_one(sdk_python: Path) -> None:
    published = await run_sdk(sdk_python, DESCRIBE_SURFACE, {})
    with trio.fail_after(SDK_SECONDS):
        done = await trio.run_process(
            [sys.executable, "-c", DESCRIBE_SURFACE, "e2a_gateway"], cwd=ROOT, capture_stdout=True
        )
    ours = json.loads(done.stdout)
    assert ours["sdk"] == str(ROOT / "e2a_gateway" / "__init__.py")
    assert (
        "E2AApi" in published["e2a.v1"] and "parse" in published["e2a.v1"]["E2AClient"]["members"]
    )
    assert surface_mismatches(published, ours) == []
