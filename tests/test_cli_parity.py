# ruff: noqa: F811 (the fixtures imported from tests.cli_support are this module's parameters)
"""e2a's CLI spellings against a live gateway: its config file layouts and key names, `pending`
actions, `domains register`, `--hitl-expiration-action`, send/reply with files and blind
copies, inbox pages, `whoami`, `doctor` (DNS from a local server) and `listen --once --until
--conversation`. Our own spellings stay as aliases.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.cli.listen import parse_deadline
from e2a_gateway.mailauth.resolver import Zone
from e2a_gateway.v1 import E2AClient
from tests.cli_support import (  # noqa: F401 (fixtures)
    DOMAIN,
    Account,
    Cli,
    LiveGateway,
    account,
    cli,
    home,
    live,
    unread,
    wait_until,
)
from tests.dns_server import serve_dns

MX_HOST = "mx.agents.test"
"""The gateway's smtp.hostname in tests/conftest.py."""


def register(cli: Cli, *addresses: str) -> None:
    for address in addresses:
        code, _, err = cli("agents", "register", address.split("@")[0], "--mode", "local")
        assert code == 0, err


def write_e2a_config(home: Path, values: dict[str, str]) -> Path:
    """~/.e2a/config.json as e2a's CLI writes it (two-space JSON, mode 0600)."""
    path = home / ".e2a" / "config.json"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(json.dumps(values, indent=2) + "\n")
    path.chmod(0o600)
    return path


# Config files written by e2a's CLI


def test_a_seed_era_e2a_config_file_works_and_keeps_its_layout(
    live: LiveGateway, cli: Cli, home: Path
) -> None:
    key = live.new_key("seed-era@example.com")
    with E2AClient(api_key=key, base_url=live.url) as client:
        client.register_agent("seedbot", agent_mode="local")
    agent = f"seedbot@{DOMAIN}"
    path = write_e2a_config(
        home, {"api_key": key, "api_url": live.url, "agent_email": agent, "shared_domain": DOMAIN}
    )

    assert cli("config", "get", "api_url") == (0, f"{live.url}\n", "")
    assert cli("config", "get", "url") == (0, f"{live.url}\n", "")
    listing = cli.json("config", "list")
    assert (listing["url"], listing["agent_email"], listing["shared_domain"]) == (
        live.url,
        agent,
        DOMAIN,
    )
    out = cli("config", "list")[1]
    assert any(line.split() == ["url", live.url, "file"] for line in out.splitlines())
    assert [a["email"] for a in cli.json("agents", "list")] == [agent]
    assert cli.json("inbox") == []  # the file's agent_email is the default agent

    assert cli("config", "set", "api_url", live.url + "/")[0] == 0
    saved = json.loads(path.read_text())
    assert saved["api_url"] == live.url + "/" and "url" not in saved  # e2a's CLI still reads it
    assert cli.json("agents", "list")[0]["email"] == agent


def test_a_gateway_url_without_a_scheme_is_refused_saying_how(
    live: LiveGateway, cli: Cli, home: Path
) -> None:
    """`localhost:8080` saved as the URL made every later command fail on a missing scheme."""
    for key in ("url", "api_url"):
        code, _, err = cli("config", "set", key, "localhost:8080")
        assert code == 2 and "give its scheme, such as http://localhost:8080" in err, err
    assert not (home / ".e2a" / "config.json").exists()  # nothing saved
    code, _, err = cli("login", "--url", "127.0.0.1:8080", "--api-key", "e2a_x")
    assert code == 2 and "http://127.0.0.1:8080" in err, err


def test_a_current_e2a_config_file_works_and_keeps_its_fields(
    live: LiveGateway, cli: Cli, home: Path
) -> None:
    key = live.new_key("current@example.com")
    path = write_e2a_config(home, {"api_key": key, "api_url": live.url, "key_scope": "account"})
    assert cli.json("whoami")["url"] == live.url
    assert cli("config", "set", "agent_email", f"bot@{DOMAIN}")[0] == 0
    assert json.loads(path.read_text()) == {
        "api_key": key,
        "api_url": live.url,
        "key_scope": "account",
        "agent_email": f"bot@{DOMAIN}",
    }


def test_an_e2a_config_without_api_url_says_how_to_fix(
    live: LiveGateway, cli: Cli, home: Path
) -> None:
    """e2a's CLI leaves api_url out when it is its hosted default: nothing is sent anywhere."""
    write_e2a_config(home, {"api_key": live.new_key("hosted@example.com")})
    code, out, err = cli("agents", "list")
    assert (code, out) == (1, "")
    assert "no api_url" in err and "e2a config set api_url URL" in err


