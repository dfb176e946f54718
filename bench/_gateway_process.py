"""`e2a serve` as a subprocess on loopback, for the SMTP benchmark and the crash test.

It writes a config (SQLite in a given folder, fixed free ports, DNS on a quiet loopback
server), starts and stops the process, and sets up one user with an API key and one local
agent `bot@agents.test` through the real CLI and REST API.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx

SHARED_DOMAIN = "agents.test"
AGENT = f"bot@{SHARED_DOMAIN}"
START_SECONDS = 30.0
E2A = [sys.executable, "-m", "e2a_gateway"]


def compile_bytecode() -> None:
    """Byte-compile the e2a_gateway package as `pip install` does for an installed copy, so
    that `python -m e2a_gateway` starts as it would on a user's machine even where
    PYTHONDONTWRITEBYTECODE keeps the interpreter from caching bytecode (an editable install
    would recompile every module on every start)."""
    package = Path(__file__).resolve().parent.parent / "e2a_gateway"
    if not compileall.compile_dir(package, quiet=1):
        raise RuntimeError(f"cannot byte-compile {package}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    tree = [root]
    for pid in tree:  # grows while iterating: a breadth-first walk
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process `pid` itself, children it has reaped
    included; 0 once it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime


def tree_cpu_seconds(root: int) -> float:
    """CPU time used so far by the tree under `root`, reaped children included (Postfix's
    smtpd processes)."""
    return sum(cpu_seconds(pid) for pid in process_tree(root))


def clean_environment() -> dict[str, str]:
    """This process's environment without E2A_* settings, so only the config file counts."""
    return {key: value for key, value in os.environ.items() if not key.startswith("E2A_")}


class GatewayProcess:
    """One gateway deployment in `folder`; `start()`/`kill()`/`terminate()` its process.

    `command` runs e2a: this venv's `python -m e2a_gateway` by default, or e.g. `["dist/e2a"]`;
    `log_level` None leaves the gateway's default level (info); `metrics` serves `GET /metrics`;
    `dns_timeout_seconds` is `dns.timeout_seconds`, also the deadline on authenticating a message.
    """

    def __init__(
        self,
        folder: Path,
        dns: str,
        *,
        smtp: dict[str, object] | None = None,
        command: Sequence[str] = E2A,
        log_level: str | None = "warning",
        metrics: bool = False,
        dns_timeout_seconds: float = 2.0,
    ) -> None:
        self.folder = folder
        self.command = list(command)
        self.smtp_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.config = folder / "e2a.toml"
        smtp_lines = "".join(f"{key} = {_toml(value)}\n" for key, value in (smtp or {}).items())
        self.config.write_text(
            f'shared_domain = "{SHARED_DOMAIN}"\n'
            f'[smtp]\nlisten = "127.0.0.1:{self.smtp_port}"\nhostname = "mx.{SHARED_DOMAIN}"\n'
            f"{smtp_lines}"
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'
            f'[database]\nurl = "sqlite:///{folder / "e2a.db"}"\n'
            f'[dns]\nnameservers = ["{dns}"]\ntimeout_seconds = {dns_timeout_seconds}\n'
            + (f'[log]\nlevel = "{log_level}"\n' if log_level else "")
            + ("[metrics]\nenabled = true\n" if metrics else "")
            # Load generators poll hard from one address; the production limits would throttle.
            + "[limits]\nagent_registrations_per_ip_per_hour = 100000\n"
            "agent_registrations_per_user_per_hour = 100000\n"
            "message_polls_per_user_per_minute = 100000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start `e2a serve` and wait until its HTTP health check answers."""
        self._log = (self.folder / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [*self.command, "serve", "--config", str(self.config)],
            cwd=self.folder,
            env=clean_environment(),
            stdout=self._log,
            stderr=self._log,
            # Its own process group: the one-file binary is a launcher and the gateway, and
            # SIGKILL must reach both (a launcher cannot forward a SIGKILL).
            start_new_session=True,
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"e2a serve exited early:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"e2a serve did not become healthy in {START_SECONDS} s")

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown code runs, exactly like a power cut
        for the process."""
        self._stop(signal.SIGKILL)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; the exit code."""
        return self._stop(signal.SIGTERM, timeout)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself (after a signal sent earlier); its exit code."""
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self._stop(signal.SIGKILL)
        return code

    def _stop(self, how: signal.Signals, timeout: float = 10.0) -> int:
        code = 0
        if self.process is not None:
            if self.process.poll() is None:
                if how == signal.SIGKILL:
                    self._kill_group()
                else:
                    self.process.send_signal(how)  # the binary's launcher forwards it
            try:
                code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                code = self.process.wait(timeout=10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_text(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        path = self.folder / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def bootstrap(self) -> httpx.Client:
        """A user with an API key and the local agent AGENT; an HTTP client using the key."""
        result = subprocess.run(
            [
                *self.command,
                "bootstrap",
                "--email",
                "owner@example.com",
                "--config",
                str(self.config),
            ],
            cwd=self.folder,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        client = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {result.stdout.strip()}"},
            timeout=30,
        )
        created = client.post("/agents", json={"slug": AGENT.split("@")[0], "agent_mode": "local"})
        created.raise_for_status()
        return client


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return f'"{value}"'
