"""The servers adapter's reading of what a server shows: the status page's details and tests, and the
portal around UPDATE SELECTED (a Failed result is never closed nor migrated over; CLOSE only after
Upgrade Successful). The pages are the simulators' own HTML (`uwm_sim.pages`), so the parser reads what a
server really shows."""

from __future__ import annotations

from typing import Any

import pytest

from uwm_sim.pages import status_page as sim_status_page
from uwm_upgrade.adapters.servers import PAGE_TESTS, ServerClient, ServerError, _detail, _summary, _tests
from uwm_upgrade.core.observations import NOT_SENT

DETAILS = [("Server", "ms-1"), ("Kind", "Management Server"), ("Version", "2023.1"), ("Database", "mgmt-db")]
TESTS = [("Web service started and settled", True), ("Installation complete", True), ("Database connection", True)]


def test_the_status_page_details_and_tests_are_read() -> None:
    html = sim_status_page("Management Server Status", DETAILS, TESTS, True, "Connection successful")
    assert (_detail(html, "Server"), _detail(html, "Version")) == ("ms-1", "2023.1")
    assert _tests(html) == tuple(TESTS)
    assert _summary(html) == "Connection successful"


def test_a_failed_test_on_a_200_page_is_read_as_failed() -> None:
    tests = [*TESTS[:2], ("Database connection", False)]
    html = sim_status_page("Management Server Status", DETAILS, tests, True, "Connection successful")
    assert _tests(html) == tuple(tests)


def test_a_page_without_tests_or_rows_reads_as_none() -> None:
    html = "<html><body><p id=\"result\">Connection successful</p></body></html>"
    assert (_tests(html), _detail(html, "Version"), _detail(html, "Server")) == (None, None, None)


def test_what_a_page_shows_is_bounded_and_printable() -> None:
    hostile = "<b>ms-1</b>\x1b[31m" + "x" * 5000
    details = [("Server", hostile), ("Version", "2023.1")]
    tests = [(f"test {i}\x00", True) for i in range(PAGE_TESTS + 10)]
    html = sim_status_page("S", details, tests, True, "ok")
    server = _detail(html, "Server")
    assert server is not None and len(server) <= 128 and server.isprintable() and "<" not in server
    read = _tests(html)
    assert read is not None and len(read) == PAGE_TESTS and all(n.isprintable() for n, _ in read)


class ScriptedPortal(ServerClient):
    """A client whose HTTP calls answer from a script: the portal's status, then what each POST gets."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__("token")
        self.status = status
        self.calls: list[tuple[str, str]] = []

    async def _call(self, server: str, method: str, url: str, body: dict[str, Any] | None = None,
                    auth: bool = True, within: float | None = None, query: str = "") -> tuple[int, Any]:
        path = url.split("7751", 1)[1]
        self.calls.append((method, path))
        return (200, self.status) if method == "GET" else (202, {})


async def test_update_selected_never_closes_nor_migrates_over_a_failed_result() -> None:
    portal = ScriptedPortal({"status": "Failed", "error": "injected fault: failed midway, at release 2022.1"})
    with pytest.raises(ServerError, match=r"failed schema upgrade \(injected fault.*never migrated over") as caught:
        await portal.portal_update_selected("ms-1", "http://ms-1:7751", ["mgmt-db"])
    assert not caught.value.transient and caught.value.rule == "migration-failed"
    assert portal.calls == [("GET", "/ServerConfigurationPortal/DatabaseUpdates")]  # no CLOSE, no UPDATE


@pytest.mark.parametrize(("status", "closed"), [("Idle", False), ("Upgrade Successful", True)])
async def test_update_selected_closes_only_after_upgrade_successful(status: str, closed: bool) -> None:
    portal = ScriptedPortal({"status": status})
    await portal.portal_update_selected("ms-1", "http://ms-1:7751", ["mgmt-db"])
    posts = [path for method, path in portal.calls if method == "POST"]
    assert posts == [*(["/ServerConfigurationPortal/DatabaseUpdates/Close"] if closed else []),
                     "/ServerConfigurationPortal/DatabaseUpdates/UpdateSelected"]


async def test_update_selected_is_not_asked_while_the_portal_upgrades() -> None:
    portal = ScriptedPortal({"status": "Upgrading"})
    with pytest.raises(ServerError) as caught:
        await portal.portal_update_selected("ms-1", "http://ms-1:7751", ["mgmt-db"])
    assert caught.value.transient and caught.value.rule == NOT_SENT  # the core does not count it as asked
    assert not [c for c in portal.calls if c[0] == "POST"]
