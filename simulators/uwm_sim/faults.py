"""Injected faults: what they are, how requests to inject them are validated, how they are consumed.

Why a module: faults are the simulator's test hooks (an installer that fails or hangs, a status page
that flaps or shows a failing test, a schema migration that dies midway, a process crash, slow answers,
transient agent errors). Each has a count of occurrences; the list is kept in memory by the server that
owns it and written through to the state database, so a restarted simulator keeps its pending faults.
The transient kinds hit a random share (`percent`) of the calls they could hit; with a `seed` the draws
are reproducible, and the number of draws made is kept with the fault so a restart continues the same
sequence.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .estate import STATUS_TESTS


class FaultKind(StrEnum):
    INSTALL_FAIL = "install-fail"
    INSTALL_HANG = "install-hang"
    HEALTH_FLAP = "health-flap"
    MIGRATION_FAIL = "migration-fail"
    CRASH = "crash"
    SLOW = "slow"
    TEST_FAIL = "test-fail"
    HTTP_500 = "http-500"
    DROP_CONNECTION = "drop-connection"


KINDS = tuple(k.value for k in FaultKind)
# Faults that hit a random share of the agent API calls (every /agent/v1/* path but faults and journal).
TRANSIENT = (FaultKind.HTTP_500, FaultKind.DROP_CONNECTION)
DEFAULT_TEST = "Database connection"
_COMMON = {"kind", "count", "delayMs"}
_EXTRA = {FaultKind.HTTP_500: {"percent", "seed"}, FaultKind.DROP_CONNECTION: {"percent", "seed"},
          FaultKind.TEST_FAIL: {"test"}}


@dataclass
class Fault:
    kind: str
    count: int = 1
    delay_ms: int = 0
    percent: int = 100
    seed: int | None = None
    test: str | None = None
    draws: int = 0  # random draws made so far (transient kinds), so a restart continues the sequence
    _rng: random.Random | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "count": self.count, "delayMs": self.delay_ms}
        if self.kind in TRANSIENT:
            out.update(percent=self.percent, seed=self.seed, draws=self.draws)
        if self.kind == FaultKind.TEST_FAIL:
            out["test"] = self.test
        return out

    def draw(self) -> bool:
        """One call it could hit: True when this one is hit (a share of `percent` of the calls)."""
        if self._rng is None:
            self._rng = random.Random(self.seed)  # a test hook, not cryptography
            for _ in range(self.draws):
                self._rng.random()
        self.draws += 1
        return self._rng.random() * 100 < self.percent


def _int(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name}: an integer from {low} to {high}")
    return value


def parse_request(body: Any) -> Fault:
    """Validate `POST /agent/v1/faults`; ValueError names the bad field."""
    if not isinstance(body, dict):
        raise ValueError("body: a JSON object is required")
    kind = body.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)} is required")
    count = _int(body, "count", 1, 1, 1_000_000)
    delay = _int(body, "delayMs", 0, 0, 3_600_000)
    unknown = set(body) - _COMMON - _EXTRA.get(FaultKind(kind), set())
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown field for kind {kind}")
    percent = _int(body, "percent", 100, 1, 100)
    seed = _int(body, "seed", None, 0, 2**63 - 1)
    test = body.get("test", DEFAULT_TEST) if kind == FaultKind.TEST_FAIL else None
    if kind == FaultKind.TEST_FAIL and test not in STATUS_TESTS:
        raise ValueError(f"test: one of the status page's tests: {', '.join(STATUS_TESTS)}")
    assert count is not None and delay is not None and percent is not None
    return Fault(kind, count, delay, percent, seed, test)


def _loads_one(f: dict[str, Any]) -> Fault:
    seed = f.get("seed")
    return Fault(str(f["kind"]), int(f["count"]), int(f.get("delayMs", 0)), int(f.get("percent", 100)),
                 None if seed is None else int(seed), f.get("test"), int(f.get("draws", 0)))


class FaultSet:
    """The pending faults of one server."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self.items: list[Fault] = list(faults or [])

    @classmethod
    def loads(cls, text: str | None) -> FaultSet:
        try:
            return cls([_loads_one(f) for f in json.loads(text or "[]")])
        except (ValueError, KeyError, TypeError):
            return cls()

    def dumps(self) -> str:
        return json.dumps([f.to_json() for f in self.items])

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.items]

    def add(self, fault: Fault) -> None:
        self.items = [f for f in self.items if f.kind != fault.kind] + [fault]

    def peek(self, kind: str) -> Fault | None:
        return next((f for f in self.items if f.kind == kind and f.count > 0), None)

    def take(self, kind: str) -> Fault | None:
        """Consume one occurrence of `kind`; the fault is gone once its count is used up."""
        fault = self.peek(kind)
        if fault is None:
            return None
        fault.count -= 1
        if fault.count <= 0:
            self.items.remove(fault)
        return Fault(fault.kind, 1, fault.delay_ms, fault.percent, fault.seed, fault.test)

    def give_back(self, fault: Fault) -> None:
        """Undo a `take` whose effect was rolled back: its occurrences are pending again."""
        kept = next((f for f in self.items if f.kind == fault.kind), None)
        if kept is not None:
            kept.count += fault.count
        else:
            self.items.append(Fault(fault.kind, fault.count, fault.delay_ms, fault.percent, fault.seed, fault.test))

    def take_transient(self) -> tuple[Fault | None, bool]:
        """For one agent call: the transient fault that hits it (if any), and whether any draw was made
        (the draws count is then to be saved, hit or not)."""
        drew = False
        for kind in TRANSIENT:
            fault = self.peek(kind)
            if fault is None:
                continue
            drew = True
            if fault.draw():
                return self.take(kind), True
        return None, drew

    def clear(self) -> None:
        self.items = []