def test_environment_overrides_and_shared_domain(
    live: LiveGateway, account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2A_SHARED_DOMAIN", "elsewhere.test")
    assert cli("config", "get", "shared_domain") == (0, "elsewhere.test\n", "")
    code, _, err = cli("config", "set", "shared_domain", "x.test")
    assert code == 0 and "environment variable overrides shared_domain" in err


# Agents and domains


def test_agents_register_without_a_mode_is_local_as_in_e2a(account: Account, cli: Cli) -> None:
    # e2a's CLI registers every agent local; a webhook URL given makes it a cloud agent.
    local, cloud = f"{account.prefix}-plain", f"{account.prefix}-hooked"
    registered = cli.json("agents", "register", local)
    assert (registered["email"], registered["agent_mode"]) == (f"{local}@{DOMAIN}", "local")
    hooked = cli.json("agents", "register", cloud, "--webhook-url", "https://example.com/hook")
    assert hooked["agent_mode"] == "cloud"


def test_agents_list_marks_the_active_agent_and_takes_e2a_agent_flag(
    account: Account, cli: Cli
) -> None:
    """e2a's `agents list --agent EMAIL` marks that agent (active); without it, the configured
    agent is the one marked."""
    first, second = (f"{account.prefix}-{n}@{DOMAIN}" for n in ("one", "two"))
    register(cli, first)
    register(cli, second)
    code, out, err = cli("agents", "list", "--agent", second)
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "(active)" in lines[second] and "(active)" not in lines[first]
    assert cli("config", "set", "agent_email", first)[0] == 0
    lines = {line.split()[0]: line for line in cli("agents", "list")[1].splitlines()[1:]}
    assert "(active)" in lines[first] and "(active)" not in lines[second]


def test_agents_update_takes_e2a_flag_names_and_slugs(account: Account, cli: Cli) -> None:
    email = f"{account.prefix}-hitl@{DOMAIN}"
    register(cli, email)
    updated = cli.json(
        "agents", "update", email.split("@")[0], "--hitl", "--hitl-expiration-action", "approve"
    )
    assert (updated["email"], updated["hitl_enabled"]) == (email, True)
    assert updated["hitl_expiration_action"] == "approve"
    ours = cli.json("agents", "update", email, "--hitl-expire", "reject")
    assert ours["hitl_expiration_action"] == "reject"
    assert cli("agents", "delete", email.split("@")[0]) == (0, f"Deleted {email}\n", "")


def test_domains_register_and_its_alias_add(account: Account, cli: Cli) -> None:
    first, second = f"{account.prefix}-a.example.net", f"{account.prefix}-b.example.net"
    code, out, err = cli("domains", "register", first)
    assert code == 0 and f"Added {first}" in out and MX_HOST in out, err
    assert cli.json("domains", "add", second)["domain"] == second
    assert sorted(d["domain"] for d in cli.json("domains", "list")) == [first, second]
    code, _, err = cli("domains", "list")
    assert code == 0


# Sending


def test_send_with_bcc_attachments_and_body_files(
    live: LiveGateway, account: Account, cli: Cli, tmp_path: Path
) -> None:
    sender, to, hidden = (f"{account.prefix}-{name}@{DOMAIN}" for name in ("s", "t", "h"))
    register(cli, sender, to, hidden)
    body = tmp_path / "body.txt"
    body.write_text("Numbers attached.\n")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 not really\n")
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    blob = tmp_path / "blob.e2a-unknown"
    blob.write_bytes(bytes(range(256)))
    sent = cli.json(
        "send", "--agent", sender, "--to", to, "--bcc", hidden, "--subject", "Report",
        "--body-file", str(body), "--attach", str(report), "--attach", str(table),
        "--attach", str(blob),
    )  # fmt: skip
    assert sent["method"] == "loopback"
    wait_until(
        lambda: unread(live, account.key, to) == 1 and unread(live, account.key, hidden) == 1
    )

    with E2AClient(api_key=account.key, base_url=live.url) as client:
        (summary,) = client.get_messages(agent_email=to).messages
        email = client.get_message(summary.message_id, agent_email=to)
        assert email.text_body.replace("\r\n", "\n") == "Numbers attached.\n"
        files = {a.filename: (a.content_type, a.data) for a in email.attachments}
        assert files == {
            "report.pdf": ("application/pdf", report.read_bytes()),
            "table.csv": ("text/csv", table.read_bytes()),
            "blob.e2a-unknown": ("application/octet-stream", blob.read_bytes()),
        }
        assert hidden.encode() not in email.raw_message  # a blind copy stays blind
        (copy,) = client.get_messages(agent_email=hidden).messages
        assert copy.subject == "Report"


def test_send_html_file_alone_gets_a_text_body(
    live: LiveGateway, account: Account, cli: Cli, tmp_path: Path
) -> None:
    sender, to = f"{account.prefix}-hs@{DOMAIN}", f"{account.prefix}-ht@{DOMAIN}"
    register(cli, sender, to)
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><style>p{color:red}</style></head><body><h1>Hello</h1>"
        "<p>Line <b>one</b> &amp; more</p><ul><li>a</li><li>b</li></ul></body></html>"
    )
    code, _, err = cli(
        "send", "--agent", sender, "--to", to, "--subject", "H", "--html-file", str(page)
    )
    assert code == 0, err
    wait_until(lambda: unread(live, account.key, to) == 1)
    with E2AClient(api_key=account.key, base_url=live.url) as client:
        (summary,) = client.get_messages(agent_email=to).messages
        email = client.get_message(summary.message_id, agent_email=to)
    assert email.text_body.replace("\r\n", "\n") == "Hello\n\nLine one & more\n\na\nb\n"
    assert email.html_body is not None and "<h1>Hello</h1>" in email.html_body


