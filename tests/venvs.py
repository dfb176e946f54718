"""Virtualenvs for tests that need an installation apart from this project's `.venv`.

Each is built once under the user's cache directory (`~/.cache/e2a-tests/<name>`) and reused;
a test whose virtualenv cannot be built (no package index) is skipped, saying how to build it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

INSTALL_SECONDS = 300


def cache_dir() -> Path:
    """Where the test virtualenvs live."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "e2a-tests"


def cached_venv(name: str, requirements: list[str]) -> Path:
    """The python of a virtualenv named `name` holding exactly `requirements` (and their
    dependencies). Built on first use: into a `.partial` directory, renamed when complete."""
    venv = cache_dir() / name
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python
    partial = venv.with_name(venv.name + ".partial")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(partial)],
            check=True,
            capture_output=True,
            timeout=INSTALL_SECONDS,
        )
        subprocess.run(
            [str(partial / "bin" / "pip"), "install", "--quiet", *requirements],
            check=True,
            capture_output=True,
            timeout=INSTALL_SECONDS,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        output = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"could not build the test virtualenv {venv} ({exc}; "
            f"{output.decode(errors='replace').strip()[-300:]}): pre-build it with "
            f"`{sys.executable} -m venv {venv} && {venv}/bin/pip install "
            f"{' '.join(repr(r) for r in requirements)} && touch {venv}/.installed`"
        )
    (partial / ".installed").touch()
    if venv.exists():  # built meanwhile by another run
        return python
    partial.rename(venv)
    return python
