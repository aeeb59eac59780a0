"""The UpgradePlan CRD: the contract's fields, defaults, printer columns, and every invalid spec rejected.

The fast tests (no test bed) keep crds/ and docs/contracts.md section 1 from drifting apart. The others
run against the real kube-apiserver: what it accepts, what it fills in, and what it refuses (with a
message naming the field, and nothing created).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from uwm_upgrade.core.enums import ConditionType

from conftest import REPO, Kube

CRD_FILE = REPO / "crds" / "upgradeplans.upgrade.uwm.io.yaml"
CRD_NAME = "upgradeplans.upgrade.uwm.io"
EXAMPLE = REPO / "examples" / "upgradeplan.yaml"
EXAMPLE_SECRETS = REPO / "examples" / "secrets.yaml"  # apart, so that deleting the plan's file leaves them
CONTRACTS = REPO / "docs" / "contracts.md"
RUNNING_PHASES = ("Running", "Paused", "RollingBack", "AwaitingWindow")
IMMUTABLE_MESSAGE = "spec is immutable while the upgrade runs"
STEERING = {"paused", "retry", "abort", "maintenanceWindow"}  # may change while the plan runs

Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------- helpers

def _crd() -> Json:
    doc = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def _version(doc: Json | None = None) -> Json:
    versions = (doc or _crd())["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def _root_schema(doc: Json | None = None) -> Json:
    """The schema of the CRD in crds/, or of `doc` (a changed copy of it)."""
    return _version(doc)["schema"]["openAPIV3Schema"]


def _example_docs() -> list[Json]:
    return [d for f in (EXAMPLE_SECRETS, EXAMPLE) for d in yaml.safe_load_all(f.read_text()) if d]


def _example_plan() -> Json:
    plans = [d for d in _example_docs() if d["kind"] == "UpgradePlan"]
    assert len(plans) == 1
    return copy.deepcopy(plans[0])


def _children(schema: Json) -> dict[str, Json]:
    """The properties of an object schema, or of an array's items."""
    if schema.get("type") == "array":
        schema = schema["items"]
    return schema.get("properties", {})


def _walk(schema: Json, path: str = "") -> Iterator[tuple[str, Json]]:
    for name, sub in _children(schema).items():
        here = f"{path}.{name}" if path else name
        yield here, sub
        yield from _walk(sub, here)


def _values(schema: Json) -> set[str]:
    """Every enum value and string default in a subtree."""
    found: set[str] = set()
    for s in [schema, *(sub for _, sub in _walk(schema))]:
        found.update(str(v) for v in s.get("enum", []))
        if isinstance(s.get("default"), str):
            found.add(s["default"])
    return found


def _resolve(schema: Json, dotted: str) -> Json | None:
    for part in dotted.replace("[]", "").split("."):
        sub = _children(schema).get(part)
        if sub is None:
            return None
        schema = sub
    return schema


# ------------------------------------------------------------------------- fast: contract <-> schema

def _contract_rows() -> dict[str, list[list[str]]]:
    """Section 1 of docs/contracts.md: the rows of its spec table and of its status table."""
    text = CONTRACTS.read_text()
    section = text.split("## 1.", 1)[1].split("\n## 2.", 1)[0]
    tables: dict[str, list[list[str]]] = {"spec": [], "status": []}
    current: str | None = None
    for line in section.splitlines():
        if line.startswith("Spec"):
            current = "spec"
        elif line.startswith("Status"):
            current = "status"
        elif line.startswith("|") and current and not re.match(r"^\|[\s|:-]+\|$", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] != "field":
                tables[current].append(cells)
    return tables


IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\[\])?(\.[A-Za-z][A-Za-z0-9]*(\[\])?)*$")


def test_contract_tables_are_found() -> None:
    rows = _contract_rows()
    assert len(rows["spec"]) >= 14, rows["spec"]
    assert len(rows["status"]) >= 14, rows["status"]


@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_contract_field_and_value_is_in_the_schema(part: str) -> None:
    """Each row's field is a property; its nested field names, enum values and references exist too."""
    root = _root_schema()
    base = root["properties"][part]
    missing: list[str] = []
    for cells in _contract_rows()[part]:
        fields = [f.replace("[]", "") for f in re.findall(r"`([^`]+)`", cells[0])]
        if not fields:
            continue  # "(both server lists)": cross-field rules, checked by the CEL tests below
        for field in fields:
            sub = _children(base).get(field)
            if sub is None:
                missing.append(f"{part}.{field}")
                continue
            names = {n for n, _ in _walk(sub)} | {n.rsplit(".", 1)[-1] for n, _ in _walk(sub)}
            values = _values(sub)
            if (part, field) == ("status", "conditions"):  # any type is admitted: ours are the operator's enum
                values |= {str(t) for t in ConditionType} | {"True", "False", "Unknown"}
            for token in re.findall(r"`([^`]+)`", " ".join(cells[1:])):
                if not IDENT.match(token):
                    continue  # a pattern, an expression or an example value
                if "." in token or "[]" in token:
                    if _resolve(base, token) is None and _resolve(root, token) is None:
                        missing.append(f"{part}.{field}: reference {token}")
                elif token[0].islower():  # a nested field, a string default, or a sibling field
                    if token not in names and token not in values and token not in _children(base):
                        missing.append(f"{part}.{field}.{token}")
                elif token not in values:
                    missing.append(f"{part}.{field}: value {token}")
    assert not missing, f"in docs/contracts.md section 1 but not in {CRD_FILE.name}: {missing}"


def test_every_schema_field_is_in_the_contract() -> None:
    """The reverse: no field in the CRD that the contract does not name (kopf's bookkeeping aside)."""
    section = CONTRACTS.read_text().split("## 1.", 1)[1].split("\n## 2.", 1)[0]
    named = {t.replace("[]", "").rsplit(".", 1)[-1] for t in re.findall(r"`([^`]+)`", section)}
    root = _root_schema()
    extra = [f"{part}.{path}" for part in ("spec", "status") for path, _ in _walk(root["properties"][part])
             if path.rsplit(".", 1)[-1] not in named and not path.startswith("kopf")]
    assert not extra, f"in {CRD_FILE.name} but not in docs/contracts.md section 1: {extra}"


def test_crd_names_scope_and_version() -> None:
    crd = _crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == CRD_NAME
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("upgrade.uwm.io", "Namespaced")
    assert spec["names"] == {"kind": "UpgradePlan", "listKind": "UpgradePlanList", "plural": "upgradeplans",
                             "singular": "upgradeplan", "shortNames": ["uplan"], "categories": ["uwm"]}
    v = _version()
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in v["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == [("Phase", ".status.phase"), ("Current", ".status.currentVersion"),
                       ("Target", ".spec.targetVersion"), ("Hop", ".status.hopDisplay"),
                       ("Step", ".status.currentStep"), ("Age", ".metadata.creationTimestamp")]


def test_immutability_rule_compares_every_spec_field_but_the_steering_ones() -> None:
    root = _root_schema()
    rules = root["x-kubernetes-validations"]
    assert [r["fieldPath"] for r in rules][:4] == [".spec", ".spec.retry", ".spec.retry", ".spec.abort"]
    rule = rules[0]["rule"]
    for phase in RUNNING_PHASES:
        assert f"'{phase}'" in rule
    for field in root["properties"]["spec"]["properties"]:
        compared = f"self.spec.{field} == oldSelf.spec.{field}" in rule
        if field not in root["properties"]["spec"]["required"]:  # absent on both sides, or equal
            compared = compared and f"has(self.spec.{field}) == has(oldSelf.spec.{field})" in rule
        assert compared == (field not in STEERING), f"spec.{field} in the immutability rule: {compared}"


