"""Where the estate's clients point, as observed, and where they would point after a change (CleanInstall).

The guide's caveat for a clean install is the client configuration: a Deployment Agent holds one
Management Server URL and fails over along the Failover Server List; Environment Manager agents use the
Personalization Server URLs of their policy, a server's own URL or a virtual host name that DNS resolves
to a server answering for it. Either may also hold `http://<host>` of a host whose default website (the
website without a host header) is a server's: it reaches that server. `pointers()` resolves every
client; `cut_off()` names those that reach no online server; `after()` is the configuration once a
client effect is done. This is the model only: the guide's rules about changing it are in `guide.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .actions import (
    Action,
    AddFailoverServer,
    AddVirtualHost,
    BringOnline,
    DeployPolicy,
    MakeDefaultWebsite,
    RedeployDeploymentAgent,
    RemoveFailoverServer,
    SwitchDnsRecord,
    TakeOffline,
)
from .observations import ClientsObservation, host_of, norm_url


@dataclass(frozen=True)
class Pointer:
    client: str
    holds: str
    reaches: str | None  # the URL of the online server it reaches
    cut_off: str | None = None


def is_up(c: ClientsObservation, url: str | None) -> bool:
    """The server at `url` serves clients (online in the client configuration)."""
    return url is not None and c.online.get(norm_url(url), False)


def reached(c: ClientsObservation, url: str) -> tuple[str | None, str | None]:
    """The URL of the online server a client holding `url` reaches, or None and why it reaches none: a
    server's own URL, a virtual host DNS resolves, or a host whose default website is a server's."""
    if norm_url(url) in c.online:
        return (url, None) if is_up(c, url) else (None, f"{url} is not online")
    host = host_of(url)
    target = c.dns.get(host)
    if target is not None:
        if not is_up(c, target):
            return None, f"DNS {host} -> {target}, which is not online"
        if host not in c.virtual_hosts.get(norm_url(target), ()):
            return None, f"DNS {host} -> {target}, which has no virtual host {host}"
        return target, None
    if host in c.default_websites or host in c.website_hosts.values():
        site = c.default_websites.get(host)
        if site is None:
            return None, f"{host} has no default website"
        return (site, None) if is_up(c, site) else (None, f"the default website of {host} is {site}, which is"
                                                           " not online")
    return None, f"{url} is no server of the estate and {host} has no DNS record"


def pointers(c: ClientsObservation) -> list[Pointer]:
    found: list[Pointer] = []
    if c.agent is not None:
        direct, why = reached(c, c.agent)
        if direct is not None:
            found.append(Pointer("the Deployment Agent", c.agent, direct))
        else:
            spare = next((u for u in c.failover if is_up(c, u)), None)
            found.append(Pointer("the Deployment Agent", c.agent, spare, None if spare else (
                f"it points at {c.agent} ({why}), and no server of its Failover Server List is online")))
    for i, url in enumerate(c.policy):
        target, why = reached(c, url)
        found.append(Pointer(f"policy URL {i + 1} ({url})", url, target, why))
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
        case RedeployDeploymentAgent(url=url, license=license_):
            return replace(c, agent=url, agent_license=license_ or c.agent_license)
        case DeployPolicy(urls=urls):
            return replace(c, policy=urls)
        case SwitchDnsRecord(host=host, url=url):
            return replace(c, dns={**c.dns, host: url})
        case MakeDefaultWebsite(host=host, url=url):
            return replace(c, default_websites={**c.default_websites, host: url},
                           website_hosts={**c.website_hosts, norm_url(url): host})
        case _:
            return c
