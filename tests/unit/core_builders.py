"""Builders for the core's table-driven tests: an observed estate, and a status at any step of a plan.

`estate()` observes a healthy estate at one release, with per-server and per-database overrides.
`at_step()` returns the status of a plan whose every step before `key` succeeded, built through the
real `decide()`/`apply_decision()` for the plan and the baseline, so the tests start from states the
operator can really reach.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from core_estate_model import T0, make_spec

from uwm_upgrade.core.actions import Action, AdvanceHop, ComputePlan, RecordBaseline, steps_of
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, ReplicationRole, ServerPhase, StepName, StepState
from uwm_upgrade.core.models import ApprovalSpec, StepKey, UpgradePlanSpec, UpgradePlanStatus
from uwm_upgrade.core.observations import (
    DatabaseObservation,
    HealthObservation,
    InstallObservation,
    Observations,
    ServerObservation,
)
from uwm_upgrade.core.status import record_observations, start_step
from uwm_upgrade.core.transitions import apply_decision

__all__ = ["SMALL_ESTATE", "T0", "about", "at_step", "estate", "key", "later", "make_spec", "one", "planned",
           "set_state"]

# A smaller estate, as a raw spec: two load-balanced Management servers, a Master and one Subscriber.
SMALL_ESTATE: dict[str, Any] = {
    "targetVersion": "2023.1", "releases": ["2021.1", "2022.1", "2023.1"],
    "agentSecretRef": {"name": "agent"},
    "databases": [{"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "m"}},
                  {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "p"}}],
    "managementServers": [{"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db", "loadBalanced": True},
                          {"name": "ms-2", "url": "http://ms-2:7751", "database": "mgmt-db", "loadBalanced": True}],
    "personalizationServers": [
        {"name": "ps-1", "url": "http://ps-1:7771", "database": "pers-db", "replicationRole": "Master"},
        {"name": "ps-2", "url": "http://ps-2:7771", "database": "pers-db", "replicationRole": "Subscriber"}],
}



def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def estate(spec: UpgradePlanSpec, version: str = "2021.1", *, servers: dict[str, dict[str, Any]] | None = None,
           databases: dict[str, dict[str, Any]] | None = None, healthy: bool = True,
           consecutive: int = 1) -> Observations:
    """Every server at `version`, Running, replication on where it has a role, pool members in rotation."""
    found = []
    for s in spec.servers():
        obs = ServerObservation(
            name=s.name, kind=s.kind, version=version, phase=ServerPhase.RUNNING, database=s.database,
            reported_name=s.name, install=InstallObservation(), replication_role=s.role,
            replication_enabled=s.role is not ReplicationRole.NONE, load_balanced=s.load_balanced,
            in_rotation=s.load_balanced)
        found.append(replace(obs, **(servers or {}).get(s.name, {})))
    dbs = [replace(DatabaseObservation(d.name, version, migration=MigrationStatus.IDLE), **(databases or {}).get(
        d.name, {})) for d in spec.databases]
    health = {o.name: HealthObservation(healthy, consecutive if healthy else 0, o.version) for o in found}
    return Observations.of(tuple(found), tuple(dbs), health)


def key(name: StepName, hop: int = 1, server: str | None = None, database: str | None = None) -> StepKey:
    return StepKey(name, hop, server, database)


def one(actions: tuple[Action, ...]) -> Action:
    """The single action of an answer of `decide()` that must have one (a gate, a failure, the end)."""
    assert len(actions) == 1, actions
    return actions[0]


def about(actions: tuple[Action, ...], step: StepKey) -> Action:
    """What `decide()` answers for `step` among the lanes' actions (a gate, a failure or the end alone
    when it is the whole answer); exactly one action concerns a step."""
    if len(actions) == 1 and not steps_of(actions[0]):
        return actions[0]
    found = [a for a in actions if step in steps_of(a)]
    assert len(found) == 1, (step, actions)
    return found[0]


def planned(spec: UpgradePlanSpec, seen: Observations, now: datetime = T0, *, start: bool = True,
            approval: str | None = None) -> UpgradePlanStatus:
    """A status with the plan computed and, with `start`, the baseline recorded and hop 1 begun."""
    status = record_observations(UpgradePlanStatus(), spec, seen, now)
    wanted = (ComputePlan, RecordBaseline, AdvanceHop) if start else (ComputePlan,)
    for expected in wanted:
        # Starting, the plan is approved (an estate found out of rotation or with replication off needs it).
        given = approval if approval is not None or not start or expected is ComputePlan else status.plan_hash
        action = one(decide(spec, status, seen, now, approval=given))
        assert isinstance(action, expected), action
        status = record_observations(apply_decision(status, action, now), spec, seen, now)
    return status


def set_state(status: UpgradePlanStatus, step: StepKey, state: StepState,
              started_at: datetime | None = None) -> UpgradePlanStatus:
    """Force one step's state (as a crash or an earlier call would have left it)."""
    if state is StepState.RUNNING:
        return start_step(status, step, started_at or T0)
    steps = tuple(s.model_copy(update={"state": state, "started_at": s.started_at or started_at or T0,
                                       "finished_at": T0})
                  if s.key == step else s for s in status.steps)
    assert steps != status.steps or status.step(step) is not None, f"no step {step}"
    return status.model_copy(update={"steps": steps})


def at_step(spec: UpgradePlanSpec, seen: Observations, step: StepKey, *, state: StepState = StepState.PENDING,
            started_at: datetime | None = None, baseline_seen: Observations | None = None) -> UpgradePlanStatus:
    """The plan with every step before `step` (in plan order) done, and `step` in `state`.

    The baseline is recorded from `baseline_seen` (default: the estate before the plan, replication on,
    pool in rotation), not from `seen`, which describes the estate at the step being tested.
    """
    running = spec.model_copy(update={"paused": False, "approval": ApprovalSpec()})  # the run got started
    status = planned(running, baseline_seen or estate(spec))
    hop = step.hop
    if hop > 1:
        status = status.model_copy(update={"current_hop": hop})
    done = []
    for s in status.steps:
        if s.key == step:
            break
        if s.hop >= 1 and s.state is StepState.PENDING:
            done.append(s.key)
    else:
        raise AssertionError(f"no step {step} in the plan")
    for k in done:
        status = set_state(status, k, StepState.SUCCEEDED)
    if state is not StepState.PENDING:
        status = set_state(status, step, state, started_at)
    return record_observations(status, spec, seen, started_at or T0)
