"""Start a whole simulated estate, or part of it, in this process: `running_fleet()` and `Fleet`.

Why: tests start fleets programmatically (an async context manager giving the servers' URLs) and
`uwm-sim fleet FILE` does the same in a subprocess; a large fleet runs in one process (one aiohttp
application and site per server, each on its own port), and a clustered fleet runs one process per
server with `only=[name]`. Every process registers the whole topology in the estate-state database
(rows that already exist keep their state), so the processes agree and a restart resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import clients, migration, store, uwmdb
from .app import init_app
from .client import AgentClient
from .config import ConfigError, DatabaseConfig, FleetConfig, ServerConfig, load_fleet, parse_fleet
from .db import Database
from .dialect import detect
from .estate import Catalog, ServerState
from .faults import FaultSet
from .journal import FAILED, OK, Entry, Event, append, read
from .lb import LB, init_lb_app
from .service import Estate, ServerRuntime
from .status_views import STATUS_PATHS
from .watch import Changes

log = logging.getLogger("uwm_sim")
SHUTDOWN_TIMEOUT = 1.0


class FleetError(RuntimeError):
    """The fleet could not start; the message names the server or database."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: str
    database: str
    url: str

    @property
    def status_url(self) -> str:
        return self.url + STATUS_PATHS[self.kind]

    @property
    def portal_url(self) -> str:
        return self.url + "/ServerConfigurationPortal/"


@dataclass
class RunningFleet:
    """What a started fleet offers its caller: URLs by name, the token, clients, the journal."""

    config: FleetConfig
    state: Database
    servers: dict[str, Endpoint] = field(default_factory=dict)
    load_balancers: dict[str, str] = field(default_factory=dict)
    runtimes: dict[str, ServerRuntime] = field(default_factory=dict)
    started_in: float = 0.0

    @property
    def token(self) -> str:
        return self.config.agent_token

    def url(self, name: str) -> str:
        return self.servers[name].url if name in self.servers else self.load_balancers[name]

    def client(self, name: str) -> AgentClient:
        return AgentClient(self.url(name), self.token)

    async def journal(self, since: int = 0) -> list[Event]:
        return await self.state.call(lambda conn: read(conn.cursor(), self.state.dialect, since, 1_000_000))

    def lines(self) -> list[str]:
        out = [f"{e.name} {e.kind} {e.url} status={e.status_url}" for e in self.servers.values()]
        out += [f"{name} LoadBalancer {url}" for name, url in self.load_balancers.items()]
        return out

    def as_json(self) -> dict[str, Any]:
        return {"servers": {e.name: {"kind": e.kind, "database": e.database, "url": e.url,
                                     "statusUrl": e.status_url, "portalUrl": e.portal_url}
                            for e in self.servers.values()},
                "loadBalancers": dict(self.load_balancers), "startedInSeconds": round(self.started_in, 3)}


