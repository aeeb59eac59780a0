"""End to end: hop policies, topologies, concurrency, failure policies (Halt, Rollback) and transient faults.

Each test runs the real operator process against the real API server, PostgreSQL and a simulator fleet
process, injects faults through the agent API, and checks the final status, the servers' own state
(through their agent API), the user data and the simulators' journal for the guide's rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import pytest

from e2e.e2e_support import (
    E2E,
    FLEETS,
    PERS_FLEET,
    PERS_PLAN,
    PERS_SERVERS,
    SERVERS,
    TERMINAL,
    assert_succeeded,
    condition,
    inject,
    installs,
    max_overlap,
    operator_log,
    server_state,
    steps_of,
)

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------- shared checks


def estate_line(state: dict[str, Any]) -> str:
    """How the operator's failure message describes one server (core.context.describe_estate)."""
    bits = [state["version"], state["phase"]]
    if state["rotation"]["loadBalanced"]:
        bits.append("in rotation" if state["rotation"]["inRotation"] else "out of rotation")
    role = state["replication"]["role"]
    if role != "None":
        bits.append(f"{role.lower()} replication {'on' if state['replication']['enabled'] else 'off'}")
    return f"{state['name']} {' '.join(bits)}"


def assert_estate_as_said(e2e: E2E, message: str, servers: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The failure message's description of the estate is what the servers themselves report now."""
    states = {name: server_state(e2e, name) for name in servers}
    for state in states.values():
        assert estate_line(state) in message, (estate_line(state), message)
        schema = f"{state['database']['name']} schema {state['database']['schemaVersion']}"
        assert schema in message, (schema, message)
    return states


def assert_failed_at(plan: dict[str, Any], reason: str, step: str, server: str | None, *why: str) -> str:
    status = plan["status"]
    assert status["phase"] == "Failed", status.get("message")
    failed = condition(plan, "Failed")
    assert failed["status"] == "True" and failed["reason"] == reason, failed
    message = failed["message"]
    for word in (step, *((server,) if server else ()), *why):
        assert word in message, (word, message)
    assert condition(plan, "Succeeded")["status"] == "False"
    failed_steps = [s for s in status["steps"] if s["state"] == "Failed"]
    assert [(s["name"], s.get("server")) for s in failed_steps] == [(step, server)], failed_steps
    assert status["completedAt"]
    # `kubectl get` shows the failed step; replication stays off, and a condition says so
    assert status["currentStep"].startswith(step) and (server or "") in status["currentStep"], status["currentStep"]
    assert condition(plan, "ReplicationDisabled")["status"] == "True"
    return str(message)


# ---------------------------------------------------------------- hop policies and topologies


def test_one_hop(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet()
    name = e2e.apply_plan(targetVersion="2023.1")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    assert [(h["from"], h["to"]) for h in plan["status"]["path"]] == [("2021.1", "2023.1")]
    assert plan["status"]["hopDisplay"] == "1/1"
    assert_succeeded(e2e, plan, "2023.1", SERVERS)
    events = e2e.journal()
    assert {e.detail.get("jump") for e in installs(events)} == {2}
    migrated = [(e.database, e.detail.get("to")) for e in events if e.op == "schema-migrated"]
    assert sorted(migrated) == [("mgmt-db", "2023.1"), ("pers-db", "2023.1")]


def test_one_major_release_per_hop_on_personalization_servers_only(e2e: E2E) -> None:
    """maxMajorVersionsPerStep 1, 2021.1 -> 2023.1 in two hops, on a Master and two Subscribers without a
    load balancer: replication off and back on in each hop, no rotation call at all."""
    servers = PERS_SERVERS
    e2e.start_operator()
    e2e.start_fleet(PERS_FLEET)
    name = e2e.apply_plan(PERS_PLAN, targetVersion="2023.1", maxMajorVersionsPerStep=1)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    status = plan["status"]
    assert [(h["from"], h["to"]) for h in status["path"]] == [("2021.1", "2022.1"), ("2022.1", "2023.1")]
    assert status["hopDisplay"] == "2/2"
    assert_succeeded(e2e, plan, "2023.1", servers)
    for skipped in ("TakeOutOfRotation", "BringIntoRotation"):
        assert [s["state"] for s in steps_of(plan, skipped, 2)] == ["Skipped"]
    for done in ("DisableReplication", "RestoreReplication", "VerifyReplication"):
        assert [s["state"] for s in steps_of(plan, done, 2)] == ["Succeeded"]
    # hop 1's steps were summarised when hop 2 started: only the rotation steps were skipped
    assert not [s for s in status["steps"] if s["hop"] == 1]
    assert status["path"][0]["summary"]["skipped"] == 2 and status["path"][0]["summary"]["succeeded"] > 5
    assert {s["name"]: s["replication"] for s in status["servers"]} == dict.fromkeys(servers, "Enabled")
    events = e2e.journal()
    assert {e.detail.get("jump") for e in installs(events)} == {1}
    assert not [e for e in events if e.op == "rotation"]
    assert [e.detail.get("to") for e in events if e.op == "schema-migrated"] == ["2022.1", "2023.1"]
    # replication: switched off before the first install of each hop, on again after the last one
    for hop_to in ("2022.1", "2023.1"):
        hop_installs = [e.seq for e in installs(events) if e.detail.get("to") == hop_to]
        offs = [e.seq for e in events if e.op == "replication" and e.detail.get("enabled") is False
                and e.detail.get("changed")]
        ons = [e.seq for e in events if e.op == "replication" and e.detail.get("enabled") is True
               and e.detail.get("changed")]
        assert any(s < min(hop_installs) for s in offs) and any(s > max(hop_installs) for s in ons)
    for server in servers:
        assert server_state(e2e, server)["replication"]["enabled"] is True


def test_three_servers_at_once(e2e: E2E) -> None:
    """maxConcurrentServers 3 on eight servers: never more than 3 installs at once, several at some point,
    so the six servers after the first of each database take less time than they would one by one."""
    servers = [f"ms-{i}" for i in range(1, 5)] + [f"ps-{i}" for i in range(1, 5)]
    e2e.start_operator()
    e2e.start_fleet(FLEETS / "wide.yaml", install=2.0)
    name = e2e.apply_plan(FLEETS / "wide.plan.yaml", targetVersion="2023.1", maxConcurrentServers=3)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=150)
    assert_succeeded(e2e, plan, "2023.1", servers)
    events = e2e.journal()
    rest = set(servers) - {"ms-1", "ps-1"}
    assert max_overlap(events) <= 3, max_overlap(events)
    assert max_overlap(events, rest) >= 2, "no two installs ever overlapped"
    # one by one, the six installs would take at least the sum of their durations
    started = {e.server: e.ts for e in installs(events) if e.server in rest}
    done = {e.server: e.ts for e in events if e.op == "install-complete" and e.server in rest}
    serial = sum(done[s] - started[s] for s in rest)
    span = max(done.values()) - min(started.values())
    assert span < serial, (span, serial)
    # the first server of each database was upgraded alone, before any other server of its database
    for db, first in (("mgmt-db", "ms-1"), ("pers-db", "ps-1")):
        migrated = next(e.seq for e in events if e.op == "schema-migrated" and e.database == db)
        others = [e.seq for e in installs(events) if e.database == db and e.server != first]
        assert min(others) > migrated


# ---------------------------------------------------------------- Halt


def test_halt_when_a_later_server_fails_to_install(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-2", "install-fail")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Halt")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    message = assert_failed_at(plan, "InstallFailed", "InstallServer", "ms-2", "injected fault: the installer failed")
    states = assert_estate_as_said(e2e, message, SERVERS)
    assert states["ms-2"]["phase"] == "Failed" and states["ms-2"]["version"] == "2021.1"
    # what was done before stays done; nothing after the failure was started
    assert states["ms-1"]["version"] == states["ps-1"]["version"] == "2023.1"
    assert states["ps-2"]["version"] == states["ps-3"]["version"] == "2021.1"
    assert not any(s["rotation"]["inRotation"] for s in states.values() if s["rotation"]["loadBalanced"])
    assert not any(s["replication"]["enabled"] for s in states.values())
    events = e2e.assert_guide_kept()
    assert not installs(events, "ps-2") and not installs(events, "ps-3")
    assert e2e.user_data() == e2e.data_before
    # the failure is an Event too: a Warning for the step, and one for the phase
    posted = json.loads(e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "json"))["items"]
    warnings = {(e["reason"], e.get("note") or e.get("message")) for e in posted if e["type"] == "Warning"}
    assert any(r == "StepFailed" and n.startswith("hop 1: InstallServer ms-2: InstallFailed") for r, n in warnings), \
        warnings
    assert any(r == "Failed" and "InstallServer" in n and "ms-2" in n for r, n in warnings), warnings


