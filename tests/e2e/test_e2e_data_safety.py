"""End to end: the data-safety issue on the real processes. A failed migration is never planned or migrated
over (Halt) and a rollback says what it loses (Rollback); a failure after the new release served clients
halts instead of restoring; a hung first-server install under Rollback fails within its timeout; a portal
that does not answer (or a fleet restarted) during a migration is waited for, the migration asked once;
a retry after a halt asks before leaving servers out of rotation.

Each test checks the independent audit of the simulators' journal (`assert_guide_kept`), the servers'
own state through their agent API, and the plan's status and conditions.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from e2e.e2e_support import (
    E2E,
    SERVERS,
    TERMINAL,
    agent,
    agent_ok,
    assert_succeeded,
    backups_of,
    condition,
    inject,
    installs,
    operator_log,
    server_state,
    steps_of,
    watch_for,
)
from e2e.test_e2e_policies import assert_rolled_back

pytestmark = pytest.mark.e2e


def portal(e2e: E2E, server: str) -> dict[str, Any]:
    """The Server Configuration Portal's DatabaseUpdates view of `server` (no token needed)."""
    return dict(agent_ok(e2e, server, "GET", "/ServerConfigurationPortal/DatabaseUpdates"))


def migrations_asked(e2e: E2E, database: str) -> list[Any]:
    """UPDATE SELECTED requests the portals accepted for `database`."""
    return [e for e in e2e.journal() if e.op == "schema-migrate" and e.outcome == "ok" and e.database == database]


def step_running(name: str, database: str | None = None) -> Any:
    def check(plan: dict[str, Any]) -> bool:
        return any(s.get("state") == "Running" for s in steps_of(plan, name, database=database))
    return check


def migration_requested(database: str) -> Any:
    def check(plan: dict[str, Any]) -> bool:
        return any(s.get("state") == "Running" and s.get("requestedAt")
                   for s in steps_of(plan, "UpgradeSchema", database=database))
    return check


def assert_halted_not_rolled_back(plan: dict[str, Any], step: str, server: str | None, served: str) -> str:
    """Failed, reason RollbackUnsafe, at `step`; no rollback step; the message says why and what to do."""
    status = plan["status"]
    assert status["phase"] == "Failed", status.get("message")
    failed = condition(plan, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "RollbackUnsafe", failed
    message = str(failed["message"])
    for words in (f"Not rolled back: {served}", "would lose the user data written since",
                  "fix the cause, then delete this plan and create it again"):
        assert words in message, (words, message)
    assert [(s["name"], s.get("server")) for s in status["steps"] if s["state"] == "Failed"] == [(step, server)]
    assert not [s for s in status["steps"] if s["name"].startswith(("Rollback", "Reinstall")) or
                s["name"] == "RestoreBackup"], "a rollback was begun"
    return message


# ---------------------------------------------------------------- a failed migration


def test_a_failed_migration_is_left_as_evidence_and_never_planned_over(e2e: E2E) -> None:
    """Halt: the portal keeps saying Failed (no CLOSE), and a new plan for the same estate is refused at
    preflight, naming the database and the portal's error, before it backs the damaged database up."""
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-1", "migration-fail")
    first = e2e.apply_plan(name="first", targetVersion="2023.1", failurePolicy="Halt")
    plan = e2e.wait_phase(first, *TERMINAL, timeout=120)
    assert condition(plan, "Failed")["reason"] == "MigrationFailed", condition(plan, "Failed")
    assert portal(e2e, "ms-1")["status"] == "Failed" and portal(e2e, "ms-2")["status"] == "Failed"
    assert not [e for e in e2e.journal() if e.op == "portal-close"], "the Failed result was closed"
    backups = [b["id"] for b in backups_of(e2e, "mgmt-db")]

    second = e2e.apply_plan(name="second", targetVersion="2023.1", failurePolicy="Halt")
    retry = e2e.wait_phase(second, *TERMINAL, timeout=60)
    assert retry["status"]["phase"] == "Failed", retry["status"].get("message")
    refused = condition(retry, "Failed")
    assert refused["reason"] == "PreflightFailed", refused
    for words in ("schema upgrade of database mgmt-db through ms-1 Failed", "injected fault: the schema migration"
                  " failed midway", "restore mgmt-db from the verified backup", "click CLOSE in the portal"):
        assert words in refused["message"], (words, refused["message"])
    assert [b["id"] for b in backups_of(e2e, "mgmt-db")] == backups, "the damaged database was backed up"
    assert len(migrations_asked(e2e, "mgmt-db")) == 1
    e2e.assert_guide_kept()


def test_a_rollback_after_a_failed_migration_says_what_it_loses(e2e: E2E) -> None:
    """Rollback: the RollingBack message names the backup and its time (data written after it is lost);
    the restore's step says the window; the estate ends as before the plan."""
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-1", "migration-fail")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Rollback")
    rolling = watch_for(e2e, name, lambda p: (p.get("status") or {}).get("phase") == "RollingBack", timeout=120,
                        what="phase RollingBack")
    backup = next(d for d in rolling["status"]["databases"] if d["name"] == "mgmt-db")["lastBackup"]
    message = rolling["status"]["message"]
    assert f"Restoring mgmt-db from backup {backup['id']} taken at {backup['takenAt']}" in message, message
    assert "user data written to them from the backup until the restore is lost" in message, message
    assert "pers-db from backup" not in message  # its schema was never touched: not restored
    plan = e2e.wait_phase(name, *TERMINAL, timeout=150)
    assert_rolled_back(e2e, plan, "UpgradeSchema", "ms-1")
    [restored] = steps_of(plan, "RestoreBackup", database="mgmt-db")
    assert f"user data written to it from {backup['takenAt']} to " in restored["message"], restored
    assert len(migrations_asked(e2e, "mgmt-db")) == 1


