"""decide() at every step of a hop: status says X, the estate shows Y, the action is Z.

Hop 1 of the example estate goes 2021.1 -> 2023.1 (ms-1 and ps-1 are their databases' first servers;
ms-2, ps-2, ps-3 are the remaining ones). "ISO" is the estate isolated for the upgrade: replication off
and the pool out of rotation, as it is from the third step of a hop on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from core_builders import T0, about, at_step, estate, key, later, make_spec, one

from uwm_upgrade.core.actions import (
    Action,
    AdvanceHop,
    BringIntoRotation,
    ClosePortal,
    CompleteStep,
    DisableReplication,
    Fail,
    InstallServer,
    RestoreReplication,
    Succeed,
    TakeOutOfRotation,
    UpgradeSchema,
    Wait,
    steps_of,
)
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Reason, ServerPhase, StepName, StepState
from uwm_upgrade.core.models import StepKey
from uwm_upgrade.core.observations import HealthObservation, InstallObservation

F, T = "2021.1", "2023.1"
ALL = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")
ISO: dict[str, dict[str, Any]] = {n: {"replication_enabled": False, "in_rotation": False} for n in ALL}


def iso(**servers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The isolated estate with some servers' observations changed."""
    return {n: {**ISO[n], **servers.get(n.replace("-", "_"), {})} for n in ALL}


FIRSTS_AT_T = iso(ms_1={"version": T}, ps_1={"version": T})
MGMT_AT_T = {"mgmt-db": {"schema_version": T}, "pers-db": {"schema_version": T}}


@dataclass
class Case:
    id: str
    step: StepKey
    state: StepState
    expected: type[Action]
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    age: float = 10.0
    healthy: bool = True
    consecutive: int = 1
    check: dict[str, Any] = field(default_factory=dict)
    answer_for: StepKey | None = None  # the step whose action is checked (default: `step`)
    untouched: tuple[StepKey, ...] = ()  # steps no action may concern (one server at a time, say)


DR = key(StepName.DISABLE_REPLICATION)
RO = key(StepName.TAKE_OUT_OF_ROTATION)
IF = key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db")
US = key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db")
VS = key(StepName.VERIFY_SCHEMA, database="mgmt-db")
HC = key(StepName.HEALTH_CHECK, server="ms-1")
IS2 = key(StepName.INSTALL_SERVER, server="ms-2")
BR = key(StepName.BRING_INTO_ROTATION)
RR = key(StepName.RESTORE_REPLICATION)
VR = key(StepName.VERIFY_REPLICATION)

