"""The fleet YAML: defaults, `${VAR}` and `...Env` secrets, errors that name the field and hide secrets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from uwm_sim.config import ConfigError, expand_env, load_fleet, parse_fleet

SECRET = "DRIVER={PostgreSQL Unicode};SERVER=db;DATABASE=x;UID=sa;PWD=Sup3rSecret!"
BASE: dict[str, Any] = {
    "releases": ["2021.1", "2022.1", "2023.1"],
    "token": "a-long-enough-token",
    "stateDatabase": {"odbc": SECRET},
    "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": SECRET},
                  {"name": "pers-db", "kind": "Personalization", "odbc": SECRET + ";A=2",
                   "schemaVersion": "2022.1"}],
    "servers": [{"name": "ms-1", "kind": "Management", "database": "mgmt-db"},
                {"name": "ps-1", "kind": "Personalization", "database": "pers-db", "replicationRole": "Master"},
                {"name": "ps-2", "kind": "Personalization", "database": "pers-db", "port": 7772,
                 "replicationRole": "Subscriber"}],
    "loadBalancers": [{"name": "pool", "servers": ["ms-1"]}],
}


def cfg(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_defaults() -> None:
    c = parse_fleet(cfg())
    assert c.timing.settle_seconds == 30.0
    assert c.database("mgmt-db").schema_version == "2021.1"
    assert c.server("ms-1").version == "2021.1" and c.server("ms-1").bind_port == 7751
    assert c.server("ps-1").version == "2022.1" and c.server("ps-1").bind_port == 7771
    assert c.server("ps-2").replication_enabled and c.server("ps-2").replication_group == "default"
    assert c.agent_token == "a-long-enough-token"
    assert "Sup3rSecret" not in repr(c) and "a-long-enough-token" not in repr(c)


def test_env_expansion_and_env_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_ODBC", SECRET)
    monkeypatch.setenv("SIM_TOKEN", "token-from-the-env")
    data = cfg(token=None, tokenEnv="SIM_TOKEN", stateDatabase={"odbc": "${SIM_ODBC}"})
    data["databases"][0] = {"name": "mgmt-db", "kind": "Management", "odbcEnv": "SIM_ODBC"}
    c = parse_fleet(data)
    assert c.agent_token == "token-from-the-env"
    assert c.state_database.connection_string == SECRET
    assert c.database("mgmt-db").connection_string == SECRET


def test_expand_env_forms() -> None:
    env = {"A": "1"}
    assert expand_env({"x": ["${A}-${B:-two}", "$${A}"]}, env=env) == {"x": ["1-two", "${A}"]}
    with pytest.raises(ConfigError, match=r"x\[0\]: environment variable 'B' is not set"):
        expand_env({"x": ["${B}"]}, env=env)


BAD = [
    ({"releases": []}, "releases"),
    ({"releases": ["2021.1", "2021.1"]}, "releases[1]: duplicate name"),
    ({"releases": ["bad name"]}, "releases[0]: 'bad name' is not a valid release name"),
    ({"token": "short"}, "token: an agent token of at least 8 characters"),
    ({"token": "x" * 10, "tokenEnv": "T"}, "token: give either token or tokenEnv"),
    ({"tokenEnv": "UWM_SIM_NOT_SET_ANYWHERE", "token": None}, "tokenEnv: environment variable"),
    ({"stateDatabase": {}}, "stateDatabase.odbc: a connection string is required"),
    ({"stateDatabase": {"odbcEnv": "UWM_SIM_NOT_SET_ANYWHERE"}}, "stateDatabase.odbcEnv: environment variable"),
    ({"stateDatabase": {"odbc": SECRET, "odbcEnv": "X"}}, "stateDatabase.odbcEnv: give either odbc or odbcEnv"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("changes", "message"), BAD)
def test_bad_top_level(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_fleet(cfg(**changes))
    assert message in str(info.value)
    assert "Sup3rSecret" not in str(info.value)


def _servers(*servers: dict[str, Any]) -> dict[str, Any]:
    return cfg(servers=list(servers), loadBalancers=[])


BAD_TOPOLOGY = [
    (_servers({"name": "ms-1", "kind": "Management", "database": "nope"}),
     "servers[0].database: no database named 'nope'"),
    (_servers({"name": "ms-1", "kind": "Management", "database": "pers-db"}),
     "servers[0].database: 'pers-db' is a Personalization database, not Management"),
    (_servers({"name": "ms-1", "kind": "Management", "database": "mgmt-db", "version": "1.0"}),
     "servers[0].version: '1.0' is not in releases"),
    (_servers({"name": "ms-1", "kind": "Management", "database": "mgmt-db"},
              {"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 1}),
     "servers[1]: duplicate name 'ms-1'"),
    (_servers({"name": "ms-1", "kind": "Management", "database": "mgmt-db"},
              {"name": "ms-2", "kind": "Management", "database": "mgmt-db"}),
     "servers[1].port: port 7751 is already used by servers[0].port"),
    (_servers({"name": "ms-1", "kind": "Management", "database": "mgmt-db", "replicationRole": "Master"}),
     "servers[0].replicationRole: only Personalization servers replicate"),
    (_servers({"name": "ps-1", "kind": "Personalization", "database": "pers-db", "replicationRole": "Master",
               "port": 0},
              {"name": "ps-2", "kind": "Personalization", "database": "pers-db", "replicationRole": "Master",
               "port": 0}),
     "servers[1].replicationRole: group 'default' already has master 'ps-1'"),
    (_servers({"name": "ps-2", "kind": "Personalization", "database": "pers-db", "replicationRole": "Subscriber"}),
     "servers[0].replicationGroup: group 'default' has no Master"),
    (_servers({"name": "MS_1", "kind": "Management", "database": "mgmt-db"}), "servers[0].name"),
    (_servers({"name": "ms-1", "kind": "Web", "database": "mgmt-db"}), "servers[0].kind"),
    (_servers({"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 70000}), "servers[0].port"),
    (cfg(loadBalancers=[{"name": "pool", "servers": ["ghost"]}]), "loadBalancers[0].servers: no server named"),
    (cfg(loadBalancers=[{"name": "pool", "port": 7751, "servers": ["ms-1"]}]),
     "loadBalancers[0].port: port 7751 is already used"),
    (cfg(timing={"settleSeconds": -1}), "timing.settleSeconds"),
    (cfg(databases=[{"name": "mgmt-db", "kind": "Management", "odbc": SECRET},
                    {"name": "pers-db", "kind": "Personalization", "odbc": SECRET}]),
     "databases[1].odbc: the same database as databases[0]"),
]


@pytest.mark.parametrize(("data", "message"), BAD_TOPOLOGY)
def test_bad_topology_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_fleet(data)
    assert message in str(info.value)
    assert "Sup3rSecret" not in str(info.value)


def test_bad_database_field_hides_the_connection_string() -> None:
    data = cfg()
    data["databases"][0]["seedRows"] = -5
    with pytest.raises(ConfigError) as info:
        parse_fleet(data)
    assert "databases[0].seedRows" in str(info.value) and "Sup3rSecret" not in str(info.value)


def test_load_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_ODBC", SECRET)
    path = tmp_path / "fleet.yaml"
    path.write_text("""
