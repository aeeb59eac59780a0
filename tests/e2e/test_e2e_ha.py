"""End to end: two operator processes (no --standalone) on one namespace elect one leader by the Lease;
only it acts. The leader is SIGKILLed in the middle of a hop: the standby takes over within the lease
time and finishes the plan; no server ever refused a request, nothing was installed twice (the journal
audit, `assert_succeeded`), and the standby decided nothing while the leader lived.
"""

from __future__ import annotations

import time

import pytest

from uwm_dev.testbed import estate

from e2e.e2e_support import E2E, SERVERS, assert_succeeded, poll_for, requested

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 6
LEASE = "uwm-upgrade-operator"


def holder(e2e: E2E) -> str:
    return e2e.kubectl("get", "lease", LEASE, "-n", e2e.namespace, "-o", "jsonpath={.spec.holderIdentity}",
                       check=False).strip()


def test_the_standby_finishes_the_plan_when_the_leader_is_killed_mid_hop(e2e: E2E) -> None:
    e2e.start_fleet(install=2.0)
    flags = ["--lease-seconds", str(LEASE_SECONDS)]
    replicas = {name: estate.start_operator(e2e.bed, [e2e.namespace], e2e.work, extra=flags, standalone=False,
                                            hostname=name, log_name=f"operator-{name}.log")
                for name in ("op-a", "op-b")}
    try:
        name = e2e.apply_plan(targetVersion="2023.1")
        deadline = time.monotonic() + 60
        while not holder(e2e) and time.monotonic() < deadline:
            time.sleep(0.2)
        leader = holder(e2e).rsplit("-", 1)[0]
        standby = next(n for n in replicas if n != leader)
        assert leader in replicas, holder(e2e)
        poll_for(e2e, name, requested("InstallServer", "ms-2", e2e), timeout=120, what="InstallServer ms-2 requested")
        standby_log = e2e.work / f"operator-{standby}.log"
        assert "decided:" not in standby_log.read_text(errors="replace"), "the standby acted while the leader lived"

        replicas[leader].process.kill()
        killed = time.monotonic()
        took_over = poll_for(e2e, name, lambda p: holder(e2e).startswith(standby + "-")
                             and "decided:" in standby_log.read_text(errors="replace"), timeout=60,
                             what="the standby leading", every=0.1)
        takeover = time.monotonic() - killed
        print(f"leader {leader} killed; {standby} took over in {takeover:.1f} s (lease {LEASE_SECONDS} s)")
        assert takeover < LEASE_SECONDS + 8, takeover
        assert (took_over.get("status") or {}).get("phase") == "Running"

        plan = e2e.wait_phase(name, "Succeeded", "Failed", timeout=240)
        assert_succeeded(e2e, plan, "2023.1", SERVERS)  # the guide kept, no refusal, each install once
        assert "turn failed" not in standby_log.read_text(errors="replace")
    finally:
        for replica in replicas.values():
            replica.process.stop()
