"""What one plan's loop has written of the plan's status, and the writes that keep it so.

Why a module of its own: the loop (`reconciler.py`) decides what the status says; how it reaches the API
server has rules of its own. One JSON patch of the items that changed, nothing when nothing changed; every
write at the resourceVersion this loop last read or wrote (fencing: anyone else's write in between makes
it a 409); a change of wording only held back, for at most `WORDING_SECONDS`, to go with the next write;
a record (what a turn without effect saw and decided, what a backup gave) left, in the same phase, for
the next write, at most `DEFER_SECONDS`; the Events and metrics a written change means, once it is
written. The loop checks that it still leads before each write (`fence`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..adapters.kube import ConflictError, Kube, KubeError
from ..core.enums import TERMINAL_PHASES, Phase
from ..core.models import UpgradePlanStatus, parse_status, status_to_wire
from ..core.stalls import stall_event
from ..core.turn import events_between
from ..core.wire_patch import only_wording, status_ops, wire_ops
from . import metrics
from .announce import Announcer

WORDING_SECONDS = 10.0  # a change of wording only waits at most this long for the next write
DEFER_SECONDS = 2.0  # a record waits for the next turn's write at most this long
APPROVE_ANNOTATION = "upgrade.uwm.io/approve"
PHASES = [p.value for p in Phase]  # the phase metric's labels


class StatusWriteRefusedError(KubeError):
    """The API server refused a status write for good (422 invalid, 413 too large, 403 forbidden)."""


def decided_on(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a turn decides on besides the status: the spec's generation and the approval annotation."""
    meta = body["metadata"]
    return (meta.get("generation"), (meta.get("annotations") or {}).get(APPROVE_ANNOTATION))