def test_send_and_reply_errors_are_usage_errors(account: Account, cli: Cli, tmp_path: Path) -> None:
    sender = f"{account.prefix}-err@{DOMAIN}"
    register(cli, sender)
    base = ("send", "--agent", sender, "--to", sender, "--subject", "S")
    code, out, err = cli(*base)
    assert (code, out) == (2, "") and "give a body" in err
    code, _, err = cli(*base, "--body", "x", "--attach", str(tmp_path / "missing.pdf"))
    assert code == 2 and "--attach" in err and "missing.pdf" in err
    code, _, err = cli(*base, "--body-file", str(tmp_path / "none.txt"))
    assert code == 2 and "--body-file" in err
    with pytest.raises(SystemExit) as exit_info:
        from e2a_gateway.cli.main import main

        main([*base, "--body", "x", "--body-file", "y"])
    assert exit_info.value.code == 2


def test_an_attachment_no_gateway_takes_is_refused_before_it_is_read_whole(
    account: Account, cli: Cli, tmp_path: Path
) -> None:
    """A file over the 25 MiB an e2a attachment may be (a disk image attached by mistake), or
    one that never ends (`/dev/zero`), is a usage error before anything is read whole or
    sent; so is a directory, and an idempotency key no header can carry."""
    from e2a_gateway.cli.compose import MAX_ATTACHMENT_BYTES
    from e2a_gateway.outbound.mime import MAX_ATTACHMENT_BYTES as GATEWAY_MAX

    assert MAX_ATTACHMENT_BYTES == GATEWAY_MAX
    sender = f"{account.prefix}-big@{DOMAIN}"
    register(cli, sender)
    huge = tmp_path / "disk.img"
    with huge.open("wb") as handle:
        handle.truncate(MAX_ATTACHMENT_BYTES + 1)  # sparse: costs no disk
    base = ("send", "--agent", sender, "--to", sender, "--subject", "S", "--body", "x")
    for path, words in (
        (huge, "more than the 25 MiB"),
        (Path("/dev/zero"), "more than the 25 MiB"),
        (tmp_path, "Is a directory"),
    ):
        started = time.monotonic()
        code, out, err = cli(*base, "--attach", str(path))
        assert (code, out) == (2, ""), err
        assert f"--attach {path}" in err and words in err, err
        assert time.monotonic() - started < 10
    for key in ("cl\u00e9", "a b", "k" * 256):
        with pytest.raises(SystemExit) as stopped:  # argparse's usage error
            cli(*base, "--idempotency-key", key)
        err = cli.capsys.readouterr().err
        assert stopped.value.code == 2 and "Traceback" not in err, err
        assert "--idempotency-key" in err and "visible ASCII" in err, err
    assert cli("messages", "list", "--agent", sender, "--direction", "outbound") == (0, "", "")


