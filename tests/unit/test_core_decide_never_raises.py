"""`decide()` never raises, whatever it is shown: a property test over random specs (both strategies),
statuses (any step in any state, any hop, rolling back or not) and observations (any server or database
missing, any phase, release, lock, portal status, reported name, history, health or client configuration).

A raise in `decide()` is a plan that stops without a word in its status. It used to happen for
strategy CleanInstall when a new server could not be observed mid-run (`KeyError`: the unobserved gate
checked only the spec's servers, and the steps looked the new one up)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core_builders import T0, estate, key, make_spec, one, planned
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_core_clean_install import Estate as CleanEstate
from test_core_clean_install import spec_of

from uwm_upgrade.core.actions import Action, Wait
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Phase, Reason, ServerPhase, StepName, StepState
from uwm_upgrade.core.models import BackupRecord, ServedRecord, UpgradePlanSpec, UpgradePlanStatus
from uwm_upgrade.core.observations import (
    BackupObservation,
    ClientsObservation,
    DatabaseObservation,
    HealthObservation,
    InstallObservation,
    ObservationGap,
    Observations,
    ServerObservation,
    Where,
)
from uwm_upgrade.core.planning import rollback_steps
from uwm_upgrade.core.status import add_steps
from uwm_upgrade.core.turn import before_effect

RELEASES = ("2021.1", "2022.1", "2023.1", "2024.1", "2025.1", "1999.9")


def _clean_planned(spec: UpgradePlanSpec) -> UpgradePlanStatus:
    """A CleanInstall plan computed and started against its in-memory estate."""
    policy = ("http://ps-1:7771",) if spec.personalization_cutover == "Policy" else ("http://pers.uwm.test",)
    seen = CleanEstate.of(spec, policy=policy).observe()
    status = UpgradePlanStatus()
    for _ in range(3):
        status = before_effect(spec, status, seen, T0, approval=status.plan_hash).status
    assert status.started, status.message
    return status


SPECS: list[tuple[UpgradePlanSpec, UpgradePlanStatus]] = []
for _spec in (make_spec(), make_spec(failurePolicy="Rollback", maxConcurrentServers=2),
              make_spec(backup={"enabled": False}, failurePolicy="Rollback", targetVersion="2023.1")):
    SPECS.append((_spec, planned(_spec, estate(_spec))))
for _spec in (spec_of(), spec_of(personalizationCutover="Policy")):
    SPECS.append((_spec, _clean_planned(_spec)))


@st.composite
def statuses(draw: st.DrawFn, spec: UpgradePlanSpec, base: UpgradePlanStatus) -> UpgradePlanStatus:
    status = base
    if draw(st.booleans()):
        status = add_steps(status, rollback_steps(spec, draw(st.integers(1, max(len(status.path), 1)))))
    steps = tuple(s.model_copy(update={
        "state": draw(st.sampled_from(StepState)),
        "started_at": draw(st.sampled_from([None, T0, T0 - timedelta(hours=3)])),
        "requested_at": draw(st.sampled_from([None, T0]))}) if draw(st.booleans()) else s for s in status.steps)
    databases = tuple(d.model_copy(update={
        "last_backup": draw(st.sampled_from([None, BackupRecord(id="b", hop=1, verified=True, taken_at=T0),
                                             BackupRecord(id="c", hop=2, verified=False)])),
        "new_release_served": draw(st.sampled_from([None, ServedRecord(hop=1, version="2023.1", server="ps-1",
                                                                       since=T0)]))}) for d in status.databases)
    return status.model_copy(update={
        "steps": steps, "databases": databases,
        "current_hop": draw(st.integers(0, len(status.path) + 1)),
        "phase": draw(st.sampled_from([p for p in Phase if p not in (Phase.SUCCEEDED, Phase.FAILED,
                                                                     Phase.ROLLED_BACK)])),
        "plan_hash": draw(st.sampled_from([status.plan_hash, "other"]))})


def _names(spec: UpgradePlanSpec) -> list[str]:
    return [s.name for s in (*spec.servers(), *spec.replacement_servers())]


@st.composite
def observations(draw: st.DrawFn, spec: UpgradePlanSpec) -> Observations:
    names = _names(spec)
    release = st.sampled_from(RELEASES)
    servers = []
    for server in (*spec.servers(), *spec.replacement_servers()):
        if draw(st.integers(0, 9)) == 0:
            continue  # not observed this time
        servers.append(ServerObservation(
            name=server.name, kind=server.kind, version=draw(release), phase=draw(st.sampled_from(ServerPhase)),
            database=draw(st.sampled_from([server.database, "elsewhere"])),
            reported_name=draw(st.sampled_from([server.name, server.name, None, *names])),
            install=InstallObservation(draw(st.one_of(st.none(), release)), draw(st.sampled_from([None, "1603"]))),
            replication_role=server.role, replication_enabled=draw(st.booleans()), caught_up=draw(st.booleans()),
            load_balanced=draw(st.sampled_from([server.load_balanced, not server.load_balanced])),
            in_rotation=draw(st.booleans()), active_requests=draw(st.integers(0, 2)), online=draw(st.booleans())))
    databases = []
    for db in spec.databases:
        if draw(st.integers(0, 9)) == 0:
            continue
        databases.append(DatabaseObservation(
            name=db.name, schema_version=draw(release), lock_holder=draw(st.sampled_from([None, *names])),
            updates_required=draw(st.booleans()), migration=draw(st.sampled_from(MigrationStatus)),
            migration_by=draw(st.sampled_from([None, *names])), migration_error=draw(st.sampled_from([None, "x"])),
            migrations=tuple(draw(st.lists(release, max_size=4))),
            backups=tuple(BackupObservation(i, draw(st.booleans()), T0) for i in draw(st.lists(
                st.sampled_from(["b", "c"]), max_size=2)))))
    health = {n: HealthObservation(draw(st.booleans()), draw(st.integers(0, 3)), draw(st.one_of(st.none(), release)))
              for n in names if draw(st.booleans())}
    clients = None if draw(st.booleans()) else ClientsObservation(
        failover=tuple(draw(st.lists(st.sampled_from([s.url for s in (*spec.servers(), *spec.replacement_servers())]),
                                     max_size=3))))
    gaps = tuple(ObservationGap(Where(server=n), "connection refused") for n in names if draw(st.integers(0, 5)) == 0)
    return Observations.of(tuple(servers), tuple(databases), health, gaps, clients=clients)


@st.composite
def situations(draw: st.DrawFn) -> tuple[UpgradePlanSpec, UpgradePlanStatus, Observations, Any, str | None]:
    spec, base = draw(st.sampled_from(SPECS))
    if draw(st.booleans()):
        spec = spec.model_copy(update={"paused": True})
    status = draw(st.one_of(st.just(UpgradePlanStatus()), statuses(spec, base)))
    now = T0 + timedelta(seconds=draw(st.integers(0, 100_000)))
    return spec, status, draw(observations(spec)), now, draw(st.sampled_from([None, base.plan_hash]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(situations())
def test_decide_never_raises(situation: tuple[UpgradePlanSpec, UpgradePlanStatus, Observations, Any, str | None]) \
        -> None:
    spec, status, seen, now, approval = situation
    action = one(decide(spec, status, seen, now, approval=approval))
    assert isinstance(action, Action)
    before_effect(spec, status, seen, now, approval=approval)  # the whole pure turn, too


def test_a_new_server_unobserved_mid_run_is_waited_for_not_a_key_error() -> None:
    spec = spec_of()
    status = _clean_planned(spec)
    seen = CleanEstate.of(spec).observe()
    gone = Observations({n: o for n, o in seen.servers.items() if n != "ms-1-new"}, seen.databases, seen.health,
                        (ObservationGap(Where(server="ms-1-new"), "connection refused"),), clients=seen.clients)
    action = one(decide(spec, status, gone, T0))
    assert isinstance(action, Wait) and action.reason is Reason.OBSERVATION_UNAVAILABLE, action
    assert "cannot observe ms-1-new (connection refused)" in action.message
    assert action.steps == (key(StepName.ADD_FAILOVER_SERVER, server="ms-1-new"),)  # the next step waits, timed
