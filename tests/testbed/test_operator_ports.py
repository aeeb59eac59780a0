"""The test bed starts an operator on ports it chose free; another test's process may bind one of them
first (pytest-xdist runs several at once). The operator then exits ("Address already in use") and the test
that started it waited for a plan that nobody reconciled: `start_operator` starts it again on other ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from uwm_dev.testbed import estate, procs
from uwm_dev.testbed.bed import Testbed

from conftest import Kube

pytestmark = pytest.mark.testbed


@pytest.mark.parametrize("taken_port", ["metrics", "liveness"])
def test_an_operator_whose_port_was_taken_starts_on_other_ports(
        kube: Kube, _bed: Testbed, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        taken_port: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        held = int(taken.getsockname()[1])
        chosen = _ports(held, 0 if taken_port == "metrics" else 1)
        monkeypatch.setattr(procs, "free_port", lambda host="127.0.0.1": next(chosen))
        operator = estate.start_operator(_bed, [namespace], tmp_path)
        try:
            assert held not in (operator.metrics_port, operator.liveness_port)
            assert operator.process.alive(), (tmp_path / "operator.log").read_text()
            assert procs.listens(operator.process.proc.pid, operator.metrics_port)
            assert procs.listens(operator.process.proc.pid, operator.liveness_port)
            assert "address already in use" in (tmp_path / "operator.log").read_text().lower()  # the first one exited
        finally:
            operator.process.stop()


def test_listens_tells_the_holder_of_a_port_from_another_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as mine:
        mine.bind(("127.0.0.1", 0))
        port = int(mine.getsockname()[1])
        assert not procs.listens(os.getpid(), port)  # bound, not listening
        mine.listen()
        assert procs.listens(os.getpid(), port)
        assert not procs.listens(1, port)


def _ports(held: int, at: int) -> Iterator[int]:
    """free_port's answers: the metrics port, then the liveness port, one of them somebody else's by now."""
    for call in range(1_000):
        yield held if call == at else _free()


def _free() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
