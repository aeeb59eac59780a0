"""How the database adapter runs pyodbc: its own bounded threads, one persistent connection per database,
deadlines on everything, long jobs started once and then polled, and every failure as a `DatabaseError`.

Why: pyodbc blocks. On the event loop's default pool, which the Kubernetes calls share, a slow backup or
a database that stopped answering would delay every other plan's status writes. So short calls (the
snapshot every turn) run on `CALLS`, a few threads of their own, each waited for with a deadline; a
connection is kept per database (opened lazily, dropped after an error, opened again on the next call)
with a statement timeout (`SET statement_timeout` on PostgreSQL, whose driver refuses the ODBC attribute;
`Connection.timeout` on SQL Server) and a login timeout. Backups, verifications and restores run on
`JOBS`, with a connection of their own: a call starts the job (or finds it running) and waits a bounded
while; if it is not done by then the call says so as a transient error and the next call polls it again.

Every cursor a call opens is closed before the call gives its connection up (`_Tracked`): left to the
garbage collector (a traceback keeps it alive), it would be freed later on another thread, possibly while
the next call uses the connection, and unixODBC does not survive freeing a statement of a connection in
use or being closed (the simulators' fleet died of it, SIGSEGV in `SQLFreeHandle`).

Every error that leaves this module is a `DatabaseError` that says what failed, never the connection
string's credentials or server (they are redacted with the one parser, `odbc.OdbcString.redact`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyodbc

from .odbc import ConnectionStringError, OdbcString
from .sql_dialect import Dialect

T = TypeVar("T")
TRANSIENT_SQLSTATES = ("08", "HYT", "HY008", "40001", "40P01", "57P", "57014", "53", "S1T00")
DRIVER_MISSING_SQLSTATES = ("IM002", "IM003", "01000")
CALLS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="uwm-db")
JOBS = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="uwm-db-job")
IDLE_SESSION_SECONDS = 600.0
MAX_MESSAGE = 400


class DatabaseError(RuntimeError):
    """A database operation failed. ``transient`` says whether retrying may help. Secret-free."""

    def __init__(self, database: str, message: str, transient: bool) -> None:
        super().__init__(f"database {database}: {message}")
        self.database = database
        self.transient = transient


class RefusalError(Exception):
    """Raised inside a call when the database answers but what it holds is wrong (a backup that does
    not verify, a value that is not text): the call's `DatabaseError`, not transient unless said."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class DatabaseLimits:
    """Deadlines of the database adapter, in seconds."""

    login_seconds: float = 10.0
    statement_seconds: float = 30.0      # one statement of a short call
    job_statement_seconds: float = 3600.0  # one statement of a backup, verification or restore
    job_wait_seconds: float = 20.0       # how long one call waits for a job before saying it still runs
    call_margin_seconds: float = 5.0

    @property
    def call_seconds(self) -> float:
        """The deadline of a whole short call: login, a few statements, a margin."""
        return self.login_seconds + 2 * self.statement_seconds + self.call_margin_seconds


DEFAULT_LIMITS = DatabaseLimits()


