"""The changes of one estate's servers in this process, run together: one state transaction, one estate lock.

Why: every change is a check-then-write under the estate-wide lock (`ServerRuntime.locked_tx`), so the
changes of a wide fleet queue behind each other: 200 replication switches, or a wave of 50 installs, asked
at once, took 10 ms each, one after another, where real servers would each answer on their own. Here
the changes that arrive while a transaction runs wait for it and then run in the next one, each in its
own savepoint, one after another, in arrival order: each sees the writes of those before it, exactly as if
it had had the lock alone right after them; one that raises is rolled back alone (its journal entries with
it) and gets its exception; one commit ends them all, and then each gets its answer. The database states
are read once per transaction (only a change under the estate lock takes a schema lock, and no change
run here does), so a change run here must not touch a UWM database itself: a schema upgrade's start
stays on `locked_tx`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pyodbc

from . import store
from .db import execute_drained, rolled_back_to, savepoint_mark

if TYPE_CHECKING:
    from .estate import DatabaseState
    from .service import ServerRuntime

T = TypeVar("T")

log = logging.getLogger("uwm_sim")
# changes in one transaction at most (the estate lock is held while they run); PostgreSQL caches 64
# subtransactions (savepoints) per transaction in every other session's snapshots, beyond which they slow
MAX_TOGETHER = 64
SAVEPOINT = "uwm_sim_change"


@dataclass
class _Change(Generic[T]):
    rt: ServerRuntime
    work: Callable[[Any, DatabaseState], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


class GroupCommit:
    """`run(rt, work)`: `rt.locked_tx(work)`, in one transaction with the changes asked meanwhile."""

    def __init__(self) -> None:
        self._queue: list[_Change[Any]] = []
        self._lock = threading.Lock()
        self._running = False
        self.transactions = 0  # committed or not: how many the changes took (tests read it)

    @property
    def waiting(self) -> int:
        """Changes asked that no transaction has taken yet."""
        with self._lock:
            return len(self._queue)

    async def run(self, rt: ServerRuntime, work: Callable[[Any, DatabaseState], T]) -> T:
        loop = asyncio.get_running_loop()
        change: _Change[T] = _Change(rt, work, loop, loop.create_future())
        with self._lock:
            self._queue.append(change)
            start, self._running = not self._running, True
        if start:
            try:
                loop.run_in_executor(None, self._drain)
            except BaseException as exc:  # no thread to drain (the loop shutting down): none waits forever
                with self._lock:
                    stranded, self._queue, self._running = self._queue, [], False
                for queued in stranded:
                    _answer(queued, None, exc)
                raise
        # shielded: the change runs whether or not its asker still waits (as a thread of `to_thread` would)
        return await asyncio.shield(change.future)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue[:MAX_TOGETHER], self._queue[MAX_TOGETHER:]
                if not batch:
                    self._running = False
                    return
            try:
                self._run(batch)
            except Exception as exc:  # a bug here: its changes fail with it (never left waiting), the rest go on
                log.exception("changes together: %d change(s) failed", len(batch))
                for change in batch:
                    _answer(change, None, exc)

    def _run(self, batch: list[_Change[Any]]) -> None:
        self.transactions += 1
        if len(batch) == 1:  # alone: exactly `locked_tx`
            change = batch[0]
            try:
                _answer(change, change.rt.locked_tx(change.work), None)
            except BaseException as exc:  # handed to the change's asker
                _answer(change, None, exc)
            return
        state = batch[0].rt.estate.state
        d = state.dialect
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with state.transaction() as conn:
                cur = conn.cursor()
                store.lock_estate(cur, d)
                dbs: dict[str, DatabaseState] = {}
                for change in batch:
                    name = change.rt.cfg.database
                    db = dbs.get(name)
                    if db is None:
                        db = dbs[name] = change.rt.db_state_sync()
                    execute_drained(cur, d.savepoint(SAVEPOINT))
                    mark = savepoint_mark(conn.raw)
                    try:
                        outcomes.append((change.work(cur, db), None))
                    except pyodbc.Error:  # the database failed: the whole transaction with it
                        raise
                    except Exception as exc:  # this change alone fails
                        execute_drained(cur, d.rollback_to_savepoint(SAVEPOINT))
                        rolled_back_to(conn.raw, mark)
                        outcomes.append((None, exc))
                        continue
                    release = d.release_savepoint(SAVEPOINT)
                    if release:
                        execute_drained(cur, release)
        except BaseException as exc:  # nothing was committed: every change fails with it
            for change in batch:
                _answer(change, None, exc)
            return
        for change, (result, error) in zip(batch, outcomes, strict=True):
            _answer(change, result, error)


def _answer(change: _Change[Any], result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if change.future.done():
            return
        if error is not None:
            change.future.set_exception(error)
        else:
            change.future.set_result(result)
    with suppress(RuntimeError):  # the loop is closed: nobody waits any more
        change.loop.call_soon_threadsafe(settle)
