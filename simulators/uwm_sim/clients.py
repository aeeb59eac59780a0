"""The estate's client configuration: where Deployment Agents and Environment Manager agents point.

Why: the guide's caveat for a clean-install upgrade is the client configuration. Management Server
clients (the Deployment Agent) hold one Management Server URL plus the Failover Server List; the
Environment Manager policy holds the Personalization Server URLs its agents use, either a server's own
URL or a virtual host name that DNS resolves to a server answering for it (Virtual Hosts feature). A
server is taken offline or brought online as a whole.

Everything here is pure (plain data in, plain data out) apart from `load`/`save`, so the rules are
table-tested without HTTP: `pointers()` resolves every client to the server it reaches right now, and a
change that would leave some client reaching no online server is refused (`clients-cut-off`) unless
forced, in which case the journal says so. `journal_violations()` replays the journal's client events.

The document is stored as JSON in one row of `sim_clients`, by server *name* (stable across processes
and restarts; URLs are only known once each server listens). The agent API speaks URLs, as clients do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from .config import FleetConfig
from .estate import Phase, Refusal
from .store import CLIENTS
from .websites import HostWebsites, host_of_server

RULE_CUT_OFF = "clients-cut-off"
RULE_NOT_IN_FAILOVER = "not-in-failover-list"
RULE_NO_VHOST = "no-virtual-host"
RULE_WEBSITE = "website-root-in-use"
RULE_NOT_SERVING = "not-serving"
DEFAULT_WEBSITE = "Default Web Site"
CLIENTS_TABLE = CLIENTS
CLIENT_OPS = frozenset({"clients-init", "clients-update", "failover-add", "failover-remove", "agent-redeploy",
                        "policy-deploy", "virtual-host-add", "dns-switch", "default-website", "host-header-remove",
                        "server-online", "server-offline"})


class BadClientRequest(ValueError):  # noqa: N818 -- answered as a 400 naming the field
    """A request that names something that is not there (a 400 that names the field)."""


@dataclass(frozen=True)
class ServerInfo:
    """What the client rules need to know of a registered server."""

    name: str
    kind: str
    url: str | None = None
    root_apps: tuple[str, ...] = ()  # other applications using the root of its website


@dataclass(frozen=True)
class ClientConfig:
    failover: tuple[str, ...] = ()                       # Management Server names, in order
    agent: str | None = None                             # the server the Deployment Agent was deployed with
    agent_deployed_at: float | None = None
    agent_host: str | None = None                        # or the host whose default website it uses
    agent_license: Mapping[str, Any] | None = None       # {"fingerprint", "bytes", "deployedAt"}, never the text
    # {"server": name} | {"virtualHost": host, "url": url} | {"defaultWebsite": host, "url": url}
    policy: tuple[dict[str, str], ...] = ()
    policy_version: int = 1
    policy_deployed_at: float | None = None
    virtual_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dns: Mapping[str, str] = field(default_factory=dict)  # host name -> server name
    online: Mapping[str, bool] = field(default_factory=dict)
    websites: Mapping[str, HostWebsites] = field(default_factory=dict)  # host name -> its UWM websites

    def is_online(self, name: str | None, servers: Mapping[str, ServerInfo]) -> bool:
        return name is not None and name in servers and self.online.get(name, True)

    def default_of(self, host: str | None) -> str | None:
        """The server whose website is the default website of `host` (what `http://<host>` reaches)."""
        site = self.websites.get(host or "")
        return site.default if site is not None else None

    def to_json(self) -> dict[str, Any]:
        return {"failoverServers": list(self.failover), "deploymentAgent": self.agent,
                "deploymentAgentDeployedAt": self.agent_deployed_at, "deploymentAgentHost": self.agent_host,
                "deploymentAgentLicense": dict(self.agent_license) if self.agent_license else None,
                "policy": [dict(p) for p in self.policy],
                "policyVersion": self.policy_version, "policyDeployedAt": self.policy_deployed_at,
                "virtualHosts": {k: list(v) for k, v in sorted(self.virtual_hosts.items())},
                "dnsRecords": dict(sorted(self.dns.items())), "online": dict(sorted(self.online.items())),
                "websites": {h: w.to_json() for h, w in sorted(self.websites.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientConfig:
        return cls(failover=tuple(data.get("failoverServers") or ()), agent=data.get("deploymentAgent"),
                   agent_deployed_at=data.get("deploymentAgentDeployedAt"), agent_host=data.get("deploymentAgentHost"),
                   agent_license=data.get("deploymentAgentLicense"),
                   websites={h: HostWebsites.from_json(w) for h, w in (data.get("websites") or {}).items()},
                   policy=tuple(dict(p) for p in data.get("policy") or ()),
                   policy_version=int(data.get("policyVersion") or 1),
                   policy_deployed_at=data.get("policyDeployedAt"),
                   virtual_hosts={k: tuple(v) for k, v in (data.get("virtualHosts") or {}).items()},
                   dns=dict(data.get("dnsRecords") or {}), online=dict(data.get("online") or {}))


# ---------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Pointer:
    """One client and what it reaches: `server` when it reaches an online server, else `cut_off` says why."""

    client: str
    holds: str
    server: str | None
    cut_off: str | None = None

    def to_json(self, servers: Mapping[str, ServerInfo]) -> dict[str, Any]:
        info = servers.get(self.server or "")
        return {"client": self.client, "holds": self.holds, "server": self.server,
                "url": info.url if info else None, "cutOff": self.cut_off is not None, "reason": self.cut_off}


def _why_not(cfg: ClientConfig, name: str, servers: Mapping[str, ServerInfo]) -> str:
    if name not in servers:
        return f"{name}, which is gone (no longer part of the estate)"
    return f"{name}, which is offline"


def _default_website(cfg: ClientConfig, host: str, servers: Mapping[str, ServerInfo]) -> tuple[str | None, str]:
    """What `http://<host>` reaches: the default website's server if it is online, else None and why."""
    target = cfg.default_of(host)
    if target is None:
        return None, f"{host} has no default website"
    if not cfg.is_online(target, servers):
        return None, f"the default website of {host} is {_why_not(cfg, target, servers)}"
    return target, ""


