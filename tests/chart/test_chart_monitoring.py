"""The chart's alerts, dashboard and the rest of what platform tools read: every alert rule passes
`promtool check rules` and fires (and stays silent) as `promtool test rules` shows on series the operator
exports; every metric the rules and the dashboard read is one the operator exports; each alert's runbook
exists; the dashboard's ConfigMap is the Grafana sidecar's; the timeouts and the priority class reach the
Deployment; and kubeconform validates every rendered manifest against the API server's own schemas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import CHART, RELEASE, VARIANTS, helm, one, operator_container, operator_deployment, render

from uwm_upgrade.engine import metrics

from conftest import REPO, Kube

__all__ = ["helm"]  # the fixture, shared with test_chart.py
Helm = Callable[..., subprocess.CompletedProcess[str]]
RULES = {"prometheusRule": {"enabled": True, "replicationDisabledMinutes": 30, "outOfRotationMinutes": 45,
                            "runbookUrl": "https://wiki.example/uwm/runbooks.md"}}
ALERTS = ["UwmUpgradePlanFailed", "UwmUpgradePlanStalled", "UwmUpgradeReplicationDisabledTooLong",
          "UwmUpgradeServersOutOfRotationTooLong", "UwmUpgradeOperatorDown"]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package prometheus: scripts/install-system-packages.sh)")
    return found


def _rule_groups(helm: Helm, namespace: str = "uwm-system", annotations: bool = True) -> dict[str, Any]:
    """The rendered rule groups (without their annotations: for the tests of when alerts fire)."""
    groups = one(render(helm, RULES, namespace), "PrometheusRule")["spec"]["groups"]
    if not annotations:
        for rule in (r for g in groups for r in g["rules"]):
            if rule["alert"] != "UwmUpgradePlanFailed":
                rule.pop("annotations")
    return {"groups": groups}


def _exported() -> set[str]:
    """Every sample name the operator's registry exports (histograms with their _bucket/_sum/_count)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(uwm_upgrade_[a-z_]+)\b", expr))


def test_the_rules_pass_promtool(helm: Helm, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule_groups(helm)))
    res = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in res.stdout, res.stdout


