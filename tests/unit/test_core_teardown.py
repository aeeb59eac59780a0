"""What deleting a plan mid-run puts back (core/teardown.py): as before the plan, as far as the guide allows."""

from __future__ import annotations

import pytest
from core_builders import SMALL_ESTATE as SPEC

from uwm_upgrade.core.enums import (
    Phase,
    ReplicationRole,
    ReplicationState,
    ServerKind,
    ServerPhase,
    StepName,
    StepState,
)
from uwm_upgrade.core.models import ServerStatus, StepStatus, UpgradePlanStatus, parse_spec
from uwm_upgrade.core.observations import Observations, ServerObservation
from uwm_upgrade.core.teardown import needs_teardown, pending_work, restorations


def _obs(name: str, kind: ServerKind, *, phase: ServerPhase = ServerPhase.RUNNING, lb: bool = False,
         rotation: bool = False, role: ReplicationRole = ReplicationRole.NONE, replication: bool = False,
         version: str = "2022.1") -> ServerObservation:
    return ServerObservation(name=name, kind=kind, version=version, phase=phase,
                             database="mgmt-db" if kind is ServerKind.MANAGEMENT else "pers-db",
                             load_balanced=lb, in_rotation=rotation, replication_role=role,
                             replication_enabled=replication)


BASELINE_DONE = (StepStatus(name=StepName.RECORD_BASELINE, state=StepState.SUCCEEDED),)
STATUS = UpgradePlanStatus(steps=BASELINE_DONE, servers=(
    ServerStatus(name="ms-1", online_before=True), ServerStatus(name="ms-2", online_before=False),
    ServerStatus(name="ps-1", replication_before=ReplicationState.ENABLED),
    ServerStatus(name="ps-2", replication_before=ReplicationState.ENABLED)))


def test_deletion_restores_what_was_there_before_master_first() -> None:
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True), _obs("ms-2", ServerKind.MANAGEMENT, lb=True),
        _obs("ps-2", ServerKind.PERSONALIZATION, role=ReplicationRole.SUBSCRIBER),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER)))
    assert STATUS.started and not UpgradePlanStatus().started
    rotation, replication, notes = restorations(spec, STATUS, seen)
    assert rotation == ["ms-1"]  # ms-2 was out of rotation before the plan: it stays out
    assert replication == ["ps-1", "ps-2"]
    assert notes == []


@pytest.mark.parametrize(("phase", "steps", "expected"), [
    (Phase.RUNNING, BASELINE_DONE, True),
    (Phase.FAILED, BASELINE_DONE, True),  # a halted plan left the pool out and replication off: put back
    (Phase.ROLLED_BACK, BASELINE_DONE, False),  # its rollback put everything back
    (Phase.SUCCEEDED, BASELINE_DONE, False),
    (Phase.FAILED, (), False),  # failed at preflight: it never changed anything
])
def test_which_deleted_plans_put_the_estate_back(phase: Phase, steps: tuple[StepStatus, ...], expected: bool) -> None:
    assert needs_teardown(UpgradePlanStatus(phase=phase, steps=steps)) is expected


def test_replication_comes_back_only_among_servers_of_one_release() -> None:
    """A plan halted mid-hop leaves ps-1 on the new release and ps-2 on the old one: replication between
    them is what the guide forbids, so it is reported, never asked for (the agents would refuse it)."""
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True), _obs("ms-2", ServerKind.MANAGEMENT, lb=True),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER, version="2023.1"),
        _obs("ps-2", ServerKind.PERSONALIZATION, role=ReplicationRole.SUBSCRIBER)))
    rotation, replication, notes = restorations(spec, STATUS, seen)
    assert rotation == ["ms-1"] and replication == []
    assert notes == ["replication not enabled again: its servers must all run one release, none installing or"
                     " failed (ps-1 2023.1, ps-2 2022.1)"]


