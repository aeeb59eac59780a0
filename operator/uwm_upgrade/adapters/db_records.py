"""What the database adapter reads and records, on either dialect: the consistent snapshot the operator
polls every turn and the rows of `uwm_backups`.

Why one snapshot: the schema version, the schema lock and the migration history must be read as one
state. Read one after the other, a poll between a migration's last step and its lock release sees "one
release short, no lock" and the operator would take a finished migration for one that never ran. So
they are read in one REPEATABLE READ transaction, the lock first: on PostgreSQL that is one snapshot;
on SQL Server (locking) the shared lock on the lock row, held to the end, keeps a migration from
starting or ending between the reads. Functions here are blocking and run in the adapter's threads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .db_session import RefusalError, text_value
from .sql_dialect import BACKUPS_TABLE, MIGRATIONS, Dialect


@dataclass(frozen=True)
class BackupInfo:
    id: str
    taken_at: datetime | None
    schema_version: str | None
    checksum: str
    verified: bool


@dataclass(frozen=True)
class Snapshot:
    schema_version: str | None
    lock_holder: str | None
    backups: tuple[BackupInfo, ...]
    migrations: tuple[str, ...] = ()  # the versions in `uwm_migrations`; empty when it is unknown


def utc(taken_at: Any) -> datetime | None:
    """`taken_at` is stored in UTC without a zone (`Dialect.now()`): say so, so it is recorded as it is."""
    if not isinstance(taken_at, datetime):
        return None
    return taken_at if taken_at.tzinfo else taken_at.replace(tzinfo=UTC)


def all_tables(conn: Any, d: Dialect) -> list[str]:
    return [str(text_value(r[0], "a table name")) for r in conn.execute(d.list_uwm_tables()).fetchall()]


def read_version(conn: Any, d: Dialect) -> str | None:
    row = conn.execute(d.read_version()).fetchone()
    return None if row is None else text_value(row[0], "uwm_schema_info.schema_version")


def checksum(conn: Any, d: Dialect, tables: list[tuple[str, str]]) -> str:
    """Checksum over (logical name, content) of each table: the same for a table and its copy."""
    parts = []
    for logical, physical in tables:
        count, digest = conn.execute(d.table_checksum(physical)).fetchone()
        parts.append(f"{logical}:{count}:{text_value(digest, f'the checksum of {physical}')}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def read_snapshot(conn: Any, d: Dialect, backup_ids: list[str]) -> Snapshot:
    """Lock holder, schema version, migration history and the backups among ``backup_ids``, as one
    state (one REPEATABLE READ transaction, committed here). Creates nothing."""
    conn.execute(d.repeatable_read())
    try:
        lock = conn.execute(d.read_lock()).fetchone()
        version = read_version(conn, d)
        tables = set(all_tables(conn, d))
        migrations: tuple[str, ...] = ()
        if MIGRATIONS in tables:
            migrations = tuple(str(text_value(r[0], f"{MIGRATIONS}.version"))
                               for r in conn.execute(d.read_migrations()).fetchall())
        backups: list[BackupInfo] = []
        if backup_ids and BACKUPS_TABLE in tables:
            for row in conn.execute(d.read_backups(len(backup_ids)), *backup_ids).fetchall():
                backups.append(_backup_info(row))
        conn.commit()
    finally:
        for statement in d.after_repeatable_read():
            conn.execute(statement)
    holder = None if lock is None else text_value(lock[0], "uwm_schema_lock.holder")
    return Snapshot(version, holder, tuple(backups), migrations)


def _backup_info(row: Any) -> BackupInfo:
    return BackupInfo(str(text_value(row[0], "uwm_backups.id")), utc(row[1]),
                      text_value(row[2], "uwm_backups.schema_version"),
                      str(text_value(row[3], "uwm_backups.checksum") or ""), bool(row[4]))


def read_record(conn: Any, d: Dialect, backup_id: str) -> tuple[BackupInfo, list[str]] | None:
    """The `uwm_backups` row of ``backup_id`` and the tables it copied; None without one."""
    if BACKUPS_TABLE not in all_tables(conn, d):
        return None
    row = conn.execute(f"SELECT id, taken_at, schema_version, checksum, verified, tables FROM {BACKUPS_TABLE} "
                       "WHERE id = ?", backup_id).fetchone()
    if row is None:
        return None
    try:
        tables = json.loads(text_value(row[5], "uwm_backups.tables") or "[]")
    except ValueError:
        raise RefusalError(f"the record of backup {backup_id} lists its tables unreadably") from None
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        raise RefusalError(f"the record of backup {backup_id} lists its tables unreadably")
    return _backup_info(row), tables


def write_record(conn: Any, d: Dialect, info: BackupInfo, tables: list[str]) -> None:
    """Replace the `uwm_backups` row of ``info.id`` (the table is created when missing)."""
    conn.execute(d.create_backups_table())
    conn.execute(f"DELETE FROM {BACKUPS_TABLE} WHERE id = ?", info.id)
    taken = "?" if info.taken_at is not None else d.now()
    params: list[Any] = [info.id]
    if info.taken_at is not None:
        params.append(info.taken_at.astimezone(UTC).replace(tzinfo=None))
    conn.execute(f"INSERT INTO {BACKUPS_TABLE} (id, taken_at, schema_version, checksum, verified, tables) "
                 f"VALUES (?, {taken}, ?, ?, ?, ?)",
                 *params, info.schema_version, info.checksum, info.verified, json.dumps(tables))


def set_verified(conn: Any, info: BackupInfo, verified: bool) -> BackupInfo:
    """Record what the last verification found; only a verification ever sets `verified`."""
    if info.verified != verified:
        conn.execute(f"UPDATE {BACKUPS_TABLE} SET verified = ? WHERE id = ?", verified, info.id)
    return replace(info, verified=verified)


def exec_drained(conn: Any, statement: str) -> None:
    """Run one statement and read every result set (BACKUP/RESTORE report progress as extra ones)."""
    cur = conn.execute(statement)
    while cur.nextset():
        pass
