"""What the adapters observed of the estate, as plain values, and the secret-free errors adapters raise.

`decide()` reads only these values (plus the spec and the recorded status), so the core never talks to
a server or a database. Adapters fill them from the agent state, the Configuration Portal, the status
pages and the database tables (docs/contracts.md sections 2 and 3). Anything an adapter could not observe
is left out and named in `Observations.gaps`: the core then waits instead of guessing.

Health confirmations are counted by the adapter that polls the status pages, with `HealthStreak` (a pure
fold kept in memory per server): a restart of the operator starts the count again, which can only ask for
more confirmations, never fewer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .enums import MigrationStatus, ReplicationRole, ServerKind, ServerPhase, StepName

_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(pwd|password|secret|token|apikey|api_key)\s*[=:]\s*[^;\s,]+"), r"\1=***"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer ***"),
    (re.compile(r"(?i)(authorization\s*[=:]\s*)[^;\s,]+"), r"\1***"),
)
MAX_MESSAGE = 1024


def redact(text: str) -> str:
    """`text` with anything that looks like a credential masked, cut to a readable length.

    Adapters already strip the connection strings and tokens they know; this is the core's own net under
    every message it writes into the status, so a secret never reaches `kubectl describe`.
    """
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


@dataclass(frozen=True)
class Where:
    """Where something happened: the hop, the step, the server and/or the database it concerns."""

    hop: int | None = None
    step: StepName | None = None
    server: str | None = None
    database: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.hop is not None:
            parts.append(f"hop {self.hop}")
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.database is not None:
            parts.append(f"database {self.database}")
        if self.server is not None:
            parts.append(f"server {self.server}")
        return ", ".join(parts) or "the plan"


class UpgradeError(Exception):
    """An adapter could not do what it was asked. The message is redacted on construction."""

    def __init__(self, where: Where, message: str, rule: str | None = None) -> None:
        self.where = where
        self.message = redact(message)
        self.rule = rule  # the guide rule an agent's 409 refusal named, if any
        super().__init__(f"{where}: {self.message}")


class TransientError(UpgradeError):
    """Retrying may help (connection refused, timeout, agent `busy` or `schema-locked`)."""

    def __init__(self, where: Where, message: str, rule: str | None = None, retry_after: float = 5.0) -> None:
        super().__init__(where, message, rule)
        self.retry_after = retry_after


class PermanentError(UpgradeError):
    """Retrying cannot help (a refusal by a guide rule, an install that failed, a bad request)."""


@dataclass(frozen=True)
class InstallObservation:
    target_version: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ServerObservation:
    """One server's agent state (`GET /agent/v1/state`)."""

    name: str
    kind: ServerKind
    version: str
    phase: ServerPhase
    database: str
    settled: bool = True
    install: InstallObservation = InstallObservation()
    replication_role: ReplicationRole = ReplicationRole.NONE
    replication_enabled: bool = False
    caught_up: bool = True
    load_balanced: bool = False
    in_rotation: bool = False
    active_requests: int = 0
    # Serving clients (brought online, not taken offline): strategy CleanInstall turns it on and off.
    online: bool = True
    virtual_hosts: tuple[str, ...] = ()
    # The website it is installed in: the guide forbids upgrading a Personalization Server in place in
    # the root of the default website when other applications use that root.
    default_website: bool = False
    other_apps_in_root: tuple[str, ...] = ()

    @property
    def busy(self) -> bool:
        """An operation runs on it that must not be interrupted or doubled."""
        return self.phase in (ServerPhase.INSTALLING, ServerPhase.MIGRATING_SCHEMA)


@dataclass(frozen=True)
class BackupObservation:
    id: str
    verified: bool
    taken_at: datetime | None = None
    schema_version: str | None = None


