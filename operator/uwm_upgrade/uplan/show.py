"""`kubectl uplan status`: one screen of a plan, read from the resource as the API server has it.

The plan (phase, since when, current -> target, hop, step, message), its hops, the current hop's steps
with their durations (every hop's with `--all`), its servers, its databases and its conditions. Times are
said as ages ("3m10s ago") and durations, against the caller's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

TERMINAL = ("Succeeded", "Failed", "RolledBack")
STATE_MARKS = {"Succeeded": "done", "Skipped": "skip", "Running": ">>", "Failed": "FAIL", "Pending": ""}


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def span(seconds: float | None) -> str:
    """`1h02m`, `3m10s`, `42s` (empty for None)."""
    if seconds is None:
        return ""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def ago(text: str | None, now: datetime) -> str:
    at = parse_time(text)
    return f"{span((now - at).total_seconds())} ago" if at else ""


def took(step: dict[str, Any], now: datetime) -> str:
    start, end = parse_time(step.get("startedAt")), parse_time(step.get("finishedAt"))
    if start is None:
        return ""
    return span(((end or now) - start).total_seconds()) + ("" if end else "…")


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _cut(text: str | None, limit: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(summary: dict[str, Any] | None) -> str:
    """A finished hop whose steps were summarised (they left status.steps when the next hop started)."""
    if not summary:
        return ""
    start, end = parse_time(summary.get("startedAt")), parse_time(summary.get("finishedAt"))
    lasted = f" in {span((end - start).total_seconds())}" if start and end else ""
    first = ", ".join(f"{db} by {server}" for db, server in (summary.get("firstServers") or {}).items())
    return (f"done{lasted}: {summary.get('succeeded', 0)} steps succeeded, {summary.get('skipped', 0)} skipped"
            + (f"; schema first: {first}" if first else ""))


def render(plan: dict[str, Any], now: datetime | None = None, every_hop: bool = False) -> str:
    now = now or datetime.now(UTC)
    meta, spec, status = plan.get("metadata", {}), plan.get("spec", {}), plan.get("status") or {}
    phase = status.get("phase") or "Pending"
    hops = status.get("path") or []
    lines = [f"UpgradePlan {meta.get('namespace')}/{meta.get('name')}: {phase}"
             + (f" since {ago(status.get('phaseSince'), now)}" if status.get("phaseSince") else ""),
             f"  {status.get('currentVersion') or '?'} -> {spec.get('targetVersion')}"
             + (f", hop {status.get('hopDisplay')}" if status.get("hopDisplay") else "")
             + (f", step {status['currentStep']}" if status.get("currentStep") else "")]
    if status.get("message"):
        lines.append(f"  {_cut(status['message'], 300)}")
    if status.get("nextWindowStart"):
        lines.append(f"  next maintenance window: {status['nextWindowStart']}")
    if meta.get("generation") != status.get("observedGeneration"):
        lines.append(f"  (the operator has not seen the latest spec yet: generation {meta.get('generation')},"
                     f" observed {status.get('observedGeneration')})")
    if hops:
        lines.append("Hops:")
        current = int(status.get("currentHop") or 0)
        lines += table([[("> " if i == current else "  ") + f"{i}", f"{h.get('from')} -> {h.get('to')}",
                         _summary(h.get("summary"))] for i, h in enumerate(hops, start=1)])
    steps = [s for s in status.get("steps") or []
             if every_hop or s.get("hop") == status.get("currentHop") or s.get("state") in ("Running", "Failed")]
    if steps:
        lines.append("Steps:" if every_hop else f"Steps (hop {status.get('currentHop')}; --all for every hop):")
        lines += table([[STATE_MARKS.get(s.get("state", ""), s.get("state", "")), str(s.get("hop", "")),
                         s.get("name", ""), " ".join(t for t in (s.get("database"), s.get("server")) if t),
                         took(s, now), _cut(s.get("message"), 70)] for s in steps])
    servers = status.get("servers") or []
    if servers:
        lines.append("Servers:")
        lines += table([["NAME", "KIND", "VERSION", "ONLINE", "REPLICATION", "HEALTH"]]
                       + [[s.get("name", ""), s.get("kind", ""), s.get("version") or "", _online(s, now),
                           s.get("replication") or "", s.get("health") or ""] for s in servers])
    databases = status.get("databases") or []
    if databases:
        lines.append("Databases:")
        lines += table([["NAME", "KIND", "SCHEMA", "LAST BACKUP"]]
                       + [[d.get("name", ""), d.get("kind", ""), d.get("schemaVersion") or "", _backup(d, now)]
                          for d in databases])
    conditions = status.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        lines += table([["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
                       + [[c.get("type", ""), c.get("status", ""), c.get("reason", ""),
                           ago(c.get("lastTransitionTime"), now), _cut(c.get("message"), 60)] for c in conditions])
    return "\n".join(lines)


def _online(server: dict[str, Any], now: datetime) -> str:
    if server.get("online") is None:
        return ""
    if server["online"]:
        return "yes"
    since = ago(server.get("offlineSince"), now)
    return f"no ({since})" if since else "no"


def _backup(database: dict[str, Any], now: datetime) -> str:
    backup = database.get("lastBackup") or {}
    if not backup:
        return ""
    verified = "verified" if backup.get("verified") else "NOT verified"
    return f"{backup.get('id')} (hop {backup.get('hop')}, {verified}, {ago(backup.get('takenAt'), now)})"


def condition(plan: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (plan.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def settled(plan: dict[str, Any]) -> bool:
    """The status was computed for the spec as it is (a retry just asked for is not seen yet otherwise)."""
    status = plan.get("status") or {}
    return bool(status.get("observedGeneration") == plan.get("metadata", {}).get("generation"))
