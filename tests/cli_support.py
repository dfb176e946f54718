"""What the CLI tests share: a live gateway in a background thread, the CLI run in-process
with a temporary HOME, fresh logged-in accounts, and a local HTTP server standing in for a
forward target (an OpenAI Responses API answer to every POST).
"""

from __future__ import annotations

import itertools
import json
import queue
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.app import RunningGateway, run_gateway
from e2a_gateway.cli.main import main
from e2a_gateway.mailauth.resolver import FixtureResolver
from e2a_gateway.v1 import E2AClient
from tests.conftest import make_settings

CLIENT_VARIABLES = (
    "E2A_URL",
    "E2A_BASE_URL",
    "E2A_API_KEY",
    "E2A_AGENT_EMAIL",
    "E2A_SHARED_DOMAIN",
)

SENDER = "alice@example.org"
DOMAIN = "agents.test"
_serial = itertools.count(1)


@dataclass
class LiveGateway:
    """A gateway running in its own thread."""

    running: RunningGateway
    token: trio.lowlevel.TrioToken

    @property
    def url(self) -> str:
        """The HTTP base URL."""
        return self.running.addresses.http_url

    def new_key(self, email: str) -> str:
        """A fresh API key for the user `email` (created when new)."""
        gateway = self.running.gateway
        _, issued, _ = trio.from_thread.run(
            bootstrap_user, gateway.storage, gateway.server_key, email, trio_token=self.token
        )
        return str(issued.plaintext)

    def send_mail(self, recipient: str, subject: str, body: str) -> None:
        """Deliver a plain message over real SMTP."""
        message = EmailMessage()
        message["From"] = f"Alice <{SENDER}>"
        message["To"] = recipient
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP("127.0.0.1", self.running.addresses.smtp_port, timeout=10) as smtp:
            smtp.ehlo("mail.example.org")
            assert smtp.send_message(message, SENDER, [recipient]) == {}


async def _serve(settings: Any, ready: queue.Queue[Any]) -> None:
    async with trio.open_nursery() as nursery:
        running = await nursery.start(partial(run_gateway, settings, resolver=FixtureResolver()))
        ready.put((running, trio.lowlevel.current_trio_token(), nursery.cancel_scope))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """One gateway for the module, served from a background thread."""
    yield from serve_live(make_settings(tmp_path_factory.mktemp("cli")))


def serve_live(settings: Any) -> Iterator[LiveGateway]:
    """A gateway on `settings` served from a background thread until the generator closes."""
    ready: queue.Queue[Any] = queue.Queue()
    thread = threading.Thread(target=trio.run, args=(_serve, settings, ready), daemon=True)
    thread.start()
    running, token, scope = ready.get(timeout=30)
    yield LiveGateway(running, token)
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(timeout=30)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME and none of the variables the CLI reads, so only the test's config
    file counts."""
    for name in (*CLIENT_VARIABLES, "VISUAL", "EDITOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


@dataclass
class Cli:
    """Runs `e2a …` in-process and returns (exit code, stdout, stderr)."""

    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(args))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *args: str, expect: int = 0) -> Any:
        """Run with --json, require exit code `expect` (success) and decode stdout."""
        code, out, err = self(*args, "--json")
        assert code == expect, err
        return json.loads(out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    """The CLI with a temporary home."""
    return Cli(capsys)


@dataclass
class Account:
    """A logged-in user: its key and a unique prefix for agent slugs."""

    key: str
    prefix: str


@pytest.fixture
def account(live: LiveGateway, cli: Cli) -> Account:
    """A fresh user, logged in through `e2a login`."""
    prefix = f"cli{next(_serial)}"
    key = live.new_key(f"{prefix}@example.com")
    code, _, err = cli("login", "--url", live.url, "--api-key", key)
    assert code == 0, err
    return Account(key, prefix)


def wait_until(check: Callable[[], bool]) -> None:
    """Poll until `check()` holds (local delivery is asynchronous)."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def unread(live: LiveGateway, key: str, agent: str) -> int:
    """How many unread messages `agent` has, through the SDK."""
    with E2AClient(api_key=key, base_url=live.url) as client:
        return len(client.get_messages(agent_email=agent).messages)


@dataclass
class Recorded:
    """One request the fake forward target received."""

    path: str
    authorization: str | None
    body: Any


class FakeTarget:
    """A local HTTP server that records POSTs and answers like the OpenAI Responses API:
    `answer` as JSON (or as it is, when bytes) with status 200, unless `script` holds
    (status, answer) pairs still to give, one per request."""

    def __init__(self, answer: dict[str, Any] | bytes) -> None:
        self.requests: list[Recorded] = []
        self.script: list[tuple[int, dict[str, Any] | bytes]] = []
        self.on_post: Callable[[Recorded], None] | None = None
        """Called with each request before it is answered."""
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                auth = self.headers.get("Authorization")
                target.requests.append(Recorded(self.path, auth, body))
                if target.on_post is not None:
                    target.on_post(target.requests[-1])
                status, given = target.script.pop(0) if target.script else (200, answer)
                payload = given if isinstance(given, bytes) else json.dumps(given).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/v1/responses") -> str:
        """Where to forward: the Responses API path unless another is given."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        """Stop the server."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[FakeTarget]:
    """A fake Responses API whose model always answers the same text."""
    answer = {
        "id": "resp_1",
        "object": "response",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Model says hi."}],
            }
        ],
    }
    fake = FakeTarget(answer)
    yield fake
    fake.close()
