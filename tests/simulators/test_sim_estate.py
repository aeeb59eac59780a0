"""The guide's rules as pure functions: table-driven, no database, no HTTP."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uwm_sim.estate import (
    Catalog,
    DatabaseState,
    Phase,
    Refusal,
    ServerState,
    caught_up,
    check_install,
    check_migration,
    check_replication,
    check_rotation,
    compute_phase,
)

CAT = Catalog(("2021.1", "2022.1", "2023.1", "2024.1", "2025.1"))
MS = ServerState("ms-1", "Management", "mgmt-db", "2021.1", load_balanced=True, in_rotation=False)
PS1 = ServerState("ps-1", "Personalization", "pers-db", "2021.1", repl_role="Master", repl_group="g")
PS2 = ServerState("ps-2", "Personalization", "pers-db", "2021.1", repl_role="Subscriber", repl_group="g")
DB = DatabaseState("mgmt-db", "2021.1")
PDB = DatabaseState("pers-db", "2021.1")


def test_catalog_positions_and_steps() -> None:
    assert CAT.position("2023.1") == 2 and CAT.position("nope") is None
    assert CAT.compare("2021.1", "2023.1") == -1 and CAT.compare("2023.1", "2023.1") == 0
    assert CAT.compare("x", "2023.1") is None
    assert CAT.jump("2024.1", "2021.1") == 3
    assert CAT.steps("2021.1", "2023.1") == ("2022.1", "2023.1")
    assert CAT.steps("2023.1", "2021.1") == ()


INSTALL_CASES = [
    # (name, server, target, group, db, expected: True install / False no-op / rule)
    ("ok two majors", MS, "2023.1", [], DB, True),
    ("ok one major", MS, "2022.1", [], DB, True),
    ("no-op same release", MS, "2021.1", [], DB, False),
    ("no-op even in rotation", replace(MS, in_rotation=True), "2021.1", [], DB, False),
    ("reinstall after a failed install", replace(MS, install_error="boom"), "2021.1", [], DB, True),
    ("unknown release", MS, "2030.1", [], DB, "unknown-release"),
    ("three majors", MS, "2024.1", [], DB, "version-jump"),
    ("four majors down", replace(MS, version="2025.1"), "2021.1", [], DatabaseState("mgmt-db", "2025.1"),
     "version-jump"),
    ("downgrade within two is allowed", replace(MS, version="2023.1"), "2022.1", [],
     DatabaseState("mgmt-db", "2023.1"), True),
    ("schema would jump three", replace(MS, version="2022.1"), "2024.1", [], DB, "version-jump"),
    ("in rotation", replace(MS, in_rotation=True), "2022.1", [], DB, "in-rotation"),
    ("not load-balanced ignores rotation", replace(MS, load_balanced=False, in_rotation=True), "2022.1", [], DB,
     True),
    ("installing already", replace(MS, install_target="2022.1"), "2023.1", [], DB, "busy"),
    ("migrating the schema itself", MS, "2022.1", [], DatabaseState("mgmt-db", "2021.1", "ms-1"), "busy"),
    ("locked out by another", MS, "2022.1", [], DatabaseState("mgmt-db", "2021.1", "ms-2"), "schema-locked"),
    ("replication on at the master", PS2, "2022.1", [replace(PS1, repl_enabled=True), PS2], PDB,
     "replication-enabled"),
    ("replication on at itself", PS2, "2022.1", [PS1, replace(PS2, repl_enabled=True)], PDB,
     "replication-enabled"),
    ("replication off everywhere", PS2, "2022.1", [PS1, PS2], PDB, True),
    ("no role: other groups do not matter", replace(PS2, repl_role="None", repl_group=None), "2022.1", [],
     PDB, True),
]


@pytest.mark.parametrize(("server", "target", "group", "db", "expected"),
                         [c[1:] for c in INSTALL_CASES], ids=[c[0] for c in INSTALL_CASES])
def test_check_install(server: ServerState, target: str, group: list[ServerState], db: DatabaseState,
                       expected: bool | str) -> None:
    if isinstance(expected, bool):
        assert check_install(server, target, CAT, group, db) is expected
    else:
        with pytest.raises(Refusal) as info:
            check_install(server, target, CAT, group, db)
        assert info.value.rule == expected and info.value.reason and info.value.status == 409


@given(st.sampled_from(CAT.releases), st.sampled_from(CAT.releases))
def test_no_jump_of_more_than_two_majors_is_ever_accepted(current: str, target: str) -> None:
    server = replace(MS, version=current)
    db = DatabaseState("mgmt-db", current)
    try:
        go = check_install(server, target, CAT, [], db)
    except Refusal as r:
        assert r.rule == "version-jump"
        assert (CAT.jump(current, target) or 0) > 2
    else:
        assert (CAT.jump(current, target) or 0) <= 2
        assert go is (current != target)


REPLICATION_CASES = [
    ("no role", MS, True, [], "no-replication-role"),
    ("disable always", PS1, False, [PS1, replace(PS2, version="2023.1")], None),
    ("enable same versions", PS1, True, [PS1, PS2], None),
    ("enable mixed versions", PS1, True, [PS1, replace(PS2, version="2023.1")], "version-mismatch"),
    ("enable while a member installs", PS1, True, [PS1, replace(PS2, install_target="2022.1")], "busy"),
]


@pytest.mark.parametrize(("server", "enabled", "group", "rule"), [c[1:] for c in REPLICATION_CASES],
                         ids=[c[0] for c in REPLICATION_CASES])
def test_check_replication(server: ServerState, enabled: bool, group: list[ServerState], rule: str | None) -> None:
    if rule is None:
        check_replication(server, enabled, group)
    else:
        with pytest.raises(Refusal) as info:
            check_replication(server, enabled, group)
        assert info.value.rule == rule


ROTATION_CASES = [
    ("not load-balanced", replace(MS, load_balanced=False), True, Phase.RUNNING, "not-load-balanced"),
    ("out is always allowed", MS, False, Phase.MISMATCH, None),
    ("in when running", MS, True, Phase.RUNNING, None),
    ("in while starting: not confirmed yet", MS, True, Phase.STARTING, "status-not-confirmed"),
    ("in while installing", MS, True, Phase.INSTALLING, "busy"),
    ("in while locked out", MS, True, Phase.LOCKED_OUT, "schema-locked"),
    ("in on a version mismatch", MS, True, Phase.MISMATCH, "version-mismatch"),
    ("in with updates required", MS, True, Phase.UPDATES_REQUIRED, "version-mismatch"),
    ("in after a failed install", MS, True, Phase.FAILED, "install-failed"),
]


@pytest.mark.parametrize(("server", "wanted", "phase", "rule"), [c[1:] for c in ROTATION_CASES],
                         ids=[c[0] for c in ROTATION_CASES])
def test_check_rotation(server: ServerState, wanted: bool, phase: Phase, rule: str | None) -> None:
    if rule is None:
        check_rotation(server, wanted, phase, DB)
    else:
        with pytest.raises(Refusal) as info:
            check_rotation(server, wanted, phase, DB)
        assert info.value.rule == rule


NEW = replace(MS, version="2023.1")
MIGRATION_CASES = [
    ("first upgraded server migrates", NEW, DB, [NEW], [], ("2022.1", "2023.1")),
    ("not behind", MS, DB, [MS], [], "no-updates-required"),
    ("older server", MS, DatabaseState("mgmt-db", "2022.1"), [MS], [], "no-updates-required"),
    ("locked by another", NEW, DatabaseState("mgmt-db", "2021.1", "ms-2"), [NEW], [], "schema-locked"),
    ("already migrating", NEW, DatabaseState("mgmt-db", "2021.1", "ms-1"), [NEW], [], "busy"),
    ("another server installing", NEW, DB, [NEW, replace(MS, name="ms-2", install_target="2023.1")], [], "busy"),
    ("schema three behind", replace(MS, version="2024.1"), DB, [], [], "version-jump"),
    ("replication on", replace(PS1, version="2022.1"), PDB, [], [replace(PS2, repl_enabled=True)],
     "replication-enabled"),
]


@pytest.mark.parametrize(("server", "db", "same_db", "replicated", "expected"), [c[1:] for c in MIGRATION_CASES],
                         ids=[c[0] for c in MIGRATION_CASES])
def test_check_migration(server: ServerState, db: DatabaseState, same_db: list[ServerState],
                         replicated: list[ServerState], expected: tuple[str, ...] | str) -> None:
    if isinstance(expected, tuple):
        assert check_migration(server, db, CAT, same_db, replicated) == expected
    else:
        with pytest.raises(Refusal) as info:
            check_migration(server, db, CAT, same_db, replicated)
        assert info.value.rule == expected


PHASE_CASES = [
    ("running", MS, DB, 100.0, Phase.RUNNING),
    ("settling", replace(MS, started_at=95.0), DB, 100.0, Phase.STARTING),
    ("installing", replace(MS, install_target="2022.1"), DB, 100.0, Phase.INSTALLING),
    ("migrating", MS, DatabaseState("mgmt-db", "2021.1", "ms-1"), 100.0, Phase.MIGRATING),
    ("locked out", MS, DatabaseState("mgmt-db", "2021.1", "ms-2"), 100.0, Phase.LOCKED_OUT),
    ("failed install", replace(MS, install_error="boom"), DB, 100.0, Phase.FAILED),
    ("database unreachable", MS, DatabaseState("mgmt-db", None, reachable=False), 100.0, Phase.FAILED),
    ("server ahead", NEW, DB, 100.0, Phase.UPDATES_REQUIRED),
    ("server behind", MS, DatabaseState("mgmt-db", "2023.1"), 100.0, Phase.MISMATCH),
    ("unknown schema", MS, DatabaseState("mgmt-db", "weird"), 100.0, Phase.MISMATCH),
]


@pytest.mark.parametrize(("server", "db", "now", "phase"), [c[1:] for c in PHASE_CASES],
                         ids=[c[0] for c in PHASE_CASES])
def test_compute_phase(server: ServerState, db: DatabaseState, now: float, phase: Phase) -> None:
    assert compute_phase(server, db, CAT, now, settle=30.0) is phase


def test_caught_up() -> None:
    on1, on2 = replace(PS1, repl_enabled=True, repl_changed_at=10.0), replace(PS2, repl_enabled=True,
                                                                              repl_changed_at=12.0)
    assert caught_up(MS, [], 0.0, 2.0)
    assert caught_up(on1, [on1, on2], 0.0, 2.0)
    assert not caught_up(PS1, [PS1, PS2], 0.0, 2.0)
    assert not caught_up(on2, [on1, on2], 13.9, 2.0)
    assert caught_up(on2, [on1, on2], 14.0, 2.0)
    assert not caught_up(on2, [PS1, on2], 100.0, 2.0), "master off"
    assert not caught_up(on2, [replace(on1, version="2023.1"), on2], 100.0, 2.0), "different releases"
