"""Authentication results as data, their RFC 8601 `Authentication-Results` rendering, and the
removal of such fields that claim to come from us.

Pure values and text: this module looks nothing up and decides nothing; `authenticate`
fills these in. Everything rendered from a value the client chose (HELO name, domains,
reasons) is made safe to put in a header field, in ASCII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from e2a_gateway.rfc5322 import header_section

AuthResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
"""A result as RFC 8601 names them (DMARC uses pass, fail, none, temperror, permerror)."""
Alignment = Literal["r", "s"]
"""A DMARC identifier alignment mode: relaxed or strict (RFC 7489 section 3.1)."""

# RFC 2045 token characters: a property value made only of these needs no quoting.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_MAX_REASON = 120
_RESULTS_FIELD = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
_AUTHSERV_TOKEN = re.compile(r'[^\s;()"]+')
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_DMARC_RESULT = re.compile(r"\s*dmarc\s*=\s*\w+\s*(?:\(\s*p\s*=\s*(\w+)\s*\))?", re.IGNORECASE)
_SPF_RESULT = re.compile(
    r'\s*spf\s*=\s*\w+\s*(?:smtp\.(?:mailfrom|helo)\s*=\s*("[0-9]+"|[^\s;()"]+))?', re.IGNORECASE
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_POLICY_PROPERTY = re.compile(r"\bpolicy\.dmarc\s*=\s*(\w+)", re.IGNORECASE)
_DISPOSITIONS = frozenset({"none", "quarantine", "reject"})


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
    aspf: Alignment | None = None
    adkim: Alignment | None = None
    """The modes SPF's and DKIM's domains were aligned with `from_domain` under when `verified`
    was judged (`DmarcResult`); None when they were not."""

    @classmethod
    def temporary_failure(cls, from_domain: str | None) -> AuthResults:
        """All-`temperror` results, for when authentication could not finish in time;
        `from_domain` as a finished check names it (`dmarc.author_of`: lowercase A-labels)."""
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
        if self.from_domain:
            clause += f" header.from={_pvalue(self.from_domain)}"
        if self.dmarc_policy:
            clause += f" policy.dmarc={self.dmarc_policy}"
        if self.aspf and self.adkim:
            clause += f" policy.aspf={self.aspf} policy.adkim={self.adkim}"
        return clause


def dmarc_policy_named(field: str) -> str | None:
    """The DMARC policy the dmarc result of an `Authentication-Results` field names (`field` is
    its value): its `policy.dmarc` property or, in fields the gateway wrote before it had one,
    the comment after the result (`dmarc=fail (p=reject)`); None when it names none.

    Read only the gateway's own field so: every value a sender chose is in it a token (no `=`,
    no parentheses) or a quoted-string, and quoted-strings (DKIM reasons among them) are
    passed over, so no text of the sender's is taken for the policy.
    """
    for clause in _QUOTED_STRING.sub('""', field).split(";"):
        result = _DMARC_RESULT.match(clause)
        if result is None:
            continue
        named = _POLICY_PROPERTY.search(clause)
        policy = (named.group(1) if named else result.group(1) or "").lower()
        return policy if policy in _DISPOSITIONS else None
    return None


def spf_domain_named(field: str) -> str | None:
    """The domain the spf result of an `Authentication-Results` field (`field` is its value)
    names as checked: its `smtp.mailfrom` property, or `smtp.helo` for mail with a null
    reverse path (RFC 7208 section 2.4); None when it names none.

    Read only the gateway's own field so, as `dmarc_policy_named`: quoted-strings are set
    aside before the field is cut into clauses, so none of a sender's text is taken for one.
    """
    quoted: list[str] = []

    def set_aside(match: re.Match[str]) -> str:
        quoted.append(unescaped(match.group(1)))
        return f'"{len(quoted) - 1}"'

    for clause in _QUOTED_STRING.sub(set_aside, field).split(";"):
        result = _SPF_RESULT.match(clause)
        if result is None:
            continue
        value = result.group(1)
        if value is not None and value.startswith('"'):
            value = quoted[int(value[1:-1])]
        return value or None
    return None


def unescaped(text: str) -> str:
    """The text a quoted-string of the field stands for (its content, `\\"` read as `"`),
    as the gateway wrote it (`_quoted`)."""
    return _QUOTED_PAIR.sub(r"\1", text)


def _dkim_clause(sig: DkimSignatureResult) -> str:
    clause = f"dkim={sig.result}"
    if sig.reason and sig.result != "pass":
        clause += f" reason={_quoted(sig.reason[:_MAX_REASON])}"
    return clause + f" header.d={_pvalue(sig.domain)} header.s={_pvalue(sig.selector)}"


def _pvalue(text: str) -> str:
    """`text` as an RFC 8601 property value: a token when it is one, else a quoted-string."""
    return text if _TOKEN.fullmatch(text) else _quoted(text)


def _quoted(text: str) -> str:
    """`text` as a quoted-string in ASCII: the field's readers (`authres`) take no other, and
    a field they cannot read would hide every verdict in it. Non-ASCII shows as `?`."""
    text = _NON_ASCII.sub("?", _CONTROL.sub("", text))
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def without_results_of(message: bytes, authserv_id: str) -> bytes:
    """`message` without the `Authentication-Results` fields that name `authserv_id` (compared
    without regard to case), folded lines included; all other bytes as they were.

    A border MTA must remove such fields before adding its own (RFC 8601 section 5): whoever
    sent them is forging our verdict. Fields of other authserv-ids are kept. Time is linear
    in the header section.
    """
    header = header_section(message)
    if b"authentication-results" not in header.lower():
        return message
    ours = authserv_id.lower()
    fields = _fields(header)
    kept = [field for field in fields if _results_authserv_id(field) != ours]
    if len(kept) == len(fields):
        return message
    return b"".join(line for field in kept for line in field) + message[len(header) :]


def _fields(header: bytes) -> list[list[bytes]]:
    """The header section cut into fields, each a list of its lines with their line endings."""
    fields: list[list[bytes]] = []
    for line in _LINE.findall(header):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def _results_authserv_id(field: list[bytes]) -> str | None:
    """The lowercased authserv-id of an `Authentication-Results` field; None for other fields."""
    name = _RESULTS_FIELD.match(field[0])
    if name is None:
        return None
    value = _after_cfws(b"".join(field)[name.end() :].decode("utf-8", "replace"))
    quoted = _QUOTED_STRING.match(value)
    if quoted is not None:
        return re.sub(r"\\(.)", r"\1", quoted.group(1), flags=re.DOTALL).lower()
    token = _AUTHSERV_TOKEN.match(value)
    return token.group(0).lower() if token is not None else ""


def _after_cfws(value: str) -> str:
    """`value` after the whitespace and comments (nestable, with quoted-pairs) it starts with."""
    position = 0
    while True:
        while position < len(value) and value[position].isspace():
            position += 1
        if not value.startswith("(", position):
            return value[position:]
        depth = 0
        while position < len(value):
            char = value[position]
            position += 2 if char == "\\" else 1
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                break
