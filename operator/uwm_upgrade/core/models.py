"""Typed models of the UpgradePlan's spec and status (docs/contracts.md section 1), camelCase on the wire.

The API server validates the spec with the CRD's schema and CEL rules; these models validate it again,
with the same rules and errors that name the field, because the operator never trusts its input blindly
(a CRD installed by hand or an older schema may let anything through). `parse_spec` is the one entry
point; it raises `SpecError` whose message lists every bad field as `spec.<path>: <why>`.

Every model is frozen: status changes are made by the pure transactions of `status.py`, which return a
new status, so "what changed" is always a comparison of two values. The status models live in
`plan_status.py` and are re-exported here: one import for the resource's whole model.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)

from .enums import (
    AbortMode,
    CutoverMethod,
    FailurePolicy,
    ManagementCutover,
    PersonalizationCutover,
    ReplicationRole,
    ServerKind,
    Strategy,
    Weekday,
)
from .plan_status import (
    BASELINE,
    BackupRecord,
    Condition,
    CutoverLicense,
    CutoverStatus,
    DatabaseStatus,
    HopStatus,
    ServedRecord,
    ServerStatus,
    StepKey,
    StepStatus,
    UpgradePlanStatus,
    parse_status,
    status_to_wire,
)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
RELEASE = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"
URL = r"^https?://\S+$"
HOST = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

Release = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=RELEASE)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]

# A server's base URL (the CRD's CEL rules on every `url`, same expressions): a host, no user-info, query
# or fragment, and written in normal form (host in lower case, no default port, no trailing slash), so
# that one server named twice is two equal strings.
URL_HOST = r"^https?://[^/?#@:\s]"
URL_PARTS = r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"
URL_UPPER_HOST = r"^https?://[^/]*[A-Z]"
URL_DEFAULT_PORT = r"^(http://[^/]*:80|https://[^/]*:443)(/|$)"
URL_HOST_MESSAGE = "must name a host: http(s)://host[:port][/path]"
URL_PARTS_MESSAGE = "must be http(s)://host[:port][/path]: no user-info (user@), query (?) or fragment (#)"
URL_NORMAL_MESSAGE = ("must be written in normal form, so that one server is never named twice: host in lower"
                      " case, no default port (:80 for http, :443 for https), no trailing slash")


def url_problems(url: str) -> list[str]:
    """What is wrong with a server URL, as the CRD's CEL rules say it (empty: nothing)."""
    if not re.match(URL_HOST, url):
        return [URL_HOST_MESSAGE]
    if not re.match(URL_PARTS, url):
        return [URL_PARTS_MESSAGE]
    if re.match(URL_UPPER_HOST, url) or re.match(URL_DEFAULT_PORT, url) or url.endswith("/"):
        return [URL_NORMAL_MESSAGE]
    return []


def _url(url: str) -> str:
    problems = url_problems(url)
    if problems:
        raise ValueError("; ".join(problems))
    return url


ServerUrl = Annotated[str, StringConstraints(min_length=8, max_length=512, pattern=URL), AfterValidator(_url)]


# The spec models, and the status models of plan_status.py re-exported.
__all__ = [
    "BASELINE",
    "AgentSecretRef",
    "ApprovalSpec",
    "BackupRecord",
    "BackupSpec",
    "BaselineSpec",
    "Condition",
    "CutoverLicense",
    "CutoverStatus",
    "DatabaseSpec",
    "DatabaseStatus",
    "HealthCheckSpec",
    "HopStatus",
    "MaintenanceWindowSpec",
    "ManagementServerSpec",
    "PersonalizationReplacementSpec",
    "PersonalizationServerSpec",
    "Replacement",
    "ReplacementSpec",
    "SecretKeyRef",
    "ServedRecord",
    "Server",
    "ServerStatus",
    "SpecError",
    "StepKey",
    "StepStatus",
    "UpgradePlanSpec",
    "UpgradePlanStatus",
    "parse_spec",
    "parse_status",
    "status_to_wire",
    "url_problems",
]


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


class LocalSecretRef(_Spec):
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME)


class CaBundleSecretRef(SecretKeyRef):
    key: str = Field("ca.crt", min_length=1, max_length=253, pattern=SECRET_KEY)


