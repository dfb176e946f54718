"""The gateway and e2a's official SDK in one environment: `pip install e2a` is e2a's own SDK
(5.x); ours is the distribution `e2a-gateway` with the import package `e2a_gateway`, and
neither overwrites a file of the other.

A fresh virtualenv gets both wheels (the official one from the package index, ours built from
this checkout); their dependencies come from this project's `.venv` and the official SDK's
test virtualenv (tests/sdk_v1.py) through `.pth` lines, so only the two wheels are fetched or
built.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from e2a_gateway import __version__
from e2a_gateway.app import RunningGateway
from tests.conftest import Account
from tests.sdk_v1 import SDK_VERSION, run_sdk, sdk5_python, value
from tests.venvs import cache_dir, cached_venv

ROOT = Path(__file__).resolve().parent.parent
BUILD_SECONDS = 300
NOT_SOURCES = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")

pytestmark = pytest.mark.slow
__all__ = ["sdk5_python"]  # a fixture


def _pip(*args: str) -> None:
    """Run this project's pip; skip (saying how to enable) when the package index is out of
    reach, fail on anything else."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        unreachable = ("No matching distribution", "Could not find a version", "connection")
        if any(sign in done.stderr for sign in unreachable):
            pytest.skip(f"needs the package index for `pip {' '.join(args[:2])}`: {done.stderr}")
        raise AssertionError(done.stderr)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, sdk5_python: Path) -> Path:
    """The python of a fresh virtualenv with the official SDK's wheel and ours installed."""
    wheels = cache_dir() / "wheels"
    official = wheels / f"e2a-{SDK_VERSION}-py3-none-any.whl"
    if not official.exists():
        _pip(
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(wheels),
            f"e2a=={SDK_VERSION}",
        )
    # Built from a copy of the sources alone: a build/ folder left in the checkout by an
    # earlier build would otherwise slip its stale files into the wheel.
    source = tmp_path_factory.mktemp("source") / "e2a-gateway"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    built = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(built), str(source))
    [ours] = built.glob("e2a_gateway-*.whl")
    venv = tmp_path_factory.mktemp("both") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "--no-deps", "--no-index", str(official), str(ours))
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sdk_site = subprocess.run(
        [str(sdk5_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # After the venv's own site-packages: these lend dependencies, never the two packages.
    dependencies = [sysconfig.get_path("purelib"), sdk_site]
    (Path(site) / "dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    return python


def _recorded_files(python: Path, distribution: str) -> dict[Path, str]:
    """Every file a distribution's RECORD lists, with the hash it was installed with."""
    [info] = (python.parent.parent / "lib").glob(
        f"python3*/site-packages/{distribution}-*.dist-info"
    )
    files = {}
    with (info / "RECORD").open() as record:
        for path, digest, _ in csv.reader(record):
            if digest:
                files[(info.parent / path).resolve()] = digest
    return files


def test_neither_package_overwrites_the_other(both: Path) -> None:
    official = _recorded_files(both, "e2a")
    ours = _recorded_files(both, "e2a_gateway")
    assert any(path.parent.name == "e2a" for path in official)
    assert any(path.parent.name == "e2a_gateway" for path in ours)
    assert not official.keys() & ours.keys()
    for path, digest in {**official, **ours}.items():
        algorithm, _, expected = digest.partition("=")
        actual = base64.urlsafe_b64encode(hashlib.new(algorithm, path.read_bytes()).digest())
        assert actual.rstrip(b"=").decode() == expected, f"{path} is not as installed"


def test_both_import_and_our_command_runs(both: Path, tmp_path: Path) -> None:
    venv = both.parent.parent
    probe = (
        "import json, e2a, e2a.v1, e2a_gateway, e2a_gateway.v1\n"
        "print(json.dumps({'sdk': e2a.__file__, 'client': e2a.v1.E2AClient.__module__,"
        " 'ours': e2a_gateway.__file__, 'ours_client': e2a_gateway.v1.E2AClient.__module__}))"
    )
    found = json.loads(
        subprocess.run(
            [str(both), "-I", "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
        ).stdout
    )
    assert Path(found["sdk"]).parent == next((venv / "lib").glob("python3*/site-packages/e2a"))
    assert Path(found["ours"]).parent.name == "e2a_gateway"
    assert found["ours"].startswith(str(venv))
    assert found["client"].startswith("e2a.v1") and found["ours_client"].startswith("e2a_gateway.")

    def e2a(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(venv / "bin" / "e2a"), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)

    version = e2a("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"e2a {__version__}"
    usage = e2a("--help")
    assert usage.returncode == 0 and "serve" in usage.stdout and "listen" in usage.stdout
    assert "pip install e2a" not in usage.stdout + usage.stderr


async def test_their_client_installed_beside_ours_talks_to_our_gateway(
    both: Path, running: RunningGateway, make_account: Any
) -> None:
    alice: Account = await make_account("alice@example.com")
    address = f"beside@{running.gateway.settings.shared_domain}"
    made = await run_sdk(
        both,
        running.addresses.http_url,
        {"default": alice.key},
        [
            {"do": "info"},
            {"do": "agents.create", "args": [{"email": address, "name": "Beside"}]},
            {"do": "agents.list"},
        ],
    )
    assert value(made[0], "DeploymentInfoView")["gateway_version"] == __version__
    assert value(made[1])["email"] == address
    assert [agent["email"] for agent in value(made[2])] == [address]


def test_the_oldest_setuptools_allowed_builds_the_wheel(tmp_path: Path) -> None:
    # A build without isolation (an offline index, a distribution's own setuptools) uses the
    # setuptools it finds, so [build-system] must name the oldest one that reads this
    # pyproject.toml: the license as an SPDX expression needs setuptools 77.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    [floor] = [requirement for requirement in requires if requirement.startswith("setuptools")]
    oldest = floor.replace(">=", "==")
    python = cached_venv(f"build-{oldest}", [oldest, "wheel"])
    source = tmp_path / "e2a-gateway"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    wheel_dir = tmp_path / "wheel"
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet"]
    command += ["--no-deps", "--no-build-isolation", "--wheel-dir", str(wheel_dir), str(source)]
    built = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = wheel_dir.glob("e2a_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [name for name in archive.namelist() if name.endswith("/METADATA")]
        assert "License-Expression: Apache-2.0" in archive.read(metadata).decode()
