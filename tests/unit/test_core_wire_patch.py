"""The status write as a JSON patch (core/wire_patch.py): applied to what the API server has, it gives the
new status exactly; it carries only the list items that changed; words alone are told apart."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core_builders import T0, later
from hypothesis import given, settings
from hypothesis import strategies as st

from uwm_upgrade.core.enums import Phase, StepName
from uwm_upgrade.core.models import StepKey, UpgradePlanStatus, status_to_wire
from uwm_upgrade.core.planning import new_step
from uwm_upgrade.core.status import (
    add_steps,
    fail_step,
    finish_step,
    note_step,
    record_server,
    reset_running_steps,
    set_phase,
    start_step,
    with_display,
)
from uwm_upgrade.core.wire_patch import apply_ops, only_wording, status_ops

SERVERS = [f"s-{i}" for i in range(6)]
changes = st.lists(st.one_of(
    st.tuples(st.sampled_from(["start", "finish", "fail", "note", "add"]), st.sampled_from(SERVERS)),
    st.tuples(st.just("phase"), st.sampled_from(list(Phase))),
    st.tuples(st.just("server"), st.sampled_from(["2021.1", "2023.1"])),
    st.tuples(st.just("reset"), st.none()),
), max_size=8)


def _apply(status: UpgradePlanStatus, change: tuple[str, Any], now: datetime) -> UpgradePlanStatus:
    op, arg = change
    step = StepKey(StepName.INSTALL_SERVER, 1, arg)
    match op:
        case "start":
            return start_step(status, step, now)
        case "finish":
            return finish_step(status, step, now, "done")
        case "fail":
            return fail_step(status, step, now, "broken")
        case "note":
            return note_step(status, step, f"still at it {now.second}")
        case "add":
            return add_steps(status, [new_step(StepName.HEALTH_CHECK, 1, server=arg)])
        case "phase":
            return set_phase(status, arg, "Because", f"phase {arg}", now)
        case "server":
            return record_server(status, "ms-1", version=arg)
        case _:
            return reset_running_steps(status, "paused")


def _run(status: UpgradePlanStatus, ops: list[tuple[str, Any]], start: int) -> UpgradePlanStatus:
    for i, change in enumerate(ops):
        status = _apply(status, change, later(start + i))
    return with_display(status)


@settings(max_examples=80, deadline=None)
@given(before=changes, after=changes)
def test_the_patch_applied_to_what_the_api_server_has_gives_the_new_status(
        before: list[tuple[str, Any]], after: list[tuple[str, Any]]) -> None:
    old = _run(UpgradePlanStatus(), before, 0)
    new = _run(old, after, 100)
    ops = status_ops(old, new)
    stored = {"status": status_to_wire(old)}
    assert apply_ops(stored, ops)["status"] == status_to_wire(new)
    assert (ops == []) is (status_to_wire(old) == status_to_wire(new))
    assert apply_ops({}, status_ops(old, new, absent=True))["status"] == status_to_wire(new)


def test_one_step_done_of_a_wide_plan_sends_that_step_alone() -> None:
    """200 servers, 400 steps: a merge patch would resend them all; the JSON patch sends one."""
    status = set_phase(UpgradePlanStatus(), Phase.RUNNING, "Running", "go", T0)
    status = add_steps(status, [new_step(name, 1, server=f"ps-{i}")
                                for i in range(200) for name in (StepName.INSTALL_SERVER, StepName.HEALTH_CHECK)])
    for i in range(200):
        status = record_server(status, f"ps-{i}", version="2021.1")
    done = finish_step(status, StepKey(StepName.INSTALL_SERVER, 1, "ps-7"), later(9), "ps-7 runs 2023.1")
    ops = status_ops(status, done)
    assert [o["path"] for o in ops] == ["/status/steps/14"]
    assert len(json.dumps(ops)) * 50 < len(json.dumps(status_to_wire(done)))


def test_words_alone_are_told_from_a_change() -> None:
    step = StepKey(StepName.INSTALL_SERVER, 1, "ms-1")
    running = start_step(set_phase(UpgradePlanStatus(), Phase.RUNNING, "Running", "go", T0), step, T0)
    reworded = set_phase(note_step(running, step, "ms-1 installing 2023.1"), Phase.RUNNING, "Installing",
                         "ms-1 installing", later(1))
    assert only_wording(running, reworded) and status_ops(running, reworded)
    assert not only_wording(running, finish_step(running, step, later(2), "done"))
    assert not only_wording(running, set_phase(running, Phase.PAUSED, "Paused", "paused", later(2)))
