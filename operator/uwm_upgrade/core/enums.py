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
    AWAITING_WINDOW = "AwaitingWindow"  # spec.maintenanceWindow: the next hop waits for a window it fits in


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK})
# Over without reaching the target: kstatus's `Stalled` (Failed for Flux, `helm --wait`, Argo CD's checks).
STALLED_PHASES = frozenset({Phase.FAILED, Phase.ROLLED_BACK})


class StepState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


DONE_STATES = frozenset({StepState.SUCCEEDED, StepState.SKIPPED})


class StepName(StrEnum):
    """Every step a plan can hold. `undoes` marks the steps appended to a hop to roll it back
    (failurePolicy Rollback): whether a hop is rolling back, and which of its steps are the rollback's,
    is read from it and nowhere else."""

    undoes: bool

    def __new__(cls, value: str, undoes: bool = False) -> StepName:
        member = str.__new__(cls, value)
        member._value_ = value
        member.undoes = undoes
        return member

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
    ROLLBACK_DISABLE_REPLICATION = "RollbackDisableReplication", True
    ROLLBACK_TAKE_OUT_OF_ROTATION = "RollbackTakeOutOfRotation", True
    RESTORE_BACKUP = "RestoreBackup", True
    REINSTALL_PREVIOUS = "ReinstallPrevious", True
    ROLLBACK_HEALTH_CHECK = "RollbackHealthCheck", True
    ROLLBACK_BRING_INTO_ROTATION = "RollbackBringIntoRotation", True
    ROLLBACK_RESTORE_REPLICATION = "RollbackRestoreReplication", True
    ROLLBACK_VERIFY_REPLICATION = "RollbackVerifyReplication", True
    # strategy CleanInstall only (core/clean_install.py): new servers at new URLs, clients moved to them
    ADD_FAILOVER_SERVER = "AddFailoverServer"
    ADD_VIRTUAL_HOST = "AddVirtualHost"
    INSTALL_REPLACEMENT = "InstallReplacement"
    BRING_ONLINE = "BringOnline"
    REDEPLOY_DEPLOYMENT_AGENT = "RedeployDeploymentAgent"
    DEPLOY_POLICY = "DeployPolicy"
    SWITCH_DNS_RECORD = "SwitchDnsRecord"
    MAKE_DEFAULT_WEBSITE = "MakeDefaultWebsite"
    REMOVE_FAILOVER_SERVER = "RemoveFailoverServer"
    TAKE_OFFLINE = "TakeOffline"


