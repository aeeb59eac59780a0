"""Each strategy's table runs every step its plans can hold: none is planned that nobody knows how to run."""

from __future__ import annotations

from typing import Any

import pytest
from core_estate_model import make_spec

from uwm_upgrade.core.enums import StepName
from uwm_upgrade.core.models import UpgradePlanSpec
from uwm_upgrade.core.planning import Hop
from uwm_upgrade.core.strategies import CLEAN_INSTALL, IN_PLACE, strategy_for

TWO_HOPS = (Hop(1, "2021.1", "2023.1"), Hop(2, "2023.1", "2025.1"))
ONE_HOP = (Hop(1, "2023.1", "2025.1"),)
MS = [{"name": "ms-1", "url": "http://ms-1:7751", "database": "mgmt-db"},
      {"name": "ms-2", "url": "http://ms-2:7751", "database": "mgmt-db"}]
PS = [{"name": "ps-1", "url": "http://ps-1:7771", "database": "pers-db", "replicationRole": "Master",
       "replacement": {"url": "http://ps-1-new:7771", "virtualHost": "pers.corp"}},
      {"name": "ps-2", "url": "http://ps-2:7771", "database": "pers-db", "replicationRole": "Subscriber",
       "replacement": {"url": "http://ps-2-new:7771", "virtualHost": "pers.corp"}}]
REPLACED_MS = [{**s, "replacement": {"url": s["url"].replace(s["name"], s["name"] + "-new")}} for s in MS]


def _specs() -> list[tuple[str, UpgradePlanSpec]]:
    clean: dict[str, Any] = {"strategy": "CleanInstall", "managementServers": REPLACED_MS, "personalizationServers": PS}
    return [
        ("in-place", make_spec()),
        ("in-place-plain", make_spec(managementServers=MS, personalizationServers=[
            {k: v for k, v in s.items() if k not in ("replicationRole", "replacement")} for s in PS],
            backup={"enabled": False})),
        ("clean-install-dns", make_spec(**clean)),
        ("clean-install-policy", make_spec(**clean, personalizationCutover="Policy")),
        ("clean-install-half", make_spec(**{**clean, "managementServers": MS})),  # mgmt-db stays in place
    ]


@pytest.mark.parametrize(("label", "spec"), _specs(), ids=[label for label, _ in _specs()])
def test_every_step_a_plan_can_hold_has_a_row_in_its_strategys_table(label: str, spec: UpgradePlanSpec) -> None:
    strategy = strategy_for(spec)
    planned = strategy.plan_steps(spec, ONE_HOP if strategy is CLEAN_INSTALL else TWO_HOPS)
    undo = strategy.rollback_steps(spec, 1) if strategy.rollback_steps else ()
    missing = {s.name for s in (*planned, *undo) if s.hop >= 1 and s.name not in strategy.table}
    assert missing == set()
    assert {s.name for s in planned if s.hop == 0} == {StepName.PREFLIGHT, StepName.PLAN, StepName.RECORD_BASELINE}


def test_every_step_name_is_run_by_some_strategy_and_only_rollbacks_undo() -> None:
    before = {StepName.PREFLIGHT, StepName.PLAN, StepName.RECORD_BASELINE}
    assert set(StepName) - before == set(IN_PLACE.table) | set(CLEAN_INSTALL.table)
    assert not any(name.undoes for name in CLEAN_INSTALL.table)  # it halts: the spec refuses Rollback
    assert CLEAN_INSTALL.rollback_steps is None and IN_PLACE.rollback_steps is not None
    restores = StepName.RESTORE_REPLICATION, StepName.VERIFY_REPLICATION  # its own rows: on the new servers
    assert all(CLEAN_INSTALL.table[n] != IN_PLACE.table[n] for n in restores)
