"""The guide's rules over HTTP, beyond the acceptance run: each refusal with its rule id and reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from uwm_sim.fleet import running_fleet

from sim_helpers import wait_for, wait_phase, wait_portal

pytest_plugins = ["sim_fixtures"]

pytestmark = pytest.mark.integration


async def test_noop_and_role_rules(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-1") as c1, fleet.client("ms-2") as c2:
        noop = await c2.install("2021.1")
        assert noop.status == 200 and noop.body["noop"] and noop.body["state"]["version"] == "2021.1"
        reply = await c2.rotation(False)
        assert reply.status == 409 and reply.rule == "not-load-balanced"
        reply = await c1.replication(False)
        assert reply.status == 409 and reply.rule == "no-replication-role"
        reply = await c2.install("2025.1")
        assert reply.rule == "version-jump" and "at most 2" in reply.error
        events = [e for e in await fleet.journal() if e.outcome == "refused"]
        assert [e.detail["rule"] for e in events] == ["not-load-balanced", "no-replication-role", "version-jump"]


async def test_downgrade_leaves_a_version_mismatch(small: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(small()) as fleet, fleet.client("ms-2") as c:
        await c.install("2022.1")
        await wait_phase(c, "DatabaseUpdatesRequired")
        await c.update_all()
        await wait_portal(c, "Upgrade Successful")
        await wait_phase(c, "Running")
        # Installing an older release is possible (a rollback does it) but the schema stays ahead.
        assert (await c.install("2021.1")).status == 202
        state = await wait_phase(c, "VersionMismatch")
        assert state["version"] == "2021.1" and state["database"]["schemaVersion"] == "2022.1"
        assert (await c.update_all()).rule == "no-updates-required"
        # A schema jump of three from the server's side is refused at install time.
        assert (await c.install("2023.1")).status == 202
        await wait_phase(c, "DatabaseUpdatesRequired")
        assert (await c.install("2025.1")).rule == "version-jump"


async def test_replication_rules(estate: Callable[..., dict[str, Any]]) -> None:
    async with running_fleet(estate(installSeconds=0.4, caughtUpSeconds=0.2)) as fleet, \
            fleet.client("ps-1") as m, fleet.client("ps-2") as s2, fleet.client("ps-3") as s3:
        assert (await s2.state()).body["replication"] == {"role": "Subscriber", "group": "default",
                                                           "enabled": True, "caughtUp": True}
        # Disabling only the subscribers is not enough: the master still replicates.
        await s2.replication(False)
        await s3.replication(False)
        assert (await s2.install("2022.1")).rule == "replication-enabled"
        await m.replication(False)
        assert not (await s2.state()).body["replication"]["caughtUp"]
        for c in (m, s2, s3):  # the whole ps-pool out of rotation
            await c.rotation(False)
        assert (await s2.install("2022.1")).status == 202
        reply = await m.replication(True)
        assert reply.rule == "busy"
        await wait_phase(s2, "DatabaseUpdatesRequired")
        assert (await m.replication(True)).rule == "version-mismatch"
        # Back to one release (the subscriber is reinstalled at the old one): replication may resume.
        assert (await s2.install("2021.1")).status == 202
        await wait_phase(s2, "Running")
        for c in (m, s2, s3):
            assert (await c.replication(True)).status == 200
        state = await wait_for(s3.state, lambda r: r.body["replication"]["caughtUp"], within=5)
        assert state.body["replication"]["enabled"]