CASES = [
    # replication off on the master and every subscriber, Master first; verified by observation
    Case("replication-on-is-disabled", DR, StepState.PENDING, DisableReplication,
         check={"servers": ("ps-1", "ps-2", "ps-3")}),
    Case("replication-half-off-after-crash", DR, StepState.RUNNING, DisableReplication,
         servers={"ps-1": {"replication_enabled": False}, "ps-2": {"replication_enabled": False}},
         check={"servers": ("ps-3",)}),
    Case("replication-seen-off-completes", DR, StepState.RUNNING, CompleteStep,
         servers={n: {"replication_enabled": False} for n in ALL}, check={"skipped": False}),
    Case("replication-stuck-times-out", DR, StepState.RUNNING, Fail, age=700,
         check={"reason": Reason.TIMEOUT}),
    # out of rotation, then no traffic
    Case("pool-taken-out", RO, StepState.PENDING, TakeOutOfRotation,
         servers={n: {"replication_enabled": False} for n in ALL}, check={"servers": ("ms-1", "ms-2")}),
    Case("pool-draining-waits", RO, StepState.RUNNING, Wait, servers=iso(ms_1={"active_requests": 3}),
         check={"reason": Reason.DRAINING}),
    Case("pool-drained-completes", RO, StepState.RUNNING, CompleteStep, servers=ISO),
    # the first server of a database
    Case("first-server-installs", IF, StepState.PENDING, InstallServer, servers=ISO,
         check={"server": "ms-1", "version": T}),
    Case("first-server-install-in-flight-waits", IF, StepState.RUNNING, Wait,
         servers=iso(ms_1={"phase": ServerPhase.INSTALLING, "install": InstallObservation(T)}),
         check={"reason": Reason.INSTALLING}),
    Case("first-server-installed-while-down-completes", IF, StepState.RUNNING, CompleteStep,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}), age=5000),
    Case("first-server-already-there-is-not-reinstalled", IF, StepState.PENDING, CompleteStep,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED})),
    Case("first-server-lost-request-is-sent-again", IF, StepState.RUNNING, InstallServer, servers=ISO),
    Case("first-server-install-error-halts", IF, StepState.RUNNING, Fail,
         servers=iso(ms_1={"phase": ServerPhase.FAILED, "install": InstallObservation(T, "error 1603")}),
         check={"reason": Reason.INSTALL_FAILED}),
    Case("first-server-database-unreachable-waits", IF, StepState.RUNNING, Wait,
         servers=iso(ms_1={"phase": ServerPhase.FAILED})),
    Case("first-server-install-hangs-times-out", IF, StepState.RUNNING, Fail, age=1900,
         servers=iso(ms_1={"phase": ServerPhase.INSTALLING, "install": InstallObservation(T)}),
         check={"reason": Reason.TIMEOUT}),
    Case("first-server-waits-for-foreign-schema-lock", IF, StepState.PENDING, Wait, servers=ISO,
         databases={"mgmt-db": {"lock_holder": "someone-else"}}),
    # the schema, through the first server's portal
    Case("schema-upgraded-by-first-server", US, StepState.PENDING, UpgradeSchema,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}),
         check={"server": "ms-1", "database": "mgmt-db", "version": T}),
    Case("schema-migration-in-flight-waits", US, StepState.RUNNING, Wait,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.MIGRATING_SCHEMA}),
         databases={"mgmt-db": {"lock_holder": "ms-1", "migration": MigrationStatus.UPGRADING}},
         check={"reason": Reason.MIGRATING_SCHEMA}),
    Case("schema-locked-by-another-waits", US, StepState.PENDING, Wait,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}),
         databases={"mgmt-db": {"lock_holder": "ms-2"}}, check={"reason": Reason.SCHEMA_LOCKED}),
    Case("schema-migrated-while-down-completes", US, StepState.RUNNING, CompleteStep, age=5000,
         servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T, "migration": MigrationStatus.UPGRADE_SUCCESSFUL}},
         check={"skipped": False}),
    Case("schema-already-at-target-is-not-migrated-again", US, StepState.PENDING, CompleteStep,
         servers=iso(ms_1={"version": T}), databases={"mgmt-db": {"schema_version": T}},
         check={"skipped": True}),
    Case("schema-migration-failure-halts", US, StepState.RUNNING, Fail,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}),
         databases={"mgmt-db": {"migration": MigrationStatus.FAILED}}, check={"reason": Reason.MIGRATION_FAILED}),
    Case("schema-failed-portal-status-is-never-migrated-over", US, StepState.PENDING, Fail,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}),
         databases={"mgmt-db": {"migration": MigrationStatus.FAILED, "schema_version": "2022.1"}},
         check={"reason": Reason.MIGRATION_FAILED}),
    Case("schema-failed-portal-at-target-is-not-success", US, StepState.RUNNING, Fail,
         servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"migration": MigrationStatus.FAILED, "schema_version": T}},
         check={"reason": Reason.MIGRATION_FAILED}),
    Case("schema-first-server-not-on-target-halts", US, StepState.PENDING, Fail, servers=ISO,
         check={"reason": Reason.ESTATE_CHANGED}),
    # verification through the portal
    Case("schema-verified", VS, StepState.PENDING, CompleteStep, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T}}),
    Case("schema-upgrade-successful-is-closed", VS, StepState.PENDING, ClosePortal, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T, "migration": MigrationStatus.UPGRADE_SUCCESSFUL}},
         check={"server": "ms-1", "database": "mgmt-db"}),
    Case("schema-updates-still-listed-waits", VS, StepState.PENDING, Wait, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T, "updates_required": True}},
         check={"reason": Reason.AWAITING_SCHEMA}),
    Case("schema-not-at-target-after-migration-halts", VS, StepState.PENDING, Fail,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}),
         check={"reason": Reason.SCHEMA_NOT_VERIFIED}),
    # the status page of the first server
    Case("health-confirmed-completes", HC, StepState.RUNNING, CompleteStep, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T}}),
    Case("health-not-yet-waits-one-period", HC, StepState.RUNNING, Wait, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T}}, healthy=False,
         check={"reason": Reason.AWAITING_HEALTH, "seconds": 2.0}),
    Case("health-below-threshold-waits", HC, StepState.RUNNING, Wait, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T}}, spec={"healthCheck": {"successThreshold": 3}},
         consecutive=2),
    Case("health-at-threshold-completes", HC, StepState.RUNNING, CompleteStep, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T}}, spec={"healthCheck": {"successThreshold": 3}},
         consecutive=3),
    Case("health-timeout-halts", HC, StepState.RUNNING, Fail, servers=iso(ms_1={"version": T}),
         databases={"mgmt-db": {"schema_version": T}}, healthy=False, age=121,
         check={"reason": Reason.HEALTH_CHECK_FAILED}),
    Case("health-starting-server-is-not-confirmed", HC, StepState.RUNNING, Wait,
         servers=iso(ms_1={"version": T, "phase": ServerPhase.STARTING}), databases={"mgmt-db": {"schema_version": T}}),
    # the remaining servers, at most maxConcurrentServers at once
    Case("remaining-server-installs", IS2, StepState.PENDING, InstallServer, servers=FIRSTS_AT_T,
         databases=MGMT_AT_T, check={"server": "ms-2", "version": T}),
    Case("remaining-concurrency-one-waits", IS2, StepState.RUNNING, Wait, databases=MGMT_AT_T,
         servers={**FIRSTS_AT_T, "ms-2": {**ISO["ms-2"], "phase": ServerPhase.INSTALLING}},
         check={"reason": Reason.INSTALLING, "steps": (IS2,)},
         untouched=(key(StepName.INSTALL_SERVER, server="ps-2"), key(StepName.INSTALL_SERVER, server="ps-3"))),
    Case("remaining-concurrency-two-starts-another", IS2, StepState.RUNNING, InstallServer, databases=MGMT_AT_T,
         servers={**FIRSTS_AT_T, "ms-2": {**ISO["ms-2"], "phase": ServerPhase.INSTALLING}},
         spec={"maxConcurrentServers": 2}, check={"server": "ps-2"},
         answer_for=key(StepName.INSTALL_SERVER, server="ps-2"),
         untouched=(key(StepName.INSTALL_SERVER, server="ps-3"),)),
    Case("remaining-installed-completes-before-anything-else", IS2, StepState.RUNNING, CompleteStep,
         databases=MGMT_AT_T, servers={**FIRSTS_AT_T, "ms-2": {**ISO["ms-2"], "version": T}},
         check={"step": IS2}),
    Case("remaining-install-error-halts", IS2, StepState.RUNNING, Fail, databases=MGMT_AT_T,
         servers={**FIRSTS_AT_T, "ms-2": {**ISO["ms-2"], "phase": ServerPhase.FAILED,
                                           "install": InstallObservation(T, "disk full")}},
         check={"reason": Reason.INSTALL_FAILED}),
    # back into service, exactly as before the plan
    Case("pool-back-into-rotation", BR, StepState.PENDING, BringIntoRotation,
         servers={n: {**ISO[n], "version": T} for n in ALL}, databases=MGMT_AT_T,
         check={"servers": ("ms-1", "ms-2")}),
    Case("replication-restored-master-first", RR, StepState.PENDING, RestoreReplication,
         servers={n: {"replication_enabled": False, "version": T} for n in ALL}, databases=MGMT_AT_T,
         check={"servers": ("ps-1", "ps-2", "ps-3")}),
    Case("subscribers-behind-wait", VR, StepState.PENDING, Wait,
         servers={**{n: {"version": T} for n in ALL}, "ps-3": {"version": T, "caught_up": False}},
         databases=MGMT_AT_T, check={"reason": Reason.CATCHING_UP}),
    Case("subscribers-caught-up-complete", VR, StepState.RUNNING, CompleteStep,
         servers={n: {"version": T} for n in ALL}, databases=MGMT_AT_T),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide_at_step(case: Case) -> None:
    spec = make_spec(**case.spec)
    seen = estate(spec, F, servers=case.servers, databases=case.databases, healthy=case.healthy,
                  consecutive=case.consecutive)
    status = at_step(spec, seen, case.step, state=case.state)
    actions = decide(spec, status, seen, later(case.age))
    action = about(actions, case.answer_for or case.step)
    assert isinstance(action, case.expected), action
    assert not [a for a in actions if set(steps_of(a)) & set(case.untouched)], actions
    for attribute, value in case.check.items():
        assert getattr(action, attribute) == value, (attribute, action)
    if isinstance(action, CompleteStep) and "step" not in case.check:
        assert action.step == case.step
    if isinstance(action, Fail):
        assert action.where.hop == 1 and action.message.count("Estate:") == 1


