"""strategy CleanInstall in the core: spec rules, preflight, the plan's steps, each step's decision, and
whole runs against an in-memory estate (with crashes) in which no client ever reaches no online server."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from core_builders import T0, one

from uwm_upgrade.core.actions import (
    Action,
    AddFailoverServer,
    AddVirtualHost,
    AdvanceHop,
    BackupDatabase,
    BringOnline,
    ClosePortal,
    CompleteStep,
    ComputePlan,
    DeployPolicy,
    DisableReplication,
    Fail,
    InstallServer,
    RecordBaseline,
    RedeployDeploymentAgent,
    RestoreReplication,
    Succeed,
    SwitchDnsRecord,
    TakeOffline,
    UpgradeSchema,
    Wait,
)
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import (
    TERMINAL_PHASES,
    ConditionType,
    CutoverState,
    MigrationStatus,
    Phase,
    Reason,
    ReplicationRole,
    ReplicationState,
    ServerKind,
    ServerPhase,
    StepName,
    StepState,
)
from uwm_upgrade.core.models import SpecError, StepKey, UpgradePlanSpec, UpgradePlanStatus, parse_spec
from uwm_upgrade.core.observations import (
    BackupObservation,
    ClientsObservation,
    DatabaseObservation,
    HealthObservation,
    InstallObservation,
    Observations,
    ServerObservation,
    host_of,
    norm_url,
)
from uwm_upgrade.core.planning import plan_hash
from uwm_upgrade.core.pointers import after, cut_off
from uwm_upgrade.core.status import record_observations, start_step
from uwm_upgrade.core.transitions import apply_decision
from uwm_upgrade.core.turn import Outcome, after_effect, before_effect, next_turn_in

RELEASES = ["2021.1", "2022.1", "2023.1", "2024.1", "2025.1"]
MS1, MS1_NEW = "http://ms-1:7751", "http://ms-1-new:7751"
PS1, PS1_NEW = "http://ps-1:7771", "http://ps-1-new:7771"
VHOST = "pers.uwm.test"


def raw_spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "targetVersion": "2025.1", "releases": RELEASES, "strategy": "CleanInstall",
        "databases": [
            {"name": "mgmt-db", "kind": "Management", "connectionSecretRef": {"name": "dbs", "key": "mgmt"}},
            {"name": "pers-db", "kind": "Personalization", "connectionSecretRef": {"name": "dbs", "key": "pers"}}],
        "managementServers": [{"name": "ms-1", "url": MS1, "database": "mgmt-db", "replacement": {"url": MS1_NEW}}],
        "personalizationServers": [{"name": "ps-1", "url": PS1, "database": "pers-db",
                                    "replacement": {"url": PS1_NEW, "virtualHost": VHOST}}],
        "agentSecretRef": {"name": "agent"},
    }
    raw.update(overrides)
    return raw


def spec_of(**overrides: Any) -> UpgradePlanSpec:
    return parse_spec(raw_spec(**overrides))


# ---------------------------------------------------------------- an in-memory estate


@dataclass
class Estate:
    """Old servers at 2023.1 serving; new ones offline at the target; clients reach ps-1 through a virtual host."""

    servers: dict[str, ServerObservation] = field(default_factory=dict)
    databases: dict[str, DatabaseObservation] = field(default_factory=dict)
    clients: ClientsObservation = field(default_factory=ClientsObservation)
    urls: dict[str, str] = field(default_factory=dict)
    now: datetime = T0
    log: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, spec: UpgradePlanSpec, version: str = "2023.1", *, policy: tuple[str, ...] = (f"http://{VHOST}",),
           **server_changes: dict[str, Any]) -> Estate:
        e = cls()
        for s in spec.servers():
            e.servers[s.name] = ServerObservation(s.name, s.kind, version, ServerPhase.RUNNING, s.database,
                                                  replication_role=s.role, load_balanced=s.load_balanced,
                                                  virtual_hosts=(VHOST,) if s.name == "ps-1" else ())
            e.urls[s.name] = s.url
        for s in spec.servers():
            e.servers[s.name] = replace(e.servers[s.name], replication_enabled=s.role is not ReplicationRole.NONE)
        for s in spec.replacement_servers():
            e.servers[s.name] = ServerObservation(s.name, s.kind, spec.target_version,
                                                  ServerPhase.DATABASE_UPDATES_REQUIRED, s.database, online=False,
                                                  replication_role=s.role)
            e.urls[s.name] = s.url
        for name, changes in server_changes.items():
            e.servers[name.replace("_", "-")] = replace(e.servers[name.replace("_", "-")], **changes)
        for d in spec.databases:
            e.databases[d.name] = DatabaseObservation(d.name, version, migration=MigrationStatus.IDLE)
        e.clients = ClientsObservation(
            failover=(MS1,), agent=MS1, policy=policy, dns={VHOST: PS1},
            virtual_hosts={norm_url(PS1): (VHOST,)},
            online={norm_url(e.urls[n]): o.online for n, o in e.servers.items()})
        return e

    def observe(self) -> Observations:
        health = {n: HealthObservation(o.phase is ServerPhase.RUNNING, 1 if o.phase is ServerPhase.RUNNING else 0,
                                       o.version) for n, o in self.servers.items()}
        return Observations.of(tuple(self.servers.values()), tuple(self.databases.values()), health,
                               clients=replace(self.clients, cut_off=tuple(p.client for p in cut_off(self.clients))))

    def _phases(self, database: str) -> None:
        schema = self.databases[database].schema_version
        for n, o in self.servers.items():
            if o.database == database:
                phase = ServerPhase.RUNNING if o.version == schema else (
                    ServerPhase.DATABASE_UPDATES_REQUIRED if RELEASES.index(o.version) > RELEASES.index(schema)
                    else ServerPhase.VERSION_MISMATCH)
                self.servers[n] = replace(o, phase=phase)

    def execute(self, action: Action) -> BackupObservation | None:
        self.log.append(type(action).__name__ + " " + str(getattr(action, "step", "")))
        match action:
            case BackupDatabase(database=db, backup_id=bid):
                backup = BackupObservation(bid, True, self.now, self.databases[db].schema_version)
                self.databases[db] = replace(self.databases[db], backups=(backup,))
                return backup
            case InstallServer(server=name, version=version):
                self.servers[name] = replace(self.servers[name], version=version)
                self._phases(self.servers[name].database)
            case UpgradeSchema(database=db, version=version):  # the portal says so until CLOSE
                self.databases[db] = replace(self.databases[db], schema_version=version,
                                             migration=MigrationStatus.UPGRADE_SUCCESSFUL)
                self._phases(db)
            case ClosePortal(database=db):
                self.databases[db] = replace(self.databases[db], migration=MigrationStatus.IDLE)
            case DisableReplication(servers=servers) | RestoreReplication(servers=servers):
                for name in servers:
                    self.servers[name] = replace(self.servers[name],
                                                 replication_enabled=isinstance(action, RestoreReplication))
            case BringOnline(agent=name) | TakeOffline(agent=name):
                self.servers[name] = replace(self.servers[name], online=isinstance(action, BringOnline))
                self.clients = after(self.clients, action)
            case AddVirtualHost(agent=name, host=host):
                self.servers[name] = replace(self.servers[name], virtual_hosts=(host,))
                self.clients = after(self.clients, action)
            case _:
                self.clients = after(self.clients, action)
        return None


@dataclass
class Run:
    status: UpgradePlanStatus
    actions: list[Action]
    reached_no_server: list[str]


def drive(spec: UpgradePlanSpec, estate: Estate, *, crash: float = 0.0, seed: int = 0, cycles: int = 400) -> Run:
    """The engine's loop (core/turn.py); with `crash`, that share of the turns' effects is done but the
    write of their outcomes is lost (the status recording the decision is written before any effect)."""
    rng = random.Random(seed)
    stored, actions, lost = UpgradePlanStatus(), [], []
    for _ in range(cycles):
        if stored.phase in TERMINAL_PHASES:
            break
        turn = before_effect(spec, stored, estate.observe(), estate.now)
        actions.extend(turn.actions)
        outcomes = []
        for effect in turn.effects:
            outcomes.append(Outcome(effect, estate.execute(effect)))
            lost += [f"after {type(effect).__name__}: {p.client}: {p.cut_off}" for p in cut_off(estate.clients)]
        if outcomes and rng.random() < crash:  # the process died after the effects, before their outcomes' write
            stored = turn.status
            estate.now += timedelta(seconds=1)
            continue
        stored = after_effect(turn.status, outcomes, estate.now)
        wait = next_turn_in(turn, outcomes)
        estate.now += timedelta(seconds=max(1.0, min(wait if wait is not None else 30.0, 10.0)))
    return Run(stored, actions, lost)


def names(status: UpgradePlanStatus, hop: int = 1) -> list[tuple[str, str | None]]:
    return [(s.name.value, s.server or s.database) for s in status.steps if s.hop == hop]


# ---------------------------------------------------------------- the spec


@pytest.mark.parametrize(("overrides", "words"), [
    ({"strategy": "InPlace"}, "spec.managementServers[0].replacement is only used with spec.strategy CleanInstall"),
    ({"failurePolicy": "Rollback"}, "spec.failurePolicy Rollback is not supported with spec.strategy CleanInstall"),
    ({"personalizationServers": [{"name": "ps-1", "url": PS1, "database": "pers-db",
                                  "replacement": {"url": PS1_NEW}}]},
     "spec.personalizationServers[0].replacement.virtualHost is required"),
    ({"managementServers": [{"name": "ms-1", "url": MS1, "database": "mgmt-db", "replacement": {"url": MS1_NEW}},
                            {"name": "ms-2", "url": "http://ms-2:7751", "database": "mgmt-db"}]},
     "the servers of spec.databases mgmt-db are either all replaced (clean install) or all upgraded in place"),
    ({"managementServers": [{"name": "ms-1", "url": MS1, "database": "mgmt-db", "loadBalanced": True,
                             "replacement": {"url": MS1_NEW}}]}, "a load-balanced server cannot be replaced"),
    ({"managementServers": [{"name": "ms-1", "url": MS1, "database": "mgmt-db",
                             "replacement": {"url": PS1, "name": "ps-1"}}]},
     "replacement.name ps-1 is not unique"),
], ids=["not-clean-install", "rollback", "no-virtual-host", "half-a-database", "load-balanced", "name-taken"])
def test_spec_rules_name_the_field(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_of(**overrides)
    assert words in str(info.value)


def test_replacements_are_named_and_change_the_plan_hash() -> None:
    spec = spec_of()
    (ms, ps) = spec.replacements()
    assert (ms.old.name, ms.new.name, ms.new.url, ms.method) == ("ms-1", "ms-1-new", MS1_NEW, "FailoverListAndAgent")
    assert (ps.new.name, ps.method, ps.virtual_host) == ("ps-1-new", "VirtualHostDns", VHOST)
    assert spec.server("ps-1-new").kind is ServerKind.PERSONALIZATION
    policy = spec_of(personalizationCutover="Policy")
    assert policy.replacements()[1].method == "Policy"
    assert len({plan_hash(s, ()) for s in (spec, policy, spec_of(managementServers=[
        {"name": "ms-1", "url": MS1, "database": "mgmt-db", "replacement": {"url": "http://elsewhere:7751"}}]))}) == 3


# ---------------------------------------------------------------- preflight and plan


def test_the_plan_moves_clients_only_once_the_new_servers_serve_and_removes_old_servers_last() -> None:
    spec = spec_of()
    plan = one(decide(spec, UpgradePlanStatus(), Estate.of(spec).observe(), T0))
    assert isinstance(plan, ComputePlan), plan
    assert [(h.from_version, h.to_version) for h in plan.path] == [("2023.1", "2025.1")]
    assert [(s.name.value, s.server or s.database, s.state.value) for s in plan.steps if s.hop == 1] == [
        ("DisableReplication", None, "Skipped"), ("TakeOutOfRotation", None, "Skipped"),
        ("AddFailoverServer", "ms-1-new", "Pending"), ("AddVirtualHost", "ps-1-new", "Pending"),
        ("BackupDatabase", "mgmt-db", "Pending"), ("InstallReplacement", "ms-1-new", "Pending"),
        ("UpgradeSchema", "ms-1-new", "Pending"), ("VerifySchema", "mgmt-db", "Pending"),
        ("HealthCheck", "ms-1-new", "Pending"), ("BringOnline", "ms-1-new", "Pending"),
        ("RedeployDeploymentAgent", "mgmt-db", "Pending"), ("RemoveFailoverServer", "ms-1", "Pending"),
        ("TakeOffline", "ms-1", "Pending"),
        ("BackupDatabase", "pers-db", "Pending"), ("InstallReplacement", "ps-1-new", "Pending"),
        ("UpgradeSchema", "ps-1-new", "Pending"), ("VerifySchema", "pers-db", "Pending"),
        ("HealthCheck", "ps-1-new", "Pending"), ("BringOnline", "ps-1-new", "Pending"),
        ("SwitchDnsRecord", "ps-1-new", "Pending"), ("TakeOffline", "ps-1", "Pending"),
        ("BringIntoRotation", None, "Skipped"), ("RestoreReplication", None, "Skipped"),
        ("VerifyReplication", None, "Skipped")]
    policy = spec_of(personalizationCutover="Policy")
    by_policy = one(decide(policy, UpgradePlanStatus(), Estate.of(policy, policy=(PS1,)).observe(), T0))
    assert isinstance(by_policy, ComputePlan)
    hop = [(s.name.value, s.server or s.database) for s in by_policy.steps if s.hop == 1]
    at = hop.index(("DeployPolicy", "pers-db"))
    assert hop[at - 1:at + 2] == [("BringOnline", "ps-1-new"), ("DeployPolicy", "pers-db"), ("TakeOffline", "ps-1")]
    assert ("AddVirtualHost", "ps-1-new") not in hop and ("SwitchDnsRecord", "ps-1-new") not in hop


def test_a_personalization_server_in_a_shared_default_website_root_is_not_upgraded_in_place() -> None:
    in_place = parse_spec({k: v for k, v in raw_spec(strategy="InPlace", managementServers=[
        {"name": "ms-1", "url": MS1, "database": "mgmt-db"}], personalizationServers=[
        {"name": "ps-1", "url": PS1, "database": "pers-db"}]).items()})
    seen = Estate.of(in_place, ps_1={"default_website": True, "other_apps_in_root": ("IntranetPortal",)}).observe()
    action = one(decide(in_place, UpgradePlanStatus(), seen, T0))
    assert isinstance(action, Fail) and action.reason is Reason.IN_PLACE_FORBIDDEN, action
    assert "IntranetPortal" in action.message and "clean-install it instead" in action.message
    status = apply_decision(UpgradePlanStatus(), action, T0)
    failed = status.condition(ConditionType.FAILED)
    assert status.phase is Phase.FAILED and failed is not None and failed.reason == "InPlaceUpgradeForbidden"
    assert "the guide forbids upgrading it in place" in (failed.message or "")
    # replaced instead, it is allowed; a new server there would be refused the same way
    spec = spec_of()
    ok = Estate.of(spec, ps_1={"default_website": True, "other_apps_in_root": ("IntranetPortal",)}).observe()
    assert isinstance(one(decide(spec, UpgradePlanStatus(), ok, T0)), ComputePlan)
    bad = Estate.of(spec, ps_1_new={"default_website": True, "other_apps_in_root": ("IntranetPortal",)}).observe()
    refused = one(decide(spec, UpgradePlanStatus(), bad, T0))
    assert isinstance(refused, Fail) and "ps-1-new, the new server replacing ps-1" in refused.message


@pytest.mark.parametrize(("change", "reason", "words"), [
    ({"servers": {"ms-1-new": None}}, Reason.OBSERVATION_UNAVAILABLE, "cannot observe the new servers ms-1-new"),
    ({"clients": None}, Reason.OBSERVATION_UNAVAILABLE, "client configuration"),
    ({"version": "2021.1"}, Reason.PLANNING_FAILED, "moves the estate in one hop"),
    ({"ms_1_new": {"online": True}}, Reason.PREFLIGHT_FAILED, "ms-1-new (replacing ms-1, http://ms-1-new:7751) is"
                                                              " online already"),
    ({"ps_1_new": {"kind": ServerKind.MANAGEMENT}}, Reason.PREFLIGHT_FAILED, "must have kind Personalization"),
    ({"policy": (PS1,)}, Reason.PREFLIGHT_FAILED, "use personalizationCutover Policy"),
], ids=["new-server-unobserved", "clients-unobserved", "two-hops", "new-server-online", "wrong-kind", "no-vhost"])
def test_preflight_says_why_a_clean_install_cannot_start(change: dict[str, Any], reason: Reason, words: str) -> None:
    spec = spec_of()
    kwargs = {k: v for k, v in change.items() if k in ("version", "policy") or k.startswith(("ms_", "ps_"))}
    estate = Estate.of(spec, **kwargs)
    seen = estate.observe()
    if "servers" in change:
        seen = replace(seen, servers={n: o for n, o in seen.servers.items() if n not in change["servers"]})
    if "clients" in change:
        seen = replace(seen, clients=None)
    action = one(decide(spec, UpgradePlanStatus(), seen, T0))
    assert isinstance(action, (Fail, Wait)) and action.reason is reason, action
    assert words in action.message


def test_a_policy_url_with_user_info_still_names_its_virtual_host() -> None:
    """One host parser for both questions: where the clients point (`pointers`) and whether they use the
    virtual host (preflight); `http://agent@pers.uwm.test` is the host pers.uwm.test for both."""
    assert host_of("HTTPS://Agent:pw@Pers.UWM.test:8443/path") == "pers.uwm.test"
    spec = spec_of()
    estate = Estate.of(spec, policy=(f"http://agent@{VHOST}",))
    assert cut_off(estate.clients) == []  # the clients reach ps-1 through the virtual host
    assert isinstance(one(decide(spec, UpgradePlanStatus(), estate.observe(), T0)), ComputePlan)


def test_policy_cutover_needs_the_old_url_in_the_policy() -> None:
    spec = spec_of(personalizationCutover="Policy")
    refused = one(decide(spec, UpgradePlanStatus(), Estate.of(spec).observe(), T0))
    assert isinstance(refused, Fail) and "does not list ps-1" in refused.message
    assert isinstance(one(decide(spec, UpgradePlanStatus(), Estate.of(spec, policy=(PS1,)).observe(), T0)), ComputePlan)


# ---------------------------------------------------------------- single decisions


def _at(spec: UpgradePlanSpec, estate: Estate, step: StepKey, start: Estate | None = None) -> UpgradePlanStatus:
    """The plan begun (in `start`, by default a fresh estate), every step before `step` marked done (the
    estate is whatever the test made it)."""
    before = start or Estate.of(spec, policy=estate.clients.policy)  # as it was when the plan started
    before.clients = replace(before.clients, online={**estate.clients.online, **before.clients.online})
    status, seen = UpgradePlanStatus(), before.observe()
    for expected in (ComputePlan, RecordBaseline, AdvanceHop):
        status = record_observations(status, spec, seen, T0)
        action = one(decide(spec, status, seen, T0))
        assert isinstance(action, expected), action
        status = apply_decision(status, action, T0)
    steps = []
    reached = False
    for s in status.steps:
        reached = reached or s.key == step
        done = s.hop == 1 and not reached and s.state is StepState.PENDING
        steps.append(s.model_copy(update={"state": StepState.SUCCEEDED}) if done else s)
    assert reached, step
    return record_observations(status.model_copy(update={"steps": tuple(steps)}), spec, estate.observe(), T0)


def test_a_new_server_that_installs_has_the_install_timeout_not_the_generic_one() -> None:
    """InstallReplacement is an install: it gets Limits.install_seconds (the dispatch table and the
    timeout list used to disagree, and it failed after the 600 s of any other step)."""
    spec = spec_of()
    estate = Estate.of(spec)
    step = StepKey(StepName.INSTALL_REPLACEMENT, 1, "ms-1-new", "mgmt-db")
    estate.servers["ms-1-new"] = replace(estate.servers["ms-1-new"], version="2024.1", phase=ServerPhase.INSTALLING,
                                         install=InstallObservation("2025.1"))
    status = start_step(_at(spec, estate, step), step, T0)
    waiting = one(decide(spec, status, estate.observe(), T0 + timedelta(seconds=700)))
    assert isinstance(waiting, Wait) and waiting.reason is Reason.INSTALLING, waiting
    late = one(decide(spec, status, estate.observe(), T0 + timedelta(seconds=1801)))
    assert isinstance(late, Fail) and late.reason is Reason.TIMEOUT and "within 1800s" in late.message, late


def test_the_new_management_server_comes_online_only_once_it_is_in_the_failover_list() -> None:
    spec = spec_of()
    estate = Estate.of(spec, version="2025.1")
    estate.servers["ms-1-new"] = replace(estate.servers["ms-1-new"], phase=ServerPhase.RUNNING)
    step = StepKey(StepName.BRING_ONLINE, 1, "ms-1-new")
    action = one(decide(spec, _at(spec, estate, step), estate.observe(), T0))
    assert isinstance(action, Fail) and action.reason is Reason.GUIDE_RULE, action
    assert "not-in-failover-list" in action.message
    estate.clients = after(estate.clients, AddFailoverServer(step, "ms-1-new", MS1_NEW, MS1_NEW))
    assert one(decide(spec, _at(spec, estate, step), estate.observe(), T0)) == BringOnline(step, "ms-1-new", MS1_NEW)


def test_an_old_server_still_reached_by_clients_is_never_taken_offline() -> None:
    spec = spec_of()
    estate = Estate.of(spec, version="2025.1")
    step = StepKey(StepName.TAKE_OFFLINE, 1, "ms-1")
    action = one(decide(spec, _at(spec, estate, step), estate.observe(), T0))  # the Deployment Agent still uses ms-1
    assert isinstance(action, Fail) and "clients-cut-off" in action.message and "Deployment Agent" in action.message
    assert "ms-1-new (new, replacing ms-1)" in action.message and "clients: Deployment Agent" in action.message


def test_the_deployment_agent_is_redeployed_with_the_new_url_and_then_recorded() -> None:
    spec = spec_of()
    estate = Estate.of(spec, version="2025.1", ms_1_new={"online": True, "phase": ServerPhase.RUNNING})
    estate.clients = replace(estate.clients, failover=(MS1, MS1_NEW),
                             online={**estate.clients.online, norm_url(MS1_NEW): True})
    step = StepKey(StepName.REDEPLOY_DEPLOYMENT_AGENT, 1, database="mgmt-db")
    action = one(decide(spec, _at(spec, estate, step), estate.observe(), T0))
    assert action == RedeployDeploymentAgent(step, "ms-1-new", MS1_NEW, MS1, MS1_NEW)
    estate.clients = after(estate.clients, action)
    done = one(decide(spec, _at(spec, estate, step), estate.observe(), T0))
    assert isinstance(done, CompleteStep) and "instead of ms-1" in done.message


def test_dns_is_switched_only_to_a_new_server_answering_for_the_virtual_host() -> None:
    spec = spec_of()
    estate = Estate.of(spec, version="2025.1", ps_1_new={"online": True, "phase": ServerPhase.RUNNING})
    estate.clients = replace(estate.clients, online={**estate.clients.online, norm_url(PS1_NEW): True})
    step = StepKey(StepName.SWITCH_DNS_RECORD, 1, "ps-1-new")
    action = one(decide(spec, _at(spec, estate, step), estate.observe(), T0))
    assert isinstance(action, Fail) and "no-virtual-host" in action.message, action
    estate.clients = after(estate.clients, AddVirtualHost(step, "ps-1-new", PS1_NEW, VHOST))
    assert one(decide(spec, _at(spec, estate, step), estate.observe(), T0)) == \
        SwitchDnsRecord(step, "ps-1-new", PS1_NEW, VHOST, PS1, PS1_NEW)


def test_a_new_policy_replaces_exactly_the_old_urls() -> None:
    spec = spec_of(personalizationCutover="Policy")
    other = "http://ps-9:7771"
    estate = Estate.of(spec, version="2025.1", policy=(other, PS1),
                       ps_1_new={"online": True, "phase": ServerPhase.RUNNING})
    estate.clients = replace(estate.clients, online={**estate.clients.online, norm_url(PS1_NEW): True,
                                                     norm_url(other): True})
    step = StepKey(StepName.DEPLOY_POLICY, 1, database="pers-db")
    action = one(decide(spec, _at(spec, estate, step), estate.observe(), T0))
    assert action == DeployPolicy(step, "ps-1-new", PS1_NEW, (other, PS1), (other, PS1_NEW))


# ---------------------------------------------------------------- whole runs


@pytest.mark.parametrize("cutover", ["VirtualHostDns", "Policy"])
def test_a_whole_clean_install_never_leaves_a_client_without_a_server(cutover: str) -> None:
    spec = spec_of(personalizationCutover=cutover)
    estate = Estate.of(spec, policy=(f"http://{VHOST}",) if cutover == "VirtualHostDns" else (PS1,))
    run = drive(spec, estate)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert run.reached_no_server == []
    assert all(s.state in (StepState.SUCCEEDED, StepState.SKIPPED) for s in run.status.steps)
    assert estate.clients.agent == MS1_NEW and estate.clients.failover == (MS1_NEW,)
    if cutover == "VirtualHostDns":
        assert estate.clients.dns[VHOST] == PS1_NEW and estate.clients.policy == (f"http://{VHOST}",)
    else:
        assert estate.clients.policy == (PS1_NEW,) and estate.clients.dns[VHOST] == PS1
    assert not estate.servers["ms-1"].online and not estate.servers["ps-1"].online
    assert run.status.current_version == "2025.1"
    moves = {c.server: c for c in run.status.cutovers or ()}
    assert {n: c.state for n, c in moves.items()} == dict.fromkeys(("ms-1", "ps-1"), CutoverState.OLD_SERVER_OFFLINE)
    for c in moves.values():
        assert c.new_server_online_at and c.clients_moved_at and c.old_server_offline_at
        assert c.new_server_online_at <= c.clients_moved_at <= c.old_server_offline_at
    order = [line.split()[0] for line in estate.log]
    assert order.index("AddFailoverServer") < order.index("BringOnline") < order.index("RedeployDeploymentAgent") \
        < order.index("RemoveFailoverServer") < order.index("TakeOffline")
    assert sum(isinstance(a, UpgradeSchema) for a in run.actions) == 2
    assert {s.name for s in run.status.servers} == {"ms-1", "ms-1-new", "ps-1", "ps-1-new"}


@pytest.mark.parametrize("seed", range(6))
def test_crashes_anywhere_resume_without_doing_anything_twice(seed: int) -> None:
    spec = spec_of()
    estate = Estate.of(spec)
    run = drive(spec, estate, crash=0.35, seed=seed)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert run.reached_no_server == []
    schema = [line for line in estate.log if line.startswith("UpgradeSchema")]
    assert len(schema) == len(set(schema)) == 2  # each database upgraded once, however often the process died
    assert estate.clients.agent == MS1_NEW and estate.clients.dns[VHOST] == PS1_NEW


def test_a_failure_halfway_stops_with_old_and_new_servers_described() -> None:
    spec = spec_of()
    estate = Estate.of(spec)
    real = estate.execute

    def failing(action: Action) -> BackupObservation | None:
        result = real(action)
        if isinstance(action, UpgradeSchema) and action.database == "pers-db":  # ps-1-new then never confirms
            estate.servers["ps-1-new"] = replace(estate.servers["ps-1-new"], phase=ServerPhase.FAILED)
            estate.servers["ps-1-new"] = replace(estate.servers["ps-1-new"], install=replace(
                estate.servers["ps-1-new"].install, error="injected: the new server failed to start"))
        return result
    estate.execute = failing  # type: ignore[method-assign]
    run = drive(spec, estate)
    assert run.status.phase is Phase.FAILED and run.reached_no_server == []
    failed = next(s for s in run.status.steps if s.state is StepState.FAILED)
    assert (failed.name, failed.server) == (StepName.HEALTH_CHECK, "ps-1-new")
    message = run.status.message or ""
    for words in ("ps-1 2023.1", "offline", "ps-1-new (new, replacing ps-1)", "clients: Deployment Agent",
                  f"DNS {VHOST} -> {PS1}"):
        assert words in message, (words, message)
    assert estate.servers["ps-1"].online and not estate.servers["ps-1-new"].online
    assert estate.clients.dns[VHOST] == PS1  # clients still reach the old server
    moves = {c.server: c.state for c in run.status.cutovers or ()}  # Management wholly moved, Personalization not
    assert moves == {"ms-1": CutoverState.OLD_SERVER_OFFLINE, "ps-1": CutoverState.PENDING}, moves
    assert estate.clients.agent == MS1_NEW and not estate.servers["ms-1"].online
    assert not any(isinstance(a, Succeed) for a in run.actions)


def test_replication_is_restored_on_the_new_servers_as_it_was_on_the_old_ones() -> None:
    ps = [{"name": "ps-1", "url": PS1, "database": "pers-db", "replicationRole": "Master",
           "replacement": {"url": PS1_NEW}},
          {"name": "ps-2", "url": "http://ps-2:7771", "database": "pers-db", "replicationRole": "Subscriber",
           "replacement": {"url": "http://ps-2-new:7771"}}]
    spec = spec_of(personalizationCutover="Policy", personalizationServers=ps)
    wrong = Estate.of(spec, policy=(PS1, "http://ps-2:7771"), ps_2_new={"replication_role": ReplicationRole.MASTER})
    refused = one(decide(spec, UpgradePlanStatus(), wrong.observe(), T0))
    assert isinstance(refused, Fail) and "must have replicationRole Subscriber" in refused.message
    estate = Estate.of(spec, policy=(PS1, "http://ps-2:7771"))
    run = drive(spec, estate)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert run.reached_no_server == []
    enabled = {n: o.replication_enabled for n, o in estate.servers.items() if o.kind is ServerKind.PERSONALIZATION}
    assert enabled == {"ps-1": False, "ps-2": False, "ps-1-new": True, "ps-2-new": True}
    restore = next(a for a in run.actions if isinstance(a, RestoreReplication))
    assert restore.servers == ("ps-1-new", "ps-2-new")  # the Master first
    order = [line.split()[0] for line in estate.log]
    assert order.index("DisableReplication") < order.index("UpgradeSchema")
    assert len(order) - 1 - order[::-1].index("TakeOffline") < order.index("RestoreReplication")
    assert estate.clients.policy == (PS1_NEW, "http://ps-2-new:7771")
    servers = {s.name: s for s in run.status.servers}
    assert servers["ps-1-new"].replication is ReplicationState.ENABLED
    condition = run.status.condition(ConditionType.REPLICATION_DISABLED)
    assert condition is not None and condition.status == "False", condition


def test_deleting_a_clean_install_plan_leaves_retired_servers_alone() -> None:
    from uwm_upgrade.core.teardown import restorations

    ps = [{"name": "ps-1", "url": PS1, "database": "pers-db", "replicationRole": "Master",
           "replacement": {"url": PS1_NEW}}]
    spec = spec_of(personalizationCutover="Policy", personalizationServers=ps)
    estate = Estate.of(spec, policy=(PS1,), ps_1={"replication_enabled": False})
    status = _at(spec, estate, StepKey(StepName.TAKE_OFFLINE, 1, "ps-1"))
    assert restorations(spec, status, estate.observe())[1] == ["ps-1"]  # still serving: put back as it was
    estate.servers["ps-1"] = replace(estate.servers["ps-1"], online=False)
    _, replication, notes = restorations(spec, status, estate.observe())
    assert replication == [] and notes == ["ps-1: retired (offline), replaced by ps-1-new"]
