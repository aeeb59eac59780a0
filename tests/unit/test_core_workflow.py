"""Whole upgrades: decide() and the transactions driving an in-memory estate that obeys the guide.

The estate refuses what the agents refuse (and journals it), so "no refusal" means the operator never
asked for a forbidden order; the journal shows the order of events; crashes injected at random points
(losing the status not yet written and the health streaks) must change nothing but the time taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core_estate_model import FakeEstate, drive, make_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uwm_upgrade.core.actions import AwaitApproval, Pause
from uwm_upgrade.core.enums import ConditionStatus, ConditionType, Phase, ReplicationState, ServerPhase, StepState
from uwm_upgrade.core.models import UpgradePlanSpec, UpgradePlanStatus

HOPS = ("2023.1", "2025.1")
INSTANTS = ["before-effect", "before-send", "after-effect"]  # where a process can die in a turn


def index(journal: list[tuple[str, ...]], entry: tuple[str, ...]) -> int:
    return journal.index(entry)


def assert_guide_order(estate: FakeEstate, spec: UpgradePlanSpec, targets: tuple[str, ...] = HOPS) -> None:
    journal = estate.journal
    assert not estate.ops("refused"), estate.ops("refused")
    for target in targets:
        installs = [i for i, e in enumerate(journal) if e[0] == "install" and e[2] == target]
        assert installs, f"nothing installed for {target}"
        for db in spec.databases:
            servers = [s.name for s in spec.servers_of(db.name)]
            first, others = servers[0], servers[1:]
            migrate = index(journal, ("migrate", db.name, target))
            backups = [i for i, e in enumerate(journal) if e[:2] == ("backup", db.name) and e[2].endswith(
                f"-h{HOPS.index(target) + 1}")]
            assert len(backups) == 1 and backups[0] < migrate, "one backup, before the schema changes"
            assert index(journal, ("installed", first, target)) < migrate, "the first server migrates the schema"
            for other in others:
                assert index(journal, ("migrated", db.name, target)) < index(journal, ("install", other, target))
        ons = [i for i, e in enumerate(journal) if e[0] in ("replication", "rotation") and e[2] in ("on", "in")
               and i > installs[0]]
        assert all(i > max(installs) for i in ons), "back into service only after every install"
    assert len(estate.ops("migrate")) == len(targets) * len(spec.databases), "each schema migrated once per hop"


def assert_restored(run_status: UpgradePlanStatus, estate: FakeEstate, version: str) -> None:
    assert {s.version for s in estate.servers.values()} == {version}
    assert {d.schema for d in estate.databases.values()} == {version}
    for server in run_status.servers:
        fake = estate.servers[server.name]
        assert fake.replication_enabled == (server.replication_before is ReplicationState.ENABLED)
        if fake.load_balanced:
            assert fake.in_rotation == (server.online_before is not False)


def test_a_two_hop_upgrade_follows_the_guide_and_succeeds() -> None:
    spec = make_spec()
    estate = FakeEstate(spec)
    run = drive(spec, estate)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert_guide_order(estate, spec)
    assert_restored(run.status, estate, "2025.1")
    assert run.status.hop_display == "2/2" and run.status.current_version == "2025.1"
    assert run.status.current_step is None and run.status.completed_at is not None
    assert all(s.state in (StepState.SUCCEEDED, StepState.SKIPPED) for s in run.status.steps)
    succeeded = run.status.condition(ConditionType.SUCCEEDED)
    assert succeeded is not None and succeeded.status is ConditionStatus.TRUE
    assert {d.schema for d in estate.databases.values()} == {"2025.1"}
    assert {d.data for d in estate.databases.values()} == {"user-data-v0"}


def test_concurrency_never_exceeds_max_concurrent_servers() -> None:
    for limit in (1, 2):
        spec = make_spec(maxConcurrentServers=limit)
        estate = FakeEstate(spec)
        assert drive(spec, estate).status.phase is Phase.SUCCEEDED
        assert estate.max_installing == limit


def test_a_mixed_estate_is_reconciled_by_the_first_hop() -> None:
    spec = make_spec()
    estate = FakeEstate(spec, versions={"ms-1": "2022.1", "ps-2": "2023.1"}, schemas={"pers-db": "2021.1"})
    assert estate.servers["ps-2"].phase is ServerPhase.DATABASE_UPDATES_REQUIRED  # the simulators' phase
    run = drive(spec, estate)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert [(h.from_version, h.to_version) for h in run.status.path] == [("2021.1", "2023.1"), ("2023.1", "2025.1")]
    assert ("install", "ps-2", "2023.1") not in estate.journal  # already there: never reinstalled
    assert not estate.ops("refused")


def test_backups_disabled_takes_none() -> None:
    spec = make_spec(backup={"enabled": False})
    estate = FakeEstate(spec)
    run = drive(spec, estate)
    assert run.status.phase is Phase.SUCCEEDED and not estate.ops("backup")


def test_approval_holds_the_plan_until_the_hash_is_given() -> None:
    spec = make_spec(approval={"required": True})
    estate = FakeEstate(spec)
    held = drive(spec, estate, max_cycles=20)
    assert held.status.phase is Phase.AWAITING_APPROVAL and isinstance(held.actions[-1], AwaitApproval)
    assert estate.journal == []
    run = drive(spec, estate, status=held.status, approval=held.status.plan_hash)
    assert run.status.phase is Phase.SUCCEEDED
    approved = run.status.condition(ConditionType.AWAITING_APPROVAL)
    assert approved is not None and approved.reason == "Approved"


def test_pause_mid_run_stops_at_a_safe_point_and_resumes_where_it_left_off() -> None:
    spec = make_spec()
    estate = FakeEstate(spec)
    paused_spec = spec.model_copy(update={"paused": True})
    seen_during_pause: list[int] = []

    def toggle(cycle: int, status: UpgradePlanStatus) -> UpgradePlanSpec:
        if 60 <= cycle < 120:
            if status.phase is Phase.PAUSED:
                seen_during_pause.append(len(estate.journal))
            return paused_spec
        return spec

    run = drive(spec, estate, on_cycle=toggle)
    assert run.status.phase is Phase.SUCCEEDED
    assert len(seen_during_pause) > 10 and len(set(seen_during_pause)) == 1, "nothing happens while paused"
    assert any(isinstance(a, Pause) for a in run.actions)
    assert_guide_order(estate, spec)


def _failing_run(policy: str, fault: str, target: str, **spec: Any) -> tuple[UpgradePlanStatus, FakeEstate]:
    plan = make_spec(failurePolicy=policy, **spec)
    estate = FakeEstate(plan)
    getattr(estate.faults, fault).add(target)
    return drive(plan, estate).status, estate


def test_halt_leaves_the_estate_as_it_is_and_says_where() -> None:
    status, estate = _failing_run("Halt", "install_fail", "ps-2")
    assert status.phase is Phase.FAILED
    failed = [s for s in status.steps if s.state is StepState.FAILED]
    assert [(s.name, s.server) for s in failed] == [("InstallServer", "ps-2")]
    assert status.current_step == "InstallServer ps-2"
    assert "msiexec returned 1603" in (status.message or "") and "Estate:" in (status.message or "")
    assert not estate.ops("restore") and not estate.ops("refused")
    assert not any(s.in_rotation for s in estate.servers.values()), "a half-upgraded pool stays out of rotation"


def test_rollback_restores_backup_release_rotation_and_replication() -> None:
    status, estate = _failing_run("Rollback", "migration_fail", "pers-db")
    assert status.phase is Phase.ROLLED_BACK, status.message
    assert [e[1] for e in estate.ops("restore")] == ["mgmt-db", "pers-db"]
    assert_restored(status, estate, "2021.1")
    failed = status.condition(ConditionType.FAILED)
    assert failed is not None and failed.status is ConditionStatus.TRUE and failed.reason == "RolledBack"
    assert "MigrationFailed" in (failed.message or "")


def _install_fails_once_in_hop_two(plan: UpgradePlanSpec, estate: FakeEstate,
                                   server: str) -> Callable[[int, UpgradePlanStatus], UpgradePlanSpec]:
    """`drive`'s on_cycle: the next install of `server` fails, once hop 2 has begun."""
    broken: list[int] = []

    def on_cycle(cycle: int, status: UpgradePlanStatus) -> UpgradePlanSpec:
        if status.current_hop == 2 and not broken:
            broken.append(cycle)
            estate.faults.install_fail.add(server)
        return plan
    return on_cycle


