"""pyodbc access: a small connection pool per database and `asyncio.to_thread` around every call.

Why: pyodbc blocks, so nothing here ever runs on the event loop; each unit of work is a plain
function given a connection, run in a worker thread, committed on success and rolled back on any
error. Connection strings are secrets: errors name the database by its fleet name and are redacted.

Every cursor a unit of work opens is closed before its connection goes back to the pool or is closed:
a cursor left to the garbage collector is freed whenever its last reference goes (a local of a frame
that returned later than the `with`, a traceback), by then possibly while another thread uses or
closes the same connection, and unixODBC then frees a statement of a connection being torn down. That
crashed the whole fleet (SIGSEGV in `SQLFreeHandle`) when PostgreSQL restarted under load.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import pyodbc

from .dialect import Dialect

T = TypeVar("T")

_SECRET_KV = re.compile(r"\b(PWD|PASSWORD|UID|USER ID|ACCESSTOKEN)\s*=\s*(\{[^}]*\}|[^;]*)", re.IGNORECASE)
LOGIN_TIMEOUT = 10
QUERY_TIMEOUT = 30


class DatabaseError(RuntimeError):
    """A database call failed; the message names the database (never its connection string)."""


def redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET_KV.sub(lambda m: f"{m.group(1)}=***", text)


class Tracked:
    """The connection a unit of work is given: the same connection, remembering the cursors it opens."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn
        self._cursors: list[Any] = []

    def cursor(self) -> Any:
        cur = self.raw.cursor()
        self._cursors.append(cur)
        return cur

    def execute(self, sql: str, *params: Any) -> Any:
        cur = self.cursor()
        return cur.execute(sql, *params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def close_cursors(self) -> None:
        cursors, self._cursors = self._cursors, []
        for cur in cursors:
            with suppress(pyodbc.Error):
                cur.close()


class Pool:
    """Idle connections kept for reuse; a new one is opened whenever none is idle (never blocks)."""

    def __init__(self, connection_string: str, max_idle: int = 4) -> None:
        self._conn_str = connection_string
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle
        self._closed = False

    def _connect(self) -> Any:
        conn = pyodbc.connect(self._conn_str, autocommit=False, timeout=LOGIN_TIMEOUT)
        with suppress(pyodbc.Error):  # psqlODBC has no connection-level query timeout
            conn.timeout = QUERY_TIMEOUT
        return conn

    @contextmanager
    def connection(self) -> Iterator[Tracked]:
        """A connection for one unit of work; its cursors are closed before anything else happens to it."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        tracked = Tracked(conn)
        try:
            yield tracked
        except BaseException:
            tracked.close_cursors()
            _close(conn)
            raise
        tracked.close_cursors()
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            _close(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


def _close(conn: Any) -> None:
    with suppress(pyodbc.Error):
        conn.close()


class _PerTransaction:
    """Items remembered for the open transaction of each connection (by connection), until it ends."""

    def __init__(self) -> None:
        self._items: dict[int, list[Any]] = {}
        self._lock = threading.Lock()

    def add(self, cur: Any, items: list[Any]) -> None:
        conn = getattr(cur, "connection", None)
        if conn is None:
            return
        with self._lock:
            self._items.setdefault(id(conn), []).extend(items)

    def count(self, conn: Any) -> int:
        with self._lock:
            return len(self._items.get(id(conn), ()))

    def take(self, conn: Any, since: int = 0) -> list[Any]:
        """Those added after the first `since` (all by default), forgotten."""
        with self._lock:
            items = self._items.get(id(conn), [])
            taken, items[since:] = items[since:], []
            if not items:
                self._items.pop(id(conn), None)
        return taken


# What each open transaction will have done once it commits: the journal entries it appended, handed to
# its database's `on_commit` after the commit (`watch.Changes`), dropped on rollback.
_ANNOUNCE = _PerTransaction()
# What to undo outside the database if it (or a savepoint of it) is rolled back: a fault taken from a
# server's memory goes back, since the write that consumed it never happened.
_UNDO = _PerTransaction()


def after_commit(cur: Any, items: list[Any]) -> None:
    """Remember `items` for the transaction of `cur`, to be announced once it commits."""
    _ANNOUNCE.add(cur, items)


def on_rollback(cur: Any, undo: Callable[[], None]) -> None:
    """Run `undo` if the transaction of `cur` (or the savepoint it is in) is rolled back."""
    _UNDO.add(cur, [undo])


def savepoint_mark(conn: Any) -> tuple[int, int]:
    """Where the open transaction of `conn` stands, for `rolled_back_to` (taken with a savepoint)."""
    return _ANNOUNCE.count(conn), _UNDO.count(conn)


def rolled_back_to(conn: Any, mark: tuple[int, int] = (0, 0)) -> None:
    """Rolled back to `mark` (the default: the whole transaction): what was to be announced since is
    forgotten, what was to be undone since is undone, last first."""
    _ANNOUNCE.take(conn, mark[0])
    for undo in reversed(_UNDO.take(conn, mark[1])):
        with suppress(Exception):
            undo()


class Database:
    """One ODBC database, named as in the fleet file; `call` runs work in a transaction."""

    def __init__(self, name: str, connection_string: str, dialect: Dialect, max_idle: int = 4) -> None:
        self.name = name
        self.dialect = dialect
        self._secret = connection_string
        self.pool = Pool(connection_string, max_idle)
        self.on_commit: Callable[[list[Any]], None] | None = None  # told what each committed transaction did

    def __repr__(self) -> str:
        return f"Database({self.name!r}, dialect={self.dialect.name})"

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A connection inside a transaction: commit on success, rollback on error (blocking)."""
        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                    conn.commit()
                except BaseException:
                    with suppress(pyodbc.Error):
                        conn.rollback()
                    rolled_back_to(conn.raw)
                    raise
                _UNDO.take(conn.raw)  # committed: nothing to undo
                done = _ANNOUNCE.take(conn.raw)
                if done and self.on_commit is not None:
                    self.on_commit(done)
        except pyodbc.Error as exc:
            raise DatabaseError(f"database {self.name}: {redact(_describe(exc), self._secret)}") from None

    def call_sync(self, fn: Callable[[Any], T]) -> T:
        with self.transaction() as conn:
            return fn(conn)

    async def call(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self.call_sync, fn)

    def close(self) -> None:
        self.pool.close()


def _describe(exc: pyodbc.Error) -> str:
    args = [str(a) for a in exc.args]
    return " ".join(args[1:] or args) or type(exc).__name__


def execute_drained(cur: Any, sql: str) -> None:
    """Run a statement and drain any result set (SQL Server's lock SELECTs; FreeTDS has no MARS)."""
    cur.execute(sql)
    if cur.description is not None:
        cur.fetchall()


def rows(cur: Any) -> list[dict[str, Any]]:
    cols = [c[0].lower() for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
