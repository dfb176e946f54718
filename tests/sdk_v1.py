"""The official SDK of e2a's current API (`e2a==5.8.1`, `from e2a.v1 import E2AClient`), driven
against a live gateway of the suite's fixtures, so it runs on whichever backend they use.

The SDK's package is also called `e2a`, so it lives in its own virtualenv (tests/venvs.py, or
the one E2A_SDK5_PYTHON names) and runs in a subprocess in isolated mode (`-I`). A test hands
it a list of steps — SDK calls such as `agents.create` with their arguments — and gets back, per
step, the SDK's typed answer (its class name and `to_dict()`) or the typed error it raised:
what a user of the SDK would see. A string `${name.a.b}` in a step's arguments stands for a
field of an earlier step's answer saved `as` `name`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.venvs import cached_venv

SDK_VERSION = "5.8.1"
SDK_PYTHON_VAR = "E2A_SDK5_PYTHON"
SDK_SECONDS = 120


@pytest.fixture(scope="session")
def sdk5_python() -> Path:
    """A python interpreter with e2a[ws]==5.8.1 installed, apart from this project (or the one
    named by E2A_SDK5_PYTHON)."""
    configured = os.environ.get(SDK_PYTHON_VAR)
    if configured:
        return Path(configured)
    return cached_venv(f"sdk-{SDK_VERSION}", [f"e2a[ws]=={SDK_VERSION}"])


DRIVER = r"""
import json, re, sys
import e2a
from e2a.v1 import E2AClient, E2AError
from e2a.v1.sync_client import SyncAutoPager

request = json.load(sys.stdin)
clients = {
    name: E2AClient(api_key=key, base_url=request["base_url"], max_retries=0)
    for name, key in request["keys"].items()
}
saved = {}
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+)*)\}")

def resolve(value):
    if isinstance(value, str):
        found = REFERENCE.fullmatch(value)
        if found:
            current = saved[found.group(1)]
            for part in found.group(2).split(".")[1:]:
                current = current[int(part)] if isinstance(current, list) else current[part]
            return current
        return value
    if isinstance(value, list):
        return [resolve(item) for item in value]
    if isinstance(value, dict):
        return {key: resolve(item) for key, item in value.items()}
    return value

def plain(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value

results = []
for step in request["steps"]:
    target = clients[step.get("key", "default")]
    for part in step["do"].split("."):
        target = getattr(target, part)
    try:
        answer = target(*resolve(step.get("args", [])), **resolve(step.get("kwargs", {})))
        if isinstance(answer, SyncAutoPager):
            answer = answer.to_list(limit=step.get("limit", 1000))
            kind = [type(item).__name__ for item in answer]
        else:
            kind = type(answer).__name__
        result = {"type": kind, "value": json.loads(json.dumps(plain(answer), default=str))}
    except E2AError as exc:
        result = {"error": {
            "class": type(exc).__name__, "code": exc.code, "status": exc.status,
            "message": exc.message, "request_id": exc.request_id, "details": exc.details,
        }}
    if "as" in step and "value" in result:
        saved[step["as"]] = result["value"]
    results.append(result)
for client in clients.values():
    client.close()
from importlib.metadata import version
print(json.dumps({"sdk": e2a.__file__, "version": version("e2a"), "results": results}))
"""


async def run_sdk(
    python: Path, base_url: str, keys: dict[str, str], steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run `steps` with the SDK against `base_url` (`keys` by name; a step without `key` uses
    `default`); per step, `{"type", "value"}` or `{"error": {class, code, status, …}}`."""
    request = {"base_url": base_url, "keys": keys, "steps": steps}
    with trio.fail_after(SDK_SECONDS):
        done = await trio.run_process(
            [str(python), "-I", "-c", DRIVER],
            stdin=json.dumps(request).encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    answer: dict[str, Any] = json.loads(done.stdout)
    if not os.environ.get(SDK_PYTHON_VAR):
        assert str(python.parent.parent) in answer["sdk"]  # the SDK's e2a, not ours
    assert answer["version"] == SDK_VERSION, answer["version"]
    results: list[dict[str, Any]] = answer["results"]
    assert len(results) == len(steps)
    return results


def value(result: dict[str, Any], kind: str | None = None) -> Any:
    """The answer of a step that must have succeeded (as the SDK's class `kind`, if given)."""
    assert "error" not in result, result["error"]
    if kind is not None:
        assert result["type"] == kind, result
    return result["value"]


def error(result: dict[str, Any], kind: str, code: str, status: int) -> dict[str, Any]:
    """The error of a step that must have failed with the SDK's error class `kind`, `code` and
    `status`; the SDK read the request id of the answer."""
    assert "error" in result, result
    found: dict[str, Any] = result["error"]
    assert (found["class"], found["code"], found["status"]) == (kind, code, status), found
    assert found["request_id"], found
    return found


VERIFIER = r"""
import json, sys
from e2a.v1 import construct_event, E2AError

request = json.load(sys.stdin)
results = []
for item in request["deliveries"]:
    try:
        event = construct_event(
            item["body"].encode("utf-8"), item["header"], item["secret"], now=item.get("now")
        )
        results.append({"type": event.type, "id": event.id, "data": event.data})
    except E2AError as exc:
        results.append({"error": exc.code})
print(json.dumps(results))
"""


async def construct_events(python: Path, deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Verify and parse webhook deliveries with the SDK's `construct_event`: each of
    `deliveries` names the raw `body` (text), the `X-E2A-Signature` `header`, the `secret` (or
    secrets) to verify with and, optionally, the verifier's `now`. Per delivery, the event's
    `{type, id, data}` or `{"error": code}`."""
    with trio.fail_after(SDK_SECONDS):
        done = await trio.run_process(
            [str(python), "-I", "-c", VERIFIER],
            stdin=json.dumps({"deliveries": deliveries}).encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results
