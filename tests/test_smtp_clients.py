"""Real SMTP clients against the listener: swaks and Postfix's smtp-source.

These are the tools mail administrators point at a server, so they catch what hand-written
clients agree with us about. Each test skips, saying how to install the tool, when it is absent:

    apt-get install -y swaks libnet-ssleay-perl libio-socket-ssl-perl   # swaks STARTTLS needs both
    apt-get download postfix && dpkg -x postfix_*.deb /opt/postfix-tools   # smtp-source only

`E2A_TEST_SMTP_SOURCE=/path/to/smtp-source` points at an smtp-source elsewhere.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trustme

from e2a_gateway.smtp.protocol import Envelope, Mailbox
from e2a_gateway.smtp.server import RecipientVerdict
from tests.test_smtp_server import HOST, MemorySink, start_server

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

TIMEOUT = 60
SMTP_SOURCE_VAR = "E2A_TEST_SMTP_SOURCE"
SMTP_SOURCE_PLACES = ("/usr/sbin/smtp-source", "/opt/postfix-tools/usr/sbin/smtp-source")


class AnyAgentSink(MemorySink):
    """Every local part at agents.test is an agent (smtp-source numbers its recipients)."""

    async def check_recipient(self, mailbox: Mailbox) -> RecipientVerdict:
        await trio.lowlevel.checkpoint()
        self.checked.append(mailbox)
        if mailbox.domain != "agents.test":
            return RecipientVerdict.RELAY_DENIED
        if mailbox.local.startswith("nobody"):
            return RecipientVerdict.UNKNOWN_USER
        return RecipientVerdict.ACCEPT


@pytest.fixture
def sink() -> AnyAgentSink:
    return AnyAgentSink()


@pytest.fixture
def swaks() -> str:
    found = shutil.which("swaks")
    if found is None:
        pytest.skip("swaks not installed: apt-get install -y swaks")
    return found


def find_smtp_source() -> Path | None:
    """smtp-source from $E2A_TEST_SMTP_SOURCE, PATH, or an unpacked postfix .deb."""
    candidates = [os.environ.get(SMTP_SOURCE_VAR), shutil.which("smtp-source"), *SMTP_SOURCE_PLACES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@pytest.fixture
def smtp_source() -> tuple[Path, dict[str, str]]:
    """The smtp-source binary and an environment that finds Postfix's shared libraries."""
    binary = find_smtp_source()
    if binary is None:
        pytest.skip(
            "smtp-source not found: `apt-get download postfix && dpkg -x postfix_*.deb "
            f"/opt/postfix-tools`, or set {SMTP_SOURCE_VAR}=/path/to/smtp-source"
        )
    env = dict(os.environ)
    libraries = binary.parent.parent / "lib" / "postfix"
    if libraries.is_dir():
        env["LD_LIBRARY_PATH"] = f"{libraries}:{env.get('LD_LIBRARY_PATH', '')}"
    return binary, env


async def run_tool(
    command: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=env
        )


def swaks_command(swaks: str, port: int, *args: str) -> list[str]:
    return [
        swaks,
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "--helo",
        "client.example",
        "--from",
        "sender@example.org",
        "--timeout",
        "10",
        *args,
    ]


def bodies(stored: list[tuple[Envelope, str]]) -> list[bytes]:
    return [envelope.data for envelope, _ in stored]


# swaks


async def test_swaks_delivers_a_message(
    swaks: str, nursery: trio.Nursery, sink: AnyAgentSink
) -> None:
    port = await start_server(nursery, sink)
    result = await run_tool(
        swaks_command(swaks, port, "--to", "alice@agents.test", "--body", "hello from swaks")
    )
    assert result.returncode == 0, result.stdout.decode()
    assert b"<-  250 2.0.0 Ok: queued as msg_1" in result.stdout
    [(envelope, peer)] = sink.stored
    assert envelope.recipients == [Mailbox("alice", "agents.test")]
    assert b"\r\n\r\nhello from swaks\r\n" in envelope.data
    assert peer == "127.0.0.1"


