"""The gateway's settings: one pydantic model, loaded from TOML and overridden by `E2A_*` env vars.

Every key is validated at start-up; a wrong key or value raises `ConfigError` with a message
that names the key and says how to fix it. Nothing here opens sockets or databases.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from e2a_gateway.addresses import DELIMITER_CHARACTERS
from e2a_gateway.env_names import E2A_ALIASES, unknown_variable_warnings
from e2a_gateway.networks import IpNetwork
from e2a_gateway.redacted import redacted_url
from e2a_gateway.secret_files import read_secret_file, readable_by_others

ENV_PREFIX = "E2A_"


class ConfigError(Exception):
    """A setting is missing, unknown or invalid; the message says which and how to fix it."""


def _blank_is_unset(value: Any) -> Any:
    """An empty file name is no file: config.example.toml writes the unset default as `""`,
    and an empty variable (`E2A_SMTP_TLS_CERT=`) reads so too; as a path it would be the
    current directory."""
    return None if isinstance(value, str) and not value.strip() else value


OptionalPath = Annotated[Path | None, BeforeValidator(_blank_is_unset)]
"""A file setting that may be unset: missing, or given as `""`."""


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    secret_keys: ClassVar[tuple[str, ...]] = ()
    """Keys that hold a secret, each with a sibling `<key>_file` naming a file that holds it
    instead (Docker's secrets, systemd's credentials)."""

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any, info: ValidationInfo) -> Any:
        """Each secret whose `<key>_file` is set takes that file's content, read here, once,
        when the settings are made (an assignment later re-validates, but reads nothing), and
        then checked as a value written in the config file would be."""
        assignment = info.field_name in cls.model_fields  # else the parent's field, or None
        if not cls.secret_keys or not isinstance(data, dict) or assignment:
            return data
        section = _section_name(cls)
        values = dict(data)
        for key in cls.secret_keys:
            path = _blank_is_unset(values.get(f"{key}_file"))
            if not isinstance(path, str | os.PathLike):
                continue  # unset, or not a path: the field's own check names it
            if _blank_is_unset(values.get(key)) is not None:
                raise PydanticCustomError(
                    "secret_file",
                    "{section}.{key} and {section}.{key}_file are both set — keep one of "
                    "them: the secret, or the file that holds it",
                    {"section": section, "key": key},
                )
            try:
                values[key] = read_secret_file(Path(path))
            except ValueError as exc:
                raise PydanticCustomError(
                    "secret_file",
                    "{setting}: {problem}",
                    {"setting": f"{section}.{key}_file", "problem": str(exc)},
                ) from None
        return values

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """TOML's `true` and `false` are no numbers (pydantic would read them as 1 and 0:
        `max_recipients = true` one recipient)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError("expected a number, not true or false")
        return value


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into its parts; raise ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    port_given = port_text.isascii() and port_text.isdigit()
    if sep and not host and port_given:  # Go's ":2525", as e2a's own config writes it
        raise ValueError(
            f"expected host:port, got {value!r}: write 0.0.0.0:{port_text} to listen on every "
            f"IPv4 address, or 127.0.0.1:{port_text} for this machine alone"
        )
    if not sep or not host or not port_given:
        example = f"127.0.0.1:{value}" if value.isascii() and value.isdigit() else "127.0.0.1:2525"
        raise ValueError(f"expected host:port such as {example}, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host.strip("[]"), port


def web_origin(value: str, *, path_allowed: bool = False) -> str:
    """`value` as a browser writes it in an `Origin` header — `scheme://host[:port]`, lowercase,
    no default port; raise ValueError saying what is wrong when it is not an http(s) origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an origin such as https://app.example.com, got {value!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"an origin is scheme://host[:port] only, got {value!r}")
    if not path_allowed and parts.path not in ("", "/"):
        raise ValueError(f"an origin has no path, got {value!r}")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{port}"


def nameserver_address(server: str) -> tuple[str, int]:
    """(address, port) of a `dns.nameservers` entry — `ip`, `ip:port`, `[ipv6]:port` or a bare
    IPv6 address, port 53 unless given; raise ValueError saying what is wrong otherwise."""
    host, port = server, 53
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected [ipv6]:port, got {server!r}")
            port = _nameserver_port(server, rest[1:])
    elif server.count(":") == 1:
        host, port_text = server.split(":")
        port = _nameserver_port(server, port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"a nameserver is an IP address (optionally :port), got {server!r}"
        ) from None
    return host, port


def _nameserver_port(server: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"nameserver {server!r}: the port must be a number from 1 to 65535")
    return int(text)


def written_host(value: str) -> str:
    """The host a value written as a URL or as `host:port` names, for an error saying what to
    write instead: `smtp://user:secret@[2001:db8::25]:587/` names 2001:db8::25. Never its user
    name or password."""
    scheme, sep, rest = value.strip().partition("://")
    authority = (rest if sep else scheme).split("/")[0].rpartition("@")[2]
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    if authority.count(":") == 1:  # one colon: a port; more: an IPv6 address
        return authority.partition(":")[0]
    return authority


def relay_host(value: str) -> str:
    """`outbound_smtp.host` checked: a host name (a trailing dot, its absolute form, dropped)
    or IP address (an IPv6 one may come in brackets, which are dropped), or empty for no
    relay; raise ValueError saying what to write when it holds a scheme, a port or anything
    else that names no host."""
    host = value.strip()
    scheme, sep, _ = host.partition("://")
    if sep:
        raise ValueError(
            f'write the host alone, host = "{written_host(host)}", without {scheme}:// — the '
            "port goes in outbound_smtp.port and the kind of TLS in outbound_smtp.tls"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    name, colon, port = host.rpartition(":")
    if colon and name and port.isascii() and port.isdigit():
        raise ValueError(f'write host = "{name.strip("[]")}" and port = {port} apart')
    if any(character.isspace() or character in "/@:[]" for character in host):
        raise ValueError("expected the relay's host name or IP address, such as smtp.example.com")
    # The absolute form (`smtp.example.com.`, as zone files and dig write it) names the same
    # host; with its dot it would be checked against the certificate and sent as SNI.
    name = host.removesuffix(".")
    if host and "" in name.split("."):
        raise ValueError(
            f"{host!r} has an empty label (two dots together, or a dot alone): expected the "
            "relay's host name, such as smtp.example.com"
        )
    return name


DKIM_SELECTOR_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
"""One label of a DKIM selector (RFC 6376 section 3.1: a sub-domain; the underscore is taken
too, as DNS takes it)."""


def dkim_selector(value: str) -> str:
    """A DKIM selector checked: ASCII labels of letters, digits and hyphens between dots, as
    the `s=` tag carries it and `<selector>._domainkey.<domain>` looks it up; raise
    ValueError saying what to write otherwise (the record's whole name written for it, say)."""
    labels = value.strip().split(".")
    if "_domainkey" in (label.lower() for label in labels):
        first = labels[0] if labels[0].lower() != "_domainkey" else "s1"
        raise ValueError(
            f'write the selector alone, such as selector = "{first}": the gateway looks its '
            "record up at <selector>._domainkey.<domain> itself"
        )
    if not all(DKIM_SELECTOR_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            "a selector is ASCII letters, digits and hyphens, with dots between parts, such as "
            "s1 or e2a202607"
        )
    return value.strip()


def comma_separated(value: Any) -> Any:
    """A list setting's value: a string (from an environment variable) split at its commas,
    blank items dropped; anything else (a TOML list) as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def proxy_networks(entries: list[str]) -> list[IpNetwork]:
    """The networks of `http.trusted_proxies` or `smtp.proxy_trusted_cidrs` entries (an
    address or a CIDR block each); raise ValueError naming an entry that is neither. An IPv4
    network written in IPv6 (`::ffff:10.0.0.5`, as a dual-stack listener names an IPv4 peer) is
    the IPv4 one, since peers are compared as IPv4 addresses (`networks.client_address`)."""
    networks: list[IpNetwork] = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or CIDR block (e.g. 10.0.0.1 or 10.0.0.0/8)"
            ) from None
        mapped = network.network_address
        if (
            isinstance(mapped, ipaddress.IPv6Address)
            and mapped.ipv4_mapped is not None
            and network.prefixlen >= 96
        ):
            network = ipaddress.IPv4Network((mapped.ipv4_mapped, network.prefixlen - 96))
        networks.append(network)
    return networks


def refuse_trusting_everyone(entries: list[str], proxy: str, forged: str) -> list[str]:
    """`entries` (of `http.trusted_proxies` or `smtp.proxy_trusted_cidrs`) when each names
    proxy networks and none trusts every peer (`0.0.0.0/0`, `::/0`, or the IPv4 block written
    in IPv6); else ValueError saying how to fix it, `proxy` naming what to list instead and
    `forged` what a client trusted that way could claim any address for."""
    for entry, network in zip(entries, proxy_networks(entries), strict=True):
        if network.prefixlen == 0:
            raise ValueError(
                f"{entry!r} trusts every peer, so anyone could claim any address for {forged} "
                f"— list only the {proxy}'s own addresses, e.g. 10.0.0.5 or 10.0.0.0/24"
            )
    return entries


class ListenSection(Section):
    """A section with a `listen = "host:port"` key."""

    listen: str

    @field_validator("listen", mode="before")
    @classmethod
    def _port_alone(cls, value: Any) -> Any:
        """`listen = 25`, a port without its host, says what to write."""
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f'expected "host:port" in quotes, such as "127.0.0.1:{value}"')
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @property
    def host(self) -> str:
        """The host part of `listen`."""
        return parse_listen_address(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return parse_listen_address(self.listen)[1]


class SmtpSettings(ListenSection):
    """The inbound SMTP listener (the gateway is the MX for its domains)."""

    listen: str = "127.0.0.1:2525"
    hostname: str = Field(default_factory=socket.getfqdn)
    tls_cert: OptionalPath = None
    tls_key: OptionalPath = None
    max_message_bytes: int = Field(default=26_214_400, ge=1024)
    max_recipients: int = Field(default=100, ge=1, le=10_000)
    max_line_length: int = Field(default=1000, ge=1000, le=1_000_000)
    max_command_length: int = Field(default=512, ge=512, le=65_536)
    max_errors: int = Field(default=20, ge=1, le=1000)
    """Error replies since the client last delivered a message in the session; then 421."""
    errors_before_delay: int = Field(default=10, ge=0, le=1000)
    """Error replies since the client last delivered a message answered without delay."""
    error_delay_seconds: float = Field(default=1.0, ge=0, le=60)
    """How long each error reply past `errors_before_delay` is held back."""
    max_junk_commands: int = Field(default=100, ge=1, le=100_000)
    """NOOP, RSET, VRFY, HELP and EXPN since the client last delivered a message; then 421."""
    max_header_fields: int = Field(default=1000, ge=1, le=1_000_000)
    max_header_bytes: int = Field(default=262_144, ge=1024, le=1_073_741_824)
    max_header_continuation_lines: int = Field(default=1000, ge=1, le=100_000_000)
    max_sessions: int = Field(default=500, ge=1, le=100_000)
    max_sessions_per_ip: int = Field(default=50, ge=1, le=100_000)
    max_sessions_per_network: int = Field(default=100, ge=1, le=100_000)
    ipv4_network_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_network_prefix: int = Field(default=64, ge=16, le=128)
    idle_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    command_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    data_timeout_seconds: float = Field(default=600.0, gt=0, le=86_400)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0, le=3600)
    processes: int = Field(default=1, ge=1, le=64)
    """Processes accepting SMTP: the main one and `processes - 1` acceptors (docs/smtp.md)."""
    max_message_memory_bytes: int = Field(default=134_217_728, ge=1_048_576, le=2**40)
    """Memory each SMTP process may hold for messages being received, all its sessions
    together; more get 452 4.3.1 (docs/smtp.md, "Memory for messages being received")."""
    proxy_trusted_cidrs: list[str] = Field(default_factory=list)
    """Load balancers (addresses or CIDR blocks) whose connections begin with a PROXY protocol
    header naming the client (docs/smtp.md, "Behind a load balancer"); empty: none is read."""
    recipient_delimiter: str = "+"
    """Mail to `agent+tag@domain` reaches the agent `agent@domain` when no agent has the
    tagged address (RFC 5233 subaddresses; docs/smtp.md, "Subaddresses"): the local part is cut
    at the first of these characters. Empty: tagged addresses reach no agent."""

    @field_validator("recipient_delimiter")
    @classmethod
    def _check_recipient_delimiter(cls, value: str) -> str:
        odd = sorted(set(value) - DELIMITER_CHARACTERS)
        if odd:
            raise ValueError(
                f"{''.join(odd)!r} cannot separate a tag from an address — use characters of "
                f'{"".join(sorted(DELIMITER_CHARACTERS))!r} (usually "+"), or "" to turn '
                "subaddresses off"
            )
        return value

    @field_validator("proxy_trusted_cidrs", mode="before")
    @classmethod
    def _split_proxy_trusted_cidrs(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("proxy_trusted_cidrs")
    @classmethod
    def _check_proxy_trusted_cidrs(cls, value: list[str]) -> list[str]:
        return refuse_trusting_everyone(value, "load balancer", "SPF, the limits and the logs")

    @property
    def proxy_trusted_networks(self) -> list[IpNetwork]:
        """`proxy_trusted_cidrs` as networks."""
        return proxy_networks(self.proxy_trusted_cidrs)

    @field_validator("hostname")
    @classmethod
    def _plain_hostname(cls, value: str) -> str:
        """The host name without a root's trailing dot (`mx.example.com.` names the same host,
        but is not how clients write `postmaster@mx.example.com`)."""
        plain = value.strip().removesuffix(".")
        if not plain or any(character.isspace() for character in plain):
            raise ValueError(
                f"{value!r} is not a host name — set the name of this MX host, such as "
                "mx.example.com"
            )
        if any(character in plain for character in ":/@[]"):
            # It names the host in every reply and in addresses (postmaster@, approval
            # replies): a scheme or a port there makes addresses no mail can reach.
            raise ValueError(
                f'write the host name alone, hostname = "{written_host(plain) or "mx"}" — the '
                "port the gateway listens on goes in smtp.listen"
            )
        return plain


class HttpSettings(ListenSection):
    """The HTTP listener: REST, WebSocket, MCP and dashboard."""

    listen: str = "127.0.0.1:8080"
    public_url: str = "http://localhost:8080"
    max_request_bytes: int = Field(default=41_943_040, ge=65_536, le=1_073_741_824)
    keep_alive_seconds: float = Field(default=15.0, gt=0, le=3600)
    request_body_seconds: float = Field(default=60.0, gt=0, le=3600)
    """A request body must arrive whole within this long of the route asking for it (a client
    dribbling a byte at a time never trips `keep_alive_seconds`); else 408, closed."""
    cors_allowed_origins: list[str] = Field(default_factory=list)
    max_websockets_per_key: int = Field(default=20, ge=1, le=10_000)
    """Open agent WebSockets one API key may hold on this process; more answer 429."""
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    """Connections this process serves at once, from anyone; more are closed unserved. It
    shares the process's file descriptors with SMTP and the database."""
    max_connections_per_ip: int = Field(default=100, ge=1, le=1_000_000)
    """Connections served at once from one client network (an IPv4 address, an IPv6 network
    of `ipv6_network_prefix` bits) as the TCP peer, so `trusted_proxies` are exempt; more are
    closed unserved."""
    max_concurrent_exports: int = Field(default=2, ge=1, le=1000)
    """Account exports this process sends at once, whoever asks: each holds a database
    connection (and a snapshot) of its own for as long as it is sent; more answer 429."""
    drain_seconds: float = Field(default=0.0, ge=0, le=300)
    """On SIGTERM or SIGINT, go on serving this long with `GET /readyz` answering 503
    `draining` before stopping, so a load balancer takes this replica out first."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Reverse proxies (addresses or CIDR blocks) whose X-Forwarded-For names the client."""
    ipv6_network_prefix: int = Field(default=64, ge=16, le=128)
    """The per-address limits count an IPv6 client by its network of this prefix length (one
    client usually holds a whole /64); an IPv4 client by its address."""

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_trusted_proxies(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: list[str]) -> list[str]:
        return refuse_trusting_everyone(value, "reverse proxy", "the limits and the logs")

    @property
    def trusted_networks(self) -> list[IpNetwork]:
        """`trusted_proxies` as networks."""
        return proxy_networks(self.trusted_proxies)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        web_origin(value, path_allowed=True)
        return value.rstrip("/")

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("cors_allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        return [web_origin(origin) for origin in value]

    @property
    def public_origin(self) -> str:
        """The origin (scheme://host[:port]) of `public_url`, as a browser sends it."""
        return web_origin(self.public_url, path_allowed=True)


class DatabaseSettings(Section):
    """Where the gateway keeps everything: an SQLite file or a PostgreSQL database."""

    secret_keys = ("url", "listen_url")

    url: str = "sqlite:///./e2a.db"
    url_file: OptionalPath = None
    """A file holding `url` (which may carry a password), instead of `url` itself."""
    replica_id: str = ""
    """This replica's name on a shared database; empty: `<host name>/<http.listen>`."""
    pooled: bool = False
    """`url` goes through a connection pooler in transaction mode (PgBouncer, Supavisor, RDS
    Proxy): no statement is prepared on the server, since the next transaction may run on
    another server session (docs/replicas.md, "Connection poolers")."""
    listen_url: str = ""
    """The connection that LISTENs for the other replicas' news; empty: `url`. It must reach
    PostgreSQL directly or through a pooler in session mode, never in transaction mode."""
    listen_url_file: OptionalPath = None
    """A file holding `listen_url`, instead of `listen_url` itself."""
    silent_server_seconds: int = Field(default=5, ge=1, le=600)
    """PostgreSQL only: how long the server may leave the gateway's data unacknowledged (or,
    a third longer, an idle connection's keepalive probes unanswered) before the connection is
    given up on: the calls on it fail, SMTP answers 451 and the API 503. Set as libpq's
    tcp_user_timeout and keepalives_*, unless `url` sets them itself."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///path/to/e2a.db or postgresql://user:pass@host/db")
        if not value.removeprefix("sqlite:///").strip() and value.startswith("sqlite:"):
            raise ValueError("sqlite:/// names no file — write sqlite:///path/to/e2a.db")
        return value

    @field_validator("listen_url")
    @classmethod
    def _check_listen_url(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "use postgresql://user:pass@host/db, a direct connection to the database of "
                "database.url (or empty: database.url itself)"
            )
        return value


class SigningSettings(Section):
    """The server key behind magic links and signing-secret derivation."""

    secret_keys = ("hmac_secret",)

    hmac_secret: str | None = None
    hmac_secret_file: OptionalPath = None
    """A file holding `hmac_secret`, instead of `hmac_secret` itself."""


class DnsSettings(Section):
    """Resolvers used for SPF, DKIM, DMARC and domain verification."""

    nameservers: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("nameservers", mode="before")
    @classmethod
    def _split_nameservers(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("nameservers")
    @classmethod
    def _check_nameservers(cls, value: list[str]) -> list[str]:
        for server in value:
            nameserver_address(server)
        return value


class OutboundSmtpSettings(Section):
    """The relay that carries agents' mail to the outside world."""

    secret_keys = ("password",)

    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    password_file: OptionalPath = None
    """A file holding `password`, instead of `password` itself."""
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    ca_file: OptionalPath = None
    from_domain: str | None = None
    timeout_seconds: float = Field(default=300.0, gt=0, le=600)
    """Each reply the relay owes a command (its greeting, EHLO, STARTTLS and the handshake,
    AUTH, MAIL, RCPT, DATA, RSET), and the connect (at most 30 s of it)."""
    data_timeout_seconds: float = Field(default=180.0, gt=0, le=3600)
    """Sending a message's data: cut once it makes no progress for this long."""
    end_of_data_timeout_seconds: float = Field(default=600.0, gt=0, le=3600)
    """The relay's reply to the end of a message's data."""
    connection_idle_seconds: float = Field(default=5.0, ge=0, le=300)
    messages_per_connection: int = Field(default=100, ge=1, le=100_000)

    @field_validator("host")
    @classmethod
    def _host_alone(cls, value: str | None) -> str | None:
        """The relay's host name or IP address alone: a port or a scheme written into it
        would pass start-up and then defer every message for a day on a name that never
        resolves."""
        return relay_host(value) if value is not None else None

    @field_validator("from_domain")
    @classmethod
    def _normalise_from_domain(cls, value: str | None) -> str | None:
        """The sending domain as mail carries it (lowercase A-labels, no trailing dot), so
        that the gateway knows its own relayed mail however the domain was written."""
        from e2a_gateway.addresses import normalise_domain

        return normalise_domain(value) if value else None


class DkimSettings(Section):
    """DKIM signing of outbound mail, and the key of the next rotation (`next_selector`,
    `next_private_key_path`): its record is listed beside the signing one, nothing is signed
    with it until the operator makes it the signing key."""

    selector: str | None = None
    private_key_path: OptionalPath = None
    next_selector: str | None = None
    next_private_key_path: OptionalPath = None

    @field_validator("selector", "next_selector")
    @classmethod
    def _check_selector(cls, value: str | None) -> str | None:
        return dkim_selector(value) if value else value


class WebhookSettings(Section):
    """Webhook delivery to cloud agents."""

    allow_private: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    lease_seconds: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _lease_outlasts_attempt(self) -> WebhookSettings:
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError(
                "lease_seconds must be longer than timeout_seconds (a job's lease has to "
                "outlast its attempt, or another replica could send it twice)"
            )
        return self


class RetentionSettings(Section):
    """How long inbound messages are kept."""

    days: int = Field(default=30, ge=1)


MAX_RATE_LIMIT = 1_000_000_000
"""The largest request limit: past it no rate is limited anyway, and a larger count need not
fit a database integer."""


class LimitSettings(Section):
    """Request limits (429 with Retry-After when exceeded), each from 1 to MAX_RATE_LIMIT."""

    sends_per_agent_per_minute: int = Field(default=60, ge=1, le=MAX_RATE_LIMIT)
    sends_per_conversation_per_hour: int = Field(default=30, ge=1, le=MAX_RATE_LIMIT)
    """Messages one agent may send into one conversation per hour: two agents replying to
    each other, or an agent answering an auto-responder, stop within the hour's first
    minute instead of mailing each other at the send limit for ever."""
    agent_registrations_per_ip_per_hour: int = Field(default=20, ge=1, le=MAX_RATE_LIMIT)
    agent_registrations_per_user_per_hour: int = Field(default=20, ge=1, le=MAX_RATE_LIMIT)
    message_polls_per_user_per_minute: int = Field(default=600, ge=1, le=MAX_RATE_LIMIT)
    feedback_per_ip_per_hour: int = Field(default=10, ge=1, le=MAX_RATE_LIMIT)
    """`POST /api/feedback` requests one client address may send per hour (e2a's 10)."""
    unsubscribe_requests_per_ip_per_minute: int = Field(default=60, ge=1, le=MAX_RATE_LIMIT)
    """Requests to the public managed-unsubscribe pages, `GET|POST /u/{token}`, one client
    address may make per minute, unknown tokens included: a person clicks a link or two, a
    mail provider's one-click POSTs come one per message unsubscribed, so 60 only stops a
    client trying tokens or flooding the pages."""
    approval_notices_per_user_per_hour: int = Field(default=30, ge=1, le=MAX_RATE_LIMIT)
    """Approval notices one account's reviewer is mailed per hour, whatever its agents hold:
    the others wait for room (or, with their deadline first, are not mailed), so a flood of
    held mail never floods the reviewer's inbox."""


class PostmasterSettings(Section):
    """Where mail for postmaster (RFC 5321 section 4.5.1) goes."""

    deliver_to: str = ""
    """An agent of this gateway; empty: the postmaster inbox of the first user (docs/smtp.md)."""

    @field_validator("deliver_to")
    @classmethod
    def _normalise_agent(cls, value: str) -> str:
        from e2a_gateway.addresses import normalise_address

        return normalise_address(value) if value else ""


class OperatorSettings(Section):
    """Who runs the gateway: the accounts that see operator pages on the dashboard."""

    secret_keys = ("selftest_secret",)

    accounts: list[str] = Field(default_factory=list)
    """Account email addresses (as `e2a bootstrap --email` created them) of the operators."""
    selftest_secret: str | None = None
    """The bearer token `GET /selftest` asks for (e2a's `E2A_INTERNAL_API_SECRET`). Unset:
    the probe is open in development and refused (503) in production."""
    selftest_secret_file: OptionalPath = None
    """A file holding `selftest_secret`, instead of `selftest_secret` itself."""

    @field_validator("accounts", mode="before")
    @classmethod
    def _split_accounts(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("accounts")
    @classmethod
    def _normalise_accounts(cls, value: list[str]) -> list[str]:
        """Each entry as `e2a bootstrap --email` stores an address; one that is not an address
        (a JSON list in the variable, say) is an error rather than an operator never matched."""
        from e2a_gateway.addresses import normalise_address

        return [normalise_address(item.strip()) for item in value]


class MetricsSettings(Section):
    """The Prometheus endpoint."""

    secret_keys = ("token",)

    enabled: bool = False
    token: str | None = None
    """The bearer token `GET /metrics` asks for (a scraper's `authorization` credentials).
    Unset: the endpoint asks for none."""
    token_file: OptionalPath = None
    """A file holding `token`, instead of `token` itself."""


class LogSettings(Section):
    """Log level and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Settings(Section):
    """Every setting of `e2a serve`. See config.example.toml for each key and its default."""

    env: Literal["development", "production"] = "development"
    shared_domain: str = ""
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    outbound_smtp: OutboundSmtpSettings = Field(default_factory=OutboundSmtpSettings)
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    postmaster: PostmasterSettings = Field(default_factory=PostmasterSettings)
    operators: OperatorSettings = Field(default_factory=OperatorSettings)

    @field_validator("shared_domain")
    @classmethod
    def _normalise_domain(cls, value: str) -> str:
        from e2a_gateway.addresses import normalise_domain

        return normalise_domain(value) if value else ""

    @property
    def replica_id(self) -> str:
        """This replica's stable name, stamped on the job leases it holds."""
        return self.database.replica_id or f"{socket.gethostname()}/{self.http.listen}"

    @property
    def is_production(self) -> bool:
        """True when `env = "production"`."""
        return self.env == "production"


def _section_name(section: type[Section]) -> str:
    """The name `Settings` gives the section `section` (its table in the config file)."""
    return next(name for name, model in _section_fields().items() if model is section)


def _section_fields() -> dict[str, type[Section]]:
    sections: dict[str, type[Section]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            sections[name] = annotation
    return sections


def setting_env_names() -> dict[str, tuple[str, ...]]:
    """Every setting's variable name (`E2A_<SECTION>_<KEY>`, `E2A_<KEY>` at the top level)
    and where it goes in the settings."""
    names: dict[str, tuple[str, ...]] = {}
    sections = _section_fields()
    for key in Settings.model_fields:
        if key in sections:
            for sub in sections[key].model_fields:
                names[f"{ENV_PREFIX}{key}_{sub}".upper()] = (key, sub)
        else:
            names[f"{ENV_PREFIX}{key}".upper()] = (key,)
    return names


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect `E2A_<SECTION>_<KEY>` (and `E2A_<KEY>` for top-level keys) into a nested dict,
    and e2a's own names for them (`E2A_HMAC_SECRET`, `E2A_PUBLIC_URL`; an empty one counts as
    unset, as in e2a). Both names set to different values is a ConfigError naming both.

    Variables that name no setting (such as the SDK's `E2A_API_KEY`) set nothing: they
    belong to clients that share the environment (see `env_warnings`).
    """
    overrides: dict[str, Any] = {}
    names = setting_env_names()
    for name, path in names.items():
        if name in environ:
            _place(overrides, path, environ[name])
    for alias, path in E2A_ALIASES.items():
        value = environ.get(alias, "")
        if not value:
            continue
        ours = next(name for name, where in names.items() if where == path)
        if ours in environ and environ[ours] != value:
            raise ConfigError(
                f"{alias} and {ours} are both set, to different values: {alias} is e2a's name "
                f"for {'.'.join(path)} ({ours}); keep one of them"
            )
        _place(overrides, path, value)
    return overrides


def _place(tree: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def env_warnings(environ: Mapping[str, str]) -> list[str]:
    """What to tell the operator about `E2A_*` variables that set nothing (see
    `e2a_gateway.env_names.unknown_variable_warnings`)."""
    return unknown_variable_warnings(environ, setting_env_names())


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


URL_SETTINGS = {("database", "url"), ("database", "listen_url")}
"""Settings whose value may carry a password: shown only as `redacted_url` shows them."""
SECRET_SETTINGS = {
    (name, key) for name, section in _section_fields().items() for key in section.secret_keys
}
"""Settings whose value an error message never shows (a URL's, but for its password); each
may be read from a file instead, named by its sibling `<key>_file`."""


def secret_file_warnings(settings: Settings) -> list[str]:
    """What to tell the operator about the files secrets were read from: one warning per
    file that users other than its owner may read."""
    warnings = []
    for section, key in sorted(SECRET_SETTINGS):
        path = getattr(getattr(settings, section), f"{key}_file")
        warning = readable_by_others(f"{section}.{key}_file", path) if path else None
        if warning is not None:
            warnings.append(warning)
    return warnings


def _variable_for(location: tuple[str, ...]) -> str:
    """The variable that sets what an error at `location` is about: the setting's own (an
    entry of a list is set with the whole list), or a section's `E2A_<SECTION>_*` ones."""
    paths = {path: name for name, path in setting_env_names().items()}
    for length in (2, 1):
        if location[:length] in paths:
            return paths[location[:length]]
    return f"the {ENV_PREFIX}{location[0].upper()}_* variables"


def _resembled_setting(location: tuple[str, ...]) -> str | None:
    """The known key (`section.key`, or a top-level key or section) most like the unknown one
    at `location`, if any is close enough to be a misspelling of it; else the key of that
    very name in another section (`[http] hostname` for smtp.hostname)."""
    *section, name = location
    sections = _section_fields()
    if not section:
        known: Iterable[str] = Settings.model_fields
    elif len(section) == 1 and section[0] in sections:
        known = sections[section[0]].model_fields
    else:
        return None
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return ".".join([*section, close[0]])
    elsewhere = [
        f"{other}.{name}" for other, model in sections.items() if name in model.model_fields
    ]
    return elsewhere[0] if len(elsewhere) == 1 else None


def _list_in_a_variable(location: tuple[str, ...], got: Any) -> str | None:
    """How to write a list setting's variable, when `got` is a list written as TOML or JSON
    (`["1.1.1.1"]`): a TOML list is a list, so such a string came from a variable."""
    section = _section_fields().get(location[0]) if len(location) == 2 else None
    field = section.model_fields.get(location[1]) if section else None
    if field is None or typing.get_origin(field.annotation) is not list:
        return None
    if not (isinstance(got, str) and got.strip().startswith("[")):
        return None
    items = [item.strip(" \"'") for item in got.strip().strip("[]").split(",")]
    example = ",".join(item for item in items if item)
    return (
        f"a list in a variable is written comma-separated, without brackets or quotes: "
        f"{_variable_for(location)}={example}"
    )


def _secret_file_given(location: tuple[str, ...], data: Mapping[str, Any]) -> str | None:
    """The file the secret at `location` was read from (its `<key>_file` in `data`), if so."""
    if location[:2] not in SECRET_SETTINGS:
        return None
    section, key = location[:2]
    values = data.get(section)
    path = values.get(f"{key}_file") if isinstance(values, dict) else None
    return str(path) if _blank_is_unset(path) is not None else None


def _describe(error: Any, data: Mapping[str, Any]) -> str:
    """One problem of `error` (pydantic's) in the settings `data`, as the operator reads it."""
    location = tuple(str(part) for part in error["loc"])
    key = ".".join(location)
    if error["type"] == "secret_file":  # names its settings and file itself
        return str(error["msg"])
    if error["type"] == "extra_forbidden":
        guess = _resembled_setting(location)
        if guess is not None:
            return f"{key}: unknown setting — did you mean {guess}? (see config.example.toml)"
        return (
            f"{key}: unknown setting — remove it or check its spelling against config.example.toml"
        )
    fix = f"fix it in the config file or {_variable_for(location)}"
    secret_file = _secret_file_given(location, data)
    if secret_file is not None:
        fix = f"fix the secret in {secret_file}, which {'.'.join(location[:2])}_file names"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if error["type"] == "model_type" and len(location) == 1:
        message = f"should be a [{key}] table of settings, not a single value"
    elif error["type"] == "path_type":
        message = "should be a file path, written as a string"
    hint = _list_in_a_variable(location[:2], got)
    if hint is not None:
        return f"{key}: {message} — {hint}"
    if isinstance(got, dict):
        if len(location) == 1:  # a whole section: its keys are named in the message
            return f"{key}: {message} ({fix})"
        return f"{key}: {message} (got a table; {fix})"
    secret = location[:2] in SECRET_SETTINGS
    if secret and not (location[:2] in URL_SETTINGS and isinstance(got, str) and "://" in got):
        return f"{key}: {message} (the value is not shown: it is a secret; {fix})"
    if isinstance(got, str) and "://" in got:
        # A URL may carry a password (database.url): never into the terminal or the log.
        got = redacted_url(got)
    return f"{key}: {message} (got {got!r}; {fix})"


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the TOML file at `path` (if any), then apply env overrides.

    Raises ConfigError naming the offending key when the file or a value is invalid.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is no TOML statement
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise ConfigError(
                f"config file {path} does not exist — check the --config path"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"config file {path} is not UTF-8 text — save it as UTF-8 (TOML requires it)"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read config file {path}: {exc.strerror or exc} — check the --config "
                "path and its permissions"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            hint = ""
            if path.suffix.lower() in (".yaml", ".yml"):
                hint = (
                    " — e2a's YAML configuration is not read here: write its settings as TOML, "
                    "after config.example.toml"
                )
            raise ConfigError(f"config file {path} is not valid TOML: {exc}{hint}") from None
    data = _merge(data, env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, data) for error in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
