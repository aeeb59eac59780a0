"""End to end: the operator process SIGKILLed and restarted at every step of a hop, in the middle of the
long ones, and many times in a row; the upgrade still ends as an uninterrupted one does, and nothing
irreversible (a backup, a schema migration, an install) is ever done twice.

What "nothing done twice" means, from the estate's own records (not the operator's word):
- schema: exactly one `schema-migrate` accepted and one `schema-migrated` per hop and database in the
  simulators' journal;
- backups: exactly one row per hop in `uwm_backups` of each UWM database, the one the status records
  (a retaken backup would carry a later `taken_at` than the one recorded); and at most one
  `BackupDatabase` decision per hop and database in the operator's log, two only when the kill landed
  while that very backup was being taken (it may not have committed: asking again is then required,
  and the adapter returns an existing verified backup rather than taking a second one);
- installs: exactly one *accepted* install (`install`, outcome ok, not a no-op) per server per hop.
  Asking again is allowed only when the first request was refused (journalled `refused`, changes
  nothing) or lost (the kill came between the status write and the request: nothing journalled), or
  when the server already ran that release (journalled as a no-op). None of those counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.e2e_support import E2E, agent_state, backups_of, watch_for

pytestmark = pytest.mark.e2e

SERVERS = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")
DATABASES = ("mgmt-db", "pers-db")
# Long enough that a kill "in the middle" lands in the middle: an install takes 1.5 s, a schema hop of
# two catalog releases 2 x 1 s.
CRASH_TIMING = {"install": 1.5, "migration_step": 1.0}
ONE_HOP = {"targetVersion": "2023.1"}
TWO_HOPS = {"targetVersion": "2025.1"}


# ---------------------------------------------------------------- where to kill


@dataclass(frozen=True)
class At:
    """A kill point: when step `step` (of hop `hop`, for `server`/`database` if given) leaves Pending, or
    with `requested` once its effect was accepted (the operator notes "...: requested"), wait `after`
    seconds (0: right there), then SIGKILL the operator. `step="hop"`: when hop `hop` is recorded."""

    step: str
    server: str | None = None
    database: str | None = None
    hop: int = 1
    after: float = 0.0
    requested: bool = False

    def matches(self, s: dict[str, Any]) -> bool:
        return (s["name"] == self.step and s.get("hop") == self.hop
                and (self.server is None or s.get("server") == self.server)
                and (self.database is None or s.get("database") == self.database))

    def reached(self, plan: dict[str, Any]) -> bool:
        status = plan.get("status") or {}
        if self.step == "hop":  # the hop boundary: the next hop recorded, none of its steps started yet
            return int(status.get("currentHop") or 0) >= self.hop
        for s in status.get("steps", []):
            if self.matches(s) and s.get("state") != "Pending":
                return not self.requested or s.get("state") != "Running" or \
                    str(s.get("message") or "").endswith(": requested")
        return False

    def __str__(self) -> str:
        where = "/".join(x for x in (self.server, self.database) if x)
        return (f"{self.step}{'(' + where + ')' if where else ''} hop {self.hop}"
                + (" once requested" if self.requested else "") + (f" +{self.after:.1f}s" if self.after else ""))


@dataclass(frozen=True)
class Case:
    kills: tuple[At, ...]
    timing: tuple[tuple[str, float], ...] = ()  # fleet timings beyond the fast defaults


LONG = tuple(CRASH_TIMING.items())
# One hop (2021.1 -> 2023.1) per case, except the hop boundary. Each case kills two or three times in one
# run: at the step's start (the status says Running, the request is not sent yet: a kill here loses it),
# once the request was accepted (the estate works on it, the status does not know the outcome), and,
# for the long steps, in their middle. VerifySchema and a quick HealthCheck go from Pending to Succeeded
# in one write: their kill lands right after it.
CASES = {
    "DisableReplication": Case((At("DisableReplication"), At("DisableReplication", requested=True))),
    "TakeOutOfRotation": Case((At("TakeOutOfRotation"), At("TakeOutOfRotation", requested=True))),
    "BackupDatabase": Case((At("BackupDatabase", database="mgmt-db"),
                            At("BackupDatabase", database="pers-db", after=0.1))),
    "InstallFirstServer": Case((At("InstallFirstServer", database="mgmt-db"),
                                At("InstallFirstServer", database="mgmt-db", requested=True),
                                At("InstallFirstServer", database="pers-db", after=0.7)), LONG),
    "UpgradeSchema": Case((At("UpgradeSchema", database="mgmt-db"),
                           At("UpgradeSchema", database="mgmt-db", requested=True),
                           At("UpgradeSchema", database="pers-db", after=1.0)), LONG),
    "VerifySchema": Case((At("VerifySchema", database="mgmt-db"), At("VerifySchema", database="pers-db"))),
    # A settle delay of 2 s keeps each status page unconfirmed for a while: the kill lands mid-check.
    "HealthCheck": Case((At("HealthCheck", server="ms-1"), At("HealthCheck", server="ps-2", after=0.5)),
                        (("settle", 2.0),)),
    "InstallServer": Case((At("InstallServer", server="ms-2"), At("InstallServer", server="ms-2", requested=True),
                           At("InstallServer", server="ps-3", after=0.7)), LONG),
    "BringIntoRotation": Case((At("BringIntoRotation"), At("BringIntoRotation", requested=True))),
    "RestoreReplication": Case((At("RestoreReplication"), At("RestoreReplication", requested=True))),
    # Subscribers catch up 4 s after replication is back on: the kill lands while they are behind.
    "VerifyReplication": Case((At("VerifyReplication", after=0.5),), (("caught_up", 4.0),)),
    "hop-boundary": Case((At("hop", hop=2), At("DisableReplication", hop=2))),
}


# ---------------------------------------------------------------- checks


def summary(plan: dict[str, Any]) -> str:
    status = plan.get("status") or {}
    running = [f"{s['name']}({s.get('server') or s.get('database') or ''})" for s in status.get("steps", [])
               if s.get("state") == "Running"]
    return f"phase {status.get('phase')}, hop {status.get('currentHop')}, running {running}"


def final_state(e2e: E2E, name: str) -> dict[str, Any]:
    """What an upgrade leaves behind, from the plan's status and from the servers themselves."""
    assert e2e.fleet is not None
    status = e2e.plan(name)["status"]
    agents = {s: agent_state(e2e, s) for s in SERVERS}
    return {
        "phase": status["phase"],
        "steps": sorted((s["hop"], s["name"], s.get("server") or "", s.get("database") or "", s["state"])
                        for s in status["steps"]),
        "status.servers": {s["name"]: (s["version"], s.get("online"), s.get("replication"), s["health"])
                           for s in status["servers"]},
        "status.databases": {d["name"]: (d["schemaVersion"], d["lastBackup"]["hop"], d["lastBackup"]["verified"])
                             for d in status["databases"]},
        "agents": {n: (a["version"], a["phase"], a["rotation"]["inRotation"], a["replication"]["enabled"])
                   for n, a in agents.items()},
        "schemas": {d: a["database"]["schemaVersion"] for a in agents.values() for d in [a["database"]["name"]]},
    }


