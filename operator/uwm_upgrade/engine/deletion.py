"""Deleting a plan: once its loop has stopped, wait for in-flight server work, then restore the estate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..adapters.kube import KubeError
from ..core.enums import TERMINAL_PHASES
from ..core.models import SpecError, parse_spec, parse_status
from ..core.observations import redact
from .observe import observe
from .reconciler import Runtime, _dict, estate_for, utcnow
from .teardown import MustWaitError, pending_work, restore, started

MAX_WAIT_RETRIES = 120
LOOP_STOP_POLL_SECONDS = 0.5


async def on_delete(runtime: Runtime, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any],
                    retry: int) -> str:
    """Restore rotation and replication of a plan deleted mid-run; returns what was done (for the log)."""
    meta = body["metadata"]
    if meta.get("uid", meta["name"]) in runtime.loops:  # it finishes the action in flight, then stops
        raise MustWaitError("waiting for the plan's loop to stop at a safe point", LOOP_STOP_POLL_SECONDS)
    status = parse_status(_dict(body.get("status")))
    runtime.estates.pop(meta.get("uid", meta["name"]), None)
    if status.phase in TERMINAL_PHASES or not started(status):
        return f"plan {meta['name']} deleted ({status.phase}); nothing to restore"
    try:
        spec = parse_spec(_dict(body.get("spec")))
        estate = await estate_for(runtime, meta.get("uid", meta["name"]), meta["namespace"], spec)
    except (SpecError, KubeError) as exc:
        note = f"plan deleted mid-run, but the estate cannot be reached to restore it: {exc}"
        await runtime.kube.event(dict(body), "Warning", "TeardownImpossible", redact(note))
        return note
    seen = await observe(estate, spec, status, utcnow())
    busy = pending_work(spec, status, seen)
    if busy.waiting_for and retry < MAX_WAIT_RETRIES:
        raise MustWaitError("waiting for " + ", ".join(busy.waiting_for) + " before restoring the estate",
                         float(spec.health_check.period_seconds))
    result = await restore(estate.servers, spec, status, seen)
    runtime.estates.pop(meta.get("uid", meta["name"]), None)
    kind = "Warning" if result.refused else "Normal"
    await runtime.kube.event(dict(body), kind, "Teardown", redact(f"plan deleted mid-run: {result.summary()}"))
    logger.info("teardown: %s", result.summary())
    return result.summary()
