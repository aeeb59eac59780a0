"""The upgrade guide's rules as predicates over an action and what was observed.

`decide()` is built to respect them, and checks every effect it returns against them once more before
it hands it out (a rule it would break becomes a wait or a failure, never a request to the estate); the
tests use the same predicates to show that no state leads `decide()` to an action the guide forbids.
The simulated agents enforce the same rules on their side (docs/contracts.md rule ids); the operator
never relies on that.

The rules (seed/upgrade-guide.txt):
- no upgrade while replication is enabled, on the master or any subscriber (`replication-enabled`);
- load-balanced servers are all out of rotation before any server is upgraded (`in-rotation`);
- no more than 2 major releases per upgrade, fewer if the spec says so (`version-jump`), only releases
  of the catalog (`unknown-release`);
- the first server of a database upgrades its schema, so it must already run the new release, while
  every other server of that database is locked out: nothing else installs or migrates meanwhile
  (`version-mismatch`, `schema-locked`, `busy`);
- servers come back into rotation only when they can serve (release equal to their schema), and
  replication comes back only once its servers all run the same release.
"""

from __future__ import annotations

from dataclasses import dataclass

from .actions import Action, BringIntoRotation, InstallServer, RestoreBackup, RestoreReplication, UpgradeSchema
from .enums import ReplicationRole, ServerPhase
from .models import UpgradePlanSpec
from .observations import Observations

GUIDE_MAX_JUMP = 2


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    transient: bool = False  # waiting can cure it (a lock, a busy server, a gap in the observations)


def _replication_and_rotation(spec: UpgradePlanSpec, seen: Observations) -> list[Violation]:
    found: list[Violation] = []
    for server in (*spec.servers(), *spec.replacement_servers()):  # strategy CleanInstall: new servers too
        obs = seen.servers.get(server.name)
        if obs is None:
            if server.role is not ReplicationRole.NONE or server.load_balanced:
                found.append(Violation("unobserved", f"{server.name} was not observed", transient=True))
            continue
        if server.role is not ReplicationRole.NONE and obs.replication_enabled:
            found.append(Violation("replication-enabled", f"replication is enabled on {server.name}"))
        if server.load_balanced and obs.in_rotation:
            found.append(Violation("in-rotation", f"load-balanced server {server.name} is in rotation"))
    return found


def _jump(spec: UpgradePlanSpec, what: str, current: str, version: str) -> list[Violation]:
    catalog = list(spec.releases or ())
    for release in (current, version):
        if release not in catalog:
            return [Violation("unknown-release", f"{what}: release {release} is not in spec.releases")]
    distance = abs(catalog.index(version) - catalog.index(current))
    limit = min(GUIDE_MAX_JUMP, spec.max_major_versions_per_step)
    if distance > limit:
        return [Violation("version-jump", f"{what}: {current} -> {version} is {distance} major releases,"
                                          f" more than {limit}")]
    return []


def _install(spec: UpgradePlanSpec, seen: Observations, action: InstallServer) -> list[Violation]:
    obs = seen.servers.get(action.server)
    if obs is None:
        return [Violation("unobserved", f"{action.server} was not observed", transient=True)]
    found = _replication_and_rotation(spec, seen)
    found += _jump(spec, f"install on {action.server}", obs.version, action.version)
    if obs.busy:
        found.append(Violation("busy", f"{action.server} is {obs.phase}", transient=True))
    if obs.phase is ServerPhase.FAILED and not obs.install.error:
        found.append(Violation("unavailable", f"{action.server} reports Failed (cannot reach its database)",
                               transient=True))
    db = seen.databases.get(obs.database)
    catalog = list(spec.releases or ())
    if db is not None and db.schema_version in catalog and action.version in catalog \
            and catalog.index(action.version) > catalog.index(db.schema_version):
        found += _jump(spec, f"schema of {db.name} for {action.server}", db.schema_version, action.version)
    if db is not None and db.lock_holder not in (None, action.server):
        found.append(Violation("schema-locked", f"{db.lock_holder} holds the schema lock of {db.name}",
                               transient=True))
    return found


