"""The estate's client configuration on the agent API (docs/contracts.md section 2b).

`GET /agent/v1/clients` shows where every client points and what it reaches; `POST /agent/v1/clients`
changes the configuration (Failover Server List, Deployment Agent and its license, Environment Manager
policy, Virtual Hosts, DNS records, the default websites of the hosts clients reach); `POST
/agent/v1/service` brings this server online or takes it offline. Every server answers the estate-level
endpoints (they share the estate-state database). Each change runs under the estate lock like every
other mutation, is checked by `clients` (a change that would cut clients off is refused with
`clients-cut-off` unless `force`), and is journalled with the whole resulting document.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from . import clients, store
from .agent_views import body_of, reply
from .clients import BadClientRequest, ClientConfig, ServerInfo
from .config import FleetConfig
from .estate import DatabaseState, Refusal, compute_phase
from .journal import FAILED, OK
from .keys import RUNTIME
from .service import Outcome, ServerRuntime
from .websites import RULE_NOT_ON_HOST, RULE_TWO_DEFAULTS, HostWebsites, host_name, host_of_server, license_record

Change = Callable[[ClientConfig, dict[str, ServerInfo], dict[str, Any], float], tuple[ClientConfig, dict[str, Any]]]


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadClientRequest(f"{name}: a non-empty string is required")
    return value.strip()


def _serving(cfg: ClientConfig, servers: dict[str, ServerInfo], name: str, what: str) -> None:
    if not cfg.is_online(name, servers):
        raise Refusal(clients.RULE_NOT_SERVING, f"{name} is offline: {what} would point clients at a server that"
                                                " does not serve them; bring it online first")


def _add_failover(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                  now: float) -> tuple[ClientConfig, dict[str, Any]]:
    info = clients.server_at(servers, body.get("url"), "Management")
    if info.name in cfg.failover:
        return cfg, {"server": info.name}
    return replace(cfg, failover=(*cfg.failover, info.name)), {"server": info.name}


def _remove_failover(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                     now: float) -> tuple[ClientConfig, dict[str, Any]]:
    info = clients.server_at(servers, body.get("url"), "Management")
    return replace(cfg, failover=tuple(n for n in cfg.failover if n != info.name)), {"server": info.name}


def _redeploy_agent(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                    now: float) -> tuple[ClientConfig, dict[str, Any]]:
    """The Deployment Agent deployed again with `url`: a Management Server's own URL, or `http://<host>` of
    a host whose default website is a Management Server's; with `license`, the new license too (only its
    fingerprint is kept)."""
    url, host = body.get("url"), host_name(body.get("url"))
    try:
        agent, agent_host = clients.server_at(servers, url, "Management").name, None
    except BadClientRequest:
        default = servers.get(cfg.default_of(host) or "")
        if default is None or default.kind != "Management":
            raise BadClientRequest(f"url: {url} is neither a Management Server of the estate nor a host whose"
                                   " default website is one") from None
        agent, agent_host = None, host
    reached = agent if agent is not None else cfg.default_of(agent_host)
    _serving(cfg, servers, reached or "", "redeploying the Deployment Agent with its URL")
    deployed = cfg.agent_license
    if "license" in body:
        try:
            deployed = license_record(body["license"], now)
        except ValueError as exc:
            raise BadClientRequest(str(exc)) from None
    held = f"http://{cfg.agent_host}" if cfg.agent_host else cfg.agent
    new = replace(cfg, agent=agent, agent_host=agent_host, agent_deployed_at=now, agent_license=deployed)
    return new, {"from": held, "to": agent or f"http://{agent_host}",
                 "license": deployed.get("fingerprint") if deployed and "license" in body else None}


def _deploy_policy(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                   now: float) -> tuple[ClientConfig, dict[str, Any]]:
    urls = body.get("urls")
    if not isinstance(urls, list) or not urls:
        raise BadClientRequest("urls: a non-empty list of Personalization Server URLs is required")
    entries = tuple(clients.policy_entry(cfg, servers, u, i) for i, u in enumerate(urls))
    before = [clients.entry_url(e, servers) for e in cfg.policy]
    new = replace(cfg, policy=entries, policy_version=cfg.policy_version + (entries != cfg.policy),
                  policy_deployed_at=now if entries != cfg.policy else cfg.policy_deployed_at)
    return new, {"from": before, "to": [str(u) for u in urls], "version": new.policy_version}


def _add_virtual_host(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                      now: float) -> tuple[ClientConfig, dict[str, Any]]:
    info = clients.server_at(servers, body.get("url"), "Personalization")
    host = _str(body, "host").lower()
    hosts = tuple(cfg.virtual_hosts.get(info.name, ()))
    if host in hosts:
        return cfg, {"server": info.name, "host": host}
    return replace(cfg, virtual_hosts={**cfg.virtual_hosts, info.name: (*hosts, host)}), \
        {"server": info.name, "host": host}


def _switch_dns(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                now: float) -> tuple[ClientConfig, dict[str, Any]]:
    info = clients.server_at(servers, body.get("url"), "Personalization")
    host = _str(body, "host").lower()
    detail = {"host": host, "from": cfg.dns.get(host), "to": info.name}
    if cfg.dns.get(host) == info.name:
        return cfg, detail
    if host not in cfg.virtual_hosts.get(info.name, ()) and not body.get("force"):
        raise Refusal(clients.RULE_NO_VHOST, f"{info.name} has no virtual host {host}: clients using {host} would"
                                             f" reach a server that does not answer for it; add the virtual host"
                                             " first")
    _serving(cfg, servers, info.name, f"pointing DNS record {host} at it")
    return replace(cfg, dns={**cfg.dns, host: info.name}), detail


def _site(cfg: ClientConfig, host: str) -> HostWebsites:
    site = cfg.websites.get(host)
    if site is None:
        raise BadClientRequest(f"host: no host {host} with UWM websites in the estate")
    return site


def _check_default_website(info: ServerInfo, host: str, site: HostWebsites,
                           servers: dict[str, ServerInfo]) -> None:
    """Making `info`'s website the default website of `host`: it must be a website of that host, and (the
    guide's website-root rule) a Personalization Server needs the root of its website, so it never takes
    over a default website whose root another application uses."""
    if not site.has(info.name):
        raise Refusal(RULE_NOT_ON_HOST, f"{info.name}'s website is not on {host}: only a website of the host"
                                        " clients reach can become its default website")
    current = servers.get(site.default or "")
    if info.kind == "Personalization" and current is not None and current.name != info.name and current.root_apps:
        raise Refusal(clients.RULE_WEBSITE, f"the default website of {host} ({current.name}'s) has"
                                            f" {', '.join(current.root_apps)} in its root: Personalization Server"
                                            " needs the root of the default website and would overwrite it; move"
                                            " clients by Virtual Hosts and DNS or by a new policy instead")


def _make_default_website(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                          now: float) -> tuple[ClientConfig, dict[str, Any]]:
    """The guide's "remove the host header and make it the default website", as one change: the server's
    website on `host` loses its host header and takes the default binding; the previous default website's
    binding there is removed (a host has one default website, and clients are never left without one)."""
    info = clients.server_at(servers, body.get("url"), None)
    host = _str(body, "host").lower()
    site = _site(cfg, host)
    detail = {"host": host, "from": site.default, "to": info.name}
    if site.default == info.name:
        return cfg, detail
    _check_default_website(info, host, site, servers)
    _serving(cfg, servers, info.name, f"making its website the default website of {host}")
    headers = {n: h for n, h in site.host_headers.items() if n != info.name}
    return replace(cfg, websites={**cfg.websites, host: HostWebsites(info.name, headers)}), detail


def _remove_host_header(cfg: ClientConfig, servers: dict[str, ServerInfo], body: dict[str, Any],
                        now: float) -> tuple[ClientConfig, dict[str, Any]]:
    """The server's website loses its host header: it becomes its host's default website, which is refused
    while another website is that (two websites without a host header on one host)."""
    info = clients.server_at(servers, body.get("url"), None)
    host = host_of_server(cfg.websites, info.name)
    if host is None:
        raise BadClientRequest(f"url: {info.name}'s website is on no host of the estate's websites")
    site = cfg.websites[host]
    detail = {"host": host, "server": info.name, "header": site.host_headers.get(info.name)}
    if site.default == info.name:
        return cfg, detail
    if site.default is not None:
        raise Refusal(RULE_TWO_DEFAULTS, f"{host} already has a default website ({site.default}'s): removing the"
                                         f" host header of {info.name}'s would bind a second default website to"
                                         " it; make-default-website moves the default binding instead")
    headers = {n: h for n, h in site.host_headers.items() if n != info.name}
    return replace(cfg, websites={**cfg.websites, host: HostWebsites(info.name, headers)}), detail


ACTIONS: dict[str, tuple[str, Change]] = {
    "add-failover-server": ("failover-add", _add_failover),
    "remove-failover-server": ("failover-remove", _remove_failover),
    "redeploy-deployment-agent": ("agent-redeploy", _redeploy_agent),
    "deploy-policy": ("policy-deploy", _deploy_policy),
    "add-virtual-host": ("virtual-host-add", _add_virtual_host),
    "switch-dns-record": ("dns-switch", _switch_dns),
    "make-default-website": ("default-website", _make_default_website),
    "remove-host-header": ("host-header-remove", _remove_host_header),
}


def _commit(rt: ServerRuntime, cur: Any, op: str, before: ClientConfig, after: ClientConfig,
            servers: dict[str, ServerInfo], force: bool, detail: dict[str, Any]) -> Outcome:
    """Refuse a change that cuts clients off (unless forced), else store and journal it."""
    try:
        lost = clients.guard(before, after, servers, force)
    except Refusal as r:
        return rt.refused(cur, op, r, **detail)
    changed = after != before
    if changed:
        clients.save(cur, after, time.time())
    rt.journal(cur, op, OK, changed=changed, forced=force and bool(lost), clients=after.to_json(), **detail)
    if lost:
        reason = "; ".join(f"{p.client}: {p.cut_off}" for p in lost)
        rt.journal(cur, "clients-cut-off", FAILED, reason=reason, cause=op)
    return Outcome(200, {"changed": changed, "clients": clients.render(after, servers)})


def _estate(cur: Any, config: FleetConfig) -> tuple[ClientConfig, dict[str, ServerInfo]]:
    return clients.load(cur) or ClientConfig(), clients.servers_of(store.list_servers(cur), config)


async def get_clients(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]

    def read(conn: Any) -> dict[str, Any]:
        cfg, servers = _estate(conn.cursor(), rt.estate.config)
        return clients.render(cfg, servers)
    return web.json_response(await rt.estate.state.call(read))


async def post_clients(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await body_of(request)
    if not isinstance(body, dict):
        return reply(Outcome(400, {"error": "body: a JSON object is required"}))
    action = body.get("action")
    if action not in ACTIONS:
        return reply(Outcome(400, {"error": f"action: one of {', '.join(ACTIONS)}"}))
    op, change = ACTIONS[action]
    force = body.get("force") is True

    def work(cur: Any, db: DatabaseState) -> Outcome:
        before, servers = _estate(cur, rt.estate.config)
        try:
            after, detail = change(before, servers, body, time.time())
        except BadClientRequest as exc:
            return Outcome(400, {"error": str(exc)})
        except Refusal as r:
            # never the license text: only its fingerprint is ever kept
            return rt.refused(cur, op, r, request={k: v for k, v in body.items() if k not in ("action", "license")})
        return _commit(rt, cur, op, before, after, servers, force, detail)
    return reply(await asyncio.to_thread(rt.locked_tx, work))


async def post_service(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await body_of(request)
    online = body.get("online") if isinstance(body, dict) else None
    if not isinstance(online, bool):
        return reply(Outcome(400, {"error": "online: a boolean is required"}))
    force = isinstance(body, dict) and body.get("force") is True
    op = "server-online" if online else "server-offline"

    def work(cur: Any, db: DatabaseState) -> Outcome:
        me = rt.me(cur)
        before, servers = _estate(cur, rt.estate.config)
        if online:
            phase = compute_phase(me, db, rt.estate.catalog, time.time(), rt.timing.settle_seconds)
            try:
                clients.check_online(me.name, me.kind, phase, before)
            except Refusal as r:
                return rt.refused(cur, op, r)
        after = replace(before, online={**before.online, me.name: online})
        return _commit(rt, cur, op, before, after, servers, force, {"online": online})
    outcome = await asyncio.to_thread(rt.locked_tx, work)
    return reply(await rt.with_state(outcome) if outcome.status < 300 else outcome)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/agent/v1/clients", get_clients),
        web.post("/agent/v1/clients", post_clients),
        web.post("/agent/v1/service", post_service),
    ]
