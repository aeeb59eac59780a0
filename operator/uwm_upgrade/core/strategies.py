"""The guide's two strategies, side by side: each its preflight, its hop's steps, its rollback, its table.

Like cloudnative-pg's `checkers := map[string]rolloutChecker{...}`, each strategy maps every step it can
plan to how it is run and how long it may take (`StepKind`), and says which steps of a hop wait for which
(`lanes`; none: in plan order); `decide()` hands every step that may run now to its row. Adding a step
means adding its row here (and, for InPlace, its place in `lanes.py`).

- InPlace (the default; the guide's "In-place Server Upgrades"): the steps of a hop, and the steps that
  roll a hop back (failurePolicy Rollback).
- CleanInstall (the guide's "New Server/Clean Install Upgrades", `clean_install.py`): InPlace's hop rows
  (a database whose servers are not replaced is upgraded in place), its own rows for the new servers and
  the clients, and its own RestoreReplication/VerifyReplication rows: replication comes back on the new
  servers that replace those that had it. It never rolls back (the spec refuses Rollback with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

from . import clean_install
from .actions import Action
from .context import Limits, StepKind, Timeout, UpgradeStrategy
from .enums import StepName, Strategy
from .lanes import in_place_lanes
from .models import UpgradePlanSpec
from .observations import Observations
from .planning import Hop, in_place_hop, rollback_steps
from .steps import (
    backup,
    health,
    install,
    reinstall_group,
    replication_caught_up,
    replication_off,
    replication_on,
    restore,
    rotation_in,
    rotation_out,
    schema,
    upgrade_group,
    verify_schema,
)

HOP: Mapping[StepName, StepKind] = {
    StepName.DISABLE_REPLICATION: StepKind(replication_off),
    StepName.TAKE_OUT_OF_ROTATION: StepKind(rotation_out),
    StepName.BACKUP_DATABASE: StepKind(backup, Timeout.BACKUP),
    StepName.INSTALL_FIRST_SERVER: StepKind(install, Timeout.INSTALL),
    StepName.UPGRADE_SCHEMA: StepKind(schema, Timeout.SCHEMA),
    StepName.VERIFY_SCHEMA: StepKind(verify_schema),
    StepName.INSTALL_SERVER: StepKind(upgrade_group, Timeout.INSTALL),
    StepName.HEALTH_CHECK: StepKind(health, Timeout.HEALTH_CHECK),
    StepName.BRING_INTO_ROTATION: StepKind(rotation_in),
    StepName.RESTORE_REPLICATION: StepKind(replication_on),
    StepName.VERIFY_REPLICATION: StepKind(replication_caught_up, Timeout.REPLICATION),
}

ROLLBACK: Mapping[StepName, StepKind] = {
    StepName.ROLLBACK_DISABLE_REPLICATION: StepKind(replication_off),
    StepName.ROLLBACK_TAKE_OUT_OF_ROTATION: StepKind(rotation_out),
    StepName.RESTORE_BACKUP: StepKind(restore, Timeout.BACKUP),
    StepName.REINSTALL_PREVIOUS: StepKind(reinstall_group, Timeout.INSTALL),
    StepName.ROLLBACK_HEALTH_CHECK: StepKind(reinstall_group, Timeout.HEALTH_CHECK),
    StepName.ROLLBACK_BRING_INTO_ROTATION: StepKind(rotation_in),
    StepName.ROLLBACK_RESTORE_REPLICATION: StepKind(replication_on),
    StepName.ROLLBACK_VERIFY_REPLICATION: StepKind(replication_caught_up, Timeout.REPLICATION),
}

CLEAN_INSTALL_OWN: Mapping[StepName, StepKind] = {
    StepName.ADD_FAILOVER_SERVER: StepKind(clean_install.add_failover),
    StepName.ADD_VIRTUAL_HOST: StepKind(clean_install.add_virtual_host),
    StepName.INSTALL_REPLACEMENT: StepKind(install, Timeout.INSTALL),
    StepName.BRING_ONLINE: StepKind(clean_install.bring_online),
    StepName.REDEPLOY_DEPLOYMENT_AGENT: StepKind(clean_install.redeploy_agent),
    StepName.DEPLOY_POLICY: StepKind(clean_install.deploy_policy),
    StepName.SWITCH_DNS_RECORD: StepKind(clean_install.switch_dns),
    StepName.MAKE_DEFAULT_WEBSITE: StepKind(clean_install.make_default_website),
    StepName.REMOVE_FAILOVER_SERVER: StepKind(clean_install.remove_failover),
    StepName.TAKE_OFFLINE: StepKind(clean_install.take_offline),
    StepName.RESTORE_REPLICATION: StepKind(partial(replication_on, on_replacements=True)),
    StepName.VERIFY_REPLICATION: StepKind(partial(replication_caught_up, on_replacements=True), Timeout.REPLICATION),
}


def _nothing_more(spec: UpgradePlanSpec, seen: Observations, path: Sequence[Hop], catalog: Sequence[str],
                  limits: Limits) -> Action | None:
    """InPlace checks nothing beyond the preflight every plan has."""
    return None


IN_PLACE = UpgradeStrategy(Strategy.IN_PLACE, _nothing_more, in_place_hop, rollback_steps, {**HOP, **ROLLBACK},
                           in_place_lanes)
# CleanInstall runs its hop in order: each replaced database is finished (its clients moved) before the next.
CLEAN_INSTALL = UpgradeStrategy(Strategy.CLEAN_INSTALL, clean_install.preflight, clean_install.hop_steps, None,
                                {**HOP, **CLEAN_INSTALL_OWN})
STRATEGIES: Mapping[Strategy, UpgradeStrategy] = {s.name: s for s in (IN_PLACE, CLEAN_INSTALL)}


def strategy_for(spec: UpgradePlanSpec) -> UpgradeStrategy:
    return STRATEGIES[spec.strategy]
