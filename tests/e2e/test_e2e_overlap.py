"""End to end: plans that share part of an estate never run at the same time; plans on separate estates do.

Two plans overlap when they name a server at the same URL or a database through the same Secret and key
(`engine/overlap.py`). The one that started first goes on; a later one waits in phase `Blocked`, with a
`Blocked` condition naming the plan it waits for, and starts (planning anew from what the estate is then)
once that plan is over.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from uwm_dev.testbed import estate
from uwm_sim.journal import Event, read_journal

from e2e.e2e_support import E2E, FAST, FAST_SPEC, FLEET_FILE, PLAN_FILE, SERVERS, TERMINAL, condition, watch_for

pytestmark = pytest.mark.e2e


def plans(e2e: E2E) -> dict[str, dict[str, Any]]:
    items = json.loads(e2e.kubectl("get", "upgradeplans", "-n", e2e.namespace, "-o", "json"))["items"]
    return {i["metadata"]["name"]: i for i in items}


def phase(plan: dict[str, Any] | None) -> str | None:
    return ((plan or {}).get("status") or {}).get("phase")


def blocked_by(*names: str, only: bool = False) -> Any:
    """Phase Blocked, and a Blocked condition naming `names` (with `only`: no other plan of this test)."""
    def check(plan: dict[str, Any]) -> bool:
        blocked = condition(plan, "Blocked")
        message = str(blocked.get("message"))
        others = {"first", "second", "third"} - set(names) if only else set()
        return phase(plan) == "Blocked" and blocked.get("status") == "True" and \
            all(n in message for n in names) and not any(o in message for o in others)
    return check


def completed_at(plan: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(plan["status"]["completedAt"].replace("Z", "+00:00")).timestamp()


def changes(events: list[Event]) -> list[Event]:
    """The journal's accepted changes of the estate (what a plan asked for and got)."""
    return [e for e in events if e.outcome == "ok" and (
        (e.op in ("replication", "rotation") and e.detail.get("changed"))
        or (e.op == "install" and not e.detail.get("noop")) or e.op == "schema-migrate")]


def test_a_later_plan_on_the_same_estate_waits_blocked_until_the_first_is_over(e2e: E2E) -> None:
    """`first` (2021.1 -> 2023.1) runs; `second` (same servers and databases, -> 2025.1) waits Blocked
    naming it, then plans 2023.1 -> 2025.1 and runs; `third` names the same servers through another
    address (localhost, not 127.0.0.1) but the same database Secret, so it overlaps through the
    databases only: it waits for both, then finds the estate at its target and succeeds doing nothing."""
    e2e.start_fleet()
    e2e.start_operator()
    first = e2e.apply_plan(name="first", targetVersion="2023.1")
    e2e.wait_phase(first, "Running", timeout=60)
    second = e2e.apply_plan(name="second", targetVersion="2025.1")
    assert e2e.fleet is not None
    docs = estate.plan_documents(PLAN_FILE, e2e.fleet, e2e.namespace, targetVersion="2025.1", **FAST_SPEC)
    third_plan = next(d for d in docs if d["kind"] == "UpgradePlan")
    third_plan["metadata"]["name"] = third = "third"
    for key in ("managementServers", "personalizationServers"):
        for server in third_plan["spec"][key]:
            server["url"] = server["url"].replace("127.0.0.1", "localhost")
    estate.apply(e2e.bed, [third_plan])

    watch_for(e2e, second, blocked_by(first), timeout=30, what="second Blocked by first")
    watch_for(e2e, third, blocked_by(first), timeout=30, what="third Blocked by first")
    # From now until `first` is over, the other two stay Blocked, whatever `first` is doing.
    seen: list[tuple[str | None, ...]] = []
    while True:
        now = plans(e2e)
        seen.append((phase(now[first]), phase(now[second]), phase(now[third])))
        if phase(now[first]) in TERMINAL:
            break
        assert seen[-1][1:] == ("Blocked", "Blocked"), f"while first runs: {seen[-1]} (first, second, third)"
        time.sleep(0.05)
    assert phase(now[first]) == "Succeeded", now[first]["status"].get("message")
    # first runs a few seconds (installs, settle delays): looked at several times while it ran
    assert len(seen) >= 4, f"sampled only {len(seen)} times while first ran"

    # Then `second` goes (it was created before `third`), and `third` waits for it.
    watch_for(e2e, second, lambda p: phase(p) in ("Running", *TERMINAL), timeout=30, what="second running")
    watch_for(e2e, third, blocked_by(second, only=True), timeout=30, what="third Blocked by second alone")
    done = e2e.wait_phase(second, *TERMINAL, timeout=180)
    assert phase(done) == "Succeeded", done["status"].get("message")
    assert [(h["from"], h["to"]) for h in done["status"]["path"]] == [("2023.1", "2025.1")]
    last = e2e.wait_phase(third, *TERMINAL, timeout=60)
    assert phase(last) == "Succeeded", last["status"].get("message")
    assert last["status"].get("path") in (None, []), last["status"]["path"]
    assert "nothing to do" in last["status"]["message"], last["status"]["message"]

    # The estate's journal: everything `first` changed came before `first` ended, everything after it
    # was `second`'s hop (to 2025.1), and `third` changed nothing.
    events = e2e.assert_guide_kept()
    end_of_first = completed_at(plans(e2e)[first])
    start_of_second = min(e.ts for e in changes(events) if e.op == "install" and e.detail.get("to") == "2025.1")
    installs = [(e.server, e.detail.get("to"), e.ts) for e in changes(events) if e.op == "install"]
    assert sorted((s, v) for s, v, _ in installs) == sorted(
        [(s, "2023.1") for s in SERVERS] + [(s, "2025.1") for s in SERVERS]), installs
    assert max(t for _, v, t in installs if v == "2023.1") < end_of_first < start_of_second, installs
    after = [e for e in changes(events) if e.ts > end_of_first]
    assert all(e.op != "install" or e.detail.get("to") == "2025.1" for e in after), after
    assert e2e.user_data() == e2e.data_before


