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
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.e2e_support import (
    DATABASES,
    E2E,
    SERVERS,
    TERMINAL,
    accepted,
    assert_succeeded,
    backups_of,
    poll_for,
    server_state,
    watch_for,
)

pytestmark = pytest.mark.e2e

# Long enough that a kill "in the middle" lands in the middle: an install takes 1.5 s, a schema hop of
# two catalog releases 2 x 1 s.
CRASH_TIMING = {"install": 1.5, "migration_step": 1.0}
ONE_HOP = {"targetVersion": "2023.1"}
TWO_HOPS = {"targetVersion": "2025.1"}


# ---------------------------------------------------------------- where to kill


@dataclass(frozen=True)
class At:
    """A kill point: when step `step` (of hop `hop`, for `server`/`database` if given) leaves Pending, or
    with `requested` once its effect was accepted (the operator notes "...: requested", or the journal
    shows it), wait `after` seconds (0: right there), then SIGKILL the operator. `step="hop"`: when hop
    `hop` is recorded."""

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

    def started(self, plan: dict[str, Any]) -> bool:
        """The step left Pending (written before its effect), or the hop is recorded."""
        status = plan.get("status") or {}
        if self.step == "hop":
            return int(status.get("currentHop") or 0) >= self.hop
        return any(self.matches(s) and s.get("state") != "Pending" for s in status.get("steps", []))

    def reached(self, plan: dict[str, Any], e2e: E2E) -> bool:
        status = plan.get("status") or {}
        if self.step == "hop":  # the hop boundary: the next hop recorded, none of its steps started yet
            return int(status.get("currentHop") or 0) >= self.hop
        for s in status.get("steps", []):
            if self.matches(s) and s.get("state") != "Pending":
                return not self.requested or s.get("state") != "Running" or \
                    str(s.get("message") or "").endswith(": requested") or accepted(e2e, s)
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
    agents = {s: server_state(e2e, s) for s in SERVERS}
    return {
        "phase": status["phase"],
        "steps": sorted((s["hop"], s["name"], s.get("server") or "", s.get("database") or "", s["state"])
                        for s in status["steps"]),
        "summaries": {i: (h["summary"]["succeeded"], h["summary"]["skipped"], h["summary"]["firstServers"])
                      for i, h in enumerate(status["path"], start=1) if h.get("summary")},
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
    summaries = {}
    for hop in range(1, len(path) + 1):
        if hop > 1:  # the hop before was summarised when this one started
            summaries[hop - 1] = (len([s for s in steps if s[0] == hop - 1]), 0, firsts)
            steps = [s for s in steps if s[0] != hop - 1]
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
        "summaries": summaries,
        "status.servers": {s: (target, True, replication[s], "Healthy")
                           for s in SERVERS},
        "status.databases": {d: (target, len(path), True) for d in DATABASES},
        # Servers that are not load-balanced report themselves in rotation (they always serve).
        "agents": {s: (target, "Running", True, s.startswith("ps")) for s in SERVERS},
        "schemas": dict.fromkeys(DATABASES, target),
    }


def assert_nothing_irreversible_repeated(e2e: E2E, name: str, killed_during_backup: Counter[tuple[str, int]]) -> None:
    """`killed_during_backup`: how many operators died while each (database, hop)'s backup was still to be
    recorded; each of them may have decided it (the next one decides it again), every other life once."""
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
            allowed = 1 + killed_during_backup[(db, hop)]
            assert 1 <= asked <= allowed, f"BackupDatabase {db} hop {hop} asked {asked} times"


def _epoch(when: str | datetime) -> float:
    """Seconds since the epoch; a time without a zone is UTC (the backups table stores UTC)."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def backups_running(plan: dict[str, Any]) -> set[tuple[str, int]]:
    """The (database, hop) whose backup may have been decided when the kill landed: the status says it is
    being taken, or it is still to be taken in the current hop (the databases' lanes run beside the other
    steps, and a backup decided an instant before the kill, its decision logged but never written, is
    decided again by the next operator: the backups themselves are checked apart, one per hop). The next
    hop's too: one look may finish a hop, start the next and decide its backups before its write lands."""
    status = plan.get("status") or {}
    hop = int(status.get("currentHop") or 0)
    return {(str(s.get("database")), int(s["hop"])) for s in status.get("steps", [])
            if s["name"] == "BackupDatabase"
            and (s.get("state") == "Running" or (s.get("state") == "Pending" and int(s["hop"]) in (hop, hop + 1)))}


