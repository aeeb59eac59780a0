"""One turn of a plan's loop, pure: what the engine writes, does and announces, in the order it does it.

The engine (engine/reconciler.py) does only the I/O around these functions, and the unit tests' fake
loops call the same functions in the same order:

    turn = before_effect(spec, status, observations, now, ...)  # record what was seen, decide, record that
    write(turn.status)                 # one status patch, before any effect; then post
                                       # events_between(written, turn.status, turn.passed)
    outcomes = [execute(effect) ...]   # turn.effects, concurrently; each an Outcome (result or error)
    status = after_effect(turn.status, outcomes, now)
    write(status)                      # and its Events
    sleep(next_turn_in(turn, outcomes))   # or until what is watched changes

Writing the status *before* an effect is what lets `decide()` tell, after a crash, that an effect may
have been asked for (its step is Running) and check the estate before asking again.

`decide()` answers every action the guide allows at once (`lanes.py`). What only records what this look
already shows (a step seen done, a hop begun, the plan computed) is applied and `decide()` asked again
with the same look, until it answers effects, waits or an end: so one turn, and one status patch, carries
everything one look allows, and every effect of the turn is decided from the status as it will be written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .actions import Action, Effect, Final, Waiting, requeue_after
from .context import DEFAULT_LIMITS, Limits
from .control import past_deadline, retried
from .decide import decide
from .enums import EventReason, EventType, Phase, StepState
from .models import StepStatus, UpgradePlanSpec, UpgradePlanStatus
from .observations import BackupObservation, Observations, TransientError, UpgradeError, redact
from .status import observe_generation, record_observations, with_display
from .strategies import strategy_for
from .transitions import apply_decision, apply_error, apply_result, reject_spec

# ---------------------------------------------------------------- the turn


@dataclass(frozen=True)
class Turn:
    """The status to write before anything is done, the actions it records, the statuses it passed
    through on the way (each round of records: their phase changes are announced too), and in how many
    seconds the first Running step times out (None: none runs)."""

    status: UpgradePlanStatus
    actions: tuple[Action, ...]
    passed: tuple[UpgradePlanStatus, ...] = ()
    timeout_in: float | None = None

    @property
    def effects(self) -> tuple[Effect, ...]:
        return tuple(a for a in self.actions if isinstance(a, Effect))


@dataclass(frozen=True)
class Outcome:
    """What carrying out one effect gave: the backup a BackupDatabase took, or the error (secret-free)."""

    effect: Effect
    result: BackupObservation | None = None
    error: UpgradeError | None = None


def _is_record(action: Action) -> bool:
    """An action that only records what was seen (and so calls for deciding again, with the same look)."""
    return not isinstance(action, Effect | Waiting | Final)


def before_effect(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime, *,
                  generation: int | None = None, approval: str | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> Turn:
    """Record what was observed (and the spec's generation), decide, and record the decision: while the
    answer holds records, they alone are applied and `decide()` asked again with the same look; the first
    answer without any (effects, waits, an end) is applied whole. Each round changes the status (records
    that change nothing end the rounds), so there are at most about as many rounds as the plan has steps."""
    current = status if generation is None else observe_generation(status, generation)
    current = record_observations(current, spec, seen, now)
    current = retried(spec, current, seen, now)  # spec.retry: a Failed plan goes on (control.py)
    taken: list[Action] = []
    passed: list[UpgradePlanStatus] = []
    for _ in range(len(current.steps) + len(current.path) + 8):
        actions = decide(spec, current, seen, now, approval=approval, limits=limits)
        records = tuple(a for a in actions if _is_record(a))
        if not records:
            break
        changed = current
        for action in records:
            changed = apply_decision(changed, action, now, display=False)
        changed = with_display(changed)
        if changed == current:
            break
        # the records first, then decide again: what they change (a server done frees its place, a step
        # done lets the next one of its lane start) is what the effects are decided from
        taken += records
        current = record_observations(changed, spec, seen, now)
        passed.append(current)
    for action in actions:  # the last answer: effects, waits or an end (records that changed nothing)
        current = apply_decision(current, action, now, display=False)
    current = with_display(current)
    taken += actions
    current = past_deadline(current, now, limits)
    return Turn(current, tuple(taken), tuple(passed), timeout_in(spec, current, seen, now, limits))


def timeout_in(spec: UpgradePlanSpec, status: UpgradePlanStatus, seen: Observations, now: datetime,
               limits: Limits) -> float | None:
    """Seconds until the first Running step of the current hop passes its timeout (None: none runs)."""
    if not status.started or not 1 <= status.current_hop <= len(status.path):
        return None
    table = strategy_for(spec).table
    left = []
    for step in status.steps:
        if step.state is not StepState.RUNNING or step.hop != status.current_hop:
            continue
        if seen.running_for is not None:
            elapsed = seen.running_for.get(step.key, 0.0)
        elif step.started_at is not None:
            elapsed = (now - step.started_at).total_seconds()
        else:
            continue
        kind = table.get(step.name)
        limit = limits.seconds(kind.timeout, spec) if kind is not None else limits.step_seconds
        left.append(max(limit - elapsed, 0.0))
    return min(left) if left else None


def after_effect(status: UpgradePlanStatus, outcomes: Sequence[Outcome], now: datetime) -> UpgradePlanStatus:
    """Record what the effects gave: a result ends a backup's or a restore's step, a permanent error
    fails its step, a transient one leaves it Running to be asked again."""
    for outcome in outcomes:
        if outcome.error is not None:
            status = apply_error(status, outcome.effect, outcome.error, now)
        else:
            status = apply_result(status, outcome.effect, outcome.result, now)
    return status


def next_turn_in(turn: Turn, outcomes: Sequence[Outcome] = ()) -> float | None:
    """Seconds until the next turn (None: not until the resource changes). An effect that failed
    transiently is retried after the delay its error asks for; one that failed for good at once (the
    next `decide()` applies the failure policy); a Running step's timeout is looked at when it passes."""
    delays = []
    for action in turn.actions:
        error = next((o.error for o in outcomes if o.effect == action and o.error is not None), None)
        if error is None:
            delays.append(requeue_after(action))
        else:
            delays.append(error.retry_after if isinstance(error, TransientError) else 0.0)
    known = [d for d in delays if d is not None]
    if not known:
        return None
    # the timeout is looked at a moment after it passed, so that it has passed
    return min(known) if turn.timeout_in is None else min(*known, turn.timeout_in + 0.05)


def spec_rejected(status: UpgradePlanStatus, generation: int, message: str, now: datetime) -> UpgradePlanStatus:
    """The turn when the spec itself is invalid (`models.SpecError`): nothing is observed or done."""
    return reject_spec(observe_generation(status, generation), message, now)


# ---------------------------------------------------------------- what a status change means


# A step is announced once, when it ends (its note says when it started): its start is in the status.
_STEP_REASONS = {StepState.SUCCEEDED: EventReason.STEP_SUCCEEDED, StepState.FAILED: EventReason.STEP_FAILED,
                 StepState.SKIPPED: EventReason.STEP_SKIPPED}
_CUTOVER_STAGES = (("new_server_online_at", EventReason.NEW_SERVER_ONLINE),
                   ("clients_moved_at", EventReason.CLIENTS_MOVED),
                   ("old_server_offline_at", EventReason.OLD_SERVER_OFFLINE))


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the plan (`reason` is the new phase for a phase change); `step` is the step
    a step event is about, as it now is; `phase` the phase a phase event announces."""

    type: EventType
    reason: EventReason | Phase
    note: str
    step: StepStatus | None = None
    phase: Phase | None = None

    @property
    def ended(self) -> StepStatus | None:
        """The step this event says ran to its end (Succeeded or Failed; a skipped one never ran)."""
        done = self.step is not None and self.step.state in (StepState.SUCCEEDED, StepState.FAILED)
        return self.step if done else None

    @property
    def seconds(self) -> float | None:
        """How long the step that ended took."""
        step = self.ended
        if step is None or step.started_at is None or step.finished_at is None:
            return None
        return max((step.finished_at - step.started_at).total_seconds(), 0.0)


def events_between(old: UpgradePlanStatus, new: UpgradePlanStatus,
                   passed: Sequence[UpgradePlanStatus] = ()) -> tuple[Event, ...]:
    """The Events a status change means: one per step that ended (Succeeded, Failed, Skipped), per cut-over
    stage of a CleanInstall (and the license it deploys), and per phase change, `passed` (the statuses
    one turn went through on its way to `new`) included, in that order; every note secret-free."""
    found = []
    before = {s.key: s.state for s in old.steps}
    for step in new.steps:
        if before.get(step.key) == step.state or step.state not in _STEP_REASONS:
            continue
        kind = EventType.WARNING if step.state is StepState.FAILED else EventType.NORMAL
        note = f"hop {step.hop}: {step.key}" + (f": {step.message}" if step.message else "") + _took(step)
        found.append(Event(kind, _STEP_REASONS[step.state], redact(note), step=step))
    seen = {c.server: c for c in old.cutovers or ()}
    for cut in new.cutovers or ():
        was = seen.get(cut.server)
        for stage, reason in _CUTOVER_STAGES:
            if getattr(cut, stage) is not None and (was is None or getattr(was, stage) is None):
                note = f"{cut.server} -> {cut.replacement} ({cut.old_url} -> {cut.new_url}): {cut.message}"
                found.append(Event(EventType.NORMAL, reason, redact(note)))
        deployed = cut.license.deployed_at if cut.license else None
        if cut.license is not None and deployed is not None and (
                was is None or was.license is None or was.license.deployed_at != deployed):
            note = (f"the Deployment Agent carries the license of Secret {cut.license.secret_name}"
                    f" ({cut.license.fingerprint}) for {cut.replacement}")
            found.append(Event(EventType.NORMAL, EventReason.LICENSE_DEPLOYED, redact(note)))
    last = old
    for now in (*passed, new):
        if now.phase != last.phase:
            kind = EventType.WARNING if now.phase in (Phase.FAILED, Phase.BLOCKED) else EventType.NORMAL
            found.append(Event(kind, now.phase, redact(now.message or now.phase), phase=now.phase))
        last = now
    return tuple(found)


def _took(step: StepStatus) -> str:
    """When a step that ran started and how long it took, as a note says it."""
    if step.state is StepState.SKIPPED or step.started_at is None or step.finished_at is None:
        return ""
    seconds = max((step.finished_at - step.started_at).total_seconds(), 0.0)
    return f" (started {step.started_at.strftime('%H:%M:%SZ')}, {seconds:.0f} s)"
