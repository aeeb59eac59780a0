"""The stricter referee as pure functions: pool-wide offline, database first, replication and the schema
lock, replication anywhere on the database, no rotation before the status page confirms, the status
page's tests; and the pure parts of the new faults and guards. Table-driven, no database, no HTTP."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from uwm_sim.estate import (
    STATUS_TESTS,
    Catalog,
    DatabaseState,
    Phase,
    Refusal,
    ServerState,
    check_install,
    check_replication,
    held_release,
    status_tests,
)
from uwm_sim.faults import Fault, FaultSet, parse_request
from uwm_sim.guards import AuthJournal, json_depth_exceeds, lb_signature, lb_signed

CAT = Catalog(("2021.1", "2022.1", "2023.1", "2024.1", "2025.1"))
MS1 = ServerState("ms-1", "Management", "mgmt-db", "2021.1", load_balanced=True, in_rotation=False)
MS2 = replace(MS1, name="ms-2")
MS3 = replace(MS1, name="ms-3", load_balanced=False, in_rotation=True)
DB = DatabaseState("mgmt-db", "2021.1")
PS1 = ServerState("ps-1", "Personalization", "pers-db", "2021.1", repl_role="Master", repl_group="g")
PS2 = ServerState("ps-2", "Personalization", "pers-db", "2021.1", repl_role="Subscriber", repl_group="g")
PS4 = ServerState("ps-4", "Personalization", "pers-db", "2021.1")
OTHER_MASTER = replace(PS1, name="ps-8", repl_group="h")
PDB = DatabaseState("pers-db", "2021.1")
INSTALLING_X = replace(MS2, install_target="2022.1", install_started=1.0)
AT_X = replace(MS2, version="2022.1")
FAILED_X = replace(MS2, install_target="2022.1", install_started=1.0, install_finished=2.0, install_error="boom")

INSTALL_CASES: list[tuple[str, ServerState, str, dict[str, Any], DatabaseState, bool | str]] = [
    # (name, server, target, keyword arguments, database, expected: True install / False no-op / rule)
    ("whole pool out", MS1, "2022.1", {"pool": [MS1, MS2]}, DB, True),
    ("a pool peer in rotation", MS1, "2022.1", {"pool": [MS1, replace(MS2, in_rotation=True)]}, DB,
     "pool-in-rotation"),
    ("itself in rotation stays in-rotation", replace(MS1, in_rotation=True), "2022.1",
     {"pool": [replace(MS2, in_rotation=True)]}, DB, "in-rotation"),
    ("a no-op before the pool rule", MS1, "2021.1", {"pool": [replace(MS2, in_rotation=True)]}, DB, False),
    ("a member that is not load-balanced is ignored", MS1, "2022.1", {"pool": [MS3]}, DB, True),
    ("in no pool: its own pool", MS1, "2022.1", {"pool": []}, DB, True),
    ("not load-balanced: the pool does not matter", MS3, "2022.1", {"pool": [replace(MS2, in_rotation=True)]},
     DB, True),
    ("the first server of the database", MS1, "2022.1", {"same_db": [MS1, MS2]}, DB, True),
    ("another installs the same release first", MS1, "2022.1", {"same_db": [MS1, INSTALLING_X]}, DB,
     "database-first"),
    ("another holds the release, schema behind", MS1, "2022.1", {"same_db": [MS1, AT_X]}, DB, "database-first"),
    ("another holds a different release ahead of the schema", MS1, "2023.1", {"same_db": [MS1, AT_X]}, DB,
     "database-first"),
    ("another installs a release ahead", MS1, "2023.1", {"same_db": [MS1, INSTALLING_X]}, DB, "database-first"),
    ("another's install of it failed: it does not hold it", MS1, "2022.1", {"same_db": [MS1, FAILED_X]}, DB,
     True),
    ("the schema is at the release already", MS1, "2022.1", {"same_db": [MS1, AT_X]},
     DatabaseState("mgmt-db", "2022.1"), True),
    ("a rollback below the schema", replace(MS1, version="2022.1"), "2021.1",
     {"same_db": [replace(MS2, install_target="2021.1", install_started=1.0)]}, DatabaseState("mgmt-db", "2022.1"),
     True),
    ("a no-op before database-first", AT_X, "2022.1", {"same_db": [AT_X, replace(MS1, version="2022.1")]}, DB,
     False),
    ("no role: its database's group replicates", PS4, "2022.1", {"replicated": [replace(PS1, repl_enabled=True),
                                                                               PS2]}, PDB,
     "group-replication-enabled"),
    ("no role: replication off everywhere", PS4, "2022.1", {"replicated": [PS1, PS2]}, PDB, True),
    ("its own group: the rule it had", PS2, "2022.1", {"replicated": [PS1, replace(PS2, repl_enabled=True)]}, PDB,
     "replication-enabled"),
    ("another group on the same database", PS2, "2022.1", {"replicated": [PS1, PS2, replace(
        OTHER_MASTER, repl_enabled=True)]}, PDB, "group-replication-enabled"),
]


@pytest.mark.parametrize(("server", "target", "kwargs", "db", "expected"), [c[1:] for c in INSTALL_CASES],
                         ids=[c[0] for c in INSTALL_CASES])
def test_check_install_stricter(server: ServerState, target: str, kwargs: dict[str, Any], db: DatabaseState,
                                expected: bool | str) -> None:
    group = [s for s in kwargs.get("replicated", []) if s.repl_group == server.repl_group] if server.replicated \
        else []
    if isinstance(expected, bool):
        assert check_install(server, target, CAT, group, db, **kwargs) is expected
    else:
        with pytest.raises(Refusal) as info:
            check_install(server, target, CAT, group, db, **kwargs)
        assert info.value.rule == expected and info.value.reason and info.value.status == 409


def test_held_release() -> None:
    assert held_release(AT_X) == "2022.1" and held_release(INSTALLING_X) == "2022.1"
    assert held_release(FAILED_X) == "2021.1", "its install of 2022.1 failed: it holds its previous release"
    assert held_release(replace(FAILED_X, version="2022.1")) is None, "a failed reinstall of the release it runs"
    assert held_release(replace(AT_X, install_target="2021.1", install_started=1.0)) == "2021.1", "rolling back"


LOCKED = DatabaseState("pers-db", "2021.1", "ps-1")
REPLICATION_CASES = [
    ("a member's database locked", True, [PDB, LOCKED], "replication-schema-locked"),
    ("disabling stays allowed", False, [LOCKED], None),
    ("no lock anywhere", True, [PDB, DatabaseState("pers-b", "2021.1")], None),
    ("another database of the group locked", True, [PDB, DatabaseState("pers-b", "2021.1", "ps-9")],
     "replication-schema-locked"),
]


@pytest.mark.parametrize(("enabled", "databases", "rule"), [c[1:] for c in REPLICATION_CASES],
                         ids=[c[0] for c in REPLICATION_CASES])
def test_check_replication_and_the_schema_lock(enabled: bool, databases: list[DatabaseState],
                                               rule: str | None) -> None:
    if rule is None:
        check_replication(PS1, enabled, [PS1, PS2], databases)
    else:
        with pytest.raises(Refusal) as info:
            check_replication(PS1, enabled, [PS1, PS2], databases)
        assert info.value.rule == rule and "locked" in info.value.reason


def test_status_tests_name_every_test() -> None:
    running = dict(status_tests(MS1, DB, Phase.RUNNING, 100.0, 30.0))
    assert tuple(running) == STATUS_TESTS and all(running.values())
    starting = dict(status_tests(replace(MS1, started_at=90.0), DB, Phase.STARTING, 100.0, 30.0))
    assert [n for n, p in starting.items() if not p] == ["Web service started and settled"]
    locked = dict(status_tests(MS1, DatabaseState("mgmt-db", "2021.1", "ms-2"), Phase.LOCKED_OUT, 100.0, 30.0))
    assert [n for n, p in locked.items() if not p] == ["Database not locked for a schema upgrade"]
    failed = dict(status_tests(FAILED_X, DatabaseState("mgmt-db", None, reachable=False), Phase.FAILED, 100.0, 0))
    assert not failed["Installation complete"] and not failed["Database connection"]


FAULT_ERRORS = [
    ({"kind": "test-fail", "test": "Coffee machine"}, "test"),
    ({"kind": "test-fail", "percent": 50}, "percent"),
    ({"kind": "http-500", "percent": 0}, "percent"),
    ({"kind": "http-500", "percent": 101}, "percent"),
    ({"kind": "drop-connection", "seed": "x"}, "seed"),
    ({"kind": "drop-connection", "test": "Database connection"}, "test"),
    ({"kind": "slow", "seed": 1}, "seed"),
]


@pytest.mark.parametrize(("body", "field"), FAULT_ERRORS, ids=[f"{b['kind']} {f}" for b, f in FAULT_ERRORS])
def test_new_fault_parameters_are_checked(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        parse_request(body)


def test_new_fault_defaults() -> None:
    assert parse_request({"kind": "test-fail"}).test == "Database connection"
    hit = parse_request({"kind": "http-500", "count": 3})
    assert (hit.percent, hit.seed, hit.count) == (100, None, 3)
    assert hit.to_json() == {"kind": "http-500", "count": 3, "delayMs": 0, "percent": 100, "seed": None, "draws": 0}


def _hits(fault: Fault, calls: int) -> list[bool]:
    return [fault.draw() for _ in range(calls)]


def test_a_seeded_share_is_reproducible_and_survives_a_restart() -> None:
    first = _hits(Fault("http-500", 1000, percent=30, seed=7), 40)
    assert first == _hits(Fault("http-500", 1000, percent=30, seed=7), 40)
    assert 0 < sum(first) < 40, "a share, not all and not none"
    assert _hits(Fault("http-500", 1000, percent=100), 10) == [True] * 10
    # Saved after 25 draws and loaded again (a restarted simulator): the sequence goes on.
    fault = Fault("http-500", 1000, percent=30, seed=7)
    _hits(fault, 25)
    (loaded,) = FaultSet.loads(FaultSet([fault]).dumps()).items
    assert _hits(loaded, 15) == first[25:]


def test_transient_faults_are_taken_only_when_they_hit() -> None:
    faults = FaultSet([Fault("drop-connection", 2, percent=100)])
    taken, drew = faults.take_transient()
    assert taken is not None and taken.kind == "drop-connection" and drew
    faults.take_transient()
    assert faults.take_transient() == (None, False) and faults.items == []


def test_json_depth() -> None:
    assert not json_depth_exceeds({"a": [1, {"b": [2]}]}, limit=4)  # object, list, object, list
    assert json_depth_exceeds({"a": [1, {"b": [2]}]}, limit=3)
    deep: Any = 0
    for _ in range(100_000):  # no recursion: this would overflow a recursive walk
        deep = [deep]
    assert json_depth_exceeds(deep)


def test_load_balancer_signature() -> None:
    sig = lb_signature("token-1", "ms-pool")
    assert lb_signed("token-1", "ms-pool", sig)
    assert not lb_signed("token-2", "ms-pool", sig) and not lb_signed("token-1", "ps-pool", sig)
    assert not lb_signed("token-1", "ms-pool", "")


def test_auth_journal_at_most_one_entry_per_interval_and_every_rejection_counted() -> None:
    guard = AuthJournal(interval=1.0)
    assert guard.reject(10.0) == (True, None)
    guard.written(10.0)
    assert guard.reject(10.1) == (False, pytest.approx(0.9))
    assert guard.reject(10.2) == (False, None)  # the flush is already scheduled
    assert guard.flush_wait(11.0) == 0
    assert guard.take() == 2
    guard.written(11.0)
    assert guard.reject(11.5) == (False, pytest.approx(0.5)), "within a second of the flushed entry"
    assert guard.take() == 1
    guard.written(12.0)
    assert guard.reject(13.5) == (True, None)
    guard.written(13.5)
    assert guard.take() == 0


def test_auth_journal_interval_counts_from_the_write_not_the_decision() -> None:
    """Seen in CI: 40 rejections at once queue on the database, the first entry is written 0.2 s after
    it was decided, and a flush timed from the decision followed it 0.8 s later."""
    guard = AuthJournal(interval=1.0)
    assert guard.reject(10.0) == (True, None)
    assert guard.reject(10.05) == (False, 1.0), "while the first entry is being written"
    assert guard.reject(10.1) == (False, None), "counted, the flush is already scheduled"
    assert guard.flush_wait(10.1) == 1.0, "no flush while the first entry is still being written"
    guard.written(10.2)
    assert guard.flush_wait(11.0) == pytest.approx(0.2), "a whole interval after the written entry"
    assert guard.flush_wait(11.2) == 0
    assert guard.take() == 2
    assert guard.reject(11.25) == (False, 1.0), "the flush's own write is under way"
    guard.written(11.3)
    assert guard.flush_wait(11.3) == pytest.approx(1.0)