def test_hop_done_advances_to_the_next_hop() -> None:
    spec = make_spec()
    seen = estate(spec, T)
    status = at_step(spec, seen, key(StepName.DISABLE_REPLICATION, hop=2))
    status = status.model_copy(update={"current_hop": 1})
    assert one(decide(spec, status, seen, T0)) == AdvanceHop(2, T, "2025.1")


def test_last_hop_done_succeeds_only_when_everything_runs_the_target() -> None:
    spec = make_spec()
    last = [s for s in at_step(spec, estate(spec, T), key(StepName.VERIFY_REPLICATION, hop=2)).steps][-1].key
    done = at_step(spec, estate(spec, "2025.1"), last, state=StepState.SUCCEEDED)
    assert isinstance(one(decide(spec, done, estate(spec, "2025.1"), T0)), Succeed)
    behind = estate(spec, "2025.1", databases={"pers-db": {"schema_version": T}})
    action = one(decide(spec, done, behind, T0))
    assert isinstance(action, Fail) and "database pers-db at 2023.1" in action.message


def test_rotation_is_restored_as_recorded_not_blindly() -> None:
    """A pool member that was out of rotation before the plan stays out."""
    spec = make_spec()
    before = estate(spec, F, servers={"ms-2": {"in_rotation": False}})
    now = estate(spec, T, servers={n: {**ISO[n], "replication_enabled": False} for n in ALL})
    status = at_step(spec, now, BR, baseline_seen=before)
    assert about(decide(spec, status, now, T0), BR) == BringIntoRotation(BR, ("ms-1",))
    back = estate(spec, T, servers={**ISO, "ms-1": {"replication_enabled": False}})
    action = about(decide(spec, status, back, T0), BR)
    assert isinstance(action, CompleteStep) and "ms-2" not in action.message


