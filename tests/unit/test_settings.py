"""`uwm-upgrade run`'s flags become one frozen Settings, which reaches kopf's filter and the engine through
kopf's memo (not through environment variables written by the command line)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import pytest

from uwm_upgrade import cli
from uwm_upgrade.core.context import Limits
from uwm_upgrade.engine.selector import Requirement, Selector
from uwm_upgrade.settings import LogFormat, Settings, SettingsError, settings_of


def settings(*flags: str) -> Settings:
    return cli.settings_from_args(cli.build_parser().parse_args(["run", *flags]))


def test_no_flags_are_the_documented_defaults() -> None:
    got = settings()
    assert got == Settings()
    assert (got.namespaces, got.all_namespaces, got.selector, got.log_format, got.verbose) == (
        (), False, Selector(()), LogFormat.PLAIN, False)
    assert (got.liveness_port, got.metrics_port, got.standalone, got.install_timeout) == (8080, 9090, False, None)
    assert got.cluster_wide and got.scans_namespaces


def test_every_flag_lands_in_its_field() -> None:
    got = settings("-n", "uwm-prod", "--namespace", "uwm-test", "-l", "team=vdi,env!=prod,!legacy",
                   "--log-format", "json", "-v", "--liveness-port", "0", "--metrics-port", "9191", "--standalone",
                   "--install-timeout", "42.5", "--replication-timeout", "7")
    assert got == Settings(
        namespaces=("uwm-prod", "uwm-test"), all_namespaces=False,
        selector=Selector((Requirement("team", "=", "vdi"), Requirement("env", "!=", "prod"),
                           Requirement("legacy", "!exists"))),
        log_format=LogFormat.JSON, verbose=True, liveness_port=0, metrics_port=9191, standalone=True,
        install_timeout=42.5, replication_timeout=7.0)
    assert not got.cluster_wide and not got.scans_namespaces  # exact names: kopf need not list namespaces
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.verbose = False  # type: ignore[misc]


@pytest.mark.parametrize(("flags", "cluster_wide", "scans"), [
    (("-A",), True, True),
    (("-n", "uwm-*"), False, True),
    (("-n", "uwm-prod", "-n", "team-[ab]"), False, True),
    (("-n", "uwm-prod"), False, False),
])
def test_the_watched_scope(flags: tuple[str, ...], cluster_wide: bool, scans: bool) -> None:
    got = settings(*flags)
    assert (got.cluster_wide, got.scans_namespaces) == (cluster_wide, scans)


def test_the_install_timeout_sets_the_engines_limit_and_nothing_else() -> None:
    base = Limits(poll_seconds=1.0, idle_seconds=5.0)
    assert settings().limits(base) == base
    assert settings("--install-timeout", "6").limits(base) == dataclasses.replace(base, install_seconds=6.0)


def test_the_replication_timeout_sets_the_engines_limit_and_nothing_else() -> None:
    base = Limits(poll_seconds=1.0, idle_seconds=5.0)
    assert settings("--replication-timeout", "8").limits(base) == dataclasses.replace(base, replication_seconds=8.0)


@pytest.mark.parametrize(("flags", "words"), [
    (("-l", "team in (a)"), ["--selector", "team in (a)"]),
    (("--install-timeout", "0"), ["--install-timeout", "positive"]),
    (("--install-timeout", "nan"), ["--install-timeout", "positive"]),
    (("--replication-timeout", "-3"), ["--replication-timeout", "positive"]),
    (("--metrics-port", "70000"), ["--metrics-port", "70000"]),
    (("--liveness-port", "-1"), ["--liveness-port", "-1"]),
])
def test_bad_flags_are_refused_naming_the_flag(flags: tuple[str, ...], words: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(*flags)
    assert all(w in str(refused.value) for w in words), refused.value
    assert cli.main(["run", *flags]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_a_memo_without_settings_is_a_clear_error() -> None:
    import kopf

    with pytest.raises(SettingsError, match="uwm-upgrade run"):
        settings_of(kopf.Memo())


@pytest.fixture
def kopf_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`kopf.run` (and kopf's logging set-up) replaced: what the command line hands kopf is recorded."""
    import kopf

    handed: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: handed.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    return handed


