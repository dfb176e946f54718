"""The gateway's own commands: serve, bootstrap, migrate, backup.

Imported only when one of them runs, because it needs the `server` extra (trio, Quart,
hypercorn, the mail-authentication libraries); the client commands work without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from e2a_gateway.accounts import bootstrap_user
from e2a_gateway.addresses import AddressError, normalise_address
from e2a_gateway.app import serve_until_signal
from e2a_gateway.config import (
    ConfigError,
    Settings,
    env_warnings,
    load_settings,
    secret_file_warnings,
)
from e2a_gateway.gateway import open_gateway
from e2a_gateway.logs import configure_logging
from e2a_gateway.redacted import redacted_url
from e2a_gateway.startup import StartupError
from e2a_gateway.storage import POSTGRES_SCHEMES, refuse_migrating_under_a_gateway
from e2a_gateway.storage.backup import BackupError, back_up
from e2a_gateway.storage.base import StorageUnavailable
from e2a_gateway.workers.approvals import lands_in_an_inbox_here

log = logging.getLogger("e2a")

SWITCH_INTERVAL_SECONDS = 0.001
"""How long the event loop may hold the GIL before a waiting thread gets it (default 5 ms)."""

DEFAULT_CONFIG = Path("e2a.toml")


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 1."""


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
    await refuse_migrating_under_a_gateway(settings.database.url)
    async with open_gateway(settings) as gateway:
        user, issued, created = await bootstrap_user(gateway.storage, gateway.server_key, address)
        served_here = await lands_in_an_inbox_here(gateway, user.email)
    # The database named: a key made in another one (run from another folder without
    # --config, on ./e2a.db there) is seen now, not when the gateway refuses it.
    print(
        f"{'Created' if created else 'Found'} user {user.email} ({user.id}) in "
        f"{redacted_url(settings.database.url)}, whose gateway now takes this API key.",
        file=sys.stderr,
    )
    if served_here:
        print(
            f"Warning: {user.email} is an address this gateway receives mail for (its shared "
            "domain, its host name, an agent's or postmaster's), so approval notices are never "
            "mailed to it: an agent would get their links. Review held mail with the dashboard, "
            "the CLI or the API, or bootstrap a user at a person's mailbox elsewhere.",
            file=sys.stderr,
        )
    print("API key (shown once, store it now):", file=sys.stderr)
    print(issued.plaintext)


async def _migrate(settings: Settings) -> None:
    await refuse_migrating_under_a_gateway(settings.database.url)
    async with open_gateway(settings):
        pass
    print("database is up to date", file=sys.stderr)


EXIT_USAGE = 2
"""`e2a backup` on PostgreSQL: a command for another database than this one's."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    """`e2a backup DEST`: copy the SQLite database; exit 2 on PostgreSQL."""
    url = settings.database.url
    if url.startswith(POSTGRES_SCHEMES):
        print(
            f"e2a: backup copies SQLite databases, and database.url is PostgreSQL "
            f"({redacted_url(url)}): back it up with pg_dump, e.g. pg_dump --format=custom "
            f'--file=/var/backups/e2a/e2a-$(date +%F).dump "$DATABASE_URL"',
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not url.startswith("sqlite:///"):
        raise UserError(f"database.url: {redacted_url(url)} is not an SQLite database")
    # A SIGTERM (a systemd timer stopped) ends the copy between two steps and removes the
    # temporary file, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        made = back_up(
            url.removeprefix("sqlite:///"), args.dest, force=args.force, quick=args.quick
        )
    except BackupError as exc:
        raise UserError(str(exc)) from None
    print(made.line())
    return 0


def run_server_command(args: argparse.Namespace) -> int:
    """Run `serve`, `bootstrap`, `migrate` or `backup`; returns the exit code."""
    try:
        path = _config_path(args.config)
        settings = load_settings(path)
        configure_logging(settings.log.level, settings.log.format)
        for warning in [*env_warnings(os.environ), *secret_file_warnings(settings)]:
            log.warning("%s", warning)
        if path is None:
            log.info("no config file: running on defaults (see config.example.toml)")
        if args.command == "serve":
            # The event loop hands the GIL to the storage and authentication threads within
            # 1 ms instead of 5 ms: a commit that has finished on disk is answered sooner.
            # Measured with bench/smtp_ingest.py: about 10 % more messages per second at 50
            # sessions and a p99 at 200 msg/s of 6-8 ms instead of 4-23 ms.
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
            # A SIGINT or SIGTERM that comes once the gateway has stopped (a Ctrl-C passed on
            # late by the one-file executable's launcher, on a busy machine) is ignored rather
            # than ending a clean stop as an interrupt: while the gateway runs and stops, its
            # signal receiver takes them, and gives these dispositions back when it closes.
            for late in (signal.SIGINT, signal.SIGTERM):
                signal.signal(late, signal.SIG_IGN)
            trio.run(serve_until_signal, settings)
        elif args.command == "bootstrap":
            trio.run(_bootstrap, settings, args.email)
        elif args.command == "migrate":
            trio.run(_migrate, settings)
        elif args.command == "backup":
            return _backup(settings, args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        reportable = _user_facing(exc)
        if reportable is None:
            raise
        print(f"e2a: {reportable}", file=sys.stderr)
        return 1
    return 0
