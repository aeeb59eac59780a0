"""decide() before the first change (preflight, plan, block, approval, pause), around failures (Halt,
Rollback, rollback steps), at safe points for a pause, and when the estate or the spec drifts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from core_builders import T0, about, at_step, estate, key, later, make_spec, one, planned, set_state

from uwm_upgrade.core.actions import (
    AwaitApproval,
    BeginRollback,
    Block,
    CompleteStep,
    ComputePlan,
    Effect,
    Fail,
    FinishRollback,
    Idle,
    InstallServer,
    Pause,
    RecordBaseline,
    RestoreBackup,
    Succeed,
    UpgradeSchema,
    Wait,
)
from uwm_upgrade.core.context import describe_estate
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Phase, Reason, ReplicationState, ServerPhase, StepName, StepState
from uwm_upgrade.core.models import SpecError, UpgradePlanStatus
from uwm_upgrade.core.observations import InstallObservation, ObservationGap, Observations, Where
from uwm_upgrade.core.planning import backup_id
from uwm_upgrade.core.status import record_backup
from uwm_upgrade.core.transitions import apply_decision
from uwm_upgrade.core.turn import before_effect

F, T = "2021.1", "2023.1"
ALL = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")
ISO: dict[str, dict[str, Any]] = {n: {"replication_enabled": False, "in_rotation": False} for n in ALL}
FRESH = UpgradePlanStatus()

# ---------------------------------------------------------------- preflight and plan


def test_fresh_plan_is_computed_from_the_observed_estate() -> None:
    spec = make_spec()
    action = one(decide(spec, FRESH, estate(spec), T0))
    assert isinstance(action, ComputePlan)
    assert [(h.from_version, h.to_version) for h in action.path] == [(F, T), (T, "2025.1")]
    assert action.message == "path 2021.1 -> 2023.1 -> 2025.1 (2 hop(s))" and len(action.plan_hash) == 64


def test_unobserved_servers_are_waited_for_and_named() -> None:
    spec = make_spec()
    seen = estate(spec)
    partial = Observations({k: v for k, v in seen.servers.items() if k != "ps-2"}, seen.databases, seen.health,
                           (ObservationGap(Where(server="ps-2"), "connection refused"),))
    action = one(decide(spec, FRESH, partial, T0))
    assert isinstance(action, Wait) and action.reason is Reason.OBSERVATION_UNAVAILABLE
    assert "ps-2 (connection refused)" in action.message


@pytest.mark.parametrize(("change", "words"), [
    ({"load_balanced": False}, "ms-1: spec says loadBalanced True"),
    ({"database": "other-db"}, "ms-1: spec says database mgmt-db"),
])
def test_topology_unlike_the_spec_fails_preflight(change: dict[str, object], words: str) -> None:
    spec = make_spec()
    action = one(decide(spec, FRESH, estate(spec, servers={"ms-1": change}), T0))
    assert isinstance(action, Fail) and action.reason is Reason.TOPOLOGY_MISMATCH and words in action.message


def test_a_busy_estate_is_not_planned_on() -> None:
    spec = make_spec()
    action = one(decide(spec, FRESH, estate(spec, servers={"ps-2": {"phase": ServerPhase.INSTALLING}}), T0))
    assert isinstance(action, Wait) and action.reason is Reason.ESTATE_BUSY and "ps-2" in action.message


def test_a_failed_server_fails_preflight_with_its_error() -> None:
    spec = make_spec()
    seen = estate(spec, servers={"ms-2": {"phase": ServerPhase.FAILED, "install": InstallObservation(T, "1603")}})
    action = one(decide(spec, FRESH, seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.PREFLIGHT_FAILED and "ms-2 (1603)" in action.message


@pytest.mark.parametrize(("servers", "words"), [
    ({"ms-2": {"version": "2024.1"}}, "mixed versions cannot be reconciled"),
    ({"ms-2": {"version": "2019.3"}}, "not in spec.releases"),
])
def test_no_path_fails_with_the_reason(servers: dict[str, dict[str, object]], words: str) -> None:
    spec = make_spec()
    action = one(decide(spec, FRESH, estate(spec, servers=servers), T0))
    assert isinstance(action, Fail) and action.reason is Reason.PLANNING_FAILED and words in action.message


def test_clean_install_without_new_servers_is_an_invalid_spec_never_done_in_place() -> None:
    with pytest.raises(SpecError, match=r"spec\.strategy CleanInstall needs the new servers"):
        make_spec(strategy="CleanInstall")


def test_already_at_target_succeeds_without_touching_anything() -> None:
    spec = make_spec()
    seen = estate(spec, "2025.1")
    plan = one(decide(spec, FRESH, seen, T0))
    assert isinstance(plan, ComputePlan) and plan.path == () and plan.message == "already at 2025.1"
    status = apply_decision(FRESH, plan, T0)
    assert isinstance(one(decide(spec, status, seen, T0)), Succeed)


def test_a_plan_is_computed_anew_when_the_estate_changes_before_the_start() -> None:
    spec = make_spec(approval={"required": True})
    status = planned(spec, estate(spec), start=False)
    action = one(decide(spec, status, estate(spec, "2022.1"), T0))
    assert isinstance(action, ComputePlan) and action.plan_hash != status.plan_hash


# ---------------------------------------------------------------- block, pause, approval


def test_another_plan_on_the_estate_blocks_the_start() -> None:
    spec = make_spec()
    seen = replace(estate(spec), competing_plans=("team-b/estate-2024",))
    for status in (planned(spec, estate(spec), start=False), UpgradePlanStatus()):  # planned, or not even that
        action = one(decide(spec, status, seen, T0))
        assert isinstance(action, Block) and action.plans == ("team-b/estate-2024",)


@pytest.mark.parametrize("changing", ["versions moved", "installing", "a server failed"])
def test_a_blocked_plan_stays_blocked_whatever_the_other_plan_does_to_the_estate(changing: str) -> None:
    """Neither re-planned (phase Planning), nor waiting for the estate, nor failed by a preflight judging
    the other plan's work in progress: Blocked, naming it, until it is over."""
    spec = make_spec()
    status = planned(spec, estate(spec), start=False)
    servers = {"versions moved": {}, "installing": {"ms-2": {"phase": ServerPhase.INSTALLING}},
               "a server failed": {"ms-2": {"phase": ServerPhase.FAILED,
                                            "install": InstallObservation("2023.1", "installer failed")}}}[changing]
    seen = estate(spec, "2023.1" if changing == "versions moved" else "2021.1", servers=servers)
    action = one(decide(spec, status, replace(seen, competing_plans=("first",)), T0))
    assert isinstance(action, Block) and action.plans == ("first",), action


