"""The client's settings file, `~/.e2a/config.json`, and how env vars override it.

The file holds `url`, `api_key`, `shared_domain` and `agent_email`. It is written with mode
0600 because it contains an API key. `HOME` decides where it lives (tests use a temp home).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

KEYS = ("url", "api_key", "shared_domain", "agent_email")
"""The settings `e2a config` knows; anything else in the file is kept but not shown."""


class ConfigFileError(Exception):
    """The config file exists but cannot be read; the message says which file and why."""


def config_path() -> Path:
    """`$HOME/.e2a/config.json`."""
    return Path(os.environ.get("HOME") or Path.home()) / ".e2a" / "config.json"


def load_config() -> dict[str, str]:
    """The saved settings, or an empty dict when the file does not exist yet."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} is not a JSON object: fix or delete it, then `e2a login`")
    return {str(key): str(value) for key, value in data.items() if value is not None}


def save_config(values: dict[str, str]) -> Path:
    """Write the settings atomically with mode 0600 (the directory gets 0700)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump(values, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)
    return path


def env_override(key: str) -> str | None:
    """The environment variable value that overrides `key`, if one is set."""
    if key == "url":
        return os.environ.get("E2A_BASE_URL") or os.environ.get("E2A_URL") or None
    if key == "api_key":
        return os.environ.get("E2A_API_KEY") or None
    if key == "agent_email":
        return os.environ.get("E2A_AGENT_EMAIL") or None
    return None


def effective(key: str, values: dict[str, str]) -> str | None:
    """A setting as the CLI uses it: the environment first, then the file."""
    return env_override(key) or values.get(key) or None
