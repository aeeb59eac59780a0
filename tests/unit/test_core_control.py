"""Retry, abort and the maintenance window (core/control.py, core/window.py), driven through the real turn
against the simulator-faithful FakeEstate: what each does to the estate, and what it never does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from core_builders import planned
from core_estate_model import T0, FakeEstate, drive, make_spec, spec_with

from uwm_upgrade.core.actions import AwaitWindow, Fail, RecordBaseline
from uwm_upgrade.core.context import DEFAULT_LIMITS
from uwm_upgrade.core.control import hold_for_window
from uwm_upgrade.core.enums import AbortMode, ConditionType, Phase, Reason, StepName, StepState
from uwm_upgrade.core.models import MaintenanceWindowSpec, UpgradePlanSpec, UpgradePlanStatus
from uwm_upgrade.core.observations import Observations
from uwm_upgrade.core.status import status_patch
from uwm_upgrade.core.turn import before_effect
from uwm_upgrade.core.window import fit, hop_estimate, windows

# T0 is Monday 2026-01-05 09:00 UTC.


def _installs(estate: FakeEstate, server: str) -> int:
    return len([e for e in estate.journal if e[:2] == ("install", server)])


def _failed_on_install(server: str = "ps-2") -> tuple[UpgradePlanSpec, FakeEstate, UpgradePlanStatus]:
    plan = make_spec()
    estate = FakeEstate(plan)
    estate.faults.install_fail.add(server)
    run = drive(plan, estate)
    assert run.status.phase is Phase.FAILED, run.status.message
    return plan, estate, run.status


# ---------------------------------------------------------------- retry


def test_a_retry_goes_on_from_the_failed_step_and_succeeds() -> None:
    plan, estate, failed = _failed_on_install("ps-2")
    assert _installs(estate, "ps-2") == 1
    retrying = spec_with(plan, retry=1)
    seen_retried: set[tuple[StepName, str | None, int, StepState]] = set()

    def look(cycle: int, status: UpgradePlanStatus) -> UpgradePlanSpec:
        seen_retried.update((s.name, s.server, s.hop, s.state) for s in status.steps if s.retried_at is not None)
        return retrying

    run = drive(retrying, estate, status=failed, on_cycle=look)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert run.status.retries == 1
    assert _installs(estate, "ps-2") == 3  # hop 1 twice (the failed install asked again, once), hop 2 once
    assert all(_installs(estate, s) == 2 for s in ("ms-1", "ms-2", "ps-1", "ps-3"))  # two hops, nothing twice
    # hop 1's steps were summarised when hop 2 started: what the status showed on the way
    assert {(n, s, h) for n, s, h, _ in seen_retried} == {(StepName.INSTALL_SERVER, "ps-2", 1)}
    assert (StepName.INSTALL_SERVER, "ps-2", 1, StepState.SUCCEEDED) in seen_retried
    assert not estate.ops("refused")
    stalled = run.status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.status == "False"


def test_a_failed_plan_without_a_retry_stays_failed() -> None:
    plan, estate, failed = _failed_on_install()
    run = drive(plan, estate, status=failed)
    assert run.status == failed and run.cycles == 0


def test_a_retry_of_a_failed_schema_migration_is_refused() -> None:
    plan = make_spec()
    estate = FakeEstate(plan)
    estate.faults.migration_fail.add("mgmt-db")
    failed = drive(plan, estate).status
    assert failed.phase is Phase.FAILED and failed.condition(ConditionType.FAILED).reason == "MigrationFailed"
    journal = len(estate.journal)
    run = drive(spec_with(plan, retry=1), estate, status=failed, max_cycles=5)
    assert run.status.phase is Phase.FAILED and run.status.retries == 1
    assert (run.status.message or "").startswith("retry 1 refused: a schema migration is never requested again")
    assert len(estate.journal) == journal  # nothing asked of the estate


def test_a_retry_counter_raised_on_a_plan_that_is_not_failed_is_only_counted() -> None:
    plan = make_spec(retry=3)
    estate = FakeEstate(plan)
    estate.faults.install_fail.add("ps-2")
    run = drive(plan, estate)  # the failure later is not retried by the old counter
    assert run.status.phase is Phase.FAILED and run.status.retries == 3


def test_a_plan_that_failed_before_it_started_plans_again() -> None:
    plan = make_spec(maintenanceWindow={"days": ["monday"], "startTime": "09:30", "endTime": "09:40"})
    estate = FakeEstate(plan)
    seen = _with_zone(estate)
    failed = drive(plan, estate).status
    assert failed.phase is Phase.FAILED and not failed.started
    assert failed.condition(ConditionType.FAILED).reason == "HopDoesNotFitWindow", failed.message
    wide = spec_with(plan, retry=1, maintenance_window=MaintenanceWindowSpec.model_validate(
        {"days": list(_DAYS), "startTime": "00:00", "endTime": "23:59"}))
    run = drive(wide, estate, status=failed)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert seen, "the window was judged on observations with its zone"


# ---------------------------------------------------------------- abort


def _abort_when(plan: UpgradePlanSpec, mode: AbortMode,
                when: Callable[[UpgradePlanStatus], bool]) -> Callable[[int, UpgradePlanStatus], UpgradePlanSpec]:
    aborted = spec_with(plan, abort=mode)
    fired: list[int] = []

    def on_cycle(cycle: int, status: UpgradePlanStatus) -> UpgradePlanSpec:
        if fired or when(status):
            fired.append(cycle)
            return aborted
        return plan
    return on_cycle


def _running(name: StepName, server: str | None = None, hop: int = 1) -> Callable[[UpgradePlanStatus], bool]:
    return lambda status: any(s.name is name and s.hop == hop and s.state is StepState.RUNNING
                              and (server is None or s.server == server) for s in status.steps)


def test_abort_halts_at_the_next_safe_point() -> None:
    plan = make_spec()
    estate = FakeEstate(plan)
    run = drive(plan, estate, on_cycle=_abort_when(plan, AbortMode.HALT, _running(StepName.INSTALL_SERVER, "ps-2")))
    status = run.status
    assert status.phase is Phase.FAILED and status.condition(ConditionType.FAILED).reason == "Aborted"
    assert "aborted at a safe point" in (status.message or "")
    assert not [s for s in status.steps if s.state is StepState.RUNNING]
    assert estate.servers["ps-2"].version == "2023.1"  # the install in flight finished first
    assert _installs(estate, "ps-3") == 0  # and nothing was started after it
    assert not estate.ops("refused") and not estate.ops("restore")


def test_abort_before_the_start_changes_nothing() -> None:
    plan = make_spec(abort="Halt")
    estate = FakeEstate(plan)
    run = drive(plan, estate)
    assert run.status.phase is Phase.FAILED and not run.status.started
    assert run.status.condition(ConditionType.FAILED).reason == "Aborted"
    assert estate.journal == []


def test_abort_with_rollback_restores_the_hop_before_it_served() -> None:
    plan = make_spec()
    estate = FakeEstate(plan)
    run = drive(plan, estate, on_cycle=_abort_when(plan, AbortMode.ROLLBACK,
                                                   _running(StepName.INSTALL_FIRST_SERVER, "ps-1")))
    assert run.status.phase is Phase.ROLLED_BACK, run.status.message
    assert [e[1] for e in estate.ops("restore")] == ["mgmt-db"]  # pers-db's schema was not touched yet
    assert {s.version for s in estate.servers.values()} == {"2021.1"}
    assert all(s.in_rotation for s in estate.servers.values() if s.load_balanced)
    assert not estate.ops("refused")


def test_abort_with_rollback_after_a_database_served_halts_without_restoring() -> None:
    plan = make_spec()
    estate = FakeEstate(plan)
    run = drive(plan, estate, on_cycle=_abort_when(plan, AbortMode.ROLLBACK,
                                                   _running(StepName.VERIFY_REPLICATION, hop=1)))
    assert run.status.phase is Phase.FAILED
    assert run.status.condition(ConditionType.FAILED).reason == "RollbackUnsafe", run.status.message
    assert not estate.ops("restore")


# ---------------------------------------------------------------- maintenance window

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _window(**raw: object) -> MaintenanceWindowSpec:
    return MaintenanceWindowSpec.model_validate({"days": ["monday"], "startTime": "10:00", "endTime": "12:00",
                                                 **raw})


def _with_zone(estate: FakeEstate, zone: str = "UTC") -> list[Observations]:
    """Make `estate.observe` report the window's zone, as the engine looks it up; returns what it saw."""
    seen: list[Observations] = []
    plain = estate.observe

    def observe(period: float = 2.0) -> Observations:
        found = replace(plain(period), zone=ZoneInfo(zone))
        seen.append(found)
        return found
    estate.observe = observe  # type: ignore[method-assign]
    return seen


