"""strategy CleanInstall: new servers at new URLs, the databases upgraded from them, clients moved over.

The guide's "New Server/Clean Install Upgrades": instead of upgrading a server, a new one (provisioned
empty, offline, at the target release) replaces it. The choice is per database: all servers of a
database are replaced, or all upgraded in place (the steps of the in-place path, reused as they are).
For a replaced database, in one hop:

1. before anything comes online: each new Management Server's URL into the Failover Server List; each
   new Personalization Server answers for the virtual host name its clients use (VirtualHostDns);
2. the database first, as in place: backed up, then upgraded through the Configuration Portal of the
   first new server while every other server of the database (the old ones included) is locked out;
   then every new server's status page until it confirms, and the new server brought online;
3. the clients moved: the Deployment Agent redeployed with the new Management Server URL; for
   Personalization either a new Environment Manager policy with the new URLs, or (recommended for staged
   upgrades) the virtual host's DNS record pointed at the new server;
4. only then the old servers leave: out of the Failover Server List, then offline. Until that moment
   they keep serving whichever client still points at them, so no client ever points at no server.

Replication is disabled on the old servers before anything (as in place) and, at the end, restored as it
was before the plan on the new servers that replace them.

Every handler follows `steps.py`'s order (done? failed? too slow? else act), so a crash at any instant
resumes where it left off. The client rules are in `client_rules.py`; the guide's rule about a
Personalization Server in the root of the default website (`in_place_forbidden`) applies to both
strategies.
"""

from __future__ import annotations

from collections.abc import Sequence

from .actions import Action, Fail, RestoreReplication, Wait
from .client_actions import (
    AddFailoverServer,
    AddVirtualHost,
    BringOnline,
    DeployPolicy,
    RedeployDeploymentAgent,
    RemoveFailoverServer,
    SwitchDnsRecord,
    TakeOffline,
)
from .client_rules import cut_off
from .context import Context, Limits
from .enums import CutoverMethod, Reason, ReplicationRole, ReplicationState, ServerKind, StepName, Strategy
from .models import Replacement, StepStatus, UpgradePlanSpec
from .observations import ClientsObservation, Observations, Where, norm_url
from .planning import Hop, _skips, _step, first_servers
from .steps import install

# ---------------------------------------------------------------- the guide's rule on the website root


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


# ---------------------------------------------------------------- plan