def test_approval_is_awaited_until_the_annotation_carries_the_plan_hash() -> None:
    spec = make_spec(approval={"required": True})
    seen = estate(spec)
    status = planned(spec, seen, start=False)
    assert one(decide(spec, status, seen, T0)) == AwaitApproval(status.plan_hash or "",
                                                           f"approve with the annotation upgrade.uwm.io/approve="
                                                           f"{status.plan_hash}", 30.0)
    assert isinstance(one(decide(spec, status, seen, T0, approval="yes please")), AwaitApproval)
    assert isinstance(one(decide(spec, status, seen, T0, approval=f" {status.plan_hash}\n")), RecordBaseline)


def test_paused_before_the_start_pauses_after_planning() -> None:
    spec = make_spec(paused=True)
    seen = estate(spec)
    assert isinstance(one(decide(spec, FRESH, seen, T0)), ComputePlan)
    assert isinstance(one(decide(spec, planned(spec, seen, start=False), seen, T0)), Pause)


HALTED = {"ps-3": {"replication_enabled": False}, "ms-2": {"in_rotation": False}}  # as a halted plan leaves it


def test_an_estate_found_out_of_rotation_or_with_replication_off_needs_approval() -> None:
    """A retry after a halt used to record the halted state as its baseline, and end Succeeded with the
    pool out of rotation and replication off; now the plan says what it found and waits for an approval."""
    spec = make_spec()
    seen = estate(spec, servers=HALTED)
    status = planned(spec, seen, start=False)
    assert "found before the plan, and left so: ms-2 out of rotation; replication off on ps-3" in (status.message or "")
    action = one(decide(spec, status, seen, T0))
    assert isinstance(action, AwaitApproval) and action.reason is Reason.BASELINE_NOT_ACCEPTED
    assert "ms-2 out of rotation; replication off on ps-3 before the plan" in action.message
    assert "spec.baseline.acceptOutOfRotation" in action.message and status.plan_hash in action.message
    approved = one(decide(spec, status, seen, T0, approval=status.plan_hash))
    assert isinstance(approved, RecordBaseline)
    assert dict(approved.replication) == {"ms-1": ReplicationState.NONE, "ms-2": ReplicationState.NONE,
                                          "ps-1": ReplicationState.ENABLED, "ps-2": ReplicationState.ENABLED,
                                          "ps-3": ReplicationState.DISABLED}
    assert dict(approved.rotation) == {"ms-1": True, "ms-2": False}


