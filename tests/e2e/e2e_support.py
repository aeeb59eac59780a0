"""The end-to-end tests' one surface: the real API server and PostgreSQL of the test bed, a real simulator
fleet process and the real operator process (`uwm-upgrade run`), as a user would run them; the
constants every test shares (the example's servers and databases, the fast timings, the terminal
phases); the simulated servers' HTTP API and journal; and the checks a run must pass, `assert_succeeded`
first of all.

Registered as a plugin by the root conftest (the `e2e` fixture); import from `e2e.e2e_support`. Every test
gets its own namespace, its own databases and fleet, and its own operator process (which it may kill and
restart).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from uwm_dev.referee import audit, evidence
from uwm_dev.testbed import estate
from uwm_dev.testbed.bed import Testbed
from uwm_sim.journal import Event, read_journal, violations
from uwm_upgrade.adapters.database import Database

REPO = Path(__file__).resolve().parents[2]
FLEET_FILE = REPO / "examples" / "fleet.yaml"
PLAN_FILE = REPO / "examples" / "upgradeplan.yaml"
SERVERS = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")  # the example's (examples/fleet.yaml, upgradeplan.yaml)
DATABASES = ("mgmt-db", "pers-db")
FLEETS = Path(__file__).parent / "fleets"  # the tests' own estates
PERS_FLEET, PERS_PLAN = FLEETS / "personalization-only.yaml", FLEETS / "personalization-only.plan.yaml"
PERS_SERVERS = ("ps-1", "ps-2", "ps-3")
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
        self.audit_data_before: dict[str, str] = {}
        self.versions_before: dict[str, str] = {}  # every server's release when the fleet started

    # ------------------------------------------------------------ processes
    def start_fleet(self, fleet_file: Path = FLEET_FILE, **timing: float) -> estate.Fleet:
        self.fleet = estate.start_fleet(self.bed, fleet_file, self.work, **{**FAST, **timing})
        self.data_before = self.user_data()
        self.audit_data_before = evidence.user_data(self.fleet.odbc)
        self.versions_before = {name: server_state(self, name)["version"] for name in self.fleet.endpoints["servers"]}
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
        raise AssertionError(not_reached(self, what, timeout, plan))

    def diagnosis(self, lines: int = 12) -> str:
        """Whether the test's processes still run and the end of their logs (CI keeps only its output)."""
        parts = []
        for label, proc in (("operator", self.operator), ("fleet", self.fleet)):
            if proc is not None:
                parts.append(f"{label} {'running' if proc.process.alive() else 'EXITED'}")
        for log in sorted(self.work.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}, last {len(tail)} lines:\n" + "\n".join(tail))
        return "\n".join(parts)

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

    def findings(self, *, backups: bool = True, expect: dict[str, audit.Expect] | None = None,
                 data_intact: bool = False) -> list[audit.Finding]:
        """The independent audit of this run (devtools/uwm_dev/referee/audit.py): the journal replayed
        against the guide, the backups the operator took, and, when asked, the end state and user data."""
        assert self.fleet is not None and self.fleet.fleet_file is not None
        top = evidence.topology(self.fleet.fleet_file, self.fleet.env, backups_required=backups)
        after = evidence.user_data(self.fleet.odbc) if data_intact else None
        return audit.audit(self.journal(), top, evidence.backups(self.fleet.odbc), expect=expect,
                           data_before=self.audit_data_before if data_intact else None, data_after=after)

    def assert_guide_kept(self, *, backups: bool = True, expect: dict[str, audit.Expect] | None = None,
                          data_intact: bool = False) -> list[Event]:
        """No rule of the guide broken, by the independent audit of the journal (pool-wide offline,
        database first, replication, a verified backup before each migration, nothing twice, no refusal)
        and by the simulators' own replay; with `expect`/`data_intact`, the end state and the user data
        too. Returns the journal."""
        events = self.journal()
        found = [str(f) for f in self.findings(backups=backups, expect=expect, data_intact=data_intact)]
        assert found == [], "\n".join(found)
        assert violations(events) == [], violations(events)
        return events

    def as_before(self, servers: Iterable[str], version: str) -> dict[str, audit.Expect]:
        """Each server at `version`, with replication and rotation as the journal first showed them."""
        assert self.fleet is not None and self.fleet.fleet_file is not None
        top = evidence.topology(self.fleet.fleet_file, self.fleet.env)
        return audit.as_before(audit.replay(self.journal(), top), list(servers), version)


