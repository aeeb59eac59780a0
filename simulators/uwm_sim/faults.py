"""Injected faults: what they are, how requests to inject them are validated, how they are consumed.

Why a module: faults are the simulator's test hooks (an installer that fails or hangs, a status page
that flaps, a schema migration that dies midway, a process crash, slow answers). Each has a count of
occurrences; the list is kept in memory by the server that owns it and written through to the state
database, so a restarted simulator keeps its pending faults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

KINDS = ("install-fail", "install-hang", "health-flap", "migration-fail", "crash", "slow")


@dataclass
class Fault:
    kind: str
    count: int = 1
    delay_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "delayMs": self.delay_ms}


def parse_request(body: Any) -> Fault:
    """Validate `POST /agent/v1/faults`; ValueError names the bad field."""
    if not isinstance(body, dict):
        raise ValueError("body: a JSON object is required")
    kind = body.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)} is required")
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1_000_000:
        raise ValueError("count: an integer from 1 to 1000000")
    delay = body.get("delayMs", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 3_600_000:
        raise ValueError("delayMs: an integer from 0 to 3600000")
    unknown = set(body) - {"kind", "count", "delayMs"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown field")
    return Fault(kind, count, delay)


class FaultSet:
    """The pending faults of one server."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self.items: list[Fault] = list(faults or [])

    @classmethod
    def loads(cls, text: str | None) -> FaultSet:
        try:
            data = json.loads(text or "[]")
            return cls([Fault(str(f["kind"]), int(f["count"]), int(f.get("delayMs", 0))) for f in data])
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
        return Fault(fault.kind, 1, fault.delay_ms)

    def clear(self) -> None:
        self.items = []
