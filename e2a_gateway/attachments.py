"""Attachment metadata: the record every reader of a message's attachments shares, its e2a
view (AttachmentMetaView), and the compact JSON an inbound message keeps it in.

An inbound message's attachments are worked out once, when it is accepted, and kept with each
agent's copy, so that every `email.received` built for it (on its commit, on the agent's
WebSocket, when a held message is released) lists them as the message view does: the same
indexes, the same decoded sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Attachment:
    """Metadata of one attachment (the bytes stay in the raw message)."""

    filename: str | None
    content_type: str
    size: int
    content_id: str | None


def attachment_meta_view(index: int, attachment: Attachment) -> dict[str, Any]:
    """e2a's AttachmentMetaView: the attachment's index (document order, but a received
    message's attached messages last: `parse_body`), its decoded size, and its filename,
    content type and Content-ID (without angle brackets) when it has them."""
    view: dict[str, Any] = {"index": index, "size_bytes": attachment.size}
    if attachment.filename is not None:
        view["filename"] = attachment.filename
    view["content_type"] = attachment.content_type
    if attachment.content_id:
        view["content_id"] = attachment.content_id.strip("<>")
    return view


def encode_attachments(attachments: tuple[Attachment, ...]) -> str | None:
    """The stored form of a message's attachments: None when it has none."""
    if not attachments:
        return None
    return orjson.dumps(
        [[item.filename, item.content_type, item.size, item.content_id] for item in attachments]
    ).decode()


def decode_attachments(stored: str | None) -> tuple[Attachment, ...]:
    """The attachments `encode_attachments` stored (none for None)."""
    if stored is None:
        return ()
    return tuple(Attachment(*item) for item in orjson.loads(stored))
