"""The spec and status models: the contract's camelCase names, defaults, and every CRD rule again, with
errors that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from uwm_upgrade.core.enums import FailurePolicy, Phase, ReplicationRole, ServerKind, StepName, Strategy
from uwm_upgrade.core.models import SpecError, StepKey, parse_spec, parse_status, status_to_wire

BASE: dict[str, Any] = {
    "targetVersion": "2024.1",
    "releases": ["2022.1", "2023.1", "2024.1"],
    "databases": [
        {"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "mgmt"}},
        {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "pers"}},
    ],
    "managementServers": [{"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db"}],
    "personalizationServers": [
        {"name": "ps-1", "url": "https://ps-1:7771", "database": "pers-db", "replicationRole": "Master"},
        {"name": "ps-2", "url": "https://ps-2:7771", "database": "pers-db", "replicationRole": "Subscriber",
         "loadBalanced": True},
    ],
    "agentSecretRef": {"name": "agent"},
}


def spec_with(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field set (`a.b[0].c`); value `...` deletes it."""
    raw = copy.deepcopy(BASE)
    parts = path.replace("]", "").replace("[", ".").split(".")
    node: Any = raw
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return raw


def test_defaults_are_the_contracts() -> None:
    spec = parse_spec(BASE)
    assert spec.max_major_versions_per_step == 2 and spec.strategy is Strategy.IN_PLACE
    assert spec.backup.enabled and spec.max_concurrent_servers == 1 and spec.failure_policy is FailurePolicy.HALT
    assert not spec.paused and not spec.approval.required and spec.agent_secret_ref.key == "token"
    hc = spec.health_check
    assert (hc.timeout_seconds, hc.period_seconds, hc.success_threshold) == (120, 2, 1)
    assert spec.management_servers[0].load_balanced is False


def test_servers_come_in_plan_order_with_their_roles() -> None:
    servers = parse_spec(BASE).servers()
    assert [(s.name, s.kind, s.role) for s in servers] == [
        ("ms-1", ServerKind.MANAGEMENT, ReplicationRole.NONE), ("ps-1", ServerKind.PERSONALIZATION,
                                                                ReplicationRole.MASTER),
        ("ps-2", ServerKind.PERSONALIZATION, ReplicationRole.SUBSCRIBER)]


def test_python_names_work_too() -> None:
    spec = parse_spec(BASE)
    again = type(spec)(**{**spec.model_dump(), "target_version": "2023.1"})
    assert again.target_version == "2023.1"


@pytest.mark.parametrize(("path", "value", "message"), [
    ("targetVersion", "2099.1", "spec.targetVersion 2099.1 must be one of spec.releases"),
    ("targetVersion", ..., "spec.targetVersion: Field required"),
    ("releases", ["2022.1", "2022.1", "2024.1"], "spec.releases must not contain duplicates, compared ignoring case"
                                                 " (2022.1)"),
    ("releases", ["2022.a", "2022.A", "2024.1"], "spec.releases must not contain duplicates, compared ignoring case"
                                                 " (2022.A, 2022.a)"),
    ("releases", ..., "spec.releases: Field required"),
    ("releases[1]", "bad release!", "spec.releases[1]: String should match pattern"),
    ("releases", [], "spec.releases: Tuple should have at least 1 item"),
    ("maxMajorVersionsPerStep", 3, "spec.maxMajorVersionsPerStep: Input should be less than or equal to 2"),
    ("strategy", "Magic", "spec.strategy: Input should be 'InPlace' or 'CleanInstall'"),
    ("databases[0].name", "Mgmt_DB", "spec.databases[0].name: String should match pattern"),
    ("databases[1].name", "mgmt-db", "spec.databases[1].name mgmt-db is not unique"),
    ("databases[0].connectionSecretRef", {"name": "dbs"}, "spec.databases[0].connectionSecretRef.key: Field req"),
    ("managementServers[0].url", "ftp://ms-1", "spec.managementServers[0].url: String should match pattern"),
    ("managementServers[0].database", "pers-db",
     "spec.managementServers[0].database pers-db must name a spec.databases[] entry of kind Management"),
    ("personalizationServers[1].name", "ps-1", "spec.personalizationServers[1].name ps-1 is not unique"),
    ("personalizationServers[0].replicationRole", "Subscriber",
     "spec.personalizationServers with replicationRole Subscriber require one with replicationRole Master"),
    ("personalizationServers[1].replicationRole", "Master",
     "at most one of spec.personalizationServers may have replicationRole Master"),
    ("managementServers", [], "spec.databases[0] (mgmt-db) is used by no server"),
    # one server named twice, or a URL that is not one server's base URL (the CRD's CEL rules, finding 5)
    ("personalizationServers[1].url", "https://ps-1:7771",
     "spec.personalizationServers[1].url https://ps-1:7771 is already the URL of spec.personalizationServers[0]"),
    ("managementServers[0].url", "https://ps-1:7771", "is already the URL of spec.managementServers[0]"),
    ("managementServers[0].url", "http://admin@ms-1:7751", "spec.managementServers[0].url: must be http(s)://host"
                                                           "[:port][/path]: no user-info (user@), query (?)"),
    ("managementServers[0].url", "http://ms-1:7751/?x=1", "no user-info (user@), query (?) or fragment (#)"),
    ("managementServers[0].url", "http://ms-1:7751/#top", "no user-info (user@), query (?) or fragment (#)"),
    ("managementServers[0].url", "http://:7751", "spec.managementServers[0].url: must name a host"),
    ("managementServers[0].url", "http://MS-1:7751", "spec.managementServers[0].url: must be written in normal form"),
    ("managementServers[0].url", "http://ms-1:80", "must be written in normal form"),
    ("personalizationServers[0].url", "https://ps-1:443/", "must be written in normal form"),
    ("managementServers[0].url", "http://ms-1:7751/", "host in lower case, no default port"),
    ("databases[1].connectionSecretRef", {"name": "dbs", "key": "mgmt"},
     "spec.databases[1].connectionSecretRef: another spec.databases[] entry names the same Secret and key"),
    ("paused", "yes", "spec.paused: Input should be a valid boolean"),
    ("baseline", {"acceptOutOfRotation": "yes"}, "spec.baseline.acceptOutOfRotation: Input should be a valid boolean"),
    ("healthCheck", {"timeoutSeconds": 5, "periodSeconds": 10},
     "spec.healthCheck.periodSeconds must not exceed spec.healthCheck.timeoutSeconds"),
    ("maxConcurrentServers", 0, "spec.maxConcurrentServers: Input should be greater than or equal to 1"),
    ("failurePolicy", "Retry", "spec.failurePolicy: Input should be 'Halt' or 'Rollback'"),
    ("agentSecretRef", ..., "spec.agentSecretRef: Field required"),
    ("surprise", True, "spec.surprise: Extra inputs are not permitted"),
])
def test_every_rule_names_its_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_with(path, value))
    assert message in str(caught.value)


