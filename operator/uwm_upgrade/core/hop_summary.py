"""A finished hop's steps summarised, so that the status of a plan of many servers and hops stays bounded.

Why: every step of every hop is planned up front, and a finished step carries times and a message: at the
CRD's limits that would be megabytes of status, over etcd's object limit (about 1.5 MiB), and every patch
would fail. When the next hop starts (`AdvanceHop`), the steps of the hop before it, all finished, leave
`status.steps` and become a `HopSummary` on that hop's `status.path` entry; what later decisions read of
them stays there: which server upgraded each database first (the plan hash), and the longest each kind of
step took (the estimate a maintenance window compares). The last hop's steps are never summarised (the
finished plan shows them), nor the steps of a hop that is not over. `MAX_PLANNED_STEPS` bounds the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from .enums import DONE_STATES, StepName, StepState
from .plan_status import HopSummary, StepStatus, UpgradePlanStatus

# The most steps a plan may have when planned (every hop's, Pending, about 70 bytes each on the wire)
# besides the one hop in full (its messages and times): well inside etcd's object limit with the spec.
MAX_PLANNED_STEPS = 6000


def _seconds(step: StepStatus) -> float | None:
    if step.state is not StepState.SUCCEEDED or step.started_at is None or step.finished_at is None:
        return None
    return (step.finished_at - step.started_at).total_seconds()


def summary_of(steps: Iterable[StepStatus]) -> HopSummary:
    steps = list(steps)
    longest: dict[StepName, float] = {}
    for step in steps:
        took = _seconds(step)
        if took is not None:
            longest[step.name] = max(took, longest.get(step.name, 0.0))
    starts = [s.started_at for s in steps if s.started_at is not None]
    ends = [s.finished_at for s in steps if s.finished_at is not None]
    return HopSummary(
        succeeded=sum(s.state is StepState.SUCCEEDED for s in steps),
        skipped=sum(s.state is StepState.SKIPPED for s in steps),
        started_at=min(starts) if starts else None, finished_at=max(ends) if ends else None,
        first_servers={s.database: s.server for s in steps
                       if s.name is StepName.UPGRADE_SCHEMA and s.database and s.server},
        longest_seconds=longest)


def summarise_hop(status: UpgradePlanStatus, hop: int) -> UpgradePlanStatus:
    """`status` with hop `hop`'s steps summarised, when every one of them is finished (else unchanged)."""
    if not 1 <= hop <= len(status.path) or status.path[hop - 1].summary is not None:
        return status
    mine = [s for s in status.steps if s.hop == hop]
    if not mine or any(s.state not in DONE_STATES for s in mine):
        return status
    path = list(status.path)
    path[hop - 1] = path[hop - 1].model_copy(update={"summary": summary_of(mine)})
    return status.model_copy(update={"path": tuple(path), "steps": tuple(s for s in status.steps if s.hop != hop)})


def first_servers_of_hop_1(status: UpgradePlanStatus) -> dict[str, str]:
    """Which server upgraded (or upgrades) each database first in hop 1: its steps, or their summary."""
    summary = status.path[0].summary if status.path else None
    if summary is not None:
        return dict(summary.first_servers)
    return {s.database: s.server for s in status.steps
            if s.name is StepName.UPGRADE_SCHEMA and s.hop == 1 and s.database and s.server}


def longest_before(status: UpgradePlanStatus, name: StepName, before_hop: int) -> float | None:
    """The longest a step named `name` took in the hops before `before_hop` (None: none was timed)."""
    took = [t for t in (_seconds(s) for s in status.steps if s.name is name and 1 <= s.hop < before_hop)
            if t is not None]
    took += [h.summary.longest_seconds[name] for i, h in enumerate(status.path, start=1)
             if i < before_hop and h.summary is not None and name in h.summary.longest_seconds]
    return max(took) if took else None


def step_counts(status: UpgradePlanStatus) -> dict[StepState, int]:
    """How many steps of the plan are in each state, the summarised hops' included."""
    counts = {state: 0 for state in StepState}
    for step in status.steps:
        counts[step.state] += 1
    for hop in status.path:
        if hop.summary is not None:
            counts[StepState.SUCCEEDED] += hop.summary.succeeded
            counts[StepState.SKIPPED] += hop.summary.skipped
    return counts
