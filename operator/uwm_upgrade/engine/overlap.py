"""Which other plans hold part of this plan's estate, so that two plans never upgrade it at once.

Two plans overlap when they reach one server or one database, however they name it:
- a server by its host and port: the URL's host name and every address it resolves to (resolved here,
  with a timeout of `RESOLVE_SECONDS` and cached for `RESOLVE_TTL`), with the scheme's default port when
  the URL gives none; `http://ms-1.corp:7751` and `http://10.0.0.5:7751` are one server if the name
  resolves to that address;
- a database by the SERVER (host and port, or named instance) and DATABASE of its connection string,
  the host resolved in the same way, and the database name compared without case; also, as before, by
  the same Secret and key (a connection string that cannot be read or parsed still counts by its Secret).

What this cannot see: names that resolve differently elsewhere (split DNS, /etc/hosts of the servers),
a load balancer's address and its members' addresses, a proxy or NAT in front of a server, a SQL Server
reached both by a named instance and by its port, or a host that does not resolve from the operator's
pod at the moment of the look (then only its literal name counts).

The plan that started first (or, if neither started, was created first; namespace and name break ties)
goes on; the other waits `Blocked`, naming it. Plans that are over (Succeeded, Failed, RolledBack) hold
nothing. A cluster-wide operator compares the plans of every namespace; a namespaced one the plans of
the namespaces it watches by exact name (it may not list others).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..adapters.kube import Kube, KubeError
from ..core.enums import TERMINAL_PHASES, Phase
from ..core.models import SpecError, UpgradePlanSpec, parse_spec

HOLDING = {Phase.RUNNING, Phase.PAUSED, Phase.ROLLING_BACK}
RESOLVE_SECONDS = 2.0
RESOLVE_TTL = 60.0
DEFAULT_PORTS = {"http": 80, "https": 443}
SecretReader = Callable[[str, str, str], Awaitable[str]]
Footprint = frozenset[str]
PlanIndex = Mapping[Any, Iterable[Mapping[str, Any]]]  # kopf.Index: per key, what its plans' index function gave


def indexed(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the overlap check needs of a plan (for kopf's index): its identity, spec and phase."""
    meta = body.get("metadata") or {}
    kept = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp")
    return {"metadata": {k: meta[k] for k in kept if meta.get(k) is not None},
            "spec": copy.deepcopy(dict(body.get("spec") or {})),
            "status": {"phase": (body.get("status") or {}).get("phase")}}


@dataclass(frozen=True)
class Scope:
    """Which plans this operator may list: every namespace's (cluster-wide) or those of its namespaces."""

    cluster_wide: bool = False
    namespaces: tuple[str, ...] = ()  # exact names; glob patterns cannot be listed and are left out

    def to_list(self, own: str) -> list[str | None]:
        """The namespaces to list plans in (None: the whole cluster)."""
        if self.cluster_wide:
            return [None]
        return list(sorted({own, *self.namespaces}))


@dataclass
class Resolver:
    """Host names to the addresses they resolve to, with a timeout, cached briefly."""

    timeout: float = RESOLVE_SECONDS
    ttl: float = RESOLVE_TTL
    cache: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)

    async def names(self, host: str) -> frozenset[str]:
        """`host` itself (lower case) and every address it resolves to; an address literal as itself."""
        host = host.strip().strip("[]").lower().rstrip(".")
        literal = _address(host)
        if literal is not None:
            return frozenset({literal})
        now = time.monotonic()
        cached = self.cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = {host}
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
                                           self.timeout)
            found |= {a for a in (_address(str(info[4][0])) for info in infos) if a}
        except (OSError, TimeoutError, UnicodeError):
            pass  # unresolvable now: its literal name alone counts
        self.cache[host] = (now + self.ttl, frozenset(found))
        return self.cache[host][1]