SKIPPED_WHILE_IMMUTABLE = re.compile(
    r"^\(oldSelf\.hasValue\(\) && has\(oldSelf\.value\(\)\.status\) && has\(oldSelf\.value\(\)\.status\.phase\) &&\s*"
    r"\(oldSelf\.value\(\)\.status\.phase in \[(?P<phases>[^\]]*)\] \|\|\s*"
    r"\(oldSelf\.value\(\)\.status\.phase == 'AwaitingWindow' && "
    r"has\(oldSelf\.value\(\)\.status\.startedAt\)\)\)\) \|\|\s*"
    r"\(oldSelf\.hasValue\(\) &&(?P<unchanged>.*?)\) \|\| \(", re.S)


def test_the_pairwise_rules_are_skipped_exactly_while_the_spec_is_immutable() -> None:
    """The root's other rules (the spec's pairwise ones, moved there to see the old status) each start with
    the same guard as the immutability rule: they may be skipped only while that rule forbids changing
    anything they read (a drift between the two would let an edit through unchecked), or when every field
    they read is unchanged."""
    root = _root_schema()
    immutable = root["x-kubernetes-validations"][0]["rule"]
    running = re.search(r"oldSelf\.status\.phase in \[([^\]]*)\]", immutable)
    waiting = "(oldSelf.status.phase == 'AwaitingWindow' && has(oldSelf.status.startedAt))"
    assert running is not None and waiting in immutable
    moved = root["x-kubernetes-validations"][4:]
    assert len(moved) >= 20
    compared = {f for f in root["properties"]["spec"]["properties"]
                if f"self.spec.{f} == oldSelf.spec.{f}" in immutable}
    for r in moved:
        guard = SKIPPED_WHILE_IMMUTABLE.match(r["rule"])
        assert guard is not None, r["rule"][:200]
        assert guard["phases"] == running.group(1), r["rule"][:200]
        assert r.get("optionalOldSelf") is True  # so that it runs at creation
        read = set(re.findall(r"\bself\.spec\.(\w+)", r["rule"][guard.end():]))
        assert read and read <= compared, f"{r['message']}: reads {sorted(read - compared)}, which may change"
        unchanged = set(re.findall(r"self\.spec\.(\w+) == oldSelf\.value\(\)\.spec\.(\1)", guard["unchanged"]))
        assert {f for f, _ in unchanged} == read, f"{r['message']}: skipped as unchanged by {sorted(unchanged)}"


WALK = re.compile(r"self\.spec\.(\w+)\.(?:all|exists|exists_one)\(")
# The rules that say two entries differ: CEL as of Kubernetes 1.29 (the chart's kubeVersion) has no distinct()
# or set to say it in one walk, so they compare every entry with every other.
DISTINCTNESS = re.compile(r"^two |must not contain duplicates|is already the url of a server|is the name of a server")


def _walks_within_walks(rule: str) -> set[str]:
    """The lists this rule walks inside a walk of the same list (each entry against each entry)."""
    nested = set()
    for walk in WALK.finditer(rule):
        depth, i = 1, walk.end()
        while depth and i < len(rule):
            depth += {"(": 1, ")": -1}.get(rule[i], 0)
            i += 1
        if any(inner.group(1) == walk.group(1) for inner in WALK.finditer(rule, walk.end(), i)):
            nested.add(walk.group(1))
    return nested


def test_no_rule_walks_a_list_once_per_entry_but_those_that_say_entries_differ() -> None:
    """The API server runs a walk nested in a walk of the same list n*n times at creation (and at every
    edit of what it reads): "the servers of one database are either all replaced or all upgraded in place"
    did, 40,000 times for 200 servers, 0.94 s of the API server's CPU at each creation of such a plan; it
    now walks the databases (at most 50), each over the servers once or twice."""
    nested = {r["message"]: _walks_within_walks(r["rule"]) for r in _root_schema()["x-kubernetes-validations"]}
    nested = {m: lists for m, lists in nested.items() if lists}
    assert any(DISTINCTNESS.search(m) for m in nested), "the walk finder finds the distinctness rules"
    assert {m: lists for m, lists in nested.items() if not DISTINCTNESS.search(m)} == {}
    assert _walks_within_walks("self.spec.p.all(a, self.spec.p.all(b, a.x != b.x))") == {"p"}
    assert _walks_within_walks("self.spec.d.all(d, self.spec.p.all(s, s.x) || self.spec.p.all(s, !s.x))") == set()


def test_the_status_lists_are_atomic_but_the_conditions() -> None:
    """The operator alone writes the status, by JSON patches of list indexes: keyed lists there bought only
    managedFields that list every entry's every field (32 KB of a 200-server plan, decoded and written
    again by the API server with each status write). The conditions stay keyed by type, as Kubernetes
    conventions have them."""
    status = _root_schema()["properties"]["status"]["properties"]
    kinds = {name: (sub.get("x-kubernetes-list-type") or "atomic") for name, sub in status.items()
             if sub.get("type") == "array"}
    assert kinds == {**dict.fromkeys(kinds, "atomic"), "conditions": "map"}
    assert {"servers", "databases", "steps"} <= set(kinds)


def test_spec_strings_and_lists_are_bounded_and_rules_have_messages() -> None:
    """CEL's cost estimate needs bounds; a rule without a message would reject with its bare expression."""
    unbounded = []
    for path, sub in _walk(_root_schema()["properties"]["spec"]):
        if sub.get("type") == "string" and "maxLength" not in sub and "enum" not in sub:
            unbounded.append(path)
        if sub.get("type") == "array" and "maxItems" not in sub:
            unbounded.append(path)
    assert not unbounded, unbounded
    schemas = [_root_schema(), *(s for _, s in _walk(_root_schema()))]
    rules = [r for s in schemas for r in s.get("x-kubernetes-validations", [])]
    assert len(rules) >= 9
    assert all(r.get("message") for r in rules), [r["rule"] for r in rules if not r.get("message")]


def test_the_example_plans_keep_their_secrets_in_a_file_of_their_own() -> None:
    """`kubectl delete -f examples/upgradeplan.yaml` must delete the plan alone: its teardown needs the
    Secrets (deleted in the same command, the estate could not be reached to restore it)."""
    for plan_file in REPO.glob("examples/upgradeplan*.yaml"):
        kinds = [d["kind"] for d in yaml.safe_load_all(plan_file.read_text()) if d]
        assert kinds == ["UpgradePlan"], (plan_file.name, kinds)
    secrets = [d for d in yaml.safe_load_all(EXAMPLE_SECRETS.read_text()) if d]
    assert {d["kind"] for d in secrets} == {"Secret"}
    assert sorted(d["metadata"]["name"] for d in secrets) == ["uwm-agent", "uwm-databases", "uwm-license"]


