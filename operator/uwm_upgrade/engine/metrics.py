"""Prometheus metrics of the operator, served on their own HTTP port (`uwm-upgrade run --metrics-port`).

Names follow Prometheus conventions (`uwm_upgrade_` prefix, base units, `_total` for counters). Labels
are plan names, step names and server names: bounded by the estate, never a secret or an error text.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
STATUS_WRITES_SKIPPED = Counter("uwm_upgrade_status_writes_skipped_total",
                                "Status changes that were no-ops and not sent", registry=REGISTRY)


def set_phase(namespace: str, plan: str, phase: str, phases: list[str]) -> None:
    for p in phases:
        PLANS_BY_PHASE.labels(namespace, plan, p).set(1 if p == phase else 0)


def forget_plan(namespace: str, plan: str, phases: list[str]) -> None:
    for p in phases:
        with contextlib.suppress(KeyError):
            PLANS_BY_PHASE.remove(namespace, plan, p)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr, registry=REGISTRY)
