"""The agent's changes asked meanwhile run in one transaction (`uwm_sim.group_commit`): each as if it had
had the estate lock alone, in arrival order; one that raises is undone alone; the rules still refuse."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim import store
from uwm_sim.fleet import RunningFleet, running_fleet
from uwm_sim.journal import OK
from uwm_sim.service import ServerRuntime

from sim_helpers import big_fleet

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


async def _held_open(fleet: RunningFleet) -> tuple[threading.Event, asyncio.Future[Any]]:
    """A first change that waits for `release` inside its transaction, so the changes asked next all wait
    for it and then run together; returns once it holds the lock."""
    rt = next(iter(fleet.runtimes.values()))
    holding, release = threading.Event(), threading.Event()

    def first(cur: Any, db: Any) -> str:
        holding.set()
        assert release.wait(30)
        return "first"
    held = asyncio.ensure_future(rt.change(first))
    assert await asyncio.to_thread(holding.wait, 30)
    return release, held


async def _queued(rt: ServerRuntime, n: int) -> None:
    deadline = time.monotonic() + 30
    while rt.estate.together.waiting < n:  # waits for the state the test needs
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


async def test_changes_asked_meanwhile_run_together_in_arrival_order(make_db: Callable[[], str]) -> None:
    cfg = big_fleet(make_db(), make_db(), make_db(), servers=40)
    async with running_fleet(cfg) as fleet:
        subscribers = [n for n in fleet.runtimes if n.startswith("ps-") and int(n[3:]) % 5]
        rt = fleet.runtimes[subscribers[0]]
        together = rt.estate.together
        release, held = await _held_open(fleet)
        before = together.transactions
        asked = [asyncio.ensure_future(fleet.runtimes[n].set_replication({"enabled": False})) for n in subscribers]
        await _queued(rt, len(subscribers))
        release.set()
        assert await held == "first"
        outcomes = await asyncio.gather(*asked)
        assert [o.status for o in outcomes] == [200] * len(subscribers)
        assert all(o.body["state"]["replication"]["enabled"] is False for o in outcomes)
        assert together.transactions == before + 1  # every one of them in one transaction

        events = [e for e in await fleet.journal() if e.op == "replication"]
        assert [e.server for e in events] == subscribers  # in the order they were asked
        assert all(e.outcome == OK and e.detail["changed"] is True for e in events)


async def test_each_sees_the_ones_before_it_and_one_that_raises_is_undone_alone(
        make_db: Callable[[], str]) -> None:
    cfg = big_fleet(make_db(), make_db(), make_db(), servers=20)
    async with running_fleet(cfg) as fleet:
        a, b, c = (fleet.runtimes[n] for n in ("ms-000", "ms-001", "ms-002"))

        def take_out(cur: Any, db: Any) -> None:
            store.update_server(cur, a.name, in_rotation=False)
            a.journal(cur, "rotation", OK, inRotation=False, changed=True)

        def fail_after_writing(cur: Any, db: Any) -> None:
            store.update_server(cur, b.name, in_rotation=False)
            b.journal(cur, "rotation", OK, inRotation=False, changed=True)
            raise ValueError("this change fails after its writes")

        def read_both(cur: Any, db: Any) -> tuple[bool, bool]:
            seen_a, seen_b = store.get_server(cur, a.name), store.get_server(cur, b.name)
            assert seen_a is not None and seen_b is not None
            return seen_a.in_rotation, seen_b.in_rotation

        release, held = await _held_open(fleet)
        asked = [asyncio.ensure_future(a.change(take_out)), asyncio.ensure_future(b.change(fail_after_writing)),
                 asyncio.ensure_future(c.change(read_both))]
        await _queued(a, 3)
        release.set()
        await held
        done = await asyncio.gather(*asked, return_exceptions=True)
        assert done[0] is None
        assert isinstance(done[1], ValueError) and "fails after its writes" in str(done[1])
        assert done[2] == (False, True)  # a's write seen; b's undone before c ran

        rotations = [e.server for e in await fleet.journal() if e.op == "rotation"]
        assert rotations == [a.name]  # b's entry went with its savepoint
        state_a, state_b = await asyncio.gather(a.state(), b.state())
        assert state_a["rotation"]["inRotation"] is False and state_b["rotation"]["inRotation"] is True


async def test_the_rules_still_refuse_a_change_the_ones_before_it_made_unsafe(
        make_db: Callable[[], str]) -> None:
    """Within one transaction the guide's rules judge each change on what the ones before it wrote: a
    subscriber's install asked right after its group's replication is enabled again is refused."""
    cfg = big_fleet(make_db(), make_db(), make_db(), servers=20)
    async with running_fleet(cfg) as fleet:
        sub = fleet.runtimes["ps-001"]
        group = [fleet.runtimes[n] for n in ("ps-000", "ps-001", "ps-002", "ps-003", "ps-004")]
        for rt in group:
            assert (await rt.set_replication({"enabled": False})).status == 200
        release, held = await _held_open(fleet)
        asked = [asyncio.ensure_future(sub.set_replication({"enabled": True})),
                 asyncio.ensure_future(sub.install({"version": "2022.1"}))]
        await _queued(sub, 2)
        release.set()
        await held
        enabled, install = await asyncio.gather(*asked)
        assert enabled.status == 200
        assert install.status == 409 and install.body["rule"] == "replication-enabled"


async def test_a_failure_of_the_drain_itself_fails_its_changes_and_the_next_ones_still_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No database: `_run` itself breaks once (a bug), so its asker gets the error instead of waiting
    forever, and the changes asked afterwards are run by a new drain."""
    from uwm_sim.group_commit import GroupCommit

    together = GroupCommit()
    broken = [True]

    def run(self: GroupCommit, batch: list[Any]) -> None:
        if broken.pop() if broken else False:
            raise RuntimeError("the drain broke")
        for change in batch:  # stands in for the transaction: each change's work on no cursor
            change.future.get_loop().call_soon_threadsafe(change.future.set_result, change.work(None, None))
    monkeypatch.setattr(GroupCommit, "_run", run)
    rt: Any = object()
    with pytest.raises(RuntimeError, match="the drain broke"):
        await asyncio.wait_for(together.run(rt, lambda cur, db: "first"), 10)
    assert await asyncio.wait_for(together.run(rt, lambda cur, db: "second"), 10) == "second"


