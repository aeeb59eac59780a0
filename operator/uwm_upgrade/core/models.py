"""Typed models of the UpgradePlan's spec and status (docs/contracts.md section 1), camelCase on the wire.

The API server validates the spec with the CRD's schema and CEL rules; these models validate it again,
with the same rules and errors that name the field, because the operator never trusts its input blindly
(a CRD installed by hand or an older schema may let anything through). `parse_spec` is the one entry
point; it raises `SpecError` whose message lists every bad field as `spec.<path>: <why>`.

Every model is frozen: status changes are made by the pure transactions of `status.py`, which return a
new status, so "what changed" is always a comparison of two values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .enums import (
    ConditionStatus,
    ConditionType,
    CutoverMethod,
    CutoverState,
    FailurePolicy,
    Health,
    PersonalizationCutover,
    Phase,
    ReplicationRole,
    ReplicationState,
    ServerKind,
    StepName,
    StepState,
    Strategy,
)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
RELEASE = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"
URL = r"^https?://\S+$"
HOST = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

Release = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=RELEASE)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]


class SpecError(ValueError):
    """The spec breaks a rule of the contract; the message names every offending field."""


# ---------------------------------------------------------------- spec


class _Spec(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class SecretKeyRef(_Spec):
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME)
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY)


class AgentSecretRef(SecretKeyRef):
    key: str = Field("token", min_length=1, max_length=253, pattern=SECRET_KEY)


class DatabaseSpec(_Spec):
    name: Label
    kind: ServerKind
    connection_secret_ref: SecretKeyRef = Field(alias="connectionSecretRef")


class ReplacementSpec(_Spec):
    """strategy CleanInstall: the new server that replaces this one (a clean install at a new URL)."""

    url: str = Field(min_length=8, max_length=2048, pattern=URL)
    name: Label | None = None  # its name in the plan's status; default `<name>-new`


class PersonalizationReplacementSpec(ReplacementSpec):
    # The virtual host name (DNS record) Environment Manager clients use to reach this server today;
    # needed for spec.personalizationCutover VirtualHostDns.
    virtual_host: str | None = Field(None, min_length=1, max_length=253, pattern=HOST, alias="virtualHost")


class ManagementServerSpec(_Spec):
    name: Label
    url: str = Field(min_length=8, max_length=2048, pattern=URL)
    database: str = Field(min_length=1, max_length=63)
    load_balanced: bool = Field(False, alias="loadBalanced")
    replacement: ReplacementSpec | None = None


class PersonalizationServerSpec(ManagementServerSpec):
    replication_role: ReplicationRole = Field(ReplicationRole.NONE, alias="replicationRole")
    replacement: PersonalizationReplacementSpec | None = None


class BackupSpec(_Spec):
    enabled: bool = True


class HealthCheckSpec(_Spec):
    timeout_seconds: int = Field(120, ge=1, le=3600, alias="timeoutSeconds")
    period_seconds: int = Field(2, ge=1, le=300, alias="periodSeconds")
    success_threshold: int = Field(1, ge=1, le=20, alias="successThreshold")

    @model_validator(mode="after")
    def _period_within_timeout(self) -> HealthCheckSpec:
        if self.period_seconds > self.timeout_seconds:
            raise ValueError("spec.healthCheck.periodSeconds must not exceed spec.healthCheck.timeoutSeconds")
        return self


class ApprovalSpec(_Spec):
    required: bool = False


@dataclass(frozen=True)
class Server:
    """One server of either list, with what the plan needs to know about it, in spec order."""

    name: str
    kind: ServerKind
    url: str
    database: str
    load_balanced: bool
    role: ReplicationRole


@dataclass(frozen=True)
class Replacement:
    """strategy CleanInstall: a server (`old`) and the new server that replaces it (`new`, same kind and
    database, at a new URL), and how its clients are moved to it."""

    old: Server
    new: Server
    method: CutoverMethod
    virtual_host: str | None = None


class UpgradePlanSpec(_Spec):
    target_version: Release = Field(alias="targetVersion")
    releases: Annotated[tuple[Release, ...], Field(min_length=1, max_length=50)] | None = None
    max_major_versions_per_step: int = Field(2, ge=1, le=2, alias="maxMajorVersionsPerStep")
    strategy: Strategy = Strategy.IN_PLACE
    databases: tuple[DatabaseSpec, ...] = Field(min_length=1, max_length=50)
    management_servers: tuple[ManagementServerSpec, ...] = Field((), max_length=100, alias="managementServers")
    personalization_servers: tuple[PersonalizationServerSpec, ...] = Field(
        (), max_length=100, alias="personalizationServers")
    agent_secret_ref: AgentSecretRef = Field(alias="agentSecretRef")
    backup: BackupSpec = BackupSpec()
    health_check: HealthCheckSpec = Field(HealthCheckSpec(), alias="healthCheck")
    max_concurrent_servers: int = Field(1, ge=1, le=100, alias="maxConcurrentServers")
    failure_policy: FailurePolicy = Field(FailurePolicy.HALT, alias="failurePolicy")
    paused: bool = False
    approval: ApprovalSpec = ApprovalSpec()
    personalization_cutover: PersonalizationCutover = Field(PersonalizationCutover.VIRTUAL_HOST_DNS,
                                                            alias="personalizationCutover")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> UpgradePlanSpec:
        problems = _cross_field_problems(self) + _clean_install_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def servers(self) -> tuple[Server, ...]:
        """Every server, Management first, each list in spec order (the order the plan works in)."""
        found = [Server(s.name, ServerKind.MANAGEMENT, s.url, s.database, s.load_balanced, ReplicationRole.NONE)
                 for s in self.management_servers]
        found += [Server(s.name, ServerKind.PERSONALIZATION, s.url, s.database, s.load_balanced, s.replication_role)
                  for s in self.personalization_servers]
        return tuple(found)

    def server(self, name: str) -> Server:
        """A server of either list, or a replacement (strategy CleanInstall), by name."""
        for candidate in (*self.servers(), *self.replacement_servers()):
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def replacements(self) -> tuple[Replacement, ...]:
        """strategy CleanInstall: every server with a replacement, in the order of `servers()`."""
        found = []
        entries: tuple[ManagementServerSpec, ...] = (*self.management_servers, *self.personalization_servers)
        for entry, server in zip(entries, self.servers(), strict=True):
            if entry.replacement is None:
                continue
            new = Server(entry.replacement.name or f"{server.name[:59]}-new", server.kind, entry.replacement.url,
                         server.database, False, server.role)
            if server.kind is ServerKind.MANAGEMENT:
                found.append(Replacement(server, new, CutoverMethod.FAILOVER_LIST_AND_AGENT))
            else:
                vhost = getattr(entry.replacement, "virtual_host", None)
                method = CutoverMethod(self.personalization_cutover.value)
                found.append(Replacement(server, new, method, vhost))
        return tuple(found)

    def replacement_servers(self) -> tuple[Server, ...]:
        return tuple(r.new for r in self.replacements())

    def servers_of(self, database: str) -> tuple[Server, ...]:
        return tuple(s for s in self.servers() if s.database == database)


def _cross_field_problems(spec: UpgradePlanSpec) -> list[str]:
    """The CEL rules of the CRD, plus one it lacks (a database no server uses can never be upgraded)."""
    problems: list[str] = []
    if spec.releases is not None:
        if len(set(spec.releases)) != len(spec.releases):
            dupes = sorted({r for r in spec.releases if spec.releases.count(r) > 1})
            problems.append(f"spec.releases must not contain duplicates ({', '.join(dupes)})")
        if spec.target_version not in spec.releases:
            problems.append(f"spec.targetVersion {spec.target_version} must be one of spec.releases")
    kinds: dict[str, ServerKind] = {}
    for i, db in enumerate(spec.databases):
        if db.name in kinds:
            problems.append(f"spec.databases[{i}].name {db.name} is not unique")
        kinds[db.name] = db.kind
    if not spec.management_servers and not spec.personalization_servers:
        problems.append("at least one server is required in spec.managementServers or spec.personalizationServers")
    seen: set[str] = set()
    for field, kind, entries in (
        ("managementServers", ServerKind.MANAGEMENT, spec.management_servers),
        ("personalizationServers", ServerKind.PERSONALIZATION, spec.personalization_servers),
    ):
        for i, s in enumerate(entries):
            if s.name in seen:
                problems.append(f"spec.{field}[{i}].name {s.name} is not unique across both server lists")
            seen.add(s.name)
            if kinds.get(s.database) is not kind:
                problems.append(f"spec.{field}[{i}].database {s.database} must name a spec.databases[] entry"
                                f" of kind {kind}")
    roles = [s.replication_role for s in spec.personalization_servers]
    if roles.count(ReplicationRole.MASTER) > 1:
        problems.append("at most one of spec.personalizationServers may have replicationRole Master")
    if ReplicationRole.SUBSCRIBER in roles and ReplicationRole.MASTER not in roles:
        problems.append("spec.personalizationServers with replicationRole Subscriber require one with"
                        " replicationRole Master")
    used = {s.database for s in (*spec.management_servers, *spec.personalization_servers)}
    for i, db in enumerate(spec.databases):
        if db.name not in used:
            problems.append(f"spec.databases[{i}] ({db.name}) is used by no server, so no server could"
                            " upgrade its schema")
    return problems


def _clean_install_problems(spec: UpgradePlanSpec) -> list[str]:
    """strategy CleanInstall: replacements only with it and at least one; the choice is per database (its
    servers are all replaced, or all upgraded in place); names and URLs unambiguous; what it supports."""
    problems: list[str] = []
    entries: list[tuple[str, ManagementServerSpec]] = [
        *((f"spec.managementServers[{i}]", s) for i, s in enumerate(spec.management_servers)),
        *((f"spec.personalizationServers[{i}]", s) for i, s in enumerate(spec.personalization_servers))]
    replaced = [(where, s) for where, s in entries if s.replacement is not None]
    if spec.strategy is not Strategy.CLEAN_INSTALL:
        problems += [f"{where}.replacement is only used with spec.strategy CleanInstall" for where, _ in replaced]
        return problems
    if not replaced:
        problems.append("spec.strategy CleanInstall needs the new servers: at least one"
                        " spec.managementServers[].replacement or spec.personalizationServers[].replacement")
    if spec.failure_policy is FailurePolicy.ROLLBACK:
        problems.append("spec.failurePolicy Rollback is not supported with spec.strategy CleanInstall: use Halt"
                        " (the old servers keep serving until the clients have moved; a failure leaves both old and"
                        " new servers as they are, described in the status)")
    for db in spec.databases:
        users = [(where, s) for where, s in entries if s.database == db.name]
        if len({s.replacement is None for _, s in users}) > 1:
            problems.append(f"the servers of spec.databases {db.name} are either all replaced (clean install) or"
                            f" all upgraded in place: {', '.join(s.name for _, s in users if s.replacement)} have a"
                            f" replacement, {', '.join(s.name for _, s in users if not s.replacement)} do not")
    names = {s.name for _, s in entries}
    urls = {s.url.rstrip("/") for _, s in entries}
    for where, s in replaced:
        assert s.replacement is not None
        new_name = s.replacement.name or f"{s.name[:59]}-new"
        if new_name in names:
            problems.append(f"{where}.replacement.name {new_name} is not unique across servers and replacements")
        names.add(new_name)
        if s.replacement.url.rstrip("/") in urls:
            problems.append(f"{where}.replacement.url {s.replacement.url} is already the URL of another server")
        urls.add(s.replacement.url.rstrip("/"))
        if s.load_balanced:
            problems.append(f"{where}: a load-balanced server cannot be replaced (its pool would need the new"
                            " server); upgrade its database's servers in place")
        if isinstance(s.replacement, PersonalizationReplacementSpec) and s.replacement.virtual_host is None \
                and spec.personalization_cutover is PersonalizationCutover.VIRTUAL_HOST_DNS:
            problems.append(f"{where}.replacement.virtualHost is required with spec.personalizationCutover"
                            " VirtualHostDns (the host name clients use, whose DNS record is switched)")
    return problems


def parse_spec(raw: Mapping[str, Any]) -> UpgradePlanSpec:
    """The validated spec, or `SpecError` naming every offending field (`spec.<camelCase path>: <why>`)."""
    try:
        return UpgradePlanSpec.model_validate(dict(raw))
    except ValidationError as exc:
        raise SpecError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        path = "spec"
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(message if message.startswith("spec.") or not error["loc"] else f"{path}: {message}")
    return "; ".join(lines)


# ---------------------------------------------------------------- status


class _Status(BaseModel):
    # `extra="ignore"`: kopf keeps its own bookkeeping under status.kopf; it is not ours to carry.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


@dataclass(frozen=True)
class StepKey:
    """What identifies a step: its name, its hop and what it acts on."""

    name: StepName
    hop: int
    server: str | None = None
    database: str | None = None

    def __str__(self) -> str:
        target = " ".join(t for t in (self.database, self.server) if t)
        return f"{self.name} {target}".strip()


class HopStatus(_Status):
    from_version: str = Field(alias="from")
    to_version: str = Field(alias="to")


class StepStatus(_Status):
    name: StepName
    hop: int = 0
    state: StepState = StepState.PENDING
    started_at: datetime | None = Field(None, alias="startedAt")
    finished_at: datetime | None = Field(None, alias="finishedAt")
    message: str | None = None
    server: str | None = None
    database: str | None = None

    @property
    def key(self) -> StepKey:
        return StepKey(self.name, self.hop, self.server, self.database)


class BackupRecord(_Status):
    id: str
    hop: int
    taken_at: datetime | None = Field(None, alias="takenAt")
    verified: bool = False


class ServerStatus(_Status):
    name: str
    kind: ServerKind | None = None
    version: str | None = None
    online: bool | None = None
    replication: ReplicationState | None = None
    replication_before: ReplicationState | None = Field(None, alias="replicationBefore")
    # Whether a load-balanced server was in rotation before the plan (restored exactly at the end).
    # Absent (a status written before the baseline) means "in rotation".
    online_before: bool | None = Field(None, alias="onlineBefore")
    health: Health | None = None


class DatabaseStatus(_Status):
    name: str
    kind: ServerKind | None = None
    schema_version: str | None = Field(None, alias="schemaVersion")
    last_backup: BackupRecord | None = Field(None, alias="lastBackup")


class CutoverStatus(_Status):
    """strategy CleanInstall: one server's cut-over to its replacement, as observed."""

    server: str
    replacement: str
    method: CutoverMethod
    old_url: str = Field(alias="oldUrl")
    new_url: str = Field(alias="newUrl")
    virtual_host: str | None = Field(None, alias="virtualHost")
    state: CutoverState = CutoverState.PENDING
    new_server_online_at: datetime | None = Field(None, alias="newServerOnlineAt")
    clients_moved_at: datetime | None = Field(None, alias="clientsMovedAt")
    old_server_offline_at: datetime | None = Field(None, alias="oldServerOfflineAt")
    message: str | None = None


