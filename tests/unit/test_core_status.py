"""Status transactions: conditions by Kubernetes conventions, step bookkeeping, printer columns, the patch."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from core_builders import T0, estate, later, make_spec, planned
from hypothesis import given, settings
from hypothesis import strategies as st

from uwm_upgrade.core.enums import (
    ConditionStatus,
    ConditionType,
    Health,
    Phase,
    ReplicationState,
    ServerPhase,
    StepName,
    StepState,
)
from uwm_upgrade.core.models import StepKey, UpgradePlanStatus, parse_status, status_to_wire
from uwm_upgrade.core.status import (
    fail_step,
    finish_step,
    observe_generation,
    record_observations,
    record_server,
    reset_running_steps,
    set_condition,
    set_phase,
    start_step,
    status_patch,
    with_display,
)

EMPTY = UpgradePlanStatus()
STEP = StepKey(StepName.INSTALL_SERVER, 1, "ms-2")


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- conditions


def test_a_new_condition_transitions_now() -> None:
    status = set_condition(EMPTY, ConditionType.PAUSED, True, "Paused", "spec.paused", T0)
    condition = status.condition(ConditionType.PAUSED)
    assert condition is not None and condition.status is ConditionStatus.TRUE
    assert condition.last_transition_time == T0


def test_a_new_reason_alone_does_not_move_the_transition_time() -> None:
    first = set_condition(EMPTY, ConditionType.PROGRESSING, True, "Installing", "ms-1", T0)
    second = set_condition(first, ConditionType.PROGRESSING, True, "MigratingSchema", "mgmt-db", later(60))
    condition = second.condition(ConditionType.PROGRESSING)
    assert condition is not None and condition.reason == "MigratingSchema" and condition.message == "mgmt-db"
    assert condition.last_transition_time == T0


def test_a_status_change_moves_the_transition_time() -> None:
    first = set_condition(EMPTY, ConditionType.PROGRESSING, True, "Running", "", T0)
    second = set_condition(first, ConditionType.PROGRESSING, False, "Paused", "", later(60))
    assert second.condition(ConditionType.PROGRESSING).last_transition_time == later(60)  # type: ignore[union-attr]


def test_setting_a_condition_to_what_it_is_changes_nothing() -> None:
    first = set_condition(EMPTY, ConditionType.READY, False, "Running", "phase Running", T0)
    assert set_condition(first, ConditionType.READY, False, "Running", "phase Running", later(60)) is first


def test_conditions_keep_one_entry_per_type_in_a_stable_order() -> None:
    status = EMPTY
    for kind in reversed(list(ConditionType)):
        status = set_condition(status, kind, False, "X", "", T0)
    status = set_condition(status, ConditionType.READY, True, "Y", "", T0)
    assert [c.type for c in status.conditions] == list(ConditionType)


UNDER_WAY = {ConditionType.RECONCILING}
EXPECTED_TRUE = {
    Phase.PENDING: set(), Phase.PLANNING: {ConditionType.PROGRESSING} | UNDER_WAY,
    Phase.RUNNING: {ConditionType.PROGRESSING} | UNDER_WAY, Phase.ROLLING_BACK: {ConditionType.PROGRESSING} | UNDER_WAY,
    Phase.PAUSED: {ConditionType.PAUSED} | UNDER_WAY, Phase.BLOCKED: {ConditionType.BLOCKED} | UNDER_WAY,
    Phase.AWAITING_APPROVAL: {ConditionType.AWAITING_APPROVAL} | UNDER_WAY,
    Phase.AWAITING_WINDOW: {ConditionType.AWAITING_WINDOW} | UNDER_WAY,
    Phase.SUCCEEDED: {ConditionType.READY, ConditionType.SUCCEEDED},
    Phase.FAILED: {ConditionType.FAILED, ConditionType.STALLED},
    Phase.ROLLED_BACK: {ConditionType.FAILED, ConditionType.STALLED},
}


@pytest.mark.parametrize("phase", list(Phase))
def test_each_phase_sets_exactly_its_conditions_true(phase: Phase) -> None:
    status = set_phase(set_phase(EMPTY, Phase.RUNNING, "Running", "", T0), phase, "Because", "why", later(5))
    true = {c.type for c in status.conditions if c.status is ConditionStatus.TRUE}
    assert true == EXPECTED_TRUE[phase] and status.phase is phase and status.message == "why"
    for condition in status.conditions:
        if condition.type in EXPECTED_TRUE[phase]:
            assert condition.reason == "Because"


def test_every_condition_has_every_field_of_a_metav1_condition() -> None:
    status = observe_generation(EMPTY, 3)
    for phase in Phase:
        status = set_phase(status, phase, "Because", "why", later(5))
        for condition in status_to_wire(status)["conditions"]:
            assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime",
                                      "observedGeneration"}, condition
            assert condition["observedGeneration"] == 3 and condition["reason"]


def test_a_new_generation_is_observed_by_every_condition() -> None:
    status = set_phase(observe_generation(EMPTY, 1), Phase.FAILED, "StepFailed", "ms-1 failed", T0)
    status = observe_generation(status, 2)
    assert status.observed_generation == 2
    assert {c.observed_generation for c in status.conditions} == {2}


def test_a_condition_of_another_writer_is_kept_as_it_is() -> None:
    raw = status_to_wire(set_phase(EMPTY, Phase.RUNNING, "Running", "go", T0))
    raw["conditions"].append({"type": "example.com/Audited", "status": "True", "reason": "Seen", "message": "",
                              "lastTransitionTime": "2026-01-05T09:00:00Z"})
    status = set_phase(parse_status(raw), Phase.SUCCEEDED, "Succeeded", "done", later(5))
    assert [c.type for c in status.conditions][-1] == "example.com/Audited"


def test_approval_ends_with_reason_approved_and_keeps_it() -> None:
    status = set_phase(EMPTY, Phase.AWAITING_APPROVAL, "AwaitingApproval", "approve", T0)
    status = set_phase(status, Phase.RUNNING, "Running", "go", later(10))
    status = set_phase(status, Phase.RUNNING, "Installing", "ms-1", later(20))
    approval = status.condition(ConditionType.AWAITING_APPROVAL)
    assert approval is not None and approval.status is ConditionStatus.FALSE and approval.reason == "Approved"
    assert approval.last_transition_time == later(10)


def test_messages_never_carry_secrets() -> None:
    status = set_phase(EMPTY, Phase.FAILED, "StepFailed", "connect failed: DRIVER={x};UID=sa;PWD=hunter2;"
                       " header Authorization: Bearer abc.def", T0)
    text = str(status_to_wire(status))
    assert "hunter2" not in text and "abc.def" not in text and "PWD=***" in text


# ---------------------------------------------------------------- steps


def test_a_restarted_step_keeps_its_start_time() -> None:
    running = start_step(EMPTY, STEP, T0)
    again = start_step(running, STEP, later(100))
    assert again is running and again.step(STEP).started_at == T0  # type: ignore[union-attr]


def test_finished_and_failed_steps_are_not_restarted_or_refinished() -> None:
    done = finish_step(start_step(EMPTY, STEP, T0), STEP, later(5), "ok")
    assert start_step(done, STEP, later(9)) is done and finish_step(done, STEP, later(9), "again") is done
    failed = fail_step(EMPTY, STEP, T0, "boom")
    assert failed.step(STEP).state is StepState.FAILED  # type: ignore[union-attr]
    assert fail_step(failed, STEP, later(1), "again") is failed


def test_skipped_steps_say_so() -> None:
    status = finish_step(EMPTY, STEP, T0, "nothing to do", skipped=True)
    assert status.step(STEP).state is StepState.SKIPPED  # type: ignore[union-attr]


def test_a_pause_puts_running_steps_back_to_pending() -> None:
    status = start_step(start_step(EMPTY, STEP, T0), StepKey(StepName.HEALTH_CHECK, 1, "ms-1"), T0)
    status = finish_step(status, StepKey(StepName.HEALTH_CHECK, 1, "ms-1"), T0, "ok")
    paused = reset_running_steps(status, "paused")
    assert paused.step(STEP).state is StepState.PENDING and paused.step(STEP).started_at is None  # type: ignore[union-attr]
    assert paused.step(StepKey(StepName.HEALTH_CHECK, 1, "ms-1")).state is StepState.SUCCEEDED  # type: ignore[union-attr]


def test_times_are_whole_seconds_and_must_be_aware() -> None:
    status = start_step(EMPTY, STEP, T0 + timedelta(microseconds=123456))
    assert status_to_wire(status)["steps"][0]["startedAt"] == "2026-01-05T09:00:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        start_step(EMPTY, STEP, datetime(2026, 1, 1))


# ---------------------------------------------------------------- observations and printer columns


def test_observations_fill_servers_databases_and_current_version() -> None:
    spec = make_spec()
    seen = estate(spec, "2023.1", servers={"ms-1": {"version": "2021.1", "in_rotation": False},
                                            "ps-2": {"phase": ServerPhase.LOCKED_OUT}})
    status = record_observations(EMPTY, spec, seen, T0)
    ms1, ps1, ps2 = status.server("ms-1"), status.server("ps-1"), status.server("ps-2")
    assert ms1 is not None and (ms1.version, ms1.online, ms1.replication) == ("2021.1", False, ReplicationState.NONE)
    assert ps1 is not None and (ps1.replication, ps1.health) == (ReplicationState.ENABLED, Health.HEALTHY)
    assert ps2 is not None and ps2.health is Health.LOCKED_OUT
    assert status.current_version == "2021.1"
    assert status.database("mgmt-db").schema_version == "2023.1"  # type: ignore[union-attr]


def test_replication_disabled_condition_follows_the_baseline() -> None:
    spec = make_spec()
    status = record_server(EMPTY, "ps-1", replication_before=ReplicationState.ENABLED)
    off = record_observations(status, spec, estate(spec, servers={"ps-1": {"replication_enabled": False}}), T0)
    condition = off.condition(ConditionType.REPLICATION_DISABLED)
    assert condition is not None and condition.status is ConditionStatus.TRUE and "ps-1" in (condition.message or "")
    back = record_observations(off, spec, estate(spec), later(10))
    assert back.condition(ConditionType.REPLICATION_DISABLED).status is ConditionStatus.FALSE  # type: ignore[union-attr]


def test_recording_the_same_observations_twice_writes_nothing() -> None:
    spec = make_spec()
    seen = estate(spec)
    once = record_observations(EMPTY, spec, seen, T0)
    assert status_patch(once, record_observations(once, spec, seen, later(30))) is None


def test_printer_columns_show_hop_and_step() -> None:
    spec = make_spec()
    status = planned(spec, estate(spec))
    assert status.hop_display == "1/2" and status.current_step == "DisableReplication"
    running = with_display(start_step(status, StepKey(StepName.BACKUP_DATABASE, 1, database="mgmt-db"), T0))
    assert running.current_step == "BackupDatabase mgmt-db"
    failed = with_display(set_phase(fail_step(running, STEP, T0, "x"), Phase.FAILED, "X", "", T0))
    assert failed.current_step == "InstallServer ms-2"
    assert with_display(set_phase(status, Phase.SUCCEEDED, "S", "", T0)).current_step is None


# ---------------------------------------------------------------- the patch


def test_no_change_is_no_patch() -> None:
    status = planned(make_spec(), estate(make_spec()))
    assert status_patch(status, status) is None
    assert status_patch(status, parse_status(status_to_wire(status))) is None


def test_the_patch_holds_only_what_changed() -> None:
    status = planned(make_spec(), estate(make_spec()))
    moved = status.model_copy(update={"current_hop": 2, "message": None})
    assert status_patch(status, moved) == {"currentHop": 2, "message": None}


def test_kopf_bookkeeping_in_the_status_is_left_alone() -> None:
    stored = {"phase": "Running", "kopf": {"progress": {"x": 1}}}
    status = parse_status(stored)
    patch = status_patch(status, set_phase(status, Phase.PAUSED, "Paused", "p", T0))
    assert patch is not None and "kopf" not in patch and patch["phase"] == "Paused"


transactions = st.lists(st.one_of(
    st.builds(lambda s: ("start", s), st.sampled_from(["ms-1", "ms-2", "ps-1"])),
    st.builds(lambda s: ("finish", s), st.sampled_from(["ms-1", "ms-2", "ps-1"])),
    st.builds(lambda s: ("fail", s), st.sampled_from(["ms-1", "ms-2", "ps-1"])),
    st.builds(lambda p: ("phase", p), st.sampled_from(list(Phase))),
    st.builds(lambda v: ("server", v), st.sampled_from(["2021.1", "2023.1", None])),
    st.just(("reset", None)),
), max_size=8)


@settings(max_examples=60, deadline=None)
@given(before=transactions, after=transactions)
def test_applying_the_patch_to_the_old_status_gives_the_new_one(
        before: list[tuple[str, Any]], after: list[tuple[str, Any]]) -> None:
    def apply(status: UpgradePlanStatus, op: str, arg: Any, now: datetime) -> UpgradePlanStatus:
        step = StepKey(StepName.INSTALL_SERVER, 1, arg)
        match op:
            case "start":
                return start_step(status, step, now)
            case "finish":
                return finish_step(status, step, now, "done")
            case "fail":
                return fail_step(status, step, now, "broken")
            case "phase":
                return set_phase(status, arg, "Because", f"phase {arg}", now)
            case "server":
                return record_server(status, "ms-1", version=arg)
            case _:
                return reset_running_steps(status, "paused")

    def run(status: UpgradePlanStatus, ops: list[tuple[str, Any]], start: int) -> UpgradePlanStatus:
        for i, (op, arg) in enumerate(ops):
            status = apply(status, op, arg, later(start + i))
        return with_display(status)

    old = run(EMPTY, before, 0)
    new = run(old, after, 100)
    patch = status_patch(old, new)
    if patch is None:
        assert status_to_wire(old) == status_to_wire(new)
    else:
        assert apply_merge_patch(status_to_wire(old), patch) == status_to_wire(new)
