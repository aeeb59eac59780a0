"""The hop as lanes (core/lanes.py): decide() answers every action the guide allows at once, and no more.

The example estate: ms-1 and ps-1 are the first servers of mgmt-db and pers-db; ms-2, ps-2, ps-3 the
others. "ISO" is the estate isolated for the upgrade (replication off, the pool out of rotation).
"""

from __future__ import annotations

from typing import Any

from core_builders import T0, about, at_step, estate, key, later, make_spec, one
from core_estate_model import FakeEstate, drive

from uwm_upgrade.core.actions import (
    Action,
    BackupDatabase,
    BringIntoRotation,
    CompleteStep,
    Fail,
    InstallServer,
    RestoreReplication,
    Wait,
)
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Phase, Reason, ServerPhase, StepName, StepState
from uwm_upgrade.core.observations import InstallObservation

F, T = "2021.1", "2023.1"
ALL = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")
ISO: dict[str, dict[str, Any]] = {n: {"replication_enabled": False, "in_rotation": False} for n in ALL}
BACKUP_MGMT = key(StepName.BACKUP_DATABASE, database="mgmt-db")
FIRST_MS = key(StepName.INSTALL_FIRST_SERVER, server="ms-1", database="mgmt-db")


def installs(actions: tuple[Action, ...]) -> set[str]:
    return {a.server for a in actions if isinstance(a, InstallServer)}


def test_after_the_prelude_every_database_is_backed_up_and_one_server_at_a_time_installs() -> None:
    spec = make_spec()
    seen = estate(spec, F, servers=ISO)
    status = at_step(spec, seen, BACKUP_MGMT)
    actions = decide(spec, status, seen, T0)
    assert {a.database for a in actions if isinstance(a, BackupDatabase)} == {"mgmt-db", "pers-db"}
    assert installs(actions) == {"ms-1"}  # maxConcurrentServers 1: ps-1 waits, though its lane is free


def test_with_room_both_first_servers_install_at_once() -> None:
    spec = make_spec(maxConcurrentServers=3)
    seen = estate(spec, F, servers=ISO)
    actions = decide(spec, at_step(spec, seen, BACKUP_MGMT), seen, T0)
    assert installs(actions) == {"ms-1", "ps-1"}  # only first servers: the others wait for their schema


def test_a_databases_other_servers_start_once_its_own_schema_is_verified() -> None:
    """mgmt-db is verified while pers-db still migrates: ms-2 installs (the bound counts ms-1 and ps-1, both
    in flight until their status pages confirm), ps-2 and ps-3 wait for pers-db."""
    spec = make_spec(maxConcurrentServers=3)
    servers = {**ISO, "ms-1": {**ISO["ms-1"], "version": T, "phase": ServerPhase.STARTING},
               "ps-1": {**ISO["ps-1"], "version": T, "phase": ServerPhase.MIGRATING_SCHEMA}}
    seen = estate(spec, F, servers=servers, databases={
        "mgmt-db": {"schema_version": T}, "pers-db": {"lock_holder": "ps-1", "migration": MigrationStatus.UPGRADING}})
    status = at_step(spec, seen, key(StepName.HEALTH_CHECK, server="ms-1"), state=StepState.RUNNING)
    for done in (key(StepName.BACKUP_DATABASE, database="pers-db"),
                 key(StepName.INSTALL_FIRST_SERVER, server="ps-1", database="pers-db")):
        status = status.model_copy(update={"steps": tuple(
            s.model_copy(update={"state": StepState.SUCCEEDED}) if s.key == done else s for s in status.steps)})
    status = status.model_copy(update={"steps": tuple(
        s.model_copy(update={"state": StepState.RUNNING, "started_at": T0})
        if s.key == key(StepName.UPGRADE_SCHEMA, server="ps-1", database="pers-db") else s for s in status.steps)})
    actions = decide(spec, status, seen, later(5))
    assert installs(actions) == {"ms-2"}, actions
    assert isinstance(about(actions, key(StepName.UPGRADE_SCHEMA, server="ps-1", database="pers-db")), Wait)
    assert isinstance(about(actions, key(StepName.HEALTH_CHECK, server="ms-1")), Wait)


def _failed_while(other: dict[str, Any], failed: str = "ps-1", installing: str = "ms-1") -> tuple[Any, Any, Any]:
    """The first servers of both databases asked to install: `failed`'s install failed (error 1603), the
    other lane's first server, `installing`, is as `other` says."""
    spec = make_spec(maxConcurrentServers=3)
    servers = {**ISO, installing: {**ISO[installing], **other},
               failed: {**ISO[failed], "phase": ServerPhase.FAILED, "install": InstallObservation(T, "error 1603")}}
    seen = estate(spec, F, servers=servers)
    status = at_step(spec, seen, BACKUP_MGMT)
    for running in (FIRST_MS, key(StepName.INSTALL_FIRST_SERVER, server="ps-1", database="pers-db")):
        status = status.model_copy(update={"steps": tuple(
            s.model_copy(update={"state": StepState.RUNNING, "started_at": T0}) if s.key == running else s
            for s in status.steps)})
    return spec, status, seen


INSTALLING = {"phase": ServerPhase.INSTALLING, "install": InstallObservation(T)}


