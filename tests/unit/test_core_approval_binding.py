"""An approval binds: the approved hash covers the databases the connection strings point at and every spec
field but `paused`, so a plan pointed at another database, or made more concurrent, needs approving again;
mid-run, a database target that changed fails the plan; Secrets that cannot be read make it wait."""

from __future__ import annotations

from dataclasses import replace

from core_builders import T0, estate, make_spec, one, planned

from uwm_upgrade.core.actions import AwaitApproval, ComputePlan, Fail, RecordBaseline, Wait
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import Reason
from uwm_upgrade.core.observations import ObservationGap, Observations, Where

TARGETS = {"mgmt-db": "SERVER=sql01;PORT=1433;DATABASE=uwm_mgmt", "pers-db": "SERVER=sql01;PORT=1433;DATABASE=uwm_pers"}
ELSEWHERE = {**TARGETS, "pers-db": "SERVER=sql02.attacker.example;PORT=1433;DATABASE=uwm_pers"}


def test_an_approved_plan_pointed_at_another_database_awaits_approval_again() -> None:
    spec = make_spec(approval={"required": True})
    seen = replace(estate(spec), database_targets=TARGETS)
    status = planned(spec, seen, start=False)
    approval = status.plan_hash
    assert isinstance(one(decide(spec, status, seen, T0, approval=approval)), RecordBaseline)
    moved = replace(seen, database_targets=ELSEWHERE)  # the same Secret and key, another connection string
    replanned = one(decide(spec, status, moved, T0, approval=approval))
    assert isinstance(replanned, ComputePlan) and replanned.plan_hash != approval


def test_raising_the_concurrency_of_an_approved_plan_needs_a_new_approval() -> None:
    spec = make_spec(approval={"required": True})
    seen = replace(estate(spec), database_targets=TARGETS)
    status = planned(spec, seen, start=False)
    wider = make_spec(approval={"required": True}, maxConcurrentServers=3)
    replanned = one(decide(wider, status, seen, T0, approval=status.plan_hash))
    assert isinstance(replanned, ComputePlan) and replanned.plan_hash != status.plan_hash
    again = one(decide(wider, status, seen, T0, approval=status.plan_hash))
    assert not isinstance(again, (RecordBaseline, AwaitApproval))


def test_a_database_target_changed_mid_run_fails_the_plan() -> None:
    spec = make_spec()
    seen = replace(estate(spec), database_targets=TARGETS)
    status = planned(spec, seen)
    assert status.started and status.current_hop == 1
    action = one(decide(spec, status, replace(seen, database_targets=ELSEWHERE), T0))
    assert isinstance(action, Fail) and action.reason is Reason.INVALID_SPEC, action


def test_unreadable_secrets_mid_run_wait_instead_of_failing_on_the_hash() -> None:
    spec = make_spec()
    status = planned(spec, replace(estate(spec), database_targets=TARGETS))
    unread = Observations(gaps=(ObservationGap(Where(), "Secret ns/dbs does not exist"),))
    action = one(decide(spec, status, unread, T0))
    assert isinstance(action, Wait) and action.reason is Reason.OBSERVATION_UNAVAILABLE, action
    assert "Secret ns/dbs does not exist" in action.message
