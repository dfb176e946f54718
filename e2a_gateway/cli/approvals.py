"""`e2a pending list|show|approve|reject` (and `e2a approve`, `e2a reject`): the review queue
of outbound mail held for a person's approval.

`approve --edit` opens the message in `$VISUAL`/`$EDITOR` as e2a's CLI does (labelled
subject, to, cc, bcc lines, then the body) and sends only the fields that were changed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2a_gateway.cli.context import ClientError, Context
from e2a_gateway.cli.output import print_fields, print_json, print_table, terminal_text

if TYPE_CHECKING:
    from e2a_gateway.v1.models import PendingMessageDetail

BODY_SEPARATOR = "--- body ---"
HTML_PART_HEADING = "--- HTML part (what most mail clients show instead of the text) ---"
"""Above the HTML part in `pending show`: its source, which the reviewer approves too."""
_ADDRESS_FIELDS = ("to", "cc", "bcc")


def outbound_json(message: PendingMessageDetail) -> dict[str, Any]:
    """An outbound message as JSON, as the gateway sent it."""
    return message.model_dump(mode="json", exclude_none=True)


def cmd_pending_list(ctx: Context) -> None:
    """`pending [list]`: held mail of all your agents, with the agent that sends it."""
    messages = ctx.client().list_pending_messages().messages
    if ctx.json:
        print_json([outbound_json(m) for m in messages])
        return
    print_table(
        ("ID", "FROM", "TO", "SUBJECT", "STATUS", "EXPIRES"),
        [(m.id, m.agent_id, m.to, m.subject, m.status, m.approval_expires_at) for m in messages],
        "Nothing is waiting for approval.",
    )


def cmd_pending_show(ctx: Context) -> None:
    """`pending show <id>`: one outbound message, its body (text, then the HTML part's source)
    while it is not final."""
    message = ctx.client().get_pending_message(ctx.args.id)
    if ctx.json:
        print_json(outbound_json(message))
        return
    fields: list[tuple[str, object]] = [
        ("ID", message.id),
        ("From", message.agent_id),
        ("Status", message.status),
        ("To", message.to),
    ]
    fields += [
        (label, value) for label, value in (("Cc", message.cc), ("Bcc", message.bcc)) if value
    ]
    fields += [("Subject", message.subject)]
    if message.conversation_id:
        fields.append(("Conversation", message.conversation_id))
    if message.approval_expires_at and message.status == "pending_approval":
        fields.append(("Expires", message.approval_expires_at))
    fields += [(label, value) for label, value in _outcome(message) if value]
    if message.edited:
        fields.append(("Edited", True))
    if message.attachments:
        fields.append(
            (
                "Attachments",
                [f"{a.get('filename')} ({a.get('content_type')})" for a in message.attachments],
            )
        )
    print_fields(fields)
    print()
    body = message.body_text
    if body:
        print(terminal_text(body.rstrip("\n"), multiline=True))
    elif message.status in TERMINAL_STATES or message.sent_at:
        print(f"(body not kept: the message is {message.status})")
    else:
        print("(no text body)")
    if message.body_html:
        print(f"\n{HTML_PART_HEADING}")
        print(terminal_text(message.body_html.rstrip("\n"), multiline=True))


TERMINAL_STATES = frozenset({"sent", "rejected", "expired_rejected", "failed", "bounced"})
"""Outbound states whose body the gateway no longer keeps (hitl.md), as once handed off."""


def _outcome(message: PendingMessageDetail) -> list[tuple[str, object]]:
    """How the message ended: why it failed or was rejected, who decided and when, when it
    left. `error` is the gateway's reason for a failed (or bounced) message."""
    return [
        ("Error", message.error),
        ("Reason", message.rejection_reason),
        ("Reviewed", _reviewed(message)),
        ("Sent", message.sent_at),
    ]


def _reviewed(message: PendingMessageDetail) -> str | None:
    if not message.reviewed_at:
        return None
    how = [part for part in (message.reviewed_by, message.review_method) if part]
    return f"{message.reviewed_at} ({', '.join(how)})" if how else message.reviewed_at


HTML_DROPPED_NOTE = (
    "# This message also has an HTML part, which most mail clients show instead of the text\n"
    "# below: if you change the body, your text is sent alone, without the HTML part.\n"
)


def editable_text(message: PendingMessageDetail) -> str:
    """The message as the reviewer edits it: labelled header lines, then the body."""
    return "\n".join(
        [
            "# Edit the fields below and save to approve with your changes.",
            "# Lines starting with '#' are ignored; keep the labels as they are.",
            "# Empty this file (or remove the body's line) to cancel: nothing is approved.",
            *([HTML_DROPPED_NOTE.rstrip("\n")] if message.body_html else []),
            "",
            f"subject: {message.subject or ''}",
            *(f"{name}: {', '.join(getattr(message, name) or [])}" for name in _ADDRESS_FIELDS),
            "",
            BODY_SEPARATOR,
            message.body_text or "",
        ]
    )


def parse_edited(text: str) -> dict[str, Any]:
    """The fields of an edited text: `subject`, `to`, `cc`, `bcc` (lists), `body_text`."""
    fields: dict[str, Any] = {}
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.strip() == BODY_SEPARATOR:
            fields["body_text"] = "\n".join(lines[index + 1 :]).rstrip("\n")
            break
        if line.startswith("#") or ":" not in line:
            continue
        label, _, value = line.partition(":")
        label = label.strip().lower()
        if label == "subject":
            fields["subject"] = value.strip()
        elif label in _ADDRESS_FIELDS:
            fields[label] = [item.strip() for item in value.split(",") if item.strip()]
    return fields


def _line_feeds(text: str) -> str:
    """`text` with CRLF and lone CR line ends as LF, as the edited file is read back (Python's
    universal newlines), so a body the agent wrote with CRLF does not read as changed."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def changed_fields(edited: dict[str, Any], message: PendingMessageDetail) -> dict[str, Any]:
    """Only what the reviewer changed, so the gateway's `edited` flag stays truthful (the body
    compared line ends aside). A changed body of a message with an HTML part drops that part
    (`body_html: ""`): it still says what the text said before, and mail clients show it
    rather than the text."""
    original: dict[str, Any] = {
        "subject": message.subject or "",
        "to": list(message.to or []),
        "cc": list(message.cc or []),
        "bcc": list(message.bcc or []),
        "body_text": _line_feeds(message.body_text or "").rstrip("\n"),
    }
    changes = {name: value for name, value in edited.items() if original.get(name) != value}
    if "body_text" in changes and message.body_html:
        changes["body_html"] = ""
    return changes


def edit_in_editor(text: str) -> str:
    """Let the user edit `text` in `$VISUAL`, `$EDITOR` or vi; the text they saved."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="e2a-approve-") as folder:
        path = Path(folder) / "approve.txt"
        path.write_text(text, encoding="utf-8")
        try:
            finished = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except OSError as exc:
            raise ClientError(f"cannot run the editor {editor!r}: {exc}; set $EDITOR") from None
        if finished.returncode != 0:
            raise ClientError(
                f"the editor exited with status {finished.returncode}: nothing was approved"
            )
        return path.read_text(encoding="utf-8")