def test_windows_cross_midnight_and_belong_to_the_day_they_open() -> None:
    spec = _window(days=["sunday"], startTime="22:00", endTime="02:00")
    now = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # Monday 01:00: inside Sunday's window
    first = next(windows(spec, ZoneInfo("UTC"), now))
    assert (first.start, first.end) == (datetime(2026, 1, 4, 22, 0, tzinfo=UTC), datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
    assert fit(spec, ZoneInfo("UTC"), now, 3600).open == first
    assert fit(spec, ZoneInfo("UTC"), now, 3 * 3600).open is None  # does not fit in what is left
    assert fit(spec, ZoneInfo("UTC"), now, 3 * 3600).next_start == datetime(2026, 1, 11, 22, 0, tzinfo=UTC)


def test_windows_follow_the_time_zone_across_a_dst_change() -> None:
    spec = _window(days=["sunday"], startTime="01:00", endTime="05:00", timeZone="Europe/Berlin")
    zone = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # the night of 29 March 2026 loses an hour at 02:00
    opening = next(windows(spec, zone, now))
    assert opening.start == datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    assert opening.end == datetime(2026, 3, 29, 3, 0, tzinfo=UTC)  # 05:00 CEST
    assert opening.seconds == 3 * 3600


def test_a_hop_estimate_counts_concurrent_servers_once_per_round() -> None:
    plan = make_spec()
    status = planned(plan, FakeEstate(plan).observe())
    one = hop_estimate(plan, status, 1)
    three = hop_estimate(spec_with(plan, max_concurrent_servers=3), status, 1)
    assert one > three > 0  # ms-2, ps-2, ps-3 after the first servers: three rounds, or one


def _gate(plan: UpgradePlanSpec, now: datetime, zone: str | None = "spec") -> object:
    """The gate before the baseline, with the zone the engine would look up (None: an unknown zone)."""
    assert plan.maintenance_window is not None
    name = plan.maintenance_window.time_zone if zone == "spec" else zone
    seen = Observations(zone=ZoneInfo(name) if name else None)
    status = planned(plan, FakeEstate(plan).observe(), start=False)
    return hold_for_window(plan, status, seen, now, RecordBaseline((), ()), DEFAULT_LIMITS)


def test_the_run_starts_inside_the_window_when_its_first_hop_fits() -> None:
    plan = make_spec(maintenanceWindow={"days": ["monday"], "startTime": "10:00", "endTime": "23:00"})
    assert isinstance(_gate(plan, T0 + timedelta(hours=1, minutes=30)), RecordBaseline)  # Monday 10:30


def test_outside_the_window_the_plan_waits_naming_the_next_opening() -> None:
    plan = make_spec(maintenanceWindow={"days": ["tuesday"], "startTime": "10:00", "endTime": "23:00",
                                        "timeZone": "Europe/Berlin"})
    action = _gate(plan, T0)
    assert isinstance(action, AwaitWindow) and action.reason is Reason.OUTSIDE_WINDOW
    assert action.next_start == datetime(2026, 1, 6, 9, 0, tzinfo=UTC)  # 10:00 CET
    assert "Tue 2026-01-06 10:00 Europe/Berlin" in action.message


def test_a_hop_that_does_not_fit_what_is_left_waits_for_the_next_window() -> None:
    plan = make_spec(maintenanceWindow={"days": ["monday"], "startTime": "08:00", "endTime": "23:00"})
    late = T0.replace(hour=22)
    action = _gate(plan, late)
    assert isinstance(action, AwaitWindow) and action.reason is Reason.HOP_DOES_NOT_FIT
    assert action.next_start == datetime(2026, 1, 12, 8, 0, tzinfo=UTC)


def test_a_hop_longer_than_any_window_fails_before_anything_changes() -> None:
    plan = make_spec(maintenanceWindow={"days": ["monday"], "startTime": "10:00", "endTime": "10:05"})
    action = _gate(plan, T0)
    assert isinstance(action, Fail) and action.reason is Reason.HOP_DOES_NOT_FIT


def test_an_unknown_time_zone_starts_nothing() -> None:
    plan = make_spec(maintenanceWindow={"days": list(_DAYS), "startTime": "00:00", "endTime": "23:59"})
    action = _gate(plan, T0, zone=None)
    assert isinstance(action, AwaitWindow) and action.reason is Reason.UNKNOWN_TIME_ZONE


def test_the_plan_waits_for_its_window_then_runs_every_hop_inside_windows() -> None:
    plan = make_spec(maintenanceWindow={"days": ["monday"], "startTime": "11:00", "endTime": "23:00"})
    estate = FakeEstate(plan)
    _with_zone(estate)
    waited: list[UpgradePlanStatus] = []

    def watch(cycle: int, status: UpgradePlanStatus) -> UpgradePlanSpec:
        if status.phase is Phase.AWAITING_WINDOW:
            waited.append(status)
        return plan
    run = drive(plan, estate, on_cycle=watch, max_cycles=6000)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert waited and waited[0].next_window_start == T0.replace(hour=11)
    assert waited[0].condition(ConditionType.AWAITING_WINDOW).status == "True"
    assert run.status.started_at is not None and run.status.started_at >= T0.replace(hour=11)
    assert run.status.next_window_start is None
    first_hop = run.status.path[0].summary  # its steps were summarised when hop 2 started
    assert first_hop is not None and first_hop.started_at is not None
    hop_starts = [first_hop.started_at, min(s.started_at for s in run.status.steps if s.hop == 2 and s.started_at)]
    assert all(T0.replace(hour=11) <= t < T0.replace(hour=23) for t in hop_starts)


# ---------------------------------------------------------------- a wait past its deadline


def test_a_plan_that_cannot_observe_its_estate_for_too_long_is_stalled_until_it_can() -> None:
    plan = make_spec()
    full = FakeEstate(plan).observe()
    blind = replace(full, servers={k: v for k, v in full.servers.items() if k != "ps-3"})
    status = before_effect(plan, UpgradePlanStatus(), blind, T0, generation=1).status
    assert status.phase is Phase.PLANNING and status.condition(ConditionType.STALLED).status == "False"
    late = T0 + timedelta(seconds=DEFAULT_LIMITS.step_seconds + 1)
    stuck = before_effect(plan, status, blind, late, generation=1).status
    stalled = stuck.condition(ConditionType.STALLED)
    assert (stalled.status, stalled.reason) == ("True", "ProgressDeadlineExceeded"), stalled
    assert "cannot observe ps-3" in (stalled.message or "")
    assert stuck.condition(ConditionType.RECONCILING).status == "False"  # kstatus: Failed, not InProgress
    again = before_effect(plan, stuck, blind, late + timedelta(seconds=5), generation=1).status
    assert status_patch(stuck, again) is None or "conditions" not in (status_patch(stuck, again) or {})
    seen = before_effect(plan, again, full, late + timedelta(seconds=10), generation=1).status
    assert seen.condition(ConditionType.STALLED).status == "False"
    assert seen.condition(ConditionType.RECONCILING).status == "True"
