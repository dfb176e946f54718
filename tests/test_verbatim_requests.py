"""What a message or a template says is kept as sent, on both API surfaces: whitespace around
a body, a subject or a template's source is content (an indented first line, a closing
newline). Identifiers and addresses still lose surrounding whitespace."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from e2a_gateway.operations.requests import parse_request
from e2a_gateway.operations.review_queue import ApproveReview
from e2a_gateway.operations.reviews import ApproveBody
from e2a_gateway.operations.sending import (
    ForwardMessageBody,
    ReplyBody,
    ReplyMessageBody,
    SendBody,
    SendMessageBody,
)
from e2a_gateway.operations.templates import CreateTemplate

pytestmark = pytest.mark.backend_independent

SPACED = "  first line indented\n\n"


@pytest.mark.parametrize(
    ("model", "data", "fields"),
    [
        (SendBody, {"to": ["a@b.example"], "subject": SPACED, "body": SPACED}, ["subject", "body"]),
        (
            SendBody,
            {"to": ["a@b.example"], "subject": "s", "body": "b", "html_body": SPACED},
            ["html_body"],
        ),
        (ReplyBody, {"body": SPACED}, ["body"]),
        (
            SendMessageBody,
            {"to": ["a@b.example"], "subject": SPACED, "text": SPACED, "html": SPACED},
            ["subject", "text", "html"],
        ),
        (ReplyMessageBody, {"text": SPACED}, ["text"]),
        (ForwardMessageBody, {"to": ["a@b.example"], "text": SPACED}, ["text"]),
        (ApproveBody, {"subject": SPACED, "body_text": SPACED}, ["subject", "body_text"]),
        (
            ApproveReview,
            {"subject": SPACED, "text": SPACED, "html": SPACED},
            ["subject", "text", "html"],
        ),
        (
            CreateTemplate,
            {"name": SPACED, "subject": SPACED, "text": SPACED},
            ["name", "subject", "text"],
        ),
    ],
)
def test_content_is_kept_as_sent(
    model: type[BaseModel], data: dict[str, object], fields: list[str]
) -> None:
    parsed = parse_request(model, data)
    assert [getattr(parsed, name) for name in fields] == [data[name] for name in fields]


def test_identifiers_still_lose_surrounding_whitespace() -> None:
    parsed = parse_request(SendMessageBody, {"to": [" a@b.example "], "conversation_id": " c1 "})
    assert (parsed.to, parsed.conversation_id) == (["a@b.example"], "c1")