class _Site:
    """One server's listening socket; stopped and started again by an injected crash."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner, self.host, self.port = runner, host, port
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise FleetError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self._site = site
        if self.port == 0:
            self.port = int(self.runner.addresses[-1][1])

    async def stop(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None


def _url(cfg: FleetConfig, server_url: str | None, port: int) -> str:
    if server_url:
        return server_url.rstrip("/")
    host = cfg.advertise_host or (cfg.host if cfg.host not in ("0.0.0.0", "::", "") else "127.0.0.1")
    return f"http://{host}:{port}"


def _snapshot(s: ServerState) -> dict[str, Any]:
    return {"name": s.name, "kind": s.kind, "database": s.database, "version": s.version, "role": s.repl_role,
            "group": s.repl_group, "replicationEnabled": s.repl_enabled, "loadBalanced": s.load_balanced,
            "inRotation": s.in_rotation}


def _initial(s: ServerConfig, now: float, url: str | None) -> ServerState:
    replicated = s.replication_role != "None"
    assert s.version is not None
    return ServerState(name=s.name, kind=s.kind, database=s.database, version=s.version, repl_role=s.replication_role,
                       repl_group=s.replication_group if replicated else None,
                       repl_enabled=replicated and s.replication_enabled, repl_changed_at=0.0,
                       load_balanced=s.load_balanced, in_rotation=s.in_rotation if s.load_balanced else True,
                       started_at=now, url=url)


def register(cur: Any, estate: Estate, urls: Mapping[str, str]) -> tuple[list[ServerState], list[str]]:
    """Record the topology (new rows get the configured initial state) and the start of owned servers."""
    d = estate.state.dialect
    store.lock_estate(cur, d)
    existing = {s.name: s for s in store.list_servers(cur)}
    entries: list[Entry] = []
    now = time.time()
    configured_names = {s.name for s in estate.config.servers}
    for gone in sorted(set(existing) - configured_names):  # left the fleet file: no longer part of the estate
        store.delete_server(cur, gone)
        entries.append(Entry(gone, existing[gone].database, "unregister", OK))
    for s in estate.config.servers:
        configured = _url(estate.config, s.url, s.bind_port) if s.bind_port or s.url else None
        old = existing.get(s.name)
        url = urls.get(s.name) or (old.url if old else None) or configured
        if old is None:
            state = _initial(s, now, url)
            store.insert_server(cur, state)
            entries.append(Entry(s.name, s.database, "register", OK, {"snapshot": _snapshot(state)}))
        else:
            replicated = s.replication_role != "None"
            store.update_server(cur, s.name, kind=s.kind, database=s.database, repl_role=s.replication_role,
                                repl_group=s.replication_group if replicated else None,
                                repl_enabled=old.repl_enabled and replicated, load_balanced=s.load_balanced,
                                url=url)
        if s.name in urls:
            store.update_server(cur, s.name, started_at=now, url=urls[s.name])
    owned = store.list_servers(cur, names=sorted(urls))
    entries += [Entry(s.name, s.database, "start", OK, {"snapshot": _snapshot(s), "url": s.url}) for s in owned]
    entries += _clients(cur, estate, now)
    append(cur, d, entries)
    faults = [store.get_faults(cur, s.name) for s in owned]
    return owned, faults


def _clients(cur: Any, estate: Estate, now: float) -> list[Entry]:
    """The estate's client configuration: created from the fleet file once, then only new servers added."""
    old = clients.load(cur)
    if old is None:
        doc, op = clients.initial(estate.config, now), "clients-init"
    else:
        doc, op = clients.with_server(old, [(s.name, s.online) for s in estate.config.servers]), "clients-update"
    entries = []
    if doc != old:
        clients.save(cur, doc, now)
        entries.append(Entry(None, None, op, OK, {"clients": doc.to_json()}))
    lost = clients.cut_off(doc, clients.servers_of(store.list_servers(cur)))
    if lost:  # e.g. a server the clients use left the fleet file: report it, as a client would notice
        reason = "; ".join(f"{p.client}: {p.cut_off}" for p in lost)
        entries.append(Entry(None, None, "clients-cut-off", FAILED, {"reason": reason, "cause": "start"}))
    return entries