def test_no_server_at_all_is_refused() -> None:
    raw = {**BASE, "managementServers": [], "personalizationServers": []}
    with pytest.raises(SpecError, match="at least one server is required"):
        parse_spec(raw)


def test_urls_in_normal_form_with_a_path_or_an_ipv6_host_are_accepted() -> None:
    raw = spec_with("managementServers[0].url", "http://[::1]:7751/uwm/ms")
    assert parse_spec(raw).management_servers[0].url == "http://[::1]:7751/uwm/ms"


def test_a_replacement_at_a_server_url_is_refused() -> None:
    raw = {**BASE, "strategy": "CleanInstall", "personalizationCutover": "Policy",
           "managementServers": [{"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db",
                                  "replacement": {"url": "https://ps-2:7771"}}]}
    with pytest.raises(SpecError, match=r"spec.managementServers\[0\].replacement.url https://ps-2:7771 is already the"
                                        r" URL of spec.personalizationServers\[1\]"):
        parse_spec(raw)


def test_the_baseline_acceptances_default_to_false() -> None:
    spec = parse_spec(BASE)
    assert (spec.baseline.accept_out_of_rotation, spec.baseline.accept_replication_off) == (False, False)
    accepted = parse_spec({**BASE, "baseline": {"acceptOutOfRotation": True, "acceptReplicationOff": True}})
    assert accepted.baseline.accept_out_of_rotation and accepted.baseline.accept_replication_off


def test_an_absent_status_is_a_fresh_pending_one_and_round_trips() -> None:
    status = parse_status(None)
    assert status.phase is Phase.PENDING
    assert status_to_wire(status) == {"phase": "Pending", "currentHop": 0, "path": [], "steps": [], "servers": [],
                                      "databases": [], "conditions": []}
    stored = {"phase": "Running", "currentHop": 1, "path": [{"from": "2022.1", "to": "2024.1"}],
              "steps": [{"name": "InstallServer", "hop": 1, "state": "Running", "server": "ms-1",
                         "startedAt": "2026-01-05T09:00:00Z"}],
              "conditions": [{"type": "Ready", "status": "False", "reason": "Running",
                              "lastTransitionTime": "2026-01-05T09:00:00Z"}],
              "kopf": {"progress": {}}}
    status = parse_status(stored)
    assert status.path[0].from_version == "2022.1"
    assert status.steps[0].key == StepKey(StepName.INSTALL_SERVER, 1, "ms-1")
    wire = status_to_wire(status)
    assert wire == {**{k: v for k, v in stored.items() if k != "kopf"}, "servers": [], "databases": []}


def test_step_keys_read_well() -> None:
    assert str(StepKey(StepName.UPGRADE_SCHEMA, 1, "ms-1", "mgmt-db")) == "UpgradeSchema mgmt-db ms-1"
    assert str(StepKey(StepName.DISABLE_REPLICATION, 2)) == "DisableReplication"


def test_a_spec_s_servers_are_made_once_and_a_copy_with_other_servers_has_its_own() -> None:
    """`servers()`, `server()` and `replacements()` are asked thousands of times a turn: made once per
    spec object; a `model_copy` with other server lists (a new object) is never served the old ones."""
    from core_estate_model import make_spec

    spec = make_spec()
    assert spec.servers() is spec.servers()
    assert spec.server("ps-2").role.value == "Subscriber"
    fewer = spec.model_copy(update={"personalization_servers": spec.personalization_servers[:1]})
    assert [s.name for s in fewer.servers()] == ["ms-1", "ms-2", "ps-1"]
    assert [s.name for s in spec.servers()] == ["ms-1", "ms-2", "ps-1", "ps-2", "ps-3"]
    with pytest.raises(KeyError):
        fewer.server("ps-2")
