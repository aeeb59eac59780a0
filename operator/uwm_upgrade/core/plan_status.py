"""Typed models of the UpgradePlan's status (docs/contracts.md section 1), camelCase on the wire.

What the operator writes and reads back: every model frozen, changed only by `status.py`'s pure
transactions. `models.py` re-exports them beside the spec models.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .enums import (
    DONE_STATES,
    ConditionStatus,
    ConditionType,
    CutoverMethod,
    CutoverState,
    Health,
    Phase,
    ReplicationState,
    ServerKind,
    StepName,
    StepState,
)


class _Status(BaseModel):
    # `extra="ignore"`: kopf keeps its own bookkeeping under status.kopf; it is not ours to carry.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class StepKey(NamedTuple):
    """What identifies a step: its name, its hop and what it acts on. A tuple: a turn of a 200-server plan
    makes and hashes it some tens of thousands of times (as a frozen dataclass, `StepStatus.key` was 7.7% of
    the operator's samples in `bench/wide_plan.py`, py-spy)."""

    name: StepName
    hop: int
    server: str | None = None
    database: str | None = None

    def __str__(self) -> str:
        target = " ".join(t for t in (self.database, self.server) if t)
        return f"{self.name} {target}".strip()


class HopSummary(_Status):
    """What a finished hop's steps come down to once the next hop starts (they leave `steps`, so that a
    plan of many servers and hops keeps a status of bounded size): how many ended how, when the hop ran,
    which server upgraded each database first, and the longest each kind of step took (what a
    maintenance window's estimate of a later hop reads)."""

    succeeded: int = 0
    skipped: int = 0
    started_at: datetime | None = Field(None, alias="startedAt")
    finished_at: datetime | None = Field(None, alias="finishedAt")
    first_servers: dict[str, str] = Field(default_factory=dict, alias="firstServers")  # database -> server
    longest_seconds: dict[StepName, float] = Field(default_factory=dict, alias="longestSeconds")


class HopStatus(_Status):
    from_version: str = Field(alias="from")
    to_version: str = Field(alias="to")
    summary: HopSummary | None = None  # set when its steps were summarised (the hop is over)


class StepStatus(_Status):
    name: StepName
    hop: int = 0
    state: StepState = StepState.PENDING
    started_at: datetime | None = Field(None, alias="startedAt")
    finished_at: datetime | None = Field(None, alias="finishedAt")
    message: str | None = None
    server: str | None = None
    database: str | None = None
    # When the step's irreversible request was sent (UpgradeSchema: the migration). A migration that was
    # requested is never requested again automatically, whatever the portal shows afterwards.
    requested_at: datetime | None = Field(None, alias="requestedAt")
    # When a retry (spec.retry) set this failed step back to Pending: what the estate shows of the failure
    # from before then (a server left Failed by the install that failed) is that failure's, not a new one.
    retried_at: datetime | None = Field(None, alias="retriedAt")

    @property
    def key(self) -> StepKey:
        return StepKey(self.name, self.hop, self.server, self.database)


class BackupRecord(_Status):
    id: str
    hop: int
    taken_at: datetime | None = Field(None, alias="takenAt")
    verified: bool = False


class ServerStatus(_Status):
    name: str
    kind: ServerKind | None = None
    version: str | None = None
    online: bool | None = None
    replication: ReplicationState | None = None
    replication_before: ReplicationState | None = Field(None, alias="replicationBefore")
    # Whether a load-balanced server was in rotation before the plan (restored exactly at the end).
    # Absent (a status written before the baseline) means "in rotation".
    online_before: bool | None = Field(None, alias="onlineBefore")
    health: Health | None = None
    # Since when it is out of rotation (load-balanced) or not serving, as first observed (alerts read it).
    offline_since: datetime | None = Field(None, alias="offlineSince")


class ServedRecord(_Status):
    """A database's clients were first seen served on a hop's new release: by `server`, since `since`.
    From then on, restoring the hop's backup would lose what they wrote, so the hop is not rolled back."""

    hop: int
    version: str
    server: str
    since: datetime | None = None


class DatabaseStatus(_Status):
    name: str
    kind: ServerKind | None = None
    schema_version: str | None = Field(None, alias="schemaVersion")
    last_backup: BackupRecord | None = Field(None, alias="lastBackup")
    new_release_served: ServedRecord | None = Field(None, alias="newReleaseServed")


class CutoverLicense(_Status):
    """The license a Management Server's cut-over deploys with the Deployment Agent: which Secret, and a
    fingerprint of its value (never the value); `deployedAt` once the estate reports it deployed."""

    secret_name: str = Field(alias="secretName")
    key: str
    fingerprint: str | None = None
    deployed_at: datetime | None = Field(None, alias="deployedAt")


class CutoverStatus(_Status):
    """strategy CleanInstall: one server's cut-over to its replacement, as observed."""

    server: str
    replacement: str
    method: CutoverMethod
    old_url: str = Field(alias="oldUrl")
    new_url: str = Field(alias="newUrl")
    virtual_host: str | None = Field(None, alias="virtualHost")
    default_website_host: str | None = Field(None, alias="defaultWebsiteHost")
    license: CutoverLicense | None = None
    state: CutoverState = CutoverState.PENDING
    new_server_online_at: datetime | None = Field(None, alias="newServerOnlineAt")
    clients_moved_at: datetime | None = Field(None, alias="clientsMovedAt")
    old_server_offline_at: datetime | None = Field(None, alias="oldServerOfflineAt")
    message: str | None = None


def _known_type(value: Any) -> Any:
    """A condition type this operator writes as its enum member; any other (another writer's) as it is."""
    try:
        return ConditionType(value)
    except ValueError:
        return value


class Condition(_Status):
    """A metav1.Condition. `type` is one of ours (`ConditionType`) or another writer's, kept as it is."""

    type: Annotated[ConditionType | str, Field(union_mode="left_to_right"), BeforeValidator(_known_type)]
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


BASELINE = StepKey(StepName.RECORD_BASELINE, 0)  # the step that starts the run


class _Positions:
    """Where each item of a tuple of the status is, by its key: the status is immutable, and the same
    tuples are asked about over and over in one turn (a step by its key, a server by its name), so a
    lookup costs a dict's, not a walk of up to 800 steps (which made a turn of a 200-server plan
    quadratic). The few tuples last asked about are remembered by identity, and kept alive while they
    are, so an identity is never reused for another tuple. The first of equal keys wins, as a walk finds.
    (The core runs on the event loop's one thread: no lock.)"""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.known: dict[int, tuple[tuple[Any, ...], _Index]] = {}

    def positions(self, items: tuple[Any, ...], key_of: Any) -> _Index:
        found = self.known.get(id(items))
        if found is not None and found[0] is items:
            return found[1]
        index = _Index()
        for i, item in enumerate(items):
            index.setdefault(key_of(item), i)
        self.remember(items, index)
        return index

    def remember(self, items: tuple[Any, ...], index: _Index) -> None:
        """`index` is where the items of `items` are (a tuple made from an indexed one, an item replaced
        by one of the same key, has the same index: a turn that starts 50 steps rebuilds none)."""
        if len(self.known) >= self.size:
            del self.known[next(iter(self.known))]  # the oldest
        self.known[id(items)] = (items, index)


class _Index(dict[Any, int]):
    """Positions by key, and what the keys alone tell, worked out once per index (`undoing_hops`)."""

    __slots__ = ("_undoing",)

    def __init__(self) -> None:
        super().__init__()
        self._undoing: frozenset[int] | None = None

    def undoing_hops(self) -> frozenset[int]:
        """The hops that have a step undoing one (a rollback's): the same for every tuple of these keys."""
        if self._undoing is None:
            self._undoing = frozenset(k.hop for k in self if k.name.undoes)
        return self._undoing


_STEPS, _SERVERS = _Positions(), _Positions()


def _step_key(step: StepStatus) -> StepKey:
    return step.key


def _server_name(server: ServerStatus) -> str:
    return server.name


def step_positions(steps: tuple[StepStatus, ...]) -> _Index:
    """The position of each step in `steps`, by its key (see `_Positions`)."""
    return _STEPS.positions(steps, _step_key)


def replaced_step(steps: tuple[StepStatus, ...], position: int, step: StepStatus) -> tuple[StepStatus, ...]:
    """`steps` with the one at `position` replaced by `step`; of the same key, the index carries over."""
    new = (*steps[:position], step, *steps[position + 1:])
    if step.key == steps[position].key:
        _STEPS.remember(new, step_positions(steps))
    return new


class UpgradePlanStatus(_Status):
    phase: Phase = Phase.PENDING
    phase_since: datetime | None = Field(None, alias="phaseSince")  # when the plan entered its phase
    observed_generation: int | None = Field(None, alias="observedGeneration")
    plan_hash: str | None = Field(None, alias="planHash")
    path: tuple[HopStatus, ...] = ()
    current_hop: int = Field(0, alias="currentHop")
    current_step: str | None = Field(None, alias="currentStep")
    hop_display: str | None = Field(None, alias="hopDisplay")
    current_version: str | None = Field(None, alias="currentVersion")
    target_version: str | None = Field(None, alias="targetVersion")
    steps: tuple[StepStatus, ...] = ()
    servers: tuple[ServerStatus, ...] = ()
    databases: tuple[DatabaseStatus, ...] = ()
    cutovers: tuple[CutoverStatus, ...] | None = None  # strategy CleanInstall only
    conditions: tuple[Condition, ...] = ()
    started_at: datetime | None = Field(None, alias="startedAt")
    completed_at: datetime | None = Field(None, alias="completedAt")
    message: str | None = None
    retries: int | None = None  # the last spec.retry honoured (a Failed plan went on from its failed step)
    next_window_start: datetime | None = Field(None, alias="nextWindowStart")  # spec.maintenanceWindow

    def step(self, key: StepKey) -> StepStatus | None:
        position = step_positions(self.steps).get(key)
        return None if position is None else self.steps[position]

    def server(self, name: str) -> ServerStatus | None:
        position = _SERVERS.positions(self.servers, _server_name).get(name)
        return None if position is None else self.servers[position]

    def database(self, name: str) -> DatabaseStatus | None:
        return next((d for d in self.databases if d.name == name), None)

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    # ------------------------------------------------------------ the questions every part asks

    @property
    def started(self) -> bool:
        """The run has begun: the baseline is recorded, so the estate may have been changed."""
        baseline = self.step(BASELINE)
        return baseline is not None and baseline.state in DONE_STATES

    @property
    def rolling_back(self) -> bool:
        """The current hop is being rolled back (its rollback steps were appended)."""
        return self.current_hop in step_positions(self.steps).undoing_hops()

    def replicated_before(self, name: str) -> bool:
        """`name` had replication enabled before the plan (the baseline)."""
        recorded = self.server(name)
        return recorded is not None and recorded.replication_before is ReplicationState.ENABLED

    def in_rotation_before(self, name: str) -> bool:
        """`name` (load-balanced) was in rotation before the plan; unrecorded counts as in rotation."""
        recorded = self.server(name)
        return recorded is None or recorded.online_before is not False


def parse_status(raw: Mapping[str, Any] | None) -> UpgradePlanStatus:
    """The status as stored (an empty or absent status is a fresh `Pending` one)."""
    return UpgradePlanStatus.model_validate(dict(raw or {}))


def status_to_wire(status: UpgradePlanStatus) -> dict[str, Any]:
    """The status as the API server stores it: camelCase, RFC 3339 times, absent fields left out."""
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)
