"""The long-polled agent state (docs/contracts.md section 2a, `uwm_sim.watch`): an answer comes when the
state changes (by a request, by another server's migration, by time alone as a server settles), or at the
client's deadline with the state unchanged; a change that does not concern a server does not wake it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import uwm_sim.service
import uwm_sim.watch
from uwm_sim.fleet import running_fleet
from uwm_sim.watch import state_version

from sim_helpers import wait_phase

pytest_plugins = ["sim_fixtures"]


def test_the_version_ignores_the_countdown_and_the_traffic_counter() -> None:
    base = {"name": "ps-1", "phase": "Starting", "message": "Starting (about 3 s left)",
            "rotation": {"inRotation": False, "activeRequests": 0, "lbRequests": 5}}
    later = {**base, "message": "Starting (about 2 s left)", "rotation": {**base["rotation"], "lbRequests": 9}}
    assert state_version(base) == state_version(later)
    draining = {**base, "rotation": {**base["rotation"], "activeRequests": 2}}
    assert state_version(draining) != state_version(base)
    assert state_version({**base, "phase": "Running"}) != state_version(base)


async def _timed(call: Any) -> tuple[float, Any]:
    began = time.monotonic()
    reply = await call
    return time.monotonic() - began, reply


@pytest.mark.integration
async def test_a_long_poll_answers_on_a_change_and_at_its_deadline(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(settleSeconds=0.6, installSeconds=0.3)) as fleet, \
            fleet.client("ms-2") as c, fleet.client("ms-1") as other:
        first = await wait_phase(c, "Running")  # settled since the fleet started
        version = first["stateVersion"]
        assert (await c.state()).body["stateVersion"] == version  # nothing changed: the same version

        # nothing of ms-2 changes (ms-1 leaves the rotation): answered at the deadline, unchanged
        quiet = asyncio.ensure_future(_timed(c.state(1, version)))
        assert (await other.rotation(False)).status == 200
        took, unchanged = await quiet
        assert unchanged.status == 200 and unchanged.body["stateVersion"] == version and took >= 0.9

        waiting = asyncio.ensure_future(_timed(c.state(20, version)))
        await asyncio.sleep(0)  # the poll is under way before the install is asked for
        assert (await c.install("2022.1")).status == 202
        took, changed = await waiting
        assert changed.status == 200 and changed.body["stateVersion"] != version and took < 5
        assert changed.body["phase"] in ("Installing", "DatabaseUpdatesRequired")


@pytest.mark.integration
async def test_time_alone_answers_a_long_poll_when_a_server_settles(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(settleSeconds=0.8, installSeconds=0.2)) as fleet, fleet.client("ms-2") as c:
        assert (await c.install("2022.1")).status == 202
        # the schema is behind: the portal upgrades it, and then the server settles on the new release
        state = await wait_phase(c, "DatabaseUpdatesRequired")
        assert (await c.update_selected(["mgmt-db"])).status == 202
        deadline = time.monotonic() + 15
        while state["phase"] != "Running":  # every answer is a change: no answer repeats the version asked
            assert time.monotonic() < deadline, state
            reply = await c.state(10, state["stateVersion"])
            assert reply.status == 200
            assert reply.body["stateVersion"] != state["stateVersion"] or reply.body["phase"] == state["phase"]
            state = reply.body
        assert state["settled"] is True


@pytest.mark.integration
async def test_bad_long_poll_parameters_are_refused(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        for query in ("waitForChange=x", "waitForChange=61", "waitForChange=1&since=not-a-version!"):
            reply = await c.request("GET", "/agent/v1/state?" + query)
            assert reply.status == 400 and reply.error and reply.error.split(":")[0] in ("waitForChange", "since")


@pytest.mark.integration
async def test_a_subscriber_is_woken_by_its_master_not_by_the_other_subscribers(
        estate: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscriber's state depends on its own and its master's (the catch-up), never on another
    subscriber's: a change of a fellow subscriber must not make the waiting request look again (with 200
    servers in one group every change woke all 200, each reading the whole group: quadratic)."""
    async with running_fleet(estate(caughtUpSeconds=0.2)) as fleet, fleet.client("ps-2") as c, \
            fleet.client("ps-3") as fellow, fleet.client("ps-1") as master:
        looks = 0
        looked = threading.Event()
        real = uwm_sim.service.snapshots_together

        def counted(runtimes: list[Any]) -> Any:  # the looks of waiting requests, read together
            nonlocal looks
            if any(rt.name == "ps-2" for rt in runtimes):
                looks += 1
                looked.set()
            return real(runtimes)

        monkeypatch.setattr(uwm_sim.service, "snapshots_together", counted)
        monkeypatch.setattr(uwm_sim.watch, "RECHECK_SECONDS", 120.0)  # no slow re-check within the test
        deadline = time.monotonic() + 10
        first = (await c.state()).body
        while not first["replication"]["caughtUp"]:
            assert time.monotonic() < deadline, first
            first = (await c.state(1, first["stateVersion"])).body
        looks = 0
        looked.clear()
        waiting = asyncio.ensure_future(c.state(60, first["stateVersion"]))
        try:
            deadline = time.monotonic() + 10
            while not looked.is_set():  # the poll has looked once and waits
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert (await fellow.replication(False)).status == 200
            assert (await fellow.replication(True)).status == 200
            assert not waiting.done()
            # no sleep to see nothing happen: the master's change comes after ps-3's, so each look ps-3's
            # changes caused comes before the one that answers; one look to wait, one to answer
            assert (await master.replication(False)).status == 200  # its catch-up is over: news to ps-2
            changed = (await asyncio.wait_for(waiting, 5)).body
        finally:
            waiting.cancel()
        assert looks == 2, f"ps-2 looked again {looks - 2} time(s) for ps-3's changes"
        assert changed["stateVersion"] != first["stateVersion"] and changed["replication"]["caughtUp"] is False


