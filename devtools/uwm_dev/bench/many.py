"""Many plans at once: N separate estates, each upgraded by its own plan, all by one operator process.

`bench/many_plans.py --plans N` runs the demo estate's shape (two load-balanced Management servers on one
database, a Personalization Master and two Subscribers on another; 5 servers) N times over, `--per-fleet`
estates to a simulator fleet process, each estate with databases of its own, and one `uwm-upgrade run`
watching the one namespace of their N plans. First one plan alone (the baseline), then the N plans,
created together. Each plan's ratio is its wall time (from its creation to the watch seeing it over)
over its own critical path (list-scheduled from its estate's journal entries, as `critical.py` does for
one plan). It ends with one JSON line: {"plans", "median_ratio", "p95_ratio", "baseline_ratio", "rss_mb"
(the operator's peak resident memory), "writes_per_step" (status patches and Events over the steps of
every plan), "wall_s", "cpu_s" (the CPU seconds of each process of the test bed, `cpu.py`)}.

PostgreSQL needs a connection per UWM database for the operator and some for the simulators: the
bench's own test bed (`.testbed/many`) starts PostgreSQL with `UWM_TESTBED_PG_MAX_CONNECTIONS`
(default here 1500) so that 100 estates (200 databases) fit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..referee import evidence
from ..testbed import estate
from ..testbed.bed import Testbed
from .cpu import bed_meter
from .critical import Timing, critical_path
from .latency import REPO, TERMINAL, custom_objects, metric, step_count, wait_ready

PLAN_FILE = REPO / "examples" / "upgradeplan.yaml"
RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]
PLAN_SECRET_LABEL = {"upgrade.uwm.io/plan-secret": "true"}


@dataclass
class Estates:
    """The fleets started for `count` estates: per estate its fleet, server URLs and databases."""

    fleets: list[estate.Fleet]
    of: list[int]  # estate -> index of its fleet
    token: str

    def fleet(self, i: int) -> estate.Fleet:
        return self.fleets[self.of[i]]


def _servers(i: int) -> list[dict[str, Any]]:
    """Estate `i`: the demo estate's five servers, named `e<i>-...`, on databases of its own."""
    p = f"e{i}"
    pool = {"kind": "Management", "database": f"{p}-mgmt-db", "port": 0, "loadBalanced": True, "inRotation": True}
    group = {"kind": "Personalization", "database": f"{p}-pers-db", "port": 0, "replicationGroup": p,
             "replicationEnabled": True}
    return [{"name": f"{p}-ms-1", **pool}, {"name": f"{p}-ms-2", **pool},
            {"name": f"{p}-ps-1", **group, "replicationRole": "Master"},
            {"name": f"{p}-ps-2", **group, "replicationRole": "Subscriber"},
            {"name": f"{p}-ps-3", **group, "replicationRole": "Subscriber"}]


def start_estates(bed: Testbed, first: int, count: int, per_fleet: int, work: Path, delay: float) -> Estates:
    """`count` estates (numbered from `first`), `per_fleet` to a `uwm-sim fleet` process."""
    token = uuid.uuid4().hex
    fleets, of = [], []
    numbers = list(range(first, first + count))
    for f, start in enumerate(range(0, count, per_fleet)):
        group = numbers[start:start + per_fleet]
        prefix = f"m{uuid.uuid4().hex[:6]}"
        db_names = {f"e{i}-{kind}-db": f"{prefix}_e{i}_{kind}" for i in group for kind in ("mgmt", "pers")}
        odbc = estate.create_databases(bed, [*db_names.values(), f"{prefix}_state"])
        env = {**os.environ, "UWM_SIM_TOKEN": token, "UWM_SIM_STATE_ODBC": odbc[f"{prefix}_state"]}
        databases = []
        for n, (name, db) in enumerate(db_names.items()):
            env[f"UWM_SIM_DB{n}_ODBC"] = odbc[db]
            databases.append({"name": name, "kind": "Management" if "-mgmt-" in name else "Personalization",
                              "odbc": f"${{UWM_SIM_DB{n}_ODBC}}", "schemaVersion": RELEASES[0], "seedRows": 20})
        config = {
            "releases": RELEASES, "tokenEnv": "UWM_SIM_TOKEN", "host": "127.0.0.1",
            "stateDatabase": {"odbc": "${UWM_SIM_STATE_ODBC}"},
            "timing": {"settleSeconds": delay, "installSeconds": delay, "migrationStepSeconds": delay,
                       "caughtUpSeconds": delay, "crashRestartSeconds": 2},
            "databases": databases,
            "servers": [s for i in group for s in _servers(i)],
            "loadBalancers": [{"name": f"e{i}-ms-pool", "port": 0, "servers": [f"e{i}-ms-1", f"e{i}-ms-2"]}
                              for i in group],
        }
        fleet_file = work / f"fleet-{f}.yaml"
        fleet_file.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [estate._bin("uwm-sim"), "fleet", str(fleet_file), "--json", "--ephemeral-ports", "--reset"]
        process, endpoints = estate._spawn_fleet(cmd, env, work / f"fleet-{f}.log", 300.0)
        fleets.append(estate.Fleet(process, endpoints, token, odbc[f"{prefix}_state"],
                                   {name: odbc[db] for name, db in db_names.items()}, fleet_file, env,
                                   [*db_names.values(), f"{prefix}_state"]))
        of += [f] * len(group)
    return Estates(fleets, of, token)


