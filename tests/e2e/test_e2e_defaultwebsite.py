"""End to end: strategy CleanInstall cut over the guide's first way, "remove the host header and make either the
Management Server or the Personalization Server the default website", for both kinds, with a new license
deployed with the Deployment Agent; by the real operator process against the real API server, PostgreSQL and
a simulator fleet process (examples/upgradeplan-defaultwebsite.yaml on examples/fleet-defaultwebsite.yaml).

Besides what every end-to-end test checks (`assert_succeeded`: the simulators' replay and the independent
audit, whose own client model follows the hosts' default websites, so no client ever reached no online
server; user data intact), these check the order the journal shows, that the license is nowhere but in the
Secret and the estate (its fingerprint in status, Events and journal), and the website-root refusal.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from e2e.e2e_support import E2E, REPO, TERMINAL, agent_ok, assert_succeeded, operator_log, server_state
from e2e.test_e2e_cleaninstall import apply, events_of, reaches, seq, status_page

pytestmark = pytest.mark.e2e

FLEET = REPO / "examples" / "fleet-defaultwebsite.yaml"
PLAN = REPO / "examples" / "upgradeplan-defaultwebsite.yaml"
MGMT, PERS = "uwm-mgmt.example", "uwm-pers.example"


def _license_text() -> str:
    secrets = yaml.safe_load_all((REPO / "examples" / "secrets.yaml").read_text())
    secret = next(d for d in secrets if d and d["metadata"]["name"] == "uwm-license")
    return str(secret["stringData"]["license"])


def test_both_kinds_take_over_the_default_website_and_the_agent_carries_the_new_license(e2e: E2E) -> None:
    e2e.start_fleet(FLEET)
    e2e.start_operator()
    name = apply(e2e, PLAN)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    status = plan["status"]
    events = assert_succeeded(e2e, plan, "2025.1", ["ms-1-new", "ps-1-new"], replaced=["ms-1", "ps-1"])
    license_ = _license_text()
    fingerprint = "sha256:" + hashlib.sha256(license_.encode()).hexdigest()[:16]

    # status: the method, the host, and which license (Secret and fingerprint) the agent carries
    cuts = {c["server"]: c for c in status["cutovers"]}
    assert {n: (c["method"], c["defaultWebsiteHost"], c["state"]) for n, c in cuts.items()} == {
        "ms-1": ("DefaultWebsite", MGMT, "OldServerOffline"), "ps-1": ("DefaultWebsite", PERS, "OldServerOffline")}
    lic = cuts["ms-1"]["license"]
    assert (lic["secretName"], lic["key"], lic["fingerprint"]) == ("uwm-license", "license", fingerprint)
    assert cuts["ms-1"]["clientsMovedAt"] <= lic["deployedAt"] <= cuts["ms-1"]["oldServerOfflineAt"]
    assert "license" not in cuts["ps-1"]
    assert f"default website of {MGMT}" in cuts["ms-1"]["message"]

    # the estate's own account: the clients kept their URLs and reach the new servers
    clients = agent_ok(e2e, "ms-1-new", "GET", "/agent/v1/clients")
    assert reaches(clients) == {"deploymentAgent": "ms-1-new", "policy[0]": "ps-1-new"} and clients["cutOff"] == []
    assert clients["deploymentAgent"]["url"] == f"http://{MGMT}"
    assert clients["deploymentAgent"]["license"]["fingerprint"] == fingerprint  # the simulator's own digest
    assert clients["policy"] == {**clients["policy"], "version": 1, "urls": [f"http://{PERS}"]}  # no new policy
    assert {h: w["defaultWebsite"] for h, w in clients["websites"].items()} == {MGMT: "ms-1-new", PERS: "ps-1-new"}
    assert all(w["hostHeaders"] == {} for w in clients["websites"].values())  # the old bindings are gone
    assert [f["server"] for f in clients["failoverServers"]] == ["ms-1-new"]
    assert server_state(e2e, "ps-1-new")["website"]["binding"] == {"host": PERS, "hostHeader": None, "default": True}
    assert status_page(e2e, "ps-1-new", "Personalization") == 200

    # the journal: the order the guide asks for; the old servers never installed on
    host_moved = {e.detail["host"]: e.seq for e in events if e.op == "default-website" and e.outcome == "ok"
                  and e.detail.get("changed")}
    assert seq(events, "failover-add") < seq(events, "server-online", "ms-1-new") < host_moved[MGMT] \
        < seq(events, "agent-redeploy") < seq(events, "failover-remove") < seq(events, "server-offline", "ms-1")
    assert seq(events, "server-online", "ps-1-new") < host_moved[PERS] < seq(events, "server-offline", "ps-1")
    (redeploy,) = [e for e in events if e.op == "agent-redeploy" and e.outcome == "ok"]
    assert redeploy.detail["license"] == fingerprint and redeploy.detail["to"] == f"http://{MGMT}"
    assert not [e for e in events if e.op == "install" and e.server in ("ms-1", "ps-1")]

    # the license itself: in the Secret and sent once to the estate, nowhere else
    kube_events = e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "json")
    assert "LicenseDeployed" in events_of(e2e) and "ClientsMoved" in events_of(e2e)
    assert fingerprint in kube_events
    line = "DEMO-0000-0000-0000"
    for where, text in (("status", json.dumps(status)), ("Events", kube_events), ("operator log", operator_log(e2e)),
                        ("journal", json.dumps([e.detail for e in events]))):
        assert line not in text, where


def test_a_personalization_server_may_not_take_a_default_website_whose_root_another_application_uses(
        e2e: E2E) -> None:
    fleet_file = e2e.work / "fleet-shared-root.yaml"
    doc: dict[str, Any] = yaml.safe_load(FLEET.read_text())
    for server in doc["servers"]:
        if server["name"] == "ps-1":
            server.update({"website": "Default Web Site", "otherAppsInRoot": ["IntranetPortal"]})
    fleet_file.write_text(yaml.safe_dump(doc))
    e2e.start_fleet(fleet_file)
    e2e.start_operator()
    name = apply(e2e, PLAN, managementCutover=None, servers={"ms-1": {"replacement": None}})
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    status = plan["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PreflightFailed", failed
    for words in (f"the default website of {PERS} (ps-1's) has IntranetPortal in its root",
                  "use personalizationCutover VirtualHostDns or Policy"):
        assert words in failed["message"], failed["message"]
    events = e2e.journal()
    assert not [e for e in events if e.op in ("install", "schema-migrate", "replication", "default-website",
                                              "server-online", "server-offline")]
    assert e2e.user_data() == e2e.data_before
    e2e.assert_guide_kept()
