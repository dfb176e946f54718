"""What `e2a send` and `e2a reply` put in a message: bodies from arguments, files or stdin,
and attachments from files (content type guessed from the name).

An HTML body without a text one gets a plain-text rendering of it, so no message goes out
with an empty text part. Reads local files only; talks to no gateway.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from e2a_gateway.html_text import html_text

if TYPE_CHECKING:
    from e2a_gateway.v1 import Attachment

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
"""The largest attachment an e2a gateway takes (`/api/v1`'s bound; `/v1` takes 10 MiB, and
says so). A larger file is refused before it is read whole: no gateway would take it, and a
disk image (or `/dev/zero`) would fill the memory first."""
MAX_BODY_BYTES = 10 * 1024 * 1024
"""The most a `--body-file`, `--html-file` or a body on stdin is read: an e2a message is
composed of at most 10 MiB (`/v1`), so a larger file (or `/dev/zero`) is refused before it is
read whole, as an attachment is."""


class ComposeError(Exception):
    """A body or attachment file cannot be read; the message names the option and file."""


def add_body_arguments(parser: argparse.ArgumentParser) -> None:
    """`--body`/`--body-file`, `--html`/`--html-file` and `--attach`."""
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--body", help="the text body; `-` reads stdin")
    text.add_argument("--body-file", metavar="FILE", help="read the text body from FILE")
    html = parser.add_mutually_exclusive_group()
    html.add_argument(
        "--html", "--html-body", dest="html", metavar="HTML", help="an HTML body as well"
    )
    html.add_argument(
        "--html-file",
        metavar="FILE",
        help="read the HTML body from FILE (without a text body, its text is sent as one)",
    )
    parser.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="attach FILE (repeatable; the content type is guessed from its name)",
    )


@dataclass
class Bodies:
    """The text and HTML bodies of a message to send."""

    text: str
    html: str | None


def _read_stdin(option: str) -> str:
    """All of stdin as text; ComposeError when it is not UTF-8 (Python decodes a non-UTF-8
    stdin to lone surrogates, which no request can carry)."""
    try:
        text = sys.stdin.read(MAX_BODY_BYTES + 1)
        text.encode("utf-8")
    except UnicodeError:
        raise ComposeError(
            f"{option} -: stdin is not UTF-8 text; convert it first "
            "(for example `iconv -f latin1 -t utf-8`)"
        ) from None
    if len(text.encode("utf-8")) > MAX_BODY_BYTES:
        raise _too_long(option, "-: stdin")
    return text


def _read(option: str, name: str) -> str:
    """The UTF-8 text of file `name`, read no further than MAX_BODY_BYTES + 1 characters."""
    if name == "-":
        return _read_stdin(option)
    try:
        with open(name, encoding="utf-8") as handle:  # as Path.read_text: newlines as \n
            text = handle.read(MAX_BODY_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"{option} {name}: cannot read it ({exc})") from None
    if len(text.encode("utf-8")) > MAX_BODY_BYTES:
        raise _too_long(option, name)
    return text


def _too_long(option: str, name: str) -> ComposeError:
    return ComposeError(
        f"{option} {name}: it is more than the {MAX_BODY_BYTES // (1024 * 1024)} MiB an e2a "
        "message may be composed of; send a shorter text, or share a link to it"
    )


def message_bodies(args: argparse.Namespace) -> Bodies:
    """The bodies the options give; ComposeError when none is given or a file fails."""
    html: str | None = args.html
    if args.html_file is not None:
        html = _read("--html-file", args.html_file)
    if args.body is not None:
        text = _read_stdin("--body") if args.body == "-" else args.body
    elif args.body_file is not None:
        text = _read("--body-file", args.body_file)
    elif html is not None:
        text = html_text(html)
    else:
        raise ComposeError("give a body: --body TEXT, --body-file FILE or --html-file FILE")
    return Bodies(text, html)


def attachments(args: argparse.Namespace) -> list[Attachment] | None:
    """The `--attach` files as attachments (name, guessed content type, bytes)."""
    from e2a_gateway.v1 import Attachment

    if not args.attach:
        return None
    files: list[Attachment] = []
    for name in args.attach:
        path = Path(name)
        data = _attachment_bytes(name)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files.append(Attachment(path.name, content_type, data))
    return files


def _attachment_bytes(name: str) -> bytes:
    """The bytes of the `--attach` file `name`, read no further than MAX_ATTACHMENT_BYTES + 1
    (a file that never ends, as `/dev/zero`, included); ComposeError when it cannot be read
    or is larger."""
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_ATTACHMENT_BYTES + 1)
    except OSError as exc:
        raise ComposeError(f"--attach {name}: cannot read it ({exc})") from None
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise ComposeError(
            f"--attach {name}: it is more than the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB "
            "an e2a attachment may be; share a link to it instead"
        )
    return data
