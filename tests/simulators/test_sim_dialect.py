"""The dialect seam: the SQL strings of both PostgreSQL and SQL Server, and driver detection."""

from __future__ import annotations

import pytest

from uwm_sim.dialect import Column, PostgresDialect, SqlServerDialect, detect, ident
from uwm_sim.store import TABLES as STATE_TABLES
from uwm_sim.uwmdb import TABLES as UWM_TABLES

PG, MS = PostgresDialect(), SqlServerDialect()
COLS = (Column("id", "int", primary_key=True), Column("name", "varchar(64)", nullable=False),
        Column("at", "timestamp"), Column("on", "bool"), Column("v", "text"), Column("x", "float"),
        Column("n", "bigint"))


def test_create_table() -> None:
    assert PG.create_table("t", COLS) == (
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL, at TIMESTAMP, "
        "on BOOLEAN, v TEXT, x DOUBLE PRECISION, n BIGINT)")
    assert MS.create_table("t", COLS) == (
        "IF OBJECT_ID(N't', N'U') IS NULL CREATE TABLE t (id INT PRIMARY KEY, name NVARCHAR(64) NOT NULL, "
        "at DATETIME2, on BIT, v NVARCHAR(MAX), x FLOAT, n BIGINT)")


def test_drop_lock_page_list() -> None:
    assert PG.drop_table("t") == "DROP TABLE IF EXISTS t"
    assert MS.drop_table("t") == "IF OBJECT_ID(N't', N'U') IS NOT NULL DROP TABLE t"
    assert PG.table_lock("sim_server") == "LOCK TABLE sim_server IN EXCLUSIVE MODE"
    assert MS.table_lock("sim_server") == "SELECT COUNT(*) FROM sim_server WITH (TABLOCKX, HOLDLOCK)"
    assert PG.ddl_lock() == "SELECT pg_advisory_xact_lock(77517771)"
    assert MS.ddl_lock().startswith("EXEC sp_getapplock @Resource = N'uwm_sim_ddl', @LockMode = N'Exclusive'")
    assert PG.select_page("a", "t", "seq > ?", "seq", 10) == "SELECT a FROM t WHERE seq > ? ORDER BY seq LIMIT 10"
    assert MS.select_page("a", "t", "seq > ?", "seq", 10) == "SELECT TOP (10) a FROM t WHERE seq > ? ORDER BY seq"
    assert "information_schema.tables" in PG.list_tables("uwm_")
    assert MS.list_tables("uwm_") == "SELECT name FROM sys.tables WHERE name LIKE 'uwm_%'"


def test_savepoints() -> None:
    assert (PG.savepoint("sp"), PG.rollback_to_savepoint("sp"), PG.release_savepoint("sp")) == (
        "SAVEPOINT sp", "ROLLBACK TO SAVEPOINT sp", "RELEASE SAVEPOINT sp")
    assert (MS.savepoint("sp"), MS.rollback_to_savepoint("sp"), MS.release_savepoint("sp")) == (
        "SAVE TRANSACTION sp", "ROLLBACK TRANSACTION sp", None)
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        PG.savepoint("sp; DROP TABLE t")


def test_contract_tables_in_both_dialects() -> None:
    assert PG.create_table("uwm_schema_info", UWM_TABLES["uwm_schema_info"]) == (
        "CREATE TABLE IF NOT EXISTS uwm_schema_info (id INTEGER PRIMARY KEY, schema_version VARCHAR(64), "
        "updated_at TIMESTAMP)")
    assert MS.create_table("uwm_user_data", UWM_TABLES["uwm_user_data"]) == (
        "IF OBJECT_ID(N'uwm_user_data', N'U') IS NULL CREATE TABLE uwm_user_data (id INT PRIMARY KEY, "
        "owner NVARCHAR(128), item NVARCHAR(256), value NVARCHAR(MAX))")
    for table, cols in {**STATE_TABLES, **UWM_TABLES}.items():
        for d in (PG, MS):
            assert d.create_table(table, cols).count("PRIMARY KEY") == 1


@pytest.mark.parametrize("bad", ["t; DROP TABLE x", "1abc", "a-b", "", "x" * 64])
def test_identifiers_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        ident(bad)


@pytest.mark.parametrize(("conn", "name"), [
    ("DRIVER={PostgreSQL Unicode};SERVER=h", "postgresql"),
    ("Driver={ODBC Driver 18 for SQL Server};Server=h", "mssql"),
    ("DRIVER=FreeTDS;SERVER=h;TDS_Version=7.4", "mssql"),
    ("DRIVER={SQL Server Native Client 11.0}", "mssql"),
])
def test_detect(conn: str, name: str) -> None:
    assert detect(conn).name == name


def test_detect_explicit_and_unknown() -> None:
    assert detect("DSN=whatever", "mssql").name == "mssql"
    with pytest.raises(ValueError, match="dialect"):
        detect("DSN=whatever")
    with pytest.raises(ValueError, match="unknown dialect"):
        detect("DSN=x", "oracle")
