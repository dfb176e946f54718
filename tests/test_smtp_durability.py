"""Durability of `e2a serve` as a process: SIGKILL at random points loses no acknowledged mail,
and SIGTERM lets a message in flight finish before the process exits.

A 250 after DATA is a promise: the message is on disk. Client threads stream uniquely numbered
messages while the server is killed at random moments, several times over; after a restart,
every message that got its 250 must be readable over REST, byte for byte (SHA-256), and none
may be stored twice.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import re
import smtplib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench._gateway_process import AGENT, GatewayProcess
from bench._quiet_dns import QuietDns

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

KILLS = 5
CLIENTS = 6
SEQUENCE = re.compile(rb"^X-Crash-Sequence: (\d+)\r$", re.MULTILINE)


@dataclass
class Ledger:
    """What the clients sent and which messages the server acknowledged with 250."""

    sent: dict[int, bytes] = field(default_factory=dict)
    acknowledged: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_number: int = 0

    def new_message(self, rng: random.Random) -> tuple[int, bytes]:
        with self.lock:
            number = self.next_number
            self.next_number += 1
        lines = [
            b"From: sender@example.org",
            f"To: {AGENT}".encode(),
            f"Subject: crash test {number}".encode(),
            f"X-Crash-Sequence: {number}".encode(),
            b"",
        ]
        for _ in range(rng.randint(1, 200)):
            line = rng.randbytes(rng.randint(0, 60)).hex().encode()
            lines.append(b"." + line if rng.random() < 0.1 else line)  # dots need stuffing
        data = b"\r\n".join(lines) + b"\r\n"
        with self.lock:
            self.sent[number] = data
        return number, data


def stream_messages(port: int, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """Send messages over one connection until `stop` or until the server goes away."""
    rng = random.Random(seed)
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as smtp:
            smtp.ehlo()
            while not stop.is_set():
                number, data = ledger.new_message(rng)
                smtp.mail("sender@example.org")
                smtp.rcpt(AGENT)
                code, _ = smtp.data(data)
                if code == 250:
                    with ledger.lock:
                        ledger.acknowledged.add(number)
    except (OSError, smtplib.SMTPException):
        return  # killed under us: whatever was not acknowledged may or may not be stored


def stored_messages(client: httpx.Client) -> Iterator[bytes]:
    """Every raw message of the agent, fetched over REST."""
    token: str | None = None
    while True:
        params = {"status": "all", "page_size": "100", **({"token": token} if token else {})}
        page = client.get(f"/agents/{AGENT}/messages", params=params)
        page.raise_for_status()
        listing = page.json()
        for summary in listing["messages"]:
            full = client.get(f"/agents/{AGENT}/messages/{summary['message_id']}")
            full.raise_for_status()
            yield base64.b64decode(full.json()["raw_message"])
        token = listing["next_token"]
        if token is None:
            return


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def quiet_dns() -> Iterator[str]:
    with QuietDns() as dns:
        yield dns.address


def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path, quiet_dns: str) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    gateway = GatewayProcess(tmp_path, quiet_dns)
    ledger = Ledger()
    started = time.monotonic()
    gateway.start()
    try:
        api = gateway.bootstrap()
        for _ in range(KILLS):
            stop = threading.Event()
            clients = [
                threading.Thread(
                    target=stream_messages,
                    args=(gateway.smtp_port, ledger, stop, rng.randrange(2**32)),
                )
                for _ in range(CLIENTS)
            ]
            for client in clients:
                client.start()
            time.sleep(rng.uniform(0.3, 1.5))
            gateway.kill()
            stop.set()
            for client in clients:
                client.join(timeout=15)
                assert not client.is_alive()
            gateway.start()
        stored = list(stored_messages(api))
        api.close()
    finally:
        gateway.kill()

    context = f"(seed {seed}, {len(ledger.acknowledged)} acknowledged, {len(stored)} stored)"
    assert len(ledger.acknowledged) > KILLS * 10, f"too little traffic to mean much {context}"
    found: dict[int, bytes] = {}
    for raw in stored:
        match = SEQUENCE.search(raw)
        assert match is not None, f"a stored message without its sequence number {context}"
        number = int(match.group(1))
        assert number not in found, f"message {number} stored twice {context}"
        found[number] = raw
    for number in sorted(ledger.acknowledged):
        assert number in found, f"acknowledged message {number} was lost {context}"
        sent = ledger.sent[number]
        received = found[number]
        # The gateway prepends its Authentication-Results header; the rest is what was sent.
        assert sha256(received[len(received) - len(sent) :]) == sha256(sent), (
            f"acknowledged message {number} is not intact {context}"
        )
    assert time.monotonic() - started < 120, f"the crash test is too slow {context}"


def read_reply(connection: socket.socket) -> bytes:
    reply = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", reply):
        chunk = connection.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def read_all(connection: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


def test_sigterm_lets_the_message_in_flight_finish(tmp_path: Path, quiet_dns: str) -> None:
    gateway = GatewayProcess(tmp_path, quiet_dns, smtp={"shutdown_grace_seconds": 10})
    gateway.start()
    try:
        api = gateway.bootstrap()
        idle = socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=10)
        sending = socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=10)
        assert read_reply(idle).startswith(b"220 ")
        assert read_reply(sending).startswith(b"220 ")
        sending.sendall(b"EHLO client.example\r\n")
        read_reply(sending)
        for command in [b"MAIL FROM:<sender@example.org>", f"RCPT TO:<{AGENT}>".encode(), b"DATA"]:
            sending.sendall(command + b"\r\n")
            assert read_reply(sending)[:1] in (b"2", b"3")
        sending.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
        assert gateway.process is not None
        gateway.process.terminate()
        assert read_reply(idle).startswith(b"421 4.3.2 ")
        time.sleep(0.5)
        assert gateway.process.poll() is None, "exited with a transaction in flight"
        sending.sendall(b"second half\r\n.\r\n")
        assert re.fullmatch(
            rb"250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 [^\r\n]*\r\n", read_all(sending)
        )
        assert gateway.wait(timeout=15) == 0
        gateway.start()
        [raw] = list(stored_messages(api))
        assert raw.endswith(b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n")
        api.close()
        idle.close()
        sending.close()
    finally:
        gateway.kill()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_stopped_gateway_leaves_all_its_mail_in_the_database_file(
    tmp_path: Path, quiet_dns: str, processes: int
) -> None:
    """After SIGTERM the write-ahead log is copied into e2a.db and removed: the file alone,
    copied elsewhere (a backup of a stopped gateway), holds every message answered 250."""
    gateway = GatewayProcess(tmp_path, quiet_dns, smtp={"processes": processes})
    gateway.start()
    try:
        gateway.bootstrap().close()
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as client:
            client.sendmail("sender@example.org", [AGENT], b"Subject: kept\r\n\r\nbody\r\n")
        assert gateway.process is not None
        gateway.process.terminate()
        assert gateway.wait(timeout=15) == 0
    finally:
        gateway.kill()
    left = sorted(path.name for path in tmp_path.glob("e2a.db*"))
    assert left == ["e2a.db"]
    copy = tmp_path / "copy" / "e2a.db"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "e2a.db").read_bytes())
    with contextlib.closing(sqlite3.connect(copy)) as database:
        [(subject,)] = database.execute("SELECT subject FROM messages_with_content").fetchall()
    assert subject == "kept"