def test_rollback_in_the_second_hop_returns_to_the_first_hops_release() -> None:
    """ps-1 fails before any server served 2025.1 (ms-1 is out of rotation): the hop is rolled back."""
    plan = make_spec(failurePolicy="Rollback")
    estate = FakeEstate(plan)

    run = drive(plan, estate, on_cycle=_install_fails_once_in_hop_two(plan, estate, "ps-1"))
    assert run.status.phase is Phase.ROLLED_BACK, run.status.message
    assert_restored(run.status, estate, "2023.1")
    assert [e[1] for e in estate.ops("restore")] == ["mgmt-db"]


def _halted_not_rolled_back(status: UpgradePlanStatus, estate: FakeEstate, cause: str, step: tuple[str, str | None],
                            served: str) -> None:
    """Halted where it failed, no database restored, and the Failed condition says why and what to do."""
    assert status.phase is Phase.FAILED, status.message
    failed = status.condition(ConditionType.FAILED)
    assert failed is not None and failed.reason == "RollbackUnsafe", failed
    message = failed.message or ""
    assert f"Not rolled back: {served}" in message and "would lose the user data" in message
    assert "fix the cause, then delete this plan and create it again" in message
    assert [(s.name, s.server) for s in status.steps if s.state is StepState.FAILED] == [step]
    assert next(s for s in status.steps if s.state is StepState.FAILED).message.startswith(cause)
    assert not estate.ops("restore") and not any(s.name.undoes for s in status.steps)


