"""The SQL that differs between SQL Server (production) and PostgreSQL (the test bed), behind one seam.

Everything else in the database adapter is dialect-free. On SQL Server a backup is a real
`BACKUP DATABASE ... WITH CHECKSUM` verified by `RESTORE VERIFYONLY`, whose file carries its own record
(name and schema version in its header), so a restore that replaced the database, or died half way,
still finds it; on PostgreSQL, which cannot back itself up through ODBC, it is a copy of the UWM tables
into `uwm_backup_<id>_<table>`, taken in one REPEATABLE READ transaction with a content checksum recorded
in `uwm_backups` and re-checked on verify and after a restore.

Identifiers cannot be parameters: every one spliced into SQL is quoted (`"..."` or `[...]`, with the
closing quote doubled), so any database or table name is safe, `-` included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .odbc import ConnectionStringError, OdbcString

BACKUP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_MAX_IDENT = 63  # PostgreSQL's limit (it truncates longer names silently); SQL Server allows 128
BACKUPS_TABLE = "uwm_backups"
SCHEMA_INFO, SCHEMA_LOCK, MIGRATIONS = "uwm_schema_info", "uwm_schema_lock", "uwm_migrations"


class DialectName(StrEnum):
    POSTGRESQL = "postgresql"
    MSSQL = "mssql"


def backup_table(backup_id: str, table: str) -> str:
    """The table a PostgreSQL backup copies ``table`` into (unquoted: `Dialect.quote` it)."""
    name = f"uwm_backup_{backup_id.replace('-', '_')}_{table.removeprefix('uwm_')}"
    if len(name) > _MAX_IDENT:
        raise ValueError(f"the backup table for {table!r} would be named beyond {_MAX_IDENT} characters")
    return name


def dialect_of(connection_string: str | OdbcString) -> DialectName:
    """Pick the dialect from the ODBC driver named in the connection string."""
    odbc = connection_string if isinstance(connection_string, OdbcString) else OdbcString.parse(connection_string)
    driver = (odbc.driver or "").lower()
    if "postgres" in driver:
        return DialectName.POSTGRESQL
    if "sql server" in driver or "freetds" in driver or "tds" in driver:
        return DialectName.MSSQL
    named = f"names the ODBC driver {odbc.driver!r}" if odbc.driver else "names no DRIVER"
    raise ConnectionStringError(f"the connection string {named}: known are PostgreSQL, SQL Server and FreeTDS")


@dataclass(frozen=True)
class Dialect:
    """SQL text per dialect; parameters are always `?` (ODBC)."""

    name: DialectName

    @property
    def postgres(self) -> bool:
        return self.name is DialectName.POSTGRESQL

    def quote(self, name: str) -> str:
        """An identifier (table or database name) as SQL text, whatever characters it has."""
        if not name or "\x00" in name or len(name) > 128:
            raise ValueError(f"not a usable SQL identifier: {name!r}")
        if self.postgres:
            return '"' + name.replace('"', '""') + '"'
        return "[" + name.replace("]", "]]") + "]"

    # ------------------------------------------------------------ sessions and transactions
    def session_setup(self, statement_seconds: float) -> list[str]:
        """Run once per connection: PostgreSQL's own statement timeout (psqlODBC refuses the ODBC
        query-timeout attribute); SQL Server gets `Connection.timeout` instead."""
        return [f"SET statement_timeout = {max(int(statement_seconds * 1000), 1)}"] if self.postgres else []

    def repeatable_read(self) -> str:
        """The first statement of a transaction that must see one consistent state of the tables."""
        return "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"

    def after_repeatable_read(self) -> list[str]:
        """After its commit: SQL Server's isolation level outlives the transaction; PostgreSQL's does not."""
        return [] if self.postgres else ["SET TRANSACTION ISOLATION LEVEL READ COMMITTED"]

    # ------------------------------------------------------------ catalog
    def list_uwm_tables(self) -> str:
        schema = "public" if self.postgres else "dbo"
        return ("SELECT table_name FROM information_schema.tables "
                f"WHERE table_schema = '{schema}' AND table_type = 'BASE TABLE' AND table_name LIKE 'uwm%' "
                "ORDER BY table_name")

    def columns(self) -> str:
        schema = "public" if self.postgres else "dbo"
        return ("SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = '{schema}' AND table_name = ? ORDER BY ordinal_position")

    def table_checksum(self, table: str) -> str:
        """One row: (row count, content checksum) of ``table``, independent of physical order."""
        t = self.quote(table)
        if self.postgres:
            return f"SELECT COUNT(*), COALESCE(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '') FROM {t} x"
        return f"SELECT COUNT_BIG(*), CONVERT(VARCHAR(64), CHECKSUM_AGG(BINARY_CHECKSUM(*))) FROM {t}"

    # ------------------------------------------------------------ what the operator polls
    def read_lock(self) -> str:
        return f"SELECT holder FROM {SCHEMA_LOCK} WHERE id = 1"

    def read_version(self) -> str:
        return f"SELECT schema_version FROM {SCHEMA_INFO} WHERE id = 1"

    def read_migrations(self) -> str:
        return f"SELECT version FROM {MIGRATIONS} ORDER BY applied_at, version"

    def read_backups(self, count: int) -> str:
        marks = ", ".join("?" for _ in range(count))
        return (f"SELECT id, taken_at, schema_version, checksum, verified FROM {BACKUPS_TABLE} "
                f"WHERE id IN ({marks}) ORDER BY id")

    def create_backups_table(self) -> str:
        if self.postgres:
            return (f"CREATE TABLE IF NOT EXISTS {BACKUPS_TABLE} (id VARCHAR(64) PRIMARY KEY, taken_at TIMESTAMP, "
                    "schema_version VARCHAR(64), checksum VARCHAR(128), verified BOOLEAN, tables TEXT)")
        return (f"IF OBJECT_ID(N'{BACKUPS_TABLE}', N'U') IS NULL CREATE TABLE {BACKUPS_TABLE} "
                "(id VARCHAR(64) PRIMARY KEY, taken_at DATETIME2, schema_version VARCHAR(64), checksum VARCHAR(128), "
                "verified BIT, tables NVARCHAR(MAX))")

    def now(self) -> str:
        """The current time in UTC, as a zone-less timestamp (the backups table's `taken_at` is UTC)."""
        return "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')" if self.postgres else "SYSUTCDATETIME()"

    # ------------------------------------------------------------ PostgreSQL: table-copy backups
    def copy_table(self, source: str, target: str) -> list[str]:
        """PostgreSQL only: a copy with the source's columns, keys and defaults, then its rows."""
        self._postgres_only("a table-copy backup")
        s, t = self.quote(source), self.quote(target)
        return [f"CREATE TABLE {t} (LIKE {s} INCLUDING ALL)", f"INSERT INTO {t} SELECT * FROM {s}"]

    def refill_table(self, source: str, target: str) -> list[str]:
        """PostgreSQL only: ``target``'s rows replaced by ``source``'s (the table itself, its defaults
        and sequences, kept)."""
        self._postgres_only("a table-copy restore")
        s, t = self.quote(source), self.quote(target)
        return [f"DELETE FROM {t}", f"INSERT INTO {t} SELECT * FROM {s}"]

    def drop_table_if_exists(self, table: str) -> str:
        return f"DROP TABLE IF EXISTS {self.quote(table)}"

    # ------------------------------------------------------------ SQL Server: native backups to a file
    def backup_database(self, database: str, path: str, backup_id: str, schema_version: str | None) -> str:
        """The file carries its own record: NAME is the backup id, DESCRIPTION the schema version."""
        self._mssql_only("BACKUP DATABASE")
        description = f"uwm-upgrade schema_version={schema_version or ''}"
        return (f"BACKUP DATABASE {self.quote(database)} TO DISK = N'{_literal(path)}' WITH CHECKSUM, INIT, "
                f"COPY_ONLY, NAME = N'{_literal(backup_id)}', DESCRIPTION = N'{_literal(description)}'")

    def backup_header(self, path: str) -> str:
        self._mssql_only("RESTORE HEADERONLY")
        return f"RESTORE HEADERONLY FROM DISK = N'{_literal(path)}'"

    def verify_backup(self, path: str) -> str:
        self._mssql_only("RESTORE VERIFYONLY")
        return f"RESTORE VERIFYONLY FROM DISK = N'{_literal(path)}' WITH CHECKSUM"

    def restore_database(self, database: str, path: str) -> str:
        """One batch: single user, RESTORE, multi user; whatever fails, the database is put back to
        MULTI_USER when it is online and the error is raised again as it was. A database left RESTORING
        by a restore that died half way has no users to send away or let in: it is restored as it is."""
        self._mssql_only("RESTORE DATABASE")
        db, name = self.quote(database), _literal(database)
        multi_user = f"ALTER DATABASE {db} SET MULTI_USER"
        return (
            "BEGIN TRY\n"
            f"  IF DATABASEPROPERTYEX(N'{name}', 'Status') = 'ONLINE'\n"
            f"    ALTER DATABASE {db} SET SINGLE_USER WITH ROLLBACK IMMEDIATE;\n"
            f"  RESTORE DATABASE {db} FROM DISK = N'{_literal(path)}' WITH REPLACE, CHECKSUM;\n"
            f"  {multi_user};\n"
            "END TRY\n"
            "BEGIN CATCH\n"
            f"  IF DATABASEPROPERTYEX(N'{name}', 'Status') = 'ONLINE'"
            f" AND DATABASEPROPERTYEX(N'{name}', 'UserAccess') <> 'MULTI_USER'\n"
            f"    {multi_user};\n"
            "  THROW;\n"
            "END CATCH"
        )

    def user_access(self) -> str:
        self._mssql_only("sys.databases")
        return "SELECT user_access_desc FROM sys.databases WHERE name = ?"

    def _postgres_only(self, what: str) -> None:
        if not self.postgres:
            raise ValueError(f"{what} is how PostgreSQL is backed up; SQL Server uses BACKUP DATABASE")

    def _mssql_only(self, what: str) -> None:
        if self.postgres:
            raise ValueError(f"{what} exists only on SQL Server")


def _literal(text: str) -> str:
    """Text inside an N'...' literal."""
    if "\x00" in text:
        raise ValueError("NUL in a SQL literal")
    return text.replace("'", "''")
