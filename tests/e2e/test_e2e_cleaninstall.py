"""End to end: strategy CleanInstall (the guide's "New Server/Clean Install Upgrades") by the real operator
process against the real API server, PostgreSQL and a simulator fleet process.

Besides what every end-to-end test checks (the guide's rules in the simulators' journal, user data intact),
these check the client configuration from the journal: at no moment does a Deployment Agent or an
Environment Manager client point at no online server (`uwm_sim.journal.violations`, which replays every
client event), and the order the guide asks for (the new Management Server URL in the Failover Server List
before the server comes online; the old server kept until the clients have moved; then offline).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from uwm_dev.testbed import estate
from uwm_sim.journal import Event

from e2e.e2e_support import (
    E2E,
    FAST_SPEC,
    FLEETS,
    REPO,
    TERMINAL,
    agent_ok,
    assert_succeeded,
    server_state,
)

pytestmark = pytest.mark.e2e

FLEET = REPO / "examples" / "fleet-cleaninstall.yaml"
PLAN = REPO / "examples" / "upgradeplan-cleaninstall.yaml"
VHOST = "personalization.uwm.example"


# ---------------------------------------------------------------- helpers


def status_page(e2e: E2E, server: str, kind: str) -> int:
    assert e2e.fleet is not None
    path = {"Management": "/ManagementServer/deployment/status.aspx",
            "Personalization": "/PersonalizationServer/status.aspx"}[kind]
    try:
        with urllib.request.urlopen(e2e.fleet.url(server) + path, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def apply(e2e: E2E, plan_file: Path = PLAN, **changes: Any) -> str:
    """The plan pointed at this fleet (replacements too), fast health checks, `changes` applied to its spec
    (a value None removes the field; `servers` maps a server name to changes of its entry)."""
    assert e2e.fleet is not None
    docs = estate.plan_documents(plan_file, e2e.fleet, e2e.namespace)
    plan = next(d for d in docs if d["kind"] == "UpgradePlan")
    spec = plan["spec"]
    spec.update(FAST_SPEC)
    for name, entry_changes in changes.pop("servers", {}).items():
        for entry in spec.get("managementServers", []) + spec.get("personalizationServers", []):
            if entry["name"] == name:
                entry.update(entry_changes)
                for key in [k for k, v in entry.items() if v is None]:
                    del entry[key]
    spec.update(changes)
    for key in [k for k, v in spec.items() if v is None]:
        del spec[key]
    estate.apply(e2e.bed, docs)
    return str(plan["metadata"]["name"])


def seq(events: list[Event], op: str, server: str | None = None, **detail: Any) -> int:
    """The sequence number of the first ok event `op` (on `server`, with `detail`)."""
    for e in events:
        if e.op == op and e.outcome == "ok" and (server is None or e.server == server) \
                and all(e.detail.get(k) == v for k, v in detail.items()):
            return e.seq
    raise AssertionError(f"no {op} {server or ''} {detail} in the journal")


def reaches(clients: dict[str, Any]) -> dict[str, str | None]:
    return {c["client"]: c["server"] for c in clients["clients"]}


def events_of(e2e: E2E) -> str:
    return e2e.kubectl("get", "events", "-n", e2e.namespace, "-o", "jsonpath={.items[*].reason}")


# ---------------------------------------------------------------- the example


def test_the_clean_install_example_runs_to_succeeded(e2e: E2E) -> None:
    e2e.start_fleet(FLEET)
    e2e.start_operator()
    name = apply(e2e)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    status = plan["status"]
    # the journal too: the guide's rules, no client ever without a server, each schema migrated once
    events = assert_succeeded(e2e, plan, "2025.1", ["ms-1-new", "ps-1-new"], replaced=["ms-1", "ps-1"])
    assert [(h["from"], h["to"]) for h in status["path"]] == [("2023.1", "2025.1")]
    assert status["currentVersion"] == "2025.1" and status["hopDisplay"] == "1/1"
    servers = {s["name"]: s for s in status["servers"]}
    assert {n: (s["version"], s["online"]) for n, s in servers.items()} == {
        "ms-1": ("2023.1", False), "ps-1": ("2023.1", False), "ms-1-new": ("2025.1", True),
        "ps-1-new": ("2025.1", True)}

    # status: the cut-over per server, old URL, new URL, when the clients moved
    assert e2e.fleet is not None
    cuts = {c["server"]: c for c in status["cutovers"]}
    assert {n: (c["replacement"], c["method"], c["state"]) for n, c in cuts.items()} == {
        "ms-1": ("ms-1-new", "FailoverListAndAgent", "OldServerOffline"),
        "ps-1": ("ps-1-new", "VirtualHostDns", "OldServerOffline")}
    for old, cut in cuts.items():
        assert (cut["oldUrl"], cut["newUrl"]) == (e2e.fleet.url(old), e2e.fleet.url(cut["replacement"]))
        assert cut["newServerOnlineAt"] <= cut["clientsMovedAt"] <= cut["oldServerOfflineAt"]
    assert cuts["ps-1"]["virtualHost"] == VHOST

    # the estate's own account: where every client points now
    clients = agent_ok(e2e, "ms-1-new", "GET", "/agent/v1/clients")
    assert reaches(clients) == {"deploymentAgent": "ms-1-new", "policy[0]": "ps-1-new"}
    assert [f["server"] for f in clients["failoverServers"]] == ["ms-1-new"]
    assert clients["dnsRecords"][VHOST]["server"] == "ps-1-new" and clients["cutOff"] == []
    assert clients["policy"]["urls"] == [f"http://{VHOST}"]  # Virtual Hosts + DNS: no new policy needed
    assert status_page(e2e, "ps-1-new", "Personalization") == 200

    # the journal: the order the guide asks for
    migrations = {e.database: e.server for e in events if e.op == "schema-migrate" and e.outcome == "ok"}
    assert migrations == {"mgmt-db": "ms-1-new", "pers-db": "ps-1-new"}  # the databases upgraded from the new servers
    assert not [e for e in events if e.op == "install" and e.server in ("ms-1", "ps-1")]  # old servers untouched
    assert seq(events, "failover-add") < seq(events, "server-online", "ms-1-new") \
        < seq(events, "agent-redeploy") < seq(events, "failover-remove") < seq(events, "server-offline", "ms-1")
    assert seq(events, "virtual-host-add") < seq(events, "server-online", "ps-1-new") \
        < seq(events, "dns-switch") < seq(events, "server-offline", "ps-1")
    assert seq(events, "server-offline", "ms-1") < seq(events, "schema-migrate", "ps-1-new")  # one database at a time
    assert "ClientsMoved" in events_of(e2e)
    waited = e2e.kubectl("wait", "--for=condition=Succeeded", f"upgradeplan/{name}", "-n", e2e.namespace,
                         "--timeout=5s")
    assert "condition met" in waited


def test_the_operator_killed_mid_cut_over_resumes_without_doing_anything_twice(e2e: E2E) -> None:
    e2e.start_fleet(FLEET, migration_step=1.5)  # the schema upgrade of pers-db lasts about 3 s
    e2e.start_operator()
    name = apply(e2e)

    def migrating_pers_db(p: dict[str, Any]) -> bool:
        return any(s["name"] == "UpgradeSchema" and s.get("server") == "ps-1-new" and s["state"] == "Running"
                   for s in (p.get("status") or {}).get("steps", []))
    plan = e2e.wait_for(name, migrating_pers_db, timeout=180, what="UpgradeSchema ps-1-new Running")
    assert {c["server"]: c["state"] for c in plan["status"]["cutovers"]}["ms-1"] == "OldServerOffline"
    e2e.kill_operator()
    e2e.start_operator()
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    # each schema migrated once, no client ever without a server, user data intact
    events = assert_succeeded(e2e, plan, "2025.1", ["ms-1-new", "ps-1-new"], replaced=["ms-1", "ps-1"])
    for op, server in (("failover-add", None), ("agent-redeploy", None), ("virtual-host-add", None),
                       ("dns-switch", None), ("server-online", "ms-1-new"), ("server-offline", "ms-1")):
        done = [e for e in events if e.op == op and e.outcome == "ok" and e.detail.get("changed", True)
                and (server is None or e.server == server)]
        assert len(done) == 1, (op, [(e.seq, e.server, e.detail.get("changed")) for e in done])


# ---------------------------------------------------------------- the guide's own case: Management in place


def test_management_in_place_and_personalization_by_a_new_policy(e2e: E2E) -> None:
    fleet = e2e.start_fleet(FLEETS / "cleaninstall-policy.yaml")
    e2e.start_operator()
    name = apply(e2e, personalizationCutover="Policy", servers={
        "ms-1": {"replacement": None}, "ps-1": {"replacement": {"name": "ps-1-new", "url": fleet.url("ps-1-new")}}})
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    status = plan["status"]
    events = assert_succeeded(e2e, plan, "2025.1", ["ms-1", "ps-1-new"], replaced=["ps-1"])
    steps = [(s["name"], s.get("server") or s.get("database")) for s in status["steps"] if s["hop"] == 1
             and s["state"] != "Skipped"]
    assert ("InstallFirstServer", "ms-1") in steps and ("DeployPolicy", "pers-db") in steps
    assert not {n for n, _ in steps} & {"AddFailoverServer", "RedeployDeploymentAgent", "SwitchDnsRecord"}
    assert e2e.fleet is not None
    clients = agent_ok(e2e, "ms-1", "GET", "/agent/v1/clients")
    assert reaches(clients) == {"deploymentAgent": "ms-1", "policy[0]": "ps-1-new"}
    assert clients["policy"]["urls"] == [e2e.fleet.url("ps-1-new")] and clients["policy"]["version"] == 2
    ms1 = server_state(e2e, "ms-1")
    assert (ms1["version"], ms1["phase"], ms1["service"]["online"]) == ("2025.1", "Running", True)
    assert server_state(e2e, "ps-1")["service"]["online"] is False
    (cut,) = status["cutovers"]
    assert (cut["server"], cut["method"], cut["state"]) == ("ps-1", "Policy", "OldServerOffline")
    assert seq(events, "server-online", "ps-1-new") < seq(events, "policy-deploy") < seq(events, "server-offline",
                                                                                          "ps-1")


def test_in_place_is_refused_for_a_personalization_server_sharing_the_default_website_root(e2e: E2E) -> None:
    e2e.start_fleet(FLEET)
    e2e.start_operator()
    name = apply(e2e, strategy="InPlace", personalizationCutover=None,
                 servers={"ms-1": {"replacement": None}, "ps-1": {"replacement": None}})
    plan = e2e.wait_phase(name, *TERMINAL, timeout=120)
    status = plan["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "InPlaceUpgradeForbidden"
    for words in ("ps-1 is installed in the root of the default website", "IntranetPortal",
                  "clean-install it instead"):
        assert words in failed["message"], failed["message"]
    events = e2e.journal()
    assert not [e for e in events if e.op in ("install", "schema-migrate", "replication", "rotation")]
    assert e2e.user_data() == e2e.data_before


def test_a_replicated_personalization_estate_replicates_again_on_its_new_servers(e2e: E2E) -> None:
    fleet = e2e.start_fleet(FLEETS / "cleaninstall-replicated.yaml")
    e2e.start_operator()
    personalization = [
        {"name": old, "url": fleet.url(old), "database": "pers-db", "replicationRole": role,
         "replacement": {"name": f"{old}-new", "url": fleet.url(f"{old}-new")}}
        for old, role in (("ps-1", "Master"), ("ps-2", "Subscriber"))]
    name = apply(e2e, personalizationCutover="Policy", personalizationServers=personalization,
                 servers={"ms-1": {"replacement": None}})
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    status = plan["status"]
    events = assert_succeeded(e2e, plan, "2025.1", ["ms-1", "ps-1-new", "ps-2-new"], replaced=["ps-1", "ps-2"])
    servers = {s["name"]: s for s in status["servers"]}
    assert {n: servers[n].get("replication") for n in ("ps-1", "ps-2", "ps-1-new", "ps-2-new")} == {
        "ps-1": "Disabled", "ps-2": "Disabled", "ps-1-new": "Enabled", "ps-2-new": "Enabled"}
    replication = next(c for c in status["conditions"] if c["type"] == "ReplicationDisabled")
    assert replication["status"] == "False", replication
    new_subscriber = server_state(e2e, "ps-2-new")
    assert new_subscriber["replication"] == {"role": "Subscriber", "group": "new", "enabled": True,
                                             "caughtUp": True}
    assert agent_ok(e2e, "ps-1", "GET", "/agent/v1/clients")["policy"]["urls"] == [fleet.url("ps-1-new"),
                                                                        fleet.url("ps-2-new")]
    off = [e.seq for e in events if e.op == "replication" and e.outcome == "ok" and not e.detail["enabled"]]
    on = [e.seq for e in events if e.op == "replication" and e.outcome == "ok" and e.detail["enabled"]]
    assert max(off) < seq(events, "schema-migrate", "ps-1-new") < seq(events, "server-offline", "ps-2") < min(on)
    assert {e.server for e in events if e.op == "replication" and e.outcome == "ok" and e.detail["enabled"]} == \
        {"ps-1-new", "ps-2-new"}


# ---------------------------------------------------------------- failure halfway


def test_a_failure_halfway_leaves_old_and_new_servers_consistent_and_described(e2e: E2E) -> None:
    e2e.start_fleet(FLEETS / "cleaninstall-behind.yaml")
    agent_ok(e2e, "ps-1-new", "POST", "/agent/v1/faults", {"kind": "install-fail"})
    e2e.start_operator()
    name = apply(e2e)
    plan = e2e.wait_phase(name, *TERMINAL, timeout=240)
    status = plan["status"]
    assert status["phase"] == "Failed"
    failed = next(s for s in status["steps"] if s["state"] == "Failed")
    assert (failed["name"], failed["server"]) == ("InstallReplacement", "ps-1-new")
    assert "InstallFailed" in failed["message"]

    # Management was wholly moved before; Personalization wholly untouched: its clients still reach ps-1
    assert e2e.fleet is not None
    clients = agent_ok(e2e, "ps-1", "GET", "/agent/v1/clients")
    assert reaches(clients) == {"deploymentAgent": "ms-1-new", "policy[0]": "ps-1"} and clients["cutOff"] == []
    assert clients["dnsRecords"][VHOST]["server"] == "ps-1"
    ps1, new = server_state(e2e, "ps-1"), server_state(e2e, "ps-1-new")
    assert (ps1["version"], ps1["phase"], ps1["service"]["online"]) == ("2023.1", "Running", True)
    assert ps1["database"]["schemaVersion"] == "2023.1"
    assert (new["version"], new["phase"], new["service"]["online"]) == ("2024.1", "Failed", False)
    assert status_page(e2e, "ps-1", "Personalization") == 200
    assert {c["server"]: c["state"] for c in status["cutovers"]} == {"ms-1": "OldServerOffline", "ps-1": "Pending"}

    # described: both old and new servers, and where the clients point
    message = status["message"]
    for words in ("ms-1 2023.1 VersionMismatch offline", "ms-1-new (new, replacing ms-1) 2025.1 Running online",
                  "ps-1 2023.1 Running", "ps-1-new (new, replacing ps-1) 2024.1 Failed offline",
                  "pers-db schema 2023.1", f"Deployment Agent {e2e.fleet.url('ms-1-new')}",
                  f"DNS {VHOST} -> {e2e.fleet.url('ps-1')}"):
        assert words in message, (words, message)
    e2e.assert_guide_kept()
    assert e2e.user_data() == e2e.data_before