def expected_state(path: list[tuple[str, str]]) -> dict[str, Any]:
    """The final state of an uninterrupted run (test_e2e_inplace checks a real one reaches it)."""
    target = path[-1][1]
    firsts = {"mgmt-db": "ms-1", "pers-db": "ps-1"}
    steps = [(0, n, "", "", "Succeeded") for n in ("Preflight", "Plan", "RecordBaseline")]
    for hop in range(1, len(path) + 1):
        steps += [(hop, n, "", "", "Succeeded") for n in ("DisableReplication", "TakeOutOfRotation",
                                                           "BringIntoRotation", "RestoreReplication",
                                                           "VerifyReplication")]
        for db, first in firsts.items():
            steps += [(hop, "BackupDatabase", "", db, "Succeeded"), (hop, "InstallFirstServer", first, db, "Succeeded"),
                      (hop, "VerifySchema", "", db, "Succeeded"), (hop, "HealthCheck", first, "", "Succeeded")]
            # The schema step ends when the schema is seen at the target: Succeeded once asked for.
            steps.append((hop, "UpgradeSchema", first, db, "Succeeded"))
        for server in ("ms-2", "ps-2", "ps-3"):
            steps += [(hop, "InstallServer", server, "", "Succeeded"), (hop, "HealthCheck", server, "", "Succeeded")]
    replication = {"ms-1": "None", "ms-2": "None", "ps-1": "Enabled", "ps-2": "Enabled", "ps-3": "Enabled"}
    return {
        "phase": "Succeeded",
        "steps": sorted(steps),
        "status.servers": {s: (target, True, replication[s], "Healthy")
                           for s in SERVERS},
        "status.databases": {d: (target, len(path), True) for d in DATABASES},
        # Servers that are not load-balanced report themselves in rotation (they always serve).
        "agents": {s: (target, "Running", True, s.startswith("ps")) for s in SERVERS},
        "schemas": dict.fromkeys(DATABASES, target),
    }


