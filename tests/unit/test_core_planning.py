"""Hop planning over the release catalog: tables for the cases that matter, properties for all the rest."""

from __future__ import annotations

import math
import re

import pytest
from core_builders import T0, later
from core_estate_model import RELEASES, make_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from uwm_upgrade.core.enums import StepName, StepState
from uwm_upgrade.core.models import parse_spec
from uwm_upgrade.core.planning import (
    Hop,
    PlanningError,
    backup_id,
    first_servers,
    lowest_version,
    plan_hash,
    plan_path,
    plan_steps,
    rollback_steps,
)

CATALOG = ("2019.1", "2020.1", "2021.1", "2022.1", "2023.1", "2024.1", "2025.1")


def hops(path: tuple[Hop, ...]) -> list[tuple[str, str]]:
    return [(h.from_version, h.to_version) for h in path]


@pytest.mark.parametrize(("observed", "target", "step", "expected"), [
    ({"a": "2021.1"}, "2025.1", 2, [("2021.1", "2023.1"), ("2023.1", "2025.1")]),
    ({"a": "2021.1"}, "2024.1", 2, [("2021.1", "2023.1"), ("2023.1", "2024.1")]),
    ({"a": "2021.1"}, "2023.1", 1, [("2021.1", "2022.1"), ("2022.1", "2023.1")]),
    ({"a": "2024.1"}, "2025.1", 2, [("2024.1", "2025.1")]),
    ({"a": "2025.1", "b": "2025.1"}, "2025.1", 2, []),
    # mixed: a half-done hop is finished by the first hop, from the lowest release
    ({"a": "2021.1", "b": "2023.1"}, "2025.1", 2, [("2021.1", "2023.1"), ("2023.1", "2025.1")]),
    ({"a": "2021.1", "b": "2022.1"}, "2022.1", 1, [("2021.1", "2022.1")]),
])
def test_paths(observed: dict[str, str], target: str, step: int, expected: list[tuple[str, str]]) -> None:
    assert hops(plan_path(CATALOG, observed, target, step)) == expected


@pytest.mark.parametrize(("observed", "target", "step", "words"), [
    ({"server ms-1": "2018.3"}, "2025.1", 2, "server ms-1 runs 2018.3, which is not in spec.releases"),
    ({"server ms-1": "2025.1"}, "2024.1", 2, "the target 2024.1 is behind the current release of server ms-1"),
    ({"server ms-1": "2021.1", "database d": "2024.1"}, "2025.1", 2,
     "mixed versions cannot be reconciled: server ms-1 at 2021.1 but database d at 2024.1, 3 releases apart"),
    ({"server ms-1": "2021.1", "server ms-2": "2023.1"}, "2025.1", 1, "more than spec.maxMajorVersionsPerStep (1)"),
    ({"server ms-1": "2021.1"}, "2030.1", 2, "spec.targetVersion runs 2030.1"),
    ({"server ms-1": "2021.1"}, "2025.1", 3, "must be 1 or 2"),
    ({}, "2025.1", 2, "nothing was observed"),
])
def test_no_path(observed: dict[str, str], target: str, step: int, words: str) -> None:
    with pytest.raises(PlanningError) as caught:
        plan_path(CATALOG, observed, target, step)
    assert words in caught.value.message


@settings(max_examples=200, deadline=None)
@given(size=st.integers(2, 30), data=st.data(), step=st.integers(1, 2))
def test_every_path_is_contiguous_bounded_minimal_and_ends_at_the_target(size: int, data: st.DataObject,
                                                                         step: int) -> None:
    catalog = tuple(f"r{i}" for i in range(size))
    low = data.draw(st.integers(0, size - 1))
    target = data.draw(st.integers(low, size - 1))
    spread = data.draw(st.lists(st.integers(low, min(low + step, target)), max_size=4))
    observed = {"low": catalog[low], **{f"s{i}": catalog[v] for i, v in enumerate(spread)}}
    path = plan_path(catalog, observed, catalog[target], step)
    if low == target:
        assert path == ()
        return
    positions = [(catalog.index(h.from_version), catalog.index(h.to_version)) for h in path]
    assert positions[0][0] == low and positions[-1][1] == target
    assert all(0 < b - a <= step for a, b in positions), "every hop moves forward, never more than the limit"
    assert all(positions[i][1] == positions[i + 1][0] for i in range(len(positions) - 1)), "hops are contiguous"
    assert len(path) == math.ceil((target - low) / step), "as few hops as the limit allows"
    assert [h.number for h in path] == list(range(1, len(path) + 1))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), step=st.integers(1, 2))