def _agent(cfg: ClientConfig, servers: Mapping[str, ServerInfo]) -> Pointer:
    """The Deployment Agent: the server (or the host's default website) it was deployed with, else the
    first online server of its Failover Server List."""
    if cfg.agent_host is not None:
        holds = f"http://{cfg.agent_host}"
        direct, why = _default_website(cfg, cfg.agent_host, servers)
        why = f"the Deployment Agent points at {holds}: {why}"
    else:
        holds, direct = cfg.agent or "", cfg.agent if cfg.is_online(cfg.agent, servers) else None
        why = f"the Deployment Agent points at {_why_not(cfg, holds, servers)}"
    if direct is not None:
        return Pointer("deploymentAgent", holds, direct)
    spare = next((n for n in cfg.failover if cfg.is_online(n, servers)), None)
    return Pointer("deploymentAgent", holds, spare,
                   None if spare else f"{why}, and no server of its Failover Server List is online")


def pointers(cfg: ClientConfig, servers: Mapping[str, ServerInfo]) -> list[Pointer]:
    """Every client of the estate and the server it reaches now (the Deployment Agent fails over in list order)."""
    found: list[Pointer] = []
    if cfg.agent is not None or cfg.agent_host is not None:
        found.append(_agent(cfg, servers))
    for i, entry in enumerate(cfg.policy):
        client = f"policy[{i}]"
        if "server" in entry:
            name = entry["server"]
            ok = cfg.is_online(name, servers)
            found.append(Pointer(client, name, name if ok else None,
                                 None if ok else f"the policy points at {_why_not(cfg, name, servers)}"))
            continue
        if "defaultWebsite" in entry:
            host = entry["defaultWebsite"]
            reached, why = _default_website(cfg, host, servers)
            found.append(Pointer(client, host, reached, None if reached else why))
            continue
        host = entry.get("virtualHost", "")
        target = cfg.dns.get(host)
        if target is None:
            found.append(Pointer(client, host, None, f"no DNS record for {host}"))
        elif not cfg.is_online(target, servers):
            found.append(Pointer(client, host, None, f"DNS {host} -> {_why_not(cfg, target, servers)}"))
        elif host not in cfg.virtual_hosts.get(target, ()):
            found.append(Pointer(client, host, None, f"DNS {host} -> {target}, which has no virtual host {host}"))
        else:
            found.append(Pointer(client, host, target))
    return found


