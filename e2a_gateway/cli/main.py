"""The `e2a` command: the gateway's commands (serve, bootstrap, migrate, backup) and the client
commands (login, agents, inbox, …).

The client commands need only the SDK's dependencies; the gateway's commands are imported
when they run, and say how to install the `server` extra when it is missing.
Exit codes: e2a's CLI's (`exit_codes`: 0 success, 1 transient or fixable, 2 bad usage, 3 held
for review, 4 key refused, 5 request refused, 6 listen timeout, 7 send failed, 8/9 doctor
warnings/failures), 130 when interrupted (Ctrl-C) and 141 when the reader of stdout went away
(a closed pipe). This module imports little, so that a Ctrl-C while the command starts meets
`main`'s handler rather than an import.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from e2a_gateway import __version__
from e2a_gateway.cli.output import replace_what_cannot_be_shown

SERVER_MISSING = (
    "the gateway is not installed: install e2a-gateway with its server extra "
    "(from a checkout: pip install '.[server]'), or use the e2a binary"
)

EXAMPLES = {
    "serve": (
        "example:\n  e2a serve --config e2a.toml\n  E2A_SHARED_DOMAIN=agents.example.com e2a serve"
    ),
    "bootstrap": "example:\n  e2a bootstrap --email you@example.com",
    "migrate": (
        "Migrations only go forward: back up the database before an upgrade, and restore that\n"
        "backup to go back to the older e2a. SQLite (safe while e2a runs; do not cp the file,\n"
        "whose -wal holds recent commits):\n"
        "  e2a backup /var/backups/e2a/before-upgrade.db --config /etc/e2a/e2a.toml\n"
        "PostgreSQL:\n"
        '  pg_dump --format=custom --file=before-upgrade.dump "$DATABASE_URL"\n'
        "\n"
        "example:\n  e2a migrate --config e2a.toml"
    ),
    "backup": (
        "The copy is taken from one snapshot while e2a serve goes on taking mail, written to a\n"
        "temporary file beside DEST, checked (PRAGMA integrity_check), synced and only then\n"
        "named DEST, mode 0600. Run it as the user e2a serve runs as. Prints one line: DEST,\n"
        "its size, its schema version and the seconds taken. Exit 0 on success, 1 when it\n"
        "could not (DEST exists, no database, a full disk: one line says why), 2 on PostgreSQL\n"
        "(use pg_dump).\n"
        "\n"
        "example:\n"
        "  e2a backup /var/backups/e2a/e2a-$(date +%F).db --config /etc/e2a/e2a.toml"
    ),
    "mcp": "example:\n  E2A_BASE_URL=https://mail.example.com E2A_API_KEY=e2a_… "
    "E2A_AGENT_EMAIL=helpdesk@agents.example.com e2a mcp\n"
    "  (in an MCP client's config: command e2a, args [mcp] and these variables in env)",
}
MCP_MISSING = (
    "the MCP server is not installed: install e2a-gateway with its mcp extra "
    "(from a checkout: pip install '.[mcp]')"
)


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: ./e2a.toml if it exists, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `e2a` command."""
    from e2a_gateway.cli.client_commands import add_client_commands

    parser = argparse.ArgumentParser(
        prog="e2a",
        description="e2a: a self-hosted email gateway for AI agents.",
        epilog="Run `e2a COMMAND --help` for a command's options and an example.",
    )
    parser.add_argument("-v", "--version", action="version", version=f"e2a {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gateway: SMTP, HTTP API and workers",
        description="Run the gateway until SIGINT, SIGTERM or SIGHUP (each stops it cleanly).",
        epilog=EXAMPLES["serve"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_argument(serve)

    bootstrap = commands.add_parser(
        "bootstrap",
        help="create a user (if needed) and print a new API key once",
        description="Create the user if it does not exist and print a new API key. The key is "
        "shown only once: store it now.",
        epilog=EXAMPLES["bootstrap"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bootstrap.add_argument("--email", required=True, help="the user's email address")
    _config_argument(bootstrap)

    migrate = commands.add_parser(
        "migrate",
        help="apply database schema migrations and exit",
        description="Apply pending schema migrations (serve also does this on start).",
        epilog=EXAMPLES["migrate"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_argument(migrate)

    backup = commands.add_parser(
        "backup",
        help="copy the SQLite database to a file, safely while the gateway runs",
        description="Copy the gateway's SQLite database (database.url, read from the same "
        "config as serve) to DEST with SQLite's online backup, while e2a serve keeps running.",
        epilog=EXAMPLES["backup"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backup.add_argument("dest", metavar="DEST", help="the backup file to write (must not exist)")
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    backup.add_argument(
        "--quick",
        action="store_true",
        help="check the copy with PRAGMA quick_check instead of the slower integrity_check",
    )
    _config_argument(backup)

    commands.add_parser(
        "mcp",
        help="MCP server over stdio for Claude, Cursor and other MCP clients",
        description="Serve e2a's mail tools (inbox, read, send, reply, wait, approvals) to an "
        "MCP client over stdin/stdout, against a running gateway. Reads E2A_API_KEY "
        "(required), E2A_BASE_URL (required; or E2A_URL, E2A_API_URL) and E2A_AGENT_EMAIL "
        "(the default agent).",
        epilog=EXAMPLES["mcp"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_client_commands(commands)
    return parser


def _run_mcp() -> int:
    """`e2a mcp`, imported only now: it needs the `mcp` package, not the gateway."""
    try:
        from e2a_gateway.mcp.server import run_stdio
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "e2a_gateway":
            raise
        print(f"e2a: {MCP_MISSING} (missing module {exc.name!r})", file=sys.stderr)
        return 1
    return run_stdio()


EXIT_CLOSED_PIPE = 141
"""What a shell reports for a command stopped by SIGPIPE (128 + 13), as `yes | head -1` does."""
EXIT_INTERRUPTED = 130
"""What a shell reports for a command stopped by SIGINT (128 + 2): Ctrl-C."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `e2a` command; returns the exit code. When the reader of stdout goes
    away (`e2a inbox --json | head -1`), it stops quietly with `EXIT_CLOSED_PIPE`; Ctrl-C at
    any moment (while it loads, waits for the gateway or listens) with `EXIT_INTERRUPTED`."""
    replace_what_cannot_be_shown()
    try:
        code = _run(argv)
        sys.stdout.flush()  # the last output is written here, not at exit where it can't fail
    except BrokenPipeError:
        # Anything still buffered for stdout would fail again when Python exits.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except RuntimeError as error:
        if not interrupted(error):
            raise
        return EXIT_INTERRUPTED
    return code


def interrupted(error: BaseException) -> bool:
    """Whether `error` was caused by Ctrl-C: Python wraps a KeyboardInterrupt that meets a class
    being built (`__set_name__`, as a dataclass in a module being imported) in a RuntimeError
    whose cause it is."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return True
        cause = cause.__cause__
    return False


def _run(argv: Sequence[str] | None) -> int:
    from e2a_gateway.cli.client_commands import CLIENT_COMMANDS, run_client_command

    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    if args.command == "mcp":
        return _run_mcp()
    try:
        from e2a_gateway.cli.server_commands import run_server_command
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "e2a_gateway":
            raise
        print(f"e2a: {SERVER_MISSING} (missing module {exc.name!r})", file=sys.stderr)
        return 1
    return run_server_command(args)
