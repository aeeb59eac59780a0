"""Observation at the boundary: agent state mapping and status-page confirmation streaks."""

from __future__ import annotations

import datetime as dt
from typing import Any

from uwm_upgrade.adapters.servers import AgentState, StatusPage
from uwm_upgrade.core.enums import ReplicationRole, ServerKind, ServerPhase
from uwm_upgrade.core.models import Server
from uwm_upgrade.engine.observe import Estate, _health, server_observation

MS1 = Server("ms-1", ServerKind.MANAGEMENT, "http://ms-1:7751", "mgmt-db", True, ReplicationRole.NONE)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class ScriptedPages:
    """Stands in for the HTTP client: answers status-page polls from a script, counting the polls."""

    def __init__(self, pages: list[tuple[bool, str]]) -> None:
        self.pages, self.polls = list(pages), 0

    async def status_page(self, server: str, url: str, kind: str) -> StatusPage:
        ok, version = self.pages.pop(0)
        self.polls += 1
        return StatusPage(ok=ok, http_status=200 if ok else 503, summary="x", version=version)


async def _run(script: list[tuple[bool, str]], times: list[float], period: float = 2.0) -> tuple[list[Any], int]:
    pages = ScriptedPages(script)
    estate = Estate(pages, {})  # type: ignore[arg-type]
    seen = [await _health(estate, MS1, T0 + dt.timedelta(seconds=t), period) for t in times]
    return [(h.ok, h.consecutive) for h in seen], pages.polls


async def test_polls_at_most_once_per_period() -> None:
    seen, polls = await _run([(True, "2023.1"), (True, "2023.1")], [0, 0.5, 1.9, 2.0])
    assert polls == 2
    assert seen == [(True, 1), (True, 1), (True, 1), (True, 2)]


async def test_a_failure_or_another_version_restarts_the_streak() -> None:
    script = [(True, "2021.1"), (True, "2021.1"), (False, "2021.1"), (True, "2023.1"), (True, "2023.1")]
    seen, _ = await _run(script, [0, 2, 4, 6, 8])
    assert seen == [(True, 1), (True, 2), (False, 0), (True, 1), (True, 2)]


def test_agent_state_maps_to_the_core_observation() -> None:
    state = AgentState.model_validate({
        "name": "ms-1", "kind": "Management", "version": "2023.1", "phase": "SomethingNew", "settled": True,
        "install": {"targetVersion": "2023.1", "error": None},
        "database": {"name": "mgmt-db", "schemaVersion": "2023.1"},
        "replication": {"role": "None", "enabled": False, "caughtUp": True},
        "rotation": {"loadBalanced": True, "inRotation": False, "activeRequests": 0}})
    obs = server_observation(MS1, state)
    assert obs.phase is ServerPhase.STARTING  # an unknown phase is never taken for Running
    assert (obs.load_balanced, obs.in_rotation, obs.version) == (True, False, "2023.1")


async def test_a_confirming_page_still_says_why_it_last_failed() -> None:
    pages = ScriptedPages([(False, "2023.1"), (True, "2023.1")])
    estate = Estate(pages, {})  # type: ignore[arg-type]
    failed = await _health(estate, MS1, T0, 1.0)
    ok = await _health(estate, MS1, T0 + dt.timedelta(seconds=1), 1.0)
    assert failed.detail.startswith("status page answered 503")
    assert ok.ok and "last failed with answered 503" in ok.detail
