"""The SQL that differs between SQL Server (production) and PostgreSQL (the test bed), behind one seam.

Everything else in the database adapter is dialect-free. On SQL Server a backup is a real
`BACKUP DATABASE ... WITH CHECKSUM` verified by `RESTORE VERIFYONLY`; on PostgreSQL, which cannot back
itself up through ODBC, it is a transactional copy of the UWM tables into `uwm_backup_<id>_<table>`
with a content checksum recorded in `uwm_backups` and re-checked on verify and before restore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
BACKUP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


class DialectName(StrEnum):
    POSTGRESQL = "postgresql"
    MSSQL = "mssql"


def ident(name: str) -> str:
    """Validate a table name before it is spliced into SQL (identifiers cannot be parameters)."""
    if not _IDENT.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


def backup_table(backup_id: str, table: str) -> str:
    return ident(f"uwm_backup_{backup_id.replace('-', '_')}_{table.removeprefix('uwm_')}")


def dialect_of(connection_string: str) -> DialectName:
    """Pick the dialect from the ODBC driver named in the connection string."""
    driver = ""
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().upper() == "DRIVER":
            driver = value.strip().strip("{}").lower()
    if "postgres" in driver:
        return DialectName.POSTGRESQL
    if "sql server" in driver or "freetds" in driver or "tds" in driver:
        return DialectName.MSSQL
    raise ValueError("the connection string names no known ODBC driver (PostgreSQL, SQL Server or FreeTDS)")


@dataclass(frozen=True)
class Dialect:
    """SQL text per dialect; parameters are always `?` (ODBC)."""

    name: DialectName

    def list_uwm_tables(self) -> str:
        schema = "public" if self.name is DialectName.POSTGRESQL else "dbo"
        return ("SELECT table_name FROM information_schema.tables "
                f"WHERE table_schema = '{schema}' AND table_type = 'BASE TABLE' AND table_name LIKE 'uwm%' "
                "ORDER BY table_name")

    def table_checksum(self, table: str) -> str:
        """One row: (row count, content checksum) of ``table``, independent of physical order."""
        t = ident(table)
        if self.name is DialectName.POSTGRESQL:
            return f"SELECT COUNT(*), COALESCE(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '') FROM {t} x"
        return f"SELECT COUNT_BIG(*), CONVERT(VARCHAR(64), CHECKSUM_AGG(BINARY_CHECKSUM(*))) FROM {t}"

    def copy_table(self, source: str, target: str) -> list[str]:
        """PostgreSQL only: a copy with the source's columns, keys and defaults, then its rows."""
        self._postgres_only("a table-copy backup")
        s, t = ident(source), ident(target)
        return [f"CREATE TABLE {t} (LIKE {s} INCLUDING ALL)", f"INSERT INTO {t} SELECT * FROM {s}"]

    def drop_table_if_exists(self, table: str) -> str:
        return f"DROP TABLE IF EXISTS {ident(table)}"

    def create_backups_table(self) -> str:
        boolean = "BOOLEAN" if self.name is DialectName.POSTGRESQL else "BIT"
        if self.name is DialectName.POSTGRESQL:
            return ("CREATE TABLE IF NOT EXISTS uwm_backups (id VARCHAR(64) PRIMARY KEY, taken_at TIMESTAMP, "
                    f"schema_version VARCHAR(64), checksum VARCHAR(128), verified {boolean}, tables TEXT)")
        return ("IF OBJECT_ID(N'uwm_backups', N'U') IS NULL CREATE TABLE uwm_backups (id VARCHAR(64) PRIMARY KEY, "
                f"taken_at DATETIME2, schema_version VARCHAR(64), checksum VARCHAR(128), verified {boolean}, "
                "tables NVARCHAR(MAX))")

    def now(self) -> str:
        """The current time in UTC, as a zone-less timestamp (the backups table's `taken_at` is UTC)."""
        return "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')" if self.name is DialectName.POSTGRESQL else "SYSUTCDATETIME()"

    # SQL Server only: native backups to a file the server can write.
    def backup_database(self, database: str, path: str) -> str:
        self._mssql_only("BACKUP DATABASE")
        return f"BACKUP DATABASE [{ident(database)}] TO DISK = N'{_quote(path)}' WITH CHECKSUM, INIT, COPY_ONLY"

    def verify_backup(self, path: str) -> str:
        self._mssql_only("RESTORE VERIFYONLY")
        return f"RESTORE VERIFYONLY FROM DISK = N'{_quote(path)}' WITH CHECKSUM"

    def restore_database(self, database: str, path: str) -> list[str]:
        self._mssql_only("RESTORE DATABASE")
        db = ident(database)
        return [
            f"ALTER DATABASE [{db}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
            f"RESTORE DATABASE [{db}] FROM DISK = N'{_quote(path)}' WITH REPLACE, CHECKSUM",
            f"ALTER DATABASE [{db}] SET MULTI_USER",
        ]

    def _postgres_only(self, what: str) -> None:
        if self.name is not DialectName.POSTGRESQL:
            raise ValueError(f"{what} is how PostgreSQL is backed up; SQL Server uses BACKUP DATABASE")

    def _mssql_only(self, what: str) -> None:
        if self.name is not DialectName.MSSQL:
            raise ValueError(f"{what} exists only on SQL Server")


def _quote(text: str) -> str:
    if "\x00" in text:
        raise ValueError("NUL in a path")
    return text.replace("'", "''")
