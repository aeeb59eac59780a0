"""`kubectl uplan` against the real API server (no operator: the statuses are written by the test, as the
operator would): what each command shows, the spec or annotation change it makes, and what it refuses."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, Kube

UPLAN = Path(sys.executable).parent / "kubectl-uplan"
PLAN = "estate-2025"
T = "2026-01-05T09:00:00Z"


def uplan(kube: Kube, namespace: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**kube.env(), "KUBECTL": str(kube.kubectl)}
    return subprocess.run([str(UPLAN), "-n", namespace, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def _docs() -> list[dict[str, Any]]:
    return [d for f in ("secrets.yaml", "upgradeplan.yaml")
            for d in yaml.safe_load_all((REPO / "examples" / f).read_text()) if d]


def _plan(kube: Kube, namespace: str, status: dict[str, Any] | None = None, **spec: Any) -> None:
    docs = _docs()
    for d in docs:
        if d["kind"] == "UpgradePlan":
            d["spec"].update(spec)
    res = kube.kubectl_run("apply", "-n", namespace, "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1",
                                                                                   "items": docs}))
    assert res.returncode == 0, res.stderr
    if status is not None:
        _status(kube, namespace, status)


def _status(kube: Kube, namespace: str, status: dict[str, Any]) -> None:
    res = kube.kubectl_run("patch", "upgradeplan", PLAN, "-n", namespace, "--subresource=status", "--type=merge",
                           "-p", json.dumps({"status": {"observedGeneration": _get(kube, namespace)["metadata"]
                                                        ["generation"], **status}}))
    assert res.returncode == 0, res.stderr


def _get(kube: Kube, namespace: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl_run("get", "upgradeplan", PLAN, "-n", namespace, "-o", "json",
                                            check=True).stdout))


def _failed(reason: str = "InstallFailed") -> dict[str, Any]:
    return {"phase": "Failed", "phaseSince": T, "currentHop": 1, "hopDisplay": "1/2",
            "path": [{"from": "2021.1", "to": "2023.1"}, {"from": "2023.1", "to": "2025.1"}],
            "steps": [{"name": "InstallServer", "hop": 1, "state": "Failed", "server": "ms-2", "startedAt": T,
                       "finishedAt": "2026-01-05T09:02:05Z", "message": f"{reason}: msiexec returned 1603"}],
            "servers": [{"name": "ms-2", "kind": "Management", "version": "2021.1", "online": False,
                         "offlineSince": T, "health": "Unhealthy"}],
            "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": "ms-2 failed",
                            "lastTransitionTime": T}],
            "message": "failed at hop 1, step InstallServer, server ms-2"}


def test_status_shows_one_screen_and_json(kube: Kube, namespace: str) -> None:
    _plan(kube, namespace, _failed())
    res = uplan(kube, namespace, "status", PLAN)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"UpgradePlan {namespace}/{PLAN}: Failed" in out
    assert "FAIL  1  InstallServer  ms-2  2m05s" in out, out
    assert "ms-2  Management  2021.1   no (" in out, out
    assert "Failed  True    InstallFailed" in out, out
    shown = json.loads(uplan(kube, namespace, "status", PLAN, "-o", "json").stdout)
    assert shown["phase"] == "Failed" and shown["steps"][0]["server"] == "ms-2"


def test_approve_binds_the_plan_it_shows(kube: Kube, namespace: str) -> None:
    _plan(kube, namespace, {"phase": "Running"})
    refused = uplan(kube, namespace, "approve", PLAN, "--yes")
    assert refused.returncode == 1 and "not AwaitingApproval" in refused.stderr
    _status(kube, namespace, {"phase": "AwaitingApproval", "planHash": "ab" * 32, "message": "approve it"})
    asked = uplan(kube, namespace, "approve", PLAN)  # no terminal, no --yes: refused, nothing set
    assert asked.returncode == 1 and "--yes" in asked.stderr
    assert "upgrade.uwm.io/approve" not in (_get(kube, namespace)["metadata"].get("annotations") or {})
    done = uplan(kube, namespace, "approve", PLAN, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"upgrade.uwm.io/approve={'ab' * 32}" in done.stdout
    assert _get(kube, namespace)["metadata"]["annotations"]["upgrade.uwm.io/approve"] == "ab" * 32


def test_pause_resume_abort(kube: Kube, namespace: str) -> None:
    _plan(kube, namespace, {"phase": "Running"})
    assert uplan(kube, namespace, "pause", PLAN).returncode == 0
    assert _get(kube, namespace)["spec"]["paused"] is True
    assert uplan(kube, namespace, "resume", PLAN).returncode == 0
    assert _get(kube, namespace)["spec"]["paused"] is False
    assert uplan(kube, namespace, "abort", PLAN, "--rollback").returncode == 0
    assert _get(kube, namespace)["spec"]["abort"] == "Rollback"
    again = uplan(kube, namespace, "abort", PLAN)
    assert again.returncode == 1 and "being aborted already (Rollback)" in again.stderr


def test_retry_only_a_failed_plan_and_never_a_failed_migration(kube: Kube, namespace: str) -> None:
    _plan(kube, namespace, {"phase": "Running"})
    early = uplan(kube, namespace, "retry", PLAN)
    assert early.returncode == 1 and "only a Failed plan is retried" in early.stderr
    _status(kube, namespace, _failed("MigrationFailed"))
    never = uplan(kube, namespace, "retry", PLAN)
    assert never.returncode == 1 and "never requested again" in never.stderr
    assert "retry" not in _get(kube, namespace)["spec"]
    _status(kube, namespace, _failed("InstallFailed"))
    done = uplan(kube, namespace, "retry", PLAN)
    assert done.returncode == 0, done.stderr
    assert _get(kube, namespace)["spec"]["retry"] == 1


def test_wait_ends_at_once_on_a_failure_and_not_on_a_stale_one(kube: Kube, namespace: str) -> None:
    _plan(kube, namespace, _failed())
    start = time.monotonic()
    failed = uplan(kube, namespace, "wait", PLAN, "--timeout", "60s")
    assert failed.returncode == 1 and "Failed (InstallFailed): ms-2 failed" in failed.stderr, failed.stderr
    assert time.monotonic() - start < 10
    kube.kubectl_run("patch", "upgradeplan", PLAN, "-n", namespace, "--type=merge", "-p",
                     json.dumps({"spec": {"retry": 1}}), check=True)  # not seen by any operator: not over
    stale = uplan(kube, namespace, "wait", PLAN, "--timeout", "3s")
    assert stale.returncode == 3 and "still Failed after 3 s" in stale.stderr, stale.stderr
    _status(kube, namespace, {"phase": "Succeeded", "message": "the estate runs 2025.1"})
    assert uplan(kube, namespace, "wait", PLAN, "--timeout", "30s").returncode == 0


def test_report_bundles_the_plan_and_never_a_secret_value(kube: Kube, namespace: str, tmp_path: Path) -> None:
    _plan(kube, namespace, _failed())
    target = tmp_path / "bundle.tar.gz"
    res = uplan(kube, namespace, "report", PLAN, "-f", str(target))
    assert res.returncode == 0, res.stderr
    with tarfile.open(target) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert {"plan.yaml", "status.txt", "events.txt", "secrets.json", "operator-pods.txt"} <= set(files), files.keys()
    secrets = json.loads(files["secrets.json"])
    assert {s["metadata"]["name"] for s in secrets} == {"uwm-agent", "uwm-databases"}
    assert all(v.startswith("<redacted: ") for s in secrets for v in s["data"].values())
    values = [v for d in _docs() if d["kind"] == "Secret" for v in (d.get("stringData") or {}).values()]
    for text in files.values():
        for value in values:
            assert value not in text
    assert "InstallServer" in files["status.txt"]


@pytest.mark.parametrize("args", [["status", "nope"], ["retry", "nope"]])
def test_a_plan_that_does_not_exist_is_said_so(kube: Kube, namespace: str, args: list[str]) -> None:
    res = uplan(kube, namespace, *args)
    assert res.returncode == 4 and "not found" in res.stderr, res.stderr
