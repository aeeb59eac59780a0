"""The guide's rules as the operator reads them (core/guide.py): each predicate on its own, and decide()
turning a broken rule into a wait or a failure, never a request.

Whether decide() ever asks for what the guide forbids is not judged here with these same predicates
(decide() filters every effect through them, so such a test could not fail): test_core_referee.py drives
generated estates that obey the simulators' own rules. The property test below throws arbitrary estates
(versions, replication, rotation, locks, phases) at plans in arbitrary states and checks that decide()
always answers and never raises.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import T0, about, at_step, estate, key, later, make_spec, one
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from uwm_upgrade.core.actions import (
    Action,
    BringIntoRotation,
    Fail,
    InstallServer,
    RestoreBackup,
    RestoreReplication,
    UpgradeSchema,
    Wait,
    steps_of,
)
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Reason, ServerPhase, StepName, StepState
from uwm_upgrade.core.guide import violations
from uwm_upgrade.core.observations import InstallObservation

SPEC = make_spec()
ALL = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")
ISO = {n: {"replication_enabled": False, "in_rotation": False} for n in ALL}
STEP = key(StepName.INSTALL_SERVER, server="ms-2")


def rules(action: Any, **servers: dict[str, Any]) -> set[str]:
    merged = {n: {**ISO[n], **servers.get(n, {})} for n in ALL}
    seen = estate(SPEC, servers=merged, databases={"mgmt-db": {"schema_version": "2021.1"}})
    return {v.rule for v in violations(SPEC, seen, action)}


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, set()),
    ({"ps-2": {"replication_enabled": True}}, {"replication-enabled"}),
    ({"ms-1": {"in_rotation": True}}, {"in-rotation"}),
    ({"ms-2": {"phase": ServerPhase.INSTALLING}}, {"busy"}),
    ({"ms-2": {"phase": ServerPhase.FAILED}}, {"unavailable"}),
])
def test_install_rules(changes: dict[str, dict[str, Any]], expected: set[str]) -> None:
    assert rules(InstallServer(STEP, "ms-2", "2023.1"), **changes) == expected


def test_no_jump_beyond_two_releases_nor_beyond_the_spec() -> None:
    assert rules(InstallServer(STEP, "ms-2", "2024.1")) == {"version-jump"}  # 3 releases
    one = make_spec(maxMajorVersionsPerStep=1)
    seen = estate(one, servers=ISO)
    assert {v.rule for v in violations(one, seen, InstallServer(STEP, "ms-2", "2023.1"))} == {"version-jump"}
    assert rules(InstallServer(STEP, "ms-2", "2019.1")) == {"unknown-release"}


def test_no_install_while_another_server_holds_the_schema_lock() -> None:
    seen = estate(SPEC, servers=ISO, databases={"mgmt-db": {"lock_holder": "ms-1"}})
    found = violations(SPEC, seen, InstallServer(STEP, "ms-2", "2023.1"))
    assert [(v.rule, v.transient) for v in found] == [("schema-locked", True)]


def test_only_a_server_on_the_new_release_upgrades_the_schema() -> None:
    action = UpgradeSchema(key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db"), "ms-1", "mgmt-db",
                           "2023.1")
    assert rules(action) == {"version-mismatch"}
    assert rules(action, **{"ms-1": {**ISO["ms-1"], "version": "2023.1"}}) == set()


def test_servers_that_cannot_serve_stay_out_of_rotation() -> None:
    action = BringIntoRotation(key(StepName.BRING_INTO_ROTATION), ("ms-1",))
    assert rules(action, **{"ms-1": {**ISO["ms-1"], "version": "2023.1"}}) == {"version-mismatch"}
    assert rules(action) == set()


def test_replication_comes_back_only_on_one_release() -> None:
    action = RestoreReplication(key(StepName.RESTORE_REPLICATION), ("ps-1", "ps-2", "ps-3"))
    assert rules(action, **{"ps-2": {**ISO["ps-2"], "version": "2023.1"}}) == {"replication-mixed-versions"}
    assert rules(action) == set()


def test_no_restore_during_a_migration() -> None:
    seen = estate(SPEC, servers=ISO, databases={"mgmt-db": {"lock_holder": "ms-1"}})
    action = RestoreBackup(key(StepName.RESTORE_BACKUP, database="mgmt-db"), "mgmt-db", "p1-h1")
    assert [v.rule for v in violations(SPEC, seen, action)] == ["schema-locked"]


def test_decide_turns_a_broken_rule_into_a_failure_not_a_request() -> None:
    """Someone re-enabled replication mid-hop: the next install is not asked for."""
    seen = estate(SPEC, "2021.1", servers={**ISO, "ms-1": {**ISO["ms-1"], "version": "2023.1"},
                                           "ps-1": {**ISO["ps-1"], "version": "2023.1"},
                                           "ps-3": {"replication_enabled": True, "in_rotation": False}},
                  databases={"mgmt-db": {"schema_version": "2023.1"}, "pers-db": {"schema_version": "2023.1"}})
    action = one(decide(SPEC, at_step(SPEC, seen, STEP), seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.GUIDE_RULE
    assert "replication-enabled: replication is enabled on ps-3" in action.message


def test_decide_waits_out_a_transient_rule() -> None:
    seen = estate(SPEC, servers=ISO, databases={"mgmt-db": {"lock_holder": "someone"}})
    step = key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db")
    action = about(decide(SPEC, at_step(SPEC, seen, step), seen, T0), step)
    assert isinstance(action, Wait) and action.reason is Reason.ESTATE_BUSY and action.steps == (step,)


RELEASES = ("2021.1", "2022.1", "2023.1", "2024.1", "2025.1")
PLAN = at_step(SPEC, estate(SPEC), key(StepName.DISABLE_REPLICATION))
HOP_ONE = [s.key for s in PLAN.steps if s.hop == 1]

# Mostly states inside hop 1 (2021.1 -> 2023.1), where every kind of effect is possible; sometimes not.
versions = st.sampled_from(("2021.1", "2023.1") * 4 + ("2022.1", "2024.1"))
rarely = st.sampled_from((False,) * 5 + (True,))
server_changes = st.fixed_dictionaries({}, optional={
    "version": versions,
    "phase": st.sampled_from([ServerPhase.RUNNING] * 6 + list(ServerPhase)),
    "replication_enabled": rarely,
    "in_rotation": rarely,
    "active_requests": st.integers(0, 1),
    "caught_up": st.booleans(),
    "install": st.builds(InstallObservation, st.sampled_from((None, "2021.1", "2023.1")),
                         st.sampled_from((None, None, "boom"))),
})
database_changes = st.fixed_dictionaries({}, optional={
    "schema_version": versions,
    "lock_holder": st.sampled_from((None,) * 6 + ALL),
    "updates_required": rarely,
    "migration": st.sampled_from([MigrationStatus.IDLE] * 4 + list(MigrationStatus)),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(servers=st.fixed_dictionaries({n: server_changes for n in ALL}),
       databases=st.fixed_dictionaries({"mgmt-db": database_changes, "pers-db": database_changes}),
       cursor=st.sampled_from(HOP_ONE),
       state=st.sampled_from([StepState.PENDING, StepState.RUNNING]),
       age=st.sampled_from([1.0, 100.0, 5000.0]),
       healthy=st.booleans(),
       policy=st.sampled_from(["Halt", "Rollback"]),
       paused=st.booleans())
def test_decide_answers_every_state_of_a_hop_and_never_raises(
        servers: dict[str, dict[str, Any]], databases: dict[str, dict[str, Any]], cursor: Any,
        state: StepState, age: float, healthy: bool, policy: str, paused: bool) -> None:
    spec = make_spec(failurePolicy=policy, maxConcurrentServers=2, paused=paused)
    isolated = {n: {**ISO[n], **servers[n]} for n in ALL}  # as from the third step of a hop on
    seen = estate(spec, "2021.1", servers=isolated, databases=databases, healthy=healthy)
    status = at_step(spec, seen, cursor, state=state)
    actions = decide(spec, status, seen, later(age))
    event(" + ".join(sorted({type(a).__name__ for a in actions})))
    assert actions and all(isinstance(a, Action) for a in actions)
    steps = [k for a in actions for k in steps_of(a)]
    assert len(steps) == len(set(steps)), f"one action per step: {actions}"
