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
import copy
import logging
from typing import Any

import pytest
from engine_fakes import FakeKube, LoopHarness, Turns

from uwm_upgrade.adapters.kube import ConflictError, KubeError
from uwm_upgrade.core.models import parse_status
from uwm_upgrade.core.observations import TransientError, Where
from uwm_upgrade.engine import reconciler
from uwm_upgrade.engine.announce import Announcer
from uwm_upgrade.engine.status_record import StatusRecord, decided_on


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
    stopped = {"with a write on its way": False}

    def until() -> bool:  # stopped between two turns while a write behind the last one is on its way
        if h.kube.patching > 0 and bool(h.effects):
            stopped["with a write on its way"] = True
        return stopped["with a write on its way"]

    await h.run(400, until=until)
    assert stopped["with a write on its way"], h.kube.log
    assert "patch-cancelled" not in h.kube.log, h.kube.log  # it was let through,
    assert h.kube.log[-1].startswith("patch@"), h.kube.log  # and it was the loop's last word


def _record() -> tuple[FakeKube, StatusRecord]:
    """A plan's record alone, against an API server of its own (reviewer's harness)."""
    body: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1,
                                         "resourceVersion": "1", "annotations": {"upgrade.uwm.io/approve": "yes"}},
                            "spec": {}, "status": {"phase": "Pending"}}
    kube = FakeKube(copy.deepcopy(body))
    record = StatusRecord(kube, body, Announcer(kube, body), lambda: None)  # type: ignore[arg-type]
    return kube, record


async def test_a_write_behind_that_meets_a_409_judges_it_by_what_its_own_turn_decided_on() -> None:
    """The approval is withdrawn while a record decided with it is on its way (409): the next turn has
    already started from the new annotation, but the record's write must not be made again at the new
    version as if only kopf's metadata had changed: the loop re-reads and decides again."""
    kube, record = _record()
    kube.patch_seconds = 0.01
    record.decided_on = decided_on(kube.plan)
    record.status = parse_status({"phase": "Running", "message": "approved, starting"})
    record.write_behind()

    def withdraw(k: FakeKube) -> None:
        k.plan["metadata"]["annotations"].pop("upgrade.uwm.io/approve", None)
        k.version += 1

    kube.before_patch = withdraw
    await asyncio.sleep(0)
    record.decided_on = decided_on(kube.plan | {"metadata": {**kube.plan["metadata"], "annotations": {}}})  # turn N+1
    with pytest.raises(ConflictError):
        await record.settled()
    assert kube.status.get("phase") == "Pending"
    assert record.failed()  # and it stays failed until the loop deals with it


async def test_a_deferred_record_written_from_the_sleep_leaves_a_failed_write_behind_for_the_next_turn() -> None:
    kube, record = _record()
    kube.patch_seconds = 0.01
    record.status = parse_status({"phase": "Running"})
    record.write_behind()
    kube.patch_failures.append(KubeError("patching: 503 Service Unavailable", True, 503))
    record.status = parse_status({"phase": "Running", "message": "a note"})
    record.defer(())
    assert not await record.write_deferred(logging.getLogger("test"), str)
    assert record.failed()  # the next turn's step raises it before it looks
    with pytest.raises(KubeError):
        await record.settled()


async def test_a_loop_cancelled_while_it_waits_for_a_write_is_cancelled_and_the_write_goes_on() -> None:
    kube, record = _record()
    kube.patch_seconds = 0.1
    record.status = parse_status({"phase": "Running"})
    record.write_behind()
    pending = record.pending
    assert pending is not None
    waiting = asyncio.ensure_future(record.drain(within=5))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.wait({pending})
    assert "patch-cancelled" not in kube.log and kube.status.get("phase") == "Running"


async def test_a_turn_that_fails_while_its_write_behind_meets_a_409_re_reads_the_plan_rather_than_stall(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The record of an effect that failed is written behind its turn and meets someone else's write
    (409) while the next look fails (a bug, say). The loop deals with the 409 first: it re-reads the plan,
    rather than write Stalled at a version that is no longer the plan's (another 409) and back off."""
    h = LoopHarness(monkeypatch)
    h.kube.patch_seconds = 0.02
    _looking_at_once(h, monkeypatch)
    advance = h.observe_hook
    armed = {"failed": False, "raised": False}

    async def fail_once(effect: Any) -> None:
        if not armed["failed"]:
            armed["failed"] = True
            raise TransientError(Where(server="ps-1"), "did not answer")

    async def look() -> None:
        if armed["failed"] and h.kube.patching and not armed["raised"]:
            # the record on its way (why the effect failed) will meet someone else's write; this look fails
            h.kube.before_patch = lambda kube: kube.write_as_someone_else(message="written by another operator")
            armed["raised"] = True
            raise RuntimeError("a bug in the look")
        if advance is not None:
            await advance()

    h.execute_hook = fail_once
    h.observe_hook = look
    await h.run(400, until=lambda: len(h.effects) >= 4)
    assert armed["raised"], h.kube.log
    log = h.kube.log
    conflict = log.index("patch-conflict")
    assert log[conflict + 1].startswith("get@"), log  # re-read at once, not a Stalled write at an old version
    assert log.count("patch-conflict") == 1, log
    assert h.effects_preceded_by_a_write(), log