def plan_steps(spec: UpgradePlanSpec, path: Sequence[Hop]) -> tuple[StepStatus, ...]:
    """Every step of a CleanInstall plan (one hop: the preflight refuses more) in the order it runs.

    Each replaced database is finished before the next begins: upgraded, its new servers confirmed and
    online, its clients moved, its old servers retired. A failure in a later database leaves the earlier
    ones wholly on their new servers and the later ones wholly on their old ones.
    """
    no_replication, no_rotation = _skips(spec)
    no_backup = None if spec.backup.enabled else "spec.backup.enabled is false"
    reps = spec.replacements()
    replaced = {r.old.database for r in reps}
    firsts = first_servers(spec)
    steps = [_step(StepName.PREFLIGHT, 0), _step(StepName.PLAN, 0), _step(StepName.RECORD_BASELINE, 0)]
    for hop in path:
        n = hop.number
        steps.append(_step(StepName.DISABLE_REPLICATION, n, skip=no_replication))
        steps.append(_step(StepName.TAKE_OUT_OF_ROTATION, n, skip=no_rotation))
        # before anything comes online: the new URLs in the Failover Server List, the virtual hosts
        steps += [_step(StepName.ADD_FAILOVER_SERVER, n, server=r.new.name) for r in reps
                  if r.method is CutoverMethod.FAILOVER_LIST_AND_AGENT]
        steps += [_step(StepName.ADD_VIRTUAL_HOST, n, server=r.new.name) for r in reps
                  if r.method is CutoverMethod.VIRTUAL_HOST_DNS]
        for db in spec.databases:
            steps.append(_step(StepName.BACKUP_DATABASE, n, database=db.name, skip=no_backup))
            if db.name not in replaced:
                first = firsts[db.name]
                steps.append(_step(StepName.INSTALL_FIRST_SERVER, n, server=first, database=db.name))
                steps.append(_step(StepName.UPGRADE_SCHEMA, n, server=first, database=db.name))
                steps.append(_step(StepName.VERIFY_SCHEMA, n, database=db.name))
                steps.append(_step(StepName.HEALTH_CHECK, n, server=first))
                continue
            mine = [r for r in reps if r.old.database == db.name]
            steps += [_step(StepName.INSTALL_REPLACEMENT, n, server=r.new.name, database=db.name) for r in mine]
            steps.append(_step(StepName.UPGRADE_SCHEMA, n, server=mine[0].new.name, database=db.name))
            steps.append(_step(StepName.VERIFY_SCHEMA, n, database=db.name))
            for r in mine:
                steps.append(_step(StepName.HEALTH_CHECK, n, server=r.new.name))
                steps.append(_step(StepName.BRING_ONLINE, n, server=r.new.name))
            method = mine[0].method
            if method is CutoverMethod.FAILOVER_LIST_AND_AGENT:
                steps.append(_step(StepName.REDEPLOY_DEPLOYMENT_AGENT, n, database=db.name))
            elif method is CutoverMethod.POLICY:
                steps.append(_step(StepName.DEPLOY_POLICY, n, database=db.name))
            else:
                steps += [_step(StepName.SWITCH_DNS_RECORD, n, server=r.new.name) for r in mine]
            steps += [_step(StepName.REMOVE_FAILOVER_SERVER, n, server=r.old.name) for r in mine
                      if method is CutoverMethod.FAILOVER_LIST_AND_AGENT]
            steps += [_step(StepName.TAKE_OFFLINE, n, server=r.old.name) for r in mine]
        for server in spec.servers():
            if server.database not in replaced and server.name not in firsts.values():
                steps.append(_step(StepName.INSTALL_SERVER, n, server=server.name))
                steps.append(_step(StepName.HEALTH_CHECK, n, server=server.name))
        steps.append(_step(StepName.BRING_INTO_ROTATION, n, skip=no_rotation))
        steps.append(_step(StepName.RESTORE_REPLICATION, n, skip=no_replication))
        steps.append(_step(StepName.VERIFY_REPLICATION, n, skip=no_replication))
    return tuple(steps)


# ---------------------------------------------------------------- preflight


def _new_server_problems(spec: UpgradePlanSpec, seen: Observations, catalog: Sequence[str]) -> list[str]:
    problems = []
    target = spec.target_version
    for r in spec.replacements():
        obs = seen.servers[r.new.name]
        label = f"{r.new.name} (replacing {r.old.name}, {r.new.url})"
        pairs = (("kind", r.new.kind, obs.kind), ("database", r.new.database, obs.database),
                 ("loadBalanced", False, obs.load_balanced), ("replicationRole", r.old.role, obs.replication_role))
        problems += [f"{label}: the new server must have {field} {want}, it reports {got}"
                     for field, want, got in pairs if want != got]
        if obs.version not in catalog:
            problems.append(f"{label} runs {obs.version}, which is not in spec.releases")
        elif catalog.index(obs.version) > catalog.index(target):
            problems.append(f"{label} runs {obs.version}, beyond the target {target}")
        elif catalog.index(target) - catalog.index(obs.version) > spec.max_major_versions_per_step:
            problems.append(f"{label} runs {obs.version}, more than spec.maxMajorVersionsPerStep releases before"
                            f" {target}")
        if obs.online:
            problems.append(f"{label} is online already: a new server stays offline until its database is upgraded"
                            " and (for a Management Server) its URL is in the Failover Server List")
        if obs.replication_enabled:
            problems.append(f"{label} has replication enabled: a new server replicates only once the old ones are"
                            " gone (replication is restored on the new servers as it was on the old ones)")
    return problems