def test_replication_is_restored_as_recorded_not_blindly() -> None:
    spec = make_spec()
    before = estate(spec, F, servers={"ps-3": {"replication_enabled": False}})
    now = estate(spec, T, servers={n: {"replication_enabled": False} for n in ALL})
    status = at_step(spec, now, RR, baseline_seen=before)
    assert one(decide(spec, status, now, T0)) == RestoreReplication(RR, ("ps-1", "ps-2"))


def test_no_replication_before_the_plan_skips_its_restore() -> None:
    spec = make_spec()
    before = estate(spec, F, servers={n: {"replication_enabled": False} for n in ALL})
    now = estate(spec, T, servers={n: {"replication_enabled": False} for n in ALL})
    status = at_step(spec, now, RR, baseline_seen=before)
    action = one(decide(spec, status, now, T0))
    assert action == CompleteStep(RR, "replication was not enabled before the plan", skipped=True)


def test_health_of_another_release_does_not_count() -> None:
    spec = make_spec()
    seen = estate(spec, F, servers=iso(ms_1={"version": T}), databases={"mgmt-db": {"schema_version": T}})
    seen = type(seen)(seen.servers, seen.databases, {**seen.health, "ms-1": HealthObservation(True, 5, F)})
    status = at_step(spec, seen, HC, state=StepState.RUNNING)
    assert isinstance(about(decide(spec, status, seen, later(5)), HC), Wait)


def test_a_flapping_page_that_times_out_says_why_it_last_failed() -> None:
    """A page that alternates 503/200 may time out on a confirming answer: the halt still names the
    failure that kept it from confirming enough times in a row."""
    spec = make_spec(healthCheck={"successThreshold": 2})
    seen = estate(spec, F, servers=iso(ms_1={"version": T}), databases={"mgmt-db": {"schema_version": T}})
    flapped = HealthObservation(True, 1, T, "Running", last_failure="answered 503: injected health flap")
    seen = type(seen)(seen.servers, seen.databases, {**seen.health, "ms-1": flapped})
    status = at_step(spec, seen, HC, state=StepState.RUNNING)
    action = one(decide(spec, status, seen, later(121)))
    assert isinstance(action, Fail) and action.reason is Reason.HEALTH_CHECK_FAILED
    assert "confirmed 1 of 2 time(s) in a row" in action.message
    assert "it last failed: status page answered 503: injected health flap" in action.message