def test_example_is_the_documented_two_hop_estate() -> None:
    docs = _example_docs()
    # the third Secret, uwm-license, is examples/upgradeplan-defaultwebsite.yaml's
    assert sorted(d["kind"] for d in docs) == ["Secret", "Secret", "Secret", "UpgradePlan"]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    spec = _example_plan()["spec"]
    assert spec["strategy"] == "InPlace"
    releases = spec["releases"]
    hops = -(-(releases.index(spec["targetVersion"]) - releases.index("2021.1")) // 2)
    assert hops == 2
    dbs = {d["name"]: d for d in spec["databases"]}
    assert {n: d["kind"] for n, d in dbs.items()} == {"mgmt-db": "Management", "pers-db": "Personalization"}
    for d in dbs.values():
        ref = d["connectionSecretRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    assert spec["agentSecretRef"]["key"] in secrets[spec["agentSecretRef"]["name"]]["stringData"]
    ms, ps = spec["managementServers"], spec["personalizationServers"]
    assert len(ms) == 2 and all(s["loadBalanced"] and s["database"] == "mgmt-db" for s in ms)
    assert sorted(s["replicationRole"] for s in ps) == ["Master", "Subscriber", "Subscriber"]
    assert all(s["database"] == "pers-db" for s in ps)


# --------------------------------------------------------------------------------- against the server

def _run(kube: Kube, *args: str, doc: Json | list[Json] | None = None) -> subprocess.CompletedProcess[str]:
    text = None
    if doc is not None:
        docs = doc if isinstance(doc, list) else [doc]
        text = "\n".join(f"---\n{json.dumps(d)}" for d in docs)
    return kube.kubectl_run(*args, input=text)


def _ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, f"kubectl failed ({res.returncode}): {res.stderr}"
    return res


def _apply(kube: Kube, ns: str, doc: Json | list[Json]) -> subprocess.CompletedProcess[str]:
    return _run(kube, "apply", "--server-side", "--validate=strict", "--field-manager=test-crd", "-n", ns,
                "-f", "-", doc=doc)


def _get(kube: Kube, ns: str, name: str) -> Json:
    out = _ok(kube.kubectl_run("get", "upgradeplan", name, "-n", ns, "-o", "json")).stdout
    obj = json.loads(out)
    assert isinstance(obj, dict)
    return obj


def _patch_status(kube: Kube, ns: str, name: str, status: Json) -> subprocess.CompletedProcess[str]:
    return kube.kubectl_run("patch", "upgradeplan", name, "-n", ns, "--subresource=status", "--type=merge",
                            "-p", json.dumps({"status": status}))


def _patch_spec(kube: Kube, ns: str, name: str, spec: Json) -> subprocess.CompletedProcess[str]:
    return kube.kubectl_run("patch", "upgradeplan", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def _contains(big: Any, small: Any) -> bool:
    """`small` is a part of `big` (dicts by keys, lists item by item): what was sent came back."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(_contains, big, small))
    return bool(big == small)


@pytest.fixture(scope="module")
def crd(kube: Kube) -> Kube:
    """The CRD as it is in crds/ (the bed applies it at start; applying again makes sure), Established."""
    _ok(kube.kubectl_run("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE)))
    _ok(kube.kubectl_run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}"))
    return kube


@pytest.fixture(scope="module")
def scratch_ns(crd: Kube) -> str:
    """One namespace for the rejection table: nothing is ever created in it, each case has its own name."""
    name = f"t-bad-{uuid.uuid4().hex[:8]}"
    _ok(crd.kubectl_run("create", "namespace", name))
    return name


def test_crd_is_established_with_its_names(crd: Kube, namespace: str) -> None:
    obj = json.loads(_ok(crd.kubectl_run("get", "crd", CRD_NAME, "-o", "json")).stdout)
    conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
    assert conditions.get("Established") == "True", conditions
    assert conditions.get("NamesAccepted") == "True", conditions
    assert obj["status"]["acceptedNames"]["shortNames"] == ["uplan"]
    for resource in ("uplan", "upgradeplans", "upgradeplan", "uwm"):  # short name, plural, singular, category
        res = crd.kubectl_run("get", resource, "-n", namespace)
        assert res.returncode == 0 and "No resources found" in res.stderr, (resource, res.stderr)


def test_example_applies_and_defaults_are_filled_in(crd: Kube, namespace: str) -> None:
    docs = _example_docs()
    out = _ok(_apply(crd, namespace, docs)).stdout
    assert "upgradeplan.upgrade.uwm.io/estate-2025 serverside-applied" in out, out
    for d in docs:
        if d["kind"] == "Secret":
            _ok(crd.kubectl_run("get", "secret", d["metadata"]["name"], "-n", namespace))
    got = _get(crd, namespace, "estate-2025")
    sent = _example_plan()["spec"]
    assert _contains(got["spec"], sent), f"pruned or changed: sent {sent}\ngot {got['spec']}"
    spec = got["spec"]
    assert spec["maxMajorVersionsPerStep"] == 2
    assert spec["failurePolicy"] == "Halt"
    assert spec["maxConcurrentServers"] == 1
    assert spec["paused"] is False
    assert spec["backup"] == {"enabled": True}
    assert spec["approval"] == {"required": False}
    assert spec["baseline"] == {"acceptOutOfRotation": False, "acceptReplicationOff": False}
    assert all(s["loadBalanced"] is False for s in spec["personalizationServers"])
    # no operator wrote it yet: it reads as observed generation 0, which kstatus calls InProgress
    assert got["status"] == {"observedGeneration": 0} and got["metadata"]["generation"] == 1


def test_every_default_of_a_minimal_plan(crd: Kube, namespace: str) -> None:
    minimal = {
        "apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan", "metadata": {"name": "minimal"},
        "spec": {
            "targetVersion": "2024.1", "releases": ["2023.1", "2024.1"],
            "databases": [{"name": "db", "kind": "Personalization",
                           "connectionSecretRef": {"name": "dbs", "key": "db"}}],
            "personalizationServers": [{"name": "ps-1", "url": "https://ps-1.example.com:7771", "database": "db"}],
            "agentSecretRef": {"name": "agent"},
        },
    }
    _ok(_apply(crd, namespace, minimal))
    spec = _get(crd, namespace, "minimal")["spec"]
    assert spec == {
        **minimal["spec"],
        "personalizationServers": [{"name": "ps-1", "url": "https://ps-1.example.com:7771", "database": "db",
                                    "loadBalanced": False, "replicationRole": "None"}],
        "agentSecretRef": {"name": "agent", "key": "token"},
        "maxMajorVersionsPerStep": 2, "strategy": "InPlace", "backup": {"enabled": True},
        "healthCheck": {"timeoutSeconds": 120, "periodSeconds": 2, "successThreshold": 1},
        "maxConcurrentServers": 1, "failurePolicy": "Halt", "paused": False, "approval": {"required": False},
        "baseline": {"acceptOutOfRotation": False, "acceptReplicationOff": False},
    }


def _full_status() -> Json:
    """A status with every declared field set (checked against the schema below)."""
    t = "2026-01-02T03:04:05Z"
    return {
        "phase": "Running", "phaseSince": t, "observedGeneration": 1, "planHash": "sha256:" + "ab" * 32,
        "retries": 1, "nextWindowStart": t,
        "path": [{"from": "2021.1", "to": "2023.1", "summary": {
                     "succeeded": 12, "skipped": 2, "startedAt": "2026-01-02T03:04:05Z",
                     "finishedAt": "2026-01-02T03:24:05Z", "firstServers": {"mgmt-db": "ms-1"},
                     "longestSeconds": {"InstallServer": 310.0}}},
                 {"from": "2023.1", "to": "2025.1"}],
        "currentHop": 1, "currentStep": "upgrade-schema", "hopDisplay": "1/2",
        "currentVersion": "2021.1", "targetVersion": "2025.1",
        "steps": [
            {"name": "preflight", "hop": 0, "state": "Succeeded", "startedAt": t, "finishedAt": t,
             "message": "7 servers, 2 databases"},
            {"name": "upgrade-schema", "hop": 1, "state": "Running", "startedAt": t, "finishedAt": None,
             "message": None, "server": "ms-1", "database": "mgmt-db", "requestedAt": t, "retriedAt": t},
        ],
        "servers": [
            {"name": "ms-1", "kind": "Management", "version": "2021.1", "online": False,
             "replication": "None", "replicationBefore": "None", "onlineBefore": True, "health": "Unknown",
             "offlineSince": t},
            {"name": "ps-1", "kind": "Personalization", "version": "2021.1", "online": True,
             "replication": "Disabled", "replicationBefore": "Enabled", "onlineBefore": False,
             "health": "LockedOut"},
        ],
        "databases": [
            {"name": "mgmt-db", "kind": "Management", "schemaVersion": "2021.1",
             "lastBackup": {"id": "b-1", "hop": 1, "takenAt": t, "verified": True},
             "newReleaseServed": {"hop": 1, "version": "2023.1", "server": "ms-1", "since": t}},
        ],
        "cutovers": [
            {"server": "ps-1", "replacement": "ps-1-new", "method": "VirtualHostDns", "oldUrl": "http://ps-1:7771",
             "newUrl": "http://ps-1-new:7771", "virtualHost": "pers.example.com", "state": "OldServerOffline",
             "newServerOnlineAt": t, "clientsMovedAt": t, "oldServerOfflineAt": t,
             "message": "clients moved from http://ps-1:7771 to http://ps-1-new:7771 (DNS record pers.example.com)"},
            {"server": "ms-1", "replacement": "ms-1-new", "method": "DefaultWebsite", "oldUrl": "http://ms-1:7751",
             "newUrl": "http://ms-1-new:7751", "defaultWebsiteHost": "mgmt.example.com", "state": "ClientsMoved",
             "license": {"secretName": "uwm-license", "key": "license", "fingerprint": "sha256:0123456789abcdef",
                         "deployedAt": t}},
        ],
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "Upgrading", "message": "hop 1 of 2",
             "lastTransitionTime": t, "observedGeneration": 1},
            {"type": "ReplicationDisabled", "status": "True", "reason": "BeforeUpgrade", "message": "",
             "lastTransitionTime": t, "observedGeneration": 1},
        ],
        "startedAt": t, "completedAt": t, "message": "hop 1/2: upgrading the schema of mgmt-db on ms-1",
        "kopf": {"progress": {"upgrade": {"started": t, "retries": 0}}},
    }


def test_full_status_covers_the_schema() -> None:
    """The round-trip below is only as good as its payload: it must set every declared status field."""
    schema = _root_schema()["properties"]["status"]
    status = _full_status()

    def covered(node: Any, sub: Json, path: str) -> list[str]:
        if sub.get("x-kubernetes-preserve-unknown-fields"):
            return []
        items = node if isinstance(node, list) else [node]
        miss = []
        for name, child in _children(sub).items():
            present = [i[name] for i in items if isinstance(i, dict) and i.get(name) is not None]
            if not present:
                miss.append(f"{path}.{name}")
            for p in present:
                miss += covered(p, child, f"{path}.{name}")
        return miss

    assert not covered(status, schema, "status")


def _without_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def test_status_round_trips_through_the_status_subresource(crd: Kube, namespace: str) -> None:
    """Nothing is pruned; nulls (as a model dump writes them for unset fields) are accepted, and a merge
    patch drops them."""
    _ok(_apply(crd, namespace, _example_plan()))
    _ok(_patch_status(crd, namespace, "estate-2025", _full_status()))
    got = _get(crd, namespace, "estate-2025")
    status = _without_nulls(_full_status())
    assert got["status"] == status
    # the main resource ignores status, the status subresource ignores spec
    _ok(crd.kubectl_run("patch", "upgradeplan", "estate-2025", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"status": {"phase": "Succeeded"}})))
    _ok(crd.kubectl_run("patch", "upgradeplan", "estate-2025", "-n", namespace, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"spec": {"paused": True}})))
    again = _get(crd, namespace, "estate-2025")
    assert again["status"] == status
    assert again["spec"]["paused"] is False


@pytest.mark.parametrize(("status", "expected"), [
    ({"phase": "Finished"}, "status.phase: Unsupported value"),
    ({"steps": [{"name": "x", "state": "Done"}]}, "status.steps[0].state: Unsupported value"),
    # atomic (test_the_status_lists_are_atomic_but_the_conditions): entries are checked, not their keys
    ({"servers": [{"name": "a"}, {"version": "2025.1"}]}, "status.servers[1].name: Required value"),
    ({"conditions": [{"type": "Ready", "status": "Yes"}]}, "status.conditions[0].status: Unsupported value"),
    ({"startedAt": "yesterday"}, "status.startedAt"),
], ids=["phase", "step-state", "server-name", "condition-status", "date-time"])
def test_invalid_status_is_rejected(crd: Kube, namespace: str, status: Json, expected: str) -> None:
    _ok(_apply(crd, namespace, _example_plan()))
    res = _patch_status(crd, namespace, "estate-2025", status)
    assert res.returncode != 0 and expected in res.stderr, res.stderr
    assert _get(crd, namespace, "estate-2025")["status"] == {"observedGeneration": 0}  # nothing half-applied


def test_printer_columns(crd: Kube, namespace: str) -> None:
    _ok(_apply(crd, namespace, _example_plan()))
    _ok(_patch_status(crd, namespace, "estate-2025", _full_status()))
    lines = _ok(crd.kubectl_run("get", "uplan", "-n", namespace)).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "CURRENT", "TARGET", "HOP", "STEP", "AGE"], lines
    assert lines[1].split()[:6] == ["estate-2025", "Running", "2021.1", "2025.1", "1/2", "upgrade-schema"], lines
    wide = _ok(crd.kubectl_run("get", "uplan", "-n", namespace, "-o", "wide")).stdout.splitlines()
    assert wide[0].split()[-1] == "MESSAGE" and "hop 1/2: upgrading the schema" in wide[1], wide


# ------------------------------------------------------------------------------ the rejection table

Mutation = Callable[[Json], None]


def _at(obj: Any, path: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    for p in parts[:-1]:
        obj = obj[p]
    return obj, parts[-1]


def put(path: str, value: Any) -> Mutation:
    def mutate(plan: Json) -> None:
        parent, key = _at(plan, path)
        parent[key] = value
    return mutate


def drop(path: str) -> Mutation:
    def mutate(plan: Json) -> None:
        parent, key = _at(plan, path)
        del parent[key]
    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(plan: Json) -> None:
        for m in mutations:
            m(plan)
    return mutate


def _ms(i: int) -> Json:
    return {"name": f"ms-{i}", "url": f"http://127.0.0.1:{8000 + i}", "database": "mgmt-db"}


SUBSCRIBERS_ONLY = [{"name": "ps-1", "url": "http://127.0.0.1:7771", "database": "pers-db",
                     "replicationRole": "Subscriber"}]

NEW_PS = {"url": "http://127.0.0.1:8771", "virtualHost": "pers.example.com"}


def _replace_all_ps(virtual_host: bool = True) -> list[Mutation]:
    """Every Personalization Server of the example replaced (pers-db is then clean-installed)."""
    return [put(f"spec.personalizationServers.{i}.replacement",
                {"url": f"http://127.0.0.1:{8771 + i}", **({"virtualHost": f"p{i}.example.com"} if virtual_host
                                                          else {})}) for i in range(3)]


def _replace_all_ms(host: str | None = None, license_: Json | None = None) -> list[Mutation]:
    """Every Management Server of the example replaced (out of its pool: a pool's servers cannot be)."""
    def new(i: int) -> Json:
        extra = {"defaultWebsiteHost": f"m{i}.{host}"} if host else {}
        return {**extra, **({"license": license_} if license_ else {})}
    return [m for i in range(2) for m in (
        put(f"spec.managementServers.{i}.loadBalanced", False),
        put(f"spec.managementServers.{i}.replacement", {"url": f"http://127.0.0.1:{8751 + i}", **new(i)}))]


def test_a_default_website_plan_with_a_license_is_accepted_and_the_key_defaulted(crd: Kube, namespace: str) -> None:
    plan = _example_plan()
    for m in (put("spec.strategy", "CleanInstall"), put("spec.managementCutover", "DefaultWebsite"),
              put("spec.personalizationCutover", "DefaultWebsite"), *_replace_all_ps(virtual_host=False),
              *_replace_all_ms(host="mgmt.example.com", license_={"name": "uwm-license"})):
        m(plan)
    for i, ps in enumerate(plan["spec"]["personalizationServers"]):
        ps["replacement"]["defaultWebsiteHost"] = f"p{i}.example.com"
    _ok(_run(crd, "create", "--validate=strict", "-n", namespace, "-f", "-", doc=plan))
    spec = _get(crd, namespace, "estate-2025")["spec"]
    assert spec["managementServers"][0]["replacement"]["license"] == {"name": "uwm-license", "key": "license"}
    assert spec["managementCutover"] == "DefaultWebsite"


# (id, mutation of the example plan, substrings the API server's error must contain; per verb where
# server-side apply words it differently)
Expected = tuple[str, ...] | dict[str, tuple[str, ...]]
INVALID: list[tuple[str, Mutation, Expected]] = [
    ("no-spec", drop("spec"), ("spec: Required value",)),
    ("target-missing", drop("spec.targetVersion"), ("spec.targetVersion: Required value",)),
    ("target-not-a-release", put("spec.targetVersion", "2026.1"),
     ("spec.targetVersion", "2026.1 must be one of spec.releases")),
    ("target-too-long", put("spec.targetVersion", "9" * 65), ("spec.targetVersion: Too long",)),
    ("releases-missing", drop("spec.releases"), ("spec.releases: Required value",)),
    ("releases-duplicate-ignoring-case", put("spec.releases", ["2021.1", "2023.a", "2023.A", "2025.1"]),
     ("spec.releases", "must not contain duplicates, compared ignoring case")),
    ("releases-duplicate", put("spec.releases", ["2021.1", "2023.1", "2023.1", "2025.1"]),
     ("spec.releases", "must not contain duplicates")),
    ("releases-empty", put("spec.releases", []), ("spec.releases", "at least 1 items")),
    ("release-pattern", put("spec.releases.1", "2022 1"), ("spec.releases[1]", "should match")),
    ("max-major-3", put("spec.maxMajorVersionsPerStep", 3),
     ("spec.maxMajorVersionsPerStep", "less than or equal to 2")),
    ("max-major-0", put("spec.maxMajorVersionsPerStep", 0),
     ("spec.maxMajorVersionsPerStep", "greater than or equal to 1")),
    ("strategy", put("spec.strategy", "BlueGreen"), ("spec.strategy: Unsupported value",)),
    ("databases-missing", drop("spec.databases"), ("spec.databases: Required value",)),
    ("databases-empty", put("spec.databases", []), ("spec.databases", "at least 1 items")),
    ("database-name", put("spec.databases.0.name", "Mgmt_DB"), ("spec.databases[0].name", "should match")),
    ("database-kind", put("spec.databases.0.kind", "Reporting"), ("spec.databases[0].kind: Unsupported value",)),
    ("database-secret-key", drop("spec.databases.0.connectionSecretRef.key"),
     ("spec.databases[0].connectionSecretRef.key: Required value",)),
    ("database-duplicate", put("spec.databases.1.name", "mgmt-db"),
     {"create": ("spec.databases[1]: Duplicate value",),
      "apply": ('.spec.databases: duplicate entries for key [name="mgmt-db"]',)}),
    ("server-url", put("spec.managementServers.0.url", "ftp://127.0.0.1:7751"),
     ("spec.managementServers[0].url", "should match")),
    # finding 5: every URL one server's, each server at one URL
    ("server-url-user-info", put("spec.managementServers.0.url", "http://admin@127.0.0.1:7751"),
     ("spec.managementServers[0].url", "no user-info (user@), query (?) or fragment (#)")),
    ("server-url-query", put("spec.personalizationServers.1.url", "http://127.0.0.1:7772/?debug=1"),
     ("spec.personalizationServers[1].url", "no user-info (user@), query (?) or fragment (#)")),
    ("server-url-fragment", put("spec.managementServers.1.url", "http://127.0.0.1:7752#a"),
     ("spec.managementServers[1].url", "no user-info (user@), query (?) or fragment (#)")),
    ("server-url-no-host", put("spec.managementServers.0.url", "http://:7751"),
     ("spec.managementServers[0].url", "must name a host")),
    ("server-url-not-normal", put("spec.personalizationServers.0.url", "http://LOCALHOST:7771/"),
     ("spec.personalizationServers[0].url", "must be written in normal form")),
    ("server-url-default-port", put("spec.managementServers.0.url", "http://ms-1.example.com:80"),
     ("spec.managementServers[0].url", "must be written in normal form")),
    ("server-url-twice", put("spec.managementServers.1.url", "http://127.0.0.1:7751"),
     ("spec.managementServers", "two spec.managementServers[] entries have the same url")),
    ("server-url-twice-across-lists", put("spec.personalizationServers.2.url", "http://127.0.0.1:7752"),
     ("spec.personalizationServers", "a spec.managementServers[] and a spec.personalizationServers[] entry have the"
                                     " same url")),
    ("database-secret-twice", put("spec.databases.1.connectionSecretRef", {"name": "uwm-databases", "key": "mgmt-db"}),
     ("spec.databases", "two spec.databases[] entries name the same connectionSecretRef")),
    ("database-unused", put("spec.databases", [*_example_plan()["spec"]["databases"], {
        "name": "spare-db", "kind": "Management", "connectionSecretRef": {"name": "uwm-databases", "key": "spare"}}]),
     ("spec.databases", "every spec.databases[] entry must be used by a server")),
    ("server-name", put("spec.managementServers.0.name", "MS-1"), ("spec.managementServers[0].name",)),
    ("server-database-unknown", put("spec.managementServers.1.database", "other-db"),
     ("spec.managementServers", "every spec.managementServers[].database must name a spec.databases[] entry of kind "
                               "Management")),
    ("server-database-wrong-kind", put("spec.managementServers.0.database", "pers-db"),
     ("spec.managementServers", "must name a spec.databases[] entry of kind Management")),
    ("pers-database-wrong-kind", put("spec.personalizationServers.2.database", "mgmt-db"),
     ("spec.personalizationServers", "every spec.personalizationServers[].database must name a spec.databases[] "
                                     "entry of kind Personalization")),
    ("server-duplicate", put("spec.managementServers.1.name", "ms-1"),
     {"create": ("spec.managementServers[1]: Duplicate value",),
      "apply": ('.spec.managementServers: duplicate entries for key [name="ms-1"]',)}),
    ("server-name-in-both-lists", put("spec.personalizationServers.0.name", "ms-2"),
     ("spec.personalizationServers", "server names must be unique across spec.managementServers and "
                                   "spec.personalizationServers")),
    ("two-masters", put("spec.personalizationServers.1.replicationRole", "Master"),
     ("spec.personalizationServers", "at most one of spec.personalizationServers may have replicationRole Master")),
    ("subscriber-without-master", both(drop("spec.managementServers"), put("spec.personalizationServers",
                                                                           SUBSCRIBERS_ONLY)),
     ("spec.personalizationServers: Required value", "require one with replicationRole Master")),
    ("replication-role", put("spec.personalizationServers.0.replicationRole", "Primary"),
     ("spec.personalizationServers[0].replicationRole: Unsupported value",)),
    ("no-servers", both(drop("spec.managementServers"), drop("spec.personalizationServers")),
     ("spec.managementServers: Required value", "at least one server is required")),
    ("no-servers-empty-lists", both(put("spec.managementServers", []), put("spec.personalizationServers", [])),
     ("spec.managementServers: Required value", "at least one server is required")),
    ("too-many-servers", put("spec.managementServers", [_ms(i) for i in range(101)]),
     ("spec.managementServers: Too many",)),
    ("agent-secret-missing", drop("spec.agentSecretRef"), ("spec.agentSecretRef: Required value",)),
    ("agent-secret-name", put("spec.agentSecretRef.name", "Not A Name"), ("spec.agentSecretRef.name",)),
    ("period-over-timeout", put("spec.healthCheck", {"timeoutSeconds": 10, "periodSeconds": 30}),
     ("spec.healthCheck.periodSeconds", "must not exceed spec.healthCheck.timeoutSeconds")),
    ("period-over-default-timeout", put("spec.healthCheck", {"periodSeconds": 121}),
     ("spec.healthCheck.periodSeconds", "must not exceed")),
    ("timeout-0", put("spec.healthCheck.timeoutSeconds", 0), ("spec.healthCheck.timeoutSeconds",)),
    ("success-threshold", put("spec.healthCheck.successThreshold", 21),
     ("spec.healthCheck.successThreshold", "less than or equal to 20")),
    ("concurrency", put("spec.maxConcurrentServers", 101), ("spec.maxConcurrentServers", "less than or equal to 100")),
    ("failure-policy", put("spec.failurePolicy", "Ignore"), ("spec.failurePolicy: Unsupported value",)),
    ("paused-type", put("spec.paused", "yes"), ("spec.paused", "boolean")),
    ("approval-type", put("spec.approval", {"required": "yes"}), ("spec.approval.required", "boolean")),
    ("unknown-field", put("spec.targetVersoin", "2025.1"), ('spec.targetVersoin',)),
    # strategy CleanInstall
    ("replacement-without-clean-install", put("spec.personalizationServers.0.replacement", NEW_PS),
     ("spec.strategy", "are only used with spec.strategy CleanInstall")),
    ("clean-install-without-replacement", put("spec.strategy", "CleanInstall"),
     ("spec.strategy: Required value", "spec.strategy CleanInstall needs the new servers")),
    ("clean-install-rollback", both(put("spec.strategy", "CleanInstall"), put("spec.failurePolicy", "Rollback"),
                                    *_replace_all_ps()),
     ("spec.failurePolicy", "Rollback is not supported with spec.strategy CleanInstall")),
    ("clean-install-virtual-host-missing", both(put("spec.strategy", "CleanInstall"),
                                                *_replace_all_ps(virtual_host=False)),
     ("spec.personalizationServers: Required value", "replacement.virtualHost is required")),
    ("clean-install-half-a-database", both(put("spec.strategy", "CleanInstall"),
                                           put("spec.personalizationServers.0.replacement", NEW_PS)),
     ("spec.personalizationServers", "either all replaced (clean install) or all upgraded in place")),
    ("clean-install-load-balanced", both(put("spec.strategy", "CleanInstall"),
                                         put("spec.managementServers.0.replacement", {"url": "http://127.0.0.1:8751"}),
                                         put("spec.managementServers.1.replacement", {"url": "http://127.0.0.1:8752"})),
     ("spec.managementServers", "a load-balanced server cannot be replaced")),
    ("replacement-url", both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
                             put("spec.personalizationServers.0.replacement.url", "ftp://x.example")),
     ("spec.personalizationServers[0].replacement.url", "should match")),
    ("replacement-url-query", both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
                                   put("spec.personalizationServers.0.replacement.url", "http://x.example/?a=b")),
     ("spec.personalizationServers[0].replacement.url", "no user-info (user@), query (?)")),
    ("replacement-at-a-server-url", both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
                                         put("spec.personalizationServers.0.replacement.url", "http://127.0.0.1:7751")),
     ("spec.personalizationServers", "a spec.personalizationServers[].replacement.url is already the url of a server")),
    ("replacements-at-one-url", both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
                                     put("spec.personalizationServers.1.replacement.url", "http://127.0.0.1:8771")),
     ("spec.personalizationServers", "two spec.personalizationServers[].replacement entries have the same url")),
    ("replacement-named-as-a-server", both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
                                           put("spec.personalizationServers.0.replacement.name", "ms-1")),
     ("spec.personalizationServers", "a spec.personalizationServers[].replacement.name (default <name>-new) is the"
                                     " name of a server")),
    ("replacement-default-name-taken", both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
                                            put("spec.personalizationServers.1.replacement.name", "ps-1-new")),
     ("spec.personalizationServers", "two spec.personalizationServers[].replacement entries have the same name")),
    ("baseline-type", put("spec.baseline", {"acceptOutOfRotation": "yes"}), ("spec.baseline.acceptOutOfRotation",
                                                                             "boolean")),
    ("personalization-cutover", put("spec.personalizationCutover", "Email"),
     ("spec.personalizationCutover: Unsupported value",)),
    ("management-cutover", put("spec.managementCutover", "Email"), ("spec.managementCutover: Unsupported value",)),
    ("default-website-host-missing-personalization",
     both(put("spec.strategy", "CleanInstall"), put("spec.personalizationCutover", "DefaultWebsite"),
          *_replace_all_ps(virtual_host=False)),
     ("spec.personalizationServers: Required value",
      "replacement.defaultWebsiteHost is required with spec.personalizationCutover DefaultWebsite")),
    ("default-website-host-missing-management",
     both(put("spec.strategy", "CleanInstall"), put("spec.managementCutover", "DefaultWebsite"), *_replace_all_ms()),
     ("spec.managementServers: Required value",
      "replacement.defaultWebsiteHost is required with spec.managementCutover DefaultWebsite")),
    ("default-website-host-pattern",
     both(put("spec.strategy", "CleanInstall"), *_replace_all_ms(host="Mgmt Host")),
     ("spec.managementServers[0].replacement.defaultWebsiteHost", "should match")),
    ("license-secret-name",
     both(put("spec.strategy", "CleanInstall"), *_replace_all_ms(license_={"name": "Not A Name"})),
     ("spec.managementServers[0].replacement.license.name", "should match")),
    ("license-on-personalization",
     both(put("spec.strategy", "CleanInstall"), *_replace_all_ps(),
          put("spec.personalizationServers.0.replacement.license", {"name": "uwm-license"})),
     {"create": ('spec.personalizationServers[0].replacement.license',),
      "apply": ('.spec.personalizationServers[name="ps-1"].replacement.license: field not declared in schema',)}),
]


