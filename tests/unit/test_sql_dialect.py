"""The SQL that differs between SQL Server and PostgreSQL, checked for both dialects."""

from __future__ import annotations

import pytest

from uwm_upgrade.adapters.database import redact
from uwm_upgrade.adapters.sql_dialect import Dialect, DialectName, backup_table, dialect_of, ident

PG = Dialect(DialectName.POSTGRESQL)
MS = Dialect(DialectName.MSSQL)


@pytest.mark.parametrize(("cs", "expected"), [
    ("DRIVER={PostgreSQL Unicode};SERVER=h;DATABASE=d", DialectName.POSTGRESQL),
    ("Driver={ODBC Driver 18 for SQL Server};Server=h,1433;Database=d", DialectName.MSSQL),
    ("DRIVER={FreeTDS};SERVER=h;PORT=1433;TDS_Version=7.4", DialectName.MSSQL),
])
def test_dialect_from_driver(cs: str, expected: DialectName) -> None:
    assert dialect_of(cs) is expected


def test_unknown_driver_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no known ODBC driver"):
        dialect_of("DRIVER={Oracle};PWD=x")


def test_identifiers_are_validated_before_splicing() -> None:
    assert ident("uwm_user_data") == "uwm_user_data"
    for bad in ("t; DROP TABLE x", "a-b", "", "1abc", "x" * 70):
        with pytest.raises(ValueError):
            ident(bad)
    assert backup_table("plan1-h2", "uwm_user_data") == "uwm_backup_plan1_h2_user_data"


def test_checksums_differ_per_dialect() -> None:
    assert "md5(string_agg" in PG.table_checksum("uwm_user_data")
    assert "CHECKSUM_AGG(BINARY_CHECKSUM(*))" in MS.table_checksum("uwm_user_data")


def test_postgres_backs_up_by_copy_and_mssql_natively() -> None:
    assert PG.copy_table("uwm_a", "uwm_backup_x_a") == [
        "CREATE TABLE uwm_backup_x_a (LIKE uwm_a INCLUDING ALL)", "INSERT INTO uwm_backup_x_a SELECT * FROM uwm_a"]
    with pytest.raises(ValueError, match="SQL Server uses BACKUP DATABASE"):
        MS.copy_table("uwm_a", "b")
    assert MS.backup_database("UWM_Mgmt", "/b/x.bak") == (
        "BACKUP DATABASE [UWM_Mgmt] TO DISK = N'/b/x.bak' WITH CHECKSUM, INIT, COPY_ONLY")
    assert MS.verify_backup("/b/o'k.bak") == "RESTORE VERIFYONLY FROM DISK = N'/b/o''k.bak' WITH CHECKSUM"
    restore = MS.restore_database("UWM_Mgmt", "/b/x.bak")
    assert restore[0].endswith("SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
    assert "WITH REPLACE, CHECKSUM" in restore[1]
    assert restore[2].endswith("SET MULTI_USER")
    with pytest.raises(ValueError, match="only on SQL Server"):
        PG.backup_database("d", "/x")


def test_catalog_queries_per_dialect() -> None:
    assert "table_schema = 'public'" in PG.list_uwm_tables()
    assert "table_schema = 'dbo'" in MS.list_uwm_tables()
    assert "IF OBJECT_ID" in MS.create_backups_table() and "BIT" in MS.create_backups_table()
    assert "IF NOT EXISTS" in PG.create_backups_table() and "BOOLEAN" in PG.create_backups_table()
    assert PG.now() == "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')" and MS.now() == "SYSUTCDATETIME()"


def test_redact_removes_every_connection_value() -> None:
    cs = "DRIVER={PostgreSQL Unicode};SERVER=db.example;PORT=5432;UID=uwm;PWD=hunter22;DATABASE=mgmt"
    msg = "could not connect to db.example:5432 as uwm with hunter22; PWD=hunter22"
    out = redact(msg, cs)
    assert "hunter22" not in out and "db.example" not in out
