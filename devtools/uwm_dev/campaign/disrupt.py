"""Carry out a scenario's disruptions against the real processes of a run, from a thread beside it.

Each disruption waits for its moment (seconds after the plan was applied, or a step of the plan starting
to run, seen through the API server), then strikes: SIGKILL and restart the operator, kill and restart the
simulator fleet on the same ports and databases, stop kube-apiserver or PostgreSQL for a while, inject
agent faults. What was done is logged with its time, so a run that did not hold says what hit it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..testbed import estate
from ..testbed.bed import Testbed
from .scenarios import FAILURES, Disruption, Kind, Scenario

POLL = 0.2


@dataclass
class Run:
    """The processes of one run, which the disruptions act on (they replace the operator and fleet)."""

    bed: Testbed
    namespace: str
    plan: str
    fleet: estate.Fleet
    operator: estate.Operator
    restart_operator: Callable[[], estate.Operator]
    started: float = field(default_factory=time.monotonic)
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def note(self, text: str) -> None:
        with self.lock:
            self.log.append(f"{time.monotonic() - self.started:6.1f}s {text}")


def agent(run: Run, server: str, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(run.fleet.url(server) + path, data=data, method=method, headers={
        "Authorization": f"Bearer {run.fleet.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def inject(run: Run, server: str, body: dict[str, Any]) -> None:
    status = 0
    for _ in range(20):  # the fleet may be restarting
        status = agent(run, server, "POST", "/agent/v1/faults", body)
        if status == 200:
            break
        time.sleep(0.5)
    run.note(f"fault {body} on {server}: {status}")


def _step_running(run: Run, step: str) -> bool:
    try:
        plan = estate.get_plan(run.bed, run.namespace, run.plan)
    except RuntimeError:  # the API server may be down (another disruption)
        return False
    return any(s.get("name") == step and s.get("state") == "Running"
               for s in (plan.get("status") or {}).get("steps", []))


def _wait_moment(run: Run, d: Disruption) -> bool:
    """Until the disruption's moment; False when the run ended first."""
    while not run.done.is_set():
        if d.on_step is not None:
            if _step_running(run, d.on_step):
                return True
        elif time.monotonic() - run.started >= d.at_seconds:
            return True
        run.done.wait(POLL)
    return False


def prime(run: Run, scenario: Scenario) -> None:
    """Faults that must be in place before the plan starts (the failures: a hang, a failing migration)."""
    for d in scenario.disruptions:
        if d.kind in FAILURES and d.server is not None:
            inject(run, d.server, {"kind": d.kind.value})


def strike(run: Run, d: Disruption) -> None:
    if d.kind in FAILURES or d.kind is Kind.SLOW_SUBSCRIBER or not _wait_moment(run, d):
        return
    match d.kind:
        case Kind.OPERATOR_KILL:
            for i in range(d.count):
                run.operator.process.kill()
                run.note("operator SIGKILLed")
                run.done.wait(0.5 * i)
                run.operator = run.restart_operator()
                run.note("operator started again")
                if run.done.wait(2.0 + 1.5 * i):
                    return
        case Kind.FLEET_KILL:
            run.note(f"fleet SIGKILLed ({d.on_step} running)")
            run.fleet.restart(down_seconds=d.seconds)
            run.note("fleet started again")
        case Kind.APISERVER_RESTART:
            run.bed.stop_apiserver()
            run.note("kube-apiserver stopped")
            run.done.wait(d.seconds)
            run.bed.start_apiserver()
            run.note("kube-apiserver started again")
        case Kind.POSTGRES_RESTART:
            run.bed.stop_postgres()
            run.note("PostgreSQL stopped (immediate)")
            time.sleep(d.seconds)  # never cut short: the database must come back
            run.bed.start_postgres()
            run.note("PostgreSQL started again")
        case Kind.AGENT_ERRORS:
            for kind in ("http-500", "drop-connection"):
                inject(run, d.server or "ms-1", {"kind": kind, "count": d.count, "percent": d.percent,
                                                 "seed": d.count * 7 + d.percent})
        case Kind.SERVER_UNREACHABLE:
            inject(run, d.server or "ps-1", {"kind": "crash", "delayMs": int(d.seconds * 1000)})
        case _:
            pass


def start(run: Run, scenario: Scenario) -> list[threading.Thread]:
    threads = [threading.Thread(target=strike, args=(run, d), daemon=True, name=str(d)) for d in scenario.disruptions]
    for t in threads:
        t.start()
    return threads