def assert_nothing_irreversible_repeated(e2e: E2E, name: str, killed_during_backup: set[tuple[str, int]]) -> None:
    status = e2e.plan(name)["status"]
    path = [(h["from"], h["to"]) for h in status["path"]]
    events = e2e.assert_guide_kept()
    # Schema: one accepted UPDATE SELECTED and one completed migration per hop and database.
    for op in ("schema-migrate", "schema-migrated"):
        seen = sorted((e.database, str(e.detail.get("to"))) for e in events if e.op == op and e.outcome == "ok")
        assert seen == sorted((d, to) for _, to in path for d in DATABASES), f"{op}: {seen}"
    # Installs: one accepted per server and hop (refused, lost or no-op requests change nothing).
    accepted = sorted((e.server, str(e.detail.get("to"))) for e in events
                      if e.op == "install" and e.outcome == "ok" and not e.detail.get("noop"))
    assert accepted == sorted((s, to) for _, to in path for s in SERVERS), f"accepted installs: {accepted}"
    # Backups: one row per hop in each database, the one recorded in the status (same taken_at).
    recorded = {d["name"]: d["lastBackup"] for d in status["databases"]}
    log = (e2e.work / "operator.log").read_text(errors="replace")
    for db in DATABASES:
        rows = backups_of(e2e, db)
        hops = sorted(int(r["id"].rsplit("-h", 1)[1]) for r in rows)
        assert hops == list(range(1, len(path) + 1)), f"{db}: backups {rows}"
        assert all(r["verified"] for r in rows), rows
        last = next(r for r in rows if r["id"] == recorded[db]["id"])
        assert abs(_epoch(last["taken_at"]) - _epoch(recorded[db]["takenAt"])) < 1.0, (last, recorded[db])
        for hop in range(1, len(path) + 1):
            asked = len([ln for ln in log.splitlines() if f"decided: BackupDatabase {db} id " in ln
                         and ln.rstrip().endswith(f"(hop {hop})")])
            allowed = 2 if (db, hop) in killed_during_backup else 1
            assert 1 <= asked <= allowed, f"BackupDatabase {db} hop {hop} asked {asked} times"


