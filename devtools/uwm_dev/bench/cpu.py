"""Where a bench run's CPU went, by process of the test bed: the operator, the simulators, PostgreSQL,
kube-apiserver and etcd, in CPU seconds.

Why: on a small machine the whole test bed shares the cores with the operator, so a ratio alone does
not say what bound a run; the CPU each process spent does (the critical path counts every moment the
simulators take to answer as the operator's). Read from /proc (Linux): user and system time of each
process, and for PostgreSQL's postmaster also that of its backends that ended during the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..testbed import postgres
from ..testbed.bed import Testbed

Pids = Callable[[], Iterable[int]]


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User and system CPU seconds of `pid` (with `reaped`, those of its children it waited for too);
    0 for a process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (PostgreSQL's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


class CpuMeter:
    """CPU seconds per group of processes from `start()` to `seconds()` (call it before they stop)."""

    def __init__(self, groups: Mapping[str, Pids], reaping: Iterable[int] = ()) -> None:
        self.groups, self.reaping = dict(groups), set(reaping)
        self.base: dict[int, float] = {}

    def _now(self, pid: int) -> float:
        return cpu_seconds(pid, reaped=pid in self.reaping)

    def start(self) -> None:
        self.base = {pid: self._now(pid) for pids in self.groups.values() for pid in pids()}

    def seconds(self) -> dict[str, float]:
        return {name: round(sum(max(self._now(pid) - self.base.get(pid, 0.0), 0.0) for pid in set(pids())), 1)
                for name, pids in self.groups.items()}


def bed_meter(bed: Testbed, operator: int, simulators: Iterable[int]) -> CpuMeter:
    """A meter of the operator's process, the simulator fleets' and the test bed's control plane and
    PostgreSQL (the postmaster, its backends, and those of them that end meanwhile)."""
    state = bed.state()
    sims = list(simulators)
    master = postgres.running(Path(state.pg_data)) if state is not None and state.pg_data else None
    groups: dict[str, Pids] = {"operator": lambda: [operator], "simulators": lambda: sims}
    if state is not None:
        groups["apiserver"] = lambda: [state.apiserver_pid] if state.apiserver_pid else []
        groups["etcd"] = lambda: [state.etcd_pid] if state.etcd_pid else []
    if master is not None:
        groups["postgres"] = lambda: [master, *children(master)]
    return CpuMeter(groups, reaping=[master] if master is not None else [])
