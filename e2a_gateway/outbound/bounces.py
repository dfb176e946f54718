"""Reading mail that came back to our envelope senders: a bounce (per recipient: status code,
diagnostic, remote MTA, permanent/transient/undetermined), a complaint, an auto-reply, a
person's letter (no report of any kind), or a report that records nothing. Pure: bytes in, a
verdict out; no I/O, no storage.

RFC 3464 reports and RFC 5965 complaints are read with the stdlib `email` package (their fields
carry the codes). Other formats (Exim, qmail, old Postfix and Sendmail, Exchange, Yahoo, …) are
found by flufl.bounce, GNU Mailman's maintained detectors, which name addresses but no codes:
each address's code, diagnostic and host are then read from the text around it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.errors
import email.header
import email.message
import email.utils
import html
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from flufl.bounce import all_failures

from e2a_gateway.automatic_mail import DAEMON_SENDER, auto_reply_marker
from e2a_gateway.mime_bounds import within_bounds
from e2a_gateway.rfc5322 import field_addresses

BounceType = Literal["permanent", "transient", "undetermined"]
MAX_DIAGNOSTIC_CHARS = 1000
SOLE_ADDRESSEE = "sole_addressee"
"""`Bounce.source` of a notice naming no recipient, taken to be about the returned message's
sole addressee."""

_ENHANCED_STATUS = re.compile(r"(?<![\w.#])#?([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
"""A failure's enhanced status code in free text (4.x.x or 5.x.x, not inside an IP address)."""
_REPLY_CODE = re.compile(r"(?<![\w.:/-])([45]\d\d)(?=[ :-])(?![\d.])")
_DSN_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
"""An RFC 3464 `Status` field's code: three parts, not the start of `5.1.1.1` or `5.1.1000`."""
_NOT_ABOUT_THE_ADDRESS = {("2", "2"), ("2", "3"), ("3", "4"), ("1", "7"), ("1", "8")}
"""Mailbox full and message too large: RFC 3463 treats mailbox full as persistent transient, and
neither says the address is bad, so neither suppresses it (as SES classifies them). Nor do the
sender's bad address (X.1.7) and the sender's bad domain (X.1.8): a refusal of our envelope
sender (its domain not found, say) that a server gives at RCPT TO is no fault of the recipient,
and a later message may pass once the sender's domain is fixed."""
_SENDER_AUTHENTICATION = {("7", str(detail)) for detail in range(20, 30)}
"""The registered refusals of the sender (RFC 3463's registry): X.7.20-X.7.22 DKIM, X.7.23-X.7.24
SPF, X.7.25 reverse DNS, X.7.26 several of them (Gmail's "unauthenticated email … DMARC
policy"), X.7.27 the sender's domain accepts no mail (null MX), X.7.28 a mail flood from the
sender, X.7.29 ARC: about the agent's domain or the relay, never the recipient's address, so
they suppress no one either."""
_TRANSIENT_REPLY_CODES = {"552"}
"""552 without an enhanced code: exceeded storage allocation (mailbox full or message too big)."""
_DELIVERY_STATUS_TYPES = {
    "message/delivery-status",
    "message/global-delivery-status",
    "text/delivery-status",
}
_HEADERS_TYPES = {
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/rfc822",
    "message/global",
    "message/global-headers",
}
_RETURNED_MESSAGE = re.compile(
    r"^[ \t]*(?:-{2,}+.*?(?:original message|unsent message|copy of the message|returned message"
    r"|message headers|undelivered message|message follows)"
    r"|below this line is a copy of the message|original message headers:"
    r"|message headers follow)",
    re.IGNORECASE | re.MULTILINE,
)
_MESSAGE_ID_LINE = re.compile(r"^message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_LOCAL_CHARACTER = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]"
_ADDRESS = re.compile(
    rf"(?<!{_LOCAL_CHARACTER}){_LOCAL_CHARACTER}++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)+"
)
"""An address in free text. Each run of characters is tried once (where it starts, and without
giving any back), so a long run that is no address costs its length, not its square."""
_TAG = re.compile(r"<[^<>]*>")
"""An HTML tag; it ends before the next `<`, so a run of `<` without `>` costs its length."""
_REMOTE_HOST = (
    re.compile(r"\bhost\s+([A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])\s*\[", re.IGNORECASE),
    re.compile(r"^\s*([0-9]{1,3}(?:\.[0-9]{1,3}){3}) does not like recipient", re.MULTILINE),
    re.compile(r"\bremote (?:host|server|mta)\s+([A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,})\b", re.I),
)
_PERMANENT_WORDING = re.compile(
    r"permanent(?:ly)?[ \t]+(?:\w+[ \t]+)?(?:error|failure|failed)|failed permanently", re.I
)
_TRANSIENT_WORDING = re.compile(
    r"temporar(?:y|ily)|has been delayed|not yet been delivered|will (?:continue to )?(?:re)?try"
    r"|(?:will be|being) retried",
    re.IGNORECASE,
)
_DELAY_NOTICE = re.compile(
    r"has not yet been delivered|hasn't been delivered yet|warning (?:message )?only"
    r"|no action is required on your part|delivery (?:attempts )?will continue"
    r"|will continue delivery attempts|will (?:continue to |keep )?(?:re)?try(?:ing)?\b",
    re.IGNORECASE,
)
"""What a delay warning says (Exim's, Sendmail's, Exchange's in their plain forms): the message
is still being tried."""
_FAILURE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|returned mail|delivery (?:status notification|failure|failed"
    r"|has failed|problem)|mail delivery (?:failed|failure|system|subsystem)|failure notice"
    r"|non[- ]?delivery|could not be delivered|delivery notification|mail system error",
    re.IGNORECASE,
)
_JMRP_RECIPIENT = "X-HmXmrOriginalRecipient"
"""Where Microsoft's feedback loop (JMRP) names the complainant: a header of the returned message
(or of the report), its report having no `Original-Rcpt-To`."""
_NO_COMPLAINT = {"not-spam", "auth-failure"}
"""Feedback types that complain of nothing: the recipient saying the message is not spam
(RFC 6430), and a report that it failed authentication (RFC 6591)."""
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:auto:|auto response:|automatic reply:|autoreply:|out of (?:the )?office:)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient a bounce reports, with what the report says about it."""

    address: str
    """The recipient as we addressed it: RFC 3464 `Original-Recipient` when the report gives an
    email address there, else `Final-Recipient`, else the address the notice names."""
    bounce_type: BounceType
    status: str | None = None
    """The enhanced status code (RFC 3463), e.g. `5.1.1`; None when the report gives none."""
    action: str | None = None
    """RFC 3464 `Action` (`failed` or `delayed`); for a non-standard notice `delayed` when it
    is a delay warning (the message is still being tried), else None."""
    diagnostic: str | None = None
    """What the remote server said (RFC 3464 `Diagnostic-Code`, or the bounce's own text)."""
    remote_mta: str | None = None
    final_address: str | None = None
    """RFC 3464 `Final-Recipient` when it differs from `address` (the mailbox the reporting
    MTA was delivering to after forwarding or aliasing)."""
    unreadable_status: str | None = None
    """RFC 3464 `Status` as the report gives it when it holds no status code (`5.1`,
    `5.1.1.1`, `abc`): no code is guessed from it, but the bounce says what was reported."""

    @property
    def detail(self) -> str | None:
        """What the bounce's event says of the recipient (`smtp_detail`): the diagnostic, else
        the status code, else the unreadable `Status` quoted; None when the report says none."""
        if self.diagnostic or self.status:
            return self.diagnostic or self.status
        if self.unreadable_status:
            return f"Status: {self.unreadable_status} (not an RFC 3463 status code)"
        return None


@dataclass(frozen=True)
class Bounce:
    """A delivery failure (or delay) report about mail we sent."""

    recipients: tuple[FailedRecipient, ...]
    source: str
    """`rfc3464`; `flufl.bounce` when its detectors found the addresses; `text` for a failure
    notice read from its text alone (no detector knew it); `sole_addressee` for one that names
    no recipient, about the returned message's one addressee (To or Cc): the message sent may
    have had Bcc recipients too, so it tells who failed only when it was sent to one person."""
    reporting_mta: str | None = None
    original_message_id: str | None = None
    """The returned message's Message-ID (with angle brackets), to match it when the envelope
    recipient of the bounce does not name the message."""


@dataclass(frozen=True)
class Complaint:
    """An RFC 5965 feedback report: a recipient marked our message as spam (or similar)."""

    recipients: tuple[str, ...]
    """`Original-Rcpt-To`, else Microsoft's `X-HmXmrOriginalRecipient`; often empty (redacted).
    Never the To of the returned message: it lists the addressees, not which of them (or of the
    Cc and Bcc recipients) complained."""
    feedback_type: str
    user_agent: str | None = None
    original_message_id: str | None = None


@dataclass(frozen=True)
class AutoReply:
    """An automatic response (out of office, vacation, auto-acknowledgement): not a bounce."""

    marker: str
    """The header that says so, e.g. `Auto-Submitted: auto-replied`."""
    original_message_id: str | None = None
    """The message it answers (its In-Reply-To)."""


@dataclass(frozen=True)
class Letter:
    """Mail a person wrote to the envelope sender (their client answered the `Return-Path`):
    no report of any kind (`multipart/report`, a delivery status or feedback part), not from a
    mailer daemon, no `X-Failed-Recipients`, no auto-reply, and no failure notice a detector
    or the text reading recognises. Not a bounce."""


Verdict = Bounce | Complaint | AutoReply | Letter


def read_returned_mail(raw: bytes) -> Verdict | None:
    """What a message that came back to one of our envelope senders is: a bounce, a complaint,
    an auto-reply, a letter, or None (a machine's notice that reports nothing to record: a
    success-only delivery report, a feedback report that complains of nothing — `not-spam`,
    `auth-failure` — or a report or mailer daemon's notice naming no failed recipient)."""
    message = email.message_from_bytes(within_bounds(raw))
    feedback_part = _find_part(message, {"message/feedback-report"})
    if feedback_part is not None:
        complaint = _complaint(message, feedback_part)
        return None if complaint.feedback_type in _NO_COMPLAINT else complaint
    status_part = _find_part(message, _DELIVERY_STATUS_TYPES)
    if status_part is not None:
        recipients, reported = _reported_recipients(status_part)
        if recipients:
            return _delivery_status_notification(message, status_part, recipients)
        if reported:
            return None  # a report of successful deliveries only
    marker = None if status_part or _is_report(message) else _auto_reply_marker(message)
    if marker is not None:
        return AutoReply(marker, _header_message_id(message.get("in-reply-to")))
    bounce = _non_standard_bounce(message)
    if bounce is not None or status_part is not None or _is_machine_notice(message):
        return bounce
    return Letter()


def _is_report(message: email.message.Message) -> bool:
    """True for a multipart/report (a machine's notice, such as a Sieve rejection)."""
    return message.get_content_type() == "multipart/report"


def _is_machine_notice(message: email.message.Message) -> bool:
    """True for a report, or mail from a mailer daemon or naming failed recipients: a notice
    about delivery even when no failure in it could be read, never a person's letter."""
    return bool(
        _is_report(message)
        or DAEMON_SENDER.match(_sender(message))
        or message.get("x-failed-recipients")
    )


def classify(status: str | None, action: str | None = None) -> BounceType:
    """The bounce type of a status code (enhanced `5.1.1`, or a bare SMTP reply `550`):
    `permanent` when the address itself failed (5.x.x), `transient` when trying later or
    another message may succeed (4.x.x, `Action: delayed`, mailbox full, message too large),
    `undetermined` without a usable code."""
    if action == "delayed":
        return "transient"
    if status is None:
        return "undetermined"
    parts = status.split(".")
    if len(parts) == 3:
        if parts[0] == "4":
            return "transient"
        if parts[0] == "5":
            about_the_sender = _NOT_ABOUT_THE_ADDRESS | _SENDER_AUTHENTICATION
            return "transient" if (parts[1], parts[2]) in about_the_sender else "permanent"
        return "undetermined"
    if status in _TRANSIENT_REPLY_CODES or status.startswith("4"):
        return "transient"
    return "permanent" if status.startswith("5") else "undetermined"


def returned_message_id(raw: bytes) -> str | None:
    """The Message-ID of the message a bounce or report returns (its `message/rfc822` or
    `text/rfc822-headers` part, else a `Message-ID:` line in the returned text), or None."""
    return _returned_message_id(email.message_from_bytes(within_bounds(raw)))


# RFC 3464 delivery status notifications


def _delivery_status_notification(
    message: email.message.Message,
    status_part: email.message.Message,
    recipients: tuple[FailedRecipient, ...],
) -> Bounce:
    per_message = _status_blocks(status_part)[0]
    return Bounce(
        recipients,
        "rfc3464",
        reporting_mta=_mta_name(per_message.get("reporting-mta")),
        original_message_id=_returned_message_id(message),
    )


def _reported_recipients(
    status_part: email.message.Message,
) -> tuple[tuple[FailedRecipient, ...], bool]:
    """The failed or delayed recipients of a delivery-status part, and whether it reports on
    any recipient at all (a report of successes only is not a bounce)."""
    failed: dict[str, FailedRecipient] = {}
    reported = False
    for block in _status_blocks(status_part):
        if _recipient_address(block) is None:
            continue  # the per-message block, or noise
        reported = True
        recipient = _failed_recipient(block)
        if recipient is not None:
            failed.setdefault(recipient.address.lower(), recipient)
    return tuple(failed.values()), reported


def _failed_recipient(block: email.message.Message) -> FailedRecipient | None:
    address = _recipient_address(block)
    diagnostic = _unfolded(block.get("diagnostic-code"))
    status_field = _unfolded(block.get("status"))
    reported = _dsn_status(status_field) or _status_code(status_field)
    status = reported
    detailed = _status_code(diagnostic)
    if status is None or (_is_unspecific(status) and _refines(detailed, status)):
        status = detailed
    action = _dsn_action(block.get("action"), status)
    if address is None or action is None:
        return None
    final = _typed_value(block.get("final-recipient"))
    final = final.strip("<>'\" ") if final else None
    return FailedRecipient(
        address,
        classify(status, action),
        status=status,
        action=action,
        diagnostic=diagnostic,
        remote_mta=_mta_name(block.get("remote-mta")),
        final_address=final if final and final.lower() != address.lower() else None,
        unreadable_status=status_field if reported is None else None,
    )


def _recipient_address(block: email.message.Message) -> str | None:
    """The recipient a per-recipient block is about, preferring the address as the sender gave
    it (`Original-Recipient`, when it is an email address) to the one finally tried."""
    original = _typed_value(block.get("original-recipient"))
    if original and "@" in original:
        return original.strip("<>'\" ")
    for field in ("final-recipient", "x-actual-recipient"):
        value = _typed_value(block.get(field))
        if value:
            return value.strip("<>'\" ")
    return None


def _is_unspecific(status: str) -> bool:
    """`5.0.0`, `4.0.0`: a class without a subject; so is a bare reply code."""
    return status.endswith(".0.0") or "." not in status


def _refines(detailed: str | None, status: str) -> bool:
    """True when `detailed` (from the diagnostic) is an enhanced code of the same class."""
    return detailed is not None and "." in detailed and detailed[0] == status[0]


def _dsn_action(value: str | None, status: str | None) -> Literal["failed", "delayed"] | None:
    """`failed` or `delayed` for a failing recipient block (also the non-standard `failure`
    and `error`; a block without Action is judged by its status), None for a success."""
    words = (_unfolded(value) or "").lower().split()
    action = words[0] if words else _action_of(status)
    if action is None:
        return None
    if action.startswith(("fail", "error")):
        return "failed"
    return "delayed" if action.startswith("delayed") else None


def _action_of(status: str | None) -> str | None:
    """The Action a block without one implies from its status (lenient reading)."""
    if status is None:
        return None
    return {"5": "failed", "4": "delayed"}.get(status[0])


def _status_blocks(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a delivery-status part: per-message first, then per-recipient.
    Read from the part's own bytes, so a transfer-encoded or UTF-8 (RFC 6533) part reads as
    well as a plain one."""
    return _parse_blocks(_field_text(part))


def _field_text(part: email.message.Message) -> str:
    """The body of a part made of header fields (delivery-status, feedback-report) as text,
    transfer-decoded, whatever the parser made of its structure."""
    try:
        raw = part.as_bytes()
    except (email.errors.MessageError, LookupError, UnicodeError, ValueError, TypeError):
        return _part_text(part)
    _, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        with contextlib.suppress(binascii.Error):  # left as it came when it cannot be decoded
            body = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"===")
    elif encoding == "quoted-printable":
        body = quopri.decodestring(body)
    return body.decode("utf-8", "replace")


def _parse_blocks(text: str) -> list[email.message.Message]:
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip("\n"))
    return [email.message_from_string(block.strip("\n") + "\n") for block in blocks if block]


def _typed_value(value: str | None) -> str | None:
    """`rfc822; user@example.com` → `user@example.com` (the value after an RFC 3464 type)."""
    text = _unfolded(value)
    if not text:
        return None
    return text.split(";", 1)[1].strip() if ";" in text else text.strip()


def _mta_name(value: str | None) -> str | None:
    """`dns; mx.example.net. (198.51.100.25, …)` → `mx.example.net`."""
    words = (_typed_value(value) or "").split()
    return words[0].rstrip(".") or None if words else None


# RFC 5965 feedback reports


def _complaint(message: email.message.Message, part: email.message.Message) -> Complaint:
    fields = email.message_from_string(_field_text(part).lstrip("\n"))
    recipients = [_unfolded(value) or "" for value in fields.get_all("original-rcpt-to", [])]
    if not any(recipients):  # Microsoft's JMRP names the complainant only in its own header
        returned = _find_returned_headers(message)
        named = [
            str(value)
            for headers in (returned, message)
            if headers is not None
            for value in headers.get_all(_JMRP_RECIPIENT, [])
        ]
        recipients = [address for _, address in field_addresses(named)]
    return Complaint(
        tuple(address.strip("<> ") for address in recipients if address.strip("<> ")),
        (_unfolded(fields.get("feedback-type")) or "abuse").lower(),
        user_agent=_unfolded(fields.get("user-agent")),
        original_message_id=_returned_message_id(message),
    )


# Auto-replies


def _auto_reply_marker(message: email.message.Message) -> str | None:
    """The header that marks `message` as an automatic response, if any (the markers every
    part of e2a goes by, `e2a_gateway.automatic_mail`; then an "Automatic reply:" or "Out of
    Office:" subject that names no delivery failure). Mail from a mailer daemon is never one:
    MTAs put `Auto-Submitted: auto-replied` on their bounces."""
    if DAEMON_SENDER.match(_sender(message)):
        return None
    marker = auto_reply_marker(message)
    if marker is not None:
        return marker
    subject = _unfolded(message.get("subject")) or ""
    if _AUTO_REPLY_SUBJECT.match(subject) and not _FAILURE_SUBJECT.search(subject):
        return f"Subject: {subject}"
    return None


# Non-standard bounces


def _non_standard_bounce(message: email.message.Message) -> Bounce | None:
    text = _notice_text(message)
    detected = _detected_failures(message)
    notice = _looks_like_failure_notice(message)
    if detected is None and not notice:
        return None
    source, temporary, permanent = detected or ("text", set(), _addresses_near_codes(text))
    not_recipients = _not_recipients(message)
    addresses = sorted(
        {a for a in temporary | permanent if a.lower() not in not_recipients}, key=str.lower
    )
    if not addresses and notice and (_has_code(text) or _PERMANENT_WORDING.search(text)):
        addresses, source = _sole_returned_recipient(message), SOLE_ADDRESSEE
    if not addresses:
        return None
    paragraphs = _paragraphs(text)
    described = (
        _described_recipient(
            address, paragraphs, sole=len(addresses) == 1, flagged_temporary=address in temporary
        )
        for address in addresses
    )
    still_tried = bool(_DELAY_NOTICE.search(text))
    recipients = tuple(
        replace(item, action="delayed") if still_tried and item.bounce_type != "permanent" else item
        for item in described
    )
    return Bounce(recipients, source, original_message_id=_returned_message_id(message))


def _detected_failures(message: email.message.Message) -> tuple[str, set[str], set[str]] | None:
    """flufl.bounce's verdict: (detector, temporary, permanent), or None when none recognises
    the message. Its detectors are heuristics over untrusted text; one that trips over a
    malformed message counts as not recognising it."""
    try:
        temporary, permanent = all_failures(message)
    except (LookupError, ValueError, TypeError, AttributeError, IndexError, RecursionError):
        return None  # RecursionError: the stdlib's address parser on deeply nested comments
    if not temporary and not permanent:
        return None
    return "flufl.bounce", _decoded(temporary), _decoded(permanent) - _decoded(temporary)


def _decoded(addresses: frozenset[bytes]) -> set[str]:
    decoded = (address.decode("ascii", "replace").strip("<>'\" ") for address in addresses)
    return {address for address in decoded if "@" in address}


def _looks_like_failure_notice(message: email.message.Message) -> bool:
    sender = _sender(message)
    subject = _unfolded(message.get("subject")) or ""
    return bool(
        DAEMON_SENDER.match(sender)
        or _FAILURE_SUBJECT.search(subject)
        or message.get("x-failed-recipients")
    )


def _addresses_near_codes(text: str) -> set[str]:
    """The addresses in paragraphs of a notice that carry a status code, or that are followed
    by one that does (and names no address of its own)."""
    paragraphs = _paragraphs(text)
    found: set[str] = set()
    for i, paragraph in enumerate(paragraphs):
        following = paragraphs[i + 1] if i + 1 < len(paragraphs) else ""
        if _has_code(paragraph) or (_has_code(following) and not _ADDRESS.search(following)):
            found.update(a for a in _ADDRESS.findall(paragraph) if not DAEMON_SENDER.match(a))
    return found


def _not_recipients(message: email.message.Message) -> set[str]:
    """Lowercased addresses a notice names that are not failed recipients: its own sender and
    recipient (our return path) and anything that is really a Message-ID."""
    names: set[str] = set()
    for field in ("from", "to"):
        fields = [str(value) for value in message.get_all(field, [])]
        names.update(address.lower() for _, address in field_addresses(fields))
    for part in message.walk():
        for field in ("message-id", "in-reply-to", "references"):
            for value in part.get_all(field, []):
                names.update(i.lower() for i in re.findall(r"<([^<>\s]+)>", str(value)))
        if part.get_content_maintype() == "text":
            names.update(i.lower() for i in _MESSAGE_ID_LINE.findall(_part_text(part)))
    return {name.strip("<>") for name in names}


def _sole_returned_recipient(message: email.message.Message) -> list[str]:
    """For a notice that names no recipient: the returned message's recipient when it had
    exactly one (so the notice can only be about it), else nothing."""
    returned = _find_returned_headers(message) or _inline_returned_headers(message)
    if returned is None:
        return []
    fields = [str(value) for field in ("to", "cc") for value in returned.get_all(field, [])]
    addresses = {a for _, a in field_addresses(fields) if "@" in a}
    return list(addresses) if len(addresses) == 1 else []


def _described_recipient(
    address: str, paragraphs: list[str], *, sole: bool, flagged_temporary: bool
) -> FailedRecipient:
    """What the notice's text says about `address`: the first paragraph with a status code
    among those naming it, the one after each (a reason often follows the address) and, when
    it is the only recipient, any, gives status, diagnostic and remote host."""
    naming = [i for i, p in enumerate(paragraphs) if address.lower() in p.lower()]
    following = [
        i + 1 for i in naming if i + 1 < len(paragraphs) and not _ADDRESS.search(paragraphs[i + 1])
    ]
    candidates = naming + following + (list(range(len(paragraphs))) if sole else [])
    coded = next((paragraphs[i] for i in candidates if _has_code(paragraphs[i])), None)
    paragraph = coded or (paragraphs[naming[0]] if naming else "")
    status = _status_code(coded)
    whole = "\n\n".join(paragraphs)
    if status is not None:
        bounce_type = classify(status)
    elif flagged_temporary or _TRANSIENT_WORDING.search(whole):
        bounce_type = "transient"
    elif _PERMANENT_WORDING.search(whole):
        bounce_type = "permanent"
    else:
        bounce_type = "undetermined"
    return FailedRecipient(
        address,
        bounce_type,
        status=status,
        diagnostic=_collapsed(paragraph),
        remote_mta=_remote_host(paragraph),
    )


def _has_code(text: str) -> bool:
    return bool(_ENHANCED_STATUS.search(text) or _REPLY_CODE.search(text))


def _notice_text(message: email.message.Message) -> str:
    """The human-readable text of a notice, up to where the returned message starts."""
    text = "\n\n".join(_readable_parts(message))
    cut = _RETURNED_MESSAGE.search(text)
    return text[: cut.start()] if cut else text


def _readable_parts(message: email.message.Message) -> Iterator[str]:
    """The decoded text/plain parts outside any enclosed message; text/html stripped of tags
    where a notice has no plain text."""
    plain: list[str] = []
    markup: list[str] = []
    for part in _own_parts(message):
        if part.get_content_type() == "text/plain":
            plain.append(_part_text(part))
        elif part.get_content_type() == "text/html":
            markup.append(html.unescape(_TAG.sub(" ", _part_text(part))))
    if plain or markup:
        yield from plain or markup
    elif isinstance(message.preamble, str):
        yield message.preamble  # a multipart notice whose parts cannot be found


def _own_parts(part: email.message.Message) -> Iterator[email.message.Message]:
    """The leaf parts of the notice itself, not descending into returned messages."""
    if part.get_content_maintype() == "message" or part.get_content_type() in _HEADERS_TYPES:
        return
    if part.is_multipart():
        for child in _children(part):
            yield from _own_parts(child)
    else:
        yield part


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]


def _remote_host(paragraph: str) -> str | None:
    for pattern in _REMOTE_HOST:
        match = pattern.search(paragraph)
        if match:
            return match.group(1)
    return None


# The returned message


def _returned_message_id(message: email.message.Message) -> str | None:
    for part in message.walk():
        if part is not message and part.get_content_type() in _HEADERS_TYPES:
            headers = _returned_headers(part)
            found = _header_message_id(headers.get("message-id")) if headers else None
            if found:
                return found
    text = "\n\n".join(_readable_parts(message))
    cut = _RETURNED_MESSAGE.search(text)
    match = _MESSAGE_ID_LINE.search(text, cut.start() if cut else 0)
    return match.group(1) if match else None


def _find_returned_headers(message: email.message.Message) -> email.message.Message | None:
    """The headers of the message a notice returns, when it has a part for them."""
    part = _find_part(message, _HEADERS_TYPES)
    return _returned_headers(part) if part is not None else None


def _inline_returned_headers(message: email.message.Message) -> email.message.Message | None:
    """The headers of a message returned inline, in the text after the notice's marker."""
    text = "\n\n".join(_readable_parts(message)).replace("\r\n", "\n")
    cut = _RETURNED_MESSAGE.search(text)
    if cut is None:
        return None
    returned = text[cut.end() :].split("\n", 1)[-1].lstrip("\n")
    return email.message_from_string(returned)


def _returned_headers(part: email.message.Message) -> email.message.Message | None:
    if part.is_multipart():
        children = _children(part)
        return children[0] if children else None
    return email.message_from_string(_part_text(part))


def _header_message_id(value: str | None) -> str | None:
    match = re.search(r"<[^<>\s]+>", _unfolded(value) or "")
    return match.group(0) if match else None


# Shared readers


def _find_part(message: email.message.Message, types: set[str]) -> email.message.Message | None:
    """The first part of one of `types` in the notice itself (not inside a returned message)."""
    stack = [message]
    while stack:
        part = stack.pop(0)
        if part.get_content_type() in types:
            return part
        if part.get_content_maintype() == "multipart":
            stack.extend(_children(part))
    return None


def _children(part: email.message.Message) -> list[email.message.Message]:
    """The parts a multipart (or an enclosed message) holds; none for a leaf, whose payload is
    not asked for (it is decoded in the charset its header names, which may not be one)."""
    payload = part.get_payload() if part.is_multipart() else None
    if not isinstance(payload, list):
        return []
    return [child for child in payload if isinstance(child, email.message.Message)]


def _part_text(part: email.message.Message) -> str:
    """A leaf part's payload, transfer-decoded and read in its charset (leniently)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # an unknown name, or one with a null character
        return data.decode("utf-8", "replace")


def _status_code(text: str | None) -> str | None:
    """The enhanced status code in `text` (`5.1.1`), else its SMTP reply code (`550`)."""
    if not text:
        return None
    enhanced = _ENHANCED_STATUS.search(text)
    if enhanced:
        return ".".join(enhanced.groups())
    reply = _REPLY_CODE.search(text)
    return reply.group(1) if reply else None


def _sender(message: email.message.Message) -> str:
    """The first address in a notice's From (a header with raw 8-bit bytes arrives as an
    object); empty when it names none."""
    found = field_addresses([str(message.get("from", ""))])
    return found[0][1] if found else ""


def _dsn_status(value: str | None) -> str | None:
    """An RFC 3464 `Status` field's code (`5.1.1`; `2.0.0` for a success), or None."""
    match = _DSN_STATUS.match(_unfolded(value) or "")
    return ".".join(match.groups()) if match else None


def _unfolded(value: object) -> str | None:
    """A header value as one line of text (RFC 2047 words decoded), or None when absent."""
    if value is None:
        return None
    text = str(value)
    # An unreadable encoded word is kept as it stands.
    with contextlib.suppress(email.errors.MessageError, LookupError, UnicodeError):
        text = str(email.header.make_header(email.header.decode_header(text)))
    return _collapsed(text)


def _collapsed(text: str) -> str | None:
    """`text` on one line, its runs of white space one space, NUL read as U+FFFD (it is kept as
    a suppression's reason, which PostgreSQL's text could not hold), cut to
    MAX_DIAGNOSTIC_CHARS; None when blank."""
    single = " ".join(text.replace("\x00", "\ufffd").split())
    return single[:MAX_DIAGNOSTIC_CHARS] if single else None
