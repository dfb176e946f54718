"""How many replies of the corpus (tests/data/replies) are split as a person splits them.

One row per splitter, same corpus, same run: e2a `split_reply`, and the peers, the Python
libraries for the job, both in the dev extra: email-reply-parser (the best of them on this
corpus, but unmaintained since 2020) and mail-parser-reply (maintained, many languages, all of
them switched on here); quotequail too when it is installed. A message counts as split
right when the splitter's reply text equals the person's, compared line by line with trailing
spaces and repeated blank lines ignored. The peers read text only: an HTML-only case is given
to them as e2a renders it ("> " before quoted lines). Only e2a returns parts, so the
"parts and attributions" column (kind, depth, and the attribution fields the case names, for
the cases that list parts) is e2a's alone.

With `--sizes`, also the cost of one split by body size (the corpus's text bodies repeated to
2 KB … 1 MB): what decides where the gateway computes a message's reading (docs/replies.md).

Run: `.venv/bin/python bench/reply_split.py [--misses] [--sizes]`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2a_gateway.inbound.replies import split_reply
from tests.test_replies_corpus import Case, load_corpus, split_differences

Splitter = Callable[[str], str]


@dataclass
class Row:
    name: str
    right: int = 0
    seconds: float = 0.0
    misses: list[str] | None = None


def comparable(text: str) -> str:
    """Text with trailing spaces, blank lines at either end and repeated blank lines dropped."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def body_text(case: Case) -> str:
    """The text a text-only splitter is given: the text part, or the HTML as e2a renders it."""
    if case.text is not None and case.text.strip():
        return case.text
    return "\n".join(split_reply(None, case.html).lines)


def peers() -> dict[str, Splitter]:
    """The peer libraries that are installed, by name and version."""
    found: dict[str, Splitter] = {}
    try:
        from mailparser_reply import EmailReplyParser as MailParserReply
        from mailparser_reply.constants import MAIL_LANGUAGES
    except ImportError:
        print("mail-parser-reply is not installed: `make install` adds it (dev extra)")
    else:
        parser = MailParserReply(languages=sorted(MAIL_LANGUAGES))
        found[_versioned("mail-parser-reply")] = lambda text: parser.parse_reply(text) or ""
    try:
        from email_reply_parser import EmailReplyParser
    except ImportError:
        pass
    else:
        found[_versioned("email-reply-parser")] = EmailReplyParser.parse_reply
    try:
        import quotequail
    except ImportError:
        pass
    else:

        def quotequail_reply(text: str) -> str:
            return "\n".join(
                part for shown, part in quotequail.quote(text, quote_intro_line=True) if shown
            )

        found[_versioned("quotequail")] = quotequail_reply
    return found


def _versioned(distribution: str) -> str:
    return f"{distribution} {importlib.metadata.version(distribution)}"


def measure(name: str, split: Splitter, cases: list[Case]) -> Row:
    row = Row(name, misses=[])
    for case in cases:
        text = body_text(case)
        started = time.perf_counter()
        try:
            reply = split(text)
        except Exception as error:  # a peer that raises has not split the message
            reply = f"<{type(error).__name__}>"
        row.seconds += time.perf_counter() - started
        if comparable(reply) == comparable(case.reply_text):
            row.right += 1
        else:
            assert row.misses is not None
            row.misses.append(f"{case.group}/{case.name}")
    return row


def e2a_row(cases: list[Case]) -> Row:
    row = Row(f"e2a split_reply ({_versioned('e2a-gateway')})", misses=[])
    for case in cases:
        started = time.perf_counter()
        split = split_reply(case.text, case.html)
        row.seconds += time.perf_counter() - started
        if comparable(split.reply_text) == comparable(case.reply_text):
            row.right += 1
        else:
            assert row.misses is not None
            row.misses.append(f"{case.group}/{case.name}")
    return row


def percent(part: int, whole: int) -> str:
    return f"{part}/{whole} {100 * part / whole:5.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list the cases each splitter misses")
    parser.add_argument("--sizes", action="store_true", help="time one split by body size")
    arguments = parser.parse_args()
    cases = load_corpus()
    with_parts = [case for case in cases if case.parts is not None]
    parts_right = sum(1 for case in with_parts if not split_differences(case))
    rows = [e2a_row(cases)] + [measure(name, split, cases) for name, split in peers().items()]

    print(f"corpus: {len(cases)} messages in {len({case.group for case in cases})} groups")
    print(f"{'splitter':<34} {'reply_text as a person':>22} {'µs/message':>11}")
    for row in rows:
        per_message = 1e6 * row.seconds / len(cases)
        print(f"{row.name:<34} {percent(row.right, len(cases)):>22} {per_message:>11.0f}")
    print(
        f"e2a parts and attributions as a person: {percent(parts_right, len(with_parts))} "
        "(cases that list their parts)"
    )

    groups = sorted({case.group for case in cases})
    print()
    print(f"{'group':<16}" + "".join(f"{row.name.split(' (')[0][:22]:>24}" for row in rows))
    for group in groups:
        in_group = [case for case in cases if case.group == group]
        names = {f"{case.group}/{case.name}" for case in in_group}
        cells = []
        for row in rows:
            missed = len(names & set(row.misses or []))
            cells.append(f"{len(in_group) - missed}/{len(in_group)}")
        print(f"{group:<16}" + "".join(f"{cell:>24}" for cell in cells))
    if arguments.misses:
        for row in rows:
            print(f"\n{row.name} misses: {', '.join(row.misses or []) or 'none'}")
    if arguments.sizes:
        print_split_cost_by_size(cases)


def print_split_cost_by_size(cases: list[Case]) -> None:
    """The best of three splits of a body of each size, made of the corpus's text bodies."""
    corpus_text = "\n".join(case.text for case in cases if case.text)
    print(f"\n{'body size':>10} {'one split':>12}")
    for size in (2_000, 16_000, 64_000, 256_000, 1_000_000):
        body = (corpus_text * (size // len(corpus_text) + 1))[:size]
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            split_reply(body)
            best = min(best, time.perf_counter() - started)
        print(f"{size:>10} {1e3 * best:>9.1f} ms")


if __name__ == "__main__":
    main()