@pytest.mark.parametrize("verb", ["apply", "create"])
@pytest.mark.parametrize(("mutation", "expected"), [pytest.param(m, e, id=i) for i, m, e in INVALID])
def test_invalid_plan_is_rejected_and_nothing_created(crd: Kube, scratch_ns: str, verb: str, mutation: Mutation,
                                                      expected: Expected) -> None:
    plan = _example_plan()
    name = f"bad-{uuid.uuid4().hex[:8]}"
    plan["metadata"]["name"] = name
    mutation(plan)
    if verb == "apply":
        res = _apply(crd, scratch_ns, plan)
    else:
        res = _run(crd, "create", "--validate=strict", "-n", scratch_ns, "-f", "-", doc=plan)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    for text in expected[verb] if isinstance(expected, dict) else expected:
        assert text in res.stderr, f"{text!r} not in: {res.stderr}"
    after = crd.kubectl_run("get", "upgradeplan", name, "-n", scratch_ns)
    assert after.returncode != 0 and "NotFound" in after.stderr, after.stdout + after.stderr


@pytest.mark.parametrize(("mutation", "expected"), [pytest.param(m, e, id=i) for i, m, e in INVALID])
def test_the_operators_models_refuse_what_the_crd_refuses(mutation: Mutation, expected: Expected) -> None:
    """The operator never trusts its input blindly (a CRD installed by hand or an older schema may let
    anything through): `parse_spec` refuses every plan of the rejection table too (fast, no test bed)."""
    from uwm_upgrade.core.models import SpecError, parse_spec

    plan = _example_plan()
    parse_spec(plan["spec"])  # the control: the unmutated example is valid
    mutation(plan)
    with pytest.raises(SpecError):
        parse_spec(plan.get("spec") or {})