def _client_problems(spec: UpgradePlanSpec, c: ClientsObservation) -> list[str]:
    problems = [f"clients reach no server even before the plan: {p.client}: {p.cut_off}" for p in cut_off(c)]
    policy_hosts = {u.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower() for u in c.policy}
    policy_urls = {norm_url(u) for u in c.policy}
    for r in spec.replacements():
        if r.method is CutoverMethod.VIRTUAL_HOST_DNS and r.virtual_host:
            host = r.virtual_host
            if host not in policy_hosts:
                problems.append(f"with spec.personalizationCutover VirtualHostDns the clients of {r.old.name} must"
                                f" already use its virtual host {host}, but the Environment Manager policy lists"
                                f" [{', '.join(c.policy)}]: use personalizationCutover Policy, or deploy a policy"
                                f" with http://{host} first")
            target = c.dns.get(host)
            if target is None or norm_url(target) != norm_url(r.old.url):
                problems.append(f"the DNS record {host} points at {target or 'nothing'}, not at {r.old.name}"
                                f" ({r.old.url}): it is not the virtual host of the server being replaced")
        if r.method is CutoverMethod.POLICY and norm_url(r.old.url) not in policy_urls:
            problems.append(f"the Environment Manager policy does not list {r.old.name} ({r.old.url}), so a new"
                            f" policy cannot move its clients (it lists [{', '.join(c.policy)}]); use"
                            " personalizationCutover VirtualHostDns when clients use a virtual host")
    return problems


def preflight(spec: UpgradePlanSpec, seen: Observations, path: Sequence[Hop], catalog: Sequence[str],
              limits: Limits) -> Action | None:
    """None when a CleanInstall plan may be computed; else the wait or the failure that says why not."""
    where = Where(0, StepName.PREFLIGHT)
    missing = [r.new.name for r in spec.replacements() if r.new.name not in seen.servers]
    if missing:
        why = {g.where.server: g.message for g in seen.gaps}
        named = [f"{n} ({why[n]})" if why.get(n) else n for n in missing]
        return Wait(Reason.OBSERVATION_UNAVAILABLE, limits.poll_seconds,
                    "cannot observe the new servers " + ", ".join(named))
    if seen.clients is None:
        return Wait(Reason.OBSERVATION_UNAVAILABLE, limits.poll_seconds,
                    "cannot observe the estate's client configuration (GET /agent/v1/clients)")
    if len(path) > 1:
        route = " -> ".join([path[0].from_version, *(h.to_version for h in path)])
        return Fail(Reason.PLANNING_FAILED, Where(0, StepName.PLAN),
                    f"spec.strategy CleanInstall moves the estate in one hop (the new servers run the target and each"
                    f" database is upgraded once, at most spec.maxMajorVersionsPerStep releases), but the path is"
                    f" {route}: upgrade in place to {path[0].to_version} first, then clean-install")
    problems = _new_server_problems(spec, seen, catalog) + _client_problems(spec, seen.clients)
    if problems:
        return Fail(Reason.PREFLIGHT_FAILED, where, "; ".join(problems))
    return None


def is_clean_install(spec: UpgradePlanSpec) -> bool:
    return spec.strategy is Strategy.CLEAN_INSTALL


# Steps of the in-place path whose CleanInstall handler differs (replication is restored on new servers).
OWN_STEPS = frozenset({StepName.RESTORE_REPLICATION, StepName.VERIFY_REPLICATION})


# ---------------------------------------------------------------- the steps


def _replacing(ctx: Context, name: str) -> Replacement:
    return next(r for r in ctx.spec.replacements() if name in (r.new.name, r.old.name))


