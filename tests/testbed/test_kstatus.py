"""kstatus (sigs.k8s.io/cli-utils, what Flux health checks and `helm --wait` use) judges UpgradePlans as the
API server stores them: a plan under way is InProgress, a plan that succeeded is Current, a plan over
short of its target (Failed, RolledBack, an invalid spec) is Failed, and a plan no operator has written
yet, or whose latest spec the operator has not seen, is InProgress. The statuses are the core's own
transitions, written through the status subresource; the verdict is the real library's."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from plan_phases import CASES, phase
from uwm_upgrade.core.enums import Phase, Reason
from uwm_upgrade.core.models import UpgradePlanStatus, status_to_wire
from uwm_upgrade.core.status import observe_generation

from conftest import REPO, Kube


def verdict(kstatus: Path, obj: dict[str, Any]) -> dict[str, str]:
    res = subprocess.run([str(kstatus)], input=json.dumps(obj), capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.splitlines()[0]))


def _plan() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / "upgradeplan.yaml").read_text()) if d]
    return next(d for d in docs if d["kind"] == "UpgradePlan")


def _kubectl(kube: Kube, *args: str, doc: dict[str, Any] | None = None) -> str:
    res = kube.kubectl_run(*args, input=json.dumps(doc) if doc is not None else None)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _stored(kube: Kube, namespace: str) -> dict[str, Any]:
    return dict(json.loads(_kubectl(kube, "get", "upgradeplan", "estate-2025", "-n", namespace, "-o", "json")))


def test_a_plan_no_operator_has_written_is_in_progress(kube: Kube, namespace: str, kstatus_bin: Path) -> None:
    _kubectl(kube, "apply", "-n", namespace, "-f", "-", doc=_plan())
    found = verdict(kstatus_bin, _stored(kube, namespace))
    assert found["status"] == "InProgress", found


@pytest.mark.parametrize(("status", "expected"), [pytest.param(c.status, c.kstatus, id=c.name) for c in CASES])
def test_kstatus_reads_each_phase_as_the_conventions_say(kube: Kube, namespace: str, kstatus_bin: Path,
                                                         status: Callable[[], UpgradePlanStatus],
                                                         expected: str) -> None:
    _kubectl(kube, "apply", "-n", namespace, "-f", "-", doc=_plan())
    _kubectl(kube, "patch", "upgradeplan", "estate-2025", "-n", namespace, "--subresource=status", "--type=merge",
             "-p", json.dumps({"status": status_to_wire(status())}))
    found = verdict(kstatus_bin, _stored(kube, namespace))
    assert found["status"] == expected, found


def test_a_spec_the_operator_has_not_seen_yet_is_in_progress(kube: Kube, namespace: str, kstatus_bin: Path) -> None:
    _kubectl(kube, "apply", "-n", namespace, "-f", "-", doc=_plan())
    done = phase(Phase.SUCCEEDED, Reason.SUCCEEDED)()
    _kubectl(kube, "patch", "upgradeplan", "estate-2025", "-n", namespace, "--subresource=status", "--type=merge",
             "-p", json.dumps({"status": status_to_wire(done)}))
    _kubectl(kube, "patch", "upgradeplan", "estate-2025", "-n", namespace, "--type=merge",
             "-p", json.dumps({"spec": {"paused": True}}))
    assert verdict(kstatus_bin, _stored(kube, namespace))["status"] == "InProgress"
    seen = observe_generation(done, 2)
    _kubectl(kube, "patch", "upgradeplan", "estate-2025", "-n", namespace, "--subresource=status", "--type=merge",
             "-p", json.dumps({"status": status_to_wire(seen)}))
    assert verdict(kstatus_bin, _stored(kube, namespace))["status"] == "Current"
