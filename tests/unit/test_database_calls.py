"""How the database adapter runs pyodbc, against a fake driver: every failure a DatabaseError, deadlines,
one persistent connection per database, its own threads, and long jobs started once and then polled."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyodbc
import pytest

from uwm_upgrade.adapters import db_session
from uwm_upgrade.adapters.database import Database, DatabaseError, DatabaseLimits
from uwm_upgrade.adapters.odbc import OdbcString
from uwm_upgrade.adapters.sql_dialect import Dialect, dialect_of

PG = "DRIVER={PostgreSQL Unicode};SERVER=db.corp;PORT=5432;DATABASE=mgmt;UID=uwm;PWD=s3cr3t-pw"
MS = "DRIVER={ODBC Driver 18 for SQL Server};SERVER=sql.corp,1433;DATABASE=uwm-mgmt;UID=sa;PWD=s3cr3t-pw"
FAST = DatabaseLimits(login_seconds=0.05, statement_seconds=0.05, call_margin_seconds=0.3, job_wait_seconds=0.3)
TABLES = ["uwm_migrations", "uwm_schema_info", "uwm_schema_lock", "uwm_user_data"]


class Cursor:
    def __init__(self, rows: list[tuple[Any, ...]], sql: str = "") -> None:
        self.rows, self.description, self.closed = rows, None, False
        if sql.startswith("RESTORE HEADERONLY"):
            self.description = [(n,) for n in ("BackupName", "BackupDescription", "DatabaseName", "BackupFinishDate")]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeDriver:
    """Answers the adapter's SQL from a few values; can fail, hang (for some threads) or break."""

    version: Any = "2021.1"
    holder: Any = None
    tables: list[str] = field(default_factory=lambda: list(TABLES))
    backups: dict[str, list[Any]] = field(default_factory=dict)
    connects: list[dict[str, Any]] = field(default_factory=list)
    statements: list[tuple[str, str]] = field(default_factory=list)  # (thread name, sql)
    fail_next: BaseException | None = None
    connect_error: BaseException | None = None
    rollback_error: BaseException | None = None
    close_error: BaseException | None = None
    hang: threading.Event = field(default_factory=threading.Event)  # set: statements of `hang_prefix` threads wait
    released: threading.Event = field(default_factory=threading.Event)
    hang_prefix: str = "uwm-db"
    broken: bool = False
    conns: list[Conn] = field(default_factory=list)

    def connect(self, text: str, autocommit: bool = False, timeout: int = 0) -> Conn:
        self.connects.append({"autocommit": autocommit, "timeout": timeout, "text": text})
        if self.connect_error is not None:
            raise self.connect_error
        conn = Conn(self, postgres="PostgreSQL" in text)
        self.conns.append(conn)
        return conn

    def answer(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if sql.startswith("RESTORE HEADERONLY"):  # SQL Server: the backup file's own record
            return [("plan-h1", "uwm-upgrade schema_version=2021.1", "uwm mgmt", datetime(2026, 1, 1))]
        if "FROM sys.databases" in sql:
            return [("MULTI_USER",)]
        if "FROM uwm_schema_lock" in sql:
            return [(self.holder,)]
        if "FROM uwm_schema_info" in sql:
            return [(self.version,)]
        if "information_schema.tables" in sql:
            return [(t,) for t in sorted(self.tables)]
        if "FROM uwm_migrations" in sql:
            return [("2021.1",)]
        if "information_schema.columns" in sql:
            return [("id", "integer")]
        if sql.startswith("SELECT COUNT"):
            return [(1, "digest")]
        if created := re.match(r'CREATE TABLE (?:IF NOT EXISTS )?"?(\w+)"?', sql):
            self.tables.append(created.group(1))
        if sql.startswith("INSERT INTO uwm_backups"):
            self.backups[params[0]] = [params[0], None, *params[1:]]
        if sql.startswith("UPDATE uwm_backups SET verified"):
            self.backups[params[1]][4] = params[0]
        if "FROM uwm_backups WHERE id = ?" in sql:
            return [tuple(self.backups[params[0]])] if params[0] in self.backups else []
        return []


class Conn:
    def __init__(self, driver: FakeDriver, postgres: bool) -> None:
        self.driver, self.postgres, self.broken = driver, postgres, False
        self.query_timeout: int | None = None

    @property
    def timeout(self) -> int | None:
        return self.query_timeout

    @timeout.setter
    def timeout(self, seconds: int) -> None:
        if self.postgres:  # what psqlODBC answers
            raise pyodbc.Error("HY000", "[HY000] Couldn't set unsupported connect attribute 113 (216)")
        self.query_timeout = seconds

    def execute(self, sql: str, *params: Any) -> Cursor:
        name = threading.current_thread().name
        self.driver.statements.append((name, sql))
        if self.driver.hang.is_set() and name.startswith(self.driver.hang_prefix):
            self.driver.released.wait(10)
        if self.broken:
            raise pyodbc.Error("08S01", "[08S01] server closed the connection unexpectedly")
        if self.driver.fail_next is not None:
            exc, self.driver.fail_next = self.driver.fail_next, None
            raise exc
        return Cursor(self.driver.answer(sql, params), sql)

    def commit(self) -> None:
        if self.broken:
            raise pyodbc.Error("08S01", "[08S01] no connection to the server")

    def rollback(self) -> None:
        if self.driver.rollback_error is not None:
            raise self.driver.rollback_error

    def close(self) -> None:
        if self.driver.close_error is not None:
            raise self.driver.close_error


@pytest.fixture(autouse=True)
def _fresh_sessions() -> Iterator[None]:
    db_session.close_all()
    yield
    db_session.close_all()


def _db(driver: FakeDriver, cs: str = PG, name: str = "mgmt-db", limits: DatabaseLimits = FAST) -> Database:
    return Database(name, cs, limits=limits, connect=driver.connect)


def _assert_secret_free(err: DatabaseError) -> None:
    for text in (str(err), repr(err), repr(err.args)):
        assert "s3cr3t-pw" not in text and "db.corp" not in text and "sql.corp" not in text


@pytest.mark.parametrize(("cs", "says"), [
    ("DRIVER={Oracle};SERVER=db.corp;PWD=s3cr3t-pw", "names the ODBC driver 'Oracle'"),
    ("DRIVER={PostgreSQL Unicode;SERVER=db.corp;PWD=s3cr3t-pw", "opens '{' and never closes it"),
    ("SERVER=db.corp;PWD=s3cr3t-pw", "names no DRIVER"),
])
async def test_a_bad_connection_string_is_reported_by_the_first_call_not_the_constructor(cs: str, says: str) -> None:
    """`Database()` used to raise ValueError before any status write: the plan stayed Pending, silent."""
    driver = FakeDriver()
    db = _db(driver, cs)
    assert "s3cr3t" not in repr(db)
    with pytest.raises(DatabaseError, match=re.escape(says)) as err:
        await db.snapshot([])
    assert not err.value.transient and err.value.database == "mgmt-db"
    _assert_secret_free(err.value)
    assert driver.connects == []


async def test_a_driver_that_is_not_installed_is_a_clear_permanent_error() -> None:
    driver = FakeDriver(connect_error=pyodbc.Error(
        "01000", "[01000] [unixODBC][Driver Manager]Can't open lib 'ODBC Driver 18 for SQL Server' : file not found"))
    with pytest.raises(DatabaseError, match="ODBC driver named in the connection string is not installed") as err:
        await _db(driver, MS).snapshot([])
    assert not err.value.transient


async def test_one_persistent_connection_with_postgres_own_statement_timeout() -> None:
    driver = FakeDriver()
    db = _db(driver, limits=DatabaseLimits())
    for _ in range(3):
        assert (await db.snapshot([])).schema_version == "2021.1"
    again = Database("mgmt-db", PG, connect=driver.connect)  # the engine builds a Database every turn
    assert (await again.snapshot([])).migrations == ("2021.1",)
    assert len(driver.connects) == 1
    assert driver.connects[0]["timeout"] == 10 and driver.connects[0]["autocommit"] is False  # login timeout
    assert [sql for _, sql in driver.statements].count("SET statement_timeout = 30000") == 1


async def test_sql_server_gets_the_connection_timeout_attribute_instead() -> None:
    driver = FakeDriver()
    await _db(driver, MS, limits=DatabaseLimits()).snapshot([])
    assert driver.conns[0].query_timeout == 30
    assert not any("statement_timeout" in sql for _, sql in driver.statements)
    assert [sql for _, sql in driver.statements][-1] == "SET TRANSACTION ISOLATION LEVEL READ COMMITTED"


async def test_query_rollback_and_close_errors_are_all_database_errors_and_the_connection_is_renewed() -> None:
    driver = FakeDriver()
    db = _db(driver)
    await db.snapshot([])
    driver.fail_next = pyodbc.Error("42P01", '[42P01] ERROR: relation "uwm_schema_lock" does not exist')
    driver.rollback_error = pyodbc.Error("08S01", "[08S01] could not send data to db.corp")
    driver.close_error = pyodbc.Error("HY010", "[HY010] function sequence error")
    with pytest.raises(DatabaseError, match=r"\[42P01\].*uwm_schema_lock") as err:
        await db.snapshot([])
    assert not isinstance(err.value, pyodbc.Error) and not err.value.transient
    driver.rollback_error = driver.close_error = None
    assert (await db.snapshot([])).schema_version == "2021.1"
    assert len(driver.connects) == 2


async def test_a_dead_persistent_connection_is_replaced_at_once() -> None:
    driver = FakeDriver()
    db = _db(driver)
    await db.snapshot([])
    driver.conns[0].broken = True  # the server restarted under it
    assert (await db.snapshot([])).schema_version == "2021.1"
    assert len(driver.connects) == 2


async def test_a_database_that_is_down_is_a_clear_transient_error() -> None:
    driver = FakeDriver(connect_error=pyodbc.Error(
        "08001", '[08001] connection to server at "db.corp", port 5432 failed: Connection refused'))
    with pytest.raises(DatabaseError, match=r"\[08001\].*Connection refused") as err:
        await _db(driver).snapshot([])
    assert err.value.transient
    _assert_secret_free(err.value)


@pytest.mark.parametrize(("value", "says"), [(b"2021.1", "binary data"), (bytearray(b"\xff\xfe"), "binary data"),
                                             ("2021.1\x1b[2J", "characters that are not printable")])
async def test_a_binary_or_unprintable_value_is_refused_never_echoed(value: Any, says: str) -> None:
    with pytest.raises(DatabaseError, match=f"uwm_schema_info.schema_version holds {says}") as err:
        await _db(FakeDriver(version=value)).snapshot([])
    assert not err.value.transient and "\x1b" not in str(err.value)


async def test_text_that_cannot_be_decoded_is_a_database_error() -> None:
    driver = FakeDriver()
    driver.fail_next = UnicodeDecodeError("utf-16-le", b"\x00\xd8", 0, 2, "unexpected end of data")
    with pytest.raises(DatabaseError, match="cannot be decoded"):
        await _db(driver).snapshot([])


async def test_every_call_has_a_deadline_and_runs_on_the_adapters_own_threads() -> None:
    driver = FakeDriver()
    db = _db(driver)
    driver.hang.set()
    start = time.monotonic()
    with pytest.raises(DatabaseError, match="no answer in time") as err:
        await db.snapshot([])
    assert err.value.transient and time.monotonic() - start < FAST.call_seconds + 1.0
    with pytest.raises(DatabaseError, match="previous call to this database has not returned"):
        await db.snapshot([])  # the hung call still holds the connection: said, not queued behind it
    driver.released.set()
    driver.hang.clear()
    await asyncio.sleep(0)
    assert {name.split("_")[0] for name, _ in driver.statements} == {"uwm-db"}


async def test_a_slow_backup_never_delays_another_plans_calls_and_is_polled_not_restarted() -> None:
    driver = FakeDriver(hang_prefix="uwm-db-job")
    driver.hang.set()
    slow = [_db(driver, PG.replace("mgmt", f"db{i}"), name=f"db-{i}") for i in range(3)]
    for i, db in enumerate(slow):  # more backups than job threads: some wait in the queue
        with pytest.raises(DatabaseError, match=rf"the backup of plan{i}-h1 is still running \(started") as err:
            await db.backup(f"plan{i}-h1")
        assert err.value.transient
    start = time.monotonic()
    assert (await _db(driver, PG.replace("mgmt", "other"), name="other").snapshot([])).schema_version == "2021.1"
    assert time.monotonic() - start < 1.0  # short calls have threads of their own
    driver.released.set()
    infos = [await _poll(db, f"plan{i}-h1") for i, db in enumerate(slow)]
    assert all(info.verified for info in infos)
    taken = [sql for _, sql in driver.statements if sql.startswith("INSERT INTO uwm_backups")]
    assert len(taken) == 3  # one backup per database: polling never started a second
    assert {name.split("_")[0] for name, sql in driver.statements if "uwm_backup" in sql} == {"uwm-db-job"}


async def _poll(db: Database, backup_id: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        try:
            return await db.backup(backup_id)
        except DatabaseError as exc:
            if not exc.transient or time.monotonic() > deadline:
                raise


async def test_an_invalid_backup_id_is_a_database_error() -> None:
    with pytest.raises(DatabaseError, match="invalid backup id"):
        await _db(FakeDriver()).snapshot(["Not An Id"])


async def test_any_other_failure_is_a_database_error_that_says_what_it_was() -> None:
    driver = FakeDriver()
    driver.fail_next = ValueError("the backup table for 'uwm_x' would be named beyond 63 characters (db.corp)")
    with pytest.raises(DatabaseError, match=r"ValueError: the backup table .* beyond 63 characters \(\*\*\*\)") as err:
        await _db(driver).snapshot([])
    assert not err.value.transient


async def test_a_sql_server_restore_runs_from_master_however_database_was_written() -> None:
    """The master switch was a regex on `DATABASE=`: `Database = {uwm mgmt}` stayed in its own database."""
    driver = FakeDriver()
    cs = "Driver={ODBC Driver 18 for SQL Server};Server=sql.corp,1433;Database = {uwm mgmt} ;UID=sa;PWD={s3cr3t-pw}"
    await Database("mgmt-db", cs, backup_directory="/b", limits=FAST, connect=driver.connect).restore("plan-h1")
    restores = [sql for _, sql in driver.statements if "RESTORE DATABASE" in sql]
    assert len(restores) == 1 and "RESTORE DATABASE [uwm mgmt] FROM DISK = N'/b/mgmt-db-plan-h1.bak'" in restores[0]
    databases = [OdbcString.parse(c["text"]).get("DATABASE") for c in driver.connects]
    assert "master" in databases and set(databases) == {"master", "uwm mgmt"}
    assert all(c["autocommit"] for c in driver.connects)  # RESTORE cannot run in a transaction


def test_every_cursor_of_a_call_is_closed_before_the_connection_is_given_up() -> None:
    # A cursor kept alive by a traceback was freed later on another thread, while the connection served
    # (or closed for) the next call: unixODBC crashes on that (SIGSEGV in SQLFreeHandle). A call's
    # cursors are closed before it returns or raises, whether or not its connection is kept.
    driver = FakeDriver()
    odbc = OdbcString.parse(PG)
    session = db_session.Session(odbc, Dialect(dialect_of(odbc)), FAST, driver.connect)
    kept: list[Cursor] = []

    def reads(conn: Any) -> Any:
        kept.append(conn.execute("SELECT schema_version FROM uwm_schema_info"))
        return kept[-1].fetchone()

    def refuses(conn: Any) -> None:  # not a driver error: the connection is kept for the next call
        kept.append(conn.execute("SELECT holder FROM uwm_schema_lock"))
        raise ValueError("an unexpected value")

    assert session.run(reads) == ("2021.1",)
    with pytest.raises(ValueError, match="unexpected value"):
        session.run(refuses)
    assert [c.closed for c in kept] == [True, True]
    assert session.run(reads) == ("2021.1",) and len(driver.connects) == 1



async def test_an_old_verification_nobody_collected_is_made_again_for_the_next_gate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema upgrade's gate verifies the backup beside the status write before it; when that write
    fails the gate is dropped, but its verification runs on in a job thread and finishes with nobody to
    collect it. A later gate must verify again, not take that old result."""
    driver = FakeDriver(hang_prefix="uwm-db-job")
    db = _db(driver)
    await db.backup("plan-h1")
    verifying = [sql for _, sql in driver.statements if "FROM uwm_backups WHERE id = ?" in sql]
    driver.hang.set()  # the next verification waits in its thread
    gate = asyncio.ensure_future(db.verify_backup("plan-h1"))
    await asyncio.sleep(0.05)
    gate.cancel()  # the write before the migration failed: the gate is dropped
    with pytest.raises(asyncio.CancelledError):
        await gate
    driver.released.set()  # the verification ends, uncollected
    deadline = time.monotonic() + 10
    while not all(job.future.done() for job in db_session._JOBS.values()):
        assert time.monotonic() < deadline, "the verification never ended"
        await asyncio.sleep(0.01)
    # and it is old by the time the next gate comes
    monkeypatch.setattr(db_session, "FRESH_SECONDS", 0.0, raising=False)
    await asyncio.sleep(0.01)
    before = len([sql for _, sql in driver.statements if "FROM uwm_backups WHERE id = ?" in sql])
    info = await db.verify_backup("plan-h1")
    after = len([sql for _, sql in driver.statements if "FROM uwm_backups WHERE id = ?" in sql])
    assert info is not None and info.verified
    assert after > before > len(verifying), (len(verifying), before, after)  # verified again, now
