"""The operator's database adapter against the test bed's real PostgreSQL: backup, verify, restore."""

from __future__ import annotations

from datetime import UTC, datetime

import pyodbc
import pytest

from uwm_upgrade.adapters.database import Database, DatabaseError
from uwm_upgrade.testbed import postgres

SEED = [
    "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version VARCHAR(64), updated_at TIMESTAMP)",
    "CREATE TABLE uwm_schema_lock (id INT PRIMARY KEY, holder VARCHAR(128) NULL, acquired_at TIMESTAMP NULL)",
    "CREATE TABLE uwm_user_data (id INT PRIMARY KEY, owner VARCHAR(128), item VARCHAR(256), value TEXT)",
    "CREATE TABLE uwm_migrations (version VARCHAR(64) PRIMARY KEY, applied_at TIMESTAMP, applied_by VARCHAR(128))",
    "INSERT INTO uwm_schema_info VALUES (1, '2021.1', CURRENT_TIMESTAMP)",
    "INSERT INTO uwm_schema_lock VALUES (1, NULL, NULL)",
    "INSERT INTO uwm_migrations VALUES ('2021.1', CURRENT_TIMESTAMP, 'installer')",
]


def _seed(cs: str, rows: int = 50) -> None:
    conn = pyodbc.connect(cs, autocommit=True)
    for stmt in SEED:
        conn.execute(stmt)
    conn.cursor().executemany("INSERT INTO uwm_user_data VALUES (?, ?, ?, ?)",
                     [(i, f"user{i % 7}", f"item{i}", f"value {i} ✓") for i in range(rows)])
    conn.close()


def _migrate_badly(cs: str) -> None:
    """What a half-done schema upgrade leaves: new column, new table, changed rows, newer version."""
    conn = pyodbc.connect(cs, autocommit=True)
    conn.execute("ALTER TABLE uwm_user_data ADD COLUMN flags INT DEFAULT 0")
    conn.execute("UPDATE uwm_user_data SET value = 'lost' WHERE id < 10")
    conn.execute("DELETE FROM uwm_user_data WHERE id > 40")
    conn.execute("CREATE TABLE uwm_new_feature (id INT PRIMARY KEY)")
    conn.execute("UPDATE uwm_schema_info SET schema_version = '2022.1'")
    conn.execute("UPDATE uwm_schema_lock SET holder = 'ms-1'")
    conn.close()


async def test_backup_restore_round_trip(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    before = await db.table_checksum("uwm_user_data")
    info = await db.backup("plan1-h1")
    assert info.verified and info.schema_version == "2021.1"

    _migrate_badly(new_database)
    assert await db.schema_version() == "2022.1"
    assert await db.lock_holder() == "ms-1"
    assert await db.table_checksum("uwm_user_data") != before

    await db.restore("plan1-h1")
    assert await db.schema_version() == "2021.1"
    assert await db.lock_holder() is None
    assert await db.table_checksum("uwm_user_data") == before
    conn = pyodbc.connect(new_database)
    tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema='public'").fetchall()}
    cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                        "table_name='uwm_user_data' ORDER BY ordinal_position").fetchall()]
    conn.close()
    assert "uwm_new_feature" not in tables
    assert cols == ["id", "owner", "item", "value"]


async def test_backup_is_idempotent_by_id(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    first = await db.backup("plan1-h1")
    again = await db.backup("plan1-h1")
    assert again.taken_at == first.taken_at  # found, not retaken
    assert again.checksum == first.checksum


async def test_unusable_backup_is_detected_and_retaken(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    first = await db.backup("plan1-h1")
    conn = pyodbc.connect(new_database, autocommit=True)
    conn.execute("DELETE FROM uwm_backup_plan1_h1_user_data WHERE id = 3")
    conn.close()
    found = await db.find_backup("plan1-h1")
    assert found is not None and not found.verified
    with pytest.raises(DatabaseError, match="does not verify; not restoring"):
        await db.restore("plan1-h1")
    retaken = await db.backup("plan1-h1")
    assert retaken.verified and retaken.checksum == first.checksum


async def test_missing_backup_is_reported(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    assert await db.find_backup("nope") is None
    with pytest.raises(DatabaseError, match="nope is missing"):
        await db.restore("nope")


async def test_errors_never_carry_the_connection_string(pg_bed: object) -> None:
    cs = postgres.odbc_connection_string(1, "uwm").replace(postgres.PASSWORD, "s3cr3t-Pa55")
    db = Database("pers-db", cs)
    with pytest.raises(DatabaseError) as err:
        await db.schema_version()
    assert err.value.transient
    text = str(err.value)
    assert "s3cr3t-Pa55" not in text and "pers-db" in text
    assert "s3cr3t" not in repr(db)


async def test_backup_time_is_utc_and_says_so(new_database: str) -> None:
    _seed(new_database)
    before = datetime.now(UTC)
    info = await Database("mgmt-db", new_database).backup("plan1-h1")
    assert info.taken_at is not None and info.taken_at.tzinfo is not None  # recorded as it is, not guessed
    assert abs((info.taken_at - before).total_seconds()) < 60


async def test_snapshot_reads_everything_the_operator_polls_in_one_go(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    empty = await db.snapshot(["plan1-h1"])
    assert (empty.schema_version, empty.lock_holder, empty.backups) == ("2021.1", None, ())  # no uwm_backups yet
    conn = pyodbc.connect(new_database)
    assert conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'uwm_backups'"
                        ).fetchone()[0] == 0  # looking created nothing
    conn.close()
    taken = await db.backup("plan1-h1")
    _migrate_badly(new_database)
    seen = await db.snapshot(["plan1-h1", "plan1-h2"])
    assert (seen.schema_version, seen.lock_holder) == ("2022.1", "ms-1")
    assert [(b.id, b.verified, b.taken_at) for b in seen.backups] == [("plan1-h1", True, taken.taken_at)]
