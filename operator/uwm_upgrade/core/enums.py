"""Every closed set of names the operator uses, as StrEnums, so no state or reason is a scattered string.

The string values are the wire values of docs/contracts.md (CRD enums, agent state, condition types);
`Reason` values are CamelCase, as Kubernetes conditions and the CRD's `reason` pattern require.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "Pending"
    PLANNING = "Planning"
    AWAITING_APPROVAL = "AwaitingApproval"
    BLOCKED = "Blocked"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK})


class StepState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


DONE_STATES = frozenset({StepState.SUCCEEDED, StepState.SKIPPED})


class StepName(StrEnum):
    # before the first hop (hop 0)
    PREFLIGHT = "Preflight"
    PLAN = "Plan"
    RECORD_BASELINE = "RecordBaseline"
    # every hop, in this order
    DISABLE_REPLICATION = "DisableReplication"
    TAKE_OUT_OF_ROTATION = "TakeOutOfRotation"
    BACKUP_DATABASE = "BackupDatabase"
    INSTALL_FIRST_SERVER = "InstallFirstServer"
    UPGRADE_SCHEMA = "UpgradeSchema"
    VERIFY_SCHEMA = "VerifySchema"
    INSTALL_SERVER = "InstallServer"
    HEALTH_CHECK = "HealthCheck"
    BRING_INTO_ROTATION = "BringIntoRotation"
    RESTORE_REPLICATION = "RestoreReplication"
    VERIFY_REPLICATION = "VerifyReplication"
    # appended to a hop when it is rolled back
    ROLLBACK_DISABLE_REPLICATION = "RollbackDisableReplication"
    ROLLBACK_TAKE_OUT_OF_ROTATION = "RollbackTakeOutOfRotation"
    RESTORE_BACKUP = "RestoreBackup"
    REINSTALL_PREVIOUS = "ReinstallPrevious"
    ROLLBACK_HEALTH_CHECK = "RollbackHealthCheck"
    ROLLBACK_BRING_INTO_ROTATION = "RollbackBringIntoRotation"
    ROLLBACK_RESTORE_REPLICATION = "RollbackRestoreReplication"
    ROLLBACK_VERIFY_REPLICATION = "RollbackVerifyReplication"
    # strategy CleanInstall only (core/clean_install.py): new servers at new URLs, clients moved to them
    ADD_FAILOVER_SERVER = "AddFailoverServer"
    ADD_VIRTUAL_HOST = "AddVirtualHost"
    INSTALL_REPLACEMENT = "InstallReplacement"
    BRING_ONLINE = "BringOnline"
    REDEPLOY_DEPLOYMENT_AGENT = "RedeployDeploymentAgent"
    DEPLOY_POLICY = "DeployPolicy"
    SWITCH_DNS_RECORD = "SwitchDnsRecord"
    REMOVE_FAILOVER_SERVER = "RemoveFailoverServer"
    TAKE_OFFLINE = "TakeOffline"


CLEAN_INSTALL_STEPS = frozenset({
    StepName.ADD_FAILOVER_SERVER, StepName.ADD_VIRTUAL_HOST, StepName.INSTALL_REPLACEMENT, StepName.BRING_ONLINE,
    StepName.REDEPLOY_DEPLOYMENT_AGENT, StepName.DEPLOY_POLICY, StepName.SWITCH_DNS_RECORD,
    StepName.REMOVE_FAILOVER_SERVER, StepName.TAKE_OFFLINE,
})

ROLLBACK_STEPS = frozenset({
    StepName.ROLLBACK_DISABLE_REPLICATION, StepName.ROLLBACK_TAKE_OUT_OF_ROTATION, StepName.RESTORE_BACKUP,
    StepName.REINSTALL_PREVIOUS, StepName.ROLLBACK_HEALTH_CHECK, StepName.ROLLBACK_BRING_INTO_ROTATION,
    StepName.ROLLBACK_RESTORE_REPLICATION, StepName.ROLLBACK_VERIFY_REPLICATION,
})


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PAUSED = "Paused"
    REPLICATION_DISABLED = "ReplicationDisabled"
    BLOCKED = "Blocked"
    AWAITING_APPROVAL = "AwaitingApproval"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Why a condition, a wait or a failure is what it is (CamelCase, shown by `kubectl describe`)."""

    PENDING = "Pending"
    PLANNING = "Planning"
    PLANNED = "Planned"
    ALREADY_AT_TARGET = "AlreadyAtTarget"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    NOT_AWAITING_APPROVAL = "NotAwaitingApproval"
    BLOCKED = "Blocked"
    NOT_BLOCKED = "NotBlocked"
    PAUSED = "Paused"
    PAUSING = "Pausing"
    NOT_PAUSED = "NotPaused"
    RUNNING = "Running"
    IN_PROGRESS = "InProgress"
    OBSERVATION_UNAVAILABLE = "ObservationUnavailable"
    ESTATE_BUSY = "EstateBusy"
    INSTALLING = "Installing"
    MIGRATING_SCHEMA = "MigratingSchema"
    SCHEMA_LOCKED = "SchemaLocked"
    DRAINING = "Draining"
    AWAITING_REPLICATION = "AwaitingReplication"
    AWAITING_ROTATION = "AwaitingRotation"
    AWAITING_SCHEMA = "AwaitingSchema"
    AWAITING_HEALTH = "AwaitingHealth"
    CATCHING_UP = "CatchingUp"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"
    ROLLBACK_IMPOSSIBLE = "RollbackImpossible"
    INVALID_SPEC = "InvalidSpec"
    PLANNING_FAILED = "PlanningFailed"
    PREFLIGHT_FAILED = "PreflightFailed"
    TOPOLOGY_MISMATCH = "TopologyMismatch"
    UNSUPPORTED_STRATEGY = "UnsupportedStrategy"
    ESTATE_CHANGED = "EstateChanged"
    GUIDE_RULE = "GuideRuleWouldBeBroken"
    STEP_FAILED = "StepFailed"
    INSTALL_FAILED = "InstallFailed"
    MIGRATION_FAILED = "MigrationFailed"
    SCHEMA_NOT_VERIFIED = "SchemaNotVerified"
    BACKUP_FAILED = "BackupFailed"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    TIMEOUT = "Timeout"
    REPLICATION_DISABLED_FOR_UPGRADE = "ReplicationDisabledForUpgrade"
    REPLICATION_AS_BEFORE = "ReplicationAsBefore"
    IN_PLACE_FORBIDDEN = "InPlaceUpgradeForbidden"
    CLIENTS_WOULD_BE_CUT_OFF = "ClientsWouldBeCutOff"
    AWAITING_CLIENTS = "AwaitingClients"


