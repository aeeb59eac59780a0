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
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from html import unescape
from urllib.parse import urlsplit

from .enums import MigrationStatus, ReplicationRole, ServerKind, ServerPhase, StepName
from .models import StepKey

_SECRET_PATTERNS = (
    # key=value credentials; an ODBC `{...}` value whole (it may hold `;`, spaces and `}}`)
    # (the label upgrade.uwm.io/plan-secret=true, which messages name, is no credential)
    (re.compile(r"(?i)\b(?<!upgrade\.uwm\.io/plan-)(pwd|password|passwd|secret|token|apikey|api_key|api-key)\s*[=:]\s*"
                r"(?:\{(?:[^}]|\}\})*\}?|[^;\s,]+)"), r"\1=***"),
    (re.compile(r"(?i)\bbearer\s+\S+"), "Bearer ***"),
    (re.compile(r"(?i)\bbasic\s+[A-Za-z0-9+/]{4,}=*"), "Basic ***"),
    (re.compile(r"(?i)(authorization\s*[=:]\s*)(?!bearer\b|basic\b)[^;\s,]+"), r"\1***"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@"), r"\1***@"),  # URL user-info
)
MAX_MESSAGE = 1024


@lru_cache(maxsize=4096)
def redact(text: str) -> str:
    """`text` with anything that looks like a credential masked, cut to a readable length.

    Adapters already strip the connection strings and tokens they know; this is the core's own net under
    every message it writes into the status, so a secret never reaches `kubectl describe`. Remembered:
    every turn words the same messages again (five patterns over each were 5% of a wide plan's CPU).
    """
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def printable(text: str, limit: int = 128) -> str:
    """What a server answered, as one printable line of at most `limit` characters: markup and control
    characters dropped, entities decoded (nothing a server answers is echoed raw)."""
    line = "".join(ch if ch.isprintable() else " " for ch in unescape(str(text)))
    return " ".join(re.sub(r"<[^>]*>", " ", line).split())[:limit]


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


# `TransientError.rule` of a request that was certainly not sent (the adapter could not even read what
# it needed first): nothing happened, and asking again later is asking for the first time.
NOT_SENT = "not-sent"


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
    # The name the server's agent gives itself (None: not reported). A server reached under another
    # name than the spec's (a typo, `localhost` for `127.0.0.1`, a DNS alias) is another server.
    reported_name: str | None = None
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
    # The portal's last migration: the server that ran it and its error (a Failed one's evidence).
    migration_by: str | None = None
    migration_error: str | None = None
    # The versions recorded in `uwm_migrations` (empty: unknown, not read).
    migrations: tuple[str, ...] = ()

    def backup(self, backup_id: str) -> BackupObservation | None:
        return next((b for b in self.backups if b.id == backup_id), None)


@dataclass(frozen=True)
class HealthObservation:
    """A server's status page: did the last poll confirm, how many polls in a row have, and why it last
    failed to confirm this release (a flapping page's reason, kept while it confirms again)."""

    ok: bool
    consecutive: int = 0
    version: str | None = None
    detail: str = ""
    last_failure: str | None = None


def page_problems(server: str, named: str | None, version: str | None,
                  tests: tuple[tuple[str, bool], ...] | None) -> list[str]:
    """What is wrong with a status page that answered 200, by the guide's test: "check the details are
    correct and the tests are successful" (empty: it confirms). The release it must show is the caller's
    to check (`version` must at least be there)."""
    problems = []
    if named is None:
        problems.append("it does not name its server")
    elif named != server:
        problems.append(f"it names another server, {named}, not {server}")
    if version is None:
        problems.append("it shows no version")
    if not tests:
        problems.append("it lists no tests")
    else:
        failed = [name for name, passed in tests if not passed]
        if failed:
            problems.append("failed tests: " + ", ".join(failed))
    return problems


@dataclass(frozen=True)
class HealthStreak:
    """Consecutive confirmations of one status page, polled at most once per period (a pure fold), and
    why it last failed to confirm (kept while it confirms again: a flapping page's reason).

    A page showing another release than the last one starts afresh, count and failure alike:
    confirmations from before an install never count for the release installed. A page that shows no
    release (no answer at all, say) neither starts afresh nor changes the release being counted.
    """

    consecutive: int = 0
    last_poll: datetime | None = None
    version: str | None = None
    last_failure: str | None = None

    def due(self, now: datetime, period_seconds: float) -> bool:
        return self.last_poll is None or now - self.last_poll >= timedelta(seconds=period_seconds)

    def record(self, ok: bool, now: datetime, version: str | None = None, failure: str | None = None) -> HealthStreak:
        """The streak after one poll; `failure` says why a page that did not confirm failed."""
        same = version is None or version == self.version
        release = self.version if version is None else version
        kept = self.last_failure if same else None
        if not ok:
            return HealthStreak(0, now, release, failure or kept)
        return HealthStreak(self.consecutive + 1 if same else 1, now, release, kept)


def norm_url(url: str) -> str:
    """A URL as compared: scheme and host lower case, no trailing slash."""
    scheme, _, rest = url.strip().partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{(slash + path).rstrip('/')}"


def host_of(url: str) -> str:
    """The host name a URL names, lower case: no scheme, user info, port or path (a policy's
    `http://pers.corp` names the virtual host `pers.corp`)."""
    return (urlsplit(url.strip() if "://" in url else "//" + url.strip()).hostname or "").lower()


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
    # the hosts clients reach by name (`http://<host>`): host -> the URL of the server whose website is its
    # default website; and server URL -> the host its website is on (as default website or with a host header)
    default_websites: Mapping[str, str] = field(default_factory=dict)
    website_hosts: Mapping[str, str] = field(default_factory=dict)
    agent_license: str | None = None                         # the fingerprint of the Deployment Agent's license

    def describe(self) -> str:
        dns = ", ".join(f"{h} -> {u}" for h, u in sorted(self.dns.items()))
        sites = ", ".join(f"{h} -> {u}" for h, u in sorted(self.default_websites.items()))
        text = (f"clients: Deployment Agent {self.agent or 'none'}, Failover Server List"
                f" [{', '.join(self.failover)}], policy [{', '.join(self.policy)}]")
        text += f", DNS {dns}" if dns else ""
        text += f", default websites {sites}" if sites else ""
        text += f", license {self.agent_license}" if self.agent_license else ""
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
    # Per database, the SERVER/PORT/DATABASE its connection string names (never a password), which the
    # approval hash covers. None: not read this time (the plan's Secrets could not be read).
    database_targets: Mapping[str, str] | None = None
    # How long each Running step has been running, in seconds, on the operator's own monotonic clock since
    # this process first saw it running (a step it has not timed yet is absent: it just started). The step
    # timeouts use it instead of `now - startedAt`, which compares this process's clock with a time another
    # pod may have written. None (pure tests, tools): measure from `startedAt` on `now`.
    running_for: Mapping[StepKey, float] | None = None
    # strategy CleanInstall: per new Management Server with a `replacement.license`, the fingerprint of the
    # license its Secret holds (the value itself never reaches the core)
    licenses: Mapping[str, str] = field(default_factory=dict)
    license_problems: Mapping[str, str] = field(default_factory=dict)  # why a license could not be read
    # spec.maintenanceWindow's time zone, looked up by the engine in the time zone database (the core has
    # no clock and no tz database of its own). None: no window, or a zone the database does not know.
    zone: tzinfo | None = None

    @classmethod
    def of(cls, servers: tuple[ServerObservation, ...] = (), databases: tuple[DatabaseObservation, ...] = (),
           health: Mapping[str, HealthObservation] | None = None, gaps: tuple[ObservationGap, ...] = (),
           competing_plans: tuple[str, ...] = (), clients: ClientsObservation | None = None) -> Observations:
        return cls({s.name: s for s in servers}, {d.name: d for d in databases}, dict(health or {}), gaps,
                   competing_plans, clients)
