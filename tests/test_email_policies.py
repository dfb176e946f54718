"""The `email` policies e2a reads and builds mail with read and write exactly what the standard
library's do: only their header classes are made once."""

from __future__ import annotations

import email
import email.policy
import re
from email.headerregistry import AddressHeader, UnstructuredHeader
from email.message import EmailMessage
from pathlib import Path

import pytest

from e2a_gateway.email_policies import READING, HeaderClassesOnce
from e2a_gateway.outbound import mime
from e2a_gateway.outbound.mime import Draft, build_message, decode_attachment

pytestmark = pytest.mark.backend_independent

CORPUS = sorted(
    path
    for folder in ("bounces/flufl", "bounces/e2a")
    for path in (Path(__file__).parent / "data" / folder).iterdir()
    if path.suffix in (".txt", ".eml") and not path.name.startswith("LICENSE")
)


def reading(raw: bytes, policy: email.policy.Policy) -> list[tuple[str, str, str]]:
    """Every part's headers (name, value, its class's kind) and its content, as `policy` reads
    them."""
    message = email.message_from_bytes(raw, policy=policy)
    assert isinstance(message, EmailMessage)
    seen = []
    for part in message.walk():
        for name, value in part.items():
            seen.append((name, str(value), type(value).__mro__[1].__name__))
        if not part.is_multipart():
            try:
                content = part.get_content()
            except (KeyError, LookupError, ValueError):
                content = "(no content)"
            seen.append(("content", str(content), part.get_content_type()))
    return seen


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.name)
def test_stored_mail_reads_as_the_standard_policy_reads_it(path: Path) -> None:
    raw = path.read_bytes()
    assert reading(raw, READING) == reading(raw, email.policy.default)


def test_outbound_mail_is_built_byte_for_byte_as_the_standard_policy_builds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draft = Draft(
        from_addr="bot@agents.test",
        to=["Ann Example <ann@example.org>", "bob@example.org"],
        cc=["=?utf-8?q?Zo=C3=AB?= <zoe@example.org>"],
        subject="Grüße, a subject long enough to be folded across lines by the generator " * 2,
        text="Grüße aus Köln\n" + "an ASCII line\n" * 3,
        html="<p>日本語のメール</p>",
        attachments=[decode_attachment(0, "ré port.pdf", "application/pdf", "JVBERg==")],
        conversation_id="conv_1",
        in_reply_to="<orig@example.org>",
        references=["<root@example.org>", "<orig@example.org>"],
        reply_to="Support Desk <support@example.org>",
    )

    def built() -> bytes:
        raw = build_message(draft, message_id="<x@agents.test>", date=1_767_225_600)
        return re.sub(rb"===============\d+==", b"BOUNDARY", raw)

    ours = built()
    monkeypatch.setattr(mime, "SEVEN_BIT", email.policy.SMTP.clone(cte_type="7bit"))
    assert ours == built()


def test_each_kind_of_header_has_one_class() -> None:
    registry = HeaderClassesOnce()
    assert registry["To"] is registry["cc"] is registry["Reply-To"]  # the same kind
    assert registry["X-Anything"] is registry["x-other"]  # unregistered names: unstructured
    assert registry["To"] is not registry["X-Anything"]
    assert issubclass(registry["To"], AddressHeader)
    assert issubclass(registry["X-Anything"], UnstructuredHeader)
    registry.map_to_type("X-Anything", AddressHeader)
    assert registry["X-Anything"] is registry["Resent-To"] is not registry["X-Other"]  # remapped
    assert str(registry("To", "Ann <ann@example.org>")) == "Ann <ann@example.org>"
