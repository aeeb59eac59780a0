"""Property tests that can fail: the real `decide()` drives generated estates that obey the simulators' rules.

Hypothesis draws an estate (how many Management and Personalization servers, which are load-balanced,
which replicate and how, one database each kind), a plan (target, releases per hop, concurrency, failure
policy, backups), a fault (none, a failing install, a failing migration, a status page that never
confirms) and crashes at any instant of any turn. The estate (`core_estate_model.FakeEstate`) judges every
request with the simulators' own rule functions (`uwm_sim.estate`), never with the operator's
`core.guide`: a request the referee refuses is a bug of the operator, and so is any end but the right one.

Replaces the two earlier property tests that checked `decide()`'s effects with `guide.violations`, the
very predicates `decide()` filters its effects through, so they could not fail; the last test here breaks
`decide()` on purpose (one pool member at a time, with its own guard switched off) and shows the check
catches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Any, cast

import pytest
from core_estate_model import RELEASES, FakeEstate, Run, drive
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from uwm_upgrade.core import decide as decide_module
from uwm_upgrade.core.actions import Action, CompleteStep, TakeOutOfRotation
from uwm_upgrade.core.context import Context, StepKind
from uwm_upgrade.core.enums import Phase, ReplicationRole, StepName
from uwm_upgrade.core.models import StepStatus, UpgradePlanSpec, parse_spec
from uwm_upgrade.core.strategies import IN_PLACE

START = "2021.1"
INSTANTS = ("before-effect", "before-send", "mid-effects", "after-effect")


@dataclass(frozen=True)
class Fault:
    kind: str  # "install_fail" | "migration_fail" | "never_healthy"
    target: str


@st.composite
def specs(draw: st.DrawFn) -> UpgradePlanSpec:
    """A plan of a generated estate: 0-3 Management servers (each maybe load-balanced) on mgmt-db, 0-4
    Personalization servers on pers-db (maybe a Master with Subscribers, maybe some load-balanced)."""
    n_ms, n_ps = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    if n_ms + n_ps == 0:
        n_ms = 1
    ms = [{"name": f"ms-{i + 1}", "url": f"http://ms-{i + 1}.uwm.test:7751", "database": "mgmt-db",
           "loadBalanced": draw(st.booleans())} for i in range(n_ms)]
    master = n_ps > 0 and draw(st.booleans())
    ps = []
    for i in range(n_ps):
        role = "Master" if master and i == 0 else draw(st.sampled_from(["Subscriber", "None"])) if master else "None"
        lb = role == "None" and draw(st.booleans())
        ps.append({"name": f"ps-{i + 1}", "url": f"http://ps-{i + 1}.uwm.test:7771", "database": "pers-db",
                   "replicationRole": role, "loadBalanced": lb})
    databases = [{"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "m"}}] * \
        bool(ms) + [{"name": "pers-db", "kind": "Personalization",
                     "connectionSecretRef": {"name": "dbs", "key": "p"}}] * bool(ps)
    raw: dict[str, Any] = {
        "targetVersion": draw(st.sampled_from(RELEASES[1:])), "releases": RELEASES,
        "maxMajorVersionsPerStep": draw(st.sampled_from([1, 2, 2])),
        "maxConcurrentServers": draw(st.integers(1, 3)),
        "failurePolicy": draw(st.sampled_from(["Halt", "Rollback"])),
        "backup": {"enabled": draw(st.sampled_from([True, True, True, False]))},
        "healthCheck": {"timeoutSeconds": 120, "periodSeconds": 2, "successThreshold": draw(st.integers(1, 2))},
        "databases": databases, "managementServers": ms, "personalizationServers": ps,
        "agentSecretRef": {"name": "agent"},
    }
    return parse_spec(raw)


@st.composite
def faults(draw: st.DrawFn, spec: UpgradePlanSpec) -> Fault | None:
    kind = draw(st.sampled_from([None, None, None, "install_fail", "migration_fail", "never_healthy"]))
    if kind is None:
        return None
    if kind == "migration_fail":
        return Fault(kind, draw(st.sampled_from([d.name for d in spec.databases])))
    return Fault(kind, draw(st.sampled_from([s.name for s in spec.servers()])))


crashes = st.sets(st.tuples(st.integers(0, 300), st.sampled_from(INSTANTS)), max_size=8)


def check_run(spec: UpgradePlanSpec, estate: FakeEstate, run: Run, fault: Fault | None) -> None:
    """What every run must show, judged from the estate (the referee's record), not the operator's word."""
    refused = estate.ops("refused")
    assert not refused, f"the simulators refused: {refused}"
    assert estate.max_down <= spec.max_concurrent_servers, "more servers down at once than maxConcurrentServers"
    servers = list(estate.servers.values())
    lb_before = {s.name for s in spec.servers() if s.load_balanced}
    replicating = {s.name for s in spec.servers() if s.role is not ReplicationRole.NONE}
    phase = run.status.phase
    if fault is None:
        assert phase is Phase.SUCCEEDED, run.status.message
        target = spec.target_version
        assert {s.version for s in servers} == {target} and {d.schema for d in estate.databases.values()} == {target}
        hops = len(run.status.path)
        assert len(estate.ops("migrate")) == hops * len(spec.databases), "each schema migrated once per hop"
        assert len(estate.ops("install")) == hops * len(servers), "each server installed once per hop"
    else:
        assert phase in (Phase.FAILED, Phase.ROLLED_BACK), run.status.message
        assert "Estate:" in (run.status.message or ""), "a failure says how the estate was left"
        if spec.failure_policy == "Halt":
            assert phase is Phase.FAILED
    if phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK):  # everything as before the plan
        assert {s.name for s in servers if s.in_rotation} == lb_before
        assert {s.name for s in servers if s.replication_enabled} == replicating
        assert {d.data for d in estate.databases.values()} == {"user-data-v0"}
    if phase is Phase.ROLLED_BACK:
        start = run.status.path[run.status.current_hop - 1].from_version
        assert {s.version for s in servers} == {start} and {d.schema for d in estate.databases.values()} == {start}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), spec=specs(), crash_at=crashes, order=st.randoms(use_true_random=False))
def test_generated_estates_upgrade_without_a_refusal_and_end_right(data: st.DataObject, spec: UpgradePlanSpec,
                                                                   crash_at: set[tuple[int, str]],
                                                                   order: Random) -> None:
    """Several effects a turn, landing in any order (`order`), the process dying at any instant of a turn,
    between two of its effects included ("mid-effects")."""
    fault = data.draw(faults(spec))
    estate = FakeEstate(spec, START)
    if fault is not None:
        getattr(estate.faults, fault.kind).add(fault.target)
    run = drive(spec, estate, crash_at=crash_at, order=order)
    event(f"{run.status.phase} after {fault.kind if fault else 'no fault'}")
    check_run(spec, estate, run, fault)


def _one_pool_member_at_a_time(ctx: Context, step: StepStatus) -> Action:
    """A plausible mistake: drain the pool one server at a time, upgrading each while the others serve."""
    pool = [s.name for s in ctx.spec.servers() if s.load_balanced]
    serving = [n for n in pool if ctx.server(n).in_rotation]
    if serving and len(serving) == len(pool):
        return TakeOutOfRotation(step.key, (serving[0],))
    return CompleteStep(step.key, "out of rotation (one at a time)")


def test_a_deliberately_broken_decide_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the operator's own guard switched off, a decide() that upgrades one pool member at a time is
    caught by the referee: the simulators' rule `pool-in-rotation` refuses the install."""
    table = cast(dict[StepName, StepKind], IN_PLACE.table)
    monkeypatch.setitem(table, StepName.TAKE_OUT_OF_ROTATION, StepKind(_one_pool_member_at_a_time))
    monkeypatch.setattr(decide_module, "_guard", lambda ctx, action: action)
    spec = parse_spec({
        "targetVersion": "2023.1", "releases": RELEASES, "agentSecretRef": {"name": "agent"},
        "databases": [{"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "d", "key": "m"}}],
        "managementServers": [{"name": f"ms-{i}", "url": f"http://ms-{i}:7751", "database": "mgmt-db",
                               "loadBalanced": True} for i in (1, 2)]})
    estate = FakeEstate(spec, START)
    run = drive(spec, estate)
    with pytest.raises(AssertionError, match="pool-in-rotation"):
        check_run(spec, estate, run, None)
