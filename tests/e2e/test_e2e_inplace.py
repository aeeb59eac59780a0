"""End to end: the example estate upgraded in place by the real operator process."""

from __future__ import annotations

import pytest

from e2e.e2e_support import E2E

pytestmark = pytest.mark.e2e


def test_two_hops_with_replication_and_a_load_balanced_pool(e2e: E2E) -> None:
    e2e.start_fleet()
    e2e.start_operator()
    name = e2e.apply_plan()
    plan = e2e.wait_phase(name, "Succeeded", "Failed", "RolledBack", timeout=240)
    status = plan["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert [(h["from"], h["to"]) for h in status["path"]] == [("2021.1", "2023.1"), ("2023.1", "2025.1")]
    assert status["hopDisplay"] == "2/2"
    assert {s["name"]: s["version"] for s in status["servers"]} == dict.fromkeys(
        ["ms-1", "ms-2", "ps-1", "ps-2", "ps-3"], "2025.1")
    assert all(s["health"] == "Healthy" for s in status["servers"])
    assert {s["name"]: s.get("replication") for s in status["servers"] if s["kind"] == "Personalization"} == \
        dict.fromkeys(["ps-1", "ps-2", "ps-3"], "Enabled")
    assert all(d["schemaVersion"] == "2025.1" and d["lastBackup"]["verified"] for d in status["databases"])
    assert all(s["state"] in ("Succeeded", "Skipped") for s in status["steps"])
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["Failed"] == "False"
    e2e.assert_guide_kept()
    assert e2e.user_data() == e2e.data_before
    waited = e2e.kubectl("wait", "--for=condition=Succeeded", f"upgradeplan/{name}", "-n", e2e.namespace,
                         "--timeout=5s")
    assert "condition met" in waited
    events = e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "jsonpath={.items[*].reason}")
    assert "StepStarted" in events and "StepSucceeded" in events
