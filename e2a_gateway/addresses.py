"""Email address and domain rules shared by the SMTP listener, the REST API and DMARC.

Pure functions over strings: normalisation (lowercase, IDNA, no trailing dot), the slug
rules for agents on the shared domain, and mailboxes with a display name (`Name <addr>`, as a
Reply-To takes them). No I/O.

There is one rule for turning a domain into the form e2a compares and stores
(`a_label_domain`), so a name registered over the API, a recipient given over SMTP and an
author's domain judged by DMARC always meet: labels are lowercased, non-ASCII labels become
A-labels by NFC + Punycode (IDNA 2008 style), and IDNA 2003 mappings (such as "ß" to "ss", or
"。" as a dot) are deliberately not applied — they would merge names that IDNA 2008 keeps apart,
and mail must never reach the wrong domain.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from typing import NamedTuple

import idna

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]\Z")
_LOCAL_PATTERN = re.compile(r"^[a-z0-9!#$&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$&'*+/=?^_`{|}~-]+)*\Z")
"""Both end in `\\Z`, not `$`, which also matches before a final line break: `bot\\n` is no
slug and no local part."""

RESERVED_SLUGS = frozenset(
    {
        "abuse",
        "admin",
        "administrator",
        "agent",
        "api",
        "bounce",
        "bounces",
        "demo",
        "help",
        "hostmaster",
        "info",
        "mail",
        "mailer-daemon",
        "no-reply",
        "noc",
        "noreply",
        "postmaster",
        "root",
        "security",
        "support",
        "system",
        "test",
        "webmaster",
        "www",
    }
)
"""Slugs no agent on the shared domain may take: mail roles (RFC 2142), names of the system,
and e2a's own reserved slugs, so an address refused there is refused here too."""


