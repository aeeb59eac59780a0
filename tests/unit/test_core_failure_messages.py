"""What a failure says a human needs: a failed schema migration names the backup that holds the database
as it was (or says there is none), since the schema and the user data may be left half migrated."""

from __future__ import annotations

from core_builders import T0, at_step, estate, key, make_spec, one

from uwm_upgrade.core.actions import Fail
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import MigrationStatus, Reason, ReplicationRole, StepName, StepState
from uwm_upgrade.core.observations import BackupObservation
from uwm_upgrade.core.planning import backup_id
from uwm_upgrade.core.status import record_backup


def _migration_failed(with_backup: bool) -> Fail:
    spec = make_spec()
    isolated = {s.name: {"replication_enabled": False, "in_rotation": False} for s in spec.servers()
                if s.role is not ReplicationRole.NONE or s.load_balanced}
    seen = estate(spec, servers={**isolated, "ms-1": {**isolated["ms-1"], "version": "2023.1"}},
                  databases={"mgmt-db": {"schema_version": "2022.1", "migration": MigrationStatus.FAILED}})
    status = at_step(spec, seen, key(StepName.UPGRADE_SCHEMA, server="ms-1", database="mgmt-db"),
                     state=StepState.RUNNING)
    if with_backup:
        bid = backup_id(status.plan_hash or "", status.started_at or T0, 1)
        status = record_backup(status, "mgmt-db", 1, BackupObservation(bid, True, T0), T0)
    action = one(decide(spec, status, seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.MIGRATION_FAILED, action
    return action


def test_a_failed_migration_names_the_backup_that_restores_the_database() -> None:
    action = _migration_failed(with_backup=True)
    assert "(schema at 2022.1, maybe half migrated); the verified backup p" in action.message
    assert "taken before this hop holds mgmt-db as it was" in action.message


def test_a_failed_migration_without_a_backup_says_so() -> None:
    assert "no verified backup of it was taken in this hop" in _migration_failed(with_backup=False).message
