"""Fakes for driving the engine's real loop (`reconciler.drive`) without an API server or an estate.

`FakeKube` keeps one plan as the API server would: a status changed by JSON patches, a
resourceVersion bumped by every write that changes something, 409 for a write at an old version, and a
script of errors for its next calls. `LoopHarness` wires it, the in-memory estate of the core's tests
(`core_estate_model.FakeEstate`, standing in for the servers and databases behind `observe`/`execute`)
and a stop flag that ends the loop after a number of turns into the engine, and records every wait the
loop asked for instead of sleeping it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from core_builders import SMALL_ESTATE
from core_estate_model import FakeEstate

from uwm_upgrade.adapters.kube import ConflictError, KubeError
from uwm_upgrade.core.actions import Effect
from uwm_upgrade.core.context import Limits
from uwm_upgrade.core.models import parse_spec
from uwm_upgrade.core.wire_patch import apply_ops
from uwm_upgrade.engine import reconciler
from uwm_upgrade.engine.runtime import Runtime

TOKEN = "s3cr3t-agent-token"
CONNECTION = "DRIVER={PostgreSQL Unicode};SERVER=db.corp;PORT=5432;DATABASE=uwm;UID=u;PWD=hunter2-pwd"
FAST = Limits(poll_seconds=0.01, idle_seconds=0.01)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def written_fields(ops: list[dict[str, Any]]) -> set[str]:
    """The top-level status fields a JSON patch of `/status` writes (all of them when it adds it whole)."""
    found: set[str] = set()
    for op in ops:
        parts = op["path"].split("/")
        found.update(parts[2:3] if len(parts) > 2 else op.get("value") or {})
    return found


Failure = BaseException | Callable[[dict[str, Any]], BaseException | None]


@dataclass
class FakeKube:
    """One plan in an API server of its own; `log` says what happened, in order."""

    plan: dict[str, Any]
    version: int = 1
    patch_failures: list[Failure] = field(default_factory=list)  # for the next patches, in order
    before_patch: Callable[[FakeKube], None] | None = None  # another writer, just before our next patch
    events: list[tuple[str, str, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    secret_error: BaseException | None = None
    patches: list[list[dict[str, Any]]] = field(default_factory=list)  # every JSON patch that wrote
    patch_seconds: float = 0.0  # how long the API server takes to answer a patch
    patching: int = 0  # patches sent and not yet answered
    most_patching: int = 0  # the most patches ever on their way at once

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        if self.secret_error is not None:
            raise self.secret_error
        return TOKEN if name == "agent" else CONNECTION

    async def list_plans(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.plan)]

    async def get_plan(self, namespace: str, name: str) -> dict[str, Any]:
        self.log.append(f"get@{self.version}")
        found = copy.deepcopy(self.plan)
        found["metadata"]["resourceVersion"] = str(self.version)
        return found

    def write_as_someone_else(self, **status: Any) -> None:
        merge(self.plan.setdefault("status", {}), status)
        self.version += 1

    async def patch_status_ops(self, namespace: str, name: str, ops: list[dict[str, Any]],
                               resource_version: str | None = None) -> dict[str, Any]:
        """The engine's JSON patch, applied as the API server applies it (`apply_ops`), after the hook of
        another writer, the scripted failures (each sees the top-level fields the patch writes, as they
        would be after it) and the fencing by resourceVersion. Like a request, it lets the loop run first
        (for `patch_seconds`)."""
        self.patching += 1
        self.most_patching = max(self.most_patching, self.patching)
        try:
            await asyncio.sleep(self.patch_seconds)
        except asyncio.CancelledError:
            self.log.append("patch-cancelled")
            raise
        finally:
            self.patching -= 1
        if self.before_patch is not None:
            hook, self.before_patch = self.before_patch, None
            hook(self)
        if self.patch_failures:
            failure = self.patch_failures[0]
            try:
                after = apply_ops(self.status_document(), ops)["status"]
            except ValueError:
                after = {}
            touched = {key: after.get(key) for key in written_fields(ops)}
            error = failure(touched) if callable(failure) and not isinstance(failure, BaseException) else failure
            if error is not None:
                self.patch_failures.pop(0)
                self.log.append(f"patch-failed:{type(error).__name__}")
                raise error
            self.patch_failures.pop(0)
        if resource_version is not None and resource_version != str(self.version):
            self.log.append("patch-conflict")
            raise ConflictError(f"patching: 409 Conflict (at {resource_version}, now {self.version})", True, 409)
        if ops:
            try:
                self.plan["status"] = apply_ops(self.status_document(), ops)["status"]
            except ValueError as exc:  # what the API server answers to a patch of a path that is not there
                self.log.append("patch-invalid")
                raise KubeError(f"patching the status: 422 Unprocessable Entity: {exc}", False, 422) from None
            self.version += 1
            self.patches.append(ops)
        self.log.append(f"patch@{self.version}" if ops else f"fence@{self.version}")
        return {"metadata": {"resourceVersion": str(self.version)}, "status": copy.deepcopy(self.plan.get("status"))}

    def status_document(self) -> dict[str, Any]:
        """The plan's status as a JSON patch of `/status` sees it (no `status` member when it has none)."""
        return {"status": self.plan["status"]} if self.plan.get("status") is not None else {}

    async def event(self, plan: dict[str, Any], type_: str, reason: str, note: str) -> None:
        self.events.append((type_, reason, note))

    def close(self) -> None:
        return None

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.plan.get("status") or {})

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), {})


