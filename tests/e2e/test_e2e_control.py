"""End to end: what users control and watch — pause and resume, approval, bad input (Secrets, token),
`kubectl get`/`describe`, Events and metrics — against the real API server, PostgreSQL, a simulator fleet
process and the real operator process.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from uwm_dev.testbed import estate

from e2e.e2e_support import (
    E2E,
    FAST_SPEC,
    PERS_FLEET,
    PERS_PLAN,
    PERS_SERVERS,
    TERMINAL,
    assert_succeeded,
    condition,
    operator_log,
    server_state,
    steps_of,
)

pytestmark = pytest.mark.e2e

EFFECT_OPS = ("install", "replication", "rotation", "schema-migrate", "schema-step", "schema-migrated")
DB_PASSWORD = "uwm-testbed"  # in every connection string of the test bed's PostgreSQL


def effects(e2e: E2E, since: int = 0) -> list[str]:
    """What was asked of the estate after journal entry `since` (refusals included)."""
    return [f"{e.op} {e.server} {e.outcome}" for e in e2e.journal() if e.seq > since and e.op in EFFECT_OPS]


def last_seq(e2e: E2E) -> int:
    return max((e.seq for e in e2e.journal()), default=0)


def decisions(e2e: E2E, what: str) -> int:
    """How many times the operator has logged deciding `what` (e.g. "Pause")."""
    return operator_log(e2e).count(f"decided: {what}")


def wait_log(e2e: E2E, what: str, more_than: int, timeout: float = 30.0) -> None:
    """Until the operator has decided `what` more than `more_than` times: it looked again."""
    deadline = time.monotonic() + timeout
    while decisions(e2e, what) <= more_than:
        assert time.monotonic() < deadline, f"the operator did not decide {what} again in {timeout:.0f} s"
        time.sleep(0.2)


def patch_spec(e2e: E2E, name: str, **spec: Any) -> None:
    e2e.kubectl("patch", "upgradeplan", name, "-n", e2e.namespace, "--type=merge", "-p", json.dumps({"spec": spec}))


# ---------------------------------------------------------------- pause and resume


def test_pause_at_a_safe_point_then_resume(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet(PERS_FLEET, install=1.0)
    name = e2e.apply_plan(PERS_PLAN, targetVersion="2023.1")
    e2e.wait_for(name, lambda p: [s["state"] for s in steps_of(p, "InstallServer", server="ps-2")] == ["Running"],
                 timeout=90, what="ps-2 installing")
    patch_spec(e2e, name, paused=True)  # while ps-2 installs: the pause waits for it, then stops
    plan = e2e.wait_phase(name, "Paused", *TERMINAL, timeout=60)
    status = plan["status"]
    assert status["phase"] == "Paused", status.get("message")
    assert condition(plan, "Paused")["status"] == "True" and condition(plan, "Paused")["reason"] == "Paused"
    assert "safe point" in status["message"]
    # a safe point: nothing installing or migrating, on the servers themselves and in the status
    for server in PERS_SERVERS:
        assert server_state(e2e, server)["phase"] not in ("Installing", "MigratingSchema")
    assert not [s for s in status["steps"] if s["state"] == "Running"]
    assert [s["state"] for s in steps_of(plan, "InstallServer", server="ps-2")] == ["Succeeded"]
    assert [s["state"] for s in steps_of(plan, "InstallServer", server="ps-3")] == ["Pending"]
    # while paused: the operator looks again, and does nothing to the estate
    seq, seen = last_seq(e2e), decisions(e2e, "Pause")
    wait_log(e2e, "Pause", seen)
    assert effects(e2e, seq) == []
    assert e2e.plan(name)["status"]["phase"] == "Paused"
    patch_spec(e2e, name, paused=False)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=90)
    assert_succeeded(e2e, plan, "2023.1", PERS_SERVERS)  # every server installed once
    assert condition(plan, "Paused")["status"] == "False" and condition(plan, "Paused")["reason"] == "NotPaused"


# ---------------------------------------------------------------- approval


def test_approval_required(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet(PERS_FLEET)
    name = e2e.apply_plan(PERS_PLAN, targetVersion="2023.1", approval={"required": True})
    plan = e2e.wait_phase(name, "AwaitingApproval", *TERMINAL, timeout=60)
    status = plan["status"]
    assert status["phase"] == "AwaitingApproval", status.get("message")
    assert [(h["from"], h["to"]) for h in status["path"]] == [("2021.1", "2023.1")]
    digest = status["planHash"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    awaiting = condition(plan, "AwaitingApproval")
    assert awaiting["status"] == "True" and f"upgrade.uwm.io/approve={digest}" in awaiting["message"]
    assert steps_of(plan, "InstallFirstServer", 1, "ps-1")[0]["state"] == "Pending"
    assert effects(e2e) == []
    # a wrong hash: the operator looks again and still waits, having done nothing
    seen = decisions(e2e, "AwaitApproval")
    e2e.kubectl("annotate", "upgradeplan", name, "-n", e2e.namespace, "upgrade.uwm.io/approve=" + "0" * 64)
    wait_log(e2e, "AwaitApproval", seen + 1)  # one more look after the annotation, surely
    assert e2e.plan(name)["status"]["phase"] == "AwaitingApproval"
    assert effects(e2e) == []
    e2e.kubectl("annotate", "upgradeplan", name, "-n", e2e.namespace, f"upgrade.uwm.io/approve={digest}",
                "--overwrite")
    plan = e2e.wait_phase(name, *TERMINAL, timeout=90)
    assert_succeeded(e2e, plan, "2023.1", PERS_SERVERS)
    assert plan["status"]["planHash"] == digest
    assert condition(plan, "AwaitingApproval")["reason"] == "Approved"


# ---------------------------------------------------------------- bad input


def plan_docs(e2e: E2E, plan_file: Path, **spec: Any) -> dict[str, dict[str, Any]]:
    assert e2e.fleet is not None
    docs = estate.plan_documents(plan_file, e2e.fleet, e2e.namespace, **{**FAST_SPEC, **spec})
    return {d["metadata"]["name"] if d["kind"] == "Secret" else "plan": d for d in docs}


def assert_no_secret_leaked(e2e: E2E, name: str, *secrets: str) -> None:
    """No secret value in the plan (status included), its Events or the operator's log."""
    places = {"the plan": e2e.kubectl("get", "upgradeplan", name, "-n", e2e.namespace, "-o", "yaml"),
              "the Events": e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "yaml"),
              "the operator log": operator_log(e2e)}
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret value appears in {where}"