def test_a_file_the_user_may_not_read_is_a_usage_error_naming_it(
    account: Account, cli: Cli, home: Path, tmp_path: Path
) -> None:
    """`--attach` or `--body-file` naming a file the user may not read (run as `e2a` would be,
    without root's power to read anything): exit 2, one line naming the option and the file,
    and nothing sent."""
    from tests.test_cli import as_unprivileged

    sender = f"{account.prefix}-perm@{DOMAIN}"
    register(cli, sender)
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(b"%PDF-1.4\n")
    secret.chmod(0)
    base = ["send", "--agent", sender, "--to", sender, "--subject", "S"]
    env = os.environ | {"HOME": str(home)}
    for extra in (["--body", "x", "--attach", str(secret)], ["--body-file", str(secret)]):
        command = as_unprivileged([sys.executable, "-m", "e2a_gateway", *base, *extra])
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.count("\n") == 1 and "Permission denied" in done.stderr
        assert f"{extra[-2]} {secret}" in done.stderr
    assert cli("messages", "list", "--agent", sender, "--direction", "outbound") == (0, "", "")


def test_reply_with_cc_bcc_and_attachment(
    live: LiveGateway, account: Account, cli: Cli, tmp_path: Path
) -> None:
    bot, human, boss, audit = (f"{account.prefix}-{n}@{DOMAIN}" for n in ("rb", "rh", "rc", "ra"))
    register(cli, bot, human, boss, audit)
    assert cli("send", "--agent", human, "--to", bot, "--subject", "Q", "--body", "?")[0] == 0
    wait_until(lambda: unread(live, account.key, bot) == 1)
    (message,) = cli.json("inbox", "--agent", bot)
    note = tmp_path / "answer.txt"
    note.write_text("42\n")
    replied = cli.json(
        "reply", message["message_id"], "--agent", bot, "--body", "See attached.",
        "--cc", boss, "--bcc", audit, "--attach", str(note),
    )  # fmt: skip
    assert replied["method"] == "loopback"
    for mailbox in (human, boss, audit):
        wait_until(lambda mailbox=mailbox: unread(live, account.key, mailbox) == 1)
    with E2AClient(api_key=account.key, base_url=live.url) as client:
        (summary,) = client.get_messages(agent_email=boss).messages
        email = client.get_message(summary.message_id, agent_email=boss)
    assert email.subject == "Re: Q" and email.cc == [boss]
    assert [(a.filename, a.content_type, a.data) for a in email.attachments] == [
        ("answer.txt", "text/plain", b"42\n")
    ]