class Turns:
    """A StopFlag that lets the loop run `turns` turns, recording each wait it asked for (not sleeping it):
    `waits` the backoffs after a failed turn, `sleeps` the pauses between turns that went through."""

    def __init__(self, turns: int, until: Callable[[], bool] | None = None) -> None:
        self.left, self.until = turns, until
        self.waits: list[float | None] = []
        self.sleeps: list[float] = []

    def is_set(self) -> bool:
        return self.left <= 0 or (self.until is not None and self.until())

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (the StopFlag protocol)
        self.waits.append(timeout)
        self.left -= 1
        await asyncio.sleep(0)


class LoopHarness:
    """The real loop against a FakeKube and an in-memory estate whose observe/execute can be made to fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **spec: Any) -> None:
        raw = {**SMALL_ESTATE, "agentSecretRef": {"name": "agent", "key": "token"}, **spec}
        self.body: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "generation": 1,
                                                  "resourceVersion": "1"}, "spec": raw, "status": {}}
        self.kube = FakeKube(copy.deepcopy(self.body))
        self.estate = FakeEstate(parse_spec(raw))
        self.runtime = Runtime(self.kube, limits=FAST)  # type: ignore[arg-type]  # the fake has what is used
        self.observe_error: BaseException | None = None
        self.observe_hook: Callable[[], Awaitable[None]] | None = None
        self.execute_hook: Callable[[Effect], Awaitable[None]] | None = None
        self.effects: list[str] = []
        # an effect's look before it asks (`execute.precheck`): none, unless a test gives one
        self.precheck: Callable[[Effect], Awaitable[None] | None] = lambda effect: None
        monkeypatch.setattr(reconciler, "observe", self._observe)
        monkeypatch.setattr(reconciler, "execute", self._execute)
        monkeypatch.setattr(reconciler, "precheck", lambda estate, effect: self.precheck(effect))
        monkeypatch.setattr(reconciler.Plan, "sleep", self._sleep)

    async def _observe(self, estate: Any, spec: Any, status: Any, now: Any, competing: tuple[str, ...] = ()) -> Any:
        if self.observe_hook is not None:
            await self.observe_hook()
        if self.observe_error is not None:
            raise self.observe_error
        return self.estate.observe()

    async def _execute(self, estate: Any, spec: Any, effect: Effect, answered: Any = None,
                       checked: Awaitable[None] | None = None) -> Any:
        if checked is not None:  # as the real one: the look first, then the request
            await checked
        if self.execute_hook is not None:
            await self.execute_hook(effect)
        self.effects.append(type(effect).__name__)
        self.kube.log.append(f"effect:{type(effect).__name__}")
        return self.estate.execute(effect)

    @staticmethod
    async def _sleep(plan: Any, seconds: float, stopped: Turns) -> None:
        """The wait asked for, recorded, not slept; a write started behind the turn ends meanwhile (a sleep
        outlasts a write; its error, if any, is the next turn's), as with the real loop's sleeps."""
        stopped.sleeps.append(seconds)
        stopped.left -= 1
        pending = plan.record.pending
        if pending is not None:
            await asyncio.wait({pending})
        await asyncio.sleep(0)

    async def run(self, turns: int, until: Callable[[], bool] | None = None) -> Turns:
        """Drive the plan until `turns` backoff waits were asked for, `until()` holds, or the plan is over."""
        flag = Turns(turns, until)
        body = self.kube.plan  # kopf's live body: the spec and metadata as the API server has them
        await asyncio.wait_for(reconciler.drive(self.runtime, body, flag, logging.getLogger("test")), 30)
        return flag

    def effects_preceded_by_a_write(self) -> bool:
        """Every effect came right after a successful write (a patch or a fence) at the current version."""
        before = ""
        for entry in self.kube.log:
            if entry.startswith("effect:") and not before.startswith(("patch@", "fence@", "effect:")):
                return False
            before = entry
        return True
