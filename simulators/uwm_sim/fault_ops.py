"""Injected faults at run time: adding and clearing them, and consuming them where they strike.

Why apart from `service`: faults are the test hooks, not the server's behaviour. They strike in the
middlewares (slow answers, transient agent errors), on the status page (a health flap, a failing test),
in the installer and the migration, or take the whole process down (crash). Every change of the pending
list is written through to the state database; every hit of a fault that a client cannot tell from a
real failure (`test-fail`, `http-500`, `drop-connection`) is journalled as `fault-hit`, so an audit
knows what was injected and what the operator did about it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from . import store
from .estate import DatabaseState
from .faults import Fault, FaultKind, parse_request
from .journal import FAILED, OK, REFUSED
from .service import Outcome, ServerRuntime


async def save(rt: ServerRuntime, fn: Callable[[Any], None]) -> None:
    await asyncio.to_thread(rt.locked_tx, lambda cur, db: fn(cur))


async def add_fault(rt: ServerRuntime, body: Any) -> Outcome:
    try:
        fault = parse_request(body)
    except ValueError as exc:
        return Outcome(400, {"error": str(exc)})
    if fault.kind == FaultKind.CRASH:
        seconds = fault.delay_ms / 1000 if fault.delay_ms else rt.timing.crash_restart_seconds
        await save(rt, lambda cur: rt.journal(cur, "fault", OK, kind="crash", downSeconds=seconds))
        rt.spawn(crash(rt, seconds))
        return Outcome(200, {"faults": rt.faults.to_json(), "crashing": True})
    with rt.fault_lock:
        rt.faults.add(fault)
        dumped = rt.faults.dumps()

    def write(cur: Any) -> None:
        store.update_server(cur, rt.name, faults=dumped)
        rt.journal(cur, "fault", OK, **fault.to_json())
    await save(rt, write)
    return Outcome(200, {"faults": rt.faults.to_json()})


async def clear_faults(rt: ServerRuntime) -> Outcome:
    with rt.fault_lock:
        rt.faults.clear()

    def work(cur: Any, db: DatabaseState) -> None:
        me = rt.me(cur)
        store.update_server(cur, rt.name, faults="[]")
        if me.installing and me.install_fault == "hang":
            error = "install aborted: the installer hung and was stopped"
            store.update_server(cur, rt.name, install_finished=time.time(), install_error=error, install_fault=None)
            rt.journal(cur, "install-complete", FAILED, error=error, **{"from": me.version, "to": me.install_target})
        rt.journal(cur, "faults-cleared", OK)
    await asyncio.to_thread(rt.locked_tx, work)
    return Outcome(200, {"faults": []})


async def _write_through(rt: ServerRuntime, dumped: str, hit: dict[str, Any] | None = None) -> None:
    """Store the pending list; with `hit`, journal a `fault-hit` in the same transaction."""
    def write(conn: Any) -> None:
        cur = conn.cursor()
        store.update_server(cur, rt.name, faults=dumped)
        if hit is not None:
            rt.journal(cur, "fault-hit", FAILED, **hit)
    await rt.estate.state.call(write)


async def take_request_fault(rt: ServerRuntime, kind: str) -> Fault | None:
    if rt.faults.peek(kind) is None:
        return None
    fault, dumped = rt.take_fault(kind)
    if fault is not None:
        await _write_through(rt, dumped)
    return fault


async def flap(rt: ServerRuntime) -> bool:
    """True when this status request answers unhealthy because of an injected health flap."""
    if rt.faults.peek(FaultKind.HEALTH_FLAP) is None:
        return False
    fail, rt.flap_fail_next = rt.flap_fail_next, not rt.flap_fail_next
    return fail and await take_request_fault(rt, FaultKind.HEALTH_FLAP) is not None


async def failing_test(rt: ServerRuntime, path: str) -> str | None:
    """The status page test to show failed on this (otherwise confirming) answer, from `test-fail`."""
    if rt.faults.peek(FaultKind.TEST_FAIL) is None:
        return None
    fault, dumped = rt.take_fault(FaultKind.TEST_FAIL)
    if fault is None:
        return None
    await _write_through(rt, dumped, {"kind": fault.kind, "test": fault.test, "path": path})
    return fault.test


async def transient_hit(rt: ServerRuntime) -> Fault | None:
    """For one agent call: the `http-500` or `drop-connection` fault that hits it, if one does."""
    if not any(rt.faults.peek(k) for k in (FaultKind.HTTP_500, FaultKind.DROP_CONNECTION)):
        return None
    with rt.fault_lock:
        fault, drew = rt.faults.take_transient()
        dumped = rt.faults.dumps()
    if drew:
        await _write_through(rt, dumped)
    return fault


async def journal_hit(rt: ServerRuntime, fault: Fault, method: str, path: str) -> None:
    await rt.estate.state.call(lambda conn: rt.journal(conn.cursor(), "fault-hit", FAILED, kind=fault.kind,
                                                       method=method, path=path))


async def journal_auth_rejection(rt: ServerRuntime, method: str, path: str) -> None:
    """Journal a rejected (401) agent call, at most one `auth` entry per server per second."""
    now_entry, flush_in = rt.auth_guard.reject(time.time())
    if now_entry:
        await _write_auth(rt, method, path, 1)
    elif flush_in is not None:
        rt.spawn(_flush_auth(rt, flush_in, method, path))


async def _flush_auth(rt: ServerRuntime, delay: float, method: str, path: str) -> None:
    while delay > 0:
        await asyncio.sleep(delay)
        delay = rt.auth_guard.flush_wait(time.time())
    count = rt.auth_guard.take()
    if count:
        await _write_auth(rt, method, path, count)


async def _write_auth(rt: ServerRuntime, method: str, path: str, count: int) -> None:
    try:
        await rt.estate.state.call(lambda conn: rt.journal(conn.cursor(), "auth", REFUSED, path=path,
                                                           method=method, count=count))
    finally:
        rt.auth_guard.written(time.time())


async def crash(rt: ServerRuntime, seconds: float) -> None:
    await asyncio.sleep(0.05)  # let the answer to the fault request go out first
    rt.down = True
    if rt.site is not None:
        await rt.site.stop()
    await save(rt, lambda cur: rt.journal(cur, "crash", OK, downSeconds=seconds))
    await asyncio.sleep(seconds)

    def restarted(cur: Any) -> None:
        store.update_server(cur, rt.name, started_at=time.time())
        rt.journal(cur, "restart", OK)
    # journalled (and its start time set) before it listens again: nothing answers from a restarted
    # server that its journal does not show restarted yet; it listens again even if that write fails
    try:
        await save(rt, restarted)
    finally:
        if rt.site is not None:
            await rt.site.start()
        rt.down = False
