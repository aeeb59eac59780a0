"""The GitOps health checks in docs/gitops, run as the tools run them: Argo CD's Lua health check under
Lua 5.1 (Argo CD's gopher-lua speaks 5.1), Flux's healthCheckExprs with a CEL interpreter, on plans in
every phase as the core writes them (tests/plan_phases.py), a plan no operator has written yet and a spec
the operator has not seen; and the README shows the very snippets that are tested."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from plan_phases import CASES, phase
from uwm_upgrade.core.enums import Phase, Reason
from uwm_upgrade.core.models import status_to_wire

REPO = Path(__file__).resolve().parents[2]
LUA = REPO / "docs" / "gitops" / "argocd-health.lua"
FLUX = REPO / "docs" / "gitops" / "flux-kustomization.yaml"
NEW = {"observedGeneration": 0}  # what the API server shows of a plan no operator has written (CRD default)


def plan(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan",
                           "metadata": {"name": "estate", "namespace": "uwm", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def lua_literal(value: Any) -> str:
    if isinstance(value, dict):
        fields = (f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(fields) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid Lua 5.1 string for this text (ASCII escapes)


def argocd(obj: dict[str, Any]) -> tuple[str, str]:
    lua = shutil.which("lua5.1")
    if lua is None:
        pytest.skip("lua5.1 is not installed (Debian package lua5.1: scripts/install-system-packages.sh)")
    script = (f"obj = {lua_literal(obj)}\nlocal hs = dofile({json.dumps(str(LUA))})\n"
              "io.write(hs.status, '|', hs.message)")
    res = subprocess.run([lua, "-"], input=script, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    status, _, message = res.stdout.partition("|")
    return status, message


def flux(obj: dict[str, Any]) -> str:
    """kustomize-controller's order: inProgress, then failed, then current; none true: InProgress."""
    check = next(c for c in yaml.safe_load(FLUX.read_text())["spec"]["healthCheckExprs"]
                 if c["kind"] == "UpgradePlan")
    env = celpy.Environment()
    activation = {k: celpy.json_to_cel(v) for k, v in obj.items()}
    for key, verdict in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if bool(env.program(env.compile(check[key])).evaluate(activation)):
            return verdict
    return "InProgress"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_argocd_health_of_every_phase(case: Any) -> None:
    status, message = argocd(plan(status_to_wire(case.status())))
    assert status == case.argocd, message
    assert message.startswith(str(case.status().phase))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flux_health_of_every_phase_is_kstatus(case: Any) -> None:
    assert flux(plan(status_to_wire(case.status()))) == case.kstatus


def test_a_plan_no_operator_has_written_is_progressing() -> None:
    assert argocd(plan(None))[0] == argocd(plan(NEW))[0] == "Progressing"
    assert flux(plan(NEW)) == "InProgress"


def test_a_spec_the_operator_has_not_seen_is_progressing_not_healthy() -> None:
    done = status_to_wire(phase(Phase.SUCCEEDED, Reason.SUCCEEDED)())
    status, message = argocd(plan(done, generation=2))
    assert status == "Progressing" and "generation 2" in message
    assert flux(plan(done, generation=2)) == "InProgress"


def test_a_failure_says_why() -> None:
    failed = status_to_wire(phase(Phase.FAILED, Reason.INSTALL_FAILED)())
    status, message = argocd(plan(failed))
    assert status == "Degraded" and message == "Failed: InstallFailed: why", message


def test_the_readme_shows_the_snippets_that_are_tested() -> None:
    readme = (REPO / "README.md").read_text()
    for line in LUA.read_text().splitlines():
        if line.strip():
            assert line.strip() in readme, f"README's Argo CD snippet lacks: {line}"
    for check in yaml.safe_load(FLUX.read_text())["spec"]["healthCheckExprs"]:
        for key in ("current", "failed", "inProgress"):
            assert " ".join(check[key].split()) in " ".join(readme.split()), f"README's Flux {key} differs"
