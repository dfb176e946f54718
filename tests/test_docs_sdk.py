"""The Python examples of docs/sdk.md run as written, in the order the page gives them, against
a live gateway with a relay on loopback: only the page's placeholders (the key, the gateway's
URL, its shared domain) are replaced, and the names an example leaves to its reader
(`pdf_bytes`, `secret`, `client`) are given. An example that raises fails the test, and so does
a new one this test does not know how to run."""

from __future__ import annotations

import ast
import base64
import json
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from e2a_gateway.v1 import AsyncE2AClient, E2AClient
from tests.cli_support import CLIENT_VARIABLES, LiveGateway, serve_live, wait_until
from tests.conftest import SHARED_DOMAIN, make_settings
from tests.relay_support import Sink, relay_port, sink  # noqa: F401

SDK_MD = Path(__file__).resolve().parent.parent / "docs" / "sdk.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
AGENT = f"helpdesk@{SHARED_DOMAIN}"
PDF = b"%PDF-1.4 the invoice"


@pytest.fixture
def gateway(tmp_path: Path, relay_port: int) -> Iterator[LiveGateway]:  # noqa: F811
    """A gateway whose mail to the outside world goes to the `sink` relay."""
    relay = {"host": "127.0.0.1", "port": relay_port, "tls": "none"}
    yield from serve_live(make_settings(tmp_path, outbound_smtp=relay))


def placeholders_replaced(code: str, live: LiveGateway, key: str) -> str:
    """The example with the page's placeholders standing for this gateway."""
    return (
        code.replace('"e2a_…"', repr(key))
        .replace("https://mail.example.com", live.url)
        .replace("@agents.example", f"@{SHARED_DOMAIN}")
    )


def mail_to(live: LiveGateway, recipient: str, subject: str) -> None:
    """A message with a PDF attachment, from alice@example.org over SMTP."""
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content("Please see the attachment.")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="a.pdf")
    with smtplib.SMTP("127.0.0.1", live.running.addresses.smtp_port, timeout=10) as smtp:
        smtp.send_message(message)


def run_statements(code: str, namespace: dict[str, Any], live: LiveGateway) -> None:
    """Run a synchronous example statement by statement; once it has registered the agent,
    mail arrives for it, so the loops over the inbox that follow have something to do."""
    for statement in ast.parse(code).body:
        exec(compile(ast.Module([statement], []), "docs/sdk.md", "exec"), namespace)
        if "register_agent(" in ast.unparse(statement) and "email=" not in ast.unparse(statement):
            mail_to(live, AGENT, "Invoice 7")


def run_until_handled(code: str, namespace: dict[str, Any]) -> None:
    """Run an example written with a top-level `await` (a fragment of an async function) under
    trio, until it has fetched the mail it waits for (`email` set); its loop never ends by
    itself."""
    compiled = compile(code, "docs/sdk.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def main() -> None:
        async with AsyncE2AClient() as client:
            namespace["client"] = client
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:

                    async def example() -> None:
                        await eval(compiled, namespace)

                    nursery.start_soon(example)
                    # The example names its mail `email` in its own namespace: nothing to wait on
                    # but the name's arrival.
                    while "email" not in namespace:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_python_examples_of_sdk_md_run_as_written(
    gateway: LiveGateway,
    sink: Sink,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = gateway
    key = live.new_key("owner@example.com")
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in (("E2A_API_KEY", key), ("E2A_BASE_URL", live.url)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("E2A_AGENT_EMAIL", AGENT)
    # The signing secret a webhook receiver keeps (docs/sdk.md, "Webhooks"), made before the
    # mail it is to verify arrives.
    made = httpx.post(
        f"{live.url}/api/v1/users/me/signing-secrets",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    secret = made.json()["secret"]

    blocks = [placeholders_replaced(code, live, key) for code in BLOCK.findall(SDK_MD.read_text())]
    assert len(blocks) == 7, "docs/sdk.md's examples changed: teach this test the new ones"
    quick_start, asynchronous, listening, webhooks, approvals, raw_api, errors = blocks
    namespace: dict[str, Any] = {"pdf_bytes": PDF, "secret": secret}

    run_statements(quick_start, namespace, live)
    assert any(b"Thanks, we are on it." in raw for _, _, raw in sink.received)
    assert any(b"Subject: Your invoice" in raw for _, _, raw in sink.received)

    mail_to(live, AGENT, "Async")
    run_statements(asynchronous, {}, live)
    assert sum(b"Received." in raw for _, _, raw in sink.received) == 1

    mail_to(live, AGENT, "Listened")
    listened: dict[str, Any] = {}
    run_until_handled(listening, listened)
    assert listened["email"].subject == "Listened"

    mail_to(live, AGENT, "Signed")
    hooked: dict[str, Any] = {"secret": secret}
    run_statements(webhooks, hooked, live)
    client = E2AClient()
    (summary,) = client.get_messages().messages
    body = httpx.get(
        f"{live.url}/api/v1/agents/{quote(AGENT)}/messages/{summary.message_id}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert hooked["handle"](body.content) == 200
    forged = body.json()
    raw = base64.b64decode(forged["raw_message"]).replace(b"Signed", b"Forged")
    forged["raw_message"] = base64.b64encode(raw).decode()
    assert hooked["handle"](json.dumps(forged).encode()) == 401

    namespace["client"] = client
    run_statements(approvals, namespace, live)
    wait_until(lambda: any(b"Subject: Quote (revised)" in raw for _, _, raw in sink.received))
    run_statements(raw_api, {}, live)
    run_statements(errors, namespace, live)