def test_send_and_reply_retried_with_an_idempotency_key_go_out_once(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """e2a's `--idempotency-key K`: a script that runs the same send or reply again (after a
    timeout, say) with its key is answered the first message again, and nothing is sent
    twice; another key sends anew."""
    bot, human = (f"{account.prefix}-{n}@{DOMAIN}" for n in ("ib", "ih"))
    register(cli, bot, human)
    send = ("send", "--agent", human, "--to", bot, "--subject", "Q", "--body", "?")
    first = cli.json(*send, "--idempotency-key", "job-7-send")
    again = cli.json(*send, "--idempotency-key", "job-7-send")
    assert again["messageId"] == first["messageId"]
    other = cli.json(*send, "--idempotency-key", "job-8-send")
    assert other["messageId"] != first["messageId"]
    wait_until(lambda: unread(live, account.key, bot) == 2)

    message = cli.json("inbox", "--agent", bot)[0]["message_id"]
    reply = ("reply", message, "--agent", bot, "--body", "Answer.")
    code, out, err = cli(*reply, "--idempotency-key", "job-7-reply")
    assert code == 0, err
    assert cli(*reply, "--idempotency-key", "job-7-reply") == (code, out, err)
    wait_until(lambda: unread(live, account.key, human) == 1)
    time.sleep(0.3)
    assert unread(live, account.key, human) == 1


def test_inbox_pages_with_token(live: LiveGateway, account: Account, cli: Cli) -> None:
    agent = f"{account.prefix}-pages@{DOMAIN}"
    register(cli, agent)
    for number in range(3):
        live.send_mail(agent, f"Page {number}", "x\n")
    wait_until(lambda: unread(live, account.key, agent) == 3)

    code, out, err = cli("inbox", "--agent", agent, "--limit", "2")
    assert code == 0 and [line.split()[2:4] for line in out.splitlines()[1:]] == [
        ["Page", "0"],
        ["Page", "1"],
    ]
    token = err.split("--token ")[1].split()[0]
    rest = cli.json("inbox", "--agent", agent, "--limit", "2", "--token", token)
    assert [m["subject"] for m in rest] == ["Page 2"]
    code, _, err = cli("inbox", "--agent", agent, "--token", "garbage")
    assert code == 5 and err.startswith("e2a: ")


# Approvals


EDITOR = """\
import sys
from pathlib import Path
path = Path(sys.argv[1])
text = path.read_text()
assert "--- body ---" in text and text.startswith("# Edit")
text = text.replace("subject: Draft", "subject: Final")
text = text.split("--- body ---")[0] + "--- body ---\\nEdited body.\\n"
path.write_text(text)
"""


def test_pending_list_show_approve_edit_and_reject(
    live: LiveGateway, account: Account, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held, peer = f"{account.prefix}-ph@{DOMAIN}", f"{account.prefix}-pp@{DOMAIN}"
    register(cli, held, peer)
    assert cli("agents", "update", held, "--hitl")[0] == 0
    for subject in ("Draft", "Other"):
        out = cli.json(
            "send", "--agent", held, "--to", peer, "--subject", subject, "--body", "v1", expect=3
        )
        assert out["status"] == "pending_review"
    listed = {m["subject"]: m["id"] for m in cli.json("pending", "list")}
    assert set(listed) == {"Draft", "Other"} and cli.json("pending") == cli.json("pending", "list")

    code, out, err = cli("pending", "show", listed["Draft"])
    assert code == 0, err
    assert out.rstrip().endswith("v1") and "ID:" in out and "pending_approval" in out
    assert cli.json("pending", "show", listed["Draft"])["body_text"] == "v1"

    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    code, out, err = cli("pending", "approve", listed["Draft"], "--edit")
    assert code == 0, err
    assert out.startswith(f"Approved {listed['Draft']}") and "edited: body_text, subject" in out
    approved = cli.json("pending", "show", listed["Draft"])
    assert approved["edited"] is True and approved["subject"] == "Final"

    monkeypatch.setenv("EDITOR", "false")  # an editor that fails approves nothing
    code, _, err = cli("pending", "approve", listed["Other"], "--edit")
    assert code == 1 and "nothing was approved" in err
    monkeypatch.setenv("EDITOR", "truncate -s 0")  # nor does emptying the file
    code, _, err = cli("pending", "approve", listed["Other"], "--edit")
    assert code == 1 and "nothing was approved" in err
    assert cli.json("pending", "show", listed["Other"])["status"] == "pending_approval"
    rejected = cli.json("pending", "reject", listed["Other"], "--reason", "no")
    assert (rejected["status"], rejected["rejection_reason"]) == ("rejected", "no")
    code, _, err = cli("pending", "approve", listed["Other"], "--edit")
    assert code == 1 and "not pending" in err

    wait_until(lambda: unread(live, account.key, peer) == 1)
    (final,) = cli.json("inbox", "--agent", peer)
    assert final["subject"] == "Final"
    assert cli.json("read", final["message_id"], "--agent", peer)["text_body"].strip() == (
        "Edited body."
    )


def test_approve_edit_of_the_text_of_an_html_message_sends_the_text_alone(
    live: LiveGateway, account: Account, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editor shows the text; a reviewer who corrects it must not send the correction
    beside the HTML part that still says the old thing (and that mail clients show)."""
    held, peer = f"{account.prefix}-hh@{DOMAIN}", f"{account.prefix}-hp@{DOMAIN}"
    register(cli, held, peer)
    assert cli("agents", "update", held, "--hitl")[0] == 0
    sent = cli.json(
        "send", "--agent", held, "--to", peer, "--subject", "Draft",
        "--body", "Pay 500 EUR", "--html", "<p>Pay <b>500 EUR</b></p>", expect=3,
    )  # fmt: skip
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    code, out, err = cli("pending", "approve", sent["messageId"], "--edit")
    assert code == 0, err
    assert "body_html" in out and "HTML part" in out

    wait_until(lambda: unread(live, account.key, peer) == 1)
    (final,) = cli.json("inbox", "--agent", peer)
    read = cli.json("read", final["message_id"], "--agent", peer)
    assert read["text_body"].strip() == "Edited body."
    assert not read.get("html_body"), read.get("html_body")


SUBJECT_EDITOR = """\
import sys
from pathlib import Path
path = Path(sys.argv[1])
path.write_bytes(path.read_bytes().replace(b"subject: Draft", b"subject: Final"))
"""


def test_approve_edit_of_the_subject_alone_keeps_a_crlf_body_and_its_html(
    live: LiveGateway, account: Account, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body the agent wrote with CRLF line ends is not edited by an edit of the subject alone:
    the text goes out as written, and the HTML part with it."""
    held, peer = f"{account.prefix}-ch@{DOMAIN}", f"{account.prefix}-cp@{DOMAIN}"
    register(cli, held, peer)
    assert cli("agents", "update", held, "--hitl")[0] == 0
    sent = cli.json(
        "send", "--agent", held, "--to", peer, "--subject", "Draft",
        "--body", "Hello,\r\nthe offer is below.\r\n", "--html", "<p>The <b>offer</b></p>",
        expect=3,
    )  # fmt: skip
    editor = tmp_path / "editor.py"
    editor.write_text(SUBJECT_EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    code, out, err = cli("pending", "approve", sent["messageId"], "--edit")
    assert code == 0, err
    assert "edited: subject)" in out and "HTML part" not in out, out

    wait_until(lambda: unread(live, account.key, peer) == 1)
    (final,) = cli.json("inbox", "--agent", peer)
    read = cli.json("read", final["message_id"], "--agent", peer)
    assert read["subject"] == "Final"
    assert read["html_body"] and "<b>offer</b>" in read["html_body"]


# whoami


def test_whoami(live: LiveGateway, account: Account, cli: Cli) -> None:
    agent = f"{account.prefix}-who@{DOMAIN}"
    register(cli, agent)
    me = cli.json("whoami")
    assert me["url"] == live.url and me["shared_domain"] == DOMAIN and me["version"]
    assert me["key"]["key_prefix"] and account.key.startswith(me["key"]["key_prefix"])
    assert (me["agents"], me["agent_email"]) == ([agent], agent)
    code, out, err = cli("whoami")
    assert code == 0, err
    assert f"Gateway:       {live.url}" in out and agent in out
    assert account.key not in out


# doctor


@contextmanager
def dns_server(zone: Zone) -> Iterator[int]:
    """An authoritative DNS server for `zone` on loopback (UDP and TCP); its port."""
    ready: queue.Queue[Any] = queue.Queue()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_dns, zone)
            ready.put((port, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    port, token, scope = ready.get(timeout=10)
    try:
        yield port
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=10)


GOOD_ZONE: Zone = {
    DOMAIN: {"MX": [(10, MX_HOST)], "TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    MX_HOST: {"A": ["192.0.2.25"]},
    f"e2a._domainkey.{DOMAIN}": {"TXT": ["v=DKIM1; k=rsa; p=MIIBIjANBgkq"]},
    f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; p=none"]},
}
BROKEN_ZONE: Zone = {
    DOMAIN: {"MX": [(10, "mail.elsewhere.example")], "TXT": ["v=spf1 -all", "v=spf1 ~all"]},
}


def statuses(report: dict[str, Any]) -> dict[str, str]:
    """check id → status (the last one of an id)."""
    return {check["id"]: check["status"] for check in report["checks"]}


def test_doctor_passes_a_healthy_setup(live: LiveGateway, account: Account, cli: Cli) -> None:
    agent = f"{account.prefix}-doc@{DOMAIN}"
    register(cli, agent)
    assert cli("domains", "register", f"{account.prefix}-doc.example.net")[0] == 0  # names MX_HOST
    with dns_server(GOOD_ZONE) as port:
        ns = ("--nameserver", f"127.0.0.1:{port}")
        code, out, err = cli("doctor", *ns, "--dkim-selector", "e2a")
        report = cli.json("doctor", *ns, "--dkim-selector", "e2a")
    assert code == 0, out + err
    assert statuses(report) == {
        "gateway.health": "pass",
        "gateway.info": "pass",
        "api.key": "pass",
        "agent": "pass",
        "dns.mx": "pass",
        "dns.mx_address": "pass",
        "dns.spf": "pass",
        "dns.dkim": "pass",
        "dns.dmarc": "pass",
        "websocket": "pass",
    }
    assert report["ok"] is True and report["agent"] == agent
    assert "✓ dns.mx" in out and f"{DOMAIN} → {MX_HOST}" in out and "✗" not in out
    assert "0 failed" in out
    assert account.key not in out + json.dumps(report)
    assert unread(live, account.key, agent) == 0  # nothing was sent, nothing marked read


def test_doctor_says_what_to_fix(account: Account, cli: Cli) -> None:
    agent = f"{account.prefix}-sick@{DOMAIN}"
    register(cli, agent)
    assert cli("domains", "register", f"{account.prefix}-sick.example.net")[0] == 0
    with dns_server(BROKEN_ZONE) as port:
        code, out, err = cli("doctor", "--nameserver", f"127.0.0.1:{port}")
        json_code, json_out, _ = cli("doctor", "--nameserver", f"127.0.0.1:{port}", "--json")
    assert code == json_code == 9, err  # a failed check: e2a's CLI's exit code 9
    report = json.loads(json_out)
    checks = {check["id"]: check for check in report["checks"]}
    assert checks["dns.mx"]["status"] == "fail"
    assert checks["dns.mx"]["fix"].startswith(f"publish MX {DOMAIN} → {MX_HOST} (priority 10)")
    assert checks["dns.spf"]["status"] == "fail" and "merge" in checks["dns.spf"]["fix"]
    assert checks["dns.dkim"]["status"] == "skip"
    assert checks["dns.dmarc"]["status"] == "warn"
    assert checks["websocket"]["status"] == "pass" and report["ok"] is False
    assert "✗ dns.mx" in out and f"fix: publish MX {DOMAIN} → {MX_HOST}" in out


def test_doctor_checks_a_named_domain_and_the_mcp_endpoint(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """`--domain D` checks D's records (no agent needed), a domain the account has not
    registered is a failed check saying how to register it; `--mcp-url URL` checks that the
    MCP endpoint is routed there (404 fails), as e2a's CLI does."""
    custom = f"{account.prefix}-own.example.net"
    assert cli("domains", "register", custom)[0] == 0
    zone: Zone = {custom: {"MX": [(10, MX_HOST)]}, MX_HOST: {"A": ["192.0.2.25"]}}
    with dns_server(zone) as port:
        ns = ("--nameserver", f"127.0.0.1:{port}")
        code, out, _ = cli("doctor", *ns, "--domain", custom, "--json")
        assert code == 9  # its verification TXT is missing
        checks = {check["id"]: check for check in json.loads(out)["checks"]}
        assert checks["dns.mx"]["status"] == "pass" and custom in checks["dns.mx"]["detail"]
        assert checks["dns.verification"]["status"] == "fail"
        code, out, _ = cli("doctor", *ns, "--domain", "nobody.example.org")
    assert code == 9 and "✗ domain.registered" in out and "dns.mx" not in out
    assert "e2a domains register nobody.example.org" in out

    code, out, _ = cli("doctor", "--mcp-url", f"{live.url}/mcp", "--json")
    assert statuses(json.loads(out))["mcp.reachability"] == "pass", out
    code, out, _ = cli("doctor", "--mcp-url", f"{live.url}/not-mcp")
    assert code == 9 and "✗ mcp.reachability" in out and "404" in out
    with pytest.raises(SystemExit) as exit_info:
        cli("doctor", "--mcp-url", "mcp.example.com")
    assert exit_info.value.code == 2


def test_doctor_without_a_gateway_or_with_a_bad_key(
    live: LiveGateway, account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2A_URL", "http://127.0.0.1:9")
    code, out, _ = cli("doctor")
    assert code == 1 and "✗ gateway.health" in out and "e2a serve" in out
    monkeypatch.setenv("E2A_URL", live.url)
    monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
    code, out, _ = cli("doctor")
    assert code == 4 and "✓ gateway.health" in out and "✗ api.key" in out
    assert "e2a login" in out


class _HalfAlive(http.server.BaseHTTPRequestHandler):
    """A gateway that answers its health and info, then drops every API call (counted)."""

    dropped: list[str] = []

    def do_GET(self) -> None:
        answers = {
            "/api/health": {"storage": {"backend": "sqlite"}},
            "/api/v1/info": {"version": "0", "shared_domain": DOMAIN},
        }
        if self.path not in answers:
            self.dropped.append(self.path)
            self.close_connection = True
            return  # nothing said: the client sees the connection closed
        body = json.dumps(answers[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_gateway_that_stops_answering_is_said_at_once(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Doctor makes each check once (no retries behind it) and client commands say `cannot
    reach the gateway`, exit 1, as for any call given no answer."""
    dropped: list[str] = []
    handler = type("Handler", (_HalfAlive,), {"dropped": dropped})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("E2A_URL", url)
    monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
    try:
        code, _, err = cli("doctor")
        assert code == 1 and f"cannot reach the gateway at {url}" in err, err
        assert dropped == ["/v1/account"]  # the key check, made once
        code, out, err = cli("agents", "list")
        assert (code, out) == (1, "") and f"cannot reach the gateway at {url}" in err
        assert "Traceback" not in err and err.count("\n") == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_gateway_that_never_answers_fails_the_command_within_seconds(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that takes connections and never answers: the CLI gives each try
    `context.CLI_TIMEOUT_SECONDS` (10 s: about 32 s in all with the SDK's two retries, not
    the SDK's 90 s), then says `cannot reach the gateway`, exit 1. Shortened here to 0.5 s."""
    from e2a_gateway.cli import context
    from e2a_gateway.v1.retries import MAX_RETRIES

    assert context.CLI_TIMEOUT_SECONDS * (MAX_RETRIES + 1) <= 30
    monkeypatch.setattr(context, "CLI_TIMEOUT_SECONDS", 0.5)
    held: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_and_hold() -> None:
        with suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept_and_hold, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("E2A_URL", url)
    monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
    try:
        started = time.monotonic()
        code, out, err = cli("agents", "list")
        assert (code, out) == (1, "") and f"cannot reach the gateway at {url}" in err
        assert time.monotonic() - started < 6 and len(held) == MAX_RETRIES + 1
    finally:
        listener.close()
        for connection in held:
            connection.close()


# listen --once --until --conversation


def test_listen_once_until_times_out(account: Account, cli: Cli) -> None:
    agent = f"{account.prefix}-quiet@{DOMAIN}"
    register(cli, agent)
    started = time.monotonic()
    code, out, err = cli("listen", "--agent", agent, "--once", "--until", "1s")
    assert (code, out) == (6, "TIMEOUT\n"), err
    assert 0.9 <= time.monotonic() - started < 10
    code, out, _ = cli("listen", "--agent", agent, "--once", "--until", "2020-01-01T00:00:00Z")
    assert (code, out) == (6, "TIMEOUT\n")
    for bad in ("soon", "2030-01-01T00:00:00"):  # a word; a time without its zone
        with pytest.raises(SystemExit) as exit_info:
            from e2a_gateway.cli.main import main

            main(["listen", "--until", bad])
        assert exit_info.value.code == 2


def test_until_takes_a_duration_or_an_rfc_3339_time_with_its_zone() -> None:
    assert parse_deadline("1h30m", now=100.0) == 5500.0
    assert parse_deadline("2030-01-01T01:00:00+01:00") == 1_893_456_000.0
    for bad, problem in (
        ("2030-01-01T00:00:00", "has no time zone"),
        ("2030-01-01T00:00Z", "expected an RFC 3339 time"),  # no seconds
        ("2030-01-01", "expected an RFC 3339 time"),
        ("soon", "expected an RFC 3339 time"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=problem):
            parse_deadline(bad)


def test_listen_once_takes_the_first_message_of_a_conversation(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    bot, human = f"{account.prefix}-conv@{DOMAIN}", f"{account.prefix}-convh@{DOMAIN}"
    register(cli, bot, human)
    for subject, conversation in (("Other thread", "conv_b"), ("Wanted", "conv_a")):
        sent = cli.json(
            "send", "--agent", human, "--to", bot, "--subject", subject, "--body", "x",
            "--conversation-id", conversation,
        )  # fmt: skip
        assert sent["method"] == "loopback"
    wait_until(lambda: unread(live, account.key, bot) == 2)

    code, out, err = cli(
        "listen", "--agent", bot, "--once", "--until", "30s", "--conversation", "conv_a", "--json"
    )
    assert code == 0, err
    (line,) = out.splitlines()
    message = json.loads(line)
    assert (message["subject"], message["conversation_id"]) == ("Wanted", "conv_a")
    # The other conversation's message was not fetched: it is still unread.
    with E2AClient(api_key=account.key, base_url=live.url) as client:
        (left,) = client.get_messages(agent_email=bot).messages
    assert (left.subject, left.conversation_id) == ("Other thread", "conv_b")


def test_a_body_file_no_gateway_takes_is_refused_before_it_is_read_whole(
    account: Account, cli: Cli, tmp_path: Path
) -> None:
    """`--body-file` or `--html-file` naming a file over the 10 MiB an e2a message may be
    composed of (a log attached as the body by mistake), or one that never ends
    (`/dev/zero`), is a usage error before it is read whole or anything is sent."""
    from e2a_gateway.cli.compose import MAX_BODY_BYTES
    from e2a_gateway.operations.drafts import V1_MAX_COMPOSED_BYTES

    assert MAX_BODY_BYTES == V1_MAX_COMPOSED_BYTES
    sender = f"{account.prefix}-bigbody@{DOMAIN}"
    register(cli, sender)
    huge = tmp_path / "huge.log"
    with huge.open("wb") as handle:
        handle.truncate(MAX_BODY_BYTES + 1)  # sparse: costs no disk
    base = ("send", "--agent", sender, "--to", sender, "--subject", "S")
    for option in ("--body-file", "--html-file"):
        for path in (huge, Path("/dev/zero")):
            started = time.monotonic()
            code, out, err = cli(*base, option, str(path))
            assert (code, out) == (2, ""), err
            assert f"{option} {path}" in err and "more than the 10 MiB" in err, err
            assert time.monotonic() - started < 10
    assert cli("messages", "list", "--agent", sender, "--direction", "outbound") == (0, "", "")
