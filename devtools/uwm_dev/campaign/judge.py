"""Did a run hold? The verdict of the failure campaign, from the estate's own records.

A run holds when:
- the independent journal audit (`referee.audit`) finds no broken rule;
- it ends as an uninterrupted run would (Succeeded, every server at the target, replication and rotation
  as before the plan, user data unchanged), or in a precise Failed or RolledBack: RolledBack leaves every
  server as before the plan with its data; Failed names, in its `Failed` condition, every server it
  leaves out of rotation, without its replication, or on another release than the others; never
  silently. A run hit by a failure may not end Succeeded; one hit only by transient disruptions that
  ends in a precise Failed (a migration request whose fate a crash hid is never sent twice) holds, and
  its line says so;
- no data is lost: user data at the end equals the data before, or (after a failed migration that damaged
  it) the Failed condition names a verified backup whose copy of the user data equals the data before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..referee import audit
from .scenarios import Scenario

TERMINAL = ("Succeeded", "Failed", "RolledBack")


@dataclass
class Verdict:
    held: bool
    phase: str | None
    violations: list[str] = field(default_factory=list)
    data_losses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stopped: str | None = None  # a transient disruption ended in a precise Failed/RolledBack: held, said so

    @property
    def as_uninterrupted(self) -> bool:
        return self.held and self.stopped is None

    def line(self) -> str:
        if self.held:
            return f"held ({self.phase}{': ' + self.stopped if self.stopped else ''})"
        why = [*self.violations, *self.data_losses, *self.problems]
        return f"DID NOT HOLD ({self.phase}): " + "; ".join(why[:6]) + (f" (+{len(why) - 6} more)" if len(why) > 6
                                                                         else "")


def _condition(plan: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for c in (plan.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind:
            return dict(c)
    return {}


def _segment(message: str, server: str) -> str | None:
    """What the message says about one server: its `name ...;` part of the estate the message describes
    (after "Estate: ", when it has one: the reason before it may name the server too, saying something
    else, such as "did not finish within 30s: ms-2 installing"), or None."""
    _, marker, estate = message.rpartition("Estate: ")
    m = re.search(rf"(?:^|[:;,]\s*){re.escape(server)}\s([^;]*)", estate if marker else message)
    return m.group(1) if m else None


def unnamed(message: str, result: audit.Replay, servers: list[str]) -> list[str]:
    """Servers left out of rotation, unreplicated or on a release of their own that `message` does not name."""
    versions = {result.servers[s].version for s in servers if s in result.servers}
    silent = []
    for name in servers:
        s = result.servers.get(name)
        if s is None:
            continue
        said = _segment(message, name)
        wrong = []
        if s.initial[1] and not s.in_rotation:
            wrong.append(("out of rotation", "out of rotation"))
        if s.initial[0] and not s.replication:
            wrong.append(("replication off", "replication off"))
        if len(versions) > 1:
            wrong.append((f"at {s.version}", s.version))
        for what, phrase in wrong:
            if said is None or phrase not in said:
                silent.append(f"{name} {what} but the Failed condition does not say so")
    return silent


def judge(scenario: Scenario, plan: Mapping[str, Any] | None, findings: list[audit.Finding], result: audit.Replay,
          servers: list[str], data_before: Mapping[str, str], data_after: Mapping[str, str],
          backup_data: Mapping[str, Mapping[str, str]], versions_before: Mapping[str, str],
          versions_after: Mapping[str, str]) -> Verdict:
    """`backup_data`: database -> backup id -> checksum of that backup's copy of the user data;
    `versions_before`/`versions_after`: each server's release by its own agent, at the start and the end."""
    status = (plan or {}).get("status") or {}
    phase = status.get("phase")
    v = Verdict(False, phase)
    v.violations = [str(f) for f in findings if not f.data_loss and f.rule != "not-restored"]
    if phase not in TERMINAL:
        v.problems.append(f"the plan never ended (phase {phase}, step {status.get('currentStep')})")
    changed = sorted(db for db in data_before if data_before.get(db) != data_after.get(db))
    if phase == "Succeeded":
        if scenario.expects_failure:
            v.problems.append("Succeeded although a failure was injected")
        else:
            v.problems += [str(f) for f in findings if f.rule == "not-restored"]
            v.problems += [f"{name} runs {versions_after.get(name)} by its agent, not {scenario.target}"
                           for name in servers if versions_after.get(name) != scenario.target]
    elif phase == "RolledBack":
        back = audit.as_before(result, servers, None)
        v.problems += [f"{name}: not as before the plan after the rollback" for name in servers
                       if _differs(result, name, back[name]) or versions_after.get(name) != versions_before.get(name)]
    elif phase == "Failed":
        message = str(_condition(plan or {}, "Failed").get("message") or "")
        v.problems += unnamed(message, result, servers)
        for db in changed:  # damaged by a failed migration: the named backup must hold it as it was
            ids = [i for i, checksum in backup_data.get(db, {}).items()
                   if i in message and checksum == data_before.get(db)]
            if not ids:
                v.data_losses.append(f"user data of {db} changed and the Failed condition names no verified"
                                     " backup that holds it as it was")
        changed = []
    if phase in ("Failed", "RolledBack") and not scenario.expects_failure:  # held, if precise; but say so
        reason = _condition(plan or {}, "Failed").get("reason") or phase
        v.stopped = f"{reason}, though every disruption was transient"
    v.data_losses += [f"user data of {db} changed" for db in changed]
    v.held = not (v.violations or v.data_losses or v.problems)
    return v


def _differs(result: audit.Replay, name: str, want: audit.Expect) -> bool:
    s = result.servers.get(name)
    return s is None or s.replication != want.replication or s.in_rotation != want.in_rotation