async def test_no_thread_to_drain_fails_the_change_and_leaves_none_stuck() -> None:
    """The loop's executor shut down (a change asked while a fleet stops): the change fails at once, and
    once there are threads again the next change runs (the estate is not left "running" with no drain)."""
    from concurrent.futures import ThreadPoolExecutor

    from uwm_sim.group_commit import GroupCommit

    together, loop = GroupCommit(), asyncio.get_running_loop()
    gone = ThreadPoolExecutor(1)
    gone.shutdown()
    loop.set_default_executor(gone)
    rt: Any = object()
    with pytest.raises(RuntimeError, match="shutdown"):
        await asyncio.wait_for(together.run(rt, lambda cur, db: "lost"), 10)
    assert together.waiting == 0
    fresh = ThreadPoolExecutor(1)
    loop.set_default_executor(fresh)
    try:
        # `_run` itself needs a database: the drain is only checked to start, with a stand-in for it
        ran = threading.Event()
        together._run = lambda batch: [ran.set(), *(  # type: ignore[method-assign]
            c.loop.call_soon_threadsafe(c.future.set_result, "ran") for c in batch)]
        assert await asyncio.wait_for(together.run(rt, lambda cur, db: None), 10) == "ran" and ran.is_set()
    finally:
        fresh.shutdown(wait=False)


async def test_a_fault_taken_by_a_change_that_is_undone_is_pending_again(make_db: Callable[[], str]) -> None:
    """An injected fault is consumed in memory by the change that meets it; if that change is rolled back
    (alone, or with its whole transaction when the database fails) the fault goes back, so the run that
    armed it still meets it (the campaign's disruptions are not silently lost)."""
    import pyodbc

    from uwm_sim.db import DatabaseError
    from uwm_sim.faults import Fault

    cfg = big_fleet(make_db(), make_db(), make_db(), servers=20)
    async with running_fleet(cfg) as fleet:
        a, b = fleet.runtimes["ms-000"], fleet.runtimes["ms-001"]
        a.faults.add(Fault("install-fail", count=1))
        b.faults.add(Fault("install-hang", count=2))

        def take_then_raise(cur: Any, db: Any) -> None:  # alone in its savepoint
            assert a.take_fault("install-fail", cur)[0] is not None
            raise ValueError("this change fails after taking its fault")

        def take(cur: Any, db: Any) -> None:
            assert b.take_fault("install-hang", cur)[0] is not None

        def database_fails(cur: Any, db: Any) -> None:
            raise pyodbc.Error("HY000", "the connection was lost")

        async def together(*changes: tuple[Any, Any]) -> list[Any]:
            release, held = await _held_open(fleet)
            asked = [asyncio.ensure_future(rt.change(work)) for rt, work in changes]
            await _queued(a, len(changes))
            release.set()
            await held
            return await asyncio.gather(*asked, return_exceptions=True)

        first = await together((a, take_then_raise), (b, take))  # a's savepoint undone, b's committed
        assert isinstance(first[0], ValueError) and first[1] is None
        fail, hang = a.faults.peek("install-fail"), b.faults.peek("install-hang")
        assert fail is not None and fail.count == 1 and hang is not None and hang.count == 1

        second = await together((b, take), (b, database_fails))  # the whole transaction undone
        assert all(isinstance(d, DatabaseError) for d in second), second
        hang = b.faults.peek("install-hang")
        assert hang is not None and hang.count == 1

        def take_and_keep(cur: Any, db: Any) -> None:
            assert a.take_fault("install-fail", cur)[0] is not None
        await a.change(take_and_keep)  # committed: taken for good
        assert a.faults.peek("install-fail") is None
