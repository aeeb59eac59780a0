"""Helpers shared by the simulator tests: polling, and reading a UWM database directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyodbc

from uwm_sim import uwmdb
from uwm_sim.client import AgentClient

T = TypeVar("T")

TOKEN = "sim-test-token-0123456789"
RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]
FAST = {"settleSeconds": 0, "installSeconds": 0.05, "migrationStepSeconds": 0.02, "caughtUpSeconds": 0.05,
        "crashRestartSeconds": 0.3}


async def wait_for(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 10.0,
                   every: float = 0.02) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value: {value!r}")
        await asyncio.sleep(every)


def reaches(clients: dict[str, Any]) -> dict[str, str | None]:
    """What each client of a `GET /agent/v1/clients` answer reaches (a server name, or None)."""
    return {c["client"]: c["server"] for c in clients["clients"]}


async def phase(client: AgentClient) -> str:
    reply = await client.state()
    assert reply.status == 200, reply.text
    return str(reply.body["phase"])


async def wait_phase(client: AgentClient, wanted: str, within: float = 10.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        reply = await client.state()
        assert reply.status == 200, reply.text
        return dict(reply.body)
    return await wait_for(probe, lambda s: s["phase"] == wanted, within)


async def wait_portal(client: AgentClient, status: str, within: float = 10.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        reply = await client.portal()
        assert reply.status == 200, reply.text
        return dict(reply.body)
    return await wait_for(probe, lambda p: p["status"] == status, within)


def checksum(odbc: str) -> tuple[int, str]:
    conn = pyodbc.connect(odbc)
    try:
        return uwmdb.user_data_checksum(conn)
    finally:
        conn.close()


def query(odbc: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = pyodbc.connect(odbc, autocommit=True)
    try:
        return [tuple(r) for r in conn.execute(sql, *params).fetchall()]
    finally:
        conn.close()


async def start_cli(args: list[str], env: dict[str, str], within: float = 30.0) -> tuple[Any, dict[str, Any]]:
    """Start `python -m uwm_sim fleet ... --json` and wait for its ready line."""
    import json
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "uwm_sim", *args, "--json",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ, **env})
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), within)
    except TimeoutError:
        proc.kill()
        raise
    if not line:
        err = await proc.stderr.read() if proc.stderr else b""
        raise AssertionError(f"uwm-sim exited {await proc.wait()}: {err.decode()}")
    return proc, json.loads(line)


async def stop_cli(proc: Any, within: float = 15.0) -> tuple[int, str]:
    import signal

    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), within)
    return int(proc.returncode), err.decode()


def acceptance_fleet(state: str, mgmt: str, pers: str, **timing: float) -> dict[str, Any]:
    """2 Management servers and 3 Personalization servers (1 master, 2 subscribers) on two databases."""
    return {
        "releases": RELEASES,
        "token": TOKEN,
        "stateDatabase": {"odbc": state},
        "timing": {**FAST, **timing},
        "databases": [
            {"name": "mgmt-db", "kind": "Management", "odbc": mgmt, "schemaVersion": "2021.1", "seedRows": 25},
            {"name": "pers-db", "kind": "Personalization", "odbc": pers, "schemaVersion": "2021.1",
             "seedRows": 40},
        ],
        "servers": [
            {"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True},
            {"name": "ms-2", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True},
            {"name": "ps-1", "kind": "Personalization", "database": "pers-db", "port": 0, "loadBalanced": True,
             "replicationRole": "Master"},
            {"name": "ps-2", "kind": "Personalization", "database": "pers-db", "port": 0, "loadBalanced": True,
             "replicationRole": "Subscriber"},
            {"name": "ps-3", "kind": "Personalization", "database": "pers-db", "port": 0, "loadBalanced": True,
             "replicationRole": "Subscriber"},
        ],
        "loadBalancers": [
            {"name": "ms-pool", "port": 0, "servers": ["ms-1", "ms-2"]},
            {"name": "ps-pool", "port": 0, "servers": ["ps-1", "ps-2", "ps-3"]},
        ],
    }


def big_fleet(state: str, mgmt: str, pers: str, servers: int = 200, **timing: float) -> dict[str, Any]:
    """`servers` servers, half Management (load-balanced pools of 10), half Personalization
    (replication groups of one master and four subscribers), all on ephemeral ports."""
    n_ms = servers // 2
    ms = [{"name": f"ms-{i:03d}", "kind": "Management", "database": "mgmt-db", "port": 0, "loadBalanced": True}
          for i in range(n_ms)]
    ps = [{"name": f"ps-{i:03d}", "kind": "Personalization", "database": "pers-db", "port": 0,
           "replicationGroup": f"g{i // 5}", "replicationRole": "Master" if i % 5 == 0 else "Subscriber"}
          for i in range(servers - n_ms)]
    pools = [{"name": f"pool-{p}", "port": 0, "servers": [s["name"] for s in ms[p * 10:(p + 1) * 10]]}
             for p in range((n_ms + 9) // 10)]
    return {
        "releases": RELEASES, "token": TOKEN, "stateDatabase": {"odbc": state}, "timing": {**FAST, **timing},
        "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": mgmt, "seedRows": 100},
                      {"name": "pers-db", "kind": "Personalization", "odbc": pers, "seedRows": 1000}],
        "servers": ms + ps, "loadBalancers": pools,
    }
