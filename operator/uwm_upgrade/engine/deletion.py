"""Deleting a plan: once its loop has stopped, wait for in-flight server work, then restore the estate (a
plan deleted mid-run, or one that halted: `core.teardown.needs_teardown`).

Only the leader of the plan's namespace tears down (a standby's handler is told to try again later). The
wait for an install or a schema migration in flight lasts as long as such a step may run (the longer of
the install and schema limits), timed on this process's monotonic clock from when it first saw the
deletion: a restarted operator starts that time afresh, so it can only wait longer. Past it, rotation and
replication are put back as far as the servers accept, and the Event says what they refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..adapters.kube import KubeError
from ..core.models import SpecError, parse_spec, parse_status
from ..core.observations import redact
from ..core.teardown import needs_teardown, pending_work
from . import metrics
from .observe import observe
from .runtime import Runtime, estate_for, utcnow
from .status_record import PHASES, plain_dict
from .teardown import MustWaitError, restore

LOOP_STOP_POLL_SECONDS = 0.5
STANDBY_POLL_SECONDS = 2.0


def teardown_limit(runtime: Runtime) -> float:
    """How long a teardown waits for server work in flight: as long as an install or a migration may run."""
    return max(runtime.limits.install_seconds, runtime.limits.schema_seconds)


async def on_delete(runtime: Runtime, body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any],
                    retry: int) -> str:
    """Restore rotation and replication of a plan deleted mid-run; returns what was done (for the log).
    ``retry`` is kopf's count of earlier tries (kept for the log; the wait is timed, not counted)."""
    meta = body["metadata"]
    uid = meta.get("uid", meta["name"])
    if not runtime.leadership.leading(meta["namespace"]):
        raise MustWaitError(f"standing by: another operator replica leads namespace {meta['namespace']}",
                            STANDBY_POLL_SECONDS)
    if uid in runtime.loops:  # it finishes the action in flight, then stops
        raise MustWaitError("waiting for the plan's loop to stop at a safe point", LOOP_STOP_POLL_SECONDS)
    metrics.forget_plan(meta["namespace"], meta["name"], PHASES)  # its loop is over: nothing sets it again
    status = parse_status(plain_dict(body.get("status")))
    runtime.estates.pop(uid, None)
    runtime.timers.pop(uid, None)
    if not needs_teardown(status):
        return f"plan {meta['name']} deleted ({status.phase}); nothing to restore"
    try:
        spec = parse_spec(plain_dict(body.get("spec")))
        estate = await estate_for(runtime, uid, meta["namespace"], spec)
    except (SpecError, KubeError) as exc:
        note = f"plan deleted mid-run, but the estate cannot be reached to restore it: {exc}"
        await runtime.kube.event(dict(body), "Warning", "TeardownImpossible", redact(note))
        return note
    seen = await observe(estate, spec, status, utcnow())
    busy = pending_work(spec, status, seen)
    waited = time.monotonic() - runtime.teardowns.setdefault(uid, time.monotonic())
    if busy.waiting_for and waited < teardown_limit(runtime):
        raise MustWaitError("waiting for " + ", ".join(busy.waiting_for) + " before restoring the estate",
                            float(spec.health_check.period_seconds))
    if busy.waiting_for:
        logger.warning("teardown: waited %.0f s (try %d) for %s; restoring what the servers accept", waited, retry,
                       ", ".join(busy.waiting_for))
    result = await restore(estate.servers, spec, status, seen)
    runtime.estates.pop(uid, None)
    runtime.teardowns.pop(uid, None)
    runtime.timers.pop(uid, None)
    kind = "Warning" if result.refused else "Normal"
    await runtime.kube.event(dict(body), kind, "Teardown", redact(f"plan deleted mid-run: {result.summary()}"))
    logger.info("teardown: %s", result.summary())
    return result.summary()
