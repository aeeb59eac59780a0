"""The data-safety questions: what must hold before a plan may touch an estate, and before it may undo one.

Why one module: each answer protects user data or the identity of what is upgraded, and each is asked at
preflight (and some again while the plan runs), so they are read together:

- a failed schema migration's evidence (the portal says `Failed`: a half-migrated schema, damaged rows)
  is never planned over, never backed up as a good backup, never migrated over (`failed_migrations`);
- a database whose migration history (`uwm_migrations`) does not cover every release up to its schema
  version was migrated partly, or by hand: it is refused (`partial_histories`);
- every server answers under the name the spec gives it: one server reached under two names (a typo,
  `localhost` for `127.0.0.1`, a DNS alias) would be "upgraded" twice while the real second server is
  untouched (`identity_problems`);
- what the plan would leave as it found it but not as it should be (load-balanced servers out of
  rotation, replication off: maybe left so by a halted plan) is said, and needs approval or an explicit
  spec choice (`baseline_deviations`);
- a database is restored (rolled back) only while none of its servers has served clients on the hop's
  new release since the backup: afterwards a restore loses the user data written since (`served`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from .enums import MigrationStatus, ReplicationRole, ReplicationState, StepName, StepState
from .models import BackupRecord, ServedRecord, StepStatus, UpgradePlanSpec, UpgradePlanStatus
from .observations import Observations
from .status import stamp

Record = TypeVar("Record", BackupRecord, ServedRecord)


def failed_migrations(spec: UpgradePlanSpec, seen: Observations) -> list[str]:
    """Databases whose portal reports a failed schema upgrade, each with the portal's error and what to do."""
    found = []
    for db in spec.databases:
        obs = seen.databases.get(db.name)
        if obs is None or obs.migration is not MigrationStatus.FAILED:
            continue
        by = f" through {obs.migration_by}" if obs.migration_by else ""
        found.append(f"the Server Configuration Portal reports the schema upgrade of database {db.name}{by} Failed"
                     f" ({obs.migration_error or 'no error given'}); its schema is at {obs.schema_version} and may"
                     f" be half migrated, its user data damaged. It is never planned, backed up or migrated over:"
                     f" restore {db.name} from the verified backup taken before that migration (status.databases[]"
                     f".lastBackup of the plan that ran it), check it, then click CLOSE in the portal and create the"
                     f" plan again")
    return found


def partial_histories(spec: UpgradePlanSpec, seen: Observations, catalog: Sequence[str]) -> list[str]:
    """Databases whose `uwm_migrations` rows do not cover every catalog release from the first one they
    record up to their schema version (or record one beyond it). An unknown (empty) history is not judged."""
    found = []
    for db in spec.databases:
        obs = seen.databases.get(db.name)
        if obs is None or not obs.migrations or obs.schema_version not in catalog:
            continue
        at = catalog.index(obs.schema_version)
        known = [catalog.index(v) for v in obs.migrations if v in catalog]
        start = min([*known, at])
        missing = [catalog[i] for i in range(start, at + 1) if catalog[i] not in obs.migrations]
        beyond = sorted({catalog[i] for i in known if i > at}, key=catalog.index)
        if not missing and not beyond:
            continue
        what = []
        if missing:
            what.append(f"lacks {', '.join(missing)}")
        if beyond:
            what.append(f"records {', '.join(beyond)}, beyond the schema")
        found.append(f"the migration history of database {db.name} (uwm_migrations) {' and '.join(what)} though its"
                     f" schema version is {obs.schema_version}: it was migrated partly or by hand, so its schema"
                     " cannot be trusted to be what its version says; restore it from a verified backup, or repair"
                     " the history with the vendor's support, then create the plan again")
    return found


def identity_problems(spec: UpgradePlanSpec, seen: Observations) -> list[str]:
    """Servers that answer under another name than the spec's, and names that two spec servers answer to."""
    problems = []
    answering: dict[str, list[str]] = {}
    for server in (*spec.servers(), *spec.replacement_servers()):
        obs = seen.servers.get(server.name)
        if obs is None or obs.reported_name is None:
            continue
        answering.setdefault(obs.reported_name, []).append(server.name)
        if obs.reported_name != server.name:
            problems.append(f"spec server {server.name} ({server.url}) answers as {obs.reported_name}: that is another"
                            f" server's name, or the URL reaches the wrong server; fix the URL of {server.name}")
    for name, spec_names in sorted(answering.items()):
        if len(spec_names) > 1:
            problems.append(f"spec servers {' and '.join(spec_names)} are one server ({name}) reached under two"
                            " names: it would be upgraded twice while the other is never touched")
    return problems