# ---------------------------------------------------------------- no restore once the new release served


def test_a_slow_catch_up_after_everything_served_the_new_release_halts_without_a_restore(e2e: E2E) -> None:
    """The subscribers do not catch up within --replication-timeout, after every server served 2023.1:
    restoring the databases would lose what clients wrote since, so the plan halts and restores nothing."""
    e2e.start_operator("--replication-timeout", "4")
    e2e.start_fleet(caught_up=600)
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Rollback")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=150)
    message = assert_halted_not_rolled_back(plan, "VerifyReplication", None, "mgmt-db (ms-1 has served clients on"
                                            " 2023.1 since")
    assert "pers-db (ps-1 has served clients on 2023.1 since" in message, message
    served = {d["name"]: d["newReleaseServed"] for d in plan["status"]["databases"]}
    assert {n: (s["hop"], s["version"]) for n, s in served.items()} == {"mgmt-db": (1, "2023.1"),
                                                                       "pers-db": (1, "2023.1")}
    assert all(server_state(e2e, s)["version"] == "2023.1" for s in SERVERS)
    assert not [e for e in installs(e2e.journal()) if e.detail.get("to") == "2021.1"], "servers reinstalled"
    e2e.assert_guide_kept()


def test_a_later_install_failure_after_the_master_served_halts_without_a_restore(e2e: E2E) -> None:
    """ps-1 (no pool: it serves once its status page confirms) served 2023.1 before ps-3 failed to install:
    under Rollback the plan halts there; pers-db is not restored."""
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ps-3", "install-fail")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Rollback")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=150)
    assert_halted_not_rolled_back(plan, "InstallServer", "ps-3", "pers-db (ps-1 has served clients on 2023.1")
    assert server_state(e2e, "ps-1")["version"] == "2023.1" and server_state(e2e, "ps-3")["version"] == "2021.1"
    e2e.assert_guide_kept()


# ---------------------------------------------------------------- a rollback that ends


def test_a_hung_first_server_install_under_rollback_fails_within_its_timeout(e2e: E2E) -> None:
    """ms-1's install hangs: the forward step times out, the hop rolls back, and the reinstall of ms-1,
    still busy, times out in its turn (it used to wait, RollingBack, for ever)."""
    e2e.start_operator("--install-timeout", "5")
    e2e.start_fleet()
    inject(e2e, "ms-1", "install-hang")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Rollback")
    watch_for(e2e, name, lambda p: (p.get("status") or {}).get("phase") == "RollingBack", timeout=90,
              what="phase RollingBack")
    began = time.monotonic()
    plan = e2e.wait_phase(name, *TERMINAL, timeout=60)
    took = time.monotonic() - began
    status = plan["status"]
    assert status["phase"] == "Failed", status.get("message")
    failed = condition(plan, "Failed")
    assert failed["reason"] == "RollbackFailed", failed
    assert "ReinstallPrevious ms-1 did not finish within 5s" in failed["message"], failed["message"]
    assert took < 5 + 15, f"the rollback took {took:.1f} s to fail"
    assert [(s["name"], s.get("server")) for s in status["steps"] if s["state"] == "Failed"] == [
        ("InstallFirstServer", "ms-1"), ("ReinstallPrevious", "ms-1")]
    assert server_state(e2e, "ms-1")["phase"] == "Installing"
    agent(e2e, "ms-1", "DELETE", "/agent/v1/faults")  # ends the hung install
    e2e.assert_guide_kept()