def _epoch(when: str | datetime) -> float:
    """Seconds since the epoch; a time without a zone is UTC (the backups table stores UTC)."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def run_with_kills(e2e: E2E, case: Case, spec: dict[str, Any]) -> str:
    e2e.start_fleet(**dict(case.timing))
    e2e.start_operator()
    name = e2e.apply_plan(**spec)
    t0 = time.monotonic()
    for at in case.kills:
        plan = watch_for(e2e, name, at.reached, timeout=120, what=f"{at} started")
        if at.after:
            time.sleep(at.after)
        e2e.kill_operator()
        plan = e2e.plan(name)
        status = plan.get("status") or {}
        print(f"{time.monotonic() - t0:5.1f} s: killed at {at}: {summary(plan)}")
        assert status.get("phase") == "Running", f"the kill at {at} did not interrupt a run: {summary(plan)}"
        e2e.start_operator()
    plan = e2e.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=180)
    print(f"{time.monotonic() - t0:5.1f} s: {plan['status']['phase']}")
    assert plan["status"]["phase"] == "Succeeded", plan["status"].get("message")
    return name


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", list(CASES))
def test_killed_at_every_step_of_a_hop(e2e: E2E, case: str) -> None:
    kills = CASES[case].kills
    spec = TWO_HOPS if any(k.hop > 1 for k in kills) else ONE_HOP
    name = run_with_kills(e2e, CASES[case], spec)
    path = [(h["from"], h["to"]) for h in e2e.plan(name)["status"]["path"]]
    final, expected = final_state(e2e, name), expected_state(path)
    assert final == expected, {k: (final[k], expected[k]) for k in final if final[k] != expected[k]}
    assert_nothing_irreversible_repeated(e2e, name, {(k.database or "", k.hop) for k in kills
                                                     if k.step == "BackupDatabase"})
    assert e2e.user_data() == e2e.data_before


# Kill again and again, a few seconds into each life of the operator (counted from when it answers its
# liveness probe, so that every life gets some work done), across both hops of the example.
INTERVALS = (3.0, 2.0, 3.5, 1.5, 2.5, 3.0, 4.0, 2.0)


def wait_alive(e2e: E2E, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    assert e2e.operator is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{e2e.operator.liveness_port}/healthz", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"the operator did not answer its liveness probe in {timeout:.0f} s")


def test_killed_again_and_again(e2e: E2E) -> None:
    e2e.start_fleet(**CRASH_TIMING)
    e2e.start_operator()
    name = e2e.apply_plan(**TWO_HOPS)
    interrupted: list[str] = []
    for seconds in INTERVALS:
        wait_alive(e2e)
        time.sleep(seconds)
        e2e.kill_operator()
        plan = e2e.plan(name)
        if (plan.get("status") or {}).get("phase") != "Running":
            break
        interrupted.append(summary(plan))
        e2e.start_operator()
    print("\n".join(f"kill {i + 1}: {s}" for i, s in enumerate(interrupted)))
    assert len(interrupted) >= 6, f"only {len(interrupted)} kills interrupted the run: make the intervals shorter"
    plan = e2e.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=240)
    assert plan["status"]["phase"] == "Succeeded", plan["status"].get("message")
    path = [(h["from"], h["to"]) for h in plan["status"]["path"]]
    final, expected = final_state(e2e, name), expected_state(path)
    assert final == expected, {k: (final[k], expected[k]) for k in final if final[k] != expected[k]}
    # Any kill may have landed while a backup was being taken: a second request is allowed for each.
    assert_nothing_irreversible_repeated(e2e, name, {(d, h) for d in DATABASES for h in (1, 2)})
    assert e2e.user_data() == e2e.data_before


# The simulator fleet process itself SIGKILLed and started again (same databases, same ports) while the
# servers install and migrate: its state lives in the estate-state database, so installs finish and a
# migration cut short resumes; the operator sees the servers vanish for a while and waits.
FLEET_KILLS = (At("InstallFirstServer", database="mgmt-db", after=0.5),
               At("UpgradeSchema", database="pers-db", after=0.8),
               At("InstallServer", server="ps-2", after=0.5))


def test_the_simulator_fleet_killed_and_restarted_mid_run(e2e: E2E) -> None:
    fleet = e2e.start_fleet(**CRASH_TIMING)
    e2e.start_operator()
    name = e2e.apply_plan(**ONE_HOP)
    urls = {s: fleet.url(s) for s in SERVERS}
    for at in FLEET_KILLS:
        watch_for(e2e, name, at.reached, timeout=120, what=f"{at} started")
        time.sleep(at.after)
        plan = e2e.plan(name)
        fleet.restart(down_seconds=2.0)
        print(f"fleet killed at {at}: {summary(plan)}")
        assert plan["status"]["phase"] == "Running", summary(plan)
    assert {s: fleet.url(s) for s in SERVERS} == urls
    plan = e2e.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=180)
    assert plan["status"]["phase"] == "Succeeded", plan["status"].get("message")
    path = [(h["from"], h["to"]) for h in plan["status"]["path"]]
    final, expected = final_state(e2e, name), expected_state(path)
    assert final == expected, {k: (final[k], expected[k]) for k in final if final[k] != expected[k]}
    assert_nothing_irreversible_repeated(e2e, name, set())
    events = e2e.journal()
    assert sum(e.op == "start" for e in events) >= 4 * len(SERVERS), "the fleet was not restarted 3 times"
    assert e2e.user_data() == e2e.data_before
