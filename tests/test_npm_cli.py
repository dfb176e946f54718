"""e2a's official command-line client (`@e2a/cli` 2.0.0, npm) against this gateway's `/v1`:
its main commands, run as a user runs them (`E2A_URL` at the gateway, `E2A_API_KEY`), print
what its README shows and exit with the codes of its exit-code contract.

The package is installed once with npm under the user's cache directory (tests/venvs.py);
`E2A_TEST_NPM_CLI` replaces what is installed (npm install arguments, e.g. the tarballs of
`@e2a/cli` and `@e2a/sdk` packed from e2a's `cli/` and `sdks/typescript/`). Without `npm` and
`node`, or when the install fails, the test is skipped saying why. `make test-npm-cli` runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio

from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.venvs import cached_npm_prefix

pytestmark = pytest.mark.slow

CLI_PACKAGES_VAR = "E2A_TEST_NPM_CLI"
CLI_PACKAGES = ["@e2a/cli@2.0.0"]
COMMAND_SECONDS = 60
BOT = "bot@agents.test"
PEER = "peer@agents.test"
MESSAGE_ID = re.compile(r"^msg_[0-9a-f]+$")


@pytest.fixture(scope="session")
def e2a_npm() -> Path:
    """The `e2a` command of the npm CLI, installed once."""
    configured = os.environ.get(CLI_PACKAGES_VAR)
    packages = configured.split() if configured else CLI_PACKAGES
    advice = f"; or name what to install in {CLI_PACKAGES_VAR} (npm install arguments)"
    command = cached_npm_prefix("npm-cli", packages, advice) / "node_modules" / ".bin" / "e2a"
    if not command.exists():
        pytest.skip(f"{' '.join(packages)} installed no `e2a` command ({command})")
    return command


class Cli:
    """The npm CLI pointed at a running gateway with an account's key, in its own HOME."""

    def __init__(self, command: Path, url: str, key: str, home: Path) -> None:
        self.command = command
        self.env = {
            name: value for name, value in os.environ.items() if not name.startswith("E2A_")
        }
        self.env.update(HOME=str(home), E2A_URL=url, E2A_API_KEY=key)

    async def run(self, *args: str, **env: str) -> tuple[int, str, str]:
        """Run `e2a ARGS`; its exit code, stdout and stderr."""
        with trio.fail_after(COMMAND_SECONDS):
            done = await trio.run_process(
                [str(self.command), *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**self.env, **env},
            )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    async def ok(self, *args: str) -> str:
        """Run `e2a ARGS`, which must exit 0; its stdout."""
        code, out, err = await self.run(*args)
        assert code == 0, f"e2a {' '.join(args)} exited {code}: {err}{out}"
        return out

    async def first_line(self, *args: str, containing: str) -> str:
        """Start `e2a ARGS` (a listener), read its stdout until a line holds `containing`,
        then stop it; that line."""
        process = await trio.lowlevel.open_process(
            [str(self.command), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        assert process.stdout is not None
        seen = b""
        try:
            with trio.move_on_after(COMMAND_SECONDS):
                async for chunk in process.stdout:
                    seen += chunk
                    for line in seen.decode(errors="replace").splitlines():
                        if containing in line:
                            return line
        finally:
            process.kill()
            await process.wait()
        raise AssertionError(f"e2a {' '.join(args)} printed no line with {containing!r}: {seen!r}")


def until(seconds: float) -> str:
    """An RFC 3339 deadline `seconds` from now, for `listen --once --until`."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_the_npm_cli_main_commands_work_against_the_gateway(
    running: RunningGateway, make_account: Any, e2a_npm: Path, tmp_path: Path
) -> None:
    owner: Account = await make_account("owner@example.com")
    cli = Cli(e2a_npm, running.addresses.http_url, owner.key, tmp_path)

    assert (await cli.ok("--version")).strip() == "e2a 2.0.0"
    whoami = await cli.ok("whoami")
    assert "user:  owner@example.com (usr_" in whoami and "scope: account" in whoami
    assert "plan:  self_hosted" in whoami
    assert json.loads(await cli.ok("whoami", "--json"))["user"]["email"] == "owner@example.com"

    # agents create / get / list
    assert await cli.ok("agents", "create", BOT, "--name", "Support bot") == f"{BOT}\n"
    assert json.loads(await cli.ok("agents", "create", PEER, "--json"))["email"] == PEER
    shown = json.loads(await cli.ok("agents", "get", BOT, "--json"))
    assert (shown["email"], shown["name"], shown["domainVerified"]) == (BOT, "Support bot", True)
    assert "domain:   agents.test (verified)" in await cli.ok("agents", "get", BOT)
    listed = (await cli.ok("agents", "list")).splitlines()
    assert sorted(listed) == [f"{BOT}\tSupport bot\tverified", f"{PEER}\t\tverified"]
    assert (await cli.run("agents", "get", "nobody@agents.test"))[0] == 5  # not found

    # send, then the recipient's listen --once (unread mail is pushed on connect) and listen
    sent = (
        await cli.ok("send", "--agent", BOT, "--to", PEER, "--subject", "Hi", "--body", "Hello.")
    ).strip()
    assert MESSAGE_ID.match(sent)
    waited = await cli.ok("listen", "--agent", PEER, "--once", "--until", until(20))
    received, sender, _ = waited.strip().split("\t")
    assert MESSAGE_ID.match(received) and sender == BOT
    line = await cli.first_line("listen", "--agent", PEER, containing="Subject: Hi")
    assert line.endswith(
        f"Claimed From: {BOT} | DMARC: not evaluated (providerless delivery) | Subject: Hi"
    )

    # messages list / get / lifecycle
    tsv = (await cli.ok("messages", "list", "--agent", PEER)).splitlines()
    assert [row.split("\t")[:2] for row in tsv] == [[received, BOT]]
    (summary,) = map(
        json.loads, (await cli.ok("messages", "list", "--agent", PEER, "--json")).splitlines()
    )
    assert (summary["id"], summary["subject"], summary["readStatus"]) == (received, "Hi", "unread")
    assert await cli.ok("messages", "get", received, "--agent", PEER, "--text") == "Hello.\n"
    full = json.loads(await cli.ok("messages", "get", received, "--agent", PEER))
    assert (full["readStatus"], full["authentication"]) == ("read", None)
    lifecycle = json.loads(await cli.ok("messages", "lifecycle", received, "--agent", PEER))
    assert lifecycle["items"][0]["stage"] == "accepted" and lifecycle["nextCursor"] is None
    outbound = await cli.ok("messages", "list", "--agent", BOT, "--direction", "outbound")
    assert outbound.split("\t")[0] == sent
    assert (await cli.run("messages", "get", "msg_0", "--agent", PEER))[0] == 5

    # reply, which the original sender receives in the same conversation
    replied = (await cli.ok("reply", received, "--agent", PEER, "--body", "On it.")).strip()
    assert MESSAGE_ID.match(replied)
    answer = await cli.ok("listen", "--agent", BOT, "--once", "--until", until(20), "--text")
    assert answer == "On it.\n"

    # keys create / list / delete
    key = (await cli.ok("keys", "create", "--agent", BOT, "--name", "bot key")).strip()
    assert re.fullmatch(r"e2a_[0-9a-f]{64}", key)
    bound = [row for row in (await cli.ok("keys", "list")).splitlines() if row.endswith("bot key")]
    (row,) = bound
    key_id, prefix, scope, agent, _ = row.split("\t")
    assert (key.startswith(prefix), scope, agent) == (True, "agent", BOT)
    bot_whoami = await cli.run("whoami", E2A_API_KEY=key)
    assert bot_whoami[0] == 0 and f"agent: {BOT}" in bot_whoami[1]
    assert (await cli.run("keys", "list", E2A_API_KEY=key))[0] == 4  # an agent key may not
    assert await cli.ok("keys", "delete", key_id) == f"revoked {key_id}\n"
    assert (await cli.run("whoami", E2A_API_KEY=key))[0] == 4  # revoked

    # protection get / set, and a send held for review (exit 3)
    assert "outbound: gate=open/flag scan=off" in await cli.ok("protection", "get", BOT)
    holding = {"policy": "allowlist", "allowlist": [], "action": "review"}
    held_config = {
        "inbound": {"gate": {}, "scan": {}},
        "outbound": {"gate": holding, "scan": {}},
        "holds": {},
    }
    protected = await owner.http.put(f"/v1/agents/{quote(BOT)}/protection", json=held_config)
    assert protected.status_code == 200, protected.text
    code, out, err = await cli.run(
        "send", "--agent", BOT, "--to", PEER, "--subject", "Held", "--body", "x"
    )
    assert (code, bool(MESSAGE_ID.match(out.strip()))) == (3, True)
    assert 'status "pending_review"' in err
    turned_off = await cli.ok("protection", "set", BOT, "--outbound-review", "off")
    assert "outbound: gate=allowlist/flag scan=off" in turned_off
    quiet = json.loads(
        await cli.ok("protection", "set", BOT, "--suppress-notifications", "on", "--json")
    )
    assert quiet["holds"]["suppressNotifications"] is True

    # doctor, read-only: healthy, with the agent found
    code, out, err = await cli.run("doctor", "--agent", BOT, "--json")
    report = json.loads(out)
    assert (code, report["schema"], report["status"]) == (0, "e2a.doctor/v1", "healthy"), out + err
    checks = {check["id"]: check["status"] for check in report["checks"]}
    assert checks["api.reachability"] == checks["api.auth"] == checks["agent.access"] == "pass"

    # config, and a refused key
    assert await cli.ok("config", "set", "agent_email", PEER) == f"agent_email={PEER}\n"
    assert await cli.ok("config", "get", "agent_email") == f"{PEER}\n"
    assert f"agent_email={PEER}" in await cli.ok("config", "list")
    assert (await cli.run("whoami", E2A_API_KEY="e2a_" + "0" * 64))[0] == 4
