"""No error of the database adapter carries a credential or the server of its connection string, whatever
those are: every error path (wrong password, unknown user, unreachable or unknown server, failing SQL, a
failing backup or restore) with hostile values (braces and `;`, 2 characters, unicode, a newline, `}}`).

A PostgreSQL of this module's own, with password authentication (the shared test bed trusts every
login, so a wrong password would pass), and roles named and passworded with the hostile values. The
database's own messages are made to carry them too (a view and triggers that raise with `current_user`
and the server's address), so the redaction is tested on what really comes back, not on a made-up text.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyodbc
import pytest

from uwm_dev.testbed import procs
from uwm_dev.testbed.bed import Testbed
from uwm_upgrade.adapters.database import Database, DatabaseError, DatabaseLimits
from uwm_upgrade.adapters.odbc import quote_value

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]
HOSTILE = ["p;a s=s", "Zq", "pässwörd✓", "a\nb", "x}y"]
FAST = DatabaseLimits(login_seconds=3, statement_seconds=5, job_wait_seconds=30)
RAISE_WITH_SECRETS = ("RAISE EXCEPTION 'refused for % at % (%)', current_user, host(inet_server_addr()), "
                      "session_user")


@pytest.fixture(scope="module")
def scram_bed() -> Iterator[Testbed]:
    """A private PostgreSQL that checks passwords, with a role per hostile value (psqlODBC passes a
    braced UID with its braces and a braced PWD without: the role is named as it arrives)."""
    bed = Testbed.at(REPO / ".testbed" / "private" / f"leaks-{uuid.uuid4().hex[:8]}")
    state = bed.up(kube=False)
    try:
        hba = Path(str(state.pg_data)) / "pg_hba.conf"
        hba.write_text(re.sub(r"(?m)^(host\s+\S+\s+\S+\s+\S+\s+)trust\s*$", r"\1scram-sha-256", hba.read_text()))
        conn = pyodbc.connect(bed.odbc(), autocommit=True)
        for value in HOSTILE:
            for role in {value, quote_value(value)}:
                conn.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER PASSWORD \'{value}\'')
        conn.execute("SELECT pg_reload_conf()")
        conn.close()
        yield bed
    finally:
        bed.down(quiet=True)


def _cs(bed: Testbed, value: str, *, server: str = "127.0.0.1", port: int | None = None, user: str | None = None,
        password: str | None = None, database: str = "uwm") -> str:
    state = bed.state()
    assert state is not None
    return (f"DRIVER={{PostgreSQL Unicode}};SERVER={quote_value(server)};PORT={port or state.pg_port};"
            f"DATABASE={database};UID={quote_value(user or value)};PWD={quote_value(password or value)};BoolsAsChar=0")


def _new_database(bed: Testbed, *statements: str) -> str:
    name = f"leak_{uuid.uuid4().hex[:10]}"
    conn = pyodbc.connect(bed.odbc(), autocommit=True)
    conn.execute(f"CREATE DATABASE {name}")
    conn.close()
    conn = pyodbc.connect(bed.odbc(name), autocommit=True)
    for statement in statements:
        conn.execute(statement)
    conn.close()
    return name


SEED = (
    "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version VARCHAR(64), updated_at TIMESTAMP)",
    "CREATE TABLE uwm_schema_lock (id INT PRIMARY KEY, holder VARCHAR(128) NULL, acquired_at TIMESTAMP NULL)",
    "CREATE TABLE uwm_user_data (id INT PRIMARY KEY, owner VARCHAR(128), item VARCHAR(256), value TEXT)",
    "INSERT INTO uwm_schema_info VALUES (1, '2021.1', CURRENT_TIMESTAMP)",
    "INSERT INTO uwm_schema_lock VALUES (1, NULL, NULL)",
    "INSERT INTO uwm_user_data VALUES (1, 'u', 'i', 'v')",
)
RAISING = f"CREATE FUNCTION uwm_refuse() RETURNS trigger AS $$ BEGIN {RAISE_WITH_SECRETS}; END $$ LANGUAGE plpgsql"


async def _wrong_password(bed: Testbed, value: str) -> Database:
    return Database("pers-db", _cs(bed, value, user="uwm"))


async def _unknown_user(bed: Testbed, value: str) -> Database:
    return Database("pers-db", _cs(bed, value, password="not-it"))


async def _unreachable(bed: Testbed, value: str) -> Database:
    return Database("pers-db", _cs(bed, value, port=procs.free_port()))


async def _unknown_server(bed: Testbed, value: str) -> Database:
    return Database("pers-db", _cs(bed, value, server=value))


async def _failing_sql(bed: Testbed, value: str) -> Database:
    name = _new_database(bed, "CREATE FUNCTION uwm_lock_rows() RETURNS TABLE (id INT, holder TEXT) AS $$ BEGIN "
                              f"{RAISE_WITH_SECRETS}; END $$ LANGUAGE plpgsql",
                         "CREATE TABLE uwm_schema_info (id INT PRIMARY KEY, schema_version VARCHAR(64))",
                         "CREATE VIEW uwm_schema_lock AS SELECT * FROM uwm_lock_rows()")
    return Database("pers-db", _cs(bed, value, database=name), limits=FAST)


async def _failing_backup(bed: Testbed, value: str) -> Database:
    name = _new_database(bed, *SEED, RAISING, "CREATE TABLE uwm_backups (id VARCHAR(64) PRIMARY KEY, taken_at "
                         "TIMESTAMP, schema_version VARCHAR(64), checksum VARCHAR(128), verified BOOLEAN, tables TEXT)",
                         "CREATE TRIGGER uwm_refuse BEFORE INSERT ON uwm_backups FOR EACH ROW EXECUTE FUNCTION "
                         "uwm_refuse()")
    return Database("pers-db", _cs(bed, value, database=name), limits=FAST)


async def _failing_restore(bed: Testbed, value: str) -> Database:
    name = _new_database(bed, *SEED, RAISING)
    db = Database("pers-db", _cs(bed, value, database=name), limits=FAST)
    await db.backup("plan-h1")
    conn = pyodbc.connect(bed.odbc(name), autocommit=True)
    conn.execute("CREATE TRIGGER uwm_refuse BEFORE DELETE ON uwm_user_data FOR EACH ROW EXECUTE FUNCTION uwm_refuse()")
    conn.close()
    return db


async def _poll(db: Database) -> None:
    await db.snapshot([])


async def _backup(db: Database) -> None:
    await db.backup("plan-h1")


async def _restore(db: Database) -> None:
    await db.restore("plan-h1")


PATHS = {
    "wrong-password": (_wrong_password, _poll, "password authentication failed for user"),
    "unknown-user": (_unknown_user, _poll, "password authentication failed for user"),
    "unreachable": (_unreachable, _poll, "Connection refused"),
    "unknown-server": (_unknown_server, _poll, "could not translate host name"),
    "failing-sql": (_failing_sql, _poll, "refused for"),
    "failing-backup": (_failing_backup, _backup, "refused for"),
    "failing-restore": (_failing_restore, _restore, "refused for"),
}


@pytest.mark.parametrize("value", HOSTILE, ids=["braces", "two-chars", "unicode", "newline", "escaped-brace"])
@pytest.mark.parametrize("path", list(PATHS))
async def test_no_error_path_leaks_a_credential_or_the_server(scram_bed: Testbed, path: str, value: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    make, act, says = PATHS[path]
    db = await make(scram_bed, value)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseError) as err:
        await act(db)
    message = str(err.value)
    assert says in message, message  # the error still says what went wrong
    assert message.startswith("database pers-db: ")
    shown = "\n".join([message, repr(err.value), repr(err.value.args), repr(db), caplog.text])
    for form in {value, quote_value(value), value.replace("}", "}}"), "127.0.0.1", "uwm-testbed"}:
        assert form not in shown, f"{form!r} leaked through {path}: {message}"
    assert '"uwm"' not in shown  # the user of the wrong-password path
