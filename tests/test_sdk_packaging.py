"""`pip install e2a` (the base dependencies only) gives a working SDK and CLI client.

A virtualenv holds exactly the `[project] dependencies` of pyproject.toml, none of the
`server` extra; this source tree is put on its path (a `.pth` file) and the `e2a` console
script is written from `[project.scripts]`, as pip would. The virtualenv is cached
(tests/venvs.py), keyed by the dependency list. The SDK and the CLI client then run against a
live gateway, and the gateway's commands say how to install it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio

from e2a_gateway.app import RunningGateway
from e2a_gateway.cli.main import SERVER_MISSING
from tests.conftest import Account
from tests.delivery_support import accept, create_agent, mail
from tests.venvs import cached_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUN_SECONDS = 30
SERVER_MODULES = ("trio", "quart", "quart_trio", "hypercorn", "dkim", "spf", "dns", "psycopg")


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


@pytest.fixture(scope="session")
def base_python() -> Path:
    """A python with only the base dependencies, importing `e2a` from this source tree."""
    requirements = sorted(_project()["dependencies"])
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    python = cached_venv(f"base-{digest}", requirements)
    site = next(python.parent.parent.glob("lib/python3*/site-packages"))
    (site / "e2a-source.pth").write_text(f"{ROOT}\n")
    module, _, function = _project()["scripts"]["e2a"].partition(":")
    script = python.parent / "e2a"
    script.write_text(
        f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    )
    script.chmod(0o755)
    return python


async def run(
    base_python: Path, home: Path, *command: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a command of the base virtualenv (`python …` or `e2a …`) with a private HOME."""
    program = base_python.parent / command[0]
    with trio.fail_after(RUN_SECONDS):
        done = await trio.run_process(
            [str(program), *command[1:]],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=home,
            env={"HOME": str(home), "PATH": os.environ.get("PATH", ""), **(env or {})},
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_base_install_has_the_sdk_and_client_but_not_the_gateway(
    base_python: Path, tmp_path: Path, running: RunningGateway, make_account: Any
) -> None:
    check = (
        "import importlib.util, json, sys\n"
        "import e2a_gateway, e2a_gateway.v1\n"
        f"missing = [m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m) is None]\n"
        "print(json.dumps({'e2a': e2a_gateway.__file__, 'missing': missing,\n"
        "    'loaded': sorted(m for m in sys.modules if m.split('.')[0] in missing)}))\n"
    )
    code, out, err = await run(base_python, tmp_path, "python", "-c", check)
    assert code == 0, err
    found = json.loads(out)
    assert found["e2a"] == str(ROOT / "e2a_gateway" / "__init__.py")
    assert found["missing"] == list(SERVER_MODULES)  # none of the server extra is installed

    code, out, err = await run(base_python, tmp_path, "e2a", "--help")
    assert code == 0, err
    assert "serve" in out and "login" in out and "listen" in out
    for command in (["serve"], ["migrate"], ["bootstrap", "--email", "you@example.com"]):
        code, out, err = await run(base_python, tmp_path, "e2a", *command)
        assert (code, out) == (1, ""), err
        assert err.startswith(f"e2a: {SERVER_MISSING}"), err

    alice: Account = await make_account("alice@example.com")
    agent = await create_agent(alice, "base")
    first = await accept(running.gateway, [agent], mail("Waiting"))
    env = {"E2A_URL": running.addresses.http_url, "E2A_API_KEY": alice.key}
    code, out, err = await run(base_python, tmp_path, "e2a", "agents", "list", "--json", env=env)
    assert code == 0, err
    assert [a["email"] for a in json.loads(out)] == [agent]

    # listen: the WebSocket on the asyncio loop, as there is no trio here.
    code, out, err = await run(
        base_python, tmp_path, "e2a", "listen", "--json", "--max", "1", env=env
    )
    assert code == 0, err
    (line,) = out.splitlines()
    assert (json.loads(line)["message_id"], json.loads(line)["subject"]) == (first, "Waiting")

    code, _, err = await run(base_python, tmp_path, "e2a", "agents", "list")
    assert code == 1 and "Not logged in: run `e2a login`" in err
