"""`e2a backup DEST`: a consistent copy of the SQLite database while `e2a serve` runs.

A real gateway subprocess takes mail over SMTP while `e2a backup` runs as another subprocess:
the copy passes SQLite's integrity check, has the source's schema version, holds every
message acknowledged before the backup started, and a gateway started on it serves them over
REST. The refusals (DEST exists, PostgreSQL, no source, no folder, a full disk) are one line.
"""

from __future__ import annotations

import base64
import os
import resource
import shutil
import signal
import smtplib
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench._gateway_process import AGENT, GatewayProcess, clean_environment
from bench._quiet_dns import QuietDns
from e2a_gateway.storage.sqlite import held_by_a_gateway

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

E2A = [sys.executable, "-m", "e2a_gateway"]
BEFORE = 20
"""Messages acknowledged before the backup starts."""


@pytest.fixture
def quiet_dns() -> Iterator[str]:
    with QuietDns() as dns:
        yield dns.address


def run_e2a(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    command_prefix: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(command_prefix or []), *E2A, *args],
        cwd=cwd,
        env=clean_environment() | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec_fn,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def message(subject: str) -> bytes:
    return (
        f"From: a@example.org\r\nTo: {AGENT}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
    ).encode()


def stream(port: int, stop: threading.Event, acknowledged: list[str]) -> None:
    """Send messages over one connection until `stop`."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as smtp:
        number = 0
        while not stop.is_set():
            subject = f"during {number}"
            number += 1
            if smtp.sendmail("a@example.org", [AGENT], message(subject)) == {}:
                acknowledged.append(subject)


def stored_subjects(client: httpx.Client) -> set[str]:
    subjects: set[str] = set()
    token: str | None = None
    while True:
        params = {"status": "all", "page_size": "100", **({"token": token} if token else {})}
        page = client.get(f"/agents/{AGENT}/messages", params=params)
        page.raise_for_status()
        listing = page.json()
        for summary in listing["messages"]:
            full = client.get(f"/agents/{AGENT}/messages/{summary['message_id']}")
            full.raise_for_status()
            raw = base64.b64decode(full.json()["raw_message"])
            subjects.add(raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode())
        token = listing["next_token"]
        if token is None:
            return subjects


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT max(version) FROM schema_migrations").fetchone()[0])


def test_a_backup_while_the_gateway_takes_mail_is_whole_and_serves_it(
    tmp_path: Path, quiet_dns: str
) -> None:
    source = tmp_path / "live"
    restored = tmp_path / "restored"
    source.mkdir()
    restored.mkdir()
    gateway = GatewayProcess(source, quiet_dns)
    copy = restored / "e2a.db"
    gateway.start()
    try:
        api = gateway.bootstrap()
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
            for number in range(BEFORE):
                assert smtp.sendmail("a@example.org", [AGENT], message(f"before {number}")) == {}
        stop = threading.Event()
        during: list[str] = []
        sender = threading.Thread(target=stream, args=(gateway.smtp_port, stop, during))
        sender.start()
        try:
            deadline = time.monotonic() + 10
            while len(during) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            acknowledged_before = list(during)  # each in the gateway's -wal, or copied on
            assert (source / "e2a.db-wal").stat().st_size > 0
            result = run_e2a("backup", str(copy), "--config", str(gateway.config), cwd=source)
        finally:
            stop.set()
            sender.join(10)
        assert result.returncode == 0, result.stderr
        assert during, "no mail arrived while the backup ran"
        # The gateway kept its hold on the file and kept taking mail.
        assert held_by_a_gateway(str(source / "e2a.db"))
        assert gateway.process is not None and gateway.process.poll() is None
        stored_live = stored_subjects(api)
        assert {f"before {n}" for n in range(BEFORE)} | set(during) <= stored_live
        key = api.headers["Authorization"]
        api.close()
        live_version = schema_version(source / "e2a.db")
    finally:
        gateway.kill()

    [line] = result.stdout.splitlines()
    size = copy.stat().st_size
    assert line.startswith(f"{copy}: {size} bytes, schema version {live_version}, "), line
    assert line.endswith(" s"), line
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert sorted(p.name for p in restored.iterdir()) == ["e2a.db"]  # no -wal, no temp file
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert schema_version(copy) == live_version

    second = GatewayProcess(restored, quiet_dns)
    second.start()
    try:
        with httpx.Client(
            base_url=f"{second.url}/api/v1", headers={"Authorization": key}, timeout=30
        ) as client:
            stored = stored_subjects(client)
    finally:
        second.kill()
    assert {f"before {n}" for n in range(BEFORE)} | set(acknowledged_before) <= stored


def migrated(folder: Path) -> Path:
    """A config in `folder` naming a migrated SQLite database there."""
    config = folder / "e2a.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{folder / "e2a.db"}"\n')
    result = run_e2a("migrate", "--config", str(config), cwd=folder)
    assert result.returncode == 0, result.stderr
    return config


def test_an_existing_dest_is_refused_unless_forced(tmp_path: Path) -> None:
    config = migrated(tmp_path)
    dest = tmp_path / "backup.db"
    dest.write_bytes(b"an older backup")
    dest.chmod(0o644)
    refused = one_error_line(run_e2a("backup", str(dest), "--config", str(config), cwd=tmp_path))
    assert str(dest) in refused and "--force" in refused, refused
    assert dest.read_bytes() == b"an older backup"

    forced = run_e2a("backup", str(dest), "--force", "--config", str(config), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert dest.read_bytes().startswith(b"SQLite format 3\x00")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert schema_version(dest) == schema_version(tmp_path / "e2a.db")
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_dest_beside_a_leftover_log_is_refused(tmp_path: Path) -> None:
    """A -wal left next to DEST (a database once in use there) would be read into the copy."""
    config = migrated(tmp_path)
    dest = tmp_path / "old.db"
    Path(f"{dest}-wal").write_bytes(b"")
    refused = one_error_line(run_e2a("backup", str(dest), "--config", str(config), cwd=tmp_path))
    assert f"{dest}-wal" in refused, refused
    assert not dest.exists()


def test_postgresql_is_refused_with_the_pg_dump_command(tmp_path: Path) -> None:
    url = "postgresql://e2a:hunter2@127.0.0.1:1/e2a"
    result = run_e2a("backup", str(tmp_path / "x.db"), cwd=tmp_path, env={"E2A_DATABASE_URL": url})
    line = one_error_line(result, code=2)
    assert "pg_dump" in line and "--format=custom" in line, line
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_missing_database_is_named_and_not_created(tmp_path: Path) -> None:
    database = tmp_path / "nowhere.db"
    result = run_e2a(
        "backup",
        str(tmp_path / "x.db"),
        cwd=tmp_path,
        env={"E2A_DATABASE_URL": f"sqlite:///{database}"},
    )
    line = one_error_line(result)
    assert str(database) in line and "does not exist" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_dest_folder_that_does_not_exist(tmp_path: Path) -> None:
    config = migrated(tmp_path)
    dest = tmp_path / "missing" / "backup.db"
    line = one_error_line(run_e2a("backup", str(dest), "--config", str(config), cwd=tmp_path))
    assert f"{tmp_path / 'missing'} does not exist" in line, line


def test_a_dest_folder_this_user_cannot_write(tmp_path: Path) -> None:
    config = migrated(tmp_path)
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        dropped = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}"]
    result = run_e2a(
        "backup",
        str(folder / "backup.db"),
        "--config",
        str(config),
        cwd=tmp_path,
        command_prefix=prefix,
    )
    folder.chmod(0o700)
    line = one_error_line(result)
    assert f"cannot write to the folder {folder}" in line, line
    assert list(folder.iterdir()) == []


def test_a_full_disk_leaves_no_dest_and_no_temp_file(tmp_path: Path) -> None:
    config = migrated(tmp_path)
    with sqlite3.connect(tmp_path / "e2a.db") as connection:  # a database of some size
        connection.execute(
            "INSERT INTO server_state (name, value) VALUES ('filler', ?)", ("x" * 400_000,)
        )
    out = tmp_path / "out"
    out.mkdir()

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, 128 * 1024))

    result = run_e2a(
        "backup", str(out / "b.db"), "--config", str(config), cwd=tmp_path, preexec_fn=small_disk
    )
    line = one_error_line(result)
    assert "disk" in line and f"df -h {out}" in line, line
    assert list(out.iterdir()) == []


ON_A_SMALL_TMPFS = (
    'mount -t tmpfs -o size=256k tmpfs "$0" || exit 99; "$@"; code=$?; '
    'echo "left: $(ls -A "$0")"; exit $code'
)
"""Run the rest of the command with a 256 KiB tmpfs mounted on the folder $0 (in a mount
namespace of its own: gone when it ends), then say what was left in it."""


def test_a_disk_that_fills_up_leaves_no_dest_and_no_temp_file(tmp_path: Path) -> None:
    """A real full filesystem (ENOSPC, which SQLite reports as `database or disk is full`),
    not only a file-size limit: the same one line, and nothing left in DEST's folder."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs with")
    config = migrated(tmp_path)
    with sqlite3.connect(tmp_path / "e2a.db") as connection:  # larger than the tmpfs
        connection.execute(
            "INSERT INTO server_state (name, value) VALUES ('filler', ?)", ("x" * 400_000,)
        )
    out = tmp_path / "out"
    out.mkdir()
    prefix = ["unshare", "-rm", "sh", "-c", ON_A_SMALL_TMPFS, str(out)]
    result = run_e2a(
        "backup", str(out / "b.db"), "--config", str(config), cwd=tmp_path, command_prefix=prefix
    )
    if result.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    line = one_error_line(result)
    assert "full" in line, line
    assert f"df -h {out}" in line and f"{out / 'b.db'} was not written" in line, line
    assert result.stdout.splitlines()[-1] == "left: ", result.stdout


