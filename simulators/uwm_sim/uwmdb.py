"""The UWM databases' own tables (docs/contracts.md section 3): schema version, schema lock, user data.

Why separate from the estate state: these are the tables the operator reads, backs up and restores,
exactly as on a real UWM database; the simulators create them once, seed the user personalization
data that must survive every upgrade, and migrate the schema one catalog release at a time.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from .db import execute_drained
from .dialect import Column, Dialect
from .estate import DatabaseState

SCHEMA_INFO, SCHEMA_LOCK, USER_DATA, MIGRATIONS = "uwm_schema_info", "uwm_schema_lock", "uwm_user_data", \
    "uwm_migrations"

TABLES: dict[str, tuple[Column, ...]] = {
    SCHEMA_INFO: (Column("id", "int", primary_key=True), Column("schema_version", "varchar(64)"),
                  Column("updated_at", "timestamp")),
    SCHEMA_LOCK: (Column("id", "int", primary_key=True), Column("holder", "varchar(128)"),
                  Column("acquired_at", "timestamp")),
    USER_DATA: (Column("id", "int", primary_key=True), Column("owner", "varchar(128)"),
                Column("item", "varchar(256)"), Column("value", "text")),
    MIGRATIONS: (Column("version", "varchar(64)", primary_key=True), Column("applied_at", "timestamp"),
                 Column("applied_by", "varchar(128)")),
}

DAMAGED_PREFIX = "#partially-migrated#"
SEED_BATCH = 500  # 4 parameters a row: within SQL Server's 2100 parameters and 1000 rows per VALUES


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ensure_schema(conn: Any, d: Dialect, initial_version: str, seed_rows: int, reset: bool = False) -> None:
    """Create the tables (once) and seed a new database; an existing database keeps its state."""
    cur = conn.cursor()
    execute_drained(cur, d.ddl_lock())
    if reset:
        cur.execute(d.list_tables("uwm_"))
        for (table,) in cur.fetchall():
            if str(table).startswith("uwm_"):
                cur.execute(d.drop_table(str(table)))
    for table, columns in TABLES.items():
        cur.execute(d.create_table(table, columns))
    now = utcnow()
    cur.execute(f"SELECT COUNT(*) FROM {SCHEMA_INFO}")
    if cur.fetchone()[0] == 0:
        cur.execute(f"INSERT INTO {SCHEMA_INFO} (id, schema_version, updated_at) VALUES (1, ?, ?)",
                    initial_version, now)
        cur.execute(f"INSERT INTO {MIGRATIONS} (version, applied_at, applied_by) VALUES (?, ?, ?)",
                    initial_version, now, "initial-install")
    cur.execute(f"SELECT COUNT(*) FROM {SCHEMA_LOCK}")
    if cur.fetchone()[0] == 0:
        cur.execute(f"INSERT INTO {SCHEMA_LOCK} (id, holder, acquired_at) VALUES (1, NULL, NULL)")
    cur.execute(f"SELECT COUNT(*) FROM {USER_DATA}")
    if cur.fetchone()[0] == 0 and seed_rows:
        for first in range(1, seed_rows + 1, SEED_BATCH):  # multi-row VALUES: both dialects, few round trips
            batch = [seed_row(i) for i in range(first, min(first + SEED_BATCH, seed_rows + 1))]
            values = ", ".join("(?, ?, ?, ?)" for _ in batch)
            cur.execute(f"INSERT INTO {USER_DATA} (id, owner, item, value) VALUES {values}",
                        *[v for row in batch for v in row])


def seed_row(i: int) -> tuple[int, str, str, str]:
    apps = ("Outlook", "Word", "Excel", "Chrome", "Teams", "Explorer")
    return (i, f"DOMAIN\\user{i:05d}", f"{apps[i % len(apps)]}/settings/{i % 7}",
            f"{{\"theme\": \"{('dark', 'light')[i % 2]}\", \"mru\": [\"file{i}.docx\"], \"zoom\": {90 + i % 30}}}")


def snapshot(conn: Any, name: str) -> DatabaseState:
    """The schema version and the lock holder, in one statement (every state look asks for them)."""
    cur = conn.cursor()
    cur.execute(f"SELECT (SELECT schema_version FROM {SCHEMA_INFO} WHERE id = 1), "
                f"(SELECT holder FROM {SCHEMA_LOCK} WHERE id = 1)")
    row = cur.fetchone()
    version, holder = (row[0], row[1]) if row else (None, None)
    return DatabaseState(name, version, holder or None)


def try_lock(conn: Any, holder: str) -> bool:
    cur = conn.cursor()
    cur.execute(f"UPDATE {SCHEMA_LOCK} SET holder = ?, acquired_at = ? WHERE id = 1 AND holder IS NULL",
                holder, utcnow())
    return bool(cur.rowcount == 1)


def release_lock(conn: Any, holder: str) -> bool:
    cur = conn.cursor()
    cur.execute(f"UPDATE {SCHEMA_LOCK} SET holder = NULL, acquired_at = NULL WHERE id = 1 AND holder = ?", holder)
    return bool(cur.rowcount == 1)


def apply_step(conn: Any, version: str, by: str) -> None:
    """One catalog release of schema migration: record it and move the schema version."""
    cur = conn.cursor()
    now = utcnow()
    cur.execute(f"DELETE FROM {MIGRATIONS} WHERE version = ?", version)
    cur.execute(f"INSERT INTO {MIGRATIONS} (version, applied_at, applied_by) VALUES (?, ?, ?)", version, now, by)
    cur.execute(f"UPDATE {SCHEMA_INFO} SET schema_version = ?, updated_at = ? WHERE id = 1", version, now)


def damage_user_data(conn: Any) -> int:
    """What a migration that dies midway leaves behind: half the user rows rewritten; returns the count."""
    cur = conn.cursor()
    cur.execute(f"UPDATE {USER_DATA} SET value = ? WHERE id % 2 = 0", DAMAGED_PREFIX)
    return int(cur.rowcount)


def user_data_checksum(conn: Any) -> tuple[int, str]:
    """Row count and sha256 of the user data in id order: equal before and after a good upgrade."""
    cur = conn.cursor()
    cur.execute(f"SELECT id, owner, item, value FROM {USER_DATA} ORDER BY id")
    digest = hashlib.sha256()
    count = 0
    for row in cur.fetchall():
        digest.update(repr(tuple(row)).encode())
        count += 1
    return count, digest.hexdigest()


def migrations(conn: Any) -> list[tuple[str, str | None]]:
    cur = conn.cursor()
    cur.execute(f"SELECT version, applied_by FROM {MIGRATIONS} ORDER BY applied_at, version")
    return [(str(r[0]), r[1]) for r in cur.fetchall()]
