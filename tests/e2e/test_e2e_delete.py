"""End to end: deleting a plan. Mid-run, its finalizer lets the server work in flight finish, then puts
rotation and replication back as far as the guide allows, says so in an Event, and only then lets the
plan go; the servers themselves (their agent API) are checked, not the operator's word. A finished plan
goes at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from e2e.e2e_support import E2E, SERVERS, agent_ok, requested, server_state, watch_for

pytestmark = pytest.mark.e2e


def gone(e2e: E2E, name: str, timeout: float) -> float:
    """Wait until the plan no longer exists; returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        out = e2e.kubectl("get", "upgradeplan", name, "-n", e2e.namespace, "--ignore-not-found", "-o", "name")
        if not out.strip():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"the plan {name} still exists {timeout:.0f} s after its deletion\n{e2e.diagnosis()}")


def events(e2e: E2E, reason: str) -> list[dict[str, Any]]:
    items = json.loads(e2e.kubectl("get", "events.v1.events.k8s.io", "-n", e2e.namespace, "-o", "json"))["items"]
    return [i for i in items if i.get("reason") == reason]


def teardown_waiting(e2e: E2E) -> bool:
    return "Handler 'deleted' failed temporarily: waiting for" in (e2e.work / "operator.log").read_text(
        errors="replace")


@pytest.mark.parametrize(("installing", "crash"), [("ms-2", False), ("ps-3", False), ("ms-2", True)],
                         ids=["ms-2", "ps-3", "ms-2-operator-killed-while-the-teardown-waits"])
def test_deleting_a_plan_mid_run_restores_rotation_and_replication(e2e: E2E, installing: str, crash: bool) -> None:
    """Deleted while `installing` installs (replication off, the pool out of rotation). With ms-2, the
    Personalization servers still run different releases (ps-1 upgraded, ps-2 and ps-3 not), so the guide
    forbids replication back on (the agents refuse: version-mismatch) and the Event says it was NOT
    restored; with ps-3, the last one, everything comes back. With `crash`, the operator is SIGKILLed
    while the finalizer waits for the install, and the next operator process finishes the teardown."""
    e2e.start_fleet(install=3.0 if crash else 1.5)
    e2e.start_operator()
    name = e2e.apply_plan(targetVersion="2023.1")
    # polled, not watched: the journal says "accepted" before the status's next write
    e2e.wait_for(name, requested("InstallServer", installing, e2e), timeout=120,
                 what=f"InstallServer {installing} requested")
    assert server_state(e2e, installing)["phase"] == "Installing"
    deleted_at = time.time()
    e2e.kubectl("delete", "upgradeplan", name, "-n", e2e.namespace, "--wait=false")
    if crash:
        deadline = time.monotonic() + 10
        while not teardown_waiting(e2e) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert teardown_waiting(e2e), "the finalizer did not wait for the install in flight"
        e2e.kill_operator()
        assert server_state(e2e, installing)["phase"] == "Installing", "killed too late: the install is over"
        assert e2e.kubectl("get", "upgradeplan", name, "-n", e2e.namespace, "-o", "name").strip()
        e2e.start_operator()
    took = gone(e2e, name, timeout=60)
    agents = {s: server_state(e2e, s) for s in SERVERS}
    print(f"gone {took:.1f} s after the delete; agents:",
          {n: (a["version"], a["phase"], a["rotation"]["inRotation"], a["replication"]["enabled"])
           for n, a in agents.items()})

    # The install in flight was let finish; nothing new was started after the delete.
    journal = e2e.assert_guide_kept()
    assert agents[installing]["version"] == "2023.1", agents[installing]
    later = [e for e in journal if e.ts > deleted_at and e.op == "install" and e.outcome == "ok"]
    assert later == [], f"installs asked for after the delete: {later}"
    # Rotation is back on both load-balanced servers: they are healthy and run the schema's release.
    assert agents["ms-1"]["rotation"]["inRotation"] and agents["ms-2"]["rotation"]["inRotation"]
    # ... and only after the install in flight finished (a safe point).
    done = max(e.ts for e in journal if e.op == "install-complete" and e.server == installing)
    back = [e.ts for e in journal if e.op == "rotation" and e.outcome == "ok" and e.detail.get("inRotation")]
    assert back and min(back) > done, (back, done)

    [event] = events(e2e, "Teardown")
    note = str(event.get("note"))
    assert "ms-1 back in rotation" in note and "ms-2 back in rotation" in note, note
    replication = {n: agents[n]["replication"]["enabled"] for n in ("ps-1", "ps-2", "ps-3")}
    if installing == "ps-3":
        assert replication == dict.fromkeys(replication, True), replication
        assert all(f"replication on {n}" in note for n in replication), note
        assert event["type"] == "Normal" and "NOT restored" not in note, event
    else:
        # The guide: replication only between servers at the same release. The operator does not ask for it.
        assert replication == dict.fromkeys(replication, False), replication
        assert event["type"] == "Warning" and "NOT restored" in note, note
        assert "replication not enabled again: its servers must all run one release, none installing" in note, note
        assert {agents[n]["version"] for n in ("ps-2", "ps-3")} == {"2021.1"}
    assert e2e.user_data() == e2e.data_before