def test_missing_secret_then_created(e2e: E2E) -> None:
    """A plan whose database Secret is missing, then lacks a key, says so (naming the Secret and the key)
    and touches nothing; once the Secret is right it proceeds to Succeeded."""
    e2e.start_operator()
    e2e.start_fleet(PERS_FLEET)
    docs = plan_docs(e2e, PERS_PLAN, targetVersion="2023.1")
    estate.apply(e2e.bed, [docs["uwm-agent"], docs["plan"]])
    name, ns = docs["plan"]["metadata"]["name"], e2e.namespace
    plan = e2e.wait_for(name, lambda p: f"Secret {ns}/uwm-databases" in str((p.get("status") or {}).get("message")),
                        timeout=60, what="a message naming the missing Secret")
    assert "does not exist" in plan["status"]["message"], plan["status"]["message"]
    assert plan["status"]["phase"] in ("Pending", "Planning")
    assert effects(e2e) == []
    wrong_key = json.loads(json.dumps(docs["uwm-databases"]))
    wrong_key["stringData"] = {"mgmt-db": wrong_key["stringData"]["pers-db"]}
    estate.apply(e2e.bed, [wrong_key])
    plan = e2e.wait_for(name, lambda p: "'pers-db'" in str((p.get("status") or {}).get("message")),
                        timeout=60, what="a message naming the missing key")
    assert f"Secret {ns}/uwm-databases has no key 'pers-db'" in plan["status"]["message"], plan["status"]["message"]
    assert effects(e2e) == []
    e2e.kubectl("delete", "secret", "uwm-databases", "-n", ns)
    estate.apply(e2e.bed, [docs["uwm-databases"]])
    plan = e2e.wait_phase(name, *TERMINAL, timeout=90)
    assert_succeeded(e2e, plan, "2023.1", PERS_SERVERS)
    assert e2e.fleet is not None
    assert_no_secret_leaked(e2e, name, e2e.fleet.token, DB_PASSWORD)


