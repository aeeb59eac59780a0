"""End to end: the example estate upgraded in place by the real operator process."""

from __future__ import annotations

import pytest

from e2e.e2e_support import E2E, SERVERS, TERMINAL, assert_succeeded

pytestmark = pytest.mark.e2e


def test_two_hops_with_replication_and_a_load_balanced_pool(e2e: E2E) -> None:
    e2e.start_fleet()
    e2e.start_operator()
    name = e2e.apply_plan()
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    status = plan["status"]
    assert_succeeded(e2e, plan, "2025.1", SERVERS)
    assert [(h["from"], h["to"]) for h in status["path"]] == [("2021.1", "2023.1"), ("2023.1", "2025.1")]
    assert status["hopDisplay"] == "2/2"
    # kopf's diff base is not stored (handlers.UnstoredDiffBase): no copy of the spec in the annotations
    assert not [k for k in plan["metadata"].get("annotations") or {} if k.endswith("last-handled-configuration")]
    assert {s["name"]: s.get("replication") for s in status["servers"] if s["kind"] == "Personalization"} == \
        dict.fromkeys([s for s in SERVERS if s.startswith("ps-")], "Enabled")
    waited = e2e.kubectl("wait", "--for=condition=Succeeded", f"upgradeplan/{name}", "-n", e2e.namespace,
                         "--timeout=5s")
    assert "condition met" in waited
    events = e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "jsonpath={.items[*].reason}")
    assert "StepSucceeded" in events and "StepStarted" not in events  # one Event per step, when it ends
