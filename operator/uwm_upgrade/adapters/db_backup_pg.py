"""PostgreSQL backups: copies of the UWM tables inside the database, taken, verified and restored.

Why this shape: PostgreSQL cannot back itself up through ODBC, so a backup is a copy of every UWM table
into `uwm_backup_<id>_<table>` and a row in `uwm_backups`. The servers keep writing while it is taken,
so the copies and the checksum recorded with them are made in one REPEATABLE READ transaction (one
state of the data, not each table at another moment). The row is written unverified; only a
verification (the copies' checksum equals the recorded one) marks it verified. A restore is one
transaction that checks what it wrote (schema version as recorded, content equal to the backup's
checksum) before it commits: a restore that would not reproduce the backup changes nothing and says so.
Restoring again, or after a crash mid-restore (nothing committed), is the same restore.
"""

from __future__ import annotations

import re
from typing import Any

from .db_records import (
    BackupInfo,
    all_tables,
    checksum,
    read_record,
    read_version,
    set_verified,
    write_record,
)
from .db_session import RefusalError, text_value
from .sql_dialect import Dialect, backup_table

EXCLUDED_FROM_BACKUP = re.compile(r"^uwm_backup")


def _live_tables(tables: list[str]) -> list[str]:
    return [t for t in tables if not EXCLUDED_FROM_BACKUP.match(t)]


def take(conn: Any, d: Dialect, backup_id: str) -> None:
    """Copy every UWM table and record the copies' checksum, unverified, in one consistent state."""
    conn.execute(d.repeatable_read())
    conn.execute(d.create_backups_table())
    present = all_tables(conn, d)
    live = _live_tables(present)
    for table in live:
        copy = backup_table(backup_id, table)
        if copy in present:
            conn.execute(d.drop_table_if_exists(copy))
        for statement in d.copy_table(table, copy):
            conn.execute(statement)
    recorded = BackupInfo(backup_id, None, read_version(conn, d), checksum(conn, d, [(t, t) for t in live]), False)
    write_record(conn, d, recorded, live)
    conn.commit()


def verify(conn: Any, d: Dialect, backup_id: str) -> BackupInfo | None:
    """The backup as found now: verified when every copy is there with the recorded checksum (the
    row's flag is set to what was found); None when there is no such backup."""
    found = read_record(conn, d, backup_id)
    if found is None:
        conn.commit()
        return None
    info, tables = found
    ok = _copies_match(conn, d, info, tables)
    info = set_verified(conn, info, ok)
    conn.commit()
    return info


def _copies_match(conn: Any, d: Dialect, info: BackupInfo, tables: list[str]) -> bool:
    present = set(all_tables(conn, d))
    pairs = [(t, backup_table(info.id, t)) for t in tables]
    return all(copy in present for _, copy in pairs) and checksum(conn, d, pairs) == info.checksum


def restore(conn: Any, d: Dialect, backup_id: str) -> BackupInfo:
    """Put the UWM tables back as backup ``backup_id`` holds them, in one transaction that commits
    only if the result reproduces the backup."""
    info = verify(conn, d, backup_id)
    if info is None or not info.verified:
        state = "is missing; not restoring" if info is None else \
            "does not verify; not restoring (its copies differ from its checksum)"
        raise RefusalError(f"backup {backup_id} {state}")
    found = read_record(conn, d, backup_id)
    assert found is not None  # verified just now, in this connection
    tables = found[1]
    for table in _live_tables(all_tables(conn, d)):
        if table not in tables:  # created by the upgrade that is being undone
            conn.execute(d.drop_table_if_exists(table))
    present = set(all_tables(conn, d))
    for table in tables:
        copy = backup_table(backup_id, table)
        if table in present and _columns(conn, d, table) == _columns(conn, d, copy):
            statements = d.refill_table(copy, table)  # keep the table itself: its defaults and sequences
        else:  # the upgrade changed its shape
            statements = [d.drop_table_if_exists(table), *d.copy_table(copy, table)]
        for statement in statements:
            conn.execute(statement)
    _check_restored(conn, d, info, tables)
    conn.commit()
    return info


def _check_restored(conn: Any, d: Dialect, info: BackupInfo, tables: list[str]) -> None:
    version = read_version(conn, d)
    if version != info.schema_version:
        raise RefusalError(f"restoring backup {info.id} left the schema version at {version}, not {info.schema_version}"
                      " (the hop's start): the restore was undone, the database is as it was before it")
    if checksum(conn, d, [(t, t) for t in tables]) != info.checksum:
        raise RefusalError(f"restoring backup {info.id} did not reproduce its data (the tables' checksum differs"
                      " from the backup's): the restore was undone, the database is as it was before it")


def _columns(conn: Any, d: Dialect, table: str) -> list[tuple[str | None, str | None]]:
    rows = conn.execute(d.columns(), table).fetchall()
    return [(text_value(r[0], "a column name"), text_value(r[1], "a column type")) for r in rows]
