"""Installations for tests that need one apart from this project's `.venv`: Python virtualenvs
and npm packages.

Each is built once under the user's cache directory (`~/.cache/e2a-tests/<name>`) and reused;
a test whose installation cannot be built (no package index, no npm) is skipped, saying how to
build it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
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


def cached_npm_prefix(name: str, packages: list[str], advice: str = "") -> Path:
    """An npm prefix (`npm install --prefix`) named `name` holding `packages` (npm install
    arguments: `name@version`, or a tarball's path) and their dependencies; its commands are
    in `node_modules/.bin`. Built on first use, as `cached_venv` builds a virtualenv: into a
    `.partial` directory, renamed when complete. Other `packages` get a prefix of their own.
    `advice` ends the message of a skip (what else the user may do)."""
    for tool in ("npm", "node"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not on PATH: install Node.js 18 or later with npm{advice}")
    digest = hashlib.sha256("\0".join(packages).encode()).hexdigest()[:12]
    prefix = cache_dir() / f"{name}-{digest}"
    if (prefix / ".installed").exists():
        return prefix
    partial = prefix.with_name(prefix.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    command = ["npm", "install", "--prefix", str(partial), "--no-audit", "--no-fund", *packages]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=INSTALL_SECONDS)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        output = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"could not install {' '.join(packages)} with npm ({exc}; "
            f"{output.decode(errors='replace').strip()[:300]}): pre-build it with "
            f"`{' '.join(command[:3])} {prefix} {' '.join(packages)} && touch {prefix}/.installed`"
            f"{advice}"
        )
    (partial / ".installed").touch()
    if prefix.exists():  # built meanwhile by another run
        return prefix
    partial.rename(prefix)
    return prefix
