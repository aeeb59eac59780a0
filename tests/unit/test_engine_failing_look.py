"""A turn that fails the plan looks again, every agent asked, before it decides.

Seen in the e2e test of a failed schema migration: the portal (read by the turn) already said Failed,
while ms-1's state, as its long poll had last brought it, still said MigratingSchema (its answer with
DatabaseUpdatesRequired was on its way). The Failed condition then described ms-1 as migrating. A
failure's message is what a human acts on: it describes the estate as every agent says it now.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from core_builders import at_step, estate, key
from engine_fakes import LoopHarness

from uwm_upgrade.core.enums import MigrationStatus, ServerPhase, StepName, StepState
from uwm_upgrade.core.models import parse_spec, status_to_wire
from uwm_upgrade.engine import reconciler
from uwm_upgrade.engine.credentials import read_credentials

US = key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db")
FAILED = {"mgmt-db": {"migration": MigrationStatus.FAILED, "migration_by": "ms-1", "schema_version": "2022.1",
                      "migration_error": "the schema migration failed midway"}}


def _servers(phase: ServerPhase) -> dict[str, dict[str, Any]]:
    iso: dict[str, dict[str, Any]] = {n: {"replication_enabled": False, "in_rotation": False}
                                      for n in ("ms-1", "ms-2", "ps-1", "ps-2")}
    return {**iso, "ms-1": {**iso["ms-1"], "version": "2023.1", "phase": phase}}


async def test_a_turn_that_fails_the_plan_decides_from_every_agent_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    spec = parse_spec(h.body["spec"])
    stale = estate(spec, "2021.1", servers=_servers(ServerPhase.MIGRATING_SCHEMA), databases=FAILED)
    fresh = estate(spec, "2021.1", servers=_servers(ServerPhase.DATABASE_UPDATES_REQUIRED), databases=FAILED)
    # the plan as approved names the databases the Secrets point at, as the loop reads them
    targets = (await read_credentials(h.runtime.secret, "ns", spec)).database_targets()
    stale, fresh = replace(stale, database_targets=targets), replace(fresh, database_targets=targets)
    started = at_step(spec, stale, US, state=StepState.RUNNING, baseline_seen=replace(estate(spec),
                                                                                     database_targets=targets))
    h.kube.plan["status"] = status_to_wire(started)
    looks: list[frozenset[str]] = []

    async def observe(est: Any, spec: Any, status: Any, now: Any, competing: tuple[str, ...] = ()) -> Any:
        looks.append(frozenset(name for name in est.watch.watched if est.watch.current(name) is None))
        return stale if len(looks) == 1 else fresh  # the first look's ms-1 is what a long poll brought

    monkeypatch.setattr(reconciler, "observe", observe)
    await h.run(3, until=lambda: h.kube.status.get("phase") == "Failed")
    message = str(h.kube.status.get("message"))
    assert h.kube.status.get("phase") == "Failed", message
    assert "the schema upgrade of mgmt-db to 2023.1 through ms-1 failed" in message, message
    assert "ms-1 2023.1 DatabaseUpdatesRequired" in message and "MigratingSchema" not in message, message
    assert len(looks) == 2 and looks[1] == frozenset(("ms-1", "ms-2", "ps-1", "ps-2")), looks  # all asked again
