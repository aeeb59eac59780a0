"""The operator's view of one UWM database, through pyodbc, kept off the event loop.

It reads the schema version and the schema lock, and takes, verifies and restores backups. Each call
opens its own connection in a worker thread (`asyncio.to_thread`): pyodbc blocks, and an upgrade makes
few database calls, so a pool would buy nothing. Backups are idempotent by id: the operator derives the
id from the plan and the hop, so a crash after a backup but before its id reached the status finds the
same backup again instead of taking a second one; an unusable backup (checksum mismatch) is retaken.

Errors never carry the connection string: pyodbc messages are redacted before they leave this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyodbc

from .sql_dialect import BACKUP_ID, Dialect, DialectName, backup_table, dialect_of, ident

T = TypeVar("T")
EXCLUDED_FROM_BACKUP = re.compile(r"^uwm_backup")
TRANSIENT_SQLSTATES = ("08", "HYT", "40001", "40P01", "57P")


class DatabaseError(RuntimeError):
    """A database operation failed. ``transient`` says whether retrying may help. Secret-free."""

    def __init__(self, database: str, message: str, transient: bool) -> None:
        super().__init__(f"database {database}: {message}")
        self.database = database
        self.transient = transient


@dataclass(frozen=True)
class BackupInfo:
    id: str
    taken_at: datetime | None
    schema_version: str | None
    checksum: str
    verified: bool


def _utc(taken_at: Any) -> datetime | None:
    """`taken_at` is stored in UTC without a zone (`Dialect.now()`): say so, so it is recorded as it is."""
    if not isinstance(taken_at, datetime):
        return None
    return taken_at if taken_at.tzinfo else taken_at.replace(tzinfo=UTC)


def redact(message: str, connection_string: str) -> str:
    """Remove every value of the connection string (passwords above all) from ``message``."""
    out = message
    for part in connection_string.split(";"):
        _, _, value = part.partition("=")
        value = value.strip().strip("{}")
        if len(value) >= 3:
            out = out.replace(value, "***")
    return re.sub(r"(?i)(pwd|password)=[^;\s]*", r"\1=***", out)


@dataclass(frozen=True)
class Snapshot:
    schema_version: str | None
    lock_holder: str | None
    backups: tuple[BackupInfo, ...]


class Database:
    """One UWM database named ``name`` (the spec's `databases[].name`), reached by ``connection_string``."""

    def __init__(self, name: str, connection_string: str, backup_directory: str = "/var/opt/mssql/backup") -> None:
        self.name = name
        self._cs = connection_string
        self.dialect = Dialect(dialect_of(connection_string))
        self._backup_dir = backup_directory

    def __repr__(self) -> str:  # never show the connection string
        return f"Database({self.name!r}, {self.dialect.name})"

    async def _run(self, fn: Callable[[pyodbc.Connection], T], autocommit: bool = False) -> T:
        def work() -> T:
            try:
                conn = pyodbc.connect(self._cs, autocommit=autocommit, timeout=10)
            except pyodbc.Error as exc:
                raise self._error(exc, "cannot connect") from None
            try:
                result = fn(conn)
                if not autocommit:
                    conn.commit()
                return result
            except pyodbc.Error as exc:
                if not autocommit:
                    conn.rollback()
                raise self._error(exc, "query failed") from None
            finally:
                conn.close()

        return await asyncio.to_thread(work)

    def _error(self, exc: pyodbc.Error, what: str) -> DatabaseError:
        state = str(exc.args[0]) if exc.args else ""
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        transient = what == "cannot connect" or state.startswith(TRANSIENT_SQLSTATES)
        return DatabaseError(self.name, f"{what} [{state}]: {redact(text, self._cs)}", transient)

    async def schema_version(self) -> str | None:
        def q(conn: pyodbc.Connection) -> str | None:
            row = conn.execute("SELECT schema_version FROM uwm_schema_info WHERE id = 1").fetchone()
            return None if row is None else str(row[0])

        return await self._run(q)

    async def lock_holder(self) -> str | None:
        def q(conn: pyodbc.Connection) -> str | None:
            row = conn.execute("SELECT holder FROM uwm_schema_lock WHERE id = 1").fetchone()
            return None if row is None or row[0] is None else str(row[0])

        return await self._run(q)

    def _tables(self, conn: pyodbc.Connection) -> list[str]:
        names = [str(r[0]) for r in conn.execute(self.dialect.list_uwm_tables()).fetchall()]
        return [n for n in names if not EXCLUDED_FROM_BACKUP.match(n)]

    def _checksum(self, conn: pyodbc.Connection, tables: list[tuple[str, str]]) -> str:
        """Checksum over (logical name, content) of each table: the same for a table and its copy."""
        parts = []
        for logical, physical in tables:
            count, digest = conn.execute(self.dialect.table_checksum(physical)).fetchone()
            parts.append(f"{logical}:{count}:{digest}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    async def snapshot(self, backup_ids: list[str]) -> Snapshot:
        """What the operator looks at every turn, in one connection: schema version, lock holder and the
        recorded backups among ``backup_ids``. Backups are not re-verified here (a RESTORE VERIFYONLY of
        a large database every poll would be ruinous): taking and restoring one verify it."""
        for bid in backup_ids:
            _check_id(bid)

        def q(conn: pyodbc.Connection) -> Snapshot:
            row = conn.execute("SELECT schema_version FROM uwm_schema_info WHERE id = 1").fetchone()
            lock = conn.execute("SELECT holder FROM uwm_schema_lock WHERE id = 1").fetchone()
            backups: list[BackupInfo] = []
            if backup_ids and "uwm_backups" in self._all_tables(conn):
                marks = ", ".join("?" for _ in backup_ids)
                for b in conn.execute(f"SELECT id, taken_at, schema_version, checksum, verified FROM uwm_backups "
                                      f"WHERE id IN ({marks}) ORDER BY id", *backup_ids).fetchall():
                    backups.append(BackupInfo(str(b[0]), _utc(b[1]), b[2], str(b[3]), bool(b[4])))
            return Snapshot(None if row is None else str(row[0]),
                            None if lock is None or lock[0] is None else str(lock[0]), tuple(backups))

        return await self._run(q)

    async def find_backup(self, backup_id: str) -> BackupInfo | None:
        """The backup ``backup_id`` if it exists, re-verified now."""
        _check_id(backup_id)

        def q(conn: pyodbc.Connection) -> BackupInfo | None:
            conn.execute(self.dialect.create_backups_table())
            row = conn.execute("SELECT id, taken_at, schema_version, checksum, tables FROM uwm_backups WHERE id = ?",
                               backup_id).fetchone()
            if row is None:
                return None
            return BackupInfo(str(row[0]), _utc(row[1]), row[2], str(row[3]), self._verify_row(conn, backup_id, row))

        return await self._run(q)

    def _verify_row(self, conn: pyodbc.Connection, backup_id: str, row: Any) -> bool:
        if self.dialect.name is DialectName.MSSQL:
            try:
                conn.execute(self.dialect.verify_backup(self._backup_path(backup_id)))
            except pyodbc.Error:
                return False
            return True
        tables = json.loads(row[4] or "[]")
        present = set(self._all_tables(conn))
        pairs = [(t, backup_table(backup_id, t)) for t in tables]
        if any(b not in present for _, b in pairs):
            return False
        return self._checksum(conn, pairs) == str(row[3])

    def _all_tables(self, conn: pyodbc.Connection) -> list[str]:
        return [str(r[0]) for r in conn.execute(self.dialect.list_uwm_tables()).fetchall()]

    def _backup_path(self, backup_id: str) -> str:
        return f"{self._backup_dir.rstrip('/')}/{self.name}-{backup_id}.bak"

    async def backup(self, backup_id: str) -> BackupInfo:
        """Take backup ``backup_id`` and verify it; a usable existing one is returned as it is."""
        existing = await self.find_backup(backup_id)
        if existing is not None and existing.verified:
            return existing
        if self.dialect.name is DialectName.MSSQL:
            await self._backup_mssql(backup_id)
        else:
            await self._run(lambda conn: self._backup_copy(conn, backup_id))
        taken = await self.find_backup(backup_id)
        if taken is None or not taken.verified:
            raise DatabaseError(self.name, f"backup {backup_id} did not verify", transient=False)
        return taken

    def _backup_copy(self, conn: pyodbc.Connection, backup_id: str) -> None:
        present = set(self._all_tables(conn))
        tables = self._tables(conn)
        conn.execute("DELETE FROM uwm_backups WHERE id = ?", backup_id)
        for t in tables:
            target = backup_table(backup_id, t)
            if target in present:
                conn.execute(self.dialect.drop_table_if_exists(target))
            for stmt in self.dialect.copy_table(t, target):
                conn.execute(stmt)
        checksum = self._checksum(conn, [(t, t) for t in tables])
        version = conn.execute("SELECT schema_version FROM uwm_schema_info WHERE id = 1").fetchone()
        conn.execute(f"INSERT INTO uwm_backups (id, taken_at, schema_version, checksum, verified, tables) "
                     f"VALUES (?, {self.dialect.now()}, ?, ?, ?, ?)",
                     backup_id, None if version is None else version[0], checksum, True, json.dumps(tables))

    async def _backup_mssql(self, backup_id: str) -> None:
        db = _database_of(self._cs)
        path = self._backup_path(backup_id)
        await self._run(lambda conn: _exec_all(conn, [self.dialect.backup_database(db, path)]), autocommit=True)

        def record(conn: pyodbc.Connection) -> None:
            version = conn.execute("SELECT schema_version FROM uwm_schema_info WHERE id = 1").fetchone()
            conn.execute("DELETE FROM uwm_backups WHERE id = ?", backup_id)
            conn.execute(f"INSERT INTO uwm_backups (id, taken_at, schema_version, checksum, verified, tables) "
                         f"VALUES (?, {self.dialect.now()}, ?, ?, ?, ?)",
                         backup_id, None if version is None else version[0], path, True, "[]")

        await self._run(record)

    async def restore(self, backup_id: str) -> None:
        """Put the database back exactly as backup ``backup_id`` recorded it (refused if it does not verify)."""
        found = await self.find_backup(backup_id)
        if found is None or not found.verified:
            raise DatabaseError(self.name, f"backup {backup_id} is missing or does not verify; not restoring",
                                transient=False)
        if self.dialect.name is DialectName.MSSQL:
            db = _database_of(self._cs)
            master = re.sub(r"(?i)DATABASE=[^;]*", "DATABASE=master", self._cs)
            other = Database(self.name, master, self._backup_dir)
            stmts = self.dialect.restore_database(db, self._backup_path(backup_id))
            await other._run(lambda conn: _exec_all(conn, stmts), autocommit=True)
            return
        await self._run(lambda conn: self._restore_copy(conn, backup_id))

    def _restore_copy(self, conn: pyodbc.Connection, backup_id: str) -> None:
        row = conn.execute("SELECT tables FROM uwm_backups WHERE id = ?", backup_id).fetchone()
        tables = json.loads(row[0] or "[]")
        for t in self._tables(conn):
            if t not in tables:  # created by the upgrade that is being undone
                conn.execute(self.dialect.drop_table_if_exists(t))
        present = set(self._all_tables(conn))
        for t in tables:
            source = backup_table(backup_id, t)
            if t in present and self._columns(conn, t) == self._columns(conn, source):
                conn.execute(f"DELETE FROM {ident(t)}")  # keep the table itself: its defaults and sequences
                conn.execute(f"INSERT INTO {ident(t)} SELECT * FROM {source}")
                continue
            conn.execute(self.dialect.drop_table_if_exists(t))  # the upgrade changed its shape
            for stmt in self.dialect.copy_table(source, ident(t)):
                conn.execute(stmt)

    def _columns(self, conn: pyodbc.Connection, table: str) -> list[tuple[str, str]]:
        rows = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                            "ORDER BY ordinal_position", table).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    async def table_checksum(self, table: str) -> str:
        """(count:checksum) of one table, for tests that check user data survived."""
        def q(conn: pyodbc.Connection) -> str:
            count, digest = conn.execute(self.dialect.table_checksum(table)).fetchone()
            return f"{count}:{digest}"

        return await self._run(q)


def _exec_all(conn: pyodbc.Connection, statements: list[str]) -> None:
    for stmt in statements:
        cur = conn.execute(stmt)
        while cur.nextset():  # BACKUP/RESTORE report progress as extra result sets
            pass


def _check_id(backup_id: str) -> None:
    if not BACKUP_ID.match(backup_id):
        raise ValueError(f"invalid backup id {backup_id!r}: lower-case letters, digits and '-', at most 41")


def _database_of(connection_string: str) -> str:
    m = re.search(r"(?i)(?:^|;)\s*DATABASE\s*=\s*\{?([^;}]*)", connection_string)
    if not m:
        raise ValueError("the connection string names no DATABASE")
    return m.group(1).strip()