def cut_off(cfg: ClientConfig, servers: Mapping[str, ServerInfo]) -> list[Pointer]:
    return [p for p in pointers(cfg, servers) if p.cut_off is not None]


def newly_cut_off(before: ClientConfig, after: ClientConfig, servers: Mapping[str, ServerInfo]) -> list[Pointer]:
    """Clients that reach an online server before the change and none after it."""
    was = {p.client for p in cut_off(before, servers)}
    return [p for p in cut_off(after, servers) if p.client not in was]


# ---------------------------------------------------------------- changes (pure; raise Refusal / BadClientRequest)


def normal(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def server_at(servers: Mapping[str, ServerInfo], url: Any, kind: str | None, field_name: str = "url") -> ServerInfo:
    if not isinstance(url, str) or not url:
        raise BadClientRequest(f"{field_name}: a URL is required")
    wanted = normal(url)
    for info in servers.values():
        if info.url and normal(info.url) == wanted and (kind is None or info.kind == kind):
            return info
    what = f"{kind} Server" if kind else "server"
    raise BadClientRequest(f"{field_name}: no {what} of the estate answers at {url}")


def policy_entry(cfg: ClientConfig, servers: Mapping[str, ServerInfo], url: Any, index: int) -> dict[str, str]:
    """A policy URL as stored: a Personalization Server's own URL, a virtual host name with a DNS record, or
    a host whose default website clients reach."""
    where = f"urls[{index}]"
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadClientRequest(f"{where}: an http(s) URL is required")
    try:
        return {"server": server_at(servers, url, "Personalization", where).name}
    except BadClientRequest:
        host = (urlsplit(url).hostname or "").lower()
        if host in cfg.dns:
            return {"virtualHost": host, "url": url}
        if host in cfg.websites:
            return {"defaultWebsite": host, "url": url}
        raise BadClientRequest(f"{where}: {url} is neither a Personalization Server of the estate, nor a virtual"
                               " host with a DNS record, nor a host with websites") from None


def entry_url(entry: Mapping[str, str], servers: Mapping[str, ServerInfo]) -> str | None:
    if "server" in entry:
        info = servers.get(entry["server"])
        return info.url if info else None
    return entry.get("url") or f"http://{entry.get('virtualHost') or entry.get('defaultWebsite')}"


def check_website(kind: str, website: str, other_apps: Sequence[str]) -> None:
    """The guide: a Personalization Server needs the root of its website; in the default website it would
    overwrite every application using that root, so such a server is never upgraded (installed) in place."""
    if kind == "Personalization" and website == DEFAULT_WEBSITE and other_apps:
        raise Refusal(RULE_WEBSITE, f"this Personalization Server is installed in the root of the default website,"
                                    f" which {', '.join(other_apps)} also uses: an in-place upgrade would overwrite"
                                    " it; install the new release as a new installation into its own"
                                    " Personalization website (clean install)")


def check_online(name: str, kind: str, phase: Phase, cfg: ClientConfig) -> None:
    """Bringing a server online: it must serve, and a Management Server's URL must already be in the
    Failover Server List (the guide: add it to the list prior to bringing the server online)."""
    if kind == "Management" and name not in cfg.failover:
        raise Refusal(RULE_NOT_IN_FAILOVER, f"{name} is not in the Failover Server List: add the new Management"
                                            " Server URL to the list before bringing the server online")
    if phase is not Phase.RUNNING:
        raise Refusal(RULE_NOT_SERVING, f"{name} cannot serve clients yet: it is {phase.value}")


def guard(before: ClientConfig, after: ClientConfig, servers: Mapping[str, ServerInfo], force: bool) -> list[Pointer]:
    """The clients this change would cut off; a `clients-cut-off` refusal unless `force`."""
    lost = newly_cut_off(before, after, servers)
    if lost and not force:
        raise Refusal(RULE_CUT_OFF, "clients would reach no online server: "
                      + "; ".join(f"{p.client}: {p.cut_off}" for p in lost))
    return lost


def with_server(cfg: ClientConfig, servers: Iterable[tuple[str, bool]]) -> ClientConfig:
    """Servers new to the document, with their configured online state (existing entries are kept)."""
    online = dict(cfg.online)
    for name, up in servers:
        online.setdefault(name, up)
    return replace(cfg, online=online) if online != dict(cfg.online) else cfg


# ---------------------------------------------------------------- storage


def initial(config: FleetConfig, now: float) -> ClientConfig:
    """The configuration the fleet file describes (`clients:`), with its defaults for what it leaves out."""
    c = config.clients
    up = [s for s in config.servers if s.online]
    failover = c.failover_servers if c.failover_servers is not None else [s.name for s in up if s.kind == "Management"]
    agent_host = c.deployment_agent_host
    agent = c.deployment_agent if c.deployment_agent is not None or agent_host else next(iter(failover), None)
    if c.policy is not None:
        policy = tuple(_policy_entry(e.server, e.virtual_host, e.default_website) for e in c.policy)
    else:
        policy = tuple({"server": s.name} for s in up if s.kind == "Personalization")
    deployed = agent is not None or agent_host is not None
    return ClientConfig(failover=tuple(failover), agent=agent, agent_deployed_at=now if deployed else None,
                        agent_host=agent_host, policy=policy, policy_deployed_at=now if policy else None,
                        virtual_hosts={k: tuple(v) for k, v in c.virtual_hosts.items()}, dns=dict(c.dns_records),
                        online={s.name: s.online for s in config.servers},
                        websites={h: HostWebsites(w.default_website, dict(w.host_headers))
                                  for h, w in c.websites.items()})


def _policy_entry(server: str | None, virtual_host: str | None, default_website: str | None) -> dict[str, str]:
    if server is not None:
        return {"server": server}
    if virtual_host is not None:
        return {"virtualHost": virtual_host, "url": f"http://{virtual_host}"}
    return {"defaultWebsite": default_website or "", "url": f"http://{default_website}"}


def load(cur: Any) -> ClientConfig | None:
    cur.execute(f"SELECT doc FROM {CLIENTS_TABLE} WHERE id = 1")
    row = cur.fetchone()
    return ClientConfig.from_json(json.loads(row[0])) if row and row[0] else None


@functools.lru_cache(maxsize=8)
def _parsed(doc: str) -> ClientConfig:
    return ClientConfig.from_json(json.loads(doc))


def parsed(doc: str | None) -> ClientConfig | None:
    """The configuration a document (as `store.look` read it) holds, parsed once per distinct text: every
    state look reads the document, and it changes only when the client configuration does. For reading
    only (the answer is shared); a change starts from `load`."""
    return _parsed(doc) if doc else None


def save(cur: Any, cfg: ClientConfig, now: float) -> None:
    doc = json.dumps(cfg.to_json(), sort_keys=True)
    cur.execute(f"UPDATE {CLIENTS_TABLE} SET doc = ?, updated_at = ? WHERE id = 1", doc, now)
    if cur.rowcount == 0:
        cur.execute(f"INSERT INTO {CLIENTS_TABLE} (id, doc, updated_at) VALUES (1, ?, ?)", doc, now)


def servers_of(rows: Iterable[Any], config: FleetConfig | None = None) -> dict[str, ServerInfo]:
    """`ServerInfo` by name from `store.list_servers` rows (with the fleet file's root applications)."""
    apps = {s.name: tuple(s.other_apps_in_root) for s in config.servers} if config is not None else {}
    return {s.name: ServerInfo(s.name, s.kind, s.url, apps.get(s.name, ())) for s in rows}


def render(cfg: ClientConfig, servers: Mapping[str, ServerInfo]) -> dict[str, Any]:
    """The `GET /agent/v1/clients` answer: the configuration in URLs, and what each client reaches."""
    def url(name: str | None) -> str | None:
        info = servers.get(name or "")
        return info.url if info else None

    found = pointers(cfg, servers)
    agent = next((p for p in found if p.client == "deploymentAgent"), None)
    license_ = cfg.agent_license
    return {
        "failoverServers": [{"server": n, "url": url(n), "online": cfg.is_online(n, servers)} for n in cfg.failover],
        "deploymentAgent": None if agent is None else {
            "server": cfg.agent, "host": cfg.agent_host,
            "url": f"http://{cfg.agent_host}" if cfg.agent_host else url(cfg.agent),
            "deployedAt": cfg.agent_deployed_at, "reaches": agent.server, "reachesUrl": url(agent.server),
            "license": None if not license_ else {"fingerprint": license_.get("fingerprint"),
                                                  "deployedAt": license_.get("deployedAt")}},
        "policy": {"version": cfg.policy_version, "deployedAt": cfg.policy_deployed_at,
                   "urls": [entry_url(e, servers) for e in cfg.policy]},
        "virtualHosts": {k: list(v) for k, v in sorted(cfg.virtual_hosts.items())},
        "dnsRecords": {h: {"server": n, "url": url(n)} for h, n in sorted(cfg.dns.items())},
        "websites": {h: {"defaultWebsite": w.default, "defaultWebsiteUrl": url(w.default),
                         "hostHeaders": dict(sorted(w.host_headers.items()))} for h, w in sorted(cfg.websites.items())},
        "servers": {n: {"kind": s.kind, "url": s.url, "online": cfg.is_online(n, servers),
                        "virtualHosts": list(cfg.virtual_hosts.get(n, ())),
                        "website": website_of(cfg, n)} for n, s in sorted(servers.items())},
        "clients": [p.to_json(servers) for p in found],
        "cutOff": [f"{p.client}: {p.cut_off}" for p in found if p.cut_off],
    }


def website_of(cfg: ClientConfig, name: str) -> dict[str, Any] | None:
    """Where `name`'s website is bound: its host, its host header (None: it is the host's default website)."""
    host = host_of_server(cfg.websites, name)
    if host is None:
        return None
    header = cfg.websites[host].host_headers.get(name)
    return {"host": host, "hostHeader": header, "default": header is None}


# ---------------------------------------------------------------- the journal


def journal_violations(events: Iterable[Any]) -> list[str]:
    """Replay the journal: every moment some client reached no online server (and every forced change)."""
    servers: dict[str, ServerInfo] = {}
    cfg: ClientConfig | None = None
    found: list[str] = []
    for e in events:
        if e.op in ("register", "start") and "snapshot" in e.detail:
            snap = e.detail["snapshot"]
            servers[snap["name"]] = ServerInfo(snap["name"], snap["kind"])
        elif e.op == "unregister" and e.server:
            servers.pop(e.server, None)
        if e.op == "clients-cut-off":
            found.append(f"#{e.seq} {e.op}: {e.detail.get('reason') or 'clients were cut off'}")
        if e.op in CLIENT_OPS and e.outcome != "refused" and "clients" in e.detail:
            previous = {p.client for p in cut_off(cfg, servers)} if cfg is not None else set()
            cfg = ClientConfig.from_json(e.detail["clients"])
            for p in cut_off(cfg, servers):
                if p.client not in previous:
                    found.append(f"#{e.seq} {e.op} on {e.server}: {p.client} ({p.holds}) reaches no online"
                                 f" server: {p.cut_off}")
    return found