class StatusRecord:
    """The plan's status as this loop last wrote it (and at which resourceVersion), the status its turns
    made since (`status`), and the records left for the next write."""

    def __init__(self, kube: Kube, body: Mapping[str, Any], announcer: Announcer, fence: Callable[[], None]) -> None:
        meta = body["metadata"]
        self.kube = kube
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.announcer = announcer
        self.fence = fence  # raises unless this process leads the plan's namespace right now
        self.written = parse_status(plain_dict(body.get("status")))
        self.status = self.written
        # the status as the API server holds it, in its wire form (None: none yet; the first write adds it
        # whole): what the next JSON patch is made against
        self.on_server: dict[str, Any] | None = plain_dict(body["status"]) if body.get("status") is not None else None
        self.resource_version: str | None = meta.get("resourceVersion")
        self.writes = 0
        self.last_write = -WORDING_SECONDS  # monotonic
        self.stall_note: str | None = None  # the last stall announced by an Event
        self.deferred: tuple[UpgradePlanStatus, ...] = ()  # statuses of turns whose record was left to the next
        self.deferred_since: float | None = None  # monotonic: when the oldest record not yet written was made
        self.decided_on: tuple[Any, ...] = decided_on(body)  # the spec generation and approval the turn decides on
        self.pending: asyncio.Task[None] | None = None  # the last write started behind the turn (`write_behind`)
        self.sending: UpgradePlanStatus | None = None  # what it sends

    async def refresh(self) -> None:
        """Re-read the plan and start again from the status the API server has (after a 409, a new term)."""
        fresh = await self.kube.get_plan(self.namespace, self.name)
        self.written = self.status = parse_status(plain_dict(fresh.get("status")))
        self.on_server = plain_dict(fresh["status"]) if fresh.get("status") is not None else None
        self.resource_version = (fresh.get("metadata") or {}).get("resourceVersion")

    def forget_unwritten(self) -> None:
        """After a failed turn: what is recorded is what was last written, nothing more (records left for
        the next write included: the next look sees again what they said)."""
        self.status = self.written
        self.deferred, self.deferred_since = (), None

    async def write(self, fence: bool = False, passed: tuple[UpgradePlanStatus, ...] = (),
                    urgent: bool = False) -> None:
        """Send what changed (a JSON patch of the items that changed), at the resourceVersion last seen,
        once the writes started behind the turns are done (their error is raised here); a change of wording
        only waits up to `WORDING_SECONDS` for the next write, unless `urgent` (what an effect's failure
        says). With `fence` (an effect follows) everything is sent, and something is sent even when nothing
        changed (an empty patch at that version: the API server says 409 if anyone wrote the plan since).
        `passed`: the statuses the turn went through, whose phase changes are announced too, after those of
        the records left for this write (`deferred`), which it takes along."""
        await self.settled()
        await self._send(self._take(passed), self.status, self.decided_on, fence, urgent)

    def write_behind(self, passed: tuple[UpgradePlanStatus, ...] = (), urgent: bool = False) -> None:
        """Start writing this record and go on: the next look needs nothing from the answer. Writes go out
        one at a time, in order, and the next `write` (so the fenced one before any effect) waits for this
        one first, and fails with it: nothing is asked of the estate before what came before is recorded."""
        passed, sent, before = self._take(passed), self.status, self.pending
        self.sending = sent
        write = self._after(before, passed, sent, self.decided_on, urgent)
        self.pending = asyncio.get_running_loop().create_task(write, name=f"status write {self.namespace}/{self.name}")

    async def settled(self) -> None:
        """The writes started behind the turns, done; the first error among them is raised here, and
        again until the loop deals with it (`drain`): `failed()` stays True meanwhile. Waiting here never
        cancels the write, even if the waiter is cancelled."""
        task = self.pending
        if task is None:
            return
        await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
        self.pending = self.sending = None

    def failed(self) -> bool:
        """A write started behind the turn has failed (`settled` raises its error)."""
        task = self.pending
        return task is not None and task.done() and not task.cancelled() and task.exception() is not None

    async def drain(self, within: float | None = None) -> BaseException | None:
        """After a failed turn, or when the loop ends: the writes behind the turns done (given at most
        `within` seconds, then stopped); returns the error they ended with, for the caller to deal with
        or to log (the next loop's look sees again what they did not write). A cancellation of the caller
        is not swallowed, and does not cancel the write."""
        task = self.pending
        if task is None:
            return None
        await asyncio.wait({task}, timeout=within)
        self.pending = self.sending = None
        if not task.done():
            task.cancel()
            return None
        return None if task.cancelled() else task.exception()

    def _take(self, passed: tuple[UpgradePlanStatus, ...]) -> tuple[UpgradePlanStatus, ...]:
        """The records left for the next write go with this one (if it fails, what they said is still in
        the status against what the API server has, and goes with the next)."""
        passed, self.deferred, self.deferred_since = (*self.deferred, *passed), (), None
        return passed

    async def _after(self, before: asyncio.Task[None] | None, passed: tuple[UpgradePlanStatus, ...],
                     sent: UpgradePlanStatus, decided: tuple[Any, ...], urgent: bool) -> None:
        if before is not None:
            await before
        await self._send(passed, sent, decided, False, urgent)

    async def _send(self, passed: tuple[UpgradePlanStatus, ...], sent: UpgradePlanStatus, decided: tuple[Any, ...],
                    fence: bool, urgent: bool) -> None:
        """One write of `sent` (the status as it was when the write was asked for, by a turn that decided
        on the spec and approval `decided`)."""
        ops = wire_ops(self.on_server, status_to_wire(sent))
        now = asyncio.get_running_loop().time()
        if not ops:
            metrics.STATUS_WRITES_SKIPPED.inc()
            if not fence:
                return
        elif (not (fence or urgent) and now - self.last_write < WORDING_SECONDS
              and only_wording(self.written, sent)):
            metrics.STATUS_WRITES_HELD.inc()
            return
        self.fence()
        try:
            try:
                res = await self.kube.patch_status_ops(self.namespace, self.name, ops, self.resource_version)
            except ConflictError:
                if not await self._written_since_by_metadata_only(decided):
                    raise
                ops = wire_ops(self.on_server, status_to_wire(sent))
                res = await self.kube.patch_status_ops(self.namespace, self.name, ops, self.resource_version)
        except ConflictError:
            raise
        except KubeError as exc:
            if exc.transient:
                raise
            raise StatusWriteRefusedError(str(exc), False, exc.status) from None
        self.resource_version = (res.get("metadata") or {}).get("resourceVersion") or self.resource_version
        if not ops:
            return
        self.writes += 1
        self.last_write = now
        metrics.STATUS_WRITES.inc()
        self._announce(self.written, sent, passed)
        self.written, self.on_server = sent, status_to_wire(sent)
        metrics.show_plan(self.namespace, self.name, sent)

    def may_defer(self) -> bool:
        """Whether this record (of a turn without effect, or of what effects gave) may be left to the next
        write: no record has waited `DEFER_SECONDS` yet, and the phase is the one written (a plan that is
        over, paused or waiting for someone says so at once). The loop's sleep writes it once the oldest
        record has waited that long, if no write took it along before. A record is what was seen and
        decided, or what an effect answered, never what is about to be asked: whatever an effect may start
        is written, fenced, before the effect, and a migration's request right after it; so a crash in
        between loses only what the next look sees again."""
        now = asyncio.get_running_loop().time()
        waited = now - (self.deferred_since if self.deferred_since is not None else now)
        recorded = self.sending if self.sending is not None else self.written
        return waited < DEFER_SECONDS and self.status.phase not in TERMINAL_PHASES \
            and self.status.phase == recorded.phase

    def defer(self, passed: tuple[UpgradePlanStatus, ...]) -> None:
        """Leave this record to the next turn's write, which announces its phase changes too."""
        self.deferred = (*self.deferred, *passed, self.status)
        if self.deferred_since is None:
            self.deferred_since = asyncio.get_running_loop().time()
        metrics.STATUS_WRITES_DEFERRED.inc()

    def due(self) -> float | None:
        """When the records left for the next write have waited long enough (monotonic), if there are any."""
        return None if self.deferred_since is None else self.deferred_since + DEFER_SECONDS

    async def write_deferred(self, logger: logging.Logger | logging.LoggerAdapter[Any],
                             scrub: Callable[[str], str]) -> bool:
        """Write the records left for the next write now; False (and logged) if that could not be done."""
        try:
            await self.write()
        except Exception as exc:  # the next turn's write meets it again, within the loop's handling
            logger.info("records left for the next write were not written (%s): the next turn deals with it",
                        scrub(f"{type(exc).__name__}: {exc}"))
            return False
        return True

    async def _written_since_by_metadata_only(self, decided: tuple[Any, ...]) -> bool:
        """After a 409: whether the plan was written since only in what this turn did not decide on (kopf's
        annotations, a label): its status as last written, its generation and approval as decided on. Then
        the write is made again at the new version (True); else the loop re-reads and decides again."""
        fresh = await self.kube.get_plan(self.namespace, self.name)
        meta = fresh.get("metadata") or {}
        status = fresh.get("status")
        if decided_on(fresh) != decided or (status is None) != (self.on_server is None):
            return False
        if status_ops(self.written, parse_status(plain_dict(status))):
            return False
        self.on_server = plain_dict(status) if status is not None else None
        self.resource_version = meta.get("resourceVersion") or self.resource_version
        return True

    def _announce(self, old: UpgradePlanStatus, new: UpgradePlanStatus, passed: tuple[UpgradePlanStatus, ...]) -> None:
        """Queue the Events the change means (the core's `events_between`); step and phase metrics."""
        for event in events_between(old, new, passed):
            self.announcer.post(event.type.value, event.reason.value, event.note)
            ended, seconds = event.ended, event.seconds
            if ended is not None:
                metrics.STEPS.labels(ended.name.value, ended.state.value).inc()
                if seconds is not None:
                    metrics.STEP_SECONDS.labels(ended.name.value).observe(seconds)
            if event.phase is not None:
                metrics.set_phase(self.namespace, self.name, event.phase.value, PHASES)
        stall = stall_event(old, new)
        if stall is not None:
            self.stall_note = stall.note
            self.announcer.post(stall.type.value, stall.reason.value, stall.note)


def plain_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return {}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
