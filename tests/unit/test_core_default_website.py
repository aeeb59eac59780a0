"""strategy CleanInstall, cut-over DefaultWebsite (the guide's "remove the host header and make either the
Management Server or the Personalization Server the default website") and a new license deployed with the
Deployment Agent: spec rules, preflight refusals, the plan's steps, the guide's rules, whole runs (with
crashes) in which no client ever reaches no online server, the status and the Events."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from core_builders import T0, one
from test_core_clean_install import MS1, MS1_NEW, PS1, PS1_NEW, VHOST, Estate, _at, drive, raw_spec

from uwm_upgrade.core.actions import (
    Action,
    BringOnline,
    ComputePlan,
    Fail,
    MakeDefaultWebsite,
    RedeployDeploymentAgent,
    TakeOffline,
    Wait,
)
from uwm_upgrade.core.decide import decide
from uwm_upgrade.core.enums import CutoverState, EventReason, Phase, Reason, ServerPhase, StepName
from uwm_upgrade.core.guide import violations
from uwm_upgrade.core.models import SpecError, StepKey, UpgradePlanSpec, UpgradePlanStatus, parse_spec
from uwm_upgrade.core.observations import ClientsObservation, Observations, norm_url
from uwm_upgrade.core.pointers import after, cut_off, pointers
from uwm_upgrade.core.turn import events_between

MGMT, PERS = "mgmt.uwm.test", "pers.uwm.test"
FINGERPRINT = "sha256:0123456789abcdef"
LICENSE = {"name": "uwm-license"}


def spec_of(license_: dict[str, str] | None = LICENSE, **overrides: Any) -> UpgradePlanSpec:
    ms_new: dict[str, Any] = {"url": MS1_NEW, "defaultWebsiteHost": MGMT, **({"license": license_} if license_ else {})}
    return parse_spec(raw_spec(**{
        "managementCutover": "DefaultWebsite", "personalizationCutover": "DefaultWebsite",
        "managementServers": [{"name": "ms-1", "url": MS1, "database": "mgmt-db", "replacement": ms_new}],
        "personalizationServers": [{"name": "ps-1", "url": PS1, "database": "pers-db",
                                    "replacement": {"url": PS1_NEW, "defaultWebsiteHost": PERS}}],
        **overrides}))


@dataclass
class Licensed(Estate):
    """The in-memory estate of test_core_clean_install, whose license Secrets read as FINGERPRINT."""

    licenses: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: UpgradePlanSpec, version: str = "2023.1", *, policy: tuple[str, ...] = (f"http://{PERS}",),
           **server_changes: dict[str, Any]) -> Licensed:
        base = Estate.of(spec, version, policy=policy, **server_changes)
        return cls(base.servers, base.databases, base.clients, base.urls, base.now, base.log,
                   {r.new.name: FINGERPRINT for r in spec.replacements() if r.license})

    def observe(self) -> Observations:
        return replace(super().observe(), licenses=self.licenses)


class SideBySide(Licensed):
    """Each old server's website is the default website of the host its clients use; each new one sits on
    the same host with a host header."""

    @classmethod
    def of(cls, spec: UpgradePlanSpec, version: str = "2023.1", *, policy: tuple[str, ...] = (f"http://{PERS}",),
           **server_changes: dict[str, Any]) -> SideBySide:
        e = super().of(spec, version, policy=policy, **server_changes)
        e.clients = replace(e.clients, agent=f"http://{MGMT}", dns={}, virtual_hosts={},
                            default_websites={MGMT: MS1, PERS: PS1},
                            website_hosts={norm_url(MS1): MGMT, norm_url(MS1_NEW): MGMT, norm_url(PS1): PERS,
                                           norm_url(PS1_NEW): PERS})
        assert isinstance(e, SideBySide)
        return e


def _plan(spec: UpgradePlanSpec, estate: Estate) -> Action:
    return one(decide(spec, UpgradePlanStatus(), estate.observe(), T0))


# ---------------------------------------------------------------- the spec


@pytest.mark.parametrize(("overrides", "words"), [
    ({"managementServers": [{"name": "ms-1", "url": MS1, "database": "mgmt-db", "replacement": {"url": MS1_NEW}}]},
     "spec.managementServers[0].replacement.defaultWebsiteHost is required with spec.managementCutover"
     " DefaultWebsite"),
    ({"personalizationServers": [{"name": "ps-1", "url": PS1, "database": "pers-db",
                                  "replacement": {"url": PS1_NEW}}]},
     "spec.personalizationServers[0].replacement.defaultWebsiteHost is required with spec.personalizationCutover"),
    ({"personalizationServers": [{"name": "ps-1", "url": PS1, "database": "pers-db",
                                  "replacement": {"url": PS1_NEW, "defaultWebsiteHost": MGMT}}]},
     f"spec.personalizationServers[0].replacement.defaultWebsiteHost {MGMT} is also"
     " spec.managementServers[0].replacement's: a host has one default website"),
    ({"personalizationServers": [{"name": "ps-1", "url": PS1, "database": "pers-db", "replacement": {
        "url": PS1_NEW, "defaultWebsiteHost": PERS, "license": LICENSE}}]},
     "spec.personalizationServers[0].replacement.license: a license is deployed with the Deployment Agent"),
    ({"managementCutover": "Email"}, "spec.managementCutover"),
], ids=["management-host", "personalization-host", "one-host-twice", "license-on-personalization", "bad-cutover"])
def test_spec_rules_name_the_field(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_of(**overrides)
    assert words in str(info.value)


def test_replacements_carry_the_host_and_the_license() -> None:
    ms, ps = spec_of().replacements()
    assert (ms.method, ms.website_host, ms.license and ms.license.name, ms.license and ms.license.key) == (
        "DefaultWebsite", MGMT, "uwm-license", "license")
    assert (ps.method, ps.website_host, ps.license) == ("DefaultWebsite", PERS, None)
    assert parse_spec(raw_spec()).replacements()[0].method == "FailoverListAndAgent"  # the default stays


# ---------------------------------------------------------------- plan and preflight


def test_the_default_website_moves_once_the_new_server_serves_and_the_old_one_goes_last() -> None:
    spec = spec_of()
    plan = _plan(spec, SideBySide.of(spec))
    assert isinstance(plan, ComputePlan), plan
    hop = [(s.name.value, s.server or s.database) for s in plan.steps if s.hop == 1 and s.state == "Pending"]
    assert hop == [
        ("AddFailoverServer", "ms-1-new"),  # the guide: in the list before the new Management Server comes online
        ("BackupDatabase", "mgmt-db"), ("InstallReplacement", "ms-1-new"), ("UpgradeSchema", "ms-1-new"),
        ("VerifySchema", "mgmt-db"), ("HealthCheck", "ms-1-new"), ("BringOnline", "ms-1-new"),
        ("MakeDefaultWebsite", "ms-1-new"), ("RedeployDeploymentAgent", "mgmt-db"),  # only for the license
        ("RemoveFailoverServer", "ms-1"), ("TakeOffline", "ms-1"),
        ("BackupDatabase", "pers-db"), ("InstallReplacement", "ps-1-new"), ("UpgradeSchema", "ps-1-new"),
        ("VerifySchema", "pers-db"), ("HealthCheck", "ps-1-new"), ("BringOnline", "ps-1-new"),
        ("MakeDefaultWebsite", "ps-1-new"), ("TakeOffline", "ps-1")]
    unlicensed = spec_of(license_=None)
    without = _plan(unlicensed, SideBySide.of(unlicensed))
    assert isinstance(without, ComputePlan)
    assert ("RedeployDeploymentAgent", "mgmt-db") not in [(s.name.value, s.database) for s in without.steps]


def _preflight(spec: UpgradePlanSpec, estate: Estate) -> Fail:
    action = _plan(spec, estate)
    assert isinstance(action, Fail) and action.reason is Reason.PREFLIGHT_FAILED, action
    return action


def test_a_personalization_server_never_takes_a_default_website_whose_root_another_application_uses() -> None:
    spec = spec_of()
    refused = _preflight(spec, SideBySide.of(spec, ps_1={"other_apps_in_root": ("IntranetPortal",)}))
    assert f"the default website of {PERS} (ps-1's) has IntranetPortal in its root" in refused.message
    assert "needs the root of its website and would overwrite IntranetPortal" in refused.message
    assert "use personalizationCutover VirtualHostDns or Policy" in refused.message
    # a Management Server is no Personalization Server: the rule is the guide's for the latter only
    assert isinstance(_plan(spec, SideBySide.of(spec, ms_1={"other_apps_in_root": ("IntranetPortal",)})),
                      ComputePlan)


@pytest.mark.parametrize(("change", "words"), [
    ({"default_websites": {MGMT: MS1_NEW, PERS: PS1}},
     f"the default website of {MGMT} is {MS1_NEW}, not ms-1's ({MS1})"),
    ({"default_websites": {PERS: PS1}}, f"the default website of {MGMT} is none, not ms-1's"),
    ({"agent": MS1}, f"the Deployment Agent must already use http://{MGMT}, but it uses {MS1}: use"
                     " managementCutover FailoverListAndAgent"),
    ({"policy": (PS1,)}, f"the Environment Manager policy must already use http://{PERS}, but it lists [{PS1}]"),
    ({"website_hosts": {norm_url(MS1): MGMT, norm_url(PS1): PERS, norm_url(PS1_NEW): PERS}},
     f"ms-1-new's website is on no host clients reach, not on {MGMT}: install it beside ms-1"),
    ({"agent": None}, "ms-1-new has a replacement.license, but no Deployment Agent is deployed to carry it"),
], ids=["default-is-not-the-old-server", "no-default-website", "agent-not-on-host", "policy-not-on-host",
        "new-server-elsewhere", "license-without-agent"])
def test_preflight_refuses_a_default_website_cut_over_that_cannot_move_the_clients(
        change: dict[str, Any], words: str) -> None:
    spec = spec_of()
    estate = SideBySide.of(spec)
    estate.clients = replace(estate.clients, **change)
    assert words in _preflight(spec, estate).message


def test_a_license_that_cannot_be_read_holds_the_plan_before_it_starts_saying_why() -> None:
    spec = spec_of()
    estate = SideBySide.of(spec)
    estate.licenses = {}
    seen = replace(estate.observe(), license_problems={"ms-1-new": "Secret ns/uwm-license does not exist"})
    action = one(decide(spec, UpgradePlanStatus(), seen, T0))
    assert isinstance(action, Wait) and action.reason is Reason.OBSERVATION_UNAVAILABLE, action
    assert action.message == "cannot read the new license of ms-1-new (Secret ns/uwm-license does not exist)"


# ---------------------------------------------------------------- the guide's rules on the change itself


def test_the_default_website_moves_only_to_an_online_website_of_that_host() -> None:
    spec = spec_of()
    estate = SideBySide.of(spec, version="2025.1")
    step = StepKey(StepName.MAKE_DEFAULT_WEBSITE, 1, "ps-1-new")
    move = MakeDefaultWebsite(step, "ps-1-new", PS1_NEW, PERS, PS1, PS1_NEW)
    rules = {v.rule for v in violations(spec, estate.observe(), move)}
    assert rules == {"not-serving", "clients-cut-off"}  # ps-1-new is still offline: clients would reach nothing
    estate.servers["ps-1-new"] = replace(estate.servers["ps-1-new"], online=True, phase=ServerPhase.RUNNING)
    estate.clients = after(estate.clients, BringOnline(step, "ps-1-new", PS1_NEW))
    assert violations(spec, estate.observe(), move) == ()
    elsewhere = MakeDefaultWebsite(step, "ps-1-new", PS1_NEW, MGMT, MS1, PS1_NEW)
    assert {v.rule for v in violations(spec, estate.observe(), elsewhere)} == {"not-on-host"}
    estate.servers["ps-1"] = replace(estate.servers["ps-1"], other_apps_in_root=("IntranetPortal",))
    (root,) = violations(spec, estate.observe(), move)
    assert root.rule == "website-root-in-use" and "IntranetPortal" in root.message
    # and the old server never goes before the default website has moved
    gone = violations(spec, estate.observe(), TakeOffline(StepKey(StepName.TAKE_OFFLINE, 1, "ps-1"), "ps-1", PS1))
    assert [v.rule for v in gone] == ["clients-cut-off"] and f"the default website of {PERS} is {PS1}" in \
        gone[0].message


def test_a_host_url_reaches_its_default_website_and_fails_over_like_a_server_url() -> None:
    c = ClientsObservation(failover=(MS1_NEW,), agent=f"http://{MGMT}", policy=(f"http://{PERS}",),
                           default_websites={MGMT: MS1}, website_hosts={norm_url(PS1): PERS},
                           online={norm_url(MS1): True, norm_url(MS1_NEW): False, norm_url(PS1): True})
    assert [(p.client, p.reaches) for p in pointers(c)] == [("the Deployment Agent", MS1),
                                                           (f"policy URL 1 (http://{PERS})", None)]
    assert cut_off(c)[0].cut_off == f"{PERS} has no default website"
    down = replace(c, online={**c.online, norm_url(MS1): False})
    assert cut_off(down)[0].cut_off == (f"it points at http://{MGMT} (the default website of {MGMT} is {MS1}, which"
                                        " is not online), and no server of its Failover Server List is online")
    spare = replace(down, online={**down.online, norm_url(MS1_NEW): True})
    assert pointers(spare)[0].reaches == MS1_NEW


# ---------------------------------------------------------------- single decisions


def test_the_license_is_redeployed_with_the_host_url_the_agent_already_holds() -> None:
    spec = spec_of()
    estate = SideBySide.of(spec, version="2025.1", ms_1_new={"online": True, "phase": ServerPhase.RUNNING})
    estate.clients = replace(estate.clients, default_websites={MGMT: MS1_NEW, PERS: PS1}, failover=(MS1, MS1_NEW),
                             online={**estate.clients.online, norm_url(MS1_NEW): True})
    step = StepKey(StepName.REDEPLOY_DEPLOYMENT_AGENT, 1, database="mgmt-db")
    status = _at(spec, estate, step, start=SideBySide.of(spec))
    action = one(decide(spec, status, estate.observe(), T0))
    assert action == RedeployDeploymentAgent(step, "ms-1-new", MS1_NEW, f"http://{MGMT}", f"http://{MGMT}",
                                             FINGERPRINT)
    estate.clients = after(estate.clients, action)
    done = one(decide(spec, status, estate.observe(), T0))
    assert done.__class__.__name__ == "CompleteStep", done
    assert f"redeployed with http://{MGMT}, whose default website is ms-1-new's" in getattr(done, "message", "")
    assert f"license of Secret uwm-license ({FINGERPRINT})" in getattr(done, "message", "")
    unread = replace(estate, licenses={})
    unread.clients = replace(estate.clients, agent_license=None)
    waiting = one(decide(spec, status, unread.observe(), T0))
    assert isinstance(waiting, Wait) and waiting.reason is Reason.OBSERVATION_UNAVAILABLE, waiting


def test_with_the_failover_list_the_redeploy_carries_the_license_too() -> None:
    spec = parse_spec(raw_spec(managementServers=[{"name": "ms-1", "url": MS1, "database": "mgmt-db", "replacement": {
        "url": MS1_NEW, "license": {"name": "uwm-license", "key": "lic"}}}]))
    estate = Licensed.of(spec, version="2025.1", policy=(f"http://{VHOST}",),
                         ms_1_new={"online": True, "phase": ServerPhase.RUNNING})
    estate.clients = replace(estate.clients, failover=(MS1, MS1_NEW),
                             online={**estate.clients.online, norm_url(MS1_NEW): True})
    step = StepKey(StepName.REDEPLOY_DEPLOYMENT_AGENT, 1, database="mgmt-db")
    status = _at(spec, estate, step, start=Licensed.of(spec, policy=(f"http://{VHOST}",)))
    seen = estate.observe()
    action = one(decide(spec, status, seen, T0))
    assert action == RedeployDeploymentAgent(step, "ms-1-new", MS1_NEW, MS1, MS1_NEW, FINGERPRINT)
    moved_without = replace(seen, clients=replace(seen.clients, agent=MS1_NEW) if seen.clients else None)
    again = one(decide(spec, status, moved_without, T0))  # moved, but the license is not there yet
    assert again == RedeployDeploymentAgent(step, "ms-1-new", MS1_NEW, MS1_NEW, MS1_NEW, FINGERPRINT)


# ---------------------------------------------------------------- whole runs


def _succeeds(spec: UpgradePlanSpec, estate: SideBySide, **drive_args: Any) -> UpgradePlanStatus:
    run = drive(spec, estate, **drive_args)
    assert run.status.phase is Phase.SUCCEEDED, run.status.message
    assert run.reached_no_server == []
    return run.status


def test_a_whole_default_website_clean_install_never_leaves_a_client_without_a_server() -> None:
    spec = spec_of()
    estate = SideBySide.of(spec)
    status = _succeeds(spec, estate)
    c = estate.clients
    assert c.default_websites == {MGMT: MS1_NEW, PERS: PS1_NEW}  # the clients kept their URLs
    assert (c.agent, c.policy, c.failover, c.agent_license) == (f"http://{MGMT}", (f"http://{PERS}",), (MS1_NEW,),
                                                                FINGERPRINT)
    assert not estate.servers["ms-1"].online and not estate.servers["ps-1"].online
    order = [line.split()[0] for line in estate.log]
    assert order.index("BringOnline") < order.index("MakeDefaultWebsite") < order.index("TakeOffline")
    cuts = {c.server: c for c in status.cutovers or ()}
    assert {n: (c.method, c.default_website_host, c.state) for n, c in cuts.items()} == {
        "ms-1": ("DefaultWebsite", MGMT, CutoverState.OLD_SERVER_OFFLINE),
        "ps-1": ("DefaultWebsite", PERS, CutoverState.OLD_SERVER_OFFLINE)}
    ms = cuts["ms-1"]
    assert ms.license is not None and (ms.license.secret_name, ms.license.key, ms.license.fingerprint) == (
        "uwm-license", "license", FINGERPRINT)
    assert ms.license.deployed_at is not None and cuts["ps-1"].license is None
    assert ms.new_server_online_at and ms.clients_moved_at and ms.old_server_offline_at
    assert ms.new_server_online_at <= ms.clients_moved_at <= ms.license.deployed_at <= ms.old_server_offline_at
    assert f"default website of {MGMT}" in (ms.message or "") and FINGERPRINT in (ms.message or "")
    assert [s.state.value for s in status.steps if s.name is StepName.MAKE_DEFAULT_WEBSITE] == ["Succeeded"] * 2


@pytest.mark.parametrize("seed", range(4))
def test_crashes_anywhere_resume_without_doing_anything_twice(seed: int) -> None:
    spec = spec_of()
    estate = SideBySide.of(spec)
    _succeeds(spec, estate, crash=0.35, seed=seed)
    schema = [line for line in estate.log if line.startswith("UpgradeSchema")]
    assert len(schema) == len(set(schema)) == 2
    assert estate.clients.default_websites == {MGMT: MS1_NEW, PERS: PS1_NEW}


def test_the_events_say_when_the_clients_moved_and_which_license_was_deployed() -> None:
    spec = spec_of()
    estate = SideBySide.of(spec)
    status = _succeeds(spec, estate)
    bare = status.model_copy(update={"cutovers": tuple(c.model_copy(update={
        "clients_moved_at": None, "license": c.license and c.license.model_copy(update={"deployed_at": None})})
        for c in status.cutovers or ())})
    events = [e for e in events_between(bare, status) if e.reason in (EventReason.CLIENTS_MOVED,
                                                                      EventReason.LICENSE_DEPLOYED)]
    assert [e.reason for e in events] == [EventReason.CLIENTS_MOVED, EventReason.LICENSE_DEPLOYED,
                                          EventReason.CLIENTS_MOVED]
    assert f"(default website of {MGMT})" in events[0].note
    assert events[1].note == f"the Deployment Agent carries the license of Secret uwm-license ({FINGERPRINT})" \
                             " for ms-1-new"

