"""The one ODBC connection-string parser: reading, changing, redacting, and where a string leads."""

from __future__ import annotations

import pytest

from uwm_upgrade.adapters import database
from uwm_upgrade.adapters.odbc import ConnectionStringError, OdbcString, Target, parse, quote_value, redact, target

PG = "DRIVER={PostgreSQL Unicode};SERVER=db.corp;PORT=5432;DATABASE=mgmt;UID=uwm;PWD=hunter22"
HOSTILE = ["p;a s=s", "x}y", "Zq", "k", "pässwörd✓", "a\nb", " padded ", "{braced}"]


def test_braces_escapes_case_and_spaces() -> None:
    cs = parse(" driver = {ODBC Driver 18 for SQL Server} ; Server=tcp:H,1433 ;pwd={a;b}}c=d} ;; Database = x ;")
    assert cs.get("DRIVER") == "ODBC Driver 18 for SQL Server"
    assert cs.get("Pwd") == "a;b}c=d"
    assert cs.get("database") == "x"
    assert cs.keys == ("DRIVER", "SERVER", "PWD", "DATABASE")


def test_the_first_occurrence_is_the_one_drivers_use() -> None:
    assert parse("DATABASE=a;database=b").get("DATABASE") == "a"


@pytest.mark.parametrize("value", HOSTILE)
def test_a_quoted_value_reads_back_as_it_was(value: str) -> None:
    cs = parse(f"DRIVER={{FreeTDS}};PWD={quote_value(value)};UID=sa")
    assert cs.get("PWD") == (value.strip() if quote_value(value) == value else value)
    assert cs.get("UID") == "sa"


@pytest.mark.parametrize(("text", "says"), [
    ("DRIVER={FreeTDS;PWD=secret", "the value of DRIVER opens '{'"),
    ("DRIVER={FreeTDS};hunter2;UID=sa", "attribute 2 has no '='"),
    ("DRIVER={x}y;PWD=1", "unexpected text after the braced value of DRIVER"),
    ("=secret", "attribute 1 has no valid key"),
    ("  ;; ", "is empty"),
])
def test_unreadable_strings_say_where_never_what(text: str, says: str) -> None:
    with pytest.raises(ConnectionStringError, match=says) as err:
        parse(text)
    assert "secret" not in str(err.value) and "hunter2" not in str(err.value)


def test_the_master_switch_finds_database_however_it_is_written() -> None:
    for spelled in ("DATABASE = uwm_mgmt", "database={uwm;mgmt}", "Database=uwm-mgmt "):
        cs = parse(f"DRIVER={{ODBC Driver 18 for SQL Server}};SERVER=h;{spelled};UID=sa;PWD={{p;w}}")
        master = cs.with_value("DATABASE", "master")
        assert master.get("DATABASE") == "master"
        assert master.get("PWD") == "p;w" and master.get("SERVER") == "h"  # nothing else changed
        assert master.text.count("master") == 1
    appended = parse("DRIVER={FreeTDS};SERVER=h;").with_value("DATABASE", "master")
    assert appended.get("DATABASE") == "master" and appended.get("SERVER") == "h"


@pytest.mark.parametrize("value", HOSTILE)
def test_redaction_removes_credentials_and_server_whatever_they_are(value: str) -> None:
    cs = f"DRIVER={{PostgreSQL Unicode}};SERVER={quote_value(value)};UID={quote_value(value)};PWD={quote_value(value)}"
    parsed = parse(cs)
    written = quote_value(value)
    message = (f'FATAL: password authentication failed for user "{value}" at {written}; role {written} '
               f"(server {value.strip()}) cs={cs}")
    for out in (parsed.redact(message), redact(message, cs), database.redact(message, cs)):
        assert value.strip() not in out and written not in out
        assert "FATAL: password authentication failed for user" in out


def test_two_character_passwords_are_redacted_too() -> None:
    """The old redaction skipped values under 3 characters."""
    cs = "DRIVER={PostgreSQL Unicode};SERVER=h1;UID=u2;PWD=Zq"
    assert "Zq" not in database.redact("login failed with Zq", cs)


def test_a_password_of_another_string_in_a_message_is_masked() -> None:
    assert redact("tried PWD={x;y}} z} and password=abc", PG) == "tried PWD=*** and password=***"


def test_an_unparseable_string_is_taken_out_whole() -> None:
    broken = "DRIVER={FreeTDS;PWD=s3cr3t"
    assert "s3cr3t" not in redact(f"failed: {broken}", broken)


def test_repr_and_str_show_keys_never_values() -> None:
    cs = parse(PG)
    for shown in (repr(cs), str(cs), f"{cs}", repr([cs])):
        assert "hunter22" not in shown and "db.corp" not in shown and "uwm" not in shown.replace("DRIVER", "")
        assert "PostgreSQL Unicode" in shown and "PWD" in shown


@pytest.mark.parametrize(("cs", "expected"), [
    (PG, Target("db.corp", "5432", "mgmt")),
    ("DRIVER={PostgreSQL Unicode};Server=DB.Corp.;database=mgmt;PWD=other", Target("db.corp", "5432", "mgmt")),
    ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:SQL1,14330;Database=UWM;UID=sa;PWD=x",
     Target("sql1", "14330", "UWM")),
    ("DRIVER={FreeTDS};SERVER=sql1;PORT=1433;DATABASE=UWM", Target("sql1", "1433", "UWM")),
    ("DRIVER={FreeTDS};SERVER=sql1\\INST;DATABASE=UWM", Target("sql1\\inst", None, "UWM")),
    ("DRIVER={Unknown};SERVER=h", Target("h", None, None)),
])
def test_target_is_server_port_and_database_only(cs: str, expected: Target) -> None:
    assert target(cs) == expected
    assert "hunter22" not in str(target(cs)) and "other" not in repr(target(cs))


def test_the_same_database_with_other_credentials_has_the_same_target() -> None:
    other = PG.replace("UID=uwm;PWD=hunter22", "uid = admin ; pwd = {x;y}").replace("PORT=5432;", "")
    assert target(other) == target(PG)
    assert database.Database("d", other).target() == database.Database("d", PG).target()


def test_strings_are_equal_by_text_and_never_by_accident() -> None:
    assert OdbcString.parse(PG) == OdbcString.parse(PG)
    assert OdbcString.parse(PG) != OdbcString.parse(PG + ";")
