"""Leader election: one operator process acts on the plans of a namespace; the others stand by.

Why a Lease elector of our own, on `CoordinationV1Api`, rather than what exists:
- kopf's peering is not single-leader: operators of the same priority all freeze (its docs), and a
  higher priority one pauses the others only while it is seen, which is standby, not election.
- the kubernetes client's `leaderelection` module blocks in threads (`time.sleep`), runs the leader's
  work as a thread callback outside kopf's event loop, measures its renew deadline with `time.time()`
  (the wall clock, which jumps) and sends its requests without timeouts; what the loop needs is an
  async question "am I leading right now?" answered from a monotonic clock.

The rules are client-go's. A candidate takes the Lease when it has none, when its holder released it
(no holder), or when the record has not changed for `leaseDurationSeconds` *as measured on this
process's monotonic clock since it first saw that record* (never by comparing `renewTime`, another
pod's clock, with ours). Every write replaces exactly the version read (`resourceVersion`), so of two
candidates one gets 409 and stays a candidate. The holder renews every third of the lease; it counts
itself leading only until two thirds of the lease after the *start* of its last successful renewal, so
it stops acting (`leading()` turns false, checked before every status write and every effect) a third
of a lease before any standby may take over, whatever the network did to its last request.

One Lease per namespace of plans (`--lease-name`, default `uwm-upgrade-operator`, in the plan's own
namespace, where the operator's Role already applies): any two operators that watch the same plans
contend for the same Lease, whatever their release, namespace or scope. A cluster-wide operator holds
one Lease per namespace it has seen a plan in (one renewal each every third of a lease).
A graceful shutdown releases the Leases, so a rolling update hands over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..adapters.kube import ConflictError, Kube, KubeError, LeaseRecord

DEFAULT_LEASE_NAME = "uwm-upgrade-operator"
log = logging.getLogger(__name__)


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Any: ...


class Leadership(Protocol):
    """What the loop and the delete handler ask before they act."""

    def leading(self, namespace: str) -> bool: ...

    async def wait_leading(self, namespace: str, stopped: StopFlag) -> bool: ...

    async def close(self) -> None: ...


class Standalone:
    """`--standalone`: this process alone acts (one replica, tests); no Lease."""

    def leading(self, namespace: str) -> bool:
        return True

    async def wait_leading(self, namespace: str, stopped: StopFlag) -> bool:
        return not stopped.is_set()

    async def close(self) -> None:
        return None


def default_identity() -> str:
    """The pod's name (HOSTNAME in a pod) and a random suffix: a restarted process is a new candidate."""
    return f"{os.environ.get('HOSTNAME') or 'uwm-upgrade'}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseSettings:
    name: str = DEFAULT_LEASE_NAME
    seconds: float = 15.0
    identity: str = field(default_factory=default_identity)

    @property
    def renew_every(self) -> float:
        return self.seconds / 3

    @property
    def renew_deadline(self) -> float:
        return self.seconds * 2 / 3

    @property
    def retry_every(self) -> float:
        return min(2.0, self.seconds / 5)


class Clock(Protocol):
    def __call__(self) -> float: ...


