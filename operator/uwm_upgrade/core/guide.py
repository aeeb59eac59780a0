"""The upgrade guide's rules, all of them, as predicates over an action (or the plan) and what was observed.

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
  replication comes back only once its servers all run the same release;
- a Personalization Server in the root of the default website, which another application also uses, is
  never upgraded in place (`in_place_forbidden`, judged at preflight under either strategy);
- strategy CleanInstall, the client configuration (`pointers.py` models it): a change that would leave
  some client reaching no online server is never handed out (`clients-cut-off`), a new Management Server
  only comes online once its URL is in the Failover Server List (`not-in-failover-list`), DNS only points
  at a server answering for the virtual host (`no-virtual-host`), and clients are only pointed at servers
  that serve (`not-serving`); a host's default website moves only to a website of that host
  (`not-on-host`), and never to a Personalization Server while another application uses the root of
  that default website (`website-root-in-use`: the guide's website-root rule, which the preflight also
  applies). The simulators enforce the same rules (docs/contracts.md section 2b).
"""

from __future__ import annotations

from dataclasses import dataclass

from .actions import (
    Action,
    BringIntoRotation,
    BringOnline,
    ClientEffect,
    DeployPolicy,
    InstallServer,
    MakeDefaultWebsite,
    RedeployDeploymentAgent,
    RestoreBackup,
    RestoreReplication,
    SwitchDnsRecord,
    UpgradeSchema,
)
from .enums import ReplicationRole, ServerKind, ServerPhase
from .models import UpgradePlanSpec
from .observations import Observations, norm_url
from .pointers import after, cut_off, is_up, reached

GUIDE_MAX_JUMP = 2


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    transient: bool = False  # waiting can cure it (a lock, a busy server, a gap in the observations)


def _replication_and_rotation(spec: UpgradePlanSpec, seen: Observations) -> list[Violation]:
    """What the whole estate breaks of the guide for any upgrade: asked of every effect of a look (50
    installs of a 200-server plan), and the same answer for each, so worked out once per spec and look."""
    last = _ESTATE_WIDE.get("last")
    if last is not None and last[0] is spec and last[1] is seen:
        return list(last[2])
    found = _estate_wide(spec, seen)
    _ESTATE_WIDE["last"] = (spec, seen, tuple(found))  # kept alive while remembered: no identity reused
    return found


_ESTATE_WIDE: dict[str, tuple[UpgradePlanSpec, Observations, tuple[Violation, ...]]] = {}


def _estate_wide(spec: UpgradePlanSpec, seen: Observations) -> list[Violation]:
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


def _clients(spec: UpgradePlanSpec, seen: Observations, action: Action) -> list[Violation]:
    c = seen.clients
    if c is None:
        return [Violation("unobserved", "the estate's client configuration was not observed", transient=True)]
    found: list[Violation] = []
    match action:
        case BringOnline(agent=name, agent_url=url):
            if spec.server(name).kind is ServerKind.MANAGEMENT and \
                    norm_url(url) not in {norm_url(u) for u in c.failover}:
                found.append(Violation("not-in-failover-list", f"{name} is not in the Failover Server List: the guide"
                                                               " adds a new Management Server's URL to it before the"
                                                               " server comes online"))
            obs = seen.servers.get(name)
            if obs is None or obs.phase is not ServerPhase.RUNNING:
                found.append(Violation("not-serving", f"{name} cannot serve clients yet"
                                                      f" ({obs.phase if obs else 'unobserved'})", transient=True))
        case RedeployDeploymentAgent(url=url) if reached(c, url)[0] is None:
            found.append(Violation("not-serving", f"{url} reaches no online server: the Deployment Agent would be"
                                                  " pointed at a server that does not serve it"))
        case SwitchDnsRecord(url=url):
            if not is_up(c, url):
                found.append(Violation("not-serving", f"{url} is not online: clients would be pointed at a server"
                                                      " that does not serve them"))
            if action.host not in c.virtual_hosts.get(norm_url(url), ()):
                found.append(Violation("no-virtual-host", f"{url} has no virtual host {action.host}: clients using"
                                                          f" {action.host} would reach a server that does not answer"
                                                          " for it"))
        case MakeDefaultWebsite(agent=name, host=host, url=url):
            found += _default_website(spec, seen, name, host, url)
        case DeployPolicy(urls=urls):
            found += [Violation("not-serving", f"{u} is not online") for u in urls
                      if norm_url(u) in c.online and not is_up(c, u)]
    was = {p.client for p in cut_off(c)}
    lost = [p for p in cut_off(after(c, action)) if p.client not in was]
    if lost:
        found.append(Violation("clients-cut-off", "clients would reach no online server: "
                               + "; ".join(f"{p.client}: {p.cut_off}" for p in lost)))
    return found


