"""The `e2a` command as a user runs it: a real subprocess, real ports, real signals."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import os
import re
import resource
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from e2a_gateway.app import bind_tcp, check_relay_not_self
from e2a_gateway.cli.main import main
from e2a_gateway.config import load_settings
from e2a_gateway.signing.magic_links import link_key, verify_token
from e2a_gateway.startup import StartupError
from e2a_gateway.storage.sqlite import sole_gateway

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

E2A = [sys.executable, "-m", "e2a_gateway"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, smtp_port: int, http_port: int) -> Path:
    path = tmp_path / "e2a.toml"
    path.write_text(
        'shared_domain = "agents.test"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\nhostname = "mx.agents.test"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "e2a.db"}"\n'
        # No DNS leaves the machine in tests: a loopback port with no server fails fast.
        '[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout_seconds = 1\n'
        "[limits]\nagent_registrations_per_ip_per_hour = 100000\n"
        "message_polls_per_user_per_minute = 100000\n"
    )
    return path


def run_e2a(
    *args: str,
    cwd: Path,
    database: str | None = None,
    unprivileged: bool = False,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`e2a args` in `cwd`, with no E2A_* setting of this process's but `database` (as
    E2A_DATABASE_URL), `unprivileged` (`as_unprivileged`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    if database is not None:
        env["E2A_DATABASE_URL"] = database
    command = [*E2A, *args]
    return subprocess.run(
        as_unprivileged(command) if unprivileged else command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec_fn,
    )


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise AssertionError(
                f"e2a serve exited early: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("e2a serve did not become healthy")


def launch(
    config: Path, http_port: int, cwd: Path, variables: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`e2a serve --config config` (no E2A_* variables but `variables`), once healthy: its
    process and URL. One that does not become healthy is killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")} | (variables or {})
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process, url


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, int, str, subprocess.Popen[str]]]:
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    process, url = launch(config, http_port, tmp_path)
    try:
        yield config, smtp_port, url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_serve_bootstrap_smtp_rest_and_sigterm(
    server: tuple[Path, int, str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    config, smtp_port, url, process = server
    boot = run_e2a("bootstrap", "--email", "me@example.com", "--config", str(config), cwd=tmp_path)
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip()
    assert key.startswith("e2a_") and len(key) == 68
    assert key not in boot.stderr

    again = run_e2a("bootstrap", "--email", "me@example.com", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0 and "Found user" in again.stderr
    assert again.stdout.strip() != key

    headers = {"Authorization": f"Bearer {key}"}
    created = httpx.post(
        f"{url}/api/v1/agents",
        headers=headers,
        content=b'{"slug":"bot","agent_mode":"local"}',
        timeout=10,
    )
    assert created.status_code == 201, created.text
    raw = b"From: a@example.org\r\nTo: bot@agents.test\r\nSubject: hi\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        assert client.sendmail("a@example.org", ["bot@agents.test"], raw) == {}
    listing = httpx.get(f"{url}/api/v1/agents/bot%40agents.test/messages", headers=headers).json()
    (summary,) = listing["messages"]
    full = httpx.get(
        f"{url}/api/v1/agents/bot@agents.test/messages/{summary['message_id']}", headers=headers
    ).json()
    delivered = base64.b64decode(full["raw_message"])
    assert delivered.endswith(raw) and delivered.startswith(b"Return-Path: <a@example.org>\r\n")
    assert b"\r\nAuthentication-Results: " in delivered

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    stderr = process.stderr.read() if process.stderr else ""
    assert "shutting down" in stderr
    assert "hello" not in stderr and key not in stderr


def test_a_hang_up_stops_serve_cleanly_unless_nohup_ignores_it(tmp_path: Path) -> None:
    """SIGHUP (a terminal's hang-up) stops the gateway as SIGTERM does; under `nohup`, which
    starts it with SIGHUP ignored, the hang-up stays ignored and the gateway goes on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    for ignored in (False, True):
        http_port = free_port()
        config = write_config(tmp_path, free_port(), http_port)
        process = subprocess.Popen(
            [*E2A, "serve", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignored else None,
        )
        try:
            url = f"http://127.0.0.1:{http_port}"
            wait_healthy(url, process)
            process.send_signal(signal.SIGHUP)
            if ignored:
                time.sleep(1.0)
                assert process.poll() is None
                assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
                process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
            stderr = process.stderr.read() if process.stderr else ""
            stopped_by = "SIGTERM" if ignored else "SIGHUP"
            assert f"received {stopped_by}, shutting down" in stderr, stderr
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def test_a_signal_repeated_while_stopping_still_stops_cleanly(tmp_path: Path) -> None:
    """A Ctrl-C reaches the one-file executable's gateway twice (from the terminal, and
    passed on by its launcher), and an impatient operator presses it again: the stop goes on
    as begun, says it is still stopping, and ends as a clean stop does (exit 0, "e2a
    stopped"), not with 130 once it is over."""
    http_port = free_port()
    config = write_config(tmp_path, free_port(), http_port)
    process, _ = launch(config, http_port, tmp_path)
    try:
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
        assert "received SIGINT, shutting down" in stderr
        assert stderr.rstrip().endswith("e2a stopped"), stderr
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_a_second_gateway_on_the_same_sqlite_file_refuses_to_start(
    server: tuple[Path, int, str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    # SQLite leaves the job queues to one process: a second gateway on the file would free the
    # first one's leases at start and send its mail in flight a second time.
    _, _, url, process = server
    other = tmp_path / "other"
    other.mkdir()
    second = write_config(other, free_port(), free_port())
    second.write_text(second.read_text().replace(str(other / "e2a.db"), str(tmp_path / "e2a.db")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    try:
        result = subprocess.run(
            [*E2A, "serve", "--config", str(second)],
            cwd=other,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a second e2a serve started on the same SQLite database")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert len(lines) == 1, result.stderr
    assert "database.url" in lines[0] and "another `e2a serve`" in lines[0]
    assert "Traceback" not in result.stderr
    # The first goes on serving, and the one-off commands still run beside it.
    assert process.poll() is None
    assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
    migrate = run_e2a("migrate", "--config", str(second), cwd=other)
    assert migrate.returncode == 0, migrate.stderr


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path, taken.getsockname()[1], free_port())
        result = run_e2a("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert len(lines) == 1
    assert "smtp.listen" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_address_this_machine_lacks_is_one_clear_line() -> None:
    """A listen address that is not this machine's (a VPS's floating IP, a typo) says so and
    what to write instead, not only the system's "Cannot assign requested address"."""
    with pytest.raises(StartupError) as caught:
        bind_tcp("192.0.2.1", 2525, "smtp.listen", "192.0.2.1:2525")
    message = str(caught.value)
    assert message.startswith("smtp.listen 192.0.2.1:2525: ")
    assert "not an address of this machine" in message and "0.0.0.0" in message


def as_unprivileged(command: list[str]) -> list[str]:
    """`command` run without the power to ignore file permissions (root's capabilities
    dropped with setpriv; as another user, as it is)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    dropped = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}", *command]


def test_a_database_folder_the_gateway_cannot_write_is_named(tmp_path: Path) -> None:
    """SQLite writes its -wal and -shm files beside the database: a folder the gateway's
    user cannot write stops the start naming that folder, not with SQLite's "attempt to write
    a readonly database" about a file whose own permissions are right."""
    folder = tmp_path / "state"
    folder.mkdir()
    database = f"sqlite:///{folder / 'e2a.db'}"
    created = run_e2a("migrate", cwd=tmp_path, database=database)
    assert created.returncode == 0, created.stderr
    for side in folder.glob("e2a.db-*"):
        side.unlink()
    folder.chmod(0o555)
    try:
        result = run_e2a("migrate", cwd=tmp_path, database=database, unprivileged=True)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert len(lines) == 1, result.stderr
    assert f"cannot write to the folder {folder}" in lines[0], lines[0]
    (folder / "e2a.db").chmod(0o400)
    result = run_e2a("migrate", cwd=tmp_path, database=database, unprivileged=True)
    assert result.returncode == 1, result.stderr
    assert "cannot read and write the file" in result.stderr, result.stderr


def test_a_database_disk_that_takes_no_more_is_named(tmp_path: Path) -> None:
    """A disk that takes no more (full, or a file-size limit: SQLite says "disk I/O error")
    stops the start naming database.url, the file and what to check, not only SQLite's words."""
    folder = tmp_path / "state"
    folder.mkdir()

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    database = f"sqlite:///{folder / 'e2a.db'}"
    result = run_e2a("migrate", cwd=tmp_path, database=database, preexec_fn=small_disk)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"e2a: database.url: cannot write sqlite:///{folder / 'e2a.db'}: ")
    assert f"df -h {folder}" in lines[0], lines[0]


def test_bad_config_key_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[smtp]\nlisen = "127.0.0.1:25"\n')
    result = run_e2a("serve", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "smtp.lisen: unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_optional_files_left_empty_are_unset(tmp_path: Path) -> None:
    """config.example.toml writes the unset files as `""`; uncommented like that (or set by an
    empty variable, as `E2A_SMTP_TLS_CERT=${CERT:-}` in a compose file gives), they are unset,
    not the current directory, and the gateway starts."""
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    config.write_text(
        config.read_text()
        + '[outbound_smtp]\nca_file = ""\n[dkim]\nselector = ""\nprivate_key_path = ""\n'
    )
    empty = {"E2A_SMTP_TLS_CERT": "", "E2A_SMTP_TLS_KEY": ""}
    process, _ = launch(config, http_port, tmp_path, empty)  # healthy, or it raises
    process.terminate()
    process.wait(timeout=30)


def test_bootstrap_and_migrate_refuse_a_weak_key_before_touching_the_database(
    tmp_path: Path,
) -> None:
    """In production, a missing or weak signing.hmac_secret is refused before the database is
    opened: a refused command leaves no schema migrated behind it."""
    database = tmp_path / "e2a.db"
    for secret_line in ("", '[signing]\nhmac_secret = "change-me"\n'):
        config = tmp_path / "e2a.toml"
        config.write_text(
            f'env = "production"\n{secret_line}[database]\nurl = "sqlite:///{database}"\n'
        )
        for command in (["migrate"], ["bootstrap", "--email", "me@example.com"]):
            result = run_e2a(*command, "--config", str(config), cwd=tmp_path)
            assert result.returncode == 1, result.stderr
            (line,) = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
            assert line.startswith("e2a: signing.hmac_secret:"), line
            assert "migrated" not in result.stderr
            assert not database.exists(), command


def test_a_config_path_that_is_no_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_e2a("serve", "--config", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("e2a: cannot read config file"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_relay_ca_file_that_cannot_be_loaded_stops_start_up(tmp_path: Path) -> None:
    """Every send would fail on it, retried for a day: say so at start, in one line."""
    (tmp_path / "not-pem.pem").write_text("not a certificate\n")
    for ca_file in (tmp_path / "missing.pem", tmp_path / "not-pem.pem"):
        config = write_config(tmp_path, free_port(), free_port())
        config.write_text(
            config.read_text() + f'[outbound_smtp]\nhost = "127.0.0.1"\nca_file = "{ca_file}"\n'
        )
        result = run_e2a("serve", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
        assert line.startswith(f"e2a: outbound_smtp.ca_file: cannot load {ca_file}"), line
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("relay_host", ["127.0.0.1", "localhost", "MX.agents.test."])
def test_a_relay_that_is_the_gateways_own_listener_stops_start_up(
    tmp_path: Path, relay_host: str
) -> None:
    """outbound_smtp at smtp.listen's own address and port (by its address, the loopback, or
    smtp.hostname) hands the gateway's mail to itself: every send would be refused `relay access
    denied`. Start-up says so, in one line."""
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_port, free_port())
    config.write_text(
        config.read_text() + f'[outbound_smtp]\nhost = "{relay_host}"\nport = {smtp_port}\n'
    )
    result = run_e2a("serve", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert line.startswith("e2a: outbound_smtp: ") and "smtp.listen" in line, line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("listen", "relay"),
    [
        ("127.0.0.1:2525", "127.0.0.1:25"),  # a local Postfix beside the gateway
        ("192.0.2.5:25", "127.0.0.1:25"),  # the listener not on the loopback
        ("0.0.0.0:25", "smtp.example.com:25"),
        ("0.0.0.0:0", "127.0.0.1:25"),  # the listener on any free port
    ],
)
def test_a_relay_elsewhere_on_the_same_machine_is_taken(listen: str, relay: str) -> None:
    host, port = relay.rsplit(":", 1)
    settings = load_settings(
        None,
        environ={
            "E2A_SMTP_LISTEN": listen,
            "E2A_SMTP_HOSTNAME": "mx.agents.test",
            "E2A_OUTBOUND_SMTP_HOST": host,
            "E2A_OUTBOUND_SMTP_PORT": port,
        },
    )
    check_relay_not_self(settings)


def test_half_a_dkim_setting_stops_start_up(tmp_path: Path) -> None:
    """A selector without a key (or a key without a selector) signs nothing: say so at start,
    as for half of the STARTTLS pair, rather than send unsigned mail."""
    for given, missing in (
        ('selector = "e2a"', "dkim.private_key_path"),
        (f'private_key_path = "{tmp_path / "dkim.pem"}"', "dkim.selector"),
    ):
        config = write_config(tmp_path, free_port(), free_port())
        config.write_text(config.read_text() + f"[dkim]\n{given}\n")
        result = run_e2a("serve", "--config", str(config), cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
        assert line.startswith(f"e2a: {missing}: DKIM signing needs both"), line


def test_migrate_then_bootstrap_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("E2A_"):
            monkeypatch.delenv(name)
    assert main(["migrate"]) == 0
    assert (tmp_path / "e2a.db").exists()
    assert main(["bootstrap", "--email", "not-an-email"]) == 1
    assert "--email" in capsys.readouterr().err
    assert main(["bootstrap", "--email", "Me@Example.com"]) == 0
    made = capsys.readouterr()
    assert made.out.strip().startswith("e2a_") and "Warning" not in made.err
    # The database is named: a key made in the wrong one (run from another folder, without
    # --config) is seen at once, not when the gateway refuses it.
    assert "Created user me@example.com (usr_" in made.err
    assert ") in sqlite:///./e2a.db, whose gateway now takes this API key" in made.err
    # An address the gateway itself receives mail for gets no approval notices: said at once.
    monkeypatch.setenv("E2A_SHARED_DOMAIN", "agents.example.com")
    assert main(["bootstrap", "--email", "owner@agents.example.com"]) == 0
    warned = capsys.readouterr().err
    assert "Warning: owner@agents.example.com is an address this gateway receives" in warned


def test_a_database_a_newer_e2a_migrated_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An older e2a on a database a newer one migrated (a binary rolled back without the
    backup) neither claims it is up to date nor runs on a schema it does not know: `migrate`,
    `bootstrap` (and `serve`, through the same start) stop with a line naming the versions it
    does not know and what to do, and write nothing."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("E2A_"):
            monkeypatch.delenv(name)
    assert main(["migrate"]) == 0
    assert "database is up to date" in capsys.readouterr().err
    with contextlib.closing(sqlite3.connect(tmp_path / "e2a.db")) as db, db:
        db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) "
            "VALUES (9001, 'from the future', '2030-01-01T00:00:00Z')"
        )
    for command in (["migrate"], ["bootstrap", "--email", "owner@example.com"]):
        assert main(command) == 1, command
        said = capsys.readouterr()
        assert "up to date" not in said.err and "API key" not in said.err and not said.out
        refusal = said.err.splitlines()[-1]
        assert refusal.startswith("e2a: database.url: the database was migrated by a newer e2a")
        assert "(schema versions 9001 are unknown to this one)" in refusal
        assert "restore the backup taken before the upgrade" in refusal
    with contextlib.closing(sqlite3.connect(tmp_path / "e2a.db")) as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_a_newer_e2a_does_not_migrate_the_sqlite_file_a_running_gateway_holds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The new binary's `migrate` or `bootstrap`, run beside the older `e2a serve` still
    holding the SQLite file, would change the schema under it: refused, saying to stop the
    gateway first, and nothing is migrated. With nothing to migrate, bootstrap beside a
    running gateway still works."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("E2A_"):
            monkeypatch.delenv(name)
    assert main(["migrate"]) == 0
    capsys.readouterr()
    database = tmp_path / "e2a.db"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        (newest,) = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        db.execute("DELETE FROM schema_migrations WHERE version = ?", (newest,))  # an older one
    with sole_gateway(str(database)):  # the running gateway's hold on its file
        for command in (["migrate"], ["bootstrap", "--email", "owner@example.com"]):
            assert main(command) == 1, command
            said = capsys.readouterr()
            refusal = said.err.splitlines()[-1]
            assert refusal.startswith(
                "e2a: database.url: sqlite:///./e2a.db is in use by a running"
            )
            assert f"(schema versions {newest})" in refusal and "stop it" in refusal
            assert not said.out
    with contextlib.closing(sqlite3.connect(database)) as db:
        recorded = db.execute("SELECT count(*) FROM schema_migrations WHERE version = ?", (newest,))
        assert recorded.fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
    other = tmp_path / "current"
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["migrate"]) == 0
    with sole_gateway(str(other / "e2a.db")):
        assert main(["bootstrap", "--email", "owner@example.com"]) == 0
    assert capsys.readouterr().out.strip().startswith("e2a_")


def test_migrate_help_says_how_to_back_up_first(capsys: pytest.CaptureFixture[str]) -> None:
    """Migrations only go forward, so `e2a migrate --help` shows the backup to take before an
    upgrade: `e2a backup` (SQLite's online backup: a copy of a WAL database's file may be
    torn), pg_dump."""
    with pytest.raises(SystemExit) as ended:
        main(["migrate", "--help"])
    assert ended.value.code == 0
    shown = capsys.readouterr().out
    assert "only go forward" in shown
    assert "e2a backup /var/backups/e2a/before-upgrade.db --config /etc/e2a/e2a.toml" in shown
    assert "do not cp" in shown and "pg_dump" in shown


def test_a_database_path_under_a_tilde_says_to_write_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sqlite:///~/e2a.db` is not in the home folder (SQLite expands no `~`): the refusal
    says so, rather than "No such file or directory" about a folder that exists."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in list(os.environ):
        if name.startswith("E2A_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("E2A_DATABASE_URL", "sqlite:///~/e2a.db")
    assert main(["migrate"]) == 1
    said = capsys.readouterr().err
    assert "e2a: database.url: cannot open sqlite:///~/e2a.db: " in said
    assert "~ is not the home folder here: write the whole path" in said, said


def test_a_relative_database_path_in_a_missing_folder_says_how_to_write_an_absolute_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sqlite:///var/lib/e2a/e2a.db` names `var/lib/e2a/e2a.db` under the working folder (the
    third slash only ends the empty host): the refusal says an absolute path takes four."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("E2A_"):
            monkeypatch.delenv(name)
    meant = tmp_path / "data" / "e2a.db"
    meant.parent.mkdir()
    relative = str(meant).lstrip("/")
    monkeypatch.setenv("E2A_DATABASE_URL", f"sqlite:///{relative}")
    assert main(["migrate"]) == 1
    said = capsys.readouterr().err
    assert f"directory {tmp_path / relative.rpartition('/')[0]} does not exist" in said, said
    assert f"for the absolute path write sqlite:////{relative}" in said, said
    assert not meant.exists()


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["bootstrap"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2


class Sink:
    """An outbound relay on loopback that keeps every message it accepts."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.received.append(envelope.original_content)  # type: ignore[attr-defined]
        return "250 OK"


HMAC_SECRET = "4b6f1d0c9e8a7f3b2d5c6e1a0f9b8c7d3e2a1f0b9c8d7e6f5a4b3c2d1e0f9a8b"
PUBLIC_URL = "https://mail.e2a-users.example"


def test_serve_reads_e2a_environment_names(tmp_path: Path) -> None:
    """An operator moving from e2a sets E2A_HMAC_SECRET and E2A_PUBLIC_URL: the approval
    email's links start with that URL and are signed with that secret; a misspelt E2A_*
    variable is named in a warning with the setting it resembles."""
    sink = Sink()
    relay = Controller(sink, hostname="127.0.0.1", port=free_port())
    relay.start()
    smtp_port, http_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_port, http_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    env |= {
        "E2A_HMAC_SECRET": HMAC_SECRET,
        "E2A_PUBLIC_URL": PUBLIC_URL,
        "E2A_OUTBOUND_SMTP_HOST": "127.0.0.1",
        "E2A_OUTBOUND_SMTP_PORT": str(relay.port),
        "E2A_OUTBOUND_SMTP_TLS": "none",
        "E2A_HTTP_PUBLIK_URL": "typo",
    }
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process)
        assert httpx.get(f"{url}/api/v1/info", timeout=5).json()["public_url"] == PUBLIC_URL
        boot = subprocess.run(
            [*E2A, "bootstrap", "--email", "owner@example.com", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        headers = {"Authorization": f"Bearer {boot.stdout.strip()}"}
        agent = {"slug": "held", "agent_mode": "local"}
        assert httpx.post(f"{url}/api/v1/agents", headers=headers, json=agent).status_code == 201
        hitl = {"hitl_enabled": True, "hitl_ttl_seconds": 3600}
        agent_url = f"{url}/api/v1/agents/held@agents.test"
        assert httpx.put(agent_url, headers=headers, json=hitl).status_code == 200
        mail = {"to": ["alice@example.org"], "subject": "Hello", "body": "Hi"}
        sent = httpx.post(f"{url}/api/v1/send", headers=headers, json=mail).json()
        assert sent["status"] == "pending_approval"

        deadline = time.monotonic() + 20
        while not sink.received:
            assert time.monotonic() < deadline, "no approval email reached the relay"
            time.sleep(0.05)
        notice = email.message_from_bytes(sink.received[0], policy=email.policy.default)
        text = notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        links = dict(
            re.findall(rf"{re.escape(PUBLIC_URL)}/api/v1/(approve|reject)\?token=(\S+)", text)
        )
        assert set(links) == {"approve", "reject"}, text
        verified = verify_token(link_key(HMAC_SECRET), links["approve"], int(time.time()))
        assert (verified.message_id, verified.action) == (sent["message_id"], "approve")
        approved = httpx.post(f"{url}/api/v1/approve", data={"token": links["approve"]})
        assert approved.status_code == 200, approved.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        relay.stop()
    stderr = process.stderr.read() if process.stderr else ""
    assert "E2A_HTTP_PUBLIK_URL" in stderr and "did you mean E2A_HTTP_PUBLIC_URL?" in stderr
    assert HMAC_SECRET not in stderr and "typo" not in stderr