class Elector:
    """One Lease (`settings.name` in `namespace`): acquire, renew, release; `leading()` at any instant."""

    def __init__(self, kube: Kube, namespace: str, settings: LeaseSettings, clock: Clock | None = None) -> None:
        self.kube, self.namespace, self.settings = kube, namespace, settings
        self._clock = clock or asyncio.get_running_loop().time
        self._valid_until = float("-inf")
        self._acquired: dt.datetime | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.changed = asyncio.Event()  # set on every gain or loss of leadership
        self._was_leading = False

    def leading(self) -> bool:
        return self._clock() < self._valid_until

    def _note(self) -> None:
        now = self.leading()
        if now != self._was_leading:
            self._was_leading = now
            log.warning("%s Lease %s/%s as %s", "acquired" if now else "LOST", self.namespace, self.settings.name,
                        self.settings.identity)
            self.changed.set()

    async def attempt(self) -> bool:
        """One try to acquire or renew; True when this process holds the Lease afterwards."""
        try:
            held = await self._try()
        except ConflictError:  # another candidate wrote first
            self._valid_until = float("-inf")
            held = False
        except KubeError as exc:  # unreachable: keep what we had; `leading()` lapses on its own
            log.info("Lease %s/%s: %s", self.namespace, self.settings.name, exc)
            held = self.leading()
        self._note()
        return held

    async def _try(self) -> bool:
        record = await self.kube.read_lease(self.namespace, self.settings.name)
        started = self._clock()  # the write lands after this instant: count the lease from it
        if record is None:
            await self._write(None, 0)
        elif record.holder == self.settings.identity:
            await self._write(record, record.transitions)
        elif self._free(record, started):
            await self._write(record, record.transitions + 1)
        else:
            self._valid_until = float("-inf")
            return False
        self._valid_until = started + self.settings.renew_deadline
        return True

    def _free(self, record: LeaseRecord, now: float) -> bool:
        """No holder, or a record unchanged for its whole duration on our clock."""
        if not record.holder:
            return True
        key = (record.holder, record.renew_time, record.resource_version)
        if key != self._observed:
            self._observed, self._observed_at = key, now
            return False
        duration = float(record.duration_seconds or self.settings.seconds)
        return now - self._observed_at > duration

    async def _write(self, record: LeaseRecord | None, transitions: int) -> None:
        if record is None or record.holder != self.settings.identity or self._acquired is None:
            self._acquired = dt.datetime.now(dt.UTC)
        await self.kube.write_lease(self.namespace, self.settings.name, self.settings.identity,
                                    max(1, round(self.settings.seconds)), transitions, self._acquired,
                                    None if record is None else record.resource_version)

    async def run(self) -> None:
        """Forever: renew while leading, else try again every `retry_every` seconds."""
        while True:
            await self.attempt()
            await asyncio.sleep(self.settings.renew_every if self.leading() else self.settings.retry_every)

    async def release(self) -> None:
        """Give the Lease up (no holder), if held: a standby takes it at its next try."""
        if not self.leading():
            return
        self._valid_until, self._was_leading = float("-inf"), False
        log.warning("releasing Lease %s/%s as %s", self.namespace, self.settings.name, self.settings.identity)
        self.changed.set()
        with contextlib.suppress(KubeError):
            record = await self.kube.read_lease(self.namespace, self.settings.name)
            if record is not None and record.holder == self.settings.identity:
                await self.kube.write_lease(self.namespace, self.settings.name, "", 1, record.transitions,
                                            self._acquired or dt.datetime.now(dt.UTC), record.resource_version)


class LeaseLeadership:
    """An `Elector` per namespace of plans, started when a plan of that namespace first asks."""

    def __init__(self, kube: Kube, settings: LeaseSettings) -> None:
        self.kube, self.settings = kube, settings
        self.electors: dict[str, Elector] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def elector(self, namespace: str) -> Elector:
        if namespace not in self.electors:
            elector = Elector(self.kube, namespace, self.settings)
            self.electors[namespace] = elector
            self._tasks[namespace] = asyncio.create_task(elector.run(), name=f"lease {namespace}")
        return self.electors[namespace]

    def leading(self, namespace: str) -> bool:
        """Whether this process leads `namespace` now; the first question starts campaigning for it (a
        delete handler may ask before any daemon of that namespace did)."""
        return self.elector(namespace).leading()

    async def wait_leading(self, namespace: str, stopped: StopFlag) -> bool:
        """Wait until this process leads `namespace` (True) or `stopped` is set (False)."""
        elector = self.elector(namespace)
        while not stopped.is_set():
            if elector.leading():
                return True
            elector.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(elector.changed.wait(), self.settings.retry_every)
        return False

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(e.release() for e in self.electors.values()), return_exceptions=True)
