"""Secrets kept in files of their own (Docker's secrets, systemd's credentials): reading one
as a `<key>_file` setting names it, and what to tell the operator about the file's mode.

Messages name the file, never its content. Nothing here logs: the caller says what it returns.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_FILE_BYTES = 65_536
"""The largest secret file read: a longer one is no secret (a path to the wrong file, or
to a device that never ends)."""


def read_secret_file(path: Path) -> str:
    """The secret the file at `path` holds: its UTF-8 text but for one trailing line end
    (`\\n` or `\\r\\n`, as `echo` and editors leave one); nothing else is stripped. Raises
    ValueError starting with the path and saying what is wrong (never the content)."""
    try:
        with path.open("rb") as file:
            content = file.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file — give the file that holds the secret") from None
    except IsADirectoryError:
        raise ValueError(
            f"{path} is a directory — give the file in it that holds the secret"
        ) from None
    except PermissionError:
        raise ValueError(
            f"{path}: permission denied — make it readable by the user the gateway runs as, or "
            "under systemd hand it over with LoadCredential= (docs/deploy.md)"
        ) from None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if len(content) > MAX_SECRET_FILE_BYTES:
        raise ValueError(
            f"{path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB — is it the file "
            "that holds the secret?"
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text — write the secret into it as text") from None
    secret = text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")
    if not secret:
        raise ValueError(f"{path} is empty — write the secret into it")
    return secret


def readable_by_others(setting: str, path: Path) -> str | None:
    """A warning naming `setting` and `path` when users other than the file's owner may read
    it (its group or everyone: mode & 0o077); None when they may not, or it is gone."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{setting}: {path} may be read by other users than its owner (mode {mode:04o}) — "
        f"`chmod 600 {path}` (owned by the user the gateway runs as), or under systemd hand "
        "it over with LoadCredential= (docs/deploy.md)"
    )