def test_commits_during_the_copy_do_not_start_it_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is made from one snapshot: a writer committing all along (as a busy gateway
    does) neither restarts a copy of many small steps nor finds its way half into it."""
    from e2a_gateway.storage import backup

    config = migrated(tmp_path)
    database = tmp_path / "e2a.db"
    writer = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE filler (n INTEGER PRIMARY KEY, body BLOB)")
    for _ in range(400):
        writer.execute("INSERT INTO filler (body) VALUES (?)", (os.urandom(4000),))
    monkeypatch.setattr(backup, "PAGES_PER_STEP", 8)
    monkeypatch.setattr(backup, "STEP_PAUSE_SECONDS", 0.001)
    steps = 0
    pause = backup._pause

    def counted(status: int, remaining: int, total: int) -> None:
        nonlocal steps
        steps += 1
        if steps > 1000:  # about 60 are needed: the copy keeps starting over
            raise RuntimeError("the copy started over and over")
        pause(status, remaining, total)

    monkeypatch.setattr(backup, "_pause", counted)
    stop = threading.Event()

    def commit_all_along() -> None:
        while not stop.is_set():
            writer.execute("INSERT INTO filler (body) VALUES (?)", (os.urandom(4000),))

    committer = threading.Thread(target=commit_all_along)
    committer.start()
    try:
        made = backup.back_up(str(database), str(tmp_path / "copy.db"))
    finally:
        stop.set()
        committer.join(10)
        writer.close()
    assert config.exists()
    assert made.seconds < 10
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        copied = copy.execute("SELECT count(*) FROM filler").fetchone()[0]
    with sqlite3.connect(database) as source:
        assert source.execute("SELECT count(*) FROM filler").fetchone()[0] > copied >= 400