def plan_documents(estates: Estates, first: int, count: int, namespace: str) -> list[dict[str, Any]]:
    """The example plan, once per estate (its servers and databases renamed `e<i>-...`), and its Secrets."""
    template = next(d for d in yaml.safe_load_all(PLAN_FILE.read_text()) if d and d["kind"] == "UpgradePlan")
    agent = {"name": "uwm-agent", "namespace": namespace, "labels": PLAN_SECRET_LABEL}
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": agent,
                                   "stringData": {"token": estates.token}}]
    for n in range(count):
        i, fleet = first + n, estates.fleet(n)
        plan = json.loads(json.dumps(template))
        spec = plan["spec"]
        plan["metadata"] = {"name": f"e{i}", "namespace": namespace}
        spec["agentSecretRef"] = {"name": "uwm-agent", "key": "token"}
        spec["healthCheck"] = {"timeoutSeconds": 120, "periodSeconds": 1, "successThreshold": 1}
        for db in spec["databases"]:
            db["name"] = f"e{i}-{db['name']}"
            db["connectionSecretRef"] = {"name": f"e{i}-dbs", "key": db["name"]}
        for key in ("managementServers", "personalizationServers"):
            for server in spec[key]:
                server["name"], server["database"] = f"e{i}-{server['name']}", f"e{i}-{server['database']}"
                server["url"] = fleet.url(server["name"])
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": f"e{i}-dbs", "namespace": namespace, "labels": PLAN_SECRET_LABEL},
                     "stringData": {db["name"]: fleet.odbc[db["name"]] for db in spec["databases"]}})
        docs.append(plan)
    return docs


Over = dict[str, tuple[float, dict[str, Any]]]  # per plan: its seconds from creation to its end, its last body


def run_plans(bed: Testbed, namespace: str, plans: list[dict[str, Any]], timeout: float) -> Over:
    """Create every plan, then watch them all until each is over: per plan its seconds and last body."""
    from kubernetes import watch

    from uwm_upgrade.adapters.kube import GROUP, PLURAL, VERSION

    api = custom_objects(bed)
    began: dict[str, float] = {}
    version = "0"
    for doc in plans:
        began[doc["metadata"]["name"]] = time.monotonic()
        created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
        version = created["metadata"]["resourceVersion"]
    over: Over = {}
    deadline = time.monotonic() + timeout
    while len(over) < len(plans) and time.monotonic() < deadline:
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, resource_version=version,
            timeout_seconds=max(1, int(deadline - time.monotonic())))
        for event in stream:
            plan = event["object"]
            name, version = plan["metadata"]["name"], plan["metadata"]["resourceVersion"]
            if name not in over and (plan.get("status") or {}).get("phase") in TERMINAL:
                over[name] = (time.monotonic() - began[name], plan)
                if len(over) == len(plans):
                    break
    missing = sorted(set(began) - set(over))
    if missing:
        raise TimeoutError(f"plans not over in {timeout:.0f} s: {', '.join(missing[:10])}")
    return over