async def test_swaks_pipelining(swaks: str, nursery: trio.Nursery, sink: AnyAgentSink) -> None:
    port = await start_server(nursery, sink)
    recipients = "alice@agents.test,nobody@agents.test,bob@agents.test"
    result = await run_tool(swaks_command(swaks, port, "--pipeline", "--to", recipients))
    output = result.stdout.decode()
    assert result.returncode == 0, output
    assert "-> MAIL FROM:<sender@example.org>\n -> RCPT TO:<alice@agents.test>" in output
    assert "<** 550 5.1.1 <nobody@agents.test>: no such agent here" in output
    [(envelope, _)] = sink.stored
    assert [mailbox.local for mailbox in envelope.recipients] == ["alice", "bob"]


async def test_swaks_is_refused_relay(
    swaks: str, nursery: trio.Nursery, sink: AnyAgentSink
) -> None:
    port = await start_server(nursery, sink)
    for address in ("victim@elsewhere.test", "victim@[192.0.2.1]", "@agents.test:x@elsewhere.test"):
        result = await run_tool(swaks_command(swaks, port, "--to", address))
        assert result.returncode != 0
        assert b"<** 550 5.7.1" in result.stdout, result.stdout.decode()
    assert sink.stored == []


async def test_swaks_starttls_with_certificate_verification(
    swaks: str, nursery: trio.Nursery, sink: AnyAgentSink, tmp_path: Path
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert(HOST, "127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = await start_server(nursery, sink, tls=context)
    result = await run_tool(
        swaks_command(
            swaks,
            port,
            "--to",
            "alice@agents.test",
            "-tls",
            "--tls-verify",
            "--tls-ca-path",
            str(ca_file),
            "--tls-sni",
            HOST,
        )
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output
    assert "<-  220 2.0.0 Ready to start TLS" in output
    assert "=== TLS started with cipher" in output
    assert len(sink.stored) == 1


async def test_swaks_bare_lf_smuggling_is_refused(
    swaks: str, nursery: trio.Nursery, sink: AnyAgentSink
) -> None:
    """CVE-2023-51764 style: `\\n.\\n` inside DATA must not end it or start a new command."""
    port = await start_server(nursery, sink)
    smuggled = (
        "Subject: real\r\n\r\nreal\n.\nMAIL FROM:<ceo@example.org>\r\n"
        "RCPT TO:<bob@agents.test>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\n"
    )
    result = await run_tool(
        swaks_command(
            swaks, port, "--to", "alice@agents.test", "--no-data-fixup", "--data", smuggled
        )
    )
    assert b"550 5.6.11" in result.stdout, result.stdout.decode()
    assert sink.stored == []
    assert [mailbox.local for mailbox in sink.checked] == ["alice"]


# smtp-source


@pytest.mark.parametrize("keep_connection", [True, False], ids=["one-connection", "reconnect"])
async def test_smtp_source_parallel_sessions(
    smtp_source: tuple[Path, dict[str, str]],
    nursery: trio.Nursery,
    sink: AnyAgentSink,
    keep_connection: bool,
) -> None:
    binary, env = smtp_source
    port = await start_server(nursery, sink)
    command = [str(binary), "-s", "10", "-m", "200", "-l", "2000", "-r", "2"]
    command += ["-f", "sender@example.org", "-t", "alice@agents.test", "-M", "client.example"]
    command += ["-d"] if keep_connection else []
    result = await run_tool([*command, f"127.0.0.1:{port}"], env)
    assert result.returncode == 0, result.stderr.decode()
    assert len(sink.stored) == 200
    for envelope, _ in sink.stored:
        assert len(envelope.recipients) == 2
        assert envelope.data.endswith(b"\r\n")
        assert len(envelope.data) > 2000
    assert {envelope.helo for envelope, _ in sink.stored} == {"client.example"}


async def test_smtp_source_stops_on_a_refused_recipient(
    smtp_source: tuple[Path, dict[str, str]], nursery: trio.Nursery, sink: AnyAgentSink
) -> None:
    binary, env = smtp_source
    port = await start_server(nursery, sink)
    command = [str(binary), "-m", "1", "-f", "sender@example.org", "-t", "nobody@agents.test"]
    result = await run_tool([*command, f"127.0.0.1:{port}"], env)
    assert result.returncode != 0
    assert b"550 5.1.1" in result.stderr
    assert sink.stored == []
