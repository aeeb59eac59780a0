"""End to end: the referee catches an operator that breaks the guide. A real operator process with one
deliberate mistake (tests/e2e/broken_operator.py: the pool drained one server at a time, or a second server
upgraded before the schema) and its own guard switched off runs the example plan; the simulators refuse the
forbidden install and the independent journal audit names the rule, so the suite's success check fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uwm_dev.testbed import estate

from e2e.e2e_support import E2E, TERMINAL

pytestmark = pytest.mark.e2e
BROKEN = Path(__file__).with_name("broken_operator.py")


@pytest.mark.parametrize(("mistake", "rule"), [("pool", "pool-in-rotation"), ("database-first", "database-first")])
def test_an_operator_that_breaks_the_guide_fails_the_audit(e2e: E2E, mistake: str, rule: str) -> None:
    e2e.start_fleet()
    e2e.operator = estate.start_operator(e2e.bed, [e2e.namespace], e2e.work, command=[sys.executable, str(BROKEN)],
                                         env={"UWM_BROKEN": mistake})
    name = e2e.apply_plan(targetVersion="2023.1", maxConcurrentServers=3)  # ps-2 and ps-3 of pers-db at once
    e2e.wait_phase(name, *TERMINAL)
    refused = [e for e in e2e.journal() if e.op == "install" and e.outcome == "refused"]
    assert rule in {e.detail.get("rule") for e in refused}, [e.detail for e in refused]
    findings = [str(f) for f in e2e.findings()]
    assert any(f.startswith(f"#{refused[0].seq} refused") and rule in f for f in findings), findings
    with pytest.raises(AssertionError, match=rule):
        e2e.assert_guide_kept()