class ConditionType(StrEnum):
    """The condition types this operator writes (the CRD admits any, as metav1.Condition does: another
    controller's, or a later release's, are kept as they are)."""

    READY = "Ready"
    RECONCILING = "Reconciling"  # kstatus: True while the plan is under way (InProgress)
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PAUSED = "Paused"
    REPLICATION_DISABLED = "ReplicationDisabled"
    BLOCKED = "Blocked"
    AWAITING_APPROVAL = "AwaitingApproval"
    # kstatus: True when the plan cannot get to its target on its own: it is over without reaching it
    # (Failed, RolledBack), its spec is invalid, or its loop cannot get through a turn (an unexpected error,
    # a refused status write)
    STALLED = "Stalled"
    AWAITING_WINDOW = "AwaitingWindow"  # spec.maintenanceWindow: waiting for a window the next hop fits in


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Why a condition, a wait or a failure is what it is (CamelCase, shown by `kubectl describe`)."""

    PLANNED = "Planned"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    NOT_AWAITING_APPROVAL = "NotAwaitingApproval"
    BLOCKED = "Blocked"
    NOT_BLOCKED = "NotBlocked"
    PAUSED = "Paused"
    PAUSING = "Pausing"
    HALTING = "Halting"  # a step failed: the halt waits for what the other lanes have under way
    NOT_PAUSED = "NotPaused"
    RUNNING = "Running"
    IN_PROGRESS = "InProgress"
    OBSERVATION_UNAVAILABLE = "ObservationUnavailable"
    ESTATE_BUSY = "EstateBusy"
    INSTALLING = "Installing"
    MIGRATING_SCHEMA = "MigratingSchema"
    SCHEMA_LOCKED = "SchemaLocked"
    DRAINING = "Draining"
    AWAITING_SCHEMA = "AwaitingSchema"
    AWAITING_HEALTH = "AwaitingHealth"
    CATCHING_UP = "CatchingUp"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"
    ROLLBACK_IMPOSSIBLE = "RollbackImpossible"
    ROLLBACK_UNSAFE = "RollbackUnsafe"  # the hop's new release already served clients: a restore loses data
    INVALID_SPEC = "InvalidSpec"
    INVALID_STATUS = "InvalidStatus"
    PLANNING_FAILED = "PlanningFailed"
    PREFLIGHT_FAILED = "PreflightFailed"
    TOPOLOGY_MISMATCH = "TopologyMismatch"
    ESTATE_CHANGED = "EstateChanged"
    GUIDE_RULE = "GuideRuleWouldBeBroken"
    STEP_FAILED = "StepFailed"
    INSTALL_FAILED = "InstallFailed"
    MIGRATION_FAILED = "MigrationFailed"
    MIGRATION_UNCONFIRMED = "MigrationUnconfirmed"
    IDENTITY_MISMATCH = "ServerIdentityMismatch"
    BASELINE_NOT_ACCEPTED = "BaselineNeedsApproval"
    SCHEMA_NOT_VERIFIED = "SchemaNotVerified"
    BACKUP_FAILED = "BackupFailed"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    TIMEOUT = "Timeout"
    REPLICATION_DISABLED_FOR_UPGRADE = "ReplicationDisabledForUpgrade"
    REPLICATION_AS_BEFORE = "ReplicationAsBefore"
    IN_PLACE_FORBIDDEN = "InPlaceUpgradeForbidden"
    UNEXPECTED_ERROR = "UnexpectedError"
    STATUS_WRITE_REFUSED = "StatusWriteRefused"
    NOT_STALLED = "NotStalled"
    RECOVERED = "Recovered"  # the loop got through a turn again after a stall
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"  # waited before the start longer than a step may run
    ABORTED = "Aborted"  # spec.abort: stopped at a safe point on request
    RETRYING_PLAN = "RetryRequested"  # spec.retry: a Failed plan goes on from its failed step
    OUTSIDE_WINDOW = "OutsideMaintenanceWindow"
    HOP_DOES_NOT_FIT = "HopDoesNotFitWindow"
    PLAN_TOO_LARGE = "PlanTooLarge"  # more steps than a status may hold (core/hop_summary.MAX_PLANNED_STEPS)
    IN_WINDOW = "InMaintenanceWindow"
    NO_WINDOW = "NoMaintenanceWindow"
    UNKNOWN_TIME_ZONE = "UnknownTimeZone"


class Strategy(StrEnum):
    IN_PLACE = "InPlace"
    CLEAN_INSTALL = "CleanInstall"


class PersonalizationCutover(StrEnum):
    """How Environment Manager clients reach a new Personalization Server (strategy CleanInstall)."""

    VIRTUAL_HOST_DNS = "VirtualHostDns"  # the guide's recommendation for staged upgrades
    POLICY = "Policy"
    DEFAULT_WEBSITE = "DefaultWebsite"  # the new server becomes the default website of the host clients use


class ManagementCutover(StrEnum):
    """How Deployment Agents reach a new Management Server (strategy CleanInstall)."""

    FAILOVER_LIST_AND_AGENT = "FailoverListAndAgent"  # the Failover Server List, then the agent redeployed
    DEFAULT_WEBSITE = "DefaultWebsite"


class CutoverMethod(StrEnum):
    FAILOVER_LIST_AND_AGENT = "FailoverListAndAgent"  # Management Servers
    POLICY = "Policy"
    VIRTUAL_HOST_DNS = "VirtualHostDns"
    DEFAULT_WEBSITE = "DefaultWebsite"  # either kind


class CutoverState(StrEnum):
    PENDING = "Pending"
    NEW_SERVER_ONLINE = "NewServerOnline"
    CLIENTS_MOVED = "ClientsMoved"
    OLD_SERVER_OFFLINE = "OldServerOffline"
    STALLED = "Stalled"
    RECOVERED = "Recovered"


class FailurePolicy(StrEnum):
    HALT = "Halt"
    ROLLBACK = "Rollback"


class AbortMode(StrEnum):
    """spec.abort: stop at the next safe point and halt there, or roll the current hop back where the
    data-safety rules allow a restore (else halt, saying why)."""

    HALT = "Halt"
    ROLLBACK = "Rollback"


class Weekday(StrEnum):
    """spec.maintenanceWindow.days (system-upgrade-controller's spelling), Monday first as `weekday()`."""

    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


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


class EventType(StrEnum):
    """A Kubernetes Event's type."""

    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    """Why the operator posts an Event on a plan (besides a phase change, whose reason is the phase)."""

    STEP_SUCCEEDED = "StepSucceeded"
    STEP_FAILED = "StepFailed"
    STEP_SKIPPED = "StepSkipped"
    NEW_SERVER_ONLINE = "NewServerOnline"
    CLIENTS_MOVED = "ClientsMoved"
    OLD_SERVER_OFFLINE = "OldServerOffline"
    STALLED = "Stalled"
    RECOVERED = "Recovered"
    LICENSE_DEPLOYED = "LicenseDeployed"
