"""Helpers for the end-to-end policy and control tests: the agent API of the simulated servers, the
journal (installs, overlap), the plan's status, and the checks a successful run must pass."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from uwm_sim.journal import Event

from e2e.e2e_support import E2E


def agent(env: E2E, server: str, method: str, path: str, body: dict[str, Any] | None = None,
          token: str | None = None) -> tuple[int, Any]:
    """One call of a simulated server's HTTP API (agent calls carry the fleet's bearer token); (status, JSON)."""
    assert env.fleet is not None
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(env.fleet.url(server) + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token or env.fleet.token}", "Accept": "application/json",
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def inject(env: E2E, server: str, kind: str, count: int = 1, delay_ms: int = 0) -> None:
    """`POST /agent/v1/faults` on one server (install-fail, install-hang, health-flap, migration-fail, crash, slow)."""
    status, answer = agent(env, server, "POST", "/agent/v1/faults", {"kind": kind, "count": count, "delayMs": delay_ms})
    assert status == 200, (status, answer)


def server_state(env: E2E, server: str) -> dict[str, Any]:
    """The server's own view (`GET /agent/v1/state`), not the operator's."""
    status, answer = agent(env, server, "GET", "/agent/v1/state")
    assert status == 200, (status, answer)
    return dict(answer)


def installs(events: list[Event], server: str | None = None) -> list[Event]:
    """Install requests the agents accepted (not no-ops, not refusals)."""
    return [e for e in events if e.op == "install" and e.outcome == "ok" and not e.detail.get("noop")
            and (server is None or e.server == server)]


def max_overlap(events: list[Event], servers: set[str] | None = None) -> int:
    """The most installs running at once, from the journal (accepted install to its install-complete)."""
    edges: list[tuple[float, int]] = []
    started: dict[str, float] = {}
    for e in events:
        if servers is not None and e.server not in servers:
            continue
        if e.op == "install" and e.outcome == "ok" and not e.detail.get("noop"):
            started[str(e.server)] = e.ts
        elif e.op == "install-complete" and str(e.server) in started:
            edges += [(started.pop(str(e.server)), 1), (e.ts, -1)]
    edges += [(t, 1) for t in started.values()]
    running = peak = 0
    for _, delta in sorted(edges):  # at equal times an end (-1) sorts before a start
        running += delta
        peak = max(peak, running)
    return peak


def condition(plan: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in plan["status"]["conditions"] if c["type"] == kind)


def steps_of(plan: dict[str, Any], name: str, hop: int | None = None, server: str | None = None,
             database: str | None = None) -> list[dict[str, Any]]:
    return [s for s in (plan.get("status") or {}).get("steps", [])
            if s["name"] == name and (hop is None or s["hop"] == hop) and (server is None or s.get("server") == server)
            and (database is None or s.get("database") == database)]


def operator_log(env: E2E) -> str:
    return (env.work / "operator.log").read_text(errors="replace")


def assert_succeeded(env: E2E, plan: dict[str, Any], target: str, servers: list[str]) -> None:
    """Succeeded, everything at the target, every step done once, the guide kept, user data intact."""
    status = plan["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert condition(plan, "Succeeded")["status"] == "True"
    assert condition(plan, "Failed")["status"] == "False"
    assert {s["name"]: s["version"] for s in status["servers"]} == dict.fromkeys(servers, target)
    assert all(s["health"] == "Healthy" for s in status["servers"]), status["servers"]
    assert all(d["schemaVersion"] == target and d["lastBackup"]["verified"] for d in status["databases"])
    unfinished = [(s["name"], s.get("server"), s["state"]) for s in status["steps"]
                  if s["state"] not in ("Succeeded", "Skipped")]
    assert not unfinished, unfinished
    events = env.assert_guide_kept()
    hops = len(status["path"])
    for server in servers:  # once per hop, never twice
        assert len(installs(events, server)) == hops, [e.detail for e in installs(events, server)]
        assert server_state(env, server)["version"] == target
    assert env.user_data() == env.data_before