def _largest_plan(name: str) -> Json:
    """Every list at its maximum size and every URL near its maximum length: 50 releases, 50 databases,
    100 servers in each list, each with a replacement (CleanInstall), so every pairwise CEL rule runs at
    its worst (the API server's cost budget: a rule too dear is refused, at creation or when it runs)."""
    def url(kind: str, i: int) -> str:
        base = f"http://{kind}-{i}.example.com:7751/"
        return base + "p" * (512 - len(base))
    releases = [f"20{i:02d}.1" for i in range(50)]
    databases = [{"name": f"db-{i}", "kind": "Management" if i < 25 else "Personalization",
                  "connectionSecretRef": {"name": "dbs", "key": f"db-{i}"}} for i in range(50)]
    ms = [{"name": f"ms-{i}", "url": url("ms", i), "database": f"db-{i % 25}", "replacement": {"url": url("msn", i)}}
          for i in range(100)]
    ps = [{"name": f"ps-{i}", "url": url("ps", i), "database": f"db-{25 + i % 25}",
           "replacement": {"url": url("psn", i)}} for i in range(100)]
    return {"apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan", "metadata": {"name": name},
            "spec": {"targetVersion": releases[-1], "releases": releases, "strategy": "CleanInstall",
                     "personalizationCutover": "Policy", "databases": databases, "managementServers": ms,
                     "personalizationServers": ps, "agentSecretRef": {"name": "agent"}}}