def test_the_spec_may_accept_what_the_plan_finds_instead_of_an_approval() -> None:
    seen = estate(make_spec(), servers=HALTED)
    only_rotation = make_spec(baseline={"acceptOutOfRotation": True})
    action = one(decide(only_rotation, planned(only_rotation, seen, start=False), seen, T0))
    assert isinstance(action, AwaitApproval) and "replication off on ps-3" in action.message
    assert "ms-2" not in action.message.split(" before the plan")[0]
    both = make_spec(baseline={"acceptOutOfRotation": True, "acceptReplicationOff": True})
    assert isinstance(one(decide(both, planned(both, seen, start=False), seen, T0)), RecordBaseline)


def test_what_the_plan_finds_is_part_of_the_approved_hash() -> None:
    """An approval of 'ms-2 out of rotation' does not carry over to 'ms-1 and ms-2 out of rotation'."""
    spec = make_spec()
    first = planned(spec, estate(spec, servers=HALTED), start=False)
    worse = estate(spec, servers={**HALTED, "ms-1": {"in_rotation": False}})
    action = one(decide(spec, first, worse, T0, approval=first.plan_hash))
    assert isinstance(action, ComputePlan) and action.plan_hash != first.plan_hash
    clean = one(decide(spec, FRESH, estate(spec), T0))
    assert isinstance(clean, ComputePlan) and "found before the plan" not in clean.message


