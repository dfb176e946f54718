"""The `e2a` command: server commands (serve, bootstrap, migrate).

Exit codes: 0 success, 1 an error the user can fix (the message says how), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from e2a import __version__
from e2a.accounts import bootstrap_user
from e2a.addresses import AddressError, normalise_address
from e2a.app import StartupError, serve_until_signal
from e2a.cli.client_commands import CLIENT_COMMANDS, add_client_commands, run_client_command
from e2a.config import ConfigError, Settings, load_settings
from e2a.gateway import open_gateway
from e2a.logs import configure_logging
from e2a.storage.base import StorageUnavailable

log = logging.getLogger("e2a")

DEFAULT_CONFIG = Path("e2a.toml")

EXAMPLES = {
    "serve": (
        "example:\n  e2a serve --config e2a.toml\n  E2A_SHARED_DOMAIN=agents.example.com e2a serve"
    ),
    "bootstrap": "example:\n  e2a bootstrap --email you@example.com",
    "migrate": "example:\n  e2a migrate --config e2a.toml",
}


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 1."""


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: ./e2a.toml if it exists, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `e2a` command."""
    parser = argparse.ArgumentParser(
        prog="e2a",
        description="e2a: a self-hosted email gateway for AI agents.",
        epilog="Run `e2a COMMAND --help` for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"e2a {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gateway: SMTP, HTTP API and workers",
        description="Run the gateway until SIGINT/SIGTERM.",
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
    add_client_commands(commands)
    return parser


def _config_path(path: Path | None) -> Path | None:
    if path is None and DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    return path


def _user_facing(exc: BaseException) -> Exception | None:
    """The error to print for `exc`, unwrapping exception groups from nurseries."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _user_facing(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, ConfigError | StartupError | StorageUnavailable | UserError):
        return exc
    return None


async def _bootstrap(settings: Settings, email: str) -> None:
    try:
        address = normalise_address(email)
    except AddressError as exc:
        raise UserError(f"--email: {exc}") from None
    async with open_gateway(settings) as gateway:
        user, issued, created = await bootstrap_user(gateway.storage, gateway.server_key, address)
    print(f"{'Created' if created else 'Found'} user {user.email} ({user.id}).", file=sys.stderr)
    print("API key (shown once, store it now):", file=sys.stderr)
    print(issued.plaintext)


async def _migrate(settings: Settings) -> None:
    async with open_gateway(settings):
        pass
    print("database is up to date", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `e2a` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    try:
        path = _config_path(args.config)
        settings = load_settings(path)
        configure_logging(settings.log.level, settings.log.format)
        if path is None:
            log.info("no config file: running on defaults (see config.example.toml)")
        if args.command == "serve":
            trio.run(serve_until_signal, settings)
        elif args.command == "bootstrap":
            trio.run(_bootstrap, settings, args.email)
        elif args.command == "migrate":
            trio.run(_migrate, settings)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        reportable = _user_facing(exc)
        if reportable is None:
            raise
        print(f"e2a: {reportable}", file=sys.stderr)
        return 1
    return 0