@dataclass(frozen=True)
class Deviations:
    """What the estate is found like before the plan that a plan would leave so: load-balanced servers out
    of rotation, replication off on servers with a replication role (perhaps left so by a halted plan)."""

    out_of_rotation: tuple[str, ...] = ()
    replication_off: tuple[str, ...] = ()

    def unaccepted(self, spec: UpgradePlanSpec) -> Deviations:
        """Those the spec does not accept (spec.baseline)."""
        return Deviations(() if spec.baseline.accept_out_of_rotation else self.out_of_rotation,
                          () if spec.baseline.accept_replication_off else self.replication_off)

    def describe(self) -> str:
        parts = []
        if self.out_of_rotation:
            parts.append(f"{', '.join(self.out_of_rotation)} out of rotation")
        if self.replication_off:
            parts.append(f"replication off on {', '.join(self.replication_off)}")
        return "; ".join(parts)

    def __bool__(self) -> bool:
        return bool(self.out_of_rotation or self.replication_off)


def baseline_deviations(spec: UpgradePlanSpec, seen: Observations) -> Deviations:
    servers = [s for s in spec.servers() if s.name in seen.servers]
    return Deviations(
        tuple(s.name for s in servers if s.load_balanced and not seen.servers[s.name].in_rotation),
        tuple(s.name for s in servers if s.role is not ReplicationRole.NONE
              and not seen.servers[s.name].replication_enabled))


def recorded_deviations(spec: UpgradePlanSpec, status: UpgradePlanStatus) -> Deviations:
    """The deviations the baseline recorded (what `baseline_deviations` found when the run started)."""
    return Deviations(
        tuple(s.name for s in spec.servers() if s.load_balanced and not status.in_rotation_before(s.name)),
        tuple(s.name for s in spec.servers() if s.role is not ReplicationRole.NONE
              and (recorded := status.server(s.name)) is not None
              and recorded.replication_before is ReplicationState.DISABLED))


def _hops_records(status: UpgradePlanStatus, hop: int, databases: Sequence[str],
                  kind: type[Record]) -> list[tuple[str, Record]]:
    """Per database of `databases`, its record of kind `kind` (its backup, or when it served the new
    release) if that record is hop `hop`'s."""
    found = []
    for name in databases:
        recorded = status.database(name)
        record = None if recorded is None else (
            recorded.last_backup if kind is BackupRecord else recorded.new_release_served)
        if isinstance(record, kind) and record.hop == hop:
            found.append((name, record))
    return found


def served(status: UpgradePlanStatus, hop: int, databases: Sequence[str]) -> list[str]:
    """Of `databases`, those whose servers served clients on hop `hop`'s release since its backup: each
    with who and since when (a restore of one of them would lose what its clients wrote since)."""
    return [f"{name} ({mark.server} has served clients on {mark.version} since {stamp(mark.since)})"
            for name, mark in _hops_records(status, hop, databases, ServedRecord)]


def schema_touched(step: StepStatus | None) -> bool:
    """The hop's migration step of a database was requested or ran: its schema may have changed, so a
    rollback restores it (one never asked for and never run changed nothing)."""
    return step is not None and (step.requested_at is not None
                                 or step.state not in (StepState.PENDING, StepState.SKIPPED))


def changed_databases(status: UpgradePlanStatus, hop: int) -> list[str]:
    """The databases whose schema hop `hop` may have changed (those a rollback of it restores)."""
    return [s.database for s in status.steps if s.name is StepName.UPGRADE_SCHEMA and s.hop == hop
            and s.database and schema_touched(s)]


def loss_window(status: UpgradePlanStatus, hop: int, databases: Sequence[str]) -> str:
    """The data-loss window of restoring `databases` from hop `hop`'s backups: from each backup's time to
    the restore, what their clients wrote is lost."""
    parts = [f"{name} from backup {saved.id} taken at {stamp(saved.taken_at)}"
             for name, saved in _hops_records(status, hop, databases, BackupRecord)]
    if not parts:
        return ""
    return (f"Restoring {'; '.join(parts)}: user data written to them from the backup until the restore is"
            " lost")
