"""Observation at the boundary: agent state mapping and status-page confirmation streaks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from core_estate_model import make_spec

from uwm_upgrade.adapters.database import Snapshot
from uwm_upgrade.adapters.servers import AgentState, PortalStatus, StatusPage
from uwm_upgrade.core.enums import ReplicationRole, ServerKind, ServerPhase
from uwm_upgrade.core.models import Server, UpgradePlanStatus
from uwm_upgrade.core.observations import DatabaseObservation
from uwm_upgrade.engine.observe import Estate, _database, _health, server_observation

MS1 = Server("ms-1", ServerKind.MANAGEMENT, "http://ms-1:7751", "mgmt-db", True, ReplicationRole.NONE)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


TESTS_PASS = (("Web service started and settled", True), ("Database connection", True))


class ScriptedPages:
    """Stands in for the HTTP client: answers status-page polls from a script, counting the polls. A page
    that answers 200 names ms-1 and lists passing tests, unless the script gives a StatusPage itself."""

    def __init__(self, pages: list[tuple[bool, str | None] | StatusPage]) -> None:
        self.pages, self.polls = list(pages), 0

    async def status_page(self, server: str, url: str, kind: str) -> StatusPage:
        page = self.pages.pop(0)
        self.polls += 1
        if isinstance(page, StatusPage):
            return page
        ok, version = page
        return StatusPage(ok=ok, http_status=200 if ok else 503, summary="x", version=version, server="ms-1",
                          tests=TESTS_PASS)


async def _run(script: list[tuple[bool, str | None]], times: list[float], period: float = 2.0) -> tuple[list[Any], int]:
    pages = ScriptedPages(script)
    estate = Estate(pages, {})  # type: ignore[arg-type]
    seen = [await _health(estate, MS1, T0 + dt.timedelta(seconds=t), period) for t in times]
    return [(h.ok, h.consecutive) for h in seen], pages.polls


async def test_polls_at_most_once_per_period() -> None:
    seen, polls = await _run([(True, "2023.1"), (True, "2023.1")], [0, 0.5, 1.9, 2.0])
    assert polls == 2
    assert seen == [(True, 1), (True, 1), (True, 1), (True, 2)]


async def test_a_failure_or_another_version_restarts_the_streak() -> None:
    script = [(True, "2021.1"), (True, "2021.1"), (False, "2021.1"), (True, "2023.1"), (True, "2023.1")]
    seen, _ = await _run(script, [0, 2, 4, 6, 8])
    assert seen == [(True, 1), (True, 2), (False, 0), (True, 1), (True, 2)]


async def test_a_200_page_without_its_version_row_does_not_confirm() -> None:
    """The guide: check the details are correct. A page that answers 200 but shows no release is no
    confirmation (it used to count, as if it showed the right one)."""
    seen, _ = await _run([(True, "2023.1"), (True, None), (True, "2023.1")], [0, 2, 4])
    assert seen == [(True, 1), (False, 0), (True, 1)]


@pytest.mark.parametrize(("page", "why"), [
    (StatusPage(ok=True, http_status=200, summary="Connection successful", version="2023.1", server="ms-1",
                tests=(("Web service started and settled", True), ("Database connection", False))),
     "answered 200, but failed tests: Database connection"),
    (StatusPage(ok=True, http_status=200, summary="Connection successful", version="2023.1", server="ms-2",
                tests=TESTS_PASS), "answered 200, but it names another server, ms-2, not ms-1"),
    (StatusPage(ok=True, http_status=200, summary="Connection successful", version="2023.1", server="ms-1"),
     "answered 200, but it lists no tests"),
    (StatusPage(ok=True, http_status=200, summary="Connection successful", server="ms-1", tests=TESTS_PASS),
     "answered 200, but it shows no version"),
])
async def test_a_200_page_confirms_only_when_its_details_and_tests_are_right(page: StatusPage, why: str) -> None:
    pages = ScriptedPages([page, (True, "2023.1")])
    estate = Estate(pages, {})  # type: ignore[arg-type]
    wrong = await _health(estate, MS1, T0, 1.0)
    assert (wrong.ok, wrong.consecutive) == (False, 0)
    assert wrong.detail == f"status page {why}"
    right = await _health(estate, MS1, T0 + dt.timedelta(seconds=1), 1.0)
    assert (right.ok, right.consecutive) == (True, 1)
    assert (why in right.detail) == (page.version is not None)  # why it last failed, at the same release


def test_agent_state_maps_to_the_core_observation() -> None:
    state = AgentState.model_validate({
        "name": "ms-1", "kind": "Management", "version": "2023.1", "phase": "SomethingNew", "settled": True,
        "install": {"targetVersion": "2023.1", "error": None},
        "database": {"name": "mgmt-db", "schemaVersion": "2023.1"},
        "replication": {"role": "None", "enabled": False, "caughtUp": True},
        "rotation": {"loadBalanced": True, "inRotation": False, "activeRequests": 0}})
    obs = server_observation(MS1, state)
    assert obs.phase is ServerPhase.STARTING  # an unknown phase is never taken for Running
    assert (obs.load_balanced, obs.in_rotation, obs.version) == (True, False, "2023.1")


async def test_a_confirming_page_still_says_why_it_last_failed() -> None:
    pages = ScriptedPages([(False, "2023.1"), (True, "2023.1")])
    estate = Estate(pages, {})  # type: ignore[arg-type]
    failed = await _health(estate, MS1, T0, 1.0)
    ok = await _health(estate, MS1, T0 + dt.timedelta(seconds=1), 1.0)
    assert failed.detail.startswith("status page answered 503")
    assert ok.ok and "last failed with answered 503" in ok.detail


class SnapshotOnly:
    """Stands in for the database adapter: one snapshot, with its migration history."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.seen = snapshot

    async def snapshot(self, backup_ids: list[str]) -> Snapshot:
        return self.seen


