"""Authenticate one inbound message: SPF, DKIM, ARC and DMARC into one AuthResults.

Synchronous and free of I/O but for the Resolver's lookups: the SMTP side runs it in a
worker thread under its own deadline (and uses `AuthResults.temporary_failure` when that
passes). It never raises for bad mail or DNS trouble, and it never rejects anything: what
to do with the results is the caller's business.
"""

from __future__ import annotations

from e2a.mailauth.dkim import verify_arc, verify_dkim
from e2a.mailauth.dmarc import author_of, evaluate_dmarc
from e2a.mailauth.resolver import Resolver
from e2a.mailauth.results import AuthResults
from e2a.mailauth.spf import check_spf


def authenticate_message(
    resolver: Resolver, *, client_ip: str, helo: str, mail_from: str, message: bytes
) -> AuthResults:
    """Check who sent `message`: the client at `client_ip` that said `helo` and `MAIL FROM`.

    `message` is the DATA as received (dot-unstuffed, CRLF or LF line ends). `verified` in
    the result is True only for an SPF or DKIM pass aligned with the From: domain.
    """
    spf = check_spf(resolver, client_ip=client_ip, helo=helo, mail_from=mail_from)
    dkim = verify_dkim(resolver, message)
    author = author_of(message)
    dmarc = evaluate_dmarc(
        resolver,
        author,
        spf_result=spf.result,
        spf_domain=spf.domain,
        dkim_domains=dkim.passed_domains,
    )
    return AuthResults(
        spf=spf.result,
        spf_domain=spf.domain,
        spf_scope=spf.scope,
        dkim=dkim.result,
        dkim_signatures=dkim.signatures,
        dmarc=dmarc.result,
        dmarc_policy=dmarc.policy,
        from_domain=author.domain,
        verified=dmarc.aligned,
        arc=verify_arc(resolver, message),
    )
