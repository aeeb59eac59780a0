"""The Helm chart (charts/uwm-upgrade-operator): lint, render, schema, server-side validation and RBAC.

What is checked, and against what:
- the chart's CRD is byte-identical to crds/ (no test bed needed);
- `helm lint --strict` passes, `helm template` renders every documented variant, and the values schema
  refuses bad values with a message naming the value;
- the rendered manifests pass `kubectl apply --dry-run=server` on the real kube-apiserver (and the
  PodSecurity "restricted" level: no warning for the operator nor the demo estate);
- the RBAC really installed on the API server grants the operator's ServiceAccount exactly the verbs it
  uses and nothing more, shown with `kubectl auth can-i --as=system:serviceaccount:...`;
- a real `helm install` / `upgrade` / `uninstall` with the demo estate, whose NOTES plan the CRD accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from uwm_dev.testbed.assets import KUBERNETES_VERSION

from conftest import REPO, Kube

CHART = REPO / "charts" / "uwm-upgrade-operator"
REPO_CRDS = REPO / "crds"
CHART_CRDS = CHART / "crds"
RELEASE = "uwm-upgrade-operator"  # the full name is then the chart's name
SYNC_HINT = "run `make chart-sync` (cp crds/*.yaml charts/uwm-upgrade-operator/crds/)"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

Doc = dict[str, Any]

# The operator's permissions, (verb, resource as kubectl names it, subresource): all of them, and only them.
GRANTED: list[tuple[str, str, str]] = [
    ("get", "upgradeplans.upgrade.uwm.io", ""),
    ("list", "upgradeplans.upgrade.uwm.io", ""),
    ("watch", "upgradeplans.upgrade.uwm.io", ""),
    ("patch", "upgradeplans.upgrade.uwm.io", ""),
    ("get", "upgradeplans.upgrade.uwm.io", "status"),
    ("patch", "upgradeplans.upgrade.uwm.io", "status"),
    ("get", "secrets", ""),
    ("create", "events.events.k8s.io", ""),
    ("create", "events", ""),
    ("patch", "events", ""),
    ("get", "leases.coordination.k8s.io", ""),
    ("create", "leases.coordination.k8s.io", ""),
    ("update", "leases.coordination.k8s.io", ""),
]
DENIED: list[tuple[str, str, str]] = [
    ("delete", "upgradeplans.upgrade.uwm.io", ""),
    ("create", "upgradeplans.upgrade.uwm.io", ""),
    ("update", "upgradeplans.upgrade.uwm.io", ""),
    ("deletecollection", "upgradeplans.upgrade.uwm.io", ""),
    ("update", "upgradeplans.upgrade.uwm.io", "status"),
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("create", "secrets", ""),
    ("update", "secrets", ""),
    ("get", "configmaps", ""),
    ("get", "pods", ""),
    ("create", "pods", ""),
    ("create", "deployments.apps", ""),
    ("patch", "events.events.k8s.io", ""),
    ("delete", "events", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("delete", "leases.coordination.k8s.io", ""),
    ("list", "leases.coordination.k8s.io", ""),
    ("*", "*", ""),
]
# The rules as the chart writes them: (apiGroup, resource) -> verbs.
EXPECTED_RULES: dict[tuple[str, str], set[str]] = {
    ("upgrade.uwm.io", "upgradeplans"): {"get", "list", "watch", "patch"},
    ("upgrade.uwm.io", "upgradeplans/status"): {"get", "patch"},
    ("", "secrets"): {"get"},
    ("events.k8s.io", "events"): {"create"},
    ("", "events"): {"create", "patch"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}
# `kubectl auth can-i --list` names them so.
EXPECTED_LIST: dict[str, set[str]] = {
    "upgradeplans.upgrade.uwm.io": {"get", "list", "watch", "patch"},
    "upgradeplans.upgrade.uwm.io/status": {"get", "patch"},
    "secrets": {"get"},
    "events.events.k8s.io": {"create"},
    "events": {"create", "patch"},
    "leases.coordination.k8s.io": {"get", "create", "update"},
}

SERVER_POLICY = {"allowedHosts": ["*.uwm.corp.example"], "allowedCIDRs": ["10.20.0.0/16", "fd00:20::/64"]}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
NETWORK_POLICY = {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}, "ingressFrom": [MONITORING],
                  "databases": {"cidrs": ["10.30.0.0/24"], "ports": [1433, 5432]}}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "clusterWide": {"clusterWide": True},
    "watchNamespaces": {"watchNamespaces": ["uwm-prod", "uwm-test", "uwm-lab"]},
    "selector": {"selector": "team=vdi,env!=prod"},
    "serviceMonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "demoEstate": {"demoEstate": {"enabled": True}},
    "serverPolicy": {"serverPolicy": SERVER_POLICY},
    "networkPolicy": {"serverPolicy": SERVER_POLICY, "networkPolicy": NETWORK_POLICY},
    "approvalPolicy": {"approvalPolicy": {"enabled": True, "approverGroups": ["uwm-approvers"]}},
    "prometheusRule": {"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}},
    "grafanaDashboard": {"grafanaDashboard": {"enabled": True}},
}
CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
POLICY_FLAGS = {"--allow-server-host", "--allow-server-cidr"}


def policy_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """The server-policy flags of a command line, and the rest."""
    policy: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in POLICY_FLAGS:
            policy += [arg, next(args)]
        elif arg == "--allow-insecure-http":
            policy.append(arg)
        else:
            rest.append(arg)
    return policy, rest


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def helm(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the test bed's helm against its API server, with helm's own files kept out of $HOME."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {**kube.env(), "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(kube.helm), *args], input=input, capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc
    return run


def _template(helm: Callable[..., subprocess.CompletedProcess[str]], values: dict[str, Any] | None = None,
              namespace: str = "uwm-system", release: str = RELEASE, *extra: str,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBERNETES_VERSION,
                "-f", "-", *extra, input=json.dumps(values or {}), check=check)


def render(helm: Callable[..., subprocess.CompletedProcess[str]], values: dict[str, Any] | None = None,
           namespace: str = "uwm-system", release: str = RELEASE, *extra: str) -> list[Doc]:
    out = _template(helm, values, namespace, release, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_deployment(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", RELEASE)


def operator_container(docs: list[Doc]) -> Doc:
    containers = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def command_line(docs: list[Doc]) -> list[str]:
    c = operator_container(docs)
    return [*c["command"], *c["args"]]


def rbac_rules(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(f"{d['kind']} {d['metadata'].get('namespace', '')}/{d['metadata']['name']}", rule)
            for d in docs if d["kind"] in ("Role", "ClusterRole") for rule in d["rules"]]


def rules_as_map(rules: list[Doc]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def to_yaml(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def new_namespace(kube: Kube) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl_run("create", "namespace", name, check=True)
    return name


def can_i(kube: Kube, sa: str, verb: str, resource: str, subresource: str, namespace: str) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}", "-n", namespace]
    if subresource:
        args.append(f"--subresource={subresource}")
    proc = kube.kubectl_run(*args)
    answer = proc.stdout.strip()
    assert proc.returncode in (0, 1) and answer in ("yes", "no"), f"kubectl {' '.join(args)}: {proc.stderr}"
    return answer == "yes"


def can_i_list(kube: Kube, sa: str, namespace: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as {resource: verbs}, without the self-reviews every user may create."""
    proc = kube.kubectl_run("auth", "can-i", "--list", f"--as={sa}", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    rows: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines()[1:]:
        m = re.match(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        assert m, f"unexpected line in can-i --list: {line!r}"
        resource, _urls, _names, verbs = m.groups()
        if resource and not resource.startswith("selfsubject"):
            rows.setdefault(resource, set()).update(verbs.split())
    return rows


def label(verb: str, resource: str, subresource: str) -> str:
    return f"{verb} {resource}{'/' + subresource if subresource else ''}"


# ------------------------------------------------------------------------------- the CRD (no test bed)

def test_chart_crds_are_the_repository_crds() -> None:
    repo = sorted(p.name for p in REPO_CRDS.glob("*.yaml"))
    chart = sorted(p.name for p in CHART_CRDS.glob("*.yaml"))
    assert chart == repo, f"charts/uwm-upgrade-operator/crds/ holds {chart}, crds/ holds {repo}: {SYNC_HINT}"
    for name in repo:
        assert (CHART_CRDS / name).read_bytes() == (REPO_CRDS / name).read_bytes(), (
            f"charts/uwm-upgrade-operator/crds/{name} differs from crds/{name}: {SYNC_HINT}")


# ----------------------------------------------------------------------------------- lint and render

@pytest.mark.parametrize("variant", ["default", "clusterWide", "demoEstate"])
def test_helm_lint_strict(helm: Callable[..., subprocess.CompletedProcess[str]], variant: str) -> None:
    proc = helm("lint", "--strict", str(CHART), "-f", "-", input=json.dumps(VARIANTS[variant]))
    findings = [line for line in proc.stdout.splitlines() if re.match(r"^\[(INFO|WARNING|ERROR)\]", line)]
    assert findings == ["[INFO] Chart.yaml: icon is recommended"], proc.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_renders(helm: Callable[..., subprocess.CompletedProcess[str]], variant: str) -> None:
    docs = render(helm, VARIANTS[variant], "uwm-system")
    kinds = sorted(d["kind"] for d in docs)
    for d in docs:
        assert d["metadata"]["name"].startswith(RELEASE)
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"]["namespace"], f"{d['kind']} {d['metadata']['name']} has no namespace"
    policy, argv = policy_flags(command_line(docs))
    assert argv[:10] == ["uwm-upgrade", "run", "--log-format", "json", "--liveness-port", "8080",
                         "--metrics-port", "9090", "--lease-seconds", "15"]
    assert "--standalone" not in argv  # the replicas elect a leader
    scope = argv[10:]
    hosts = VARIANTS[variant].get("serverPolicy", {}).get("allowedHosts", [])
    cidrs = VARIANTS[variant].get("serverPolicy", {}).get("allowedCIDRs", [])
    assert policy == [a for h in hosts for a in ("--allow-server-host", h)] + \
        [a for c in cidrs for a in ("--allow-server-cidr", c)] + (["--allow-insecure-http"] if variant == "demoEstate"
                                                                  else [])
    extra = {"networkPolicy": ["NetworkPolicy"],
             "approvalPolicy": ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"],
             "prometheusRule": ["PrometheusRule"], "grafanaDashboard": ["ConfigMap"]}.get(variant, [])
    if variant == "clusterWide":
        assert scope == ["--all-namespaces"]
        assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
        binding = one(docs, "ClusterRoleBinding")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RELEASE}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "uwm-system"}]
        return
    watched = VARIANTS[variant].get("watchNamespaces", ["uwm-system"])
    selector = VARIANTS[variant].get("selector")
    assert scope == [a for ns in watched for a in ("--namespace", ns)] + (["--selector", selector] if selector else [])
    roles = [d for d in docs if d["kind"] == "Role"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RELEASE}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "uwm-system"}]
    assert not [d for d in docs if d["kind"].startswith("Cluster")]  # the admission policy is not RBAC
    for binding in (d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"):
        terms = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
        assert terms == [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": watched}]
    service = one(docs, "Service", f"{RELEASE}-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == operator_deployment(docs)["spec"]["selector"]["matchLabels"]
    if variant == "serviceMonitor":
        monitor = one(docs, "ServiceMonitor")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["uwm-system"]}
        wanted = monitor["spec"]["selector"]["matchLabels"]
        assert wanted.items() <= service["metadata"]["labels"].items()
    else:
        assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    if variant != "demoEstate":
        assert kinds == sorted(["Deployment", "Service", "ServiceAccount"] + ["Role", "RoleBinding"] * len(watched)
                               + (["ServiceMonitor"] if variant == "serviceMonitor" else []) + extra)


def test_renders_values_into_the_deployment(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    values = {
        "image": {"repository": "registry.example.com/uwm/operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "logFormat": "plain",
        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "podAnnotations": {"example.com/owner": "platform"},
        "serviceAccount": {"name": "uwm-operator", "annotations": {"example.com/role": "x"}},
        "replicas": 3, "leaderElection": {"leaseSeconds": 30},
    }
    docs = render(helm, values)
    pod = operator_deployment(docs)["spec"]["template"]
    assert operator_deployment(docs)["spec"]["replicas"] == 3
    assert command_line(docs)[8:10] == ["--lease-seconds", "30"]
    c = operator_container(docs)
    assert c["image"] == "registry.example.com/uwm/operator:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"] == values["resources"]
    assert command_line(docs)[2:4] == ["--log-format", "plain"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    assert pod["spec"]["serviceAccountName"] == "uwm-operator"
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "uwm-operator" and sa["metadata"]["annotations"] == {"example.com/role": "x"}
    assert one(docs, "RoleBinding")["subjects"][0]["name"] == "uwm-operator"


def test_deployment_is_hardened(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    docs = render(helm)
    deployment = operator_deployment(docs)
    spec = deployment["spec"]
    assert spec["replicas"] == 2  # a leader and a standby (Lease election)
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = operator_container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["image"] == f"uwm-upgrade-operator:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert "--allow-insecure-http" not in c["args"]  # https for the agent token unless asked otherwise
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


@pytest.mark.parametrize("variant", ["default", "clusterWide", "watchNamespaces", "demoEstate", "networkPolicy",
                                     "approvalPolicy"])
def test_rbac_has_no_wildcards_and_exactly_the_operators_rules(
        helm: Callable[..., subprocess.CompletedProcess[str]], variant: str) -> None:
    docs = render(helm, VARIANTS[variant])
    rules = rbac_rules(docs)
    assert rules
    for where, rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            for item in rule.get(field, []):
                assert "*" not in item, f"{where}: wildcard in {field}: {rule}"
    by_role: dict[str, list[Doc]] = {}
    for where, rule in rules:
        by_role.setdefault(where, []).append(rule)
    for where, role_rules in by_role.items():
        assert rules_as_map(role_rules) == EXPECTED_RULES, where


def test_demo_estate_fleet_is_valid_for_the_simulators(helm: Callable[..., subprocess.CompletedProcess[str]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from uwm_sim.config import parse_fleet

    docs = render(helm, {"demoEstate": {"enabled": True, "timing": {"settleSeconds": 5, "installSeconds": 1}}})
    name = f"{RELEASE}-demo-estate"
    secret = one(docs, "Secret", name)["stringData"]
    assert set(secret) == {"token", "postgres-password", "mgmt-db", "pers-db"}
    assert one(docs, "Secret", name)["metadata"]["labels"]["upgrade.uwm.io/plan-secret"] == "true"
    host = f"{name}.uwm-system.svc"
    for key, database in (("mgmt-db", "uwm_mgmt"), ("pers-db", "uwm_pers")):
        assert f"SERVER={host};" in secret[key] and f"DATABASE={database};" in secret[key]
        assert f"PWD={secret['postgres-password']};" in secret[key]
    config = one(docs, "ConfigMap", name)["data"]
    monkeypatch.setenv("PGPASSWORD", secret["postgres-password"])
    monkeypatch.setenv("UWM_SIM_TOKEN", secret["token"])
    fleet = parse_fleet(yaml.safe_load(config["fleet.yaml"]))
    assert fleet.agent_token == secret["token"]
    assert fleet.timing.settle_seconds == 5 and fleet.timing.install_seconds == 1
    assert fleet.advertise_host == host
    assert f"PWD={secret['postgres-password']};" in fleet.state_database.connection_string
    ports = {s.name: s.bind_port for s in fleet.servers} | {lb.name: lb.port for lb in fleet.load_balancers}
    assert ports == {"ms-1": 7751, "ms-2": 7752, "ps-1": 7771, "ps-2": 7772, "ms-pool": 7750}
    service = one(docs, "Service", name)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {**ports, "postgres": 5432}
    for database in ("uwm_state", "uwm_mgmt", "uwm_pers"):
        assert f"CREATE DATABASE {database} OWNER uwm;" in config["init-databases.sql"]
    deployment = one(docs, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    sim = pod["containers"][0]
    assert sim["command"] == ["python", "-m", "uwm_sim", "fleet", "/etc/uwm-sim/fleet.yaml"]
    # The simulators' own image (simulators/Dockerfile): the operator's image does not carry them.
    assert sim["image"] == f"uwm-sim:{APP_VERSION}" != operator_container(docs)["image"]
    assert {p["containerPort"] for p in sim["ports"]} == set(ports.values())
    assert pod["initContainers"][0]["name"] == "postgres" and pod["initContainers"][0]["restartPolicy"] == "Always"
    # The operator's selectors never pick the demo pod, and the other way round.
    operator_labels = operator_deployment(docs)["spec"]["template"]["metadata"]["labels"]
    demo_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not operator_deployment(docs)["spec"]["selector"]["matchLabels"].items() <= demo_labels.items()
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= operator_labels.items()


def test_demo_estate_image_is_the_simulators_whatever_the_operators_image(
        helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    operator_image = {"repository": "registry.example.com/uwm/operator", "tag": "9.9.9"}
    docs = render(helm, {"image": operator_image, "demoEstate": {"enabled": True}})
    sim = one(docs, "Deployment", f"{RELEASE}-demo-estate")["spec"]["template"]["spec"]["containers"][0]
    assert sim["image"] == f"uwm-sim:{APP_VERSION}"
    assert operator_container(docs)["image"] == "registry.example.com/uwm/operator:9.9.9"
    docs = render(helm, {"demoEstate": {"enabled": True, "image": {
        "repository": "registry.example.com/uwm/sim", "tag": "1.2.3", "pullPolicy": "Always"}}})
    sim = one(docs, "Deployment", f"{RELEASE}-demo-estate")["spec"]["template"]["spec"]["containers"][0]
    assert (sim["image"], sim["imagePullPolicy"]) == ("registry.example.com/uwm/sim:1.2.3", "Always")


BAD_VALUES: list[tuple[dict[str, Any], list[str]]] = [
    ({"logFormat": "xml"}, ["/logFormat", "'plain', 'full', 'json'"]),
    ({"resources": {"requests": {"cpu": "lots"}}}, ["/resources/requests/cpu", "lots"]),
    ({"resources": {"request": {"cpu": "1"}}}, ["/resources", "'request' not allowed"]),
    ({"resources": "big"}, ["/resources", "want object"]),
    ({"watchNamespaces": ["Not_A_Namespace"]}, ["/watchNamespaces/0", "Not_A_Namespace"]),
    ({"watchNamespaces": "uwm-prod"}, ["/watchNamespaces", "want array"]),
    ({"clusterWide": "yes"}, ["/clusterWide", "want boolean"]),
    ({"selector": "team in (a,b)"}, ["/selector", "team in (a,b)"]),
    ({"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"]),
    ({"serviceMonitor": {"enabled": "true"}}, ["/serviceMonitor/enabled", "want boolean"]),
    ({"demoEstate": {"enabeld": True}}, ["/demoEstate", "'enabeld' not allowed"]),
    ({"demoEstate": {"enabled": True, "image": {"repository": ""}}}, ["/demoEstate/image", "repository"]),
    ({"logformat": "json"}, ["'logformat' not allowed"]),
    ({"replicas": 0}, ["/replicas", "minimum"]),
    ({"leaderElection": {"leaseSeconds": 1}}, ["/leaderElection/leaseSeconds", "minimum"]),
    ({"clusterWide": True, "watchNamespaces": ["uwm-prod"]}, ["clusterWide: true watches every namespace"]),
    ({"serverPolicy": {"allowedCIDRs": ["10.20.0.0"]}}, ["/serverPolicy/allowedCIDRs/0", "10.20.0.0"]),
    ({"serverPolicy": {"allowedHosts": ["ms 1;rm"]}}, ["/serverPolicy/allowedHosts/0", "ms 1;rm"]),
    ({"serverPolicy": {"allowInsecureHTTP": True}}, ["/serverPolicy", "'allowInsecureHTTP' not allowed"]),
    ({"networkPolicy": {"enabled": True, "serverPorts": [0]}}, ["/networkPolicy/serverPorts/0"]),
    ({"networkPolicy": {"enabled": True}, "serverPolicy": SERVER_POLICY}, ["networkPolicy.apiServer.cidrs"]),
    ({"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}}}, ["serverPolicy.allowedCIDRs"]),
    ({"approvalPolicy": {"enabled": True}}, ["approvalPolicy.approverGroups"]),
    ({"approvalPolicy": {"enabled": True, "approverGroups": ["it's"]}}, ["/approvalPolicy/approverGroups/0"]),
    ({"timeouts": {"installSeconds": 0}}, ["/timeouts/installSeconds", "minimum"]),
    ({"priorityClassName": "Not A Class"}, ["/priorityClassName", "Not A Class"]),
    ({"prometheusRule": {"enabled": True, "stalledMinutes": "15m"}}, ["/prometheusRule/stalledMinutes"]),
    ({"grafanaDashboard": {"enable": True}}, ["/grafanaDashboard", "'enable' not allowed"]),
]


@pytest.mark.parametrize(("values", "expected"), BAD_VALUES, ids=[json.dumps(v) for v, _ in BAD_VALUES])
def test_bad_values_are_rejected_naming_the_value(helm: Callable[..., subprocess.CompletedProcess[str]],
                                                  values: dict[str, Any], expected: list[str]) -> None:
    proc = _template(helm, values, check=False)
    assert proc.returncode != 0, f"accepted: {values}"
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"


@pytest.mark.parametrize("selector", ["team=vdi", "team = vdi, !canary", "tier==gold,env!=prod,managed"])
def test_good_selectors_are_accepted(helm: Callable[..., subprocess.CompletedProcess[str]], selector: str) -> None:
    assert command_line(render(helm, {"selector": selector}))[-2:] == ["--selector", selector]


# ------------------------------------------------------------------ the real API server: dry-run apply

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_manifests_pass_server_side_dry_run(kube: Kube, helm: Callable[..., subprocess.CompletedProcess[str]],
                                            namespace: str, variant: str) -> None:
    values = VARIANTS[variant]
    watched = values.get("watchNamespaces", [])
    for ns in watched:  # the same names on every run; they may exist already
        kube.kubectl_run("create", "namespace", ns)
    # Warn (on stderr) about anything the "restricted" Pod Security Standard forbids.
    kube.kubectl_run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted",
                     "pod-security.kubernetes.io/warn-version=latest", check=True)
    extra = ["--include-crds"] if variant == "default" else []
    docs = render(helm, values, namespace, f"dry-{uuid.uuid4().hex[:6]}", *extra)
    absent = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    if absent:
        print(f"not dry-run on the server: {[d['kind'] for d in absent]} (the test bed has no "
              "monitoring.coreos.com CRDs; the object was checked when rendered)")
    docs = [d for d in docs if d not in absent]
    proc = kube.kubectl_run("apply", "--dry-run=server", "-f", "-", input=to_yaml(docs))
    assert proc.returncode == 0, proc.stderr
    assert "PodSecurity" not in proc.stderr, proc.stderr
    applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(docs), proc.stdout


# ------------------------------------------------------------- the real API server: RBAC, impersonated

def _install_rbac(kube: Kube, docs: list[Doc]) -> None:
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                             "ClusterRoleBinding")]
    proc = kube.kubectl_run("apply", "-f", "-", input=to_yaml(rbac))
    assert proc.returncode == 0, proc.stderr


def _check_table(kube: Kube, sa: str, rows: list[tuple[str, str, str, str, bool]]) -> None:
    """rows: (namespace, verb, resource, subresource, expected); prints the table, then asserts it."""
    results = [(ns, label(v, r, s), expected, can_i(kube, sa, v, r, s, ns)) for ns, v, r, s, expected in rows]
    width = max(len(what) for _, what, _, _ in results)
    print(f"\n{sa}")
    for ns, what, expected, got in results:
        mark = "" if got == expected else "   <-- WRONG"
        print(f"  {what:<{width}}  in {ns:<16} {'yes' if got else 'no'}{mark}")
    wrong = [(ns, what, expected) for ns, what, expected, got in results if got != expected]
    assert not wrong, f"unexpected can-i answers (namespace, verb resource, expected): {wrong}"


def test_namespaced_rbac_grants_exactly_what_the_operator_needs(kube: Kube, namespace: str,
                                                                helm: Callable[..., subprocess.CompletedProcess[str]]
                                                                ) -> None:
    other = new_namespace(kube)
    docs = render(helm, {}, namespace, "ns-rbac")
    _install_rbac(kube, docs)
    sa = f"system:serviceaccount:{namespace}:ns-rbac-{RELEASE}"
    rows = [(namespace, v, r, s, True) for v, r, s in GRANTED]
    rows += [(namespace, v, r, s, False) for v, r, s in DENIED]
    rows += [(other, v, r, s, False) for v, r, s in GRANTED + DENIED]
    _check_table(kube, sa, rows)
    assert can_i_list(kube, sa, namespace) == EXPECTED_LIST
    assert can_i_list(kube, sa, other) == {}


def test_namespaced_rbac_covers_every_watched_namespace(kube: Kube, namespace: str,
                                                        helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    watched = [new_namespace(kube), new_namespace(kube)]
    docs = render(helm, {"watchNamespaces": watched}, namespace, "multi-rbac")
    _install_rbac(kube, docs)
    sa = f"system:serviceaccount:{namespace}:multi-rbac-{RELEASE}"
    for ns in watched:
        assert can_i_list(kube, sa, ns) == EXPECTED_LIST, ns
    assert can_i_list(kube, sa, namespace) == {}, "the release namespace is not watched here"


@pytest.fixture
def cluster_release(kube: Kube) -> Iterator[str]:
    """A unique release name whose cluster-scoped RBAC objects are deleted afterwards."""
    release = f"cw-{uuid.uuid4().hex[:8]}"
    yield release
    for kind in ("clusterrolebinding", "clusterrole"):
        kube.kubectl_run("delete", kind, f"{release}-{RELEASE}", "--ignore-not-found")


def test_cluster_wide_rbac_grants_the_same_verbs_everywhere(kube: Kube, namespace: str, cluster_release: str,
                                                            helm: Callable[..., subprocess.CompletedProcess[str]]
                                                            ) -> None:
    docs = render(helm, {"clusterWide": True}, namespace, cluster_release)
    _install_rbac(kube, docs)
    sa = f"system:serviceaccount:{namespace}:{cluster_release}-{RELEASE}"
    elsewhere = f"any-{uuid.uuid4().hex[:6]}"  # RBAC answers for namespaces that do not even exist
    rows = [(ns, v, r, s, True) for ns in (namespace, elsewhere) for v, r, s in GRANTED]
    rows += [(ns, v, r, s, False) for ns in (namespace, elsewhere) for v, r, s in DENIED]
    rows += [("default", "list", "upgradeplans.upgrade.uwm.io", "", True),
             ("default", "list", "namespaces", "", False)]
    _check_table(kube, sa, rows)
    assert can_i_list(kube, sa, elsewhere) == EXPECTED_LIST


# ------------------------------------------------------------- the real API server: helm install

def _notes_plan(notes: str) -> str:
    m = re.search(r"apply -f - <<'EOF'\n(.*?)\n\s*EOF\n", notes, re.S)
    assert m, f"no plan in the NOTES:\n{notes}"
    lines = m.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


def test_helm_install_upgrade_uninstall_with_the_demo_estate(kube: Kube, namespace: str,
                                                             helm: Callable[..., subprocess.CompletedProcess[str]]
                                                             ) -> None:
    release = "demo"
    values = json.dumps({"demoEstate": {"enabled": True}, "selector": "team=vdi"})
    install = helm("install", release, str(CHART), "--namespace", namespace, "-f", "-", input=values)
    demo = f"{release}-{RELEASE}-demo-estate"
    got = kube.kubectl_run("get", "deployment,service,serviceaccount,role,rolebinding,secret,configmap", "-n",
                           namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "name", check=True)
    names = set(got.stdout.split())
    for obj in (f"deployment.apps/{release}-{RELEASE}", f"deployment.apps/{demo}", f"service/{demo}",
                f"service/{release}-{RELEASE}-metrics", f"serviceaccount/{release}-{RELEASE}",
                f"role.rbac.authorization.k8s.io/{release}-{RELEASE}", f"secret/{demo}", f"configmap/{demo}"):
        assert obj in names, f"{obj} not installed: {sorted(names)}"

    # The plan the NOTES print is accepted by the CRD, labelled to match the selector.
    assert f"from the simulators' image uwm-sim:{APP_VERSION} " in " ".join(install.stdout.split()), install.stdout
    plan = yaml.safe_load(_notes_plan(install.stdout))
    assert plan["metadata"]["labels"] == {"team": "vdi"}
    assert plan["spec"]["agentSecretRef"] == {"name": demo, "key": "token"}
    dry = kube.kubectl_run("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(plan))
    assert dry.returncode == 0, dry.stderr

    # The generated password and token survive an upgrade (they are looked up, not generated again).
    def secret() -> dict[str, str]:
        out = kube.kubectl_run("get", "secret", demo, "-n", namespace, "-o", "json", check=True).stdout
        return dict(json.loads(out)["data"])
    before = secret()
    helm("upgrade", release, str(CHART), "--namespace", namespace, "-f", "-", input=values)
    assert secret() == before

    helm("uninstall", release, "--namespace", namespace)
    left = kube.kubectl_run("get", "deployment,role,secret", "-n", namespace, "-l",
                            f"app.kubernetes.io/instance={release}", "-o", "name", check=True)
    assert left.stdout.strip() == ""


DOCKERFILES = {"operator": REPO / "operator" / "Dockerfile", "simulators": REPO / "simulators" / "Dockerfile"}


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_image_files_exist(image: str) -> None:
    """Both Dockerfiles build from the repository root; what they copy must exist (they are not built here),
    and each copies its own folder only: the operator's image carries neither the simulators nor the dev tools."""
    dockerfile = DOCKERFILES[image].read_text()
    copied = [path for src in re.findall(r"^COPY (?!--)(.+) \S+$", dockerfile, re.M) for path in src.split()]
    for path in copied:
        assert (REPO / path).exists(), f"{image}/Dockerfile copies {path}, which is missing"
    others = {"operator", "simulators", "devtools", "pyproject.toml"} - {image}
    assert not [p for p in copied if p.split("/")[0] in others], f"{image}/Dockerfile copies {copied}"
    assert re.search(rf"pip install (--\S+ )*(\./|/src/){image}\b", dockerfile), \
        f"{image}/Dockerfile does not pip-install {image}/ (its own pyproject.toml)"
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert image not in ignored, f".dockerignore excludes {image}, which its image needs"
    assert {".venv", ".testbed", ".git", "devtools", "tests"} <= ignored


def test_operator_image_is_hardened_and_refuses_extra_packages() -> None:
    dockerfile = DOCKERFILES["operator"].read_text()
    for line in ('ENTRYPOINT ["uwm-upgrade"]', 'CMD ["run"]', "USER 10001:10001", "useradd --system --uid 10001",
                 "unixodbc odbc-postgresql tdsodbc", "# RUN apt-get update", "msodbcsql18",
                 "for m in ('uwm_sim', 'uwm_dev') if u.find_spec(m)"):
        assert line in dockerfile, f"operator/Dockerfile lacks {line!r}"
    assert "uwm_sim.cli" not in dockerfile and "uwm-sim" not in dockerfile.split("FROM", 1)[1]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M)
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2, "a build stage and a runtime stage"


# ------------------------------------------------------------- security: NetworkPolicy, approvals, NOTES

def _ports(rule: Doc) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_the_network_policy_lets_the_operator_reach_only_what_it_needs(
        helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    docs = render(helm, VARIANTS["networkPolicy"])
    policy = one(docs, "NetworkPolicy", RELEASE)["spec"]
    assert policy["podSelector"]["matchLabels"] == operator_deployment(docs)["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["from"] == NETWORK_POLICY["ingressFrom"]
    assert _ports(ingress) == {(8080, "TCP"), (9090, "TCP")}
    egress = {tuple(sorted(str(peer) for peer in rule["to"])): _ports(rule) for rule in policy["egress"]}
    assert egress == {
        (str({"ipBlock": {"cidr": "10.0.0.1/32"}}),): {(443, "TCP"), (6443, "TCP")},
        (str({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
              "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}),): {(53, "UDP"), (53, "TCP")},
        tuple(sorted(str({"ipBlock": {"cidr": c}}) for c in SERVER_POLICY["allowedCIDRs"])):
            {(443, "TCP"), (7751, "TCP"), (7771, "TCP")},
        (str({"ipBlock": {"cidr": "10.30.0.0/24"}}),): {(1433, "TCP"), (5432, "TCP")},
    }, policy["egress"]
    # no peer is "everything": every rule names its peers and its ports
    assert all(rule.get("to") and rule.get("ports") for rule in policy["egress"])
    without = render(helm, {"networkPolicy": {"enabled": False}})
    assert not [d for d in without if d["kind"] == "NetworkPolicy"]


def test_without_ingress_peers_the_operator_accepts_no_connection(
        helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    values = {**VARIANTS["networkPolicy"], "networkPolicy": {**NETWORK_POLICY, "ingressFrom": []}}
    policy = one(render(helm, values), "NetworkPolicy", RELEASE)["spec"]
    assert policy["ingress"] == [] and "Ingress" in policy["policyTypes"]
    # the databases default to the servers' ranges
    values["networkPolicy"] = {**NETWORK_POLICY, "databases": {"ports": [1433]}}
    rules = one(render(helm, values), "NetworkPolicy", RELEASE)["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": c}} for c in SERVER_POLICY["allowedCIDRs"]],
            "ports": [{"port": 1433, "protocol": "TCP"}]} in rules


def test_the_demo_estate_answers_only_the_operator(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    docs = render(helm, {"demoEstate": {"enabled": True}})
    demo = one(docs, "Deployment", f"{RELEASE}-demo-estate")
    policy = one(docs, "NetworkPolicy", f"{RELEASE}-demo-estate")["spec"]
    assert policy["podSelector"]["matchLabels"] == demo["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    operator_pods = {"podSelector": {"matchLabels": operator_deployment(docs)["spec"]["selector"]["matchLabels"]}}
    itself = {"podSelector": {"matchLabels": demo["spec"]["selector"]["matchLabels"]}}  # its load balancer
    assert rule["from"] == [operator_pods, itself]
    service = one(docs, "Service", f"{RELEASE}-demo-estate")
    assert _ports(rule) == {(p["port"], "TCP") for p in service["spec"]["ports"]}


def _notes(helm: Callable[..., subprocess.CompletedProcess[str]], namespace: str, values: dict[str, Any]) -> str:
    out = helm("install", "notes", str(CHART), "--dry-run=client", "--namespace", namespace, "-f", "-",
               input=json.dumps(values)).stdout
    return " ".join(out.split("NOTES:", 1)[1].split())


def test_the_notes_say_which_secrets_a_plan_may_use_and_warn_about_an_open_policy(
        kube: Kube, helm: Callable[..., subprocess.CompletedProcess[str]], namespace: str) -> None:
    notes = _notes(helm, namespace, {})
    assert "A plan may use only Secrets labelled upgrade.uwm.io/plan-secret=true" in notes
    assert "WARNING: no serverPolicy.allowedHosts or serverPolicy.allowedCIDRs" in notes
    assert "Approval is an annotation" in notes and "http is allowed" not in notes
    notes = _notes(helm, namespace, {"serverPolicy": SERVER_POLICY, "approvalPolicy": VARIANTS["approvalPolicy"][
        "approvalPolicy"]})
    assert "WARNING" not in notes
    assert "Plans' servers must be on *.uwm.corp.example, 10.20.0.0/16, fd00:20::/64 (serverPolicy)" in notes
    assert "Only members of uwm-approvers may set the approval annotation" in notes
    assert "WARNING: plain http is allowed" in _notes(helm, namespace, {"demoEstate": {"enabled": True}})


APPROVED_PLAN: Doc = {
    "apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan", "metadata": {"name": "approved"},
    "spec": {"targetVersion": "2025.1", "releases": ["2021.1", "2025.1"],
             "databases": [{"name": "mgmt-db", "kind": "Management",
                            "connectionSecretRef": {"name": "dbs", "key": "mgmt-db"}}],
             "managementServers": [{"name": "ms-1", "url": "https://ms-1.uwm.corp.example:7751",
                                    "database": "mgmt-db"}],
             "agentSecretRef": {"name": "agent"}}}


def test_only_the_approver_group_may_approve(kube: Kube, namespace: str, cluster_release: str,
                                             helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The chart's ValidatingAdmissionPolicy, on the test bed's API server: a user outside the approver
    group may change the plan but not set the approval annotation; a member may."""
    docs = render(helm, VARIANTS["approvalPolicy"], namespace, cluster_release)
    admission = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert len(admission) == 2
    name = admission[0]["metadata"]["name"]
    # Both users may patch plans in the namespace (RBAC), so only the policy stands between them and approving.
    rbac = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "plan-editors", "namespace": namespace},
             "rules": [{"apiGroups": ["upgrade.uwm.io"], "resources": ["upgradeplans"],
                        "verbs": ["get", "list", "patch", "update"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "plan-editors", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "plan-editors"},
             "subjects": [{"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"}
                          for g in ("developers", "uwm-approvers")]}]
    try:
        proc = kube.kubectl_run("apply", "-f", "-", input=to_yaml([*admission, *rbac]))
        assert proc.returncode == 0, proc.stderr
        plan = kube.kubectl_run("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(APPROVED_PLAN))
        assert plan.returncode == 0, plan.stderr

        def annotate(value: str, *who: str) -> subprocess.CompletedProcess[str]:
            return kube.kubectl_run("annotate", "upgradeplan", "approved", "-n", namespace, "--overwrite",
                                    f"upgrade.uwm.io/approve={value}", *who)

        outsider = ("--as=mallory", "--as-group=developers")
        approver = ("--as=alice", "--as-group=uwm-approvers")
        # The API server enforces a new policy within seconds (its policy source refreshes each second once
        # its informers have the policy and its binding). Until then the outsider's annotation goes through:
        # each attempt sets a value never set before, and an approver takes it off again. (Re-setting the
        # same value is no change, which the policy rightly allows; and once the policy is enforced only an
        # approver may take an approval off. Retrying one value, undone by a non-approver, never ended.)
        start = time.monotonic()
        attempt = 0
        while (refused := annotate(f"{attempt:064x}", *outsider)).returncode == 0:
            waited = time.monotonic() - start
            assert waited < 120, f"the approval policy was not enforced within {waited:.0f} s ({attempt + 1} tries)"
            undo = kube.kubectl_run("annotate", "upgradeplan", "approved", "-n", namespace,
                                    "upgrade.uwm.io/approve-", *approver)
            assert undo.returncode == 0, undo.stderr
            attempt += 1
            time.sleep(0.5)
        print(f"the approval policy was enforced {time.monotonic() - start:.1f} s after its creation"
              f" ({attempt} tries let through before)")
        assert "only members of uwm-approvers may set, change or remove the annotation upgrade.uwm.io/approve" \
            in refused.stderr and "mallory is not" in refused.stderr, refused.stderr
        # the outsider may still change the plan (the spec, other annotations): only the approval is guarded
        other = kube.kubectl_run("annotate", "upgradeplan", "approved", "-n", namespace, "team=vdi", *outsider)
        assert other.returncode == 0, other.stderr
        approved = annotate("b" * 64, *approver)
        assert approved.returncode == 0, approved.stderr
        assert annotate("c" * 64, *outsider).returncode != 0  # nor change an approval
        got = json.loads(kube.kubectl_run("get", "upgradeplan", "approved", "-n", namespace, "-o", "json",
                                          check=True).stdout)
        assert got["metadata"]["annotations"]["upgrade.uwm.io/approve"] == "b" * 64
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            kube.kubectl_run("delete", kind, name, "--ignore-not-found")