def _address(text: str) -> str | None:
    """An IP address literal in one spelling (an IPv4-mapped IPv6 address as IPv4), else None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def host_port(url: str) -> tuple[str, int | None]:
    """The host and port a server URL names (the scheme's default port when it gives none)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(parts.scheme.lower())


_PAIR = re.compile(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)\s*(?:;|$)")
_SERVER_KEYS = ("server", "address", "addr", "network address", "data source", "host", "servername")
_DATABASE_KEYS = ("database", "initial catalog", "dbname")


def database_target(connection_string: str) -> tuple[str, str, str] | None:
    """(host, port or instance, database) an ODBC connection string reaches; None when it names no server or
    database. A minimal reading: `SERVER=[tcp:]host[,port]` or `host\\instance`, `PORT=`, `DATABASE=`."""
    fields: dict[str, str] = {}
    for key, raw in _PAIR.findall(connection_string):
        braced = raw.startswith("{") and raw.endswith("}")
        fields.setdefault(key.strip().lower(), (raw[1:-1].replace("}}", "}") if braced else raw).strip())
    server = next((fields[k] for k in _SERVER_KEYS if fields.get(k)), "")
    database = next((fields[k] for k in _DATABASE_KEYS if fields.get(k)), "")
    if not server or not database:
        return None
    server = re.sub(r"(?i)^(tcp|np|lpc):", "", server)
    host, _, port = server.partition(",")
    host, _, instance = host.partition("\\")
    if host.lower() in (".", "(local)", "(localdb)"):
        host = "localhost"
    port = port.strip() or fields.get("port", "")
    if not port:
        port = "5432" if "postgres" in fields.get("driver", "").lower() else ("" if instance else "1433")
    where = port if port else f"instance {instance.lower()}"
    return host.strip().lower(), where, database.lower()


def static_footprint(spec: UpgradePlanSpec, namespace: str) -> set[str]:
    """What a plan holds by its spec alone: each server's host:port as written, each database's Secret key."""
    keys = set()
    for server in (*spec.servers(), *spec.replacement_servers()):
        host, port = host_port(server.url)
        keys.add(f"server:{host}:{port}")
    for db in spec.databases:
        ref = db.connection_secret_ref
        keys.add(f"secret:{namespace}/{ref.name}/{ref.key}")
    return keys


async def footprint(spec: UpgradePlanSpec, namespace: str, secret: SecretReader, resolver: Resolver) -> Footprint:
    """`static_footprint` plus every address the servers' hosts resolve to, and each database's server and
    name from its connection string (resolved the same way)."""
    keys = static_footprint(spec, namespace)
    for server in (*spec.servers(), *spec.replacement_servers()):
        host, port = host_port(server.url)
        keys |= {f"server:{name}:{port}" for name in await resolver.names(host)}
    for db in spec.databases:
        ref = db.connection_secret_ref
        try:
            target = database_target(await secret(namespace, ref.name, ref.key))
        except KubeError:
            continue
        if target is not None:
            host, where, database = target
            keys |= {f"db:{name}:{where}/{database}" for name in await resolver.names(host)}
    return frozenset(keys)


def _phase(obj: Mapping[str, Any]) -> Phase:
    """The plan's phase; one waiting for its maintenance window between hops holds its estate as a running
    one does (it started: servers may be out of rotation, replication off), and counts as Running."""
    status = obj.get("status") or {}
    try:
        phase = Phase(status.get("phase") or Phase.PENDING)
    except ValueError:
        return Phase.PENDING
    return Phase.RUNNING if phase is Phase.AWAITING_WINDOW and status.get("startedAt") else phase


def _order(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("uid") and a.get("uid") == b.get("uid"):
        return True
    return (a.get("namespace"), a.get("name")) == (b.get("namespace"), b.get("name"))


def contenders(me: Mapping[str, Any], others: list[dict[str, Any]]) -> list[tuple[dict[str, Any], UpgradePlanSpec]]:
    """The other plans that may hold an estate: not this one, not over, not being deleted, with a valid spec."""
    found = []
    for other in others:
        meta = other.get("metadata") or {}
        if _same(meta, me["metadata"]) or _phase(other) in TERMINAL_PHASES or meta.get("deletionTimestamp"):
            continue
        try:
            found.append((other, parse_spec(other.get("spec") or {})))
        except SpecError:
            continue
    return found


def holders(me: Mapping[str, Any], mine: set[str] | Footprint,
            others: Sequence[tuple[Mapping[str, Any], set[str] | Footprint]]) -> tuple[str, ...]:
    """Names of the plans among ``others`` (each with its footprint) that this plan must wait for (pure;
    table-tested); a plan of another namespace as `namespace/name`."""
    if _phase(me) in HOLDING:  # already started: it holds the estate itself
        return ()
    namespace, my_order = me["metadata"]["namespace"], _order(me)
    found = []
    for other, theirs in others:
        if not mine & theirs:
            continue
        if _phase(other) in HOLDING or _order(other) < my_order:
            meta = other.get("metadata") or {}
            name = str(meta.get("name"))
            found.append(name if meta.get("namespace", namespace) == namespace else f"{meta.get('namespace')}/{name}")
    return tuple(sorted(found))


async def competing_plans(kube: Kube, me: Mapping[str, Any], spec: UpgradePlanSpec, scope: Scope,
                          secret: SecretReader, resolver: Resolver, index: PlanIndex | None = None) -> tuple[str, ...]:
    """The plans this one waits for. The other plans come from `index` (kopf's index of every plan this
    operator watches, kept current by its watch: no listing per turn), or, without one, are listed."""
    if _phase(me) in HOLDING:  # already started: it holds the estate itself
        return ()
    namespace = me["metadata"]["namespace"]
    listed: list[dict[str, Any]] = []
    if index is not None:
        listed = [dict(plan) for found in index.values() for plan in found]
    else:
        for where in scope.to_list(namespace):
            listed += await kube.list_plans(where)
    others = contenders(me, listed)
    if not others:
        return ()
    mine = await footprint(spec, namespace, secret, resolver)
    prints = [(other, await footprint(other_spec, other["metadata"]["namespace"], secret, resolver))
              for other, other_spec in others]
    return holders(me, mine, prints)