class Fleet:
    def __init__(self, config: FleetConfig | Mapping[str, Any] | str | Path, *, only: Collection[str] | None = None,
                 reset: bool = False) -> None:
        self.config = config if isinstance(config, FleetConfig) else (
            load_fleet(config) if isinstance(config, str | Path) else parse_fleet(config))
        names = {s.name for s in self.config.servers} | {lb.name for lb in self.config.load_balancers}
        unknown = sorted(set(only or ()) - names)
        if unknown:
            raise ConfigError(f"only: no server or load balancer named {unknown[0]!r}")
        self.only = set(only) if only is not None else names
        self.reset = reset
        self._runners: list[web.AppRunner] = []
        self.running: RunningFleet | None = None
        self.estate: Estate | None = None

    def _databases(self) -> Estate:
        cfg = self.config
        state = Database("state", cfg.state_database.connection_string,
                         detect(cfg.state_database.connection_string, cfg.state_database.dialect), max_idle=8)
        dbs = {d.name: Database(d.name, d.connection_string, detect(d.connection_string, d.dialect))
               for d in cfg.databases}
        return Estate(cfg, Catalog(tuple(cfg.releases)), state, dbs)

    async def start(self) -> RunningFleet:
        began = time.monotonic()
        try:
            estate = self._databases()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.running = fleet = RunningFleet(self.config, estate.state)
        self.estate = estate
        estate.changes = Changes()
        estate.changes.bind(asyncio.get_running_loop())
        estate.state.on_commit = estate.changes.committed
        try:
            await self._start(estate, fleet)
        except BaseException:
            await self.stop()
            raise
        fleet.started_in = time.monotonic() - began
        return fleet

    async def _start(self, estate: Estate, fleet: RunningFleet) -> None:
        cfg = self.config
        await estate.state.call(lambda c: store.ensure_schema(c, estate.state.dialect, self.reset))
        await asyncio.gather(*(self._prepare(estate.databases[d.name], d) for d in cfg.databases))
        owned = [s for s in cfg.servers if s.name in self.only]
        for s in owned:
            fleet.runtimes[s.name] = ServerRuntime(s, estate)
        await asyncio.gather(*(self._listen(fleet.runtimes[s.name], s) for s in owned))
        urls = {name: rt.url for name, rt in fleet.runtimes.items()}
        states, faults = await estate.state.call(lambda c: register(c.cursor(), estate, urls))
        snaps = {name: await asyncio.to_thread(db.call_sync, lambda c, n=name: uwmdb.snapshot(c, n))
                 for name, db in estate.databases.items()}
        for state, fault_text in zip(states, faults, strict=True):
            rt = fleet.runtimes[state.name]
            rt.faults = FaultSet.loads(fault_text)
            rt.in_rotation = state.in_rotation
            fleet.servers[state.name] = Endpoint(state.name, state.kind, state.database, rt.url)
            if state.installing and state.install_fault != "hang" and state.install_target:
                left = (state.install_started or 0.0) + state.install_seconds - time.time()
                rt.spawn(rt.finish_install_later(state.install_target, left))
            if snaps[state.database].lock_holder == state.name:
                await migration.resume(rt, await rt.snapshot())
        for lb_cfg in cfg.load_balancers:
            if lb_cfg.name in self.only:
                app = init_lb_app(lb_cfg, estate.state, cfg.agent_token)
                runner = await self._runner(app)
                site = _Site(runner, cfg.host, lb_cfg.port)
                try:
                    await site.start()
                except FleetError as exc:
                    raise FleetError(f"load balancer {lb_cfg.name}: {exc}") from None
                url = _url(cfg, None, site.port)
                app[LB].url = url
                fleet.load_balancers[lb_cfg.name] = url

    async def _prepare(self, db: Database, d: DatabaseConfig) -> None:
        version = d.schema_version or self.config.releases[0]
        await db.call(lambda c: uwmdb.ensure_schema(c, db.dialect, version, d.seed_rows, self.reset))

    async def _runner(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _listen(self, rt: ServerRuntime, s: ServerConfig) -> None:
        runner = await self._runner(init_app(rt))
        site = _Site(runner, self.config.host, s.bind_port)
        try:
            await site.start()
        except FleetError as exc:
            raise FleetError(f"server {s.name}: {exc}") from None
        rt.site = site
        rt.url = _url(self.config, s.url, site.port)

    async def stop(self) -> None:
        fleet, self.running = self.running, None
        if fleet is None:
            return
        if fleet.servers:
            entries = [Entry(e.name, e.database, "stop", OK) for e in fleet.servers.values()]
            with suppress(Exception):
                await asyncio.wait_for(fleet.state.call(
                    lambda c: append(c.cursor(), fleet.state.dialect, entries)), timeout=5)
        await asyncio.gather(*(rt.close() for rt in fleet.runtimes.values()))
        await asyncio.gather(*(r.cleanup() for r in self._runners), return_exceptions=True)
        self._runners.clear()
        fleet.state.close()
        for db in self.estate.databases.values() if self.estate else ():
            db.close()


@asynccontextmanager
async def running_fleet(config: FleetConfig | Mapping[str, Any] | str | Path, *,
                        only: Collection[str] | None = None, reset: bool = False) -> AsyncIterator[RunningFleet]:
    """Start the fleet (or the servers and load balancers named in `only`); stop it on exit."""
    fleet = Fleet(config, only=only, reset=reset)
    running = await fleet.start()
    try:
        yield running
    finally:
        await fleet.stop()
