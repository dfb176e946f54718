"""README.md's "Five minutes with e2a" runs as written, in order, against a live gateway on the
README's shared domain: `e2a bootstrap` on the gateway's database, each `curl` as an HTTP
request, and the mail sent in over SMTP with the README's own Python line. Only the host and
port (`localhost:8080`, `127.0.0.1:2525`) are the test gateway's, and `<message_id>`/`<id>` are
the ids the answers before them gave; the mail `swaks` sends goes with the README's Python
line for it. Every request must succeed, and where a line's comment
names the answer (`# 202 pending_approval`), that is the answer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2a_gateway.cli.main import main
from tests.cli_support import LiveGateway, serve_live
from tests.conftest import make_settings
from tests.test_docs import SHELL_LANGUAGES, _command_lines, _curl_requests, fenced_blocks

README = Path(__file__).resolve().parent.parent / "README.md"
SHARED_DOMAIN = "agents.localhost"
"""The README's (`make run`'s) shared domain."""
EXPECTED = re.compile(r"#\s*(\d{3}) ([a-z_]+)")
"""A comment naming a request's answer: its status code and the body's `status`."""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    yield from serve_live(make_settings(tmp_path, shared_domain=SHARED_DOMAIN))


def five_minutes() -> list[str]:
    """The shell commands of the README's "Five minutes with e2a" section, in order, but the
    `make run` the section starts with (the test's gateway stands for it)."""
    text = README.read_text(encoding="utf-8")
    section = text.partition("## Five minutes with e2a")[2].partition("\n## ")[0]
    commands = [
        command
        for language, block in fenced_blocks(section)
        if language in SHELL_LANGUAGES
        for command in _command_lines(block, console=False)
    ]
    return [command for command in commands if command != "make run"]


def bootstrap(
    command: str,
    gateway: LiveGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Run the README's `KEY=$(… e2a bootstrap …)` on the gateway's database; the key."""
    arguments = re.fullmatch(r"KEY=\$\(\S*e2a (bootstrap [^)]*)\)", command)
    assert arguments, command
    database = gateway.running.gateway.settings.database.url
    monkeypatch.setenv("E2A_DATABASE_URL", database)
    monkeypatch.setenv("E2A_SHARED_DOMAIN", SHARED_DOMAIN)
    capsys.readouterr()
    assert main(arguments.group(1).split()) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("e2a_"), key
    return key


def last_id(answer: object, previous: str) -> str:
    """The message id an answer names (a list's last message), else `previous`."""
    if not isinstance(answer, dict):
        return previous
    messages = answer.get("messages")
    if isinstance(messages, list) and messages:
        return str(messages[-1].get("message_id") or messages[-1]["id"])
    return str(answer.get("message_id", previous))


def test_the_readme_five_minutes_run_as_written(
    gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = five_minutes()
    host = gateway.url.removeprefix("http://")
    smtp_port = str(gateway.running.addresses.smtp_port)
    key = ""
    message_id = ""
    requests = 0
    mailed = False
    for command in commands:
        if "e2a bootstrap" in command:
            key = bootstrap(command, gateway, monkeypatch, capsys)
            continue
        if command.startswith("swaks"):  # sent with the README's Python line for it instead
            (python,) = [line for line in commands if "python -c" in line]
            code = re.search(r"-c '(.*)'", python, re.DOTALL)
            assert code, python
            exec(code.group(1).replace("2525", smtp_port), {})
            mailed = True
            continue
        if "python -c" in command:
            assert mailed, "the README's Python line stands for a swaks it no longer has"
            continue
        filled = command.replace("<message_id>", message_id).replace("<id>", message_id)
        filled = filled.replace("localhost:8080", host)
        found = _curl_requests(filled)
        assert len(found) == 1, f"not a request this test knows how to run: {command}"
        ((method, path, body),) = found
        answer = httpx.request(
            method,
            gateway.url + path,
            headers={"Authorization": f"Bearer {key}"},
            content=body,
            timeout=10,
        )
        requests += 1
        assert answer.is_success, f"{command}\n→ {answer.status_code} {answer.text}"
        document = json.loads(answer.text) if answer.text else None
        expected = EXPECTED.search(command)
        if expected:
            assert answer.status_code == int(expected.group(1)), command
            assert isinstance(document, dict) and document["status"] == expected.group(2)
        if "/messages" in path and method == "GET" and not message_id:
            assert mailed, "the README reads the inbox before any mail was sent"
        message_id = last_id(document, message_id)
    assert key and mailed and requests >= 8, commands