def text_value(value: Any, what: str) -> str | None:
    """A column value as text (None stays None); binary or unprintable data is refused, never echoed."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        raise RefusalError(f"{what} holds binary data, not text")
    text = str(value)
    if not text.isprintable():
        raise RefusalError(f"{what} holds characters that are not printable text")
    return text


def describe_error(exc: BaseException, odbc: OdbcString | None, what: str) -> tuple[str, bool]:
    """(message, transient) for any failure of a database call; the message is redacted and bounded."""
    if isinstance(exc, RefusalError):
        return str(exc), exc.transient
    if isinstance(exc, ConnectionStringError):
        return f"bad connection string: {exc}", False
    if isinstance(exc, TimeoutError | concurrent.futures.TimeoutError):
        return f"{what}: no answer in time", True
    if isinstance(exc, UnicodeError):
        return f"{what}: the database answered with text that cannot be decoded", False
    if isinstance(exc, pyodbc.Error):
        state = str(exc.args[0]) if exc.args else ""
        text = _shown(str(exc.args[1]) if len(exc.args) > 1 else str(exc), odbc)
        if state.startswith(DRIVER_MISSING_SQLSTATES) and "open lib" in text.lower():
            return f"{what}: the ODBC driver named in the connection string is not installed [{state}]: {text}", False
        return f"{what} [{state}]: {text}", state.startswith(TRANSIENT_SQLSTATES)
    return f"{what}: {type(exc).__name__}: {_shown(str(exc), odbc)}", False


def _shown(text: str, odbc: OdbcString | None) -> str:
    """A driver's (or any) message as it may be shown: redacted, on one line, bounded."""
    text = " ".join((odbc.redact(text) if odbc is not None else "(details withheld)").split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _connection_lost(exc: BaseException) -> bool:
    """An error that says the connection itself is gone (the server restarted, the network dropped)."""
    if not isinstance(exc, pyodbc.Error) or not exc.args:
        return False
    state, text = str(exc.args[0]), str(exc.args[-1]).lower()
    return state.startswith(("08", "57P0")) or any(mark in text for mark in _LOST)


_LOST = ("no connection", "connection has been lost", "server closed the connection", "connection is closed",
         "communication link failure")
Connect = Callable[..., Any]


class _Tracked:
    """The connection a call is given: the same connection, remembering the cursors it opens."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn
        self._cursors: list[Any] = []

    def cursor(self) -> Any:
        cur = self.raw.cursor()
        self._cursors.append(cur)
        return cur

    def execute(self, sql: str, *params: Any) -> Any:
        cur = self.raw.execute(sql, *params)
        self._cursors.append(cur)
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def close_cursors(self) -> None:
        cursors, self._cursors = self._cursors, []
        for cur in cursors:
            try:
                cur.close()
            except Exception:  # a cursor of a broken connection: nothing left to free
                continue


@dataclass
class Session:
    """One persistent connection to one database, for one short call at a time."""

    odbc: OdbcString
    dialect: Dialect
    limits: DatabaseLimits
    connect: Connect = pyodbc.connect
    opened: int = 0  # connections opened so far (a reused connection is not reopened)
    _conn: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stale: bool = False
    last_used: float = field(default_factory=time.monotonic)

    def open(self, statement_seconds: float, autocommit: bool = False, database: str | None = None) -> Any:
        """A new connection with the login and statement timeouts set (for a job, or for this session);
        ``database``: to another database of the same server (SQL Server's `master`)."""
        odbc = self.odbc if database is None else self.odbc.with_value("DATABASE", database)
        conn = self.connect(odbc.text, autocommit=autocommit, timeout=max(int(self.limits.login_seconds), 1))
        try:
            if self.dialect.postgres:
                for statement in self.dialect.session_setup(statement_seconds):
                    conn.execute(statement)
                if not autocommit:
                    conn.commit()
            else:
                conn.timeout = int(statement_seconds)
        except BaseException:
            close_quietly(conn)
            raise
        self.opened += 1
        return conn

    def run(self, fn: Callable[[Any], T]) -> T:
        """In a worker thread: ``fn`` on the persistent connection, committed; rolled back and, after a
        driver error, dropped (the next call opens a new one). A reused connection found dead is
        replaced once at once: the call is a read or a transaction that never committed."""
        if not self._lock.acquire(timeout=self.limits.call_seconds / 2):  # said before the call's deadline
            raise RefusalError("the previous call to this database has not returned yet", transient=True)
        try:
            self.last_used = time.monotonic()
            if self._stale:
                self._stale = False
                self.drop()
            for attempt in (1, 2):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = self.open(self.limits.statement_seconds)
                tracked = _Tracked(self._conn)
                try:
                    result = fn(tracked)
                    tracked.close_cursors()
                    self._conn.commit()
                    return result
                except BaseException as exc:
                    tracked.close_cursors()
                    self._after_error(exc)
                    if attempt == 1 and reused and _connection_lost(exc):
                        continue
                    raise
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def _after_error(self, exc: BaseException) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:  # a broken connection cannot roll back: it is dropped below
            self.drop()
            return
        if isinstance(exc, pyodbc.Error) or not isinstance(exc, Exception):
            self.drop()

    def drop_later(self) -> None:
        """The persistent connection will not survive what is about to happen (a restore): the next
        call opens a new one."""
        self._stale = True

    def drop(self) -> None:
        """Forget the persistent connection (closed quietly); the next call opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            close_quietly(conn)


def close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # closing a connection that broke fails; there is nothing left to release
        return


def session_key(odbc: OdbcString) -> str:
    """Sessions and jobs are keyed by a digest of the whole string (a rotated password: a new session)."""
    return hashlib.sha256(odbc.text.encode()).hexdigest()


_SESSIONS: dict[tuple[str, DatabaseLimits, Connect], Session] = {}
_SESSIONS_LOCK = threading.Lock()


def session_for(odbc: OdbcString, dialect: Dialect, limits: DatabaseLimits, connect: Connect = pyodbc.connect
                ) -> Session:
    """The process's session for this connection string; sessions idle for long are closed."""
    key, now = (session_key(odbc), limits, connect), time.monotonic()
    with _SESSIONS_LOCK:
        for old_key, old in list(_SESSIONS.items()):
            if old_key != key and now - old.last_used > IDLE_SESSION_SECONDS and old._lock.acquire(blocking=False):
                try:
                    old.drop()
                    del _SESSIONS[old_key]
                finally:
                    old._lock.release()
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = Session(odbc, dialect, limits, connect)
        return session


def close_all() -> None:
    """Close every persistent connection (at shutdown, and between tests)."""
    with _SESSIONS_LOCK:
        for session in _SESSIONS.values():
            session.drop()
        _SESSIONS.clear()


async def call(session: Session, fn: Callable[[Any], T]) -> T:
    """``fn`` on the session's connection in a `CALLS` thread, within the call deadline. Raises the raw
    failure (the caller maps it with `describe_error`); a deadline passed is a `TimeoutError`."""
    future = asyncio.get_running_loop().run_in_executor(CALLS, session.run, fn)
    return await asyncio.wait_for(future, session.limits.call_seconds)


@dataclass
class _Job:
    future: concurrent.futures.Future[Any]
    started_at: datetime
    finished_at: float | None = None  # monotonic, once done

    def finished(self, _: concurrent.futures.Future[Any]) -> None:
        self.finished_at = time.monotonic()


_JOBS: dict[tuple[str, str, str], _Job] = {}
# Jobs whose result says how things were when it was found, not something done: one that finished more
# than `FRESH_SECONDS` ago and that no caller collected (its caller gave up: a status write failed before
# a schema upgrade's gate) is run again rather than handed to a later caller. A long verification that a
# caller polls is collected within a poll or two.
FRESH_KINDS = frozenset({"verification"})
FRESH_SECONDS = 30.0
_JOBS_LOCK = threading.Lock()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # mark it retrieved: whoever polls next gets it from the job itself


async def job(session: Session, kind: str, ident: str, fn: Callable[[Session], T], wait: float | None = None) -> T:
    """Start ``fn`` (a backup, verification or restore of ``ident``) on `JOBS` unless it already runs,
    and wait up to ``wait`` seconds for it. Done: its result (or its failure, raw) and it is forgotten;
    still running: a transient `RefusalError` saying so, and the next call polls the same job."""
    key = (session_key(session.odbc), kind, ident)
    with _JOBS_LOCK:
        running = _JOBS.get(key)
        if running is not None and kind in FRESH_KINDS and running.finished_at is not None \
                and time.monotonic() - running.finished_at > FRESH_SECONDS:
            running = None  # an old look nobody collected: looked at again, now
        if running is None:
            running = _JOBS[key] = _Job(JOBS.submit(fn, session), datetime.now(UTC))
            running.future.add_done_callback(running.finished)
    watched = asyncio.wrap_future(running.future)
    watched.add_done_callback(_retrieved)
    try:
        result: T = await asyncio.wait_for(asyncio.shield(watched), session.limits.job_wait_seconds
                                           if wait is None else wait)
    except TimeoutError:
        started = running.started_at.strftime("%H:%M:%SZ")
        raise RefusalError(f"the {kind} of {ident} is still running (started {started}); looking again", True) from None
    finally:
        if running.future.done():
            with _JOBS_LOCK:
                if _JOBS.get(key) is running:
                    del _JOBS[key]
    return result
