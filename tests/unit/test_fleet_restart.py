"""A fleet restarted by the failure campaign while its state database is down exits at start; the harness
starts it again until it is ready, as a supervisor would (`estate.Fleet.restart`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from uwm_dev.testbed import estate


class FakeProcess:
    def __init__(self, log: Path) -> None:
        self.log, self.killed = log, False

    def kill(self) -> None:
        self.killed = True

    def stop(self) -> None:
        self.killed = True


def fleet(tmp_path: Path) -> estate.Fleet:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump({"servers": [{"name": "ms-1", "port": 0}], "loadBalancers": []}))
    endpoints = {"servers": {"ms-1": {"url": "http://127.0.0.1:40001"}}, "loadBalancers": {}}
    return estate.Fleet(FakeProcess(tmp_path / "fleet.log"), endpoints, "t", "odbc",  # type: ignore[arg-type]
                        fleet_file=fleet_file)


def test_a_fleet_that_exits_while_starting_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tries: list[float] = []
    ready = {"servers": {"ms-1": {"url": "http://127.0.0.1:40001"}}, "ready": True}

    def spawn(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[Any, dict[str, Any]]:
        tries.append(timeout)
        if len(tries) < 3:
            raise estate.FleetExitedError("the simulator fleet exited; database state: connection refused")
        pinned = yaml.safe_load(Path(cmd[2]).read_text())
        assert pinned["servers"][0]["port"] == 40001  # the same ports: every URL stays valid
        return FakeProcess(log), ready

    monkeypatch.setattr(estate, "_spawn_fleet", spawn)
    monkeypatch.setattr(estate, "_bin", lambda name: name)
    monkeypatch.setattr(estate, "RESPAWN_SECONDS", 0.01)
    f = fleet(tmp_path)
    f.restart(timeout=30)
    assert len(tries) == 3 and f.endpoints is ready
    assert all(t <= 30 for t in tries)


def test_a_fleet_that_never_starts_is_an_error_once_the_time_is_up(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def spawn(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[Any, dict[str, Any]]:
        raise estate.FleetExitedError("the simulator fleet exited")

    monkeypatch.setattr(estate, "_spawn_fleet", spawn)
    monkeypatch.setattr(estate, "_bin", lambda name: name)
    monkeypatch.setattr(estate, "RESPAWN_SECONDS", 0.01)
    with pytest.raises(estate.FleetExitedError):
        fleet(tmp_path).restart(timeout=0.05)
