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
3. the clients moved: the Deployment Agent redeployed with the new Management Server URL (with a new
   license, when the replacement names one); for Personalization either a new Environment Manager policy
   with the new URLs, or (recommended for staged upgrades) the virtual host's DNS record pointed at the
   new server; or, for either kind (cut-over DefaultWebsite, the guide's "remove the host header and make
   it the default website"), the new server's website, installed beside the old one on the host clients
   reach with a host header of its own, takes over that host's default website in one change (a host has
   one default website), so clients keep the URL they use; the Deployment Agent is then redeployed only
   to carry a new license;
4. only then the old servers leave: out of the Failover Server List, then offline. Until that moment
   they keep serving whichever client still points at them, so no client ever points at no server.

Replication is disabled on the old servers before anything (as in place) and, at the end, restored as it
was before the plan on the new servers that replace them.

Every handler follows `steps.py`'s order (done? failed? too slow? else act), so a crash at any instant
resumes where it left off; which handler runs which step, and for how long, is the strategy's table in
`strategies.py`. The guide's rules for the client configuration, and its rule about a
Personalization Server in the root of the default website (`in_place_forbidden`, both strategies), are in
`guide.py`; the model of where clients point is `pointers.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .actions import (
    Action,
    AddFailoverServer,
    AddVirtualHost,
    BringOnline,
    DeployPolicy,
    Fail,
    MakeDefaultWebsite,
    RedeployDeploymentAgent,
    RemoveFailoverServer,
    SwitchDnsRecord,
    TakeOffline,
    Wait,
)
from .context import Context, Limits
from .enums import CutoverMethod, Reason, ServerKind, StepName
from .guide import root_apps_of_default_website
from .models import Replacement, StepStatus, UpgradePlanSpec
from .observations import ClientsObservation, Observations, Where, host_of, norm_url
from .planning import Hop, backup_step, database_first, first_servers, new_step, remaining_servers
from .pointers import cut_off

# ---------------------------------------------------------------- plan


def hop_steps(spec: UpgradePlanSpec, n: int, leaders: Mapping[str, str]) -> list[StepStatus]:
    """The steps of a CleanInstall hop (one hop: the preflight refuses more), between replication off and
    back, in the order they run.

    Each replaced database is finished before the next begins: upgraded, its new servers confirmed and
    online, its clients moved, its old servers retired. A failure in a later database leaves the earlier
    ones wholly on their new servers and the later ones wholly on their old ones. A database whose
    servers are not replaced is upgraded in place, as strategy InPlace does (from its `leaders`).
    """
    reps = spec.replacements()
    firsts = first_servers(spec, leaders)
    replaced = {r.old.database for r in reps}
    # before anything comes online: the new Management Server URLs in the Failover Server List (whichever
    # way the Deployment Agent then moves), the virtual hosts
    steps = [new_step(StepName.ADD_FAILOVER_SERVER, n, server=r.new.name) for r in reps
             if r.new.kind is ServerKind.MANAGEMENT]
    steps += [new_step(StepName.ADD_VIRTUAL_HOST, n, server=r.new.name) for r in reps
              if r.method is CutoverMethod.VIRTUAL_HOST_DNS]
    for db in spec.databases:
        steps.append(backup_step(spec, n, db.name))
        if db.name in replaced:
            steps += _replaced_database(n, db.name, [r for r in reps if r.old.database == db.name])
        else:
            steps += database_first(spec, n, db.name, firsts[db.name])
    return steps + remaining_servers(spec, n, {db.name for db in spec.databases} - replaced, set(firsts.values()))


def _replaced_database(n: int, database: str, mine: list[Replacement]) -> list[StepStatus]:
    steps = [new_step(StepName.INSTALL_REPLACEMENT, n, server=r.new.name, database=database) for r in mine]
    steps.append(new_step(StepName.UPGRADE_SCHEMA, n, server=mine[0].new.name, database=database))
    steps.append(new_step(StepName.VERIFY_SCHEMA, n, database=database))
    for r in mine:
        steps.append(new_step(StepName.HEALTH_CHECK, n, server=r.new.name))
        steps.append(new_step(StepName.BRING_ONLINE, n, server=r.new.name))
    method = mine[0].method
    if method is CutoverMethod.POLICY:
        steps.append(new_step(StepName.DEPLOY_POLICY, n, database=database))
    elif method is CutoverMethod.VIRTUAL_HOST_DNS:
        steps += [new_step(StepName.SWITCH_DNS_RECORD, n, server=r.new.name) for r in mine]
    elif method is CutoverMethod.DEFAULT_WEBSITE:
        steps += [new_step(StepName.MAKE_DEFAULT_WEBSITE, n, server=r.new.name) for r in mine]
    if method is CutoverMethod.FAILOVER_LIST_AND_AGENT or any(r.license for r in mine):
        steps.append(new_step(StepName.REDEPLOY_DEPLOYMENT_AGENT, n, database=database))
    steps += [new_step(StepName.REMOVE_FAILOVER_SERVER, n, server=r.old.name) for r in mine
              if r.old.kind is ServerKind.MANAGEMENT]
    steps += [new_step(StepName.TAKE_OFFLINE, n, server=r.old.name) for r in mine]
    return steps


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
    policy_hosts = {host_of(u) for u in c.policy}
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
        if r.license is not None and c.agent is None:
            problems.append(f"{r.new.name} has a replacement.license, but no Deployment Agent is deployed to carry it")
    return problems


def _default_website_problems(spec: UpgradePlanSpec, seen: Observations, c: ClientsObservation) -> list[str]:
    """Cut-over DefaultWebsite: clients already use the host, whose default website is the old server's; the
    new server's website is on that host; and the guide's website-root rule for a Personalization Server."""
    problems = []
    for r in spec.replacements():
        host = r.website_host
        if r.method is not CutoverMethod.DEFAULT_WEBSITE or host is None:
            continue
        field = "managementCutover" if r.old.kind is ServerKind.MANAGEMENT else "personalizationCutover"
        other = "FailoverListAndAgent" if r.old.kind is ServerKind.MANAGEMENT else "VirtualHostDns or Policy"
        now = c.default_websites.get(host)
        if now is None or norm_url(now) != norm_url(r.old.url):
            problems.append(f"the default website of {host} is {now or 'none'}, not {r.old.name}'s ({r.old.url}):"
                            f" clients using http://{host} do not reach the server being replaced")
        if r.old.kind is ServerKind.MANAGEMENT and (c.agent is None or host_of(c.agent) != host):
            problems.append(f"with spec.{field} DefaultWebsite the Deployment Agent must already use http://{host},"
                            f" but it uses {c.agent or 'nothing'}: use {field} {other}")
        if r.old.kind is ServerKind.PERSONALIZATION and host not in {host_of(u) for u in c.policy}:
            problems.append(f"with spec.{field} DefaultWebsite the Environment Manager policy must already use"
                            f" http://{host}, but it lists [{', '.join(c.policy)}]: use {field} {other}")
        on = c.website_hosts.get(norm_url(r.new.url))
        if on != host:
            problems.append(f"{r.new.name}'s website is on {on or 'no host clients reach'}, not on {host}: install it"
                            f" beside {r.old.name} in a website of {host} with a host header of its own")
        owner, apps = root_apps_of_default_website(spec, seen, host)
        if r.old.kind is ServerKind.PERSONALIZATION and apps:
            problems.append(f"the default website of {host} ({owner}'s) has {', '.join(apps)} in its root: the guide"
                            " says Personalization Server needs the root of its website and would overwrite"
                            f" {', '.join(apps)}, so {r.new.name} cannot become that default website; use"
                            f" {field} {other}")
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
    unread = [f"{r.new.name} ({seen.license_problems.get(r.new.name) or 'not read'})" for r in spec.replacements()
              if r.license is not None and r.new.name not in seen.licenses]
    if unread:
        return Wait(Reason.OBSERVATION_UNAVAILABLE, limits.poll_seconds,
                    "cannot read the new license of " + ", ".join(unread))
    if len(path) > 1:
        route = " -> ".join([path[0].from_version, *(h.to_version for h in path)])
        return Fail(Reason.PLANNING_FAILED, Where(0, StepName.PLAN),
                    f"spec.strategy CleanInstall moves the estate in one hop (the new servers run the target and each"
                    f" database is upgraded once, at most spec.maxMajorVersionsPerStep releases), but the path is"
                    f" {route}: upgrade in place to {path[0].to_version} first, then clean-install")
    problems = _new_server_problems(spec, seen, catalog) + _client_problems(spec, seen.clients) \
        + _default_website_problems(spec, seen, seen.clients)
    if problems:
        return Fail(Reason.PREFLIGHT_FAILED, where, "; ".join(problems))
    return None


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


def _agent_move(mine: Sequence[Replacement], agent: str) -> tuple[Replacement | None, str]:
    """The replacement the Deployment Agent moves to, and the URL it is to hold: the new server's URL, or
    (DefaultWebsite) the host URL it already holds, whose default website becomes the new server."""
    for r in mine:
        if r.method is CutoverMethod.DEFAULT_WEBSITE and host_of(agent) == r.website_host:
            return r, agent
        if norm_url(agent) in (norm_url(r.new.url), norm_url(r.old.url)):
            return r, r.new.url
    return None, agent


def redeploy_agent(ctx: Context, step: StepStatus) -> Action:
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    mine = [r for r in ctx.spec.replacements() if r.old.kind is ServerKind.MANAGEMENT
            and r.old.database == step.database]
    if c.agent is None:
        return ctx.complete(step, "no Deployment Agent is deployed", skipped=True)
    r, url = _agent_move(mine, c.agent)
    if r is None:
        return ctx.complete(step, f"the Deployment Agent uses {c.agent}, no replaced server of {step.database}:"
                                  " left as it is", skipped=True)
    license_ = ctx.seen.licenses.get(r.new.name) if r.license is not None else None
    if r.license is not None and license_ is None:
        what = f"the license of {r.new.name} was not read: " + (
            ctx.seen.license_problems.get(r.new.name) or f"Secret {r.license.name}")
        return ctx.overdue(step, what) or ctx.wait(Reason.OBSERVATION_UNAVAILABLE, what, step)
    carried = f", with the license of Secret {r.license.name} ({license_})" if r.license is not None else ""
    if norm_url(c.agent) == norm_url(url) and (license_ is None or c.agent_license == license_):
        if r.method is CutoverMethod.DEFAULT_WEBSITE:
            return ctx.complete(step, f"the Deployment Agent was redeployed with {c.agent}, whose default website is"
                                      f" {r.new.name}'s{carried}")
        return ctx.complete(step, f"the Deployment Agent uses {r.new.name} ({c.agent}) instead of {r.old.name}"
                                  f" ({r.old.url}){carried}")
    return ctx.overdue(step, f"the Deployment Agent still uses {c.agent}" + (
        f" and license {c.agent_license or 'none'}" if license_ else "")) or \
        RedeployDeploymentAgent(step.key, r.new.name, r.new.url, c.agent, url, license_)


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


def _repoint(ctx: Context, step: StepStatus, host_of_r: Callable[[Replacement], str | None],
             points: Callable[[ClientsObservation], Mapping[str, str]], done: Callable[[Replacement, str], str],
             pending: str, effect: Callable[[Replacement, str, str | None], Action]) -> Action:
    """A host name clients use, pointed at the new server (`points`: host -> the server URL it reaches)."""
    c = _clients(ctx, step)
    if not isinstance(c, ClientsObservation):
        return c
    r = _replacing(ctx, step.server or "")
    host = host_of_r(r) or ""
    now = points(c).get(host)
    if now is not None and norm_url(now) == norm_url(r.new.url):
        return ctx.complete(step, done(r, host))
    return ctx.overdue(step, pending.format(host=host, now=now)) or effect(r, host, now)


def switch_dns(ctx: Context, step: StepStatus) -> Action:
    return _repoint(ctx, step, lambda r: r.virtual_host, lambda c: c.dns,
                    lambda r, host: f"DNS {host} -> {r.new.url}: the clients of {r.old.name} reach {r.new.name}",
                    "DNS {host} still points at {now}",
                    lambda r, host, now: SwitchDnsRecord(step.key, r.new.name, r.new.url, host, now, r.new.url))


def make_default_website(ctx: Context, step: StepStatus) -> Action:
    return _repoint(ctx, step, lambda r: r.website_host, lambda c: c.default_websites,
                    lambda r, host: f"{r.new.name}'s website is the default website of {host}: clients using"
                                    f" http://{host} reach it",
                    "the default website of {host} is still {now}",
                    lambda r, host, now: MakeDefaultWebsite(step.key, r.new.name, r.new.url, host, now, r.new.url))


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