def test_halt_when_the_schema_migration_fails(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-1", "migration-fail")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Halt")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    message = assert_failed_at(plan, "MigrationFailed", "UpgradeSchema", "ms-1", "mgmt-db")
    states = assert_estate_as_said(e2e, message, SERVERS)
    # the half-migrated schema is left as it is, with the verified backup recorded for a human to restore
    schema = states["ms-1"]["database"]["schemaVersion"]
    assert schema not in ("2021.1", "2023.1") and f"mgmt-db schema {schema}" in message
    backup = next(d for d in plan["status"]["databases"] if d["name"] == "mgmt-db")["lastBackup"]
    assert backup["verified"] and backup["hop"] == 1
    assert f"the verified backup {backup['id']} taken before this hop holds mgmt-db as it was" in message
    assert e2e.user_data()["mgmt-db"] != e2e.data_before["mgmt-db"]  # half rewritten: why the backup matters
    assert all(states[s]["version"] == "2021.1" for s in ("ms-2", "ps-1", "ps-2", "ps-3"))
    events = e2e.assert_guide_kept()
    assert installs(events, "ms-1") and not installs(events, "ms-2") and not installs(events, "ps-1")
    assert e2e.user_data()["pers-db"] == e2e.data_before["pers-db"]


def test_halt_when_the_status_page_flaps_past_the_timeout(e2e: E2E) -> None:
    """The first server's status page alternates 503/200 for longer than healthCheck.timeoutSeconds, and two
    confirmations in a row are needed: the plan halts there, before any other server is touched."""
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-1", "health-flap", count=200)
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Halt",
                          healthCheck={"timeoutSeconds": 6, "periodSeconds": 1, "successThreshold": 2})
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    message = assert_failed_at(plan, "HealthCheckFailed", "HealthCheck", "ms-1", "did not confirm 2 time(s) in a row",
                               "within 6s", "injected health flap")
    states = assert_estate_as_said(e2e, message, SERVERS)
    assert states["ms-1"]["version"] == "2023.1" and not states["ms-1"]["rotation"]["inRotation"]
    assert all(states[s]["version"] == "2021.1" for s in ("ms-2", "ps-1", "ps-2", "ps-3"))
    events = e2e.assert_guide_kept()
    assert [e.server for e in installs(events)] == ["ms-1"]
    assert e2e.user_data() == e2e.data_before