def root_apps_of_default_website(spec: UpgradePlanSpec, seen: Observations, host: str) -> tuple[str, tuple[str, ...]]:
    """The server whose website is `host`'s default website (its URL when it is none of the plan's), and
    the other applications using that website's root."""
    c = seen.clients
    url = c.default_websites.get(host) if c is not None else None
    if url is None:
        return "nothing", ()
    owner = next((s for s in (*spec.servers(), *spec.replacement_servers()) if norm_url(s.url) == norm_url(url)), None)
    obs = seen.servers.get(owner.name) if owner is not None else None
    return (owner.name if owner else url), (obs.other_apps_in_root if obs is not None else ())


def _default_website(spec: UpgradePlanSpec, seen: Observations, name: str, host: str, url: str) -> list[Violation]:
    c = seen.clients
    assert c is not None
    found = []
    if not is_up(c, url):
        found.append(Violation("not-serving", f"{url} is not online: clients of {host} would reach a server that"
                                              " does not serve them"))
    if c.website_hosts.get(norm_url(url)) != host:
        found.append(Violation("not-on-host", f"{name}'s website is not on {host}"
                                              f" (it is on {c.website_hosts.get(norm_url(url)) or 'no such host'}):"
                                              " only a website of the host clients reach can become its default"))
    owner, apps = root_apps_of_default_website(spec, seen, host)
    if spec.server(name).kind is ServerKind.PERSONALIZATION and apps and owner != name:
        found.append(Violation("website-root-in-use", f"the default website of {host} ({owner}'s) has"
                                                      f" {', '.join(apps)} in its root: Personalization Server"
                                                      " needs the root of its website and would overwrite it"))
    return found


def violations(spec: UpgradePlanSpec, seen: Observations, action: Action) -> tuple[Violation, ...]:
    """Every guide rule `action` would break in the estate as observed (empty: it is allowed)."""
    if isinstance(action, ClientEffect):
        return tuple(_clients(spec, seen, action))
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


def in_place_forbidden(spec: UpgradePlanSpec, seen: Observations) -> str | None:
    """Personalization Servers the plan would upgrade in place, though they sit in the root of the default
    website with another application there; and new ones that would be installed there."""
    replaced = {r.old.name for r in spec.replacements()}
    found = []
    for server in spec.servers():
        obs = seen.servers.get(server.name)
        if server.kind is ServerKind.PERSONALIZATION and server.name not in replaced and obs is not None \
                and obs.default_website and obs.other_apps_in_root:
            found.append(f"{server.name} is installed in the root of the default website, which"
                         f" {', '.join(obs.other_apps_in_root)} also uses: the guide forbids upgrading it in place"
                         " (Personalization Server needs the root of its website and would overwrite that"
                         " application); upgrade the Management Servers in place and clean-install it instead"
                         " (spec.strategy CleanInstall with a replacement for it, installed into its own"
                         " Personalization website)")
    for r in spec.replacements():
        obs = seen.servers.get(r.new.name)
        if r.new.kind is ServerKind.PERSONALIZATION and obs is not None and obs.default_website \
                and obs.other_apps_in_root:
            found.append(f"{r.new.name}, the new server replacing {r.old.name}, is in the root of the default"
                         f" website, which {', '.join(obs.other_apps_in_root)} also uses: installing Personalization"
                         " Server there would overwrite it; provision it in its own Personalization website")
    return "; ".join(found) or None