# ---------------------------------------------------------------- a portal that does not answer


@pytest.mark.parametrize("outage", ["both-portals-unreachable", "fleet-restarted"])
def test_a_portal_that_does_not_answer_during_a_migration_is_waited_for(e2e: E2E, outage: str) -> None:
    """While mgmt-db migrates, no portal of it answers (both its servers stop listening for a while), or
    the whole fleet is killed and restarted: a gap, never Idle; the migration is asked once and the plan
    Succeeds."""
    e2e.start_operator()
    e2e.start_fleet(migration_step=1.5)
    name = e2e.apply_plan(targetVersion="2023.1")
    # The outage starts once the migration was asked for and accepted (not while the request is on its way).
    watch_for(e2e, name, migration_requested("mgmt-db"), timeout=90, what="UpgradeSchema mgmt-db requested")
    if outage == "fleet-restarted":
        assert e2e.fleet is not None
        e2e.fleet.restart(down_seconds=2.0)
    else:
        for server in ("ms-1", "ms-2"):
            inject(e2e, server, "crash", delay_ms=4000)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=150)
    assert_succeeded(e2e, plan, "2023.1", SERVERS)
    assert len(migrations_asked(e2e, "mgmt-db")) == 1, [e.detail for e in migrations_asked(e2e, "mgmt-db")]
    [step] = steps_of(plan, "UpgradeSchema", database="mgmt-db")
    assert step["requestedAt"], step
    if outage == "both-portals-unreachable":
        assert "cannot observe" in operator_log(e2e) and "no Server Configuration Portal of mgmt-db answered" \
            in operator_log(e2e)


# ---------------------------------------------------------------- a retry after a halt


def test_a_retry_after_a_halt_asks_before_leaving_a_server_out_of_rotation(e2e: E2E) -> None:
    """The first plan halts (ms-1's status page never confirms); deleting it puts back what is safe
    (replication; ms-1, which can serve); the retry finds ms-2 out of rotation (it cannot serve: its
    release is behind the schema) and waits for an approval or spec.baseline before leaving it so."""
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-1", "health-flap", count=500)
    first = e2e.apply_plan(name="first", targetVersion="2023.1",
                           healthCheck={"timeoutSeconds": 5, "periodSeconds": 1, "successThreshold": 2})
    plan = e2e.wait_phase(first, *TERMINAL, timeout=120)
    assert condition(plan, "Failed")["reason"] == "HealthCheckFailed", condition(plan, "Failed")
    agent_ok(e2e, "ms-1", "DELETE", "/agent/v1/faults")
    e2e.kubectl("delete", "upgradeplan", first, "-n", e2e.namespace, "--timeout=60s")
    posted = json.loads(e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "json"))["items"]
    [teardown] = [e for e in posted if e["reason"] == "Teardown"]
    note = str(teardown.get("note") or teardown.get("message"))
    assert "ms-1 back in rotation" in note and "replication on ps-1" in note, note
    assert "ms-2: cannot go back into rotation while VersionMismatch" in note, note
    assert server_state(e2e, "ps-2")["replication"]["enabled"] is True

    second = e2e.apply_plan(name="second", targetVersion="2023.1")
    waiting = e2e.wait_phase(second, "AwaitingApproval", timeout=60)
    awaiting = condition(waiting, "AwaitingApproval")
    assert awaiting["reason"] == "BaselineNeedsApproval", awaiting
    assert "ms-2 out of rotation before the plan" in awaiting["message"], awaiting
    assert "found before the plan, and left so: ms-2 out of rotation" in steps_of(waiting, "Plan")[0]["message"]
    e2e.kubectl("patch", "upgradeplan", second, "-n", e2e.namespace, "--type=merge",
                "-p", json.dumps({"spec": {"baseline": {"acceptOutOfRotation": True}}}))
    done = e2e.wait_phase(second, *TERMINAL, timeout=150)
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    states = {s: server_state(e2e, s) for s in SERVERS}
    assert all(state["version"] == "2023.1" for state in states.values())
    assert states["ms-1"]["rotation"]["inRotation"] and not states["ms-2"]["rotation"]["inRotation"]  # as accepted
    assert all(states[s]["replication"]["enabled"] for s in ("ps-1", "ps-2", "ps-3"))
    e2e.assert_guide_kept()
    assert e2e.user_data() == e2e.data_before
