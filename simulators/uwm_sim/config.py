"""The fleet YAML as pydantic models: one file describes a whole simulated estate.

Why here: every process of a fleet (one per server, or one for all) reads the same file, so the
topology rules (databases exist and match the server kind, one master per replication group, known
releases, unique ports) are checked once, with errors that name the field. Connection strings and the
token are secrets: given directly, through `${VAR}` expansion or through `...Env: NAME`, and kept as
`SecretStr` so they never show up in reprs, logs or error messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.alias_generators import to_camel

DEFAULT_PORTS = {"Management": 7751, "Personalization": 7771}
_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_RELEASE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
_VAR = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Kind = Literal["Management", "Personalization"]


class ConfigError(ValueError):
    """The fleet configuration is invalid; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              hide_input_in_errors=True)


class Timing(_Model):
    settle_seconds: float = Field(30.0, ge=0, description="status page confirms this long after a start")
    install_seconds: float = Field(5.0, ge=0)
    migration_step_seconds: float = Field(1.0, ge=0, description="per catalog release the schema passes")
    caught_up_seconds: float = Field(2.0, ge=0, description="subscribers catch up this long after enabling")
    crash_restart_seconds: float = Field(2.0, ge=0, description="down time after an injected crash")
    migration_retry_seconds: float = Field(120.0, ge=0, description="a migration whose database is unreachable "
                                           "retries this long (one outage), then ends Failed")


class Connection(_Model):
    """An ODBC connection string, given as `odbc` (with `${VAR}` expansion) or via `odbcEnv: NAME`."""

    odbc: SecretStr | None = None
    odbc_env: str | None = None
    dialect: Literal["postgresql", "mssql"] | None = None

    @model_validator(mode="after")
    def _resolve(self) -> Connection:
        if self.odbc_env:
            if self.odbc is not None:
                raise ValueError("odbcEnv: give either odbc or odbcEnv, not both")
            value = os.environ.get(self.odbc_env)
            if not value:
                raise ValueError(f"odbcEnv: environment variable {self.odbc_env!r} is not set")
            self.odbc = SecretStr(value)
        if self.odbc is None or not self.odbc.get_secret_value().strip():
            raise ValueError("odbc: a connection string is required (odbc or odbcEnv)")
        return self

    @property
    def connection_string(self) -> str:
        assert self.odbc is not None
        return self.odbc.get_secret_value()


class DatabaseConfig(Connection):
    name: str = Field(pattern=_NAME)
    kind: Kind
    schema_version: str | None = Field(None, description="schema of a new database (default: first release)")
    seed_rows: int = Field(20, ge=0, le=100_000, description="user personalization rows seeded once")


class ServerConfig(_Model):
    name: str = Field(pattern=_NAME)
    kind: Kind
    database: str
    port: int | None = Field(None, ge=0, le=65535, description="0 = any free port; default 7751/7771")
    url: str | None = Field(None, pattern=r"^https?://", description="advertised URL (default from host:port)")
    version: str | None = Field(None, description="initial release (default: the database's schema)")
    load_balanced: bool = False
    in_rotation: bool = True
    replication_role: Literal["None", "Master", "Subscriber"] = "None"
    replication_group: str = Field("default", pattern=_NAME)
    replication_enabled: bool = True
    online: bool = Field(True, description="serving clients at start (a new server waits offline to be brought in)")
    website: str = Field("Default Web Site", min_length=1, max_length=128, description="the IIS website it is in")
    other_apps_in_root: list[str] = Field([], description="other applications using the root of that website")

    @property
    def bind_port(self) -> int:
        return DEFAULT_PORTS[self.kind] if self.port is None else self.port


class LoadBalancerConfig(_Model):
    name: str = Field(pattern=_NAME)
    port: int = Field(0, ge=0, le=65535)
    servers: list[str] = Field(min_length=1)


_HOST = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class PolicyEntryConfig(_Model):
    """One Personalization Server URL of the Environment Manager policy: a server, a virtual host name, or a
    host whose default website clients reach (`http://<host>`)."""

    server: str | None = None
    virtual_host: str | None = Field(None, pattern=_HOST)
    default_website: str | None = Field(None, pattern=_HOST)

    @model_validator(mode="after")
    def _one(self) -> PolicyEntryConfig:
        if [self.server, self.virtual_host, self.default_website].count(None) != 2:
            raise ValueError("give one of server, virtualHost or defaultWebsite")
        return self