MAX_DOMAIN_LENGTH = 253
MAX_LABEL_LENGTH = 63
SHOWN_LENGTH = 100
"""How much of a refused address, domain or name its error message repeats (any may be long)."""
_ADDRESS_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What `lowercase_address` removes: ASCII controls but tab (a line break included)."""
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DELIMITER_CHARACTERS = frozenset("+-_=#~^!$&*/?{|}`'")
"""What a recipient delimiter (`smtp.recipient_delimiter`) may be made of: characters a
dot-atom local part holds that are neither letters, digits nor `.` (which separates atoms), nor
`%` (the old source-route hack)."""


class AddressError(ValueError):
    """An address or domain that the gateway will not accept; the message says why."""


@functools.lru_cache(maxsize=4096)
def a_label_domain(domain: str) -> str:
    """`domain` as e2a compares and stores it: lowercase A-labels, one trailing dot dropped.

    Raises ValueError (with the reason) for an empty or invalid label, a non-ASCII label that
    folds to ASCII, or a name over MAX_DOMAIN_LENGTH. Asked for each recipient of each
    message, so the last answers are remembered.
    """
    if domain.endswith("."):
        domain = domain[:-1]
    ascii_form = ".".join(_a_label(label) for label in domain.split("."))
    if len(ascii_form) > MAX_DOMAIN_LENGTH:
        raise ValueError("domain too long")
    return ascii_form


def _a_label(label: str) -> str:
    """One domain label as lowercase LDH; non-ASCII labels as `xn--` + Punycode.

    A label too long to be valid is refused before it is encoded: Punycode's cost grows with
    the square of the label, and its output is never shorter than its input."""
    if label.isascii():
        ascii_label = label.lower()
    else:
        folded = unicodedata.normalize("NFC", label.lower())
        if folded.isascii():
            raise ValueError("non-ASCII label folds to ASCII")
        if len(folded) > MAX_LABEL_LENGTH:
            raise ValueError("invalid domain label")
        ascii_label = "xn--" + folded.encode("punycode").decode("ascii")
    if not _LDH_LABEL.fullmatch(ascii_label):
        raise ValueError("invalid domain label")
    return ascii_label


def normalise_domain(domain: str) -> str:
    """Lowercase `domain`, drop one trailing dot and encode it as A-labels (`a_label_domain`).

    Raises AddressError when it is not a valid host name with at least two labels.
    """
    try:
        ascii_form = a_label_domain(domain.strip())
    except ValueError as exc:
        raise AddressError(f"{_shown(domain)} is not a valid domain name ({exc})") from None
    if len(ascii_form.split(".")) < 2:
        raise AddressError(f"{_shown(domain)} is not a fully qualified domain name")
    return ascii_form


INTERNATIONALISED_UNSUPPORTED = (
    "a local part beyond ASCII: an agent's address is plain ASCII (internationalised addresses, "
    "RFC 6531, can be sent to but not taken by an agent)"
)
"""Why no agent (nor any other address e2a takes as its own, such as a sender it is configured
with) has an address `internationalised` finds: agent addresses are deliberately plain."""


def internationalised(address: str) -> bool:
    """Whether `address` (`local@domain`) has a local part beyond ASCII (RFC 6531): mail to it
    needs SMTPUTF8 all the way. A domain beyond ASCII does not count: it is sent to as
    A-labels."""
    local, sep, _ = address.strip().rpartition("@")
    return bool(sep) and not local.isascii()


QUOTED_LOCAL_PART_UNSUPPORTED = (
    "a quoted local part: e2a sends only to addresses whose local part is a plain dot-atom"
)
"""Why e2a sends no mail to `"sales team"@example.com`: `normalise_recipient` takes none."""


def unsendable(address: str) -> str | None:
    """Why e2a sends no mail to `address` (`local@domain`, as a header of mail received named
    it), or None when it does (`normalise_recipient` takes it): a quoted or otherwise not
    dot-atom local part, a domain that is no fully qualified host name (a dotless `intranet`,
    an address literal `[192.0.2.1]`) or not valid IDNA."""
    try:
        normalise_recipient(address)
    except AddressError as exc:
        local = address.strip().rpartition("@")[0]
        return QUOTED_LOCAL_PART_UNSUPPORTED if local.startswith('"') else str(exc)
    return None


def normalise_address(address: str) -> str:
    """Return `local@domain` lowercased with a normalised domain; raise AddressError if invalid.

    Agent addresses are deliberately plain: dot-atom local parts only, so quoted local parts,
    `%` and `!` routing tricks can never name an agent. A local part beyond ASCII (RFC 6531) is
    refused with its own reason (`normalise_recipient` takes it, for mail sent out).
    """
    if internationalised(address):
        # Checked before lowercasing, which would turn some (KELVIN SIGN) into another address.
        raise AddressError(f"{_shown(address)} has {INTERNATIONALISED_UNSUPPORTED}")
    local, sep, domain = address.strip().rpartition("@")
    local = local.lower()
    if not sep or not local or len(local) > 64 or not _LOCAL_PATTERN.match(local):
        raise AddressError(f"{_shown(address)} is not a valid email address")
    return f"{local}@{normalise_domain(domain)}"


MAX_LOCAL_OCTETS = 64
"""RFC 5321 section 4.5.3.1.1, in octets of UTF-8 for a local part beyond ASCII (RFC 6531
section 3.3)."""
_UTF8_ATOM = re.compile(r"^(?:[A-Za-z0-9!#$&'*+/=?^_`{|}~-]|[^\x00-\x7f])+\Z")
"""An atom of a local part beyond ASCII: atext and UTF8-non-ascii (RFC 6531 section 3.3)."""
_NOT_IN_ADDRESSES = frozenset({"Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
"""Unicode categories no local part may hold: controls, surrogates (no valid UTF-8), private
use, unassigned code points and white space of any kind."""


def normalise_recipient(address: str) -> str:
    """An address e2a sends mail to, as it goes into the envelope and the header fields: as
    `normalise_address` gives it when its local part is ASCII, and a local part beyond ASCII
    (RFC 6531) as it is given, case kept, once checked (`_check_utf8_local`). The domain is
    always lowercase A-labels, which the relay looks it up by, and each label beyond ASCII must
    be a valid IDNA U-label (`check_u_labels`). Raises AddressError saying why otherwise."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep:
        raise AddressError(f"{_shown(address)} is not a valid email address")
    check_u_labels(address, domain)
    if local.isascii():
        return normalise_address(address)
    _check_utf8_local(address, local)
    return f"{local}@{normalise_domain(domain)}"


