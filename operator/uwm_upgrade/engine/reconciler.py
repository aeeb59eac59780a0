"""The loop that drives one UpgradePlan: observe, decide, record, act, record — until the plan is over.

One loop per plan runs in a kopf daemon. The status is written (a minimal merge patch, nothing when
nothing changed) *before* every effect, so a crash at any instant leaves a record saying what may have
been asked; the next loop, in this process or the next, observes the estate and lets `decide()` tell
whether it happened. Waits are the ones `decide()` asks for (bounded by `healthCheck.periodSeconds` and
the operator's poll interval) and end early when the plan's spec or annotations change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..adapters.database import Database
from ..adapters.kube import Kube, KubeError
from ..adapters.servers import ServerClient
from ..core.actions import EFFECT_TYPES, Action, Idle, describe, requeue_after
from ..core.context import Limits
from ..core.decide import decide
from ..core.enums import TERMINAL_PHASES, Phase, StepState
from ..core.models import SpecError, UpgradePlanSpec, UpgradePlanStatus, parse_spec, parse_status
from ..core.observations import ObservationGap, Observations, TransientError, UpgradeError, Where, redact
from ..core.status import observe_generation, record_observations, status_patch
from ..core.transitions import apply_decision, apply_error, apply_result, reject_spec
from . import metrics
from .execute import execute
from .observe import Estate, observe
from .overlap import competing_plans

APPROVE_ANNOTATION = "upgrade.uwm.io/approve"
PHASES = [p.value for p in Phase]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


@dataclass
class Runtime:
    """Process-wide state: the Kubernetes adapter, one HTTP client per agent token, the loop's limits."""

    kube: Kube
    limits: Limits = field(default_factory=lambda: Limits(poll_seconds=1.0, idle_seconds=5.0))
    clients: dict[str, ServerClient] = field(default_factory=dict)
    estates: dict[str, Estate] = field(default_factory=dict)
    loops: set[str] = field(default_factory=set)  # uids of the plans whose loop runs in this process

    secrets: dict[tuple[str, str, str], tuple[float, str]] = field(default_factory=dict)
    secret_ttl: float = 15.0

    async def secret(self, namespace: str, name: str, key: str) -> str:
        """A Secret's value, re-read at most every `secret_ttl` seconds (a rotated Secret is picked up)."""
        now = asyncio.get_running_loop().time()
        cached = self.secrets.get((namespace, name, key))
        if cached is not None and cached[0] > now:
            return cached[1]
        value = await self.kube.secret_value(namespace, name, key)
        self.secrets[(namespace, name, key)] = (now + self.secret_ttl, value)
        return value

    def client(self, token: str) -> ServerClient:
        if token not in self.clients:
            self.clients[token] = ServerClient(token)
        return self.clients[token]

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def estate_for(runtime: Runtime, uid: str, namespace: str, spec: UpgradePlanSpec) -> Estate:
    """Reach the plan's estate with the credentials of its Secrets; health streaks are kept per plan."""
    token = await runtime.secret(namespace, spec.agent_secret_ref.name, spec.agent_secret_ref.key)
    dbs = {}
    for db in spec.databases:
        ref = db.connection_secret_ref
        dbs[db.name] = Database(db.name, await runtime.secret(namespace, ref.name, ref.key))
    old = runtime.estates.get(uid)
    estate = Estate(runtime.client(token), dbs, old.health if old else {})
    runtime.estates[uid] = estate
    return estate