def second_estate(e2e: E2E, suffix: str) -> tuple[estate.Fleet, list[dict[str, Any]]]:
    """Another simulated estate (its own databases and ports), and a plan for it with its own Secrets."""
    fleet = estate.start_fleet(e2e.bed, FLEET_FILE, e2e.work / suffix, **FAST)
    docs = estate.plan_documents(PLAN_FILE, fleet, e2e.namespace, targetVersion="2023.1", **FAST_SPEC)
    for doc in docs:
        if doc["kind"] == "Secret":
            doc["metadata"]["name"] += f"-{suffix}"
        else:
            doc["metadata"]["name"] = f"estate-{suffix}"
            spec = doc["spec"]
            spec["agentSecretRef"]["name"] += f"-{suffix}"
            for db in spec["databases"]:
                db["connectionSecretRef"]["name"] += f"-{suffix}"
    return fleet, docs


def test_plans_on_separate_estates_run_at_the_same_time(e2e: E2E) -> None:
    """Two estates (two fleets, their own databases and Secrets): neither plan waits for the other."""
    e2e.start_fleet()
    other, docs = second_estate(e2e, "b")
    try:
        e2e.start_operator()
        mine = e2e.apply_plan(name="estate-a", targetVersion="2023.1")
        estate.apply(e2e.bed, docs)
        theirs = "estate-b"
        both: list[tuple[str | None, str | None]] = []
        while True:
            now = plans(e2e)
            both.append((phase(now.get(mine)), phase(now.get(theirs))))
            if all(p in TERMINAL for p in both[-1]):
                break
            assert "Blocked" not in both[-1], both[-1]
            time.sleep(0.3)
        assert both[-1] == ("Succeeded", "Succeeded"), [(n, now[n]["status"].get("message")) for n in now]
        assert ("Running", "Running") in both, f"the two plans never ran at the same time: {both}"
        for plan in now.values():
            assert condition(plan, "Blocked").get("status") == "False", condition(plan, "Blocked")
        # Each estate's journal: its own upgrade, and the two overlapped in time.
        spans = []
        for events in (e2e.assert_guide_kept(), read_journal(other.state_odbc)):
            installs = [e for e in changes(events) if e.op == "install"]
            assert sorted(e.server or "" for e in installs) == sorted(SERVERS), installs
            spans.append((min(e.ts for e in changes(events)), max(e.ts for e in changes(events))))
        (a0, a1), (b0, b1) = spans
        assert max(a0, b0) < min(a1, b1), f"the two upgrades did not overlap in time: {spans}"
    finally:
        other.process.stop()