class TlsSpec(_Spec):
    """How the servers' TLS is checked: a CA bundle to trust (else the system's), and a client
    certificate (a `kubernetes.io/tls` Secret: `tls.crt`, `tls.key`) for servers that want mutual TLS."""

    ca_bundle_secret_ref: CaBundleSecretRef | None = Field(None, alias="caBundleSecretRef")
    client_certificate_secret_ref: LocalSecretRef | None = Field(None, alias="clientCertificateSecretRef")


class DatabaseSpec(_Spec):
    name: Label
    kind: ServerKind
    connection_secret_ref: SecretKeyRef = Field(alias="connectionSecretRef")


class LicenseSecretRef(SecretKeyRef):
    key: str = Field("license", min_length=1, max_length=253, pattern=SECRET_KEY)


class ReplacementSpec(_Spec):
    """strategy CleanInstall: the new server that replaces this one (a clean install at a new URL)."""

    url: ServerUrl
    name: Label | None = None  # its name in the plan's status; default `<name>-new`
    # cut-over DefaultWebsite: the host name clients use (`http://<host>`), whose default website is this
    # server's today and becomes the new server's (it sits on that host with a host header until then)
    default_website_host: str | None = Field(None, min_length=1, max_length=253, pattern=HOST,
                                             alias="defaultWebsiteHost")
    # Management Servers: a new license, deployed with the Deployment Agent when it is redeployed
    license: LicenseSecretRef | None = None


class PersonalizationReplacementSpec(ReplacementSpec):
    # The virtual host name (DNS record) Environment Manager clients use to reach this server today;
    # needed for spec.personalizationCutover VirtualHostDns.
    virtual_host: str | None = Field(None, min_length=1, max_length=253, pattern=HOST, alias="virtualHost")


class ManagementServerSpec(_Spec):
    name: Label
    url: ServerUrl
    database: str = Field(min_length=1, max_length=63)
    load_balanced: StrictBool = Field(False, alias="loadBalanced")
    replacement: ReplacementSpec | None = None


class PersonalizationServerSpec(ManagementServerSpec):
    replication_role: ReplicationRole = Field(ReplicationRole.NONE, alias="replicationRole")
    replacement: PersonalizationReplacementSpec | None = None


class BackupSpec(_Spec):
    enabled: StrictBool = True


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
    required: StrictBool = False


class BaselineSpec(_Spec):
    """What the plan may find before it starts and leave as it found it without an approval: load-balanced
    servers out of rotation, replication off (perhaps left so by a plan that halted)."""

    accept_replication_off: StrictBool = Field(False, alias="acceptReplicationOff")
    accept_out_of_rotation: StrictBool = Field(False, alias="acceptOutOfRotation")


CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
TIME_ZONE = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"


class MaintenanceWindowSpec(_Spec):
    """When a hop may start (system-upgrade-controller's `window`): on `days`, from `startTime` to
    `endTime` (24-hour `HH:MM` in `timeZone`, an IANA name; an end before the start ends the next day)."""

    days: Annotated[tuple[Weekday, ...], Field(min_length=1, max_length=7)]
    start_time: str = Field(alias="startTime", pattern=CLOCK_TIME)
    end_time: str = Field(alias="endTime", pattern=CLOCK_TIME)
    time_zone: str = Field("UTC", alias="timeZone", min_length=1, max_length=64, pattern=TIME_ZONE)

    @model_validator(mode="after")
    def _a_window(self) -> MaintenanceWindowSpec:
        if len(set(self.days)) != len(self.days):
            raise ValueError("spec.maintenanceWindow.days must not repeat a day")
        if self.start_time == self.end_time:
            raise ValueError("spec.maintenanceWindow.endTime must differ from startTime (an empty window)")
        return self


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
    website_host: str | None = None  # DefaultWebsite: the host whose default website moves
    license: SecretKeyRef | None = None  # Management: the license deployed with the Deployment Agent


