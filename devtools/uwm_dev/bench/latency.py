"""One plan, timed: the wall time against the critical path the servers imposed (`critical.py`).

`bench/plan_latency.py` (and `make demo`'s summary) run the demo estate (examples/fleet.yaml and
examples/upgradeplan.yaml, or `--fleet/--plan`) with 1 s delays on the test bed, wait until the plan is
over, and measure from the estate's own records: the wall time from the plan's creation to Succeeded, the
critical path list-scheduled from the journal, their ratio, the API writes per step (status patches, from
the operator's metric, plus the Events it posted), the operator's reaction latency per dependency edge,
and the CPU seconds each process of the test bed spent meanwhile (`cpu.py`). It ends with one JSON line.

What the wall time holds: the operator's own work, from the moment the plan exists until its status says
it is over. So the clock starts once the operator is up and watching (its liveness endpoint answers, which
kopf serves once its start-up is done) and the plan's Secrets exist, right before the plan is created
through the API client; it stops when a watch on the plan delivers the terminal phase. (It used to run
from before `kubectl apply` of the Secrets and the plan, an operator maybe still starting, to the first
`kubectl get` that saw the end: each kubectl run costs some 0.2-0.5 s, and the operator's own start-up up to
a second, none of it the plan's.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..referee import evidence
from ..testbed import estate
from ..testbed.bed import Testbed
from .cpu import bed_meter
from .critical import Timing, critical_path, reactions

REPO = Path(__file__).resolve().parents[3]
TERMINAL = ("Succeeded", "Failed", "RolledBack")


@dataclass(frozen=True)
class Figures:
    wall_s: float
    critical_path_s: float
    writes_per_step: float
    reaction_ms: dict[str, float]
    phase: str
    steps: int
    status_writes: int = 0
    events: int = 0
    cpu_s: dict[str, float] | None = None  # CPU seconds by process of the test bed (`cpu.py`)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.critical_path_s if self.critical_path_s else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 2), "critical_path_s": round(self.critical_path_s, 2),
                "ratio": round(self.ratio, 3), "writes_per_step": round(self.writes_per_step, 2),
                "reaction_ms": self.reaction_ms, "phase": self.phase, "steps": self.steps,
                "status_writes": self.status_writes, "events": self.events, "cpu_s": self.cpu_s}


def metric(port: int, name: str) -> float | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def events_posted(bed: Testbed, namespace: str, plan: str) -> int:
    out = estate.kubectl(bed, "get", "events.events.k8s.io", "-n", namespace, "-o", "json")
    return sum(1 for e in json.loads(out).get("items", []) if (e.get("regarding") or {}).get("name") == plan)


def measure(bed: Testbed, plan: dict[str, Any], namespace: str, fleet: estate.Fleet, fleet_file: Path,
            wall: float, writes: float, max_concurrent: int, timing: Timing) -> Figures:
    status = plan.get("status") or {}
    targets = [h["to"] for h in status.get("path", [])]
    spec = plan["spec"]
    databases: dict[str, list[str]] = {d["name"]: [] for d in spec["databases"]}
    for s in [*spec.get("managementServers", []), *spec.get("personalizationServers", [])]:
        databases[s["database"]].append(s["name"])
    events = evidence.journal(fleet.state_odbc)
    path = critical_path(events, targets, databases, timing, max_concurrent)
    posted = events_posted(bed, namespace, plan["metadata"]["name"])
    steps = step_count(status)
    return Figures(wall, path, (writes + posted) / max(steps, 1), reactions(events, timing),
                   str(status.get("phase")), steps, int(writes), posted)


def step_count(status: dict[str, Any]) -> int:
    """Every step the plan went through: those its status lists, and those of the finished hops whose
    steps left it for `path[].summary` (the status bounded: core/hop_summary.py)."""
    summarised = sum(int((h.get("summary") or {}).get(k) or 0) for h in status.get("path", [])
                     for k in ("succeeded", "skipped"))
    return len(status.get("steps", [])) + summarised


def run(fleet_file: Path, plan_file: Path, *, max_concurrent: int | None, delay: float = 1.0,
        timeout: float = 900.0, bed_dir: Path | None = None, out: Any = sys.stderr,
        keep: dict[str, Any] | None = None) -> Figures:
    """The plan run once on a fleet of its own; `keep` (if given) receives the plan as it ended."""
    bed = Testbed.at(bed_dir or REPO / ".testbed" / "bench")
    bed.up()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    work = bed.dir / "runs" / namespace
    timing = Timing(settle=delay, caught_up=delay)
    fleet = estate.start_fleet(bed, fleet_file, work, settle=delay, install=delay, migration_step=delay,
                               caught_up=delay)
    operator = None
    try:
        estate.kubectl(bed, "create", "namespace", namespace)
        operator = estate.start_operator(bed, [namespace], work)
        overrides: dict[str, Any] = {"healthCheck": {"timeoutSeconds": 120, "periodSeconds": 1, "successThreshold": 1}}
        if max_concurrent is not None:
            overrides["maxConcurrentServers"] = max_concurrent
        docs = estate.plan_documents(plan_file, fleet, namespace, **overrides)
        plan_doc = next(d for d in docs if d["kind"] == "UpgradePlan")
        name = str(plan_doc["metadata"]["name"])
        concurrency = int(plan_doc["spec"].get("maxConcurrentServers", 1))
        estate.apply(bed, [d for d in docs if d is not plan_doc])  # the Secrets, before the clock
        wait_ready(operator)
        meter = bed_meter(bed, operator.process.proc.pid, [fleet.process.proc.pid])
        meter.start()
        wall, plan = timed_plan(bed, namespace, plan_doc, timeout)
        cpu = meter.seconds()
        if keep is not None:
            keep.update(plan)
        writes = metric(operator.metrics_port, "uwm_upgrade_status_writes_total") or 0.0
        figures = replace(measure(bed, plan, namespace, fleet, fleet_file, wall, writes, concurrency, timing),
                          cpu_s=cpu)
        print(f"plan {name}: {figures.phase} in {wall:.1f} s; critical path {figures.critical_path_s:.1f} s",
              file=out)
        return figures
    finally:
        if operator is not None:
            operator.process.stop()
        fleet.process.stop()
        estate.drop_databases(bed, fleet.databases)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(200 <= resp.status < 300)
    except OSError:
        return False


def wait_ready(operator: estate.Operator, timeout: float = 60.0) -> None:
    """The operator serves its metrics and its liveness endpoint (kopf's start-up is done, its watch
    starting) before the clock starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(operator.metrics_port, "uwm_upgrade_status_writes_total") is not None and \
                _answers(f"http://127.0.0.1:{operator.liveness_port}/healthz"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the operator did not come up within {timeout:.0f} s")


def custom_objects(bed: Testbed) -> Any:
    """The API client's CustomObjectsApi on the test bed (in this process: no kubectl run per call)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(bed.kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(client.ApiClient(configuration))


def timed_plan(bed: Testbed, namespace: str, doc: dict[str, Any], timeout: float,
               api: Any = None) -> tuple[float, dict[str, Any]]:
    """Create the plan and watch it until its phase is terminal: the seconds in between, and the plan."""
    from kubernetes import watch

    from uwm_upgrade.adapters.kube import GROUP, PLURAL, VERSION

    api = api or custom_objects(bed)
    name = doc["metadata"]["name"]
    began = time.monotonic()
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {**doc, "metadata": {
        **doc["metadata"], "namespace": namespace}})
    version = created["metadata"]["resourceVersion"]
    deadline = began + timeout
    while time.monotonic() < deadline:
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            field_selector=f"metadata.name={name}", resource_version=version,
            timeout_seconds=max(1, int(deadline - time.monotonic())))
        for event in stream:
            plan = event["object"]
            version = plan["metadata"]["resourceVersion"]
            if (plan.get("status") or {}).get("phase") in TERMINAL:
                return time.monotonic() - began, plan
    raise TimeoutError(f"plan {name} not over in {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/plan_latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=Path, default=REPO / "examples" / "fleet.yaml")
    parser.add_argument("--plan", type=Path, default=REPO / "examples" / "upgradeplan.yaml")
    parser.add_argument("--max-concurrent", type=int, default=None, help="override spec.maxConcurrentServers")
    parser.add_argument("--delay", type=float, default=1.0, help="the simulators' install, settle, migration"
                                                                 " step and catch-up seconds (default 1)")
    args = parser.parse_args(argv)
    figures = run(args.fleet, args.plan, max_concurrent=args.max_concurrent, delay=args.delay)
    print(json.dumps(figures.as_json(), sort_keys=True))
    return 0 if figures.phase == "Succeeded" else 1
