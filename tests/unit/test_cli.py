"""The two command lines: `uwm-upgrade` is the operator alone; the dev tools are `uwm-dev`'s."""

from __future__ import annotations

import argparse

import pytest

from uwm_dev import cli as dev_cli
from uwm_upgrade import cli as operator_cli


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


def test_the_operator_command_offers_run_and_nothing_of_the_dev_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert _commands(operator_cli.build_parser()) == {"run"}
    with pytest.raises(SystemExit):
        operator_cli.main(["--help"])
    shown = capsys.readouterr().out
    assert "testbed" not in shown and "demo" not in shown, shown
    for gone in (["testbed", "up"], ["demo"]):
        with pytest.raises(SystemExit) as exit_:
            operator_cli.main(gone)
        assert exit_.value.code == 2, gone


def test_the_operator_command_says_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        operator_cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("uwm-upgrade ")


def test_the_dev_command_has_the_test_bed_the_demo_the_benchmark_the_campaign_and_the_tools() -> None:
    assert _commands(dev_cli.build_parser()) == {"testbed", "demo", "bench-fleet", "campaign", "tools"}
    assert dev_cli.build_parser().parse_args(["tools", "build", "kstatus"]).names == ["kstatus"]
    args = dev_cli.build_parser().parse_args(["testbed", "down", "--dir", "/tmp/x"])
    assert (args.action, args.dir) == ("down", "/tmp/x")
    with pytest.raises(SystemExit):
        dev_cli.build_parser().parse_args(["testbed", "explode"])


def test_bench_fleet_gets_its_own_options_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from uwm_dev import bench_fleet

    seen: list[list[str]] = []
    monkeypatch.setattr(bench_fleet, "main", lambda argv: seen.append(argv) or 0)
    assert dev_cli.main(["bench-fleet", "--servers", "3", "--odbc", "DRIVER=x"]) == 0
    assert seen == [["--servers", "3", "--odbc", "DRIVER=x"]]


def test_the_campaign_gets_its_own_options_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from uwm_dev.campaign import runner

    seen: list[list[str]] = []
    monkeypatch.setattr(runner, "main", lambda argv: seen.append(argv) or 0)
    assert dev_cli.main(["campaign", "--runs", "5", "--seed", "9"]) == 0
    assert seen == [["--runs", "5", "--seed", "9"]]


def test_other_commands_refuse_unknown_options() -> None:
    with pytest.raises(SystemExit) as exit_:
        dev_cli.main(["demo", "--servers", "3"])
    assert exit_.value.code == 2
