"""A deliberately broken operator, for the referee's own tests: `python broken_operator.py run ...` runs the
real `uwm-upgrade` with one mistake a plausible implementation could make, and its own guard switched off.

`UWM_BROKEN=pool`: the load-balanced pool is drained one server at a time, each upgraded while the others
still serve. `UWM_BROKEN=database-first`: the other servers of a database are upgraded before its first
server has upgraded the schema. Nothing in the product can enable either: this file patches the core in
this process only, before the CLI starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from uwm_upgrade.cli import main
from uwm_upgrade.core import decide, planning, strategies
from uwm_upgrade.core.actions import Action, CompleteStep, TakeOutOfRotation
from uwm_upgrade.core.context import Context, StepKind, UpgradeStrategy
from uwm_upgrade.core.enums import StepName, Strategy
from uwm_upgrade.core.models import StepStatus, UpgradePlanSpec


def one_pool_member_at_a_time(ctx: Context, step: StepStatus) -> Action:
    pool = [s.name for s in ctx.spec.servers() if s.load_balanced]
    serving = [n for n in pool if ctx.server(n).in_rotation]
    if serving and len(serving) == len(pool):
        return TakeOutOfRotation(step.key, (serving[0],))
    return CompleteStep(step.key, "out of rotation (one at a time)")


def others_before_the_schema(spec: UpgradePlanSpec, hop: int, leaders: Mapping[str, str]) -> list[StepStatus]:
    steps = planning.in_place_hop(spec, hop, leaders)
    later = [s for s in steps if s.name in (StepName.INSTALL_SERVER, StepName.HEALTH_CHECK)
             and s.server not in planning.first_servers(spec, leaders).values()]
    return later + [s for s in steps if s not in later]


if __name__ == "__main__":
    mode = os.environ.get("UWM_BROKEN")
    if mode == "pool":
        table = cast(dict[StepName, StepKind], strategies.IN_PLACE.table)
        table[StepName.TAKE_OUT_OF_ROTATION] = StepKind(one_pool_member_at_a_time)
    elif mode == "database-first":
        # in plan order (no lanes), the others first
        broken = replace(strategies.IN_PLACE, hop_steps=others_before_the_schema, lanes=None)
        cast(dict[Strategy, UpgradeStrategy], strategies.STRATEGIES)[Strategy.IN_PLACE] = broken
    else:
        sys.exit(f"UWM_BROKEN must be pool or database-first, not {mode!r}")
    decide._guard = lambda ctx, action: action  # type: ignore[assignment]
    sys.exit(main(sys.argv[1:]))
