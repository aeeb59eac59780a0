"""Where the estate's clients point, and the guide's rules for changing it (strategy CleanInstall).

The guide's caveat for a clean install is the client configuration: a Deployment Agent holds one
Management Server URL and fails over along the Failover Server List; Environment Manager agents use the
Personalization Server URLs of their policy, a server's own URL or a virtual host name that DNS resolves
to a server answering for it. `pointers()` resolves every client as observed; `client_violations()`
judges a change before it is asked for: a change that would leave some client reaching no online server
is never handed out (`clients-cut-off`), a new Management Server only comes online once its URL is in the
Failover Server List (`not-in-failover-list`), DNS only points at a server answering for the virtual
host (`no-virtual-host`), and clients are only pointed at servers that serve (`not-serving`).
The simulators enforce the same rules (docs/contracts.md section 2b).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .actions import Action
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
from .enums import ServerKind, ServerPhase
from .guide import Violation
from .models import UpgradePlanSpec
from .observations import ClientsObservation, Observations, norm_url


@dataclass(frozen=True)
class Pointer:
    client: str
    holds: str
    reaches: str | None  # the URL of the online server it reaches
    cut_off: str | None = None


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0].lower()


def _up(c: ClientsObservation, url: str | None) -> bool:
    return url is not None and c.online.get(norm_url(url), False)


def pointers(c: ClientsObservation) -> list[Pointer]:
    found: list[Pointer] = []
    if c.agent is not None:
        if _up(c, c.agent):
            found.append(Pointer("the Deployment Agent", c.agent, c.agent))
        else:
            spare = next((u for u in c.failover if _up(c, u)), None)
            found.append(Pointer("the Deployment Agent", c.agent, spare, None if spare else (
                f"it points at {c.agent}, which is not online, and no server of its Failover Server List is")))
    for i, url in enumerate(c.policy):
        client = f"policy URL {i + 1} ({url})"
        if norm_url(url) in c.online:
            found.append(Pointer(client, url, url if _up(c, url) else None,
                                 None if _up(c, url) else f"{url} is not online"))
            continue
        host = _host(url)
        target = c.dns.get(host)
        if target is None:
            found.append(Pointer(client, url, None, f"{url} is no server of the estate and {host} has no DNS record"))
        elif not _up(c, target):
            found.append(Pointer(client, url, None, f"DNS {host} -> {target}, which is not online"))
        elif host not in c.virtual_hosts.get(norm_url(target), ()):
            found.append(Pointer(client, url, None, f"DNS {host} -> {target}, which has no virtual host {host}"))
        else:
            found.append(Pointer(client, url, target))
    return found


def cut_off(c: ClientsObservation) -> list[Pointer]:
    return [p for p in pointers(c) if p.cut_off is not None]


def after(c: ClientsObservation, action: Action) -> ClientsObservation:
    """The client configuration once `action` is done (unchanged for any other action)."""
    match action:
        case AddFailoverServer(url=url):
            return c if url in c.failover else replace(c, failover=(*c.failover, url))
        case RemoveFailoverServer(url=url):
            return replace(c, failover=tuple(u for u in c.failover if norm_url(u) != norm_url(url)))
        case AddVirtualHost(agent_url=server, host=host):
            key = norm_url(server)
            hosts = c.virtual_hosts.get(key, ())
            return c if host in hosts else replace(c, virtual_hosts={**c.virtual_hosts, key: (*hosts, host)})
        case BringOnline(agent_url=server) | TakeOffline(agent_url=server):
            return replace(c, online={**c.online, norm_url(server): isinstance(action, BringOnline)})
        case RedeployDeploymentAgent(url=url):
            return replace(c, agent=url)
        case DeployPolicy(urls=urls):
            return replace(c, policy=urls)
        case SwitchDnsRecord(host=host, url=url):
            return replace(c, dns={**c.dns, host: url})
        case _:
            return c


def client_violations(spec: UpgradePlanSpec, seen: Observations, action: Action) -> list[Violation]:
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
        case RedeployDeploymentAgent(url=url) | SwitchDnsRecord(url=url):
            if not _up(c, url):
                found.append(Violation("not-serving", f"{url} is not online: clients would be pointed at a server"
                                                      " that does not serve them"))
            if isinstance(action, SwitchDnsRecord) and action.host not in c.virtual_hosts.get(norm_url(url), ()):
                found.append(Violation("no-virtual-host", f"{url} has no virtual host {action.host}: clients using"
                                                          f" {action.host} would reach a server that does not answer"
                                                          " for it"))
        case DeployPolicy(urls=urls):
            found += [Violation("not-serving", f"{u} is not online") for u in urls
                      if norm_url(u) in c.online and not _up(c, u)]
    was = {p.client for p in cut_off(c)}
    lost = [p for p in cut_off(after(c, action)) if p.client not in was]
    if lost:
        found.append(Violation("clients-cut-off", "clients would reach no online server: "
                               + "; ".join(f"{p.client}: {p.cut_off}" for p in lost)))
    return found
