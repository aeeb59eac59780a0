"""The loop that drives one UpgradePlan: observe, decide, record, act, record — until the plan is over.

One loop per plan runs in a kopf daemon; each turn is the core's (`core/turn.py`), and this module does
only its I/O: observing, the effects, when to write the status. The status is written (`status_record.py`:
one JSON patch of the items that changed, fenced) *before* every effect, so a crash at any instant leaves
a record saying what may have been asked; the next loop, in this process or the next, observes the estate
and lets `decide()` tell whether it happened. The turn's effects run concurrently. A record (what a turn
without effect saw and decided, what a backup gave) waits, in the same phase, for the next write, at most
`DEFER_SECONDS` (then the sleeping loop writes it); a loop that stops writes what it left. Events are
posted beside the loop (`announce.py`).

The loop sleeps until the earliest of: what `decide()` asked for (the first awaited moment: a period of
a status page, a step's timeout), a change of any watched server's state (`watch.py`: one long poll per
server), and a change of the plan's spec or annotations. It never sleeps longer than the poll interval
while an agent cannot be long-polled.

Only the leader acts (`leader.py`): the loop runs while this process leads the plan's namespace and
checks it again before every status write and every effect. Every status write carries the
resourceVersion this loop last read or wrote, and an effect is preceded by a write (an empty one if
nothing changed), so if anyone else wrote the plan in between the API server answers 409 and the loop
re-reads the plan and decides again before it does anything (fencing).

No exception ends the loop: a turn that fails on the Kubernetes API is retried with a short backoff
(capped at a few seconds: an outage costs little more than itself); any other error, mapped or not,
sets `Stalled=True` on the plan with the error's type, where it was raised and its redacted message,
posts a Warning Event once per distinct error, and is retried with a longer backoff; the next turn that
goes through clears it. Observing has a deadline, and so has every effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import traceback
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from ..adapters.kube import ConflictError, KubeError
from ..adapters.servers import AgentState
from ..core.actions import (
    Action,
    BackupDatabase,
    Effect,
    Idle,
    RestoreBackup,
    UpgradeSchema,
    describe,
)
from ..core.context import Limits
from ..core.control import retry_pending
from ..core.enums import TERMINAL_PHASES, Phase, Reason
from ..core.models import SpecError, UpgradePlanSpec, UpgradePlanStatus, parse_spec
from ..core.observations import ObservationGap, Observations, TransientError, UpgradeError, Where, redact
from ..core.stalls import stalled, unstalled
from ..core.status import observe_generation
from ..core.turn import Outcome, Turn, after_effect, before_effect, next_turn_in, spec_rejected
from . import metrics
from .announce import Announcer
from .answers import adoptable, touched
from .execute import execute, precheck
from .observe import Estate, observe
from .overlap import competing_plans
from .runtime import Runtime, reach, time_zone, utcnow
from .status_record import (
    APPROVE_ANNOTATION,
    PHASES,
    StatusRecord,
    StatusWriteRefusedError,
    decided_on,
    plain_dict,
)
from .timers import Backoff, StepTimers
from .watch import EstateWatch

OVER_SECONDS = 300.0  # a plan that is over: look again this often, or as soon as its spec changes
OBSERVE_SECONDS = 120.0  # one pass over the estate (each call has its own, shorter, timeout)
KUBE_BACKOFF_CAP = 5.0  # the API server unreachable: look again often, the outage costs little more than itself
ERROR_BACKOFF_CAP = 60.0  # an error retrying cannot quickly cure (a bug, a refused write, a broken answer)
CLOSE_SECONDS = 5.0  # a write on its way when the loop ends gets this long
WAKE_CHECK_SECONDS = 0.25  # how often a sleeping loop looks at its spec and its stop flag
# Woken by a change, the loop waits for the changes that come with it (the servers of a lane, the lanes of a
# hop) a share of what its last turn took, within bounds: a look costs little for a small estate, so it
# looks again at once; a wide one's look costs more, so it gathers more changes into one.
GATHER_SHARE = 0.1
GATHER_SECONDS = (0.002, 0.05)
FAILING_PHASES = frozenset({Phase.FAILED, Phase.ROLLING_BACK, Phase.ROLLED_BACK})  # their message describes the estate


class LeadershipLost(Exception):  # noqa: N818 (a signal, not a failure)
    """This process no longer leads the plan's namespace: stop before the next write or effect."""


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class Plan:
    """One plan's loop state: its status as written and as its turns made it (`record`), its timers, its
    watch, what its last turn took."""

    def __init__(self, runtime: Runtime, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]):
        self.runtime = runtime
        self.body = body
        self.logger = logger
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta.get("uid", self.name)
        self.timers = runtime.timers.setdefault(self.uid, StepTimers())
        self.watch = runtime.watches.setdefault(self.uid, EstateWatch())
        self.announcer = Announcer(runtime.kube, body)
        self.record = StatusRecord(runtime.kube, body, self.announcer, self.fence)
        self.observed_gaps = False
        self.turn_seconds = 0.0  # how long the last turn took (observe, decide, write, act, write)

    @property
    def status(self) -> UpgradePlanStatus:
        """The status as this loop's turns made it (written or not yet)."""
        return self.record.status

    @status.setter
    def status(self, value: UpgradePlanStatus) -> None:
        self.record.status = value

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    def limits(self, spec: UpgradePlanSpec) -> Limits:
        """Never poll the estate less often than the plan's health-check period."""
        period = float(spec.health_check.period_seconds)
        base = self.runtime.limits
        return replace(base, poll_seconds=min(base.poll_seconds, period))

    def fence(self) -> None:
        """Raise `LeadershipLost` unless this process leads the plan's namespace right now."""
        if not self.runtime.leadership.leading(self.namespace):
            raise LeadershipLost(self.namespace)

    async def flush(self) -> None:
        """The loop stops (a shutdown, a deletion): a record left for the next write is written now, if
        this process still leads the plan's namespace; if it cannot be, the next loop's first look sees
        again what it said."""
        self._log_unwritten(await self.record.drain())
        if self.record.deferred_since is not None:
            await self._write_deferred()

    async def close(self) -> None:
        """The loop ends: a write still on its way gets a few seconds to end (then it is stopped), its
        Events a few seconds to be posted; its watchers stop."""
        self._log_unwritten(await self.record.drain(within=CLOSE_SECONDS))
        await self.announcer.close()
        watch = self.runtime.watches.pop(self.uid, None)
        if watch is not None:
            await watch.close()

    def _log_unwritten(self, error: BaseException | None) -> None:
        if error is not None:
            self.logger.warning("the loop's last record was not written (%s): the next loop's look sees again what"
                                " it said", self.runtime.scrub(f"{type(error).__name__}: {error}"))

    async def stall(self, reason: Reason, message: str) -> None:
        """`Stalled=True` on what is recorded; if even that cannot be written, at least the Event."""
        record = self.record
        record.forget_unwritten()
        record.status = stalled(record.written, reason, message, utcnow(), self.generation)
        try:
            await record.write()
        except LeadershipLost:
            record.forget_unwritten()
        except KubeError as exc:
            record.forget_unwritten()
            self.logger.warning("cannot record Stalled (%s): %s", reason, self.runtime.scrub(str(exc)))
            note = f"{reason}: {message}"
            if note != record.stall_note:
                record.stall_note = note
                self.announcer.post("Warning", "Stalled", redact(note))

    async def sleep(self, seconds: float, stopped: StopFlag) -> None:
        """Wait up to ``seconds``, but wake as soon as a watched server's state changes (`watch.py`), or
        the spec or the approval annotation changes; at most the poll interval while an agent cannot be
        long-polled or the last look missed something. A record left unwritten that has waited
        `DEFER_SECONDS` meanwhile is written then, without a look (so that write seldom falls on the look
        a change needs); if that write fails, the sleep ends and the next turn meets the failure within
        the loop's handling (after a 409 the plan is read again and the next look records it again)."""
        if not self.watch.live or self.observed_gaps:
            seconds = min(seconds, self.runtime.limits.poll_seconds)
        loop = asyncio.get_running_loop()
        start, before = loop.time(), decided_on(self.body)
        if self.watch.changed.is_set():
            await asyncio.sleep(0)  # never a turn after a turn without letting the event loop run
            return  # changed during the turn: look again at once
        while not stopped.is_set() and not self.record.failed():  # a failed write: the next turn deals with it
            now = loop.time()
            due = self.record.due()
            if due is not None and now >= due and not await self._write_deferred():
                return
            left = seconds - (now - start)
            if left <= 0 or decided_on(self.body) != before:
                return
            if self.watch.changed.is_set():  # what changes together is seen by one look
                await asyncio.sleep(self.gather_seconds())
                return
            wait = min(left, WAKE_CHECK_SECONDS, math.inf if due is None else max(0.0, due - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.watch.changed.wait(), wait)

    async def _write_deferred(self) -> bool:
        return await self.record.write_deferred(self.logger, self.runtime.scrub)

    def gather_seconds(self) -> float:
        """How long a change waits for those that come with it: `GATHER_SHARE` of the last turn, bounded."""
        low, high = GATHER_SECONDS
        return min(max(GATHER_SHARE * self.turn_seconds, low), high)

    async def step(self) -> tuple[tuple[Action, ...], float | None]:
        """One turn of the loop (`core/turn.py`); returns the actions taken and how long to wait. A turn
        that fails lets the writes started behind the turns end first: the loop's handling of the failure
        (a re-read, a Stalled record) starts from what the API server has."""
        try:
            if self.record.failed():  # a write behind the last turn failed: deal with it before a look
                await self.record.settled()
            return await self._turn()
        except Exception as exc:
            behind = await self.record.drain()
            if isinstance(behind, ConflictError | LeadershipLost) and behind is not exc:
                raise behind from exc  # the plan was written by someone else, or is no longer ours: that first
            raise

    async def _turn(self) -> tuple[tuple[Action, ...], float | None]:
        now = utcnow()
        try:
            spec = parse_spec(plain_dict(self.body.get("spec")))
        except SpecError as exc:
            self.status = spec_rejected(self.status, self.generation, str(exc), now)
            await self.record.write()
            return (), None if self.status.phase in TERMINAL_PHASES else self.runtime.limits.idle_seconds
        if self.status.phase in TERMINAL_PHASES and not retry_pending(spec, self.status):
            # Over: nothing to do but say which spec was seen (kstatus waits for observedGeneration). Its
            # servers' long polls stop (a retry's turn follows them again): what they see change is of no
            # use to it, and a change flag left set would end every sleep after this turn at once.
            await self.watch.close()
            self.watch.changed.clear()
            self.status = unstalled(observe_generation(self.status, self.generation), now)
            await self.record.write()
            return (Idle(self.status.phase.value),), None
        self.watch.changed.clear()  # a change from here on wakes the sleep after this turn
        record = self.record
        record.decided_on = decided_on(self.body)
        estate, turn = await self._look_and_decide(spec, now)
        if turn.status.phase in FAILING_PHASES and turn.status.phase is not self.status.phase:
            # A plan that fails says what it leaves: from every agent asked now, not from states a long poll
            # brought a moment before the change that fails it (the portal is read, an agent's answer may
            # still be on its way): the same look again, every server asked, decides.
            self.watch.invalidate(self.watch.watched)
            now = utcnow()
            estate, turn = await self._look_and_decide(spec, now)
        for action in turn.actions:
            self.logger.info("decided: %s", redact(describe(action)))
        self.status = unstalled(turn.status, now)
        acting = bool(turn.effects) and estate is not None
        # the looks the effects need first (a backup verified again), beside the write that precedes them
        checks = _start_checks(estate, turn.effects) if acting and estate is not None else {}
        try:
            if acting:
                await record.write(fence=True, passed=turn.passed)
            elif self.status.phase in TERMINAL_PHASES:  # the plan is over: the loop's last word, awaited
                await record.write(passed=turn.passed)
            elif not record.may_defer():  # a record: the next look need not wait for it
                record.write_behind(turn.passed)
            else:  # the next turn, within DEFER_SECONDS, writes what this one recorded
                record.defer(turn.passed)
        except BaseException:
            await _cancel(checks.values())
            raise
        outcomes: tuple[Outcome, ...] = ()
        if acting and estate is not None:
            try:
                self.fence()
            except LeadershipLost:
                await _cancel(checks.values())
                raise
            answered: dict[str, list[AgentState]] = {}
            results = await asyncio.gather(*(self._carry_out(estate, spec, e, answered, checks.get(i))
                                             for i, e in enumerate(turn.effects)), return_exceptions=True)
            self.watch.invalidate(touched(spec, turn.effects))
            for name, state in adoptable(spec, turn.effects, answered).items():
                self.watch.remember(name, state)
            outcomes = tuple(r for r in results if isinstance(r, Outcome))
            self.status = after_effect(self.status, outcomes, utcnow())
            urgent = any(o.error is not None for o in outcomes)
            if any(isinstance(r, BaseException) for r in results):
                await record.write(urgent=urgent)  # before the catch-all below
            elif cannot_wait(results) or not record.may_defer():
                record.write_behind(urgent=urgent)  # now, and the next look need not wait for it
            else:  # a backup taken (found again by its id after a crash), notes: with the next write
                record.defer(())
            for result in results:
                if isinstance(result, BaseException):  # recorded what went through; now the catch-all
                    raise result
        return turn.actions, next_turn_in(turn, outcomes)

    async def _look_and_decide(self, spec: UpgradePlanSpec, now: dt.datetime) -> tuple[Estate | None, Turn]:
        estate, seen = await self._observe(spec, now)
        self.observed_gaps = bool(seen.gaps)
        seen = replace(seen, running_for=self.timers.running_for(self.status), zone=time_zone(spec))
        annotations = self.body["metadata"].get("annotations") or {}
        return estate, before_effect(spec, self.status, seen, now, generation=self.generation,
                                     approval=annotations.get(APPROVE_ANNOTATION), limits=self.limits(spec))

    async def _observe(self, spec: UpgradePlanSpec, now: dt.datetime) -> tuple[Estate | None, Observations]:
        try:
            estate, credentials = await reach(self.runtime, self.uid, self.namespace, spec)
        except KubeError as exc:
            return None, Observations(gaps=(ObservationGap(Where(), str(exc)),))
        rt = self.runtime
        estate.watch = self.watch
        self.watch.follow(estate.servers, (*spec.servers(), *spec.replacement_servers()))
        competing: tuple[str, ...] = ()
        if not self.status.started:  # a plan that started holds its estate: nobody competes with it
            competing = await competing_plans(rt.kube, self.body, spec, rt.scope, rt.secret, rt.resolver,
                                              rt.plans)
        try:
            seen = await asyncio.wait_for(observe(estate, spec, self.status, now, competing), OBSERVE_SECONDS)
        except TimeoutError:
            gap = ObservationGap(Where(), f"observing the estate took longer than {OBSERVE_SECONDS:.0f} s")
            seen = Observations(gaps=(gap,), competing_plans=competing)
        return estate, replace(seen, database_targets=credentials.database_targets())

    async def _carry_out(self, estate: Estate, spec: UpgradePlanSpec, effect: Effect,
                         answered: dict[str, list[AgentState]], checked: asyncio.Task[None] | None = None) -> Outcome:
        limit = effect_deadline(self.runtime.limits, effect)
        try:
            return Outcome(effect, await asyncio.wait_for(execute(estate, spec, effect, answered, checked), limit))
        except TimeoutError:
            step = effect.step
            error: UpgradeError = TransientError(Where(step.hop, step.name, step.server, step.database),
                                                 f"{describe(effect)} did not finish within {limit:.0f} s")
        except UpgradeError as exc:
            error = exc
        if isinstance(error, TransientError):
            metrics.RETRIES.labels(effect.step.name.value).inc()
        self.logger.warning("%s: %s", describe(effect), error)
        return Outcome(effect, error=error)


# What effects gave that a later look could not tell again, so it is written at once: a migration asked
# for (never asked twice, even across a crash), a database restored (never restored twice).
WRITTEN_AT_ONCE = (UpgradeSchema, RestoreBackup)


def cannot_wait(results: Sequence[Outcome | BaseException]) -> bool:
    """Whether what the effects gave must be written now rather than with the next write: an effect
    failed (why it failed), raised (the catch-all follows; what went through is recorded first), or was
    one of `WRITTEN_AT_ONCE`."""
    return any(not isinstance(r, Outcome) or r.error is not None or isinstance(r.effect, WRITTEN_AT_ONCE)
               for r in results)


def _start_checks(estate: Estate, effects: tuple[Effect, ...]) -> dict[int, asyncio.Task[None]]:
    """Each effect's `precheck` started now (by the effect's index in the turn), for the effect to await."""
    checks: dict[int, asyncio.Task[None]] = {}
    for i, effect in enumerate(effects):
        look = precheck(estate, effect)
        if look is not None:
            checks[i] = asyncio.ensure_future(look)
    return checks


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Checks whose effect will not run (the write before it failed): stopped, their outcome dropped."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def effect_deadline(limits: Limits, effect: Effect) -> float:
    """How long one effect may take: a backup or a restore as long as a backup step, any other (requests
    to servers, each with its own timeout) as long as a step."""
    return limits.backup_seconds if isinstance(effect, BackupDatabase | RestoreBackup) else limits.step_seconds


def where_raised(exc: BaseException) -> str:
    """`module:line` of the innermost frame of the traceback: where to look, without any value."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


async def drive(runtime: Runtime, body: Mapping[str, Any], stopped: StopFlag,
                logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """The daemon's body: while this process leads the plan's namespace, loop until the plan is over;
    when leadership is lost, wait to lead again; return when the daemon is stopped (deletion, shutdown)."""
    namespace = body["metadata"]["namespace"]
    uid = body["metadata"].get("uid", body["metadata"]["name"])
    while not stopped.is_set():
        if not await runtime.leadership.wait_leading(namespace, stopped):
            return
        plan = Plan(runtime, body, logger)
        runtime.loops.add(uid)
        try:
            over = await _loop(runtime, plan, stopped, logger)
            await plan.flush()
        finally:
            runtime.loops.discard(uid)
            await plan.close()
        if over:
            return


async def _loop(runtime: Runtime, plan: Plan, stopped: StopFlag,
                logger: logging.Logger | logging.LoggerAdapter[Any]) -> bool:
    """Turns until stopped or no longer leading (False). A plan that is over waits for its spec to change
    (a retry of a Failed plan, an edit whose generation its status must say it saw)."""
    metrics.set_phase(plan.namespace, plan.name, plan.status.phase.value, PHASES)
    metrics.show_plan(plan.namespace, plan.name, plan.status)
    backoff, fresh, over = Backoff(), False, False
    while not stopped.is_set():
        try:
            if not fresh:  # a new term, or after a 409: decide from what the API server has
                await plan.record.refresh()
                fresh = True
            began = asyncio.get_running_loop().time()
            actions, delay = await plan.step()
            plan.turn_seconds = asyncio.get_running_loop().time() - began
        except LeadershipLost:
            logger.warning("no longer leading namespace %s: stopped before the next write or effect", plan.namespace)
            return False
        except ConflictError:
            logger.info("the plan was written by someone else since it was read: re-reading it before any effect")
            plan.record.forget_unwritten()
            fresh = False
            continue
        except StatusWriteRefusedError as exc:
            delay = backoff.next(ERROR_BACKOFF_CAP)
            message = runtime.scrub(str(exc))
            logger.error("status write refused: %s; retrying in %.0f s", message, delay)
            metrics.LOOP_ERRORS.labels("StatusWriteRefused").inc()
            await plan.stall(Reason.STATUS_WRITE_REFUSED, message)
            await stopped.wait(delay)
            continue
        except KubeError as exc:  # the API server unreachable or answering errors: retry soon
            plan.record.forget_unwritten()
            delay = backoff.next(KUBE_BACKOFF_CAP if exc.transient else ERROR_BACKOFF_CAP)
            logger.warning("Kubernetes API: %s; retrying in %.0f s", runtime.scrub(str(exc)), delay)
            metrics.LOOP_ERRORS.labels("KubeError").inc()
            if not exc.transient:
                await plan.stall(Reason.UNEXPECTED_ERROR, runtime.scrub(str(exc)))
            await stopped.wait(delay)
            continue
        except Exception as exc:  # the catch-all: nothing ends the loop but the end of the plan
            delay = backoff.next(ERROR_BACKOFF_CAP)
            message = runtime.scrub(f"{type(exc).__name__} at {where_raised(exc)}: {exc}")
            logger.error("turn failed: %s; retrying in %.0f s", message, delay)
            metrics.LOOP_ERRORS.labels(type(exc).__name__[:40]).inc()
            await plan.stall(Reason.UNEXPECTED_ERROR, message)
            await stopped.wait(delay)
            continue
        backoff.reset()
        if any(isinstance(a, Idle) for a in actions) or (delay is None and plan.status.phase in TERMINAL_PHASES):
            if not over:
                logger.info("plan %s is %s after %d status writes", plan.name, plan.status.phase, plan.record.writes)
            over = True  # it stays over until its spec changes (spec.retry): look again when it does
            await plan.sleep(OVER_SECONDS, stopped)
            continue
        over = False
        await plan.sleep(delay if delay is not None else runtime.limits.idle_seconds, stopped)
    return False

