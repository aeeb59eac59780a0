"""A record without an effect waits for the next write, at most `DEFER_SECONDS`, and is never lost.

Why: most turns only record what the last look showed (a step completed, a server waited for); writing
each of them costs an API write per turn, about as many as the steps themselves. Such a record goes with
the next write (the next effect's, fenced, or the next record's once one has waited `DEFER_SECONDS`);
the sleep after a turn ends when the oldest record has waited that long, and a loop that stops writes
what it left. Whatever an effect may start is still written before the effect (test_engine_loop.py).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from engine_fakes import LoopHarness, Turns

from uwm_upgrade.engine import reconciler


def _after_last_effect(log: list[str]) -> list[str]:
    last = max(i for i, entry in enumerate(log) if entry.startswith("effect:"))
    return [entry.split("@")[0] for entry in log[last + 1:]]


async def test_a_record_without_effect_waits_for_the_next_write_and_the_loop_writes_it_when_it_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    seen: dict[str, list[str]] = {}
    effects_done = {"turns": 0}

    def until() -> bool:
        if len(h.effects) < 2:
            return False
        effects_done["turns"] += 1
        if effects_done["turns"] < 5:
            return False
        seen.setdefault("log", list(h.kube.log))  # as the API server saw it while the loop turned, before it stopped
        return True

    await h.run(100, until=until)
    # the turns after the prelude's effects recorded the completion of DisableReplication without writing it
    assert _after_last_effect(seen["log"]) == [], seen["log"]
    # ... and the loop wrote it when it stopped: nothing recorded is lost
    assert _after_last_effect(h.kube.log) == ["patch"], h.kube.log
    steps = {s["name"]: s["state"] for s in h.kube.status["steps"] if s.get("hop") == 1}
    assert steps["DisableReplication"] == "Succeeded", steps  # (TakeOutOfRotation waits for its pool to drain)


async def test_the_sleep_after_a_turn_ends_when_a_record_left_unwritten_has_waited_long_enough(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = reconciler.Plan.sleep
    h = LoopHarness(monkeypatch)
    plan = reconciler.Plan(h.runtime, h.kube.plan, logging.getLogger("test"))
    assert plan.watch.live  # a change would wake it: without one, it would sleep all its 30 s
    loop = asyncio.get_running_loop()
    plan.deferred_since = loop.time() - (reconciler.DEFER_SECONDS - 0.2)
    began = loop.time()
    await asyncio.wait_for(real_sleep(plan, 30.0, Turns(1)), 5)
    assert loop.time() - began < 1.0
