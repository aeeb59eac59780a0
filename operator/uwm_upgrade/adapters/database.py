"""The operator's view of one UWM database: the snapshot it polls, and backups it takes, verifies and
restores (docs/contracts.md section 3).

Why a facade: the engine asks questions (what state is the database in, is this backup still good) and
gives orders (back up, restore) without knowing the dialect, the threads or the deadlines. Backups are
idempotent by id: the operator derives the id from the plan and the hop, so a crash after a backup but
before its id reached the status finds the same backup again instead of taking a second one; a backup
is recorded unverified and only a verification marks it verified; an unusable one is retaken.

Constructing a `Database` never fails and never connects: a connection string that cannot be used
(unknown driver, unbalanced braces) is reported by the first call, as a `DatabaseError` like every other
failure, so the plan says why in its status. Nothing here shows the connection string (`repr`,
errors): see `odbc.py` and `db_session.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import pyodbc

from . import db_backup_mssql, db_backup_pg
from .db_records import BackupInfo, Snapshot, read_snapshot
from .db_session import (
    DEFAULT_LIMITS,
    Connect,
    DatabaseError,
    DatabaseLimits,
    RefusalError,
    Session,
    call,
    close_all,
    close_quietly,
    describe_error,
    job,
    session_for,
    text_value,
)
from .odbc import ConnectionStringError, OdbcString, Target, redact
from .sql_dialect import BACKUP_ID, Dialect, DialectName, dialect_of

__all__ = ["BackupInfo", "Database", "DatabaseError", "DatabaseLimits", "Snapshot", "close_all", "redact"]
T = TypeVar("T")


class Database:
    """One UWM database named ``name`` (the spec's `databases[].name`), reached by ``connection_string``."""

    def __init__(self, name: str, connection_string: str, backup_directory: str = "/var/opt/mssql/backup",
                 limits: DatabaseLimits = DEFAULT_LIMITS, connect: Connect = pyodbc.connect) -> None:
        self.name = name
        self._backup_dir = backup_directory
        self._limits = limits
        self._connect = connect
        self._odbc: OdbcString | None = None
        self.dialect: Dialect | None = None
        self._problem: str | None = None
        try:
            self._odbc = OdbcString.parse(connection_string)
            self.dialect = Dialect(dialect_of(self._odbc))
        except ConnectionStringError as exc:
            self._problem = f"bad connection string: {exc}"

    def __repr__(self) -> str:  # never show the connection string
        return f"Database({self.name!r}, {self.dialect.name if self.dialect else 'unusable'})"

    def target(self) -> Target:
        """Where the connection string leads (SERVER, PORT, DATABASE; never the credentials)."""
        if self._odbc is None:
            raise DatabaseError(self.name, self._problem or "bad connection string", transient=False)
        return self._odbc.target()

    # ------------------------------------------------------------ plumbing
    def _session(self) -> tuple[Session, Dialect]:
        if self._odbc is None or self.dialect is None:
            raise DatabaseError(self.name, self._problem or "bad connection string", transient=False)
        return session_for(self._odbc, self.dialect, self._limits, self._connect), self.dialect

    def _error(self, exc: BaseException, what: str) -> DatabaseError:
        if isinstance(exc, DatabaseError):
            return exc
        message, transient = describe_error(exc, self._odbc, what)
        return DatabaseError(self.name, message, transient)

    async def _call(self, what: str, fn: Callable[[Any, Dialect], T]) -> T:
        """A short call on the persistent connection; every failure a `DatabaseError`."""
        session, dialect = self._session()
        try:
            return await call(session, lambda conn: fn(conn, dialect))
        except Exception as exc:
            raise self._error(exc, what) from None

    async def _job(self, kind: str, backup_id: str, fn: Callable[[Session, Dialect], T]) -> T:
        """A long job (backup, verification, restore) started once and polled; see `db_session.job`."""
        self._check_id(backup_id)
        session, dialect = self._session()
        try:
            return await job(session, kind, backup_id, lambda s: fn(s, dialect))
        except Exception as exc:
            raise self._error(exc, f"{kind} {backup_id}") from None

    def _path(self, backup_id: str) -> str:
        return db_backup_mssql.backup_path(self._backup_dir, self.name, backup_id)

    @staticmethod
    def _on_connection(session: Session, fn: Callable[[Any], T]) -> T:
        """``fn`` on a connection of its own (a job's), committed, rolled back on failure, closed."""
        conn = session.open(session.limits.job_statement_seconds)
        try:
            result = fn(conn)
            conn.commit()
            return result
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection cannot roll back: it is closed below
                conn.rollback()
            raise
        finally:
            close_quietly(conn)

    # ------------------------------------------------------------ what the operator polls
    async def snapshot(self, backup_ids: list[str]) -> Snapshot:
        """What the operator looks at every turn, as one state: lock holder, schema version, migration
        history and the recorded backups among ``backup_ids`` (their `verified` flag as the last
        verification left it; UpgradeSchema's gate verifies the hop's backup again)."""
        for bid in backup_ids:
            self._check_id(bid)
        return await self._call("reading the schema state", lambda conn, d: read_snapshot(conn, d, backup_ids))

    async def schema_version(self) -> str | None:
        return (await self.snapshot([])).schema_version

    async def lock_holder(self) -> str | None:
        return (await self.snapshot([])).lock_holder

    async def table_checksum(self, table: str) -> str:
        """(count:checksum) of one table, for tests that check user data survived."""
        def q(conn: Any, d: Dialect) -> str:
            count, digest = conn.execute(d.table_checksum(table)).fetchone()
            return f"{count}:{text_value(digest, f'the checksum of {table}')}"

        return await self._call(f"checksumming {table}", q)

    # ------------------------------------------------------------ backups
    def _verify_now(self, session: Session, d: Dialect, backup_id: str) -> BackupInfo | None:
        if d.name is DialectName.MSSQL:
            return db_backup_mssql.verify(session, d, self._path(backup_id), backup_id)
        return self._on_connection(session, lambda conn: db_backup_pg.verify(conn, d, backup_id))

    async def verify_backup(self, backup_id: str) -> BackupInfo | None:
        """Backup ``backup_id`` verified now (RESTORE VERIFYONLY, or its copies' checksum), its record
        set to what was found; None when there is none. The gate before a schema upgrade."""
        return await self._job("verification", backup_id, lambda s, d: self._verify_now(s, d, backup_id))

    async def find_backup(self, backup_id: str) -> BackupInfo | None:
        """The backup ``backup_id`` if it exists, re-verified now."""
        return await self.verify_backup(backup_id)

    def _take(self, session: Session, d: Dialect, backup_id: str) -> BackupInfo:
        existing = self._verify_now(session, d, backup_id)
        if existing is not None and existing.verified:
            return existing
        if d.name is DialectName.MSSQL:
            taken = db_backup_mssql.take(session, d, self._path(backup_id), backup_id)
        else:
            self._on_connection(session, lambda conn: db_backup_pg.take(conn, d, backup_id))
            taken = self._verify_now(session, d, backup_id)
        if taken is None or not taken.verified:
            raise RefusalError(f"backup {backup_id} did not verify")
        return taken

    async def backup(self, backup_id: str) -> BackupInfo:
        """Take backup ``backup_id`` and verify it; a usable existing one is returned as it is."""
        return await self._job("backup", backup_id, lambda s, d: self._take(s, d, backup_id))

    def _restore(self, session: Session, d: Dialect, backup_id: str) -> BackupInfo:
        if d.name is DialectName.MSSQL:
            return db_backup_mssql.restore(session, d, self._path(backup_id), backup_id)
        return self._on_connection(session, lambda conn: db_backup_pg.restore(conn, d, backup_id))

    async def restore(self, backup_id: str) -> None:
        """Put the database back exactly as backup ``backup_id`` recorded it: refused unless the backup
        verifies; checked afterwards (schema version as recorded, and on PostgreSQL the content too)."""
        await self._job("restore", backup_id, lambda s, d: self._restore(s, d, backup_id))

    def _check_id(self, backup_id: str) -> None:
        if not isinstance(backup_id, str) or not BACKUP_ID.match(backup_id):
            raise DatabaseError(self.name, "invalid backup id: lower-case letters, digits and '-', at most 41",
                                transient=False)
