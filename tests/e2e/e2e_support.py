"""Fixtures for end-to-end tests: the real API server and PostgreSQL of the test bed, a real simulator
fleet process and the real operator process (`uwm-upgrade run`), as a user would run them.

Registered as a plugin by the root conftest; import `E2E` from `e2e.e2e_support` for typing. Every test
gets its own namespace, its own databases and fleet, and its own operator process (which it may kill and
restart).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from uwm_sim.journal import Event, read_journal, violations
from uwm_upgrade.adapters.database import Database
from uwm_upgrade.testbed import estate
from uwm_upgrade.testbed.bed import Testbed

REPO = Path(__file__).resolve().parents[2]
FLEET_FILE = REPO / "examples" / "fleet.yaml"
PLAN_FILE = REPO / "examples" / "upgradeplan.yaml"
TERMINAL = ("Succeeded", "Failed", "RolledBack")

# Fast timings for tests; the guide's 30 s settle delay is exercised by the simulators' own tests.
FAST = {"settle": 0.3, "install": 0.3, "migration_step": 0.2, "caught_up": 0.3}
FAST_SPEC = {"healthCheck": {"timeoutSeconds": 60, "periodSeconds": 1, "successThreshold": 1}}


class E2E:
    """One test's estate: bed, namespace, fleet and operator, with the checks every test makes."""

    def __init__(self, bed: Testbed, namespace: str, work: Path) -> None:
        self.bed, self.namespace, self.work = bed, namespace, work
        self.fleet: estate.Fleet | None = None
        self.operator: estate.Operator | None = None
        self.data_before: dict[str, str] = {}

    # ------------------------------------------------------------ processes
    def start_fleet(self, fleet_file: Path = FLEET_FILE, **timing: float) -> estate.Fleet:
        self.fleet = estate.start_fleet(self.bed, fleet_file, self.work, **{**FAST, **timing})
        self.data_before = self.user_data()
        return self.fleet

    def start_operator(self, *extra: str) -> estate.Operator:
        self.operator = estate.start_operator(self.bed, [self.namespace], self.work, extra=list(extra))
        return self.operator

    def kill_operator(self) -> None:
        assert self.operator is not None
        self.operator.process.kill()

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.process.stop()
        if self.fleet is not None:
            self.fleet.process.stop()
            estate.drop_databases(self.bed, self.fleet.databases)  # three databases a test: do not pile up

    # ------------------------------------------------------------ the plan
    def apply_plan(self, plan_file: Path = PLAN_FILE, name: str | None = None, **spec: Any) -> str:
        assert self.fleet is not None, "start_fleet() first"
        docs = estate.plan_documents(plan_file, self.fleet, self.namespace, **{**FAST_SPEC, **spec})
        plan = next(d for d in docs if d["kind"] == "UpgradePlan")
        if name:
            plan["metadata"]["name"] = name
        estate.apply(self.bed, docs)
        return str(plan["metadata"]["name"])

    def plan(self, name: str) -> dict[str, Any]:
        return estate.get_plan(self.bed, self.namespace, name)

    def wait_for(self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 180.0,
                 what: str = "the condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        plan: dict[str, Any] = {}
        while time.monotonic() < deadline:
            plan = self.plan(name)
            if check(plan):
                return plan
            time.sleep(0.3)
        status = plan.get("status") or {}
        raise AssertionError(f"{what} not reached in {timeout:.0f} s: phase {status.get('phase')}, step "
                             f"{status.get('currentStep')}, message {status.get('message')}; "
                             f"operator log: {self.work / 'operator.log'}")

    def wait_phase(self, name: str, *phases: str, timeout: float = 180.0) -> dict[str, Any]:
        return self.wait_for(name, lambda p: (p.get("status") or {}).get("phase") in phases, timeout,
                             f"phase {' or '.join(phases)}")

    def wait_step(self, name: str, step: str, state: str = "Running", hop: int | None = None,
                  timeout: float = 180.0) -> dict[str, Any]:
        def ok(p: dict[str, Any]) -> bool:
            return any(s["name"] == step and s.get("state") == state and (hop is None or s.get("hop") == hop)
                       for s in (p.get("status") or {}).get("steps", []))
        return self.wait_for(name, ok, timeout, f"step {step} {state}")

    def kubectl(self, *args: str, check: bool = True) -> str:
        return estate.kubectl(self.bed, *args, check=check)

    # ------------------------------------------------------------ the estate's own record
    def journal(self) -> list[Event]:
        assert self.fleet is not None
        return read_journal(self.fleet.state_odbc)

    def user_data(self) -> dict[str, str]:
        assert self.fleet is not None

        async def read() -> dict[str, str]:
            return {name: await Database(name, cs).table_checksum("uwm_user_data")
                    for name, cs in self.fleet.odbc.items()}  # type: ignore[union-attr]
        return asyncio.run(read())

    def assert_guide_kept(self) -> list[Event]:
        """The simulators' journal replayed: no rule broken, schema migrated once per hop and database,
        by the first server, before any other server of that database was upgraded; user data intact."""
        events = self.journal()
        assert violations(events) == [], violations(events)
        migrated: dict[tuple[str | None, str], int] = {}
        for e in events:
            if e.op == "schema-migrated" and e.outcome == "ok":
                key = (e.database, str(e.detail.get("to")))
                migrated[key] = migrated.get(key, 0) + 1
        assert all(n == 1 for n in migrated.values()), f"a schema was migrated more than once: {migrated}"
        return events


@pytest.fixture
def e2e(kube: Any, pg_bed: Testbed, namespace: str, request: pytest.FixtureRequest) -> Iterator[E2E]:
    work = REPO / ".testbed" / "e2e" / request.node.name.replace("/", "_")[:80]
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("*.log"):
        old.unlink()
    env = E2E(pg_bed, namespace, work)
    try:
        yield env
    finally:
        env.stop()


# ---------------------------------------------------------------- helpers for crash, overlap and teardown tests


def watch_for(e2e: E2E, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 180.0,
              what: str = "the condition") -> dict[str, Any]:
    """Like `E2E.wait_for`, but through a watch: sees every status write, within milliseconds, so a test
    can act (kill the operator) at the moment a step starts, even a step that lasts a few milliseconds."""
    from kubernetes import client, config, watch

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(e2e.bed.kubeconfig)))
    args = ("upgrade.uwm.io", "v1alpha1", e2e.namespace, "upgradeplans")
    selector = f"metadata.name={name}"
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        listed = api.list_namespaced_custom_object(*args, field_selector=selector)
        for item in listed.get("items", []):
            last = item
            if check(item):
                return dict(item)
        stream = watch.Watch()
        left = max(1, int(deadline - time.monotonic()))
        for event in stream.stream(api.list_namespaced_custom_object, *args, field_selector=selector,
                                   resource_version=listed["metadata"]["resourceVersion"],
                                   timeout_seconds=min(left, 30)):
            if event["type"] not in ("ADDED", "MODIFIED"):
                break  # an ERROR (e.g. 410 Gone) or DELETED: list again
            last = event["object"]
            if check(last):
                stream.stop()
                return dict(last)
    status = last.get("status") or {}
    raise AssertionError(f"{what} not reached in {timeout:.0f} s: phase {status.get('phase')}, step "
                         f"{status.get('currentStep')}, message {status.get('message')}; "
                         f"operator log: {e2e.work / 'operator.log'}")


def agent_state(e2e: E2E, server: str) -> dict[str, Any]:
    """GET /agent/v1/state of one simulated server: what it really is, not what the plan's status says."""
    import json
    import urllib.request

    assert e2e.fleet is not None
    request = urllib.request.Request(f"{e2e.fleet.url(server)}/agent/v1/state",
                                     headers={"Authorization": f"Bearer {e2e.fleet.token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def backups_of(e2e: E2E, database: str) -> list[dict[str, Any]]:
    """The rows of `uwm_backups` in one UWM database (the operator's backups; none: an empty list)."""
    import pyodbc

    assert e2e.fleet is not None
    conn = pyodbc.connect(e2e.fleet.odbc[database], autocommit=True)
    try:
        exists = conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'uwm_backups'")
        if not exists.fetchone()[0]:
            return []
        cursor = conn.execute("SELECT id, taken_at, schema_version, verified FROM uwm_backups ORDER BY id")
        return [{"id": r[0], "taken_at": r[1], "schema_version": r[2], "verified": bool(r[3])}
                for r in cursor.fetchall()]
    finally:
        conn.close()