class IdlePortal:
    async def portal_status(self, server: str, url: str) -> PortalStatus:
        return PortalStatus.model_validate({"updatesRequired": [], "status": "Idle"})


async def test_the_database_observation_carries_the_migration_history() -> None:
    spec = make_spec()
    history = ("2021.1", "2022.1", "2023.1")
    estate = Estate(IdlePortal(), {"mgmt-db": SnapshotOnly(Snapshot("2023.1", None, (), history))})  # type: ignore[arg-type]
    seen = await _database(estate, spec, UpgradePlanStatus(), "mgmt-db")
    assert isinstance(seen, DatabaseObservation)
    assert (seen.schema_version, seen.migrations) == ("2023.1", history)
# ---------------------------------------------------------------- the portal: a gap, never Idle


class FakeSnapshot:
    def __init__(self, migrations: tuple[str, ...] | None = None) -> None:
        self.schema_version, self.lock_holder, self.backups = "2022.1", None, ()
        self.migrations = migrations or ()


class FakeDatabase:
    def __init__(self, snapshot: FakeSnapshot) -> None:
        self.seen = snapshot

    async def snapshot(self, backup_ids: list[str]) -> FakeSnapshot:
        return self.seen


class Portals:
    """The portal of each server: an answer, or None (it does not answer); records whom it was asked."""

    def __init__(self, answers: dict[str, dict[str, Any] | None]) -> None:
        self.answers, self.asked = answers, []

    async def portal_status(self, server: str, url: str) -> Any:
        from uwm_upgrade.adapters.servers import PortalStatus, ServerError

        self.asked.append(server)
        answer = self.answers.get(server)
        if answer is None:
            raise ServerError(server, "GET /ServerConfigurationPortal/DatabaseUpdates did not answer", True)
        return PortalStatus.model_validate(answer)


def _spec(**raw: Any) -> Any:
    from core_builders import SMALL_ESTATE

    from uwm_upgrade.core.models import parse_spec
    return parse_spec({**SMALL_ESTATE, **raw})


async def observed(portals: Portals, snapshot: FakeSnapshot | None = None, spec: Any = None,
                    status: Any = None) -> Any:
    from uwm_upgrade.core.models import UpgradePlanStatus
    from uwm_upgrade.engine.observe import _database as observe_database

    estate = Estate(portals, {"mgmt-db": FakeDatabase(snapshot or FakeSnapshot())})  # type: ignore[arg-type,dict-item]
    return await observe_database(estate, spec or _spec(), status or UpgradePlanStatus(), "mgmt-db")


