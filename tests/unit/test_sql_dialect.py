"""The SQL that differs between SQL Server and PostgreSQL, checked for both dialects."""

from __future__ import annotations

import pytest

from uwm_upgrade.adapters.database import redact
from uwm_upgrade.adapters.odbc import ConnectionStringError
from uwm_upgrade.adapters.sql_dialect import Dialect, DialectName, backup_table, dialect_of

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
    with pytest.raises(ConnectionStringError, match="names the ODBC driver 'Oracle': known are PostgreSQL"):
        dialect_of("DRIVER={Oracle};PWD=x")
    with pytest.raises(ConnectionStringError, match="names no DRIVER"):
        dialect_of("DSN=x;PWD=x")


def test_identifiers_are_quoted_whatever_they_hold() -> None:
    """A SQL Server database name with `-` used to be refused; every identifier is quoted instead."""
    assert MS.quote("uwm-mgmt") == "[uwm-mgmt]"
    assert MS.quote("a]b; DROP TABLE x") == "[a]]b; DROP TABLE x]"
    assert PG.quote('uwm_"x"') == '"uwm_""x"""'
    for bad in ("", "a\x00b", "x" * 129):
        with pytest.raises(ValueError):
            MS.quote(bad)
    assert backup_table("plan1-h2", "uwm_user_data") == "uwm_backup_plan1_h2_user_data"
    with pytest.raises(ValueError, match="beyond 63"):
        backup_table("p" * 41, "uwm_" + "t" * 20)


def test_checksums_differ_per_dialect() -> None:
    assert "md5(string_agg" in PG.table_checksum("uwm_user_data")
    assert "CHECKSUM_AGG(BINARY_CHECKSUM(*))" in MS.table_checksum("uwm_user_data")


def test_postgres_backs_up_by_copy_and_mssql_natively() -> None:
    assert PG.copy_table("uwm_a", "uwm_backup_x_a") == ['CREATE TABLE "uwm_backup_x_a" (LIKE "uwm_a" INCLUDING ALL)',
                                                       'INSERT INTO "uwm_backup_x_a" SELECT * FROM "uwm_a"']
    with pytest.raises(ValueError, match="SQL Server uses BACKUP DATABASE"):
        MS.copy_table("uwm_a", "b")
    assert MS.backup_database("UWM-Mgmt", "/b/x.bak", "plan-h1", "2021.1") == (
        "BACKUP DATABASE [UWM-Mgmt] TO DISK = N'/b/x.bak' WITH CHECKSUM, INIT, COPY_ONLY, NAME = N'plan-h1', "
        "DESCRIPTION = N'uwm-upgrade schema_version=2021.1'")
    assert MS.verify_backup("/b/o'k.bak") == "RESTORE VERIFYONLY FROM DISK = N'/b/o''k.bak' WITH CHECKSUM"
    assert MS.backup_header("/b/x.bak") == "RESTORE HEADERONLY FROM DISK = N'/b/x.bak'"
    with pytest.raises(ValueError, match="only on SQL Server"):
        PG.backup_database("d", "/x", "id", None)


def test_the_sql_server_restore_is_one_batch_that_always_lets_users_back_in() -> None:
    batch = MS.restore_database("uwm-mgmt", "/b/x.bak")
    tried, caught = batch.split("BEGIN CATCH")
    assert tried.index("SET SINGLE_USER WITH ROLLBACK IMMEDIATE") < tried.index("RESTORE DATABASE [uwm-mgmt]") \
        < tried.index("SET MULTI_USER")
    assert "WITH REPLACE, CHECKSUM" in tried
    # a database left RESTORING (a restore that died half way) cannot be altered: it is restored as it is
    only_online = ("IF DATABASEPROPERTYEX(N'uwm-mgmt', 'Status') = 'ONLINE'\n"
                   "    ALTER DATABASE [uwm-mgmt] SET SINGLE_USER")
    assert only_online in tried
    assert "ALTER DATABASE [uwm-mgmt] SET MULTI_USER" in caught
    assert "DATABASEPROPERTYEX(N'uwm-mgmt', 'Status')" in caught
    assert caught.rstrip().endswith("THROW;\nEND CATCH")
    assert isinstance(batch, str)  # one batch, never a list of statements that could stop half way


def test_sessions_and_snapshots_per_dialect() -> None:
    assert PG.session_setup(1.5) == ["SET statement_timeout = 1500"]
    assert MS.session_setup(1.5) == []  # SQL Server gets Connection.timeout instead
    assert PG.repeatable_read() == MS.repeatable_read() == "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
    assert PG.after_repeatable_read() == [] and MS.after_repeatable_read() == [
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"]


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
    assert "hunter22" not in out and "db.example" not in out and " uwm " not in out
