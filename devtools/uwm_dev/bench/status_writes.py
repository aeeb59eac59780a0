"""What one status write costs the API server, by the size of the plan's spec.

Why: the API server evaluates every CEL rule of the CRD on every update, status writes included (it
ratchets only the errors of unchanged values into warnings), so the spec's pairwise rules (O(n*m) over up
to 200 servers) once cost it 1.4 s of CPU per status write of a 200-server plan. `bench/status_writes.py`
creates, on the bench's test bed, one Running plan per size (the example plan with N Personalization
Servers), writes its status `--writes` times (a message each time, as the operator's writes mostly are)
and reads the kube-apiserver process's CPU time around them. It ends with one JSON line:
{"sizes": [{"servers", "apiserver_cpu_ms_per_write", "wall_ms_per_write"}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import yaml

from ..testbed import estate
from ..testbed.bed import Testbed
from .cpu import cpu_seconds
from .latency import REPO, custom_objects


def plan_of(servers: int) -> dict[str, Any]:
    """The example plan with `servers` Personalization Servers (one Master, the others Subscribers)."""
    plan = next(d for d in yaml.safe_load_all((REPO / "examples" / "upgradeplan.yaml").read_text())
                if d and d["kind"] == "UpgradePlan")
    last = plan["spec"]["personalizationServers"][-1]
    plan["spec"]["personalizationServers"] = [
        {**last, "name": f"ps-{i}", "url": f"http://ps-{i}.example.com:7771",
         "replicationRole": "Master" if i == 0 else "Subscriber"} for i in range(servers)]
    plan["metadata"] = {"name": f"writes-{servers}"}
    assert isinstance(plan, dict)
    return plan


def measure(bed: Testbed, namespace: str, servers: int, writes: int) -> dict[str, Any]:
    from uwm_upgrade.adapters.kube import GROUP, PLURAL, VERSION

    api = custom_objects(bed)
    plan = plan_of(servers)
    name = plan["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, plan)
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {
        "status": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z"}})
    state = bed.state()
    assert state is not None and state.apiserver_pid, "the test bed is not up"
    cpu, began = cpu_seconds(state.apiserver_pid), time.monotonic()
    for i in range(writes):
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                  {"status": {"message": f"write {i}"}})
    cpu, wall = cpu_seconds(state.apiserver_pid) - cpu, time.monotonic() - began
    return {"servers": servers, "apiserver_cpu_ms_per_write": round(1000 * cpu / writes, 2),
            "wall_ms_per_write": round(1000 * wall / writes, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/status_writes.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, nargs="+", default=[3, 50, 200],
                        help="plan sizes: Personalization Servers (default 3 50 200)")
    parser.add_argument("--writes", type=int, default=200, help="status writes per size (default 200)")
    args = parser.parse_args(argv)
    if args.writes < 1 or any(not 1 <= n <= 200 for n in args.servers):
        parser.error("--writes must be at least 1 and every --servers between 1 and 200")
    bed = Testbed.at(REPO / ".testbed" / "bench")
    bed.up()
    estate.kubectl(bed, "apply", "--server-side", "--force-conflicts", "-f",
                   str(REPO / "crds" / "upgradeplans.upgrade.uwm.io.yaml"))
    namespace = f"writes-{uuid.uuid4().hex[:6]}"
    estate.kubectl(bed, "create", "namespace", namespace)
    try:
        sizes = [measure(bed, namespace, n, args.writes) for n in args.servers]
    finally:
        estate.kubectl(bed, "delete", "namespace", namespace, "--wait=false", check=False)
    for size in sizes:
        print(f"[status-writes] {size['servers']} servers: {size['apiserver_cpu_ms_per_write']} ms of "
              f"kube-apiserver CPU per write", file=sys.stderr)
    print(json.dumps({"sizes": sizes}, sort_keys=True))
    return 0
