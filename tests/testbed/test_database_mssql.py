"""The operator's database adapter on SQL Server: BACKUP DATABASE ... WITH CHECKSUM, RESTORE VERIFYONLY and
RESTORE DATABASE, against a real SQL Server in a container (testcontainers) wherever a Docker engine answers.

On machines without Docker (this project's development machines) every test here skips and says why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyodbc
import pytest

from uwm_upgrade.adapters.database import Database

from mssql_support import sql_server

pytestmark = [pytest.mark.mssql, pytest.mark.integration]


@pytest.fixture(scope="module")
def mssql() -> Iterator[str]:
    yield from sql_server()


@pytest.fixture
def uwm_db(mssql: str) -> str:
    conn = pyodbc.connect(mssql + "DATABASE=master;", autocommit=True)
    conn.execute("IF DB_ID('uwm_op') IS NOT NULL DROP DATABASE uwm_op")
    conn.execute("CREATE DATABASE uwm_op")
    conn.close()
    cs = mssql + "DATABASE=uwm_op;"
    conn = pyodbc.connect(cs, autocommit=True)
    for stmt in (
        "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version VARCHAR(64), updated_at DATETIME2)",
        "CREATE TABLE uwm_schema_lock (id INT PRIMARY KEY, holder VARCHAR(128) NULL, acquired_at DATETIME2 NULL)",
        "CREATE TABLE uwm_user_data (id INT PRIMARY KEY, owner VARCHAR(128), item VARCHAR(256), value NVARCHAR(MAX))",
        "INSERT INTO uwm_schema_info VALUES (1, '2021.1', SYSUTCDATETIME())",
        "INSERT INTO uwm_schema_lock VALUES (1, NULL, NULL)",
    ):
        conn.execute(stmt)
    conn.cursor().executemany("INSERT INTO uwm_user_data VALUES (?, ?, ?, ?)",
                              [(i, f"u{i % 5}", f"item{i}", f"value {i}") for i in range(40)])
    conn.close()
    return cs


async def test_native_backup_verify_and_restore(uwm_db: str) -> None:
    db = Database("mgmt-db", uwm_db)
    before = await db.table_checksum("uwm_user_data")
    info = await db.backup("plan1-h1")
    assert info.verified
    again = await db.backup("plan1-h1")
    assert again.taken_at == info.taken_at  # found and re-verified, not retaken
    conn = pyodbc.connect(uwm_db, autocommit=True)
    conn.execute("UPDATE uwm_schema_info SET schema_version = '2022.1'")
    conn.execute("DELETE FROM uwm_user_data WHERE id > 20")
    conn.close()
    await db.restore("plan1-h1")
    assert await db.schema_version() == "2021.1"
    assert await db.table_checksum("uwm_user_data") == before
