"""SQL Server backups: `BACKUP DATABASE ... WITH CHECKSUM` to a file, `RESTORE VERIFYONLY`, `RESTORE DATABASE`.

Why the file is the record: a restore replaces the whole database, `uwm_backups` included, and a restore
that died half way leaves the database unusable; a record kept inside it would be gone exactly when it
is needed, and a retry refused as "missing". So the backup file carries its own record (NAME = the
backup id, DESCRIPTION = the schema version it was taken at), read with `RESTORE HEADERONLY` through
`master`, and `uwm_backups` is only the copy the operator polls, written again after every verification
and restore. The restore runs from `master` as one batch that always lets users back in (see
`Dialect.restore_database`), then checks the schema version the restored database reports.
"""

from __future__ import annotations

from typing import Any

import pyodbc

from .db_records import BackupInfo, exec_drained, read_version, utc, write_record
from .db_session import RefusalError, Session, close_quietly, text_value
from .sql_dialect import Dialect

_DESCRIPTION = "uwm-upgrade schema_version="
_MISSING_FILE = ("3201", "cannot open backup device", "operating system error 2")


def backup_path(directory: str, name: str, backup_id: str) -> str:
    return f"{directory.rstrip('/')}/{name}-{backup_id}.bak"


def _database(session: Session) -> str:
    name = (session.odbc.get("DATABASE") or "").strip()
    if not name:
        raise RefusalError("the connection string names no DATABASE (SQL Server backs up a named database)")
    return name


def _open(session: Session, database: str | None = None) -> Any:
    return session.open(session.limits.job_statement_seconds, autocommit=True, database=database)


def _header(conn: Any, d: Dialect, path: str) -> dict[str, Any] | None:
    """The first backup set's header of the file, by column name; None when there is no such file."""
    try:
        cur = conn.execute(d.backup_header(path))
    except pyodbc.Error as exc:
        text = str(exc.args[-1]).lower() if exc.args else ""
        if any(mark in text for mark in _MISSING_FILE):
            return None
        raise
    row = cur.fetchone()
    names = [c[0] for c in cur.description or ()]
    while cur.nextset():
        pass
    return None if row is None else dict(zip(names, row, strict=False))


def _verifies(conn: Any, d: Dialect, path: str) -> bool:
    try:
        exec_drained(conn, d.verify_backup(path))
    except pyodbc.Error as exc:
        state = str(exc.args[0]) if exc.args else ""
        if state.startswith(("08", "HYT")):  # the server went away: that says nothing of the file
            raise
        return False
    return True


def find(session: Session, d: Dialect, path: str, backup_id: str) -> BackupInfo | None:
    """The backup ``backup_id`` as its file says, verified now; None when no file holds it."""
    database = _database(session)
    conn = _open(session, "master")
    try:
        header = _header(conn, d, path)
        if header is None or text_value(header.get("BackupName"), "the backup's name") != backup_id \
                or str(text_value(header.get("DatabaseName"), "the backup's database")).lower() != database.lower():
            return None
        description = text_value(header.get("BackupDescription"), "the backup's description") or ""
        version = description.removeprefix(_DESCRIPTION) if description.startswith(_DESCRIPTION) else None
        return BackupInfo(backup_id, utc(header.get("BackupFinishDate")), version or None, path,
                          _verifies(conn, d, path))
    finally:
        close_quietly(conn)


def _record(session: Session, d: Dialect, info: BackupInfo) -> None:
    conn = _open(session)
    try:
        write_record(conn, d, info, [])
    finally:
        close_quietly(conn)


def verify(session: Session, d: Dialect, path: str, backup_id: str) -> BackupInfo | None:
    """`find`, and the operator's copy of the record set to what was found."""
    info = find(session, d, path, backup_id)
    if info is not None:
        _record(session, d, info)
    return info


def take(session: Session, d: Dialect, path: str, backup_id: str) -> BackupInfo | None:
    """BACKUP DATABASE (the file named by the id, its header the record), then verified."""
    database = _database(session)
    conn = _open(session)
    try:
        version = read_version(conn, d)
        exec_drained(conn, d.backup_database(database, path, backup_id, version))
    finally:
        close_quietly(conn)
    return verify(session, d, path, backup_id)


def restore(session: Session, d: Dialect, path: str, backup_id: str) -> BackupInfo:
    """RESTORE DATABASE from `master` (refused unless the file verifies), then check what it gave."""
    database = _database(session)
    found = find(session, d, path, backup_id)
    if found is None or not found.verified:
        state = "is missing; not restoring" if found is None else \
            "does not verify; not restoring (RESTORE VERIFYONLY failed)"
        raise RefusalError(f"backup {backup_id} {state}")
    session.drop_later()
    conn = _open(session, "master")
    try:
        exec_drained(conn, d.restore_database(database, path))
        access = conn.execute(d.user_access(), database).fetchone()
    finally:
        close_quietly(conn)
    if access is None or text_value(access[0], "the database's user access") != "MULTI_USER":
        raise RefusalError(f"after restoring backup {backup_id} the database does not let users in (not MULTI_USER)")
    conn = _open(session)
    try:
        version = read_version(conn, d)
        if version != found.schema_version:
            raise RefusalError(f"after restoring backup {backup_id} the schema version is {version}, not"
                          f" {found.schema_version} (the hop's start) as the backup recorded")
        write_record(conn, d, found, [])
    finally:
        close_quietly(conn)
    return found
