"""Benchmark: start an N-server simulator fleet (`uwm-sim fleet` as a subprocess) and print figures.

    uwm-dev bench-fleet [--servers 200] [--odbc ODBC | --testbed DIR]

Measures the time from launch to the "ready" line, the simulator process's resident memory (RSS) when
ready and its peak, the time for every server's status page to answer, agent-API latency, and the time
to stop on SIGTERM. The databases are created fresh on the given PostgreSQL server (ODBC connection
string of any database there, or `UWM_BENCH_ODBC`), or on a test bed started for the purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pyodbc
import yaml

RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1"]
TOKEN = "bench-token-0123456789"


def fleet_doc(servers: int) -> dict[str, Any]:
    n_ms = servers // 2
    ms = [{"name": f"ms-{i:03d}", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True}
          for i in range(n_ms)]
    ps = [{"name": f"ps-{i:03d}", "kind": "Personalization", "database": "pers-db", "port": 0,
           "replicationGroup": f"g{i // 5}", "replicationRole": "Master" if i % 5 == 0 else "Subscriber"}
          for i in range(servers - n_ms)]
    pools = [{"name": f"pool-{p}", "port": 0, "servers": [s["name"] for s in ms[p * 10:(p + 1) * 10]]}
             for p in range((n_ms + 9) // 10)]
    return {"releases": RELEASES, "tokenEnv": "BENCH_TOKEN", "stateDatabase": {"odbcEnv": "BENCH_STATE"},
            "timing": {"settleSeconds": 0, "installSeconds": 0.1},
            "databases": [{"name": "mgmt-db", "kind": "Management", "odbcEnv": "BENCH_MGMT", "seedRows": 1000},
                          {"name": "pers-db", "kind": "Personalization", "odbcEnv": "BENCH_PERS", "seedRows": 10000}],
            "servers": ms + ps, "loadBalancers": pools}


def create_databases(odbc: str) -> tuple[dict[str, str], list[str]]:
    names = {key: f"bench_{key.lower()}_{uuid.uuid4().hex[:8]}" for key in ("STATE", "MGMT", "PERS")}
    conn = pyodbc.connect(odbc, autocommit=True)
    try:
        for name in names.values():
            conn.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()
    env = {f"BENCH_{k}": re.sub(r"DATABASE=[^;]*", f"DATABASE={v}", odbc, flags=re.IGNORECASE)
           for k, v in names.items()}
    return env, list(names.values())


def drop_databases(odbc: str, names: list[str]) -> None:
    conn = pyodbc.connect(odbc, autocommit=True)
    try:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def run(servers: int, odbc: str) -> dict[str, Any]:
    env, dbs = create_databases(odbc)
    figures: dict[str, Any] = {"servers": servers}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.yaml"
        path.write_text(yaml.safe_dump(fleet_doc(servers)))
        began = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uwm_sim", "fleet", str(path), "--json", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, **env, "BENCH_TOKEN": TOKEN})
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 300)
            if not line:
                raise SystemExit(f"uwm-sim failed: {(await proc.communicate())[1].decode()}")
            figures["ready_s"] = round(time.monotonic() - began, 2)
            info = json.loads(line)
            figures["start_in_process_s"] = info["startedInSeconds"]
            figures["rss_ready_mib"] = round(rss_kib(proc.pid)[0] / 1024, 1)
            urls = [s["statusUrl"] for s in info["servers"].values()]
            bases = [s["url"] for s in info["servers"].values()]
            sem = asyncio.Semaphore(32)
            latencies: list[float] = []
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
                async def get(url: str) -> int:
                    async with sem:
                        t0 = time.monotonic()
                        async with session.get(url) as r:
                            await r.read()
                            latencies.append(time.monotonic() - t0)
                            return r.status
                t0 = time.monotonic()
                codes = await asyncio.gather(*(get(u) for u in urls))
                figures["all_status_pages_s"] = round(time.monotonic() - t0, 2)
                figures["status_pages_ok"] = sum(1 for c in codes if c == 200)
                latencies.clear()
                await asyncio.gather(*(get(b + "/agent/v1/state") for b in bases))
                figures["agent_state_p50_ms"] = round(statistics.median(latencies) * 1000, 1)
                figures["agent_state_p95_ms"] = round(statistics.quantiles(latencies, n=20)[-1] * 1000, 1)
            rss, peak = rss_kib(proc.pid)
            figures["rss_after_load_mib"] = round(rss / 1024, 1)
            figures["rss_peak_mib"] = round(peak / 1024, 1)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 60)
            figures["stop_s"] = round(time.monotonic() - t0, 2)
            figures["exit_code"] = proc.returncode
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            drop_databases(odbc, dbs)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uwm-dev bench-fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--odbc", default=os.environ.get("UWM_BENCH_ODBC"),
                        help="ODBC string of a PostgreSQL database whose server may create databases")
    parser.add_argument("--testbed", default=".testbed/bench", help="test bed to start when no --odbc is given")
    args = parser.parse_args(argv)
    bed = None
    odbc = args.odbc
    if not odbc:
        from .testbed.bed import Testbed

        bed = Testbed.at(args.testbed)
        bed.up(kube=False)
        odbc = bed.odbc()
    try:
        figures = asyncio.run(run(args.servers, odbc))
    finally:
        if bed is not None:
            bed.down(quiet=True)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    return 0 if figures.get("status_pages_ok") == args.servers and figures.get("exit_code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