def _clients(ctx: Context, step: StepStatus) -> ClientsObservation | Action:
    if ctx.seen.clients is None:
        what = "the estate's client configuration is not observed"
        return ctx.overdue(step, what) or ctx.wait(Reason.OBSERVATION_UNAVAILABLE, what, step)
    return ctx.seen.clients


def _has(urls: Sequence[str], url: str) -> bool:
    return norm_url(url) in {norm_url(u) for u in urls}


def add_failover(ctx: Context, step: StepStatus) -> Action:
    r = _replacing(ctx, step.server or "")
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    if _has(c.failover, r.new.url):
        return ctx.complete(step, f"{r.new.name} ({r.new.url}) is in the Failover Server List, still offline")
    return ctx.overdue(step, f"{r.new.url} not in the Failover Server List") or \
        AddFailoverServer(step.key, r.new.name, r.new.url, r.new.url)


def add_virtual_host(ctx: Context, step: StepStatus) -> Action:
    r = _replacing(ctx, step.server or "")
    host = r.virtual_host or ""
    if host in ctx.server(r.new.name).virtual_hosts:
        return ctx.complete(step, f"{r.new.name} answers for the virtual host {host}")
    return ctx.overdue(step, f"{r.new.name} has no virtual host {host}") or \
        AddVirtualHost(step.key, r.new.name, r.new.url, host)


def bring_online(ctx: Context, step: StepStatus) -> Action:
    r = _replacing(ctx, step.server or "")
    if ctx.server(r.new.name).online:
        return ctx.complete(step, f"{r.new.name} is online at {r.new.url}")
    return ctx.overdue(step, f"{r.new.name} still offline") or BringOnline(step.key, r.new.name, r.new.url)


def redeploy_agent(ctx: Context, step: StepStatus) -> Action:
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    management = [r for r in ctx.spec.replacements()
                  if r.method is CutoverMethod.FAILOVER_LIST_AND_AGENT and r.old.database == step.database]
    if c.agent is None:
        return ctx.complete(step, "no Deployment Agent is deployed", skipped=True)
    moved = next((r for r in management if norm_url(r.new.url) == norm_url(c.agent)), None)
    if moved is not None:
        return ctx.complete(step, f"the Deployment Agent uses {moved.new.name} ({c.agent})"
                                  f" instead of {moved.old.name} ({moved.old.url})")
    r = next((r for r in management if norm_url(r.old.url) == norm_url(c.agent)), None)
    if r is None:
        return ctx.complete(step, f"the Deployment Agent uses {c.agent}, no replaced server of {step.database}:"
                                  " left as it is", skipped=True)
    return ctx.overdue(step, f"the Deployment Agent still uses {c.agent}") or \
        RedeployDeploymentAgent(step.key, r.new.name, r.new.url, c.agent, r.new.url)


def deploy_policy(ctx: Context, step: StepStatus) -> Action:
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    mine = [r for r in ctx.spec.replacements() if r.method is CutoverMethod.POLICY and r.old.database == step.database]
    moves = {norm_url(r.old.url): r.new.url for r in mine}
    wanted = tuple(moves.get(norm_url(u), u) for u in c.policy)
    if wanted == c.policy:
        return ctx.complete(step, f"the Environment Manager policy lists [{', '.join(c.policy)}]")
    first = mine[0]
    return ctx.overdue(step, f"the policy still lists [{', '.join(c.policy)}]") or \
        DeployPolicy(step.key, first.new.name, first.new.url, c.policy, wanted)


def switch_dns(ctx: Context, step: StepStatus) -> Action:
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    r = _replacing(ctx, step.server or "")
    host = r.virtual_host or ""
    now = c.dns.get(host)
    if now is not None and norm_url(now) == norm_url(r.new.url):
        return ctx.complete(step, f"DNS {host} -> {r.new.url}: the clients of {r.old.name} reach {r.new.name}")
    return ctx.overdue(step, f"DNS {host} still points at {now}") or \
        SwitchDnsRecord(step.key, r.new.name, r.new.url, host, now, r.new.url)


