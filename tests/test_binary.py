"""The one-file executable `dist/e2a` (built by `make binary`) runs the whole gateway.

These tests run the real binary as a process: it serves on loopback with a temp config,
`bootstrap` prints an API key, a mail sent over SMTP is read back over REST, and SIGTERM stops
it with exit code 0. CI builds the binary before the tests; elsewhere they are skipped until
`make binary` has been run.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._gateway_process import AGENT, GatewayProcess, clean_environment, process_tree
from bench._quiet_dns import QuietDns
from tests.test_mcp_http import INITIALIZE

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "dist" / "e2a"
PACKAGE = ROOT / "e2a_gateway"

requires_binary = pytest.mark.skipif(
    not BINARY.exists(), reason="dist/e2a is missing: run `make binary` to enable these tests"
)


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayProcess]:
    """`dist/e2a serve` on a temp config and SQLite file; killed if a test leaves it running.

    The binary unpacks itself under $TMPDIR: here a folder of the test's own."""
    (tmp_path / "unpack").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "unpack"))
    with QuietDns() as dns:
        process = GatewayProcess(tmp_path, dns.address, command=[str(BINARY)])
        try:
            process.start()
            yield process
        finally:
            process.kill()


@requires_binary
def test_binary_serves_smtp_and_rest_and_stops_on_sigterm(gateway: GatewayProcess) -> None:
    api = gateway.bootstrap()  # already used once: closed below, not re-entered with `with`
    try:
        raw = (
            b"From: Sender <sender@example.org>\r\n"
            + f"To: <{AGENT}>\r\n".encode()
            + b"Subject: from the binary test\r\n"
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA\r\n"
            b"\r\n"
            b"hello from smtplib\r\n"
        )
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=15) as smtp:
            assert smtp.sendmail("sender@example.org", [AGENT], raw) == {}

        listing = api.get(f"/agents/{AGENT}/messages")
        assert listing.status_code == 200, listing.text
        (summary,) = listing.json()["messages"]
        assert summary["subject"] == "from the binary test"
        full = api.get(f"/agents/{AGENT}/messages/{summary['message_id']}")
        assert full.status_code == 200, full.text
        delivered = base64.b64decode(full.json()["raw_message"])
        assert delivered.endswith(raw)
        # SPF, DKIM (dkimpy) and DMARC (Public Suffix List) all ran inside the binary.
        added = delivered[: -len(raw)].decode()
        assert added.startswith("Return-Path: <"), added
        assert "\r\nAuthentication-Results: mx.agents.test;" in added, added
        for result in (
            "spf=none smtp.mailfrom=example.org",
            "dkim=permerror",
            "header.d=example.org header.s=sel",
            "dmarc=none header.from=example.org",
        ):
            assert result in added, added

        # /mcp loads the MCP library on first use: it must be inside the binary too.
        answer = api.post(
            f"{gateway.url}/mcp",
            json=INITIALIZE,
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert answer.status_code == 200, answer.text
        assert '"name":"e2a"' in answer.text.replace(" ", ""), answer.text
        # The dashboard's templates render from inside the binary.
        signin = api.get(f"{gateway.url}/signin")
        assert signin.status_code == 200 and "<title>Sign in · e2a</title>" in signin.text
        # The dashboard's files are served from inside the binary, by name.
        css = api.get(f"{gateway.url}/assets/dashboard.css")
        assert css.status_code == 200 and "--accent" in css.text, css.text
        assert api.get(f"{gateway.url}/assets/{'9' * 400}").status_code == 404
    finally:
        api.close()

    assert gateway.terminate(timeout=30) == 0
    assert not list((gateway.folder / "unpack").iterdir())  # the launcher cleaned up
    log = gateway.log_text()
    assert "Traceback" not in log
    assert "hello from smtplib" not in log


@requires_binary
def test_sigkill_stops_the_launcher_and_the_gateway(gateway: GatewayProcess) -> None:
    # The one-file binary runs as two processes: the launcher that unpacked it, and the
    # gateway. A SIGKILL cannot be forwarded, so it must reach both.
    assert gateway.process is not None
    pids = process_tree(gateway.process.pid)
    assert len(pids) >= 2, pids
    gateway.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@requires_binary
def test_sigkill_to_the_launcher_alone_stops_the_gateway(gateway: GatewayProcess) -> None:
    # A supervisor or an operator kills the process it started, the launcher, not its group:
    # the gateway must not go on serving unseen, holding its ports and the database.
    assert gateway.process is not None
    launcher = gateway.process.pid
    pids = process_tree(launcher)
    assert len(pids) >= 2, pids
    os.kill(launcher, signal.SIGKILL)
    assert gateway.process.wait(timeout=10) == -signal.SIGKILL
    children = pids[1:]
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and any(
            Path(f"/proc/{pid}").exists() for pid in children
        ):
            time.sleep(0.05)
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group outlives its leader
            os.killpg(launcher, signal.SIGKILL)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", gateway.smtp_port))  # free for the next start


@requires_binary
def test_binary_migrate_backup_and_version(tmp_path: Path) -> None:
    environment = clean_environment()
    environment["E2A_DATABASE_URL"] = f"sqlite:///{tmp_path / 'e2a.db'}"
    version = subprocess.run(
        [str(BINARY), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("e2a "), version.stderr
    migrate = subprocess.run(
        [str(BINARY), "migrate"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "database is up to date" in migrate.stderr
    assert (tmp_path / "e2a.db").stat().st_size > 0
    # the executable backs its database up with nothing else installed (no sqlite3 program)
    backup = subprocess.run(
        [str(BINARY), "backup", str(tmp_path / "copy.db")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert backup.returncode == 0, backup.stderr
    assert (
        backup.stdout.startswith(f"{tmp_path / 'copy.db'}: ") and "schema version" in backup.stdout
    )
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600


@requires_binary
def test_binary_holds_every_data_file_of_the_package() -> None:
    archive = pytest.importorskip("PyInstaller.archive.readers")
    contents = set(archive.CArchiveReader(str(BINARY)).toc)
    expected = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and path.suffix not in {".py", ".pyc"}
        and path.name != "py.typed"
        and "__pycache__" not in path.parts
    }
    assert any(name.endswith(".sql") for name in expected)
    assert expected <= contents, sorted(expected - contents)
    assert "publicsuffixlist/public_suffix_list.dat" in contents