@pytest.mark.integration
async def test_a_request_is_answered_while_the_long_polls_a_change_woke_look_again(
        estate: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """One change can wake hundreds of waiting requests (a master's install, its group's subscribers; a
    schema step, every server of the database). Their looks run on threads of their own: a request to any
    server is answered meanwhile, not after all of them (a 200-server fleet answered the operator's portal
    read 0.6 s late, and the master's own long poll 0.45 s late)."""
    async with running_fleet(estate(caughtUpSeconds=0.2)) as fleet, fleet.client("ps-2") as c, \
            fleet.client("ps-1") as master, fleet.client("ms-1") as other:
        monkeypatch.setattr(uwm_sim.watch, "RECHECK_SECONDS", 120.0)  # no slow re-check within the test
        real = uwm_sim.service.snapshots_together
        slow, looking = threading.Event(), threading.Event()
        looks = 0

        def snapshots(runtimes: list[Any]) -> Any:  # ps-2's polls' looks, slow once `slow` is set
            nonlocal looks
            mine = sum(rt.name == "ps-2" for rt in runtimes)
            looks += mine
            if slow.is_set() and mine:  # (the requests' own looks are read together too, apart)
                looking.set()
                time.sleep(1.5)
            return real(runtimes)

        monkeypatch.setattr(uwm_sim.service, "snapshots_together", snapshots)
        first = (await c.state()).body
        polls = [asyncio.ensure_future(c.state(60, first["stateVersion"])) for _ in range(12)]
        try:
            deadline = time.monotonic() + 10
            changes = fleet.runtimes["ps-2"].estate.changes
            assert changes is not None
            while changes.waiting_for("ps-2") < 12 or not looks:  # each poll has looked and waits
                assert time.monotonic() < deadline and not any(p.done() for p in polls), looks
                await asyncio.sleep(0.01)
            slow.set()
            change = asyncio.ensure_future(master.replication(False))  # wakes ps-2's twelve polls at once
            polls.append(change)
            while not looking.is_set():  # they look again (slowly)
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            took, reply = await _timed(other.state())
            assert reply.status == 200 and (await change).status == 200
            assert took < 0.75, f"ms-1's state took {took:.2f} s while ps-2's polls looked again"
        finally:
            slow.clear()
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)


@pytest.mark.integration
async def test_looks_read_together_read_what_each_look_reads_alone(estate: Callable[..., dict[str, Any]]) -> None:
    """The looks one change woke are read together (`snapshots_together`): each gets what its own
    `snapshot` would have read (its row, its database, its group's masters, the portal, the clients)."""
    async with running_fleet(estate(caughtUpSeconds=0.2)) as fleet, fleet.client("ps-2") as c:
        assert (await c.replication(False)).status == 200  # a state that differs from the others'
        runtimes = list(fleet.runtimes.values())
        together = await asyncio.to_thread(uwm_sim.service.snapshots_together, runtimes)
        assert set(together) == {rt.name for rt in runtimes}
        for rt in runtimes:
            alone = await asyncio.to_thread(rt.snapshot_sync)
            seen = together[rt.name]
            assert not isinstance(seen, Exception), seen
            assert (seen.me, seen.db, seen.masters, seen.portal, seen.clients) == \
                (alone.me, alone.db, alone.masters, alone.portal, alone.clients), rt.name
        assert together["ps-2"].me.repl_enabled is False and together["ps-2"].masters  # a subscriber: its master


@pytest.mark.integration
async def test_the_looks_of_requests_asked_together_are_read_together(
        estate: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The answers after a wave of changes, or a pool's status pages, look at once: one read for all of
    them (`ServerRuntime.snapshot` through the estate's `Looks`), each getting its own server's state."""
    async with running_fleet(estate(caughtUpSeconds=0.2)) as fleet:
        real = uwm_sim.service.snapshots_together
        reads: list[list[str]] = []

        def snapshots(runtimes: list[Any]) -> Any:
            reads.append(sorted(rt.name for rt in runtimes))
            return real(runtimes)

        monkeypatch.setattr(uwm_sim.service, "snapshots_together", snapshots)
        runtimes = list(fleet.runtimes.values())
        seen = await asyncio.gather(*(rt.snapshot() for rt in runtimes))
        assert reads == [sorted(rt.name for rt in runtimes)]
        assert [s.me.name for s in seen] == [rt.name for rt in runtimes]