def test_halt_when_an_install_hangs(e2e: E2E) -> None:
    e2e.start_operator("--install-timeout", "6")
    e2e.start_fleet()
    inject(e2e, "ms-2", "install-hang")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Halt")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    message = assert_failed_at(plan, "Timeout", "InstallServer", "ms-2", "did not finish within 6s")
    states = assert_estate_as_said(e2e, message, SERVERS)
    assert states["ms-2"]["phase"] == "Installing" and states["ms-2"]["install"]["targetVersion"] == "2023.1"
    assert states["ps-2"]["version"] == states["ps-3"]["version"] == "2021.1"
    e2e.assert_guide_kept()
    assert e2e.user_data() == e2e.data_before


# ---------------------------------------------------------------- Rollback


def assert_rolled_back(e2e: E2E, plan: dict[str, Any], reason_step: str, server: str) -> None:
    """RolledBack: user data as before, every server back on 2021.1, in rotation, replication on."""
    status = plan["status"]
    assert status["phase"] == "RolledBack", status.get("message")
    assert condition(plan, "Failed")["status"] == "True" and condition(plan, "Failed")["reason"] == "RolledBack"
    assert reason_step in status["message"] and server in status["message"], status["message"]
    assert e2e.user_data() == e2e.data_before
    for name in SERVERS:
        state = server_state(e2e, name)
        assert state["version"] == "2021.1" and state["phase"] == "Running", state
        assert state["database"]["schemaVersion"] == "2021.1"
        if state["rotation"]["loadBalanced"]:
            assert state["rotation"]["inRotation"], state
        if state["replication"]["role"] != "None":
            assert state["replication"]["enabled"], state
    assert {s["name"]: s["version"] for s in status["servers"]} == dict.fromkeys(SERVERS, "2021.1")
    assert status["currentVersion"] == "2021.1"
    assert condition(plan, "ReplicationDisabled")["status"] == "False"
    assert all(d["schemaVersion"] == "2021.1" for d in status["databases"])
    rollback = [s for s in status["steps"] if s["name"].startswith(("Rollback", "Restore", "Reinstall"))
                and s["name"] not in ("RestoreReplication",)]
    assert rollback and all(s["state"] in ("Succeeded", "Skipped") for s in rollback), rollback
    e2e.assert_guide_kept()


