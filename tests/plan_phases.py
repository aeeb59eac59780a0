"""Plans in every phase, as the operator's core writes them, with what each platform tool should make of
them: kstatus (Flux, `helm --wait`), Flux's healthCheckExprs and Argo CD's health check. Shared by
tests/testbed/test_kstatus.py and tests/unit/test_gitops.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from uwm_upgrade.core.context import DEFAULT_LIMITS
from uwm_upgrade.core.control import past_deadline
from uwm_upgrade.core.enums import Phase, Reason
from uwm_upgrade.core.models import UpgradePlanStatus
from uwm_upgrade.core.stalls import stalled
from uwm_upgrade.core.status import observe_generation, set_phase
from uwm_upgrade.core.turn import spec_rejected

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FRESH = observe_generation(UpgradePlanStatus(), 1)
LATE = NOW + timedelta(seconds=DEFAULT_LIMITS.step_seconds + 1)  # a wait before the start past its deadline


@dataclass(frozen=True)
class Case:
    name: str
    status: Callable[[], UpgradePlanStatus]
    kstatus: str  # InProgress, Current, Failed
    argocd: str  # Progressing, Healthy, Degraded, Suspended


def phase(p: Phase, reason: str = "Because") -> Callable[[], UpgradePlanStatus]:
    return lambda: set_phase(set_phase(FRESH, Phase.PLANNING, Reason.PLANNED, "planned", NOW), p, reason, "why", NOW)


CASES = [
    Case("Planning", phase(Phase.PLANNING), "InProgress", "Progressing"),
    Case("AwaitingApproval", phase(Phase.AWAITING_APPROVAL), "InProgress", "Suspended"),
    Case("Blocked", phase(Phase.BLOCKED), "InProgress", "Progressing"),
    Case("AwaitingWindow", phase(Phase.AWAITING_WINDOW), "InProgress", "Suspended"),
    Case("Running", phase(Phase.RUNNING), "InProgress", "Progressing"),
    Case("Paused", phase(Phase.PAUSED), "InProgress", "Suspended"),
    Case("RollingBack", phase(Phase.ROLLING_BACK), "InProgress", "Progressing"),
    Case("Succeeded", phase(Phase.SUCCEEDED, Reason.SUCCEEDED), "Current", "Healthy"),
    Case("Failed", phase(Phase.FAILED, Reason.INSTALL_FAILED), "Failed", "Degraded"),
    Case("RolledBack", phase(Phase.ROLLED_BACK, Reason.ROLLED_BACK), "Failed", "Degraded"),
    Case("Pending-invalid", lambda: spec_rejected(UpgradePlanStatus(), 1, "spec.releases: too short", NOW), "Failed",
         "Degraded"),
    Case("Planning-past-its-deadline", lambda: past_deadline(
        phase(Phase.PLANNING, Reason.OBSERVATION_UNAVAILABLE)(), LATE, DEFAULT_LIMITS), "Failed", "Degraded"),
    Case("Running-stalled", lambda: stalled(phase(Phase.RUNNING)(), Reason.UNEXPECTED_ERROR, "KeyError at x.py:1", NOW),
         "Failed", "Degraded"),
]