def ratios(estates: Estates, first: int, over: Over, delay: float) -> list[float]:
    """Each plan's wall time over its own critical path (its estate's entries of its fleet's journal)."""
    journals = [evidence.journal(f.state_odbc) for f in estates.fleets]
    timing = Timing(settle=delay, caught_up=delay)
    found = []
    for n in range(len(over)):
        i = first + n
        wall, plan = over[f"e{i}"]
        spec, status = plan["spec"], plan.get("status") or {}
        mine = {s["name"] for key in ("managementServers", "personalizationServers") for s in spec[key]}
        events = [e for e in journals[estates.of[n]] if e.server in mine]
        databases: dict[str, list[str]] = {d["name"]: [] for d in spec["databases"]}
        for key in ("managementServers", "personalizationServers"):
            for s in spec[key]:
                databases[s["database"]].append(s["name"])
        path = critical_path(events, [h["to"] for h in status.get("path", [])], databases, timing,
                             int(spec.get("maxConcurrentServers", 1)))
        found.append(wall / path if path else float("nan"))
    return found


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def events_posted(bed: Testbed, namespace: str) -> int:
    out = estate.kubectl(bed, "get", "events.events.k8s.io", "-n", namespace, "-o", "json")
    return sum(1 for e in json.loads(out).get("items", []) if (e.get("regarding") or {}).get("kind") == "UpgradePlan")


def one_round(bed: Testbed, first: int, count: int, per_fleet: int, delay: float, timeout: float,
              out: Any) -> dict[str, Any]:
    namespace = f"many-{uuid.uuid4().hex[:6]}"
    work = bed.dir / "runs" / namespace
    work.mkdir(parents=True, exist_ok=True)
    print(f"[many] {count} estate(s) on {-(-count // per_fleet)} fleet process(es)", file=out)
    estates = start_estates(bed, first, count, per_fleet, work, delay)
    operator = None
    try:
        estate.kubectl(bed, "create", "namespace", namespace)
        operator = estate.start_operator(bed, [namespace], work)
        docs = plan_documents(estates, first, count, namespace)
        estate.apply(bed, [d for d in docs if d["kind"] == "Secret"])
        wait_ready(operator)
        meter = bed_meter(bed, operator.process.proc.pid, [f.process.proc.pid for f in estates.fleets])
        meter.start()
        started = time.monotonic()
        over = run_plans(bed, namespace, [d for d in docs if d["kind"] == "UpgradePlan"], timeout)
        wall = time.monotonic() - started
        cpu = meter.seconds()
        found = ratios(estates, first, over, delay)
        phases = sorted({str((p.get("status") or {}).get("phase")) for _, p in over.values()})
        steps = sum(step_count(p.get("status") or {}) for _, p in over.values())
        patches = metric(operator.metrics_port, "uwm_upgrade_status_writes_total") or 0.0
        writes = patches + events_posted(bed, namespace)
        return {"plans": count, "median_ratio": round(statistics.median(found), 3),
                "p95_ratio": round(sorted(found)[max(0, round(0.95 * len(found)) - 1)], 3),
                "rss_mb": round(peak_rss_mb(operator.process.proc.pid), 1),
                "writes_per_step": round(writes / max(steps, 1), 2), "wall_s": round(wall, 1), "phases": phases,
                "cpu_s": cpu}
    finally:
        if operator is not None:
            operator.process.stop()
        for fleet in estates.fleets:
            fleet.process.stop()
        estate.drop_databases(bed, [db for f in estates.fleets for db in f.databases])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/many_plans.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=int, default=100, help="how many estates and plans (default 100)")
    parser.add_argument("--per-fleet", type=int, default=10, help="estates per simulator fleet process")
    parser.add_argument("--delay", type=float, default=1.0, help="the simulators' delays (default 1 s)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    if args.plans < 1 or args.per_fleet < 1:
        parser.error("--plans and --per-fleet must be at least 1")
    os.environ.setdefault("UWM_TESTBED_PG_MAX_CONNECTIONS", "1500")
    bed = Testbed.at(REPO / ".testbed" / "many")
    bed.up()
    baseline = one_round(bed, 0, 1, 1, args.delay, args.timeout, sys.stderr)
    print(f"[many] baseline (one plan alone): ratio {baseline['median_ratio']}", file=sys.stderr)
    figures = one_round(bed, 1, args.plans, args.per_fleet, args.delay, args.timeout, sys.stderr)
    figures["baseline_ratio"] = baseline["median_ratio"]
    print(json.dumps(figures, sort_keys=True))
    return 0 if figures["phases"] == ["Succeeded"] else 1