def test_rollback_after_a_failed_schema_migration(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet()
    inject(e2e, "ms-1", "migration-fail")
    name = e2e.apply_plan(targetVersion="2023.1", failurePolicy="Rollback")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=150)
    assert_rolled_back(e2e, plan, "UpgradeSchema", "ms-1")
    assert [s["state"] for s in steps_of(plan, "RestoreBackup", database="mgmt-db")] == ["Succeeded"]
    assert [s["state"] for s in steps_of(plan, "RestoreBackup", database="pers-db")] == ["Skipped"]
    events = e2e.journal()
    assert [e.detail.get("to") for e in installs(events, "ms-1")] == ["2023.1", "2021.1"]
    assert not installs(events, "ms-2")


# ---------------------------------------------------------------- transient faults


def test_transient_faults_are_ridden_out(e2e: E2E) -> None:
    """A slow agent, and the server migrating a schema crashing for 1.5 s: the plan waits, retries and Succeeds."""
    e2e.start_operator()
    e2e.start_fleet(migration_step=1.0)
    inject(e2e, "ps-2", "slow", count=6, delay_ms=700)
    name = e2e.apply_plan(targetVersion="2023.1")
    e2e.wait_for(name, lambda p: any(s["state"] in ("Running", "Succeeded")
                                     for s in steps_of(p, "UpgradeSchema", database="mgmt-db")),
                 timeout=90, what="the schema upgrade of mgmt-db")
    # The crash lands once ms-1 migrates (a crash before the portal took the request would lose it, and a
    # request whose fate is unknown is never sent again: the plan would halt, as it must).
    deadline = time.monotonic() + 60
    while not any(e.op == "schema-migrate" and e.outcome == "ok" and e.server == "ms-1" for e in e2e.journal()):
        assert time.monotonic() < deadline, "ms-1 never started the schema migration of mgmt-db"
        time.sleep(0.1)
    inject(e2e, "ms-1", "crash", delay_ms=1500)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    assert_succeeded(e2e, plan, "2023.1", SERVERS)
    events = e2e.journal()
    assert [e.op for e in events if e.server == "ms-1" and e.op in ("crash", "restart")] == ["crash", "restart"]
    assert "cannot observe ms-1" in operator_log(e2e)
