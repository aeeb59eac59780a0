"""One wide plan: many Personalization Servers on one database, upgraded `maxConcurrentServers` at a time.

`bench/wide_plan.py` writes a fleet file and a plan of `--servers N` (default 200) Personalization Servers
(one Master, the others its Subscribers, on one database) and runs them through `latency.run` (the same
clock, critical path and write count as `bench/plan_latency.py`, with `--max-concurrent M`, default 50).
It ends with one JSON line: the figures of `plan_latency.py` plus "servers", "max_concurrent" and
"status_bytes" (the size of the plan's status, as JSON, when it is over: what etcd holds of it).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

import yaml

from .latency import REPO, run

RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]
LABEL = {"upgrade.uwm.io/plan-secret": "true"}


def fleet_config(servers: int) -> dict[str, Any]:
    """`servers` Personalization Servers on database pers-db: ps-1 the Master, the others Subscribers."""
    return {
        "releases": RELEASES, "tokenEnv": "UWM_SIM_TOKEN", "host": "127.0.0.1",
        "stateDatabase": {"odbc": "${UWM_SIM_STATE_ODBC}"},
        "timing": {"settleSeconds": "${UWM_SIM_SETTLE_SECONDS:-30}", "installSeconds": "${UWM_SIM_INSTALL_SECONDS:-5}",
                   "migrationStepSeconds": "${UWM_SIM_MIGRATION_STEP_SECONDS:-1}",
                   "caughtUpSeconds": "${UWM_SIM_CAUGHT_UP_SECONDS:-2}", "crashRestartSeconds": 2},
        "databases": [{"name": "pers-db", "kind": "Personalization", "odbc": "${UWM_SIM_PERS_ODBC}",
                       "schemaVersion": RELEASES[0], "seedRows": 50}],
        "servers": [{"name": f"ps-{n}", "kind": "Personalization", "database": "pers-db", "port": 0,
                     "replicationRole": "Master" if n == 1 else "Subscriber", "replicationGroup": "default",
                     "replicationEnabled": True} for n in range(1, servers + 1)],
    }


def plan_documents(servers: int, max_concurrent: int) -> list[dict[str, Any]]:
    """The plan (URLs and Secrets' values are filled in from the fleet by `estate.plan_documents`)."""
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "uwm-databases", "labels": LABEL},
         "stringData": {"pers-db": "set from the fleet"}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "uwm-agent", "labels": LABEL},
         "stringData": {"token": "set from the fleet"}},
    ]
    plan = {"apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan", "metadata": {"name": "wide"}, "spec": {
        "targetVersion": RELEASES[-1], "releases": RELEASES, "strategy": "InPlace",
        "maxConcurrentServers": max_concurrent, "agentSecretRef": {"name": "uwm-agent", "key": "token"},
        "databases": [{"name": "pers-db", "kind": "Personalization",
                       "connectionSecretRef": {"name": "uwm-databases", "key": "pers-db"}}],
        "personalizationServers": [{"name": f"ps-{n}", "url": "http://127.0.0.1:1", "database": "pers-db",
                                    "replicationRole": "Master" if n == 1 else "Subscriber"}
                                   for n in range(1, servers + 1)],
    }}
    return [*secrets, plan]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/wide_plan.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=200, help="Personalization Servers (default 200)")
    parser.add_argument("--max-concurrent", type=int, default=50, help="maxConcurrentServers (default 50)")
    parser.add_argument("--delay", type=float, default=1.0, help="the simulators' delays (default 1 s)")
    args = parser.parse_args(argv)
    if args.servers < 2 or args.max_concurrent < 1:
        parser.error("--servers must be at least 2 and --max-concurrent at least 1")
    work = REPO / ".testbed" / "bench" / "wide" / uuid.uuid4().hex[:6]
    work.mkdir(parents=True, exist_ok=True)
    fleet_file, plan_file = work / "fleet.yaml", work / "plan.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet_config(args.servers), sort_keys=False))
    plan_file.write_text(yaml.safe_dump_all(plan_documents(args.servers, args.max_concurrent), sort_keys=False))
    kept: dict[str, Any] = {}
    figures = run(fleet_file, plan_file, max_concurrent=args.max_concurrent, delay=args.delay, keep=kept,
                  timeout=1800.0)
    result = {**figures.as_json(), "servers": args.servers, "max_concurrent": args.max_concurrent,
              "status_bytes": len(json.dumps(kept.get("status") or {}, separators=(",", ":")))}
    print(json.dumps(result, sort_keys=True))
    return 0 if figures.phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())

