"""The status write as a JSON patch (RFC 6902) that sends only what changed, and what can wait to be sent.

Why: a JSON merge patch replaces a list whole, so a plan of 200 servers resent every step and every server
(some 140 KB) to record one step done. `status_ops` replaces only the list items that changed and appends
the new ones; a status the API server has none of yet is added whole (`absent`). The engine fences it
with the resourceVersion it last saw (adapters/kube.py).

`only_wording` says whether a change is only words (the status's and the steps' messages, the conditions'
messages and reasons): the engine may hold such a change back for a while, to send it with the next real
one, since a message that says "waiting for ..." a little later costs a write and changes no decision.
"""

from __future__ import annotations

import copy
from typing import Any

from .models import UpgradePlanStatus, status_to_wire

WORDING = ("message",)  # per item of steps[] and conditions[], and the status's own
CONDITION_WORDING = ("message", "reason")


def status_ops(old: UpgradePlanStatus, new: UpgradePlanStatus, *, absent: bool = False) -> list[dict[str, Any]]:
    """The JSON patch of `/status` from `old` (what the API server has) to `new`; [] when nothing changed.
    With `absent` (the plan has no status yet) the status is added whole."""
    return wire_ops(None if absent else status_to_wire(old), status_to_wire(new))


def wire_ops(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch from `before` (the status as the API server holds it, in its wire form; None: the
    plan has no status) to `after`. A top-level field is set with `add`, which replaces a member that
    exists and adds one that does not (a new plan's status holds only what the CRD defaults, such as
    `observedGeneration: 0`); a list the server holds is patched item by item."""
    if before is None:
        return [{"op": "add", "path": "/status", "value": after}]
    ops: list[dict[str, Any]] = [{"op": "remove", "path": f"/status/{_escape(k)}"} for k in before if k not in after]
    for key, value in after.items():
        path = f"/status/{_escape(key)}"
        was = before.get(key)
        if key in before and was == value:
            continue
        if isinstance(was, list) and isinstance(value, list) and len(was) <= len(value):
            ops += [{"op": "replace", "path": f"{path}/{i}", "value": item}
                    for i, (item, old_item) in enumerate(zip(value, was, strict=False)) if item != old_item]
            ops += [{"op": "add", "path": f"{path}/-", "value": item} for item in value[len(was):]]
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


def only_wording(old: UpgradePlanStatus, new: UpgradePlanStatus) -> bool:
    """True when `old` and `new` differ in words only (messages, and the conditions' reasons)."""
    return _unworded(status_to_wire(old)) == _unworded(status_to_wire(new))


def apply_ops(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """`ops` applied to `{"status": ...}`-shaped `document` as the API server applies them (the subset
    `wire_ops` writes: add, replace, remove; a list's `-`), as strictly: a path whose parent does not
    exist, a `replace` or `remove` of what does not exist, is a `ValueError` (the API server's 422). For
    the tests and the fakes."""
    result = copy.deepcopy(document)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        target: Any = result
        for part in parts[:-1]:
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                raise ValueError(f"{op['op']} {op['path']}: {part} does not exist")
        last, kind = parts[-1], op["op"]
        if isinstance(target, list):
            if last == "-" and kind == "add":
                target.append(copy.deepcopy(op["value"]))
            elif last.isdigit() and int(last) < len(target) and kind in ("replace", "remove"):
                if kind == "remove":
                    del target[int(last)]
                else:
                    target[int(last)] = copy.deepcopy(op["value"])
            else:
                raise ValueError(f"{kind} {op['path']}: no such item")
        elif kind == "add":
            target[last] = copy.deepcopy(op["value"])
        elif last not in target:
            raise ValueError(f"{kind} {op['path']}: {last} does not exist")
        elif kind == "remove":
            del target[last]
        else:
            target[last] = copy.deepcopy(op["value"])
    return result


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _unworded(wire: dict[str, Any]) -> dict[str, Any]:
    plain = {k: v for k, v in wire.items() if k not in WORDING}
    if "steps" in plain:
        plain["steps"] = [{k: v for k, v in s.items() if k not in WORDING} for s in plain["steps"]]
    if "conditions" in plain:
        plain["conditions"] = [{k: v for k, v in c.items() if k not in CONDITION_WORDING} for c in plain["conditions"]]
    return plain