def test_every_alert_fires_on_the_operators_series_and_only_then(helm: Helm, tmp_path: Path) -> None:
    """promtool's rule unit tests: the series below are what the operator exports for a plan (names and
    labels as in its registry), with times from the epoch so that `time()` is the evaluation time; one
    alert's annotations are checked whole, the others' firing only."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rule_groups(helm, annotations=False)))
    plan = 'namespace="uwm", plan="estate"'
    job = f'job="{RELEASE}-metrics", namespace="uwm-system"'
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": [
            {"series": f'uwm_upgrade_plans{{{plan}, phase="Failed"}}', "values": "0 0 1x10"},
            {"series": f'uwm_upgrade_plans{{{plan}, phase="Running"}}', "values": "1 1 0x10"},
            {"series": f'uwm_upgrade_plan_condition{{{plan}, condition="Stalled"}}', "values": "0 0 1x10"},
            {"series": f'up{{{job}, instance="a"}}', "values": "1x12"},
            {"series": f'up{{{job}, instance="b"}}', "values": "0x12"}],  # one replica of two down: not down
         "alert_rule_test": [
             {"eval_time": "1m", "alertname": "UwmUpgradePlanFailed", "exp_alerts": []},
             {"eval_time": "3m", "alertname": "UwmUpgradePlanFailed", "exp_alerts": [
                 {"exp_labels": {"severity": "critical", "namespace": "uwm", "plan": "estate", "phase": "Failed"},
                  "exp_annotations": {
                      "summary": "UpgradePlan uwm/estate is Failed",
                      "description": "The plan ended Failed without reaching its target: kubectl uplan status estate"
                                     " -n uwm says where and why, and how the estate was left.",
                      "runbook_url": "https://wiki.example/uwm/runbooks.md#uwmupgradeplanfailed"}}]},
             # a failed plan is Stalled too: that alert is the failure's, not the loop's
             {"eval_time": "10m", "alertname": "UwmUpgradePlanStalled", "exp_alerts": []},
             {"eval_time": "10m", "alertname": "UwmUpgradeOperatorDown", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [
            {"series": f'uwm_upgrade_plans{{{plan}, phase="Running"}}', "values": "1x70"},
            {"series": f'uwm_upgrade_plan_condition{{{plan}, condition="Stalled"}}', "values": "1x70"},
            {"series": f'uwm_upgrade_replication_disabled_since_timestamp_seconds{{{plan}}}', "values": "0x70"},
            {"series": f'uwm_upgrade_server_out_of_rotation_since_timestamp_seconds{{{plan}, server="ms-1"}}',
             "values": "600x70"}],
         "alert_rule_test": [
             {"eval_time": "10m", "alertname": "UwmUpgradePlanStalled", "exp_alerts": []},
             {"eval_time": "20m", "alertname": "UwmUpgradePlanStalled", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "namespace": "uwm", "plan": "estate"}}]},
             {"eval_time": "29m", "alertname": "UwmUpgradeReplicationDisabledTooLong", "exp_alerts": []},
             {"eval_time": "31m", "alertname": "UwmUpgradeReplicationDisabledTooLong", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "namespace": "uwm", "plan": "estate"}}]},
             {"eval_time": "54m", "alertname": "UwmUpgradeServersOutOfRotationTooLong", "exp_alerts": []},
             {"eval_time": "56m", "alertname": "UwmUpgradeServersOutOfRotationTooLong", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "namespace": "uwm", "plan": "estate", "server": "ms-1"}}]},
             {"eval_time": "6m", "alertname": "UwmUpgradeOperatorDown", "exp_alerts": [  # never scraped
                 {"exp_labels": {"severity": "critical", "job": f"{RELEASE}-metrics", "namespace": "uwm-system"}}]}]},
        {"interval": "1m", "input_series": [
            {"series": f'up{{{job}, instance="a"}}', "values": "1 1 0x10"},
            {"series": f'up{{{job}, instance="b"}}', "values": "1 1 0x10"}],
         "alert_rule_test": [
             {"eval_time": "4m", "alertname": "UwmUpgradeOperatorDown", "exp_alerts": []},
             {"eval_time": "8m", "alertname": "UwmUpgradeOperatorDown", "exp_alerts": [
                 {"exp_labels": {"severity": "critical", "job": f"{RELEASE}-metrics", "namespace": "uwm-system"}}]}]},
    ]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    res = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_rules_and_the_dashboard_read_only_metrics_the_operator_exports(helm: Helm) -> None:
    exported = _exported()
    exprs = [r["expr"] for g in _rule_groups(helm)["groups"] for r in g["rules"]]
    board = json.loads((CHART / "dashboards" / "uwm-upgrade.json").read_text())
    exprs += [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used and not used - exported, sorted(used - exported)
    for family in ("uwm_upgrade_plan_current_hop", "uwm_upgrade_step_duration_seconds_bucket",
                   "uwm_upgrade_retries_total", "uwm_upgrade_health_check_failures_total", "uwm_upgrade_plan_steps"):
        assert family in used, f"the dashboard shows no {family}"


def test_every_alert_has_its_runbook(helm: Helm) -> None:
    headings = {line[3:].strip().lower() for line in (REPO / "docs" / "runbooks.md").read_text().splitlines()
                if line.startswith("## ")}
    rules = [r for g in _rule_groups(helm)["groups"] for r in g["rules"]]
    assert [r["alert"] for r in rules] == ALERTS
    for rule in rules:
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == rule["alert"].lower() and anchor in headings, anchor


def test_the_dashboard_configmap_is_the_grafana_sidecars(helm: Helm) -> None:
    docs = render(helm, {"grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                              "annotations": {"grafana_folder": "UWM"}}})
    config = one(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["namespace"] == "monitoring"
    assert config["metadata"]["annotations"] == {"grafana_folder": "UWM"}
    board = json.loads(config["data"]["uwm-upgrade.json"])
    assert board["uid"] == "uwm-upgrade-operator" and len(board["panels"]) >= 10
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for shown in ("plans", "hops", "steps", "durations", "retries", "health-check failures"):
        assert shown in titles, shown


def test_timeouts_and_priority_class_reach_the_deployment(helm: Helm) -> None:
    docs = render(helm, {"timeouts": {"installSeconds": 3600, "replicationSeconds": 1200},
                         "priorityClassName": "system-cluster-critical"})
    args = operator_container(docs)["args"]
    assert args[args.index("--install-timeout") + 1] == "3600"
    assert args[args.index("--replication-timeout") + 1] == "1200"
    assert operator_deployment(docs)["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    plain = render(helm)
    assert "--install-timeout" not in operator_container(plain)["args"]
    assert "priorityClassName" not in operator_deployment(plain)["spec"]["template"]["spec"]


def test_kube_version_is_declared() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert re.match(r"^>=1\.\d+", chart["kubeVersion"]), chart.get("kubeVersion")


# ---------------------------------------------------------------- kubeconform, with the API server's schemas

MONITORING = ("PrometheusRule", "ServiceMonitor")


def _schemas(kube: Kube, folder: Path) -> Path:
    """JSON schemas in kubeconform's layout (`{kind}-{group}-{version}.json`) from the test bed's API server's
    OpenAPI (nothing can be downloaded here): strict (no unknown field), int-or-string and quantities as the
    API server takes them."""
    spec = json.loads(kube.kubectl_run("get", "--raw", "/openapi/v2", check=True).stdout)
    definitions: dict[str, Any] = spec["definitions"]
    either = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = either
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"oneOf": [{"type": "string"},
                                                                              {"type": "number"}]}
    for name, schema in definitions.items():
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        if name.endswith(".ObjectMeta") or name.endswith("JSONSchemaProps"):
            schema.pop("additionalProperties", None)  # open on purpose (annotations, CRD schemas)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_definitions.json").write_text(json.dumps({"definitions": definitions}))
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group = gvk["group"].split(".")[0]
            suffix = f"-{group}-{gvk['version']}" if group else f"-{gvk['version']}"
            (folder / f"{gvk['kind'].lower()}{suffix}.json").write_text(
                json.dumps({"$ref": f"_definitions.json#/definitions/{name}"}))
    return folder


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kubeconform_validates_every_rendered_manifest(kube: Kube, kubeconform_bin: Path, helm: Helm,
                                                       tmp_path_factory: pytest.TempPathFactory, variant: str) -> None:
    folder = tmp_path_factory.getbasetemp() / "kubeconform-schemas"
    if not (folder / "_definitions.json").exists():
        _schemas(kube, folder)
    docs = render(helm, VARIANTS[variant], "uwm-system", RELEASE, "--include-crds")
    manifests = tmp_path_factory.mktemp("manifests") / "all.yaml"
    manifests.write_text(yaml.safe_dump_all(docs))
    res = subprocess.run([str(kubeconform_bin), "-strict", "-summary", "-output", "json", "-skip", ",".join(MONITORING),
                          "-schema-location", str(folder) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
                          str(manifests)], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)["summary"]
    skipped = [d["kind"] for d in docs if d["kind"] in MONITORING]
    if skipped:
        print(f"kubeconform skipped {skipped}: no monitoring.coreos.com schemas here (promtool checks the rules)")
    assert summary["valid"] == len(docs) - len(skipped) and summary["invalid"] == summary["errors"] == 0, summary


def test_kubeconform_catches_a_misspelt_field(kube: Kube, kubeconform_bin: Path, helm: Helm,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """The schemas are strict: the check above could fail."""
    folder = tmp_path_factory.getbasetemp() / "kubeconform-schemas"
    if not (folder / "_definitions.json").exists():
        _schemas(kube, folder)
    deployment = operator_deployment(render(helm))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    manifest = tmp_path_factory.mktemp("bad") / "bad.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    res = subprocess.run([str(kubeconform_bin), "-strict", "-schema-location",
                          str(folder) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json", str(manifest)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode != 0 and "imagePullPolicyy" in res.stdout, res.stdout + res.stderr
