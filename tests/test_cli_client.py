# ruff: noqa: F811 (the fixtures imported from tests.cli_support are this module's parameters)
"""The client commands of `e2a` (login, agents, domains, inbox, …) against a live gateway.

The gateway runs in a background thread (as in tests/test_sdk_client.py); the CLI runs
in-process through `main()` with a temporary HOME, so `~/.e2a/config.json` is the test's own.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import io
import json
import os
import re
import shlex
import signal
import smtplib
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2a_gateway.cli.client_commands import EXAMPLES
from e2a_gateway.cli.main import EXAMPLES as SERVER_EXAMPLES
from e2a_gateway.cli.main import build_parser, main
from e2a_gateway.cli.output import MAX_CELL_COLUMNS, cell, columns, terminal_text
from e2a_gateway.operations import rate_limits
from e2a_gateway.v1 import E2AApiError, E2AClient
from tests.cli_support import (  # noqa: F401 (fixtures)
    DOMAIN,
    SENDER,
    Account,
    Cli,
    FakeTarget,
    LiveGateway,
    account,
    cli,
    home,
    live,
    target,
    unread,
    wait_until,
)
from tests.test_sdk_client import proxy

# Login and config


def test_not_logged_in_says_how_to_fix(cli: Cli) -> None:
    for args in (("agents", "list"), ("inbox",), ("pending", "--json")):
        code, out, err = cli(*args)
        assert (code, out) == (1, "")
        assert "Not logged in: run `e2a login`" in err


def test_a_refused_key_says_which_key_and_how_to_fix_it(
    account: Account, cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key the gateway refuses (revoked, mistyped) names where it came from and what to do,
    and never prints the key."""
    bogus = "e2a_" + "0" * 64
    monkeypatch.setenv("E2A_API_KEY", bogus)
    code, out, err = cli("inbox")
    assert (code, out) == (4, "")  # e2a's CLI's exit code for a refused key
    assert "unknown or revoked API key (401 unauthorized)" in err
    assert "E2A_API_KEY" in err and "`e2a login`" in err and bogus not in err
    monkeypatch.delenv("E2A_API_KEY")

    path = home / ".e2a" / "config.json"
    values = json.loads(path.read_text())
    path.write_text(json.dumps({**values, "api_key": bogus}))
    code, out, err = cli("agents", "list")
    assert (code, out) == (4, "")
    assert str(path) in err and "`e2a login`" in err and "E2A_API_KEY" not in err


def test_a_broken_config_file_says_how_to_recover(cli: Cli, home: Path) -> None:
    """A ~/.e2a/config.json that is not JSON (a hand edit gone wrong) stops every command,
    `e2a login` and `e2a config set` included: the message says to fix or delete it."""
    (home / ".e2a").mkdir()
    (home / ".e2a" / "config.json").write_text('{"url": "http://127.0.0.1:8080",\n')
    for args in (("whoami",), ("config", "set", "url", "http://127.0.0.1:8080")):
        code, _, err = cli(*args)
        assert code == 1
        assert "config.json" in err and "fix or delete it, then `e2a login`" in err, err


