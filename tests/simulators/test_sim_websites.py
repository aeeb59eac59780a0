"""The hosts' websites (docs/contracts.md section 2b): the guide's "remove the host header and make either the
Management Server or the Personalization Server the default website", so clients keep the URL they use; one
default website per host, the website-root rule, and the license a Deployment Agent is redeployed with."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim.clients import ClientConfig, ServerInfo, cut_off, pointers
from uwm_sim.config import ConfigError, parse_fleet
from uwm_sim.fleet import running_fleet
from uwm_sim.journal import violations
from uwm_sim.websites import HostWebsites

from sim_helpers import FAST, RELEASES, TOKEN, reaches

pytest_plugins = ["sim_fixtures"]

MGMT, PERS, SHARED = "mgmt.uwm.test", "pers.uwm.test", "shared.uwm.test"
LICENSE = "<License customer='Example Corp' seats='5000'>AAAA-BBBB-CCCC-DDDD</License>\n"
SERVERS = {n: ServerInfo(n, k, f"http://{n}") for n, k in
           (("ms-1", "Management"), ("ms-1-new", "Management"), ("ps-1", "Personalization"))}


# ---------------------------------------------------------------- pure resolution


def test_a_host_url_reaches_the_default_website_of_that_host_while_it_is_online() -> None:
    sites = {MGMT: HostWebsites("ms-1", {"ms-1-new": "ms-1-new.uwm.test"}), PERS: HostWebsites(None, {})}
    cfg = ClientConfig(agent_host=MGMT, websites=sites, policy=({"defaultWebsite": PERS, "url": f"http://{PERS}"},))
    agent, policy = pointers(cfg, SERVERS)
    assert (agent.client, agent.holds, agent.server) == ("deploymentAgent", f"http://{MGMT}", "ms-1")
    assert policy.server is None and policy.cut_off == f"{PERS} has no default website"
    down = ClientConfig(agent_host=MGMT, websites=sites, online={"ms-1": False})
    (lost,) = cut_off(down, SERVERS)
    assert lost.cut_off == (f"the Deployment Agent points at http://{MGMT}: the default website of {MGMT} is"
                            " ms-1, which is offline, and no server of its Failover Server List is online")
    spare = ClientConfig(agent_host=MGMT, websites=sites, failover=("ms-1-new",), online={"ms-1": False})
    assert pointers(spare, SERVERS)[0].server == "ms-1-new"  # it fails over as with a server's own URL


def test_fleet_file_websites_are_checked() -> None:
    base: dict[str, Any] = {
        "releases": RELEASES, "token": TOKEN, "stateDatabase": {"odbc": "DSN=x"},
        "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": "DSN=y"}],
        "servers": [{"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0}],
    }
    for clients, words in (
            ({"websites": {MGMT: {"defaultWebsite": "ms-9"}}}, f"clients.websites.{MGMT}: 'ms-9' is not a server"),
            ({"websites": {MGMT: {"defaultWebsite": "ms-1"}, PERS: {"hostHeaders": {"ms-1": "x.test"}}}},
             f"'ms-1''s website is already on {MGMT}"),
            ({"websites": {MGMT: {"defaultWebsite": "ms-1", "hostHeaders": {"ms-1": "x.test"}}}}, "already on"),
            ({"deploymentAgentHost": PERS}, f"no websites entry for '{PERS}'"),
            ({"deploymentAgent": "ms-1", "deploymentAgentHost": MGMT, "websites": {MGMT: {"defaultWebsite": "ms-1"}}},
             "give either deploymentAgent or deploymentAgentHost"),
            ({"policy": [{"defaultWebsite": PERS}]}, "clients.policy[0].defaultWebsite: no websites entry"),
            ({"policy": [{"defaultWebsite": PERS, "virtualHost": PERS}]}, "give one of server, virtualHost")):
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("[", r"\[")):
            parse_fleet({**base, "clients": clients})


# ---------------------------------------------------------------- against a fleet


@pytest.fixture
def side_by_side(make_db: Callable[[], str]) -> Callable[[], dict[str, Any]]:
    """Each old server is the default website of the host its clients use; each new one (offline) sits on the
    same host with a host header. shared.uwm.test's default website (ps-2's) has IntranetPortal in its root."""
    def build() -> dict[str, Any]:
        return {
            "releases": RELEASES, "token": TOKEN, "stateDatabase": {"odbc": make_db()}, "timing": FAST,
            "databases": [{"name": "mgmt-db", "kind": "Management", "odbc": make_db(), "seedRows": 5},
                          {"name": "pers-db", "kind": "Personalization", "odbc": make_db(), "seedRows": 5},
                          {"name": "pers-2", "kind": "Personalization", "odbc": make_db(), "seedRows": 5}],
            "servers": [
                {"name": "ms-1", "kind": "Management", "database": "mgmt-db", "port": 0},
                {"name": "ms-1-new", "kind": "Management", "database": "mgmt-db", "port": 0, "online": False},
                {"name": "ps-1", "kind": "Personalization", "database": "pers-db", "port": 0},
                {"name": "ps-1-new", "kind": "Personalization", "database": "pers-db", "port": 0, "online": False},
                {"name": "ps-2", "kind": "Personalization", "database": "pers-2", "port": 0,
                 "otherAppsInRoot": ["IntranetPortal"]},
                {"name": "ps-2-new", "kind": "Personalization", "database": "pers-2", "port": 0, "online": False},
            ],
            "clients": {"failoverServers": ["ms-1"], "deploymentAgentHost": MGMT,
                        "policy": [{"defaultWebsite": PERS}, {"defaultWebsite": SHARED}],
                        "websites": {MGMT: {"defaultWebsite": "ms-1", "hostHeaders": {"ms-1-new": "ms-1-new.test"}},
                                     PERS: {"defaultWebsite": "ps-1", "hostHeaders": {"ps-1-new": "ps-1-new.test"}},
                                     SHARED: {"defaultWebsite": "ps-2",
                                              "hostHeaders": {"ps-2-new": "ps-2-new.test"}}}},
        }
    return build


async def test_the_default_website_moves_to_the_new_server_and_no_client_is_ever_cut_off(
        side_by_side: Callable[[], dict[str, Any]]) -> None:
    async with running_fleet(side_by_side()) as fleet, fleet.client("ms-1") as ms1, \
            fleet.client("ms-1-new") as new_ms, fleet.client("ps-1") as ps1, fleet.client("ps-1-new") as new_ps:
        ms_new, ps_new = fleet.servers["ms-1-new"].url, fleet.servers["ps-1-new"].url
        start = (await ms1.clients()).body
        assert reaches(start) == {"deploymentAgent": "ms-1", "policy[0]": "ps-1", "policy[1]": "ps-2"}
        assert start["deploymentAgent"]["url"] == f"http://{MGMT}" and start["deploymentAgent"]["license"] is None
        assert start["websites"][MGMT] == {"defaultWebsite": "ms-1", "defaultWebsiteUrl": fleet.servers["ms-1"].url,
                                           "hostHeaders": {"ms-1-new": "ms-1-new.test"}}
        assert (await new_ms.state()).body["website"]["binding"] == {"host": MGMT, "hostHeader": "ms-1-new.test",
                                                                     "default": False}

        # one default website per host: the host header alone cannot go while ms-1's website is the default
        two = await ms1.clients_action("remove-host-header", url=ms_new)
        assert two.status == 409 and two.rule == "two-default-websites" and "ms-1's" in (two.error or "")
        # only a server that serves, and only a website of that host
        offline = await ms1.clients_action("make-default-website", url=ms_new, host=MGMT)
        assert offline.status == 409 and offline.rule == "not-serving"
        elsewhere = await ms1.clients_action("make-default-website", url=ps_new, host=MGMT)
        assert elsewhere.status == 409 and elsewhere.rule == "not-on-host"
        # the old default website cannot go first: clients would reach nothing
        assert (await ms1.service(False)).rule == "clients-cut-off"
        cut = await ps1.service(False)
        assert cut.rule == "clients-cut-off" and f"the default website of {PERS} is ps-1, which is offline" in \
            (cut.error or "")

        assert (await ms1.clients_action("add-failover-server", url=ms_new)).status == 200
        assert (await new_ms.service(True)).status == 200 and (await new_ps.service(True)).status == 200
        moved = await ms1.clients_action("make-default-website", url=ms_new, host=MGMT)
        assert moved.status == 200 and reaches(moved.body["clients"])["deploymentAgent"] == "ms-1-new"
        assert moved.body["clients"]["websites"][MGMT]["hostHeaders"] == {}  # the old binding is gone too
        again = await ms1.clients_action("make-default-website", url=ms_new, host=MGMT)
        assert again.status == 200 and again.body["changed"] is False
        assert (await ps1.clients_action("make-default-website", url=ps_new, host=PERS)).status == 200
        assert (await new_ps.state()).body["website"]["binding"] == {"host": PERS, "hostHeader": None,
                                                                     "default": True}

        # the license: redeployed with the agent, kept as a fingerprint only
        bad = await ms1.clients_action("redeploy-deployment-agent", url=f"http://{MGMT}", license="")
        assert bad.status == 400 and (bad.error or "").startswith("license:")
        redeployed = await ms1.clients_action("redeploy-deployment-agent", url=f"http://{MGMT}", license=LICENSE)
        assert redeployed.status == 200, redeployed.text
        agent = redeployed.body["clients"]["deploymentAgent"]
        fingerprint = "sha256:" + hashlib.sha256(LICENSE.encode()).hexdigest()[:16]
        assert (agent["url"], agent["reaches"], agent["license"]["fingerprint"]) == (
            f"http://{MGMT}", "ms-1-new", fingerprint)
        kept = await ms1.clients_action("redeploy-deployment-agent", url=f"http://{MGMT}")  # no new license
        assert kept.body["clients"]["deploymentAgent"]["license"]["fingerprint"] == fingerprint

        for old in (ms1, ps1):
            assert (await old.service(False)).status == 200
        end = (await new_ms.clients()).body
        assert reaches(end) == {"deploymentAgent": "ms-1-new", "policy[0]": "ps-1-new", "policy[1]": "ps-2"}
        assert end["cutOff"] == []
        events = await fleet.journal()
    assert [e.outcome for e in events if e.op == "default-website"] == ["refused", "refused", "ok", "ok", "ok"]
    redeploy = next(e for e in events if e.op == "agent-redeploy" and e.detail.get("license"))
    assert redeploy.detail["license"] == fingerprint
    assert redeploy.detail["clients"]["deploymentAgentLicense"]["fingerprint"] == fingerprint
    text = json.dumps([e.detail for e in events])
    assert "AAAA-BBBB" not in text and "Example Corp" not in text  # the license itself is never kept
    assert violations(events) == []


async def test_a_personalization_server_never_takes_a_default_website_whose_root_another_app_uses(
        side_by_side: Callable[[], dict[str, Any]]) -> None:
    async with running_fleet(side_by_side()) as fleet, fleet.client("ps-2") as ps2, \
            fleet.client("ps-2-new") as new:
        assert (await new.service(True)).status == 200
        refused = await ps2.clients_action("make-default-website", url=fleet.servers["ps-2-new"].url, host=SHARED,
                                           license=LICENSE)
        assert refused.status == 409 and refused.rule == "website-root-in-use"
        assert "IntranetPortal" in (refused.error or "")
        assert (await ps2.clients()).body["websites"][SHARED]["defaultWebsite"] == "ps-2"
        events = await fleet.journal()
    (entry,) = [e for e in events if e.op == "default-website"]
    assert entry.outcome == "refused" and entry.detail["rule"] == "website-root-in-use"
    assert "license" not in entry.detail["request"]  # a refused request is journalled without any license text


async def test_forcing_the_old_default_website_offline_is_a_violation(
        side_by_side: Callable[[], dict[str, Any]]) -> None:
    async with running_fleet(side_by_side()) as fleet, fleet.client("ms-1") as ms1:
        assert (await ms1.service(False, force=True)).status == 200
        events = await fleet.journal()
    found = violations(events)
    assert any(f"deploymentAgent (http://{MGMT}) reaches no online server" in v for v in found), found