def _schema(spec: UpgradePlanSpec, seen: Observations, action: UpgradeSchema) -> list[Violation]:
    obs, db = seen.servers.get(action.server), seen.databases.get(action.database)
    if obs is None or db is None:
        return [Violation("unobserved", f"{action.server} or {action.database} was not observed", transient=True)]
    found = _replication_and_rotation(spec, seen)
    if obs.version != action.version:
        found.append(Violation("version-mismatch", f"{action.server} runs {obs.version}, not {action.version}:"
                                                   " only a server on the new release upgrades the schema"))
    found += _jump(spec, f"schema of {action.database}", db.schema_version, action.version)
    if db.lock_holder not in (None, action.server):
        found.append(Violation("schema-locked", f"{db.lock_holder} holds the schema lock of {db.name}",
                               transient=True))
    for other in spec.servers_of(action.database):
        other_obs = seen.servers.get(other.name)
        if other.name != action.server and other_obs is not None and other_obs.busy:
            found.append(Violation("busy", f"{other.name} is {other_obs.phase}", transient=True))
    return found


def _restore(spec: UpgradePlanSpec, seen: Observations, action: RestoreBackup) -> list[Violation]:
    db = seen.databases.get(action.database)
    if db is None:
        return [Violation("unobserved", f"{action.database} was not observed", transient=True)]
    found = []
    if db.lock_holder is not None:
        found.append(Violation("schema-locked", f"{db.lock_holder} holds the schema lock of {db.name}",
                               transient=True))
    for server in spec.servers_of(action.database):
        obs = seen.servers.get(server.name)
        if obs is not None and obs.busy:
            found.append(Violation("busy", f"{server.name} is {obs.phase}", transient=True))
    return found


def _rotation_back(seen: Observations, action: BringIntoRotation) -> list[Violation]:
    found = []
    for name in action.servers:
        obs = seen.servers.get(name)
        db = seen.databases.get(obs.database) if obs else None
        if obs is None or db is None:
            found.append(Violation("unobserved", f"{name} or its database was not observed", transient=True))
        elif obs.busy or obs.version != db.schema_version or obs.phase is ServerPhase.FAILED:
            found.append(Violation("version-mismatch", f"{name} cannot serve: it runs {obs.version} ({obs.phase})"
                                                       f" and {db.name} is at {db.schema_version}"))
    return found


def _replication_back(spec: UpgradePlanSpec, seen: Observations) -> list[Violation]:
    versions = {}
    replaced = {r.old.name: r.new.name for r in spec.replacements()}  # strategy CleanInstall: the new ones
    for server in spec.servers():
        if server.role is ReplicationRole.NONE:
            continue
        name = replaced.get(server.name, server.name)
        obs = seen.servers.get(name)
        if obs is None:
            return [Violation("unobserved", f"{name} was not observed", transient=True)]
        versions[name] = obs.version
    if len(set(versions.values())) > 1:
        listed = ", ".join(f"{n} {v}" for n, v in versions.items())
        return [Violation("replication-mixed-versions", f"replication servers run different releases ({listed})")]
    return []


def violations(spec: UpgradePlanSpec, seen: Observations, action: Action) -> tuple[Violation, ...]:
    """Every guide rule `action` would break in the estate as observed (empty: it is allowed)."""
    from .client_actions import CLIENT_EFFECT_TYPES  # strategy CleanInstall (client_rules imports this module)
    if isinstance(action, CLIENT_EFFECT_TYPES):
        from .client_rules import client_violations
        return tuple(client_violations(spec, seen, action))
    match action:
        case InstallServer():
            return tuple(_install(spec, seen, action))
        case UpgradeSchema():
            return tuple(_schema(spec, seen, action))
        case RestoreBackup():
            return tuple(_restore(spec, seen, action))
        case BringIntoRotation():
            return tuple(_rotation_back(seen, action))
        case RestoreReplication():
            return tuple(_replication_back(spec, seen))
        case _:
            return ()
