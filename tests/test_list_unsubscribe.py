"""The pure parts of managed unsubscribe: the token (derived, versioned, one per agent and
address), the footer and fields a message gets, and which POST bodies a link takes."""

from __future__ import annotations

import email
import email.policy

import pytest

from e2a_gateway.outbound.list_unsubscribe import unsubscribe_url, with_unsubscribe
from e2a_gateway.outbound.mime import Draft, build_message
from e2a_gateway.signing.unsubscribe_tokens import (
    hash_unsubscribe_token,
    looks_like_token,
    unsubscribe_key,
    unsubscribe_token,
)
from e2a_gateway.unsubscribe_links import asked_for

KEY = unsubscribe_key("server key")


def test_a_token_is_one_per_account_agent_and_address() -> None:
    token = unsubscribe_token(KEY, "usr_1", "Bot@agents.test", " Carol@Example.org ")
    assert looks_like_token(token) and token.startswith("u1_")
    assert token == unsubscribe_token(KEY, "usr_1", "bot@agents.test", "carol@example.org")
    others = {
        unsubscribe_token(KEY, "usr_2", "bot@agents.test", "carol@example.org"),
        unsubscribe_token(KEY, "usr_1", "pal@agents.test", "carol@example.org"),
        unsubscribe_token(KEY, "usr_1", "bot@agents.test", "dave@example.org"),
        unsubscribe_token(
            unsubscribe_key("other"), "usr_1", "bot@agents.test", "carol@example.org"
        ),
    }
    assert token not in others and len(others) == 4
    assert hash_unsubscribe_token(token) != token and len(hash_unsubscribe_token(token)) == 64
    for bad in ("", token + "A", token[:-1], "u2_" + token[3:], token.replace("u1_", "U1_")):
        assert not looks_like_token(bad)


def test_the_footer_goes_under_the_text_and_before_the_html_end() -> None:
    url = unsubscribe_url("https://mail.example.com/", "u1_" + "A" * 43)
    assert url == "https://mail.example.com/u/u1_" + "A" * 43
    draft = Draft(
        "bot@agents.test",
        ["carol@example.org"],
        "Hi",
        "Hello\n",
        "<html><body><p>Hi</p></BODY></html>",
    )
    linked = with_unsubscribe(draft, url, "bot@agents.test")
    assert linked.text.startswith("Hello\n\n--\n") and linked.text.endswith(f"{url}\n")
    assert linked.html is not None and linked.html.endswith("</p></BODY></html>")
    assert f'<a href="{url}">' in linked.html
    message = email.message_from_bytes(
        build_message(linked, message_id="<m@agents.test>", date=0), policy=email.policy.default
    )
    assert message["List-Unsubscribe"] == f"<{url}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = email.message_from_bytes(
        build_message(draft, message_id="<m@agents.test>", date=0), policy=email.policy.default
    )
    assert plain["List-Unsubscribe"] is None


URLENCODED = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("content_type", "body", "asked"),
    [
        (URLENCODED, b"List-Unsubscribe=One-Click", "one-click"),
        (URLENCODED + "; charset=UTF-8", b"List-Unsubscribe=One-Click", "one-click"),
        ("Application/X-WWW-Form-Urlencoded", b"List-Unsubscribe=One-Click", "one-click"),
        (URLENCODED, b"confirm=unsubscribe", "form"),
        (
            "multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--XX--\r\n",
            "one-click",
        ),
        (URLENCODED, b"List-Unsubscribe=One-Click&confirm=unsubscribe", None),
        (URLENCODED, b"List-Unsubscribe=one-click", None),
        (URLENCODED, b"", None),
        (URLENCODED, b"\xff=\xff", None),
        ("text/plain", b"List-Unsubscribe=One-Click", None),
        ("", b"List-Unsubscribe=One-Click", None),
        ("multipart/form-data", b"List-Unsubscribe=One-Click", None),
        (
            "multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="List-Unsubscribe"; filename="a"'
            b"\r\n\r\nOne-Click\r\n--XX--\r\n",
            None,
        ),
    ],
)
def test_a_link_takes_the_one_click_body_or_its_form_and_nothing_else(
    content_type: str, body: bytes, asked: str | None
) -> None:
    assert asked_for(content_type, body) == asked