def test_a_plan_with_every_list_at_its_maximum_is_accepted_and_still_checked(crd: Kube, namespace: str) -> None:
    from uwm_upgrade.core.models import SpecError, parse_spec

    largest = _largest_plan("largest")
    parse_spec(largest["spec"])  # the models agree
    _ok(_run(crd, "create", "--validate=strict", "-n", namespace, "-f", "-", doc=largest))
    twice = _largest_plan("twice")
    twice["spec"]["personalizationServers"][-1]["replacement"]["url"] = twice["spec"]["managementServers"][0]["url"]
    res = _run(crd, "create", "--validate=strict", "-n", namespace, "-f", "-", doc=twice)
    assert res.returncode != 0 and "replacement.url is already the url of a server" in res.stderr, res.stderr
    with pytest.raises(SpecError, match=r"personalizationServers\[99\].replacement.url .* is already the URL of"):
        parse_spec(twice["spec"])


def test_the_unmutated_plan_of_the_table_is_accepted(crd: Kube, namespace: str) -> None:
    """The control case: every rejection above is due to its mutation alone."""
    plan = _example_plan()
    _ok(_run(crd, "create", "--validate=strict", "-n", namespace, "-f", "-", doc=plan))
    names = json.loads(_ok(crd.kubectl_run("get", "uplan", "-n", namespace, "-o", "json")).stdout)["items"]
    assert [i["metadata"]["name"] for i in names] == ["estate-2025"]


