"""The client's settings file, `~/.e2a/config.json`, and how env vars override it.

The file holds `url`, `api_key`, `shared_domain` and `agent_email`; a file e2a's own CLI
wrote (either of its layouts) names the URL `api_url`, and keeps that spelling when we change
it. It is written with mode 0600 because it contains an API key. `HOME` decides where it
lives (tests use a temp home).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

KEYS = ("url", "api_key", "shared_domain", "agent_email")
"""The settings `e2a config` knows; anything else in the file is kept but not shown."""

E2A_KEYS = {"api_url": "url"}
"""e2a's CLI's names for our keys (`e2a config get api_url` works too)."""

ENVIRONMENT = {
    "url": ("E2A_BASE_URL", "E2A_URL"),
    "api_key": ("E2A_API_KEY",),
    "agent_email": ("E2A_AGENT_EMAIL",),
    "shared_domain": ("E2A_SHARED_DOMAIN",),
}
"""The variables that override each key, first set wins."""


class ConfigFileError(Exception):
    """The config file cannot be read or written; the message says which file and why."""


def config_path() -> Path:
    """`$HOME/.e2a/config.json`."""
    return Path(os.environ.get("HOME") or Path.home()) / ".e2a" / "config.json"


def canonical_key(name: str) -> str:
    """Our name of a setting given by either CLI's name (`api_url` is `url`)."""
    return E2A_KEYS.get(name, name)


def load_config() -> dict[str, str]:
    """The saved settings as the file spells them, or an empty dict when there is no file."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigFileError(
            f"cannot read {path}: {exc.strerror or exc} — check its permissions"
        ) from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ConfigFileError(
            f"{path} is not valid JSON ({exc}): fix or delete it, then `e2a login`"
        ) from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} is not a JSON object: fix or delete it, then `e2a login`")
    return {str(key): str(value) for key, value in data.items() if value is not None}


def saved(key: str, values: dict[str, str]) -> str | None:
    """The file's value of `key` under our name or e2a's (`url` or `api_url`)."""
    key = canonical_key(key)
    if values.get(key):
        return values[key]
    for e2a_name, ours in E2A_KEYS.items():
        if ours == key and values.get(e2a_name):
            return values[e2a_name]
    return None


def set_saved(values: dict[str, str], key: str, value: str) -> None:
    """Set `key` in `values` under the spelling the file already uses (e2a's `api_url` stays
    `api_url`, so e2a's CLI reading the same file sees the change); ours otherwise."""
    key = canonical_key(key)
    spellings = [name for name, ours in E2A_KEYS.items() if ours == key and name in values]
    if key in values or not spellings:
        values[key] = value
    for name in spellings:
        values[name] = value


def save_config(values: dict[str, str]) -> Path:
    """Write the settings atomically with mode 0600 (the directory gets 0700).

    ConfigFileError when they cannot be written (a HOME this user may not write, a full
    disk): the message names the file and the variables that do without it; the file is then
    as it was."""
    path = config_path()
    temporary = path.with_suffix(".json.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(values, handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigFileError(
            f"cannot save {path}: {exc.strerror or exc} — make {path.parent} a folder this user "
            "can write (HOME decides where it is), or set E2A_BASE_URL and E2A_API_KEY (and "
            "E2A_AGENT_EMAIL) instead of saving them"
        ) from None
    return path


def env_override(key: str) -> str | None:
    """The environment variable value that overrides `key`, if one is set."""
    for name in ENVIRONMENT.get(canonical_key(key), ()):
        if os.environ.get(name):
            return os.environ[name]
    return None


def effective(key: str, values: dict[str, str]) -> str | None:
    """A setting as the CLI uses it: the environment first, then the file."""
    return env_override(key) or saved(key, values)
