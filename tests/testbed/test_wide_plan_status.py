"""A plan of 200 Personalization servers and 3 hops on the real API server: its spec is admitted (the CEL
rules stay within the API server's cost budget at the CRD's limit of 200), and the largest status the
operator can write for it (every step planned; the current hop's and its rollback's finished, each with a
long message; the earlier hops summarised) is stored, and is small next to etcd's object limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_crd import _apply, _example_plan, _get, _ok, crd  # noqa: F401 (crd: the fixture)

from uwm_upgrade.core.enums import StepState
from uwm_upgrade.core.hop_summary import summarise_hop
from uwm_upgrade.core.models import UpgradePlanStatus, parse_spec, status_to_wire
from uwm_upgrade.core.plan_status import ServerStatus
from uwm_upgrade.core.planning import catalog_of, plan_path, plan_steps, rollback_steps

from conftest import Kube

pytestmark = pytest.mark.testbed

ETCD_OBJECT_LIMIT = 1536 * 1024  # etcd's default --max-request-bytes, which bounds one object


def _wide_plan(servers: int) -> dict[str, Any]:
    plan = _example_plan()
    plan["metadata"]["name"] = "wide"
    spec = plan["spec"]
    spec.update(releases=["2022.1", "2023.1", "2024.1", "2025.1"], targetVersion="2025.1",
                maxMajorVersionsPerStep=1, maxConcurrentServers=50)
    database = spec["personalizationServers"][0]["database"]
    spec["personalizationServers"] = [
        {"name": f"ps-{i}", "url": f"https://ps-{i}.uwm.corp.example:7771", "database": database,
         "replicationRole": "Master" if i == 1 else "Subscriber"} for i in range(1, servers + 1)]
    return plan


def _largest_status(plan: dict[str, Any]) -> dict[str, Any]:
    spec = parse_spec(plan["spec"])
    path = plan_path(catalog_of(spec), {s.name: "2022.1" for s in spec.servers()}, "2025.1", 1)
    assert len(path) == 3
    now = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
    steps = (*plan_steps(spec, path), *rollback_steps(spec, 3))
    done = tuple(s.model_copy(update={"state": StepState.SUCCEEDED, "started_at": now,
                                      "finished_at": now + timedelta(seconds=40), "message": "m" * 300})
                 for s in steps)
    servers = tuple(ServerStatus(name=s.name, kind=s.kind, version="2024.1") for s in spec.servers())
    status = UpgradePlanStatus(path=tuple(h.as_status() for h in path), steps=done, current_hop=3, servers=servers,
                               message="m" * 4096, plan_hash="sha256:" + "ab" * 32)
    return status_to_wire(summarise_hop(summarise_hop(status, 1), 2))


def test_a_plan_of_200_personalization_servers_and_3_hops_is_admitted_and_its_largest_status_fits(
        crd: Kube, namespace: str, tmp_path: Path) -> None:  # noqa: F811 (crd: the fixture)
    plan = _wide_plan(200)
    _ok(_apply(crd, namespace, plan))
    status = _largest_status(plan)
    patch = tmp_path / "status.json"  # too long for a command line
    patch.write_text(json.dumps({"status": status}))
    _ok(crd.kubectl_run("patch", "upgradeplan", "wide", "-n", namespace, "--subresource=status", "--type=merge",
                        "--patch-file", str(patch)))
    stored = _get(crd, namespace, "wide")
    assert len(stored["status"]["steps"]) == len(status["steps"])
    assert stored["status"]["path"][0]["summary"]["succeeded"] > 400
    size = len(json.dumps(stored))
    print(f"a plan of 200 Personalization servers and 3 hops at its largest: {size} bytes with its spec"
          f" ({len(json.dumps(status))} of status, {len(status['steps'])} steps in full)")
    assert size < ETCD_OBJECT_LIMIT // 2, size
    shown = json.loads(_ok(crd.kubectl_run("get", "upgradeplan", "wide", "-n", namespace, "-o", "json",
                                           "--show-managed-fields")).stdout)
    written = [m for m in shown["metadata"]["managedFields"] if m.get("subresource") == "status"]
    assert len(written) == 1
    owned = written[0]["fieldsV1"]["f:status"]
    assert owned["f:servers"] == {} and owned["f:steps"] == {}, "the status writer's managedFields list each entry"


def test_one_more_personalization_server_than_the_crd_allows_is_refused(crd: Kube, namespace: str) -> None:  # noqa: F811
    res = _apply(crd, namespace, _wide_plan(201))
    assert res.returncode != 0 and "spec.personalizationServers: Too many: 201: must have at most 200 items" \
        in res.stderr, res.stderr
