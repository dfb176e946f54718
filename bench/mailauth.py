"""Cost of authenticating one inbound message: SPF + DKIM (RSA-2048) + DMARC, per message.

Three rows, same message, same machine, same run:
- e2a `authenticate_message` through its dnspython resolver against a DNS server on
  127.0.0.1, with a cold cache (a new resolver per message) and with a warm cache;
- the peer: the bare libraries (`spf.check2` and `dkim.verify` with pyspf's and dkimpy's own
  DNS hooks pointed at the same warm answers), i.e. what the checks cost without e2a's
  alignment, DMARC and result handling.

Run: `.venv/bin/python bench/mailauth.py [--messages N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import spf
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2a_gateway.mailauth.authenticate import authenticate_message
from e2a_gateway.mailauth.resolver import DnsResolver, FixtureResolver, Zone
from tests.dns_server import serve_dns
from tests.test_mailauth_dkim import rsa_key

SIGNER = rsa_key("example.org", "mail")
ZONE: Zone = {
    "example.org": {"TXT": ["v=spf1 include:_spf.example.org -all"]},
    "_spf.example.org": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject"]},
    **SIGNER.zone(),
}
MESSAGE = SIGNER.sign(
    b"From: alice@example.org\r\nTo: bot@agents.test\r\nSubject: bench\r\n"
    b"Message-ID: <bench@example.org>\r\n\r\n" + b"Hello agent.\r\n" * 40
)


def per_message_ms(run: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def e2a_check(resolver: DnsResolver | FixtureResolver) -> object:
    result = authenticate_message(
        resolver,
        client_ip="127.0.0.1",
        helo="mail.example.org",
        mail_from="alice@example.org",
        message=MESSAGE,
    )
    assert result.verified, result
    return result


def library_check(fixture: FixtureResolver) -> object:
    def dkim_dns(name: bytes, timeout: int = 5) -> bytes:
        return "".join(fixture.txt(name.decode().rstrip("."))).encode()

    spf_result = spf.check2(i="127.0.0.1", s="alice@example.org", h="mail.example.org")
    assert spf_result[0] == "pass", spf_result
    assert dkim.verify(MESSAGE, dnsfunc=dkim_dns)
    return spf_result


def report(name: str, samples: list[float]) -> None:
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{name:46} {statistics.median(samples):8.2f} {p99:8.2f} {len(samples):6d}")


async def main(messages: int) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_dns, ZONE)
        nameserver = [f"127.0.0.1:{port}"]

        def cold() -> object:
            return e2a_check(DnsResolver(nameserver, timeout=2))

        warm_resolver = DnsResolver(nameserver, timeout=2)
        await trio.to_thread.run_sync(e2a_check, warm_resolver)
        cold_ms = await trio.to_thread.run_sync(per_message_ms, cold, messages)
        warm_ms = await trio.to_thread.run_sync(
            per_message_ms, lambda: e2a_check(warm_resolver), messages
        )
        fixture = FixtureResolver.from_zone(ZONE)
        original_lookup = spf.DNSLookup
        spf.DNSLookup = lambda name, qtype, *args, **kwargs: (
            [  # type: ignore[assignment]
                ((name, "TXT"), (text.encode(),)) for text in fixture.txt(name)
            ]
            if qtype == "TXT"
            else []
        )
        try:
            peer_ms = await trio.to_thread.run_sync(
                per_message_ms, lambda: library_check(fixture), messages
            )
        finally:
            spf.DNSLookup = original_lookup
        nursery.cancel_scope.cancel()
    print(f"{'authentication of one message':46} {'p50 ms':>8} {'p99 ms':>8} {'n':>6}")
    report("e2a, uncached (DNS server on 127.0.0.1)", cold_ms)
    report("e2a, cached resolver", warm_ms)
    report("peer: bare pyspf check2 + dkimpy verify", peer_ms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Cost of SPF+DKIM+DMARC per message.")
    parser.add_argument("--messages", type=int, default=300)
    trio.run(main, parser.parse_args().messages)
