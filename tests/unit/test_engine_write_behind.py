"""A record is written behind the turn: the next look does not wait for the API server's answer.

Why: the write after an effect (a migration's `requestedAt`, what the effects answered) and the write of a
record that cannot wait any longer took a whole API round trip (20-40 ms on the bench) before the loop
could look again; a second lane's change that came meanwhile waited for it (`bench/plan_latency.py
--max-concurrent 3`: the second database's migration was asked for 160 ms after its install ended).
Now such a write is started and the loop goes on; writes still go out one at a time, in order, and the
fenced write before any effect waits for those before it and fails with them, so nothing is asked of the
estate before what came before is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_fakes import LoopHarness, Turns

from uwm_upgrade.engine import reconciler


def _looking_at_once(h: LoopHarness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each look advances the estate's clock (installs end, servers settle), and the loop looks again at
    once after every turn, as when a change came during it; returns, per look, how many status writes
    were on their way to the API server when it started."""
    in_flight: list[int] = []

    async def look() -> None:
        in_flight.append(h.kube.patching)
        h.estate.advance(40.0)

    async def at_once(plan: Any, seconds: float, stopped: Turns) -> None:
        stopped.sleeps.append(seconds)
        stopped.left -= 1
        await asyncio.sleep(0)

    h.observe_hook = look
    monkeypatch.setattr(reconciler.Plan, "sleep", at_once)
    return in_flight


async def test_the_next_look_does_not_wait_for_the_last_record_to_be_written(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    h.kube.patch_seconds = 0.02
    in_flight = _looking_at_once(h, monkeypatch)
    await h.run(400, until=lambda: h.kube.status.get("phase") == "Succeeded")
    assert h.kube.status.get("phase") == "Succeeded", h.kube.status.get("message")
    assert sum(1 for n in in_flight if n) >= 2, in_flight  # looks made while a record was on its way
    assert h.kube.most_patching == 1  # one write at a time, in order
    assert "patch-conflict" not in h.kube.log  # each at the version the one before it left
    assert h.effects_preceded_by_a_write(), h.kube.log  # and every effect right after a write that went through
    assert h.estate.ops("refused") == []


async def test_a_write_behind_the_turn_that_fails_is_dealt_with_before_any_effect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The write after the prelude's effects meets a 409 (someone else wrote the plan): the next turn's
    look may have started, but before anything is asked of the estate the loop re-reads the plan and
    decides again from it."""
    h = LoopHarness(monkeypatch)
    h.kube.patch_seconds = 0.01
    _looking_at_once(h, monkeypatch)

    def conflict_after_the_prelude() -> None:
        if h.effects and "patch-conflict" not in h.kube.log and h.kube.before_patch is None:
            h.kube.before_patch = lambda kube: kube.write_as_someone_else(message="written by another operator")

    async def arm(effect: Any) -> None:
        conflict_after_the_prelude()

    h.execute_hook = arm
    await h.run(400, until=lambda: len(h.effects) >= 4)
    log = h.kube.log
    conflict = log.index("patch-conflict")
    assert log[conflict - 1].startswith("effect:"), log  # the write behind the prelude's effects
    reread = next(i for i in range(conflict, len(log)) if log[i].startswith("get@"))
    assert all(not entry.startswith("effect:") for entry in log[conflict:reread]), log  # nothing asked meanwhile
    assert h.effects_preceded_by_a_write(), log
    assert h.kube.most_patching == 1


async def test_a_loop_that_stops_lets_the_write_behind_its_last_turn_end(monkeypatch: pytest.MonkeyPatch) -> None:
    h = LoopHarness(monkeypatch)
    h.kube.patch_seconds = 0.05
    _looking_at_once(h, monkeypatch)
    # stopped between two turns while a write behind the last one is on its way to the API server
    await h.run(400, until=lambda: h.kube.patching > 0 and bool(h.effects))
    assert "patch-cancelled" not in h.kube.log, h.kube.log  # it was let through,
    assert h.kube.log[-1].startswith("patch@"), h.kube.log  # and it was the loop's last word
