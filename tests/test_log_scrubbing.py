"""Nothing secret reaches the logs: a gateway run at DEBUG (every logger, every library) through
SMTP ingest, webhook delivery, REST reads, an agent-to-agent send and refused credentials
never logs a message body, an API key, a signing secret or the server key."""

from __future__ import annotations

import base64
import contextlib
import email
import json
import logging
import os
import re
import secrets
import signal
import smtplib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from trio_websocket import HandshakeError, open_websocket_url

from e2a_gateway.app import RunningGateway
from e2a_gateway.config import Settings
from e2a_gateway.logs import JsonFormatter
from tests.conftest import Account, agent_path, make_settings
from tests.databases import gateway_backend, gateway_database_url
from tests.delivery_support import (
    create_agent,
    mail,
    new_signing_secret,
    smtp_send,
    wait_for_status,
    wait_until,
)
from tests.dns_server import serve_dns
from tests.http_receiver import Answer, HttpReceiver
from tests.relay_support import Sink, free_port
from tests.test_dashboard import csrf_token

SERVER_KEY = secrets.token_hex(32)
INBOUND_MARKER = f"inbound-body-{secrets.token_hex(8)}"
OUTBOUND_MARKER = f"outbound-body-{secrets.token_hex(8)}"
WRONG_KEY = f"e2a_{secrets.token_hex(20)}"
E2A = [sys.executable, "-m", "e2a_gateway"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A known server key, debug logging, webhooks allowed to the loopback receiver."""
    return make_settings(
        tmp_path,
        signing={"hmac_secret": SERVER_KEY},
        log={"level": "debug"},
        webhooks={"allow_private": True},
    )


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger at DEBUG and above."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="e2a")
    return caplog


def rendered(records: list[logging.LogRecord]) -> str:
    """The records as the text and the JSON formats write them, tracebacks included."""
    text, json_lines = logging.Formatter("%(name)s %(message)s"), JsonFormatter()
    return "\n".join(f"{text.format(r)}\n{json_lines.format(r)}" for r in records)


async def test_bodies_keys_and_secrets_never_reach_the_logs(
    running: RunningGateway,
    make_account: Any,
    nursery: trio.Nursery,
    everything_logged: pytest.LogCaptureFixture,
) -> None:
    receiver = HttpReceiver()
    await nursery.start(receiver.serve)
    alice: Account = await make_account("alice@example.com")
    signing_secret = await new_signing_secret(alice)
    cloud = await create_agent(alice, "cloud", receiver.url)
    local = await create_agent(alice, "local")

    data = mail("Scrub check", body=f"The secret word is {INBOUND_MARKER}.")
    await smtp_send(running.addresses.smtp_port, [cloud, local], data)
    (delivered,) = await receiver.wait_for(1)
    payload = json.loads(delivered.body)
    assert INBOUND_MARKER.encode() in base64.b64decode(payload["raw_message"])  # it went through
    listing = await alice.http.get(f"{agent_path(local)}/messages?status=all")
    (message,) = listing.json()["messages"]
    read = await alice.http.get(f"{agent_path(local)}/messages/{message['message_id']}")
    assert INBOUND_MARKER in read.text

    sent = await alice.http.post(
        "/api/v1/send",
        json={"from": cloud, "to": [local], "subject": "Internal", "body": OUTBOUND_MARKER},
    )
    assert sent.status_code in (200, 202), sent.text

    async def arrived() -> bool:
        page = await alice.http.get(f"{agent_path(local)}/messages?status=all")
        return len(page.json()["messages"]) == 2

    await wait_until(arrived)
    await wait_for_status(alice, cloud, payload["message_id"], "delivered")
    async with httpx.AsyncClient(base_url=running.addresses.http_url) as stranger:
        refused = await stranger.get(
            "/api/v1/agents", headers={"Authorization": f"Bearer {WRONG_KEY}"}
        )
    assert refused.status_code == 401

    logged = rendered(everything_logged.records)
    assert "SMTP session" in logged and "webhook" in logged  # the run was logged at all
    for secret in (INBOUND_MARKER, OUTBOUND_MARKER, alice.key, WRONG_KEY, signing_secret):
        assert secret not in logged
    assert SERVER_KEY not in logged


# --- `e2a serve` as operators run it: its whole stderr, at DEBUG, through every face ---------


def marker(what: str) -> str:
    """A value found nowhere but where the test put it."""
    return f"{what}-{secrets.token_hex(8)}"


@dataclass
class Served:
    """An `e2a serve` process and where it listens; its stderr goes to `log`."""

    config: Path
    log: Path
    smtp_port: int
    http_url: str
    process: subprocess.Popen[bytes]


def with_password(url: str, password: str) -> str:
    """`url` (postgresql://user@host/db) with `password` in it; a SQLite URL as it is."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return url
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def served_config(
    tmp_path: Path, database_url: str, dns_port: int, relay_port: int, relay_password: str
) -> tuple[Path, int, int]:
    """A config at the most verbose level the gateway has, relaying with AUTH."""
    smtp_port, http_port = free_port(), free_port()
    path = tmp_path / "e2a.toml"
    path.write_text(
        'shared_domain = "agents.test"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\nhostname = "mx.agents.test"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'public_url = "http://127.0.0.1:{http_port}"\n'
        f"[database]\nurl = {json.dumps(database_url)}\n"
        f'[signing]\nhmac_secret = "{SERVER_KEY}"\n'
        f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\ntimeout_seconds = 1\n'
        f'[outbound_smtp]\nhost = "127.0.0.1"\nport = {relay_port}\ntls = "none"\n'
        f'username = "relay-user"\npassword = "{relay_password}"\ntimeout_seconds = 10\n'
        "[webhooks]\nallow_private = true\n"
        '[log]\nlevel = "debug"\nformat = "json"\n'
        "[limits]\nagent_registrations_per_ip_per_hour = 100000\n"
        "message_polls_per_user_per_minute = 100000\n"
    )
    return path, smtp_port, http_port


def spawn_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `e2a serve --config config` with its stderr written to `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [*E2A, "serve", "--config", str(config)],
            cwd=config.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@asynccontextmanager
async def served_gateway(
    tmp_path: Path, database_url: str, dns_port: int, relay_port: int, relay_password: str
) -> AsyncIterator[Served]:
    """`e2a serve` on a fresh config, once healthy; stopped by SIGTERM (then killed) on exit."""
    config, smtp_port, http_port = served_config(
        tmp_path, database_url, dns_port, relay_port, relay_password
    )
    log = tmp_path / "stderr.log"
    process = spawn_serve(config, log)
    served = Served(config, log, smtp_port, f"http://127.0.0.1:{http_port}", process)
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            with trio.fail_after(60):
                while True:
                    assert process.poll() is None, log.read_text()
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{served.http_url}/api/health")).status_code == 200:
                            break
                    await trio.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await trio.to_thread.run_sync(lambda: process.wait(timeout=20))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def bootstrapped_key(served: Served, email: str) -> tuple[str, str]:
    """`e2a bootstrap --email`: the key it prints on stdout, and what it wrote to stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    done = subprocess.run(
        [*E2A, "bootstrap", "--email", email, "--config", str(served.config)],
        cwd=served.config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


@dataclass
class AuthSink(Sink):
    """A relay sink that takes only `relay-user` with `password` (AUTH over plain text, as a
    relay on the loopback may)."""

    password: str = ""

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Accept the one username and password."""
        expected = (b"relay-user", self.password.encode())
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            expected
        )
        return AuthResult(success=ok, handled=False)


@contextlib.contextmanager
def auth_relay(sink: AuthSink) -> Iterator[int]:
    """Serve `sink` on the loopback, requiring AUTH before MAIL."""
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=sink.authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def with_attachment(subject: str, body: str, filename: str, content: str) -> bytes:
    """A multipart message from alice@example.org carrying a text attachment."""
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "someone@agents.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{secrets.token_hex(8)}@example.org>"
    message.set_content(body)
    message.add_attachment(content.encode(), "text", "plain", filename=filename)
    return message.as_bytes(policy=SMTP)


def returned_mail(return_path: str, recipient: str, quoted_body: str) -> bytes:
    """An RFC 3464 report of a permanent failure that quotes the message it returns."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        f"--b1\r\nContent-Type: text/plain\r\n\r\n{quoted_body}\r\n--b1--\r\n"
    ).encode()


async def until(check: Any, what: str, seconds: float = 30) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy."""
    with trio.fail_after(seconds):
        while True:
            found = check()
            if hasattr(found, "__await__"):
                found = await found
            if found:
                return found
            await trio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_served_gateway_logs_no_secret_at_debug(tmp_path: Path) -> None:
    """Every secret, credential and piece of content a realistic run handles stays out of
    `e2a serve`'s stderr at `log.level = "debug"`, tracebacks and structured fields included."""
    private = {
        name: marker(name)
        for name in (
            "relay-password",
            "database-password",
            "hook-query-secret",
            "receiver-answer",
            "inbound-body",
            "inbound-subject",
            "attachment-text",
            "attachment-name",
            "outbound-body",
            "outbound-subject",
            "held-body",
            "held-subject",
            "bounce-quoted-body",
            "mcp-body",
            "ws-wrong-token",
        )
    }
    private["wrong-key"] = WRONG_KEY
    private["server-key"] = SERVER_KEY
    sink = AuthSink(password=private["relay-password"])
    database_url = with_password(gateway_database_url(tmp_path), private["database-password"])
    hook_answers = iter([Answer(500, body=private["receiver-answer"].encode())])
    receiver = HttpReceiver(lambda _: next(hook_answers, Answer(200)))
    with auth_relay(sink) as relay_port:
        async with trio.open_nursery() as nursery:
            dns_port = await nursery.start(serve_dns, {})
            await nursery.start(receiver.serve)
            async with served_gateway(
                tmp_path, database_url, dns_port, relay_port, private["relay-password"]
            ) as served:
                bootstrap_log = await run_the_flow(served, sink, receiver, private)
            nursery.cancel_scope.cancel()
    logged = served.log.read_text() + bootstrap_log
    assert "SMTP session" in logged and "webhook" in logged and "outbound" in logged, logged
    leaked = {name: value for name, value in private.items() if value in logged}
    assert not leaked, "\n".join(
        f"{name}: {line}"
        for name, value in leaked.items()
        for line in logged.splitlines()
        if value in line
    )


async def run_the_flow(
    served: Served, sink: AuthSink, receiver: HttpReceiver, private: dict[str, str]
) -> str:
    """Drive `served` through a realistic day, recording each secret it hands out in
    `private`; return what `e2a bootstrap` wrote to stderr."""
    key, bootstrap_log = await trio.to_thread.run_sync(
        bootstrapped_key, served, "owner@example.com"
    )
    private["api-key"] = key
    async with httpx.AsyncClient(
        base_url=served.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        second = await http.post("/api/v1/users/me/api-keys", json={"name": "second"})
        assert second.status_code == 201, second.text
        private["second-api-key"] = second.json()["key"]
        secret = await http.post("/api/v1/users/me/signing-secrets", json={"name": "s"})
        assert secret.status_code == 201, secret.text
        private["signing-secret"] = secret.json()["secret"]
        hook_url = f"{receiver.url}?secret={private['hook-query-secret']}"
        made = await http.post(
            "/api/v1/agents", json={"slug": "cloud", "agent_mode": "cloud", "webhook_url": hook_url}
        )
        assert made.status_code == 201, made.text
        cloud = made.json()["email"]
        made = await http.post("/api/v1/agents", json={"slug": "held", "agent_mode": "local"})
        assert made.status_code == 201, made.text
        held = made.json()["email"]
        turned = await http.put(agent_path(held), json={"hitl_enabled": True})
        assert turned.status_code == 200, turned.text
        webhook = await http.post(
            "/v1/webhooks", json={"url": hook_url, "events": ["email.received"]}
        )
        assert webhook.status_code == 201, webhook.text
        private["v1-webhook-secret"] = webhook.json()["signing_secret"]

        # Inbound mail with a secret body, subject and attachment, to a webhook that first
        # answers 500 (with a secret in its answer), then 200; and to a WebSocket listener.
        base = served.http_url.replace("http://", "ws://")
        socket_url = f"{base}{agent_path(held)}/ws?token={key}"
        async with open_websocket_url(socket_url, connect_timeout=10) as listener:
            data = with_attachment(
                private["inbound-subject"],
                f"The secret word is {private['inbound-body']}.",
                f"{private['attachment-name']}.txt",
                private["attachment-text"],
            )
            await smtp_send(served.smtp_port, [cloud, held], data)
            with trio.fail_after(30):
                notified = json.loads(await listener.get_message())
            assert notified["message_id"]
        with pytest.raises(HandshakeError):
            wrong = f"{base}{agent_path(held)}/ws?token={private['ws-wrong-token']}"
            async with open_websocket_url(wrong, connect_timeout=10):
                pass
        await until(lambda: len(receiver.requests) >= 3, "the webhook retried and delivered")

        # An outbound send through the relay (AUTH with the relay password).
        sent = await http.post(
            "/api/v1/send",
            json={
                "from": cloud,
                "to": ["bob@example.net"],
                "subject": private["outbound-subject"],
                "body": private["outbound-body"],
            },
        )
        assert sent.status_code in (200, 202), sent.text
        await until(lambda: any("bob@example.net" in r for _, r, _ in sink.received), "relayed")

        # A held send: the notice goes to the owner, its magic link approves it.
        heldsend = await http.post(
            "/api/v1/send",
            json={
                "from": held,
                "to": ["carol@example.net"],
                "subject": private["held-subject"],
                "body": private["held-body"],
            },
        )
        assert heldsend.status_code == 202, heldsend.text
        notice = await until(
            lambda: next((raw for _, r, raw in sink.received if "owner@example.com" in r), None),
            "the approval notice",
        )
        text = email.message_from_bytes(notice, policy=default).get_body(("plain",))
        assert text is not None
        links = re.findall(r"/api/v1/(approve|reject)\?token=(\S+)", text.get_content())
        tokens = dict(links)
        private["approve-token"], private["reject-token"] = tokens["approve"], tokens["reject"]
        page = await http.get("/api/v1/approve", params={"token": tokens["approve"]})
        assert page.status_code == 200
        done = await http.post("/api/v1/approve", data={"token": tokens["approve"]})
        assert done.status_code == 200, done.text
        return_path = await until(
            lambda: next((path for path, r, _ in sink.received if "carol@example.net" in r), None),
            "the approved send relayed",
        )

        # The remote MTA returns it: a bounce quoting the body.
        report = returned_mail(return_path, "carol@example.net", private["bounce-quoted-body"])
        await smtp_send(served.smtp_port, [return_path], report, sender="")

        # A refused key; a dashboard sign-in; MCP calls.
        async with httpx.AsyncClient(base_url=served.http_url, timeout=10) as stranger:
            refused = await stranger.get(
                "/api/v1/agents", headers={"Authorization": f"Bearer {WRONG_KEY}"}
            )
            assert refused.status_code == 401
            form = await stranger.get("/signin")
            bad = {"api_key": WRONG_KEY, "csrf_token": csrf_token(form.text)}
            assert (await stranger.post("/signin", data=bad)).status_code in (400, 401, 403)
            form = await stranger.get("/signin")
            signin = await stranger.post(
                "/signin", data={"api_key": key, "csrf_token": csrf_token(form.text)}
            )
            assert signin.status_code in (302, 303), signin.text
            for name, value in stranger.cookies.items():
                private[f"cookie {name}"] = value
            assert (await stranger.get("/agents")).status_code == 200
            mcp = {"Accept": "application/json, text/event-stream"}
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {
                    "name": "send_message",
                    "arguments": {
                        "email": cloud,
                        "to": ["dave@example.net"],
                        "subject": "mcp",
                        "text": private["mcp-body"],
                    },
                },
            }
            answered = await http.post("/mcp", json=call, headers=mcp)
            assert answered.status_code == 200, answered.text
            refused = await stranger.post(
                "/mcp", json=call, headers=mcp | {"Authorization": f"Bearer {WRONG_KEY}"}
            )
            assert refused.status_code == 401
        await until(lambda: any("dave@example.net" in r for _, r, _ in sink.received), "mcp")
    return bootstrap_log


async def test_a_refused_write_on_postgresql_logs_no_stored_data(
    running: RunningGateway, make_account: Any, everything_logged: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL quotes the row it refused ("DETAIL: Failing row contains (…)"): a message
    whose store fails logs why, never the subject or body it was storing."""
    if gateway_backend() != "postgres":
        pytest.skip("SQLite's errors quote no data; this is about PostgreSQL's")
    alice: Account = await make_account("alice@example.com")
    local = await create_agent(alice, "local")
    subject, body = marker("refused-subject"), marker("refused-body")
    with psycopg.connect(running.gateway.settings.database.url, autocommit=True) as database:
        database.execute(
            "ALTER TABLE messages ADD CONSTRAINT no_refused CHECK "
            "(position('refused-subject' in subject) = 0)"
        )
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await smtp_send(running.addresses.smtp_port, [local], mail(subject, body=body))
    assert refused.value.smtp_code == 451
    logged = rendered(everything_logged.records)
    assert "no_refused" in logged  # the reason is logged
    for secret in (subject, body, body.encode().hex()):
        assert secret not in logged, logged