@dataclass(frozen=True)
class DatabaseObservation:
    """One database: its tables (schema version, lock) and its portal view (updates required, status)."""

    name: str
    schema_version: str
    lock_holder: str | None = None
    updates_required: bool = False
    migration: MigrationStatus = MigrationStatus.IDLE
    backups: tuple[BackupObservation, ...] = ()

    def backup(self, backup_id: str) -> BackupObservation | None:
        return next((b for b in self.backups if b.id == backup_id), None)


@dataclass(frozen=True)
class HealthObservation:
    """A server's status page: did the last poll confirm, and how many polls in a row have."""

    ok: bool
    consecutive: int = 0
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class HealthStreak:
    """Consecutive confirmations of one status page, polled at most once per period (a pure fold).

    A confirmation of another release than the last one starts the count again: confirmations from
    before an install never count for the release installed.
    """

    consecutive: int = 0
    last_poll: datetime | None = None
    version: str | None = None

    def due(self, now: datetime, period_seconds: float) -> bool:
        return self.last_poll is None or now - self.last_poll >= timedelta(seconds=period_seconds)

    def record(self, ok: bool, now: datetime, version: str | None = None) -> HealthStreak:
        if not ok:
            return HealthStreak(0, now, version)
        same = version is None or version == self.version
        return HealthStreak(self.consecutive + 1 if same else 1, now, version)


def norm_url(url: str) -> str:
    """A URL as compared: scheme and host lower case, no trailing slash."""
    scheme, _, rest = url.strip().partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{(slash + path).rstrip('/')}"


@dataclass(frozen=True)
class ClientsObservation:
    """Where the estate's clients point (the agents' `GET /agent/v1/clients`), every server by its URL."""

    failover: tuple[str, ...] = ()                           # the Failover Server List
    agent: str | None = None                                 # the URL the Deployment Agent was deployed with
    policy: tuple[str, ...] = ()                             # the Environment Manager policy's PS URLs
    dns: Mapping[str, str] = field(default_factory=dict)     # host name -> server URL
    virtual_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # server URL -> host names
    online: Mapping[str, bool] = field(default_factory=dict)  # server URL -> serving clients
    cut_off: tuple[str, ...] = ()                            # clients the estate reports reaching no server

    def describe(self) -> str:
        dns = ", ".join(f"{h} -> {u}" for h, u in sorted(self.dns.items()))
        text = (f"clients: Deployment Agent {self.agent or 'none'}, Failover Server List"
                f" [{', '.join(self.failover)}], policy [{', '.join(self.policy)}]")
        text += f", DNS {dns}" if dns else ""
        return text + (f"; CUT OFF: {'; '.join(self.cut_off)}" if self.cut_off else "")


@dataclass(frozen=True)
class ObservationGap:
    """Something that could not be observed this time, and why (secret-free)."""

    where: Where
    message: str


@dataclass(frozen=True)
class Observations:
    """Everything observed in one pass, keyed by the spec's server and database names."""

    servers: Mapping[str, ServerObservation] = field(default_factory=dict)
    databases: Mapping[str, DatabaseObservation] = field(default_factory=dict)
    health: Mapping[str, HealthObservation] = field(default_factory=dict)
    gaps: tuple[ObservationGap, ...] = ()
    # Other UpgradePlans that hold a server or database of this plan (running, paused or rolling back,
    # or created earlier and still pending): this plan must not start while any does.
    competing_plans: tuple[str, ...] = ()
    # strategy CleanInstall: the estate's client configuration (None: not observed)
    clients: ClientsObservation | None = None

    @classmethod
    def of(cls, servers: tuple[ServerObservation, ...] = (), databases: tuple[DatabaseObservation, ...] = (),
           health: Mapping[str, HealthObservation] | None = None, gaps: tuple[ObservationGap, ...] = (),
           competing_plans: tuple[str, ...] = (), clients: ClientsObservation | None = None) -> Observations:
        return cls({s.name: s for s in servers}, {d.name: d for d in databases}, dict(health or {}), gaps,
                   competing_plans, clients)
