"""The turn (core/turn.py): what it records before and after the effects, when the next one comes, and
which Events a status change means; the in-memory estate's loop plays the engine's turns."""

from __future__ import annotations

from dataclasses import replace

from core_builders import T0, estate, key, later, make_spec, planned
from core_estate_model import FakeEstate, drive

from uwm_upgrade.core.actions import BackupDatabase, Block, InstallServer, Wait
from uwm_upgrade.core.enums import EventReason, EventType, Phase, Reason, StepName, StepState
from uwm_upgrade.core.models import UpgradePlanStatus
from uwm_upgrade.core.observations import BackupObservation, PermanentError, TransientError, Where
from uwm_upgrade.core.status import fail_step, start_step
from uwm_upgrade.core.turn import (
    Outcome,
    Turn,
    after_effect,
    before_effect,
    events_between,
    next_turn_in,
)

SPEC = make_spec()
INSTALL = key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db")


def test_a_whole_run_announces_every_step_once_as_it_ended_and_every_phase() -> None:
    """One Event per step, when it ends (its start is in the status, and the note says when it was), and
    one per phase: the phases a turn passes through on its way (planned, then running) included."""
    estate_ = FakeEstate(SPEC)
    run = drive(SPEC, estate_)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    phases = [e.reason for e in run.events if e.phase is not None]
    assert phases == [Phase.PLANNING, Phase.RUNNING, Phase.SUCCEEDED]
    assert not [e for e in run.events if e.type is EventType.WARNING]
    final = {StepState.SUCCEEDED: EventReason.STEP_SUCCEEDED, StepState.SKIPPED: EventReason.STEP_SKIPPED}
    for step in run.status.steps:
        said = [e for e in run.events if e.step is not None and e.step.key == step.key]
        assert [e.reason for e in said] == [final[step.state]], (step.key, said)
        if step.state is StepState.SUCCEEDED and step.hop > 0:
            assert "(started " in said[0].note, said[0].note
    ran = [e for e in run.events if e.ended is not None]
    assert ran and all(e.seconds is not None and e.seconds >= 0 for e in ran)
    assert {e.step.name for e in ran if e.step} >= {
        StepName.INSTALL_FIRST_SERVER, StepName.UPGRADE_SCHEMA, StepName.INSTALL_SERVER, StepName.HEALTH_CHECK}


def test_a_failed_step_and_a_blocked_plan_are_warnings_and_notes_carry_no_secret() -> None:
    status = planned(SPEC, estate(SPEC))
    running = start_step(status, INSTALL, T0)
    failed = fail_step(running, INSTALL, later(5), "installer said PWD=hunter2 is wrong")
    (event,) = events_between(running, failed)
    assert (event.type, event.reason, event.ended) == (EventType.WARNING, EventReason.STEP_FAILED, failed.step(INSTALL))
    assert "hunter2" not in event.note and event.seconds == 5.0
    blocked = before_effect(SPEC, UpgradePlanStatus(), replace(estate(SPEC), competing_plans=("other",)), T0)
    assert isinstance(blocked.actions[0], Block)
    phase_events = [e for e in events_between(UpgradePlanStatus(), blocked.status) if e.phase is not None]
    assert [(e.type, e.reason) for e in phase_events] == [(EventType.WARNING, Phase.BLOCKED)]
    assert events_between(blocked.status, blocked.status) == ()


def test_the_turn_records_the_generation_the_decision_and_then_the_outcome() -> None:
    seen = estate(SPEC)
    turn = before_effect(SPEC, UpgradePlanStatus(), seen, T0, generation=7)
    # one look: the plan computed, the baseline recorded, hop 1 begun, its prelude asked for, in one status
    assert turn.status.observed_generation == 7 and turn.status.phase is Phase.RUNNING
    assert [type(a).__name__ for a in turn.actions] == [
        "ComputePlan", "RecordBaseline", "AdvanceHop", "DisableReplication", "TakeOutOfRotation"]
    assert [s.phase for s in turn.passed] == [Phase.PLANNING, Phase.RUNNING, Phase.RUNNING]
    assert {e.step for e in turn.effects} == {key(StepName.DISABLE_REPLICATION), key(StepName.TAKE_OUT_OF_ROTATION)}
    assert all(turn.status.step(e.step).state is StepState.RUNNING for e in turn.effects)  # type: ignore[union-attr]
    action = BackupDatabase(key(StepName.BACKUP_DATABASE, database="mgmt-db"), "mgmt-db", "p0123456789abcdef-h1")
    started = Turn(planned(SPEC, seen), (action,))
    done = after_effect(started.status, [Outcome(action, BackupObservation(action.backup_id, True, T0))], later(1))
    assert done.step(action.step).state is StepState.SUCCEEDED  # type: ignore[union-attr]


def test_the_next_turn_waits_out_a_transient_error_and_comes_at_once_after_a_permanent_one() -> None:
    install = InstallServer(INSTALL, "ms-1", "2023.1")
    turn = Turn(UpgradePlanStatus(), (install,))
    assert next_turn_in(turn) == 0.0
    busy = TransientError(Where(server="ms-1"), "busy", "busy", retry_after=7.0)
    assert next_turn_in(turn, [Outcome(install, error=busy)]) == 7.0
    refused = PermanentError(Where(server="ms-1"), "no", "version-jump")
    assert next_turn_in(turn, [Outcome(install, error=refused)]) == 0.0
    assert next_turn_in(Turn(UpgradePlanStatus(), (Wait(Reason.INSTALLING, 3.0, "x"),))) == 3.0
    assert next_turn_in(Turn(UpgradePlanStatus(), ())) is None