def work_dir(request: pytest.FixtureRequest) -> Path:
    """The test's own folder for logs under .testbed/e2e, emptied of an earlier run's logs."""
    work = REPO / ".testbed" / "e2e" / request.node.name.replace("/", "_")[:80]
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("*.log"):
        old.unlink()
    return work


@pytest.fixture
def e2e(kube: Any, pg_bed: Testbed, namespace: str, request: pytest.FixtureRequest) -> Iterator[E2E]:
    env = E2E(pg_bed, namespace, work_dir(request))
    try:
        yield env
    finally:
        env.stop()


# ---------------------------------------------------------------- watching a plan, the estate's own record


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
    raise AssertionError(not_reached(e2e, what, timeout, last))


def poll_for(e2e: E2E, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 180.0,
             what: str = "the condition", every: float = 0.02) -> dict[str, Any]:
    """Like `watch_for`, for a check that looks beyond the plan (the estate's journal: a request accepted):
    the plan is read and the check made every `every` seconds, not only when the plan is written. (The
    operator leaves a record without an effect for its next write, up to 2 s: a step whose request the
    estate accepted may show no change of the plan until the step is over.)"""
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(e2e.bed.kubeconfig)))
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = api.get_namespaced_custom_object("upgrade.uwm.io", "v1alpha1", e2e.namespace, "upgradeplans", name)
        if check(last):
            return dict(last)
        time.sleep(every)
    raise AssertionError(not_reached(e2e, what, timeout, last))


def not_reached(e2e: E2E, what: str, timeout: float, plan: dict[str, Any]) -> str:
    status = plan.get("status") or {}
    return (f"{what} not reached in {timeout:.0f} s: phase {status.get('phase')}, step "
            f"{status.get('currentStep')}, message {status.get('message')}; logs in {e2e.work}\n"
            + e2e.diagnosis())


# The journal op by which the estate accepts each step's request (what "requested" means there).
REQUEST_OPS = {"InstallFirstServer": "install", "InstallServer": "install", "UpgradeSchema": "schema-migrate",
               "DisableReplication": "replication", "RestoreReplication": "replication",
               "TakeOutOfRotation": "rotation", "BringIntoRotation": "rotation"}


def accepted(e2e: E2E, step: dict[str, Any]) -> bool:
    """Whether the estate's journal shows the request of `step` (a status step: its server, database,
    and start, to a second) accepted since the step started."""
    op = REQUEST_OPS.get(step["name"])
    started = step.get("startedAt")
    if op is None or e2e.fleet is None or not started:
        return False
    since = datetime.fromisoformat(str(started).replace("Z", "+00:00")).timestamp() - 1.0
    server, database = step.get("server"), step.get("database")
    return any(e.op == op and e.outcome == "ok" and e.ts >= since and not e.detail.get("noop")
               and (server is None or e.server == server) and (database is None or e.database == database)
               for e in e2e.journal())


def requested(step: str, server: str | None = None, e2e: E2E | None = None) -> Callable[[dict[str, Any]], bool]:
    """A check for `poll_for`: step `step` (of `server`) Running, its effect asked for: the status says so
    ("...: requested"), or, with `e2e`, the estate's journal shows it accepted (the operator sends the
    word "requested" with its next write, which may come a few seconds later: a change of wording alone
    is not a write of its own, nor is a record without an effect at once)."""
    def check(plan: dict[str, Any]) -> bool:
        for s in (plan.get("status") or {}).get("steps", []):
            if s["name"] != step or (server is not None and s.get("server") != server) or s.get("state") != "Running":
                continue
            if str(s.get("message") or "").endswith(": requested"):
                return True
            if e2e is not None and accepted(e2e, s):
                return True
        return False
    return check


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


# ---------------------------------------------------------------- the servers' API, the journal, the checks