def run_with_kills(e2e: E2E, case: Case, spec: dict[str, Any],
                   mid_backup: Counter[tuple[str, int]] | None = None) -> str:
    """The plan run to its end, the operator killed at each of `case.kills`; `mid_backup` counts the kills
    that landed while each backup was still to be recorded."""
    e2e.start_fleet(**dict(case.timing))
    e2e.start_operator()
    name = e2e.apply_plan(**spec)
    t0 = time.monotonic()
    for at in case.kills:
        plan = watch_for(e2e, name, lambda p, at=at: at.started(p), timeout=120, what=f"{at} started")
        if at.requested:  # the estate accepted its request: seen in the journal, polled (`poll_for`)
            plan = poll_for(e2e, name, lambda p, at=at: at.reached(p, e2e), timeout=60, what=f"{at} accepted")
        if at.after:
            time.sleep(at.after)
        e2e.kill_operator()
        plan = e2e.plan(name)
        status = plan.get("status") or {}
        if mid_backup is not None:
            mid_backup.update(backups_running(plan))
        print(f"{time.monotonic() - t0:5.1f} s: killed at {at}: {summary(plan)}")
        assert status.get("phase") == "Running", f"the kill at {at} did not interrupt a run: {summary(plan)}"
        e2e.start_operator()
    plan = e2e.wait_phase(name, *TERMINAL, timeout=180)
    print(f"{time.monotonic() - t0:5.1f} s: {plan['status']['phase']}")
    assert_succeeded(e2e, plan, spec["targetVersion"], SERVERS)
    return name


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", list(CASES))
def test_killed_at_every_step_of_a_hop(e2e: E2E, case: str) -> None:
    kills = CASES[case].kills
    spec = TWO_HOPS if any(k.hop > 1 for k in kills) else ONE_HOP
    mid_backup: Counter[tuple[str, int]] = Counter()
    name = run_with_kills(e2e, CASES[case], spec, mid_backup)
    path = [(h["from"], h["to"]) for h in e2e.plan(name)["status"]["path"]]
    final, expected = final_state(e2e, name), expected_state(path)
    assert final == expected, {k: (final[k], expected[k]) for k in final if final[k] != expected[k]}
    # (Seen: the kills at mgmt-db's and at pers-db's backup both landed before mgmt-db's was recorded, the
    # two backups being decided in one turn: three lives decided mgmt-db's, one backup was taken.)
    aimed = Counter((k.database or "", k.hop) for k in kills if k.step == "BackupDatabase")
    assert_nothing_irreversible_repeated(e2e, name, mid_backup | aimed)


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
    mid_backup: Counter[tuple[str, int]] = Counter()
    for seconds in INTERVALS:
        wait_alive(e2e)
        time.sleep(seconds)
        e2e.kill_operator()
        plan = e2e.plan(name)
        if (plan.get("status") or {}).get("phase") != "Running":
            break
        mid_backup.update(backups_running(plan))
        interrupted.append(summary(plan))
        e2e.start_operator()
    print("\n".join(f"kill {i + 1}: {s}" for i, s in enumerate(interrupted)))
    assert len(interrupted) >= 6, f"only {len(interrupted)} kills interrupted the run: make the intervals shorter"
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    assert_succeeded(e2e, plan, TWO_HOPS["targetVersion"], SERVERS)
    path = [(h["from"], h["to"]) for h in plan["status"]["path"]]
    final, expected = final_state(e2e, name), expected_state(path)
    assert final == expected, {k: (final[k], expected[k]) for k in final if final[k] != expected[k]}
    # A kill may have landed while a backup was still to be recorded: one more decision is allowed for each.
    assert_nothing_irreversible_repeated(e2e, name, mid_backup)


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
        watch_for(e2e, name, lambda p, at=at: at.reached(p, e2e), timeout=120, what=f"{at} started")
        time.sleep(at.after)
        plan = e2e.plan(name)
        fleet.restart(down_seconds=2.0)
        print(f"fleet killed at {at}: {summary(plan)}")
        assert plan["status"]["phase"] == "Running", summary(plan)
    assert {s: fleet.url(s) for s in SERVERS} == urls
    plan = e2e.wait_phase(name, *TERMINAL, timeout=180)
    assert_succeeded(e2e, plan, ONE_HOP["targetVersion"], SERVERS)
    path = [(h["from"], h["to"]) for h in plan["status"]["path"]]
    final, expected = final_state(e2e, name), expected_state(path)
    assert final == expected, {k: (final[k], expected[k]) for k in final if final[k] != expected[k]}
    assert_nothing_irreversible_repeated(e2e, name, Counter())
    events = e2e.journal()
    assert sum(e.op == "start" for e in events) >= 4 * len(SERVERS), "the fleet was not restarted 3 times"