class Plan:
    """One plan's loop state: what was last written, so only real changes are sent."""

    def __init__(self, runtime: Runtime, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]):
        self.runtime = runtime
        self.body = body
        self.logger = logger
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta.get("uid", self.name)
        self.written = parse_status(_dict(body.get("status")))
        self.status = self.written
        self.writes = 0

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    def _fingerprint(self) -> tuple[Any, ...]:
        meta = self.body["metadata"]
        return (meta.get("generation"), (meta.get("annotations") or {}).get(APPROVE_ANNOTATION))

    def limits(self, spec: UpgradePlanSpec) -> Limits:
        """Never poll the estate less often than the plan's health-check period."""
        period = float(spec.health_check.period_seconds)
        base = self.runtime.limits
        return replace(base, poll_seconds=min(base.poll_seconds, period))

    async def write(self) -> None:
        patch = status_patch(self.written, self.status)
        if patch is None:
            metrics.STATUS_WRITES_SKIPPED.inc()
            return
        await self.runtime.kube.patch_status(self.namespace, self.name, patch)
        self.writes += 1
        metrics.STATUS_WRITES.inc()
        await self._announce(self.written, self.status)
        self.written = self.status

    async def _announce(self, old: UpgradePlanStatus, new: UpgradePlanStatus) -> None:
        """An Event per step start, end and failure, per cut-over stage, and per phase change; step metrics."""
        before = {s.key: s.state for s in old.steps}
        for step in new.steps:
            if before.get(step.key) == step.state or step.state is StepState.PENDING:
                continue
            kind = "Warning" if step.state is StepState.FAILED else "Normal"
            reason = {StepState.RUNNING: "StepStarted", StepState.SUCCEEDED: "StepSucceeded",
                      StepState.FAILED: "StepFailed", StepState.SKIPPED: "StepSkipped"}[step.state]
            note = f"hop {step.hop}: {step.key}" + (f": {step.message}" if step.message else "")
            await self.runtime.kube.event(dict(self.body), kind, reason, redact(note))
            if step.state in (StepState.SUCCEEDED, StepState.FAILED):
                metrics.STEPS.labels(step.name.value, step.state.value).inc()
                if step.started_at and step.finished_at:
                    seconds = (step.finished_at - step.started_at).total_seconds()
                    metrics.STEP_SECONDS.labels(step.name.value).observe(max(seconds, 0.0))
        seen = {c.server: c for c in old.cutovers or ()}  # strategy CleanInstall: each server's cut-over
        for cut in new.cutovers or ():
            was = seen.get(cut.server)
            for stage, reason in (("new_server_online_at", "NewServerOnline"), ("clients_moved_at", "ClientsMoved"),
                                  ("old_server_offline_at", "OldServerOffline")):
                if getattr(cut, stage) is not None and (was is None or getattr(was, stage) is None):
                    note = f"{cut.server} -> {cut.replacement} ({cut.old_url} -> {cut.new_url}): {cut.message}"
                    await self.runtime.kube.event(dict(self.body), "Normal", reason, redact(note))
        if old.phase != new.phase:
            kind = "Warning" if new.phase in (Phase.FAILED, Phase.BLOCKED) else "Normal"
            await self.runtime.kube.event(dict(self.body), kind, new.phase.value, redact(new.message or new.phase))
            metrics.set_phase(self.namespace, self.name, new.phase.value, PHASES)

    async def sleep(self, seconds: float, stopped: StopFlag) -> None:
        """Wait up to ``seconds``, but wake as soon as the spec or the approval annotation changes."""
        start, before = asyncio.get_running_loop().time(), self._fingerprint()
        while not stopped.is_set():
            left = seconds - (asyncio.get_running_loop().time() - start)
            if left <= 0 or self._fingerprint() != before:
                return
            await stopped.wait(min(left, 0.25))

    async def step(self) -> tuple[Action | None, float | None]:
        """One turn of the loop; returns the action taken and how long to wait before the next."""
        now = utcnow()
        try:
            spec = parse_spec(_dict(self.body.get("spec")))
        except SpecError as exc:
            self.status = reject_spec(observe_generation(self.status, self.generation), str(exc), now)
            await self.write()
            return None, None if self.status.phase in TERMINAL_PHASES else self.runtime.limits.idle_seconds
        if self.status.phase in TERMINAL_PHASES:
            return Idle(self.status.phase.value), None
        estate: Estate | None = None
        try:
            estate = await estate_for(self.runtime, self.uid, self.namespace, spec)
        except KubeError as exc:
            seen = Observations(gaps=(ObservationGap(Where(), str(exc)),))
        else:
            competing = await competing_plans(self.runtime.kube, self.body, spec)
            seen = await observe(estate, spec, self.status, now, competing)
        self.status = record_observations(observe_generation(self.status, self.generation), spec, seen, now)
        annotations = self.body["metadata"].get("annotations") or {}
        action = decide(spec, self.status, seen, now, approval=annotations.get(APPROVE_ANNOTATION),
                        limits=self.limits(spec))
        self.logger.info("decided: %s", redact(describe(action)))
        self.status = apply_decision(self.status, action, now)
        await self.write()
        if isinstance(action, EFFECT_TYPES) and estate is not None:
            try:
                result = await execute(estate, spec, action)
            except UpgradeError as exc:
                if isinstance(exc, TransientError):
                    metrics.RETRIES.labels(action.step.name.value).inc()
                self.logger.warning("%s: %s", describe(action), exc)
                self.status = apply_error(self.status, action, exc, utcnow())
                await self.write()
                return action, exc.retry_after if isinstance(exc, TransientError) else 0.0
            self.status = apply_result(self.status, action, result, utcnow())
            await self.write()
        return action, requeue_after(action)


async def drive(runtime: Runtime, body: Mapping[str, Any], stopped: StopFlag,
                logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """The daemon's body: loop until the plan is over or the daemon is stopped (deletion, shutdown)."""
    plan = Plan(runtime, body, logger)
    runtime.loops.add(plan.uid)
    try:
        await _loop(runtime, plan, stopped, logger)
    finally:
        runtime.loops.discard(plan.uid)


async def _loop(runtime: Runtime, plan: Plan, stopped: StopFlag,
                logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    metrics.set_phase(plan.namespace, plan.name, plan.status.phase.value, PHASES)
    failures = 0
    while not stopped.is_set():
        try:
            action, delay = await plan.step()
            failures = 0
        except KubeError as exc:  # the API server is unreachable or refused a write: retry with backoff
            failures += 1
            delay = min(2.0 ** failures, 60.0)
            logger.warning("Kubernetes API: %s; retrying in %.0f s", exc, delay)
            await stopped.wait(delay)
            continue
        if isinstance(action, Idle) or (delay is None and plan.status.phase in TERMINAL_PHASES):
            logger.info("plan %s is %s after %d status writes", plan.name, plan.status.phase, plan.writes)
            return
        await plan.sleep(delay if delay is not None else runtime.limits.idle_seconds, stopped)


def _dict(value: Any) -> dict[str, Any]:
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
