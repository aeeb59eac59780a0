"""A plan's Events, posted beside its loop rather than in it.

Why: an Event is a record for people (`kubectl describe`, `kubectl get events`), best effort by nature
(the API server may drop or expire it). Posting each before the loop may go on made every step wait for
one request per Event. The loop hands them here instead; one task per plan posts them in order, with the
adapter's deadline each (on threads of their own: `Kube.event`), and a queue of bounded length: past it
the oldest waiting is dropped, and counted, rather than holding the loop or growing without end. When the
loop stops, what is waiting gets a few seconds to be posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from . import metrics

MAX_WAITING = 256
FLUSH_SECONDS = 5.0
log = logging.getLogger("uwm_upgrade.announce")


class EventSink(Protocol):
    async def event(self, plan: dict[str, Any], type_: str, reason: str, note: str) -> None: ...


class Announcer:
    """The Events of one plan, posted in order by a task of their own."""

    def __init__(self, kube: EventSink, body: Mapping[str, Any]) -> None:
        self._kube = kube
        self._body = body
        self._waiting: deque[tuple[str, str, str]] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # nothing waits, nothing is being posted
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def post(self, type_: str, reason: str, note: str) -> None:
        """Queue one Event (never waits)."""
        if len(self._waiting) >= MAX_WAITING:
            self._waiting.popleft()
            metrics.EVENTS_DROPPED.inc()
        self._waiting.append((type_, reason, note))
        self._idle.clear()
        self._ready.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="events")

    async def _run(self) -> None:
        while True:
            self._ready.clear()  # what is posted from here on is seen by the loop below, or wakes it again
            while self._waiting:
                type_, reason, note = self._waiting.popleft()
                try:
                    await self._kube.event(dict(self._body), type_, reason, note)
                except Exception as exc:  # best effort: an Event lost is not an upgrade lost
                    log.debug("an Event was not posted: %s", type(exc).__name__)
            if not self._ready.is_set():
                self._idle.set()
            await self._ready.wait()

    async def close(self, seconds: float = FLUSH_SECONDS) -> None:
        """Post what is waiting, for at most `seconds`, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
