"""Status pages at the guide's paths, the settle delay, the token, and bad requests naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim.client import AgentClient
from uwm_sim.fleet import running_fleet

from sim_helpers import wait_for, wait_phase

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


async def test_settle_delay_after_start_and_after_install(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(settleSeconds=0.6, installSeconds=0.05)) as fleet, fleet.client("ms-1") as c:
        page = await c.status_page("Management")
        assert page.status == 503 and "Starting" in page.text
        assert (await c.state()).body["phase"] == "Starting" and not (await c.state()).body["settled"]
        page = await wait_for(lambda: c.status_page("Management"), lambda p: p.status == 200, within=5)
        assert "Connection successful" in page.text
        assert (await c.state()).body["settled"]
        # After an upgrade the page confirms only once the server has settled again.
        await c.install("2022.1")
        await wait_phase(c, "DatabaseUpdatesRequired")
        await c.update_all()
        await wait_for(c.portal, lambda r: r.body["status"] == "Upgrade Successful")
        state = (await c.state()).body
        assert state["phase"] in ("Starting", "Running")
        page = await wait_for(lambda: c.status_page("Management"), lambda p: p.status == 200, within=5)
        assert "2022.1" in page.text


async def test_status_page_contents_paths_and_json(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        page = await c.status_page("Management")
        assert page.status == 200
        for text in ("ms-2", "Management Server", "2021.1", "mgmt-db", "Database state", "OK",
                     "Database connection: Pass", "Server release matches database schema: Pass"):
            assert text in page.text, text
        assert (await c.status_page("Personalization")).status == 404
        as_json = await c.request("GET", "/ManagementServer/deployment/status.aspx", auth=False,
                                  headers={"Accept": "application/json"})
        assert as_json.body["ok"] is True and {t["name"] for t in as_json.body["tests"]} >= {"Database connection"}
        assert fleet.servers["ms-2"].status_url.endswith("/ManagementServer/deployment/status.aspx")
        served = await c.request("GET", "/ManagementServer/api/anything", auth=False)
        assert served.status == 200 and served.body["server"] == "ms-2"
        index = await c.request("GET", "/", auth=False)
        assert "/ManagementServer/deployment/status.aspx" in index.text


async def test_default_settle_is_thirty_seconds(small: Callable[..., dict[str, Any]]) -> None:
    cfg = small()
    del cfg["timing"]["settleSeconds"]
    async with running_fleet(cfg) as fleet, fleet.client("ms-2") as c:
        page = await c.status_page("Management")
        assert page.status == 503 and "about 30 s left" in page.text


async def test_token_is_required(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet:
        url = fleet.servers["ms-1"].url
        for token in (None, "wrong-token-value"):
            async with AgentClient(url, token) as c:
                for method, path in (("GET", "/agent/v1/state"), ("POST", "/agent/v1/install"),
                                     ("GET", "/agent/v1/journal")):
                    reply = await c.request(method, path, {"version": "2022.1"})
                    assert reply.status == 401 and reply.body["error"], (method, path)
        async with AgentClient(url, None) as c:  # the portal and status page need no token
            assert (await c.status_page("Management")).status == 200
            assert (await c.portal()).status == 200
        # Journalled at a bounded rate: the entries' counts add up to the six rejections.
        events = await wait_for(fleet.journal, lambda evs: sum(e.detail["count"] for e in evs if e.op == "auth") == 6)
        assert all(e.outcome == "refused" for e in events if e.op == "auth")
        assert all("wrong-token-value" not in str(e.detail) for e in events)


BAD_BODIES = [
    ("/agent/v1/install", {}, "version"),
    ("/agent/v1/install", {"version": 2022}, "version"),
    ("/agent/v1/replication", {"enabled": "yes"}, "enabled"),
    ("/agent/v1/rotation", {}, "inRotation"),
    ("/agent/v1/faults", {"kind": "meteor"}, "kind"),
    ("/agent/v1/faults", {"kind": "slow", "count": 0}, "count"),
    ("/agent/v1/faults", {"kind": "slow", "delayMs": -1}, "delayMs"),
    ("/agent/v1/faults", {"kind": "slow", "colour": "red"}, "colour"),
]


async def test_bad_requests_name_the_field(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-1") as c:
        for path, body, field in BAD_BODIES:
            reply = await c.request("POST", path, body)
            assert reply.status == 400 and reply.body["error"].startswith(field), (path, reply.body)
        reply = await c.request("POST", "/agent/v1/install", None, headers={"Content-Type": "application/json"})
        assert reply.status == 400
        raw = await c.request("POST", "/agent/v1/install", form={"x": "{"})
        assert raw.status == 400 and "JSON" in raw.body["error"]


async def test_concurrent_requests_are_consistent(small: Callable[..., dict[str, Any]]) -> None:
    """Twenty racing installs of one server: exactly one is accepted, the rest are refused as busy."""
    # The install lasts longer than any race of twenty requests can (a late one would be a no-op).
    async with running_fleet(small(installSeconds=30)) as fleet, fleet.client("ms-2") as c:
        replies = await asyncio.gather(*(c.install("2022.1") for _ in range(20)))
        assert sorted(r.status for r in replies) == [202] + [409] * 19
        assert {r.rule for r in replies if r.status == 409} == {"busy"}


MS_STATUS = "/ManagementServer/deployment/status.aspx"
AS_JSON = {"Accept": "application/json"}
STATUS_TESTS = ("Web service started and settled", "Installation complete", "Database connection",
                "Database not locked for a schema upgrade", "Server release matches database schema")  # contract 2a


async def test_the_page_lists_its_tests_and_a_failing_one_on_a_confirming_page(
        small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        html = await c.status_page("Management")
        assert html.status == 200 and "<th>Server</th><td>ms-2</td>" in html.text
        assert all(f"{name}: Pass" in html.text for name in STATUS_TESTS) and "All tests passed" in html.text
        as_json = await c.request("GET", MS_STATUS, auth=False, headers=AS_JSON)
        assert as_json.body["server"] == "ms-2" and [t["name"] for t in as_json.body["tests"]] == list(STATUS_TESTS)
        assert all(t["passed"] for t in as_json.body["tests"]) and as_json.body["testsPassed"] is True
        # The guide: "check the details are correct and the tests are successful": 200 is not enough.
        fault = {"kind": "test-fail", "count": 2, "test": "Database connection"}
        assert (await c.request("POST", "/agent/v1/faults", fault)).status == 200
        html = await c.status_page("Management")
        assert html.status == 200 and "Connection successful" in html.text
        assert "Database connection: Fail" in html.text and "Failed tests: Database connection" in html.text
        as_json = await c.request("GET", MS_STATUS, auth=False, headers=AS_JSON)
        assert as_json.status == 200 and as_json.body["ok"] is True and as_json.body["testsPassed"] is False
        assert [t["name"] for t in as_json.body["tests"] if not t["passed"]] == ["Database connection"]
        assert "All tests passed" in (await c.status_page("Management")).text, "count = answers affected"
        hits = [e for e in await fleet.journal() if e.op == "fault-hit"]
        assert [(e.server, e.detail["kind"], e.detail["test"]) for e in hits] == \
            [("ms-2", "test-fail", "Database connection")] * 2
        bad = await c.request("POST", "/agent/v1/faults", {"kind": "test-fail", "test": "Coffee machine"})
        assert bad.status == 400 and bad.body["error"].startswith("test:")


async def test_a_failing_test_waits_for_a_confirming_answer(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small(settleSeconds=0.5)) as fleet, fleet.client("ms-2") as c:
        await c.request("POST", "/agent/v1/faults", {"kind": "test-fail", "test": "Installation complete"})
        starting = await c.status_page("Management")
        assert starting.status == 503 and "Installation complete: Pass" in starting.text
        page = await wait_for(lambda: c.status_page("Management"), lambda p: p.status == 200, within=10)
        assert "Installation complete: Fail" in page.text
        assert (await c.state()).body["faults"] == []