def envelope_recipients(*fields: list[str]) -> list[str]:
    """The addresses of To, Cc and Bcc (`fields`) as a message's envelope names them: each
    normalised (`normalise_recipient`; lowercased where it is not a valid address), once, in
    order."""
    addresses: dict[str, None] = {}
    for address in (address for field in fields for address in field):
        try:
            addresses[normalise_recipient(address)] = None
        except AddressError:
            addresses[address.strip().lower()] = None
    return list(addresses)


def _check_utf8_local(address: str, local: str) -> None:
    """AddressError unless `local` (beyond ASCII) is a dot-atom of atext and UTF-8 characters
    (RFC 6531 section 3.3) of at most MAX_LOCAL_OCTETS octets, without a control, surrogate,
    private-use, unassigned or space character, in Unicode NFC (RFC 6532 section 3.1). An
    address not in NFC is refused, not normalised: NFC may make it another one (KELVIN SIGN
    becomes an ASCII K), and mail must never reach another mailbox than the one named."""
    for char in local:
        if unicodedata.category(char) in _NOT_IN_ADDRESSES:
            raise AddressError(
                f"{_shown(address)} holds U+{ord(char):04X}, which no address may hold (a control, "
                "space, surrogate, private-use or unassigned character)"
            )
    if unicodedata.normalize("NFC", local) != local:
        raise AddressError(
            f"{_shown(address)} is not in Unicode NFC (RFC 6532 section 3.1): write its local part "
            f"as {unicodedata.normalize('NFC', local)!r} if that is the mailbox meant"
        )
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise AddressError(
            f"{_shown(address)} has a local part over {MAX_LOCAL_OCTETS} octets of UTF-8 (RFC 6531)"
        )
    if not all(atom and _UTF8_ATOM.match(atom) for atom in local.split(".")):
        raise AddressError(f"{_shown(address)} is not a valid email address")


def check_u_labels(address: str, domain: str) -> None:
    """AddressError unless every label of `domain` beyond ASCII, lowercased and in NFC, is a
    valid IDNA 2008 U-label, as the `idna` package judges it (RFC 5891 section 4.2: code
    points, hyphens, an initial combining mark, contextual and bidi rules). Labels in ASCII are
    left to `normalise_domain`."""
    for label in domain.rstrip(".").split("."):
        if label.isascii():
            continue
        try:
            idna.alabel(unicodedata.normalize("NFC", label.lower()))
        except idna.IDNAError:
            raise AddressError(
                f"{_shown(address)}: its domain label {label!r} is not a valid internationalised "
                "domain name (IDNA, RFC 5891): only letters, digits and inner hyphens"
            ) from None


