"""Internationalised mail (RFC 6531/6532) reads back as it was written, on every surface.

One message with raw UTF-8 in its Subject, its From display name and its From address is sent
by smtplib with SMTPUTF8 to a live gateway, for a local and a cloud agent. REST, the WebSocket
frame, the webhook body, MCP, the dashboard, `e2a read` (a CLI subprocess) and the published
2.2.0 SDK all show the same Subject and sender (its domain as A-labels), and the signed
sender verifies.
"""

from __future__ import annotations

import base64
import html
import json
import os
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from tests.conftest import Account, agent_path, make_settings
from tests.delivery_support import create_agent, new_signing_secret
from tests.http_receiver import HttpReceiver
from tests.mcp_support import call
from tests.test_dashboard import sign_in
from tests.test_mcp_http import mcp_client
from tests.test_sdk_compat import SDK_VERSION, run_sdk
from tests.test_websocket import ws_url
from tests.venvs import cached_venv

SUBJECT = "Grüße 日本"
SENDER = "josé@exämple.org"
SHOWN = "josé@xn--exmple-cua.org"
"""The sender as every surface shows it: its domain as A-labels, as e2a stores domains."""
MESSAGE = (
    f'From: "José" <{SENDER}>\r\n'
    "To: intl@agents.test, intl-hook@agents.test\r\n"
    f"Subject: {SUBJECT}\r\n"
    "Message-ID: <intl-1@exämple.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Viele Grüße.\r\n"
).encode()
CLI_SECONDS = 30

PARSE_WEBHOOK = """
import base64, json, sys
import e2a
from e2a.v1 import E2AClient

request = json.load(sys.stdin)
email = E2AClient().parse_webhook(base64.b64decode(request["body"]), request["secret"])
print(json.dumps({
    "sdk": e2a.__file__,
    "sender": email.sender,
    "signed_sender": email.auth.sender,
    "subject": email.subject,
    "text_body": email.text_body,
}))
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, webhooks={"allow_private": True})


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """The published SDK in its own virtualenv (as tests/test_sdk_compat.py builds it)."""
    return cached_venv(f"sdk-{SDK_VERSION}", [f"e2a[ws]=={SDK_VERSION}"])


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> HttpReceiver:
    started = HttpReceiver()
    await nursery.start(started.serve)
    return started


def send_with_smtputf8(port: int, recipients: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mail.example.org")
        assert client.has_extn("smtputf8")
        refused = client.sendmail(SENDER, recipients, MESSAGE, mail_options=["SMTPUTF8"])
    assert refused == {}


def run_cli(running: RunningGateway, account: Account, home: Path, *args: str) -> str:
    """`e2a <args>` in a subprocess, as a user runs it; its stdout, read as UTF-8."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("E2A_")}
    env.update(
        HOME=str(home),
        LC_ALL="C.UTF-8",
        E2A_URL=running.addresses.http_url,
        E2A_API_KEY=account.key,
    )
    done = subprocess.run(
        [sys.executable, "-m", "e2a_gateway", *args],
        capture_output=True,
        env=env,
        timeout=CLI_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    return done.stdout.decode("utf-8")


async def test_utf8_headers_read_back_identically_everywhere(
    running: RunningGateway,
    make_account: Any,
    receiver: HttpReceiver,
    sdk_python: Path,
    tmp_path: Path,
) -> None:
    account: Account = await make_account("intl@example.com")
    secret = await new_signing_secret(account)
    local = await create_agent(account, "intl")
    cloud = await create_agent(account, "intl-hook", receiver.url)
    await trio.to_thread.run_sync(send_with_smtputf8, running.addresses.smtp_port, [local, cloud])

    # WebSocket: the unread message is the first frame.
    with trio.fail_after(10):
        async with open_websocket_url(ws_url(running, local, account.key)) as ws:
            frame = json.loads(await ws.get_message())
    assert (frame["subject"], frame["from"]) == (SUBJECT, SHOWN)

    # REST: the summary and the full message.
    listing = (await account.http.get(agent_path(local, "/messages"))).json()
    (summary,) = listing["messages"]
    assert (summary["subject"], summary["from"]) == (SUBJECT, SHOWN)
    message_id = summary["message_id"]
    full = (await account.http.get(agent_path(local, f"/messages/{message_id}"))).json()
    assert (full["subject"], full["from"]) == (SUBJECT, SHOWN)
    assert full["auth_headers"]["X-E2A-Auth-Sender"] == SHOWN
    assert base64.b64decode(full["raw_message"]).endswith(MESSAGE)
    assert full["text_body"] == "Viele Grüße.\n"

    # Webhook: the JSON body, the signed headers (HTTP headers carry them as UTF-8 octets),
    # and the published SDK verifies the claim.
    (hook,) = await receiver.wait_for(1)
    body = json.loads(hook.body)
    assert (body["subject"], body["from"]) == (SUBJECT, SHOWN)
    assert body["auth_headers"]["X-E2A-Auth-Sender"] == SHOWN
    assert hook.headers["x-e2a-auth-sender"].encode("latin-1").decode("utf-8") == SHOWN
    request = {"body": base64.b64encode(hook.body).decode(), "secret": secret}
    sdk = await run_sdk(sdk_python, PARSE_WEBHOOK, request)
    assert (sdk["subject"], sdk["sender"], sdk["signed_sender"]) == (SUBJECT, SHOWN, SHOWN)
    assert sdk["text_body"].strip() == "Viele Grüße."

    # MCP, through the official client.
    async with mcp_client(running, account.key, agent=local) as client:
        inbox = await call(client, "get_inbox", {"status": "all"})
        (item,) = inbox["messages"]
        assert (item["subject"], item["from"]) == (SUBJECT, SHOWN)
        email = await call(client, "read_email", {"message_id": message_id})
    assert (email["subject"], email["from"]) == (SUBJECT, SHOWN)
    assert email["verification"]["sender"] == SHOWN

    # The dashboard: the inbox row and the message page.
    async with httpx.AsyncClient(base_url=running.addresses.http_url, timeout=10) as browser:
        await sign_in(browser, account.key)
        inbox_page = await browser.get(f"/agents/{local}/inbox")
        page = await browser.get(f"/agents/{local}/inbox/{message_id}")
    for shown in (inbox_page, page):
        assert shown.status_code == 200
        text = html.unescape(shown.text)
        assert SUBJECT in text and SHOWN in text and "\ufffd" not in text
    assert f"<h1>{SUBJECT}</h1>" in html.unescape(page.text)

    # The CLI, as a user runs it.
    home = tmp_path / "home"
    home.mkdir()
    shown_text = await trio.to_thread.run_sync(
        lambda: run_cli(running, account, home, "read", message_id, "--agent", local)
    )
    shown = dict(
        line.split(":", 1) for line in shown_text.splitlines() if line[:1].isupper() and ":" in line
    )
    assert shown["Subject"].strip() == SUBJECT and shown["From"].strip() == SHOWN
    as_json = json.loads(
        await trio.to_thread.run_sync(
            lambda: run_cli(running, account, home, "read", message_id, "--agent", local, "--json")
        )
    )
    assert (as_json["subject"], as_json["from"]) == (SUBJECT, SHOWN)