async def test_no_portal_answering_is_a_gap_not_idle() -> None:
    """One bad poll used to read as `Idle, no updates required`, which re-requested a migration over a
    half-migrated schema; now the database is not observed, and the core waits."""
    from uwm_upgrade.core.observations import ObservationGap

    portals = Portals({"ms-1": None, "ms-2": None})
    seen = await observed(portals)
    assert isinstance(seen, ObservationGap) and seen.where.database == "mgmt-db"
    assert "no Server Configuration Portal of mgmt-db answered" in seen.message and "ms-2" in seen.message
    assert portals.asked == ["ms-1", "ms-2"]


async def test_an_unknown_portal_status_is_a_gap() -> None:
    from uwm_upgrade.core.observations import ObservationGap

    seen = await observed(Portals({"ms-1": {"status": "Rebuilding\x07<b>"}}))
    assert isinstance(seen, ObservationGap) and "unknown status 'Rebuilding'" in seen.message


async def test_a_failed_migration_is_observed_with_its_server_and_error() -> None:
    from uwm_upgrade.core.enums import MigrationStatus

    seen = await observed(Portals({"ms-1": None, "ms-2": {
        "status": "Failed", "by": "ms-1", "error": "injected fault: the schema migration failed midway"}}))
    assert seen.migration is MigrationStatus.FAILED and seen.migration_by == "ms-1"
    assert seen.migration_error == "injected fault: the schema migration failed midway"


@pytest.mark.parametrize(("snapshot", "expected"), [
    (FakeSnapshot(("2021.1", "2022.1")), ("2021.1", "2022.1")),
    (FakeSnapshot(), ()),  # no history read: unknown
])
async def test_the_migration_history_is_mapped(snapshot: FakeSnapshot, expected: tuple[str, ...]) -> None:
    seen = await observed(Portals({"ms-1": {"status": "Idle"}}), snapshot)
    assert seen.migrations == expected


async def test_a_replaced_database_asks_its_new_servers_portals_first() -> None:
    """strategy CleanInstall: the old servers run a release behind the schema, so their portals never
    list Database Updates Required; the new servers' do (it used to ask only the old ones)."""
    spec = _spec(strategy="CleanInstall", managementServers=[
        {"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db", "replacement": {"url": "http://n1:7751"}},
        {"name": "ms-2", "url": "http://ms-2:7751", "database": "mgmt-db", "replacement": {"url": "http://n2:7751"}}])
    portals = Portals({"ms-1-new": {"status": "Idle", "updatesRequired": [{"database": "mgmt-db"}]},
                       "ms-1": {"status": "Idle"}})
    seen = await observed(portals, spec=spec)
    assert portals.asked == ["ms-1-new"] and seen.updates_required


def _agent(phase: str) -> Any:
    return server_observation(MS1, AgentState.model_validate({
        "name": "ms-1", "kind": "Management", "version": "2023.1", "phase": phase, "settled": True,
        "install": {"targetVersion": "2023.1", "error": None},
        "database": {"name": "mgmt-db", "schemaVersion": "2023.1"},
        "replication": {"role": "None", "enabled": False, "caughtUp": True},
        "rotation": {"loadBalanced": True, "inRotation": True, "activeRequests": 0}}))


async def test_after_the_start_a_page_no_check_waits_for_is_read_once_while_its_server_runs() -> None:
    """Once the plan started, only the pages of the health checks it waits for are polled; any other
    server's is read once while its agent says it runs (an operator restarted mid-hop knows them all,
    not Unknown), then kept; a server that does not run has no page worth reading."""
    pages = ScriptedPages([(True, "2023.1")] * 3)
    estate = Estate(pages, {})  # type: ignore[arg-type]
    nothing_waits: set[str] = set()
    stopped = await _health(estate, MS1, T0, 1.0, _agent("Installing"), nothing_waits)
    assert stopped is None and pages.polls == 0
    seen = [await _health(estate, MS1, T0 + dt.timedelta(seconds=t), 1.0, _agent("Running"), nothing_waits)
            for t in (1, 5, 9)]
    assert pages.polls == 1 and all(h is not None and h.ok for h in seen)
    waited = await _health(estate, MS1, T0 + dt.timedelta(seconds=10), 1.0, _agent("Running"), {"ms-1"})
    assert pages.polls == 2 and waited is not None and waited.consecutive == 2  # a check waits: polled
