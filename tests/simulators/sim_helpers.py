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


async def wait_for(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 10.0,
                   every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value: {value!r}")
        await asyncio.sleep(every)


async def phase(client: AgentClient) -> str:
    reply = await client.state()
    assert reply.status == 200, reply.text
    return str(reply.body["phase"])


async def wait_phase(client: AgentClient, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        reply = await client.state()
        assert reply.status == 200, reply.text
        return dict(reply.body)
    return await wait_for(probe, lambda s: s["phase"] == wanted, timeout)


async def wait_portal(client: AgentClient, status: str, timeout: float = 10.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        reply = await client.portal()
        assert reply.status == 200, reply.text
        return dict(reply.body)
    return await wait_for(probe, lambda p: p["status"] == status, timeout)


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