class UpgradePlanSpec(_Spec):
    target_version: Release = Field(alias="targetVersion")
    releases: Annotated[tuple[Release, ...], Field(min_length=1, max_length=50)]
    max_major_versions_per_step: int = Field(2, ge=1, le=2, alias="maxMajorVersionsPerStep")
    strategy: Strategy = Strategy.IN_PLACE
    databases: tuple[DatabaseSpec, ...] = Field(min_length=1, max_length=50)
    management_servers: tuple[ManagementServerSpec, ...] = Field((), max_length=100, alias="managementServers")
    personalization_servers: tuple[PersonalizationServerSpec, ...] = Field(
        (), max_length=200, alias="personalizationServers")
    agent_secret_ref: AgentSecretRef = Field(alias="agentSecretRef")
    backup: BackupSpec = BackupSpec()
    health_check: HealthCheckSpec = Field(HealthCheckSpec(), alias="healthCheck")
    max_concurrent_servers: int = Field(1, ge=1, le=100, alias="maxConcurrentServers")
    failure_policy: FailurePolicy = Field(FailurePolicy.HALT, alias="failurePolicy")
    paused: StrictBool = False
    approval: ApprovalSpec = ApprovalSpec()
    baseline: BaselineSpec = BaselineSpec()
    personalization_cutover: PersonalizationCutover = Field(PersonalizationCutover.VIRTUAL_HOST_DNS,
                                                            alias="personalizationCutover")
    management_cutover: ManagementCutover = Field(ManagementCutover.FAILOVER_LIST_AND_AGENT, alias="managementCutover")
    tls: TlsSpec | None = None
    # Day 2 (the fields that may change while the plan runs, none of them part of what is approved):
    # a Failed plan goes on from its failed step each time `retry` grows; `abort` stops it at the next safe
    # point (halting, or rolling back where that is safe); hops start only in `maintenanceWindow`.
    retry: int = Field(0, ge=0, le=1000)
    abort: AbortMode | None = None
    maintenance_window: MaintenanceWindowSpec | None = Field(None, alias="maintenanceWindow")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> UpgradePlanSpec:
        problems = _cross_field_problems(self) + _clean_install_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def servers(self) -> tuple[Server, ...]:
        """Every server, Management first, each list in spec order (the order the plan works in)."""
        return _derived(self).servers

    def server(self, name: str) -> Server:
        """A server of either list, or a replacement (strategy CleanInstall), by name."""
        return _derived(self).by_name[name]

    def replacements(self) -> tuple[Replacement, ...]:
        """strategy CleanInstall: every server with a replacement, in the order of `servers()`."""
        return _derived(self).replacements

    def _servers(self) -> tuple[Server, ...]:
        found = [Server(s.name, ServerKind.MANAGEMENT, s.url, s.database, s.load_balanced, ReplicationRole.NONE)
                 for s in self.management_servers]
        found += [Server(s.name, ServerKind.PERSONALIZATION, s.url, s.database, s.load_balanced, s.replication_role)
                  for s in self.personalization_servers]
        return tuple(found)

    def _replacements(self, servers: tuple[Server, ...]) -> tuple[Replacement, ...]:
        found = []
        entries: tuple[ManagementServerSpec, ...] = (*self.management_servers, *self.personalization_servers)
        for entry, server in zip(entries, servers, strict=True):
            if entry.replacement is None:
                continue
            new = Server(entry.replacement.name or f"{server.name[:59]}-new", server.kind, entry.replacement.url,
                         server.database, False, server.role)
            host, license_ = entry.replacement.default_website_host, entry.replacement.license
            if server.kind is ServerKind.MANAGEMENT:
                method = CutoverMethod(self.management_cutover.value)
                found.append(Replacement(server, new, method, None, host, license_))
            else:
                vhost = getattr(entry.replacement, "virtual_host", None)
                method = CutoverMethod(self.personalization_cutover.value)
                found.append(Replacement(server, new, method, vhost, host))
        return tuple(found)

    def replacement_servers(self) -> tuple[Server, ...]:
        return tuple(r.new for r in self.replacements())

    def servers_of(self, database: str) -> tuple[Server, ...]:
        return tuple(s for s in self.servers() if s.database == database)


@dataclass(frozen=True)
class _Derived:
    """What a spec's server lists give (`servers()`, `replacements()`, by name), made once per spec: the
    loop asks for them thousands of times a turn, and a plan of 200 servers made them anew each time."""

    servers: tuple[Server, ...]
    replacements: tuple[Replacement, ...]
    by_name: Mapping[str, Server]


# per spec object, by its id while it lives (a spec is frozen; `model_copy` makes another object); by id,
# since hashing a spec would read every field
_DERIVED_BY_ID: dict[int, tuple[weakref.ref[UpgradePlanSpec], _Derived]] = {}


def _derived(spec: UpgradePlanSpec) -> _Derived:
    found = _DERIVED_BY_ID.get(id(spec))
    if found is not None and found[0]() is spec:
        return found[1]
    servers = spec._servers()
    replacements = spec._replacements(servers)
    by_name = {s.name: s for s in (*servers, *(r.new for r in replacements))}
    derived = _Derived(servers, replacements, by_name)
    key = id(spec)
    _DERIVED_BY_ID[key] = (weakref.ref(spec, lambda _: _DERIVED_BY_ID.pop(key, None)), derived)
    return derived