def test_a_home_where_the_config_cannot_be_saved_says_so(live: LiveGateway, home: Path) -> None:
    """A HOME this user cannot write (a service account's, a read-only one) stops `e2a login`
    and `e2a config set` with one line naming the file and what to do instead, not a
    traceback; nothing is left half written."""
    from tests.test_cli import E2A, as_unprivileged

    key = live.new_key("nohome@example.com")
    environment = {"PATH": os.environ["PATH"], "HOME": str(home), "NO_COLOR": "1"}
    environment["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    home.chmod(0o555)
    try:
        for args in (
            ("login", "--url", live.url, "--api-key", key),
            ("config", "set", "url", "http://127.0.0.1:8080"),
        ):
            result = subprocess.run(
                as_unprivileged([*E2A, *args]),
                env=environment,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert (result.returncode, result.stdout) == (1, ""), result.stderr
            (line,) = result.stderr.splitlines()
            assert line.startswith(f"e2a: cannot save {home / '.e2a' / 'config.json'}: "), line
            assert "E2A_API_KEY" in line and key not in line, line
    finally:
        home.chmod(0o755)
    assert not list(home.iterdir())


def test_login_validates_the_key_and_writes_a_private_config(
    live: LiveGateway, cli: Cli, home: Path
) -> None:
    key = live.new_key("login@example.com")
    code, out, err = cli("login", "--url", live.url + "/", "--api-key", key)
    assert code == 0, err
    assert f"Logged in to {live.url}" in out and f"Shared domain: {DOMAIN}" in out
    path = home / ".e2a" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "api_key": key,
        "key_scope": "account",
        "shared_domain": DOMAIN,
        "url": live.url,
    }
    assert key not in out

    summary = cli.json("login", "--url", live.url, "--api-key", key)
    assert summary["shared_domain"] == DOMAIN and summary["agents"] == []
    assert summary["config_path"] == str(path) and "api_key" not in summary


def test_login_reads_the_key_from_stdin_and_refuses_a_bad_one(
    live: LiveGateway, cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = live.new_key("stdin@example.com")
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    code, _, err = cli("login", "--url", live.url)
    assert code == 0, err
    assert json.loads((home / ".e2a" / "config.json").read_text())["api_key"] == key

    code, out, err = cli("login", "--url", live.url, "--api-key", "e2a_wrong")
    assert (code, out) == (4, "")  # a refused key, as every other command says it
    assert "the gateway refused this API key" in err
    # A failed login leaves the previous config alone.
    assert json.loads((home / ".e2a" / "config.json").read_text())["api_key"] == key


def test_a_key_with_a_character_no_key_has_is_refused_without_printing_it(
    live: LiveGateway, account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key read from a file with Windows line endings ends in a carriage return, one pasted
    from a document may hold a non-ASCII character: neither can go in a header. It is a key
    the gateway would refuse (exit 4) and the message never quotes it."""
    for bad in (account.key + "\r", account.key + "\u00e9", "\u00e9" + account.key[1:]):
        monkeypatch.setenv("E2A_API_KEY", bad)
        code, out, err = cli("inbox", "--agent", f"x@{DOMAIN}")
        assert (code, out) == (4, ""), err
        assert "Traceback" not in err and account.key[4:] not in err and "E2A_API_KEY" in err
        monkeypatch.delenv("E2A_API_KEY")
        code, out, err = cli("login", "--url", live.url, "--api-key", bad)
        assert (code, out) == (4, ""), err
        assert "Traceback" not in err and account.key[4:] not in err and "--api-key" in err
    monkeypatch.setenv("E2A_API_KEY", account.key + "\r")
    code, out, err = cli("doctor", "--agent", f"x@{DOMAIN}")
    assert code == 4 and "Traceback" not in err and account.key[4:] not in out + err
    assert "character no API key has" in out


def test_login_with_an_agent_key_makes_its_agent_the_default(
    live: LiveGateway, account: Account, cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent key (`e2a keys create --agent`) may not list the account's agents: login
    takes its agent from `GET /v1/account`, and so does a command run with that key in
    E2A_API_KEY and no agent configured."""
    agent = f"{account.prefix}-bound@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    code, agent_key, err = cli("keys", "create", "--agent", agent)
    assert code == 0, err
    agent_key = agent_key.strip()
    live.send_mail(agent, "For the bound agent", "Hello.\n")
    wait_until(lambda: unread(live, account.key, agent) == 1)

    code, out, err = cli("login", "--url", live.url, "--api-key", agent_key)
    assert code == 0, err
    assert f"Default agent: {agent}" in out
    saved = json.loads((home / ".e2a" / "config.json").read_text())
    assert (saved["agent_email"], saved["key_scope"]) == (agent, "agent")
    code, out, err = cli("inbox")
    assert code == 0 and "For the bound agent" in out, err

    code, out, err = cli("doctor", "--json")
    checks = {check["id"]: check["status"] for check in json.loads(out)["checks"]}
    assert (checks["api.key"], checks["agent"]) == ("pass", "pass"), out

    cli("config", "set", "api_key", account.key)
    (home / ".e2a" / "config.json").unlink()
    monkeypatch.setenv("E2A_URL", live.url)
    monkeypatch.setenv("E2A_API_KEY", agent_key)
    code, out, err = cli("inbox", "--all")
    assert code == 0 and "For the bound agent" in out, err


def test_an_agent_key_in_the_environment_acts_as_its_agent_whatever_agent_is_saved(
    live: LiveGateway, account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent key in E2A_API_KEY with another agent saved as `agent_email` (set with an
    account key): whoami, inbox, send and doctor all act as the key's agent, the only one it
    may act as, and say on stderr which saved setting they set aside and how to change it."""
    bound = f"{account.prefix}-own@{DOMAIN}"
    other = f"{account.prefix}-other@{DOMAIN}"
    for agent in (bound, other):
        assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    code, agent_key, err = cli("keys", "create", "--agent", bound)
    assert code == 0, err
    assert cli("config", "set", "agent_email", other)[0] == 0
    live.send_mail(bound, "For the key's agent", "Hello.\n")
    wait_until(lambda: unread(live, account.key, bound) == 1)
    monkeypatch.setenv("E2A_API_KEY", agent_key.strip())

    code, out, err = cli("whoami")
    assert code == 0 and f"Default agent: {bound}" in out, err
    code, out, err = cli("inbox")
    assert code == 0 and "For the key's agent" in out, err
    assert other in err and "e2a config set agent_email" in err, err
    code, out, err = cli("send", "--to", bound, "--subject", "Hi", "--body", "x")
    assert code == 0, err
    code, out, err = cli("doctor", "--json")
    checks = {check["id"]: check["status"] for check in json.loads(out)["checks"]}
    assert (checks["api.key"], checks["agent"]) == ("pass", "pass"), out
    assert json.loads(out)["agent"] == bound, out


def test_config_get_of_an_unset_key_says_how_to_set_it(account: Account, cli: Cli) -> None:
    code, out, err = cli("config", "get", "agent_email")
    assert (code, out) == (0, "")  # as e2a's CLI: empty stdout, exit 0
    assert "`e2a config set agent_email VALUE`" in err


def test_login_to_an_unreachable_gateway_fails_cleanly(cli: Cli) -> None:
    code, _, err = cli("login", "--url", "http://127.0.0.1:9", "--api-key", "k")
    assert code == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in err


def test_a_malformed_gateway_url_is_an_error_not_a_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = cli("login", "--url", "http://[::1", "--api-key", "e2a_" + "0" * 64)
    assert (code, out) == (1, "")
    assert err.startswith("e2a: the gateway URL 'http://[::1' is not valid") and "E2A_URL" in err
    monkeypatch.setenv("E2A_URL", "http://127.0.0.1:80x")
    monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
    code, out, err = cli("inbox", "--agent", "bot@example.com")
    assert (code, out) == (1, "") and "Traceback" not in err
    assert err.startswith("e2a: the gateway URL 'http://127.0.0.1:80x' is not valid"), err


def test_an_argument_too_long_for_a_url_is_a_usage_error_not_the_gateway_urls_fault(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """A message id or an address too long for any URL (a script passing a whole file as the
    id) is refused before a request is made, as bad usage naming the argument: never blamed
    on the configured gateway URL, which is fine."""
    agent = f"{account.prefix}-long@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    for args in (("read", "m" * 70_000, "--agent", agent), ("agents", "get", "a" * 70_000)):
        code, out, err = cli(*args)
        assert (code, out) == (2, ""), err
        assert "gateway URL" not in err and live.url not in err and "m" * 100 not in err
        assert "too long" in err and err.count("\n") == 1
    assert cli("read", "msg_nope", "--agent", agent)[0] == 5  # the gateway URL works


def test_login_to_a_server_that_is_no_gateway_says_to_check_the_url(cli: Cli, home: Path) -> None:
    """A web server that is not e2a (a wrong port, say): told so, not shown its error page."""

    with web_server(404) as url:
        code, out, err = cli("login", "--url", url, "--api-key", "e2a_" + "0" * 64)
    assert (code, out) == (1, "")
    assert f"{url} does not answer as an e2a gateway" in err and "check --url" in err
    assert "<html" not in err.lower()
    assert not (home / ".e2a" / "config.json").exists()


def test_login_to_a_redirecting_url_names_where_it_points(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http:// URL in front of an https-only proxy: login says where it redirects, and
    `domains delete` through it fails instead of printing that the domain was deleted."""
    with proxy(redirect=True) as url:
        code, out, err = cli("login", "--url", url, "--api-key", "e2a_" + "0" * 64)
        assert (code, out) == (1, "")
        assert f"{url}/api/v1/info was redirected to https://gateway.example/api/v1/info" in err
        assert not (home / ".e2a" / "config.json").exists()

        monkeypatch.setenv("E2A_URL", url)
        monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
        code, out, err = cli("domains", "delete", "x.example")
        assert (code, out) == (1, ""), (out, err)
        assert "redirected to https://gateway.example/api/v1/domains/x.example" in err, err


def test_a_web_page_answering_200_is_no_gateway_either(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy's default site or a single-page app answers every path with 200 and HTML:
    login and every command say the URL is wrong, with no JSON traceback."""
    with web_server(200) as url:
        code, out, err = cli("login", "--url", url, "--api-key", "e2a_" + "0" * 64)
        assert (code, out) == (1, "")
        assert f"{url} does not answer as an e2a gateway (GET /api/v1/info: 200, not JSON)" in err
        assert not (home / ".e2a" / "config.json").exists()

        monkeypatch.setenv("E2A_URL", url)
        monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
        code, out, err = cli("agents", "list")
        assert (code, out) == (1, "") and "Traceback" not in err
        assert "answered text/html, not the e2a API's JSON" in err and "an e2a gateway?" in err
        with pytest.raises(E2AApiError) as raised, E2AClient(base_url=url) as client:
            client.list_agents()
        assert (raised.value.status_code, raised.value.code) == (200, "invalid_answer")


@contextlib.contextmanager
def web_server(status: int) -> Iterator[str]:
    """A web server that is not e2a, answering every request with `status` and an HTML page;
    yields its URL."""

    class NotAGateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = b"<html><body>Welcome</body></html>"
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotAGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_config_get_set_and_env_override(
    live: LiveGateway, account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = cli("config")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"]
    assert any(line.split()[:2] == ["url", live.url] for line in lines)
    assert account.key not in out  # the key is masked in the listing

    assert cli("config", "set", "agent_email", "x@agents.test")[0] == 0
    assert cli("config", "get", "agent_email")[1] == "x@agents.test\n"
    assert cli.json("config", "get", "api_key") == {"api_key": account.key}
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "get", "nope"])
    assert exit_info.value.code == 2
    assert cli("config", "get", "shared_domain") == (0, f"{DOMAIN}\n", "")
    monkeypatch.setenv("E2A_AGENT_EMAIL", "env@agents.test")
    assert cli("config", "get", "agent_email")[1] == "env@agents.test\n"
    assert cli.json("config")["agent_email"] == "env@agents.test"


# Agents


def test_agents_register_list_update_delete(account: Account, cli: Cli) -> None:
    slug = f"{account.prefix}-bot"
    email = f"{slug}@{DOMAIN}"
    code, out, err = cli("agents", "register", slug, "--mode", "local", "--name", "Bot")
    assert code == 0, err
    assert f"Registered {email}" in out and "Mode:" in out

    code, out, _ = cli("agents", "list")
    header, row = out.splitlines()
    assert header.split() == ["EMAIL", "MODE", "HITL", "WEBHOOK", "NAME"]
    assert row.split() == [email, "local", "no", "Bot"]
    (listed,) = cli.json("agents", "list")
    assert (listed["email"], listed["agent_mode"], listed["name"]) == (email, "local", "Bot")

    updated = cli.json("agents", "update", email, "--hitl", "--hitl-ttl", "600")
    assert (updated["hitl_enabled"], updated["hitl_ttl_seconds"]) == (True, 600)
    code, out, _ = cli("agents", "update", email, "--no-hitl")
    assert code == 0 and "HITL:        no" in out and "HITL emails: yes" in out
    quiet = cli.json("agents", "update", email, "--no-approval-notifications")
    assert (quiet["approval_notifications"], quiet["hitl_ttl_seconds"]) == (False, 600)
    code, out, _ = cli("agents", "update", email, "--approval-notifications")
    assert code == 0 and "HITL emails: yes" in out

    assert cli("agents", "delete", email) == (0, f"Deleted {email}\n", "")
    assert cli.json("agents", "list") == []
    code, out, err = cli("agents", "list")
    assert (code, out) == (0, "") and "No agents yet" in err


def test_agent_api_errors_and_usage_errors(account: Account, cli: Cli) -> None:
    code, out, err = cli("agents", "delete", f"{account.prefix}-ghost@{DOMAIN}")
    assert (code, out) == (5, "")  # refused for good: e2a's CLI's exit code 5
    assert err.startswith("e2a: ") and "(404 not_found)" in err

    assert cli("agents", "register")[0] == 2
    assert cli("agents", "register", "a", "--email", "b@example.com")[0] == 2
    code, _, err = cli("agents", "update", f"x@{DOMAIN}")
    assert code == 2 and "nothing to change" in err
    for bad in (["inbox", "--limit", "0"], ["agents", "update", "x", "--mode", "moon"], ["nope"]):
        with pytest.raises(SystemExit) as exit_info:
            main(bad)
        assert exit_info.value.code == 2


# Mail


def test_inbox_read_reply_and_send(live: LiveGateway, account: Account, cli: Cli) -> None:
    inbox_agent = f"{account.prefix}-inbox@{DOMAIN}"
    peer = f"{account.prefix}-peer@{DOMAIN}"
    assert cli("agents", "register", inbox_agent.split("@")[0], "--mode", "local")[0] == 0
    # With one agent, commands pick it; with two, --agent (or a configured agent) is needed.
    code, out, err = cli("inbox")
    assert code == 0 and out == "" and f"No unread messages for {inbox_agent}" in err
    assert cli("agents", "register", peer.split("@")[0], "--mode", "local")[0] == 0
    code, _, err = cli("inbox")
    assert code == 1 and "pass --agent EMAIL" in err

    live.send_mail(inbox_agent, "Invoice 7", "Please pay.\n")
    live.send_mail(inbox_agent, "Invoice 8", "Again.\n")
    wait_until(lambda: unread(live, account.key, inbox_agent) == 2)

    code, out, _ = cli("inbox", "--agent", inbox_agent)
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "FROM", "SUBJECT", "STATUS", "RECEIVED"]
    assert SENDER in first and "Invoice 7" in first and "unread" in first
    assert "Invoice 8" in second
    listed = cli.json("inbox", "--agent", inbox_agent, "--limit", "1")
    assert [m["subject"] for m in listed] == ["Invoice 7"]
    message_id = listed[0]["message_id"]

    assert cli("config", "set", "agent_email", inbox_agent)[0] == 0
    code, out, err = cli("read", message_id)
    assert code == 0, err
    assert "Subject:  Invoice 7" in out and f"From:     {SENDER}" in out
    # Nothing vouches for alice@example.org here (no DNS records): the reader is told so.
    assert (
        f"Verified: NO (spf=none, dkim=none, dmarc=none): nothing proves it came from {SENDER}\n"
    ) in out
    assert out.rstrip().endswith("Please pay.")
    assert [m["subject"] for m in cli.json("inbox")] == ["Invoice 8"]
    assert [m["subject"] for m in cli.json("inbox", "--read")] == ["Invoice 7"]
    assert len(cli.json("inbox", "--all")) == 2
    detail = cli.json("read", message_id)
    assert detail["text_body"].strip() == "Please pay." and detail["from"] == SENDER
    assert detail["verification"] == {
        "verified": False,
        "sender": SENDER,
        "entity_type": "human",
        "authentication_results": {"spf": "none", "dkim": "none", "dmarc": "none"},
    }

    sent = cli.json("send", "--to", peer, "--subject", "Hi peer", "--body", "hello")
    assert sent["method"] == "loopback" and sent["messageId"]
    wait_until(lambda: unread(live, account.key, peer) == 1)
    (arrived,) = cli.json("inbox", "--agent", peer)
    assert arrived["sender"] == inbox_agent

    code, out, err = cli("reply", arrived["message_id"], "--agent", peer, "--body", "thanks")
    assert code == 0, err
    assert re.fullmatch(r"msg_\w+\n", out), out  # the id alone, as e2a's CLI prints it
    assert err.startswith(f"Replied {out.strip()} ") and "local" in err
    wait_until(lambda: unread(live, account.key, inbox_agent) == 2)
    subjects = [m["subject"] for m in cli.json("inbox")]
    assert subjects == ["Invoice 8", "Re: Hi peer"]
    reply_id = cli.json("inbox")[1]["message_id"]
    code, out, err = cli("read", reply_id)
    assert code == 0, err
    # Mail from an agent of this gateway is vouched for by the gateway itself.
    assert "Verified: yes (an agent of this gateway" in out

    code, out, err = cli("read", "msg_does_not_exist")
    assert (code, out) == (5, "") and "404" in err


def test_inbox_table_lines_up_wide_characters_and_cuts_long_subjects(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    agent = f"{account.prefix}-wide@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    subjects = ["Plain", "請求書 7 のお支払い", "Café ☕ noël", "Long " + "word " * 100]
    for subject in subjects:
        live.send_mail(agent, subject, "x\n")
    wait_until(lambda: unread(live, account.key, agent) == len(subjects))

    code, out, err = cli("inbox", "--agent", agent)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert len(rows) == len(subjects)
    # STATUS starts at the same screen column on every line, wide characters included.
    starts = {columns(line[: line.index(" unread ")]) for line in rows}
    assert len(starts) == 1 and columns(header[: header.index(" STATUS")]) in starts
    assert "請求書 7 のお支払い" in rows[1]
    long_cell = rows[3].split("  ")[2]
    assert long_cell.startswith("Long word") and long_cell.endswith("…")
    assert columns(long_cell) <= MAX_CELL_COLUMNS
    assert cli.json("inbox", "--agent", agent)[3]["subject"].strip() == subjects[3].strip()


@pytest.mark.parametrize("errors", ["surrogateescape", "strict"])
def test_a_body_on_stdin_that_is_not_utf8_is_a_usage_error(
    account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch, errors: str
) -> None:
    """`cat latin1.txt | e2a send --body -`: told to convert it, exit 2, nothing sent (Python
    reads such a stdin to lone surrogates, or fails in UTF-8 mode)."""
    agent = f"{account.prefix}-stdin-{errors}@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    for flag in ("--body", "--body-file"):
        stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8", errors=errors)
        monkeypatch.setattr("sys.stdin", stdin)
        code, out, err = cli("send", "--to", agent, "--subject", "S", flag, "-")
        assert (code, out) == (2, ""), err
        assert f"{flag} -: stdin is not UTF-8 text" in err and "Traceback" not in err
    monkeypatch.setattr("sys.stdin", io.StringIO("café\n"))
    assert cli("send", "--to", agent, "--subject", "S", "--body", "-")[0] == 0


def test_the_next_page_hint_lists_the_same_inbox(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """Following the printed command page after page lists every message once: it keeps the
    agent and --all (a token of one listing, used in another, would skip messages)."""
    first, other = f"{account.prefix}-pages@{DOMAIN}", f"{account.prefix}-pages2@{DOMAIN}"
    for agent in (first, other):
        assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    for number in range(5):
        live.send_mail(first, f"Page {number}", "x\n")
    wait_until(lambda: unread(live, account.key, first) == 5)
    listed = cli.json("inbox", "--agent", first, "--limit", "5")
    for message in listed[:3]:  # 0, 1, 2 read; 3, 4 unread
        assert cli("read", message["message_id"], "--agent", first)[0] == 0

    seen: list[str] = []
    command = ["inbox", "--agent", first, "--all", "--limit", "2"]
    for _ in range(5):
        code, out, err = cli(*command, "--json")
        assert code == 0, err
        seen += [m["subject"] for m in json.loads(out)]
        hint = re.search(r"^Next page: e2a (.*)$", err, re.MULTILINE)
        if hint is None:
            break
        command = shlex.split(hint[1])
    assert seen == [f"Page {number}" for number in range(5)]


def test_a_closed_pipe_ends_the_command_quietly(
    live: LiveGateway, account: Account, cli: Cli, home: Path
) -> None:
    agent = f"{account.prefix}-piped@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    for number in range(3):
        live.send_mail(agent, f"Piped {number}", "Hello.\n")
    wait_until(lambda: unread(live, account.key, agent) == 3)
    command = [sys.executable, "-m", "e2a_gateway", "inbox", "--json", "--all"]
    env = os.environ | {"HOME": str(home)}
    # The reader is gone before the command writes: every write fails with EPIPE.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, env=env, timeout=60)
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, b"")
    # As a shell runs it: head takes one line and leaves.
    pipeline = " ".join(shlex.quote(part) for part in command) + " | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, env=env, timeout=60
    )
    assert done.returncode in (0, 141)
    assert (done.stdout, done.stderr) == (b"[\n", b"")


def test_an_output_that_is_not_utf_8_shows_mail_and_keeps_json_whole(
    live: LiveGateway, account: Account, cli: Cli, home: Path
) -> None:
    """stdout in an encoding without the mail's characters (a legacy locale, or a Windows
    console redirected to a file, cp1252): what cannot be written shows as `?` instead of a
    UnicodeEncodeError traceback, and JSON stays exact (its escapes are ASCII)."""
    agent = f"{account.prefix}-latin@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    subject = "Réunion 会议 ✓"
    live.send_mail(agent, subject, "Bonjour, 你好.\n")
    wait_until(lambda: unread(live, account.key, agent) == 1)
    env = os.environ | {"HOME": str(home), "PYTHONIOENCODING": "ascii"}

    def e2a(*args: str) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "e2a_gateway", *args], capture_output=True, env=env, timeout=60
        )
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
        return done.stdout

    assert b"R?union ?? ?" in e2a("inbox", "--agent", agent)
    [listed] = json.loads(e2a("inbox", "--agent", agent, "--json"))
    assert listed["subject"] == subject
    [line] = e2a("messages", "list", "--agent", agent, "--json").splitlines()
    assert json.loads(line)["subject"] == subject
    assert json.loads(e2a("whoami", "--json"))["agents"] == [agent]
    assert b"Bonjour, ??." in e2a("read", listed["message_id"], "--agent", agent)


def test_ctrl_c_at_any_moment_ends_the_command_with_130_and_no_traceback(
    live: LiveGateway, account: Account, cli: Cli, home: Path
) -> None:
    """SIGINT while `e2a listen` starts (loading its modules, reading the config, connecting)
    or while it waits for mail: exit 130, nothing but listen's own lines on stderr."""
    agent = f"{account.prefix}-ctrlc@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    command = [sys.executable, "-m", "e2a_gateway", "listen", "--agent", agent]
    env = os.environ | {"HOME": str(home)}
    for delay in (0.15, 0.25, 0.35, 0.45, 0.6, 0.8, 1.2, 3.0):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        ours = set(re.findall(rb'File "[^"]*e2a_gateway/([^"]+)"', err))
        if b"init_import_site" in err or (b"Traceback" in err and ours <= {b"__init__.py"}):
            continue  # still in Python's own start-up, before any of e2a's command runs
        # A shell sees 130 either way: the exit code, or death by SIGINT (128 + 2), which
        # CPython chooses at exit when the interrupt met an exec() in an import (a dataclass
        # being built) even though e2a caught it.
        assert process.returncode in (130, -signal.SIGINT), (delay, err)
        assert b"Traceback" not in err, (delay, err)
        assert out == b"", (delay, out)


def test_pending_approve_and_reject(live: LiveGateway, account: Account, cli: Cli) -> None:
    held = f"{account.prefix}-held@{DOMAIN}"
    peer = f"{account.prefix}-hpeer@{DOMAIN}"
    for address in (held, peer):
        assert cli("agents", "register", address.split("@")[0], "--mode", "local")[0] == 0
    assert cli("agents", "update", held, "--hitl", "--hitl-ttl", "600")[0] == 0

    code, out, err = cli("pending")
    assert (code, out) == (0, "") and "Nothing is waiting" in err
    code, out, err = cli("send", "--agent", held, "--to", peer, "--subject", "One", "--body", "1")
    assert code == 3 and "held for approval" in err  # e2a's CLI's exit code for held mail
    assert re.fullmatch(r"msg_\w+\n", out), out  # its id alone, to approve it with
    second = cli.json(
        "send", "--agent", held, "--to", peer, "--subject", "Two", "--body", "2", expect=3
    )
    assert second["status"] == "pending_review"

    code, out, _ = cli("pending")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "FROM", "TO", "SUBJECT", "STATUS", "EXPIRES"]
    assert len(rows) == 2 and all(row.split()[1:3] == [held, peer] for row in rows)
    pending = {m["subject"]: m["id"] for m in cli.json("pending")}
    assert set(pending) == {"One", "Two"}

    code, out, err = cli("approve", pending["One"])
    assert code == 0 and out.startswith(f"Approved {pending['One']}"), err
    rejected = cli.json("reject", pending["Two"], "--reason", "wrong tone")
    assert rejected["status"] == "rejected" and rejected["rejection_reason"] == "wrong tone"
    wait_until(lambda: unread(live, account.key, peer) == 1)
    assert cli.json("pending") == []
    code, _, err = cli("approve", pending["Two"])
    assert code == 5 and err.startswith("e2a: ")  # no longer held: refused for good


def test_pending_show_shows_the_html_part_a_reviewer_would_approve(
    account: Account, cli: Cli
) -> None:
    """The HTML part is what most mail programs show: a reviewer reading a held message with
    `pending show` before approving it sees that part too, not only an innocent text part."""
    agent = f"{account.prefix}-html@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    assert cli("agents", "update", agent, "--hitl")[0] == 0
    held = cli.json(
        "send", "--agent", agent, "--to", "bob@example.org", "--subject", "Lunch",
        "--body", "See you at noon.", "--html", "<p>Wire <b>9,000 USD</b> today</p>", expect=3,
    )  # fmt: skip
    code, out, err = cli("pending", "show", held["messageId"])
    assert code == 0, err
    text, _, html_part = out.partition("HTML part")
    assert "See you at noon." in text and "9,000 USD" not in text
    assert "<p>Wire <b>9,000 USD</b> today</p>" in html_part


def test_pending_show_says_why_a_message_failed_or_was_rejected(account: Account, cli: Cli) -> None:
    agent = f"{account.prefix}-why@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    # No outbound relay here: mail to the outside is refused and kept as failed, with why.
    code, _, err = cli(
        "send", "--agent", agent, "--to", "bob@example.org", "--subject", "Out", "--body", "1"
    )
    assert code == 5 and "(422 send_failed)" in err
    failed = re.search(r"GET /api/v1/messages/(msg_\w+)", err)
    assert failed, err
    code, out, err = cli("pending", "show", failed[1])
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert fields["Status"].strip() == "failed"
    assert "outbound_smtp.host is not set" in fields["Error"]
    assert "(body not kept: the message is failed)" in out

    assert cli("agents", "update", agent, "--hitl")[0] == 0
    held = cli.json(
        "send",
        "--agent",
        agent,
        "--to",
        "bob@example.org",
        "--subject",
        "Held",
        "--body",
        "2",
        expect=3,
    )
    code, out, _ = cli("pending", "show", held["messageId"])
    assert "Expires:" in out and out.rstrip().endswith("2")
    assert cli("reject", held["messageId"], "--reason", "wrong tone")[0] == 0
    code, out, err = cli("pending", "show", held["messageId"])
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert fields["Status"].strip() == "rejected" and fields["Reason"].strip() == "wrong tone"
    assert "api" in fields["Reviewed"] and "Expires" not in fields
    assert "(body not kept: the message is rejected)" in out


# Domains


def test_domains_add_list_verify_delete(account: Account, cli: Cli) -> None:
    domain = f"{account.prefix}.example.net"
    code, out, err = cli("domains", "add", domain)
    assert code == 0, err
    assert f"Added {domain}" in out and "Verified: no" in out
    records = out.split("Create these DNS records")[1].splitlines()[1:]
    assert records[0].split() == ["TYPE", "HOST", "VALUE", "PRIORITY"]
    assert records[1].split()[:2] == ["MX", "@"] and records[1].split()[-1] == "10"
    kind, host, token = records[2].split()[:3]
    assert (kind, host) == ("TXT", "@") and re.fullmatch(r"e2a-verify=[0-9a-f]{32}", token)
    code, out, _ = cli("domains", "list")
    header, row = out.splitlines()
    assert header.split() == ["DOMAIN", "VERIFIED", "CREATED"]
    assert row.split()[:2] == [domain, "no"]
    # Development mode verifies without DNS (the gateway logs a warning).
    assert cli.json("domains", "verify", domain)["verified"] is True
    assert [d["verified"] for d in cli.json("domains", "list")] == [True]
    assert cli("domains", "delete", domain) == (0, f"Deleted {domain}\n", "")
    code, _, err = cli("domains", "delete", domain)
    assert code == 5 and "404" in err


# Listen


def test_listen_prints_unread_mail_and_marks_it_read(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    agent = f"{account.prefix}-ear@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    live.send_mail(agent, "First", "one\n")
    live.send_mail(agent, "Second", "two\n")
    wait_until(lambda: unread(live, account.key, agent) == 2)

    code, out, err = cli("listen", "--json", "--max", "2")
    assert code == 0, err
    assert f"Listening for mail to {agent}" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(m["subject"] for m in lines) == ["First", "Second"]
    assert all(m["from"] == SENDER and m["recipient"] == agent for m in lines)
    assert unread(live, account.key, agent) == 0

    live.send_mail(agent, "Third", "three\n")
    wait_until(lambda: unread(live, account.key, agent) == 1)
    code, out, _ = cli("listen", "--max", "1")
    assert code == 0 and "Third" in out and SENDER in out


def test_listen_waits_out_the_read_limit_instead_of_stopping(
    live: LiveGateway, account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog larger than the account's reads per minute: listen waits as the 429 answer
    says (Retry-After) and goes on, instead of ending with an error."""
    agent = f"{account.prefix}-backlog@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    for number in range(5):
        live.send_mail(agent, f"Backlog {number}", "x\n")
    wait_until(lambda: unread(live, account.key, agent) == 5)
    monkeypatch.setattr(rate_limits, "POLL_WINDOW_SECONDS", 2)
    monkeypatch.setattr(
        live.running.gateway.settings.limits, "message_polls_per_user_per_minute", 3
    )

    code, out, err = cli("listen", "--json", "--max", "5")
    assert code == 0, err
    assert sorted(json.loads(line)["subject"] for line in out.splitlines()) == [
        f"Backlog {number}" for number in range(5)
    ]
    assert "waiting" in err
    monkeypatch.undo()
    assert unread(live, account.key, agent) == 0


ESCAPES = ("\x1b", "\x9b", "\x9d", "\x07", "\x08", "\r", "\x00", "\u202e", "\u2066")
"""What must never reach a terminal from mail: ESC and 8-bit CSI/OSC (sequences that move the
cursor, retitle the window, rewrite the clipboard, hide text), BEL, backspace, a carriage
return that overwrites the line, NUL, and bidirectional overrides that reorder it."""


def encoded_word(text: str) -> str:
    """`text` as an RFC 2047 encoded word, which may carry any character."""
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def hostile_mail(recipient: str) -> bytes:
    """Mail whose subject, sender name and body carry terminal escapes."""
    subject = "Invoice\x1b]0;pwned\x07 \x1b[2J\x1b[31mpaid\u202e\r\x9b31mok\x9d2;x\x07"
    name = "Bank\x1b[8m hidden\x08\x08\u2066"
    body = "Pay now.\r\nSecond line\x1b[1A\x1b[2K\rFAKE\x00\tend\u202e\r\n"
    return (
        f"From: {encoded_word(name)} <{SENDER}>\r\nTo: {recipient}\r\n"
        f"Subject: {encoded_word(subject)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(body.encode()).decode().replace("\n", "\r\n")
    ).encode()


def assert_terminal_safe(text: str) -> None:
    found = [repr(escape) for escape in ESCAPES if escape in text]
    assert not found, f"{found} in {text!r}"


@pytest.mark.parametrize(
    ("text", "one_line", "lines"),
    [
        ("plain café 日本 שלום 🙂", "plain café 日本 שלום 🙂", "plain café 日本 שלום 🙂"),
        ("a\x1b[31;1mred\x1b[0m b", "ared b", "ared b"),  # CSI, removed whole
        ("a\x9b2Jb", "ab", "ab"),  # 8-bit CSI
        ("t\x1b]0;title\x07x", "tx", "tx"),  # OSC ended by BEL
        ("t\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "tlink", "tlink"),  # by ST
        ("t\x9d52;c;Zm9v\x9cx", "tx", "tx"),  # 8-bit OSC and ST
        ("a\x1bPq#0;1\x1b\\b", "ab", "ab"),  # DCS
        ("a\x1b]0;never ended\nnext", "a next", "a\nnext"),  # unterminated: its line only
        ("a\x1bcb\x1b7c", "abc", "abc"),  # other escapes (reset, save cursor)
        ("bell\x07 back\x08\x7f nul\x00", "bell back nul", "bell back nul"),
        ("evil\u202egnp.exe \u2066x\u2069", "evilgnp.exe x", "evilgnp.exe x"),
        ("one\r\ntwo\rthree", "one two three", "one\ntwo\nthree"),  # CR overwrites nothing
        ("a\tb\x85c\u2028d", "a b c d", "a\tb\nc\nd"),
    ],
)
def test_terminal_text_keeps_text_and_drops_control(text: str, one_line: str, lines: str) -> None:
    assert cell(text) == one_line
    assert terminal_text(text, multiline=True) == lines


def test_mail_cannot_drive_the_terminal(live: LiveGateway, account: Account, cli: Cli) -> None:
    """inbox, read and listen strip control characters, escape sequences and bidi overrides
    from what they print for people; --json keeps the data exactly as it came."""
    agent = f"{account.prefix}-term@{DOMAIN}"
    assert cli("agents", "register", agent.split("@")[0], "--mode", "local")[0] == 0
    with smtplib.SMTP("127.0.0.1", live.running.addresses.smtp_port, timeout=10) as smtp:
        assert smtp.sendmail(SENDER, [agent], hostile_mail(agent)) == {}
    wait_until(lambda: unread(live, account.key, agent) == 1)

    code, out, err = cli("inbox")
    assert code == 0, err
    assert_terminal_safe(out)
    assert "Invoice paid ok" in " ".join(out.split()) and SENDER in out
    (listed,) = cli.json("inbox")
    assert "\x1b[2J" in listed["subject"] and "\u202e" in listed["subject"]

    code, out, err = cli("read", listed["message_id"])
    assert code == 0, err
    assert_terminal_safe(out)
    assert "Pay now.\nSecond line\nFAKE\tend\n" in out + "\n"
    assert re.search(r"^Subject: +Invoice", out, re.MULTILINE), out
    detail = cli.json("read", listed["message_id"])
    assert "\x1b[1A" in detail["text_body"]

    live.send_mail(agent, "plain", "x\n")
    with smtplib.SMTP("127.0.0.1", live.running.addresses.smtp_port, timeout=10) as smtp:
        assert smtp.sendmail(SENDER, [agent], hostile_mail(agent)) == {}
    wait_until(lambda: unread(live, account.key, agent) == 2)
    code, out, err = cli("listen", "--max", "2")
    assert code == 0, err
    assert_terminal_safe(out + err)
    assert "Invoice" in out and "paid" in out


def new_signing_secret(live: LiveGateway, key: str) -> str:
    """A new signing secret of the key's user (deliveries are signed with the newest)."""
    response = httpx.post(
        f"{live.url}/api/v1/users/me/signing-secrets",
        headers={"Authorization": f"Bearer {key}"},
        json={"name": "cli-test"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def sent_by(live: LiveGateway, key: str, agent: str) -> list[Any]:
    """Every outbound message of `agent`, whatever its state."""
    found: list[Any] = []
    for status in ("pending_approval", "queued", "sent", "failed"):
        response = httpx.get(
            f"{live.url}/api/v1/messages",
            params={"status": status, "agent": agent},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        found += response.json()["messages"]
    return found


def test_listen_forward_posts_the_full_message_and_never_replies(
    live: LiveGateway, account: Account, cli: Cli, target: FakeTarget
) -> None:
    """Without --forward-token, a forward to any path but …/v1/responses is the message
    JSON, and nothing is replied to the sender (even though this target answers like a
    model)."""
    bot = f"{account.prefix}-fwd@{DOMAIN}"
    human = f"{account.prefix}-fwdhuman@{DOMAIN}"
    for address in (bot, human):
        assert cli("agents", "register", address.split("@")[0], "--mode", "local")[0] == 0
    secret = new_signing_secret(live, account.key)
    sent = cli.json("send", "--agent", human, "--to", bot, "--subject", "Forward me", "--body", "x")
    assert sent["method"] == "loopback"
    wait_until(lambda: unread(live, account.key, bot) == 1)

    code, out, err = cli("listen", "--agent", bot, "--max", "1", "--forward", target.url("/hook"))
    assert code == 0, err
    assert "Forward me" in out and "HTTP 200" in err and "replied" not in err
    (request,) = target.requests
    assert (request.path, request.authorization) == ("/hook", None)
    body = request.body
    assert body["subject"] == "Forward me" and body["recipient"] == bot
    assert body["from"] == human and body["text_body"].strip() == "x"
    assert {"raw_message", "auth_headers", "message_id", "received_at"} <= set(body)
    with E2AClient(api_key=account.key, base_url=live.url) as client:
        verified = client.parse_webhook(json.dumps(body), secret)  # the handler's own check
    assert verified.subject == "Forward me" and verified.sender == human

    assert sent_by(live, account.key, bot) == []
    assert unread(live, account.key, human) == 0
    assert unread(live, account.key, bot) == 0  # the handler took it: read


def test_listen_forward_to_a_responses_url_asks_the_model_and_replies(
    live: LiveGateway, account: Account, cli: Cli, target: FakeTarget
) -> None:
    bot = f"{account.prefix}-llm@{DOMAIN}"
    human = f"{account.prefix}-human@{DOMAIN}"
    for address in (bot, human):
        assert cli("agents", "register", address.split("@")[0], "--mode", "local")[0] == 0
    sent = cli.json("send", "--agent", human, "--to", bot, "--subject", "Q", "--body", "2+2?")
    assert sent["method"] == "loopback"
    wait_until(lambda: unread(live, account.key, bot) == 1)

    code, _, err = cli(
        "listen", "--agent", bot, "--max", "1", "--forward", target.url(),
        "--forward-token", "sk-test", "--model", "gpt-test",
    )  # fmt: skip
    assert code == 0, err
    (request,) = target.requests
    assert request.path == "/v1/responses"
    assert request.authorization == "Bearer sk-test"
    assert set(request.body) == {"model", "input"} and request.body["model"] == "gpt-test"
    assert "Subject: Q" in request.body["input"] and "2+2?" in request.body["input"]
    assert "--- BEGIN UNTRUSTED EMAIL BODY ---\n2+2?" in request.body["input"]
    assert "replied to" in err

    wait_until(lambda: unread(live, account.key, human) == 1)
    (reply,) = cli.json("inbox", "--agent", human)
    assert reply["subject"] == "Re: Q" and reply["sender"] == bot
    assert cli.json("read", reply["message_id"], "--agent", human)["text_body"].strip() == (
        "Model says hi."
    )


def test_listen_forward_with_a_token_asks_the_model_at_any_url_and_replies(
    live: LiveGateway, account: Account, cli: Cli, target: FakeTarget
) -> None:
    """The operations contract: with --forward-token, the forward is an OpenAI Responses API
    request with that bearer token, whatever the URL's path, and the model's output text is
    the reply."""
    bot = f"{account.prefix}-tok@{DOMAIN}"
    human = f"{account.prefix}-tokhuman@{DOMAIN}"
    for address in (bot, human):
        assert cli("agents", "register", address.split("@")[0], "--mode", "local")[0] == 0
    cli.json("send", "--agent", human, "--to", bot, "--subject", "Hours?", "--body", "When?")
    wait_until(lambda: unread(live, account.key, bot) == 1)

    code, _, err = cli(
        "listen", "--agent", bot, "--max", "1",
        "--forward", target.url("/model"), "--forward-token", "sk-model",
    )  # fmt: skip
    assert code == 0, err
    (request,) = target.requests
    assert (request.path, request.authorization) == ("/model", "Bearer sk-model")
    assert set(request.body) == {"model", "input"} and "Subject: Hours?" in request.body["input"]
    assert "replied to" in err
    wait_until(lambda: unread(live, account.key, human) == 1)
    (reply,) = cli.json("inbox", "--agent", human)
    assert reply["subject"] == "Re: Hours?" and reply["sender"] == bot


def test_listen_usage_and_cloud_agent_errors(account: Account, cli: Cli) -> None:
    code, _, err = cli("listen", "--forward-token", "t")
    assert code == 2 and "--forward-token needs --forward" in err
    agent = f"{account.prefix}-cloud@{DOMAIN}"
    code, _, err = cli("agents", "register", agent.split("@")[0], "--mode", "cloud")
    assert code == 5 and "cloud agents need a webhook_url" in err  # the server's message
    hook = "https://hooks.example.com/e2a"
    code, _, err = cli("agents", "register", agent.split("@")[0], "--webhook-url", hook)
    assert code == 0, err
    code, out, err = cli("listen", "--max", "1")
    assert (code, out.strip()) == (5, "") and err.splitlines()[-1].startswith("e2a: ")


# Help


def all_commands() -> list[str]:
    """Every command and sub-command of the `e2a` parser under its own name, e.g. "agents
    register" (an alias such as "domains add" shares its command's parser and is left out)."""
    found: list[str] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen: set[int] = set()
                for name, sub in action.choices.items():
                    if id(sub) in seen:
                        continue
                    seen.add(id(sub))
                    found.append(" ".join([*prefix, name]))
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


def test_the_examples_cover_every_command() -> None:
    commands = set(all_commands())
    assert {"serve", "login", "agents register", "config set", "listen"} <= commands
    assert commands <= set(EXAMPLES) | set(SERVER_EXAMPLES)


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_client_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:\n  e2a " in out and "--json" in out


@pytest.mark.parametrize("command", sorted(SERVER_EXAMPLES))
def test_every_server_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    example = capsys.readouterr().out.split("example:\n  ")[1]
    assert f"e2a {command}" in example.splitlines()[0]