def test_the_command_line_hands_kopf_its_settings_as_the_memo(kopf_run: dict[str, Any]) -> None:
    assert cli.main(["run", "-n", "uwm", "-l", "team=vdi", "--metrics-port", "0", "--standalone"]) == 0
    assert kopf_run["memo"].settings == settings("-n", "uwm", "-l", "team=vdi", "--metrics-port", "0",
                                                 "--standalone")
    assert (kopf_run["namespaces"], kopf_run["clusterwide"], kopf_run["standalone"]) == (["uwm"], False, True)
    assert kopf_run["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"


def test_a_selector_given_on_the_command_line_reaches_kopfs_filter(kopf_run: dict[str, Any]) -> None:
    """Through kopf's own matching (the private `registries.match`, which `handlers.selected` relies on
    receiving `memo`): with `-l team=vdi` the daemon is spawned for a plan labelled so, and for no other."""
    import kopf
    from kopf._cogs.structs import bodies, patches, references
    from kopf._core.intents import causes, registries

    from uwm_upgrade import handlers

    assert cli.main(["run", "-n", "uwm", "-l", "team=vdi", "--metrics-port", "0"]) == 0
    memo = kopf_run["memo"]
    resource = references.Resource("upgrade.uwm.io", "v1alpha1", "upgradeplans", kind="UpgradePlan")
    daemons = kopf.get_default_registry()._spawning.get_all_handlers()

    def spawned_for(labels: dict[str, str]) -> list[Any]:
        body = bodies.Body({"apiVersion": "upgrade.uwm.io/v1alpha1", "kind": "UpgradePlan",
                            "metadata": {"name": "p", "namespace": "uwm", "labels": labels}})
        cause = causes.SpawningCause(logger=logging.getLogger("t"), indices={}, memo=copy.copy(memo),
                                     resource=resource, patch=patches.Patch(), body=body, reset=False)
        return [h.fn for h in daemons if registries.match(handler=h, cause=cause)]

    assert spawned_for({"team": "vdi", "env": "prod"}) == [handlers.drive]
    assert spawned_for({"team": "ops"}) == []
    assert spawned_for({}) == []


async def test_the_startup_handler_builds_the_runtime_from_the_memo(kopf_run: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from uwm_upgrade import handlers
    from uwm_upgrade.engine import runtime
    from uwm_upgrade.engine.leader import LeaseLeadership

    assert cli.main(["run", "-n", "uwm", "--install-timeout", "12", "--metrics-port", "0", "--lease-seconds", "9",
                     "--lease-name", "estate-lock"]) == 0
    memo = kopf_run["memo"]
    monkeypatch.setattr(handlers, "load_config", lambda: None)
    monkeypatch.setattr(handlers, "Kube", lambda: "kube")
    kopf_settings = kopf.OperatorSettings()
    await handlers.startup(settings=kopf_settings, memo=memo)
    assert memo.runtime.limits == dataclasses.replace(runtime.LOOP_LIMITS, install_seconds=12.0)
    leadership = memo.runtime.leadership  # no --standalone: replicas elect a leader by a Lease
    assert isinstance(leadership, LeaseLeadership)
    assert (leadership.settings.name, leadership.settings.seconds) == ("estate-lock", 9.0)
    assert memo.runtime.scope.namespaces == ("uwm",) and not memo.runtime.scope.cluster_wide
    assert kopf_settings.scanning.disabled is True  # one exact namespace


async def test_the_server_policy_reaches_the_runtime_and_an_open_one_is_warned_about(
        kopf_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import kopf

    from uwm_upgrade import handlers

    with caplog.at_level(logging.INFO, logger="uwm_upgrade"):
        assert cli.main(["run", "-n", "uwm", "--metrics-port", "0"]) == 0
    assert [r.levelname for r in caplog.records if "server policy" in r.message] == ["WARNING"]
    assert "any plan may point the operator, and its agent token, at any address" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="uwm_upgrade"):
        assert cli.main(["run", "-n", "uwm", "--metrics-port", "0", "--allow-server-cidr", "10.20.0.0/16"]) == 0
    assert [r.levelname for r in caplog.records if "server policy" in r.message] == ["INFO"]
    memo = kopf_run["memo"]
    monkeypatch.setattr(handlers, "load_config", lambda: None)
    monkeypatch.setattr(handlers, "Kube", lambda: "kube")
    await handlers.startup(settings=kopf.OperatorSettings(), memo=memo)
    assert memo.runtime.policy == memo.settings.server_policy and memo.runtime.policy.restricted
