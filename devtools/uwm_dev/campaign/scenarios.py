"""The seeded failure campaign's scenarios: what each run upgrades and what goes wrong while it does.

Why seeded: a run that did not hold must be replayable. Run `i` of a campaign with seed `S` draws from
`random.Random(f"{S}:{i}")` only, so `uwm-dev campaign --seed S --only i` is the same run again (same
plan, same faults at the same moments; the machine's timing aside).

Two families of disruption. *Transient* ones (the operator SIGKILLed, the simulator fleet killed mid-install
or mid-migration, kube-apiserver or PostgreSQL restarted, agent calls answering 500 or dropping their
connection, a server and its portal unreachable for a while, subscribers slow to catch up) must not
change the outcome: the run ends as an uninterrupted one would, Succeeded. *Failures* (an install that
hangs past the operator's install timeout, a schema migration that fails, an install that fails) must end in
a precise Failed or RolledBack.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    OPERATOR_KILL = "operator-kill"
    FLEET_KILL = "fleet-kill"
    APISERVER_RESTART = "apiserver-restart"
    POSTGRES_RESTART = "postgres-restart"
    AGENT_ERRORS = "agent-errors"
    SERVER_UNREACHABLE = "server-unreachable"
    SLOW_SUBSCRIBER = "slow-subscriber"
    INSTALL_HANG = "install-hang"
    MIGRATION_FAIL = "migration-fail"
    INSTALL_FAIL = "install-fail"


FAILURES = frozenset({Kind.INSTALL_HANG, Kind.MIGRATION_FAIL, Kind.INSTALL_FAIL})
TRANSIENT = tuple(k for k in Kind if k not in FAILURES)
SERVERS = ("ms-1", "ms-2", "ps-1", "ps-2", "ps-3")  # examples/fleet.yaml
FIRST = {"mgmt-db": "ms-1", "pers-db": "ps-1"}
LATER = ("ms-2", "ps-2", "ps-3")


@dataclass(frozen=True)
class Disruption:
    kind: Kind
    # When it strikes: seconds after the plan is applied, or when a step of this name starts running.
    at_seconds: float = 0.0
    on_step: str | None = None
    server: str | None = None
    seconds: float = 0.0  # how long an outage lasts
    count: int = 1
    percent: int = 100

    def __str__(self) -> str:
        where = f" on {self.server}" if self.server else ""
        when = f" when {self.on_step} runs" if self.on_step else f" at {self.at_seconds:.1f}s"
        if self.kind in FAILURES or self.kind is Kind.SLOW_SUBSCRIBER:
            when = ""  # set before the plan starts
        extra = f" for {self.seconds:.1f}s" if self.seconds else ""
        extra += f" x{self.count}" if self.count > 1 else ""
        return f"{self.kind}{where}{when}{extra}"


@dataclass(frozen=True)
class Scenario:
    index: int
    seed: str
    target: str
    failure_policy: str
    max_concurrent: int
    disruptions: tuple[Disruption, ...]
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def expects_failure(self) -> bool:
        return any(d.kind in FAILURES for d in self.disruptions)

    @property
    def hops(self) -> int:
        return 2 if self.target == "2025.1" else 1

    def describe(self) -> str:
        what = "; ".join(str(d) for d in self.disruptions) or "no disruption"
        return (f"{self.hops} hop(s) to {self.target}, {self.failure_policy}, {self.max_concurrent} at once:"
                f" {what}")


def _transient(rng: random.Random, kind: Kind, span: float) -> Disruption:
    at = round(rng.uniform(1.0, span), 1)
    match kind:
        case Kind.OPERATOR_KILL:
            return Disruption(kind, at, count=rng.randint(2, 4))
        case Kind.FLEET_KILL:
            return Disruption(kind, on_step=rng.choice(("InstallServer", "UpgradeSchema", "InstallFirstServer")),
                              seconds=round(rng.uniform(0.0, 2.0), 1))
        case Kind.APISERVER_RESTART:
            return Disruption(kind, at, seconds=round(rng.uniform(3.0, 15.0), 1))
        case Kind.POSTGRES_RESTART:
            step = rng.choice((None, "UpgradeSchema", "BackupDatabase"))
            return Disruption(kind, at, on_step=step, seconds=round(rng.uniform(3.0, 12.0), 1))
        case Kind.AGENT_ERRORS:
            return Disruption(kind, at, server=rng.choice(SERVERS), count=rng.randint(3, 12),
                              percent=rng.choice((20, 35, 50)))
        case Kind.SERVER_UNREACHABLE:
            return Disruption(kind, on_step="UpgradeSchema", server=rng.choice(tuple(FIRST.values())),
                              seconds=round(rng.uniform(2.0, 6.0), 1))
        case _:  # a slow subscriber: a fleet timing, not an event
            return Disruption(Kind.SLOW_SUBSCRIBER, seconds=round(rng.uniform(4.0, 10.0), 1))


def _failure(rng: random.Random) -> Disruption:
    kind = rng.choice(sorted(FAILURES))
    match kind:
        case Kind.MIGRATION_FAIL:
            return Disruption(kind, server=rng.choice(tuple(FIRST.values())))
        case Kind.INSTALL_HANG:
            return Disruption(kind, server=rng.choice((*FIRST.values(), *LATER)))
        case _:
            return Disruption(Kind.INSTALL_FAIL, server=rng.choice(LATER))


def draw(seed: int | str, index: int, failure_share: float = 0.3) -> Scenario:
    """Run `index` of the campaign seeded `seed`: the same arguments always give the same scenario."""
    rng = random.Random(f"{seed}:{index}")
    target = rng.choice(("2023.1", "2025.1"))
    span = 12.0 if target == "2023.1" else 24.0
    kinds = rng.sample(TRANSIENT, rng.choice((1, 1, 2)))
    disruptions = [_transient(rng, k, span) for k in kinds]
    if rng.random() < failure_share:
        disruptions.append(_failure(rng))
    timing: dict[str, float] = {}
    for d in disruptions:
        if d.kind is Kind.SLOW_SUBSCRIBER:
            timing["caught_up"] = d.seconds
    return Scenario(index=index, seed=str(seed), target=target, failure_policy=rng.choice(("Halt", "Rollback")),
                    max_concurrent=rng.choice((1, 1, 2, 3)), disruptions=tuple(disruptions), timing=timing)
