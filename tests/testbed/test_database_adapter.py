"""The operator's database adapter against the test bed's real PostgreSQL: one consistent snapshot, backups
that are verified before they are called so (and again before a migration), restores that check what they
did, deadlines, and errors that say what is wrong."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pyodbc
import pytest

from uwm_dev.testbed import postgres
from uwm_dev.testbed.bed import Testbed
from uwm_upgrade.adapters.database import Database, DatabaseError, DatabaseLimits

SEED = [
    "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version VARCHAR(64), updated_at TIMESTAMP)",
    "CREATE TABLE uwm_schema_lock (id INT PRIMARY KEY, holder VARCHAR(128) NULL, acquired_at TIMESTAMP NULL)",
    "CREATE TABLE uwm_user_data (id INT PRIMARY KEY, owner VARCHAR(128), item VARCHAR(256), value TEXT)",
    "CREATE TABLE uwm_migrations (version VARCHAR(64) PRIMARY KEY, applied_at TIMESTAMP, applied_by VARCHAR(128))",
    "INSERT INTO uwm_schema_info VALUES (1, '2021.1', CURRENT_TIMESTAMP)",
    "INSERT INTO uwm_schema_lock VALUES (1, NULL, NULL)",
    "INSERT INTO uwm_migrations VALUES ('2021.1', CURRENT_TIMESTAMP, 'installer')",
]


def _sql(cs: str, *statements: str) -> None:
    conn = pyodbc.connect(cs, autocommit=True)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _seed(cs: str, rows: int = 50) -> None:
    conn = pyodbc.connect(cs, autocommit=True)
    for stmt in SEED:
        conn.execute(stmt)
    conn.cursor().executemany("INSERT INTO uwm_user_data VALUES (?, ?, ?, ?)",
                     [(i, f"user{i % 7}", f"item{i}", f"value {i} ✓") for i in range(rows)])
    conn.close()


def _migrate_badly(cs: str) -> None:
    """What a half-done schema upgrade leaves: new column, new table, changed rows, newer version."""
    _sql(cs, "ALTER TABLE uwm_user_data ADD COLUMN flags INT DEFAULT 0",
         "UPDATE uwm_user_data SET value = 'lost' WHERE id < 10",
         "DELETE FROM uwm_user_data WHERE id > 40",
         "CREATE TABLE uwm_new_feature (id INT PRIMARY KEY)",
         "UPDATE uwm_schema_info SET schema_version = '2022.1'",
         "UPDATE uwm_schema_lock SET holder = 'ms-1'")


async def test_backup_restore_round_trip(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    before = await db.table_checksum("uwm_user_data")
    info = await db.backup("plan1-h1")
    assert info.verified and info.schema_version == "2021.1"

    _migrate_badly(new_database)
    assert await db.schema_version() == "2022.1"
    assert await db.lock_holder() == "ms-1"
    assert await db.table_checksum("uwm_user_data") != before

    await db.restore("plan1-h1")
    assert await db.schema_version() == "2021.1"
    assert await db.lock_holder() is None
    assert await db.table_checksum("uwm_user_data") == before
    conn = pyodbc.connect(new_database)
    tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema='public'").fetchall()}
    cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                        "table_name='uwm_user_data' ORDER BY ordinal_position").fetchall()]
    conn.close()
    assert "uwm_new_feature" not in tables
    assert cols == ["id", "owner", "item", "value"]


async def test_backup_is_idempotent_by_id(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    first = await db.backup("plan1-h1")
    again = await db.backup("plan1-h1")
    assert again.taken_at == first.taken_at  # found, not retaken
    assert again.checksum == first.checksum


async def test_unusable_backup_is_detected_and_retaken(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    first = await db.backup("plan1-h1")
    _sql(new_database, "DELETE FROM uwm_backup_plan1_h1_user_data WHERE id = 3")
    found = await db.find_backup("plan1-h1")
    assert found is not None and not found.verified
    with pytest.raises(DatabaseError, match="does not verify; not restoring"):
        await db.restore("plan1-h1")
    retaken = await db.backup("plan1-h1")
    assert retaken.verified and retaken.checksum == first.checksum


async def test_missing_backup_is_reported(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    assert await db.find_backup("nope") is None
    with pytest.raises(DatabaseError, match="nope is missing"):
        await db.restore("nope")


async def test_errors_never_carry_the_connection_string(pg_bed: object) -> None:
    cs = postgres.odbc_connection_string(1, "uwm").replace(postgres.PASSWORD, "s3cr3t-Pa55")
    db = Database("pers-db", cs)
    with pytest.raises(DatabaseError) as err:
        await db.schema_version()
    assert err.value.transient
    text = str(err.value)
    assert "s3cr3t-Pa55" not in text and "pers-db" in text
    assert "s3cr3t" not in repr(db)


async def test_backup_time_is_utc_and_says_so(new_database: str) -> None:
    _seed(new_database)
    before = datetime.now(UTC)
    info = await Database("mgmt-db", new_database).backup("plan1-h1")
    assert info.taken_at is not None and info.taken_at.tzinfo is not None  # recorded as it is, not guessed
    assert abs((info.taken_at - before).total_seconds()) < 60


async def test_snapshot_reads_everything_the_operator_polls_in_one_go(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    empty = await db.snapshot(["plan1-h1"])
    assert (empty.schema_version, empty.lock_holder, empty.backups) == ("2021.1", None, ())  # no uwm_backups yet
    conn = pyodbc.connect(new_database)
    assert conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'uwm_backups'"
                        ).fetchone()[0] == 0  # looking created nothing
    conn.close()
    taken = await db.backup("plan1-h1")
    _migrate_badly(new_database)
    seen = await db.snapshot(["plan1-h1", "plan1-h2"])
    assert (seen.schema_version, seen.lock_holder) == ("2022.1", "ms-1")
    assert [(b.id, b.verified, b.taken_at) for b in seen.backups] == [("plan1-h1", True, taken.taken_at)]


# ---------------------------------------------------------------- one consistent snapshot


def _migrating_writer(cs: str, stop: threading.Event, errors: list[BaseException]) -> None:
    """A server migrating two releases per lock, as the simulators do (lock, one commit per step, release):
    a state without a lock only ever has an even release, and a holder `ms-<n>` migrates from release n."""
    try:
        conn = pyodbc.connect(cs)
        n = 0
        while not stop.is_set():
            conn.execute("UPDATE uwm_schema_lock SET holder = ? WHERE id = 1", f"ms-{n}")
            conn.commit()
            for step in (n + 1, n + 2):
                conn.execute("INSERT INTO uwm_migrations VALUES (?, CURRENT_TIMESTAMP, 'ms')", f"{step:06d}")
                conn.execute("UPDATE uwm_schema_info SET schema_version = ? WHERE id = 1", f"{step:06d}")
                conn.commit()
            conn.execute("UPDATE uwm_schema_lock SET holder = NULL WHERE id = 1")
            conn.commit()
            n += 2
        conn.close()
    except BaseException as exc:
        errors.append(exc)


def _consistent(version: str | None, holder: str | None, migrations: tuple[str, ...]) -> bool:
    n = int(version or "0")
    # never "one release short, no lock"; a holder migrates from its release to two releases on
    ok = n % 2 == 0 if holder is None else int(holder.removeprefix("ms-")) in (n, n - 1, n - 2)
    return ok and (not migrations or migrations[-1] == version)


async def test_the_snapshot_is_one_consistent_state_while_a_migration_runs(new_database: str) -> None:
    """Read one after the other, a poll between a migration's last step and its lock release saw the
    release before the last with no lock: a finished migration taken for one that never ran."""
    _sql(new_database, *SEED[:4], "INSERT INTO uwm_schema_info VALUES (1, '000000', CURRENT_TIMESTAMP)",
         "INSERT INTO uwm_schema_lock VALUES (1, NULL, NULL)",
         "INSERT INTO uwm_migrations VALUES ('000000', CURRENT_TIMESTAMP, 'installer')")
    db = Database("mgmt-db", new_database)
    stop, errors = threading.Event(), []
    writer = threading.Thread(target=_migrating_writer, args=(new_database, stop, errors), daemon=True)
    writer.start()
    seen, wrong = 0, []
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and len(wrong) < 3:
            snap = await db.snapshot([])
            seen += 1
            history = getattr(snap, "migrations", ())
            if not _consistent(snap.schema_version, snap.lock_holder, history):
                wrong.append((snap.schema_version, snap.lock_holder, history[-1:]))
    finally:
        stop.set()
        writer.join(10)
    assert not errors, errors
    assert seen > 20 and not wrong, f"{len(wrong)} inconsistent snapshots of {seen}: {wrong}"
    final = await db.snapshot([])
    assert final.migrations[0] == "000000" and final.migrations[-1] == final.schema_version


async def test_the_snapshot_reads_the_migration_history_and_creates_nothing(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    assert (await db.snapshot([])).migrations == ("2021.1",)
    _sql(new_database, "DROP TABLE uwm_migrations")
    assert (await db.snapshot([])).migrations == ()  # unknown, not an error


# ---------------------------------------------------------------- verified means verified


def _corrupt_every_new_backup(cs: str) -> None:
    """A copy that loses a row between the copying and the verifying (a trigger on the record's insert)."""
    _sql(cs, "CREATE TABLE uwm_backups (id VARCHAR(64) PRIMARY KEY, taken_at TIMESTAMP, schema_version "
             "VARCHAR(64), checksum VARCHAR(128), verified BOOLEAN, tables TEXT)",
         "CREATE FUNCTION uwm_corrupt() RETURNS trigger AS $$ BEGIN EXECUTE format("
         "'DELETE FROM %I WHERE id = 3', 'uwm_backup_' || replace(NEW.id, '-', '_') || '_user_data'); "
         "RETURN NEW; END $$ LANGUAGE plpgsql",
         "CREATE TRIGGER uwm_corrupt AFTER INSERT ON uwm_backups FOR EACH ROW EXECUTE FUNCTION uwm_corrupt()")


def _recorded_verified(cs: str, backup_id: str) -> bool | None:
    conn = pyodbc.connect(cs)
    row = conn.execute("SELECT verified FROM uwm_backups WHERE id = ?", backup_id).fetchone()
    conn.close()
    return None if row is None else bool(row[0])


async def test_a_backup_is_recorded_unverified_until_it_verifies(new_database: str) -> None:
    """The row used to be inserted `verified = TRUE` before anything was verified: every poll trusted it."""
    _seed(new_database)
    _corrupt_every_new_backup(new_database)
    db = Database("mgmt-db", new_database)
    with pytest.raises(DatabaseError, match="backup plan1-h1 did not verify") as err:
        await db.backup("plan1-h1")
    assert not err.value.transient
    seen = await db.snapshot(["plan1-h1"])
    assert [(b.id, b.verified) for b in seen.backups] == [("plan1-h1", False)]
    assert _recorded_verified(new_database, "plan1-h1") is False


async def test_the_gate_verifies_the_backup_again_and_records_what_it_found(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    taken = await db.backup("plan1-h1")
    again = await db.verify_backup("plan1-h1")
    assert again is not None and again.verified and again.checksum == taken.checksum
    _sql(new_database, "UPDATE uwm_backup_plan1_h1_user_data SET value = 'tampered' WHERE id = 7")
    stale = await db.verify_backup("plan1-h1")
    assert stale is not None and not stale.verified
    assert [(b.id, b.verified) for b in (await db.snapshot(["plan1-h1"])).backups] == [("plan1-h1", False)]
    assert await db.verify_backup("plan1-h9") is None


def _busy_writer(cs: str, stop: threading.Event, written: list[int], errors: list[BaseException]) -> None:
    """Servers writing while the backup is taken: every transaction adds a user row and counts it in
    two other tables, so a copy made of several moments shows counts that differ from the rows."""
    try:
        conn = pyodbc.connect(cs)
        while not stop.is_set():
            conn.execute("INSERT INTO uwm_user_data VALUES (?, 'w', 'i', 'v')", 1_000_000 + written[0])
            conn.execute("UPDATE uwm_zz_counter SET n = n + 1")
            conn.execute("UPDATE uwm_aa_counter SET n = n + 1")
            conn.commit()
            written[0] += 1
        conn.close()
    except BaseException as exc:
        errors.append(exc)


async def _until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.01)


async def test_a_backup_is_one_state_of_the_data_while_servers_keep_writing(new_database: str) -> None:
    """The copies and their checksum were taken table by table (READ COMMITTED), the checksum of the live
    tables after the copies: under writes the backup did not verify, or held tables of other moments."""
    _seed(new_database, rows=20_000)
    for table in ("uwm_aa_counter", "uwm_zz_counter"):
        _sql(new_database, f"CREATE TABLE {table} (n INT)", f"INSERT INTO {table} SELECT COUNT(*) FROM uwm_user_data")
    stop, written, errors = threading.Event(), [0], []
    writer = threading.Thread(target=_busy_writer, args=(new_database, stop, written, errors), daemon=True)
    writer.start()
    try:
        await _until(lambda: written[0] > 10 or bool(errors), "the writer is under way")
        before = written[0]
        infos = [await Database("mgmt-db", new_database).backup(f"plan1-h{hop}") for hop in (1, 2, 3)]
        during = written[0] - before
    finally:
        stop.set()
        writer.join(10)
    assert not errors, errors
    assert during > 0  # the servers did write while the backups were taken
    conn = pyodbc.connect(new_database)
    for info in infos:
        assert info.verified
        suffix = info.id.replace("-", "_")
        rows = conn.execute(f"SELECT COUNT(*) FROM uwm_backup_{suffix}_user_data").fetchone()[0]
        counted = {conn.execute(f"SELECT n FROM uwm_backup_{suffix}_{t}_counter").fetchone()[0] for t in ("aa", "zz")}
        assert counted == {rows}, f"backup {info.id}: {rows} rows, counters {counted}"
    conn.close()


# ---------------------------------------------------------------- restores that check what they did


def _migrate_in_place(cs: str) -> None:
    """A migration that changed data and version but not the tables' shape."""
    _sql(cs, "UPDATE uwm_user_data SET value = 'lost' WHERE id < 10",
         "UPDATE uwm_schema_info SET schema_version = '2022.1'",
         "INSERT INTO uwm_migrations VALUES ('2022.1', CURRENT_TIMESTAMP, 'ms-1')")


@pytest.mark.parametrize(("table", "column", "says"), [
    ("uwm_user_data", "value", "did not reproduce its data"),
    ("uwm_schema_info", "schema_version", "left the schema version at 2099.1, not 2021.1"),
])
async def test_a_restore_that_does_not_reproduce_the_backup_fails_loudly_and_changes_nothing(
        new_database: str, table: str, column: str, says: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    await db.backup("plan1-h1")
    _migrate_in_place(new_database)
    value = "'2099.1'" if column == "schema_version" else "'rewritten'"
    _sql(new_database, f"CREATE FUNCTION uwm_rewrite() RETURNS trigger AS $$ BEGIN NEW.{column} := {value}; "
                       "RETURN NEW; END $$ LANGUAGE plpgsql",
         f"CREATE TRIGGER uwm_rewrite BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION uwm_rewrite()")
    before = await db.table_checksum("uwm_user_data")
    with pytest.raises(DatabaseError, match=f"{says}.*the restore was undone") as err:
        await db.restore("plan1-h1")
    assert not err.value.transient
    assert await db.schema_version() == "2022.1"  # as it was before the restore
    assert await db.table_checksum("uwm_user_data") == before


async def test_restoring_twice_or_again_later_gives_the_backup_each_time(new_database: str) -> None:
    _seed(new_database)
    db = Database("mgmt-db", new_database)
    original = await db.table_checksum("uwm_user_data")
    await db.backup("plan1-h1")
    _migrate_badly(new_database)
    await db.restore("plan1-h1")
    await db.restore("plan1-h1")  # a retry after an answer that was lost
    assert (await db.schema_version(), await db.table_checksum("uwm_user_data")) == ("2021.1", original)
    _migrate_in_place(new_database)
    await db.restore("plan1-h1")
    seen = await db.snapshot(["plan1-h1"])
    assert (seen.schema_version, seen.migrations) == ("2021.1", ("2021.1",))
    assert [b.verified for b in seen.backups] == [True]


# ---------------------------------------------------------------- robustness


async def test_a_statement_that_waits_too_long_is_cancelled_by_the_database(new_database: str) -> None:
    """psqlODBC refuses the ODBC query-timeout attribute: PostgreSQL's own `statement_timeout` it is."""
    _seed(new_database)
    db = Database("mgmt-db", new_database, limits=DatabaseLimits(statement_seconds=0.5))
    assert (await db.snapshot([])).schema_version == "2021.1"
    blocker = pyodbc.connect(new_database)
    blocker.execute("LOCK TABLE uwm_schema_lock IN ACCESS EXCLUSIVE MODE")
    try:
        start = time.monotonic()
        with pytest.raises(DatabaseError, match=r"\[57014\].*statement timeout") as err:
            await asyncio.wait_for(db.snapshot([]), 30)
        assert err.value.transient and time.monotonic() - start < 10
    finally:
        blocker.rollback()
        blocker.close()
    assert (await db.snapshot([])).schema_version == "2021.1"


async def test_a_binary_schema_version_is_refused_not_shown(new_database: str) -> None:
    _sql(new_database, "CREATE TABLE uwm_schema_lock (id INT PRIMARY KEY, holder VARCHAR(128))",
         "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version BYTEA)",
         "INSERT INTO uwm_schema_lock VALUES (1, NULL)",
         "INSERT INTO uwm_schema_info VALUES (1, '\\x0001ff'::bytea)")
    with pytest.raises(DatabaseError, match=r"uwm_schema_info\.schema_version holds binary data, not text") as err:
        await Database("mgmt-db", new_database).schema_version()
    assert not err.value.transient


def _backends(cs: str) -> list[int]:
    """The other connections to this database (the adapter's)."""
    conn = pyodbc.connect(cs, autocommit=True)
    pids = [int(r[0]) for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                            "AND pid <> pg_backend_pid()").fetchall()]
    conn.close()
    return pids


async def test_one_persistent_connection_is_kept_and_replaced_when_it_was_killed(new_database: str) -> None:
    _seed(new_database)
    for _ in range(3):
        await Database("mgmt-db", new_database).snapshot([])  # the engine builds a Database every turn
    kept = _backends(new_database)
    assert len(kept) == 1, kept  # one connection, reused; not one per call
    _sql(new_database, f"SELECT pg_terminate_backend({kept[0]})")
    assert (await Database("mgmt-db", new_database).snapshot([])).schema_version == "2021.1"  # replaced at once
    assert _backends(new_database) not in ([], kept)


async def test_a_database_that_is_down_is_a_clear_transient_error_then_recovers(
        private_bed: Callable[[bool], Testbed]) -> None:
    bed = private_bed(False)
    _seed(bed.odbc())
    db = Database("mgmt-db", bed.odbc(), limits=DatabaseLimits(login_seconds=3, statement_seconds=5))
    assert (await db.snapshot([])).schema_version == "2021.1"
    bed.stop_postgres()
    for _ in range(2):  # the dead connection, then a new one that cannot connect
        with pytest.raises(DatabaseError, match=r"reading the schema state.*(refused|could not connect)") as err:
            await asyncio.wait_for(db.snapshot([]), 30)
        assert err.value.transient
        assert "uwm-testbed" not in str(err.value) and "127.0.0.1" not in str(err.value)
    bed.start_postgres()
    assert (await db.snapshot([])).schema_version == "2021.1"