releases: ["2021.1", "2022.1"]
token: ${SIM_TOKEN:-default-token-123}
stateDatabase: {odbc: "${SIM_ODBC}"}
timing: {settleSeconds: 0.5, installSeconds: 0}
databases:
  - {name: mgmt-db, kind: Management, odbcEnv: SIM_ODBC}
servers:
  - {name: ms-1, kind: Management, database: mgmt-db, loadBalanced: true}
""")
    c = load_fleet(path)
    assert c.agent_token == "default-token-123" and c.timing.settle_seconds == 0.5
    assert c.server("ms-1").load_balanced


def test_bad_yaml_does_not_quote_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(f"stateDatabase: {{odbc: \"{SECRET}\"\n  - broken: [")
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    assert "not valid YAML" in str(info.value) and "Sup3rSecret" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read fleet file"):
        load_fleet(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_fleet(path)


EXAMPLE = Path(__file__).resolve().parents[2] / "simulators" / "examples" / "fleet.yaml"


def test_example_file_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("UWM_SIM_STATE_ODBC", "UWM_SIM_MGMT_ODBC", "UWM_SIM_PERS_ODBC"):
        monkeypatch.setenv(var, f"DRIVER={{PostgreSQL Unicode}};SERVER=x;DATABASE={var.lower()}")
    monkeypatch.setenv("UWM_SIM_TOKEN", "example-token")
    cfg = load_fleet(EXAMPLE)
    assert cfg.timing.settle_seconds == 30 and cfg.timing.install_seconds == 5
    assert [s.bind_port for s in cfg.servers] == [7751, 7752, 7771, 7772, 7773]
    assert [lb.port for lb in cfg.load_balancers] == [7750, 7770]
