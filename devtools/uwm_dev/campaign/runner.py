"""`uwm-dev campaign`: seeded runs of the example estate through the real processes, each one disrupted,
audited and judged; one line per run, then `campaign: <held>/<runs> runs held, <v> rule violations, <d>
data losses`.

Every run gets fresh databases, a fresh simulator fleet (`uwm-sim fleet`), its own namespace and its own
operator process (`uwm-upgrade run`) on a test bed of the campaign's own (`--dir`), which it may stop and
restart (kube-apiserver, PostgreSQL) without disturbing anything else. With `--workers N` the runs are
spread over N test beds at once. A run's logs stay under the bed's `runs/` folder.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..referee import audit, evidence
from ..testbed import estate
from ..testbed.bed import Testbed
from . import disrupt
from .judge import TERMINAL, Verdict, judge
from .scenarios import SERVERS, Scenario, draw

REPO = Path(__file__).resolve().parents[3]
FLEET = REPO / "examples" / "fleet.yaml"
PLAN = REPO / "examples" / "upgradeplan.yaml"
TIMING = {"settle": 0.3, "install": 0.5, "migration_step": 0.3, "caught_up": 0.3}
OPERATOR_ARGS = ["--install-timeout", "30"]
RUN_DEADLINE = 300.0
STOP = threading.Event()  # SIGTERM/SIGINT: every run stops its processes and databases, then the campaign ends


class CampaignStoppedError(RuntimeError):
    """The campaign was asked to stop (a signal); the run in progress cleaned up after itself."""


@dataclass
class Outcome:
    scenario: Scenario
    verdict: Verdict
    seconds: float
    log: list[str]

    def line(self, runs: int) -> str:
        return (f"run {self.scenario.index + 1}/{runs} [seed {self.scenario.seed}:{self.scenario.index}]"
                f" {self.scenario.describe()}: {self.verdict.line()} in {self.seconds:.1f}s")


def _agent_version(fleet: estate.Fleet, server: str) -> str | None:
    request = urllib.request.Request(f"{fleet.url(server)}/agent/v1/state",
                                     headers={"Authorization": f"Bearer {fleet.token}"})
    for _ in range(30):
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(request, timeout=5) as answer:
            return str(json.loads(answer.read())["version"])
        time.sleep(0.5)
    return None


def _plan_or_none(bed: Testbed, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return estate.get_plan(bed, namespace, name)
    except RuntimeError:
        return None


def run_one(bed: Testbed, scenario: Scenario, root: Path) -> Outcome:
    began = time.monotonic()
    namespace = f"c{scenario.index}-{uuid.uuid4().hex[:6]}"
    work = root / namespace
    timing = {**TIMING, **scenario.timing}
    fleet = estate.start_fleet(bed, FLEET, work, settle=timing["settle"], install=timing["install"],
                               migration_step=timing["migration_step"], caught_up=timing["caught_up"])
    operator: estate.Operator | None = None
    run: disrupt.Run | None = None
    try:
        estate.kubectl(bed, "create", "namespace", namespace)

        def start_operator() -> estate.Operator:
            return estate.start_operator(bed, [namespace], work, extra=OPERATOR_ARGS)

        operator = start_operator()
        versions_before = {s: _agent_version(fleet, s) or "" for s in SERVERS}
        data_before = evidence.user_data(fleet.odbc)
        docs = estate.plan_documents(PLAN, fleet, namespace, targetVersion=scenario.target,
                                     failurePolicy=scenario.failure_policy,
                                     maxConcurrentServers=scenario.max_concurrent,
                                     healthCheck={"timeoutSeconds": 60, "periodSeconds": 1, "successThreshold": 1})
        name = str(next(d for d in docs if d["kind"] == "UpgradePlan")["metadata"]["name"])
        run = disrupt.Run(bed, namespace, name, fleet, operator, start_operator)
        disrupt.prime(run, scenario)
        estate.apply(bed, docs)
        run.started = time.monotonic()
        threads = disrupt.start(run, scenario)
        plan = _wait_over(bed, namespace, name, run)
        run.done.set()
        for t in threads:
            t.join(60)
        died = fleet.process.proc.poll()  # crashed by itself: a fleet-kill restarted it before its thread ended
        bed.start_apiserver()  # whatever a disruption left stopped comes back before the evidence is read
        bed.start_postgres()
        plan = _plan_or_none(bed, namespace, name) or plan
        operator = run.operator
        operator.process.stop()
        events = evidence.journal(fleet.state_odbc)
        top = evidence.topology(FLEET, fleet.env)
        backups = evidence.backups(fleet.odbc)
        result = audit.replay(events, top, backups)
        expect = None if scenario.expects_failure else audit.as_before(result, list(SERVERS), scenario.target)
        findings = audit.audit(events, top, backups, expect=expect)
        verdict = judge(scenario, plan, findings, result, list(SERVERS), data_before, evidence.user_data(fleet.odbc),
                        evidence.backup_user_data(fleet.odbc, backups), versions_before,
                        {s: _agent_version(fleet, s) or "" for s in SERVERS})
        if died is not None:  # the run tested nothing of the operator after that: it does not hold
            verdict.problems.append(f"the simulator fleet exited by itself (code {died}) during the run; see"
                                    f" {fleet.process.log}")
            verdict.held = False
        if not verdict.held:  # what the plan said at the end, for whoever reads a run that did not hold
            status = (plan or {}).get("status") or {}
            ending = [c for c in status.get("conditions") or () if c.get("type") in ("Failed", "Ready")]
            run.log += [f"plan {status.get('phase')}: {c.get('type')} {c.get('reason')}: {c.get('message')}"
                        for c in ending]
        return Outcome(scenario, verdict, time.monotonic() - began, run.log)
    finally:
        if run is not None:
            run.done.set()
            run.operator.process.stop()
        if operator is not None:
            operator.process.stop()
        fleet.process.stop()
        with contextlib.suppress(Exception):
            estate.drop_databases(bed, fleet.databases)


def _wait_over(bed: Testbed, namespace: str, name: str, run: disrupt.Run) -> dict[str, Any] | None:
    deadline = time.monotonic() + RUN_DEADLINE
    plan = None
    while time.monotonic() < deadline:
        if STOP.is_set():
            raise CampaignStoppedError("the campaign was stopped")
        found = _plan_or_none(bed, namespace, name)  # None while the API server is down
        if found is not None:
            plan = found
            if (found.get("status") or {}).get("phase") in TERMINAL:
                return plan
        time.sleep(0.5)
    run.note(f"no end within {RUN_DEADLINE:.0f}s")
    return plan


def campaign(runs: int, seed: int | str, *, directory: Path, workers: int = 1, only: list[int] | None = None,
             out: TextIO = sys.stdout, draw_scenario: Callable[[int | str, int], Scenario] = draw) -> list[Outcome]:
    """Run the campaign; print one line per run as it ends and the summary line; return the outcomes."""
    indexes = only if only is not None else list(range(runs))
    beds = [Testbed.at(directory / f"bed-{w}") for w in range(max(1, min(workers, len(indexes))))]
    free: list[Testbed] = list(beds)
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def one(index: int) -> Outcome:
        if STOP.is_set():
            raise CampaignStoppedError("the campaign was stopped")
        with lock:
            bed = free.pop()
        try:
            bed.up()
            outcome = run_one(bed, draw_scenario(seed, index), directory / "runs")
        finally:
            with lock:
                free.append(bed)
        with lock:
            print(outcome.line(runs), file=out, flush=True)
            if not outcome.verdict.held:
                for entry in outcome.log:
                    print(f"    {entry}", file=out, flush=True)
        return outcome

    try:
        with ThreadPoolExecutor(len(beds)) as pool:
            outcomes = list(pool.map(one, indexes))
    finally:
        for bed in beds:
            bed.down(quiet=True)
    held = sum(o.verdict.held for o in outcomes)
    plain = sum(o.verdict.as_uninterrupted for o in outcomes)
    print(f"campaign: {plain} of the {held} runs that held ended as an uninterrupted run would", file=out, flush=True)
    violations = sum(len(o.verdict.violations) for o in outcomes)
    losses = sum(len(o.verdict.data_losses) for o in outcomes)
    print(f"campaign: {held}/{len(outcomes)} runs held, {violations} rule violations, {losses} data losses",
          file=out, flush=True)
    return outcomes


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="uwm-dev campaign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", default="1")
    parser.add_argument("--only", type=int, action="append", help="run only this index (repeatable)")
    parser.add_argument("--workers", type=int, default=1, help="test beds used at once (default 1)")
    parser.add_argument("--dir", type=Path, default=REPO / ".testbed" / "campaign")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())
    try:
        outcomes = campaign(args.runs, args.seed, directory=args.dir, workers=args.workers, only=args.only)
    except CampaignStoppedError:
        print("campaign: stopped", file=sys.stderr)
        return 130
    return 0 if all(o.verdict.held for o in outcomes) else 1
