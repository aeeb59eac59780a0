"""strategy CleanInstall: each replaced server's cut-over as observed, for `status.cutovers[]`.

Recomputed from every observation (so it is right after a crash, whatever the steps recorded), with the
times each stage was first seen kept: the new server online, its clients moved (no client configuration
points at the old URL), the old server offline.
"""

from __future__ import annotations

from datetime import datetime

from .enums import CutoverMethod, CutoverState
from .models import CutoverStatus, Replacement, UpgradePlanSpec
from .observations import ClientsObservation, Observations, norm_url


def clients_moved(r: Replacement, c: ClientsObservation) -> bool:
    """No client configuration of this kind still points at the old server's URL."""
    old = norm_url(r.old.url)
    match r.method:
        case CutoverMethod.FAILOVER_LIST_AND_AGENT:
            return c.agent is None or norm_url(c.agent) != old
        case CutoverMethod.POLICY:
            return old not in {norm_url(u) for u in c.policy}
        case _:
            target = c.dns.get(r.virtual_host or "")
            return target is not None and norm_url(target) == norm_url(r.new.url)


def _how(r: Replacement) -> str:
    match r.method:
        case CutoverMethod.FAILOVER_LIST_AND_AGENT:
            return "Deployment Agent redeployed"
        case CutoverMethod.POLICY:
            return "new Environment Manager policy"
        case _:
            return f"DNS record {r.virtual_host}"


def _stamp(at: datetime | None, holds: bool, now: datetime) -> datetime | None:
    return at if at is not None or not holds else now.replace(microsecond=0)


def cutovers(recorded: tuple[CutoverStatus, ...] | None, spec: UpgradePlanSpec, seen: Observations,
             now: datetime) -> tuple[CutoverStatus, ...] | None:
    reps = spec.replacements()
    if not reps:
        return recorded
    before = {c.server: c for c in recorded or ()}
    found = []
    for r in reps:
        entry = before.get(r.old.name) or CutoverStatus(
            server=r.old.name, replacement=r.new.name, method=r.method, old_url=r.old.url, new_url=r.new.url,
            virtual_host=r.virtual_host)
        new_obs, old_obs, c = seen.servers.get(r.new.name), seen.servers.get(r.old.name), seen.clients
        if new_obs is None or old_obs is None or c is None:
            found.append(entry)
            continue
        online = _stamp(entry.new_server_online_at, new_obs.online, now)
        moved = _stamp(entry.clients_moved_at, new_obs.online and clients_moved(r, c), now)
        offline = _stamp(entry.old_server_offline_at, not old_obs.online, now)
        if offline is not None and not old_obs.online:
            state = CutoverState.OLD_SERVER_OFFLINE
        elif moved is not None:
            state = CutoverState.CLIENTS_MOVED
        elif new_obs.online:
            state = CutoverState.NEW_SERVER_ONLINE
        else:
            state = CutoverState.PENDING
        message = {
            CutoverState.PENDING: f"{r.new.name} offline; clients use {r.old.name} ({r.old.url})",
            CutoverState.NEW_SERVER_ONLINE: f"{r.new.name} online at {r.new.url}; clients still use {r.old.name}",
            CutoverState.CLIENTS_MOVED: f"clients moved from {r.old.url} to {r.new.url} ({_how(r)});"
                                        f" {r.old.name} still online",
            CutoverState.OLD_SERVER_OFFLINE: f"clients moved from {r.old.url} to {r.new.url} ({_how(r)});"
                                             f" {r.old.name} offline",
        }[state]
        found.append(entry.model_copy(update={"state": state, "new_server_online_at": online,
                                              "clients_moved_at": moved, "old_server_offline_at": offline,
                                              "message": message}))
    return tuple(found)
