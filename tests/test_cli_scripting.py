# ruff: noqa: F811 (the fixtures imported from tests.cli_support are this module's parameters)
"""e2a's CLI's scripting surface (`@e2a/cli` 2.0.0) against a live gateway: its commands
(`messages`, `agents create|get`, `keys`, `--reply-to`) and its frozen exit codes, which
scripts branch on."""

from __future__ import annotations

import json

import pytest

from e2a_gateway.cli import main as cli_main
from tests.cli_support import (  # noqa: F401 (fixtures)
    DOMAIN,
    SENDER,
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


def _agent(cli: Cli, account: Account, name: str) -> str:
    address = f"{account.prefix}-{name}@{DOMAIN}"
    code, out, err = cli("agents", "create", address, "--name", name.title())
    assert (code, out, err) == (0, f"{address}\n", "")
    return address


def test_exit_codes_of_refused_requests(
    account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 for a refused key, 5 for a request refused for good (404, 422), 2 for bad usage."""
    agent = _agent(cli, account, "codes")
    assert cli("read", "msg_missing", "--agent", agent)[0] == 5
    assert cli("messages", "get", "msg_missing", "--agent", agent)[0] == 5
    assert cli("agents", "register", "--email", f"x@{DOMAIN}", "--mode", "cloud")[0] == 5
    assert cli("messages", "get", "m", "--text", "--json", "--agent", agent)[0] == 2
    monkeypatch.setenv("E2A_API_KEY", "e2a_" + "0" * 64)
    code, out, err = cli("messages", "list", "--agent", agent)
    assert (code, out) == (4, "") and "401" in err


def test_held_send_exits_3_and_reply_to_goes_out(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """A send held for review exits 3 (`== 3` in a script), with --json too; a sent one 0.
    `--reply-to` is sent as the message's Reply-To."""
    held, peer = _agent(cli, account, "held"), _agent(cli, account, "peer")
    assert cli("agents", "update", held, "--hitl")[0] == 0
    code, out, err = cli("send", "--agent", held, "--to", peer, "--subject", "S", "--body", "b")
    assert code == 3 and "held for approval" in err and "did NOT go out" in err
    assert out.startswith("msg_") and out.count("\n") == 1  # the id alone: ID=$(e2a send …)
    code, out, _ = cli(
        "send", "--agent", held, "--to", peer, "--subject", "S", "--body", "b", "--json"
    )
    assert code == 3 and json.loads(out)["status"] == "pending_review"
    code, _, err = cli(
        "send", "--agent", held, "--to", peer, "--subject", "S", "--body", "b",
        "--reply-to", f"desk@{DOMAIN}",
    )  # fmt: skip
    assert code == 3 and ", pending_review)" in err

    sender = _agent(cli, account, "sender")
    code, out, err = cli(
        "send", "--agent", sender, "--to", peer, "--subject", "Hi", "--body", "hello",
        "--reply-to", f"desk@{DOMAIN}",
    )  # fmt: skip
    assert code == 0, err
    wait_until(lambda: unread(live, account.key, peer) == 1)
    lines = cli("messages", "list", "--agent", peer, "--json")[1].splitlines()
    message_id = json.loads(lines[0])["id"]
    code, out, _ = cli("messages", "get", message_id, "--agent", peer)
    assert code == 0 and len(out.splitlines()) == 1
    assert f"desk@{DOMAIN}" in json.dumps(json.loads(out)["replyTo"])
    code, out, err = cli(
        "reply", message_id, "--agent", peer, "--body", "ok", "--reply-to", f"team@{DOMAIN}"
    )
    assert code == 0, err


def test_messages_list_and_get_as_e2a_cli_prints_them(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """`messages list`: oldest first, read ones too, `ID<TAB>FROM<TAB>CREATED`, NDJSON with
    --json in e2a's SDK shape; `messages get --text` the text only, terminal-safe."""
    agent = _agent(cli, account, "box")
    live.send_mail(agent, "First", "one\n")
    live.send_mail(agent, "Second \x1b]0;pwned\x07", "two \x1b[2Jcleared\n")
    wait_until(lambda: unread(live, account.key, agent) == 2)
    code, out, err = cli("messages", "list", "--agent", agent)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 2 and all(len(row) == 3 for row in rows)
    assert rows[0][1] == f"Alice <{SENDER}>" or SENDER in rows[0][1]
    assert rows[0][2].endswith("Z") and rows[0][2][19] == "."
    first, second = rows[0][0], rows[1][0]

    code, out, _ = cli("messages", "get", second, "--agent", agent, "--text")
    assert (code, out) == (0, "two cleared\n")
    assert cli("messages", "list", "--agent", agent, "--read-status", "unread")[1].startswith(first)
    lines = cli("messages", "list", "--agent", agent, "--json")[1].splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [m["id"] for m in parsed] == [first, second]
    assert "createdAt" in parsed[0] and "created_at" not in parsed[0]
    assert cli("messages", "list", "--agent", agent, "--limit", "1")[1].count("\n") == 1
    assert cli("messages", "list", "--agent", agent, "--since", rows[0][2])[1].count("\n") == 2
    assert cli("messages", "list", "--agent", agent, "--since", "2999-01-01T00:00:00Z")[1] == ""
    with pytest.raises(SystemExit) as exit_info:
        cli("messages", "list", "--agent", agent, "--direction", "sideways")
    assert exit_info.value.code == 2
    code, out, _ = cli("messages", "lifecycle", second, "--agent", agent)
    assert code == 0 and "items" in json.loads(out)


def test_agents_get_and_keys(account: Account, cli: Cli) -> None:
    """`agents get` prints e2a's labelled lines; `keys create --agent` prints the key alone
    on stdout, `keys list` shows it bound, `keys delete` revokes it."""
    agent = _agent(cli, account, "keys")
    code, out, _ = cli("agents", "get", agent)
    assert code == 0 and out.splitlines()[0] == f"email:    {agent}"
    assert f"domain:   {DOMAIN} (" in out and "name:     Keys" in out
    code, out, err = cli("keys", "create", "--agent", agent, "--name", "ci")
    assert code == 0 and out.startswith("e2a_") and out.count("\n") == 1
    assert "agent-scoped" in err and "Shown once" in err
    key_id = err.split()[1]
    rows = [line.split("\t") for line in cli("keys", "list")[1].splitlines()]
    assert [key_id, "agent", agent, "ci"] in [[r[0], r[2], r[3], r[4]] for r in rows]
    assert cli("keys", "delete", key_id) == (0, f"revoked {key_id}\n", "")
    assert key_id not in cli("keys", "list")[1]
    code, out, err = cli("keys", "create", "--name", "scripted")
    other = err.split()[1]
    # With --json, the revocation is JSON too (the /v1 answer, in the SDK's shape).
    assert cli("keys", "delete", other, "--json") == (
        0,
        json.dumps({"deleted": True, "id": other}, separators=(",", ":")) + "\n",
        "",
    )


def test_version_short_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from e2a_gateway.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["-v"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("e2a ")


def test_doctor_exit_codes_follow_e2a_cli() -> None:
    """0 healthy, 8 warnings only, 9 a failed check, 4 a refused key, 1 no gateway."""
    from e2a_gateway.cli.doctor import Report, exit_code

    def report(*findings: tuple[str, str]) -> Report:
        result = Report(url="http://gateway")
        for id, status in findings:
            result.add(id, status, "detail")  # type: ignore[arg-type]
        return result

    assert exit_code(report(("api.key", "pass"), ("dns.spf", "pass"))) == 0
    assert exit_code(report(("api.key", "pass"), ("dns.dmarc", "warn"))) == 8
    assert exit_code(report(("dns.mx", "fail"), ("dns.dmarc", "warn"))) == 9
    assert exit_code(report(("gateway.health", "pass"), ("api.key", "fail"))) == 4
    assert exit_code(report(("gateway.health", "fail"))) == 1


SEND_RESULT_KEYS = (
    "approvalExpiresAt",
    "edited",
    "messageId",
    "method",
    "providerMessageId",
    "sentAs",
    "status",
)
"""e2a's SDK's SendResultView, as its CLI prints it with --json (the model's key order)."""


def _send_result(out: str) -> dict[str, object]:
    """One compact JSON line in e2a's CLI's send shape; its object."""
    assert out.endswith("\n") and out.count("\n") == 1, out
    result = json.loads(out)
    assert out == json.dumps(result, separators=(",", ":")) + "\n"
    assert list(result) == [key for key in SEND_RESULT_KEYS if key in result], result
    return dict(result)


def test_send_and_reply_json_print_e2a_send_result(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """`send`/`reply --json` print one compact line in e2a's SDK's camelCase SendResultView
    (what scripts pipe to `jq -r .messageId`), with `/v1`'s statuses: `pending_review` for a
    held one (exit 3)."""
    sender, peer = _agent(cli, account, "jsender"), _agent(cli, account, "jpeer")
    code, out, err = cli(
        "send", "--agent", sender, "--to", peer, "--subject", "Hi", "--body", "hello", "--json"
    )
    assert code == 0, err
    sent = _send_result(out)
    assert str(sent["messageId"]).startswith("msg_") and sent["status"] in ("sent", "accepted")
    assert sent["method"] == "loopback" and sent["sentAs"] == "own_address"

    wait_until(lambda: unread(live, account.key, peer) == 1)
    message_id = json.loads(cli("messages", "list", "--agent", peer, "--json")[1])["id"]
    code, out, err = cli("reply", message_id, "--agent", peer, "--body", "thanks", "--json")
    assert code == 0, err
    assert _send_result(out)["status"] in ("sent", "accepted")

    assert cli("agents", "update", sender, "--hitl")[0] == 0
    code, out, err = cli(
        "send", "--agent", sender, "--to", peer, "--subject", "S", "--body", "b", "--json"
    )
    held = _send_result(out)
    assert code == 3 and held["status"] == "pending_review" and "did NOT go out" in err
    expires = str(held["approvalExpiresAt"])
    assert expires.endswith("Z") and expires[19] == "." and len(expires) == 24
    assert cli("pending", "show", str(held["messageId"]))[0] == 0


def test_protection_get_and_set(account: Account, cli: Cli) -> None:
    """`protection get|set` print e2a's summary (or one JSON line). As this gateway has no
    content scan, `--outbound-review on` holds every send for review (an open gate would hold
    nothing) and says so; `off` lets them go out again; a scan level is refused up front."""
    agent, peer = _agent(cli, account, "guarded"), _agent(cli, account, "guardpeer")
    code, out, err = cli("protection", "get", agent)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["outbound: gate=open/flag scan=off", "inbound:  gate=open/flag scan=off"]
    assert lines[2].startswith("holds:    ttl=") and lines[2].endswith("notifications=enabled")
    code, out, _ = cli("protection", "get", agent, "--json")
    config = json.loads(out)
    assert code == 0 and out.count("\n") == 1 and "ttlSeconds" in config["holds"]

    code, out, err = cli("protection", "set", agent, "--outbound-review", "on")
    assert code == 0, err
    assert out.splitlines()[0] == "outbound: gate=allowlist/review scan=off"
    assert "no content scan" in err and "every send" in err
    send = ("send", "--agent", agent, "--to", peer, "--subject", "S", "--body", "b")
    assert cli(*send)[0] == 3
    code, out, err = cli("protection", "set", agent, "--outbound-review", "off")
    assert (code, out.splitlines()[0]) == (0, "outbound: gate=open/flag scan=off"), err
    assert cli(*send)[0] == 0

    code, out, _ = cli("protection", "set", agent, "--suppress-notifications", "on", "--json")
    assert code == 0 and json.loads(out)["holds"]["suppressNotifications"] is True
    code, out, err = cli("protection", "set", agent, "--outbound-scan", "medium")
    assert (code, out) == (2, "") and "only off" in err and "--outbound-review on" in err
    assert cli("protection", "set", agent)[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        cli("protection", "set", agent, "--inbound-review", "sideways")
    assert exit_info.value.code == 2


def test_config_key_scope_and_bare_key(account: Account, cli: Cli) -> None:
    """`e2a login` records the key's scope (`config get key_scope`, as e2a's CLI caches it),
    `e2a config api_url` is `config get api_url` (e2a's shorthand); a new key forgets the
    scope, which only login or whoami can know. An unset key prints nothing, exit 0."""
    assert cli("config", "get", "key_scope") == (0, "account\n", "")
    url = cli("config", "get", "api_url")[1]
    assert cli("config", "api_url") == (0, url, "")
    code, _, err = cli("config", "set", "key_scope", "agent")
    assert code == 2 and "e2a login" in err
    assert cli("config", "set", "api_key", account.key)[0] == 0
    # Unset: nothing on stdout and exit 0, as e2a's CLI (`[ -n "$(e2a config get K)" ]`).
    code, out, err = cli("config", "get", "key_scope")
    assert (code, out) == (0, "") and "e2a login" in err
    code, out, err = cli("config", "key_scope")
    assert (code, out) == (0, "") and "e2a login" in err
    code, out, _ = cli("config", "get", "key_scope", "--json")
    assert code == 0 and json.loads(out) == {"key_scope": None}


def test_doctor_json_carries_e2a_schema_and_exit_code() -> None:
    """`doctor --json` is e2a's versioned report: `schema` `e2a.doctor/v1`, `status`,
    `exit_code` (what the command exits with) and a `summary` of counts."""
    from e2a_gateway.cli.doctor import Report, report_json

    report = Report(url="http://gateway", agent="bot@agents.test")
    report.add("api.key", "pass", "accepted")
    report.add("dns.dmarc", "warn", "no DMARC record", "publish one")
    report.add("websocket", "skip", "webhook agent")
    document = report_json(report)
    assert document["schema"] == "e2a.doctor/v1" and document["deployment_url"] == "http://gateway"
    assert (document["status"], document["exit_code"]) == ("warnings", 8)
    assert document["summary"] == {"pass": 1, "warn": 1, "fail": 0, "skip": 1}
    assert [check["id"] for check in document["checks"]] == ["api.key", "dns.dmarc", "websocket"]
    report.add("dns.mx", "fail", "no MX")
    assert (report_json(report)["status"], report_json(report)["exit_code"]) == ("failed", 9)


def test_listen_once_text_prints_what_the_sender_wrote(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """`listen --once --text` (e2a's blocking wait for one reply) prints the reply's text alone,
    without the quoted history, as `messages get --text` does, and marks it read; `--text`
    without `--once` is a usage error, as in e2a's CLI."""
    agent = _agent(cli, account, "waiter")
    code, out, err = cli("listen", "--agent", agent, "--text")
    assert (code, out) == (2, "") and "--once" in err
    body = "Sounds good, ship it.\n\nOn Mon, 6 Jul 2026, Bob wrote:\n> the plan\n> in full\n"
    live.send_mail(agent, "Re: plan", body)
    wait_until(lambda: unread(live, account.key, agent) == 1)
    code, out, err = cli("listen", "--agent", agent, "--once", "--text", "--until", "60s")
    assert (code, out) == (0, "Sounds good, ship it.\n"), err
    assert unread(live, account.key, agent) == 0
    message_id = cli("messages", "list", "--agent", agent)[1].split("\t")[0]
    code, out, _ = cli("messages", "get", message_id, "--agent", agent, "--text")
    assert (code, out) == (0, "Sounds good, ship it.\n")


def test_listen_text_with_json_is_a_usage_error_as_messages_get(
    live: LiveGateway, account: Account, cli: Cli
) -> None:
    """`listen --once --text --json` asks for two outputs: refused (exit 2) before any mail
    is read, with the words `messages get --text --json` is refused with, in either order."""
    agent = _agent(cli, account, "both")
    live.send_mail(agent, "Waiting", "Still here.\n")
    wait_until(lambda: unread(live, account.key, agent) == 1)
    refusal = "error: --text and --json are mutually exclusive\n"
    assert cli("messages", "get", "m", "--text", "--json", "--agent", agent)[2:] == (
        f"e2a messages: {refusal}",
    )
    expected = f"e2a listen: {refusal}"
    for args in (
        ("listen", "--agent", agent, "--once", "--text", "--json", "--until", "5s"),
        ("listen", "--json", "--text", "--once", "--agent", agent),
    ):
        assert cli(*args) == (2, "", expected)
    assert unread(live, account.key, agent) == 1


def test_whoami_json_is_e2a_account_view(
    account: Account, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`whoami --json` prints e2a's AccountView on one line (user, scope, agentEmail for an
    agent key, planCode, limits, usage, in its SDK's camelCase), as e2a's CLI does, plus the
    gateway's own keys (url, version, key, agents, agent_email: the default agent)."""
    agent = _agent(cli, account, "who")
    code, out, err = cli("whoami", "--json")
    assert code == 0 and out.count("\n") == 1, err
    me = json.loads(out)
    assert me["scope"] == "account" and "agentEmail" not in me and me["user"]["email"]
    assert {"planCode", "upgradeUrl"} <= me.keys()
    assert {"maxAgents", "maxMessagesMonth"} <= me["limits"].keys()
    assert me["usage"]["agents"] == 1 and "messagesMonth" in me["usage"]
    assert (me["agents"], me["agent_email"]) == ([agent], agent) and me["url"]
    code, out, _ = cli("keys", "create", "--agent", agent, "--name", "bound")
    monkeypatch.setenv("E2A_API_KEY", out.strip())
    code, out, err = cli("whoami", "--json")
    assert code == 0, err
    me = json.loads(out)
    assert (me["scope"], me["agentEmail"]) == ("agent", agent)
    assert (me["agents"], me["agent_email"]) == ([agent], agent)
    code, out, err = cli("whoami")
    assert code == 0 and f"(agent, bound to {agent})" in out, err


def test_ctrl_c_wrapped_by_a_class_being_built_still_ends_with_130(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C that meets a dataclass being built in an import reaches e2a as a RuntimeError
    ("Error calling __set_name__") caused by the KeyboardInterrupt: the command still ends with
    130 and no traceback. Any other RuntimeError is not taken for one."""

    def interrupted_import(argv: object) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("Error calling __set_name__ on 'Field'") from interrupt

    monkeypatch.setattr(cli_main, "_run", interrupted_import)
    assert cli_main.main([]) == cli_main.EXIT_INTERRUPTED

    def failing(argv: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_main, "_run", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main.main([])
