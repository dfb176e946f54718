"""What the documentation tells a reader to type works: the commands and flags it names exist,
the agents it registers may be registered, and what it says about the configuration and the
reserved slugs is what the gateway does."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from e2a_gateway.addresses import RESERVED_SLUGS, AddressError, check_slug
from e2a_gateway.cli.client_commands import EXAMPLES as CLIENT_EXAMPLES
from e2a_gateway.cli.main import EXAMPLES as SERVER_EXAMPLES
from e2a_gateway.cli.main import build_parser
from e2a_gateway.config import load_settings

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


CLIENT_ONLY_ELSEWHERE = {"serve", "bootstrap", "migrate", "mcp"}
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
    doctor check such as `dns.mx` or a file such as `http.py` is no setting)."""
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
    import json

    from e2a_gateway.mcp.tools import TOOLS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"\((every one|\d+) of e2a's (\d+) names", readme)
    assert stated, "README.md no longer says how many of e2a's tool names are served"
    e2a_names = set(json.loads((ROOT / "tests/data/e2a/tool-names.v1.json").read_text()))
    served = {tool.name for tool in TOOLS} & e2a_names
    count, out_of = stated.groups()
    assert int(out_of) == len(e2a_names)
    assert (len(e2a_names) if count == "every one" else int(count)) == len(served)