def test_deleting_a_plan_while_it_switches_replication_off_lets_the_switch_finish_first(e2e: E2E) -> None:
    """ps-2 answers every request 2 s late, so switching replication off (ps-1, ps-2 and ps-3 at once) takes a
    while; the plan is deleted the moment that step starts. The finalizer must wait until the plan's loop
    has stopped (after its step), or it restores replication on the servers already switched off while
    the loop goes on switching off the others (ps-3 would be left off, and not even named)."""
    e2e.start_fleet()
    agent_ok(e2e, "ps-2", "POST", "/agent/v1/faults", {"kind": "slow", "count": 10000, "delayMs": 2000})
    e2e.start_operator()
    name = e2e.apply_plan(targetVersion="2023.1", healthCheck={"timeoutSeconds": 60, "periodSeconds": 3,
                                                                  "successThreshold": 1})
    watch_for(e2e, name, lambda p: any(s["name"] == "DisableReplication" and s.get("state") == "Running"
                                       for s in (p.get("status") or {}).get("steps", [])),
              timeout=120, what="DisableReplication running")
    e2e.kubectl("delete", "upgradeplan", name, "-n", e2e.namespace, "--wait=false")
    gone(e2e, name, timeout=60)
    agent_ok(e2e, "ps-2", "DELETE", "/agent/v1/faults")
    agents = {s: server_state(e2e, s) for s in SERVERS}
    assert {n: agents[n]["replication"]["enabled"] for n in ("ps-1", "ps-2", "ps-3")} == \
        dict.fromkeys(("ps-1", "ps-2", "ps-3"), True), agents
    assert all(agents[n]["rotation"]["inRotation"] for n in ("ms-1", "ms-2")), agents
    [event] = events(e2e, "Teardown")
    assert event["type"] == "Normal" and "NOT restored" not in str(event.get("note")), event
    # A safe point: the step in flight finished (all three off, each answered) before anything was put back.
    switches = [(e.server, e.detail.get("enabled")) for e in e2e.assert_guide_kept()
                if e.op == "replication" and e.outcome == "ok"]
    assert sorted(switches[:3]) == [("ps-1", False), ("ps-2", False), ("ps-3", False)], switches
    assert sorted(switches[3:]) == [("ps-1", True), ("ps-2", True), ("ps-3", True)], switches


def test_deleting_a_finished_plan_is_immediate(e2e: E2E) -> None:
    e2e.start_fleet()
    e2e.start_operator()
    name = e2e.apply_plan(targetVersion="2021.1")  # the estate runs it already: nothing to do
    plan = e2e.wait_phase(name, "Succeeded", "Failed", timeout=60)
    # Not `assert_succeeded`: a plan with nothing to do leaves its RecordBaseline step Pending.
    assert plan["status"]["phase"] == "Succeeded", plan["status"].get("message")
    e2e.kubectl("delete", "upgradeplan", name, "-n", e2e.namespace, "--wait=false")
    took = gone(e2e, name, timeout=30)
    assert took < 5.0, f"deleting a finished plan took {took:.1f} s"
    assert events(e2e, "Teardown") == []
    assert [e for e in e2e.journal() if e.op in ("install", "replication", "rotation")] == []