class HostWebsitesConfig(_Model):
    """The UWM websites of one host clients reach by name: its default website (the one without a host
    header: `http://<host>` reaches it) and the websites with a host header (a new server beside it)."""

    default_website: str | None = None
    host_headers: dict[str, str] = {}


class ClientsConfig(_Model):
    """Where the estate's clients point at start (docs/contracts.md section 2b); servers by name.

    Left out: the Failover Server List holds every online Management Server, the Deployment Agent the first
    of them, and the policy every online Personalization Server's own URL.
    """

    failover_servers: list[str] | None = None
    deployment_agent: str | None = None
    deployment_agent_host: str | None = Field(None, pattern=_HOST, description="the agent uses http://<host>")
    policy: list[PolicyEntryConfig] | None = None
    virtual_hosts: dict[str, list[str]] = {}
    dns_records: dict[str, str] = {}
    websites: dict[str, HostWebsitesConfig] = {}


class FleetConfig(_Model):
    releases: list[str] = Field(min_length=1, max_length=50)
    token: SecretStr | None = None
    token_env: str | None = None
    host: str = "127.0.0.1"
    advertise_host: str | None = None
    state_database: Connection
    timing: Timing = Timing()
    databases: list[DatabaseConfig] = Field(min_length=1)
    servers: list[ServerConfig] = Field(min_length=1)
    load_balancers: list[LoadBalancerConfig] = []
    clients: ClientsConfig = ClientsConfig()

    @model_validator(mode="after")
    def _check(self) -> FleetConfig:
        self._check_token()
        self._check_releases()
        dbs = _unique("databases", [d.name for d in self.databases])
        _unique("servers", [s.name for s in self.servers] + [lb.name for lb in self.load_balancers])
        ports: dict[int, str] = {}
        by_kind = {d.name: d for d in self.databases}
        seen_conn: dict[str, int] = {}
        for i, d in enumerate(self.databases):
            if d.connection_string in seen_conn:
                first = seen_conn[d.connection_string]
                raise ValueError(f"databases[{i}].odbc: the same database as databases[{first}] "
                                 "(each UWM database needs its own)")
            seen_conn[d.connection_string] = i
            if d.schema_version is None:
                d.schema_version = self.releases[0]
            elif d.schema_version not in self.releases:
                raise ValueError(f"databases[{i}].schemaVersion: {d.schema_version!r} is not in releases")
        masters: dict[str, str] = {}
        for i, s in enumerate(self.servers):
            where = f"servers[{i}]"
            if s.database not in dbs:
                raise ValueError(f"{where}.database: no database named {s.database!r}")
            db = by_kind[s.database]
            if db.kind != s.kind:
                raise ValueError(f"{where}.database: {s.database!r} is a {db.kind} database, not {s.kind}")
            if s.version is None:
                s.version = db.schema_version
            elif s.version not in self.releases:
                raise ValueError(f"{where}.version: {s.version!r} is not in releases")
            if s.replication_role != "None" and s.kind != "Personalization":
                raise ValueError(f"{where}.replicationRole: only Personalization servers replicate")
            if s.replication_role == "Master":
                if s.replication_group in masters:
                    raise ValueError(f"{where}.replicationRole: group {s.replication_group!r} already has "
                                     f"master {masters[s.replication_group]!r}")
                masters[s.replication_group] = s.name
            _port(ports, s.bind_port, f"{where}.port")
        for i, s in enumerate(self.servers):
            if s.replication_role == "Subscriber" and s.replication_group not in masters:
                raise ValueError(f"servers[{i}].replicationGroup: group {s.replication_group!r} has no Master")
        names = {s.name for s in self.servers}
        for i, lb in enumerate(self.load_balancers):
            for member in lb.servers:
                if member not in names:
                    raise ValueError(f"loadBalancers[{i}].servers: no server named {member!r}")
            _port(ports, lb.port, f"loadBalancers[{i}].port")
        self._check_clients()
        return self

    def _check_clients(self) -> None:
        kinds = {s.name: s.kind for s in self.servers}

        def need(name: str, kind: str, where: str) -> None:
            if kinds.get(name) != kind:
                raise ValueError(f"clients.{where}: {name!r} is not a {kind} server of the fleet")
        c = self.clients
        for i, name in enumerate(c.failover_servers or []):
            need(name, "Management", f"failoverServers[{i}]")
        if c.deployment_agent is not None:
            need(c.deployment_agent, "Management", "deploymentAgent")
        for name, hosts in c.virtual_hosts.items():
            need(name, "Personalization", f"virtualHosts.{name}")
            for host in hosts:
                if not re.match(_HOST, host):
                    raise ValueError(f"clients.virtualHosts.{name}: {host!r} is not a host name")
        for host, name in c.dns_records.items():
            if not re.match(_HOST, host):
                raise ValueError(f"clients.dnsRecords: {host!r} is not a host name")
            need(name, "Personalization", f"dnsRecords.{host}")
        for i, entry in enumerate(c.policy or []):
            if entry.server is not None:
                need(entry.server, "Personalization", f"policy[{i}].server")
            elif entry.default_website is not None:
                if entry.default_website not in c.websites:
                    raise ValueError(f"clients.policy[{i}].defaultWebsite: no websites entry for"
                                     f" {entry.default_website!r}")
            elif entry.virtual_host not in c.dns_records:
                raise ValueError(f"clients.policy[{i}].virtualHost: no dnsRecords entry for {entry.virtual_host!r}")
        self._check_websites(kinds)

    def _check_websites(self, kinds: Mapping[str, str]) -> None:
        c = self.clients
        if c.deployment_agent is not None and c.deployment_agent_host is not None:
            raise ValueError("clients.deploymentAgentHost: give either deploymentAgent or deploymentAgentHost")
        if c.deployment_agent_host is not None and c.deployment_agent_host not in c.websites:
            raise ValueError(f"clients.deploymentAgentHost: no websites entry for {c.deployment_agent_host!r}")
        placed: dict[str, str] = {}
        for host, w in c.websites.items():
            if not re.match(_HOST, host):
                raise ValueError(f"clients.websites: {host!r} is not a host name")
            names = [*([w.default_website] if w.default_website else []), *w.host_headers]
            for name in names:
                if name not in kinds:
                    raise ValueError(f"clients.websites.{host}: {name!r} is not a server of the fleet")
                if name in placed:
                    raise ValueError(f"clients.websites.{host}: {name!r}'s website is already on {placed[name]}")
                placed[name] = host
            for name, header in w.host_headers.items():
                if not re.match(_HOST, header):
                    raise ValueError(f"clients.websites.{host}.hostHeaders.{name}: {header!r} is not a host name")

    def _check_token(self) -> None:
        if self.token_env:
            if self.token is not None:
                raise ValueError("token: give either token or tokenEnv, not both")
            value = os.environ.get(self.token_env)
            if not value:
                raise ValueError(f"tokenEnv: environment variable {self.token_env!r} is not set")
            self.token = SecretStr(value)
        if self.token is None or len(self.token.get_secret_value()) < 8:
            raise ValueError("token: an agent token of at least 8 characters is required (token or tokenEnv)")

    def _check_releases(self) -> None:
        _unique("releases", self.releases)
        for i, r in enumerate(self.releases):
            if not _RELEASE.match(r):
                raise ValueError(f"releases[{i}]: {r!r} is not a valid release name")

    @property
    def agent_token(self) -> str:
        assert self.token is not None
        return self.token.get_secret_value()

    def database(self, name: str) -> DatabaseConfig:
        return next(d for d in self.databases if d.name == name)

    def server(self, name: str) -> ServerConfig:
        return next(s for s in self.servers if s.name == name)


def _unique(field: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"{field}[{i}]: duplicate name {n!r}")
        seen.add(n)
    return seen


def _port(ports: dict[int, str], port: int, where: str) -> None:
    if port == 0:
        return
    if port in ports:
        raise ValueError(f"{where}: port {port} is already used by {ports[port]}")
    ports[port] = where


def expand_env(value: Any, path: str = "", env: Mapping[str, str] | None = None) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string; `$${` keeps a literal `${`."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0)[1:]
        name, default = m.group(2), m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path or '<root>'}: environment variable {name!r} is not set")

    return _VAR.sub(sub, value)


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = re.match(r"^([A-Za-z]+): ", msg)
        if loc and field:
            loc, msg = f"{loc}.{field.group(1)}", msg[field.end():]
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def parse_fleet(data: Any) -> FleetConfig:
    """Validate an already-loaded fleet document (after `${VAR}` expansion)."""
    if isinstance(data, FleetConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError("the fleet file must be a YAML mapping")
    try:
        return FleetConfig.model_validate(expand_env(dict(data)))
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def load_fleet(path: str | Path) -> FleetConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read fleet file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # the message alone: the snippet could quote a secret
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or 'syntax error'}") from None
    return parse_fleet(data)