def test_a_failure_after_a_database_served_the_new_release_halts_instead_of_restoring_it() -> None:
    """ps-1 (no pool: it serves once its status page confirms) served 2025.1, then ps-3 fails to install:
    restoring pers-db would lose what its clients wrote since, so the plan halts and restores nothing."""
    plan = make_spec(failurePolicy="Rollback")
    estate = FakeEstate(plan)

    run = drive(plan, estate, on_cycle=_install_fails_once_in_hop_two(plan, estate, "ps-3"))
    _halted_not_rolled_back(run.status, estate, "InstallFailed", ("InstallServer", "ps-3"), "pers-db (ps-1 has served")
    mark = run.status.database("pers-db").new_release_served  # type: ignore[union-attr]
    assert mark is not None and (mark.hop, mark.version, mark.server) == (2, "2025.1", "ps-1")
    assert run.status.database("mgmt-db").new_release_served.hop == 1  # type: ignore[union-attr]  # not this hop


def test_a_slow_catch_up_after_every_server_served_halts_without_a_restore() -> None:
    """The last step of a hop (subscribers catching up) times out after everything served the new release:
    it used to restore both databases, losing the user data, and end Failed anyway."""
    plan = make_spec(failurePolicy="Rollback", targetVersion="2023.1")
    estate = FakeEstate(plan)
    estate.faults.never_caught_up.add("ps-3")
    run = drive(plan, estate)
    _halted_not_rolled_back(run.status, estate, "Timeout", ("VerifyReplication", None), "mgmt-db (ms-1 has served")
    assert "pers-db (ps-1 has served clients on 2023.1 since" in (run.status.message or "")


def test_the_rolling_back_message_says_the_data_loss_window() -> None:
    plan = make_spec(failurePolicy="Rollback")
    estate = FakeEstate(plan)
    estate.faults.migration_fail.add("pers-db")
    run = drive(plan, estate)
    rolling = [e.note for e in run.events if e.phase is Phase.ROLLING_BACK]
    assert len(rolling) == 1 and "Restoring mgmt-db from backup p" in rolling[0], rolling
    assert "pers-db from backup p" in rolling[0] and "user data written to them from the backup until the" \
        " restore is lost" in rolling[0]
    restored = [s.message or "" for s in run.status.steps if s.name == "RestoreBackup"]
    assert all("user data written to it from 2026-01-05T" in m and " is lost" in m for m in restored), restored


def test_a_rollback_that_cannot_restore_halts() -> None:
    status, estate = _failing_run("Rollback", "migration_fail", "pers-db", backup={"enabled": False})
    assert status.phase is Phase.FAILED and "RollbackFailed" in str(status.condition(ConditionType.FAILED))
    assert not estate.ops("restore")


def test_health_confirmations_must_be_consecutive() -> None:
    spec = make_spec(healthCheck={"successThreshold": 3, "periodSeconds": 2})
    estate = FakeEstate(spec)
    run = drive(spec, estate)
    assert run.status.phase is Phase.SUCCEEDED
    checks = [s for s in run.status.steps if s.name == "HealthCheck"]
    assert checks and all("confirmed 3 time(s)" in (s.message or "") for s in checks)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crashes=st.sets(st.tuples(st.integers(0, 320), st.sampled_from(INSTANTS)),
                       max_size=12),
       concurrency=st.integers(1, 3))
def test_a_crash_at_any_point_changes_nothing_but_the_time(crashes: set[tuple[int, str]], concurrency: int) -> None:
    spec = make_spec(maxConcurrentServers=concurrency)
    estate = FakeEstate(spec)
    run = drive(spec, estate, crash_at=crashes)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert_guide_order(estate, spec)
    assert_restored(run.status, estate, "2025.1")
    assert len(estate.ops("backup")) == 2 * len(spec.databases)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crashes=st.sets(st.tuples(st.integers(0, 400), st.sampled_from(INSTANTS)),
                       max_size=12))
def test_a_crash_during_a_rollback_still_rolls_back(crashes: set[tuple[int, str]]) -> None:
    spec = make_spec(failurePolicy="Rollback")
    estate = FakeEstate(spec)
    estate.faults.migration_fail.add("pers-db")
    run = drive(spec, estate, crash_at=crashes)
    assert run.status.phase is Phase.ROLLED_BACK, run.status.message
    assert_restored(run.status, estate, "2021.1")
    assert not estate.ops("refused")
