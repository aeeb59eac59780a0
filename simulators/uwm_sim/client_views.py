"""The estate's client configuration on the agent API (docs/contracts.md section 2b).

`GET /agent/v1/clients` shows where every client points and what it reaches; `POST /agent/v1/clients`
changes the configuration (Failover Server List, Deployment Agent, Environment Manager policy, Virtual
Hosts, DNS records); `POST /agent/v1/service` brings this server online or takes it offline. Every
server answers the estate-level endpoints (they share the estate-state database). Each change runs under
the estate lock like every other mutation, is checked by `clients` (a change that would cut clients off
is refused with `clients-cut-off` unless `force`), and is journalled with the whole resulting document.
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
from .estate import DatabaseState, Refusal, compute_phase
from .journal import FAILED, OK
from .keys import RUNTIME
from .service import Outcome, ServerRuntime

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
    info = clients.server_at(servers, body.get("url"), "Management")
    _serving(cfg, servers, info.name, "redeploying the Deployment Agent with its URL")
    return replace(cfg, agent=info.name, agent_deployed_at=now), {"from": cfg.agent, "to": info.name}


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


ACTIONS: dict[str, tuple[str, Change]] = {
    "add-failover-server": ("failover-add", _add_failover),
    "remove-failover-server": ("failover-remove", _remove_failover),
    "redeploy-deployment-agent": ("agent-redeploy", _redeploy_agent),
    "deploy-policy": ("policy-deploy", _deploy_policy),
    "add-virtual-host": ("virtual-host-add", _add_virtual_host),
    "switch-dns-record": ("dns-switch", _switch_dns),
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


def _estate(cur: Any) -> tuple[ClientConfig, dict[str, ServerInfo]]:
    return clients.load(cur) or ClientConfig(), clients.servers_of(store.list_servers(cur))


async def get_clients(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]

    def read(conn: Any) -> dict[str, Any]:
        cfg, servers = _estate(conn.cursor())
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
        before, servers = _estate(cur)
        try:
            after, detail = change(before, servers, body, time.time())
        except BadClientRequest as exc:
            return Outcome(400, {"error": str(exc)})
        except Refusal as r:
            return rt.refused(cur, op, r, request={k: v for k, v in body.items() if k != "action"})
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
        before, servers = _estate(cur)
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