def test_one_lane_failing_halts_every_lane_once_the_others_landed() -> None:
    """ps-1's install fails while ms-1's is under way: nothing new starts, the halt waits for ms-1's install
    to end, then it is the whole answer and its estate says where ms-1 ended up (the campaign's finding:
    halting at once described ms-1 as installing 2021.1, and it then ran 2023.1)."""
    spec, status, seen = _failed_while(INSTALLING)
    waiting = decide(spec, status, seen, later(5))
    assert [type(a) for a in waiting] == [Wait], waiting
    assert waiting[0].reason is Reason.HALTING and "ms-1 installing" in waiting[0].message, waiting
    assert f"installing {T} on ps-1 failed: error 1603" in waiting[0].message, waiting

    spec, status, seen = _failed_while({"version": T, "phase": ServerPhase.STARTING})
    landed = decide(spec, status, seen, later(6))
    assert isinstance(landed[-1], Fail) and landed[-1].reason is Reason.INSTALL_FAILED, landed
    assert f"ms-1 {T} Starting" in landed[-1].message, landed[-1].message
    assert all(isinstance(a, CompleteStep | Fail) for a in landed), landed


def test_a_halt_waits_for_another_lane_only_within_that_lane_s_step_timeout() -> None:
    """ms-1's install failed while ps-1's hangs: within ps-1's step timeout the halt waits for it; past it,
    ps-1 is no longer waited for and the plan halts on ms-1's failure, saying ps-1 is still installing."""
    spec, status, seen = _failed_while(INSTALLING, failed="ms-1", installing="ps-1")
    halting = one(decide(spec, status, seen, later(5)))
    assert isinstance(halting, Wait) and halting.reason is Reason.HALTING, halting
    action = one(decide(spec, status, seen, later(24 * 3600)))
    assert isinstance(action, Fail) and action.reason is Reason.INSTALL_FAILED, action
    assert f"installing {T} on ms-1 failed: error 1603" in action.message, action.message
    assert f"ps-1 {F} Installing" in action.message, action.message


def test_the_tail_brings_the_pool_back_and_replication_on_at_once_then_waits_for_the_catch_up() -> None:
    spec = make_spec()
    now = estate(spec, T, servers={n: {**ISO[n], "version": T} for n in ALL},
                 databases={d: {"schema_version": T} for d in ("mgmt-db", "pers-db")})
    status = at_step(spec, now, key(StepName.BRING_INTO_ROTATION))
    actions = decide(spec, status, now, T0)
    assert {type(a) for a in actions} == {BringIntoRotation, RestoreReplication}
    back = estate(spec, T, databases={d: {"schema_version": T} for d in ("mgmt-db", "pers-db")},
                  servers={"ps-3": {"caught_up": False}})
    answered = decide(spec, status, back, T0)
    assert isinstance(about(answered, key(StepName.BRING_INTO_ROTATION)), CompleteStep)
    assert isinstance(about(answered, key(StepName.RESTORE_REPLICATION)), CompleteStep)
    assert not [a for a in answered if key(StepName.VERIFY_REPLICATION) in getattr(a, "steps", ())]


def test_concurrency_shortens_a_whole_run_and_never_exceeds_the_bound() -> None:
    """The in-memory estate (the simulators' rules) upgraded twice: at most one server down at a time with
    1; with 3 both first servers are asked to install at the same moment, and the run is shorter."""
    ends = {}
    for bound in (1, 3):
        spec = make_spec(maxConcurrentServers=bound)
        estate_ = FakeEstate(spec)
        run = drive(spec, estate_)
        assert run.status.phase is Phase.SUCCEEDED, run.status.message
        assert not estate_.ops("refused") and estate_.max_down <= bound
        first = {name: t for t, name in estate_.installed_at[:5]}
        if bound == 3:
            assert first["ms-1"] == first["ps-1"], estate_.installed_at
        ends[bound] = estate_.t
    assert ends[3] < ends[1] * 0.8, ends


def test_the_bounded_group_is_answered_by_one_call_however_many_of_its_servers_are_ready(
        monkeypatch: Any) -> None:
    """Every ready server of the group is handed to `server_group` together, once per `decide()`: it was
    called once per ready install step, each call walking the whole group (quadratic: 200 servers made a
    decision take 250 ms of CPU). The answer is the same either way; the count is what this checks."""
    from uwm_upgrade.core import steps

    servers = [{"name": f"ps-{i}", "url": f"http://127.0.0.1:{7800 + i}", "database": "pers-db",
                "replicationRole": "Master" if i == 1 else "Subscriber"} for i in range(1, 41)]
    spec = make_spec(personalizationServers=servers, maxConcurrentServers=50)
    upgraded = {"version": T, "phase": ServerPhase.RUNNING}
    seen = estate(spec, F, servers={**{n: ISO.get(n, {"replication_enabled": False, "in_rotation": False})
                                       for n in (s.name for s in spec.servers())},
                                    "ms-1": {**ISO["ms-1"], **upgraded}, "ms-2": {**ISO["ms-2"], **upgraded},
                                    "ps-1": {"replication_enabled": False, **upgraded}},
                  databases={d: {"schema_version": T} for d in ("mgmt-db", "pers-db")})
    status = at_step(spec, seen, key(StepName.INSTALL_SERVER, server="ps-2"))
    calls = []
    real = steps.server_group

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "server_group", counted)
    actions = decide(spec, status, seen, T0)
    assert installs(actions) == {f"ps-{i}" for i in range(2, 41)}  # 39 of them: the bound is 50
    assert len(calls) == 1, f"server_group was called {len(calls)} times for one decision"
