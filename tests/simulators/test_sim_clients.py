"""The estate's client configuration (docs/contracts.md section 2b): Failover Server List, Deployment
Agent, Environment Manager policy, Virtual Hosts, DNS records, servers online and offline; the guide's
warnings refused, and every moment a client reaches no online server found in the journal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from uwm_sim.clients import ClientConfig, ServerInfo, cut_off, newly_cut_off, pointers
from uwm_sim.config import ConfigError, parse_fleet
from uwm_sim.fleet import running_fleet
from uwm_sim.journal import Event, violations

from sim_helpers import FAST, RELEASES, TOKEN, reaches

pytest_plugins = ["sim_fixtures"]

SERVERS = {n: ServerInfo(n, k, f"http://{n}") for n, k in
           (("ms-1", "Management"), ("ms-2", "Management"), ("ps-1", "Personalization"), ("ps-2", "Personalization"))}


# ---------------------------------------------------------------- pure resolution


def test_the_agent_fails_over_in_list_order_and_is_cut_off_only_when_none_is_online() -> None:
    cfg = ClientConfig(failover=("ms-1", "ms-2"), agent="ms-1")
    assert [(p.client, p.server) for p in pointers(cfg, SERVERS)] == [("deploymentAgent", "ms-1")]
    down = ClientConfig(failover=("ms-1", "ms-2"), agent="ms-1", online={"ms-1": False})
    assert pointers(down, SERVERS)[0].server == "ms-2" and not cut_off(down, SERVERS)
    both = ClientConfig(failover=("ms-1", "ms-2"), agent="ms-1", online={"ms-1": False, "ms-2": False})
    (lost,) = cut_off(both, SERVERS)
    assert lost.client == "deploymentAgent" and "ms-1, which is offline" in (lost.cut_off or "")


def test_a_virtual_host_reaches_the_dns_target_only_when_it_answers_for_that_host() -> None:
    policy = ({"virtualHost": "pers.test", "url": "http://pers.test"},)
    good = ClientConfig(policy=policy, dns={"pers.test": "ps-1"}, virtual_hosts={"ps-1": ("pers.test",)})
    assert pointers(good, SERVERS)[0].server == "ps-1"
    no_vhost = ClientConfig(policy=policy, dns={"pers.test": "ps-2"}, virtual_hosts={"ps-1": ("pers.test",)})
    assert "has no virtual host pers.test" in (cut_off(no_vhost, SERVERS)[0].cut_off or "")
    assert [p.client for p in newly_cut_off(good, no_vhost, SERVERS)] == ["policy[0]"]
    gone = ClientConfig(policy=({"server": "ps-9"},))
    assert "ps-9, which is gone" in (cut_off(gone, SERVERS)[0].cut_off or "")
    assert not newly_cut_off(gone, gone, SERVERS)  # only changes that cut clients off are blamed


def test_fleet_file_client_references_are_checked() -> None:
    base: dict[str, Any] = {
        "releases": RELEASES, "token": TOKEN, "stateDatabase": {"odbc": "DSN=x"},
        "databases": [{"name": "pers-db", "kind": "Personalization", "odbc": "DSN=y"}],
        "servers": [{"name": "ps-1", "kind": "Personalization", "database": "pers-db", "port": 0}],
    }
    for clients, words in (({"deploymentAgent": "ps-1"}, "clients.deploymentAgent: 'ps-1' is not a Management"),
                           ({"policy": [{"virtualHost": "pers.test"}]}, "no dnsRecords entry for 'pers.test'"),
                           ({"dnsRecords": {"pers.test": "ps-2"}}, "clients.dnsRecords.pers.test")):
        with pytest.raises(ConfigError, match=words):
            parse_fleet({**base, "clients": clients})


# ---------------------------------------------------------------- against a fleet


@pytest.fixture
def staged(make_db: Callable[[], str]) -> Callable[[], dict[str, Any]]:
    """An old and a new (offline) server of each kind; clients reach ps-1 through a virtual host."""
    def build() -> dict[str, Any]:
        mgmt, pers = (make_db(), make_db())
        return {
            "releases": RELEASES, "token": TOKEN, "stateDatabase": {"odbc": make_db()}, "timing": FAST,
            "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": mgmt, "seedRows": 5},
                          {"name": "pers-db", "kind": "Personalization", "odbc": pers, "seedRows": 5}],
            "servers": [
                {"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0},
                {"name": "ms-1-new", "kind": "Management", "database": "mgmt-db", "port": 0, "online": False,
                 "website": "Management"},
                {"name": "ps-1", "kind": "Personalization", "database": "pers-db", "port": 0,
                 "otherAppsInRoot": ["IntranetPortal"]},
                {"name": "ps-1-new", "kind": "Personalization", "database": "pers-db", "port": 0, "online": False,
                 "website": "Personalization"},
            ],
            "clients": {"failoverServers": ["ms-1"], "deploymentAgent": "ms-1",
                        "policy": [{"virtualHost": "pers.uwm.test"}], "virtualHosts": {"ps-1": ["pers.uwm.test"]},
                        "dnsRecords": {"pers.uwm.test": "ps-1"}},
        }
    return build


async def _service_status(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(url + "/PersonalizationServer/anything") as r:
        return r.status


async def test_a_staged_clean_install_moves_every_client_without_cutting_one_off(
        staged: Callable[[], dict[str, Any]]) -> None:
    async with running_fleet(staged()) as fleet, fleet.client("ms-1") as ms1, \
            fleet.client("ms-1-new") as new_ms, fleet.client("ps-1-new") as new_ps, fleet.client("ps-1") as ps1:
        ms_url, ps_url = fleet.servers["ms-1-new"].url, fleet.servers["ps-1-new"].url
        start = (await ms1.clients()).body
        assert reaches(start) == {"deploymentAgent": "ms-1", "policy[0]": "ps-1"} and start["cutOff"] == []
        assert start["policy"]["urls"] == ["http://pers.uwm.test"]
        state = (await new_ps.state()).body
        assert state["service"] == {"online": False, "virtualHosts": []}
        assert state["website"] == {"name": "Personalization", "default": False, "otherAppsInRoot": [],
                                    "binding": None}
        assert await _service_status(fleet.servers["ps-1-new"].url) == 503

        # the guide: the new Management Server URL goes into the Failover Server List before it comes online
        refused = await new_ms.service(True)
        assert refused.status == 409 and refused.rule == "not-in-failover-list"
        assert (await ms1.clients_action("add-failover-server", url=ms_url)).status == 200
        online = await new_ms.service(True)
        assert online.status == 200 and online.body["state"]["service"]["online"] is True
        moved = await ms1.clients_action("redeploy-deployment-agent", url=ms_url)
        assert moved.status == 200 and moved.body["clients"]["deploymentAgent"]["reaches"] == "ms-1-new"

        # Personalization: DNS may only point at a server that answers for the virtual host, and is online
        no_vhost = await ps1.clients_action("switch-dns-record", host="pers.uwm.test", url=ps_url)
        assert no_vhost.status == 409 and no_vhost.rule == "no-virtual-host"
        assert (await ps1.clients_action("add-virtual-host", url=ps_url, host="pers.uwm.test")).status == 200
        offline = await ps1.clients_action("switch-dns-record", host="pers.uwm.test", url=ps_url)
        assert offline.status == 409 and offline.rule == "not-serving"
        assert (await new_ps.service(True)).status == 200
        switched = await ps1.clients_action("switch-dns-record", host="pers.uwm.test", url=ps_url)
        assert switched.status == 200 and reaches(switched.body["clients"])["policy[0]"] == "ps-1-new"

        for old in (ms1, ps1):
            assert (await old.service(False)).status == 200
        end = (await new_ms.clients()).body
        assert reaches(end) == {"deploymentAgent": "ms-1-new", "policy[0]": "ps-1-new"} and end["cutOff"] == []
        assert await _service_status(fleet.servers["ps-1"].url) == 503
        events = await fleet.journal()
    ops = [e.op for e in events if e.outcome == "ok"]
    for op in ("clients-init", "failover-add", "server-online", "agent-redeploy", "virtual-host-add", "dns-switch",
               "server-offline"):
        assert op in ops, op
    assert violations(events) == []


async def test_cutting_clients_off_is_refused_and_a_forced_cut_off_is_a_violation(
        staged: Callable[[], dict[str, Any]]) -> None:
    async with running_fleet(staged()) as fleet, fleet.client("ms-1") as ms1, fleet.client("ps-1") as ps1:
        refused = await ms1.service(False)
        assert refused.status == 409 and refused.rule == "clients-cut-off"
        assert "Failover Server List" in (refused.error or "")
        dns_gone = await ps1.service(False)
        assert dns_gone.status == 409 and "DNS pers.uwm.test -> ps-1, which is offline" in (dns_gone.error or "")
        bad = await ps1.clients_action("deploy-policy", urls=["http://nowhere.test"])
        assert bad.status == 400 and "urls[0]" in (bad.error or "")
        forced = await ms1.service(False, force=True)
        assert forced.status == 200
        assert (await ms1.clients()).body["cutOff"][0].startswith("deploymentAgent:")
        events = await fleet.journal()
    assert [e.outcome for e in events if e.op == "clients-cut-off"] == ["failed"]
    found = violations(events)
    assert len(found) == 2 and "deploymentAgent (ms-1) reaches no online server" in found[0], found


async def test_a_personalization_server_in_a_shared_default_website_root_is_never_upgraded_in_place(
        staged: Callable[[], dict[str, Any]]) -> None:
    async with running_fleet(staged()) as fleet, fleet.client("ps-1") as ps1, fleet.client("ps-1-new") as new:
        refused = await ps1.install("2022.1")
        assert refused.status == 409 and refused.rule == "website-root-in-use"
        assert "IntranetPortal" in (refused.error or "")
        assert (await new.install("2022.1")).status == 202  # its own Personalization website
        events = await fleet.journal()
    assert [e.detail.get("rule") for e in events if e.op == "install" and e.server == "ps-1"] == \
        ["website-root-in-use"]


def test_violations_replay_client_events_from_the_journal() -> None:
    snap = {"name": "ms-1", "kind": "Management"}
    doc = ClientConfig(failover=("ms-1",), agent="ms-1").to_json()
    events = [Event(1, 0.0, "ms-1", "mgmt-db", "register", "ok", {"snapshot": {
        **snap, "database": "mgmt-db", "version": "2021.1", "role": "None", "group": None,
        "replicationEnabled": False, "loadBalanced": False, "inRotation": True}}),
        Event(2, 0.0, None, None, "clients-init", "ok", {"clients": doc}),
        Event(3, 0.0, "ms-1", "mgmt-db", "server-offline", "refused", {"clients": {**doc, "online": {"ms-1": False}}}),
        Event(4, 0.0, "ms-1", "mgmt-db", "server-offline", "ok", {"clients": {**doc, "online": {"ms-1": False}}})]
    assert violations(events[:3]) == []
    (found,) = violations(events)
    assert found.startswith("#4 server-offline on ms-1: deploymentAgent")


async def test_a_server_the_clients_use_leaving_the_fleet_is_reported(staged: Callable[[], dict[str, Any]]) -> None:
    cfg = staged()
    async with running_fleet(cfg):
        pass
    cfg["servers"] = [s for s in cfg["servers"] if s["name"] != "ms-1"]
    cfg["clients"] = {k: v for k, v in cfg["clients"].items() if k not in ("failoverServers", "deploymentAgent")}
    async with running_fleet(cfg) as fleet, fleet.client("ps-1") as c:
        clients = (await c.clients()).body
        assert clients["cutOff"] == ["deploymentAgent: the Deployment Agent points at ms-1, which is gone (no longer"
                                     " part of the estate), and no server of its Failover Server List is online"]
        events = await fleet.journal()
    assert [e.detail["cause"] for e in events if e.op == "clients-cut-off"] == ["start"]
    assert any("deploymentAgent" in v for v in violations(events))
    assert [e.op for e in events].count("clients-init") == 1
