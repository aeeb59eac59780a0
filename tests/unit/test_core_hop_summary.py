"""A finished hop's steps are summarised when the next hop starts, so a plan's status stays bounded.

Driven through the core's own turn against the unit fake estate (two hops, 2021.1 -> 2023.1 -> 2025.1):
what a later decision reads of hop 1 (the first servers in the plan hash, the durations a window's estimate
compares) must survive the summary, or the plan fails ("the spec no longer describes the plan") or
misjudges a window. The sizes are measured on the wire form the API server stores.
"""

from __future__ import annotations

import json
from datetime import timedelta

from core_estate_model import FakeEstate, drive, make_spec

from uwm_upgrade.core.actions import Fail
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import Phase, Reason, StepName, StepState
from uwm_upgrade.core.hop_summary import MAX_PLANNED_STEPS, longest_before, step_counts, summarise_hop
from uwm_upgrade.core.models import UpgradePlanSpec, UpgradePlanStatus, status_to_wire
from uwm_upgrade.core.planning import catalog_of, plan_path, plan_steps
from uwm_upgrade.core.window import step_estimate

RELEASES = [f"20{y}.1" for y in range(10, 26)]  # 2010.1 .. 2025.1: up to 15 hops of one release


def _two_hop_run() -> tuple[list[UpgradePlanStatus], UpgradePlanStatus]:
    plan = make_spec()
    statuses: list[UpgradePlanStatus] = []  # every status a write went through (a turn's rounds too)
    run = drive(plan, FakeEstate(plan), on_write=statuses.append)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    return statuses, run.status


def test_hop_1s_steps_leave_the_status_for_a_summary_when_hop_2_starts_and_the_plan_still_succeeds() -> None:
    statuses, final = _two_hop_run()
    in_hop_1 = [s for s in statuses if s.current_hop == 1]
    planned_hop_1 = [s for s in in_hop_1[-1].steps if s.hop == 1]
    assert planned_hop_1 and all(s.state in (StepState.SUCCEEDED, StepState.SKIPPED) for s in planned_hop_1)
    assert not [s for s in final.steps if s.hop == 1]
    summary = final.path[0].summary
    assert summary is not None and final.path[1].summary is None  # the last hop's steps stay in full
    assert summary.succeeded + summary.skipped == len(planned_hop_1)
    assert summary.skipped == sum(s.state is StepState.SKIPPED for s in planned_hop_1)
    assert summary.first_servers == {"mgmt-db": "ms-1", "pers-db": "ps-1"}
    assert summary.started_at == min(s.started_at for s in planned_hop_1 if s.started_at)
    assert summary.finished_at == max(s.finished_at for s in planned_hop_1 if s.finished_at)
    installs = [s for s in planned_hop_1 if s.name is StepName.INSTALL_SERVER]
    longest = max((s.finished_at - s.started_at).total_seconds() for s in installs  # type: ignore[operator]
                  if s.started_at and s.finished_at)
    assert summary.longest_seconds[StepName.INSTALL_SERVER] == longest
    counts = step_counts(final)
    assert counts[StepState.SUCCEEDED] + counts[StepState.SKIPPED] == len(planned_hop_1) + len(
        [s for s in final.steps if s.state in (StepState.SUCCEEDED, StepState.SKIPPED)])


def test_a_later_hops_estimate_reads_the_summarised_durations() -> None:
    _, final = _two_hop_run()
    summary = final.path[0].summary
    assert summary is not None
    install = next(s for s in final.steps if s.hop == 2 and s.name is StepName.INSTALL_SERVER)
    assert longest_before(final, StepName.INSTALL_SERVER, 2) == summary.longest_seconds[StepName.INSTALL_SERVER]
    assert step_estimate(final, install.model_copy(update={"state": StepState.PENDING})) == \
        summary.longest_seconds[StepName.INSTALL_SERVER]


def test_a_hop_with_a_step_not_finished_is_not_summarised() -> None:
    statuses, _ = _two_hop_run()
    running = next(s for s in statuses if s.current_hop == 1 and any(
        t.hop == 1 and t.state is StepState.RUNNING for t in s.steps))
    assert summarise_hop(running, 1) == running


def _wide_spec(servers: int, target: str, **extra: object) -> UpgradePlanSpec:
    personalization = [{"name": "ps-1", "url": "http://127.0.0.1:7771", "database": "pers-db",
                        "replicationRole": "Master"}]
    personalization += [{"name": f"ps-{i}", "url": f"http://127.0.0.1:{9000 + i}", "database": "pers-db",
                         "replicationRole": "Subscriber"} for i in range(2, servers + 1)]
    return make_spec(personalizationServers=personalization, releases=RELEASES, targetVersion=target,
                     maxMajorVersionsPerStep=1, **extra)


def test_a_plan_of_more_steps_than_a_status_may_hold_fails_its_plan_step_naming_the_numbers() -> None:
    plan = _wide_spec(200, "2025.1")
    estate = FakeEstate(plan, version="2010.1")
    (action,) = decide(plan, UpgradePlanStatus(), estate.observe(), estate.now)
    assert isinstance(action, Fail) and action.reason is Reason.PLAN_TOO_LARGE
    assert f"more than the {MAX_PLANNED_STEPS}" in action.message
    assert "6228 steps (15 hop(s) of 202 servers" in action.message


def test_the_largest_status_a_plan_of_200_personalization_servers_and_3_hops_can_have_fits() -> None:
    """Every step planned, the current hop's all finished with a long message each and its rollback's
    too, the earlier hops summarised: far inside etcd's 1.5 MiB (the spec and metadata come on top)."""
    plan = _wide_spec(200, "2013.1")
    catalog = catalog_of(plan)
    path = plan_path(catalog, {s.name: "2010.1" for s in plan.servers()}, "2013.1", 1)
    assert len(path) == 3
    steps = plan_steps(plan, path)
    assert len(steps) <= MAX_PLANNED_STEPS
    now = FakeEstate(plan).now
    message = "x" * 300  # far longer than what a finished step says ("ps-17 runs 2023.1 (Running)")
    done = tuple(s.model_copy(update={"state": StepState.SUCCEEDED, "started_at": now,
                                      "finished_at": now + timedelta(seconds=30), "message": message})
                 for s in steps)
    status = UpgradePlanStatus(path=tuple(h.as_status() for h in path), steps=done, current_hop=3)
    status = summarise_hop(summarise_hop(status, 1), 2)
    assert not [s for s in status.steps if s.hop in (1, 2)]
    size = len(json.dumps(status_to_wire(status)))
    assert size < 512 * 1024, size