def _cross_field_problems(spec: UpgradePlanSpec) -> list[str]:
    """The CRD's CEL rules, one by one, with the same meaning."""
    problems: list[str] = []
    folded = [r.lower() for r in spec.releases]
    if len(set(folded)) != len(folded):
        dupes = sorted({r for r in spec.releases if folded.count(r.lower()) > 1})
        problems.append(f"spec.releases must not contain duplicates, compared ignoring case ({', '.join(dupes)})")
    if spec.target_version not in spec.releases:
        problems.append(f"spec.targetVersion {spec.target_version} must be one of spec.releases")
    kinds: dict[str, ServerKind] = {}
    secrets: set[tuple[str, str]] = set()
    for i, db in enumerate(spec.databases):
        if db.name in kinds:
            problems.append(f"spec.databases[{i}].name {db.name} is not unique")
        kinds[db.name] = db.kind
        ref = (db.connection_secret_ref.name, db.connection_secret_ref.key)
        if ref in secrets:
            problems.append(f"spec.databases[{i}].connectionSecretRef: another spec.databases[] entry names the same"
                            " Secret and key: they would be one database")
        secrets.add(ref)
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
    problems += _url_problems(spec)
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


def _url_problems(spec: UpgradePlanSpec) -> list[str]:
    """Every server and replacement at its own URL (URLs are in normal form: equal strings, one server)."""
    problems: list[str] = []
    owners: dict[str, str] = {}
    entries: list[tuple[str, ManagementServerSpec]] = [
        *((f"spec.managementServers[{i}]", s) for i, s in enumerate(spec.management_servers)),
        *((f"spec.personalizationServers[{i}]", s) for i, s in enumerate(spec.personalization_servers))]
    urls = [(f"{where}.url", s.url) for where, s in entries]
    urls += [(f"{where}.replacement.url", s.replacement.url) for where, s in entries if s.replacement is not None]
    for where, url in urls:
        if url in owners:
            problems.append(f"{where} {url} is already the URL of {owners[url]}: every server and replacement"
                            " needs its own URL")
        owners.setdefault(url, where)
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
    for where, s in replaced:
        assert s.replacement is not None
        new_name = s.replacement.name or f"{s.name[:59]}-new"
        if new_name in names:
            problems.append(f"{where}.replacement.name {new_name} is not unique across servers and replacements")
        names.add(new_name)
        if s.load_balanced:
            problems.append(f"{where}: a load-balanced server cannot be replaced (its pool would need the new"
                            " server); upgrade its database's servers in place")
        if isinstance(s.replacement, PersonalizationReplacementSpec) and s.replacement.virtual_host is None \
                and spec.personalization_cutover is PersonalizationCutover.VIRTUAL_HOST_DNS:
            problems.append(f"{where}.replacement.virtualHost is required with spec.personalizationCutover"
                            " VirtualHostDns (the host name clients use, whose DNS record is switched)")
    return problems + _default_website_problems(spec, replaced)


def _default_website_problems(spec: UpgradePlanSpec, replaced: list[tuple[str, ManagementServerSpec]]) -> list[str]:
    """Cut-over DefaultWebsite names the host clients use, one replacement per host; a license goes with a
    Management Server (the Deployment Agent carries it)."""
    problems: list[str] = []
    hosts: dict[str, str] = {}
    for where, s in replaced:
        assert s.replacement is not None
        management = not isinstance(s, PersonalizationServerSpec)
        cutover = spec.management_cutover if management else spec.personalization_cutover
        field = "spec.managementCutover" if management else "spec.personalizationCutover"
        host = s.replacement.default_website_host
        if cutover.value == CutoverMethod.DEFAULT_WEBSITE and host is None:
            problems.append(f"{where}.replacement.defaultWebsiteHost is required with {field} DefaultWebsite (the host"
                            " name clients use, whose default website becomes the new server)")
        if host is not None and host in hosts:
            problems.append(f"{where}.replacement.defaultWebsiteHost {host} is also {hosts[host]}'s: a host has one"
                            " default website")
        if host is not None:
            hosts.setdefault(host, f"{where}.replacement")
        if not management and s.replacement.license is not None:
            problems.append(f"{where}.replacement.license: a license is deployed with the Deployment Agent, for a"
                            " Management Server (spec.managementServers[].replacement.license)")
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
