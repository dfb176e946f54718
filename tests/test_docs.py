"""What the documentation tells a reader to type works: the commands and flags it names exist,
the agents it registers may be registered, and what it says about the configuration and the
reserved slugs is what the gateway does."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import re
import shlex
import textwrap
from pathlib import Path
from typing import cast
from urllib.parse import unquote

import pytest
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from e2a_gateway.addresses import RESERVED_SLUGS, AddressError, check_slug
from e2a_gateway.cli.client_commands import EXAMPLES as CLIENT_EXAMPLES
from e2a_gateway.cli.main import EXAMPLES as SERVER_EXAMPLES
from e2a_gateway.cli.main import build_parser
from e2a_gateway.config import ConfigError, load_settings
from e2a_gateway.mailauth.dns_answers import Resolver
from e2a_gateway.storage.base import Storage

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

REGISTRATIONS = (
    re.compile(r"e2a agents register ([a-z0-9][a-z0-9-]*)"),
    re.compile(r"register_agent\(\s*\"([^\"]+)\""),
    re.compile(r"\"slug\"\s*:\s*\"([^\"]+)\""),
    re.compile(r"`([a-z0-9-]+)` → `\1@<shared_domain>`"),
)
"""The ways the documentation registers an agent by slug."""


def documented_texts() -> list[tuple[str, str]]:
    """Every document, and every `--help` example, with where it comes from."""
    texts = [(path.name, path.read_text(encoding="utf-8")) for path in DOCUMENTS]
    for name, example in (SERVER_EXAMPLES | CLIENT_EXAMPLES).items():
        texts.append((f"e2a {name} --help", example))
    return texts


def test_every_slug_the_documentation_registers_may_be_registered() -> None:
    registered = [
        (where, slug)
        for where, text in documented_texts()
        for pattern in REGISTRATIONS
        for slug in pattern.findall(text)
    ]
    assert registered, "the patterns no longer find the documented registrations"
    refused = []
    for where, slug in registered:
        try:
            check_slug(slug)
        except AddressError as exc:
            refused.append(f"{where}: {exc}")
    assert refused == []


def test_the_reserved_slugs_api_md_lists_are_the_gateways() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    found = re.search(r"\*\*Reserved slugs\*\*: ([a-z0-9, \n-]+)\.", text)
    assert found, "docs/api.md no longer lists the reserved slugs"
    listed = {slug.strip() for slug in found.group(1).split(",")}
    assert listed == set(RESERVED_SLUGS)


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser | None = action.choices.get(name)
            return found
    return None


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


COMMAND_LINE = re.compile(r"(?:^|\$ |\| |`|sudo |bin/)(?:\S*/)?e2a ((?:[a-z-]+ ?)+[^`|#\n]*)")
"""`e2a …` as the documents write a command: in backquotes, after a prompt, a pipe or sudo."""


def test_every_command_and_flag_the_documentation_names_exists() -> None:
    root = build_parser()
    checked = 0
    unknown = []
    for where, text in documented_texts():
        for line in text.splitlines():
            for match in COMMAND_LINE.finditer(line):
                command = match.group(1)
                parser, path = root, []
                for word in command.split():
                    inner = _subcommand(parser, word) if re.fullmatch(r"[a-z-]+", word) else None
                    if inner is None:
                        break
                    parser, path = inner, [*path, word]
                if not path:
                    continue
                checked += 1
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command):
                    if flag not in _flags(parser):
                        unknown.append(f"{where}: e2a {' '.join(path)} has no {flag}")
    assert checked > 100, "the pattern no longer finds the documented commands"
    assert unknown == []


@pytest.mark.parametrize("document", ["README.md", "docs/cli.md"])
def test_the_documented_subcommands_exist(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    table = re.search(r"`e2a login`, (.+?) \| client commands", text)
    named = set(re.findall(r"`(?:e2a )?([a-z]+)`", table.group(1))) if table else set()
    named |= set(re.findall(r"^\| `e2a ([a-z]+)", text, flags=re.MULTILINE))
    assert named
    assert {name for name in named if _subcommand(build_parser(), name) is None} == set()


EXAMPLE_VALUES = {
    ("smtp", "hostname"),
    ("smtp", "tls_cert"),
    ("smtp", "tls_key"),
    ("outbound_smtp", "host"),
}
"""Keys config.example.toml shows with an example rather than their default."""

COMMENTED_SETTING = re.compile(r"^# ?([a-z0-9_]+) = (.+?)(?:\s+#.*)?$")


def test_every_commented_setting_in_config_example_is_its_default(tmp_path: Path) -> None:
    """Uncommenting any one line of config.example.toml is accepted and changes nothing (a
    `""` counts as unset, as the loader takes it)."""
    defaults = load_settings(None, environ={}).model_dump()
    section = ""
    checked = 0
    for line in (ROOT / "config.example.toml").read_text(encoding="utf-8").splitlines():
        if header := re.match(r"^\[([a-z_]+)\]", line):
            section = header.group(1)
            continue
        setting = COMMENTED_SETTING.match(line)
        if setting is None:
            continue
        key, value = setting.groups()
        if (section, key) in EXAMPLE_VALUES:
            continue
        path = tmp_path / "e2a.toml"
        path.write_text(f"[{section}]\n{key} = {value}\n" if section else f"{key} = {value}\n")
        loaded = load_settings(path, environ={}).model_dump()
        checked += 1
        got = loaded[section][key] if section else loaded[key]
        want = defaults[section][key] if section else defaults[key]
        assert got == want or (got == "" and want is None), f"{section}.{key}"
    assert checked > 50


def test_the_loggers_the_documentation_shows_are_the_gateways() -> None:
    """A log line or logger named in the docs is one the gateway writes to, so a filter
    written from the docs (`grep 'e2a.smtp:'`, `logger == "e2a.webhooks"`) finds its lines."""
    source = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "e2a_gateway").rglob("*.py")
    )
    loggers = set(re.findall(r"getLogger\(\"([a-z0-9_.]+)\"\)", source))
    shown_as = re.compile(
        r"(?:INFO|WARNING|ERROR|DEBUG) ([a-z0-9_.]+):|\"logger\": \"([a-z0-9_.]+)\""
    )
    shown = {
        line_name or json_name
        for _, text in documented_texts()
        for line_name, json_name in shown_as.findall(text)
    }
    assert shown
    assert shown - loggers == set()


CLIENT_ONLY_ELSEWHERE = {"serve", "bootstrap", "migrate", "backup", "mcp"}
"""The server commands (and `e2a mcp`), which README.md's table lists on rows of their own and
docs/cli.md leaves to README.md."""


def _subcommands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_every_subcommand_is_in_the_command_tables() -> None:
    """A command `e2a --help` lists is in README.md's table of commands and in docs/cli.md's,
    so a reader of either learns it exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"^## Commands\n(.+?)\n\n", readme, flags=re.MULTILINE | re.DOTALL)
    assert table, "README.md no longer has its table of commands"
    in_readme = set(re.findall(r"`(?:e2a )?([a-z]+)", table.group(1)))
    cli = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    in_cli = set(re.findall(r"`e2a ([a-z]+)", cli))
    commands = _subcommands()
    assert commands
    assert commands - in_readme == set()
    assert commands - CLIENT_ONLY_ELSEWHERE - in_cli == set()


