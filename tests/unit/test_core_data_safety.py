"""The data-safety issue, in the core: a failed migration's evidence is never planned or migrated over, a
migration is requested once, a rollback never waits for ever nor fails on a stale error, the server that
answers is the one the spec names, and a hop left half done starts from the server already ahead.

Each test names the finding it covers; each failed on the code before the fix (the commit says how)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from core_builders import T0, about, at_step, estate, key, later, make_spec, one, planned
from core_estate_model import FakeEstate, drive

from uwm_upgrade.core.actions import (
    Block,
    ComputePlan,
    Fail,
    InstallServer,
    UpgradeSchema,
    Wait,
)
from uwm_upgrade.core.context import Limits
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Phase, Reason, ServerPhase, StepName, StepState
from uwm_upgrade.core.models import UpgradePlanStatus
from uwm_upgrade.core.observations import NOT_SENT, InstallObservation, TransientError, Where
from uwm_upgrade.core.transitions import apply_decision, apply_error, apply_result

F, T = "2021.1", "2023.1"
ALL = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")
ISO: dict[str, dict[str, Any]] = {n: {"replication_enabled": False, "in_rotation": False} for n in ALL}
US = key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db")
FAILED_PORTAL = {"migration": MigrationStatus.FAILED, "migration_by": "ms-1", "schema_version": "2022.1",
                 "migration_error": "injected fault: the schema migration failed midway, at release 2023.1"}


# ---------------------------------------------------------------- 1. a failed migration's evidence


def test_preflight_refuses_a_database_whose_portal_says_failed() -> None:
    """It used to plan over it, and back the damaged database up as the new plan's good backup."""
    spec = make_spec()
    seen = estate(spec, databases={"mgmt-db": FAILED_PORTAL})
    action = one(decide(spec, UpgradePlanStatus(), seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.PREFLIGHT_FAILED, action
    for words in ("schema upgrade of database mgmt-db through ms-1 Failed",
                  "(injected fault: the schema migration failed midway, at release 2023.1)",
                  "its schema is at 2022.1 and may be half migrated",
                  "restore mgmt-db from the verified backup taken before that migration",
                  "click CLOSE in the portal and create the plan again"):
        assert words in action.message, (words, action.message)


def test_a_blocked_plan_refuses_the_failed_migration_once_the_first_plan_halted() -> None:
    """The first plan halts on a failed migration and, Failed, holds nothing: the blocked one plans next."""
    spec = make_spec()
    status = planned(spec, estate(spec), start=False)
    seen = estate(spec, databases={"mgmt-db": FAILED_PORTAL})
    assert isinstance(one(decide(spec, status, seen.__class__(seen.servers, seen.databases, seen.health,
                                                           competing_plans=("first",)), T0)), Block)
    action = one(decide(spec, status, seen, T0))
    assert isinstance(action, Fail) and "mgmt-db through ms-1 Failed" in action.message


@pytest.mark.parametrize(("history", "schema", "words"), [
    (("2021.1", "2023.1"), "2023.1", "lacks 2022.1"),
    (("2021.1", "2022.1"), "2023.1", "lacks 2023.1"),
    (("2021.1", "2022.1", "2023.1"), "2022.1", "records 2023.1, beyond the schema"),
])
def test_preflight_refuses_a_partial_migration_history(history: tuple[str, ...], schema: str, words: str) -> None:
    spec = make_spec()
    seen = estate(spec, schema, databases={"pers-db": {"migrations": history, "schema_version": schema}})
    action = one(decide(spec, UpgradePlanStatus(), seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.PREFLIGHT_FAILED, action
    assert f"the migration history of database pers-db (uwm_migrations) {words}" in action.message
    assert f"though its schema version is {schema}" in action.message


@pytest.mark.parametrize("history", [(), ("2019.4", "2021.1"), ("2021.1",)])
def test_a_whole_or_unknown_history_is_planned(history: tuple[str, ...]) -> None:
    """Unknown (not read), starting before the catalog, or one release: nothing is missing."""
    spec = make_spec()
    seen = estate(spec, databases={"pers-db": {"migrations": history}})
    assert isinstance(one(decide(spec, UpgradePlanStatus(), seen, T0)), ComputePlan)


SCHEMA_STEP = {"servers": {**ISO, "ms-1": {**ISO["ms-1"], "version": T,
                                             "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}}}


def _requested(databases: dict[str, Any], servers: dict[str, Any] | None = None) -> Any:
    """decide() at UpgradeSchema mgmt-db after the migration was requested through ms-1."""
    spec = make_spec()
    seen = estate(spec, F, servers=servers or SCHEMA_STEP["servers"], databases={"mgmt-db": databases})
    status = at_step(spec, seen, US, state=StepState.RUNNING)
    action = UpgradeSchema(US, "ms-1", "mgmt-db", T)
    status = apply_result(apply_decision(status, action, later(1)), action, None, later(2))
    assert status.step(US).requested_at is not None  # type: ignore[union-attr]
    return about(decide(spec, status, seen, later(30)), US)


def test_a_requested_migration_is_never_requested_again() -> None:
    """The portal shows no trace of it (Idle, schema behind, no lock): it used to be asked again."""
    action = _requested({})
    assert isinstance(action, Fail) and action.reason is Reason.MIGRATION_UNCONFIRMED, action
    assert "was requested through ms-1 at 2026-01-05T09:00:02Z, but the portal says Idle" in action.message
    assert "never requested twice automatically" in action.message


def test_success_needs_the_portals_upgrade_successful_not_only_the_schema_version() -> None:
    """A Failed portal with the schema showing the target used to count as done."""
    servers = {**ISO, "ms-1": {**ISO["ms-1"], "version": T}}
    failed = _requested({**FAILED_PORTAL, "schema_version": T}, servers)
    assert isinstance(failed, Fail) and failed.reason is Reason.MIGRATION_FAILED
    idle = _requested({"schema_version": T}, servers)
    assert isinstance(idle, Fail) and idle.reason is Reason.MIGRATION_UNCONFIRMED
    done = _requested({"schema_version": T, "migration": MigrationStatus.UPGRADE_SUCCESSFUL}, servers)
    assert done.__class__.__name__ == "CompleteStep" and "Upgrade Successful" in done.message  # type: ignore[attr-defined]


def test_a_migration_in_flight_is_waited_for() -> None:
    action = _requested({"lock_holder": "ms-1", "migration": MigrationStatus.UPGRADING})
    assert isinstance(action, Wait) and action.reason is Reason.MIGRATING_SCHEMA


@pytest.mark.parametrize(("rule", "recorded"), [(None, True), (NOT_SENT, False)])
def test_a_transient_error_counts_as_requested_unless_nothing_was_sent(rule: str | None, recorded: bool) -> None:
    spec = make_spec()
    seen = estate(spec, F, servers=SCHEMA_STEP["servers"])
    action = UpgradeSchema(US, "ms-1", "mgmt-db", T)
    status = apply_decision(at_step(spec, seen, US), action, later(1))
    assert status.step(US).requested_at is None  # type: ignore[union-attr]  # decided, not yet sent
    error = TransientError(Where(server="ms-1"), "did not answer", rule)
    after = apply_error(status, action, error, later(2))
    assert (after.step(US).requested_at is not None) is recorded  # type: ignore[union-attr]


def test_a_pause_keeps_the_record_that_a_migration_was_requested() -> None:
    from uwm_upgrade.core.status import reset_running_steps

    spec = make_spec()
    seen = estate(spec, F, servers=SCHEMA_STEP["servers"])
    action = UpgradeSchema(US, "ms-1", "mgmt-db", T)
    status = apply_result(apply_decision(at_step(spec, seen, US), action, later(1)), action, None, later(2))
    assert reset_running_steps(status, "paused").step(US).requested_at == later(2)  # type: ignore[union-attr]


# ---------------------------------------------------------------- 3. rollbacks that end, and end right


def test_a_reinstall_is_not_failed_on_the_forward_installs_stale_error() -> None:
    """ps-3's forward install to 2023.1 failed; rolling back reinstalls 2021.1. Its first request got a
    transient error: the stale 2023.1 error used to fail the whole rollback, naming the wrong release."""
    spec = make_spec(failurePolicy="Rollback")
    seen = estate(spec, F, servers={**ISO, "ps-3": {**ISO["ps-3"], "phase": ServerPhase.FAILED,
                                                    "install": InstallObservation(T, "injected fault")}})
    status = _rolling_back(spec, seen, "ps-3")
    action = one(decide(spec, status, seen, later(10)))
    assert action == InstallServer(key(StepName.REINSTALL_PREVIOUS, server="ps-3"), "ps-3", F), action


def _rolling_back(spec: Any, seen: Any, server: str) -> UpgradePlanStatus:
    """Hop 1 rolling back, every rollback step before `server`'s reinstall done, that one Running."""
    from core_builders import set_state

    from uwm_upgrade.core.planning import rollback_steps
    from uwm_upgrade.core.status import add_steps

    status = at_step(spec, seen, key(StepName.INSTALL_SERVER, server="ps-3"), state=StepState.RUNNING)
    status = set_state(status, key(StepName.INSTALL_SERVER, server="ps-3"), StepState.FAILED)
    status = add_steps(status, rollback_steps(spec, 1))
    for step in status.steps:
        if step.name.undoes and step.state is StepState.PENDING:
            if step.key == key(StepName.REINSTALL_PREVIOUS, server=server):
                return set_state(status, step.key, StepState.RUNNING, T0)
            status = set_state(status, step.key, StepState.SUCCEEDED)
    raise AssertionError("no reinstall step")


def test_a_hung_first_server_install_under_rollback_fails_within_its_timeout() -> None:
    """ms-1's install hangs; the forward step times out and the hop rolls back. Its reinstall waited for
    the busy server in a wait that named no step, so the plan stayed RollingBack for ever."""
    spec = make_spec(failurePolicy="Rollback", targetVersion=T)
    estate_ = FakeEstate(spec)
    estate_.install_seconds = 10 ** 6  # the install never ends
    run = drive(spec, estate_, limits=Limits(install_seconds=120.0), max_cycles=400)
    assert run.status.phase is Phase.FAILED, (run.status.phase, run.status.message)
    message = run.status.message or ""
    assert "rollback of hop 1 failed: ReinstallPrevious ms-1 did not finish within 120s" in message, message
    assert estate_.now - T0 < timedelta(seconds=2 * 120 + 60), estate_.now - T0
    failed = [(s.name, s.server) for s in run.status.steps if s.state is StepState.FAILED]
    assert failed == [("InstallFirstServer", "ms-1"), ("ReinstallPrevious", "ms-1")], failed


# ---------------------------------------------------------------- 5. the server that answers


@pytest.mark.parametrize(("answers", "words"), [
    ({"ms-2": "ms-1"}, ["spec server ms-2 (http://127.0.0.1:7752) answers as ms-1",
                        "spec servers ms-1 and ms-2 are one server (ms-1) reached under two names"]),
    ({"ps-3": "ps-9"}, ["spec server ps-3 (http://127.0.0.1:7773) answers as ps-9"]),
])
def test_preflight_refuses_a_server_that_answers_under_another_name(answers: dict[str, str],
                                                                   words: list[str]) -> None:
    """One server reached under two names used to be 'upgraded' twice, the real second one untouched."""
    spec = make_spec()
    seen = estate(spec, servers={n: {"reported_name": a} for n, a in answers.items()})
    action = one(decide(spec, UpgradePlanStatus(), seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.IDENTITY_MISMATCH, action
    for w in words:
        assert w in action.message, (w, action.message)


def test_a_server_answering_under_another_name_mid_run_stops_the_plan() -> None:
    spec = make_spec()
    seen = estate(spec, servers={**ISO, "ms-2": {**ISO["ms-2"], "reported_name": "ms-1"}})
    status = at_step(spec, seen, key(StepName.INSTALL_SERVER, server="ms-2"))
    action = one(decide(spec, status, seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.IDENTITY_MISMATCH


# ---------------------------------------------------------------- 6. what the status page says


def test_a_status_page_without_the_version_does_not_confirm() -> None:
    """`_confirmed` accepted a page that showed no release at all."""
    from uwm_upgrade.core.observations import HealthObservation

    spec = make_spec()
    seen = estate(spec, F, servers={**ISO, "ms-1": {**ISO["ms-1"], "version": T}},
                  databases={"mgmt-db": {"schema_version": T}})
    seen = seen.__class__(seen.servers, seen.databases, {**seen.health, "ms-1": HealthObservation(True, 3, None)})
    check = key(StepName.HEALTH_CHECK, server="ms-1")
    status = at_step(spec, seen, check, state=StepState.RUNNING)
    action = about(decide(spec, status, seen, later(5)), check)
    assert isinstance(action, Wait) and "its status page shows version None, not 2023.1" in action.message


# ---------------------------------------------------------------- 8. a hop left half done by hand


def test_the_first_server_is_the_one_already_at_the_new_release() -> None:
    """ms-2 was upgraded by hand, mgmt-db's schema not: the servers refuse any other install first
    (database-first), so ms-2 is the hop's first server and migrates the schema."""
    spec = make_spec(targetVersion=T)
    seen = estate(spec, servers={"ms-2": {"version": T, "phase": ServerPhase.DATABASE_UPDATES_REQUIRED}})
    plan = one(decide(spec, UpgradePlanStatus(), seen, T0))
    assert isinstance(plan, ComputePlan), plan
    firsts = {(s.name, s.database): s.server for s in plan.steps if s.name in (
        StepName.INSTALL_FIRST_SERVER, StepName.UPGRADE_SCHEMA)}
    assert firsts == {(StepName.INSTALL_FIRST_SERVER, "mgmt-db"): "ms-2", (StepName.UPGRADE_SCHEMA, "mgmt-db"): "ms-2",
                      (StepName.INSTALL_FIRST_SERVER, "pers-db"): "ps-1", (StepName.UPGRADE_SCHEMA, "pers-db"): "ps-1"}
    others = [s.server for s in plan.steps if s.name is StepName.INSTALL_SERVER]
    assert others == ["ms-1", "ps-2", "ps-3"]
    assert "ms-2 upgrades mgmt-db first (it already runs a release ahead of the schema)" in plan.message


def test_a_half_done_hop_runs_to_the_end_without_a_refusal() -> None:
    spec = make_spec(targetVersion=T)
    fake = FakeEstate(spec, versions={"ms-2": T})
    assert fake.servers["ms-2"].phase is ServerPhase.DATABASE_UPDATES_REQUIRED  # the simulators' phase
    run = drive(spec, fake, approval=None)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert not fake.ops("refused") and ("install", "ms-2", T) not in fake.journal
    assert fake.journal.index(("migrated", "mgmt-db", T)) < fake.journal.index(("install", "ms-1", T))


def test_while_a_hop_is_rolled_back_the_status_keeps_saying_what_the_rollback_loses() -> None:
    """Several actions recorded in one write (the rollback begun, the first restore started) must not bury
    the headline: which backup, taken when, and that data written since is lost (seen on the API server:
    the first RollingBack status already said only 'RestoreBackup mgmt-db id ...')."""
    plan = make_spec(failurePolicy="Rollback", targetVersion="2023.1")
    fake = FakeEstate(plan)
    fake.faults.migration_fail.add("mgmt-db")
    rolling: list[str] = []

    def look(cycle: int, status: UpgradePlanStatus) -> Any:
        if status.phase is Phase.ROLLING_BACK:
            rolling.append(status.message or "")
        return plan

    run = drive(plan, fake, on_cycle=look)
    assert run.status.phase is Phase.ROLLED_BACK, run.status.message
    assert len(rolling) > 3
    for message in rolling:
        assert message.startswith("rolling back hop 1 after"), message
        assert "Restoring mgmt-db from backup" in message and "is lost" in message, message