def test_paused_at_a_safe_point_pauses() -> None:
    spec = make_spec(paused=True)
    seen = estate(spec, servers=ISO)
    status = at_step(spec, seen, key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db"))
    assert isinstance(one(decide(spec, status, seen, T0)), Pause)


def test_paused_mid_install_waits_for_it_and_starts_nothing_new() -> None:
    spec = make_spec(paused=True, maxConcurrentServers=3)
    servers = {n: dict(ISO[n], version=T) for n in ("ms-1", "ps-1")}
    servers["ms-2"] = dict(ISO["ms-2"], phase=ServerPhase.INSTALLING, install=InstallObservation(T))
    schemas = {d: {"schema_version": T} for d in ("mgmt-db", "pers-db")}
    seen = estate(spec, servers={**ISO, **servers}, databases=schemas)
    step = key(StepName.INSTALL_SERVER, server="ms-2")
    status = at_step(spec, seen, step, state=StepState.RUNNING)
    actions = decide(spec, status, seen, later(5))
    assert not [a for a in actions if isinstance(a, Effect)], actions  # would have installed ps-2
    assert Reason.PAUSING in {a.reason for a in actions if isinstance(a, Wait)}, actions
    going = decide(spec.model_copy(update={"paused": False}), status, seen, later(5))
    assert isinstance(about(going, key(StepName.INSTALL_SERVER, server="ps-2")), InstallServer)


def test_paused_mid_migration_finishes_the_migration_then_pauses() -> None:
    spec = make_spec(paused=True)
    step = key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db")
    migrating = estate(spec, servers={**ISO, "ms-1": dict(ISO["ms-1"], version=T, phase=ServerPhase.MIGRATING_SCHEMA)},
                       databases={"mgmt-db": {"lock_holder": "ms-1", "migration": MigrationStatus.UPGRADING}})
    status = at_step(spec, migrating, step, state=StepState.RUNNING)
    waiting = decide(spec, status, migrating, later(5))
    assert isinstance(about(waiting, step), Wait) and not [a for a in waiting if isinstance(a, Effect)], waiting
    lost = estate(spec, servers={**ISO, "ms-1": dict(ISO["ms-1"], version=T,
                                                      phase=ServerPhase.DATABASE_UPDATES_REQUIRED)})
    assert isinstance(about(decide(spec, status, lost, later(5)), step), UpgradeSchema)  # a lost request is completed
    migrated = estate(spec, servers={**ISO, "ms-1": dict(ISO["ms-1"], version=T)},
                      databases={"mgmt-db": {"schema_version": T}})
    turn = before_effect(spec, status, migrated, later(5))
    # what is already seen done is recorded, nothing is started
    recorded = [a.step.name for a in turn.actions if isinstance(a, CompleteStep)]
    assert recorded == [StepName.UPGRADE_SCHEMA, StepName.VERIFY_SCHEMA, StepName.HEALTH_CHECK]
    assert isinstance(turn.actions[-1], Pause) and not turn.effects, turn.actions


# ---------------------------------------------------------------- failure policies and rollback


IF = key(StepName.INSTALL_FIRST_SERVER, server="ps-1", database="pers-db")
BROKEN: dict[str, dict[str, Any]] = {**ISO, "ms-1": dict(ISO["ms-1"], version=T),
          "ps-1": dict(ISO["ps-1"], phase=ServerPhase.FAILED, install=InstallObservation(T, "error 1603"))}


def test_halt_stops_where_it_failed_and_describes_the_estate() -> None:
    spec = make_spec()
    seen = estate(spec, servers=BROKEN, databases={"mgmt-db": {"schema_version": T}})
    action = one(decide(spec, at_step(spec, seen, IF, state=StepState.RUNNING), seen, later(30)))
    assert isinstance(action, Fail) and action.where == Where(1, StepName.INSTALL_FIRST_SERVER, "ps-1", "pers-db")
    assert "error 1603" in action.message
    assert "ms-1 2023.1 Running out of rotation" in action.message and "mgmt-db schema 2023.1" in action.message


def test_rollback_policy_begins_the_hops_rollback() -> None:
    spec = make_spec(failurePolicy="Rollback")
    seen = estate(spec, servers=BROKEN, databases={"mgmt-db": {"schema_version": T}})
    action = one(decide(spec, at_step(spec, seen, IF, state=StepState.RUNNING), seen, later(30)))
    assert isinstance(action, BeginRollback) and action.reason is Reason.INSTALL_FAILED
    names = [s.name for s in action.steps]
    assert names[:4] == [StepName.ROLLBACK_DISABLE_REPLICATION, StepName.ROLLBACK_TAKE_OUT_OF_ROTATION,
                         StepName.RESTORE_BACKUP, StepName.RESTORE_BACKUP]
    assert names[-3:] == [StepName.ROLLBACK_BRING_INTO_ROTATION, StepName.ROLLBACK_RESTORE_REPLICATION,
                          StepName.ROLLBACK_VERIFY_REPLICATION]


def test_failures_before_the_first_hop_halt_whatever_the_policy() -> None:
    spec = make_spec(failurePolicy="Rollback")
    action = one(decide(spec, FRESH, estate(spec, servers={"ms-2": {"version": "2025.1"}}), T0))
    assert isinstance(action, Fail)


def _rolling_back(spec_overrides: dict[str, object], seen: Observations, *, migrated: bool = True,
                  backup: bool = True) -> UpgradePlanStatus:
    spec = make_spec(failurePolicy="Rollback", **spec_overrides)
    failing = key(StepName.HEALTH_CHECK, server="ms-1") if migrated else \
        key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db")
    status = at_step(spec, seen, failing)
    if backup:
        bid = backup_id(status.plan_hash or "", status.started_at or T0, 1)
        from uwm_upgrade.core.observations import BackupObservation
        status = record_backup(status, "mgmt-db", 1, BackupObservation(bid, True, T0), T0)
    failure = one(decide(spec, set_state(status, failing, StepState.FAILED), seen, T0))
    assert isinstance(failure, BeginRollback), failure
    status = apply_decision(status, failure, T0)
    for name in (StepName.ROLLBACK_DISABLE_REPLICATION, StepName.ROLLBACK_TAKE_OUT_OF_ROTATION):
        status = set_state(status, key(name), StepState.SUCCEEDED)
    return status


MIGRATED = estate(make_spec(), servers={**ISO, "ms-1": dict(ISO["ms-1"], version=T)},
                  databases={"mgmt-db": {"schema_version": T}})


def test_rollback_restores_the_hops_backup_of_a_migrated_schema() -> None:
    status = _rolling_back({}, MIGRATED)
    action = one(decide(make_spec(failurePolicy="Rollback"), status, MIGRATED, T0))
    assert isinstance(action, RestoreBackup) and action.database == "mgmt-db"
    assert action.backup_id == status.database("mgmt-db").last_backup.id  # type: ignore[union-attr]


def test_rollback_without_a_backup_of_a_migrated_schema_is_impossible() -> None:
    spec = make_spec(failurePolicy="Rollback", backup={"enabled": False})
    status = _rolling_back({"backup": {"enabled": False}}, MIGRATED, backup=False)
    action = one(decide(spec, status, MIGRATED, T0))
    assert isinstance(action, Fail) and action.reason is Reason.ROLLBACK_FAILED
    assert "no verified backup" in action.message and "spec.backup.enabled is false" in action.message


def test_rollback_skips_restoring_a_schema_it_never_touched() -> None:
    seen = estate(make_spec(), servers={**ISO, "ms-1": dict(ISO["ms-1"], version=T,
                                                             phase=ServerPhase.DATABASE_UPDATES_REQUIRED)})
    status = _rolling_back({}, seen, migrated=False)
    action = one(decide(make_spec(failurePolicy="Rollback"), status, seen, T0))
    assert isinstance(action, CompleteStep) and action.skipped and action.step.database == "mgmt-db"


def test_rollback_reinstalls_the_release_of_the_restored_schema() -> None:
    spec = make_spec(failurePolicy="Rollback")
    status = _rolling_back({}, MIGRATED)
    for db in ("mgmt-db", "pers-db"):
        status = set_state(status, key(StepName.RESTORE_BACKUP, database=db), StepState.SUCCEEDED)
    restored = estate(spec, servers={**ISO, "ms-1": dict(ISO["ms-1"], version=T, phase=ServerPhase.VERSION_MISMATCH)})
    actions = decide(spec, status, restored, T0)
    # ms-2, ps-* already run the restored release: they are recorded, and ms-1 is reinstalled
    for name in ("ms-2", "ps-1", "ps-2", "ps-3"):
        assert isinstance(about(actions, key(StepName.REINSTALL_PREVIOUS, server=name)), CompleteStep)
    for name in ("ms-2", "ps-1", "ps-2", "ps-3"):
        status = set_state(status, key(StepName.REINSTALL_PREVIOUS, server=name), StepState.SUCCEEDED)
        status = set_state(status, key(StepName.ROLLBACK_HEALTH_CHECK, server=name), StepState.SUCCEEDED)
    action = one(decide(spec, status, restored, T0))
    assert isinstance(action, InstallServer) and (action.server, action.version) == ("ms-1", F)


def test_rollback_ends_rolled_back_when_its_steps_are_done() -> None:
    spec = make_spec(failurePolicy="Rollback")
    status = _rolling_back({}, MIGRATED)
    for step in status.steps:
        if step.hop == 1 and step.state is StepState.PENDING and step.name.startswith(("Rollback", "Re")):
            status = set_state(status, step.key, StepState.SUCCEEDED)
    action = one(decide(spec, status, estate(spec, F), T0))
    assert isinstance(action, FinishRollback) and "rolled back" in action.message
    assert apply_decision(status, action, T0).phase is Phase.ROLLED_BACK


def test_a_failure_while_rolling_back_halts() -> None:
    spec = make_spec(failurePolicy="Rollback")
    status = _rolling_back({}, MIGRATED)
    status = set_state(status, key(StepName.RESTORE_BACKUP, database="mgmt-db"), StepState.FAILED)
    action = one(decide(spec, status, MIGRATED, T0))
    assert isinstance(action, Fail) and action.reason is Reason.ROLLBACK_FAILED


# ---------------------------------------------------------------- drift, spec changes, the end


def test_a_server_outside_the_hop_is_a_change_by_someone_else() -> None:
    spec = make_spec()
    seen = estate(spec, servers={**ISO, "ps-3": dict(ISO["ps-3"], version="2024.1")})
    action = one(decide(spec, at_step(spec, seen, IF), seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.ESTATE_CHANGED
    assert "server ps-3 at 2024.1" in action.message


def test_a_spec_changed_after_the_start_is_not_followed() -> None:
    spec = make_spec()
    seen = estate(spec, servers=ISO)
    status = at_step(spec, seen, IF)
    changed = make_spec(targetVersion="2024.1")
    action = one(decide(changed, status, seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.INVALID_SPEC


def test_only_paused_may_change_after_the_start() -> None:
    spec = make_spec()
    seen = estate(spec, servers=ISO)
    status = at_step(spec, seen, IF)
    assert isinstance(one(decide(spec.model_copy(update={"paused": True}), status, seen, T0)), Pause)


def test_unobserved_server_mid_hop_waits_until_the_running_step_times_out() -> None:
    spec = make_spec()
    seen = estate(spec, servers=ISO)
    gone = Observations({k: v for k, v in seen.servers.items() if k != "ms-1"}, seen.databases, seen.health)
    status = at_step(spec, seen, key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db"),
                     state=StepState.RUNNING)
    assert isinstance(one(decide(spec, status, gone, later(60))), Wait)
    late = one(decide(spec, status, gone, later(4000)))
    assert isinstance(late, Fail) and late.reason is Reason.TIMEOUT and "cannot observe ms-1" in late.message
    assert "ms-1 unobserved, last seen 2021.1 out of rotation;" in late.message


def test_a_timeout_while_no_server_answers_names_each_as_the_status_last_recorded_it() -> None:
    # The campaign's fleet-kill: every agent down when the hung install's deadline passes. The Failed
    # condition must still say which servers it leaves out of rotation, unreplicated, on which release.
    spec = make_spec()
    seen = estate(spec, servers={**ISO, "ps-1": {"replication_enabled": False, "version": T}})
    status = at_step(spec, seen, key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db"),
                     state=StepState.RUNNING)
    blind = Observations({}, seen.databases, {}, tuple(ObservationGap(Where(server=n), "refused") for n in ALL))
    late = one(decide(spec, status, blind, later(4000)))
    assert isinstance(late, Fail) and late.reason is Reason.TIMEOUT
    _, _, described = late.message.partition("Estate: ")
    assert described.split("; ")[:3] == ["ms-1 unobserved, last seen 2021.1 out of rotation",
                                         "ms-2 unobserved, last seen 2021.1 out of rotation",
                                         "ps-1 unobserved, last seen 2023.1 master replication off"]


def test_a_server_the_status_never_saw_is_only_unobserved() -> None:
    spec = make_spec()
    seen = estate(spec)
    blind = Observations({k: v for k, v in seen.servers.items() if k != "ps-3"}, seen.databases, seen.health)
    assert "ps-3 unobserved;" in describe_estate(spec, blind, FRESH)
    assert "ps-3 unobserved;" in describe_estate(spec, blind)


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK])
def test_a_finished_plan_does_nothing(phase: Phase) -> None:
    spec = make_spec()
    assert isinstance(one(decide(spec, UpgradePlanStatus(phase=phase), estate(spec), T0)), Idle)
