"""strategy CleanInstall: each replaced server's cut-over as observed, for `status.cutovers[]`.

Recomputed from every observation (so it is right after a crash, whatever the steps recorded), with the
times each stage was first seen kept: the new server online, its clients moved (no client configuration
points at the old URL; DefaultWebsite: the host's default website is the new server's), the old server
offline; and, for a replacement with a license, which license (its Secret and fingerprint) the
Deployment Agent carries, and since when.
"""

from __future__ import annotations

from datetime import datetime

from .enums import CutoverMethod, CutoverState
from .models import CutoverLicense, CutoverStatus, Replacement, UpgradePlanSpec
from .observations import ClientsObservation, Observations, norm_url


def clients_moved(r: Replacement, c: ClientsObservation) -> bool:
    """No client configuration of this kind still points at the old server's URL."""
    old = norm_url(r.old.url)
    match r.method:
        case CutoverMethod.FAILOVER_LIST_AND_AGENT:
            return c.agent is None or norm_url(c.agent) != old
        case CutoverMethod.POLICY:
            return old not in {norm_url(u) for u in c.policy}
        case CutoverMethod.DEFAULT_WEBSITE:
            site = c.default_websites.get(r.website_host or "")
            return site is not None and norm_url(site) == norm_url(r.new.url)
        case _:
            target = c.dns.get(r.virtual_host or "")
            return target is not None and norm_url(target) == norm_url(r.new.url)


def _how(r: Replacement) -> str:
    match r.method:
        case CutoverMethod.FAILOVER_LIST_AND_AGENT:
            return "Deployment Agent redeployed"
        case CutoverMethod.POLICY:
            return "new Environment Manager policy"
        case CutoverMethod.DEFAULT_WEBSITE:
            return f"default website of {r.website_host}"
        case _:
            return f"DNS record {r.virtual_host}"


def _stamp(at: datetime | None, holds: bool, now: datetime) -> datetime | None:
    return at if at is not None or not holds else now.replace(microsecond=0)


def _license(r: Replacement, entry: CutoverStatus, seen: Observations, now: datetime) -> CutoverLicense | None:
    if r.license is None:
        return None
    fingerprint = seen.licenses.get(r.new.name) or (entry.license.fingerprint if entry.license else None)
    deployed = seen.clients is not None and fingerprint is not None and seen.clients.agent_license == fingerprint
    at = entry.license.deployed_at if entry.license and entry.license.fingerprint == fingerprint else None
    return CutoverLicense(secret_name=r.license.name, key=r.license.key, fingerprint=fingerprint,
                          deployed_at=_stamp(at, deployed, now))


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
            virtual_host=r.virtual_host, default_website_host=r.website_host)
        entry = entry.model_copy(update={"license": _license(r, entry, seen, now)})
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
        if entry.license is not None and entry.license.deployed_at is not None:
            message += f"; license of Secret {entry.license.secret_name} ({entry.license.fingerprint}) deployed"
        found.append(entry.model_copy(update={"state": state, "new_server_online_at": online,
                                              "clients_moved_at": moved, "old_server_offline_at": offline,
                                              "message": message}))
    return tuple(found)
