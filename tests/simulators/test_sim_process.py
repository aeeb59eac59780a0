"""`uwm-sim fleet FILE` as real processes: YAML with env secrets, SIGTERM, one process per server, restarts."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from uwm_sim.client import AgentClient
from uwm_sim.journal import read_journal, violations

from sim_helpers import start_cli, stop_cli, wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


def write_fleet(tmp_path: Path, cfg: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """The fleet file with its secrets moved to environment variables, as a user would write it."""
    env = {"SIM_STATE_ODBC": cfg["stateDatabase"]["odbc"], "SIM_TOKEN": cfg["token"]}
    cfg = {**cfg, "stateDatabase": {"odbc": "${SIM_STATE_ODBC}"}, "token": None, "tokenEnv": "SIM_TOKEN"}
    dbs = []
    for i, d in enumerate(cfg["databases"]):
        env[f"SIM_DB_{i}"] = d["odbc"]
        dbs.append({k: v for k, v in d.items() if k != "odbc"} | {"odbcEnv": f"SIM_DB_{i}"})
    cfg["databases"] = dbs
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    return path, env


async def test_cli_fleet_from_yaml_and_sigterm(estate: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    cfg = estate()
    path, env = write_fleet(tmp_path, cfg)
    assert "PWD" not in path.read_text()
    proc, info = await start_cli(["fleet", str(path)], env)
    try:
        assert info["ready"] and set(info["servers"]) == {"ms-1", "ms-2", "ps-1", "ps-2", "ps-3"}
        assert set(info["loadBalancers"]) == {"ms-pool", "ps-pool"}
        for name, server in info["servers"].items():
            async with AgentClient(server["url"], cfg["token"]) as c:
                assert (await c.status_page(server["kind"])).status == 200, name
                assert (await c.state()).body["name"] == name
    finally:
        code, err = await stop_cli(proc)
    assert code == 0, err
    assert cfg["token"] not in err and "PWD" not in err


async def test_cli_text_output_and_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("releases: [a]\ntoken: long-enough-token\nstateDatabase: {odbc: 'DRIVER={x};PWD=hunter22'}\n"
                    "databases: []\nservers: []\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "uwm_sim", "fleet", str(path),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "configuration error" in err.decode() and "databases" in err.decode() and "hunter22" not in err.decode()
    check = await asyncio.create_subprocess_exec(sys.executable, "-m", "uwm_sim", "check", str(path),
                                                 stderr=asyncio.subprocess.PIPE)
    await check.communicate()
    assert check.returncode == 2


async def test_text_lines_and_ctrl_c(estate: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    path, env = write_fleet(tmp_path, estate())
    import os
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "uwm_sim", "fleet", str(path),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ, **env})
    assert proc.stdout is not None
    lines = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, "uwm-sim exited early"
        lines.append(line)
        if line.startswith("ready"):
            break
    assert any(ln.startswith("ms-1 Management http://") and "/ManagementServer/deployment/status.aspx" in ln
               for ln in lines)
    assert any(ln.startswith("ps-pool LoadBalancer http://") for ln in lines)
    proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0 and "stopped" in out.decode()


async def test_one_process_per_server_agree(estate: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    cfg = estate(migrationStepSeconds=0.3)
    path, env = write_fleet(tmp_path, cfg)
    # Several processes of one fleet: each runs some servers; they share the estate-state database.
    procs = [await start_cli(["fleet", str(path), "--only", only], env)
             for only in ("ms-1,ps-1,ms-pool", "ms-2,ps-2", "ps-3,ps-pool")]
    urls = {name: s["url"] for _, info in procs for name, s in info["servers"].items()}
    c = {name: AgentClient(url, cfg["token"]) for name, url in urls.items()}
    try:
        assert set(urls) == {"ms-1", "ms-2", "ps-1", "ps-2", "ps-3"}
        # Replication still on at the master (process 1) refuses an install on a subscriber (process 2).
        await c["ps-2"].replication(False)
        await c["ps-3"].replication(False)
        await c["ps-2"].rotation(False)
        assert (await c["ps-2"].install("2022.1")).rule == "replication-enabled"
        await c["ps-1"].replication(False)
        await c["ps-1"].rotation(False)
        # ps-3 (process 3) of its load-balancer pool is still in rotation.
        assert (await c["ps-2"].install("2022.1")).rule == "pool-in-rotation"
        await c["ps-3"].rotation(False)
        assert (await c["ps-2"].install("2022.1")).status == 202
        await wait_phase(c["ps-2"], "DatabaseUpdatesRequired")
        # A schema upgrade by process 2 locks out the servers of processes 1 and 3.
        assert (await c["ps-2"].update_all()).status == 202
        assert (await c["ps-1"].state()).body["phase"] == "LockedOut"
        assert (await c["ps-3"].status_page("Personalization")).status == 503
        await wait_portal(c["ps-1"], "Upgrade Successful")
        # The load balancer of process 1 forwards to servers of process 2 (ms-2) too.
        async with AgentClient(procs[0][1]["loadBalancers"]["ms-pool"], None) as lb:
            pool = (await lb.request("GET", "/lb/v1/pool", auth=False)).body
        assert {m["name"]: m["url"] for m in pool["members"]} == {"ms-1": urls["ms-1"], "ms-2": urls["ms-2"]}
    finally:
        for client in c.values():
            await client.close()
        for proc, _ in procs:
            assert (await stop_cli(proc))[0] == 0
    assert violations(read_journal(cfg["stateDatabase"]["odbc"])) == []


async def test_state_survives_a_killed_process(small: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    cfg = small(installSeconds=3.0, migrationStepSeconds=0.8)
    path, env = write_fleet(tmp_path, cfg)
    proc, info = await start_cli(["fleet", str(path)], env)
    url2 = info["servers"]["ms-2"]["url"]
    async with AgentClient(url2, cfg["token"]) as c:
        await c.fault("health-flap", count=3)
        assert (await c.install("2023.1")).status == 202
        asked = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    # Restarted: the install resumes and completes, the pending fault is still there.
    proc, info = await start_cli(["fleet", str(path)], env)
    try:
        async with AgentClient(info["servers"]["ms-2"]["url"], cfg["token"]) as c:
            state = (await c.state()).body
            read = time.monotonic()
            assert state["faults"] == [{"kind": "health-flap", "count": 3, "delayMs": 0}]
            # The install runs by the clock, through the restart: still Installing if the restart took less
            # than it (a loaded machine may take longer; then it is over, as time says).
            if read - asked < cfg["timing"]["installSeconds"] - 0.2:
                assert state["phase"] == "Installing", (read - asked, state["phase"])
            elif read - asked > cfg["timing"]["installSeconds"] + 0.2:
                assert state["phase"] == "DatabaseUpdatesRequired", (read - asked, state["phase"])
            await wait_phase(c, "DatabaseUpdatesRequired", within=10)
            await c.clear_faults()
            assert (await c.update_all()).status == 202
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # Killed mid-migration (two steps of 0.8 s): the lock is still held; a restart finishes the job.
    proc, info = await start_cli(["fleet", str(path)], env)
    try:
        async with AgentClient(info["servers"]["ms-2"]["url"], cfg["token"]) as c:
            await wait_portal(c, "Upgrade Successful", within=10)
            state = await wait_for(c.state, lambda r: r.body["phase"] == "Running")
            assert state.body["database"]["schemaVersion"] == "2023.1" and state.body["database"]["lockHolder"] is None
    finally:
        assert (await stop_cli(proc))[0] == 0
    ops = [e.op for e in read_journal(cfg["stateDatabase"]["odbc"]) if e.server == "ms-2"]
    assert ops.count("start") == 3 and "schema-migrated" in ops
