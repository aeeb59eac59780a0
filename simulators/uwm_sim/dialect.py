"""The one seam where SQL differs between PostgreSQL and SQL Server.

Why a seam: the simulators run on PostgreSQL here and on SQL Server in production-like clusters. All
other SQL in the package is written in the common subset (`?` parameters, plain INSERT/UPDATE/SELECT);
only types, create-if-missing, locking and paging differ, and they are built here, from small methods
whose output is unit-tested for both dialects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Logical column types used by the table definitions; each dialect maps them.
TYPES = ("int", "bigint", "float", "bool", "text", "timestamp")


def ident(name: str) -> str:
    """Table and column names are code constants; refuse anything that is not a plain identifier."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "int", "bigint", "float", "bool", "text", "timestamp", or "varchar(N)"
    primary_key: bool = False
    nullable: bool = True


class Dialect:
    """Base: the SQL both dialects share; subclasses override what differs."""

    name = "base"
    type_map: dict[str, str] = {}

    def column_type(self, logical: str) -> str:
        if logical.startswith("varchar("):
            return logical.upper()
        return self.type_map[logical]

    def column_sql(self, col: Column) -> str:
        parts = [ident(col.name), self.column_type(col.type)]
        if col.primary_key:
            parts.append("PRIMARY KEY")
        elif not col.nullable:
            parts.append("NOT NULL")
        return " ".join(parts)

    def create_table(self, table: str, columns: tuple[Column, ...]) -> str:
        raise NotImplementedError

    def drop_table(self, table: str) -> str:
        raise NotImplementedError

    def ddl_lock(self) -> str:
        """Serialises concurrent schema creation by several simulator processes (held to commit)."""
        raise NotImplementedError

    def table_lock(self, table: str) -> str:
        """Blocks other writers of `table` until commit (readers may still read)."""
        raise NotImplementedError

    def select_page(self, columns: str, table: str, where: str, order_by: str, limit: int) -> str:
        raise NotImplementedError

    def savepoint(self, name: str) -> str:
        return f"SAVEPOINT {ident(name)}"

    def rollback_to_savepoint(self, name: str) -> str:
        return f"ROLLBACK TO SAVEPOINT {ident(name)}"

    def release_savepoint(self, name: str) -> str | None:
        """The statement that lets a savepoint go, None when there is none to run."""
        return f"RELEASE SAVEPOINT {ident(name)}"

    def list_tables(self, prefix: str) -> str:
        raise NotImplementedError


class PostgresDialect(Dialect):
    name = "postgresql"
    type_map = {"int": "INTEGER", "bigint": "BIGINT", "float": "DOUBLE PRECISION", "bool": "BOOLEAN",
                "text": "TEXT", "timestamp": "TIMESTAMP"}

    def create_table(self, table: str, columns: tuple[Column, ...]) -> str:
        cols = ", ".join(self.column_sql(c) for c in columns)
        return f"CREATE TABLE IF NOT EXISTS {ident(table)} ({cols})"

    def drop_table(self, table: str) -> str:
        return f"DROP TABLE IF EXISTS {ident(table)}"

    def ddl_lock(self) -> str:
        return "SELECT pg_advisory_xact_lock(77517771)"

    def table_lock(self, table: str) -> str:
        return f"LOCK TABLE {ident(table)} IN EXCLUSIVE MODE"

    def select_page(self, columns: str, table: str, where: str, order_by: str, limit: int) -> str:
        return f"SELECT {columns} FROM {ident(table)} WHERE {where} ORDER BY {order_by} LIMIT {int(limit)}"

    def list_tables(self, prefix: str) -> str:
        return ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                f"AND table_name LIKE '{ident(prefix)}%'")


class SqlServerDialect(Dialect):
    name = "mssql"
    type_map = {"int": "INT", "bigint": "BIGINT", "float": "FLOAT", "bool": "BIT",
                "text": "NVARCHAR(MAX)", "timestamp": "DATETIME2"}

    def column_type(self, logical: str) -> str:
        if logical.startswith("varchar("):
            return "N" + logical.upper()
        return self.type_map[logical]

    def create_table(self, table: str, columns: tuple[Column, ...]) -> str:
        cols = ", ".join(self.column_sql(c) for c in columns)
        t = ident(table)
        return f"IF OBJECT_ID(N'{t}', N'U') IS NULL CREATE TABLE {t} ({cols})"

    def drop_table(self, table: str) -> str:
        t = ident(table)
        return f"IF OBJECT_ID(N'{t}', N'U') IS NOT NULL DROP TABLE {t}"

    def ddl_lock(self) -> str:
        return ("EXEC sp_getapplock @Resource = N'uwm_sim_ddl', @LockMode = N'Exclusive', "
                "@LockOwner = N'Transaction', @LockTimeout = 30000")

    def table_lock(self, table: str) -> str:
        return f"SELECT COUNT(*) FROM {ident(table)} WITH (TABLOCKX, HOLDLOCK)"

    def savepoint(self, name: str) -> str:
        return f"SAVE TRANSACTION {ident(name)}"

    def rollback_to_savepoint(self, name: str) -> str:
        return f"ROLLBACK TRANSACTION {ident(name)}"

    def release_savepoint(self, name: str) -> str | None:
        return None  # T-SQL keeps savepoints until the transaction ends; saving one again replaces it

    def select_page(self, columns: str, table: str, where: str, order_by: str, limit: int) -> str:
        return f"SELECT TOP ({int(limit)}) {columns} FROM {ident(table)} WHERE {where} ORDER BY {order_by}"

    def list_tables(self, prefix: str) -> str:
        return f"SELECT name FROM sys.tables WHERE name LIKE '{ident(prefix)}%'"


DIALECTS: dict[str, Dialect] = {"postgresql": PostgresDialect(), "mssql": SqlServerDialect()}


def detect(connection_string: str, explicit: str | None = None) -> Dialect:
    """The dialect named in the configuration, else the one the ODBC driver implies."""
    if explicit:
        try:
            return DIALECTS[explicit]
        except KeyError:
            raise ValueError(f"unknown dialect {explicit!r} (one of {', '.join(DIALECTS)})") from None
    match = re.search(r"DRIVER\s*=\s*\{?([^;}]*)", connection_string, re.IGNORECASE)
    driver = (match.group(1) if match else "").lower()
    if "postgres" in driver:
        return DIALECTS["postgresql"]
    if "sql server" in driver or "freetds" in driver or "tds" in driver:
        return DIALECTS["mssql"]
    raise ValueError("cannot tell the SQL dialect from the ODBC driver; set `dialect: postgresql|mssql`")
