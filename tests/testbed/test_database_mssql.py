"""The operator's database adapter on SQL Server: BACKUP DATABASE ... WITH CHECKSUM, RESTORE VERIFYONLY and
RESTORE DATABASE, against a real SQL Server in a container (testcontainers) wherever a Docker engine answers.

On machines without Docker (this project's development machines) every test here skips and says why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyodbc
import pytest

from uwm_upgrade.adapters.database import Database, DatabaseError
from uwm_upgrade.adapters.db_records import exec_drained
from uwm_upgrade.adapters.sql_dialect import Dialect, DialectName

from mssql_support import sql_server

pytestmark = [pytest.mark.mssql, pytest.mark.integration]
BACKUPS = "/var/opt/mssql/data"  # a folder the server can write in every image
MS = Dialect(DialectName.MSSQL)


@pytest.fixture(scope="module")
def mssql() -> Iterator[str]:
    yield from sql_server()


def _master(mssql: str) -> pyodbc.Connection:
    return pyodbc.connect(mssql + "DATABASE=master;", autocommit=True)


def _create(mssql: str, name: str) -> str:
    conn = _master(mssql)
    conn.execute(f"IF DB_ID(N'{name}') IS NOT NULL DROP DATABASE [{name}]")
    conn.execute(f"CREATE DATABASE [{name}]")
    conn.close()
    cs = mssql + f"DATABASE={{{name}}};"
    conn = pyodbc.connect(cs, autocommit=True)
    for stmt in (
        "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version VARCHAR(64), updated_at DATETIME2)",
        "CREATE TABLE uwm_schema_lock (id INT PRIMARY KEY, holder VARCHAR(128) NULL, acquired_at DATETIME2 NULL)",
        "CREATE TABLE uwm_user_data (id INT PRIMARY KEY, owner VARCHAR(128), item VARCHAR(256), value NVARCHAR(MAX))",
        "CREATE TABLE uwm_migrations (version VARCHAR(64) PRIMARY KEY, applied_at DATETIME2, applied_by VARCHAR(128))",
        "INSERT INTO uwm_schema_info VALUES (1, '2021.1', SYSUTCDATETIME())",
        "INSERT INTO uwm_schema_lock VALUES (1, NULL, NULL)",
        "INSERT INTO uwm_migrations VALUES ('2021.1', SYSUTCDATETIME(), 'installer')",
    ):
        conn.execute(stmt)
    conn.cursor().executemany("INSERT INTO uwm_user_data VALUES (?, ?, ?, ?)",
                              [(i, f"u{i % 5}", f"item{i}", f"value {i}") for i in range(40)])
    conn.close()
    return cs


@pytest.fixture
def uwm_db(mssql: str) -> str:
    return _create(mssql, "uwm_op")


def _migrate(cs: str) -> None:
    conn = pyodbc.connect(cs, autocommit=True)
    conn.execute("UPDATE uwm_schema_info SET schema_version = '2022.1'")
    conn.execute("DELETE FROM uwm_user_data WHERE id > 20")
    conn.close()


def _user_access(mssql: str, name: str) -> str:
    conn = _master(mssql)
    row = conn.execute("SELECT user_access_desc, state_desc FROM sys.databases WHERE name = ?", name).fetchone()
    conn.close()
    return f"{row[0]}/{row[1]}"


async def test_native_backup_verify_and_restore(uwm_db: str) -> None:
    db = Database("mgmt-db", uwm_db, backup_directory=BACKUPS)
    before = await db.table_checksum("uwm_user_data")
    info = await db.backup("plan1-h1")
    assert info.verified and info.schema_version == "2021.1"
    again = await db.backup("plan1-h1")
    assert again.taken_at == info.taken_at  # found and re-verified, not retaken
    seen = await db.snapshot(["plan1-h1"])
    assert seen.migrations == ("2021.1",) and [b.verified for b in seen.backups] == [True]
    _migrate(uwm_db)
    await db.restore("plan1-h1")
    assert await db.schema_version() == "2021.1"
    assert await db.table_checksum("uwm_user_data") == before


async def test_a_restore_can_be_repeated_after_it_replaced_the_record_or_died_half_way(mssql: str, uwm_db: str) -> None:
    """The record used to live in the database the restore replaces: a retry was refused as missing."""
    db = Database("mgmt-db", uwm_db, backup_directory=BACKUPS)
    before = await db.table_checksum("uwm_user_data")
    await db.backup("plan1-h1")
    _migrate(uwm_db)
    conn = pyodbc.connect(uwm_db, autocommit=True)
    conn.execute("DROP TABLE uwm_backups")  # what any backup taken before its own record leaves after a restore
    conn.close()
    await db.restore("plan1-h1")
    await db.restore("plan1-h1")  # again, after an answer that was lost
    conn = _master(mssql)  # a crash mid-restore: the database left RESTORING, unusable
    exec_drained(conn, f"RESTORE DATABASE [uwm_op] FROM DISK = N'{BACKUPS}/mgmt-db-plan1-h1.bak' WITH REPLACE, "
                       "NORECOVERY")
    conn.close()
    assert _user_access(mssql, "uwm_op").endswith("RESTORING")
    await db.restore("plan1-h1")
    assert (await db.schema_version(), await db.table_checksum("uwm_user_data")) == ("2021.1", before)
    assert _user_access(mssql, "uwm_op") == "MULTI_USER/ONLINE"


async def test_a_failing_restore_always_lets_users_back_in(mssql: str, uwm_db: str) -> None:
    conn = _master(mssql)
    with pytest.raises(pyodbc.Error, match=r"3201|Cannot open backup device"):
        exec_drained(conn, MS.restore_database("uwm_op", f"{BACKUPS}/no-such-backup.bak"))
    conn.close()
    assert _user_access(mssql, "uwm_op") == "MULTI_USER/ONLINE"
    assert await Database("mgmt-db", uwm_db).schema_version() == "2021.1"
    with pytest.raises(DatabaseError, match="backup plan1-h9 is missing; not restoring"):
        await Database("mgmt-db", uwm_db, backup_directory=BACKUPS).restore("plan1-h9")


async def test_a_database_name_with_a_dash_is_quoted_not_refused(mssql: str) -> None:
    cs = _create(mssql, "uwm-mgmt-db")
    db = Database("mgmt-db", cs, backup_directory=BACKUPS)
    assert (await db.backup("plan1-h1")).verified
    _migrate(cs)
    await db.restore("plan1-h1")
    assert await db.schema_version() == "2021.1"
    assert db.target().database == "uwm-mgmt-db"