def remove_failover(ctx: Context, step: StepStatus) -> Action:
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    r = _replacing(ctx, step.server or "")
    if not _has(c.failover, r.old.url):
        return ctx.complete(step, f"{r.old.name} ({r.old.url}) is not in the Failover Server List", skipped=True)
    return ctx.overdue(step, f"{r.old.url} still in the Failover Server List") or \
        RemoveFailoverServer(step.key, r.old.name, r.old.url, r.old.url)


def take_offline(ctx: Context, step: StepStatus) -> Action:
    r = _replacing(ctx, step.server or "")
    if not ctx.server(r.old.name).online:
        return ctx.complete(step, f"{r.old.name} is offline, replaced by {r.new.name} ({r.new.url})")
    return ctx.overdue(step, f"{r.old.name} still online") or TakeOffline(step.key, r.old.name, r.old.url)


def _replicating(ctx: Context) -> tuple[tuple[str, ReplicationRole], ...]:
    """The servers replication is restored on (Master first): those that had it before the plan, or the
    new servers that replace them."""
    new = {r.old.name: r.new.name for r in ctx.spec.replacements()}
    found = []
    for server in ctx.replicating():
        recorded = ctx.status.server(server.name)
        if recorded is not None and recorded.replication_before is ReplicationState.ENABLED:
            found.append((new.get(server.name, server.name), server.role))
    return tuple(found)


def restore_replication(ctx: Context, step: StepStatus) -> Action:
    wanted = [name for name, _ in _replicating(ctx)]
    if not wanted:
        return ctx.complete(step, "replication was not enabled before the plan", skipped=True)
    off = tuple(n for n in wanted if not ctx.server(n).replication_enabled)
    if not off:
        return ctx.complete(step, f"replication enabled as before the plan, on {', '.join(wanted)}")
    return ctx.overdue(step, f"replication still off on {', '.join(off)}") or RestoreReplication(step.key, off)


def replication_caught_up(ctx: Context, step: StepStatus) -> Action:
    subscribers = [n for n, role in _replicating(ctx) if role is ReplicationRole.SUBSCRIBER]
    if not subscribers:
        return ctx.complete(step, "no subscriber replicates", skipped=True)
    behind = [n for n in subscribers if not ctx.server(n).caught_up]
    if not behind:
        return ctx.complete(step, f"subscribers caught up: {', '.join(subscribers)}")
    return ctx.overdue(step, f"{', '.join(behind)} not caught up") or \
        ctx.wait(Reason.CATCHING_UP, f"waiting for {', '.join(behind)} to catch up", step)


def dispatch(ctx: Context, step: StepStatus) -> Action:
    match step.name:
        case StepName.RESTORE_REPLICATION:
            return restore_replication(ctx, step)
        case StepName.VERIFY_REPLICATION:
            return replication_caught_up(ctx, step)
        case StepName.ADD_FAILOVER_SERVER:
            return add_failover(ctx, step)
        case StepName.ADD_VIRTUAL_HOST:
            return add_virtual_host(ctx, step)
        case StepName.INSTALL_REPLACEMENT:
            return install(ctx, step, ctx.hop.to_version)
        case StepName.BRING_ONLINE:
            return bring_online(ctx, step)
        case StepName.REDEPLOY_DEPLOYMENT_AGENT:
            return redeploy_agent(ctx, step)
        case StepName.DEPLOY_POLICY:
            return deploy_policy(ctx, step)
        case StepName.SWITCH_DNS_RECORD:
            return switch_dns(ctx, step)
        case StepName.REMOVE_FAILOVER_SERVER:
            return remove_failover(ctx, step)
        case StepName.TAKE_OFFLINE:
            return take_offline(ctx, step)
        case _:
            return Fail(Reason.STEP_FAILED, ctx.where(step), f"{step.key} is not a CleanInstall step")