def comparable_address(address: str) -> str:
    """`address` in the one form gates compare (an allowlist entry, a sender, a recipient): its
    local part lowercased, its domain as A-labels (`a_label_domain`), so `Friend@Bücher.example`
    and `friend@xn--bcher-kva.example` are one, and a local part quoted though it need not be
    without its quotes, so `"friend"@example.org` is `friend@example.org` (RFC 5321 section
    4.1.2: the same local part). Raises AddressError when it is no `local@domain` (an empty or
    bracketed local part, spaces, an invalid domain)."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or any(c.isspace() or c in "<>@" for c in local):
        raise AddressError(f"{_shown(address)} is not an email address")
    local = local.lower()
    if len(local) > 2 and local[0] == local[-1] == '"' and _LOCAL_PATTERN.match(local[1:-1]):
        local = local[1:-1]
    return f"{local}@{normalise_domain(domain)}"


def comparable_entry(entry: str) -> str:
    """An address or domain as gates compare it (`comparable_address`, or a domain's A-labels);
    lowercased as it is when it is neither (an entry stored before entries were checked)."""
    try:
        return comparable_address(entry) if "@" in entry else normalise_domain(entry)
    except AddressError:
        return entry.strip().lower()


def lowercase_address(address: str) -> str:
    """An address as e2a reports a sender or recipient named in a header (RFC 6532 allows
    UTF-8 there): lowercased by Unicode's default case mapping (`str.lower`, locale-independent;
    not case folding, so "ß" stays "ß"), then NFC-normalised, its domain as A-labels
    (`a_label_domain`), so a mailbox reads in the one form e2a stores agents, recipients and
    authenticated domains in, however the message spelled it: `JOSÉ@Exämple.org` is
    `josé@xn--exmple-cua.org`. A domain that is no host name (an address literal, a name
    `a_label_domain` refuses) stays as written, lowercased.

    The local part keeps its characters: the result is for reading, signing and answering,
    not routing (`normalise_address` routes). Control characters other than tab are removed:
    a quoted local part may hold a folded line break or an obsolete control character, and the
    address goes into the signed X-E2A-Auth-Sender HTTP header, where they are not allowed.
    """
    lowered = unicodedata.normalize("NFC", _ADDRESS_CONTROLS.sub("", address).strip().lower())
    return domain_as_a_labels(lowered)


def domain_as_a_labels(text: str) -> str:
    """`text` with what follows its last `@`, when beyond ASCII and a domain name (or its first
    labels), as A-labels; anything else as given. The form `lowercase_address` gives a domain,
    so a search term `JOSÉ@Exämple.org` or `@exämple` finds `josé@xn--exmple-cua.org`."""
    before, at, after = text.rpartition("@")
    if not at or after.isascii():
        return text
    try:
        return f"{before}@{a_label_domain(after)}"
    except ValueError:
        return text


def check_slug(slug: str) -> str:
    """Return `slug` if it may name an agent on the shared domain, else raise AddressError."""
    if not SLUG_PATTERN.match(slug):
        raise AddressError(
            "slug must be 2-40 characters of a-z, 0-9 and '-', starting and ending with a "
            "letter or digit"
        )
    if slug in RESERVED_SLUGS:
        raise AddressError(f"slug {slug!r} is reserved; choose another")
    return slug


_PHRASE_WORD = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]|[^\x00-\x7f])+")
"""A word of an unquoted display name: atext, the dots RFC 5322 tolerates (obs-phrase), and
any non-ASCII character (RFC 6532)."""
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")
NAME_SPECIALS = '( ) < > [ ] : ; @ \\ , "'


def only_agent(addresses: list[str]) -> str | None:
    """The agent a request that names none acts for: the caller's one agent, or among several
    the one left beside postmaster inboxes (`postmaster@…`, which take the operator's mail and
    send none of their own: the gateway makes one in the first account when postmaster mail
    first arrives); None when that leaves no single agent."""
    if len(addresses) == 1:
        return addresses[0]
    senders = [a for a in addresses if not is_postmaster_inbox(a)]
    return senders[0] if len(senders) == 1 else None


def is_postmaster_inbox(address: str) -> bool:
    """Whether `address` is a postmaster inbox (`postmaster@…`), which `only_agent` leaves
    aside."""
    return address.rpartition("@")[0].lower() == "postmaster"


class Mailbox(NamedTuple):
    """One mailbox of an address header: its display name ("" for none) and its address."""

    display_name: str
    address: str


def parse_mailbox(text: str) -> Mailbox:
    """One RFC 5322 mailbox, strictly: `addr@example.com`, `<addr@example.com>`,
    `Name <addr@example.com>` or `"Name, with specials" <addr@example.com>`; the display name
    may be UTF-8 (RFC 6532). The address is normalised (`normalise_address`), the name
    unquoted. Raises AddressError saying what is wrong: a control character, more than one
    address, an unquoted special in the name, an encoded word (`=?…?=`) as the name, a bad
    address."""
    if not text.isprintable():
        raise AddressError("must not contain line breaks or control characters")
    value = text.strip()
    if not value:
        raise AddressError("is empty: give an address such as help@example.com")
    if _top_level_commas(value):
        raise AddressError(
            f"{_shown(value)} holds more than one address (a comma outside double quotes): give a "
            'single address, and put a display name with a comma in double quotes ("Doe, Jane" '
            "<jane@example.com>)"
        )
    if not value.endswith(">"):
        if any(char in value for char in ' \t<>"()'):
            raise AddressError(
                f"{_shown(value)} is not an address: write a display name as "
                "Name <addr@example.com>"
            )
        return Mailbox("", normalise_address(value))
    opening = _angle_start(value)
    address = value[opening + 1 : -1]
    if opening < 0 or "<" in address or ">" in address:
        raise AddressError(f"{_shown(value)} has unbalanced angle brackets around its address")
    name = _display_name(value[:opening].strip())
    return Mailbox(name, normalise_address(address))


def parse_mailboxes(text: str) -> list[Mailbox]:
    """The mailboxes of a header value written by `format_mailbox` and joined with ", " (each
    parsed by `parse_mailbox`)."""
    bounds = [-1, *_top_level_commas(text), len(text)]
    return [parse_mailbox(text[start + 1 : end]) for start, end in itertools.pairwise(bounds)]


def format_mailbox(mailbox: Mailbox) -> str:
    """A mailbox as a header shows it before any RFC 2047 encoding: the bare address without a
    name; else `Name <addr>`, the name in double quotes (`\\` and `"` escaped) unless it is
    words of atext and non-ASCII characters only. `parse_mailbox` reads it back unchanged."""
    name, address = mailbox
    if not name:
        return address
    words = name.split(" ")
    if all(word and _PHRASE_WORD.fullmatch(word) and "." not in word for word in words):
        return f"{name} <{address}>"
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'


def _display_name(phrase: str) -> str:
    """The display name before an angle address, unquoted; AddressError when it is malformed."""
    if phrase.startswith('"'):
        quoted = _QUOTED_STRING.fullmatch(phrase)
        if quoted is None:
            raise AddressError(
                f"display name {phrase} must be one double-quoted string, with \\ before any "
                'inner " or \\'
            )
        name = _QUOTED_PAIR.sub(r"\1", quoted.group(1)).strip()
    else:
        words = phrase.split()
        for word in words:
            if not _PHRASE_WORD.fullmatch(word):
                raise AddressError(
                    f"display name {_shown(phrase)}: put a name holding any of {NAME_SPECIALS} in "
                    'double quotes, e.g. "Doe, Jane" <jane@example.com>'
                )
        name = " ".join(words)
    if "=?" in name:
        raise AddressError(
            f"display name {_shown(name)} looks like an RFC 2047 encoded word: give the name "
            "itself (it is encoded when the message is written)"
        )
    return name


def _scan(value: str) -> list[tuple[int, str]]:
    """The characters of `value` outside double-quoted strings, with their positions;
    AddressError when a double-quoted string is not closed."""
    outside: list[tuple[int, str]] = []
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted:
            outside.append((index, char))
    if quoted:
        raise AddressError(f"{_shown(value)} has a double quote that is never closed")
    return outside


def _top_level_commas(value: str) -> list[int]:
    """Where commas separate addresses: outside double quotes and angle brackets."""
    commas: list[int] = []
    depth = 0
    for index, char in _scan(value):
        if char == "<":
            depth += 1
        elif char == ">":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            commas.append(index)
    return commas


def _angle_start(value: str) -> int:
    """The position of the `<` opening the angle address that ends `value`, or -1."""
    openings = [index for index, char in _scan(value) if char == "<"]
    return openings[-1] if openings else -1


def _shown(text: str) -> str:
    """`text` quoted as an error names it: its first SHOWN_LENGTH characters, and how many
    more there are (an address of 100,000 characters is not echoed back whole)."""
    if len(text) <= SHOWN_LENGTH:
        return repr(text)
    return f"{text[:SHOWN_LENGTH]!r}… ({len(text) - SHOWN_LENGTH:,} characters more)"