def test_the_exit_codes_docs_cli_md_lists_are_the_clients() -> None:
    """docs/cli.md's table of exit codes names each code `e2a_gateway.cli.exit_codes` has, and
    no other (130 and 141 are the shell's, for Ctrl-C and for a reader that went away)."""
    from e2a_gateway.cli import exit_codes

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = re.search(r"### Exit codes\n(.+?)\n\n```", text, flags=re.DOTALL)
    assert section, "docs/cli.md no longer has its table of exit codes"
    listed = {int(code) for code in re.findall(r"^\| `(\d+)` \|", section.group(1), re.MULTILINE)}
    codes = {value for name, value in vars(exit_codes).items() if name.isupper()}
    assert listed - {130, 141} == codes


def _settings_keys() -> set[str]:
    """Every setting the settings model has, as `section.key` (top-level keys bare)."""
    keys = set()
    for name, value in load_settings(None, environ={}).model_dump().items():
        if isinstance(value, dict):
            keys |= {f"{name}.{key}" for key in value}
        else:
            keys.add(name)
    return keys


def test_config_example_lists_every_setting_and_no_other() -> None:
    """config.example.toml "lists every key with its default" (README.md): each key of the
    settings model is in it, and each key in it is one the gateway reads."""
    section = ""
    listed = set()
    for line in (ROOT / "config.example.toml").read_text(encoding="utf-8").splitlines():
        if header := re.match(r"^\[([a-z_]+)\]", line):
            section = header.group(1)
        elif setting := (COMMENTED_SETTING.match(line) or re.match(r"^([a-z0-9_]+) = ", line)):
            listed.add(f"{section}.{setting.group(1)}" if section else setting.group(1))
    assert listed ^ _settings_keys() == set()