class Strategy(StrEnum):
    IN_PLACE = "InPlace"
    CLEAN_INSTALL = "CleanInstall"


class PersonalizationCutover(StrEnum):
    """How Environment Manager clients reach a new Personalization Server (strategy CleanInstall)."""

    VIRTUAL_HOST_DNS = "VirtualHostDns"  # the guide's recommendation for staged upgrades
    POLICY = "Policy"


class CutoverMethod(StrEnum):
    FAILOVER_LIST_AND_AGENT = "FailoverListAndAgent"  # Management Servers
    POLICY = "Policy"
    VIRTUAL_HOST_DNS = "VirtualHostDns"


class CutoverState(StrEnum):
    PENDING = "Pending"
    NEW_SERVER_ONLINE = "NewServerOnline"
    CLIENTS_MOVED = "ClientsMoved"
    OLD_SERVER_OFFLINE = "OldServerOffline"


class FailurePolicy(StrEnum):
    HALT = "Halt"
    ROLLBACK = "Rollback"


class ServerKind(StrEnum):
    """Also the kind of a database: the kind of server that uses it."""

    MANAGEMENT = "Management"
    PERSONALIZATION = "Personalization"


class ReplicationRole(StrEnum):
    NONE = "None"
    MASTER = "Master"
    SUBSCRIBER = "Subscriber"


class ReplicationState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    NONE = "None"


class Health(StrEnum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"
    LOCKED_OUT = "LockedOut"


class ServerPhase(StrEnum):
    """The agent state's `phase` (docs/contracts.md section 2)."""

    RUNNING = "Running"
    INSTALLING = "Installing"
    DATABASE_UPDATES_REQUIRED = "DatabaseUpdatesRequired"
    MIGRATING_SCHEMA = "MigratingSchema"
    LOCKED_OUT = "LockedOut"
    VERSION_MISMATCH = "VersionMismatch"
    FAILED = "Failed"
    STARTING = "Starting"


class MigrationStatus(StrEnum):
    """The Server Configuration Portal's `DatabaseUpdates` status."""

    IDLE = "Idle"
    UPGRADING = "Upgrading"
    UPGRADE_SUCCESSFUL = "Upgrade Successful"
    FAILED = "Failed"
