"""Postfix as a benchmark peer: the Debian package unpacked with `dpkg -x`, run in the foreground.

`postfix_server()` gives it a private config and queue directory under a temp dir, one free
loopback port, one local domain and the `discard:` transport (the queue file is still written
and synced before 250), starts `master -d` and stops it afterwards. `postfix_instance()` is the
same with lines of the caller's appended to main.cf and master.cf (a later main.cf line wins),
and tells where its config, queue and log are. Nothing is installed
system-wide; the `postfix` user and `postdrop` group are created when missing and running as
root. `PostfixUnavailable` says why it cannot run and how to get it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(os.environ.get("E2A_BENCH_POSTFIX_ROOT", "/opt/postfix-tools"))
"""Where the postfix .deb is unpacked (`dpkg -x postfix_*.deb ROOT`)."""
HOW_TO_GET = (
    "get it with `apt-get download postfix && dpkg -x postfix_*.deb /opt/postfix-tools` "
    "(or set E2A_BENCH_POSTFIX_ROOT to where it is unpacked); it runs as root"
)
START_SECONDS = 15.0
QUEUE_DIRECTORIES = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold")
QUEUE_DIRECTORIES += ("incoming", "private", "saved", "trace")
MASTER_SERVICES = """\
pickup    unix  n - n 60  1 pickup
cleanup   unix  n - n -   0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -   - trivial-rewrite
bounce    unix  - - n -   0 bounce
defer     unix  - - n -   0 bounce
trace     unix  - - n -   0 bounce
verify    unix  - - n -   1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -   - proxymap
showq     unix  n - n -   - showq
error     unix  - - n -   - error
retry     unix  - - n -   - error
discard   unix  - - n -   - discard
anvil     unix  - - n -   1 anvil
scache    unix  - - n -   1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixUnavailable(Exception):
    """Postfix cannot run here; the message says why and how to get it."""


def library_environment() -> dict[str, str]:
    """This process's environment with Postfix's shared libraries on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{ROOT / 'usr/lib/postfix'}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def smtp_source() -> Path:
    """Postfix's smtp-source load generator from the unpacked package."""
    binary = ROOT / "usr/sbin/smtp-source"
    if not os.access(binary, os.X_OK):
        raise PostfixUnavailable(f"no {binary}: {HOW_TO_GET}")
    return binary


def _ensure_accounts() -> tuple[int, int]:
    """The uid of `postfix` and gid of `postdrop`, created when missing (root only)."""
    try:
        uid = pwd.getpwnam("postfix").pw_uid
        gid = grp.getgrnam("postdrop").gr_gid
        return uid, gid
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise PostfixUnavailable(
            "Postfix needs a `postfix` user and a `postdrop` group, and root to create them: "
            f"run the benchmark as root ({HOW_TO_GET})"
        )
    if shutil.which("groupadd") is None or shutil.which("useradd") is None:
        raise PostfixUnavailable("no groupadd/useradd to create the postfix user and group")
    subprocess.run(["groupadd", "--system", "-f", "postdrop"], check=True)
    if subprocess.run(["id", "postfix"], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "postfix"],
            check=True,
        )  # fmt: skip
    return pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postdrop").gr_gid


def _write_config(
    folder: Path, port: int, domain: str, local_part: str, main_cf: str, master_cf: str
) -> Path:
    config = folder / "etc"
    config.mkdir()
    defaults = (
        "compatibility_level = 3.6\n"
        f"queue_directory = {folder / 'spool'}\n"
        f"data_directory = {folder / 'data'}\n"
        f"daemon_directory = {ROOT / 'usr/lib/postfix/sbin'}\n"
        f"command_directory = {ROOT / 'usr/sbin'}\n"
        f"shlib_directory = {ROOT / 'usr/lib/postfix'}\n"
        f"meta_directory = {config}\n"
        "mail_owner = postfix\nsetgid_group = postdrop\n"
        "import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH\n"
        "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
        f"myhostname = mx.{domain}\nmydestination = {domain}\nmynetworks = 127.0.0.0/8\n"
        f"local_recipient_maps = inline:{{ {local_part}=bench }}\n"
        "alias_maps =\nalias_database =\n"
        "local_transport = discard:\ndefault_transport = discard:\nrelay_transport = discard:\n"
        f"maillog_file = {folder / 'maillog'}\nmaillog_file_prefixes = {folder}\n"
        "biff = no\nsmtpd_client_connection_count_limit = 0\n"
    )
    _write_main_cf(config, {**_settings(defaults), **_settings(main_cf)})
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_SERVICES}{master_cf}"
    )
    return config


def _settings(lines: str) -> dict[str, str]:
    """main.cf's `name = value` lines as a mapping (the last of a name wins)."""
    named: dict[str, str] = {}
    for line in lines.splitlines():
        if line.strip():
            name, _, value = line.partition("=")
            named[name.strip()] = value.strip()
    return named