def cmd_approve(ctx: Context) -> None:
    """`pending approve <id> [--edit]` (also `e2a approve`)."""
    client = ctx.client()
    changes: dict[str, Any] = {}
    if ctx.args.edit:
        message = client.get_pending_message(ctx.args.id)
        if message.status != "pending_approval":
            raise ClientError(f"cannot edit {message.id}: it is {message.status}, not pending")
        fields = parse_edited(edit_in_editor(editable_text(message)))
        if "body_text" not in fields:  # emptied, or its body line gone: as `git commit` does
            raise ClientError(
                f"the edited text has no '{BODY_SEPARATOR}' line (emptied?): nothing was approved"
            )
        changes = changed_fields(fields, message)
        if "to" in changes and not changes["to"]:
            raise ClientError("the edited message has no To: address: nothing was approved")
    approved = client.approve_message(ctx.args.id, **changes)
    if ctx.json:
        print_json(outbound_json(approved))
    else:
        edited = f", edited: {', '.join(sorted(changes))}" if changes else ""
        print(f"Approved {approved.id} ({approved.status}{edited})")
        if "body_html" in changes:
            print("The HTML part was removed: your edited text is sent alone.")


def cmd_reject(ctx: Context) -> None:
    """`pending reject <id> [--reason]` (also `e2a reject`)."""
    message = ctx.client().reject_message(ctx.args.id, ctx.args.reason)
    if ctx.json:
        print_json(outbound_json(message))
    else:
        print(f"Rejected {message.id} ({message.status})")