def test_wrong_agent_token(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet(PERS_FLEET)
    docs = plan_docs(e2e, PERS_PLAN, targetVersion="2023.1")
    wrong = "not-the-token-" + "7" * 20
    docs["uwm-agent"]["stringData"]["token"] = wrong
    estate.apply(e2e.bed, list(docs.values()))
    name = docs["plan"]["metadata"]["name"]
    plan = e2e.wait_for(name, lambda p: "401" in str((p.get("status") or {}).get("message")), timeout=60,
                        what="a message about the rejected token")
    message = plan["status"]["message"]
    assert "rejected the token" in message and "agentSecretRef" in message, message
    assert all(server in message for server in PERS_SERVERS), message
    assert plan["status"]["phase"] in ("Pending", "Planning")
    assert effects(e2e) == []
    assert [e for e in e2e.journal() if e.op == "auth"], "the agents saw no bad token"
    e2e.assert_guide_kept()
    assert e2e.fleet is not None
    assert_no_secret_leaked(e2e, name, wrong, e2e.fleet.token, DB_PASSWORD)


# ---------------------------------------------------------------- kubectl, Events, metrics


def table_row(e2e: E2E, name: str) -> dict[str, str]:
    """`kubectl get uplan NAME` as a user sees it: the printer columns by header."""
    lines = e2e.kubectl("get", "uplan", name, "-n", e2e.namespace).splitlines()
    header, row = lines[0], lines[1]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(header.split(), cells, strict=True))


def metric(text: str, family: str, **labels: str) -> float:
    """The sum of the samples of `family` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(family)}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total, found = total + float(m.group(2)), True
    assert found, f"no sample of {family} {labels}"
    return total


def test_kubectl_views_events_and_metrics(e2e: E2E) -> None:
    e2e.start_operator()
    e2e.start_fleet(PERS_FLEET)
    name = e2e.apply_plan(PERS_PLAN, targetVersion="2025.1")  # 2 hops
    seen: list[dict[str, str]] = []

    def running_hop(hop: str) -> dict[str, str]:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            row = table_row(e2e, name)
            seen.append(row)
            if row["HOP"] == hop and row["PHASE"] == "Running" and row["STEP"]:
                return row
            assert row["PHASE"] not in TERMINAL, row
            time.sleep(0.2)
        raise AssertionError(f"hop {hop} never seen running: {seen[-1]}")

    row = running_hop("1/2")
    assert (row["CURRENT"], row["TARGET"]) == ("2021.1", "2025.1"), row
    row = running_hop("2/2")
    assert row["TARGET"] == "2025.1" and row["CURRENT"] in ("2023.1", "2021.1"), row
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    assert_succeeded(e2e, plan, "2025.1", PERS_SERVERS)
    row = table_row(e2e, name)
    assert {k: row[k] for k in ("NAME", "PHASE", "CURRENT", "TARGET", "HOP")} == {
        "NAME": name, "PHASE": "Succeeded", "CURRENT": "2025.1", "TARGET": "2025.1", "HOP": "2/2"}, row
    assert "AGE" in row

    described = e2e.kubectl("describe", "uplan", name, "-n", e2e.namespace)
    for text in ("Steps:", "Conditions:", "Install First Server", "Upgrade Schema", "Health Check", "Succeeded",
                 "Verify Replication", "Events:", "StepSucceeded"):
        assert text.replace(" ", "") in described.replace(" ", ""), (text, described[:2000])

    events = json.loads(e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "json"))["items"]
    notes = [(e.get("reason"), e.get("note") or e.get("message") or "") for e in events]
    for step in plan["status"]["steps"]:
        if step["hop"] == 0:
            continue
        key = " ".join(t for t in (step["name"], step.get("database"), step.get("server")) if t)
        reason = "StepSkipped" if step["state"] == "Skipped" else "StepSucceeded"
        assert any(r == reason and n.startswith(f"hop {step['hop']}: {key}") for r, n in notes), (reason, key)
    # one Event per step, when it ends, saying when it started and how long it took
    assert any(r == "StepSucceeded" and n.startswith("hop 2: InstallServer ps-3") and "(started " in n
               for r, n in notes)
    assert any(r == "Succeeded" for r, _ in notes)

    assert e2e.operator is not None
    url = f"http://127.0.0.1:{e2e.operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    assert metric(text, "uwm_upgrade_plans", namespace=e2e.namespace, plan=name, phase="Succeeded") == 1
    assert metric(text, "uwm_upgrade_plans", namespace=e2e.namespace, plan=name, phase="Running") == 0
    assert metric(text, "uwm_upgrade_step_duration_seconds_count", step="InstallServer") == 4  # 2 servers x 2 hops
    assert metric(text, "uwm_upgrade_steps_total", step="HealthCheck", outcome="Succeeded") == 6
    # a status page is read only once its server's agent says it runs (before that it cannot confirm), so
    # ps-2 and ps-3 refusing service while only ps-1 runs the new schema cost no failed reads
    assert "# TYPE uwm_upgrade_health_check_failures_total counter" in text
    assert "# TYPE uwm_upgrade_retries_total counter" in text
