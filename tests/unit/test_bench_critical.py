"""The critical path of a plan, list-scheduled from what a journal says the servers took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from uwm_dev.bench.critical import Timing, critical_path, hops_of, reactions, schedule_hop


@dataclass
class Ev:
    seq: int
    ts: float
    server: str | None
    database: str | None
    op: str
    outcome: str = "ok"
    detail: dict[str, Any] = field(default_factory=dict)


def journal(install: float = 1.0, migration: float = 2.0, subscribers: bool = False) -> list[Ev]:
    """One hop to 2023.1: a database `a` (a-1 first, a-2, a-3) and `b` (b-1 first), timed as given."""
    events: list[Ev] = []
    t = 0.0

    def add(server: str | None, database: str | None, op: str, **detail: Any) -> None:
        events.append(Ev(len(events) + 1, t, server, database, op, "ok", detail))

    if subscribers:
        add("b-1", "b", "register", snapshot={"name": "b-1", "role": "Subscriber"})
    for server, db in (("a-1", "a"), ("b-1", "b")):
        add(server, db, "install", to="2023.1")
        t += install
        add(server, db, "install-complete", to="2023.1")
        add(server, db, "schema-migrate", to="2023.1")
        t += migration
        add(server, db, "schema-migrated", to="2023.1")
    for server in ("a-2", "a-3"):
        add(server, "a", "install", to="2023.1")
        t += install
        add(server, "a", "install-complete", to="2023.1")
    return events


DBS = {"a": ["a-1", "a-2", "a-3"], "b": ["b-1"]}


def test_one_at_a_time() -> None:
    # a-1 [0,1] + migration to 3 (settled at 2); b-1 [3,4] + migration to 6; a-2 [6,7] settles 8; a-3 [8,9] 10
    work = hops_of(journal(), ["2023.1"])[0]
    assert schedule_hop(work, DBS, Timing(settle=1.0, caught_up=0.0), 1) == pytest.approx(10.0)


def test_databases_and_servers_side_by_side() -> None:
    # a-1 and b-1 at once: both migrated at 3; a-2 and a-3 from 3, settled at 5
    work = hops_of(journal(), ["2023.1"])[0]
    assert schedule_hop(work, DBS, Timing(settle=1.0, caught_up=0.0), 3) == pytest.approx(5.0)


def test_a_first_server_settles_during_its_migration_and_subscribers_catch_up_after() -> None:
    events = journal(install=1.0, migration=5.0, subscribers=True)
    total = critical_path(events, ["2023.1"], DBS, Timing(settle=2.0, caught_up=0.5), 4)
    assert total == pytest.approx(1 + 5 + 1 + 2 + 0.5)  # install, migration, then a-2/a-3 install and settle


def test_reactions_are_the_operators_latencies() -> None:
    found = reactions(journal(), Timing(settle=1.0, caught_up=0.0))
    assert found["installed->schema-migrate"] == 0.0
    assert "schema-migrated->install" in found


def test_the_steps_of_a_summarised_hop_count_in_writes_per_step() -> None:
    """A finished hop's steps leave status.steps for path[].summary: writes per step counts them still."""
    from uwm_dev.bench.latency import step_count

    status = {"steps": [{"name": "Preflight"}] * 24,
              "path": [{"from": "2021.1", "to": "2023.1", "summary": {"succeeded": 19, "skipped": 2}},
                       {"from": "2023.1", "to": "2025.1"}]}
    assert step_count(status) == 45
    assert step_count({}) == 0
