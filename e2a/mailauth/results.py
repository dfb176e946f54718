"""Authentication results as data, and their RFC 8601 `Authentication-Results` rendering.

Pure values and text: this module looks nothing up and decides nothing; `authenticate`
fills these in. Everything rendered from a value the client chose (HELO name, domains,
reasons) is made safe to put in a header field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

AuthResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
"""A result as RFC 8601 names them (DMARC uses pass, fail, none, temperror, permerror)."""

# RFC 2045 token characters: a property value made only of these needs no quoting.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_REASON = 120


@dataclass(frozen=True)
class DkimSignatureResult:
    """The verdict on one DKIM-Signature: its `d=` and `s=`, and why it did not pass."""

    result: AuthResult
    domain: str
    selector: str
    reason: str = ""


@dataclass(frozen=True)
class AuthResults:
    """Everything the gateway learned about who sent a message.

    `verified` is True only when SPF or DKIM passed for a domain aligned with the `From:`
    domain; a pass for some other domain says nothing about the author.
    """

    spf: AuthResult
    spf_domain: str
    spf_scope: Literal["mailfrom", "helo"]
    dkim: AuthResult
    dkim_signatures: tuple[DkimSignatureResult, ...]
    dmarc: AuthResult
    dmarc_policy: str | None
    from_domain: str | None
    verified: bool
    arc: AuthResult | None = None

    @classmethod
    def temporary_failure(cls, from_domain: str | None) -> AuthResults:
        """All-`temperror` results, for when authentication could not finish in time."""
        return cls(
            spf="temperror",
            spf_domain="",
            spf_scope="mailfrom",
            dkim="temperror",
            dkim_signatures=(),
            dmarc="temperror",
            dmarc_policy=None,
            from_domain=from_domain,
            verified=False,
        )

    @property
    def dkim_domains(self) -> tuple[str, ...]:
        """The `d=` domains of the DKIM signatures that passed, in message order."""
        return tuple(sig.domain for sig in self.dkim_signatures if sig.result == "pass")

    @property
    def domain_check(self) -> str:
        """The `X-E2A-Auth-Domain-Check` value, e.g. `spf=pass; dkim=pass; dmarc=pass`."""
        return f"spf={self.spf}; dkim={self.dkim}; dmarc={self.dmarc}"

    def as_dict(self) -> dict[str, str]:
        """The results by method: spf, dkim, dmarc, and arc when the message had ARC sets."""
        results: dict[str, str] = {"spf": self.spf, "dkim": self.dkim, "dmarc": self.dmarc}
        if self.arc is not None:
            results["arc"] = self.arc
        return results

    def header(self, authserv_id: str) -> bytes:
        """The complete `Authentication-Results:` field, folded one result per line, CRLF-ended."""
        lines = [f"Authentication-Results: {_pvalue(authserv_id)}"]
        lines += [f" {clause}" for clause in self._clauses()]
        return (";\r\n".join(lines) + "\r\n").encode("utf-8")

    def _clauses(self) -> list[str]:
        clauses = [self._spf_clause()]
        clauses += [_dkim_clause(sig) for sig in self.dkim_signatures] or [f"dkim={self.dkim}"]
        clauses.append(self._dmarc_clause())
        if self.arc is not None:
            clauses.append(f"arc={self.arc}")
        return clauses

    def _spf_clause(self) -> str:
        if not self.spf_domain:
            return f"spf={self.spf}"
        return f"spf={self.spf} smtp.{self.spf_scope}={_pvalue(self.spf_domain)}"

    def _dmarc_clause(self) -> str:
        clause = f"dmarc={self.dmarc}"
        if self.dmarc_policy:
            clause += f" (p={self.dmarc_policy})"
        if self.from_domain:
            clause += f" header.from={_pvalue(self.from_domain)}"
        return clause


def _dkim_clause(sig: DkimSignatureResult) -> str:
    clause = f"dkim={sig.result}"
    if sig.reason and sig.result != "pass":
        clause += f" reason={_quoted(sig.reason[:_MAX_REASON])}"
    return clause + f" header.d={_pvalue(sig.domain)} header.s={_pvalue(sig.selector)}"


def _pvalue(text: str) -> str:
    """`text` as an RFC 8601 property value: a token when it is one, else a quoted-string."""
    return text if _TOKEN.fullmatch(text) else _quoted(text)


def _quoted(text: str) -> str:
    escaped = _CONTROL.sub("", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