# -------------------------------------------------------------------------------------- immutability

# A valid change of every spec field but `paused`: each must be refused while the plan runs.
CHANGES: list[tuple[str, Mutation]] = [
    ("targetVersion", put("spec.targetVersion", "2024.1")),
    ("releases", put("spec.releases", ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1", "2026.1"])),
    ("maxMajorVersionsPerStep", put("spec.maxMajorVersionsPerStep", 1)),
    ("strategy", put("spec.strategy", "CleanInstall")),
    ("databases", put("spec.databases.0.connectionSecretRef.key", "other")),
    ("managementServers", put("spec.managementServers.0.url", "http://127.0.0.1:7799")),
    ("personalizationServers", put("spec.personalizationServers.2.replicationRole", "None")),
    ("agentSecretRef", put("spec.agentSecretRef.key", "other")),
    ("backup", put("spec.backup", {"enabled": False})),
    ("healthCheck", put("spec.healthCheck.timeoutSeconds", 60)),
    ("maxConcurrentServers", put("spec.maxConcurrentServers", 2)),
    ("failurePolicy", put("spec.failurePolicy", "Rollback")),
    ("approval", put("spec.approval", {"required": True})),
    ("baseline", put("spec.baseline", {"acceptOutOfRotation": True})),
    ("personalizationCutover", put("spec.personalizationCutover", "Policy")),
    ("managementCutover", put("spec.managementCutover", "DefaultWebsite")),
    ("tls", put("spec.tls", {"caBundleSecretRef": {"name": "uwm-ca"}})),
]


def test_changes_cover_every_spec_field_but_the_steering_ones() -> None:
    fields = set(_root_schema()["properties"]["spec"]["properties"]) - STEERING
    assert {f for f, _ in CHANGES} == fields


def _running_plan(kube: Kube, ns: str, phase: str = "Running") -> Json:
    plan = _example_plan()
    _ok(_apply(kube, ns, plan))
    _ok(_patch_status(kube, ns, "estate-2025", {"phase": phase}))
    return plan


@pytest.mark.parametrize("mutation", [pytest.param(m, id=f) for f, m in CHANGES])
def test_spec_is_immutable_while_running(crd: Kube, namespace: str, mutation: Mutation) -> None:
    plan = _running_plan(crd, namespace)
    before = _get(crd, namespace, "estate-2025")["spec"]
    mutation(plan)
    res = _apply(crd, namespace, plan)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    assert "spec: Forbidden: " + IMMUTABLE_MESSAGE + " (it is Running)" in res.stderr, res.stderr
    assert _get(crd, namespace, "estate-2025")["spec"] == before


@pytest.mark.parametrize("phase", ["Paused", "RollingBack"])
def test_target_is_immutable_in_every_running_phase(crd: Kube, namespace: str, phase: str) -> None:
    _running_plan(crd, namespace, phase)
    res = _patch_spec(crd, namespace, "estate-2025", {"targetVersion": "2024.1"})
    assert res.returncode != 0 and f"{IMMUTABLE_MESSAGE} (it is {phase})" in res.stderr, res.stderr
    assert _get(crd, namespace, "estate-2025")["spec"]["targetVersion"] == "2025.1"


def test_paused_and_metadata_may_change_while_running(crd: Kube, namespace: str) -> None:
    _running_plan(crd, namespace)
    refused = _patch_spec(crd, namespace, "estate-2025", {"targetVersion": "2024.1", "paused": True})
    assert refused.returncode != 0 and IMMUTABLE_MESSAGE in refused.stderr, refused.stderr
    _ok(_patch_spec(crd, namespace, "estate-2025", {"paused": True}))
    _ok(crd.kubectl_run("annotate", "upgradeplan", "estate-2025", "-n", namespace, "upgrade.uwm.io/approve=abc"))
    got = _get(crd, namespace, "estate-2025")
    assert got["spec"]["paused"] is True
    assert got["spec"]["targetVersion"] == "2025.1"
    assert got["metadata"]["annotations"]["upgrade.uwm.io/approve"] == "abc"
    assert got["status"]["phase"] == "Running"


@pytest.mark.parametrize("phase", ["Pending", "AwaitingApproval", "Blocked", "Succeeded", "Failed"])
def test_spec_may_change_outside_the_running_phases(crd: Kube, namespace: str, phase: str) -> None:
    _running_plan(crd, namespace, phase)
    _ok(_patch_spec(crd, namespace, "estate-2025", {"targetVersion": "2024.1"}))
    assert _get(crd, namespace, "estate-2025")["spec"]["targetVersion"] == "2024.1"


@pytest.mark.parametrize("started", [True, False])
def test_awaiting_window_is_a_running_phase_once_started(crd: Kube, namespace: str, started: bool) -> None:
    _ok(_apply(crd, namespace, _example_plan()))
    status: Json = {"phase": "AwaitingWindow", **({"startedAt": "2026-01-05T09:00:00Z"} if started else {})}
    _ok(_patch_status(crd, namespace, "estate-2025", status))
    res = _patch_spec(crd, namespace, "estate-2025", {"targetVersion": "2024.1"})
    assert (res.returncode != 0) is started, res.stderr
    if started:
        assert f"{IMMUTABLE_MESSAGE} (it is AwaitingWindow)" in res.stderr, res.stderr


def test_the_steering_fields_may_change_while_running(crd: Kube, namespace: str) -> None:
    _running_plan(crd, namespace)
    window = {"days": ["saturday", "sunday"], "startTime": "22:00", "endTime": "04:00", "timeZone": "Europe/Berlin"}
    _ok(_patch_spec(crd, namespace, "estate-2025", {"paused": True, "maintenanceWindow": window}))
    _ok(_patch_spec(crd, namespace, "estate-2025", {"abort": "Rollback"}))
    spec = _get(crd, namespace, "estate-2025")["spec"]
    assert (spec["maintenanceWindow"], spec["abort"], spec["paused"]) == (window, "Rollback", True)


def test_retry_grows_only_while_failed(crd: Kube, namespace: str) -> None:
    _running_plan(crd, namespace)
    refused = _patch_spec(crd, namespace, "estate-2025", {"retry": 1})
    assert refused.returncode != 0, refused.stdout
    assert "spec.retry may be raised only while status.phase is Failed (it is Running)" in refused.stderr
    _ok(_patch_status(crd, namespace, "estate-2025", {"phase": "Failed"}))
    _ok(_patch_spec(crd, namespace, "estate-2025", {"retry": 1}))
    _ok(_patch_spec(crd, namespace, "estate-2025", {"retry": 2}))
    lower = _patch_spec(crd, namespace, "estate-2025", {"retry": 1})
    assert lower.returncode != 0 and "spec.retry only grows" in lower.stderr, lower.stderr
    gone = crd.kubectl_run("patch", "upgradeplan", "estate-2025", "-n", namespace, "--type=json",
                           "-p", json.dumps([{"op": "remove", "path": "/spec/retry"}]))
    assert gone.returncode != 0 and "spec.retry only grows" in gone.stderr, gone.stderr
    assert _get(crd, namespace, "estate-2025")["spec"]["retry"] == 2


def test_abort_can_only_be_set(crd: Kube, namespace: str) -> None:
    _running_plan(crd, namespace)
    _ok(_patch_spec(crd, namespace, "estate-2025", {"abort": "Halt"}))
    for change in ({"abort": "Rollback"}, {"abort": None}):
        res = _patch_spec(crd, namespace, "estate-2025", change)
        assert res.returncode != 0 and "spec.abort can only be set" in res.stderr, (change, res.stderr)
    bad = _patch_spec(crd, namespace, "estate-2025", {"abort": "Now"})
    assert bad.returncode != 0 and "spec.abort" in bad.stderr
    assert _get(crd, namespace, "estate-2025")["spec"]["abort"] == "Halt"


@pytest.mark.parametrize(("window", "named"), [
    ({"days": ["someday"], "startTime": "01:00", "endTime": "02:00"}, "spec.maintenanceWindow.days[0]"),
    ({"days": ["monday"], "startTime": "1:00", "endTime": "02:00"}, "spec.maintenanceWindow.startTime"),
    ({"days": ["monday"], "startTime": "01:00", "endTime": "01:00"}, "spec.maintenanceWindow.endTime"),
    ({"days": ["monday", "monday"], "startTime": "01:00", "endTime": "02:00"}, ".spec.maintenanceWindow.days"),
    ({"days": ["monday"], "startTime": "01:00", "endTime": "02:00", "timeZone": "Mars Standard Time"},
     "spec.maintenanceWindow.timeZone"),
])
def test_a_bad_window_is_refused_naming_the_field(crd: Kube, namespace: str, window: Json, named: str) -> None:
    plan = _example_plan()
    plan["spec"]["maintenanceWindow"] = window
    res = _apply(crd, namespace, plan)
    assert res.returncode != 0 and named in res.stderr, res.stderr


def test_conditions_of_any_type_but_only_whole_are_kept(crd: Kube, namespace: str) -> None:
    _ok(_apply(crd, namespace, _example_plan()))
    t = "2026-01-05T09:00:00Z"
    foreign = {"type": "example.com/Audited", "status": "True", "reason": "Seen", "message": "",
               "lastTransitionTime": t}
    _ok(_patch_status(crd, namespace, "estate-2025", {"conditions": [foreign]}))
    assert _get(crd, namespace, "estate-2025")["status"]["conditions"] == [foreign]
    half = _patch_status(crd, namespace, "estate-2025", {"conditions": [{"type": "Ready", "status": "True"}]})
    assert half.returncode != 0 and "lastTransitionTime" in half.stderr, half.stderr


def test_example_mentions_every_spec_field() -> None:
    """The example documents itself: every spec field is set or shown (commented out) with its default."""
    text = EXAMPLE.read_text()
    for field in _root_schema()["properties"]["spec"]["properties"]:
        assert re.search(rf"^ +(# )?{field}:", text, re.MULTILINE), f"spec.{field} not set nor shown in the example"


DUPLICATE_URL = "two spec.managementServers[] entries have the same url"


def _crd_of_group(group: str, drop_message: str | None = None) -> Json:
    """The CRD under another API group (so a test may change it without touching anyone else's plans),
    without the rules whose message starts with `drop_message`, if given."""
    doc = _crd()
    # names of its own too: kubectl resolves `upgradeplan`, `uplan` and the category `uwm` across groups,
    # so the same names would send other tests' commands to this CRD
    doc["spec"]["names"] = {"kind": "RuleProbe", "listKind": "RuleProbeList", "plural": "ruleprobes",
                            "singular": "ruleprobe"}
    doc["metadata"]["name"] = f"ruleprobes.{group}"
    doc["spec"]["group"] = group
    if drop_message is not None:
        root = _root_schema(doc)
        for schema in (root, *(sub for _, sub in _walk(root))):
            if "x-kubernetes-validations" in schema:
                schema["x-kubernetes-validations"] = [r for r in schema["x-kubernetes-validations"]
                                                      if not str(r.get("message")).startswith(drop_message)]
    return doc


def test_a_running_plans_status_write_skips_the_pairwise_rules(kube: Kube, namespace: str) -> None:
    """The spec's pairwise rules (O(n*m) over up to 200 servers) are skipped while the old status makes the
    spec immutable: the API server evaluates every rule on every update, status writes included, ratcheting
    only the errors of unchanged values into warnings. Seen from outside, on plans stored before a rule
    existed and breaking it: a status write of a Running plan gets no warning for that rule (not
    evaluated); one of a Pending plan is accepted too (what the rule reads is unchanged, as ratcheting would
    have it); a new plan breaking it is refused."""
    group = f"g{uuid.uuid4().hex[:8]}.uwm.io"
    loose, strict = _crd_of_group(group, drop_message=DUPLICATE_URL), _crd_of_group(group)
    assert loose != strict  # the rule was there to drop
    crd_name = loose["metadata"]["name"]
    resource = f"ruleprobes.{group}"
    try:
        _ok(_run(kube, "apply", "--server-side", "-f", "-", doc=loose))
        _ok(kube.kubectl_run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd_name}"))
        plan = _example_plan()
        plan["apiVersion"], plan["kind"] = f"{group}/v1alpha1", "RuleProbe"
        servers = plan["spec"]["managementServers"]
        servers[1]["url"] = servers[0]["url"]  # one server named twice

        def create(name: str) -> subprocess.CompletedProcess[str]:
            return _run(kube, "create", "-n", namespace, "-f", "-", doc={**plan, "metadata": {"name": name}})

        def write_status(name: str, status: Json) -> subprocess.CompletedProcess[str]:
            return _ok(kube.kubectl_run("patch", resource, name, "-n", namespace, "--subresource=status",
                                        "--type=merge", "-p", json.dumps({"status": status})))

        deadline = time.monotonic() + 60
        while (res := create("running")).returncode != 0:  # the new CRD's schema serves (ms to seconds)
            assert time.monotonic() < deadline, res.stderr
            time.sleep(0.2)
        _ok(create("pending"))
        write_status("running", {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z"})
        write_status("pending", {"phase": "Pending"})
        _ok(_run(kube, "apply", "--server-side", "--force-conflicts", "-f", "-", doc=strict))
        attempt = 0
        while DUPLICATE_URL not in (res := create(f"new-{attempt}")).stderr:  # the rule is in force
            assert res.returncode != 0 or attempt < 300, "the strict CRD never refused a duplicate url"
            attempt += 1
            time.sleep(0.2)
        assert res.returncode != 0
        running = write_status("running", {"message": "a status write"})
        assert DUPLICATE_URL not in running.stderr, f"the rule ran on a Running plan's status write: {running.stderr}"
        pending = write_status("pending", {"message": "a status write"})  # _ok: accepted
        assert DUPLICATE_URL not in pending.stderr, pending.stderr
    finally:
        kube.kubectl_run("delete", "crd", crd_name, "--wait=false")