def test_a_spread_wider_than_one_hop_is_always_refused(data: st.DataObject, step: int) -> None:
    size = data.draw(st.integers(step + 2, 20))
    catalog = tuple(f"r{i}" for i in range(size))
    low = data.draw(st.integers(0, size - step - 2))
    high = data.draw(st.integers(low + step + 1, size - 1))
    with pytest.raises(PlanningError, match="mixed versions"):
        plan_path(catalog, {"a": catalog[low], "b": catalog[high]}, catalog[-1], step)


def test_each_hop_runs_the_guides_workflow_in_order() -> None:
    spec = make_spec()
    steps = plan_steps(spec, (Hop(1, "2021.1", "2023.1"),))
    assert [(s.name.value, s.server or s.database or "") for s in steps] == [
        ("Preflight", ""), ("Plan", ""), ("RecordBaseline", ""),
        ("DisableReplication", ""), ("TakeOutOfRotation", ""),
        ("BackupDatabase", "mgmt-db"), ("InstallFirstServer", "ms-1"), ("UpgradeSchema", "ms-1"),
        ("VerifySchema", "mgmt-db"), ("HealthCheck", "ms-1"),
        ("BackupDatabase", "pers-db"), ("InstallFirstServer", "ps-1"), ("UpgradeSchema", "ps-1"),
        ("VerifySchema", "pers-db"), ("HealthCheck", "ps-1"),
        ("InstallServer", "ms-2"), ("HealthCheck", "ms-2"), ("InstallServer", "ps-2"), ("HealthCheck", "ps-2"),
        ("InstallServer", "ps-3"), ("HealthCheck", "ps-3"),
        ("BringIntoRotation", ""), ("RestoreReplication", ""), ("VerifyReplication", "")]
    assert all(s.state is StepState.PENDING for s in steps)


def test_steps_with_nothing_to_do_are_skipped_at_plan_time() -> None:
    spec = parse_spec({
        "targetVersion": "2023.1", "releases": ["2022.1", "2023.1"], "backup": {"enabled": False},
        "databases": [{"name": "db", "kind": "Management", "connectionSecretRef": {"name": "s", "key": "k"}}],
        "managementServers": [{"name": "ms-1", "url": "http://ms-1:7751", "database": "db"}],
        "agentSecretRef": {"name": "agent"}})
    skipped = {s.name: s.message for s in plan_steps(spec, (Hop(1, "2022.1", "2023.1"),))
               if s.state is StepState.SKIPPED}
    assert skipped == {
        StepName.DISABLE_REPLICATION: "no server has a replication role",
        StepName.TAKE_OUT_OF_ROTATION: "no server is load-balanced",
        StepName.BACKUP_DATABASE: "spec.backup.enabled is false",
        StepName.BRING_INTO_ROTATION: "no server is load-balanced",
        StepName.RESTORE_REPLICATION: "no server has a replication role",
        StepName.VERIFY_REPLICATION: "no server has a replication role"}


def test_the_first_server_of_each_database_is_the_first_in_spec_order() -> None:
    assert first_servers(make_spec()) == {"mgmt-db": "ms-1", "pers-db": "ps-1"}


