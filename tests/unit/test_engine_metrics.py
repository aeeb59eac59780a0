"""The plans' gauges (`uwm_upgrade_plans` by phase, the progress gauges) show the plans that exist, as their
status says: a deleted plan's series go with it; and Prometheus's own linter finds nothing wrong with them."""

from __future__ import annotations

import logging
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from uwm_upgrade.core.models import parse_status
from uwm_upgrade.engine import deletion, metrics, reconciler

SPEC = {"targetVersion": "2023.1", "releases": ["2021.1", "2022.1", "2023.1"],
        "agentSecretRef": {"name": "agent", "key": "token"},
        "databases": [{"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "db", "key": "m"}}],
        "managementServers": [{"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db"}]}


def series(namespace: str, plan: str) -> dict[str, float]:
    """The gauge's samples for one plan, by phase, as Prometheus would scrape them."""
    found: dict[str, float] = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "uwm_upgrade_plans" and sample.labels["namespace"] == namespace \
                    and sample.labels["plan"] == plan:
                found[sample.labels["phase"]] = sample.value
    return found


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Pending"])
async def test_a_deleted_plan_leaves_the_phase_gauge(phase: str) -> None:
    """Finished, failed, or not started: nothing to restore (no API call), and its series are gone."""
    runtime = reconciler.Runtime(kube=None)  # type: ignore[arg-type]  # nothing reaches the API here
    metrics.set_phase("ns", f"gone-{phase}", phase, reconciler.PHASES)
    metrics.set_phase("ns", "kept", "Running", reconciler.PHASES)
    assert series("ns", f"gone-{phase}")[phase] == 1.0
    body = {"metadata": {"name": f"gone-{phase}", "namespace": "ns", "uid": f"u-{phase}"}, "spec": SPEC,
            "status": {"phase": phase}}
    done = await deletion.on_delete(runtime, body, logging.getLogger("t"), retry=0)
    assert "nothing to restore" in done
    assert series("ns", f"gone-{phase}") == {}
    assert series("ns", "kept")["Running"] == 1.0  # the other plans' series stay


async def test_a_plan_whose_loop_still_runs_keeps_its_series_until_the_loop_stops() -> None:
    runtime = reconciler.Runtime(kube=None)  # type: ignore[arg-type]
    metrics.set_phase("ns", "busy", "Running", reconciler.PHASES)
    runtime.loops.add("u-busy")
    body = {"metadata": {"name": "busy", "namespace": "ns", "uid": "u-busy"}, "spec": SPEC,
            "status": {"phase": "Succeeded"}}
    with pytest.raises(deletion.MustWaitError):
        await deletion.on_delete(runtime, body, logging.getLogger("t"), retry=0)
    assert series("ns", "busy")["Running"] == 1.0
    runtime.loops.clear()
    await deletion.on_delete(runtime, body, logging.getLogger("t"), retry=0)
    assert series("ns", "busy") == {}


def test_forgetting_a_plan_never_seen_is_harmless() -> None:
    metrics.forget_plan("ns", "never-seen", reconciler.PHASES)
    assert series("ns", "never-seen") == {}


# ---------------------------------------------------------------- progress gauges, read from the status

T = "2026-01-05T09:00:00Z"
HALTED = parse_status({
    "phase": "Failed", "phaseSince": T, "currentHop": 1, "retries": 2,
    "path": [{"from": "2021.1", "to": "2022.1"}, {"from": "2022.1", "to": "2023.1"}],
    "steps": [{"name": "InstallServer", "hop": 1, "state": "Failed", "server": "ms-1"},
              {"name": "HealthCheck", "hop": 1, "state": "Pending", "server": "ms-1"}],
    "servers": [{"name": "ms-1", "online": False, "offlineSince": T}, {"name": "ms-2", "online": True}],
    "conditions": [{"type": "Stalled", "status": "True", "reason": "InstallFailed", "message": "",
                    "lastTransitionTime": T},
                   {"type": "ReplicationDisabled", "status": "True", "reason": "ReplicationDisabledForUpgrade",
                    "message": "", "lastTransitionTime": T}]})


def plan_samples(namespace: str, plan: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.labels.get("namespace") == namespace and sample.labels.get("plan") == plan:
                extra = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("namespace", "plan")))
                found[(sample.name, extra)] = sample.value
    return found


def test_a_halted_plan_shows_its_progress_and_what_it_left_offline() -> None:
    metrics.show_plan("ns", "halted", HALTED)
    got = plan_samples("ns", "halted")
    t = datetime(2026, 1, 5, 9, tzinfo=UTC).timestamp()
    assert got[("uwm_upgrade_plan_current_hop", ())] == 1 and got[("uwm_upgrade_plan_hops", ())] == 2
    assert got[("uwm_upgrade_plan_steps", (("state", "Failed"),))] == 1
    assert got[("uwm_upgrade_plan_steps", (("state", "Succeeded"),))] == 0
    assert got[("uwm_upgrade_plan_phase_since_timestamp_seconds", (("phase", "Failed"),))] == t
    assert got[("uwm_upgrade_plan_condition", (("condition", "Stalled"),))] == 1
    assert got[("uwm_upgrade_plan_retries", ())] == 2
    assert got[("uwm_upgrade_servers_out_of_rotation", ())] == 1
    assert got[("uwm_upgrade_server_out_of_rotation_since_timestamp_seconds", (("server", "ms-1"),))] == t
    assert got[("uwm_upgrade_replication_disabled_since_timestamp_seconds", ())] == t


def test_series_the_status_no_longer_has_go_and_a_deleted_plan_leaves_none() -> None:
    metrics.show_plan("ns", "moving", HALTED)
    back = HALTED.model_copy(update={"phase": parse_status({"phase": "Running"}).phase, "servers": (),
                                     "conditions": ()})
    metrics.show_plan("ns", "moving", back)
    got = plan_samples("ns", "moving")
    assert ("uwm_upgrade_server_out_of_rotation_since_timestamp_seconds", (("server", "ms-1"),)) not in got
    assert ("uwm_upgrade_replication_disabled_since_timestamp_seconds", ()) not in got
    assert ("uwm_upgrade_plan_phase_since_timestamp_seconds", (("phase", "Failed"),)) not in got
    metrics.forget_plan("ns", "moving", reconciler.PHASES)
    assert plan_samples("ns", "moving") == {}


def test_build_info_names_the_release() -> None:
    info = [s for f in metrics.REGISTRY.collect() for s in f.samples if s.name == "uwm_upgrade_build_info"]
    assert len(info) == 1 and info[0].value == 1 and info[0].labels["version"] not in ("", "unknown")


def test_promtool_finds_nothing_wrong_with_the_metrics() -> None:
    """`promtool check metrics`: Prometheus's own linter (names, units, help texts, label use)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus: scripts/install-system-packages.sh)")
    metrics.show_plan("ns", "linted", HALTED)
    metrics.STEP_SECONDS.labels("InstallServer").observe(3.0)
    text = generate_latest(metrics.REGISTRY)
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