DOCTOR_CHECK = re.compile(r"^[a-z]+\.[a-z_]+$")


def test_every_setting_the_documentation_names_exists() -> None:
    """A setting written `section.key` in a document or an example is one the gateway reads (a
    doctor check such as `dns.mx` or a file such as `http.py` is no setting), and a table
    written `[section]` is one of its sections."""
    keys = _settings_keys()
    sections = {key.split(".")[0] for key in keys if "." in key}
    doctor = (ROOT / "e2a_gateway" / "cli" / "doctor.py").read_text(encoding="utf-8")
    checks = {name for name in re.findall(r"\"([a-z_.]+)\"", doctor) if DOCTOR_CHECK.match(name)}
    unknown = []
    for where, text in documented_texts():
        for section, key in re.findall(r"`([a-z_]+)\.([a-z0-9_]+)[^`]*`", text):
            name = f"{section}.{key}"
            if section in sections and key != "py" and name not in checks and name not in keys:
                unknown.append(f"{where}: {name}")
        for table in re.findall(r"`\[([a-z_]+)\]`", text):
            if table not in sections:
                unknown.append(f"{where}: [{table}]")
    assert unknown == []


def test_every_make_target_the_documentation_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    named = [
        (where, target)
        for where, text in documented_texts()
        for target in re.findall(r"(?:`|^|\$ |[(;] ?)make ([a-z][a-z0-9-]*)", text, re.MULTILINE)
    ]
    assert len(named) > 5, "the pattern no longer finds the documented make targets"
    assert [f"{where}: make {target}" for where, target in named if target not in targets] == []


def test_the_metrics_operations_md_lists_are_the_gateways() -> None:
    """Every metric /metrics serves is in docs/operations.md's tables, and every `e2a_…` series
    a document names is one it serves (a counter by its `_total` name, a histogram's `_sum`,
    `_count` and `_bucket` too)."""
    from e2a_gateway.metrics import Metrics

    served = set()
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        served.add(name)
        if family.type == "histogram":
            served |= {f"{family.name}_{part}" for part in ("sum", "count", "bucket")}
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    tabled = set(re.findall(r"^\| `(e2a_[a-z_]+)` \|", operations, flags=re.MULTILINE))
    assert tabled, "docs/operations.md no longer has its table of metrics"
    documented = {
        (where, name)
        for where, text in documented_texts()
        for name in re.findall(r"(?<![\w/])(e2a_[a-z_]+?)(?:\{[^}]*\})?(?=[`\[ ,)])", text)
        if re.search(r"_(total|seconds|active|jobs|up|depth|transactions|sum|count|bucket)$", name)
    }
    parts = {name for name in served if name.endswith(("_sum", "_count", "_bucket"))}
    assert served - parts - tabled == set()
    assert [f"{where}: {name}" for where, name in documented if name not in served] == []


REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])((?:e2a_gateway|tests|packaging|bench|\.ci)/[\w./*-]*\w)"
)


def test_every_repository_path_the_documentation_names_exists() -> None:
    """`e2a_gateway/…`, `tests/…`, `packaging/…`, `bench/…` and `.ci/…` as the documents name
    them (a file, a folder, a glob, or a module without `.py`) are in the repository."""
    missing = []
    for where, text in documented_texts():
        for path in set(REPOSITORY_PATH.findall(text)):
            if not (any(ROOT.glob(path)) or (ROOT / f"{path}.py").exists()):
                missing.append(f"{where}: {path}")
    assert missing == []


def test_the_mcp_tool_count_readme_gives_is_the_gateways() -> None:
    """README.md's "N of e2a's M names" is what `tools/list` serves: how many of e2a's tool
    names (its vendored list) the gateway has, out of how many."""
    from e2a_gateway.mcp.tools import TOOLS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"\((every one|\d+) of e2a's (\d+) names", readme)
    assert stated, "README.md no longer says how many of e2a's tool names are served"
    e2a_names = set(json.loads((ROOT / "tests/data/e2a/tool-names.v1.json").read_text()))
    served = {tool.name for tool in TOOLS} & e2a_names
    count, out_of = stated.groups()
    assert int(out_of) == len(e2a_names)
    assert (len(e2a_names) if count == "every one" else int(count)) == len(served)


TOML_BLOCK = re.compile(r"^( *)```toml\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
INLINE_SETTING = re.compile(r"`([a-z_]+)\.([a-z0-9_]+) = ([^`]+)`")
"""`section.key = value` as a sentence writes one setting."""
PLACEHOLDER_VALUE = re.compile(r"^[A-Z]$|…")
"""A value the reader fills in (`smtp.processes = N`, `database.url = "postgresql://…"`)."""


def test_every_toml_block_and_setting_the_documentation_writes_loads(tmp_path: Path) -> None:
    """A ```toml block, or a `section.key = value` in a sentence, is a configuration the
    gateway accepts as written: its keys exist and its values are valid."""
    checked = []
    refused = []
    path = tmp_path / "e2a.toml"
    for where, text in documented_texts():
        written = [textwrap.dedent(block) for _, block in TOML_BLOCK.findall(text)]
        for section, key, value in INLINE_SETTING.findall(text):
            if f"{section}.{key}" in _settings_keys() and not PLACEHOLDER_VALUE.search(value):
                written.append(f"[{section}]\n{key} = {value}\n")
        for toml in written:
            path.write_text(toml, encoding="utf-8")
            checked.append(toml)
            try:
                load_settings(path, environ={})
            except ConfigError as exc:
                refused.append(f"{where}: {toml!r}: {exc}")
    assert len(checked) > 10, "the patterns no longer find the documented settings"
    assert refused == []


UNITS = {"": 1, "s": 1, "octets": 1, "KiB": 1024, "MiB": 1024**2}
NUMBER = r"(\d+(?:,\d{3})*(?:\.\d+)?)(?: ?(KiB|MiB|s|octets))?"
DEFAULT_BESIDE_KEY = re.compile(
    rf"`([a-z_]+)\.([a-z0-9_]+)`,? \(?(?:default:? )?{NUMBER}(?=[ ;,)])(?! ?[-\u2013/])"
)
"""A default written next to its key: `smtp.max_errors` (20), `http.keep_alive_seconds` (15 s
by default), `smtp.ipv4_network_prefix` 24, `outbound_smtp.connection_idle_seconds` (default 5)."""
DEFAULT_AFTER_KEY = re.compile(
    rf"`([a-z_]+)\.([a-z0-9_]+)`[^`.;(]{{0,40}}(?:\(default \**|at its default of ){NUMBER}"
)
"""A default a few words after its key: `http.max_concurrent_exports` of them at once (default
2), `outbound_smtp.timeout_seconds` at its default of 300 s."""


def _stated_number(number: str, unit: str | None) -> float:
    return float(number.replace(",", "")) * UNITS[unit or ""]


def _numeric_defaults() -> dict[str, float]:
    """Each setting whose default is a number, as `section.key`."""
    numbers = {}
    for section, values in load_settings(None, environ={}).model_dump().items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    numbers[f"{section}.{key}"] = float(value)
    return numbers


def _stated_defaults(text: str) -> list[tuple[str, float]]:
    """(key, default) as `text` states them: in a table whose column headed "default" follows
    the column naming the keys (`| `smtp.max_line_length` / `smtp.max_command_length` | 1000 /
    512 octets |`), and beside a key in a sentence or cell."""
    stated = []
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if not header:
            header = [cell.lower() for cell in cells]
            continue
        column = next((i for i, name in enumerate(header) if name.startswith("default")), 0)
        if column == 0 or len(cells) != len(header):
            continue
        keys = re.match(r"^`[a-z_]+\.[a-z0-9_]+`(?: / `[a-z_]+\.[a-z0-9_]+`)*", cells[column - 1])
        values = re.match(rf"^{NUMBER}(?: / {NUMBER})*", cells[column])
        if keys and values:
            names = re.findall(r"`([^`]+)`", keys.group(0))
            numbers = re.findall(NUMBER, values.group(0))
            unit = numbers[-1][1]
            stated += [
                (name, _stated_number(number, own_unit or unit))
                for name, (number, own_unit) in zip(names, numbers, strict=True)
            ]
    for pattern in (DEFAULT_BESIDE_KEY, DEFAULT_AFTER_KEY):
        for section, key, number, unit in pattern.findall(text):
            stated.append((f"{section}.{key}", _stated_number(number, unit)))
    return stated


def test_the_defaults_the_documentation_states_are_the_gateways() -> None:
    """A default a document gives for a numeric setting, in a table of limits or beside the
    key, is the settings model's."""
    defaults = _numeric_defaults()
    checked = 0
    wrong = []
    for where, text in documented_texts():
        for name, stated in _stated_defaults(text):
            if name not in defaults:
                continue
            checked += 1
            if stated != defaults[name]:
                wrong.append(
                    f"{where}: {name} default {stated:g}, the gateway's {defaults[name]:g}"
                )
    assert checked > 40, "the patterns no longer find the documented defaults"
    assert wrong == []


VARIABLE = re.compile(
    r"\b(E2A_[A-Z0-9_]*[A-Z0-9])(?![A-Z0-9]|_[A-Z0-9])(_\*)?(?! is not a setting of this gateway)"
)
"""`E2A_…` as a document names a variable, or a family of them (`E2A_TEST_*`); not the name a
warning shows as the misspelling it is about."""
READERS = ("e2a_gateway", "tests", "packaging", "bench")
"""Where the variables of clients, tests and tools are read."""


def _read_variables() -> set[str]:
    """Every `E2A_…` name the repository's code, scripts and Makefile spell out, but for the
    list of names `e2a_gateway/env_names.py` keeps."""
    env_names = ROOT / "e2a_gateway" / "env_names.py"
    sources = [ROOT / "Makefile"] + [
        path
        for folder in READERS
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sh") and path != env_names
    ]
    return {
        name
        for path in sources
        for name in re.findall(r"E2A_[A-Z0-9_]+", path.read_text(encoding="utf-8"))
    }


def test_every_environment_variable_the_documentation_names_is_read() -> None:
    """An `E2A_*` variable a document or config.example.toml names is one the gateway reads
    (a setting's, or an alias of one), one e2a_gateway.env_names lists as e2a's and not used
    here (the documents say so), or one a client, test or tool of this repository reads; a
    family `E2A_X_*` has such members."""
    from e2a_gateway.config import setting_env_names
    from e2a_gateway.env_names import (
        CLIENT_PREFIXES,
        CLIENT_VARIABLES,
        E2A_ALIASES,
        UNUSED_E2A_PREFIXES,
        UNUSED_E2A_VARIABLES,
    )

    read_elsewhere = _read_variables()
    served = set(setting_env_names()) | set(E2A_ALIASES) | set(UNUSED_E2A_VARIABLES)
    clients = {name for name in CLIENT_VARIABLES if name in read_elsewhere}
    clients |= {name for name in read_elsewhere if name.startswith(CLIENT_PREFIXES)}
    known = served | clients
    families = {prefix.rstrip("_") for prefix in (*CLIENT_PREFIXES, *UNUSED_E2A_PREFIXES)}
    checked = 0
    unknown = []
    example = ("config.example.toml", (ROOT / "config.example.toml").read_text(encoding="utf-8"))
    for where, text in [*documented_texts(), example]:
        for name, family in VARIABLE.findall(text):
            checked += 1
            if family:
                found = name in families or any(item.startswith(f"{name}_") for item in known)
            else:
                found = name in known
            if not found:
                unknown.append(f"{where}: {name}{family}")
    assert checked > 50, "the pattern no longer finds the documented variables"
    assert unknown == []


SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
PROMPT = re.compile(r"^\s*[$>] ")
"""A console block's command lines (`$ e2a inbox`, and `> ` continuing one); the others are
what the command printed."""
ANGLE_PLACEHOLDER = re.compile(r"<[^<>\n]+>")
"""`<id>`, `<your e2a repository>`: what the reader writes in."""
HELP_NOTE = re.compile(r"\s{2,}\(.*\)$")
"""What a `--help` example says of the command beside it: `e2a config url    (e2a's name)`."""
RUNNERS = {"sudo", "exec", "xargs", "time", "nohup", "env", "systemd-run"}
"""Commands that run the command after them (and their options); `xargs` adds an argument."""
RUNNER_VALUE_OPTIONS = {"-u", "-g", "-n", "-I", "-P", "-p"}
"""Their options followed by a value (`sudo -u e2a`, `systemd-run -p User=e2a`)."""


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block of a Markdown text, indented ones too."""
    blocks = []
    language: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence is None:
            body.append(line)
        elif language is None:
            language, body = fence.group(1), []
        else:
            blocks.append((language, textwrap.dedent("\n".join(body))))
            language = None
    return blocks


def _is_whole(command: str) -> bool:
    """Whether `command` closes every quote it opens."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def _command_lines(block: str, console: bool) -> list[str]:
    """The commands of a shell block, continued lines (`\\`, a console's `> `, an open quote)
    joined."""
    commands: list[str] = []
    joined = ""
    for line in block.splitlines():
        if console:
            if not PROMPT.match(line):
                joined = ""
                continue
            line = PROMPT.sub("", line, count=1)
        joined = f"{joined}\n{line}" if joined else line
        if joined.endswith("\\"):
            joined = joined[:-1]
        elif _is_whole(joined):
            commands.append(joined)
            joined = ""
    assert not joined, f"a command never ends: {joined!r}"
    return commands


def _help_commands(example: str) -> list[str]:
    """The command lines of a `--help` example (its prose lines do not parse as shell)."""
    lines = (HELP_NOTE.sub("", line) for line in example.splitlines())
    return [line for line in lines if _is_whole(line)]


def _e2a_invocations(command: str) -> list[list[str]]:
    """The arguments of each `e2a …` the shell command runs (the command word, after variable
    assignments, `sudo` or `xargs`; a path ending in /e2a included), placeholders replaced."""
    text = ANGLE_PLACEHOLDER.sub("placeholder", command)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    found: list[list[str]] = []
    segment: list[str] = []
    for token in [*lexer, ";"]:
        if not (token and set(token) <= set("();<>|&")):
            segment.append(token)
            continue
        while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
            segment.pop(0)
        added = []
        while segment and segment[0] in RUNNERS:
            added += ["placeholder"] if segment.pop(0) == "xargs" else []
            while segment and segment[0].startswith("-"):
                segment = segment[2:] if segment[0] in RUNNER_VALUE_OPTIONS else segment[1:]
        if segment and segment[0].rsplit("/", 1)[-1] == "e2a":
            found.append(segment[1:] + added)
        segment = []
    return found


def documented_command_lines() -> list[tuple[str, str]]:
    """(where, command) for each shell command of a document's sh or console blocks and of
    the `--help` examples."""
    commands = []
    for where, text in documented_texts():
        if not where.endswith(".md"):
            commands += [(where, line) for line in _help_commands(text)]
            continue
        for language, block in fenced_blocks(text):
            if language in SHELL_LANGUAGES:
                lines = _command_lines(block, console=language == "console")
                commands += [(where, line) for line in lines]
    return commands


def test_every_command_line_the_documentation_shows_parses() -> None:
    """Each `e2a …` a shell or console block of a document (or a `--help` example) runs is
    accepted by the `e2a` command's own parser, as written: its subcommands, flags, their
    values and the arguments it requires."""
    checked = 0
    refused = []
    for where, command in documented_command_lines():
        for arguments in _e2a_invocations(command):
            checked += 1
            errors = io.StringIO()
            try:
                with contextlib.redirect_stderr(errors):
                    build_parser().parse_args(arguments)
            except SystemExit as exc:
                if exc.code != 0:
                    refused.append(f"{where}: e2a {shlex.join(arguments)}: {errors.getvalue()}")
    assert checked > 80, "the patterns no longer find the documented command lines"
    assert refused == []


ROUTE = re.compile(
    r"\b((?:(?:GET|POST|PUT|PATCH|DELETE)/)*(?:GET|POST|PUT|PATCH|DELETE)) (/[^\s`|),;]*)"
)
"""`METHOD /path` (or `GET/PATCH/DELETE /path`) as a document names a route."""
PATH_VALUES = {"index": "0"}
"""A value for each path placeholder that is not any string (`{index}` is a number)."""


class ServedRoutes:
    """The gateway's routes: the app's URL map, built as `e2a serve` builds it but never
    served, and the MCP endpoint mounted in front of it (which answers POST, and GET and DELETE
    with a 405 saying it is stateless)."""

    def __init__(self) -> None:
        from e2a_gateway.gateway import Gateway
        from e2a_gateway.http_app import create_app
        from e2a_gateway.hub.job_queue import JobQueue

        settings = load_settings(None, environ={})
        gateway = Gateway(settings, cast(Storage, None), "", cast(Resolver, None), JobQueue())
        self.app = create_app(gateway)
        self.adapter = self.app.url_map.bind("localhost")

    def endpoint(self, method: str, path: str) -> str | None:
        """The endpoint serving `METHOD path`, None when none does."""
        from e2a_gateway.mcp.http import MOUNT_PATH

        if path == MOUNT_PATH:
            return "mcp" if method in ("POST", "GET", "DELETE") else None
        try:
            endpoint, _ = self.adapter.match(path, method=method)
        except HTTPException:
            return None
        return str(endpoint)

    def serves(self, method: str, path: str) -> bool:
        """Whether the gateway serves `METHOD path`."""
        return self.endpoint(method, path) is not None

    def statuses(self, method: str, path: str) -> set[int] | None:
        """The statuses the OpenAPI document gives `METHOD path` (a route under `/api`), None
        for a route it does not describe."""
        from e2a_gateway.api.openapi import OPERATIONS, _replies, api_routes

        try:
            rule, _ = self.adapter.match(path, method=method, return_rule=True)
        except HTTPException:
            return None
        for route in api_routes(self.app.url_map):
            if route.rule is rule and route.method == method:
                return set(_replies(OPERATIONS[rule.endpoint], route))
        return None

    def body_model(self, endpoint: str) -> type[BaseModel] | None:
        """The model the endpoint reads its JSON body with: the OpenAPI document's for
        `/api/v1`, the one its handler passes to `read_json` for `/v1`."""
        from e2a_gateway.api.openapi import OPERATIONS

        if endpoint in OPERATIONS:
            return OPERATIONS[endpoint].body
        view = inspect.unwrap(self.app.view_functions[endpoint])
        read = re.search(r"read_json\((\w+)", inspect.getsource(view))
        return view.__globals__[read.group(1)] if read else None


def _example_path(path: str) -> str:
    """`path` as a request would send it: placeholders (`{email}`, `…`) given values, no
    query."""
    path = path.partition("?")[0]
    path = re.sub(r"\{([a-z_]+)\}", lambda name: PATH_VALUES.get(name.group(1), "x1"), path)
    return path.replace("…", "x1").replace("<", "").replace(">", "")


def test_every_route_the_documentation_names_is_served() -> None:
    """A route a document names as `METHOD /path` is one the gateway serves with that method:
    as written, or under `/api/v1` (the prefix docs/api.md leaves out of its 2.x routes)."""
    served = ServedRoutes().serves
    checked = 0
    missing = []
    for where, text in documented_texts():
        for methods, path in ROUTE.findall(text):
            example = _example_path(path)
            for method in methods.split("/"):
                checked += 1
                if not (served(method, example) or served(method, f"/api/v1{example}")):
                    missing.append(f"{where}: {method} {path}")
    assert checked > 100, "the pattern no longer finds the documented routes"
    assert missing == []


ROUTE_STATUS = re.compile(
    r"`?(GET|POST|PUT|PATCH|DELETE) (/[^\s`]*)`?,? (?:answers |returns | +)(\d{3})\b"
)
"""A route with its answer's status: `POST /users/me/api-keys` answers 201, or a listing's
`POST /api/v1/agents/{email}/dead-letters/redeliver   202`."""


def test_the_statuses_the_documentation_gives_routes_are_in_the_openapi_document() -> None:
    """A status a document says a route under `/api` answers is one the OpenAPI document gives
    that route."""
    routes = ServedRoutes()
    checked = 0
    wrong = []
    for where, text in documented_texts():
        for method, path, status in ROUTE_STATUS.findall(text):
            example = _example_path(path)
            for candidate in (example, f"/api/v1{example}"):
                statuses = routes.statuses(method, candidate)
                if statuses is not None:
                    checked += 1
                    if int(status) not in statuses:
                        wrong.append(f"{where}: {method} {path} {status}: {sorted(statuses)}")
                    break
    assert checked >= 5, "the pattern no longer finds the documented statuses"
    assert wrong == []


CURL_VALUE_OPTIONS = {"-X", "-H", "-d", "--data", "--data-binary", "-o", "-u", "-F", "-T"}
"""curl's options followed by a value (the rest take none, or are glued to theirs)."""


def _curl_requests(command: str) -> list[tuple[str, str, str | None]]:
    """(method, path, body) of each request a shell command's `curl` makes: `-X`'s method, else
    POST with `-d`, else GET; the `-d` body, if any."""
    requests = []
    tokens = shlex.split(ANGLE_PLACEHOLDER.sub("x1", command), comments=True)
    for start in (i for i, token in enumerate(tokens) if token == "curl"):
        method, url, body = "", "", None
        arguments = iter(tokens[start + 1 :])
        for token in arguments:
            if token in ("|", "&&", ";") or token.endswith(";"):
                break
            if token in CURL_VALUE_OPTIONS:
                value = next(arguments, "")
                method = value if token == "-X" else method
                body = value if token.startswith(("-d", "--data")) else body
            elif not token.startswith("-") and not url:
                url = token
        path = "/" + url.split("://")[-1].partition("/")[2]
        requests.append((method or ("POST" if body else "GET"), unquote(path), body))
    return requests


def test_every_request_the_documentation_curls_is_served_and_valid() -> None:
    """Each `curl` of a document's shell blocks asks for a route the gateway serves with that
    method, and its body is one the route's model takes (its fields, their types and values)."""
    routes = ServedRoutes()
    checked = 0
    refused = []
    for where, command in documented_command_lines():
        for method, path, body in _curl_requests(command):
            checked += 1
            endpoint = routes.endpoint(method, _example_path(path))
            if endpoint is None:
                refused.append(f"{where}: curl {method} {path}: no such route")
                continue
            model = routes.body_model(endpoint)
            if body is not None and model is None:
                refused.append(f"{where}: curl {method} {path}: the route reads no body")
            elif body is not None and model is not None:
                try:
                    model.model_validate(json.loads(body))
                except ValidationError as exc:
                    refused.append(f"{where}: curl {method} {path} -d {body}: {exc}")
    assert checked > 5, "the pattern no longer finds the documented curl commands"
    assert refused == []


SYNOPSIS = re.compile(r"`(?:\S*/)?e2a ([a-z][^`]*)`")
CHOICES = re.compile(r"(--[a-z-]+) ([a-z0-9-]+(?:\\\|[a-z0-9-]+)+)")
"""A flag with the values it takes: `--mode cloud\\|local`."""
METAVAR = re.compile(r"(--[a-z-]+) (?:[A-Z][A-Z_]*|\d+-\d+)\b")
"""A flag shown with its value: `--limit N`, `--agent EMAIL`, `--limit 1-100`."""


def test_the_values_the_command_synopses_show_are_the_parsers() -> None:
    """A synopsis such as `e2a messages list [--direction inbound\\|outbound\\|all] [--limit N]`
    lists exactly the values the flag accepts, and a flag shown with a value takes one."""
    checked = 0
    wrong = []
    for where, text in documented_texts():
        for synopsis in SYNOPSIS.findall(text):
            parser, path = build_parser(), []
            for word in synopsis.split():
                inner = _subcommand(parser, word) if re.fullmatch(r"[a-z-]+", word) else None
                if inner is None:
                    break
                parser, path = inner, [*path, word]
            actions = {flag: action for action in parser._actions for flag in action.option_strings}
            command = f"{where}: e2a {' '.join(path)}"
            for flag, listed in CHOICES.findall(synopsis):
                checked += 1
                choices = getattr(actions.get(flag), "choices", None)
                if set(listed.split("\\|")) != set(choices or ()):
                    wrong.append(f"{command} {flag} {listed}: it takes {choices}")
            for flag in METAVAR.findall(synopsis):
                checked += 1
                if flag in actions and actions[flag].nargs == 0:
                    wrong.append(f"{command} {flag} takes no value")
    assert checked > 30, "the patterns no longer find the documented synopses"
    assert wrong == []


ANSWERED_BEFORE_ANY_ROUTE = {
    (405, "method_not_allowed"),
    (408, "request_timeout"),
    (500, "internal_error"),
    (503, "shutting_down"),
}
"""api.md's codes that no route's description lists: the router's (a method the route does
not take), the body's time bound, a bug, and a stop before the answer."""


def test_the_error_codes_api_md_lists_are_in_the_openapi_document() -> None:
    """Each status and code of api.md's table of `/api/v1` error codes is one the OpenAPI
    document (`GET /api/v1/openapi.json`) lists for some route, so a client generated from
    the document knows it; the few every route may answer are spelt in the gateway's code."""
    from e2a_gateway.api.openapi import OPERATIONS, _all_errors, api_routes

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = re.search(r"^## Error codes\n(.+?)\n\n", text, flags=re.MULTILINE | re.DOTALL)
    assert table, "docs/api.md no longer has its table of error codes"
    listed = {
        (int(status), code)
        for status, codes in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", table.group(1), re.M)
        for code in re.findall(r"`([a-z_]+)`", codes)
    }
    assert len(listed) > 30
    documented = set()
    for route in api_routes(ServedRoutes().app.url_map):
        operation = OPERATIONS[route.rule.endpoint]
        for status, codes in _all_errors(operation, route).items():
            documented |= {(status, code) for code in codes}
    source = "\n".join(path.read_text("utf-8") for path in (ROOT / "e2a_gateway").rglob("*.py"))
    assert {code for _, code in ANSWERED_BEFORE_ANY_ROUTE if f'"{code}"' not in source} == set()
    assert sorted(listed - documented - ANSWERED_BEFORE_ANY_ROUTE) == []
