"""A record without an effect waits for the next write, at most `DEFER_SECONDS`, and is never lost.

Why: most turns only record what the last look showed (a step completed, a server waited for); writing
each of them costs an API write per turn, about as many as the steps themselves. Such a record goes with
the next write (the next effect's, fenced), or is written while the loop sleeps once the oldest has
waited `DEFER_SECONDS`; a loop that stops writes what it left. Whatever an effect may start is still
written before the effect (test_engine_loop.py).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from core_builders import key
from engine_fakes import LoopHarness, Turns

from uwm_upgrade.core.actions import BackupDatabase, InstallServer, RestoreBackup, UpgradeSchema
from uwm_upgrade.core.enums import StepName
from uwm_upgrade.core.observations import BackupObservation, TransientError, Where
from uwm_upgrade.core.turn import Outcome
from uwm_upgrade.engine import reconciler, status_record


def _after_last_effect(log: list[str]) -> list[str]:
    last = max(i for i, entry in enumerate(log) if entry.startswith("effect:"))
    return [entry.split("@")[0] for entry in log[last + 1:]]


async def test_a_record_without_effect_waits_for_the_next_write_and_the_loop_writes_it_when_it_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_record, "DEFER_SECONDS", 60.0)  # however slow the machine, no record waits that long
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


async def test_a_record_that_has_waited_long_enough_is_written_while_the_loop_sleeps_without_a_look(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = reconciler.Plan.sleep
    h = LoopHarness(monkeypatch)
    looks = {"n": 0}

    async def look() -> None:
        looks["n"] += 1

    h.observe_hook = look
    plan = reconciler.Plan(h.runtime, h.kube.plan, logging.getLogger("test"))
    assert plan.watch.live  # a change would wake it: without one, it sleeps all it was asked to
    loop = asyncio.get_running_loop()
    plan.status = plan.status.model_copy(update={"observed_generation": 1})  # a record, not yet written
    plan.record.deferred_since = loop.time() - (status_record.DEFER_SECONDS - 0.2)
    written: list[float] = []
    h.kube.before_patch = lambda kube: written.append(loop.time())
    began = loop.time()
    await asyncio.wait_for(real_sleep(plan, 3.0, Turns(1)), 10)
    assert len(written) == 1 and written[0] - began < 2.0, (written, h.kube.log)  # at its deadline, not at the end
    assert h.kube.status.get("observedGeneration") == 1 and plan.record.deferred_since is None
    assert loop.time() - began >= 2.9  # and the sleep went on,
    assert looks["n"] == 0 and h.effects == []  # without a look


def test_what_a_later_look_could_not_tell_again_is_written_at_once() -> None:
    """A backup is found again by its id, a request's note is wording: they may wait for the next write.
    A migration asked for (never asked twice) and a database restored (never restored twice) may not, nor
    an effect's failure, nor the turn of an effect that raised."""
    step = key(StepName.BACKUP_DATABASE, database="mgmt-db")
    backup = Outcome(BackupDatabase(step, "mgmt-db", "plan-h1"), BackupObservation("plan-h1", True, None, "2021.1"))
    install = Outcome(InstallServer(key(StepName.INSTALL_SERVER, server="ms-2"), "ms-2", "2023.1"))
    assert not reconciler.cannot_wait([backup, install])
    restore = Outcome(RestoreBackup(key(StepName.RESTORE_BACKUP, database="mgmt-db"), "mgmt-db", "plan-h1"))
    schema = Outcome(UpgradeSchema(key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db"), "ms-1",
                                   "mgmt-db", "2023.1"))
    failed = Outcome(install.effect, error=TransientError(Where(server="ms-2"), "did not answer"))
    for results in ([backup, restore], [schema], [backup, failed], [backup, RuntimeError("a bug")]):
        assert reconciler.cannot_wait(results), results


async def test_woken_by_a_change_the_loop_gathers_for_a_share_of_what_its_last_turn_took(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A small estate's look is cheap: it looks again almost at once. A wide one's look is dear: it waits
    longer for the changes that come together (a wave of installs ending), so that one look sees them."""
    real_sleep = reconciler.Plan.sleep
    h = LoopHarness(monkeypatch)
    plan = reconciler.Plan(h.runtime, h.kube.plan, logging.getLogger("test"))
    low, high = reconciler.GATHER_SECONDS
    plan.turn_seconds = 0.0
    assert plan.gather_seconds() == low
    plan.turn_seconds = 0.2
    assert plan.gather_seconds() == pytest.approx(0.2 * reconciler.GATHER_SHARE)
    plan.turn_seconds = 60.0
    assert plan.gather_seconds() == high
    loop = asyncio.get_running_loop()

    async def woken() -> None:  # the change comes while the loop sleeps, as a long poll's answer does
        await asyncio.sleep(0.01)
        plan.watch.changed.set()

    waking = asyncio.ensure_future(woken())
    began = loop.time()
    await asyncio.wait_for(real_sleep(plan, 30.0, Turns(1)), 5)
    assert loop.time() - began >= 0.01 + high * 0.9  # it waited for what comes with the change
    await waking