class Condition(_Status):
    type: ConditionType
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class UpgradePlanStatus(_Status):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = Field(None, alias="observedGeneration")
    plan_hash: str | None = Field(None, alias="planHash")
    path: tuple[HopStatus, ...] = ()
    current_hop: int = Field(0, alias="currentHop")
    current_step: str | None = Field(None, alias="currentStep")
    hop_display: str | None = Field(None, alias="hopDisplay")
    current_version: str | None = Field(None, alias="currentVersion")
    target_version: str | None = Field(None, alias="targetVersion")
    steps: tuple[StepStatus, ...] = ()
    servers: tuple[ServerStatus, ...] = ()
    databases: tuple[DatabaseStatus, ...] = ()
    cutovers: tuple[CutoverStatus, ...] | None = None  # strategy CleanInstall only
    conditions: tuple[Condition, ...] = ()
    started_at: datetime | None = Field(None, alias="startedAt")
    completed_at: datetime | None = Field(None, alias="completedAt")
    message: str | None = None

    def step(self, key: StepKey) -> StepStatus | None:
        for candidate in self.steps:
            if candidate.key == key:
                return candidate
        return None

    def server(self, name: str) -> ServerStatus | None:
        return next((s for s in self.servers if s.name == name), None)

    def database(self, name: str) -> DatabaseStatus | None:
        return next((d for d in self.databases if d.name == name), None)

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type is kind), None)


def parse_status(raw: Mapping[str, Any] | None) -> UpgradePlanStatus:
    """The status as stored (an empty or absent status is a fresh `Pending` one)."""
    return UpgradePlanStatus.model_validate(dict(raw or {}))


def status_to_wire(status: UpgradePlanStatus) -> dict[str, Any]:
    """The status as the API server stores it: camelCase, RFC 3339 times, absent fields left out."""
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)
