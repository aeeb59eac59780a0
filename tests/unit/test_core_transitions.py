"""How each action and each outcome of an effect lands in the status (the bookkeeping of decide-then-act)."""

from __future__ import annotations

from core_builders import T0, at_step, estate, key, later, make_spec, one, planned

from uwm_upgrade.core.actions import (
    BackupDatabase,
    BeginRollback,
    CompleteStep,
    Fail,
    InstallServer,
    Pause,
    RecordBackup,
    RestoreBackup,
    Wait,
    requeue_after,
)
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import ConditionStatus, ConditionType, Phase, Reason, StepName, StepState
from uwm_upgrade.core.models import UpgradePlanStatus
from uwm_upgrade.core.observations import BackupObservation, PermanentError, TransientError, Where
from uwm_upgrade.core.planning import rollback_steps
from uwm_upgrade.core.transitions import apply_decision, apply_error, apply_result, reject_spec

SPEC = make_spec()
SEEN = estate(SPEC)
BACKUP = key(StepName.BACKUP_DATABASE, database="mgmt-db")
INSTALL = key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db")


def test_a_computed_plan_records_path_hash_and_every_step() -> None:
    plan = one(decide(SPEC, UpgradePlanStatus(), SEEN, T0))
    status = apply_decision(UpgradePlanStatus(), plan, T0)
    assert status.phase is Phase.PLANNING and status.plan_hash and status.target_version == "2025.1"
    assert [(h.from_version, h.to_version) for h in status.path] == [("2021.1", "2023.1"), ("2023.1", "2025.1")]
    assert [(s.name, s.state) for s in status.steps[:3]] == [
        (StepName.PREFLIGHT, StepState.SUCCEEDED), (StepName.PLAN, StepState.SUCCEEDED),
        (StepName.RECORD_BASELINE, StepState.PENDING)]
    assert status.hop_display == "0/2" and status.started_at is None


def test_the_baseline_starts_the_run() -> None:
    status = planned(SPEC, estate(SPEC, servers={"ms-2": {"in_rotation": False}}))
    assert status.phase is Phase.RUNNING and status.started_at == T0 and status.current_hop == 1
    assert status.server("ms-2").online_before is False and status.server("ms-1").online_before is True  # type: ignore[union-attr]
    assert status.server("ps-1").replication_before == "Enabled"  # type: ignore[union-attr]


def test_an_effect_marks_its_step_running_before_it_is_carried_out() -> None:
    status = apply_decision(planned(SPEC, SEEN), InstallServer(INSTALL, "ms-1", "2023.1"), later(5))
    step = status.step(INSTALL)
    assert step is not None and step.state is StepState.RUNNING and step.started_at == later(5)
    assert status.current_step == "InstallFirstServer mgmt-db ms-1"
    after = apply_result(status, InstallServer(INSTALL, "ms-1", "2023.1"), None, later(6))
    assert after.step(INSTALL).state is StepState.RUNNING  # type: ignore[union-attr]  # done only when seen


def test_a_verified_backup_is_recorded_and_ends_its_step() -> None:
    action = BackupDatabase(BACKUP, "mgmt-db", "p0123456789abcdef-h1")
    status = apply_decision(planned(SPEC, SEEN), action, later(5))
    status = apply_result(status, action, BackupObservation("p0123456789abcdef-h1", True, later(6)), later(7))
    record = status.database("mgmt-db").last_backup  # type: ignore[union-attr]
    assert record is not None and (record.id, record.hop, record.verified) == ("p0123456789abcdef-h1", 1, True)
    assert status.step(BACKUP).state is StepState.SUCCEEDED  # type: ignore[union-attr]


def test_an_unverified_backup_fails_its_step() -> None:
    action = BackupDatabase(BACKUP, "mgmt-db", "p0123456789abcdef-h1")
    status = apply_decision(planned(SPEC, SEEN), action, later(5))
    status = apply_result(status, action, BackupObservation("p0123456789abcdef-h1", False), later(7))
    assert status.step(BACKUP).state is StepState.FAILED and status.database("mgmt-db").last_backup is None  # type: ignore[union-attr]


def test_a_backup_found_after_a_crash_is_recorded() -> None:
    found = BackupObservation("p0123456789abcdef-h1", True, later(1))
    status = apply_decision(planned(SPEC, SEEN), RecordBackup(BACKUP, found), later(5))
    assert status.database("mgmt-db").last_backup.id == found.id  # type: ignore[union-attr]
    assert status.step(BACKUP).state is StepState.SUCCEEDED  # type: ignore[union-attr]


def test_a_restore_ends_its_step_when_it_returns() -> None:
    step = key(StepName.RESTORE_BACKUP, database="mgmt-db")
    action = RestoreBackup(step, "mgmt-db", "p0123456789abcdef-h1")
    status = apply_result(apply_decision(planned(SPEC, SEEN), action, T0), action, None, later(3))
    assert status.step(step).state is StepState.SUCCEEDED  # type: ignore[union-attr]


def test_a_transient_error_keeps_the_step_running_and_says_so() -> None:
    action = InstallServer(INSTALL, "ms-1", "2023.1")
    status = apply_decision(planned(SPEC, SEEN), action, T0)
    status = apply_error(status, action, TransientError(Where(server="ms-1"), "409 busy token=abc123", "busy"), T0)
    step = status.step(INSTALL)
    assert step is not None and step.state is StepState.RUNNING and "retrying" in (step.message or "")
    assert "abc123" not in (step.message or "")
    assert status.condition(ConditionType.PROGRESSING).reason == Reason.RETRYING  # type: ignore[union-attr]