def test_replication_comes_back_on_a_server_still_starting_at_the_groups_release() -> None:
    """The last server of the group has just installed (its status page not confirming yet): one release,
    nothing installing, so replication goes back on, as before the plan."""
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True), _obs("ms-2", ServerKind.MANAGEMENT, lb=True),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER),
        _obs("ps-2", ServerKind.PERSONALIZATION, role=ReplicationRole.SUBSCRIBER, phase=ServerPhase.STARTING)))
    assert restorations(spec, STATUS, seen)[1] == ["ps-1", "ps-2"]


def test_deletion_does_not_force_what_the_guide_forbids_and_waits_for_busy_servers() -> None:
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.VERSION_MISMATCH),
        _obs("ms-2", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.INSTALLING),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER, replication=True)))
    rotation, replication, notes = restorations(spec, STATUS, seen)
    assert rotation == [] and replication == []
    assert notes == ["ms-1: cannot go back into rotation while VersionMismatch", "ps-2: not reachable",
                     "replication not enabled again: its servers must all run one release, none installing or"
                     " failed (ps-2 unobserved)"]
    assert pending_work(spec, STATUS, seen).waiting_for == ["ms-2 (Installing)"]


def test_deletion_does_not_ask_for_replication_between_servers_of_different_releases() -> None:
    """Deleted after the Master was upgraded but before its Subscriber: the agents would refuse replication
    (version-mismatch), so it is not asked for; the teardown says why it stays off."""
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True), _obs("ms-2", ServerKind.MANAGEMENT, lb=True),
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER, version="2023.1"),
        _obs("ps-2", ServerKind.PERSONALIZATION, role=ReplicationRole.SUBSCRIBER, version="2022.1")))
    rotation, replication, notes = restorations(spec, STATUS, seen)
    assert rotation == ["ms-1"] and replication == []
    assert [n.split(":")[0] for n in notes] == ["replication not enabled again"]
    assert "one release" in notes[0] and "ps-1 2023.1, ps-2 2022.1" in notes[0], notes


def test_deletion_waits_for_a_server_still_starting_that_goes_back_into_rotation() -> None:
    """Just installed, its status page not confirming yet: once it serves, it goes back (not 'NOT restored')."""
    spec = parse_spec(SPEC)
    seen = Observations.of(servers=(
        _obs("ms-1", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.STARTING),
        _obs("ms-2", ServerKind.MANAGEMENT, lb=True, phase=ServerPhase.STARTING),  # out before the plan
        _obs("ps-1", ServerKind.PERSONALIZATION, role=ReplicationRole.MASTER, phase=ServerPhase.STARTING)))
    assert pending_work(spec, STATUS, seen).waiting_for == ["ms-1 (Starting)"]


def test_as_before_the_plan_is_one_answer_replacement_aware() -> None:
    """The hop's last steps, a rollback and a teardown ask the same helpers (core/baseline.py)."""
    from uwm_upgrade.core.baseline import replication_to_restore, rotation_to_restore

    spec = parse_spec({**SPEC, "strategy": "CleanInstall", "personalizationCutover": "Policy",
                       "personalizationServers": [
                           {"name": "ps-2", "url": "http://ps-2:7771", "database": "pers-db",
                            "replicationRole": "Subscriber", "replacement": {"url": "http://ps-2-new:7771"}},
                           {"name": "ps-1", "url": "http://ps-1:7771", "database": "pers-db",
                            "replicationRole": "Master", "replacement": {"url": "http://ps-1-new:7771"}}]})
    assert [s.name for s in rotation_to_restore(spec, STATUS)] == ["ms-1"]
    assert [s.name for s in replication_to_restore(spec, STATUS)] == ["ps-1", "ps-2"]  # the Master first
    new = replication_to_restore(spec, STATUS, on_replacements=True)
    assert [(s.name, s.role) for s in new] == [("ps-1-new", ReplicationRole.MASTER),
                                               ("ps-2-new", ReplicationRole.SUBSCRIBER)]
    assert STATUS.replicated_before("ps-2") and not STATUS.replicated_before("ms-1")
    assert STATUS.in_rotation_before("ms-1") and not STATUS.in_rotation_before("ms-2")
