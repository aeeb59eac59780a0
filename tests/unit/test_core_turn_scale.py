"""A turn's cost grows with the plan, not with its square: 200 servers, 50 at once (the wide plan).

Each check counts the work itself (how often a step's key is computed, how often the group's handler is
called), never a time: a timed test measures the machine. Before these fixes one turn of the wide plan
took 250 ms of CPU on average (750 ms at worst), most of it looking steps up by walking all 800 of them.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from core_builders import T0, at_step, estate, key, make_spec

from uwm_upgrade.core.actions import InstallServer
from uwm_upgrade.core.enums import ServerPhase, StepName
from uwm_upgrade.core.models import StepStatus, UpgradePlanSpec
from uwm_upgrade.core.observations import Observations
from uwm_upgrade.core.plan_status import UpgradePlanStatus
from uwm_upgrade.core.status import start_step
from uwm_upgrade.core.turn import before_effect

F, T = "2021.1", "2023.1"
SERVERS = 200


def wide() -> tuple[UpgradePlanSpec, Observations, UpgradePlanStatus]:
    """The plan at its bounded group: pers-db's schema upgraded through ps-1, the 199 others to install."""
    servers = [{"name": f"ps-{i}", "url": f"http://127.0.0.1:{7800 + i}", "database": "pers-db",
                "replicationRole": "Master" if i == 1 else "Subscriber"} for i in range(1, SERVERS + 1)]
    spec = make_spec(personalizationServers=servers, managementServers=[], maxConcurrentServers=50, databases=[
        {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "pers"}}])
    isolated = {s.name: {"replication_enabled": False} for s in spec.servers()}
    seen = estate(spec, F, servers={**isolated, "ps-1": {"replication_enabled": False, "version": T,
                                                           "phase": ServerPhase.RUNNING}},
                  databases={"pers-db": {"schema_version": T}})
    return spec, seen, at_step(spec, seen, key(StepName.INSTALL_SERVER, server="ps-2"))


@pytest.fixture
def key_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a step's key was computed (the unit of a walk over the steps)."""
    count = [0]
    real = StepStatus.key

    def counted(self: StepStatus) -> Any:
        count[0] += 1
        return real.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(StepStatus, "key", property(counted))
    return count


def test_a_turn_that_starts_50_installs_walks_the_steps_a_bounded_number_of_times(key_lookups: list[int]) -> None:
    spec, seen, status = wide()
    steps = len(status.steps)
    key_lookups[0] = 0
    turn = before_effect(spec, status, seen, T0)
    assert len([a for a in turn.effects if isinstance(a, InstallServer)]) == 50
    # about 4 walks' worth now (the index built, the lanes); it was about 107 (a walk per step looked up
    # or started, and the group's handler once per server)
    assert key_lookups[0] < 10 * steps, f"{key_lookups[0]} key lookups for {steps} steps"


def test_starting_steps_one_after_another_never_walks_the_steps_again(key_lookups: list[int]) -> None:
    status = wide()[2]
    status.step(status.steps[-1].key)  # the index of these steps is built once
    key_lookups[0] = 0
    for s in status.steps[-100:]:
        status = start_step(status, s.key, T0)
    assert key_lookups[0] < 1000, key_lookups[0]  # 100 steps: each key computed a few times, no walk of 800


def test_a_lookup_finds_the_first_of_equal_keys_and_sees_every_change() -> None:
    status = wide()[2]
    first, last = status.steps[0], status.steps[-1]
    doubled = status.model_copy(update={"steps": (*status.steps, first.model_copy(update={"message": "second"}))})
    found = doubled.step(first.key)
    assert found is not None and found.message == first.message  # as a walk from the start finds
    started = start_step(status, last.key, T0)
    after = started.step(last.key)
    assert after is not None and after.state.value == "Running"
    before = status.step(last.key)
    assert before is not None and before.state.value == "Pending"  # the old status is as it was
    assert status.server("ps-7") is not None and status.server("ps-7").name == "ps-7"  # type: ignore[union-attr]
    assert status.server("nobody") is None


def test_a_turn_that_starts_50_installs_derives_its_columns_and_checks_the_estate_once_per_look(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each action of a turn once derived the printer columns (`with_display`, three walks of the steps)
    and the guide's estate-wide rules (every server's replication and rotation), so a turn starting 50
    installs walked both 50 times: 58 ms of CPU, now 16. Counted here as the walks themselves."""
    from uwm_upgrade.core import status, transitions, turn

    displays, estate_checks = [0], [0]
    real_display, real_servers = status.with_display, UpgradePlanSpec.servers

    def display(s: UpgradePlanStatus) -> UpgradePlanStatus:
        displays[0] += 1
        return real_display(s)

    def servers(self: UpgradePlanSpec) -> Any:
        if sys._getframe(1).f_code.co_name in ("_replication_and_rotation", "_estate_wide"):  # the guide's walk
            estate_checks[0] += 1
        return real_servers(self)

    for module in (status, transitions, turn):
        monkeypatch.setattr(module, "with_display", display, raising=False)
    monkeypatch.setattr(UpgradePlanSpec, "servers", servers)
    spec, seen, plan = wide()
    result = before_effect(spec, plan, seen, T0)
    assert len([a for a in result.effects if isinstance(a, InstallServer)]) == 50
    assert displays[0] <= 4, f"the printer columns derived {displays[0]} times in one turn"
    assert estate_checks[0] <= 4, f"the guide's estate-wide rules walked {estate_checks[0]} times in one turn"