def test_a_permanent_error_fails_the_step_for_decide_to_route() -> None:
    isolated = estate(SPEC, servers={n: {"replication_enabled": False, "in_rotation": False}
                                     for n in ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")})
    action = InstallServer(INSTALL, "ms-1", "2023.1")
    status = apply_decision(at_step(SPEC, isolated, INSTALL), action, T0)
    status = apply_error(status, action, PermanentError(Where(server="ms-1"), "jump too far", "version-jump"), T0)
    step = status.step(INSTALL)
    assert step is not None and step.state is StepState.FAILED and step.message == "jump too far (rule version-jump)"
    routed = one(decide(SPEC, status, isolated, T0))
    assert isinstance(routed, Fail) and routed.where.step is StepName.INSTALL_FIRST_SERVER


def test_a_wait_starts_its_steps_once() -> None:
    health = key(StepName.HEALTH_CHECK, server="ms-1")
    status = apply_decision(planned(SPEC, SEEN), Wait(Reason.AWAITING_HEALTH, 2, "waiting", (health,)), later(5))
    status = apply_decision(status, Wait(Reason.AWAITING_HEALTH, 2, "still", (health,)), later(9))
    assert status.step(health).started_at == later(5)  # type: ignore[union-attr]


def test_pause_resets_running_steps_and_resuming_runs_again() -> None:
    status = apply_decision(planned(SPEC, SEEN), InstallServer(INSTALL, "ms-1", "2023.1"), T0)
    paused = apply_decision(status, Pause("paused", 30), later(5))
    assert paused.phase is Phase.PAUSED and paused.step(INSTALL).state is StepState.PENDING  # type: ignore[union-attr]
    assert paused.condition(ConditionType.PAUSED).status is ConditionStatus.TRUE  # type: ignore[union-attr]
    resumed = apply_decision(paused, CompleteStep(INSTALL, "ms-1 runs 2023.1"), later(60))
    assert resumed.phase is Phase.RUNNING
    assert resumed.condition(ConditionType.PAUSED).reason == Reason.NOT_PAUSED  # type: ignore[union-attr]


def test_fail_records_where_and_ends_the_plan() -> None:
    status = apply_decision(planned(SPEC, SEEN), InstallServer(INSTALL, "ms-1", "2023.1"), T0)
    where = Where(1, StepName.INSTALL_FIRST_SERVER, "ms-1", "mgmt-db")
    failed = apply_decision(status, Fail(Reason.INSTALL_FAILED, where, "error 1603. Estate: ..."), later(9))
    assert failed.phase is Phase.FAILED and failed.completed_at == later(9)
    assert failed.step(INSTALL).state is StepState.FAILED  # type: ignore[union-attr]
    condition = failed.condition(ConditionType.FAILED)
    assert condition is not None and condition.reason == Reason.INSTALL_FAILED
    assert condition.message == ("failed at hop 1, step InstallFirstServer, database mgmt-db, server ms-1:"
                                 " error 1603. Estate: ...")


def test_a_preflight_failure_adds_its_step() -> None:
    failed = apply_decision(UpgradePlanStatus(), Fail(Reason.TOPOLOGY_MISMATCH, Where(0, StepName.PREFLIGHT),
                                                      "ms-1: spec says loadBalanced True"), T0)
    assert [(s.name, s.state) for s in failed.steps] == [(StepName.PREFLIGHT, StepState.FAILED)]


def test_begin_rollback_appends_the_rollback_once() -> None:
    spec = make_spec(failurePolicy="Rollback")
    status = planned(spec, SEEN)
    action = BeginRollback(Reason.INSTALL_FAILED, Where(1, StepName.INSTALL_FIRST_SERVER, "ms-1", "mgmt-db"), "x",
                           rollback_steps(spec, 1))
    once = apply_decision(status, action, T0)
    twice = apply_decision(once, action, later(1))
    assert once.phase is Phase.ROLLING_BACK and len(once.steps) == len(status.steps) + len(action.steps)
    assert len(twice.steps) == len(once.steps)
    assert once.step(INSTALL).state is StepState.FAILED  # type: ignore[union-attr]


def test_an_invalid_spec_before_the_start_waits_in_pending() -> None:
    status = reject_spec(UpgradePlanStatus(), "spec.releases must not contain duplicates", T0)
    assert status.phase is Phase.PENDING
    ready = status.condition(ConditionType.READY)
    assert ready is not None and ready.reason == Reason.INVALID_SPEC and "duplicates" in (ready.message or "")
    started = reject_spec(planned(SPEC, SEEN), "spec.releases must not contain duplicates", T0)
    assert started.phase is Phase.FAILED


def test_requeue_follows_the_action() -> None:
    assert requeue_after(Wait(Reason.INSTALLING, 5, "x")) == 5
    assert requeue_after(InstallServer(INSTALL, "ms-1", "2023.1")) == 0
    assert requeue_after(Fail(Reason.TIMEOUT, Where(), "x")) is None


def test_started_and_rolling_back_are_read_from_the_steps_whatever_the_phase() -> None:
    spec = make_spec(failurePolicy="Rollback")
    assert not UpgradePlanStatus().started
    assert not apply_decision(UpgradePlanStatus(), one(decide(spec, UpgradePlanStatus(), SEEN, T0)), T0).started
    status = planned(spec, SEEN)
    assert status.started and not status.rolling_back
    undo = rollback_steps(spec, 1)
    rolling = apply_decision(status, BeginRollback(Reason.TIMEOUT, Where(1), "x", undo), T0)
    paused = apply_decision(rolling, Pause("paused", 30), later(1))
    assert paused.phase is Phase.PAUSED and paused.rolling_back
    resumed = apply_decision(paused, CompleteStep(undo[0].key, "done"), later(2))
    assert resumed.phase is Phase.ROLLING_BACK
