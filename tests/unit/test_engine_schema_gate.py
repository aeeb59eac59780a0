"""The gate of a schema upgrade: the hop's backup is verified again just before the migration is asked for,
and a backup that is gone or no longer verifies stops it (PermanentError naming the backup)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from core_builders import about, at_step, estate, key, make_spec

from uwm_upgrade.adapters.database import BackupInfo
from uwm_upgrade.core.actions import UpgradeSchema
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import StepName
from uwm_upgrade.core.observations import PermanentError
from uwm_upgrade.core.planning import backup_id
from uwm_upgrade.engine.execute import execute, precheck
from uwm_upgrade.engine.observe import Estate

STEP = key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db")
ISO: dict[str, dict[str, Any]] = {n: {"replication_enabled": False, "in_rotation": False}
                                  for n in ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")}


class Portal:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def portal_update_selected(self, server: str, url: str, databases: list[str]) -> None:
        self.log.append(f"portal {server} {databases}")


class Backups:
    def __init__(self, log: list[str], found: BackupInfo | None) -> None:
        self.log, self.found = log, found

    async def verify_backup(self, bid: str) -> BackupInfo | None:
        self.log.append(f"verify {bid}")
        return self.found


def _estate(found: BackupInfo | None) -> tuple[Estate, list[str]]:
    log: list[str] = []
    return Estate(Portal(log), {"mgmt-db": Backups(log, found)}), log  # type: ignore[arg-type]


def _info(verified: bool) -> BackupInfo:
    return BackupInfo("plan-h1", datetime(2026, 1, 1), "2021.1", "x", verified)


async def test_the_backup_is_verified_again_before_the_migration_is_asked_for() -> None:
    est, log = _estate(_info(True))
    await execute(est, make_spec(), UpgradeSchema(STEP, "ms-1", "mgmt-db", "2023.1", "plan-h1"))
    assert log == ["verify plan-h1", "portal ms-1 ['mgmt-db']"]


@pytest.mark.parametrize(("found", "says"), [(None, "is missing"), (_info(False), "no longer verifies")])
async def test_a_backup_that_does_not_verify_stops_the_migration(found: BackupInfo | None, says: str) -> None:
    est, log = _estate(found)
    with pytest.raises(PermanentError, match=f"backup plan-h1 of mgmt-db {says}") as err:
        await execute(est, make_spec(), UpgradeSchema(STEP, "ms-1", "mgmt-db", "2023.1", "plan-h1"))
    assert log == ["verify plan-h1"]  # the portal was never asked
    assert err.value.where.database == "mgmt-db" and err.value.where.step is StepName.UPGRADE_SCHEMA


async def test_without_backups_there_is_no_gate() -> None:
    est, log = _estate(None)
    await execute(est, make_spec(), UpgradeSchema(STEP, "ms-1", "mgmt-db", "2023.1"))
    assert log == ["portal ms-1 ['mgmt-db']"]


@pytest.mark.parametrize("enabled", [True, False])
def test_decide_names_the_hops_backup_for_the_gate(enabled: bool) -> None:
    spec = make_spec(backup={"enabled": enabled})
    servers = {**ISO, "ms-1": {**ISO["ms-1"], "version": "2023.1"}}
    seen = estate(spec, servers=servers)
    status = at_step(spec, seen, STEP)
    action = about(decide(spec, status, seen, status.started_at or datetime.now()), STEP)
    assert isinstance(action, UpgradeSchema), action
    assert status.plan_hash and status.started_at
    assert action.backup_id == (backup_id(status.plan_hash, status.started_at, 1) if enabled else None)


async def test_a_gate_started_before_is_what_the_migration_waits_for() -> None:
    """The loop starts the gate (`precheck`) beside the status write before the effect; `execute` then
    waits for it, and asks the portal only once it passed (once, not verifying twice)."""
    est, log = _estate(_info(True))
    action = UpgradeSchema(STEP, "ms-1", "mgmt-db", "2023.1", "plan-h1")
    gate = precheck(est, action)
    assert gate is not None
    await execute(est, make_spec(), action, checked=gate)
    assert log == ["verify plan-h1", "portal ms-1 ['mgmt-db']"]
    failing, failing_log = _estate(None)
    with pytest.raises(PermanentError, match="backup plan-h1 of mgmt-db is missing"):
        await execute(failing, make_spec(), action, checked=precheck(failing, action))
    assert failing_log == ["verify plan-h1"]  # the portal was never asked
    assert precheck(est, UpgradeSchema(STEP, "ms-1", "mgmt-db", "2023.1")) is None  # no backup, no gate
