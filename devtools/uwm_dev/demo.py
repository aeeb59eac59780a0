"""`uwm-dev demo` (what `make demo` runs): the whole product on this machine, shown live.

It brings the test bed up, starts the simulated estate of `examples/fleet.yaml` and the operator, applies
`examples/secrets.yaml` and `examples/upgradeplan.yaml` (pointed at the fleet's ports, databases and
token), prints every change of phase and step as it happens, and ends with a summary: steps and their
durations, servers and databases as the status records them, the guide's rules checked against the
simulators' journal, the wall time against the waits the servers imposed, and how many status writes
the operator made.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .bench import latency
from .bench.critical import Timing
from .bench.latency import Figures
from .referee import audit, evidence
from .testbed import estate
from .testbed.bed import Testbed

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "uwm-demo"
TERMINAL = {"Succeeded", "Failed", "RolledBack"}


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def watch(bed: Testbed, name: str, timeout: float, out: Any = sys.stdout) -> dict[str, Any]:
    """Print each change of phase, hop and running steps until the plan is over; return it."""
    last = ("", "", "")
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    plan: dict[str, Any] = {}
    while time.monotonic() < deadline:
        plan = estate.get_plan(bed, NAMESPACE, name)
        st = plan.get("status") or {}
        head = (st.get("phase", "Pending"), st.get("hopDisplay", "-"), st.get("currentStep") or "")
        if head != last:
            print(f"[{time.monotonic() - start:6.1f}s] {head[0]:<16} hop {head[1]:<5} {head[2]}", file=out, flush=True)
            last = head
        if head[0] in TERMINAL:
            return plan
        time.sleep(0.5)
    raise TimeoutError(f"the plan did not finish in {timeout:.0f} s (phase {last[0]})")


def summary(plan: dict[str, Any], figures: Figures, findings: list[str]) -> str:
    st = plan.get("status") or {}
    lines = [f"\nUpgradePlan {plan['metadata']['name']}: {st.get('phase')} — {st.get('message', '')}", ""]
    lines.append(f"{'hop':<4} {'step':<22} {'target':<10} {'state':<10} {'seconds':>8}")
    for step in st.get("steps", []):
        started, finished = _ts(step.get("startedAt")), _ts(step.get("finishedAt"))
        secs = f"{(finished - started).total_seconds():8.1f}" if started and finished else " " * 8
        target = step.get("server") or step.get("database") or ""
        lines.append(f"{step.get('hop', 0):<4} {step['name']:<22} {target:<10} {step.get('state', ''):<10} {secs}")
    lines += ["", f"{'server':<8} {'kind':<16} {'version':<8} {'online':<7} {'replication':<12} health"]
    for s in st.get("servers", []):
        lines.append(f"{s['name']:<8} {s.get('kind', ''):<16} {s.get('version', ''):<8} {s.get('online')!s:<7} "
                     f"{s.get('replication', ''):<12} {s.get('health', '')}")
    lines += ["", f"{'database':<10} {'schema':<8} last backup"]
    for d in st.get("databases", []):
        backup = d.get("lastBackup") or {}
        lines.append(f"{d['name']:<10} {d.get('schemaVersion', ''):<8} {backup.get('id', '-')} "
                     f"(hop {backup.get('hop', '-')}, verified {backup.get('verified', '-')})")
    lines += ["", f"wall time {figures.wall_s:.1f} s; the critical path the servers imposed"
                  f" {figures.critical_path_s:.1f} s (ratio {figures.ratio:.2f}, as bench/plan_latency.py measures it)",
              f"API writes per step (status patches and Events): {figures.writes_per_step:.2f}",
              "the guide in the simulators' journal (independent audit): " + (
                  "all kept" if not findings else f"{len(findings)} BROKEN: " + "; ".join(findings)),
              json.dumps(figures.as_json(), sort_keys=True)]
    return "\n".join(lines)


def run(timeout: float = 900.0, settle: float = 1.0, install: float = 1.0, migration_step: float = 1.0,
        caught_up: float = 1.0) -> int:
    work = REPO / ".testbed" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    bed = Testbed.at(REPO / ".testbed")
    print("== test bed (kube-apiserver, etcd, PostgreSQL)", flush=True)
    bed.up()
    print("== simulated estate (examples/fleet.yaml)", flush=True)
    fleet = estate.start_fleet(bed, REPO / "examples" / "fleet.yaml", work, settle=settle, install=install,
                               migration_step=migration_step, caught_up=caught_up, prefix="demo")
    operator = None
    try:
        for name, server in fleet.endpoints["servers"].items():
            print(f"   {name:<6} {server['kind']:<16} {server['url']}", flush=True)
        print("== operator (uwm-upgrade run)", flush=True)
        operator = estate.start_operator(bed, [NAMESPACE], work)
        estate.kubectl(bed, "create", "namespace", NAMESPACE, check=False)
        # A plan of an earlier demo goes first (the operator removes its finalizer).
        estate.kubectl(bed, "delete", "upgradeplan", "--all", "-n", NAMESPACE, "--timeout=120s", check=False)
        docs = estate.plan_documents(REPO / "examples" / "upgradeplan.yaml", fleet, NAMESPACE)
        name = next(d["metadata"]["name"] for d in docs if d["kind"] == "UpgradePlan")
        print(f"== kubectl apply -f examples/secrets.yaml -f examples/upgradeplan.yaml -n {NAMESPACE} (URLs and "
              "secrets of this fleet)\n", flush=True)
        start = time.monotonic()
        estate.apply(bed, docs)
        plan = watch(bed, name, timeout)
        wall = time.monotonic() - start
        writes = _metric(operator.metrics_port, "uwm_upgrade_status_writes_total") or 0.0
        fleet_file = REPO / "examples" / "fleet.yaml"
        figures = latency.measure(bed, plan, NAMESPACE, fleet, fleet_file, wall, writes,
                                  int(plan["spec"].get("maxConcurrentServers", 1)), Timing(settle, caught_up))
        top = evidence.topology(fleet_file, fleet.env)
        broken = [str(f) for f in audit.audit(evidence.journal(fleet.state_odbc), top, evidence.backups(fleet.odbc))]
        print(summary(plan, figures, broken))
        print(f"\nThe test bed is still up: `. .testbed/env && kubectl get uplan -n {NAMESPACE}`; "
              "`uwm-dev testbed down` stops it.")
        return 0 if (plan.get("status") or {}).get("phase") == "Succeeded" and not broken else 1
    finally:
        if operator is not None:
            operator.process.stop()
        fleet.process.stop()
