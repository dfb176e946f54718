"""What `e2a serve` says about a mistake in its configuration or its surroundings: one line
starting `e2a:` that names the key, the file or the value and what to do, exit code 1, no
traceback. Each case runs the real command in a subprocess."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from e2a_gateway.config import Section, Settings

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

E2A = [sys.executable, "-m", "e2a_gateway"]
TIMEOUT_SECONDS = 60


def free_port() -> int:
    """A loopback port nothing listens on (as of now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def base_config(folder: Path, *, smtp: str = "", http: str = "", database: str = "") -> str:
    """A config that starts a gateway on free loopback ports and a file in `folder`, plus
    `smtp`, `http` and `database` lines in those sections (a later key of the same name is a
    TOML error, so each given key replaces the default one)."""
    smtp_lines = smtp if "listen" in smtp else f'{smtp}\nlisten = "127.0.0.1:{free_port()}"'
    http_lines = http or f'listen = "127.0.0.1:{free_port()}"'
    database_lines = database or f'url = "sqlite:///{folder / "e2a.db"}"'
    return (
        'shared_domain = "agents.test"\n'
        f'[smtp]\nhostname = "mx.agents.test"\n{smtp_lines}\n'
        f"[http]\n{http_lines}\n"
        f"[database]\n{database_lines}\n"
        '[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout_seconds = 1\n'
    )


def unprivileged(command: list[str], *capabilities: str) -> list[str]:
    """`command` run without root's `capabilities` (as another user, as it is)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: the capability cannot be dropped")
    dropped = ",".join(f"-{name}" for name in capabilities)
    return ["setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}", *command]


def serve(
    folder: Path,
    config: str | None,
    variables: dict[str, str] | None = None,
    *,
    without: tuple[str, ...] = (),
    config_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`e2a serve --config <folder>/e2a.toml` holding `config` (or `--config config_path`),
    with no E2A_* variable but `variables`, without root's capabilities `without`."""
    path = config_path or folder / "e2a.toml"
    if config is not None:
        path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")} | (variables or {})
    command = [*E2A, "serve", "--config", str(path)]
    try:
        return subprocess.run(
            unprivileged(command, *without) if without else command,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("e2a serve started instead of refusing the configuration")


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one `e2a:` line of a refused start, after checking exit code 1 and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("e2a:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_refused(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """The refusal line, checked to hold every one of `phrases`."""
    line = refusal(result)
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    return line


# --- every key given a wrong value ------------------------------------------------------


def _leaf_type(annotation: Any) -> Any:
    """The type of a setting, `X | None` as X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        return kinds[0]
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_type(typing.get_args(annotation)[0])
    return annotation


def _wrong_type(annotation: Any) -> str:
    """A TOML value of another type than a setting of `annotation` takes."""
    kind = _leaf_type(annotation)
    if kind is bool:
        return '"maybe"'
    if kind is int:
        return '"many"'
    if kind is float:
        return '"soon"'
    if typing.get_origin(kind) is list:
        return "5"
    if typing.get_origin(kind) is typing.Literal:
        return '"bogus"'
    return "[1, 2]"  # a string, a file path


def _every_key() -> list[tuple[str | None, str, Any]]:
    """(section or None, key, annotation) of every setting."""
    keys: list[tuple[str | None, str, Any]] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            keys += [(name, key, sub.annotation) for key, sub in annotation.model_fields.items()]
        else:
            keys.append((None, name, annotation))
    return keys


def _config_of(values: dict[tuple[str | None, str], str]) -> str:
    """TOML setting each (section, key) to its value."""
    lines = [f"{key} = {value}" for (section, key), value in values.items() if section is None]
    sections: dict[str, list[str]] = {}
    for (section, key), value in values.items():
        if section is not None:
            sections.setdefault(section, []).append(f"{key} = {value}")
    for section, entries in sections.items():
        lines += [f"[{section}]", *entries]
    return "\n".join(lines) + "\n"


def _numeric(annotation: Any) -> bool:
    return _leaf_type(annotation) in (int, float)


def test_every_key_of_a_wrong_type_is_named(tmp_path: Path) -> None:
    """Each key of config.example.toml given a value of another type (a string for a number,
    a list for a string, a number for a list): one line naming every one of them, each with
    the variable that sets it too."""
    keys = _every_key()
    config = _config_of({(section, key): _wrong_type(kind) for section, key, kind in keys})
    line = refusal(serve(tmp_path, config))
    for section, key, _ in keys:
        name = f"{section}.{key}" if section else key
        assert f"{name}: " in line or f"{name}.0: " in line, (name, line)
    assert "<class" not in line and "Value error, " not in line, line


def test_every_number_below_its_range_is_named(tmp_path: Path) -> None:
    keys = [(section, key) for section, key, kind in _every_key() if _numeric(kind)]
    line = refusal(serve(tmp_path, _config_of(dict.fromkeys(keys, "-5"))))
    for section, key in keys:
        assert f"{section}.{key}: Input should be greater than" in line, (section, key, line)


def test_a_true_or_false_for_a_number_is_refused(tmp_path: Path) -> None:
    """TOML's `true` is no count: `max_recipients = true` must not start as 1 recipient."""
    keys = [(section, key) for section, key, kind in _every_key() if _numeric(kind)]
    line = refusal(serve(tmp_path, _config_of(dict.fromkeys(keys, "true"))))
    for section, key in keys:
        assert f"{section}.{key}: " in line, (section, key, line)
    assert "(got True;" in line, line


# --- one mistake at a time ----------------------------------------------------------------

CASES: list[tuple[str, str, dict[str, str], tuple[str, ...]]] = [
    (
        "string for an int",
        '[smtp]\nmax_recipients = "many"\n',
        {},
        ("smtp.max_recipients", "valid integer", "'many'", "E2A_SMTP_MAX_RECIPIENTS"),
    ),
    (
        "negative where positive",
        "[retention]\ndays = -1\n",
        {},
        ("retention.days", "greater than or equal to 1", "got -1"),
    ),
    (
        "list for a string",
        '[http]\npublic_url = ["https://a.example"]\n',
        {},
        ("http.public_url", "valid string", "E2A_HTTP_PUBLIC_URL"),
    ),
    (
        "table for a string",
        "[smtp]\nhostname = { name = 'mx' }\n",
        {},
        ("smtp.hostname", "valid string", "got a table"),
    ),
    (
        "number for a file",
        "[smtp]\ntls_cert = 5\n",
        {},
        ("smtp.tls_cert", "a file path", "got 5"),
    ),
    (
        "value for a section",
        "smtp = 5\n",
        {},
        ("smtp", "[smtp] table", "got 5"),
    ),
    (
        "bad choice",
        '[outbound_smtp]\ntls = "ssl"\n',
        {},
        ("outbound_smtp.tls", "'starttls', 'implicit' or 'none'", "'ssl'"),
    ),
    (
        "listen without host",
        '[http]\nlisten = "8080"\n',
        {},
        ("http.listen", "expected host:port such as 127.0.0.1:8080", "E2A_HTTP_LISTEN"),
    ),
    (
        "port alone as a number",
        "[smtp]\nlisten = 25\n",
        {},
        ("smtp.listen", 'such as "127.0.0.1:25"', "got 25"),
    ),
    (
        "port out of range",
        '[http]\nlisten = "127.0.0.1:80800"\n',
        {},
        ("http.listen", "port 80800 is out of range"),
    ),
    (
        "unknown key",
        "[smtp]\nmax_recipient = 5\n",
        {},
        ("smtp.max_recipient: unknown setting", "did you mean smtp.max_recipients?"),
    ),
    (
        "key in the wrong section",
        '[http]\nhostname = "mx.example.com"\n',
        {},
        ("http.hostname: unknown setting", "did you mean smtp.hostname?"),
    ),
    (
        "unknown key like none",
        "[smtp]\nzzzz = 1\n",
        {},
        ("smtp.zzzz: unknown setting", "config.example.toml"),
    ),
    (
        "section name typo",
        '[smpt]\nlisten = "127.0.0.1:2525"\n',
        {},
        ("smpt: unknown setting", "did you mean smtp?"),
    ),
    (
        "top-level typo",
        'shared_domian = "agents.test"\n',
        {},
        ("shared_domian: unknown setting", "did you mean shared_domain?"),
    ),
    (
        "toml syntax error",
        "[smtp]\nlisten = 127.0.0.1:2525\n",
        {},
        ("is not valid TOML", "line 2, column"),
    ),
    (
        "toml unterminated section",
        "[smtp\n",
        {},
        ("is not valid TOML", "line 1, column"),
    ),
    (
        "sqlite url without a file",
        '[database]\nurl = "sqlite:///"\n',
        {},
        ("database.url", "names no file", "sqlite:///path/to/e2a.db"),
    ),
    (
        "relay host with its port",
        '[outbound_smtp]\nhost = "smtp.example.com:587"\n',
        {},
        ("outbound_smtp.host", 'host = "smtp.example.com"', "port = 587"),
    ),
    (
        "relay host as a URL",
        '[outbound_smtp]\nhost = "smtps://smtp.example.com"\n',
        {},
        ("outbound_smtp.host", 'host = "smtp.example.com"', "outbound_smtp.tls"),
    ),
    (
        "dkim selector not ascii",
        '[dkim]\nselector = "sélecteur"\nprivate_key_path = "dkim.pem"\n',
        {},
        ("dkim.selector", "letters, digits", "E2A_DKIM_SELECTOR"),
    ),
    (
        "dkim selector with a space",
        '[dkim]\nselector = "s 1"\nprivate_key_path = "dkim.pem"\n',
        {},
        ("dkim.selector", "letters, digits"),
    ),
    (
        "dkim selector as its record's name",
        '[dkim]\nselector = "s1._domainkey.example.com"\nprivate_key_path = "dkim.pem"\n',
        {},
        ("dkim.selector", 'selector = "s1"', "_domainkey"),
    ),
    (
        "next dkim selector not ascii",
        '[dkim]\nnext_selector = "prochaîne"\n',
        {},
        ("dkim.next_selector", "letters, digits"),
    ),
    (
        "database password with a bare percent sign",
        '[database]\nurl = "postgresql://e2a:hunter2%zz@127.0.0.1:1/e2a"\n',
        {},
        ("database.url", "not a valid PostgreSQL URL", "%25"),
    ),
    (
        "database password in the query with a bare percent sign",
        '[database]\nurl = "postgresql://e2a@127.0.0.1:1/e2a?password=hunter2%zz"\n',
        {},
        ("database.url", "not a valid PostgreSQL URL", "%25"),
    ),
    (
        "database url quoted whole by libpq (an unclosed IPv6 bracket)",
        '[database]\nurl = "postgresql://e2a:hunter2@[::1/e2a"\n',
        {},
        ("database.url", "not a valid PostgreSQL URL", 'matching "]"'),
    ),
    (
        "database url quoted whole by libpq, its password in the query",
        '[database]\nurl = "postgresql://[::1/e2a?password=hunter2"\n',
        {},
        ("database.url", "not a valid PostgreSQL URL", 'matching "]"'),
    ),
    (
        "smtp host name with a port",
        '[smtp]\nhostname = "mx.agents.test:25"\n',
        {},
        ("smtp.hostname", 'hostname = "mx.agents.test"', "smtp.listen"),
    ),
    (
        "smtp host name as a URL",
        '[smtp]\nhostname = "smtp://mx.agents.test"\n',
        {},
        ("smtp.hostname", 'hostname = "mx.agents.test"'),
    ),
    (
        "smtp host name as a URL with a user and a port",
        '[smtp]\nhostname = "smtp://postmaster@mx.agents.test:25/"\n',
        {},
        ("smtp.hostname", 'hostname = "mx.agents.test"'),
    ),
    (
        "relay host as a URL naming an IPv6 address",
        '[outbound_smtp]\nhost = "smtps://[2001:db8::25]:465"\n',
        {},
        ("outbound_smtp.host", 'host = "2001:db8::25"', "outbound_smtp.port"),
    ),
    (
        "dkim key file missing",
        '[dkim]\nselector = "e2a"\nprivate_key_path = "no-such-dkim.pem"\n',
        {},
        ("dkim.private_key_path", "no-such-dkim.pem", "No such file", "openssl genrsa"),
    ),
    (
        "variable: string for an int",
        "",
        {"E2A_SMTP_MAX_RECIPIENTS": "lots"},
        ("smtp.max_recipients", "'lots'", "E2A_SMTP_MAX_RECIPIENTS"),
    ),
    (
        "variable: negative",
        "",
        {"E2A_RETENTION_DAYS": "-3"},
        ("retention.days", "greater than or equal to 1", "E2A_RETENTION_DAYS"),
    ),
    (
        "variable: bad boolean",
        "",
        {"E2A_METRICS_ENABLED": "maybe"},
        ("metrics.enabled", "valid boolean", "'maybe'", "E2A_METRICS_ENABLED"),
    ),
    (
        "variable: bad choice",
        "",
        {"E2A_ENV": "prod"},
        ("env", "'development' or 'production'", "'prod'", "E2A_ENV"),
    ),
    (
        "variable: list written as TOML",
        "",
        {"E2A_DNS_NAMESERVERS": '["1.1.1.1", "9.9.9.9"]'},
        ("dns.nameservers", "comma-separated", "E2A_DNS_NAMESERVERS=1.1.1.1,9.9.9.9"),
    ),
    (
        "variable: bad url, password hidden",
        "",
        {"E2A_DATABASE_URL": "mysql://user:hunter2@db/e2a"},
        ("database.url", "sqlite:///path/to/e2a.db or postgresql://", "E2A_DATABASE_URL"),
    ),
]


@pytest.mark.parametrize(
    ("text", "variables", "phrases"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_mistake_is_one_line_saying_what_to_fix(
    tmp_path: Path, text: str, variables: dict[str, str], phrases: tuple[str, ...]
) -> None:
    """Each case alone in the file, the rest default: a case the gateway took would start it
    on the default ports and ./e2a.db, and the test fail on the timeout."""
    line = assert_refused(serve(tmp_path, text, variables), *phrases)
    assert "hunter2" not in line


def test_a_section_given_twice(tmp_path: Path) -> None:
    result = serve(tmp_path, base_config(tmp_path) + '[smtp]\nhostname = "x"\n')
    assert_refused(result, "is not valid TOML", "line ")


# --- the config file itself ---------------------------------------------------------------


def test_a_missing_config_file(tmp_path: Path) -> None:
    result = serve(tmp_path, None, config_path=tmp_path / "nope.toml")
    assert_refused(result, f"config file {tmp_path / 'nope.toml'} does not exist", "--config")


def test_an_unreadable_config_file(tmp_path: Path) -> None:
    path = tmp_path / "e2a.toml"
    path.write_text(base_config(tmp_path))
    path.chmod(0o000)
    result = serve(tmp_path, None, without=("dac_override", "dac_read_search"))
    assert_refused(result, f"cannot read config file {path}", "Permission denied", "permissions")


# --- ports --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["smtp", "http"])
def test_a_port_in_use(tmp_path: Path, key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f'listen = "127.0.0.1:{taken.getsockname()[1]}"'
        result = serve(tmp_path, base_config(tmp_path, **{key: listen}))
    assert_refused(result, f"{key}.listen 127.0.0.1:", "already in use", "free port")


@pytest.mark.parametrize("smtp_host", ["127.0.0.1", "0.0.0.0"])
def test_smtp_and_http_on_the_same_port(tmp_path: Path, smtp_host: str) -> None:
    """Not "stop the other process": the other one is this gateway's own SMTP listener."""
    port = free_port()
    config = base_config(
        tmp_path, smtp=f'listen = "{smtp_host}:{port}"', http=f'listen = "127.0.0.1:{port}"'
    )
    line = assert_refused(
        serve(tmp_path, config),
        f"http.listen 127.0.0.1:{port}",
        f"smtp.listen {smtp_host}:{port}",
        "give each its own port",
    )
    assert "other process" not in line


@pytest.mark.parametrize(("key", "port"), [("smtp", 25), ("http", 80)])
def test_a_privileged_port_without_permission(tmp_path: Path, key: str, port: int) -> None:
    config = base_config(tmp_path, **{key: f'listen = "127.0.0.1:{port}"'})
    result = serve(tmp_path, config, without=("net_bind_service",))
    assert_refused(
        result, f"{key}.listen 127.0.0.1:{port}: permission denied", "CAP_NET_BIND_SERVICE"
    )


@pytest.mark.parametrize("key", ["smtp", "http"])
def test_an_address_not_on_this_machine(tmp_path: Path, key: str) -> None:
    result = serve(tmp_path, base_config(tmp_path, **{key: 'listen = "192.0.2.1:2525"'}))
    assert_refused(result, f"{key}.listen 192.0.2.1:2525", "not an address of this machine")


def test_a_listen_host_that_does_not_resolve(tmp_path: Path) -> None:
    result = serve(tmp_path, base_config(tmp_path, smtp='listen = "mx.invalid:2525"'))
    assert_refused(
        result, "smtp.listen mx.invalid:2525", "cannot resolve host 'mx.invalid'", "IP address"
    )


# --- the database -------------------------------------------------------------------------


def test_postgresql_that_does_not_answer(tmp_path: Path) -> None:
    url = f'url = "postgresql://e2a:hunter2@127.0.0.1:{free_port()}/e2a"'
    line = assert_refused(
        serve(tmp_path, base_config(tmp_path, database=url)),
        "database.url: cannot connect to postgresql://e2a@127.0.0.1:",
        "connection refused",
        "is PostgreSQL running?",
    )
    assert "hunter2" not in line


@pytest.mark.skipif(
    not os.environ.get("E2A_TEST_POSTGRES_URL"), reason="needs E2A_TEST_POSTGRES_URL"
)
@pytest.mark.parametrize(
    ("change", "phrases"),
    [
        ({"username": "no_such_role"}, ("role) does not exist", "database.url")),
        ({"path": "/no_such_database"}, ("database does not exist", "createdb")),
    ],
)
def test_postgresql_that_refuses(
    tmp_path: Path, change: dict[str, str], phrases: tuple[str, ...]
) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(os.environ["E2A_TEST_POSTGRES_URL"])
    user = change.get("username", parts.username or "postgres")
    path = change.get("path", parts.path)
    url = f"postgresql://{user}@{parts.hostname}:{parts.port}{path}"
    result = serve(tmp_path, base_config(tmp_path, database=f'url = "{url}"'))
    assert_refused(result, "database.url: cannot connect to", *phrases)


def test_postgresql_url_at_a_port_that_is_not_postgresql(tmp_path: Path) -> None:
    """database.url at another service's port (here one that greets as an SMTP server does)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()

        def greet() -> None:
            with contextlib.suppress(OSError):
                client, _ = other.accept()
                with client:
                    client.sendall(b"220 mx.example.org ESMTP\r\n")
                    client.recv(1024)

        greeter = threading.Thread(target=greet, daemon=True)
        greeter.start()
        url = f'url = "postgresql://e2a:hunter2@127.0.0.1:{other.getsockname()[1]}/e2a"'
        result = serve(tmp_path, base_config(tmp_path, database=url))
    line = assert_refused(
        result,
        "database.url: cannot connect to postgresql://e2a@127.0.0.1:",
        "does not answer as PostgreSQL",
        "check the port in database.url",
    )
    assert "hunter2" not in line


@pytest.mark.skipif(
    not os.environ.get("E2A_TEST_POSTGRES_URL"), reason="needs E2A_TEST_POSTGRES_URL"
)
def test_a_migration_lock_held_elsewhere_is_named_and_a_signal_ends_the_wait(
    tmp_path: Path,
) -> None:
    """Another session holds e2a's migration lock (an `e2a migrate` that hangs, a session
    left open): the start waits for it, as replicas starting together do, but says at once
    which session holds it and how to end it; SIGTERM stops the wait, not only its end."""
    import psycopg

    from e2a_gateway.storage.postgres import MIGRATION_LOCK
    from tests.databases import fresh_postgres_database

    with (
        fresh_postgres_database() as url,
        psycopg.connect(url, application_name="stuck-migrate") as holder,
    ):
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        holder_pid = holder.info.backend_pid
        (tmp_path / "e2a.toml").write_text(base_config(tmp_path, database=f'url = "{url}"'))
        env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
        process = subprocess.Popen(
            [*E2A, "serve", "--config", str(tmp_path / "e2a.toml")],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()])
        reader.start()
        seen: list[str] = []
        try:
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while not any("WARNING" in line for line in seen):
                seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            stopping = time.monotonic()
            process.terminate()
            process.wait(timeout=TIMEOUT_SECONDS)
            stopped_within = time.monotonic() - stopping
        finally:
            process.kill()
            reader.join(timeout=TIMEOUT_SECONDS)
        seen += list(lines.queue)
    warning = next(line for line in seen if "WARNING" in line)
    assert "database.url" in warning and "migration lock" in warning, warning
    assert "stuck-migrate" in warning, warning
    assert f"pg_terminate_backend({holder_pid})" in warning, warning
    assert stopped_within < 5, (stopped_within, seen)
    assert process.returncode == 0, seen
    assert "Traceback" not in "".join(seen), seen
    assert "e2a ready" not in "".join(seen), seen


def test_sqlite_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    url = f'url = "sqlite:///{tmp_path / "no" / "such" / "e2a.db"}"'
    result = serve(tmp_path, base_config(tmp_path, database=url))
    assert_refused(result, f"directory {tmp_path / 'no' / 'such'} does not exist", "create it")


def test_sqlite_in_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(0o555)
    url = f'url = "sqlite:///{folder / "e2a.db"}"'
    try:
        result = serve(
            tmp_path,
            base_config(tmp_path, database=url),
            without=("dac_override", "dac_read_search"),
        )
    finally:
        folder.chmod(0o755)
    assert_refused(result, f"cannot write to the folder {folder}", "write permission")


def test_sqlite_url_naming_a_folder(tmp_path: Path) -> None:
    url = f'url = "sqlite:///{tmp_path}"'
    result = serve(tmp_path, base_config(tmp_path, database=url))
    assert_refused(result, "database.url", "is a folder", f"sqlite:///{tmp_path / 'e2a.db'}")


def test_a_database_file_that_is_not_sqlite(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    result = serve(tmp_path, base_config(tmp_path, database=f'url = "sqlite:///{junk}"'))
    assert_refused(result, f"sqlite:///{junk}", "not an SQLite database")
    assert len(junk.read_bytes()) == 8192


# --- the STARTTLS certificate and key ----------------------------------------------------


def _certificate(folder: Path, name: str, *, expired: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate for mx.agents.test and its key, written to `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.agents.test")])
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=60), now - timedelta(days=1))
    if not expired:
        start, end = now - timedelta(days=1), now + timedelta(days=60)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _tls(cert: Path, key: Path) -> str:
    return f'tls_cert = "{cert}"\ntls_key = "{key}"'


def test_a_missing_certificate_file(tmp_path: Path) -> None:
    _, key = _certificate(tmp_path, "a")
    missing = tmp_path / "missing.pem"
    result = serve(tmp_path, base_config(tmp_path, smtp=_tls(missing, key)))
    assert_refused(result, f"smtp.tls_cert: {missing}: no such file", "PEM certificate file")


def test_a_missing_key_file(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path, "a")
    missing = tmp_path / "missing.pem"
    result = serve(tmp_path, base_config(tmp_path, smtp=_tls(cert, missing)))
    assert_refused(result, f"smtp.tls_key: {missing}: no such file", "PEM private key file")


def test_an_unreadable_key_file(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "a")
    key.chmod(0o000)
    result = serve(
        tmp_path,
        base_config(tmp_path, smtp=_tls(cert, key)),
        without=("dac_override", "dac_read_search"),
    )
    assert_refused(result, f"smtp.tls_key: {key}: permission denied", "readable")


def test_a_key_of_another_certificate(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path, "a")
    _, other_key = _certificate(tmp_path, "b")
    result = serve(tmp_path, base_config(tmp_path, smtp=_tls(cert, other_key)))
    assert_refused(
        result, "smtp.tls_cert/smtp.tls_key", str(other_key), "key values mismatch", "belong to"
    )


def test_certificate_and_key_swapped(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "a")
    result = serve(tmp_path, base_config(tmp_path, smtp=_tls(key, cert)))
    assert_refused(result, f"smtp.tls_cert: {key} holds no PEM certificate")


def test_half_the_tls_pair(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path, "a")
    result = serve(tmp_path, base_config(tmp_path, smtp=f'tls_cert = "{cert}"'))
    assert_refused(result, "smtp.tls_key", "needs both smtp.tls_cert and smtp.tls_key")


def test_an_expired_certificate_is_an_error_in_the_log(tmp_path: Path) -> None:
    """An expired certificate does not stop the start (the MX would take no mail at all):
    the log says at once, as an ERROR naming the file, that it expired and what to do."""
    cert, key = _certificate(tmp_path, "old", expired=True)
    (tmp_path / "e2a.toml").write_text(base_config(tmp_path, smtp=_tls(cert, key)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")}
    process = subprocess.Popen(
        [*E2A, "serve", "--config", str(tmp_path / "e2a.toml")],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or ()])
    reader.start()
    deadline = time.monotonic() + TIMEOUT_SECONDS
    seen: list[str] = []
    try:
        while not any("ERROR" in line for line in seen):
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT_SECONDS)
        reader.join(timeout=TIMEOUT_SECONDS)
    assert f"smtp.tls_cert {cert}:" in seen[-1] and "expired" in seen[-1], seen
    assert "renew it and restart e2a" in seen[-1]
    assert process.returncode == 0 and "Traceback" not in "".join(seen)


# --- the DKIM key ------------------------------------------------------------------------


def test_a_dkim_key_file_with_a_broken_body(tmp_path: Path) -> None:
    """PEM armour around bytes that are no key: one line, however the parser words it."""
    broken = tmp_path / "dkim.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    config = base_config(tmp_path) + f'[dkim]\nselector = "s1"\nprivate_key_path = "{broken}"\n'
    result = serve(tmp_path, config)
    assert_refused(
        result, f"dkim.private_key_path: {broken} is not a usable RSA private key", "openssl"
    )
    assert result.stderr.rstrip().splitlines()[-1].startswith("e2a: "), result.stderr


def test_a_bad_dkim_key_is_refused_before_the_database_is_migrated(tmp_path: Path) -> None:
    """An upgrade whose start a bad key refuses leaves the database as the older e2a knows it:
    going back to that version must not meet a schema "migrated by a newer e2a"."""
    missing = tmp_path / "no-such-dkim.pem"
    config = base_config(tmp_path) + f'[dkim]\nselector = "s1"\nprivate_key_path = "{missing}"\n'
    result = serve(tmp_path, config)
    assert_refused(result, f"dkim.private_key_path: cannot read {missing}")
    assert "migrated" not in result.stderr, result.stderr
    assert not (tmp_path / "e2a.db").exists()


# --- secrets read from files --------------------------------------------------------------


def migrate(
    folder: Path, config: str, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`e2a migrate --config <folder>/e2a.toml` holding `config`, with no E2A_* variable but
    `variables`: loads the settings and opens the database as `serve` does, then exits."""
    path = folder / "e2a.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2A_")} | variables
    return subprocess.run(
        [*E2A, "migrate", "--config", str(path)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )


def _secret_file(folder: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_database_url_from_a_file_is_the_database_used(tmp_path: Path) -> None:
    database = tmp_path / "from-a-file.db"
    url_file = _secret_file(tmp_path, "database-url", f"sqlite:///{database}\n")
    config = base_config(tmp_path, database="pooled = false")
    result = migrate(tmp_path, config, {"E2A_DATABASE_URL_FILE": str(url_file)})
    assert result.returncode == 0, result.stderr
    assert database.exists() and not (tmp_path / "e2a.db").exists()
    assert "WARNING" not in result.stderr, result.stderr


@pytest.mark.skipif(
    not os.environ.get("E2A_TEST_POSTGRES_URL"), reason="needs E2A_TEST_POSTGRES_URL"
)
def test_a_postgresql_url_from_a_file_connects(tmp_path: Path) -> None:
    url_file = _secret_file(tmp_path, "database-url", os.environ["E2A_TEST_POSTGRES_URL"] + "\n")
    config = base_config(tmp_path, database=f'url_file = "{url_file}"')
    result = migrate(tmp_path, config, {})
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stderr


def test_a_secret_and_its_file_both_set_is_one_line(tmp_path: Path) -> None:
    password_file = _secret_file(tmp_path, "relay-password", "hunter2\n")
    config = base_config(tmp_path) + '[outbound_smtp]\npassword = "hunter2"\n'
    result = serve(tmp_path, config, {"E2A_OUTBOUND_SMTP_PASSWORD_FILE": str(password_file)})
    line = assert_refused(
        result, "outbound_smtp.password and outbound_smtp.password_file are both set"
    )
    assert "hunter2" not in result.stderr, line


def test_a_missing_secret_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    result = serve(tmp_path, base_config(tmp_path), {"E2A_SIGNING_HMAC_SECRET_FILE": str(missing)})
    assert_refused(result, f"signing.hmac_secret_file: {missing}: no such file")


def test_an_empty_secret_file_is_one_line(tmp_path: Path) -> None:
    empty = _secret_file(tmp_path, "selftest-secret", "\n")
    config = base_config(tmp_path) + f'[operators]\nselftest_secret_file = "{empty}"\n'
    assert_refused(serve(tmp_path, config), f"operators.selftest_secret_file: {empty} is empty")


def test_an_unreadable_secret_file_is_one_line(tmp_path: Path) -> None:
    locked = _secret_file(tmp_path, "relay-password", "hunter2\n", mode=0o000)
    result = serve(
        tmp_path,
        base_config(tmp_path),
        {"E2A_OUTBOUND_SMTP_PASSWORD_FILE": str(locked)},
        without=("dac_override", "dac_read_search"),
    )
    assert_refused(result, f"outbound_smtp.password_file: {locked}: permission denied")


def test_a_secret_file_others_may_read_is_a_warning_in_the_log(tmp_path: Path) -> None:
    secret = "9f" * 32
    shared = _secret_file(tmp_path, "hmac-secret", secret + "\n", mode=0o644)
    result = migrate(tmp_path, base_config(tmp_path), {"E2A_SIGNING_HMAC_SECRET_FILE": str(shared)})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert any(f"signing.hmac_secret_file: {shared}" in line for line in warnings), result.stderr
    assert secret not in result.stderr