def _write_main_cf(config: Path, settings: dict[str, str]) -> None:
    """Each setting once: a name given twice makes every Postfix process warn, and postlogd
    sends its own warnings to syslog, where with no syslog daemon it blocks, and with it every
    process that logs (smtpd before its greeting)."""
    (config / "main.cf").write_text(
        "".join(f"{name} = {value}\n" for name, value in settings.items())
    )


def _make_queue(folder: Path, uid: int, gid: int) -> None:
    spool = folder / "spool"
    spool.mkdir()
    for name in QUEUE_DIRECTORIES:
        (spool / name).mkdir(mode=0o700)
        os.chown(spool / name, uid, -1)
    (spool / "pid").mkdir(mode=0o755)
    for name, mode in (("maildrop", 0o730), ("public", 0o710)):
        (spool / name).mkdir()
        os.chown(spool / name, uid, gid)
        os.chmod(spool / name, mode)
    (folder / "data").mkdir(mode=0o700)
    os.chown(folder / "data", uid, -1)


def _wait_listening(port: int, master: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise PostfixUnavailable(f"postfix master exited: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    said = "".join(
        path.read_text(errors="replace")[-2000:]
        for path in (log, log.with_name("master.out"))
        if path.exists()
    )
    raise PostfixUnavailable(f"postfix did not answer on port {port} in {START_SECONDS} s: {said}")


@dataclass(frozen=True)
class PostfixInstance:
    """A running Postfix: its smtpd's loopback port, its master's process id, its config
    directory (for `MAIL_CONFIG`), and its folder (queue under `spool`, log in `maillog`)."""

    port: int
    pid: int
    config: Path
    folder: Path

    @property
    def maillog(self) -> str:
        """What Postfix has logged so far."""
        path = self.folder / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def change(self, main_cf: str) -> None:
        """Set `main_cf`'s `name = value` lines in main.cf, have Postfix read it again (and its
        maps), and wait until it has."""
        path = self.config / "main.cf"
        _write_main_cf(self.config, {**_settings(path.read_text()), **_settings(main_cf)})
        old = self._children("smtpd")
        os.kill(self.pid, signal.SIGHUP)  # idle daemons exit; busy ones after their session
        deadline = time.monotonic() + START_SECONDS
        while old & self._children("smtpd"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"postfix's smtpd did not restart in {START_SECONDS} s")
            time.sleep(0.05)

    def _children(self, name: str) -> set[int]:
        """The process ids of master's daemons called `name` (Linux: read from /proc)."""
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)
            except OSError:
                continue  # gone meanwhile
            command = fields[0].split("(", 1)[1]
            if command == name and int(fields[1].split()[1]) == self.pid:
                found.add(int(stat.parent.name))
        return found

    def command(self, name: str, *args: str, stdin: bytes = b"", timeout: float = 20) -> str:
        """Run Postfix's command `name` (sendmail, postqueue, postsuper…) against this
        instance, given `stdin`; its output. Raises when it fails."""
        done = subprocess.run(
            [str(ROOT / "usr/sbin" / name), *args],
            input=stdin,
            env={**library_environment(), "MAIL_CONFIG": str(self.config)},
            capture_output=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"postfix's {name} exited with {done.returncode}: {said}")
        return done.stdout.decode(errors="replace")


@contextmanager
def postfix_instance(
    port: int, recipient: str, *, main_cf: str = "", master_cf: str = ""
) -> Iterator[PostfixInstance]:
    """Postfix accepting mail for `recipient` on 127.0.0.1:`port`, `main_cf` and `master_cf`
    appended to its configuration; stopped (with every process it started) afterwards."""
    master_binary = ROOT / "usr/lib/postfix/sbin/master"
    if not os.access(master_binary, os.X_OK):
        raise PostfixUnavailable(f"no {master_binary}: {HOW_TO_GET}")
    if os.geteuid() != 0:
        raise PostfixUnavailable(f"Postfix's master must start as root: {HOW_TO_GET}")
    uid, gid = _ensure_accounts()
    local_part, domain = recipient.split("@")
    with tempfile.TemporaryDirectory(prefix="e2a-postfix-") as temp:
        folder = Path(temp)
        folder.chmod(0o755)  # the postfix user walks into it
        config = _write_config(folder, port, domain, local_part, main_cf, master_cf)
        _make_queue(folder, uid, gid)
        env = {**library_environment(), "MAIL_CONFIG": str(config)}
        log = folder / "master.out"
        with log.open("wb") as output:
            master = subprocess.Popen(
                [str(master_binary), "-d", "-c", str(config)],
                env=env,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        try:
            _wait_listening(port, master, folder / "maillog")
            yield PostfixInstance(port, master.pid, config, folder)
        finally:
            master.send_signal(signal.SIGTERM)  # master stops its children and exits
            try:
                master.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(master.pid, signal.SIGKILL)
                master.wait(timeout=10)


@contextmanager
def postfix_server(port: int, recipient: str) -> Iterator[tuple[int, int]]:
    """Postfix accepting mail for `recipient` on 127.0.0.1:`port`; yields the port and the
    process id of its master (whose process tree does all the work)."""
    with postfix_instance(port, recipient) as instance:
        yield instance.port, instance.pid
