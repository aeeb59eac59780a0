"""Prometheus metrics of the operator, served on their own HTTP port (`uwm-upgrade run --metrics-port`).

Names follow Prometheus conventions (`uwm_upgrade_` prefix, base units, `_total` for counters, `_timestamp_
seconds` for Unix times). Labels are plan names, step names and server names: bounded by the estate, never
a secret or an error text. Besides the counters, each plan's progress is shown as gauges read from its
status after every write (`show_plan`): its hop, its steps by state, since when it is in its phase, its
conditions, its servers out of rotation and since when, since when replication is off, the retries
honoured. A deleted plan's series all go (`forget_plan`). The chart's alerts and dashboard read these.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..core.enums import TERMINAL_PHASES, ConditionStatus, ConditionType, Phase
from ..core.hop_summary import step_counts
from ..core.models import UpgradePlanStatus

REGISTRY = CollectorRegistry(auto_describe=True)

PLANS_BY_PHASE = Gauge("uwm_upgrade_plans", "UpgradePlans by phase, as last seen by this operator",
                       ["namespace", "plan", "phase"], registry=REGISTRY)
STEP_SECONDS = Histogram("uwm_upgrade_step_duration_seconds", "How long each step took", ["step"],
                         buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
STEPS = Counter("uwm_upgrade_steps_total", "Steps finished, by outcome", ["step", "outcome"], registry=REGISTRY)
HEALTH_CHECK_FAILURES = Counter("uwm_upgrade_health_check_failures_total",
                                "Status-page polls that did not confirm", ["server"], registry=REGISTRY)
RETRIES = Counter("uwm_upgrade_retries_total", "Transient errors retried, by step", ["step"], registry=REGISTRY)
STATUS_WRITES = Counter("uwm_upgrade_status_writes_total", "Status patches sent to the API server",
                        registry=REGISTRY)
LOOP_ERRORS = Counter("uwm_upgrade_loop_errors_total", "Turns of a plan's loop that failed and were retried, "
                      "by the error's type", ["error"], registry=REGISTRY)
STATUS_WRITES_SKIPPED = Counter("uwm_upgrade_status_writes_skipped_total",
                                "Status changes that were no-ops and not sent", registry=REGISTRY)
STATUS_WRITES_HELD = Counter("uwm_upgrade_status_writes_held_total", "Status changes of wording only, held back"
                             " to be sent with the next write", registry=REGISTRY)
STATUS_WRITES_DEFERRED = Counter("uwm_upgrade_status_writes_deferred_total", "Records of turns without effects left"
                                 " to the next turn, which a change of the estate started at once", registry=REGISTRY)
EVENTS_DROPPED = Counter("uwm_upgrade_events_dropped_total", "Events dropped: more were waiting to be posted than"
                         " a plan's queue holds", registry=REGISTRY)


PLAN = ["namespace", "plan"]


def _release() -> str:
    try:
        return metadata.version("uwm-upgrade-operator")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO = Gauge("uwm_upgrade_build_info", "The operator's release and Python (always 1)",
                   ["version", "python_version"], registry=REGISTRY)
BUILD_INFO.labels(_release(), platform.python_version()).set(1)
PLAN_HOP = Gauge("uwm_upgrade_plan_current_hop", "The plan's hop in progress (0 before the first)", PLAN,
                 registry=REGISTRY)
PLAN_HOPS = Gauge("uwm_upgrade_plan_hops", "Hops in the plan's path", PLAN, registry=REGISTRY)
PLAN_STEPS = Gauge("uwm_upgrade_plan_steps", "The plan's steps, by state", [*PLAN, "state"], registry=REGISTRY)
PHASE_SINCE = Gauge("uwm_upgrade_plan_phase_since_timestamp_seconds", "When the plan entered its phase (Unix time)",
                    [*PLAN, "phase"], registry=REGISTRY)
CONDITIONS = Gauge("uwm_upgrade_plan_condition", "The plan's conditions: 1 when True, else 0",
                   [*PLAN, "condition"], registry=REGISTRY)
PLAN_RETRIES = Gauge("uwm_upgrade_plan_retries", "Retries of the plan (spec.retry) honoured", PLAN, registry=REGISTRY)
OUT_OF_ROTATION = Gauge("uwm_upgrade_servers_out_of_rotation",
                        "The plan's servers out of rotation or not serving, while it is under way or halted", PLAN,
                        registry=REGISTRY)
OUT_OF_ROTATION_SINCE = Gauge("uwm_upgrade_server_out_of_rotation_since_timestamp_seconds",
                              "Since when a server is out of rotation or not serving (Unix time)", [*PLAN, "server"],
                              registry=REGISTRY)
REPLICATION_DISABLED_SINCE = Gauge("uwm_upgrade_replication_disabled_since_timestamp_seconds",
                                   "Since when the plan has replication disabled (Unix time)", PLAN,
                                   registry=REGISTRY)
_PER_PLAN: tuple[Gauge, ...] = (PLAN_HOP, PLAN_HOPS, PLAN_STEPS, PHASE_SINCE, CONDITIONS, PLAN_RETRIES,
                                OUT_OF_ROTATION, OUT_OF_ROTATION_SINCE, REPLICATION_DISABLED_SINCE)
_shown: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}


def set_phase(namespace: str, plan: str, phase: str, phases: list[str]) -> None:
    for p in phases:
        PLANS_BY_PHASE.labels(namespace, plan, p).set(1 if p == phase else 0)


def _unix(at: datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


def _samples(status: UpgradePlanStatus) -> Iterable[tuple[Gauge, tuple[str, ...], float]]:
    """Every per-plan sample the status means, with its extra labels (beyond namespace and plan)."""
    yield PLAN_HOP, (), float(status.current_hop)
    yield PLAN_HOPS, (), float(len(status.path))
    for state, count in step_counts(status).items():  # a finished hop's summarised steps included
        yield PLAN_STEPS, (state.value,), float(count)
    since = _unix(status.phase_since)
    if since is not None:
        yield PHASE_SINCE, (status.phase.value,), since
    for condition in status.conditions:
        if isinstance(condition.type, ConditionType):
            yield CONDITIONS, (condition.type.value,), 1.0 if condition.status is ConditionStatus.TRUE else 0.0
    yield PLAN_RETRIES, (), float(status.retries or 0)
    if status.phase in TERMINAL_PHASES and status.phase is not Phase.FAILED:
        return  # over as planned: what is offline now is meant to be (replaced servers, a baseline accepted)
    offline = [(s.name, _unix(s.offline_since)) for s in status.servers if s.online is False]
    yield OUT_OF_ROTATION, (), float(len(offline))
    for name, at in offline:
        if at is not None:
            yield OUT_OF_ROTATION_SINCE, (name,), at
    disabled = status.condition(ConditionType.REPLICATION_DISABLED)
    at = _unix(disabled.last_transition_time) if disabled and disabled.status is ConditionStatus.TRUE else None
    if at is not None:
        yield REPLICATION_DISABLED_SINCE, (), at


def show_plan(namespace: str, plan: str, status: UpgradePlanStatus) -> None:
    """The plan's progress gauges as its status says; series it no longer has are removed."""
    wanted: set[tuple[Gauge, tuple[str, ...]]] = set()
    for gauge, extra, value in _samples(status):
        labels = (namespace, plan, *extra)
        gauge.labels(*labels).set(value)
        wanted.add((gauge, labels))
    for gauge, labels in _shown.get((namespace, plan), set()) - wanted:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    _shown[(namespace, plan)] = wanted


def forget_plan(namespace: str, plan: str, phases: list[str]) -> None:
    """Every series of a deleted plan goes."""
    for p in phases:
        with contextlib.suppress(KeyError):
            PLANS_BY_PHASE.remove(namespace, plan, p)
    for gauge, labels in _shown.pop((namespace, plan), set()):
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr, registry=REGISTRY)