def test_rollback_steps_undo_the_hop_for_every_server() -> None:
    names = [s.name for s in rollback_steps(make_spec(), 2)]
    assert names.count(StepName.REINSTALL_PREVIOUS) == 5 and names.count(StepName.RESTORE_BACKUP) == 2
    assert all(s.hop == 2 for s in rollback_steps(make_spec(), 2))


PATH = (Hop(1, "2021.1", "2023.1"), Hop(2, "2023.1", "2025.1"))


TARGETS = {"mgmt-db": "SERVER=sql01;PORT=1433;DATABASE=uwm_mgmt", "pers-db": "SERVER=sql01;PORT=1433;DATABASE=uwm_pers"}


def test_the_plan_hash_is_stable() -> None:
    assert plan_hash(make_spec(), PATH) == plan_hash(make_spec(), PATH)
    assert re.fullmatch(r"[0-9a-f]{64}", plan_hash(make_spec(), PATH))
    # computed from canonical JSON: the same in every process and release of the operator
    assert plan_hash(make_spec(), PATH) == "ffcc48e749740811841432c227e12fbade870d26bd94f555d13676c883bf4cc2"
    assert plan_hash(make_spec(), PATH, TARGETS) == plan_hash(make_spec(), PATH, dict(reversed(TARGETS.items())))


@pytest.mark.parametrize(("changes", "same"), [
    ({"paused": True}, True),
    # a default written out is the same plan (the API server writes the CRD's defaults)
    ({"maxConcurrentServers": 1, "backup": {"enabled": True}, "healthCheck": {}}, True),
    # every other field is approved: changing it needs a new approval
    ({"approval": {"required": True}}, False),
    ({"healthCheck": {"successThreshold": 3}}, False),
    ({"maxConcurrentServers": 3}, False),
    ({"maxMajorVersionsPerStep": 1}, False),
    ({"releases": [*RELEASES, "2026.1"]}, False),
    ({"agentSecretRef": {"name": "other-agent"}}, False),
    ({"tls": {"caBundleSecretRef": {"name": "uwm-ca"}}}, False),
    ({"databases": [
        {"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "other"}},
        {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "pers"}}]},
     False),
    ({"failurePolicy": "Rollback"}, False),
    ({"backup": {"enabled": False}}, False),
    ({"managementServers": [{"name": "ms-1", "url": "http://other:7751", "database": "mgmt-db",
                             "loadBalanced": True},
                            {"name": "ms-2", "url": "http://127.0.0.1:7752", "database": "mgmt-db",
                             "loadBalanced": True}]}, False),
])
def test_the_plan_hash_covers_what_is_approved(changes: dict[str, object], same: bool) -> None:
    assert (plan_hash(make_spec(**changes), PATH) == plan_hash(make_spec(), PATH)) is same


def test_the_plan_hash_covers_the_path() -> None:
    assert plan_hash(make_spec(), PATH[:1]) != plan_hash(make_spec(), PATH)


def test_the_plan_hash_covers_the_databases_the_connection_strings_point_at() -> None:
    """The same Secret and key, its connection string pointed at another database: another plan."""
    elsewhere = {**TARGETS, "pers-db": "SERVER=sql02;PORT=1433;DATABASE=uwm_pers"}
    assert plan_hash(make_spec(), PATH, TARGETS) != plan_hash(make_spec(), PATH, elsewhere)
    assert plan_hash(make_spec(), PATH, TARGETS) != plan_hash(make_spec(), PATH)


def test_backup_ids_are_per_run_and_hop_and_fit_the_adapter() -> None:
    ids = {backup_id("h" * 64, start, hop) for start in (T0, later(1)) for hop in (1, 2)}
    assert len(ids) == 4
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", i) for i in ids)
    assert backup_id("h" * 64, T0, 1) == backup_id("h" * 64, T0, 1)


def test_the_current_version_is_the_lowest() -> None:
    assert lowest_version(CATALOG, ["2023.1", "2021.1", "2024.1"]) == "2021.1"
    assert lowest_version(CATALOG, ["2023.1", "1999.9"]) == "1999.9"
    assert lowest_version(CATALOG, []) is None
