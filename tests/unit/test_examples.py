"""Every example plan in examples/ is a valid plan whose Secrets are in examples/secrets.yaml and labelled
for plans, and describes the estate of its fleet file (`upgradeplan-X.yaml` and
`fleet-X.yaml`): what a user copies works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from uwm_sim.config import parse_fleet
from uwm_upgrade.adapters.kube import PLAN_SECRET_LABEL
from uwm_upgrade.core.models import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLANS = sorted(EXAMPLES.glob("upgradeplan*.yaml"))
ENV = {"UWM_SIM_TOKEN": "example-token-0123", "UWM_SIM_STATE_ODBC": "DSN=state", "UWM_SIM_MGMT_ODBC": "DSN=mgmt",
       "UWM_SIM_PERS_ODBC": "DSN=pers"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", PLANS, ids=[p.name for p in PLANS])
def test_an_example_plan_is_valid_and_its_secrets_are_labelled_beside_it(path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _docs(path) + _docs(EXAMPLES / "secrets.yaml")
    (plan,) = [d for d in docs if d["kind"] == "UpgradePlan"]
    spec = parse_spec(plan["spec"])
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    refs = [spec.agent_secret_ref, *(d.connection_secret_ref for d in spec.databases),
            *(r.license for r in spec.replacements() if r.license)]
    for ref in refs:
        secret = secrets.get(ref.name)
        assert secret is not None, f"{path.name}: Secret {ref.name} is not in examples/secrets.yaml"
        assert secret["metadata"]["labels"][PLAN_SECRET_LABEL] == "true"
        assert ref.key in secret["stringData"], f"{path.name}: Secret {ref.name} has no key {ref.key}"
    fleet_file = EXAMPLES / path.name.replace("upgradeplan", "fleet")
    if not fleet_file.exists():
        return
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    fleet = parse_fleet(yaml.safe_load(fleet_file.read_text()))
    ports = {f"http://{fleet.host}:{s.bind_port}": s.name for s in fleet.servers}
    for server in (*spec.servers(), *spec.replacement_servers()):
        assert ports.get(server.url) == server.name, f"{path.name}: {server.name} at {server.url}"
    hosts = set(fleet.clients.websites)
    assert {r.website_host for r in spec.replacements() if r.website_host} <= hosts
