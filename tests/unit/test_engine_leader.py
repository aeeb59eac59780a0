"""The Lease elector's rules on a fake Lease and a fake clock: one holder, takeover only after the lease
has gone unchanged for its duration on the standby's own clock, a leader that cannot renew stops before
that, a released Lease is free at once, a write that lost the race (409) leaves the loser a candidate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import pytest

from uwm_upgrade.adapters.kube import ConflictError, KubeError, LeaseRecord
from uwm_upgrade.engine.leader import Elector, LeaseLeadership, LeaseSettings, Standalone


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One Lease, replaced only at the version read; `down` makes every call fail as unreachable."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.down = False
        self.race: str | None = None  # someone else writes just before the next write

    async def read_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        if self.down:
            raise KubeError("reading Lease: the API server is unreachable (MaxRetryError)", transient=True)
        return self.record

    async def write_lease(self, namespace: str, name: str, holder: str, duration_seconds: int, transitions: int,
                          acquired: dt.datetime, resource_version: str | None) -> str:
        if self.down:
            raise KubeError("renewing Lease: the API server is unreachable (MaxRetryError)", transient=True)
        if self.race is not None:
            self._store(self.race, duration_seconds, transitions)
            self.race = None
        current = None if self.record is None else self.record.resource_version
        if resource_version != current:
            raise ConflictError("409 Conflict", True, 409)
        self._store(holder, duration_seconds, transitions)
        return str(self.version)

    def _store(self, holder: str, duration: int, transitions: int) -> None:
        self.version += 1
        self.record = LeaseRecord(holder, duration, dt.datetime.now(dt.UTC), transitions, str(self.version))


def electors(clock: Clock, leases: FakeLeases, seconds: float = 15.0) -> tuple[Elector, Elector]:
    def one(identity: str) -> Elector:
        return Elector(leases, "ns", LeaseSettings("uwm", seconds, identity), clock=clock)  # type: ignore[arg-type]
    return one("a"), one("b")


async def test_one_holder_and_a_takeover_only_after_a_whole_unchanged_lease() -> None:
    clock, leases = Clock(), FakeLeases()
    a, b = electors(clock, leases)
    assert await a.attempt() and a.leading()
    assert not await b.attempt()
    for _ in range(10):  # a renews every 5 s: b sees the record change each time and never takes it
        clock.now += 5
        assert await a.attempt()
        assert not await b.attempt()
    last = clock.now  # a dies here
    clock.now = last + 10.1
    assert not a.leading(), "a leader that did not renew for 2/3 of the lease must stop acting"
    assert not await b.attempt()
    clock.now = last + 15.1  # a whole lease since b last saw the record change
    assert await b.attempt() and b.leading()
    assert leases.record is not None and leases.record.holder == "b" and leases.record.transitions == 1


async def test_a_leader_that_cannot_reach_the_api_server_stops_acting_in_time() -> None:
    clock, leases = Clock(), FakeLeases()
    a, _ = electors(clock, leases)
    assert await a.attempt()
    leases.down = True
    clock.now += 5
    assert await a.attempt()  # still within its renew deadline: it keeps leading, renewal failed
    clock.now += 5.1
    assert not await a.attempt() and not a.leading()
    leases.down = False
    assert await a.attempt(), "the holder itself may renew at once when the API server is back"


async def test_a_released_lease_is_taken_at_once() -> None:
    clock, leases = Clock(), FakeLeases()
    a, b = electors(clock, leases)
    assert await a.attempt()
    assert not await b.attempt()
    await a.release()
    assert not a.leading() and leases.record is not None and leases.record.holder == ""
    assert await b.attempt()


async def test_of_two_writers_the_one_that_lost_the_race_stays_a_candidate() -> None:
    clock, leases = Clock(), FakeLeases()
    a, _ = electors(clock, leases)
    leases.race = "b"  # b creates the Lease between a's read (none) and a's create
    assert not await a.attempt() and not a.leading()
    assert leases.record is not None and leases.record.holder == "b"


async def test_leadership_is_per_namespace_and_standalone_always_leads() -> None:
    class Never:
        def is_set(self) -> bool:
            return True

        async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
            return None

    assert Standalone().leading("any") and not await Standalone().wait_leading("any", Never())
    leadership = LeaseLeadership(FakeLeases(), replace(LeaseSettings(), seconds=3))  # type: ignore[arg-type]
    assert not leadership.leading("ns")  # not yet: starts campaigning for ns
    assert "ns" in leadership.electors and "other" not in leadership.electors
    await leadership.close()


@pytest.mark.parametrize("seconds", [2.0, 301.0])
def test_lease_seconds_out_of_range_are_refused(seconds: float) -> None:
    from uwm_upgrade.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="--lease-seconds"):
        Settings(lease_seconds=seconds)