def agent(env: E2E, server: str, method: str, path: str, body: dict[str, Any] | None = None,
          token: str | None = None) -> tuple[int, Any]:
    """One call of a simulated server's HTTP API (agent calls carry the fleet's bearer token); (status, JSON)."""
    assert env.fleet is not None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(env.fleet.url(server) + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token or env.fleet.token}", "Accept": "application/json",
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def agent_ok(env: E2E, server: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """`agent()` that must succeed (2xx); its JSON answer."""
    status, answer = agent(env, server, method, path, body)
    assert 200 <= status < 300, (server, method, path, status, answer)
    return answer


def inject(env: E2E, server: str, kind: str, count: int = 1, delay_ms: int = 0) -> None:
    """`POST /agent/v1/faults` on one server (install-fail, install-hang, health-flap, migration-fail, crash, slow)."""
    status, answer = agent(env, server, "POST", "/agent/v1/faults", {"kind": kind, "count": count, "delayMs": delay_ms})
    assert status == 200, (status, answer)


def server_state(env: E2E, server: str) -> dict[str, Any]:
    """GET /agent/v1/state of one simulated server: what it really is, not what the plan's status says."""
    return dict(agent_ok(env, server, "GET", "/agent/v1/state"))


def installs(events: list[Event], server: str | None = None) -> list[Event]:
    """Install requests the agents accepted (not no-ops, not refusals)."""
    return [e for e in events if e.op == "install" and e.outcome == "ok" and not e.detail.get("noop")
            and (server is None or e.server == server)]


def max_overlap(events: list[Event], servers: set[str] | None = None) -> int:
    """The most installs running at once, from the journal (accepted install to its install-complete)."""
    edges: list[tuple[float, int]] = []
    started: dict[str, float] = {}
    for e in events:
        if servers is not None and e.server not in servers:
            continue
        if e.op == "install" and e.outcome == "ok" and not e.detail.get("noop"):
            started[str(e.server)] = e.ts
        elif e.op == "install-complete" and str(e.server) in started:
            edges += [(started.pop(str(e.server)), 1), (e.ts, -1)]
    edges += [(t, 1) for t in started.values()]
    running = peak = 0
    for _, delta in sorted(edges):  # at equal times an end (-1) sorts before a start
        running += delta
        peak = max(peak, running)
    return peak


def condition(plan: dict[str, Any], kind: str) -> dict[str, Any]:
    """The plan's condition `kind`; an empty dict while it has none."""
    return next((c for c in (plan.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def steps_of(plan: dict[str, Any], name: str, hop: int | None = None, server: str | None = None,
             database: str | None = None) -> list[dict[str, Any]]:
    return [s for s in (plan.get("status") or {}).get("steps", [])
            if s["name"] == name and (hop is None or s["hop"] == hop) and (server is None or s.get("server") == server)
            and (database is None or s.get("database") == database)]


def operator_log(env: E2E) -> str:
    return (env.work / "operator.log").read_text(errors="replace")


def assert_succeeded(env: E2E, plan: dict[str, Any], target: str, servers: Iterable[str], *,
                     replaced: Iterable[str] = ()) -> list[Event]:
    """Succeeded, every server of `servers` at the target and healthy, every step done, each server
    installed once per hop it went through (never twice), the guide kept in the journal, user data intact;
    returns the journal. Strategy CleanInstall: `servers` are the new servers (and any upgraded in place),
    `replaced` the old ones, left at their release, offline, never installed."""
    status = plan["status"]
    servers, replaced = list(servers), list(replaced)
    assert status["phase"] == "Succeeded", status.get("message")
    assert condition(plan, "Succeeded")["status"] == "True"
    assert condition(plan, "Failed")["status"] == "False"
    left = {old: env.versions_before[old] for old in replaced}
    assert {s["name"]: s["version"] for s in status["servers"]} == dict.fromkeys(servers, target) | left
    assert all(s["health"] == "Healthy" for s in status["servers"] if s["name"] in servers), status["servers"]
    assert not [s["name"] for s in status["servers"] if s["name"] in left and s.get("online")], status["servers"]
    hops = len(status["path"])
    assert all(d["schemaVersion"] == target and d["lastBackup"]["verified"] for d in status["databases"]), \
        status["databases"]
    unfinished = [(s["name"], s.get("server"), s["state"]) for s in status["steps"]
                  if s["state"] not in ("Succeeded", "Skipped")]
    assert not unfinished, unfinished
    in_place = [s for s in servers if env.versions_before[s] != target] if not replaced else []
    events = env.assert_guide_kept(expect=env.as_before(in_place, target) if in_place else None, data_intact=True)
    for server in servers:  # once per hop, never twice; a new server provisioned at the target: never
        expected = hops if env.versions_before[server] != target else 0
        assert len(installs(events, server)) == expected, [e.detail for e in installs(events, server)]
        assert server_state(env, server)["version"] == target
    for old in left:
        assert installs(events, old) == [], [e.detail for e in installs(events, old)]
        assert server_state(env, old)["service"]["online"] is False
    assert env.user_data() == env.data_before
    return events
