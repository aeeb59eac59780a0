"""Which other plans hold part of this plan's estate, so that two plans never upgrade it at once.

Two plans overlap when they name a server at the same URL, or a database through the same Secret and
key. The one that started first (or, if neither started, was created first; the name breaks ties) goes
on; the other waits `Blocked`, naming it. Plans that are over (Succeeded, Failed, RolledBack) hold
nothing. Only plans in the same namespace are compared: a namespaced operator may not list others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..adapters.kube import Kube
from ..core.enums import TERMINAL_PHASES, Phase
from ..core.models import SpecError, UpgradePlanSpec, parse_spec

HOLDING = {Phase.RUNNING, Phase.PAUSED, Phase.ROLLING_BACK}


def footprint(spec: UpgradePlanSpec, namespace: str) -> set[str]:
    urls = {f"url:{s.url.rstrip('/').lower()}" for s in spec.servers()}
    dbs = {f"db:{namespace}/{d.connection_secret_ref.name}/{d.connection_secret_ref.key}" for d in spec.databases}
    return urls | dbs


def _phase(obj: Mapping[str, Any]) -> Phase:
    try:
        return Phase((obj.get("status") or {}).get("phase") or Phase.PENDING)
    except ValueError:
        return Phase.PENDING


def _order(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def holders(me: Mapping[str, Any], spec: UpgradePlanSpec, others: list[dict[str, Any]]) -> tuple[str, ...]:
    """Names of the plans among ``others`` that this plan must wait for (pure; table-tested)."""
    namespace = me["metadata"]["namespace"]
    mine = footprint(spec, namespace)
    my_phase, my_order = _phase(me), _order(me)
    found = []
    for other in others:
        meta = other.get("metadata") or {}
        if meta.get("uid") == me["metadata"].get("uid") or meta.get("name") == me["metadata"]["name"]:
            continue
        phase = _phase(other)
        if phase in TERMINAL_PHASES or meta.get("deletionTimestamp"):
            continue
        try:
            theirs = footprint(parse_spec(other.get("spec") or {}), namespace)
        except SpecError:
            continue
        if not mine & theirs:
            continue
        if my_phase in HOLDING:  # already started: it holds the estate itself
            continue
        if phase in HOLDING or _order(other) < my_order:
            found.append(str(meta.get("name")))
    return tuple(sorted(found))


async def competing_plans(kube: Kube, me: Mapping[str, Any], spec: UpgradePlanSpec) -> tuple[str, ...]:
    others = await kube.list_plans(me["metadata"]["namespace"])
    return holders(me, spec, others)
